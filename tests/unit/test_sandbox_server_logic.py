"""Pure logic of the sandbox's Realtime-compatible server: Host parsing, filters, wal2json mapping, JWTs."""

from __future__ import annotations

import time

import jwt
import pytest

from rtbook.exceptions import ConfigError
from rtbook.sandbox.server import tenant_from_host
from rtbook.sandbox.server_cdc import Binding, filter_matches, make_binding, parse_filter, wal_to_change
from rtbook.sandbox.server_tenants import AuthError, verify_jwt
from rtbook.secrets import Secret

SECRET = Secret("unit-secret-0123456789-0123456789-abc")


@pytest.mark.parametrize(
    ("host", "tenant"),
    [
        ("realtime-dev.supabase-realtime:4000", "realtime-dev"),
        ("realtime-dev.supabase-realtime", "realtime-dev"),
        ("localhost:4000", "localhost"),
        ("192.168.1.10:4000", "192"),
        ("realtime-dev.localhost", "realtime-dev"),
    ],
)
def test_tenant_from_host(host: str, tenant: str) -> None:
    assert tenant_from_host(host) == tenant


def test_parse_filter() -> None:
    assert parse_filter("id=eq.5").value == "5"
    assert parse_filter("id=in.(1, 2,3)").value == ("1", "2", "3")
    assert parse_filter("body=neq.a.b").value == "a.b"
    for bad in ("id", "id=like.x", "id=eq", "id=in.1,2"):
        with pytest.raises(ValueError, match="Error parsing `filter` params"):
            parse_filter(bad)


WAL_INSERT = {
    "action": "I", "timestamp": "2026-11-25 21:15:12.545316+00", "schema": "public", "table": "t",
    "columns": [
        {"name": "id", "type": "bigint", "typeoid": 20, "value": 7},
        {"name": "ts", "type": "timestamp with time zone", "typeoid": 1184, "value": "2026-11-25 21:15:12.5+00"},
        {"name": "ok", "type": "boolean", "typeoid": 16, "value": True},
    ],
    "pk": [{"name": "id", "type": "bigint", "typeoid": 20}],
}
TYPES = {20: "int8", 1184: "timestamptz", 16: "bool"}


def test_wal_to_change_insert_payload_shape() -> None:
    change = wal_to_change(WAL_INSERT, TYPES)
    assert change is not None
    payload = change.payload([42])
    assert payload["ids"] == [42]
    data = payload["data"]
    assert data["commit_timestamp"] == "2026-11-25T21:15:12.545Z"
    assert data["columns"] == [{"name": "id", "type": "int8"}, {"name": "ts", "type": "timestamptz"},
                               {"name": "ok", "type": "bool"}]
    assert data["record"] == {"id": 7, "ts": "2026-11-25T21:15:12.5+00:00", "ok": True}
    assert "old_record" not in data and data["errors"] is None


def test_wal_to_change_delete_and_no_pk() -> None:
    wal = {"action": "D", "timestamp": "2026-11-25 21:15:12+00", "schema": "public", "table": "t",
           "identity": [{"name": "id", "type": "bigint", "typeoid": 20, "value": 7},
                        {"name": "x", "type": "text", "typeoid": 25, "value": "a"}],
           "pk": [{"name": "id", "type": "bigint", "typeoid": 20}]}
    change = wal_to_change(wal, {20: "int8", 25: "text"})
    assert change is not None
    assert change.payload([1], pk_only_old=True)["data"]["old_record"] == {"id": 7}
    assert change.payload([1])["data"]["old_record"] == {"id": 7, "x": "a"}
    assert "record" not in change.payload([1])["data"]
    nopk = wal_to_change({**WAL_INSERT, "pk": []}, TYPES)
    assert nopk is not None and nopk.errors == ["Error 400: Bad Request, no primary key"]
    assert wal_to_change({"action": "B"}, {}) is None


