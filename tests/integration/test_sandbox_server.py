"""The Realtime-compatible server, frame by frame: handshake errors, Phoenix envelopes, joins,
postgres_changes (filters, RLS, replica identity, publication), HTTP endpoints, limits, shutdown.

Expected texts and statuses come from realtime-facts.md (sections 1.3, 4, 5, 7, 9).
"""

from __future__ import annotations

import json
import shutil
import signal
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import psycopg
import pytest
import websocket

from rtbook.exceptions import ConfigError
from rtbook.sandbox import PostgresCluster, TenantLimits, bootstrap, seed_tenant
from rtbook.sandbox.server_process import ServerProcess, start_server
from rtbook.sandbox.server_tenants import ServerConfig
from tests.conftest import have_postgres, require
from tests.integration.sandbox_support import cluster_and_server

pytestmark = [pytest.mark.postgres, pytest.mark.sandbox]

JWT_SECRET = "canary-server-jwt-secret-0123456789abcdef"
API_SECRET = "canary-admin-api-secret-0123456789abcdef"
HOST = "realtime-dev.supabase-realtime"
USER_A = "aaaaaaaa-0000-4000-8000-00000000000a"


def token(role: str | None = "anon", *, secret: str = JWT_SECRET, ttl: int = 3600, **extra: Any) -> str:
    claims: dict[str, Any] = {**extra}
    if role is not None:
        claims["role"] = role
    if ttl is not None:
        claims["exp"] = int(time.time()) + ttl
    return jwt.encode(claims, secret, algorithm="HS256")


