"""The stand-in behaving as a Realtime image version: refusal texts, statuses and delays of the handshake and the
join, log lines in Realtime's format at their real levels, token precedence, and binary user broadcasts.

Versions: v2.129.8 (the newest read: JSON handshake errors since v2.116.0, CONNECT_ERROR_BACKOFF_MS 2 s since
v2.81.0, CHANNEL_ERROR_BACKOFF_MS 5 s since v2.83.0), v2.81.0 (connect backoff only) and v2.78.19 (403 empty,
no delays, a missing apikey logged as TenantNotFound). Sources: /work/notes/realtime.md §2, §3, §6, §8, §9.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websocket

from rtbook.sandbox import PostgresCluster, TenantLimits
from rtbook.sandbox.server_process import ServerProcess, start_server
from tests.integration.sandbox_support import cluster_and_server
from tests.integration.test_sandbox_server import API_SECRET, HOST, JWT_SECRET, Phoenix, Stack, token

pytestmark = [pytest.mark.postgres, pytest.mark.sandbox]

NEW, MID, OLD = "2.129.8", "2.81.0", "2.78.19"
NO_DELAYS = {"CONNECT_ERROR_BACKOFF_MS": "0", "CHANNEL_ERROR_BACKOFF_MS": "0"}
LINE = r"^\d\d:\d\d:\d\d\.\d{3} "


def _config(cluster: PostgresCluster, **extra: Any) -> dict[str, Any]:
    return {
        "db": f"host=127.0.0.1 port={cluster.port} user=supabase_admin dbname=postgres",
        "db_enc_key": "supabaserealtime",
        "api_jwt_secret": API_SECRET,
        "metrics_jwt_secret": API_SECRET,
        "rate_window_s": 1.0,
        **extra,
    }


@pytest.fixture(scope="module")
def default_new() -> Iterator[Stack]:
    """A v2.129.8 server with Realtime's default delays (no environment override)."""
    with cluster_and_server(JWT_SECRET, _config, realtime_version=NEW,
                            setup_sql=("create table public.hidden (id bigint primary key)",),
                            kept_out_of_the_log=(JWT_SECRET, API_SECRET)) as (cluster, server):
        yield Stack(cluster, server)


@contextlib.contextmanager
def other_server(cluster: PostgresCluster, version: str, env: dict[str, str] | None = None,
                 **extra: Any) -> Iterator[Stack]:
    workdir = Path(tempfile.mkdtemp(prefix="rtbook-srv-v-"))
    srv: ServerProcess | None = None
    try:
        srv = start_server(_config(cluster, realtime_version=version, **extra), workdir=workdir,
                           db_password=cluster.password, extra_env=env)
        yield Stack(cluster, srv)
    finally:
        if srv is not None:
            srv.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def timed_handshake(stack: Stack, **kwargs: Any) -> tuple[float, int, bytes]:
    started = time.monotonic()
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        stack.ws(**kwargs)
    return time.monotonic() - started, info.value.status_code, info.value.resp_body or b""


def timed_join(ph: Phoenix, topic: str, **payload: Any) -> tuple[float, dict[str, Any]]:
    started = time.monotonic()
    ref = ph.send(topic, "phx_join", {"config": {}, **payload}, join_ref=str(ph.ref + 1))
    reply = ph.reply(ref, timeout=15)["payload"]
    return time.monotonic() - started, reply


def raw_ws(stack: Stack, query: str, *, header: dict[str, str] | None = None) -> websocket.WebSocket:
    url = f"ws://127.0.0.1:{stack.port}/socket/websocket?{query}"
    return websocket.create_connection(url, timeout=5, host=HOST, header=header or {})


def log_lines(stack: Stack, pattern: str) -> list[str]:
    return re.findall(pattern, stack.server.log_text(), flags=re.MULTILINE)


# -- delays and refusal bodies per version ------------------------------------------------------


