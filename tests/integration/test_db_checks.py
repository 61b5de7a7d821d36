"""db.* checks against real PostgreSQL 15 clusters, healthy and broken directly in SQL."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from rtbook.registry import run_checks
from rtbook.results import Report, Status
from rtbook.target import Target
from tests.conftest import have_postgres, require
from tests.integration.test_db_fixtures import Lab, finding, pg_lab, reset  # noqa: F401  (pg_lab is a fixture)

pytestmark = [pytest.mark.postgres]


@pytest.fixture
def fresh(pg_lab: Lab) -> Lab:  # noqa: F811
    """The session cluster, reset to its bootstrapped state."""
    return reset(pg_lab)


def _db(target: Target) -> Report:
    return run_checks(target, only="db.")


def _assert_no_canary(lab: Lab, report: Report) -> None:
    text = str(report) + report.to_json() + report._repr_html_()
    for canary in lab.canaries:
        assert canary not in text


def test_fresh_bootstrap_every_db_check_passes(fresh: Lab) -> None:
    report = _db(fresh.target())
    statuses = {r.id: r.status for r in report}
    # The bootstrap's demo table keeps REPLICA IDENTITY DEFAULT (a true finding: old records carry
    # only the id), and no Realtime server is connected to this bare cluster.
    expected_warn = {"db.replica_identity", "db.realtime_connections"}
    for cid, status in statuses.items():
        assert status is (Status.WARN if cid in expected_warn else Status.PASS), str(report.by_id(cid))
    assert set(statuses) >= {
        "db.connect", "db.wal_level", "db.wal2json", "db.replication_capacity", "db.realtime_slots",
        "db.publication", "db.replica_identity", "db.primary_key", "db.rls", "db.realtime_connections",
    }
    assert report.by_id("db.publication").evidence["tables"] == ["public.todos"]
    # No Realtime slot on this bare cluster: wal2json is proved by loading the library, not by making a slot.
    wal2json = report.by_id("db.wal2json")
    assert "loads" in wal2json.summary and wal2json.evidence["writes"] == "none (read-only check)"
    assert fresh.query("SELECT count(*) FROM pg_replication_slots")[0][0] == 0
    _assert_no_canary(fresh, report)


def test_replica_identity_full_passes_and_nothing_fails(fresh: Lab) -> None:
    fresh.sql("ALTER TABLE public.todos REPLICA IDENTITY FULL")
    assert _db(fresh.target()).by_id("db.replica_identity").status is Status.PASS
    fresh.sql("ALTER TABLE public.todos REPLICA IDENTITY NOTHING")
    result = _db(fresh.target()).by_id("db.replica_identity")
    assert result.status is Status.FAIL
    assert "ALTER TABLE public.todos REPLICA IDENTITY FULL;" in result.remedy


def test_replica_identity_default_is_detected(fresh: Lab) -> None:
    result = _db(fresh.target()).by_id("db.replica_identity")
    assert result.status is Status.WARN
    assert "REPLICA IDENTITY DEFAULT" in result.summary and "public.todos" in result.summary


def test_table_dropped_from_publication(fresh: Lab) -> None:
    fresh.sql("ALTER PUBLICATION supabase_realtime DROP TABLE public.todos")
    named = _db(fresh.target(tables=("public.todos",))).by_id("db.publication")
    assert named.status is Status.FAIL
    assert finding(named) == "db.table_not_in_publication"
    assert "ALTER PUBLICATION supabase_realtime ADD TABLE public.todos;" in named.remedy
    # With no table named, an empty publication is a warning, and the per-table checks have nothing to do.
    report = _db(fresh.target())
    assert report.by_id("db.publication").status is Status.WARN
    assert report.by_id("db.primary_key").status is Status.SKIP


def test_named_table_that_does_not_exist(fresh: Lab) -> None:
    report = _db(fresh.target(tables=("public.nope",)))
    assert report.by_id("db.publication").status is Status.FAIL
    assert "public.nope" in report.by_id("db.publication").summary
    assert report.by_id("db.primary_key").status is Status.FAIL


def test_missing_publication(fresh: Lab) -> None:
    fresh.sql("DROP PUBLICATION supabase_realtime")
    result = _db(fresh.target(tables=("todos",))).by_id("db.publication")
    assert result.status is Status.FAIL
    assert finding(result) == "db.publication_missing"
    assert result.remedy.startswith("CREATE PUBLICATION supabase_realtime;")


def test_rls_without_policy_for_a_role(fresh: Lab) -> None:
    fresh.sql("DROP POLICY todos_select_public ON public.todos")
    result = _db(fresh.target()).by_id("db.rls")
    assert result.status is Status.WARN
    assert "anon: no SELECT policy" in result.summary
    assert finding(result) == "db.rls_no_policy" and result.cause == "rls_denies"
    assert "CREATE POLICY" in result.remedy and "TO anon" in result.remedy
    assert "authenticated" not in result.remedy


def test_rls_disabled(fresh: Lab) -> None:
    fresh.sql("ALTER TABLE public.todos DISABLE ROW LEVEL SECURITY")
    result = _db(fresh.target()).by_id("db.rls")
    assert result.status is Status.WARN
    assert "RLS is off" in result.summary
    assert finding(result) == "db.rls_off" and result.cause == "rls_leaks"
    assert "ENABLE ROW LEVEL SECURITY" in result.remedy


def test_table_without_primary_key(fresh: Lab) -> None:
    fresh.sql("CREATE TABLE public.nopk (x int, y text); ALTER PUBLICATION supabase_realtime ADD TABLE public.nopk")
    report = _db(fresh.target())
    pk = report.by_id("db.primary_key")
    assert pk.status is Status.FAIL
    assert "public.nopk" in pk.summary and "public.todos" not in pk.summary
    assert "ALTER TABLE public.nopk ADD PRIMARY KEY" in pk.remedy
    assert finding(pk) == "db.no_primary_key" and pk.cause == "no_primary_key"
    assert report.by_id("db.replica_identity").status is Status.FAIL


def test_no_free_replication_slots(fresh: Lab) -> None:
    free = fresh.query("SELECT current_setting('max_replication_slots')::int - count(*) FROM pg_replication_slots")
    names = [f"filler_{i}" for i in range(free[0][0])]
    fresh.sql(";".join(f"SELECT pg_create_physical_replication_slot('{n}')" for n in names))
    try:
        report = _db(fresh.target())
        capacity = report.by_id("db.replication_capacity")
        assert capacity.status is Status.FAIL
        assert finding(capacity) == "db.no_free_slots" and capacity.cause == "replication_capacity"
        assert "max_replication_slots" in capacity.remedy
        probe = report.by_id("db.wal2json")
        assert probe.status is Status.FAIL
        assert finding(probe) == "db.no_free_slots"
    finally:
        fresh.sql(";".join(f"SELECT pg_drop_replication_slot('{n}')" for n in names))


def test_idle_permanent_realtime_slot_is_reported(fresh: Lab) -> None:
    fresh.sql("SELECT pg_create_logical_replication_slot('supabase_realtime_replication_slot_', 'wal2json')")
    try:
        fresh.sql("INSERT INTO public.todos (task) SELECT 'x' FROM generate_series(1, 50)")
        result = _db(fresh.target()).by_id("db.realtime_slots")
        assert result.status is Status.WARN
        assert "supabase_realtime_replication_slot_" in result.summary
        assert "pg_drop_replication_slot('supabase_realtime_replication_slot_')" in result.remedy
        assert result.metrics["lag_bytes.supabase_realtime_replication_slot_"] > 0
    finally:
        fresh.sql("SELECT pg_drop_replication_slot('supabase_realtime_replication_slot_')")


def test_realtime_sessions_are_found(fresh: Lab) -> None:
    conninfo = fresh.cluster.conninfo() + " application_name=realtime_rls"
    with psycopg.connect(conninfo):
        result = _db(fresh.target()).by_id("db.realtime_connections")
        assert result.status is Status.PASS
        assert result.evidence["sessions"]["realtime_rls"]


def test_wrong_password_fails_with_cause_and_no_leak(fresh: Lab) -> None:
    wrong = "WRONG-" + fresh.password[::-1]
    target = fresh.target(env=fresh.env(POSTGRES_PASSWORD=wrong, DB_PASSWORD=wrong))
    report = _db(target)
    connect = report.by_id("db.connect")
    assert connect.status is Status.FAIL
    assert finding(connect) == "db.auth"
    assert "POSTGRES_PASSWORD" in connect.remedy
    # The others fail at once with the remembered problem.
    assert report.by_id("db.rls").status is Status.FAIL
    text = str(report) + report.to_json()
    assert wrong not in text and fresh.password not in text


def test_closed_port_fails_fast() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    target = Target(db_url=f"postgresql://supabase_admin@127.0.0.1:{port}/postgres", timeout=3, env={})
    started = time.monotonic()
    result = run_checks(target, only="db.connect").by_id("db.connect")
    assert time.monotonic() - started < 5
    assert result.status is Status.FAIL
    assert finding(result) == "db.refused"


def test_port_that_is_not_a_number_is_a_config_failure_not_a_crash() -> None:
    target = Target(db_url="postgresql://supabase_admin@127.0.0.1:fivefourthreetwo/postgres", timeout=3, env={})
    report = run_checks(target, only="db.")
    assert report.by_id("db.connect").status is Status.FAIL, str(report)
    assert "not a database URL" in report.by_id("db.connect").summary + report.by_id("db.connect").detail
    assert not [r for r in report if r.status is Status.ERROR], str(report)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def loop() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(2)
    for conn in accepted:
        conn.close()
    server.close()


def test_silent_port_fails_within_timeout(silent_port: int) -> None:
    target = Target(db_url=f"postgresql://supabase_admin@127.0.0.1:{silent_port}/postgres", timeout=2, env={})
    started = time.monotonic()
    report = run_checks(target, only="db.")
    elapsed = time.monotonic() - started
    assert report.by_id("db.connect").status is Status.FAIL
    assert finding(report.by_id("db.connect")) == "db.timeout"
    # One timeout for db.connect; the other checks reuse the remembered problem.
    assert elapsed < 8, elapsed


@pytest.fixture(scope="module")
def replica_lab() -> Iterator[Lab]:
    """A second cluster started with wal_level=replica."""
    require(have_postgres(), "PostgreSQL 15 binaries with wal2json are not installed")
    from rtbook.sandbox.postgres import PostgresCluster

    cluster = PostgresCluster(wal_level="replica")
    cluster.start()
    try:
        yield Lab(cluster)
    finally:
        cluster.stop()


def test_wal_level_replica(replica_lab: Lab) -> None:
    report = run_checks(replica_lab.target(), only=("db.wal_level", "db.wal2json"))
    level = report.by_id("db.wal_level")
    assert level.status is Status.FAIL
    assert "replica" in level.summary
    assert "ALTER SYSTEM SET wal_level = logical" in level.remedy
    probe = report.by_id("db.wal2json")
    assert probe.status is Status.FAIL
    assert finding(probe) == "db.wal_level_not_logical"


def test_engine_sets_timeouts_and_keeps_the_password_out_of_strings(fresh: Lab) -> None:
    import sqlalchemy as sa

    from rtbook.clients.db import engine_for

    target = fresh.target(timeout=3.5)
    engine = engine_for(target)
    assert engine is engine_for(target)  # cached on the target
    assert engine.url.password is None
    assert fresh.password not in repr(engine) + str(engine.url) + engine.url.render_as_string(hide_password=False)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SHOW statement_timeout")).scalar() == "3500ms"
        assert conn.execute(sa.text("SHOW lock_timeout")).scalar() == "3500ms"
        assert conn.execute(sa.text("SHOW application_name")).scalar() == "rtbook"
        assert conn.execute(sa.text("SELECT current_user")).scalar() == "supabase_admin"


def test_long_query_is_cut_by_statement_timeout(fresh: Lab) -> None:
    import sqlalchemy as sa

    from rtbook.clients.db import engine_for

    started = time.monotonic()
    with engine_for(fresh.target(timeout=1)).connect() as conn, pytest.raises(sa.exc.OperationalError):
        conn.execute(sa.text("SELECT pg_sleep(10)"))
    assert time.monotonic() - started < 5


def test_long_open_transaction_is_reported_without_creating_a_slot(fresh: Lab) -> None:
    # Creating a logical slot waits for every transaction holding an xid: read-only, the check names the holders.
    with fresh.cluster.connect(autocommit=False) as holder:
        holder.execute("INSERT INTO public.todos (task) VALUES ('held')")
        time.sleep(1.6)
        started = time.monotonic()
        result = run_checks(fresh.target(timeout=1.5), only="db.wal2json").by_id("db.wal2json")
        assert time.monotonic() - started < 6
        holder.rollback()
    assert result.status is Status.WARN, str(result)
    assert finding(result) == "db.long_transaction"
    assert result.evidence["long_transactions"]["count"] == 1
    assert "pg_stat_activity" in result.remedy
    # A transaction younger than --timeout is not worth a warning.
    with fresh.cluster.connect(autocommit=False) as holder:
        holder.execute("INSERT INTO public.todos (task) VALUES ('held')")
        result = run_checks(fresh.target(timeout=5), only="db.wal2json").by_id("db.wal2json")
        holder.rollback()
    assert result.status is Status.PASS, str(result)


def test_wal2json_is_proved_by_realtimes_own_slot(fresh: Lab) -> None:
    fresh.sql("SELECT pg_create_logical_replication_slot('supabase_realtime_replication_slot_', 'wal2json')")
    try:
        result = run_checks(fresh.target(), only="db.wal2json").by_id("db.wal2json")
        assert result.status is Status.PASS, str(result)
        assert "supabase_realtime_replication_slot_" in result.summary
        assert result.evidence["realtime_wal2json_slots"] == ["supabase_realtime_replication_slot_"]
    finally:
        fresh.sql("SELECT pg_drop_replication_slot('supabase_realtime_replication_slot_')")


def test_wal2json_unprovable_by_a_non_superuser_is_a_skip_not_a_failure(fresh: Lab) -> None:
    fresh.sql("CREATE ROLE h5_reader LOGIN PASSWORD 'h5-reader-pw' REPLICATION")
    try:
        target = fresh.target(env=fresh.env(POSTGRES_PASSWORD="h5-reader-pw", DB_USER="h5_reader"))
        target.db_url = fresh.cluster.url(user="h5_reader")
        result = run_checks(target, only="db.wal2json").by_id("db.wal2json")
        assert result.status is Status.SKIP, str(result)
        assert "is not allowed" in result.detail and "rtbook probe install --yes" in result.remedy
    finally:
        fresh.sql("DROP ROLE h5_reader")


def test_realtime_user_without_replication_privilege(fresh: Lab) -> None:
    fresh.sql("CREATE ROLE h5_rt LOGIN")
    try:
        result = run_checks(fresh.target(env=fresh.env(DB_USER="h5_rt")), only="db.wal2json").by_id("db.wal2json")
        assert result.status is Status.FAIL, str(result)
        assert finding(result) == "db.no_replication_privilege"
        assert "ALTER ROLE h5_rt WITH REPLICATION" in result.remedy
    finally:
        fresh.sql("DROP ROLE h5_rt")


def test_connected_to_another_database_than_realtime_uses(fresh: Lab) -> None:
    result = _db(fresh.target(env=fresh.env(DB_NAME="app"))).by_id("db.connect")
    assert result.status is Status.WARN
    assert "Realtime's DB_NAME is 'app'" in result.summary
    assert "/app" in result.remedy
