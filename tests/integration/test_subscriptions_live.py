"""realtime.* and realtime.health against the sandbox's Realtime-compatible server, reached directly
(no gateway: ``realtime_url`` with the tenant's Host header). The same conditions through the whole
sandbox (gateway included) and its break scenarios are in test_probes_sandbox.py.

Healthy first (every check passes and no secret reaches an output), then conditions made directly
in the database, outside any sandbox switch: the tenant row deleted, a wrong jwt secret stored, RLS
with no policy for a role (also with no table named: every table in the publication is looked at).
Then endpoints that are closed or silent: each check fails within the timeout instead of hanging.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from rtbook.checks._live import refusal_waits
from rtbook.crypto import encrypt
from rtbook.registry import run_checks
from rtbook.results import Report, Status
from tests.conftest import have_postgres, require
from tests.integration.sandbox_support import PRIVATE_CHANNELS_SQL
from tests.integration.test_phoenix_support import (
    TENANT,
    Lab,
    Silent,
    assert_no_canary,
    closed_port,
    lab_fixture,
    make_token,
)

pytestmark = [pytest.mark.postgres, pytest.mark.sandbox]

LIVE = ("realtime.",)
CACHE_S = 1.3  # the server's tenant cache TTL is 1 s


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    require(have_postgres(), "PostgreSQL 15 binaries with wal2json are not installed")
    # Realtime keeps its CDC workers (and their slot) 10 min after the last subscriber; the idle-poller test
    # needs them gone, so the linger is shortened (still longer than a channel's 1-3 s subscribe retry).
    yield from lab_fixture(env={"RTBOOK_CDC_STOP_AFTER_MS": "6000", "RTBOOK_CDC_CHECK_NO_USERS_INTERVAL_MS": "300"})


def by_id(report: Report) -> dict[str, tuple[Status, str]]:
    return {r.id: (r.status, r.cause) for r in report}


def test_healthy_every_live_check_passes(lab: Lab) -> None:
    # realtime.messages and its policies, as Realtime's tenant migrations and an app using private channels
    # would have them (the stand-in runs no tenant migrations).
    lab.sql(PRIVATE_CHANNELS_SQL)
    report = run_checks(lab.target(), only=LIVE)
    statuses = by_id(report)
    assert set(statuses) >= {"realtime.health", "realtime.join", "realtime.broadcast", "realtime.presence",
                             "realtime.postgres_changes", "realtime.rls", "realtime.bad_token", "realtime.private"}
    assert all(s is Status.PASS for s, _ in statuses.values()), str(report)
    private = report.by_id("realtime.private")
    assert [p["name"] for p in private.evidence["messages_table"]["policies"]] == [
        "authenticated reads rtbook-private-probe", "authenticated writes rtbook-private-probe"]
    pgc = report.by_id("realtime.postgres_changes")
    assert {"insert_ms", "update_ms", "delete_ms", "subscribed_ms"} <= set(pgc.metrics)
    assert set(pgc.evidence["payloads"]) == {"INSERT", "UPDATE", "DELETE"}
    assert pgc.evidence["delivery"] == "proven on the probe"
    # REPLICA IDENTITY FULL: the UPDATE carries the whole old row; RLS is on, so DELETE's old_record is the key only.
    update = pgc.evidence["payloads"]["UPDATE"]["data"]
    old, new = (v if isinstance(v, dict) else json.loads(v)
                for v in (update["old_record"]["payload"], update["record"]["payload"]))
    assert (old["step"], new["step"]) == ("insert", "update")
    assert set(pgc.evidence["payloads"]["DELETE"]["data"]["old_record"]) == {"id"}
    assert report.by_id("realtime.broadcast").metrics["peer_ms"] >= 0
    rls = report.by_id("realtime.rls")
    assert rls.evidence["seen"] == rls.evidence["expected"], str(rls)
    assert_no_canary(report, lab.canaries)
    # The checks wrote only to the probe, and deleted their rows.
    with lab.cluster.connect() as conn:
        left = conn.execute("select count(*) from rtbook_probe.events").fetchone()
    assert left == (0,)


def test_deleted_tenant_row(lab: Lab) -> None:
    lab.sql("create table public.h5_t as select * from _realtime.tenants;"
            "create table public.h5_e as select * from _realtime.extensions;"
            "delete from _realtime.tenants")
    try:
        time.sleep(CACHE_S)
        report = run_checks(lab.target(), only=("realtime.join", "realtime.health"))
        join = report.by_id("realtime.join")
        assert (join.status, join.cause) == (Status.FAIL, "tenant_not_found"), str(join)
        assert "compose.realtime.tenant_consistency" in join.see_also
        assert "Tenant not found" in join.summary
        health = report.by_id("realtime.health")
        assert (health.status, health.cause) == (Status.FAIL, "tenant_missing_admin"), str(health)
    finally:
        lab.sql("insert into _realtime.tenants select * from public.h5_t;"
                "insert into _realtime.extensions select * from public.h5_e;"
                "drop table public.h5_t; drop table public.h5_e")
        time.sleep(CACHE_S)


def test_wrong_stored_jwt_secret(lab: Lab) -> None:
    with lab.cluster.connect() as conn:
        (old,) = conn.execute("select jwt_secret from _realtime.tenants").fetchone()
        conn.execute("update _realtime.tenants set jwt_secret = %s",
                     (encrypt("a-different-secret-0123456789abcdef", "supabaserealtime"),))
    try:
        time.sleep(CACHE_S)
        report = run_checks(lab.target(), only=("realtime.join", "realtime.broadcast"))
        for r in report:
            assert (r.status, r.cause) == (Status.FAIL, "jwt_signature"), str(r)
            assert "tenant.jwt_secret" in r.see_also
            assert r.evidence["handshake"]["status"] == 401
        assert_no_canary(report, lab.canaries)
    finally:
        with lab.cluster.connect() as conn:
            conn.execute("update _realtime.tenants set jwt_secret = %s", (old,))
        time.sleep(CACHE_S)


def test_rls_without_policy_for_a_role(lab: Lab) -> None:
    lab.sql("create table public.h5_notes (id bigint primary key, owner uuid);"
            "alter table public.h5_notes enable row level security;"
            "grant select on public.h5_notes to anon, authenticated;"
            "create policy notes_anon on public.h5_notes for select to anon using (true)")
    try:
        result = run_checks(lab.target(tables=("public.h5_notes",)), only="realtime.rls").by_id("realtime.rls")
        assert (result.status, result.cause) == (Status.FAIL, "rls_denies"), str(result)
        assert result.evidence["policy_gaps"] == [["public.h5_notes", "authenticated"]]
        assert "FOR SELECT TO authenticated" in result.remedy
        # Nothing named: every table in the publication is looked at, so the gap is found there too.
        lab.sql("alter publication supabase_realtime add table public.h5_notes")
        report = run_checks(lab.target(tables=()), only=("realtime.rls", "realtime.postgres_changes"))
        result = report.by_id("realtime.rls")
        assert (result.status, result.cause) == (Status.FAIL, "rls_denies"), str(result)
        assert result.evidence["policy_gaps"] == [["public.h5_notes", "authenticated"]]
        pgc = report.by_id("realtime.postgres_changes")
        assert pgc.status is Status.PASS, str(pgc)
        # The probe is the table written to; the others are only subscribed to.
        assert set(pgc.evidence["named_tables"]) == {"public.todos", "public.h5_notes"}
    finally:
        lab.sql("drop table public.h5_notes")


def test_unreachable_realtime_fails_within_the_timeout(lab: Lab) -> None:
    timeout = 1.5
    only = ("realtime.join", "realtime.health", "realtime.broadcast", "realtime.bad_token")
    with Silent() as silent:
        for url, cause in ((f"http://127.0.0.1:{closed_port()}", "unreachable"), (silent.url, "timeout")):
            started = time.monotonic()
            report = run_checks(lab.target(realtime_url=url, timeout=timeout), only=only)
            elapsed = time.monotonic() - started
            for r in report:
                assert r.status is Status.FAIL, str(r)
                assert r.cause == cause, str(r)
            # Each check gives up after one wait (health: one request; sockets: one connect, whose wait is the
            # timeout plus Realtime's CONNECT_ERROR_BACKOFF, since a refusal may be held that long).
            waits = refusal_waits(lab.target(realtime_url=url, timeout=timeout))
            assert elapsed < len(only) * (waits.connect + 1.0), elapsed



def _no_realtime_slot(lab: Lab) -> None:
    """Wait (bounded) until the server's CDC workers stopped and their temporary slot is gone after the last test."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with lab.cluster.connect() as conn:
            left = conn.execute(r"select count(*) from pg_replication_slots "
                                r"where slot_name like 'supabase\_realtime\_replication\_slot%'").fetchone()
        if left == (0,):
            return
        time.sleep(0.2)
    raise AssertionError("the server kept its replication slot")


