"""tenant.* checks and the plan/apply seeding path against a real PostgreSQL 15 cluster."""

from __future__ import annotations

import json
import logging
import re
import threading
import uuid
from typing import Any

import pytest

from rtbook import seeding
from rtbook.cli import main
from rtbook.crypto import decrypt, encrypt, encrypt_gcm
from rtbook.exceptions import ConfigError, ConfirmationRequired
from rtbook.registry import run_checks
from rtbook.results import Report, Status
from rtbook.target import Target
from tests.integration.test_db_fixtures import ENC_CANARY, JWT_CANARY, TENANT, Lab, finding, pg_lab, reset  # noqa: F401

pytestmark = [pytest.mark.postgres]

# A secret from before a rotation, encrypted with the right key.
ROTATED = encrypt("an-older-rotated-secret-0123456789", ENC_CANARY)


@pytest.fixture
def fresh(pg_lab: Lab) -> Lab:  # noqa: F811
    """The session cluster, reset to its bootstrapped state."""
    return reset(pg_lab)


def _checks(target: Target) -> Report:
    return run_checks(target, only="tenant.")


def _ciphertexts(lab: Lab) -> list[str]:
    """Every encrypted value stored now (they must not reach outputs either)."""
    out = [r[0] for r in lab.query("SELECT jwt_secret FROM _realtime.tenants WHERE jwt_secret IS NOT NULL")]
    for (settings,) in lab.query("SELECT settings FROM _realtime.extensions"):
        out += [settings[k] for k in seeding.ENCRYPTED_SETTINGS if isinstance(settings.get(k), str)]
    return out


def _assert_clean(lab: Lab, *texts: str, extra: tuple[str, ...] = ()) -> None:
    blob = "\n".join(texts)
    for needle in (*lab.canaries, *extra):
        assert needle not in blob, f"secret leaked: {needle[:4]}..."


def _report_text(report: Report) -> str:
    return str(report) + report.to_json() + report._repr_html_()


# ------------------------------------------------------------------ checks


def test_fresh_bootstrap_every_tenant_check_passes(fresh: Lab) -> None:
    report = _checks(fresh.target())
    assert {r.id for r in report} == {"tenant.schema", "tenant.row", "tenant.extension", "tenant.jwt_secret",
                                      "tenant.db_settings", "tenant.limits"}
    for result in report:
        assert result.status is Status.PASS, str(result)
    assert "db_port=" + str(fresh.cluster.port) in report.by_id("tenant.db_settings").summary
    # The bootstrap writes one of the migration lists of a known release.
    assert re.search(r"\d+ migrations recorded, as in v2\.\d+", report.by_id("tenant.schema").summary)
    _assert_clean(fresh, _report_text(report), extra=tuple(_ciphertexts(fresh)))


def test_deleted_tenant_row(fresh: Lab) -> None:
    fresh.sql("INSERT INTO _realtime.tenants (id, name, external_id, jwt_secret, inserted_at, updated_at) "
              "VALUES (gen_random_uuid(), 'other', 'other', 'x', now(), now())")
    fresh.sql(f"DELETE FROM _realtime.tenants WHERE external_id = '{TENANT}'")
    report = _checks(fresh.target())
    row = report.by_id("tenant.row")
    assert row.status is Status.FAIL
    assert finding(row) == "tenant.not_found" and row.cause == "tenant_not_found"
    assert "other" in row.summary
    assert f"--create --tenant {TENANT}" in row.remedy
    for cid in ("tenant.extension", "tenant.jwt_secret", "tenant.db_settings", "tenant.limits"):
        assert report.by_id(cid).status is Status.SKIP


def test_jwt_secret_different_secret(fresh: Lab) -> None:
    fresh.sql(f"UPDATE _realtime.tenants SET jwt_secret = '{ROTATED}'")
    result = _checks(fresh.target()).by_id("tenant.jwt_secret")
    assert result.status is Status.FAIL
    assert finding(result) == "tenant.jwt_secret_mismatch" and result.cause == "jwt_signature"
    assert "decrypts but differs" in result.summary