class Stack:
    def __init__(self, cluster: PostgresCluster, server: ServerProcess) -> None:
        self.cluster = cluster
        self.server = server

    @property
    def port(self) -> int:
        return self.server.port

    def seed(self, **kwargs: Any) -> None:
        seed_tenant(
            self.cluster, jwt_secret=kwargs.pop("jwt_secret", JWT_SECRET), db_host="127.0.0.1",
            db_port=self.cluster.port, db_password=self.cluster.password, **kwargs,
        )
        time.sleep(1.1)  # the server caches tenants for tenant_cache_ttl_ms (1 s)

    def http(self, method: str, path: str, *, host: str = HOST, headers: dict[str, str] | None = None,
             body: Any = None) -> tuple[int, bytes]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method)
        req.add_header("Host", host)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def ws(self, *, apikey: str | None = None, vsn: str | None = "1.0.0", host: str = HOST,
           header: dict[str, str] | None = None) -> Phoenix:
        query = []
        if apikey is not None:
            query.append(f"apikey={apikey}")
        if vsn is not None:
            query.append(f"vsn={vsn}")
        url = f"ws://127.0.0.1:{self.port}/socket/websocket?" + "&".join(query)
        conn = websocket.create_connection(url, timeout=5, host=host, header=header or {})
        return Phoenix(conn, vsn or "1.0.0")

    def handshake_error(self, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        with pytest.raises(websocket.WebSocketBadStatusException) as info:
            self.ws(**kwargs)
        return info.value.status_code, json.loads(info.value.resp_body or b"{}")


class Phoenix:
    """A minimal Phoenix client over websocket-client, for asserting exact frames."""

    def __init__(self, conn: websocket.WebSocket, vsn: str) -> None:
        self.conn = conn
        self.vsn = vsn
        self.ref = 0
        self.inbox: list[dict[str, Any]] = []

    def send(self, topic: str, event: str, payload: Any, join_ref: str | None = None) -> str:
        self.ref += 1
        ref = str(self.ref)
        if self.vsn == "2.0.0":
            self.conn.send(json.dumps([join_ref, ref, topic, event, payload]))
        else:
            frame = {"topic": topic, "event": event, "payload": payload, "ref": ref}
            if join_ref is not None:
                frame["join_ref"] = join_ref
            self.conn.send(json.dumps(frame))
        return ref

    def _recv(self, timeout: float) -> dict[str, Any] | None:
        self.conn.settimeout(timeout)
        try:
            raw = self.conn.recv()
        except websocket.WebSocketTimeoutException:
            return None
        data = json.loads(raw)
        if self.vsn == "2.0.0":
            assert isinstance(data, list) and len(data) == 5, data
            return {"join_ref": data[0], "ref": data[1], "topic": data[2], "event": data[3], "payload": data[4],
                    "raw": data}
        assert isinstance(data, dict) and "join_ref" not in data, data
        return {**data, "raw": data}

    def expect(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 5, what: str = "frame") -> dict[str, Any]:
        for i, msg in enumerate(self.inbox):
            if pred(msg):
                return self.inbox.pop(i)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self._recv(max(0.05, deadline - time.monotonic()))
            if msg is None:
                break
            if pred(msg):
                return msg
            self.inbox.append(msg)
        raise AssertionError(f"no {what} within {timeout} s; got {self.inbox}")

    def reply(self, ref: str, timeout: float = 5) -> dict[str, Any]:
        return self.expect(lambda m: m["event"] == "phx_reply" and m["ref"] == ref, timeout, f"reply to {ref}")

    def event(self, event: str, timeout: float = 5, pred: Callable[[dict[str, Any]], bool] = lambda m: True
              ) -> dict[str, Any]:
        return self.expect(lambda m: m["event"] == event and pred(m), timeout, event)

    def nothing(self, event: str, wait: float = 1.0) -> None:
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            msg = self._recv(max(0.05, deadline - time.monotonic()))
            if msg is None:
                break
            assert msg["event"] != event, f"unexpected {event}: {msg}"
            self.inbox.append(msg)

    def join(self, topic: str, config: dict[str, Any] | None = None, **payload: Any) -> dict[str, Any]:
        ref = self.send(topic, "phx_join", {"config": config or {}, **payload}, join_ref=str(self.ref + 1))
        return self.reply(ref)["payload"]

    def close(self) -> None:
        self.conn.close()


def _server_config(cluster: PostgresCluster, **extra: Any) -> dict[str, Any]:
    return {
        "db": f"host=127.0.0.1 port={cluster.port} user=supabase_admin dbname=postgres",
        "db_enc_key": "supabaserealtime",
        "api_jwt_secret": API_SECRET,
        "metrics_jwt_secret": API_SECRET,
        "rate_window_s": 1.0,  # limits trigger within a second instead of Realtime's 60 s average
        "rate_tick_s": 0.2,  # the channel events counter ticks every 0.2 s instead of Realtime's 5 s
        # Not about the delays (the real ones are tested in test_sandbox_server_versions.py): refusals answer at once.
        "connect_error_backoff_ms": 0,
        "channel_error_backoff_ms": 0,
        **extra,
    }


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    setup = ("create table public.notes (id bigint primary key, body text, n int)",
             "alter table public.notes replica identity full",
             "alter publication supabase_realtime add table public.notes",
             "create table public.hidden (id bigint primary key, body text)")
    with cluster_and_server(JWT_SECRET, _server_config, setup_sql=setup,
                            kept_out_of_the_log=(JWT_SECRET, API_SECRET)) as (cluster, server):
        yield Stack(cluster, server)


# -- handshake ---------------------------------------------------------------------------------


def test_handshake_errors(stack: Stack) -> None:
    assert stack.handshake_error(apikey=token(), host="other-tenant.supabase-realtime") == (
        404, {"error": "Tenant not found"})
    assert stack.handshake_error(apikey=None) == (401, {"error": "API key is missing"})
    assert stack.handshake_error(apikey=token(ttl=-10)) == (401, {"error": "Token has expired"})
    assert stack.handshake_error(apikey=token(None)) == (401, {"error": "Fields `role` and `exp` are required in JWT"})
    assert stack.handshake_error(apikey="not-a-jwt") == (401, {"error": "The token provided is not a valid JWT"})
    assert stack.handshake_error(apikey=token(secret="another-secret-of-enough-length-000")) == (
        401, {"error": "Failed to validate JWT signature"})
    assert "TenantNotFound: Tenant not found: other-tenant" in stack.server.log_text()


def test_tenant_is_first_label_of_host_and_x_api_key_header(stack: Stack) -> None:
    ph = stack.ws(apikey=None, header={"x-api-key": token()}, host=f"realtime-dev.localhost:{stack.port}")
    ref = ph.send("phoenix", "heartbeat", {})
    assert ph.reply(ref)["raw"] == {"topic": "phoenix", "event": "phx_reply",
                                   "payload": {"status": "ok", "response": {}}, "ref": ref}
    ph.close()


def test_vsn2_arrays_join_reply_and_leave(stack: Stack) -> None:
    ph = stack.ws(apikey=token(), vsn="2.0.0")
    ref = ph.send("realtime:room-v2", "phx_join", {"config": {"broadcast": {"self": True}}}, join_ref="7")
    reply = ph.reply(ref)
    assert reply["raw"] == ["7", ref, "realtime:room-v2", "phx_reply",
                            {"status": "ok", "response": {"postgres_changes": []}}]
    ref = ph.send("realtime:room-v2", "broadcast", {"type": "broadcast", "event": "e", "payload": {"x": 1}},
                  join_ref="7")
    msg = ph.event("broadcast")
    assert msg["raw"][0] is None and msg["raw"][1] is None
    assert msg["payload"] == {"type": "broadcast", "event": "e", "payload": {"x": 1}}
    ref = ph.send("realtime:room-v2", "phx_leave", {}, join_ref="7")
    assert ph.reply(ref)["payload"] == {"status": "ok", "response": {}}
    assert ph.event("phx_close")["payload"] == {}
    ref = ph.send("realtime:room-v2", "broadcast", {"type": "broadcast", "event": "e", "payload": {}})
    assert ph.reply(ref)["payload"] == {"status": "error", "response": {"reason": "unmatched topic"}}
    ph.close()


def test_join_errors(stack: Stack) -> None:
    ph = stack.ws(apikey=token())
    assert ph.join("other:topic") == {"status": "error", "response": {"reason": "unmatched topic"}}
    assert ph.join("realtime:") == {"status": "error",
                                    "response": {"reason": "TopicNameRequired: You must provide a topic name"}}
    expired = ph.join("realtime:x", access_token=token("authenticated", ttl=-30))
    assert expired["status"] == "error"
    assert expired["response"]["reason"].startswith("InvalidJWTToken: Token has expired ")
    assert ph.join("realtime:y", access_token=token(None))["response"]["reason"] == (
        "InvalidJWTToken: Fields `role` and `exp` are required in JWT")
    bad_sig = ph.join("realtime:z", access_token=token(secret="x" * 40))
    assert bad_sig["response"]["reason"] == "JwtSignatureError: Failed to validate JWT signature"
    ph.close()


def test_broadcast_self_ack_and_presence(stack: Stack) -> None:
    a, b = stack.ws(apikey=token()), stack.ws(apikey=token(), vsn="2.0.0")
    cfg = {"broadcast": {"self": False, "ack": True}, "presence": {"key": "alice", "enabled": True}}
    assert a.join("realtime:lobby", cfg)["status"] == "ok"
    assert a.event("presence_state")["payload"] == {}
    ref = a.send("realtime:lobby", "presence", {"type": "presence", "event": "track", "payload": {"mood": "ok"}})
    assert a.reply(ref)["payload"]["status"] == "ok"
    diff = a.event("presence_diff")["payload"]
    assert list(diff["joins"]) == ["alice"] and diff["leaves"] == {}
    meta = diff["joins"]["alice"]["metas"][0]
    assert meta["mood"] == "ok" and meta["phx_ref"]
    assert b.join("realtime:lobby", {"presence": {"key": "bob", "enabled": True}})["status"] == "ok"
    state = b.event("presence_state")["payload"]
    assert state == {"alice": {"metas": [meta]}}
    # a broadcasts with ack, not to itself
    ref = a.send("realtime:lobby", "broadcast", {"type": "broadcast", "event": "hello", "payload": {"n": 1}})
    assert a.reply(ref)["payload"] == {"status": "ok", "response": {}}
    assert b.event("broadcast")["payload"] == {"type": "broadcast", "event": "hello", "payload": {"n": 1}}
    a.nothing("broadcast", 0.5)
    # a leaves: b sees the leave
    a.close()
    leave = b.event("presence_diff", pred=lambda m: bool(m["payload"]["leaves"]))["payload"]
    assert list(leave["leaves"]) == ["alice"]
    b.close()


def _pg_join(ph: Phoenix, topic: str, bindings: list[dict[str, Any]], **payload: Any) -> dict[str, Any]:
    reply = ph.join(topic, {"postgres_changes": bindings}, **payload)
    assert reply["status"] == "ok", reply
    return reply


def test_postgres_changes_filters_and_replica_identity(stack: Stack) -> None:
    ph = stack.ws(apikey=token("service_role"))
    bindings = [
        {"event": "INSERT", "schema": "public", "table": "notes", "filter": "n=gt.5"},
        {"event": "DELETE", "schema": "public", "table": "notes", "filter": "body=eq.bye"},
        {"event": "UPDATE", "schema": "public", "table": "notes", "filter": "id=in.(1,2)"},
    ]
    reply = _pg_join(ph, "realtime:notes", bindings)
    echoed = reply["response"]["postgres_changes"]
    assert [{k: v for k, v in e.items() if k != "id"} for e in echoed] == bindings
    ids = [e["id"] for e in echoed]
    assert all(isinstance(i, int) for i in ids) and len(set(ids)) == 3
    sys_msg = ph.event("system")["payload"]
    assert sys_msg == {"extension": "postgres_changes", "status": "ok", "message": "Subscribed to PostgreSQL",
                       "channel": "notes"}
    stack.cluster.execute("insert into notes values (1, 'small', 1), (2, 'big', 10), (3, 'bye', 3)")
    ins = ph.event("postgres_changes")["payload"]
    assert ins["ids"] == [ids[0]] and ins["data"]["record"] == {"id": 2, "body": "big", "n": 10}
    assert "old_record" not in ins["data"]
    stack.cluster.execute("update notes set n = 4 where id = 1")
    upd = ph.event("postgres_changes")["payload"]
    assert upd["ids"] == [ids[2]] and upd["data"]["type"] == "UPDATE"
    # REPLICA IDENTITY FULL on notes: old_record has every column
    assert upd["data"]["old_record"] == {"id": 1, "body": "small", "n": 1}
    stack.cluster.execute("delete from notes")
    dele = ph.event("postgres_changes")["payload"]
    assert dele["ids"] == [ids[1]] and dele["data"]["old_record"] == {"id": 3, "body": "bye", "n": 3}
    ph.nothing("postgres_changes", 0.8)
    ph.close()


def test_replica_identity_default_gives_pk_only_old_record(stack: Stack) -> None:
    ph = stack.ws(apikey=token("service_role"))
    _pg_join(ph, "realtime:todos-ri", [{"event": "UPDATE", "schema": "public", "table": "todos"}])
    ph.event("system")
    stack.cluster.execute("insert into todos (id, task) values (900, 'ri')")
    stack.cluster.execute("update todos set task = 'ri2' where id = 900")
    upd = ph.event("postgres_changes")["payload"]["data"]
    assert upd["record"]["task"] == "ri2" and upd["old_record"] == {"id": 900}
    stack.cluster.execute("delete from todos where id = 900")
    ph.close()


def test_not_in_publication_error(stack: Stack) -> None:
    ph = stack.ws(apikey=token())
    _pg_join(ph, "realtime:hidden", [{"event": "*", "schema": "public", "table": "hidden"}])
    msg = ph.event("system")["payload"]
    assert msg["status"] == "error" and msg["extension"] == "postgres_changes"
    # v2.101.0+ (the server's default version) appends `select:`; test_sandbox_server_versions.py has the older text.
    assert msg["message"] == (
        "Unable to subscribe to changes with given parameters. Please check Realtime is enabled for the given "
        "connect parameters: [event: *, schema: public, table: hidden, filters: [], select: nil]")
    ph.close()


def test_rls_and_access_token_refresh(stack: Stack) -> None:
    anon = stack.ws(apikey=token())
    user = stack.ws(apikey=token())
    binding = [{"event": "*", "schema": "public", "table": "todos"}]
    _pg_join(anon, "realtime:rls", binding)
    _pg_join(user, "realtime:rls", binding, access_token=token("authenticated", sub=USER_A))
    anon.event("system")
    user.event("system")
    stack.cluster.execute(f"insert into todos (id, task, owner) values (501, 'mine', '{USER_A}')")
    time.sleep(0.3)
    stack.cluster.execute("insert into todos (id, task, owner) values (502, 'public', null)")
    def is_insert(m: dict[str, Any]) -> bool:
        return bool(m["payload"]["data"]["type"] == "INSERT")

    got_user = user.event("postgres_changes", pred=is_insert)["payload"]["data"]
    assert got_user["record"]["id"] == 501
    got_anon = anon.event("postgres_changes", pred=is_insert)["payload"]["data"]
    assert got_anon["record"]["id"] == 502
    user.nothing("postgres_changes", 0.6)
    # access_token: the channel resubscribes (1-3 s later, a second "Subscribed to PostgreSQL") with the new
    # claims, then runs as another user and stops seeing A's rows
    user.send("realtime:rls", "access_token", {"access_token": token("authenticated", sub=USER_A.replace("a", "c"))})
    again = user.event("system", timeout=6)["payload"]
    assert again["message"] == "Subscribed to PostgreSQL" and again["status"] == "ok"
    stack.cluster.execute(f"insert into todos (id, task, owner) values (503, 'mine2', '{USER_A}')")
    user.nothing("postgres_changes", 1.0)
    # an expired refresh closes the channel with a system error
    user.send("realtime:rls", "access_token", {"access_token": token("authenticated", ttl=-5)})
    sys_msg = user.event("system")["payload"]
    assert sys_msg["extension"] == "system" and sys_msg["status"] == "error"
    assert sys_msg["message"].startswith("Token has expired")
    user.event("phx_close")
    stack.cluster.execute("delete from todos where id in (501, 502, 503)")
    anon.close()
    user.close()


def test_http_endpoints(stack: Stack) -> None:
    assert stack.http("GET", "/healthcheck") == (200, b"ok")
    assert stack.http("GET", "/api/ping") == (200, b'{"message":"Success"}')
    assert stack.http("GET", "/api/ping", host="nobody.example") == (
        401, b'{"message":"Tenant not found in database"}')
    listener = stack.ws(apikey=token())
    listener.join("realtime:rest")
    body = {"messages": [{"topic": "rest", "event": "from-rest", "payload": {"k": 1}},
                         {"topic": "rest", "event": "with-id", "payload": {"k": 2}, "id": "m-1"}]}
    assert stack.http("POST", "/api/broadcast", headers={"apikey": token()}, body=body) == (202, b"")
    # meta only when the message has an id (BatchBroadcast)
    assert listener.event("broadcast")["payload"] == {"event": "from-rest", "payload": {"k": 1}, "type": "broadcast"}
    assert listener.event("broadcast")["payload"] == {"event": "with-id", "payload": {"k": 2}, "type": "broadcast",
                                                      "meta": {"id": "m-1"}}
    no_event = {"messages": [{"topic": "rest", "payload": {}}]}
    assert stack.http("POST", "/api/broadcast", headers={"apikey": token()}, body=no_event) == (
        422, b'{"errors":{"messages":[{"event":["can\'t be blank"]}]}}')
    assert stack.http("POST", "/api/broadcast", headers={"apikey": token(secret="z" * 40)}, body=body) == (
        401, b'{"message":"Unauthorized"}')
    # health: admin JWT signed with API_JWT_SECRET
    admin = {"Authorization": "Bearer " + jwt.encode({"role": "x"}, API_SECRET, algorithm="HS256")}
    assert stack.http("GET", "/api/tenants/realtime-dev/health")[0] == 403
    assert stack.http("GET", "/api/tenants/realtime-dev/health", headers={"Authorization": f"Bearer {token()}"}) == (
        403, b"")
    assert stack.http("GET", "/api/tenants/nobody/health", headers=admin) == (404, b'{"message":"not found"}')
    # the admin API's fallback log names no tenant (unlike the socket's "Tenant not found: <id>")
    assert "error_code=TenantNotFound [error] TenantNotFound: Tenant not found\n" in stack.server.log_text()
    status, raw = stack.http("GET", "/api/tenants/realtime-dev/health", headers=admin)
    data = json.loads(raw)["data"]
    assert status == 200 and data["healthy"] is True and data["db_connected"] is True
    # region is the REGION environment variable (unset here, as in the official compose), not the extension's
    assert data["connected_cluster"] >= 1 and data["region"] is None and data["node"] == "realtime@127.0.0.1"
    assert set(data) == {"healthy", "db_connected", "replication_connected", "connected_cluster", "region", "node"}
    listener.close()


def wait_idle(stack: Stack, timeout: float = 5) -> None:
    """Wait until the server counts no connected users (sockets closed by earlier tests)."""
    admin = {"Authorization": "Bearer " + jwt.encode({"role": "x"}, API_SECRET, algorithm="HS256")}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, raw = stack.http("GET", "/api/tenants/realtime-dev/health", headers=admin)
        if status == 200 and json.loads(raw)["data"]["connected_cluster"] == 0:
            return
        time.sleep(0.1)
    raise AssertionError("sockets from earlier tests are still counted as connected users")


def test_limits(stack: Stack) -> None:
    wait_idle(stack)
    stack.seed(limits=TenantLimits(max_channels_per_client=2, max_concurrent_users=2, max_events_per_second=5))
    try:
        ph = stack.ws(apikey=token())
        assert ph.join("realtime:l1")["status"] == "ok"
        assert ph.join("realtime:l2")["status"] == "ok"
        assert ph.join("realtime:l3") == {"status": "error",
                                          "response": {"reason": "ChannelRateLimitReached: Too many channels"}}
        other = stack.ws(apikey=token())
        assert other.join("realtime:l1")["status"] == "ok"
        assert stack.handshake_error(apikey=token()) == (429, {"error": "Too many connected users"})
        other.close()
        rcv = stack.ws(apikey=token())
        assert rcv.join("realtime:l1")["status"] == "ok"
        # Each send counts once and each delivery once (8 + 8 in one 0.2 s tick: 80/s >= 5). The limit
        # triggers at the next tick; the next delivery then shuts the *receiving* channel, not the sender.
        for _ in range(8):
            ph.send("realtime:l1", "broadcast", {"type": "broadcast", "event": "spam", "payload": {}})
        for _ in range(8):
            assert rcv.event("broadcast")["payload"]["event"] == "spam"
        time.sleep(0.5)
        ph.send("realtime:l1", "broadcast", {"type": "broadcast", "event": "last", "payload": {}})
        assert rcv.event("broadcast")["payload"]["event"] == "last"  # delivered (fastlane), then the shutdown
        sys_msg = rcv.event("system")["payload"]
        assert sys_msg["message"] == "Too many messages per second" and sys_msg["status"] == "error"
        rcv.event("phx_close")
        ph.nothing("system", 0.3)  # the sender is not shut by its own sends
        assert not [m for m in ph.inbox if m["event"] == "phx_close"]
        rcv.close()
        ph.close()
        stack.seed(limits=TenantLimits(max_joins_per_second=3))
        time.sleep(1.1)
        ph = stack.ws(apikey=token())
        replies = []
        for i in range(6):
            replies.append(ph.join(f"realtime:j{i}"))
            if replies[-1]["status"] == "error":
                break
        assert replies[-1] == {"status": "error",
                               "response": {"reason": "ClientJoinRateLimitReached: Too many joins per second"}}
        assert 3 <= len(replies) <= 5
        # while the join rate stays over the limit, new sockets are refused at the handshake
        assert stack.handshake_error(apikey=token()) == (429, {"error": "Too many joins per second"})
        # the socket is disconnected after this error
        with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError, ValueError)):
            ph.send("phoenix", "heartbeat", {})
            ph.conn.settimeout(2)
            if not ph.conn.recv():
                raise websocket.WebSocketConnectionClosedException("closed")
        ph.close()
    finally:
        stack.seed()