def test_new_version_default_delays_and_json_refusals(default_new: Stack) -> None:
    elapsed, status, body = timed_handshake(default_new, apikey=None)
    assert (status, json.loads(body)) == (401, {"error": "API key is missing"})
    assert 1.9 <= elapsed < 4.5, elapsed  # CONNECT_ERROR_BACKOFF_MS default 2000
    ph = default_new.ws(apikey=token())
    elapsed, reply = timed_join(ph, "realtime:")
    assert reply == {"status": "error", "response": {"reason": "TopicNameRequired: You must provide a topic name"}}
    assert 4.9 <= elapsed < 8, elapsed  # CHANNEL_ERROR_BACKOFF_MS default 5000
    # Phoenix answers an unmatched topic itself, at once.
    elapsed, reply = timed_join(ph, "other:topic")
    assert reply == {"status": "error", "response": {"reason": "unmatched topic"}} and elapsed < 1
    ph.close()
    assert log_lines(default_new, LINE + r"project=realtime-dev external_id=realtime-dev error_code=MissingAPIKey "
                     r"\[error\] MissingAPIKey: API key is missing or not a valid string$")
    assert log_lines(default_new, LINE + r"project=realtime-dev external_id=realtime-dev "
                     r"error_code=TopicNameRequired exp=\d+ \[error\] TopicNameRequired: You must provide a topic "
                     r"name$")


def test_v2_81_has_the_connect_delay_but_not_the_join_delay(default_new: Stack) -> None:
    with other_server(default_new.cluster, MID) as mid:
        elapsed, status, body = timed_handshake(mid, apikey=None)
        assert (status, body) == (403, b"") and 1.9 <= elapsed < 4.5, (status, body, elapsed)
        ph = mid.ws(apikey=token())
        elapsed, reply = timed_join(ph, "realtime:")
        assert reply["response"]["reason"] == "TopicNameRequired: You must provide a topic name" and elapsed < 1
        ph.close()
        # v2.86.3 introduced MissingAPIKey; before it a nil token fell into the `nil ->` clause.
        assert "TenantNotFound: Tenant not found: realtime-dev" in mid.server.log_text()


def test_old_version_refuses_with_403_empty_at_once(default_new: Stack) -> None:
    with other_server(default_new.cluster, OLD) as old:
        for kwargs in ({"apikey": None}, {"apikey": token(ttl=-10)}, {"apikey": "not-a-jwt"},
                       {"apikey": token(), "host": "nobody.supabase-realtime"}):
            elapsed, status, body = timed_handshake(old, **kwargs)
            assert (status, body) == (403, b"") and elapsed < 1.5, (kwargs, status, body, elapsed)
        text = old.server.log_text()
        assert re.search(LINE + r"project=realtime-dev external_id=realtime-dev error_code=TenantNotFound \[error\] "
                         r"TenantNotFound: Tenant not found: realtime-dev$", text, flags=re.MULTILINE)
        assert "InvalidJWTToken" not in text  # expired tokens are not logged at the default log level
        ph = old.ws(apikey=token())
        elapsed, reply = timed_join(ph, "realtime:")
        assert reply["response"]["reason"] == "TopicNameRequired: You must provide a topic name" and elapsed < 1
        # postgres_changes error text of the OLD line: 3-tuple filters, no `select:`
        ph.join("realtime:hid", {"postgres_changes": [{"event": "*", "schema": "public", "table": "hidden",
                                                       "filter": "id=eq.1"}]})
        msg = ph.event("system", timeout=10)["payload"]
        assert msg["message"] == (
            "Unable to subscribe to changes with given parameters. Please check Realtime is enabled for the given "
            'connect parameters: [event: *, schema: public, table: hidden, filters: [{"id", "eq", "1"}]]')
        # OLD: `!!config.private`, so the string "false" asks for a private channel (denied: no policy)
        reply = ph.join("realtime:str", {"private": "false"})
        assert reply["response"]["reason"] == (
            "Unauthorized: You do not have permissions to read from this Channel topic: str")
        ph.close()
    with other_server(default_new.cluster, NEW, NO_DELAYS) as new:
        ph = new.ws(apikey=token())
        assert ph.join("realtime:str", {"private": "false"})["status"] == "ok"  # FlexibleBoolean since v2.111.1
        ph.close()


