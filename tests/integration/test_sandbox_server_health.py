"""``GET /api/tenants/:id/health`` of the stand-in, as ``Realtime.Tenants.health_check/1`` computes it (notes §1).

The metadata database (``_realtime``) and the tenant database are two clusters here, so the tenant's database can
be stopped for real while the server keeps reading its tenant row.

* a Connect with a connection → healthy, db_connected (whether or not the database answers right now);
* no connection and users joined → unhealthy;
* no connection and no users → v2.106.0+: healthy unless ``migrations_ran`` is behind (no DB contact, migrations
  started in the background); older: the migrations run in the request (``:noop`` without DB contact).
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from rtbook.registry import run_checks
from rtbook.results import Status
from rtbook.sandbox import PostgresCluster, bootstrap, seed_tenant
from rtbook.sandbox.server_process import start_server
from rtbook.target import Target
from tests.conftest import have_postgres, require
from tests.integration.test_sandbox_server import API_SECRET, HOST, JWT_SECRET, Stack, token

pytestmark = [pytest.mark.postgres, pytest.mark.sandbox]

ADMIN = {"Authorization": "Bearer " + jwt.encode({"role": "x"}, API_SECRET, algorithm="HS256")}
ENV = {
    "CONNECT_ERROR_BACKOFF_MS": "0", "CHANNEL_ERROR_BACKOFF_MS": "0",
    # Connect's idle shutdown (60 s x 11 samples) and the DB recovery window (10 min) shortened for the test.
    "RTBOOK_CONNECT_CHECK_USERS_INTERVAL_MS": "150", "RTBOOK_DB_RECOVERY_MS": "1000",
}


@contextlib.contextmanager
def server_on(cluster: PostgresCluster, version: str, env: dict[str, str]) -> Iterator[Stack]:
    workdir = Path(tempfile.mkdtemp(prefix="rtbook-srv-h-"))
    srv = None
    config = {"db": f"host=127.0.0.1 port={cluster.port} user=supabase_admin dbname=postgres",
              "db_enc_key": "supabaserealtime", "api_jwt_secret": API_SECRET, "metrics_jwt_secret": API_SECRET,
              "realtime_version": version}
    try:
        srv = start_server(config, workdir=workdir, db_password=cluster.password, extra_env=env)
        yield Stack(cluster, srv)
    finally:
        if srv is not None:
            srv.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def health(stack: Stack) -> dict[str, Any]:
    status, raw = stack.http("GET", "/api/tenants/realtime-dev/health", headers=ADMIN)
    assert status == 200, (status, raw)
    data: dict[str, Any] = json.loads(raw)["data"]
    assert set(data) == {"healthy", "db_connected", "replication_connected", "connected_cluster", "region", "node"}
    return data


def until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


def shape(data: dict[str, Any]) -> tuple[bool, bool, int]:
    return data["healthy"], data["db_connected"], data["connected_cluster"]


def test_health_with_the_tenant_database_stopped() -> None:
    require(have_postgres(), "PostgreSQL 15 binaries with wal2json are not installed")
    meta, tenant_db = PostgresCluster(), PostgresCluster()
    meta.start()
    try:
        tenant_db.start()
        bootstrap(meta, jwt_secret=JWT_SECRET, realtime_version="2.129.8", seed=False, demo=False)
        bootstrap(tenant_db, jwt_secret=JWT_SECRET, realtime_version="2.129.8", seed=False)
        # seeds.exs ran the tenant migrations: migrations_ran = 81 (v2.129.8) ≥ 68 (v2.78.19)
        seed_tenant(meta, jwt_secret=JWT_SECRET, db_host="127.0.0.1", db_port=tenant_db.port,
                    db_password=tenant_db.password, migrations_ran=81)
        with server_on(meta, "2.129.8", ENV) as new, server_on(meta, "2.78.19", ENV) as old:
            # never connected, no users, migrations done: healthy without a DB connection
            assert shape(health(new)) == (True, False, 0)
            data = health(new)
            assert data["region"] is None and data["node"] == "realtime@127.0.0.1"
            ph = new.ws(apikey=token())
            assert ph.join("realtime:h")["status"] == "ok"
            assert shape(health(new)) == (True, True, 1)
            # the broadcast-from-database replication connection starts in the background after connecting
            until(lambda: health(new)["replication_connected"] is True, 5, "replication_connected")
            # Connect's idle shutdown: the last user left, K zero samples later the connection goes
            ph.close()
            until(lambda: not health(new)["db_connected"], 8, "the idle shutdown of Connect")
            assert shape(health(new)) == (True, False, 0)
            assert "[info] Tenant has no connected users, database connection will be terminated" in (
                new.server.log_text())
            # a user joined, then the tenant database stops: the recovery window ends Connect → unhealthy
            ph = new.ws(apikey=token())
            assert ph.join("realtime:h")["status"] == "ok"
            tenant_db.stop()
            until(lambda: not health(new)["db_connected"], 8, "Connect giving up on the stopped database")
            assert shape(health(new)) == (False, False, 1)
            text = new.server.log_text()
            assert re.search(r"error_code=DatabaseConnectionDown \[warning\] DatabaseConnectionDown: Database pool "
                             r"connection lost, recovery window opened$", text, flags=re.MULTILINE)
            assert "DatabaseConnectionRecoveryWindowExceeded: Database pool could not reconnect within 1000ms" in text
            # a new join cannot start Connect: UnableToConnectToTenantDatabase, then UnableToConnectToProject
            assert ph.join("realtime:h2")["response"]["reason"] == (
                "UnableToConnectToProject: Realtime was unable to connect to the project database")
            text = new.server.log_text()
            assert re.search(r"error_code=UnableToConnectToTenantDatabase \[error\] UnableToConnectToTenantDatabase: "
                             r"%DBConnection.ConnectionError\{\n  message: \"tcp connect \(127.0.0.1:\d+\): "
                             r"connection refused - :econnrefused\"", text)
            assert re.search(r"error_code=UnableToConnectToProject exp=\d+ \[error\] UnableToConnectToProject: "
                             r"Realtime was unable to connect to the project database$", text, flags=re.MULTILINE)
            # THE case: tenant database stopped, nobody connected → healthy:true, db_connected:false
            ph.close()
            until(lambda: health(new)["connected_cluster"] == 0, 5, "the socket to be gone")
            assert shape(health(new)) == (True, False, 0)
            assert shape(health(old)) == (True, False, 0)  # v2.78.19: migrations are a :noop, no DB contact
            # ... and rtbook's realtime.health does not take that healthy:true at its word: it joins a channel
            # (Realtime connects to the tenant DB on the first join) and fails on the refusal, for both versions.
            for stand_in in (new, old):
                verdict = run_checks(Target(realtime_url=f"http://127.0.0.1:{stand_in.port}", realtime_host=HOST,
                                            tenant="realtime-dev", timeout=5,
                                            env={"API_JWT_SECRET": API_SECRET, "ANON_KEY": token()}),
                                     only="realtime.health").by_id("realtime.health")
                assert (verdict.status, verdict.cause) == (Status.FAIL, "tenant_db_unreachable"), str(verdict)
                assert "UnableToConnectToProject" in verdict.summary and "healthy=true" in verdict.summary
                until(lambda s=stand_in: health(s)["connected_cluster"] == 0, 10, "the check's socket to be gone")
            # migrations behind: NEW answers false without touching the DB (and migrates in the background);
            # OLD runs them in the request, against the stopped database: false as well
            with meta.connect() as conn:
                conn.execute("update _realtime.tenants set migrations_ran = 60")
            time.sleep(1.2)  # tenant cache
            assert shape(health(new)) == (False, False, 0)
            assert shape(health(old)) == (False, False, 0)
            with meta.connect() as conn:
                conn.execute("update _realtime.tenants set migrations_ran = 68")
            time.sleep(1.2)
            assert shape(health(old)) == (True, False, 0)  # 68 = v2.78.19's count: :noop
            assert shape(health(new)) == (False, False, 0)  # 68 < 81
            assert "MigrationsFailedToRun" in new.server.log_text()
    finally:
        tenant_db.stop()
        meta.stop()
