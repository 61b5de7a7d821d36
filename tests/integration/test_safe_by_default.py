"""Safe on production by default: a live run changes nothing in the database; only the probe is written to.

Against the whole sandbox (PostgreSQL 15, the Realtime-compatible server, the Kong-compatible
gateway), started WITHOUT the probe, as a production stack is before anyone installs it:

* ``rtbook check --target sandbox --live`` (every check: db, tenant, gateway, realtime) leaves the
  catalog, every user table and the replication slots as they were, allocates no object id, and
  runs no writing statement (see tests/integration/db_snapshot.py for the three witnesses). The
  same witnesses then see ``rtbook probe install --yes``, so the test can fail.
* With the probe installed, realtime.postgres_changes and realtime.rls prove delivery and write to
  ``rtbook_probe.events`` only, leaving no row behind.
* With an EMPTY publication (a fresh supabase/postgres database) and no probe, the full live suite
  fails nothing: postgres_changes says delivery was not proven; once the probe is installed it is.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
import websocket
from psycopg.conninfo import make_conninfo

from rtbook.registry import run_checks
from rtbook.results import Report, Status
from tests.conftest import ROOT
from tests.integration.db_snapshot import StatementLog, differences, oid_counter, snapshot, writes
from tests.integration.sandbox_support import Running, start

pytestmark = [pytest.mark.postgres, pytest.mark.sandbox]

LIVE = ("db.", "tenant.", "gateway.", "realtime.")


def box_sql(box: Running) -> Any:
    url = urlsplit(box.state.db_url)
    password = box.env()["POSTGRES_PASSWORD"]

    def sql(statement: str, params: tuple[Any, ...] | None = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(host=url.hostname, port=url.port, user=url.username, dbname=url.path.lstrip("/"),
                             password=password, connect_timeout=5, autocommit=True,
                             application_name="rtbook-test") as conn:
            cur = conn.execute(statement, params)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []

    return sql


def rtbook(box: Running, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """The rtbook command against this sandbox (its state file lives under the box's home)."""
    env = {**os.environ, "RTBOOK_HOME": str(box.home), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "rtbook", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, check=False, cwd=ROOT)


def realtime_settled(box: Running) -> None:
    """Let Realtime do what it does once per tenant, before the witnesses start looking.

    On a tenant's first join Realtime itself (not rtbook) runs the tenant migrations, creates the
    day partitions of realtime.messages and opens its broadcast-from-database replication
    connection with its publication and slot (notes §1). Those are Realtime's writes; a client
    join triggers them, so one join is made here and the catalog is watched until it stops moving.
    """
    url = box.state.gateway_url.replace("http://", "ws://") + (
        f"/realtime/v1/websocket?apikey={box.env()['ANON_KEY']}&vsn=1.0.0")
    ws = websocket.create_connection(url, timeout=10)
    try:
        ws.send(json.dumps({"topic": "realtime:settle", "event": "phx_join", "ref": "1", "join_ref": "1",
                            "payload": {"config": {}}}))
        reply = json.loads(ws.recv())
        assert reply["payload"]["status"] == "ok", reply
    finally:
        ws.close()
    sql = box_sql(box)
    last = snapshot(sql)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = snapshot(sql)
        if differences(last, now) == {}:
            return
        last = now
    raise AssertionError("Realtime's first-join setup did not settle within 20 s")


@pytest.fixture(scope="module")
def bare() -> Iterator[tuple[Running, StatementLog]]:
    """A sandbox without the probe, every statement logged with its application name."""
    with start(probe=False) as box:
        realtime_settled(box)
        log = StatementLog(box_sql(box), box.state.logs["postgres"])
        yield box, log


def test_a_default_live_run_writes_nothing(bare: tuple[Running, StatementLog]) -> None:
    box, log = bare
    sql = box_sql(box)
    before, oid = snapshot(sql), oid_counter(sql)
    log.mark()
    run = rtbook(box, "check", "--target", "sandbox", "--live", "--no-docker", "--format", "json",
                 "--timeout", "4")
    report = Report.from_dict(json.loads(run.stdout))
    # The run really ran every live area and found the sandbox healthy.
    assert {r.id.split(".")[0] + "." for r in report} >= set(LIVE)
    assert not report.failures, "\n".join(str(r) for r in report.failures)
    pgc = report.by_id("realtime.postgres_changes")
    assert pgc.status is Status.PASS and "delivery NOT proven" in pgc.summary, str(pgc)
    assert "rtbook probe install --yes" in pgc.summary
    assert pgc.evidence["named_tables"] == {"public.todos": "Subscribed to PostgreSQL"}
    assert report.by_id("db.wal2json").status is Status.PASS

    # Nothing left changed, nothing created even for a moment, no writing statement run.
    assert differences(before, snapshot(sql)) == {}
    assert oid_counter(sql) == oid + 1  # our own read of the counter is the only object id allocated
    ran = log.statements("rtbook")
    assert len(ran) > 50, "the statement log did not see rtbook's (read-only) queries"
    assert writes(ran) == []

    # The witnesses do see writes: what the scratch-table checks used to do is caught even though it
    # leaves the snapshot equal, and installing the probe is seen by all three.
    log.mark()
    with psycopg.connect(_conninfo(box), autocommit=True, application_name="rtbook") as conn:
        conn.execute("CREATE TABLE public.rtbook_scratch_demo (id int primary key)")
        conn.execute("DROP TABLE public.rtbook_scratch_demo")
        conn.execute("SELECT pg_create_logical_replication_slot('rtbook_probe_demo', 'wal2json', true)")
        conn.execute("SELECT pg_drop_replication_slot('rtbook_probe_demo')")
    oid2 = oid_counter(sql)
    assert differences(before, snapshot(sql)) == {}
    assert oid2 > oid + 2
    assert len(writes(log.statements("rtbook"))) == 4

    log.mark()
    installed = rtbook(box, "probe", "install", "--yes", "--target", "sandbox")
    assert installed.returncode == 0, installed.stdout + installed.stderr
    changed = differences(before, snapshot(sql))
    assert {"pg_namespace", "pg_class", "pg_policy", "pg_publication_rel", "pg_description",
            "rows rtbook_probe.events"} <= set(changed), changed
    assert oid_counter(sql) > oid2 + 5
    done = writes(log.statements("rtbook"))
    assert any(s.startswith("ALTER PUBLICATION supabase_realtime ADD TABLE rtbook_probe.events") for s in done)
    removed = rtbook(box, "probe", "remove", "--yes", "--target", "sandbox")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert differences(before, snapshot(sql)) == {}


def _conninfo(box: Running) -> str:
    url = urlsplit(box.state.db_url)
    return make_conninfo(host=url.hostname, port=str(url.port), user=url.username, dbname=url.path.lstrip("/"),
                         password=box.env()["POSTGRES_PASSWORD"], connect_timeout="5")


_PROBE_WRITE = re.compile(r"^(INSERT INTO|UPDATE|DELETE FROM) rtbook_probe\.events\b")


def test_with_the_probe_the_checks_write_to_it_only(bare: tuple[Running, StatementLog]) -> None:
    box, log = bare
    sql = box_sql(box)
    installed = rtbook(box, "probe", "install", "--yes", "--target", "sandbox")
    assert installed.returncode == 0, installed.stdout + installed.stderr
    try:
        before = snapshot(sql)
        log.mark()
        report = run_checks(box.target(timeout=10), only=LIVE)
        assert not report.failures, "\n".join(str(r) for r in report.failures)
        pgc = report.by_id("realtime.postgres_changes")
        assert pgc.status is Status.PASS and pgc.evidence["delivery"] == "proven on the probe", str(pgc)
        rls = report.by_id("realtime.rls")
        assert rls.status is Status.PASS and rls.evidence["seen"] == rls.evidence["expected"], str(rls)
        done = writes(log.statements("rtbook"))
        assert done, "with the probe the checks write (to it)"
        assert [s for s in done if not _PROBE_WRITE.match(s)] == []
        assert {s.split()[0] for s in done} == {"INSERT", "UPDATE", "DELETE"}
        # Their rows are gone again, and nothing else changed.
        assert differences(before, snapshot(sql)) == {}
        # No object-id witness here: with the probe in the publication Realtime's own poller is busy
        # (its wal2json slot, its subscription rows) and allocates ids of its own; rtbook's part is
        # judged by its logged statements above.
    finally:
        removed = rtbook(box, "probe", "remove", "--yes", "--target", "sandbox")
        assert removed.returncode == 0, removed.stdout + removed.stderr


def test_an_empty_publication_gives_no_false_failure_and_the_probe_then_proves_delivery() -> None:
    with start(("publication-empty",)) as box:
        sql = box_sql(box)
        assert sql("SELECT count(*) FROM pg_publication_tables WHERE pubname = 'supabase_realtime'") == [(0,)]
        assert not box.state.probe
        report = run_checks(box.target(tables=()), only=LIVE)
        assert not report.failures, "\n".join(str(r) for r in report.failures)
        pgc = report.by_id("realtime.postgres_changes")
        assert pgc.status is Status.SKIP and "delivery NOT proven" in pgc.summary, str(pgc)
        assert "rtbook probe install --yes" in pgc.detail
        rls = report.by_id("realtime.rls")
        assert rls.status is Status.SKIP and "NOT proven" in rls.summary, str(rls)
        # The scenario's symptom, for an application that names its table: a true failure.
        named = run_checks(box.target(), only="realtime.postgres_changes").by_id("realtime.postgres_changes")
        assert (named.status, named.cause) == (Status.FAIL, "not_in_publication"), str(named)
        # The user installs the probe on purpose; Realtime may need its 60 s publication re-check, which the
        # check waits for (budget min(75 s, 8 x 10 s)), so this also holds once the stand-in behaves so.
        installed = rtbook(box, "probe", "install", "--yes", "--target", "sandbox")
        assert installed.returncode == 0, installed.stdout + installed.stderr
        assert "within 60 s" in installed.stdout
        proven = run_checks(box.target(tables=(), timeout=10), only="realtime.postgres_changes")
        result = proven.by_id("realtime.postgres_changes")
        assert result.status is Status.PASS, str(result)
        assert result.evidence["delivery"] == "proven on the probe"
        assert {"insert_ms", "update_ms", "delete_ms"} <= set(result.metrics)