def test_jwt_secret_wrong_key(fresh: Lab) -> None:
    fresh.sql(f"UPDATE _realtime.tenants SET jwt_secret = '{encrypt(JWT_CANARY, 'supabaserealtime')}'")
    report = _checks(fresh.target())
    result = report.by_id("tenant.jwt_secret")
    assert result.status is Status.FAIL
    assert finding(result) == "tenant.jwt_secret_wrong_key"
    assert "does not decrypt with DB_ENC_KEY" in result.summary
    _assert_clean(fresh, _report_text(report))


def test_jwt_secret_plaintext(fresh: Lab) -> None:
    fresh.sql(f"UPDATE _realtime.tenants SET jwt_secret = '{JWT_CANARY}'")
    report = _checks(fresh.target())
    result = report.by_id("tenant.jwt_secret")
    assert finding(result) == "tenant.jwt_secret_plaintext"
    _assert_clean(fresh, _report_text(report))


def test_gcm_values_need_the_gcm_key(fresh: Lab) -> None:
    gcm_key = "G" * 32
    fresh.sql(f"UPDATE _realtime.tenants SET jwt_secret = '{encrypt_gcm(JWT_CANARY, gcm_key)}'")
    fresh.sql("UPDATE _realtime.extensions SET settings = settings || "
              f"jsonb_build_object('db_host', '{encrypt_gcm(fresh.cluster.host, gcm_key)}')")
    with_key = fresh.target(env=fresh.env(DB_ENC_KEY_GCM=gcm_key))
    for result in _checks(with_key):
        assert result.status is Status.PASS, str(result)
    assert seeding.plan(with_key).empty
    without = fresh.target()
    report = _checks(without)
    assert report.by_id("tenant.jwt_secret").status is Status.WARN
    assert "DB_ENC_KEY_GCM" in report.by_id("tenant.jwt_secret").summary
    assert report.by_id("tenant.db_settings").status is Status.WARN
    # Without the key rtbook cannot tell, so it does not overwrite the values.
    the_plan = seeding.plan(without)
    assert the_plan.empty and sum("DB_ENC_KEY_GCM" in n for n in the_plan.notes) == 2
    _assert_clean(fresh, _report_text(report), str(the_plan), extra=(gcm_key,))


def test_extra_broadcast_and_presence_rows(fresh: Lab) -> None:
    for kind in ("broadcast", "presence"):
        fresh.sql("INSERT INTO _realtime.extensions (id, type, settings, tenant_external_id, inserted_at, "
                  f"updated_at) VALUES (gen_random_uuid(), '{kind}', '{{}}', '{TENANT}', now(), now())")
    result = _checks(fresh.target()).by_id("tenant.extension")
    assert result.status is Status.FAIL
    assert finding(result) == "tenant.extension_count"
    assert "'broadcast'" in result.summary and "'presence'" in result.summary
    assert "exactly one postgres_cdc_rls row" in result.detail
    assert "--delete-extra" in result.remedy


def test_duplicate_cdc_rows_without_unique_index(fresh: Lab) -> None:
    fresh.sql("DROP INDEX _realtime.extensions_tenant_external_id_type_index")
    try:
        fresh.sql("INSERT INTO _realtime.extensions SELECT gen_random_uuid(), type, settings, tenant_external_id, "
                  "inserted_at, updated_at FROM _realtime.extensions")
        result = _checks(fresh.target()).by_id("tenant.extension")
        assert result.status is Status.FAIL
        assert "2 postgres_cdc_rls rows" in result.summary
        the_plan = seeding.plan(fresh.target(), delete_extra=True)
        assert [c.kind for c in the_plan.changes] == ["delete"]
        assert seeding.apply(fresh.target(), the_plan, yes=True).status is Status.PASS
        assert _checks(fresh.target()).by_id("tenant.extension").status is Status.PASS
    finally:
        fresh.sql("DELETE FROM _realtime.tenants")
        fresh.sql("CREATE UNIQUE INDEX extensions_tenant_external_id_type_index "
                  "ON _realtime.extensions (tenant_external_id, type)")


def test_db_settings_wrong_port_type_and_host(fresh: Lab) -> None:
    fresh.sql("UPDATE _realtime.extensions SET settings = settings || "
              f"jsonb_build_object('db_port', 5432, 'db_host', '{encrypt('db', ENC_CANARY)}')")
    result = _checks(fresh.target()).by_id("tenant.db_settings")
    assert result.status is Status.FAIL
    assert "db_port is stored as a JSON int" in result.summary
    assert "db_host is 'db' but DB_HOST is '127.0.0.1'" in result.summary


