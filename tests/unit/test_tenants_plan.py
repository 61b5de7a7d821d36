"""Pure logic of rtbook.tenants and rtbook.db: limits parsing, planning from rows, renderings, errors."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from rtbook import seeding
from rtbook.clients.db import classify_db_error, parse_table, quote_ident, sql_url
from rtbook.crypto import decrypt, encrypt
from rtbook.exceptions import ConfigError
from rtbook.secrets import Redactor
from rtbook.target import Target

JWT = "CANARY-unit-jwt-secret-0123456789abcdef"
KEY = "unitcanarykey16b"
PASSWORD = "CANARY-unit-db-password"
ENV = {
    "API_JWT_SECRET": JWT,
    "DB_ENC_KEY": KEY,
    "DB_HOST": "db",
    "DB_PORT": "5432",
    "DB_NAME": "postgres",
    "DB_USER": "supabase_admin",
    "DB_PASSWORD": PASSWORD,
}
CANARIES = (JWT, KEY, PASSWORD)


def _target(**env: str) -> Target:
    return Target(name="unit", env={**ENV, **env})


def _state(
    tenant_rows: list[dict[str, Any]], ext_rows: list[dict[str, Any]], columns: tuple[str, ...] | None = None
) -> seeding.MetadataState:
    cols = columns or tuple(c for c, _ in seeding.TENANT_COLUMNS)
    redactor = Redactor()
    return seeding.MetadataState(
        schema_exists=True,
        tenant_columns=cols,
        extension_columns=seeding.EXTENSION_COLUMNS,
        not_null_without_default=("id", "inserted_at", "updated_at"),
        tenants=tuple(seeding._tenant_row(r, redactor) for r in tenant_rows),
        extensions=tuple(seeding._extension_row(r, redactor) for r in ext_rows),
        migrations=30,
    )


def _tenant(**over: Any) -> dict[str, Any]:
    row = {
        "id": str(uuid.uuid4()),
        "name": "realtime-dev",
        "external_id": "realtime-dev",
        "jwt_secret": encrypt(JWT, KEY),
        "max_concurrent_users": 200,
        "suspend": False,
        "private_only": False,
        "inserted_at": "2026-01-01T00:00:00",
        "updated_at": "2026-01-01T00:00:00",
    }
    row.update(over)
    return row


def _cdc(**over: Any) -> dict[str, Any]:
    settings = {
        k: encrypt(v, KEY)
        for k, v in (
            ("db_host", "db"),
            ("db_port", "5432"),
            ("db_name", "postgres"),
            ("db_user", "supabase_admin"),
            ("db_password", PASSWORD),
        )
    }
    settings.update(seeding.PLAIN_SETTING_DEFAULTS)
    settings.update(over.pop("settings", {}))
    row = {
        "id": str(uuid.uuid4()),
        "type": "postgres_cdc_rls",
        "settings": settings,
        "tenant_external_id": "realtime-dev",
        "inserted_at": "2026-01-01T00:00:00",
        "updated_at": "2026-01-01T00:00:00",
    }
    row.update(over)
    return row


def _plan(state: seeding.MetadataState, target: Target | None = None, **kwargs: Any) -> seeding.Plan:
    target = target or _target()
    exp = seeding.expected(target, kwargs.pop("tenant", None))
    limits = seeding.parse_limits(kwargs.pop("limits", None))
    changes, notes, blocked = seeding._plan_for(
        state,
        exp,
        create=kwargs.get("create", False),
        limits=limits,
        delete_extra=kwargs.get("delete_extra", False),
        redactor=target.redactor,
    )
    return seeding.Plan(exp.tenant, changes, notes, state.fingerprint(exp.tenant), [], blocked, "unit", target.redactor)


def _all_text(p: seeding.Plan) -> str:
    return "\n".join(
        [str(p), repr(p), p._repr_html_(), json.dumps(p.to_dict()), repr(p.changes), *(str(c) for c in p.changes)]
    )


# ------------------------------------------------------------------ limits


def test_parse_limits_accepts_mapping_and_cli_strings() -> None:
    assert seeding.parse_limits({"max_concurrent_users": 500}) == {"max_concurrent_users": 500}
    assert seeding.parse_limits(["max_events_per_second=50", "suspend=false", "private_only=TRUE"]) == {
        "max_events_per_second": 50,
        "suspend": False,
        "private_only": True,
    }
    assert seeding.parse_limits(None) == {}


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (["max_concurrent_users"], "NAME=VALUE"),
        (["nope=1"], "unknown tenant limit 'nope'"),
        (["max_concurrent_users=abc"], "not a whole number"),
        (["max_concurrent_users=0"], "positive whole number"),
        ({"max_concurrent_users": True}, "positive whole number"),
        (["suspend=maybe"], "true or false"),
    ],
)
def test_parse_limits_rejects_bad_input(given: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        seeding.parse_limits(given)


# ------------------------------------------------------------------ planning


def test_matching_rows_give_an_empty_plan() -> None:
    p = _plan(_state([_tenant()], [_cdc()]))
    assert p.empty and not p.blocked
    assert "Nothing to change" in str(p) and "Nothing to change" in p._repr_html_()


def test_rotated_secret_is_reencrypted_and_redacted() -> None:
    target = _target()
    p = _plan(_state([_tenant(jwt_secret=encrypt("old-secret-value-123456", KEY))], [_cdc()]), target)
    [change] = p.changes
    assert (change.kind, change.table, change.key) == ("update", "tenants", "realtime-dev")
    assert "differs from API_JWT_SECRET" in change.reason
    new_cipher = change.statement.params["jwt_secret"]
    assert decrypt(new_cipher.reveal(), KEY) == JWT
    text = _all_text(p)
    for needle in (*CANARIES, new_cipher.reveal()):
        assert needle not in text


def test_wrong_key_is_named_as_the_reason() -> None:
    p = _plan(_state([_tenant(jwt_secret=encrypt(JWT, "supabaserealtime"))], [_cdc()]))
    assert "does not decrypt with DB_ENC_KEY" in p.changes[0].reason


def test_gcm_writes_when_asked() -> None:
    gcm_key = "g" * 32
    target = _target(DB_ENC_KEY_GCM=gcm_key, DB_ENC_WRITE_GCM="true")
    p = _plan(_state([_tenant(jwt_secret=None)], [_cdc()]), target)
    cipher = p.changes[0].statement.params["jwt_secret"].reveal()
    assert cipher.startswith("g1:") and decrypt(cipher, KEY, gcm_key) == JWT


def test_db_settings_patch_only_what_differs() -> None:
    row = _cdc(settings={"db_port": 5432, "db_host": encrypt("localhost", KEY), "poll_interval_ms": "fast"})
    del row["settings"]["region"]
    p = _plan(_state([_tenant()], [row]))
    [change] = p.changes
    patch = change.statement.params["patch"]
    assert set(patch) == {"db_port", "db_host", "region", "poll_interval_ms"}
    assert decrypt(patch["db_port"].reveal(), KEY) == "5432"
    assert change.before["db_host"] == "localhost" and change.after["db_host"] == "db"
    assert change.after["region"] == "us-east-1" and change.after["poll_interval_ms"] == 100
    assert "stored as int" in change.reason


def test_password_change_is_never_shown() -> None:
    row = _cdc(settings={"db_password": encrypt("some-older-password", KEY)})
    p = _plan(_state([_tenant()], [row]))
    [change] = p.changes
    assert change.before == {"db_password": "[redacted]"} and change.after == {"db_password": "[redacted]"}
    assert "some-older-password" not in _all_text(p)


def test_missing_tenant_needs_create() -> None:
    state = _state([_tenant(external_id="other", name="other")], [])
    p = _plan(state)
    assert p.empty and "create=True" in p.notes[0] and "other" in p.notes[0]
    created = _plan(state, create=True, limits={"max_joins_per_second": 7})
    assert [(c.kind, c.table) for c in created.changes] == [("insert", "tenants"), ("insert", "extensions")]
    params = created.changes[0].statement.params
    assert params["external_id"] == "realtime-dev" and params["max_joins_per_second"] == 7
    assert params["max_concurrent_users"] == 200  # env default when TENANT_MAX_* is unset
    ext = created.changes[1].statement.params["settings"]
    assert ext[seeding.MARKER_KEY] and ext["region"] == "us-east-1"
    assert {k for k in seeding.ENCRYPTED_SETTINGS if decrypt(ext[k].reveal(), KEY)} == set(seeding.ENCRYPTED_SETTINGS)
    # The rendered SQL parameters are JSON with the secrets revealed only at execution time.
    assert json.loads(seeding._reveal(ext))["db_password"] != PASSWORD
    for needle in CANARIES:
        assert needle not in _all_text(created)


def test_create_needs_the_settings() -> None:
    target = Target(name="unit", env={"API_JWT_SECRET": JWT, "DB_ENC_KEY": KEY})
    with pytest.raises(ConfigError, match="DB_HOST, DB_PORT, DB_NAME, DB_USER, DB_PASSWORD"):
        _plan(_state([], []), target, create=True)


def test_create_adapts_to_columns_and_unknown_not_null_blocks() -> None:
    old = ("id", "name", "external_id", "jwt_secret", "max_concurrent_users", "inserted_at", "updated_at")
    state = _state([], [], columns=old)
    p = _plan(state, create=True)
    assert set(p.changes[0].statement.params) == {"id", "name", "external_id", "jwt_secret", "max_concurrent_users"}
    strict = seeding.MetadataState(
        schema_exists=True,
        tenant_columns=(*old, "future_col"),
        extension_columns=seeding.EXTENSION_COLUMNS,
        not_null_without_default=("id", "future_col"),
        tenants=(),
        extensions=(),
        migrations=None,
    )
    with pytest.raises(ConfigError, match="future_col"):
        _plan(strict, create=True)


def test_limit_on_a_column_this_version_lacks() -> None:
    state = _state([_tenant()], [_cdc()], columns=("id", "external_id", "jwt_secret", "inserted_at", "updated_at"))
    with pytest.raises(ConfigError, match="no column 'max_concurrent_users'"):
        _plan(state, limits={"max_concurrent_users": 5})


def test_extra_rows_kept_unless_asked_or_ours() -> None:
    broadcast = _cdc(type="broadcast", settings={})
    ours = _cdc(type="presence", settings={seeding.MARKER_KEY: "2026-01-01T00:00:00+00:00"})
    state = _state([_tenant()], [_cdc(), broadcast, ours])
    p = _plan(state)
    assert [(c.kind, c.key.split("/")[1]) for c in p.changes] == [("delete", "presence")]
    assert "rtbook created it" in p.changes[0].reason
    assert any("'broadcast'" in n and "Kept" in n and "realtime.messages.extension" in n for n in p.notes)
    everything = _plan(state, delete_extra=True)
    assert sorted(c.key.split("/")[1] for c in everything.changes) == ["broadcast", "presence"]


def test_duplicate_cdc_keeps_the_row_that_decrypts() -> None:
    broken = _cdc(settings={"db_host": encrypt("db", "supabaserealtime")}, inserted_at="2025-01-01T00:00:00")
    good = _cdc()
    p = _plan(_state([_tenant()], [broken, good]), delete_extra=True)
    [change] = p.changes
    assert change.kind == "delete" and change.key.endswith(broken["id"])


def test_schema_missing_blocks_the_plan() -> None:
    state = seeding.MetadataState(False, (), (), (), (), (), None)
    p = _plan(state)
    assert p.blocked and "tenant.schema" in p.blocked
    assert "BLOCKED" in str(p) and "Blocked" in p._repr_html_()


def test_fingerprint_changes_with_any_column() -> None:
    row, ext = _tenant(), _cdc()
    same = _state([row], [ext]).fingerprint("realtime-dev")
    assert same == _state([dict(row)], [dict(ext)]).fingerprint("realtime-dev")
    assert same != _state([{**row, "max_concurrent_users": 201}], [ext]).fingerprint("realtime-dev")
    assert same != _state([row], [{**ext, "updated_at": "2026-01-02T00:00:00"}]).fingerprint("realtime-dev")
    # Other tenants' rows do not matter.
    other = _tenant(external_id="other", id=str(uuid.uuid4()))
    assert same == _state([row, other], [ext]).fingerprint("realtime-dev")


def test_row_reprs_hide_ciphertext() -> None:
    state = _state([_tenant()], [_cdc()])
    text = repr(state) + json.dumps(state.tenants[0].redacted()) + json.dumps(state.extensions[0].redacted())
    assert encrypt(JWT, KEY) not in text and encrypt(PASSWORD, KEY) not in text


def test_expected_tenant_order() -> None:
    assert seeding.expected_tenant(Target(env={"SELF_HOST_TENANT_NAME": "acme"})) == "acme"
    assert seeding.expected_tenant(Target(tenant="x", env={"SELF_HOST_TENANT_NAME": "acme"})) == "x"
    assert seeding.expected_tenant(Target(env={}), "explicit") == "explicit"


# ------------------------------------------------------------------ db helpers


def test_parse_table_and_quoting() -> None:
    assert str(parse_table("todos")) == "public.todos"
    assert parse_table("app.Items").sql == 'app."Items"'
    assert quote_ident("ok_name") == "ok_name" and quote_ident('we"ird') == '"we""ird"'
    for bad in ("", "a.b.c", "a."):
        with pytest.raises(ConfigError, match=r"schema\.table"):
            parse_table(bad)


def test_sql_url_refuses_passwords_and_other_databases() -> None:
    url = sql_url(Target(db_url="postgresql://supabase_admin@127.0.0.1:5432/postgres"))
    assert url.drivername == "postgresql+psycopg" and url.password is None
    with pytest.raises(ConfigError, match="must not contain a password"):
        sql_url(Target(db_url="postgresql://u@h/db?password=x"))
    with pytest.raises(ConfigError, match="not a PostgreSQL URL"):
        sql_url(Target(db_url="mysql://u@h/db"))
    with pytest.raises(ConfigError, match="no database URL"):
        sql_url(Target())


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ('FATAL:  password authentication failed for user "supabase_admin"', "auth"),
        ('connection to server at "127.0.0.1", port 1 failed: Connection refused', "refused"),
        ('could not translate host name "db" to address', "dns"),
        ("connection timeout expired", "timeout"),
        ("canceling statement due to statement timeout", "statement_timeout"),
        ("canceling statement due to lock timeout", "statement_timeout"),
        ('FATAL:  database "nope" does not exist', "no_database"),
        ("no pg_hba.conf entry for host", "hba"),
        ("something else", "other"),
    ],
)
def test_classify_db_error(message: str, kind: str) -> None:
    problem = classify_db_error(RuntimeError(message))
    assert problem.kind == kind and problem.remedy


def test_invalid_jwks_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="API_JWT_JWKS is not valid JSON"):
        seeding.expected(_target(API_JWT_JWKS="{not json"))


def test_unusable_db_url_is_a_failed_result_not_a_crash() -> None:
    from rtbook.registry import run_checks
    from rtbook.results import Status

    report = run_checks(Target(db_url="mysql://root@127.0.0.1/db"), only=("db.", "tenant."))
    assert report.by_id("db.connect").status is Status.FAIL
    assert "not a PostgreSQL URL" in report.by_id("db.connect").remedy
    assert all(r.status is Status.FAIL for r in report), str(report)