def test_missing_tenant_at_join_per_version(default_new: Stack) -> None:
    cluster = default_new.cluster
    with other_server(cluster, OLD) as old, other_server(cluster, NEW, NO_DELAYS) as new, \
            other_server(cluster, "2.90.0", NO_DELAYS) as mid:
        sockets = {name: s.ws(apikey=token()) for name, s in (("old", old), ("new", new), ("mid", mid))}
        with cluster.connect() as conn:
            conn.execute("create table public.t_keep as select * from _realtime.tenants;"
                         "create table public.e_keep as select * from _realtime.extensions;"
                         "delete from _realtime.tenants")
        try:
            time.sleep(1.1)  # tenant cache
            # v2.78.19: a nil tenant matches no `with` clause and no rescue: Phoenix's own answer
            assert sockets["old"].join("realtime:gone") == {"status": "error", "response": {"reason": "join crashed"}}
            # v2.83.0 … v2.92.0: the join's rescue answers with the exception message
            assert sockets["mid"].join("realtime:gone")["response"]["reason"] == (
                "UnknownErrorOnChannel: no with clause matching: nil")
            # v2.92.1+: TenantNotFound, and the socket is disconnected
            assert sockets["new"].join("realtime:gone")["response"]["reason"] == (
                "TenantNotFound: Tenant with the given ID does not exist")
            with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
                sockets["new"].conn.settimeout(3)
                if not sockets["new"].conn.recv():
                    raise websocket.WebSocketConnectionClosedException("closed")
        finally:
            with cluster.connect() as conn:
                conn.execute("insert into _realtime.tenants select * from public.t_keep;"
                             "insert into _realtime.extensions select * from public.e_keep;"
                             "drop table public.t_keep; drop table public.e_keep")
            for ph in sockets.values():
                with contextlib.suppress(Exception):
                    ph.close()
        time.sleep(1.1)


# -- log lines and levels ----------------------------------------------------------------------


def test_handshake_log_levels(default_new: Stack) -> None:
    with other_server(default_new.cluster, NEW, NO_DELAYS) as srv:
        expired = token("authenticated", ttl=-30, sub="u-1", iss="rtbook-test")
        # expired / missing claims: warning, and only when the client asked for log_level=warning|info
        assert srv.handshake_error(apikey=expired) == (401, {"error": "Token has expired"})
        missing = (401, {"error": "Fields `role` and `exp` are required in JWT"})
        assert srv.handshake_error(apikey=token(None)) == missing
        assert "InvalidJWTToken" not in srv.server.log_text()
        with pytest.raises(websocket.WebSocketBadStatusException):
            raw_ws(srv, f"apikey={expired}&vsn=1.0.0&log_level=warning")
        assert log_lines(srv, LINE + r"project=realtime-dev external_id=realtime-dev error_code=InvalidJWTToken "
                         r"sub=u-1 iss=rtbook-test exp=\d+ \[warning\] InvalidJWTToken: Token has expired \d+ "
                         r"seconds ago$")
        # signature errors fall into the catch-all clause, logged with the inspected tuple
        bad_signature = (401, {"error": "Failed to validate JWT signature"})
        assert srv.handshake_error(apikey=token(secret="s" * 40)) == bad_signature
        assert log_lines(srv, r"error_code=ErrorConnectingToWebsocket \[error\] ErrorConnectingToWebsocket: "
                         r"\{:error, :signature_error\}$")
        assert srv.handshake_error(apikey="not-a-jwt") == (401, {"error": "The token provided is not a valid JWT"})
        assert log_lines(srv, r"error_code=MalformedJWT \[error\] MalformedJWT: The token provided is not a valid JWT$")
        # an unsupported serializer version is refused by Phoenix before connect/3: 403 empty, a warning
        with pytest.raises(websocket.WebSocketBadStatusException) as info:
            srv.ws(apikey=token(), vsn="3.0.0")
        assert (info.value.status_code, info.value.resp_body or b"") == (403, b"")
        assert log_lines(srv, r"\[warning\] The client's requested transport version \"3.0.0\" does not match "
                         r"server's version requirements of \[\{Phoenix.Socket.V1.JSONSerializer, \"~> 1.0.0\"\}")
        # joins: expired / missing claims silent by default, a bad signature logged at error
        ph = srv.ws(apikey=token())
        assert ph.join("realtime:j1", access_token=token(ttl=-5))["response"]["reason"].startswith(
            "InvalidJWTToken: Token has expired ")
        assert ph.join("realtime:j2", access_token=token(secret="s" * 40))["response"]["reason"] == (
            "JwtSignatureError: Failed to validate JWT signature")
        ph.close()
        text = srv.server.log_text()
        # only the handshake that opted in with log_level=warning
        assert len(re.findall(r"\] InvalidJWTToken: ", text)) == 1
        assert re.search(r"error_code=JwtSignatureError exp=\d+ \[error\] JwtSignatureError: Failed to validate JWT "
                         r"signature$", text, flags=re.MULTILINE)