def test_suspended_and_private_only(fresh: Lab) -> None:
    fresh.sql("UPDATE _realtime.tenants SET suspend = true")
    result = _checks(fresh.target()).by_id("tenant.limits")
    assert result.status is Status.FAIL and finding(result) == "tenant.suspended"
    fresh.sql("UPDATE _realtime.tenants SET suspend = false, private_only = true")
    result = _checks(fresh.target()).by_id("tenant.limits")
    assert result.status is Status.WARN and "private_only" in result.summary


def test_limits_differ_from_env_defaults(fresh: Lab) -> None:
    target = fresh.target(env=fresh.env(TENANT_MAX_CONCURRENT_USERS="500"))
    result = _checks(target).by_id("tenant.limits")
    assert result.status is Status.WARN
    assert "max_concurrent_users is 200 but TENANT_MAX_CONCURRENT_USERS says 500" in result.summary


def test_schema_missing(fresh: Lab) -> None:
    fresh.sql("ALTER SCHEMA _realtime RENAME TO _realtime_moved")
    try:
        report = _checks(fresh.target())
        schema = report.by_id("tenant.schema")
        assert schema.status is Status.FAIL
        assert finding(schema) == "tenant.relation_tenants_missing"
        assert 'relation "tenants" does not exist' in schema.detail
        assert "_realtime_moved" in schema.detail  # the tables were found elsewhere
        assert "CREATE SCHEMA IF NOT EXISTS _realtime" in schema.remedy
        assert report.by_id("tenant.row").status is Status.SKIP
        assert seeding.plan(fresh.target()).blocked
    finally:
        fresh.sql("ALTER SCHEMA _realtime_moved RENAME TO _realtime")


def test_schema_adapts_to_older_realtime_columns(fresh: Lab) -> None:
    # An older release (2.34.47) has none of the 2025+ columns.
    newer = ["migrations_ran", "broadcast_adapter", "max_presence_events_per_second", "max_payload_size_in_kb",
             "max_client_presence_events_per_window", "client_presence_window_ms", "presence_enabled"]
    fresh.sql("CREATE TABLE _realtime.tenants_backup AS SELECT * FROM _realtime.tenants")
    try:
        fresh.sql("; ".join(f"ALTER TABLE _realtime.tenants DROP COLUMN {c}" for c in newer))
        report = _checks(fresh.target())
        assert report.by_id("tenant.schema").status is Status.PASS
        assert "2024-11" in report.by_id("tenant.schema").summary
        assert report.by_id("tenant.jwt_secret").status is Status.PASS
        # Creating a second tenant adapts to the columns too.
        the_plan = seeding.plan(fresh.target(), tenant="older", create=True)
        assert seeding.apply(fresh.target(), the_plan, yes=True).status is Status.PASS
        assert _checks(fresh.target(tenant="older")).by_id("tenant.row").status is Status.PASS
    finally:
        fresh.sql("DROP TABLE _realtime.tenants_backup")
        fresh.sql("DELETE FROM _realtime.tenants")
        fresh.sql("; ".join([
            "ALTER TABLE _realtime.tenants ADD COLUMN migrations_ran integer DEFAULT 0",
            "ALTER TABLE _realtime.tenants ADD COLUMN broadcast_adapter character varying(255) DEFAULT 'gen_rpc'",
            "ALTER TABLE _realtime.tenants ADD COLUMN max_presence_events_per_second integer DEFAULT 1000",
            "ALTER TABLE _realtime.tenants ADD COLUMN max_payload_size_in_kb integer DEFAULT 3000",
            "ALTER TABLE _realtime.tenants ADD COLUMN max_client_presence_events_per_window integer",
            "ALTER TABLE _realtime.tenants ADD COLUMN client_presence_window_ms integer",
            "ALTER TABLE _realtime.tenants ADD COLUMN presence_enabled boolean NOT NULL DEFAULT false",
        ]))


# ------------------------------------------------------------------ plan / apply


def test_plan_is_a_dry_run_and_apply_needs_confirmation(fresh: Lab) -> None:
    fresh.sql(f"UPDATE _realtime.tenants SET jwt_secret = '{ROTATED}'")
    before = fresh.dump()
    the_plan = seeding.plan(fresh.target())
    assert [(c.kind, c.table) for c in the_plan.changes] == [("update", "tenants")]
    assert "jwt_secret" in the_plan.changes[0].after
    assert fresh.dump() == before  # planning wrote nothing
    with pytest.raises(ConfirmationRequired, match="yes=True"):
        seeding.apply(fresh.target(), the_plan)
    assert fresh.dump() == before
    assert "(dry run)" in str(the_plan)