def test_tenant_missing_and_suspended_after_reseed(stack: Stack) -> None:
    with stack.cluster.connect() as conn:
        conn.execute("update _realtime.tenants set suspend = true")
    time.sleep(1.1)
    try:
        assert stack.handshake_error(apikey=token()) == (403, {"error": "Realtime was disabled for this tenant"})
    finally:
        stack.seed()
    with stack.cluster.connect() as conn:
        conn.execute("delete from _realtime.tenants")
    time.sleep(1.1)
    try:
        assert stack.handshake_error(apikey=token()) == (404, {"error": "Tenant not found"})
    finally:
        stack.seed()
    assert stack.ws(apikey=token()).join("realtime:back")["status"] == "ok"


def test_jwt_mismatch_after_reseed(stack: Stack) -> None:
    stack.seed(jwt_secret="a-different-secret-for-the-tenant-000000")
    try:
        assert stack.handshake_error(apikey=token()) == (401, {"error": "Failed to validate JWT signature"})
    finally:
        stack.seed()


def test_unreachable_tenant_db_fails_the_join(stack: Stack) -> None:
    seed_tenant(stack.cluster, jwt_secret=JWT_SECRET, db_host="127.0.0.1", db_port=1,
                db_password=stack.cluster.password)
    time.sleep(1.1)
    try:
        # a fresh server so no tenant DB connection is cached
        workdir = Path(tempfile.mkdtemp(prefix="rtbook-srv2-"))
        try:
            srv = start_server(_server_config(stack.cluster), workdir=workdir, db_password=stack.cluster.password)
            try:
                other = Stack(stack.cluster, srv)
                ph = other.ws(apikey=token())
                assert ph.join("realtime:x") == {
                    "status": "error",
                    "response": {"reason": "UnableToConnectToProject: Realtime was unable to connect to the "
                                           "project database"}}
                ph.close()
            finally:
                srv.stop()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    finally:
        stack.seed()


