"""realtime.health, the refusal waits, PrivateOnly and realtime.private against a tiny real server.

The server (tests/unit/realtime_stub.py) runs on 127.0.0.1 and answers with the shapes and texts
of the research notes (supabase/realtime v2.129.8 and v2.78.19): the health JSON, 403 with an
empty body, join reasons, refusals held back like CONNECT_ERROR_BACKOFF_MS/CHANNEL_ERROR_BACKOFF_MS,
private broadcasts dropped without a reply. Pure verdict logic is also tested directly.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from rtbook.checks._live import refusal_waits
from rtbook.checks.realtime import (
    Health,
    HealthProbe,
    MessagesPolicies,
    MessagesPolicy,
    PrivateOutcome,
    judge_health,
    judge_private,
)
from rtbook.clients.phoenix import VSN2, PhoenixClient
from rtbook.config.stack import Stack
from rtbook.registry import run_checks
from rtbook.results import CheckResult, Status
from rtbook.target import Target
from tests.unit.realtime_stub import Stub, StubServer, health_json, refuse, running

SECRET = "stub-jwt-secret-0123456789abcdef0123456789"
HOST = "realtime-dev.localhost"
DB_DOWN = "UnableToConnectToProject: Realtime was unable to connect to the project database"
UNAUTHORIZED = "Unauthorized: You do not have permissions to read from this Channel topic: rtbook-private-probe"


def token(role: str, **claims: Any) -> str:
    return jwt.encode({"role": role, "exp": int(time.time()) + 600, **claims}, SECRET, algorithm="HS256")


@pytest.fixture(autouse=True)
def _no_ambient_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    # Only the target's env may provide keys here.
    for name in ("ANON_KEY", "JWT_SECRET", "API_JWT_SECRET", "SERVICE_ROLE_KEY", "CONNECT_ERROR_BACKOFF_MS",
                 "CHANNEL_ERROR_BACKOFF_MS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def stub() -> Stub:
    return Stub()


@pytest.fixture
def server(stub: Stub) -> Iterator[StubServer]:
    with running(stub) as srv:
        yield srv


def target(server: StubServer, *, timeout: float = 2.0, stack: Stack | None = None, anon: bool = True,
           jwt_secret: bool = True, **env: str) -> Target:
    values = dict(env)
    if jwt_secret:
        values["JWT_SECRET"] = values["API_JWT_SECRET"] = SECRET
    if anon:
        values["ANON_KEY"] = token("anon")
    return Target(name="stub", realtime_url=server.url, realtime_host=HOST, timeout=timeout, env=values,
                  stack=stack)


def one(t: Target, cid: str) -> CheckResult:
    return run_checks(t, only=cid).by_id(cid)


def stack_with(tmp_path: Path, image: str, **env: str) -> Stack:
    lines = "".join(f"      {k}: \"{v}\"\n" for k, v in env.items())
    (tmp_path / "docker-compose.yml").write_text(
        f"services:\n  realtime:\n    image: {image}\n    environment:\n{lines}")
    return Stack.load(tmp_path)


# ---------------------------------------------------------------- realtime.health over HTTP


def test_health_db_down_fails_even_when_healthy_true_with_the_stacks_db_host(
        stub: Stub, server: StubServer, tmp_path: Path) -> None:
    # v2.78 with migrations done answers healthy:true without touching the DB; the join says the truth.
    stub.health = [(200, health_json(True, False))]
    stub.join = refuse(DB_DOWN)
    stack = stack_with(tmp_path, "supabase/realtime:v2.78.19", DB_HOST="tenant-db.internal", DB_PORT="6543")
    r = one(target(server, stack=stack), "realtime.health")
    assert (r.status, r.cause) == (Status.FAIL, "tenant_db_unreachable"), str(r)
    assert "healthy=true" in r.summary
    assert "DB_HOST=tenant-db.internal, DB_PORT=6543" in r.remedy
    assert r.evidence["join"]["reason"] == DB_DOWN
    assert stub.health_calls == 1  # the join was refused: no point reading the health again


def test_health_db_down_without_a_stack_leaves_the_placeholders(stub: Stub, server: StubServer) -> None:
    stub.health = [(200, health_json(True, False))]
    stub.join = refuse("DatabaseLackOfConnections: Database can't accept more connections, Realtime won't connect")
    r = one(target(server), "realtime.health")
    assert (r.status, r.cause) == (Status.FAIL, "tenant_db_full"), str(r)


def test_health_false_with_db_connected_is_not_a_realtime_answer(stub: Stub, server: StubServer) -> None:
    stub.health = [(200, health_json(False, True))]
    r = one(target(server), "realtime.health")
    assert (r.status, r.cause) == (Status.WARN, "health_inconsistent"), str(r)
    assert stub.joins == []  # db_connected=true needs no probe join


def test_health_403_empty_body_is_the_admin_secret(stub: Stub, server: StubServer) -> None:
    stub.health = [(403, "")]
    r = one(target(server), "realtime.health")
    assert (r.status, r.cause) == (Status.FAIL, "admin_jwt_mismatch"), str(r)
    assert "API_JWT_SECRET" in r.detail


def test_health_connected_after_the_probe_join(stub: Stub, server: StubServer) -> None:
    stub.health = [(200, health_json(True, False)), (200, health_json(True, True, connected_cluster=1))]
    r = one(target(server), "realtime.health")
    assert r.status is Status.PASS, str(r)
    assert "after rtbook's join" in r.summary
    assert r.evidence["health_before_join"]["db_connected"] is False and r.evidence["health"]["db_connected"]


def test_health_joined_clients_without_a_connection_fail(stub: Stub, server: StubServer) -> None:
    stub.health = [(200, health_json(False, False, connected_cluster=3))]
    r = one(target(server), "realtime.health")
    assert (r.status, r.cause) == (Status.FAIL, "tenant_db_unreachable"), str(r)
    assert "3 joined client(s)" in r.summary


def test_health_private_only_tenant_probes_with_a_private_join(stub: Stub, server: StubServer) -> None:
    stub.health = [(200, health_json(True, False)), (200, health_json(True, True, connected_cluster=0))]

    def decide(topic: str, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        if not payload["config"]["private"]:
            return "error", {"reason": "PrivateOnly: This project only allows private channels"}
        return "error", {"reason": UNAUTHORIZED}  # the policy query ran: the DB was reached

    stub.join = decide
    r = one(target(server), "realtime.health")
    assert r.status is Status.PASS, str(r)
    assert [p["config"]["private"] for _, p in stub.joins] == [False, True]
    assert r.evidence["join"]["private"] is True


def test_health_without_anon_key_and_migrations_due_warns(stub: Stub, server: StubServer) -> None:
    stub.health = [(200, health_json(False, False))]
    r = one(target(server, anon=False), "realtime.health")
    assert (r.status, r.cause) == (Status.WARN, "tenant_migrations_pending"), str(r)


def test_judge_health_pure_cases() -> None:
    up = Health(True, True, True, 1)
    assert judge_health("t", up, None, HealthProbe()).status is Status.PASS
    down = Health(True, False, False, 0)
    refused = HealthProbe(True, reason="JwtSignatureError: Failed to validate JWT signature")
    v = judge_health("t", down, None, refused)
    assert v.status is Status.WARN and v.cause is not None and v.cause.id == "jwt_signature"
    v = judge_health("t", down, None, HealthProbe(True, reason=DB_DOWN), {"DB_HOST": "db", "DB_PORT": "5432"})
    assert v.status is Status.FAIL and v.cause is not None and "DB_HOST=db, DB_PORT=5432" in v.cause.remedy
    v = judge_health("t", down, Health(True, False, False, 1), HealthProbe(True, joined=True))
    assert v.status is Status.FAIL and v.cause is not None and v.cause.id == "tenant_db_unreachable"
    assert Health.parse({"data": {"healthy": True, "db_connected": True, "connected_cluster": True}}) == Health(
        True, True, None, None)
    assert Health.parse({"healthy": True}) is None


# ---------------------------------------------------------------- waits for held-back refusals


def test_handshake_refusal_held_longer_than_the_timeout_is_still_the_refusal(
        stub: Stub, server: StubServer) -> None:
    stub.handshake_refusal = (401, json.dumps({"error": "Failed to validate JWT signature"}))
    stub.handshake_delay_s = 1.0  # under the 2 s CONNECT_ERROR_BACKOFF of v2.81+
    started = time.monotonic()
    r = one(target(server, timeout=0.4), "realtime.join")
    assert (r.status, r.cause) == (Status.FAIL, "jwt_signature"), str(r)
    assert time.monotonic() - started >= 1.0
    assert "up to 2.4 s for the handshake answer" in r.detail and "image version unknown" in r.detail


def test_join_refusal_held_longer_than_the_timeout_is_still_the_refusal(stub: Stub, server: StubServer) -> None:
    stub.join = refuse("ChannelRateLimitReached: Too many channels")
    stub.join_error_delay_s = 1.2  # under the 5 s CHANNEL_ERROR_BACKOFF of v2.83+
    r = one(target(server, timeout=0.4), "realtime.join")
    assert (r.status, r.cause) == (Status.FAIL, "too_many_channels"), str(r)
    assert r.metrics["join_ms"] >= 1100
    assert "up to 5.4 s for a join reply" in r.detail


def test_the_wait_is_bounded_by_timeout_plus_backoff(stub: Stub, server: StubServer) -> None:
    stub.join = refuse("ChannelRateLimitReached: Too many channels")
    stub.join_error_delay_s = 3.0
    started = time.monotonic()
    r = one(target(server, timeout=0.4, CHANNEL_ERROR_BACKOFF_MS="300"), "realtime.join")
    elapsed = time.monotonic() - started
    assert (r.status, r.cause) == (Status.FAIL, "timeout"), str(r)
    assert elapsed < 0.4 + 0.3 + 1.5, elapsed
    assert "CHANNEL_ERROR_BACKOFF_MS=300 from the target's env" in r.detail


def test_refusal_waits_follow_the_image_version(tmp_path: Path) -> None:
    old = refusal_waits(Target(stack=stack_with(tmp_path, "supabase/realtime:v2.78.19"), timeout=3))
    assert (old.connect, old.join) == (3, 3)
    (tmp_path / "new").mkdir()
    new = refusal_waits(Target(stack=stack_with(tmp_path / "new", "supabase/realtime:v2.134.10"), timeout=3))
    assert (new.connect, new.join) == (5, 8)
    (tmp_path / "mid").mkdir()
    mid = refusal_waits(Target(stack=stack_with(tmp_path / "mid", "supabase/realtime:v2.82.0"), timeout=1))
    assert (mid.connect_backoff, mid.join_backoff) == (2, 0)
    (tmp_path / "env").mkdir()
    tuned = refusal_waits(Target(stack=stack_with(tmp_path / "env", "supabase/realtime:v2.134.10",
                                                  CHANNEL_ERROR_BACKOFF_MS="999999"), timeout=1))
    assert tuned.join_backoff == 30.0  # bounded whatever the environment says


# ---------------------------------------------------------------- PrivateOnly tenants


@pytest.mark.parametrize("cid", ["realtime.join", "realtime.broadcast", "realtime.presence"])
def test_private_only_tenant_skips_public_checks_with_the_reason(stub: Stub, server: StubServer, cid: str) -> None:
    stub.join = refuse("PrivateOnly: This project only allows private channels")
    r = one(target(server), cid)
    assert (r.status, r.cause) == (Status.SKIP, "private_only"), str(r)
    assert "private_only" in r.summary and "realtime.private" in r.summary


# ---------------------------------------------------------------- realtime.private


def test_private_unauthorized_fails_with_the_policy_sql(stub: Stub, server: StubServer) -> None:
    stub.join = refuse(UNAUTHORIZED)
    r = one(target(server), "realtime.private")
    assert (r.status, r.cause) == (Status.FAIL, "private_channel_denied"), str(r)
    assert "no SELECT policy on realtime.messages for this role/topic" in r.summary
    assert ("ON realtime.messages FOR SELECT TO authenticated USING (realtime.topic() = 'rtbook-private-probe'"
            in r.remedy)
    assert "FOR INSERT TO authenticated" in r.remedy
    (topic, payload), = stub.joins
    assert topic == "realtime:rtbook-private-probe" and payload["config"]["private"] is True
    # The join used a minted authenticated user token, not the anon key.
    claims = jwt.decode(payload["access_token"], SECRET, algorithms=["HS256"])
    assert claims["role"] == "authenticated" and claims["sub"]
    assert payload["access_token"] not in json.dumps(r.to_dict())


def test_private_without_jwt_secret_joins_with_the_anon_key(stub: Stub, server: StubServer) -> None:
    stub.join = refuse(UNAUTHORIZED)
    r = one(target(server, jwt_secret=False), "realtime.private")
    assert r.evidence["role"] == "anon" and "FOR SELECT TO anon" in r.remedy


def test_private_broadcast_dropped_without_ack_warns(stub: Stub, server: StubServer) -> None:
    stub.drop_private_broadcasts = True
    started = time.monotonic()
    r = one(target(server, timeout=0.8), "realtime.private")
    assert (r.status, r.cause) == (Status.WARN, "private_no_insert_policy"), str(r)
    assert "no INSERT policy: private broadcasts are dropped silently" in r.summary
    assert "FOR INSERT TO authenticated WITH CHECK (realtime.topic() = 'rtbook-private-probe'" in r.remedy
    assert time.monotonic() - started < 0.8 * 2 + 2


def test_private_allowed_passes(stub: Stub, server: StubServer) -> None:
    r = one(target(server), "realtime.private")
    assert r.status is Status.PASS, str(r)
    assert r.metrics["ack_ms"] >= 0 and r.metrics["self_ms"] >= 0


def _policy(name: str, cmd: str, roles: tuple[str, ...], using: str | None = "realtime.topic() = 'room-1'",
            check: str | None = None) -> MessagesPolicy:
    return MessagesPolicy(name, cmd, roles, True, using, check)


def test_judge_private_explains_with_the_policies() -> None:
    refused = PrivateOutcome("authenticated", "rtbook-private-probe", UNAUTHORIZED)
    missing = judge_private(refused, MessagesPolicies(False, False))
    assert (missing.status, missing.cause and missing.cause.id) == (Status.WARN, "messages_table_missing")
    none = judge_private(refused, MessagesPolicies(True, True))
    assert (none.status, none.cause and none.cause.id) == (Status.WARN, "private_channel_denied")
    assert "not set up" in none.summary
    others = judge_private(refused, MessagesPolicies(True, True, (_policy("anon_read", "SELECT", ("anon",)),)))
    assert others.status is Status.FAIL and "anon_read" in others.summary
    topic = judge_private(refused, MessagesPolicies(True, True, (_policy("auth_read", "SELECT", ("authenticated",)),)))
    assert topic.status is Status.WARN and "realtime.topic() = 'room-1'" in topic.detail
    # "public" covers every role; ALL covers SELECT.
    assert _policy("p", "ALL", ("public",)).applies("authenticated", ("SELECT",))
    assert not MessagesPolicy("r", "SELECT", ("authenticated",), False, None, None).applies(
        "authenticated", ("SELECT",))
    dropped = PrivateOutcome("authenticated", "t", ack="none", waited_s=2)
    writes = judge_private(dropped, MessagesPolicies(True, True, (
        _policy("r", "SELECT", ("authenticated",), "true"),
        _policy("w", "INSERT", ("authenticated",), None, "realtime.topic() = 'x'"))))
    assert writes.status is Status.WARN and "none allowed topic 't'" in writes.detail
    # Admitted, acknowledged: a real Realtime only admits what a SELECT policy allows, so the policies must agree.
    fine = PrivateOutcome("authenticated", "t", ack="ok", echoed=True)
    assert judge_private(fine, None).status is Status.PASS
    reader = MessagesPolicies(True, True, (_policy("auth_read", "SELECT", ("authenticated",)),))
    assert judge_private(fine, reader).status is Status.PASS
    rls_off = judge_private(fine, MessagesPolicies(True, False))
    assert (rls_off.status, rls_off.cause and rls_off.cause.id) == (Status.WARN, "messages_rls_off")
    unenforced = judge_private(fine, MessagesPolicies(True, True, (_policy("anon_read", "SELECT", ("anon",)),)))
    assert (unenforced.status, unenforced.cause and unenforced.cause.id) == (Status.WARN, "private_not_enforced")
    assert judge_private(fine, MessagesPolicies(True, True, (), role_bypasses_rls=True)).status is Status.PASS
    other = judge_private(PrivateOutcome("anon", "t", "JwtSignatureError: Failed to validate JWT signature"), None)
    assert (other.status, other.cause and other.cause.id) == (Status.FAIL, "jwt_signature")


# ---------------------------------------------------------------- binary user broadcasts on a real socket


def test_binary_kind3_push_and_kind4_echo_round_trip(stub: Stub, server: StubServer) -> None:
    client = PhoenixClient.connect(f"{server.url}/socket", token("anon"), vsn=VSN2, timeout=3)
    try:
        topic = "realtime:bin"
        assert client.join(topic, {"broadcast": {"self": True, "ack": True}, "private": False}, timeout=3).ok
        ack = client.send_user_broadcast(topic, "cursor", {"x": 1}, wait_reply=True, timeout=3)
        assert ack is not None and ack.ok
        echo = client.wait_for(lambda m: m.event == "broadcast" and m.topic == topic, 3)
        assert echo.payload == {"type": "broadcast", "event": "cursor", "payload": {"x": 1}}
        (frame,) = stub.binary_pushes
        assert frame[0] == 3 and frame[6] == 1 and frame.endswith(b'{"x":1}')
        assert '"event":"cursor"' in "".join(e.text for e in client.transcript.entries)
    finally:
        client.close()
