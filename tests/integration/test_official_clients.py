"""The official Realtime clients, unchanged, against the sandbox's Realtime-compatible server.

``@supabase/realtime-js`` (Node, vsn 2.0.0) and ``realtime`` from PyPI (vsn 1.0.0) subscribe to the
same topic, see each other in presence, exchange broadcasts and receive the demo table's
INSERT/UPDATE/DELETE changes, with RLS applied per subscriber.

The tenant comes from the Host header, so both clients connect to ``realtime-dev.localhost``.
glibc here does not resolve ``*.localhost``; RFC 6761 says it is loopback, so each client gets a
resolver that maps it to 127.0.0.1 through its connection settings: the ``lookup`` option of the
``ws`` transport for realtime-js, and a process-level ``socket.getaddrinfo`` shim (test-only) for
the Python client, which exposes no resolver option. Neither client is modified.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest

from rtbook.sandbox import PostgresCluster
from rtbook.sandbox.server_process import ServerProcess
from tests.conftest import require
from tests.integration.node_client import NodeClient, have_node_client, until
from tests.integration.sandbox_support import cluster_and_server

pytestmark = [pytest.mark.postgres, pytest.mark.sandbox]

JWT_SECRET = "canary-sandbox-jwt-secret-with-at-least-32-chars"
USER_A = "aaaaaaaa-0000-4000-8000-00000000000a"
USER_B = "bbbbbbbb-0000-4000-8000-00000000000b"
TENANT_HOST = "realtime-dev.localhost"


def token(role: str, sub: str | None = None, ttl: int = 3600) -> str:
    claims: dict[str, Any] = {"role": role, "exp": int(time.time()) + ttl, "iss": "rtbook-test"}
    if sub:
        claims["sub"] = sub
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


def _server_config(cluster: PostgresCluster) -> dict[str, Any]:
    return {
        "db": f"host=127.0.0.1 port={cluster.port} user=supabase_admin dbname=postgres",
        "db_enc_key": "supabaserealtime",
        "api_jwt_secret": JWT_SECRET,
        "metrics_jwt_secret": JWT_SECRET,
    }


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[PostgresCluster, ServerProcess]]:
    with cluster_and_server(JWT_SECRET, _server_config, kept_out_of_the_log=(JWT_SECRET,)) as both:
        yield both


@pytest.fixture
def localhost_resolver(monkeypatch: pytest.MonkeyPatch) -> None:
    """Resolve ``*.localhost`` to 127.0.0.1 in this process (RFC 6761), for the Python client."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and (host == "localhost" or host.endswith(".localhost")):
            host = "127.0.0.1"
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.mark.node
def test_python_and_node_clients_together(
    stack: tuple[PostgresCluster, ServerProcess], localhost_resolver: None
) -> None:
    require(have_node_client(), "node and tests/node/node_modules (run `npm ci` in tests/node) are needed")
    from realtime import AsyncRealtimeClient

    cluster, server = stack
    anon = token("anon")
    user_a = token("authenticated", USER_A)
    # log_level=info lets the server log Phoenix's CONNECTED line for each socket (default: error, no such line).
    node = NodeClient(f"ws://{TENANT_HOST}:{server.port}/socket", "room1", "node",
                      {"RT_APIKEY": anon, "RT_PARAMS": json.dumps({"log_level": "info"})})
    py_events: dict[str, list[Any]] = {"broadcast": [], "pg": [], "status": [], "system": []}
    py_presence: list[list[str]] = []

    async def scenario() -> None:
        client = AsyncRealtimeClient(f"http://{TENANT_HOST}:{server.port}/socket", token=user_a, auto_reconnect=False,
                                     params={"log_level": "info"})
        await client.connect()
        channel = client.channel(
            "room1",
            {"config": {"broadcast": {"self": False, "ack": True}, "presence": {"key": "py", "enabled": True},
                        "private": False}},
        )
        channel.on_broadcast("*", lambda p: py_events["broadcast"].append(p))
        channel.on_presence_sync(lambda: py_presence.append(sorted(channel.presence_state())))
        channel.on_postgres_changes("*", lambda p: py_events["pg"].append(p), table="todos", schema="public")
        channel.on_system(lambda p: py_events["system"].append(p))
        await channel.subscribe(lambda status, err: py_events["status"].append((status, err)))
        assert py_events["status"][-1][0] == "SUBSCRIBED", py_events["status"]
        await channel.track({"who": "py"})

        await until(lambda: node.has("status", lambda e: e["status"] == "SUBSCRIBED"), 15,
                       "realtime-js SUBSCRIBED", node.drain)
        # presence: each sees both keys
        await until(lambda: node.has("presence", lambda e: e["keys"] == ["node", "py"]), 10,
                       "realtime-js presence with both", node.drain)
        await until(lambda: bool(py_presence) and py_presence[-1] == ["node", "py"], 10, "python presence")
        # broadcasts both ways
        await channel.send_broadcast("from-py", {"from": "py"})
        node.command("broadcast from-node")
        await until(lambda: node.has("broadcast", lambda e: e["event"] == "from-py"), 10,
                       "realtime-js got python broadcast", node.drain)
        await until(lambda: any(b["event"] == "from-node" for b in py_events["broadcast"]), 10,
                       "python got node broadcast")
        assert node.has("sent", lambda e: e["result"] == "ok")
        # wait for both "Subscribed to PostgreSQL"
        await until(lambda: node.has("system", lambda e: e["payload"].get("message") == "Subscribed to PostgreSQL"),
                       10, "realtime-js system Subscribed to PostgreSQL", node.drain)
        await until(
            lambda: any(getattr(s, "message", None) == "Subscribed to PostgreSQL" for s in py_events["system"]),
            10, "python system Subscribed to PostgreSQL",
        )

        # postgres_changes with RLS: anon sees owner IS NULL rows, user A sees its own rows.
        def sql(stmt: str) -> None:
            cluster.execute(stmt)

        def node_pg(kind: str) -> list[dict[str, Any]]:
            return [e for e in node.events if e.get("kind") == "pg" and e["type"] == kind]

        def py_pg(kind: str) -> list[dict[str, Any]]:
            return [p["data"] for p in py_events["pg"] if p["data"]["type"] == kind]

        # Each step waits for its events: RLS is checked by re-reading the row (as Realtime does), so a row
        # deleted before the poller reads its INSERT/UPDATE would be invisible to everyone.
        sql("insert into todos (id, task, owner) values (101, 'public', null)")
        sql(f"insert into todos (id, task, owner) values (102, 'a-private', '{USER_A}')")
        sql(f"insert into todos (id, task, owner) values (103, 'b-private', '{USER_B}')")
        await until(lambda: bool(node_pg("INSERT")) and bool(py_pg("INSERT")), 15, "INSERT events", node.drain)
        sql("update todos set done = true where id in (101, 102)")
        await until(lambda: bool(node_pg("UPDATE")) and bool(py_pg("UPDATE")), 15, "UPDATE events", node.drain)
        sql("delete from todos where id in (101, 102)")

        await until(lambda: len(node_pg("DELETE")) >= 2 and len(py_pg("DELETE")) >= 2, 15,
                       "DELETE events at both clients", node.drain)
        await asyncio.sleep(0.5)
        node.drain()
        # realtime-js (anon): only the public row's INSERT/UPDATE
        assert [e["new"]["id"] for e in node_pg("INSERT")] == [101]
        assert node_pg("INSERT")[0]["new"]["task"] == "public"
        assert [e["new"]["id"] for e in node_pg("UPDATE")] == [101]
        assert node_pg("UPDATE")[0]["new"]["done"] is True
        assert node_pg("UPDATE")[0]["old"] == {"id": 101}
        # python (authenticated as user A): only A's row
        assert [d["record"]["id"] for d in py_pg("INSERT")] == [102]
        assert py_pg("INSERT")[0]["record"]["owner"] == USER_A
        assert [d["record"]["id"] for d in py_pg("UPDATE")] == [102]
        # DELETE is not RLS-checked; with RLS on, old_record is reduced to the primary key
        assert sorted(e["old"]["id"] for e in node_pg("DELETE")) == [101, 102]
        assert all(set(e["old"]) == {"id"} for e in node_pg("DELETE"))
        assert sorted(d["old_record"]["id"] for d in py_pg("DELETE")) == [101, 102]
        # nobody saw user B's row
        assert all(e["new"].get("id") != 103 for e in node.events if e.get("kind") == "pg" and e.get("new"))
        assert all(d.get("record", {}).get("id") != 103 for d in (p["data"] for p in py_events["pg"]))
        # payload shape (§4.5)
        d = py_pg("INSERT")[0]
        assert d["schema"] == "public" and d["table"] == "todos" and d["errors"] is None
        assert d["commit_timestamp"].endswith("Z") and len(d["commit_timestamp"]) == 24
        assert {"name": "id", "type": "int8"} in d["columns"]

        await client.close()
        # each client spoke its own serializer version (Phoenix's CONNECTED lines, logged at info on request)
        log = server.log_text()
        assert "Serializer: RealtimeWeb.Socket.V2Serializer" in log
        assert "Serializer: Phoenix.Socket.V1.JSONSerializer" in log
        # realtime-js sent its broadcast as a binary kind-3 push; the Python (vsn 1.0.0) peer got it as JSON
        assert node.has("status", lambda e: e["vsn"] == "2.0.0")

    try:
        asyncio.run(asyncio.wait_for(scenario(), timeout=90))
    except BaseException:
        node.drain()
        print("node events:", json.dumps(node.events, indent=1)[-4000:])
        print("server log:", server.log_text()[-4000:])
        raise
    finally:
        stderr = node.close()
        if stderr.strip():
            print("node stderr:", stderr[-2000:])