def test_wal_level_replica_subscribes_but_delivers_nothing() -> None:
    require(have_postgres(), "PostgreSQL 15 binaries with wal2json are not installed")
    cluster = PostgresCluster(wal_level="replica")
    cluster.start()
    workdir = Path(tempfile.mkdtemp(prefix="rtbook-srv3-"))
    try:
        bootstrap(cluster, jwt_secret=JWT_SECRET)
        srv = start_server(_server_config(cluster), workdir=workdir, db_password=cluster.password)
        try:
            st = Stack(cluster, srv)
            ph = st.ws(apikey=token("service_role"))
            _pg_join(ph, "realtime:t", [{"event": "*", "schema": "public", "table": "todos"}])
            # Cold tenant: 1-3 s retries while the CDC workers start (and restart after the poller gives up).
            assert ph.event("system", timeout=15)["payload"]["message"] == "Subscribed to PostgreSQL"
            cluster.execute("insert into todos (task) values ('lost')")
            ph.nothing("postgres_changes", 1.5)
            assert "logical decoding requires" in srv.log_text()
            ph.close()
        finally:
            srv.stop()
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def test_sigterm_stops_within_two_seconds(stack: Stack) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="rtbook-srv4-"))
    try:
        srv = start_server(_server_config(stack.cluster), workdir=workdir, db_password=stack.cluster.password)
        try:
            ph = Stack(stack.cluster, srv).ws(apikey=token())
            ph.join("realtime:bye", {"postgres_changes": [{"event": "*", "schema": "public", "table": "todos"}]})
            started = time.monotonic()
            srv.proc.send_signal(signal.SIGTERM)
            srv.proc.wait(timeout=5)
            assert time.monotonic() - started < 2.0
            assert srv.proc.returncode == 0
        finally:
            srv.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    with psycopg.connect(stack.cluster.conninfo()) as conn:
        # the temporary slot went away with the poller's connection
        slots = conn.execute("select count(*) from pg_replication_slots where not active").fetchone()
        assert slots == (0,)


