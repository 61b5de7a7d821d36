"""Database checks (``db.*``) and the SQLAlchemy engine every live database check shares.

Realtime's postgres_changes depend on the database more than on Realtime itself: logical
decoding (``wal_level=logical`` and the wal2json plugin), a free replication slot per tenant (two
with broadcast-from-database), the ``supabase_realtime`` publication holding the tables, a
primary key and a useful REPLICA IDENTITY on each, and RLS policies that let each role SELECT
the rows it should receive. Each check here looks at one of those, says what it saw, and gives
the SQL that fixes it.

The engine is built from ``target.db_url`` (which never carries a password) with the password
from ``POSTGRES_PASSWORD`` (or ``DB_PASSWORD``) passed as a connect argument, so no URL or
message rtbook renders can contain it. Every connection has a connect timeout and a
``statement_timeout``/``lock_timeout`` derived from ``target.timeout``.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import NullPool

import rtbook.deadline as _deadline
from rtbook.exceptions import ConfigError
from rtbook.target import Target

__all__ = [
    "DEFAULT_PUBLICATION",
    "FINDING_CAUSES",
    "REALTIME_APPLICATION_NAMES",
    "SUPABASE_ROLES",
    "DbProblem",
    "TableInfo",
    "TableRef",
    "classify_db_error",
    "connect",
    "engine_for",
    "parse_table",
    "publication_tables",
    "quote_ident",
    "realtime_env",
    "realtime_value",
    "sql_url",
    "table_info",
]


ENGINE_KEY = "rtbook.db.engine"
PROBLEM_KEY = "rtbook.db.connect_problem"
PUBLICATION_KEY = "rtbook.db.publication"
DEFAULT_PUBLICATION = "supabase_realtime"
SUPABASE_ROLES = ("anon", "authenticated", "service_role")
# Realtime's pg_stat_activity application names (realtime-facts §4.7).
REALTIME_APPLICATION_NAMES = (
    "supabase_mt_realtime",
    "realtime_connect",
    "realtime_connect_probe",
    "realtime_rls",
    "realtime_subscription_manager",
    "realtime_subscription_manager_pub",
    "realtime_migrations",
    "realtime_replication_connection",
    "realtime_health_check",
    "realtime_janitor",
    "realtime_broadcast_changes",
    "realtime_replication_slot_teardown",
)
# A slot that keeps more WAL than this is worth a warning: it fills the disk of a small server.
SLOT_LAG_WARN_BYTES = 256 * 1024 * 1024


# ------------------------------------------------------------------ the stack's Realtime settings


def realtime_env(target: Target) -> Mapping[str, str]:
    """The realtime service's interpolated environment from the target's stack (empty without a stack)."""
    if target.stack is None:
        return {}
    service = target.stack.realtime_service()
    env = getattr(service, "environment", None) if service is not None else None
    if not isinstance(env, Mapping):
        return {}
    return {str(k): str(v) for k, v in env.items() if v is not None}


def realtime_value(target: Target, name: str) -> tuple[str | None, str]:
    """A Realtime setting and where it came from: the target's env, the realtime service, else any lookup."""
    if target.env.get(name):
        return target.env[name], "the target's env"
    service = realtime_env(target)
    if service.get(name):
        return service[name], "the realtime service's environment"
    found = target.lookup(name)
    if found:
        return found, "the environment"
    return None, ""


# ------------------------------------------------------------------ engine


def sql_url(target: Target) -> URL:
    """The SQLAlchemy URL (psycopg 3 driver, no password) for ``target.db_url``.

    Raises:
        ConfigError: no db_url, not a PostgreSQL URL, or a password inside it.
    """
    if not target.db_url:
        raise ConfigError("no database URL: " + target.why_missing("db"))
    try:
        url = make_url(target.db_url)
    except (ArgumentError, ValueError) as exc:  # ValueError: a port that is not a number
        raise ConfigError(
            f"db_url {target.db_url!r} is not a database URL; use postgresql://USER@HOST:PORT/DBNAME"
        ) from exc
    if url.password is not None or "password" in url.query:
        raise ConfigError(
            "db_url must not contain a password; remove it and set POSTGRES_PASSWORD in the environment "
            "or the stack's .env"
        )
    if url.get_backend_name() not in ("postgresql", "postgres"):
        raise ConfigError(
            f"db_url {url.render_as_string()!r} is not a PostgreSQL URL; use postgresql://USER@HOST:PORT/DBNAME"
        )
    return url.set(drivername="postgresql+psycopg")