def test_filters_on_records() -> None:
    change = wal_to_change(WAL_INSERT, TYPES)
    assert change is not None

    def b(flt: str, event: str = "*") -> Binding:
        return make_binding({"event": event, "schema": "public", "table": "t", "filter": flt})

    assert filter_matches(b("id=eq.7"), change)
    assert not filter_matches(b("id=neq.7"), change)
    assert filter_matches(b("id=gte.7"), change) and not filter_matches(b("id=gt.7"), change)
    assert filter_matches(b("id=in.(1,7)"), change)
    assert filter_matches(b("ok=eq.true"), change)
    assert not filter_matches(b("missing=eq.1"), change)
    assert b("id=eq.7", "insert").matches("public", "t", "INSERT")
    assert not b("id=eq.7", "DELETE").matches("public", "t", "INSERT")
    assert make_binding({"event": "*", "schema": "public"}).matches("public", "anything", "UPDATE")


def test_binding_ids_are_stable_and_distinct() -> None:
    one = make_binding({"event": "*", "schema": "public", "table": "todos"})
    same = make_binding({"table": "todos", "schema": "public", "event": "*"})
    other = make_binding({"event": "*", "schema": "public", "table": "todos", "filter": "id=eq.1"})
    assert one.id == same.id != other.id
    assert 0 <= one.id < 2**27


def _tok(claims: dict[str, object], secret: str = SECRET.reveal()) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


def test_verify_jwt_reasons() -> None:
    now = int(time.time())
    assert verify_jwt(_tok({"role": "anon", "exp": now + 60}), SECRET)["role"] == "anon"
    cases = {
        None: "missing_api_key",
        "garbage": "token_malformed",
        _tok({"role": "anon", "exp": now + 60}, "another-secret-another-secret-0000"): "signature_error",
        _tok({"role": "anon", "exp": now - 60}): "expired_token",
        _tok({"exp": now + 60}): "missing_claims",
        _tok({"role": "anon"}): "missing_claims",
    }
    for token, reason in cases.items():
        with pytest.raises(AuthError) as info:
            verify_jwt(token, SECRET)
        assert info.value.reason == reason
    with pytest.raises(AuthError) as info:
        verify_jwt(_tok({"role": "anon", "exp": now + 60}), None)
    assert info.value.reason == "error_generating_signer"
    with pytest.raises(AuthError) as info:
        verify_jwt(_tok({"role": "anon", "exp": now - 30}), SECRET)
    assert info.value.message.startswith("Token has expired ") and info.value.message.endswith(" seconds ago")


# -- versions -------------------------------------------------------------------------------------


def test_version_boundaries() -> None:
    from rtbook.sandbox.server_version import RealtimeBehaviour

    old, new = RealtimeBehaviour.of("v2.78.19"), RealtimeBehaviour.of("2.129.8")
    assert old.connect_error_backoff_default_ms is None and new.connect_error_backoff_default_ms == 2000
    assert old.channel_error_backoff_default_ms is None and new.channel_error_backoff_default_ms == 5000
    assert RealtimeBehaviour.of("2.80.9").connect_error_backoff_default_ms is None
    assert RealtimeBehaviour.of("2.81.0").connect_error_backoff_default_ms == 2000
    assert RealtimeBehaviour.of("2.82.5").channel_error_backoff_default_ms is None
    assert RealtimeBehaviour.of("2.83.0").channel_error_backoff_default_ms == 5000
    assert not RealtimeBehaviour.of("2.115.9").handshake_json_errors
    assert RealtimeBehaviour.of("2.116.0").handshake_json_errors
    assert not RealtimeBehaviour.of("2.107.0").poller_publication_lifecycle
    assert RealtimeBehaviour.of("2.107.1").poller_publication_lifecycle
    assert old.poller_max_retries is None and new.poller_max_retries == 6
    assert RealtimeBehaviour.of("2.102.2").poller_max_retries == 6
    assert old.tenant_migrations == 68 and new.tenant_migrations == 81
    assert not old.health_async_migrations and RealtimeBehaviour.of("2.106.0").health_async_migrations
    assert old.connect_idle_default == (50_000, 6) and new.connect_idle_default == (60_000, 11)
    assert not old.private_flexible_boolean and RealtimeBehaviour.of("2.111.1").private_flexible_boolean
    # Newer than the newest tag read: behaves like it.
    assert RealtimeBehaviour.of("2.134.10").tenant_migrations == 81


