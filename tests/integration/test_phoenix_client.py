"""The Phoenix client against real sockets: the sandbox's Realtime-compatible server, a closed port,
a listener that never answers, and a WebSocket server that upgrades but never replies."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest

from rtbook.clients.phoenix import (
    VSN1,
    VSN2,
    ConnectFailed,
    HandshakeRefused,
    PhoenixClient,
    PhoenixClosed,
    PhoenixTimeout,
)
from rtbook.secrets import Redactor
from tests.conftest import have_postgres, require
from tests.integration.test_phoenix_support import TENANT_HOST, Lab, Silent, closed_port, lab_fixture, make_token

pytestmark = [pytest.mark.postgres, pytest.mark.sandbox]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    require(have_postgres(), "PostgreSQL 15 binaries with wal2json are not installed")
    yield from lab_fixture()


def connect(lab: Lab, vsn: str = VSN1, key: str | None = None, host: str = TENANT_HOST) -> PhoenixClient:
    return PhoenixClient.connect(f"{lab.realtime_url}/socket", key or lab.anon_key, vsn=vsn, host_header=host,
                                 timeout=5, redactor=Redactor())


@pytest.mark.parametrize("vsn", [VSN1, VSN2])
def test_heartbeat_join_broadcast_leave(lab: Lab, vsn: str) -> None:
    with connect(lab, vsn) as a, connect(lab, vsn) as b:
        beat = a.heartbeat(timeout=5)
        assert beat.ok and beat.topic == "phoenix" and beat.latency_ms < 5000
        topic = f"realtime:phx-{vsn}"
        cfg = {"broadcast": {"self": True, "ack": True}, "presence": {"key": ""}, "postgres_changes": [],
               "private": False}
        ra = a.join(topic, cfg, timeout=5)
        rb = b.join(topic, {**cfg, "broadcast": {"self": False, "ack": False}}, timeout=5)
        assert ra.ok and rb.ok, (ra, rb)
        assert a.join_ref(topic) is not None
        ack = a.push(topic, "broadcast", {"type": "broadcast", "event": "hi", "payload": {"n": 1}}, timeout=5)
        assert ack is not None and ack.ok
        got = b.wait_for(lambda m: m.event == "broadcast", 5)
        assert got.payload["payload"] == {"n": 1}
        mine = a.wait_message(5, topic=topic, event="broadcast")
        assert mine.payload["event"] == "hi"
        # No reply expected without ack: push returns None at once.
        assert b.push(topic, "broadcast", {"type": "broadcast", "event": "x", "payload": {}}, wait_reply=False) is None
        left = a.leave(topic, timeout=5)
        assert left.ok and a.join_ref(topic) is None
        frames = a.transcript.to_list()
        assert any(f["dir"] == "sent" and "phx_join" in f["frame"] for f in frames)
        if vsn == VSN2:
            sent = [f["frame"] for f in frames if f["dir"] == "sent"]
            assert all(s.startswith("[") for s in sent)


def test_join_error_reason_and_transcript_redaction(lab: Lab) -> None:
    bad = make_token("another-secret-" + "x" * 20, "authenticated", sub="u1")
    with connect(lab) as client:
        # Realtime (>= 2.83) answers a refused join after CHANNEL_ERROR_BACKOFF_MS, 5 s by default.
        reply = client.join("realtime:bad", {"private": False}, access_token=bad, timeout=12)
        assert not reply.ok
        assert reply.reason == "JwtSignatureError: Failed to validate JWT signature"
        text = json.dumps(client.transcript.to_list()) + str(client.transcript) + repr(client) + client.url
    for secret in (bad, lab.anon_key, lab.jwt_secret):
        assert secret not in text
    assert "apikey=[redacted]" in text


def test_handshake_refusal_carries_status_and_body(lab: Lab) -> None:
    with pytest.raises(HandshakeRefused) as info:
        connect(lab, host="nosuchtenant.localhost")
    assert info.value.status == 404 and info.value.error_text == "Tenant not found"
    assert lab.anon_key not in str(info.value)
    with pytest.raises(HandshakeRefused) as info2:
        connect(lab, key=make_token("wrong-secret-" + "y" * 20, "anon"))
    assert info2.value.status == 401 and "signature" in info2.value.error_text.lower()


def test_closed_port_fails_fast() -> None:
    started = time.monotonic()
    with pytest.raises(ConnectFailed) as info:
        PhoenixClient.connect(f"http://127.0.0.1:{closed_port()}/socket", "k" * 10, timeout=3)
    assert info.value.kind == "refused"
    assert time.monotonic() - started < 3


def test_silent_listener_times_out_within_the_timeout() -> None:
    with Silent() as silent:
        started = time.monotonic()
        with pytest.raises(ConnectFailed) as info:
            PhoenixClient.connect(f"{silent.url}/socket", "k" * 10, timeout=1.0)
        elapsed = time.monotonic() - started
    assert info.value.kind == "timeout"
    assert 0.9 <= elapsed < 3.0


@pytest.fixture
def mute_ws_server() -> Iterator[str]:
    """A real WebSocket server that completes the upgrade and then ignores every frame."""
    from websockets.sync.server import serve  # type: ignore[import-not-found]

    def handler(ws: object) -> None:
        try:
            for _ in ws:  # type: ignore[attr-defined]
                pass
        except Exception:
            pass

    server = serve(handler, "127.0.0.1", 0)
    port = server.socket.getsockname()[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/socket"
    finally:
        server.shutdown()
        thread.join(timeout=5)


def test_mute_server_heartbeat_times_out_and_close_is_safe(mute_ws_server: str) -> None:
    client = PhoenixClient.connect(mute_ws_server, "k" * 10, timeout=3)
    started = time.monotonic()
    with pytest.raises(PhoenixTimeout):
        client.heartbeat(timeout=0.7)
    assert time.monotonic() - started < 2
    client.close()
    client.close()
    assert client.closed
    with pytest.raises(PhoenixClosed):
        client.heartbeat(timeout=1)


def test_server_going_away_wakes_waiters(lab: Lab) -> None:
    client = connect(lab)
    try:
        done: list[BaseException] = []

        def waiter() -> None:
            try:
                client.wait_for(lambda m: m.event == "never", 30)
            except BaseException as exc:
                done.append(exc)

        t = threading.Thread(target=waiter)
        t.start()
        time.sleep(0.3)
        client._ws.shutdown()  # the connection drops under the waiter
        t.join(timeout=5)
        assert not t.is_alive()
        assert done and isinstance(done[0], PhoenixClosed)
    finally:
        client.close()