def test_an_idle_poller_is_named_as_such_not_blamed_on_wal_level_or_wal2json(lab: Lab) -> None:
    # Every replication slot taken: the server's poller cannot create its slot and retries, like Realtime's.
    _no_realtime_slot(lab)
    with lab.cluster.connect() as conn:
        (free,) = conn.execute("select current_setting('max_replication_slots')::int - count(*) "
                               "from pg_replication_slots").fetchone()
        names = [f"h5_filler_{i}" for i in range(free)]
        for name in names:
            conn.execute("select pg_create_physical_replication_slot(%s)", (name,))
    try:
        timeout = 1.5
        started = time.monotonic()
        result = run_checks(lab.target(timeout=timeout), only="realtime.postgres_changes").by_id(
            "realtime.postgres_changes")
        elapsed = time.monotonic() - started
        assert (result.status, result.cause) == (Status.FAIL, "cdc_poller_idle"), str(result)
        assert "no replication slot" in result.summary and "wal_level is logical" in result.summary
        assert result.evidence["cdc"]["wal_level"] == "logical"
        # It waited for the slot, bounded by min(75 s, 8 x --timeout), and no longer.
        assert 8 * timeout <= elapsed < 8 * timeout + 10, elapsed
        with lab.cluster.connect() as conn:
            assert conn.execute("select count(*) from rtbook_probe.events").fetchone() == (0,)
    finally:
        with lab.cluster.connect() as conn:
            for name in names:
                conn.execute("select pg_drop_replication_slot(%s)", (name,))