def test_config_validation(tmp_path: Path) -> None:
    base = {"db": "host=127.0.0.1 port=1 user=x dbname=y", "db_enc_key": "supabaserealtime",
            "api_jwt_secret": "a" * 32, "metrics_jwt_secret": "b" * 32}
    assert ServerConfig.from_mapping(base, env={}).port == 0
    with pytest.raises(ConfigError, match="16 bytes"):
        ServerConfig.from_mapping({**base, "db_enc_key": "short"}, env={})
    with pytest.raises(ConfigError, match="RTBOOK_SANDBOX_DB_PASSWORD"):
        ServerConfig.from_mapping({**base, "db": "host=x password=secret"}, env={})
    with pytest.raises(ConfigError, match="unknown server config keys: bogus"):
        ServerConfig.from_mapping({**base, "bogus": 1}, env={})
    cfg = ServerConfig.from_mapping(base, env={"RTBOOK_SANDBOX_DB_PASSWORD": "pw-canary-123"})
    assert "pw-canary-123" not in repr(cfg)


def test_startup_fails_with_reason_when_metadata_db_is_unusable(stack: Stack, tmp_path: Path) -> None:
    from rtbook.exceptions import SandboxError

    with pytest.raises(SandboxError, match=r"did not become ready.*metadata database"):
        start_server(_server_config(stack.cluster), workdir=tmp_path, db_password="wrong-password", timeout=10)
    cfg = _server_config(stack.cluster)
    cfg["db"] = cfg["db"].replace("dbname=postgres", "dbname=template1")
    with pytest.raises(SandboxError, match=r'relation "_realtime.tenants" does not exist'):
        start_server(cfg, workdir=tmp_path, db_password=stack.cluster.password, timeout=10)


