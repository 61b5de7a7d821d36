"""The official clients, unchanged, against the whole sandbox through its gateway URL.

``@supabase/realtime-js`` (Node, vsn 2.0.0, anon key) and ``realtime`` from PyPI (vsn 1.0.0, anon
key as the socket apikey and a user JWT set with ``set_auth``, as supabase-py does) connect to
``<gateway>/realtime/v1`` exactly as apps do against Kong: the gateway's key-auth, acl and
request-transformer run, and the tenant comes from the upstream Host the gateway sets.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import psycopg
import pytest

from rtbook.sandbox.manager import Sandbox, SandboxState
from rtbook.sandbox.stackdir import read_env
from tests.conftest import have_postgres, require
from tests.integration.node_client import NodeClient, have_node_client, until

pytestmark = [pytest.mark.sandbox, pytest.mark.node, pytest.mark.slow]

USER_A = "aaaaaaaa-0000-4000-8000-0000000000a1"
USER_B = "bbbbbbbb-0000-4000-8000-0000000000b2"


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxState]:
    require(have_postgres(), "PostgreSQL 15 with wal2json is needed by the sandbox")
    with Sandbox(home=tmp_path_factory.mktemp("home")) as state:
        yield state


def test_official_clients_through_the_gateway(box: SandboxState) -> None:
    require(have_node_client(),
            "node and tests/node/node_modules (run `npm ci` in tests/node) are needed")
    from realtime import AsyncRealtimeClient

    env = read_env(Path(box.stack_dir) / ".env")
    anon, secret = env["ANON_KEY"], env["JWT_SECRET"]
    now = int(time.time())
    user_a = jwt.encode({"role": "authenticated", "sub": USER_A, "exp": now + 3600}, secret, algorithm="HS256")
    dsn = box.db_url.replace("supabase_admin@", f"supabase_admin:{env['POSTGRES_PASSWORD']}@")
    gw_ws = box.gateway_url.replace("http://", "ws://") + "/realtime/v1"
    node = NodeClient(gw_ws, "lobby", "node", {"RT_APIKEY": anon, "RT_PARAMS": json.dumps({"log_level": "info"})})
    py: dict[str, list[Any]] = {"broadcast": [], "pg": [], "status": [], "system": [], "presence": []}

    def sql(stmt: str) -> None:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
            conn.execute(stmt.encode())

    def node_pg(kind: str) -> list[dict[str, Any]]:
        node.drain()
        return [e for e in node.events if e.get("kind") == "pg" and e["type"] == kind]

    def py_pg(kind: str) -> list[dict[str, Any]]:
        return [p["data"] for p in py["pg"] if p["data"]["type"] == kind]

    async def scenario() -> None:
        client = AsyncRealtimeClient(box.gateway_url + "/realtime/v1", token=anon, auto_reconnect=False,
                                     params={"log_level": "info"})
        await client.connect()
        await client.set_auth(user_a)
        channel = client.channel("lobby", {"config": {"broadcast": {"self": False}, "presence": {"key": "py"},
                                                      "private": False}})
        channel.on_broadcast("*", lambda p: py["broadcast"].append(p))
        channel.on_presence_sync(lambda: py["presence"].append(sorted(channel.presence_state())))
        channel.on_postgres_changes("*", lambda p: py["pg"].append(p), table="todos", schema="public")
        channel.on_system(lambda p: py["system"].append(p))
        await channel.subscribe(lambda status, err: py["status"].append((status, err)))
        assert py["status"][-1][0] == "SUBSCRIBED", py["status"]
        await channel.track({"who": "py"})
        await until(lambda: node.has("status", lambda e: e["status"] == "SUBSCRIBED"), 15, "realtime-js SUBSCRIBED")
        await until(lambda: node.has("presence", lambda e: e["keys"] == ["node", "py"]), 10, "js presence")
        await until(lambda: bool(py["presence"]) and py["presence"][-1] == ["node", "py"], 10, "py presence")
        await channel.send_broadcast("from-py", {"n": 1})
        node.command("broadcast from-node")
        await until(lambda: node.has("broadcast", lambda e: e["event"] == "from-py"), 10, "js got py broadcast")
        await until(lambda: any(b["event"] == "from-node" for b in py["broadcast"]), 10, "py got js broadcast")
        await until(lambda: node.has("system", lambda e: e["payload"].get("message") == "Subscribed to PostgreSQL"),
                    10, "js Subscribed to PostgreSQL")
        await until(lambda: any(getattr(s, "message", None) == "Subscribed to PostgreSQL" for s in py["system"]),
                    10, "py Subscribed to PostgreSQL")
        sql("insert into todos (id, task, owner) values (201, 'public', null)")
        sql(f"insert into todos (id, task, owner) values (202, 'a-private', '{USER_A}')")
        sql(f"insert into todos (id, task, owner) values (203, 'b-private', '{USER_B}')")
        await until(lambda: bool(node_pg("INSERT")) and bool(py_pg("INSERT")), 15, "INSERT events")
        sql("update todos set done = true where id in (201, 202)")
        await until(lambda: bool(node_pg("UPDATE")) and bool(py_pg("UPDATE")), 15, "UPDATE events")
        sql("delete from todos where id in (201, 202)")
        await until(lambda: len(node_pg("DELETE")) >= 2 and len(py_pg("DELETE")) >= 2, 15, "DELETE events")
        await asyncio.sleep(0.5)
        # anon (realtime-js) sees the public row only; user A (realtime-py) its own row only.
        assert [e["new"]["id"] for e in node_pg("INSERT")] == [201]
        assert [e["new"]["id"] for e in node_pg("UPDATE")] == [201]
        assert [d["record"]["id"] for d in py_pg("INSERT")] == [202]
        assert [d["record"]["id"] for d in py_pg("UPDATE")] == [202]
        assert sorted(d["old_record"]["id"] for d in py_pg("DELETE")) == [201, 202]
        await client.close()

    try:
        asyncio.run(asyncio.wait_for(scenario(), timeout=90))
    except BaseException:
        node.drain()
        print("node events:", json.dumps(node.events, indent=1)[-3000:])
        print("gateway log:", Path(box.logs["gateway"]).read_text()[-3000:])
        print("server log:", Path(box.logs["realtime"]).read_text()[-3000:])
        raise
    finally:
        stderr = node.close()
        if stderr.strip():
            print("node stderr:", stderr[-2000:])
    log = Path(box.logs["realtime"]).read_text()
    # Phoenix's CONNECTED lines (the clients asked for log_level=info): each spoke its own serializer.
    assert "Serializer: RealtimeWeb.Socket.V2Serializer" in log
    assert "Serializer: Phoenix.Socket.V1.JSONSerializer" in log
    gw_log = Path(box.logs["gateway"]).read_text()
    assert gw_log.count("WS /realtime/v1/websocket -> realtime-v1-ws open") >= 2
    for value in (anon, secret, env["POSTGRES_PASSWORD"]):
        assert value not in gw_log and value not in log