def _password(target: Target) -> str | None:
    for name in ("POSTGRES_PASSWORD", "DB_PASSWORD"):
        found = target.secret(name)
        if found is not None:
            return found.reveal()
    return None


def engine_for(target: Target) -> Engine:
    """Return the target's engine, built once and kept in ``target.cache``.

    Connections are not pooled (NullPool): rtbook leaves no idle session on the user's database,
    and a test that restarts a cluster never meets a stale pooled connection.
    """
    cached = target.cache.get(ENGINE_KEY)
    if isinstance(cached, Engine):
        return cached
    url = sql_url(target)
    timeout_ms = max(1, int(target.timeout * 1000))
    connect_args: dict[str, Any] = {
        "connect_timeout": max(1, math.ceil(target.timeout)),
        "application_name": "rtbook",
    }
    password = _password(target)
    if password is not None:
        # As a connect argument, never in the URL: URL strings end up in reprs and tracebacks.
        connect_args["password"] = password
    engine = sa.create_engine(url, poolclass=NullPool, connect_args=connect_args)

    endpoint = f"postgresql://{url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"

    @sa.event.listens_for(engine, "do_connect")
    def _cap_connect(_dialect: Any, _record: Any, _cargs: Any, cparams: dict[str, Any]) -> None:
        # psycopg's connect_timeout bounds the whole login (it is not per read); inside a check it is
        # cut to what is left of the check's deadline (libpq's minimum is 2 s).
        left = _deadline.cap(target.timeout, endpoint, "a database connection")
        _deadline.note(endpoint, "a database connection")
        cparams["connect_timeout"] = max(1, math.ceil(left))

    def _guard(dbapi_conn: Any, record: Any) -> None:
        _guard_connection(dbapi_conn, record, endpoint, target)

    # Ahead of SQLAlchemy's own "connect" listener, which already runs statements on the first
    # connection (the dialect's version and settings queries).
    sa.event.listen(engine, "connect", _guard, insert=True)

    @sa.event.listens_for(engine, "connect")
    def _set_timeouts(dbapi_conn: Any, _record: Any) -> None:
        # SET rather than a startup "options" parameter: poolers such as Supavisor reject options.
        with dbapi_conn.cursor() as cur:
            cur.execute(f"SET statement_timeout = {timeout_ms}")
            cur.execute(f"SET lock_timeout = {timeout_ms}")
        dbapi_conn.commit()

    @sa.event.listens_for(engine, "close")
    def _unguard(_dbapi_conn: Any, record: Any) -> None:
        _release_guard(record)

    @sa.event.listens_for(engine, "handle_error")
    def _name_deadline(context: Any) -> BaseException | None:
        # A statement cut off because the check's deadline shut its socket down reads as
        # "server closed the connection"; say what really happened.
        spent = _deadline.spent()
        if spent is not None and not isinstance(context.original_exception, _deadline.DeadlineExceeded):
            return spent.exceeded(endpoint, "the answer to a statement")
        return None

    target.cache[ENGINE_KEY] = engine
    return engine


_GUARD_KEY = "rtbook_deadline_guard"
# target.cache key: the DeadlineExceeded of a database connection a check's deadline cut off.
STALLED_KEY = "rtbook.db.stalled"