def test_repair_then_second_apply_changes_nothing(fresh: Lab) -> None:
    fresh.sql(f"UPDATE _realtime.tenants SET jwt_secret = '{encrypt(JWT_CANARY, 'supabaserealtime')}'")
    fresh.sql("UPDATE _realtime.extensions SET settings = settings - 'region' || "
              f"jsonb_build_object('db_port', 5432, 'db_name', '{encrypt('wrongdb', ENC_CANARY)}')")
    target = fresh.target()
    first = seeding.plan(target)
    assert len(first.changes) == 2
    result = seeding.apply(target, first, yes=True)
    assert result.status is Status.PASS, str(result)
    for check in _checks(fresh.target()):
        assert check.status is Status.PASS, str(check)
    settings = fresh.query("SELECT settings FROM _realtime.extensions")[0][0]
    assert isinstance(settings["db_port"], str)
    assert decrypt(settings["db_port"], ENC_CANARY) == str(fresh.cluster.port)
    assert settings["region"] == "us-east-1"
    after_first = fresh.dump()
    # A new plan is empty, and applying it changes nothing.
    second = seeding.plan(fresh.target())
    assert second.empty, str(second)
    again = seeding.apply(fresh.target(), second, yes=True)
    assert again.status is Status.PASS and "Nothing to do" in again.summary
    assert fresh.dump() == after_first
    # Re-applying the stale first plan is refused and changes nothing either.
    stale = seeding.apply(fresh.target(), first, yes=True)
    assert stale.status is Status.FAIL and finding(stale) == "tenant.plan_stale"
    assert fresh.dump() == after_first


def test_apply_records_prior_rows_redacted(fresh: Lab) -> None:
    fresh.sql(f"UPDATE _realtime.tenants SET jwt_secret = '{ROTATED}'")
    old_cipher = _ciphertexts(fresh)
    target = fresh.target()
    result = seeding.apply(target, seeding.plan(target), yes=True)
    prior = result.evidence["prior_rows"]
    assert {p["table"] for p in prior} == {"tenants", "extensions"}
    tenant_row = next(p for p in prior if p["table"] == "tenants")
    assert tenant_row["jwt_secret"] == "[redacted]"
    assert tenant_row["external_id"] == TENANT
    text = json.dumps(result.to_dict()) + str(result)
    _assert_clean(fresh, text, extra=tuple(old_cipher + _ciphertexts(fresh)))


def test_connection_killed_mid_apply_leaves_tables_unchanged(fresh: Lab) -> None:
    fresh.sql(f"UPDATE _realtime.tenants SET jwt_secret = '{ROTATED}'")
    fresh.sql("UPDATE _realtime.extensions SET settings = settings || jsonb_build_object('db_port', 5432)")
    fresh.sql("INSERT INTO _realtime.extensions (id, type, settings, tenant_external_id, inserted_at, updated_at) "
              f"VALUES (gen_random_uuid(), 'broadcast', '{{}}', '{TENANT}', now(), now())")
    target = fresh.target()
    the_plan = seeding.plan(target, delete_extra=True)
    assert [c.kind for c in the_plan.changes] == ["update", "update", "delete"]
    before = fresh.dump()
    killed: list[int] = []

    def kill_after_first_statement(index: int, _change: seeding.Change, pid: int) -> None:
        if index == 1:
            # Another session ends the applying backend between two statements.
            with fresh.cluster.connect() as other:
                killed.append(int(other.execute("SELECT pg_terminate_backend(%s)::int", (pid,)).fetchone()[0]))

    result = seeding.apply(target, the_plan, yes=True, on_step=kill_after_first_statement)
    assert killed == [1]
    assert result.status is Status.FAIL
    assert "rolled back" in result.summary and "Nothing written" in result.summary
    assert fresh.dump() == before
    _assert_clean(fresh, str(result), json.dumps(result.to_dict()))
    # The same plan still applies afterwards.
    assert seeding.apply(fresh.target(), the_plan, yes=True).status is Status.PASS
    assert _checks(fresh.target()).by_id("tenant.extension").status is Status.PASS