def test_timers_defaults_env_and_explicit() -> None:
    from rtbook.sandbox.server_version import RealtimeBehaviour, Timers

    new = Timers.resolve(RealtimeBehaviour.of("2.129.8"), {})
    assert (new.connect_error_backoff_ms, new.channel_error_backoff_ms) == (2000, 5000)
    assert (new.cdc_poller_check_oids_interval_ms, new.cdc_manager_check_oids_interval_ms) == (60_000, 60_000)
    assert (new.cdc_check_no_users_interval_ms, new.cdc_stop_after_ms) == (60_000, 600_000)
    assert (new.connect_check_users_interval_ms, new.connect_zero_samples, new.db_recovery_ms) == (60_000, 11, 600_000)
    old = Timers.resolve(RealtimeBehaviour.of("2.78.19"), {"CONNECT_ERROR_BACKOFF_MS": "900"})
    # The old image has no such variable: no delay whatever the environment says.
    assert (old.connect_error_backoff_ms, old.channel_error_backoff_ms) == (0, 0)
    assert (old.connect_check_users_interval_ms, old.connect_zero_samples) == (50_000, 6)
    env = {"CONNECT_ERROR_BACKOFF_MS": "10", "CHANNEL_ERROR_BACKOFF_MS": "20", "RTBOOK_CDC_STOP_AFTER_MS": "30"}
    short = Timers.resolve(RealtimeBehaviour.of("2.129.8"), env, channel_error_backoff_ms=0)
    assert (short.connect_error_backoff_ms, short.channel_error_backoff_ms, short.cdc_stop_after_ms) == (10, 0, 30)
    split = Timers.resolve(RealtimeBehaviour.of("2.129.8"), {"RTBOOK_CDC_CHECK_OIDS_INTERVAL_MS": "500",
                                                             "RTBOOK_CDC_MANAGER_CHECK_OIDS_INTERVAL_MS": "9000"})
    assert (split.cdc_poller_check_oids_interval_ms, split.cdc_manager_check_oids_interval_ms) == (500, 9000)
    with pytest.raises(ConfigError, match="CONNECT_ERROR_BACKOFF_MS"):
        Timers.resolve(RealtimeBehaviour.of("2.129.8"), {"CONNECT_ERROR_BACKOFF_MS": "2s"})


def test_params_text_follows_the_version() -> None:
    from rtbook.sandbox.server_version import RealtimeBehaviour

    binding = make_binding({"event": "*", "schema": "public", "table": "todos", "filter": "id=eq.1"})
    assert binding.params_text(RealtimeBehaviour.of("2.78.19")) == (
        '[event: *, schema: public, table: todos, filters: [{"id", "eq", "1"}]]')
    assert binding.params_text(RealtimeBehaviour.of("2.105.0")) == (
        '[event: *, schema: public, table: todos, filters: [{"id", "eq", "1"}], select: nil]')
    assert binding.params_text(RealtimeBehaviour.of("2.129.8")) == (
        '[event: *, schema: public, table: todos, filters: [{"id", "eq", "1", false}], select: nil]')
    with pytest.raises(ValueError, match=r'^Error parsing `filter` params: \["foo"\]$'):
        parse_filter("foo")
    with pytest.raises(ValueError, match=r'^Error parsing `filter` params: \["like", "x"\]$'):
        parse_filter("id=like.x")


def test_log_format_and_inspect() -> None:
    import logging

    from rtbook.sandbox.server_log import Atom, Formatter, inspect

    record = logging.LogRecord("rtbook.sandbox.server", logging.ERROR, __file__, 1, "TenantNotFound: x", None, None)
    record.rt_meta = {"error_code": "TenantNotFound", "external_id": "t", "project": "t"}
    line = Formatter().format(record)
    assert line[12:] == " project=t external_id=t error_code=TenantNotFound [error] TenantNotFound: x"
    assert inspect((Atom("error"), "Too many database timeouts")) == '{:error, "Too many database timeouts"}'
    assert inspect({("public", "todos"): [1]}) == '%{{"public", "todos"} => [1]}'
