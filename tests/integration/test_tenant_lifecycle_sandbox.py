"""A tenant rename and an added tenant on the whole sandbox, in the plan's order of operations.

The plan's files are copied into the sandbox's own stack directory (a copy the sandbox owns) and the
gateway restarts with them (``reload_gateway``, the ``docker compose up -d`` of the sandbox); the rows go
through ``--apply --yes``. Then the official clients, unchanged, connect through the one gateway: realtime-js
(Node, vsn 2.0.0) and ``realtime`` from PyPI (vsn 1.0.0). The old tenant's rows are deleted before they
connect, so a client that still reached ``realtime-dev`` would be refused: working clients prove the new
tenant. With ``tenant-b`` added, each public host reaches its own tenant and neither sees the other's
broadcasts; ``rtbook check --target sandbox --all-tenants`` passes for both.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rtbook.cli import main
from rtbook.lifecycle import apply, plan_add, plan_remove, plan_rename
from rtbook.registry import run_checks
from rtbook.results import Status
from rtbook.sandbox.manager import Sandbox, SandboxState, reload_gateway
from rtbook.sandbox.stackdir import read_env
from rtbook.target import Target
from tests.conftest import have_postgres, require
from tests.integration.node_client import NodeClient, have_node_client, until

pytestmark = [pytest.mark.sandbox, pytest.mark.node, pytest.mark.slow]

NEW, EXTRA, EXTRA_HOST = "my-tenant", "tenant-b", "tenant-b.localhost"


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SandboxState, Path]]:
    require(have_postgres(), "PostgreSQL 15 with wal2json is needed by the sandbox")
    home = tmp_path_factory.mktemp("home")
    with Sandbox(home=home) as state:
        yield state, home


def _target(home: Path, **kwargs: Any) -> Target:
    return Target.from_sandbox(home / "sandbox" / "state.json", timeout=5, **kwargs)


def _lay(plan_files: Path, stack: Path) -> None:
    for f in plan_files.rglob("*"):
        if f.is_file() and not f.name.endswith(".patch"):
            dest = stack / f.relative_to(plan_files)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dest)
    for patch in plan_files.rglob("*.patch"):
        subprocess.run(["patch", "-p1", "-s", "-d", str(stack), "-i", str(patch.resolve())], check=True, timeout=30)


@pytest.fixture
def localhost_resolver(monkeypatch: pytest.MonkeyPatch) -> None:
    """Resolve ``*.localhost`` to 127.0.0.1 in this process (RFC 6761), for the Python client."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.endswith(".localhost"):
            host = "127.0.0.1"
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_rename_then_add_a_tenant_behind_one_gateway(box: tuple[SandboxState, Path], tmp_path: Path,
                                                      localhost_resolver: None,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    require(have_node_client(), "node and tests/node/node_modules (run `npm ci` in tests/node) are needed")
    require(shutil.which("patch") is not None, "patch(1) is needed to lay the .env patch over the stack")
    state, home = box
    stack = Path(state.stack_dir)
    env = read_env(stack / ".env")

    # 1. Rows first: my-tenant gets its tenant row and one postgres_cdc_rls row; realtime-dev keeps its rows.
    plan = plan_rename(_target(home), NEW)
    assert [(c.kind, c.table) for c in plan.rows.changes] == [("insert", "tenants"), ("insert", "extensions")]
    assert apply(_target(home), plan, yes=True).status is Status.PASS
    # Half done (rows, not files): the stack still serves realtime-dev, and the check names the remaining step.
    half = run_checks(_target(home, tenant=NEW), only="compose.realtime.tenant_consistency")
    result = half.by_id("compose.realtime.tenant_consistency")
    assert result.status is Status.FAIL and f"rtbook tenant rename {NEW}" in result.remedy
    # 2.-3. The files, then the gateway restarts with them; the old tenant's rows go last.
    out = tmp_path / "rename"
    plan.write(out, stack)
    _lay(out, stack)
    assert reload_gateway(home=home).tenant == NEW
    gone = plan_remove(_target(home), "realtime-dev")
    assert {c.table for c in gone.rows.changes} == {"tenants", "extensions"}
    assert apply(_target(home), gone, yes=True).status is Status.PASS
    assert run_checks(_target(home), only=("compose.", "tenant.")).failures == []

    # 4. Add tenant-b on its own public host (rows first, then the files), and reload the gateway.
    added = plan_add(_target(home), EXTRA, EXTRA_HOST)
    assert not added.blocked
    assert apply(_target(home), added, yes=True).status is Status.PASS
    # Both tenants poll the one database: tenant-b gets a replication slot name of its own.
    slots = {t: s for t, s in _query(state, env, "SELECT tenant_external_id, settings->>'slot_name' "
                                                 "FROM _realtime.extensions")}
    assert slots[EXTRA] != slots[NEW] and slots[EXTRA].endswith("tenant_b")
    out_b = tmp_path / "add"
    added.write(out_b, stack)
    _lay(out_b, stack)
    reload_gateway(home=home)

    anon = env["ANON_KEY"]
    port = state.gateway_url.rsplit(":", 1)[1]
    default_ws = f"ws://127.0.0.1:{port}/realtime/v1"
    extra_ws = f"ws://{EXTRA_HOST}:{port}/realtime/v1"
    node_a = NodeClient(default_ws, "room", "js-a", {"RT_APIKEY": anon})
    node_b = NodeClient(extra_ws, "room", "js-b", {"RT_APIKEY": anon})
    py: dict[str, list[Any]] = {"broadcast": [], "status": [], "presence": [], "pg": [], "system": []}

    async def scenario() -> None:
        from realtime import AsyncRealtimeClient

        client = AsyncRealtimeClient(f"http://127.0.0.1:{port}/realtime/v1", token=anon, auto_reconnect=False)
        await client.connect()
        channel = client.channel("room", {"config": {"broadcast": {"self": False}, "presence": {"key": "py-a"},
                                                     "private": False}})
        channel.on_broadcast("*", lambda p: py["broadcast"].append(p))
        channel.on_presence_sync(lambda: py["presence"].append(sorted(channel.presence_state())))
        channel.on_postgres_changes("INSERT", lambda p: py["pg"].append(p), table="todos", schema="public")
        channel.on_system(lambda p: py["system"].append(p))
        await channel.subscribe(lambda status, err: py["status"].append((status, err)))
        assert py["status"][-1][0] == "SUBSCRIBED", py["status"]
        await channel.track({"who": "py"})
        for node, name in ((node_a, "js-a"), (node_b, "js-b")):
            await until(lambda n=node: n.has("status", lambda e: e["status"] == "SUBSCRIBED"), 20,
                        f"{name} SUBSCRIBED")
        # Same tenant: realtime-js and realtime-py see each other (presence and broadcast) ...
        await until(lambda: node_a.has("presence", lambda e: e["keys"] == ["js-a", "py-a"]), 10, "js-a presence")
        await channel.send_broadcast("from-py-a", {"n": 1})
        node_a.command("broadcast from-js-a")
        node_b.command("broadcast from-js-b")
        await until(lambda: node_a.has("broadcast", lambda e: e["event"] == "from-py-a"), 10, "js-a got py-a")
        await until(lambda: any(b["event"] == "from-js-a" for b in py["broadcast"]), 10, "py-a got js-a")
        await until(lambda: node_b.has("sent", lambda e: e["result"] == "ok"), 10, "js-b broadcast acknowledged")
        await until(lambda: node_b.has("presence", lambda e: e["keys"] == ["js-b"]), 10, "js-b sees itself on tenant-b")
        # ... and changes under the new tenant.
        await until(lambda: any(getattr(s, "message", None) == "Subscribed to PostgreSQL" for s in py["system"]),
                    15, "py-a Subscribed to PostgreSQL")
        await until(lambda: node_a.has("system", lambda e: e["payload"].get("message") == "Subscribed to PostgreSQL"),
                    15, "js-a Subscribed to PostgreSQL")
        _sql(state, env, "insert into todos (id, task, owner) values (301, 'public', null)")
        await until(lambda: any(p["data"]["record"]["id"] == 301 for p in py["pg"]), 15, "py-a INSERT under my-tenant")
        await until(lambda: node_a.has("pg", lambda e: e["type"] == "INSERT" and e["new"]["id"] == 301), 15,
                    "js-a INSERT under my-tenant")
        await asyncio.sleep(1.0)
        # Other tenant: same topic name, nothing crosses.
        node_b.drain()
        assert not node_b.has("broadcast"), node_b.events
        assert all(set(e["keys"]) <= {"js-b"} for e in node_b.events if e.get("kind") == "presence")
        assert not any(b["event"] == "from-js-b" for b in py["broadcast"])
        assert not node_a.has("broadcast", lambda e: e["event"] == "from-js-b")
        await client.close()

    try:
        asyncio.run(asyncio.wait_for(scenario(), timeout=120))
    except BaseException:
        for n in (node_a, node_b):
            n.drain()
            print("node events:", json.dumps(n.events, indent=1)[-2000:])
        print("gateway log:", Path(state.logs["gateway"]).read_text()[-3000:])
        print("server log:", Path(state.logs["realtime"]).read_text()[-3000:])
        raise
    finally:
        for n in (node_a, node_b):
            n.close()
    gw_log = Path(state.logs["gateway"]).read_text()
    assert "realtime-v1-ws-tenant-b open" in gw_log and "-> realtime-v1-ws open" in gw_log

    # 5. The live suite per tenant passes.
    monkeypatch.setenv("RTBOOK_HOME", str(home))
    capsys.readouterr()
    code = main(["check", "--target", "sandbox", "--all-tenants", "--timeout", "5", "--format", "json"])
    report = json.loads(capsys.readouterr().out)
    results = report["results"] if isinstance(report, dict) else report
    bad = [f"{r['id']}: {r['summary']}" for r in results if r["status"] in ("fail", "error")]
    assert code == 0 and bad == []
    for tenant in (NEW, EXTRA):
        assert any(r["id"] == "realtime.broadcast" and r["summary"].startswith(f"[{tenant}]") for r in results)
    for value in (anon, env["JWT_SECRET"], env["POSTGRES_PASSWORD"]):
        assert value not in json.dumps(report)


def _query(state: SandboxState, env: dict[str, str], statement: str) -> list[tuple[Any, ...]]:
    import psycopg

    dsn = state.db_url.replace("supabase_admin@", f"supabase_admin:{env['POSTGRES_PASSWORD']}@")
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        cur = conn.execute(statement.encode())
        return list(cur.fetchall()) if cur.description else []


def _sql(state: SandboxState, env: dict[str, str], statement: str) -> None:
    _query(state, env, statement)