@pytest.mark.node
def test_binary_broadcast_between_two_realtime_js_clients(stack: tuple[PostgresCluster, ServerProcess]) -> None:
    """realtime-js (vsn 2.0.0) sends ``channel.send`` as a binary kind-3 push; its peer receives a kind-4 frame."""
    require(have_node_client(), "node and tests/node/node_modules (run `npm ci` in tests/node) are needed")
    _cluster, server = stack
    url = f"ws://{TENANT_HOST}:{server.port}/socket"
    env = {"RT_APIKEY": token("anon")}
    sender, receiver = NodeClient(url, "bin", "a", env), NodeClient(url, "bin", "b", env)

    async def scenario() -> None:
        for node in (sender, receiver):
            await until(lambda n=node: n.has("status", lambda e: e["status"] == "SUBSCRIBED"), 15, "SUBSCRIBED",
                        node.drain)
            assert node.has("status", lambda e: e["vsn"] == "2.0.0")
        sender.command("broadcast hello")
        await until(lambda: receiver.has("broadcast", lambda e: e["event"] == "hello"), 10, "the broadcast",
                    receiver.drain)
        # ack: true in the driver's config, answered by a text phx_reply
        await until(lambda: sender.has("sent", lambda e: e["result"] == "ok"), 10, "the ack", sender.drain)

    try:
        asyncio.run(asyncio.wait_for(scenario(), timeout=60))
        got = [e for e in receiver.events if e.get("kind") == "broadcast" and e["event"] == "hello"]
        assert got[0]["payload"] == {"from": "a"}
        frames = [e["bytes"] for e in receiver.events if e.get("kind") == "frame"]
        topic, event, body = b"realtime:bin", b"hello", json.dumps({"from": "a"}, separators=(",", ":")).encode()
        # V2Serializer kind 4: kind, topic length, user event length, metadata length (0), encoding (1 = JSON)
        expected = list(bytes([4, len(topic), len(event), 0, 1]) + topic + event + body)
        assert expected in frames, frames
    except BaseException:
        for node in (sender, receiver):
            node.drain()
            print("node events:", json.dumps(node.events)[-3000:])
        print("server log:", server.log_text()[-3000:])
        raise
    finally:
        for node in (sender, receiver):
            stderr = node.close()
            if stderr.strip():
                print("node stderr:", stderr[-2000:])
