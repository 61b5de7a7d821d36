"""Realtime's tenant metadata (``tenant.*`` checks) and a safe plan/apply to seed or repair it.

Realtime finds everything about a tenant in two tables of its ``_realtime`` schema: the tenant
row (``jwt_secret`` encrypted with ``DB_ENC_KEY``, the limits) and exactly one
``postgres_cdc_rls`` extension row whose settings hold the five encrypted database settings
every tenant connection uses. ``SEED_SELF_HOST=true`` rewrites both on each start; with seeding
off, or after a failed seed, they drift from the stack's environment and clients fail with
errors that do not name the cause.

The checks read the rows (adapting to the columns the installed Realtime version has), decrypt
what is encrypted and compare it with what the stack's Realtime environment says. :func:`plan`
turns the differences into a list of :class:`Change` (a dry run, secrets redacted);
:func:`apply` writes them in one transaction, only with ``yes=True``, after checking that the
rows did not change since the plan. rtbook never deletes a row it did not create unless asked
(``delete_extra=True``); rows it creates carry ``"rtbook_created": <timestamp>`` in their
settings.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import json
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from rtbook.checks.db import with_finding
from rtbook.clients.db import classify_db_error, connect, realtime_value
from rtbook.crypto import DecryptError, decrypt, encrypt, encrypt_gcm
from rtbook.exceptions import ConfigError, ConfirmationRequired, ConnectionSetupError
from rtbook.results import CheckResult, Status
from rtbook.secrets import REDACTED, Redactor, Secret
from rtbook.target import DEFAULT_TENANT, Target

__all__ = [
    "CDC_TYPE",
    "ENCRYPTED_SETTINGS",
    "LIMIT_COLUMNS",
    "MARKER_KEY",
    "Change",
    "Expected",
    "ExtensionRow",
    "MetadataState",
    "Plan",
    "TenantRow",
    "apply",
    "expected",
    "parse_limits",
    "plan",
    "read_state",
]


log = logging.getLogger("rtbook.seeding")

SCHEMA = "_realtime"
CDC_TYPE = "postgres_cdc_rls"
MARKER_KEY = "rtbook_created"
ENCRYPTED_SETTINGS = ("db_host", "db_port", "db_name", "db_user", "db_password")
SETTING_ENV = {"db_host": "DB_HOST", "db_port": "DB_PORT", "db_name": "DB_NAME", "db_user": "DB_USER",
               "db_password": "DB_PASSWORD"}
# What seeds.exs writes besides the encrypted settings (DbSettings.default/0 merged in).
PLAIN_SETTING_DEFAULTS: Mapping[str, Any] = {
    "region": "us-east-1",
    "poll_interval_ms": 100,
    "poll_max_record_bytes": 1_048_576,
    "poll_max_changes": 100,
    "publication": "supabase_realtime",
    "slot_name": "supabase_realtime_replication_slot",
    "ssl_enforced": False,
}
_POSITIVE_INT_SETTINGS = ("poll_interval_ms", "poll_max_record_bytes", "poll_max_changes")
# Limit column -> (env default variable, app default) (realtime-facts §9).
LIMIT_COLUMNS: Mapping[str, tuple[str | None, int]] = {
    "max_concurrent_users": ("TENANT_MAX_CONCURRENT_USERS", 200),
    "max_events_per_second": ("TENANT_MAX_EVENTS_PER_SECOND", 100),
    "max_joins_per_second": ("TENANT_MAX_JOINS_PER_SECOND", 100),
    "max_channels_per_client": ("TENANT_MAX_CHANNELS_PER_CLIENT", 100),
    "max_bytes_per_second": ("TENANT_MAX_BYTES_PER_SECOND", 100_000),
    "max_presence_events_per_second": (None, 1000),
    "max_payload_size_in_kb": (None, 3000),
    "max_client_presence_events_per_window": (None, 0),
    "client_presence_window_ms": (None, 0),
}
_SEEDED_LIMITS = ("max_concurrent_users", "max_events_per_second", "max_joins_per_second",
                  "max_channels_per_client", "max_bytes_per_second")
FLAG_COLUMNS = ("suspend", "private_only", "presence_enabled")

# tenants columns by the Realtime release that introduced them (realtime-facts §3.1).
TENANT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "2021"), ("name", "2021"), ("external_id", "2021"), ("jwt_secret", "2021"),
    ("max_concurrent_users", "2021"), ("inserted_at", "2021"), ("updated_at", "2021"),
    ("max_events_per_second", "2022"), ("postgres_cdc_default", "2022"), ("max_bytes_per_second", "2022"),
    ("max_channels_per_client", "2022"), ("max_joins_per_second", "2022"), ("suspend", "2023"),
    ("jwt_jwks", "2024-03"), ("notify_private_alpha", "2024-07"), ("private_only", "2024-11"),
    ("migrations_ran", "2025-04"), ("broadcast_adapter", "2025-06"),
    ("max_presence_events_per_second", "2025-08"), ("max_payload_size_in_kb", "2025-08"),
    ("max_client_presence_events_per_window", "2026-02 (v2.78)"), ("client_presence_window_ms", "2026-02 (v2.78)"),
    ("presence_enabled", "2026-03 (v2.78)"), ("feature_flags", "2026-04 (v2.129)"),
    ("gcm_migrated_at", "2026-08 (v2.129)"),
)
# Rows in _realtime.schema_migrations by release (files in priv/repo/migrations).
_MIGRATION_COUNTS = {21: "2.34.47", 30: "2.78.15", 33: "2.129"}
REQUIRED_TENANT_COLUMNS = ("id", "external_id", "jwt_secret", "inserted_at", "updated_at")
EXTENSION_COLUMNS = ("id", "type", "settings", "tenant_external_id", "inserted_at", "updated_at")
_NOW = "CAST((now() AT TIME ZONE 'utc') AS timestamp(0))"


# ------------------------------------------------------------------ rows


def _plain(value: Any) -> Any:
    """A JSON-safe copy of a database value."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _digest(rows: Iterable[Mapping[str, Any]]) -> str:
    blob = json.dumps([_plain(dict(r)) for r in rows], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class TenantRow:
    """One ``_realtime.tenants`` row; ``jwt_secret`` is the stored ciphertext, as a Secret."""

    id: str
    external_id: str
    name: str | None
    jwt_secret: Secret | None
    has_jwks: bool
    limits: Mapping[str, int | None]
    flags: Mapping[str, bool | None]
    migrations_ran: int | None
    inserted_at: str
    updated_at: str
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def suspend(self) -> bool:
        """Whether Realtime refuses every connection for this tenant."""
        return bool(self.flags.get("suspend"))

    @property
    def private_only(self) -> bool:
        """Whether only private channels may be joined."""
        return bool(self.flags.get("private_only"))

    def redacted(self) -> dict[str, Any]:
        """The full row with the secret replaced."""
        out = {k: _plain(v) for k, v in self.raw.items()}
        if out.get("jwt_secret") is not None:
            out["jwt_secret"] = REDACTED
        return out


@dataclass(frozen=True)
class ExtensionRow:
    """One ``_realtime.extensions`` row; encrypted settings are kept as Secrets."""

    id: str
    type: str
    tenant_external_id: str
    plain_settings: Mapping[str, Any]
    encrypted_settings: Mapping[str, Secret | None]
    inserted_at: str
    updated_at: str
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def rtbook_created(self) -> bool:
        """True when rtbook inserted this row (its settings carry the marker)."""
        return bool(self.plain_settings.get(MARKER_KEY))

    def redacted(self) -> dict[str, Any]:
        """The full row with every encrypted setting replaced."""
        out = {k: _plain(v) for k, v in self.raw.items()}
        settings = dict(out.get("settings") or {})
        for key in ENCRYPTED_SETTINGS:
            if key in settings:
                settings[key] = REDACTED
        out["settings"] = settings
        return out


@dataclass(frozen=True)
class MetadataState:
    """What ``_realtime`` holds: schema facts and every tenant and extension row."""

    schema_exists: bool
    tenant_columns: tuple[str, ...]
    extension_columns: tuple[str, ...]
    not_null_without_default: tuple[str, ...]
    tenants: tuple[TenantRow, ...]
    extensions: tuple[ExtensionRow, ...]
    migrations: int | None

    @property
    def readable(self) -> bool:
        """Both tables exist with the columns rtbook needs."""
        return (
            self.schema_exists
            and all(c in self.tenant_columns for c in REQUIRED_TENANT_COLUMNS)
            and all(c in self.extension_columns for c in EXTENSION_COLUMNS)
        )

    def tenant(self, external_id: str) -> TenantRow | None:
        """The tenant row with this external id, if any."""
        return next((t for t in self.tenants if t.external_id == external_id), None)

    def extensions_of(self, external_id: str) -> list[ExtensionRow]:
        """Extension rows that belong to this tenant."""
        return [e for e in self.extensions if e.tenant_external_id == external_id]

    def fingerprint(self, external_id: str) -> str:
        """A digest of this tenant's rows, to notice changes between a plan and its apply."""
        rows: list[Mapping[str, Any]] = []
        t = self.tenant(external_id)
        if t is not None:
            rows.append(t.raw)
        rows += sorted((e.raw for e in self.extensions_of(external_id)), key=lambda r: str(r.get("id")))
        return _digest(rows)


def _columns(conn: Connection, table: str) -> list[tuple[str, bool]]:
    rows = conn.execute(
        sa.text(
            "SELECT column_name, is_nullable = 'NO' AND column_default IS NULL "
            "FROM information_schema.columns WHERE table_schema = :s AND table_name = :t ORDER BY ordinal_position"
        ),
        {"s": SCHEMA, "t": table},
    ).all()
    return [(str(r[0]), bool(r[1])) for r in rows]


def _tenant_row(raw: Mapping[str, Any], redactor: Redactor | None) -> TenantRow:
    secret = raw.get("jwt_secret")
    if redactor is not None and isinstance(secret, str):
        redactor.add(secret)
    return TenantRow(
        id=str(raw.get("id")),
        external_id=str(raw.get("external_id")),
        name=raw.get("name"),
        jwt_secret=Secret(secret, "tenants.jwt_secret") if isinstance(secret, str) else None,
        has_jwks=raw.get("jwt_jwks") is not None,
        limits={c: (int(raw[c]) if raw[c] is not None else None) for c in LIMIT_COLUMNS if c in raw},
        flags={c: (bool(raw[c]) if raw[c] is not None else None) for c in FLAG_COLUMNS if c in raw},
        migrations_ran=int(raw["migrations_ran"]) if raw.get("migrations_ran") is not None else None,
        inserted_at=str(_plain(raw.get("inserted_at"))),
        updated_at=str(_plain(raw.get("updated_at"))),
        raw=dict(raw),
    )


def _extension_row(raw: Mapping[str, Any], redactor: Redactor | None) -> ExtensionRow:
    settings = raw.get("settings")
    settings = dict(settings) if isinstance(settings, Mapping) else {}
    encrypted: dict[str, Secret | None] = {}
    for key in ENCRYPTED_SETTINGS:
        if key in settings:
            value = settings[key]
            if isinstance(value, str):
                if redactor is not None:
                    redactor.add(value)
                encrypted[key] = Secret(value, f"settings.{key}")
            else:
                encrypted[key] = None
    return ExtensionRow(
        id=str(raw.get("id")),
        type=str(raw.get("type")),
        tenant_external_id=str(raw.get("tenant_external_id")),
        plain_settings={k: v for k, v in settings.items() if k not in ENCRYPTED_SETTINGS},
        encrypted_settings=encrypted,
        inserted_at=str(_plain(raw.get("inserted_at"))),
        updated_at=str(_plain(raw.get("updated_at"))),
        raw=dict(raw),
    )


def read_state(conn: Connection, redactor: Redactor | None = None, *, lock_tenant: str | None = None) -> MetadataState:
    """Read ``_realtime.tenants`` and ``_realtime.extensions``, adapting to the columns present.

    Every stored ciphertext is registered with ``redactor``. With ``lock_tenant`` the tenant's
    rows are locked (``FOR UPDATE``) for the rest of the transaction.
    """
    schema = conn.execute(sa.text("SELECT 1 FROM pg_namespace WHERE nspname = :s"), {"s": SCHEMA}).first()
    tcols = _columns(conn, "tenants")
    ecols = _columns(conn, "extensions")
    tenant_names = tuple(c for c, _ in tcols)
    ext_names = tuple(c for c, _ in ecols)
    migrations = None
    if conn.execute(sa.text("SELECT to_regclass('_realtime.schema_migrations')")).scalar() is not None:
        migrations = int(conn.execute(sa.text("SELECT count(*) FROM _realtime.schema_migrations")).scalar() or 0)
    tenants: list[TenantRow] = []
    extensions: list[ExtensionRow] = []
    if tenant_names and "external_id" in tenant_names:
        lock = " FOR UPDATE" if lock_tenant is not None else ""
        where = " WHERE external_id = :t" if lock_tenant is not None else ""
        order = " ORDER BY inserted_at, external_id" if "inserted_at" in tenant_names and not lock else ""
        rows = conn.execute(sa.text(f"SELECT * FROM {SCHEMA}.tenants{where}{order}{lock}"),
                            {"t": lock_tenant}).mappings().all()
        tenants = [_tenant_row(dict(r), redactor) for r in rows]
    if ext_names and "tenant_external_id" in ext_names:
        lock = " FOR UPDATE" if lock_tenant is not None else ""
        where = " WHERE tenant_external_id = :t" if lock_tenant is not None else ""
        order = " ORDER BY inserted_at, id" if "inserted_at" in ext_names and not lock else ""
        rows = conn.execute(sa.text(f"SELECT * FROM {SCHEMA}.extensions{where}{order}{lock}"),
                            {"t": lock_tenant}).mappings().all()
        extensions = [_extension_row(dict(r), redactor) for r in rows]
    return MetadataState(
        schema_exists=schema is not None,
        tenant_columns=tenant_names,
        extension_columns=ext_names,
        not_null_without_default=tuple(c for c, required in tcols if required),
        tenants=tuple(tenants),
        extensions=tuple(extensions),
        migrations=migrations,
    )


# ------------------------------------------------------------------ expectations


@dataclass(frozen=True)
class Expected:
    """What the stack's Realtime environment says the tenant rows should hold."""

    tenant: str
    jwt_secret: Secret | None
    jwt_jwks: str | None
    enc_key: Secret | None
    gcm_key: Secret | None
    write_gcm: bool
    db: Mapping[str, str | None]
    db_password: Secret | None
    limits: Mapping[str, int]
    sources: Mapping[str, str]

    def describe(self, name: str) -> str:
        """Where the expected value of ``name`` came from."""
        return self.sources.get(name, "not set anywhere")

    def setting(self, key: str) -> str | Secret | None:
        """The expected value of one of the five encrypted settings."""
        return self.db_password if key == "db_password" else self.db.get(key)


def expected_tenant(target: Target, tenant: str | None = None) -> str:
    """The tenant to check or seed: explicit, else the target's, else what the stack implies."""
    if tenant:
        return tenant
    if target.tenant or target.stack is not None:
        return target.resolved_tenant()
    named, _ = realtime_value(target, "SELF_HOST_TENANT_NAME")
    return named or DEFAULT_TENANT


def expected(target: Target, tenant: str | None = None) -> Expected:
    """Collect the expected tenant values from the target (secrets wrapped and registered for redaction)."""
    sources: dict[str, str] = {}

    def get(name: str, secret: bool = False) -> str | None:
        value, source = realtime_value(target, name)
        if value is not None:
            sources[name] = source
            if secret:
                target.redactor.add(value)
        return value

    jwt = get("API_JWT_SECRET", True)
    enc = get("DB_ENC_KEY", True)
    gcm = get("DB_ENC_KEY_GCM", True)
    password = get("DB_PASSWORD", True)
    db = {key: get(env) for key, env in SETTING_ENV.items() if key != "db_password"}
    limits: dict[str, int] = {}
    for column, (env, default) in LIMIT_COLUMNS.items():
        if env is None:
            continue
        raw = get(env)
        try:
            limits[column] = int(raw) if raw else default
        except ValueError as exc:
            raise ConfigError(f"{env}={raw!r} is not a whole number; set it to e.g. {default}") from exc
    jwks = get("API_JWT_JWKS")
    if jwks:
        try:
            json.loads(jwks)
        except ValueError as exc:
            raise ConfigError(f"API_JWT_JWKS is not valid JSON ({exc.args[0]}); set it to a JWKS object "
                              '{"keys": [...]} or leave it unset') from None
    return Expected(
        tenant=expected_tenant(target, tenant),
        jwt_secret=Secret(jwt, "API_JWT_SECRET") if jwt else None,
        jwt_jwks=jwks,
        enc_key=Secret(enc, "DB_ENC_KEY") if enc else None,
        gcm_key=Secret(gcm, "DB_ENC_KEY_GCM") if gcm else None,
        write_gcm=(get("DB_ENC_WRITE_GCM") or "").lower() == "true",
        db=db,
        db_password=Secret(password, "DB_PASSWORD") if password else None,
        limits=limits,
        sources=sources,
    )


def _decrypt(stored: Secret | None, exp: Expected) -> tuple[str | None, str]:
    """(plain, "") or (None, why)."""
    if stored is None:
        return None, "not stored as a string"
    if exp.enc_key is None and not stored.reveal().startswith("g1:"):
        return None, "DB_ENC_KEY is not set"
    try:
        return decrypt(stored.reveal(), exp.enc_key, exp.gcm_key), ""
    except DecryptError:
        which = "DB_ENC_KEY_GCM" if stored.reveal().startswith("g1:") else "DB_ENC_KEY"
        return None, f"does not decrypt with {which}"
    except ConfigError as exc:
        return None, f"cannot be decrypted: {exc}"


def _needs_gcm_key(stored: Secret | None, exp: Expected) -> bool:
    """True for a ``g1:`` (AES-256-GCM, Realtime >= 2.129) value when DB_ENC_KEY_GCM is unknown."""
    return stored is not None and stored.reveal().startswith("g1:") and exp.gcm_key is None


_GCM_NOTE = "is AES-256-GCM encrypted (g1:, Realtime >= 2.129) and DB_ENC_KEY_GCM is not known, so it is not compared"


def _encrypt(plain: str, exp: Expected, redactor: Redactor) -> Secret:
    if exp.write_gcm and exp.gcm_key is not None:
        cipher = encrypt_gcm(plain, exp.gcm_key)
    elif exp.enc_key is not None:
        cipher = encrypt(plain, exp.enc_key)
    else:
        raise ConfigError("DB_ENC_KEY is not set; rtbook needs it to encrypt values the way Realtime does")
    redactor.add(cipher)
    return Secret(cipher, "ciphertext")


# ------------------------------------------------------------------ plan


def parse_limits(limits: Mapping[str, Any] | Iterable[str] | None) -> dict[str, int | bool]:
    """Validate limits given as a mapping or as ``NAME=VALUE`` strings (the CLI's ``--limit``).

    Raises:
        ConfigError: unknown name, or a value that is not a non-negative whole number (or a boolean flag).
    """
    if limits is None:
        return {}
    pairs: list[tuple[str, Any]] = []
    if isinstance(limits, Mapping):
        pairs = [(str(k), v) for k, v in limits.items()]
    else:
        for item in limits:
            if "=" not in item:
                raise ConfigError(f"--limit {item!r} must be NAME=VALUE, e.g. max_concurrent_users=500")
            name, _, value = item.partition("=")
            pairs.append((name.strip(), value.strip()))
    out: dict[str, int | bool] = {}
    known = ", ".join([*LIMIT_COLUMNS, *FLAG_COLUMNS])
    for name, value in pairs:
        if name in FLAG_COLUMNS:
            text = str(value).lower()
            if isinstance(value, bool):
                out[name] = value
            elif text in ("true", "false"):
                out[name] = text == "true"
            else:
                raise ConfigError(f"{name}={value!r}: use true or false")
        elif name in LIMIT_COLUMNS:
            try:
                number = int(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{name}={value!r} is not a whole number") from None
            if isinstance(value, bool) or number < 0 or (number == 0 and name in _SEEDED_LIMITS):
                raise ConfigError(f"{name}={value!r}: use a positive whole number")
            out[name] = number
        else:
            raise ConfigError(f"unknown tenant limit {name!r}; known: {known}")
    return out


@dataclass(frozen=True)
class _Statement:
    sql: str
    params: Mapping[str, Any] = field(default_factory=dict)
    rows: int = 1  # rows the statement must affect


@dataclass(frozen=True)
class Change:
    """One write a plan would make. ``before``/``after`` are redacted, readable summaries."""

    kind: str  # insert | update | delete
    table: str  # tenants | extensions
    key: str
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None
    reason: str
    statement: _Statement = field(repr=False, compare=False, default_factory=lambda: _Statement(""))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict without the SQL parameters."""
        return {"kind": self.kind, "table": self.table, "key": self.key, "before": _plain(self.before),
                "after": _plain(self.after), "reason": self.reason}

    def __str__(self) -> str:
        def fmt(m: Mapping[str, Any] | None) -> str:
            return "-" if m is None else ", ".join(f"{k}={_short(v)}" for k, v in m.items())

        head = f"{self.kind.upper():6} {self.table}[{self.key}]"
        return f"{head}: {fmt(self.before)} -> {fmt(self.after)}  ({self.reason})"


def _short(value: Any) -> str:
    text = json.dumps(_plain(value), default=str) if not isinstance(value, str) else value
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass
class Plan:
    """What :func:`apply` would write for one tenant. A dry run: nothing is written by planning."""

    tenant: str
    changes: list[Change]
    notes: list[str]
    fingerprint: str
    prior_rows: list[dict[str, Any]]
    blocked: str = ""
    target_name: str = ""
    redactor: Redactor = field(default_factory=Redactor, repr=False)

    @property
    def empty(self) -> bool:
        """True when there is nothing to write."""
        return not self.changes

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, redacted."""
        data = {"tenant": self.tenant, "target": self.target_name, "blocked": self.blocked,
                "changes": [c.to_dict() for c in self.changes], "notes": list(self.notes),
                "prior_rows": self.prior_rows}
        return dict(self.redactor.data(data))

    def __str__(self) -> str:
        head = f"Tenant plan for {self.tenant!r}" + (f" on {self.target_name}" if self.target_name else "")
        lines = [head + " (dry run)"]
        if self.blocked:
            lines.append(f"  BLOCKED: {self.blocked}")
        if not self.changes and not self.blocked:
            lines.append("  Nothing to change: the stored rows match the stack.")
        lines += [f"  {c}" for c in self.changes]
        lines += [f"  note: {n}" for n in self.notes]
        if self.changes:
            lines.append(f"  {len(self.changes)} change(s); apply with: rtbook tenant apply --yes (or apply(target, "
                         "plan, yes=True)).")
        return self.redactor.text("\n".join(lines))

    def __repr__(self) -> str:
        return f"<Plan {self.tenant!r}: {len(self.changes)} change(s){' BLOCKED' if self.blocked else ''}>"

    def _repr_html_(self) -> str:
        esc = html.escape
        rows = "".join(
            f"<tr><td>{esc(c.kind)}</td><td><code>{esc(c.table)}[{esc(c.key)}]</code></td>"
            f"<td>{esc(self.redactor.text(_short(c.before)))}</td><td>{esc(self.redactor.text(_short(c.after)))}</td>"
            f"<td>{esc(self.redactor.text(c.reason))}</td></tr>"
            for c in self.changes
        )
        notes = "".join(f"<li>{esc(self.redactor.text(n))}</li>" for n in self.notes)
        status = (f"<p style='color:#c5221f'><b>Blocked:</b> {esc(self.redactor.text(self.blocked))}</p>"
                  if self.blocked else "")
        body = (
            "<table class='rtbook-plan' style='border-collapse:collapse;text-align:left'><thead><tr><th>change</th>"
            f"<th>row</th><th>before</th><th>after</th><th>why</th></tr></thead><tbody>{rows}</tbody></table>"
            if self.changes else "<p>Nothing to change: the stored rows match the stack.</p>"
        )
        return (f"<h4>Tenant plan for <code>{esc(self.tenant)}</code> (dry run)</h4>{status}{body}"
                + (f"<ul>{notes}</ul>" if notes else ""))


def _myth_note(row: ExtensionRow) -> str:
    return (
        f"extension row {row.id} has type {row.type!r}. Realtime registers only postgres_cdc_rls; no "
        f"'broadcast' or 'presence' extension rows are seeded or needed (those words are values of "
        f"realtime.messages.extension in the tenant database). Extra rows can be picked by Realtime's "
        f"migrations/region lookup instead of the postgres_cdc_rls row."
    )


def _plan_for(state: MetadataState, exp: Expected, *, create: bool, limits: Mapping[str, int | bool],
              delete_extra: bool, redactor: Redactor) -> tuple[list[Change], list[str], str]:
    changes: list[Change] = []
    notes: list[str] = []
    tenant = exp.tenant
    if not state.readable:
        return [], [], ("the _realtime schema or its tables/columns are missing; see the tenant.schema check "
                        "(Realtime's migrations must run first)")
    for name in limits:
        if name not in state.tenant_columns:
            raise ConfigError(f"this Realtime version's _realtime.tenants has no column {name!r}; drop that --limit")
    row = state.tenant(tenant)
    if row is None:
        existing = ", ".join(t.external_id for t in state.tenants) or "none"
        if not create:
            notes.append(f"tenant {tenant!r} does not exist (tenants present: {existing}); plan with create=True "
                         "(rtbook tenant plan --create) to insert it")
            return [], notes, ""
        changes.extend(_insert_tenant(state, exp, limits, redactor))
        changes.append(_insert_extension(exp, redactor))
        return changes, notes, ""

    # ---- the tenant row
    sets: dict[str, Any] = {}
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    reasons: list[str] = []
    if exp.jwt_secret is None:
        if not exp.jwt_jwks:
            notes.append("API_JWT_SECRET is not set anywhere rtbook looked; the tenant's jwt_secret is not compared")
    elif exp.enc_key is None and not (exp.write_gcm and exp.gcm_key):
        notes.append("DB_ENC_KEY is not set; encrypted values can be neither compared nor written")
    elif _needs_gcm_key(row.jwt_secret, exp):
        notes.append(f"the stored jwt_secret {_GCM_NOTE}")
    else:
        plain, why = _decrypt(row.jwt_secret, exp)
        if row.jwt_secret is None:
            why = "no jwt_secret is stored"
        if plain is None or plain != exp.jwt_secret.reveal():
            reason = why or "the stored jwt_secret differs from API_JWT_SECRET"
            sets["jwt_secret"] = _encrypt(exp.jwt_secret.reveal(), exp, redactor)
            before["jwt_secret"] = f"{REDACTED} ({reason})"
            after["jwt_secret"] = f"{REDACTED} (API_JWT_SECRET, encrypted)"
            reasons.append(f"jwt_secret: {reason}")
    for name, value in limits.items():
        current = row.raw.get(name)
        if current != value:
            sets[name] = value
            before[name] = current
            after[name] = value
            reasons.append(f"{name}: requested {json.dumps(value)}")
    if sets:
        assignments = ", ".join(f"{c} = :{c}" for c in sets)
        changes.append(Change(
            "update", "tenants", tenant, before, after, "; ".join(reasons),
            _Statement(f"UPDATE {SCHEMA}.tenants SET {assignments}, updated_at = {_NOW} WHERE id = CAST(:_id AS uuid)",
                       {**sets, "_id": row.id}),
        ))

    # ---- extensions
    rows = state.extensions_of(tenant)
    cdc = [e for e in rows if e.type == CDC_TYPE]
    others = [e for e in rows if e.type != CDC_TYPE]
    keep: ExtensionRow | None = None
    if cdc:
        # Keep the row whose settings decrypt (else the oldest); the rest are duplicates.
        keep = next((e for e in cdc if _decrypt(e.encrypted_settings.get("db_host"), exp)[0] is not None), cdc[0])
    extra = [e for e in cdc if e is not keep] + others
    if keep is None:
        if _missing_for_insert(exp):
            notes.append("no postgres_cdc_rls extension row, and it cannot be created: set "
                         + ", ".join(_missing_for_insert(exp)))
        else:
            changes.append(_insert_extension(exp, redactor))
    else:
        update = _extension_update(keep, exp, redactor, notes)
        if update is not None:
            changes.append(update)
    for e in extra:
        label = "duplicate postgres_cdc_rls row" if e.type == CDC_TYPE else f"extra {e.type!r} row"
        if delete_extra or e.rtbook_created:
            why = "delete_extra was asked for" if delete_extra else "rtbook created it"
            changes.append(Change(
                "delete", "extensions", f"{tenant}/{e.type}/{e.id}", e.redacted(), None,
                f"{label}: Realtime needs exactly one postgres_cdc_rls row ({why})",
                _Statement(f"DELETE FROM {SCHEMA}.extensions WHERE id = CAST(:_id AS uuid)", {"_id": e.id}),
            ))
        else:
            note = _myth_note(e) if e.type in ("broadcast", "presence") else f"{label} {e.id}"
            notes.append(note + " Kept: rtbook did not create it; plan with delete_extra=True (--delete-extra) "
                         "to remove it.")
    return changes, notes, ""


def _missing_for_insert(exp: Expected) -> list[str]:
    missing = [SETTING_ENV[k] for k in ENCRYPTED_SETTINGS if exp.setting(k) is None]
    if exp.enc_key is None and not (exp.write_gcm and exp.gcm_key):
        missing.append("DB_ENC_KEY")
    return missing


def _insert_tenant(state: MetadataState, exp: Expected, limits: Mapping[str, int | bool],
                   redactor: Redactor) -> list[Change]:
    missing = _missing_for_insert(exp)
    if exp.jwt_secret is None and not exp.jwt_jwks:
        missing.append("API_JWT_SECRET")
    if missing:
        raise ConfigError(f"cannot create tenant {exp.tenant!r}: {', '.join(missing)} not set; set them in the "
                          "realtime service's environment (or the stack's .env / the target's env)")
    cols = set(state.tenant_columns)
    values: dict[str, Any] = {"id": str(uuid.uuid4()), "name": exp.tenant, "external_id": exp.tenant}
    shown: dict[str, Any] = dict(values)
    if exp.jwt_secret is not None:
        values["jwt_secret"] = _encrypt(exp.jwt_secret.reveal(), exp, redactor)
        shown["jwt_secret"] = f"{REDACTED} (API_JWT_SECRET, encrypted)"
    if exp.jwt_jwks and "jwt_jwks" in cols:
        values["jwt_jwks"] = exp.jwt_jwks
        shown["jwt_jwks"] = "(API_JWT_JWKS)"
    for column in _SEEDED_LIMITS:
        if column in cols:
            values[column] = exp.limits[column]
    for name, value in limits.items():
        values[name] = value
    shown.update({k: v for k, v in values.items() if k in LIMIT_COLUMNS or k in FLAG_COLUMNS})
    unfilled = [c for c in state.not_null_without_default if c not in values and c not in ("inserted_at", "updated_at")]
    if unfilled:
        raise ConfigError(f"cannot create tenant {exp.tenant!r}: _realtime.tenants has NOT NULL column(s) "
                          f"{', '.join(unfilled)} that rtbook does not know; create it through Realtime "
                          "(SEED_SELF_HOST=true or the admin API)")
    names = list(values)
    exprs = [f"CAST(:{n} AS jsonb)" if n == "jwt_jwks" else
             "CAST(:id AS uuid)" if n == "id" else f":{n}" for n in names]
    sql = (f"INSERT INTO {SCHEMA}.tenants ({', '.join(names)}, inserted_at, updated_at) "
           f"VALUES ({', '.join(exprs)}, {_NOW}, {_NOW})")
    return [Change("insert", "tenants", exp.tenant, None, shown, f"tenant {exp.tenant!r} does not exist",
                   _Statement(sql, values))]


def _insert_extension(exp: Expected, redactor: Redactor) -> Change:
    settings: dict[str, Any] = {}
    shown: dict[str, Any] = {}
    for key in ENCRYPTED_SETTINGS:
        value = exp.setting(key)
        if value is None:
            raise ConfigError(f"cannot create the postgres_cdc_rls row: {SETTING_ENV[key]} is not set")
        plain = value.reveal() if isinstance(value, Secret) else value
        settings[key] = _encrypt(plain, exp, redactor)
        shown[key] = REDACTED if key == "db_password" else f"{plain} (encrypted)"
    settings.update(PLAIN_SETTING_DEFAULTS)
    shown.update(PLAIN_SETTING_DEFAULTS)
    stamp = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    settings[MARKER_KEY] = stamp
    shown[MARKER_KEY] = stamp
    ext_id = str(uuid.uuid4())
    return Change(
        "insert", "extensions", f"{exp.tenant}/{CDC_TYPE}", None, {"id": ext_id, "type": CDC_TYPE, **shown},
        "the tenant has no postgres_cdc_rls row (Realtime needs exactly one)",
        _Statement(
            f"INSERT INTO {SCHEMA}.extensions (id, type, settings, tenant_external_id, inserted_at, updated_at) "
            f"VALUES (CAST(:id AS uuid), :type, CAST(:settings AS jsonb), :tenant, {_NOW}, {_NOW})",
            {"id": ext_id, "type": CDC_TYPE, "settings": settings, "tenant": exp.tenant},
        ),
    )


def _extension_update(row: ExtensionRow, exp: Expected, redactor: Redactor, notes: list[str]) -> Change | None:
    patch: dict[str, Any] = {}
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    reasons: list[str] = []
    can_encrypt = exp.enc_key is not None or (exp.write_gcm and exp.gcm_key is not None)
    for key in ENCRYPTED_SETTINGS:
        want = exp.setting(key)
        if want is None:
            notes.append(f"{SETTING_ENV[key]} is not set; settings.{key} is not compared")
            continue
        want_plain = want.reveal() if isinstance(want, Secret) else want
        stored = row.encrypted_settings.get(key)
        raw = row.raw.get("settings", {}).get(key) if isinstance(row.raw.get("settings"), Mapping) else None
        if key not in row.encrypted_settings:
            why = "missing"
            have: str | None = None
        elif stored is None:
            why = f"stored as {type(raw).__name__} {raw!r}, not an encrypted string" if key != "db_password" \
                else "not an encrypted string"
            have = None
        elif _needs_gcm_key(stored, exp):
            notes.append(f"settings.{key} {_GCM_NOTE}")
            continue
        else:
            have, why = _decrypt(stored, exp)
        if have == want_plain:
            continue
        if not can_encrypt:
            notes.append(f"settings.{key} needs rewriting but DB_ENC_KEY is not set")
            continue
        why = why or "differs from " + SETTING_ENV[key]
        patch[key] = _encrypt(want_plain, exp, redactor)
        secret = key == "db_password"
        if have is None:
            shown = REDACTED if stored is not None or secret else repr(raw)
            before[key] = f"{shown} ({why})"
        else:
            before[key] = REDACTED if secret else have
        after[key] = REDACTED if secret else want_plain
        reasons.append(f"{key}: {why}")
    for key, default in PLAIN_SETTING_DEFAULTS.items():
        if key == "ssl_enforced":
            continue  # absent means SSL on: a choice rtbook does not override
        value = row.plain_settings.get(key)
        invalid_int = key in _POSITIVE_INT_SETTINGS and (
            not isinstance(value, int) or isinstance(value, bool) or value <= 0
        )
        if value in (None, "") or invalid_int:
            patch[key] = default
            before[key] = value
            after[key] = default
            reasons.append(f"{key}: {'missing' if value is None else 'invalid'}, Realtime's default is {default!r}")
    if not patch:
        return None
    return Change(
        "update", "extensions", f"{exp.tenant}/{CDC_TYPE}/{row.id}", before, after, "; ".join(reasons),
        _Statement(
            f"UPDATE {SCHEMA}.extensions SET settings = settings || CAST(:patch AS jsonb), updated_at = {_NOW} "
            "WHERE id = CAST(:_id AS uuid)",
            {"patch": patch, "_id": row.id},
        ),
    )


def plan(
    target: Target,
    *,
    tenant: str | None = None,
    create: bool = False,
    limits: Mapping[str, Any] | Iterable[str] | None = None,
    delete_extra: bool = False,
) -> Plan:
    """Compare the stored tenant rows with the stack and return the changes that would align them.

    A dry run: nothing is written. ``create`` allows inserting a missing tenant (also an
    additional tenant in a multi-tenant setup); ``limits`` sets limit columns or flags
    (``{"max_concurrent_users": 500}`` or ``["max_concurrent_users=500"]``); ``delete_extra``
    allows deleting extension rows rtbook did not create.

    Raises:
        ConfigError: bad limits, or values needed to create a row are not set.
        ConnectionSetupError: the database cannot be reached.
    """
    wanted = parse_limits(limits)
    exp = expected(target, tenant)
    try:
        with connect(target) as conn:
            state = read_state(conn, target.redactor)
    except SQLAlchemyError as exc:
        problem = classify_db_error(exc, target)
        raise ConnectionSetupError(target.redactor.text(f"cannot read the tenant rows: {problem.summary} "
                                                        f"{problem.message} Fix: {problem.remedy}")) from None
    changes, notes, blocked = _plan_for(state, exp, create=create, limits=wanted, delete_extra=delete_extra,
                                        redactor=target.redactor)
    prior = []
    row = state.tenant(exp.tenant)
    if row is not None:
        prior.append({"table": "tenants", **row.redacted()})
    prior += [{"table": "extensions", **e.redacted()} for e in state.extensions_of(exp.tenant)]
    log.info("tenant plan for %s: %d change(s), %d note(s)", exp.tenant, len(changes), len(notes))
    return Plan(
        tenant=exp.tenant, changes=changes, notes=notes, fingerprint=state.fingerprint(exp.tenant),
        prior_rows=prior, blocked=blocked, target_name=target.name, redactor=target.redactor,
    )


# ------------------------------------------------------------------ apply


class _Abort(Exception):
    def __init__(self, summary: str, remedy: str, cause: str) -> None:
        super().__init__(summary)
        self.summary, self.remedy, self.cause = summary, remedy, cause


def _reveal(value: Any) -> Any:
    if isinstance(value, Secret):
        return value.reveal()
    if isinstance(value, Mapping):
        return json.dumps({k: _reveal(v) for k, v in value.items()})
    return value


StepHook = Callable[[int, Change, int], None]


def apply(target: Target, plan: Plan, *, yes: bool = False, on_step: StepHook | None = None) -> CheckResult:
    """Write ``plan`` in one transaction and return a redacted ``tenant.apply`` result.

    Refuses without ``yes=True``. Inside the transaction the tenant's rows are locked and
    compared with the plan's fingerprint; if anything changed since the plan, nothing is
    written. Any error rolls everything back. ``on_step(index, change, backend_pid)`` runs
    before each statement (a test hook: it may kill the connection).

    Raises:
        ConfirmationRequired: ``yes`` was not given.
    """
    return with_finding(_apply(target, plan, yes=yes, on_step=on_step)).redacted(target.redactor)


def _apply(target: Target, plan: Plan, *, yes: bool, on_step: StepHook | None) -> CheckResult:
    cid = "tenant.apply"
    if not yes:
        raise ConfirmationRequired(
            f"refusing to write {len(plan.changes)} change(s) to the tenant rows of {plan.tenant!r} without "
            "confirmation: pass yes=True (CLI: rtbook tenant apply --yes) after reading the plan"
        )
    evidence: dict[str, Any] = {"tenant": plan.tenant, "changes": [c.to_dict() for c in plan.changes],
                                "prior_rows": plan.prior_rows}
    if plan.blocked:
        return CheckResult(cid, Status.FAIL, summary=f"Nothing written: the plan is blocked: {plan.blocked}",
                           remedy="Fix what tenant.schema reports, then plan again.", evidence=evidence,
                           see_also=("tenant.schema",))
    if not plan.changes:
        return CheckResult(cid, Status.PASS, summary=f"Nothing to do for tenant {plan.tenant!r}: the rows already "
                           "match the stack.", evidence=evidence)
    try:
        with connect(target) as conn, conn.begin():
            pid = int(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar() or 0)
            current = read_state(conn, target.redactor, lock_tenant=plan.tenant)
            if current.fingerprint(plan.tenant) != plan.fingerprint:
                raise _Abort(
                    f"Nothing written: the rows of tenant {plan.tenant!r} changed since the plan was made.",
                    "Run the plan again (rtbook tenant plan), read it, and apply the new plan.",
                    "tenant.plan_stale",
                )
            evidence["prior_rows"] = [{"table": "tenants", **t.redacted()} for t in current.tenants] + [
                {"table": "extensions", **e.redacted()} for e in current.extensions]
            for index, change in enumerate(plan.changes):
                if on_step is not None:
                    on_step(index, change, pid)
                params = {k: _reveal(v) for k, v in change.statement.params.items()}
                result = conn.execute(sa.text(change.statement.sql), params)
                if result.rowcount != change.statement.rows:
                    raise _Abort(
                        f"Nothing written: {change.kind} on {change.table}[{change.key}] affected {result.rowcount} "
                        f"row(s) instead of {change.statement.rows}; the transaction was rolled back.",
                        "Run the plan again and apply the new plan.", "tenant.plan_stale",
                    )
    except _Abort as exc:
        log.warning("tenant apply for %s aborted: %s", plan.tenant, exc.cause)
        return CheckResult(cid, Status.FAIL, summary=exc.summary, remedy=exc.remedy, cause=exc.cause,
                           evidence=evidence)
    except (SQLAlchemyError, OSError) as exc:
        problem = classify_db_error(exc, target)
        log.warning("tenant apply for %s rolled back (%s)", plan.tenant, problem.kind)
        return CheckResult(
            cid, Status.FAIL,
            summary=f"Nothing written: the transaction failed and was rolled back ({problem.summary})",
            detail=f"Database said: {problem.message}", remedy=problem.remedy + " Then plan and apply again.",
            cause=f"db.{problem.kind}", evidence=evidence,
        )
    log.info("tenant apply for %s: %d change(s) committed", plan.tenant, len(plan.changes))
    target.cache.pop("rtbook.db.publication", None)
    return CheckResult(
        cid, Status.PASS,
        summary=f"Applied {len(plan.changes)} change(s) to tenant {plan.tenant!r} in one transaction; Realtime "
        "uses them after its tenant cache expires (about 30 s) or a restart.",
        detail="\n".join(str(c) for c in plan.changes)
        + "\nRealtime caches tenants for about 30 s; restart the realtime container to use the new values at once.",
        evidence=evidence,
    )