def _guard_connection(dbapi_conn: Any, record: Any, endpoint: str, target: Target) -> None:
    """Inside a check: shut this connection's socket down when the check's deadline passes.

    PostgreSQL's statement_timeout bounds a statement only on a server that honours it; a peer that
    stops answering (or a proxy that holds the connection) is cut off by the deadline instead. The
    socket is duplicated so that the abort can never reach another socket that later reuses the
    number of this one after psycopg closed it. A database cut off this way is remembered in
    ``target.cache``: the run's later connections fail at once (:func:`connect`) instead of each
    waiting out its own check's deadline on the same silent server.
    """
    sc = _deadline.current()
    if sc is None or _GUARD_KEY in record.info:
        return
    try:
        dup = socket.socket(fileno=os.dup(dbapi_conn.pgconn.socket))
    except (OSError, AttributeError, ValueError):  # no socket to guard (closed already): nothing to abort
        return

    def abort() -> None:
        target.cache[STALLED_KEY] = sc.exceeded(endpoint, "the answer to a statement")
        dup.shutdown(socket.SHUT_RDWR)

    key = sc.enter(endpoint, "an answer from the database", abort)
    record.info[_GUARD_KEY] = (sc, key, dup)


def _release_guard(record: Any) -> None:
    held = record.info.pop(_GUARD_KEY, None)
    if held is None:
        return
    sc, key, dup = held
    sc.leave(key)
    with contextlib.suppress(OSError):
        dup.close()


def connect(target: Target) -> Connection:
    """Open a connection to the target's database (the caller closes it).

    Raises:
        DeadlineExceeded: an earlier check of this run found the database not answering (a
            TimeoutError, so callers treat it as the timeout it is).
    """
    stalled = target.cache.get(STALLED_KEY)
    if isinstance(stalled, _deadline.DeadlineExceeded):
        raise _deadline.DeadlineExceeded(stalled.label, stalled.seconds, stalled.endpoint, stalled.awaiting,
                                         stalled.elapsed)
    return engine_for(target).connect()


# ------------------------------------------------------------------ errors


@dataclass(frozen=True)
class DbProblem:
    """Why a database operation failed: a short kind, a sentence and the fix."""

    kind: str
    summary: str
    remedy: str
    message: str = ""


def _error_text(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc)
    # SQLAlchemy appends a background link and the SQL; keep the database's own words.
    text = text.split("\n(Background on this error", 1)[0]
    return " ".join(text.split())[:600]


# How libpq/PostgreSQL words each problem: (alternatives, each a set of fragments that must all be in the
# lowered message; kind; summary with {where} = " user@host:port/db" and {at} = the same without the space;
# remedy). First match wins, so the statement timeout comes before the generic timeout.
_DB_ERRORS: tuple[tuple[tuple[tuple[str, ...], ...], str, str, str], ...] = (
    ((("password authentication failed",), ("no password supplied",)), "auth",
     "The database refused the password for{where}.",
     "Set POSTGRES_PASSWORD (environment or the stack's .env) to the password of the user in --db-url."),
    ((("no pg_hba.conf entry",),), "hba",
     "pg_hba.conf has no entry allowing this connection ({at}).",
     "Add a host line for this client to pg_hba.conf (or connect from inside the compose network) "
     "and reload PostgreSQL."),
    ((("does not exist", "database"),), "no_database",
     "The database in --db-url does not exist ({at}).",
     "Use the database Realtime's DB_NAME names (postgres in the official compose)."),
    ((("role", "does not exist"),), "no_role",
     "The user in --db-url does not exist ({at}).",
     "Connect as supabase_admin or postgres (the users the official image creates)."),
    ((("could not translate host name",), ("name or service not known",)), "dns",
     "The host in --db-url does not resolve ({at}).",
     "Use an address reachable from where rtbook runs, e.g. 127.0.0.1 with the published port "
     "(the compose name 'db' only resolves inside the compose network)."),
    ((("connection refused",),), "refused",
     "Nothing accepts connections at{where}.",
     "Start the db service, or publish its port (ports: ['127.0.0.1:5432:5432']) and use that port."),
    ((("canceling statement due to statement timeout",), ("lock timeout",)), "statement_timeout",
     "A query ran longer than the statement timeout.",
     "Look for long transactions (pg_stat_activity where state = 'idle in transaction') or raise --timeout."),
    # Garbage, or another protocol, where PostgreSQL was expected (libpq's words for each).
    ((("invalid response to ssl negotiation",), ("received invalid response",), ("lost synchronization",),
      ("unexpected message type",), ("expected authentication request",), ("invalid message length",)),
     "protocol",
     "Something that is not PostgreSQL answered at{where}.",
     "Point --db-url at PostgreSQL's port (5432 in the official compose), not at Kong, Realtime or a proxy."),
    ((("timeout",), ("timed out",)), "timeout",
     "The database did not answer in time ({at}).",
     "Check the address and any firewall; raise --timeout if the database is just slow."),
    ((("permission denied",), ("must be superuser",)), "permission",
     "The user in --db-url lacks a privilege this check needs.",
     "Connect as supabase_admin (superuser in the official image)."),
)