def test_rows_changed_between_plan_and_apply(fresh: Lab) -> None:
    fresh.sql("UPDATE _realtime.extensions SET settings = settings || jsonb_build_object('db_port', 5432)")
    the_plan = seeding.plan(fresh.target())
    fresh.sql("UPDATE _realtime.tenants SET max_concurrent_users = 7")
    before = fresh.dump()
    result = seeding.apply(fresh.target(), the_plan, yes=True)
    assert result.status is Status.FAIL and finding(result) == "tenant.plan_stale"
    assert fresh.dump() == before


def test_extra_rows_kept_unless_asked(fresh: Lab) -> None:
    fresh.sql("INSERT INTO _realtime.extensions (id, type, settings, tenant_external_id, inserted_at, updated_at) "
              f"VALUES (gen_random_uuid(), 'presence', '{{}}', '{TENANT}', now(), now())")
    kept = seeding.plan(fresh.target())
    assert kept.empty
    assert any("Kept: rtbook did not create it" in n and "'presence'" in n for n in kept.notes)
    deleting = seeding.plan(fresh.target(), delete_extra=True)
    assert [c.kind for c in deleting.changes] == ["delete"]


def test_create_additional_tenant_and_change_limits(fresh: Lab) -> None:
    target = fresh.target()
    missing = seeding.plan(target, tenant="second")
    assert missing.empty and "does not exist" in missing.notes[0]
    created = seeding.plan(target, tenant="second", create=True, limits={"max_concurrent_users": 50})
    assert [(c.kind, c.table) for c in created.changes] == [("insert", "tenants"), ("insert", "extensions")]
    assert seeding.apply(target, created, yes=True).status is Status.PASS
    rows = fresh.query("SELECT external_id, id, max_concurrent_users, max_joins_per_second, inserted_at, updated_at "
                       "FROM _realtime.tenants ORDER BY external_id")
    assert [r[0] for r in rows] == [TENANT, "second"]
    second = rows[1]
    assert isinstance(second[1], uuid.UUID) and second[2] == 50 and second[3] == 100
    assert second[4] is not None and second[4].microsecond == 0
    ext = fresh.query("SELECT settings FROM _realtime.extensions WHERE tenant_external_id = 'second'")[0][0]
    assert ext[seeding.MARKER_KEY]
    assert isinstance(ext["db_port"], str) and decrypt(ext["db_port"], ENC_CANARY) == str(fresh.cluster.port)
    for check in _checks(fresh.target(tenant="second")):
        assert check.status is Status.PASS, str(check)
    # Change the new tenant's limits through the same path.
    bigger = seeding.plan(target, tenant="second", limits=["max_concurrent_users=500", "private_only=false"])
    assert [(c.kind, c.before, c.after) for c in bigger.changes] == [
        ("update", {"max_concurrent_users": 50}, {"max_concurrent_users": 500})]
    assert seeding.apply(target, bigger, yes=True).status is Status.PASS
    assert fresh.query("SELECT max_concurrent_users FROM _realtime.tenants WHERE external_id = 'second'") == [(500,)]
    assert seeding.plan(target, tenant="second", limits={"max_concurrent_users": 500}).empty
    # A row carrying rtbook's marker is rtbook's own: it may be removed without delete_extra.
    fresh.sql("INSERT INTO _realtime.extensions (id, type, settings, tenant_external_id, inserted_at, updated_at) "
              f"VALUES (gen_random_uuid(), 'presence', '{{\"{seeding.MARKER_KEY}\": \"x\"}}', 'second', now(), now())")
    cleanup = seeding.plan(target, tenant="second")
    assert [(c.kind, c.key.split("/")[1]) for c in cleanup.changes] == [("delete", "presence")]


def test_recreate_deleted_tenant(fresh: Lab) -> None:
    fresh.sql(f"DELETE FROM _realtime.tenants WHERE external_id = '{TENANT}'")
    target = fresh.target()
    the_plan = seeding.plan(target, create=True)
    assert seeding.apply(target, the_plan, yes=True).status is Status.PASS
    for check in _checks(fresh.target()):
        assert check.status is Status.PASS, str(check)
    assert seeding.plan(fresh.target()).empty