def test_realtime_sessions_visible_in_pg_stat_activity(stack: Stack) -> None:
    ph = stack.ws(apikey=token())
    ph.join("realtime:apps", {"postgres_changes": [{"event": "*", "schema": "public", "table": "todos"}]})
    ph.event("system")
    with stack.cluster.connect() as conn:
        names = {r[0] for r in conn.execute("select application_name from pg_stat_activity").fetchall()}
        slots = conn.execute(
            "select slot_name, plugin, temporary from pg_replication_slots where slot_name like 'supabase_realtime%'"
        ).fetchall()
    assert {"supabase_mt_realtime", "realtime_connect", "realtime_rls", "realtime_subscription_manager",
            "realtime_replication_connection"} <= names
    # postgres_changes' wal2json slot, and Connect's broadcast-from-database slot (pgoutput)
    assert sorted(slots) == [("supabase_realtime_messages_replication_slot_", "pgoutput", True),
                             ("supabase_realtime_replication_slot_", "wal2json", True)]
    ph.close()


def test_idle_socket_is_closed_after_the_transport_timeout(stack: Stack, tmp_path: Path) -> None:
    srv = start_server(_server_config(stack.cluster, idle_timeout_s=1.0), workdir=tmp_path,
                       db_password=stack.cluster.password)
    try:
        ph = Stack(stack.cluster, srv).ws(apikey=token())
        ref = ph.send("phoenix", "heartbeat", {})
        ph.reply(ref)
        ph.conn.settimeout(5)
        started = time.monotonic()
        with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
            while time.monotonic() - started < 5:
                if not ph.conn.recv():
                    raise websocket.WebSocketConnectionClosedException("closed")
        assert 0.8 < time.monotonic() - started < 4
    finally:
        srv.stop()


