"""``rtbook probe install|remove|status`` against a real PostgreSQL 15 cluster (no Realtime needed).

The dry run prints the exact SQL and changes nothing; ``--yes`` installs in one transaction (a
connection killed mid-way leaves nothing behind); a second install changes nothing; remove undoes it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from rtbook import probe, probe_sql
from rtbook.exceptions import ConfirmationRequired
from rtbook.results import Status
from rtbook.target import Target
from tests.conftest import ROOT, have_postgres, require
from tests.integration.db_snapshot import differences, oid_counter, snapshot

pytestmark = [pytest.mark.postgres]


class Box:
    """A bootstrapped cluster (roles, publication with public.todos), no probe."""

    def __init__(self) -> None:
        from rtbook.sandbox.bootstrap import bootstrap
        from rtbook.sandbox.postgres import PostgresCluster

        self.cluster = PostgresCluster()
        self.cluster.start()
        bootstrap(self.cluster, jwt_secret="probe-test-" + "x" * 32)

    def sql(self, statement: str, params: tuple[Any, ...] | None = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.cluster.conninfo(), autocommit=True) as conn:
            cur = conn.execute(statement, params)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []

    def target(self, **kwargs: Any) -> Target:
        kwargs.setdefault("timeout", 5.0)
        return Target(name="probe-test", db_url=self.cluster.url(),
                      env={"POSTGRES_PASSWORD": self.cluster.password.reveal()}, **kwargs)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "POSTGRES_PASSWORD": self.cluster.password.reveal(), "PYTHONPATH": str(ROOT)}
        return subprocess.run(
            [sys.executable, "-m", "rtbook", "probe", *args, "--db-url", self.cluster.url(driver="postgresql")],
            capture_output=True, text=True, timeout=120, env=env, check=False, cwd=ROOT,
        )

    def published(self) -> list[str]:
        return [f"{s}.{t}" for s, t in self.sql(
            "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = 'supabase_realtime' "
            "ORDER BY 1, 2")]

    def probe_objects(self) -> int:
        return int(self.sql("SELECT count(*) FROM pg_namespace WHERE nspname = 'rtbook_probe'")[0][0]) + int(
            self.sql("SELECT count(*) FROM pg_class WHERE relname = 'events' "
                     "AND relnamespace::regnamespace::text = 'rtbook_probe'")[0][0])


@pytest.fixture
def box() -> Iterator[Box]:
    require(have_postgres(), "PostgreSQL 15 binaries with wal2json are not installed")
    b = Box()
    try:
        yield b
    finally:
        b.cluster.stop()


def test_dry_run_prints_the_exact_sql_and_changes_nothing(box: Box) -> None:
    before, oid = snapshot(box.sql), oid_counter(box.sql)
    out = box.cli("install")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    # The prior state, then every statement of the install, as one transaction.
    assert "before: schema rtbook_probe: absent; publication supabase_realtime: 1 table(s) (public.todos)" in text
    for statement in probe_sql.install_statements("supabase_realtime"):
        assert statement.splitlines()[0] in text
    assert text.index("BEGIN;") < text.index("ALTER PUBLICATION supabase_realtime ADD TABLE rtbook_probe.events;") \
        < text.index("COMMIT;")
    assert "re-create every postgres_changes subscription once" in text and "within 60 s" in text
    assert "Dry run: nothing was changed." in text
    assert differences(before, snapshot(box.sql)) == {}
    assert oid_counter(box.sql) == oid + 1  # only our own counter read allocated an object id
    # The API refuses to write without yes=True.
    with pytest.raises(ConfirmationRequired):
        probe.install(box.target(), probe.plan_install(box.target()))
    assert box.probe_objects() == 0


def test_install_once_idempotent_then_remove(box: Box) -> None:
    pristine = snapshot(box.sql)
    out = box.cli("install", "--yes")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Installed the probe in one transaction" in out.stdout
    assert "before: schema rtbook_probe: absent" in out.stdout  # the prior state is recorded in the output
    assert "within 60 s" in out.stdout
    assert box.published() == ["public.todos", "rtbook_probe.events"]
    state = probe.status(box.target())
    assert state.installed and state.rls and state.replica_identity == "f"
    assert state.policies == ("rtbook_probe_anon_public", "rtbook_probe_authenticated_own")
    assert state.installed_at is not None
    assert abs((dt.datetime.now(dt.UTC) - state.installed_at).total_seconds()) < 60
    # The policies do what realtime.rls expects of them, evaluated by PostgreSQL as each role.
    owner, other = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"
    box.sql("INSERT INTO rtbook_probe.events (owner, is_public) VALUES (%s, false), (%s, true)", (owner, owner))
    seen = {}
    for role, sub in (("anon", None), ("authenticated", owner), ("authenticated", other), ("service_role", None)):
        claims = json.dumps({"role": role, **({"sub": sub} if sub else {})})
        with psycopg.connect(box.cluster.conninfo()) as conn:
            conn.execute(f"SET LOCAL ROLE {role}")
            conn.execute("SELECT set_config('request.jwt.claims', %s, true)", (claims,))
            seen[(role, sub)] = sorted(r[0] for r in conn.execute("SELECT is_public FROM rtbook_probe.events"))
    assert seen == {("anon", None): [True], ("authenticated", owner): [False, True],
                    ("authenticated", other): [True], ("service_role", None): [False, True]}
    box.sql("DELETE FROM rtbook_probe.events")

    # Idempotent: a second install plans nothing and changes nothing (no DDL, the publication untouched).
    installed = snapshot(box.sql)
    oid = oid_counter(box.sql)
    again = box.cli("install", "--yes")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Nothing to do: the probe is installed." in again.stdout
    assert "already installed; nothing was changed" in again.stdout
    assert differences(installed, snapshot(box.sql)) == {}
    assert oid_counter(box.sql) == oid + 1

    # Remove: dry run first (nothing changes), then --yes undoes the install.
    dry = box.cli("remove")
    assert dry.returncode == 0 and "ALTER PUBLICATION supabase_realtime DROP TABLE rtbook_probe.events;" in dry.stdout
    assert "DROP SCHEMA IF EXISTS rtbook_probe RESTRICT;" in dry.stdout
    assert differences(installed, snapshot(box.sql)) == {}
    gone = box.cli("remove", "--yes")
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert "Removed the probe" in gone.stdout and "within 60 s" in gone.stdout
    assert box.published() == ["public.todos"] and box.probe_objects() == 0
    assert differences(pristine, snapshot(box.sql)) == {}
    assert "there is no probe to remove" in box.cli("remove", "--yes").stdout
    status = box.cli("status", "--format", "json")
    assert status.returncode == 0 and '"installed": false' in status.stdout


@pytest.mark.parametrize("kill_before", ["CREATE TABLE", "ALTER PUBLICATION"])
def test_a_connection_killed_mid_install_leaves_nothing(box: Box, kill_before: str) -> None:
    pristine = snapshot(box.sql)
    target = box.target()
    plan = probe.plan_install(target)
    killed: list[int] = []

    def kill(index: int, statement: str, pid: int) -> None:
        if statement.startswith(kill_before) and not killed:
            box.sql("SELECT pg_terminate_backend(%s)", (pid,))
            killed.append(index)

    result = probe.install(target, plan, yes=True, on_step=kill)
    assert killed and killed[0] > 0  # earlier statements of the transaction had run
    assert result.status is Status.FAIL and result.summary.startswith("Nothing written"), str(result)
    assert box.probe_objects() == 0 and box.published() == ["public.todos"]
    assert differences(pristine, snapshot(box.sql)) == {}
    # The same plan cannot be half-applied later either: a fresh install works from scratch.
    assert probe.install(target, probe.plan_install(target), yes=True).status is Status.PASS
    assert probe.status(target).installed


def test_a_plan_made_for_another_state_writes_nothing(box: Box) -> None:
    target = box.target()
    plan = probe.plan_install(target)
    box.sql("CREATE SCHEMA rtbook_probe")
    result = probe.install(target, plan, yes=True)
    assert result.status is Status.FAIL and "changed since the plan" in result.summary, str(result)
    assert box.published() == ["public.todos"]
    # Completing a partial probe: the new plan runs the same idempotent statements.
    done = probe.install(target, probe.plan_install(target), yes=True)
    assert done.status is Status.PASS and probe.status(target).installed


def test_blocked_without_the_publication_and_remove_keeps_a_schema_holding_other_objects(box: Box) -> None:
    box.sql("DROP PUBLICATION supabase_realtime")
    out = box.cli("install", "--yes")
    assert out.returncode == 1 and "BLOCKED: the publication supabase_realtime does not exist" in out.stdout
    assert box.probe_objects() == 0
    box.sql("CREATE PUBLICATION supabase_realtime FOR TABLE public.todos")
    assert probe.install(box.target(), probe.plan_install(box.target()), yes=True).status is Status.PASS
    box.sql("CREATE TABLE rtbook_probe.mine (id int)")
    gone = box.cli("remove", "--yes")
    assert gone.returncode == 0, gone.stdout
    assert "schema rtbook_probe is kept" in gone.stdout
    assert box.sql("SELECT to_regclass('rtbook_probe.mine') IS NOT NULL, to_regclass('rtbook_probe.events')") == [
        (True, None)]
    assert box.published() == ["public.todos"]