def test_join_rate_limit_logs(default_new: Stack) -> None:
    with other_server(default_new.cluster, NEW, NO_DELAYS) as srv:
        srv.seed(limits=TenantLimits(max_joins_per_second=2, max_channels_per_client=3))
        try:
            ph = srv.ws(apikey=token())
            replies: list[dict[str, Any]] = []
            for i in range(5):
                replies.append(ph.join(f"realtime:r{i}"))
                if replies[-1]["status"] == "error":
                    break
            assert len(replies) == 3
            assert replies[-1] == {"status": "error",
                                   "response": {"reason": "ClientJoinRateLimitReached: Too many joins per second"}}
            # the handshake is refused while the rate stays over the limit, logged with its own code
            assert srv.handshake_error(apikey=token()) == (429, {"error": "Too many joins per second"})
            text = srv.server.log_text()
            # once per trip, critical, without error_code metadata (the rate counter's log_fn)
            assert len(re.findall(r"\[critical\] ClientJoinRateLimitReached: Too many joins per second$", text,
                                  flags=re.MULTILINE)) == 1
            assert "error_code=ClientJoinRateLimitReached" not in text
            assert re.search(r"error_code=JoinsRateLimitReached exp=\d+ \[error\] JoinsRateLimitReached: Too many "
                             r"joins per second$", text, flags=re.MULTILINE)
            ph.close()
            time.sleep(1.2)
            # channels per client: v2.80.7+ logs when a join reaches the limit, not when one is refused
            srv.seed(limits=TenantLimits(max_channels_per_client=2))
            ph = srv.ws(apikey=token())
            assert ph.join("realtime:c1")["status"] == "ok"
            assert "ChannelRateLimitReached" not in srv.server.log_text()
            assert ph.join("realtime:c2")["status"] == "ok"
            assert srv.server.log_text().count("[error] ChannelRateLimitReached: Too many channels") == 1
            assert ph.join("realtime:c3")["response"]["reason"] == "ChannelRateLimitReached: Too many channels"
            assert srv.server.log_text().count("[error] ChannelRateLimitReached: Too many channels") == 1
            ph.close()
        finally:
            srv.seed()


# -- token precedence ---------------------------------------------------------------------------