def test_admin_tenants_api_and_reload(stack: Stack) -> None:
    admin = {"Authorization": "Bearer " + jwt.encode({"role": "x"}, API_SECRET, algorithm="HS256")}
    assert stack.http("GET", "/api/tenants", headers={"apikey": token()}) == (403, b"")
    status, raw = stack.http("GET", "/api/tenants", headers=admin)
    data = json.loads(raw)["data"]
    assert status == 200 and [t["external_id"] for t in data] == ["realtime-dev"]
    ext = data[0]["extensions"]
    assert [e["type"] for e in ext] == ["postgres_cdc_rls"] and "db_password" not in ext[0]["settings"]
    assert ext[0]["settings"]["region"] == "us-east-1"
    assert stack.http("GET", "/api/tenants/nobody", headers=admin) == (404, b'{"message":"not found"}')
    assert json.loads(stack.http("GET", "/api/tenants/realtime-dev", headers=admin)[1])["data"]["name"] == (
        "realtime-dev")
    ph = stack.ws(apikey=token())
    ph.join("realtime:reload")
    assert stack.http("POST", "/api/tenants/realtime-dev/reload", headers=admin) == (204, b"")
    msg = ph.event("system")["payload"]
    assert msg == {"extension": "system", "status": "ok", "message": "Server requested disconnect"}
    ph.close()