def test_a_fresh_probe_waits_for_realtimes_publication_recheck_bounded_and_says_so(lab: Lab) -> None:
    # A Realtime CDC session that started before the probe was installed may still act on the old table list
    # for up to 60 s; the check waits (bounded by its budget) and states it. The install time is the comment's.
    with lab.cluster.connect() as conn:
        (comment,) = conn.execute("select obj_description('rtbook_probe.events'::regclass, 'pg_class')").fetchone()
        conninfo = lab.cluster.conninfo() + " application_name=realtime_rls"
        with psycopg.connect(conninfo):
            time.sleep(1.1)
            conn.execute("select 1")
            fresh = "rtbook probe v1; installed " + time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            conn.execute(sql.SQL("comment on table rtbook_probe.events is {}").format(sql.Literal(fresh)))
            try:
                timeout = 2.0
                result = run_checks(lab.target(timeout=timeout), only="realtime.postgres_changes").by_id(
                    "realtime.postgres_changes")
            finally:
                conn.execute(sql.SQL("comment on table rtbook_probe.events is {}").format(sql.Literal(comment)))
    assert result.status is Status.PASS, str(result)
    assert result.evidence["cdc"]["realtime_cdc_sessions_older_than_probe"] >= 1
    assert "Realtime re-reads the publication every 60 s" in result.summary
    assert f"(budget {8 * timeout:.0f} s)" in result.summary
    assert 8 * timeout - 1 <= result.metrics["waited_for_realtime_s"] <= 8 * timeout + 2


def test_without_the_probe_the_database_facts_still_decide() -> None:
    # No probe: nothing is written, but wal_level and Realtime's slot are read, so a broken poller is not a pass.
    require(have_postgres(), "PostgreSQL 15 binaries with wal2json are not installed")
    bare = Lab(probe=False)
    try:
        with bare.cluster.connect() as conn:
            (free,) = conn.execute("select current_setting('max_replication_slots')::int - count(*) "
                                   "from pg_replication_slots").fetchone()
            names = [f"h5_filler_{i}" for i in range(free)]
            for name in names:
                conn.execute("select pg_create_physical_replication_slot(%s)", (name,))
        result = run_checks(bare.target(timeout=1.5), only="realtime.postgres_changes").by_id(
            "realtime.postgres_changes")
        assert (result.status, result.cause) == (Status.WARN, "cdc_poller_idle"), str(result)
        assert "delivery NOT proven" in result.summary
        with bare.cluster.connect() as conn:
            for name in names:
                conn.execute("select pg_drop_replication_slot(%s)", (name,))
        result = run_checks(bare.target(), only="realtime.postgres_changes").by_id("realtime.postgres_changes")
        assert result.status is Status.PASS and "supabase_realtime_replication_slot" in result.summary, str(result)
        assert result.evidence["delivery"] == "not proven: the probe is not installed"
    finally:
        bare.close()
    replica = Lab(wal_level="replica", probe=False)
    try:
        result = run_checks(replica.target(), only="realtime.postgres_changes").by_id("realtime.postgres_changes")
        assert (result.status, result.cause) == (Status.FAIL, "wal_level"), str(result)
        assert "nothing was written" in result.summary
    finally:
        replica.close()


