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

import pytest

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
    yield from lab_fixture()


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
    assert pgc.evidence["payloads"]["DELETE"]["data"]["old_record"]["note"] == "rtbook update"
    assert report.by_id("realtime.broadcast").metrics["peer_ms"] >= 0
    assert_no_canary(report, lab.canaries)
    # The scratch tables are gone.
    with lab.cluster.connect() as conn:
        left = conn.execute("select count(*) from pg_tables where tablename like 'rtbook_scratch_%'").fetchone()
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
        assert "DB_HOST=<DB_HOST>" in health.remedy  # no stack here: the placeholder stays for the reader
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
        # The stand-in admits the join (it runs no policy query, notes §10 item 15); the policies read from
        # pg_policies show that a real Realtime would not: nothing lets authenticated read.
        assert (r.status, r.cause) == (Status.WARN, "private_not_enforced"), str(r)
        assert r.evidence["messages_table"]["policies"][0]["name"] == "anon_reads_rooms"
        assert r.evidence["role"] == "authenticated" and "anon_reads_rooms (SELECT TO anon" in r.detail
    finally:
        lab.sql("drop policy anon_reads_rooms on realtime.messages")
        lab.sql(PRIVATE_CHANNELS_SQL)