def test_token_precedence_and_reverification(default_new: Stack) -> None:
    with other_server(default_new.cluster, NEW, NO_DELAYS) as srv:
        ph = srv.ws(apikey=token())
        # user_token wins over access_token when both are strings
        reply = ph.join("realtime:p1", access_token=token("authenticated"), user_token=token(ttl=-5))
        assert reply["response"]["reason"].startswith("InvalidJWTToken: Token has expired ")
        # an sb_ access_token means "use the socket's token": the expired user_token is not looked at
        assert ph.join("realtime:p2", access_token="sb_publishable_abc", user_token=token(ttl=-5))["status"] == "ok"
        ph.close()
        # x-api-key wins over ?apikey even when empty: an empty string is a malformed token
        assert srv.handshake_error(apikey=token(), header={"x-api-key": ""}) == (
            401, {"error": "The token provided is not a valid JWT"})
        # the socket token is verified again at every join: it can expire while the socket stays open
        ph = srv.ws(apikey=token(ttl=2))
        assert ph.join("realtime:p3")["status"] == "ok"
        time.sleep(2.5)
        ref = ph.send("phoenix", "heartbeat", {})
        assert ph.reply(ref)["payload"]["status"] == "ok"
        assert ph.join("realtime:p4")["response"]["reason"].startswith("InvalidJWTToken: Token has expired ")
        # the channel joined before expiry was closed at the expiry by the token watch
        msg = ph.event("system", pred=lambda m: m["topic"] == "realtime:p3")["payload"]
        assert msg["extension"] == "system" and msg["status"] == "error"
        assert re.fullmatch(r"Token has expired \d+ seconds ago", msg["message"])
        ph.close()
        # access_token refresh: ignored when equal to the channel's current token or an sb_ key
        ph = srv.ws(apikey=token())
        user = token("authenticated", sub="u-2")
        assert ph.join("realtime:p5", access_token=user)["status"] == "ok"
        ph.send("realtime:p5", "access_token", {"access_token": user})
        ph.send("realtime:p5", "access_token", {"access_token": "sb_secret_x"})
        ph.nothing("system", 0.8)
        ph.send("realtime:p5", "access_token", {"access_token": token(None)})
        msg = ph.event("system")["payload"]
        assert msg == {"extension": "system", "status": "error", "channel": "p5",
                       "message": "Fields `role` and `exp` are required in JWT"}
        ph.event("phx_close")
        ph.close()


# -- binary user broadcasts (vsn 2.0.0) -----------------------------------------------------------


def _kind3(join_ref: str, ref: str, topic: str, event: str, payload: bytes, *, encoding: int,
           metadata: bytes = b"") -> bytes:
    parts = [join_ref.encode(), ref.encode(), topic.encode(), event.encode(), metadata]
    return bytes([3, *(len(p) for p in parts), encoding]) + b"".join(parts) + payload


def _recv_binary(conn: websocket.WebSocket, timeout: float) -> bytes | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conn.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            opcode, data = conn.recv_data()
        except websocket.WebSocketTimeoutException:
            return None
        if opcode == websocket.ABNF.OPCODE_BINARY:
            return bytes(data)
    return None


def test_binary_user_broadcast_relayed_as_kind_4_and_json(default_new: Stack) -> None:
    with other_server(default_new.cluster, NEW, NO_DELAYS) as srv:
        sender = srv.ws(apikey=token(), vsn="2.0.0")
        v2 = srv.ws(apikey=token(), vsn="2.0.0")
        v1 = srv.ws(apikey=token(), vsn="1.0.0")
        topic = "realtime:bin"
        assert sender.join(topic, {"broadcast": {"ack": True}})["status"] == "ok"
        assert v2.join(topic)["status"] == "ok" and v1.join(topic)["status"] == "ok"
        body = json.dumps({"n": 1, "s": "é"}).encode()
        sender.conn.send_binary(_kind3("1", "9", topic, "ev", body, encoding=1, metadata=b'{"k":"v"}'))
        # ack: a JSON text reply to the push
        assert sender.reply("9")["raw"] == ["1", "9", topic, "phx_reply", {"status": "ok", "response": {}}]
        # V2 receiver: kind 4, header kind/topic_len/event_len/metadata_len/encoding; metadata dropped
        frame = _recv_binary(v2.conn, 5)
        assert frame == bytes([4, len(topic), 2, 0, 1]) + topic.encode() + b"ev" + body
        # V1 receiver: the JSON broadcast UserBroadcast.convert_to_json_broadcast makes
        assert v1.event("broadcast")["payload"] == {"event": "ev", "payload": {"n": 1, "s": "é"}, "type": "broadcast"}
        # a binary-encoded payload reaches V2 sockets only
        sender.conn.send_binary(_kind3("1", "10", topic, "raw", b"\x00\x01\xff", encoding=0))
        sender.reply("10")
        assert _recv_binary(v2.conn, 5) == bytes([4, len(topic), 3, 0, 0]) + topic.encode() + b"raw\x00\x01\xff"
        v1.nothing("broadcast", 1.0)
        for ph in (sender, v2, v1):
            ph.close()