def reload_tenant(lab: Lab) -> None:
    """POST /api/tenants/<id>/reload: the server drops the tenant's cached row and its open DB connection."""
    req = urllib.request.Request(f"{lab.realtime_url}/api/tenants/{TENANT}/reload", method="POST",
                                 headers={"Authorization": f"Bearer {make_token(lab.jwt_secret, 'service_role')}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 204


def test_health_fails_when_realtime_cannot_reach_the_tenant_db(lab: Lab) -> None:
    with lab.cluster.connect() as conn:
        (old,) = conn.execute("select settings->'db_port' from _realtime.extensions").fetchone()
        conn.execute("update _realtime.extensions set settings = jsonb_set(settings, '{db_port}', to_jsonb(%s::text))",
                     (encrypt(str(closed_port()), "supabaserealtime"),))
    reload_tenant(lab)
    try:
        report = run_checks(lab.target(), only=("realtime.health", "realtime.join"))
        health = report.by_id("realtime.health")
        assert (health.status, health.cause) == (Status.FAIL, "tenant_db_unreachable"), str(health)
        assert health.evidence["join"]["reason"].startswith("UnableToConnectToProject:")
        # No stack here: the remedy says in words what to look up instead of a <DB_HOST> placeholder.
        assert "DB_HOST=the db service's name" in health.remedy and "<" not in health.remedy
        join = report.by_id("realtime.join")
        assert (join.status, join.cause) == (Status.FAIL, "tenant_db_unreachable"), str(join)
        assert_no_canary(report, lab.canaries)
    finally:
        with lab.cluster.connect() as conn:
            conn.execute("update _realtime.extensions set settings = jsonb_set(settings, '{db_port}', %s::jsonb)",
                         (json.dumps(old),))
        reload_tenant(lab)


def test_private_only_tenant(lab: Lab) -> None:
    lab.sql(PRIVATE_CHANNELS_SQL)
    lab.sql("update _realtime.tenants set private_only = true")
    reload_tenant(lab)
    try:
        report = run_checks(lab.target(), only=("realtime.join", "realtime.broadcast", "realtime.presence",
                                                "realtime.health", "realtime.private"))
        for cid in ("realtime.join", "realtime.broadcast", "realtime.presence"):
            r = report.by_id(cid)
            assert (r.status, r.cause) == (Status.SKIP, "private_only"), str(r)
        # Health proves the DB connection with a private join instead of false-failing.
        health = report.by_id("realtime.health")
        assert health.status is Status.PASS, str(health)
        assert report.by_id("realtime.private").status is Status.PASS
    finally:
        lab.sql("update _realtime.tenants set private_only = false")
        reload_tenant(lab)


def test_private_channel_without_policies(lab: Lab) -> None:
    lab.sql(PRIVATE_CHANNELS_SQL)
    lab.sql('drop policy "authenticated reads rtbook-private-probe" on realtime.messages;'
            'drop policy "authenticated writes rtbook-private-probe" on realtime.messages;'
            "create policy anon_reads_rooms on realtime.messages for select to anon using (true)")
    try:
        r = run_checks(lab.target(), only="realtime.private").by_id("realtime.private")
        # The stand-in authorises the join as Realtime does (a probe SELECT on realtime.messages as the
        # token's role): nothing lets authenticated read, so the join is refused, and the verdict names the
        # policy that exists for another role and gives the SQL of the missing ones.
        assert (r.status, r.cause) == (Status.FAIL, "private_channel_denied"), str(r)
        assert "Unauthorized: You do not have permissions to read from this Channel topic" in r.detail
        assert r.evidence["messages_table"]["policies"][0]["name"] == "anon_reads_rooms"
        assert r.evidence["role"] == "authenticated" and "anon_reads_rooms (SELECT TO anon" in r.detail
        assert "CREATE POLICY" in r.remedy and "FOR SELECT TO authenticated" in r.remedy
    finally:
        lab.sql("drop policy anon_reads_rooms on realtime.messages")
        lab.sql(PRIVATE_CHANNELS_SQL)