def test_bad_limits_are_config_errors(fresh: Lab) -> None:
    with pytest.raises(ConfigError, match="unknown tenant limit 'max_users'"):
        seeding.plan(fresh.target(), limits={"max_users": 5})
    with pytest.raises(ConfigError, match="positive whole number"):
        seeding.plan(fresh.target(), limits=["max_concurrent_users=-1"])


def test_no_secret_in_plan_renderings_logs_and_errors(fresh: Lab, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="rtbook")
    fresh.sql(f"DELETE FROM _realtime.tenants WHERE external_id = '{TENANT}'")
    target = fresh.target()
    the_plan = seeding.plan(target, create=True)
    texts = [str(the_plan), repr(the_plan), the_plan._repr_html_(), json.dumps(the_plan.to_dict()),
             repr(the_plan.changes)]
    result = seeding.apply(target, the_plan, yes=True)
    texts += [str(result), json.dumps(result.to_dict())]
    with pytest.raises(ConfirmationRequired) as refused:
        seeding.apply(target, the_plan)
    texts.append(str(refused.value))
    texts.append(caplog.text)
    _assert_clean(fresh, *texts, extra=tuple(_ciphertexts(fresh)))


def test_unreachable_database_plan_raises_clean_error(fresh: Lab) -> None:
    wrong = "WRONG-" + fresh.password[::-1]
    target = fresh.target(env=fresh.env(POSTGRES_PASSWORD=wrong, DB_PASSWORD=wrong))
    with pytest.raises(Exception) as info:
        seeding.plan(target)
    assert "password" in str(info.value)
    _assert_clean(fresh, str(info.value), extra=(wrong,))


# ------------------------------------------------------------------ CLI


def _cli_env(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in lab.env().items():
        monkeypatch.setenv(name, value)


def test_cli_plan_and_apply(fresh: Lab, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                            clean_env: Any) -> None:
    _cli_env(fresh, monkeypatch)
    fresh.sql(f"UPDATE _realtime.tenants SET jwt_secret = '{ROTATED}'")
    url = fresh.cluster.url()
    before = fresh.dump()
    assert main(["tenant", "plan", "--db-url", url]) == 0
    out = capsys.readouterr()
    assert "UPDATE" in out.out and "jwt_secret" in out.out and "(dry run)" in out.out
    assert main(["tenant", "apply", "--db-url", url]) == 2
    refused = capsys.readouterr()
    assert "--yes" in refused.err
    assert fresh.dump() == before
    assert main(["tenant", "apply", "--yes", "--db-url", url, "--format", "json"]) == 0
    applied = capsys.readouterr()
    data = json.loads(applied.out)
    assert data["result"]["status"] == "pass"
    assert main(["tenant", "apply", "--yes", "--db-url", url, "--tenant", "cli-extra", "--create",
                 "--limit", "max_concurrent_users=300"]) == 0
    created = capsys.readouterr()
    assert fresh.query("SELECT max_concurrent_users FROM _realtime.tenants WHERE external_id = 'cli-extra'") == [(300,)]
    _assert_clean(fresh, out.out, out.err, refused.out, refused.err, applied.out, created.out, created.err,
                  extra=tuple(_ciphertexts(fresh)))


def test_cli_bad_limit_is_usage_error(fresh: Lab, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str], clean_env: Any) -> None:
    _cli_env(fresh, monkeypatch)
    assert main(["tenant", "plan", "--db-url", fresh.cluster.url(), "--limit", "max_concurrent_users"]) == 2
    assert "NAME=VALUE" in capsys.readouterr().err


def test_concurrent_apply_only_one_writes(fresh: Lab) -> None:
    fresh.sql(f"DELETE FROM _realtime.tenants WHERE external_id = '{TENANT}'")
    plans = [seeding.plan(fresh.target(), create=True) for _ in range(2)]
    results: list[Any] = [None, None]

    def run(i: int) -> None:
        results[i] = seeding.apply(fresh.target(), plans[i], yes=True)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    statuses = sorted(r.status.value for r in results)
    assert statuses == ["fail", "pass"], [str(r) for r in results]
    assert fresh.query(f"SELECT count(*) FROM _realtime.tenants WHERE external_id = '{TENANT}'") == [(1,)]
    assert fresh.query(f"SELECT count(*) FROM _realtime.extensions WHERE tenant_external_id = '{TENANT}'") == [(1,)]