def classify_db_error(exc: BaseException, target: Target | None = None) -> DbProblem:
    """Map a connection or query error to a cause and a remedy."""
    text = _error_text(exc)
    low = text.lower()
    where = ""
    if target is not None and target.db_url:
        try:
            url = sql_url(target)
            where = f" {url.username or ''}@{url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"
        except ConfigError:
            where = ""
    for alternatives, kind, summary, remedy in _DB_ERRORS:
        if any(all(part in low for part in parts) for parts in alternatives):
            return DbProblem(kind, summary.format(where=where, at=where.strip()), remedy, text)
    return DbProblem("other", "The database returned an error.", "Read the database's message in the detail.", text)


# rtbook's fine-grained finding ids -> the cause in rtbook.remedies ("" when none applies). Results
# carry the remedies id in ``cause`` and the finding in ``evidence["finding"]``.
FINDING_CAUSES: dict[str, str] = {
    "db.config": "", "db.auth": "", "db.hba": "", "db.no_database": "", "db.no_role": "", "db.permission": "",
    "db.other": "", "db.protocol": "",
    "db.refused": "unreachable", "db.dns": "unreachable", "db.timeout": "timeout", "db.statement_timeout": "",
    "db.wal_level_not_logical": "wal_level", "db.wal2json_missing": "wal2json_missing",
    "db.no_free_slots": "replication_capacity", "db.no_replication_privilege": "", "db.long_transaction": "",
    "db.slot_lost": "", "db.slot_idle": "",
    "db.publication_missing": "not_in_publication", "db.table_not_in_publication": "not_in_publication",
    "db.publication_empty": "not_in_publication",
    "db.no_primary_key": "no_primary_key", "db.replica_identity": "",
    "db.rls_no_policy": "rls_denies", "db.rls_no_privilege": "select_denied", "db.rls_off": "rls_leaks",
    "db.table_missing": "", "db.realtime_not_connected": "",
    "tenant.relation_tenants_missing": "realtime_schema_missing", "tenant.schema_unknown": "realtime_schema_missing",
    "tenant.not_found": "tenant_not_found", "tenant.extension_count": "tenant_db_unreachable",
    "tenant.jwt_secret_missing": "jwt_signer", "tenant.jwt_secret_plaintext": "jwt_signature",
    "tenant.jwt_secret_wrong_key": "jwt_signature", "tenant.jwt_secret_mismatch": "jwt_signature",
    "tenant.db_settings_mismatch": "tenant_db_unreachable", "tenant.suspended": "tenant_suspended",
    "tenant.private_only": "private_only", "tenant.limits": "", "tenant.plan_stale": "",
}


# ------------------------------------------------------------------ tables


_IDENT = re.compile(r"^[a-z_][a-z0-9_$]*$")


def quote_ident(name: str) -> str:
    """Quote a SQL identifier only when it needs it (for remedies people copy and paste)."""
    return name if _IDENT.match(name) else '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class TableRef:
    """A ``schema.table`` name."""

    schema: str
    name: str

    @property
    def sql(self) -> str:
        """The quoted name for SQL."""
        return f"{quote_ident(self.schema)}.{quote_ident(self.name)}"

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}"