def test_legacy_join_without_config_subscribes_the_sub_topic(default_new: Stack) -> None:
    """A join payload without ``config`` is the legacy API: ``realtime:<schema>[:<table>[:<filter>]]`` (notes §3)."""
    with other_server(default_new.cluster, NEW, NO_DELAYS) as srv:
        ph = srv.ws(apikey=token("service_role"))
        ref = ph.send("realtime:public:todos", "phx_join", {}, join_ref="1")
        reply = ph.reply(ref)["payload"]
        assert reply["status"] == "ok"
        [echo] = reply["response"]["postgres_changes"]
        assert {k: v for k, v in echo.items() if k != "id"} == {"schema": "public", "table": "todos"}
        assert ph.event("system", timeout=10)["payload"]["message"] == "Subscribed to PostgreSQL"
        default_new.cluster.execute("insert into public.todos (id, task) values (7001, 'legacy')")
        # legacy events are named after the change type and carry the data itself
        msg = ph.event("INSERT", timeout=5)["payload"]
        assert msg["record"]["id"] == 7001 and msg["type"] == "INSERT" and msg["table"] == "todos"
        default_new.cluster.execute("delete from public.todos where id = 7001")
        # a plain room name is taken for a schema: the subscription fails with a system error
        ref = ph.send("realtime:room1", "phx_join", {}, join_ref="2")
        assert ph.reply(ref)["payload"]["status"] == "ok"
        msg = ph.event("system", timeout=10, pred=lambda m: m["topic"] == "realtime:room1")["payload"]
        assert msg["status"] == "error" and msg["message"] == (
            "Unable to subscribe to changes with given parameters. Please check Realtime is enabled for the given "
            "connect parameters: [event: *, schema: room1, table: *, filters: [], select: nil]")
        ph.close()


def test_presence_diff_reaches_every_public_channel_of_the_topic(default_new: Stack) -> None:
    """The dispatcher sends presence_diff to every subscriber that may read presence: all, on a public topic."""
    with other_server(default_new.cluster, NEW, NO_DELAYS) as srv:
        tracker, quiet = srv.ws(apikey=token()), srv.ws(apikey=token(), vsn="2.0.0")
        assert tracker.join("realtime:pd", {"presence": {"key": "t", "enabled": True}})["status"] == "ok"
        assert quiet.join("realtime:pd", {})["status"] == "ok"  # presence not enabled on this channel
        ref = tracker.send("realtime:pd", "presence", {"type": "presence", "event": "track", "payload": {"a": 1}})
        assert tracker.reply(ref)["payload"]["status"] == "ok"
        diff = quiet.event("presence_diff")
        assert list(diff["payload"]["joins"]) == ["t"] and diff["raw"][0] is None  # fastlane: no join_ref
        # no event → ok, nothing happens; an unknown event → error reply
        ref = tracker.send("realtime:pd", "presence", {"type": "presence"})
        assert tracker.reply(ref)["payload"] == {"status": "ok", "response": {}}
        ref = tracker.send("realtime:pd", "presence", {"type": "presence", "event": "dance"})
        assert tracker.reply(ref)["payload"] == {"status": "error", "response": {}}
        assert re.search(r"\[error\] UnknownPresenceEvent: dance$", srv.server.log_text(), flags=re.MULTILINE)
        tracker.close()
        quiet.close()