def parse_table(text: str) -> TableRef:
    """Parse ``schema.table`` (or ``table``, meaning ``public.table``).

    Raises:
        ConfigError: empty or more than two dotted parts.
    """
    raw = text.strip()
    parts = [p.strip().strip('"') for p in raw.split(".")]
    if not raw or len(parts) > 2 or not all(parts):
        raise ConfigError(f"table {text!r} is not a table name; use schema.table, e.g. public.todos")
    return TableRef("public", parts[0]) if len(parts) == 1 else TableRef(parts[0], parts[1])


@dataclass(frozen=True)
class TableInfo:
    """What the catalogue says about one table."""

    ref: TableRef
    exists: bool
    kind: str = ""
    replica_identity: str = ""  # d default, f full, n nothing, i index
    rls: bool = False
    force_rls: bool = False
    primary_key: tuple[str, ...] = ()
    in_publication: bool = False
    privileges: dict[str, bool] = field(default_factory=dict)


def _publication_name(target: Target, conn: Connection | None = None) -> str:
    """The publication Realtime uses: the tenant's ``publication`` setting, else ``supabase_realtime``."""
    cached = target.cache.get(PUBLICATION_KEY)
    if isinstance(cached, str):
        return cached
    name = DEFAULT_PUBLICATION
    if conn is not None and conn.execute(sa.text("SELECT to_regclass('_realtime.extensions')")).scalar():
        found = conn.execute(
            sa.text("SELECT settings->>'publication' FROM _realtime.extensions "
                    "WHERE type = 'postgres_cdc_rls' AND tenant_external_id = :t"),
            {"t": target.resolved_tenant()},
        ).scalars().first()
        if isinstance(found, str) and found:
            name = found
        target.cache[PUBLICATION_KEY] = name
    return name


def publication_tables(conn: Connection, publication: str) -> list[TableRef] | None:
    """Tables in ``publication``, or None when the publication does not exist."""
    exists = conn.execute(sa.text("SELECT 1 FROM pg_publication WHERE pubname = :p"), {"p": publication}).first()
    if exists is None:
        return None
    rows = conn.execute(
        sa.text("SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = :p ORDER BY 1, 2"),
        {"p": publication},
    ).all()
    return [TableRef(r[0], r[1]) for r in rows]


def _tables_to_check(conn: Connection, target: Target) -> tuple[list[TableRef], str]:
    if target.tables:
        return [parse_table(t) for t in target.tables], (target.tables_from or "the tables you named")
    pub = _publication_name(target, conn)
    return publication_tables(conn, pub) or [], f"every table in the {pub} publication"


def table_info(conn: Connection, ref: TableRef, publication: str = DEFAULT_PUBLICATION) -> TableInfo:
    """Read one table's replica identity, RLS flags, primary key and role privileges."""
    row = conn.execute(
        sa.text(
            """
            SELECT c.oid, c.relkind, c.relreplident, c.relrowsecurity, c.relforcerowsecurity,
                   EXISTS (SELECT 1 FROM pg_publication_tables pt
                           WHERE pt.pubname = :pub AND pt.schemaname = n.nspname AND pt.tablename = c.relname)
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = :s AND c.relname = :t AND c.relkind IN ('r', 'p')
            """
        ),
        {"s": ref.schema, "t": ref.name, "pub": publication},
    ).first()
    if row is None:
        return TableInfo(ref, exists=False)
    oid = row[0]
    pk = conn.execute(
        sa.text(
            """
            SELECT a.attname FROM pg_index i
            JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true
            JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
            WHERE i.indrelid = :oid AND i.indisprimary ORDER BY k.ord
            """
        ),
        {"oid": oid},
    ).scalars().all()
    privileges: dict[str, bool] = {}
    for role in SUPABASE_ROLES:
        got = conn.execute(
            sa.text(
                "SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :r) "
                "THEN has_table_privilege(:r, CAST(:oid AS oid), 'SELECT') END"
            ),
            {"r": role, "oid": oid},
        ).scalar()
        if got is not None:
            privileges[role] = bool(got)
    return TableInfo(
        ref, True, kind=str(row[1]), replica_identity=str(row[2]), rls=bool(row[3]), force_rls=bool(row[4]),
        primary_key=tuple(str(c) for c in pk), in_publication=bool(row[5]), privileges=privileges,
    )
