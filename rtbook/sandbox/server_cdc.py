"""postgres_changes for the Realtime-compatible server: wal2json polling, filters and RLS.

Like Realtime's ``postgres_cdc_rls`` extension, a temporary logical slot with the wal2json
plugin is read with ``pg_logical_slot_get_changes`` (format-version 2, only the publication's
tables), each change is matched against the subscribers' bindings and filters, and for tables
with RLS enabled (except DELETE) the row is re-read by primary key as the subscriber's role with
its JWT claims, so a subscriber only receives rows it could SELECT.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import psycopg
from psycopg import sql

from rtbook.sandbox.server_tenants import Tenant

__all__ = [
    "Binding",
    "CdcPoller",
    "Filter",
    "binding_id",
    "check_subscription",
    "make_binding",
    "parse_filter",
    "wal_to_change",
]

log = logging.getLogger("rtbook.sandbox.server")

OPS = ("eq", "neq", "lt", "lte", "gt", "gte", "in")
EVENTS = ("*", "INSERT", "UPDATE", "DELETE")


@dataclass(frozen=True)
class Filter:
    """A parsed ``column=op.value`` filter."""

    column: str
    op: str
    value: str | tuple[str, ...]

    def text(self) -> str:
        """Realtime's rendering in error messages."""
        return f"{self.column}={self.op}.{self.value}"


def parse_filter(text: str) -> Filter:
    """Parse ``col=op.value`` (``in.(a,b)`` for lists).

    Raises:
        ValueError: the text is not a filter Realtime understands.
    """
    column, sep, rest = text.partition("=")
    op, dot, value = rest.partition(".")
    if not sep or not dot or not column or op not in OPS:
        raise ValueError(f"Error parsing `filter` params: {text}")
    if op == "in":
        inner = value.strip()
        if not (inner.startswith("(") and inner.endswith(")")):
            raise ValueError(f"Error parsing `filter` params: {text}")
        items = tuple(v.strip().strip('"') for v in inner[1:-1].split(",") if v.strip())
        return Filter(column.strip(), op, items)
    return Filter(column.strip(), op, value)


def binding_id(raw: dict[str, Any]) -> int:
    """A stable integer id per binding (Realtime uses ``:erlang.phash2``, range 0..2^27)."""
    return zlib.crc32(json.dumps(raw, sort_keys=True, separators=(",", ":")).encode()) & 0x7FFFFFF


@dataclass
class Binding:
    """One ``config.postgres_changes`` entry of a join."""

    id: int
    event: str
    schema: str
    table: str | None
    filter: Filter | None
    raw: dict[str, Any]

    def matches(self, schema: str, table: str, action: str) -> bool:
        """True when the change's relation and type are covered by this binding."""
        if self.event not in ("*", action):
            return False
        if self.schema not in ("*", schema):
            return False
        return self.table in (None, "*", table)

    def params_text(self) -> str:
        """``[event: *, schema: public, table: todos, filters: []]`` as in Realtime's error text."""
        filters = f"[{{{self.filter.column!r}, {self.filter.op!r}, {self.filter.value!r}}}]" if self.filter else "[]"
        return f"[event: {self.event}, schema: {self.schema}, table: {self.table or '*'}, filters: {filters}]"


def make_binding(raw: dict[str, Any]) -> Binding:
    """Turn a join payload binding into a :class:`Binding` (the id hashes the raw map).

    Raises:
        ValueError: the filter cannot be parsed.
    """
    event = str(raw.get("event", "*")).upper()
    if event not in EVENTS:
        event = "*"
    schema = raw.get("schema")
    table = raw.get("table")
    if not schema:
        schema = "public"
    filt = parse_filter(str(raw["filter"])) if raw.get("filter") else None
    return Binding(
        id=binding_id(raw),
        event=event,
        schema=str(schema),
        table=str(table) if table else None,
        filter=filt,
        raw=raw,
    )


class CdcSubscriber(Protocol):
    """What the poller needs from a channel."""

    bindings: list[Binding]
    cdc_ready: bool

    @property
    def claims(self) -> dict[str, Any]: ...

    def push_postgres_changes(self, payload: dict[str, Any]) -> None: ...


async def check_subscription(conn: psycopg.AsyncConnection[Any], publication: str, binding: Binding) -> str | None:
    """Return Realtime's error text when the binding cannot be subscribed, else None."""
    schema_pat = binding.schema.replace("*", "%")
    table_pat = (binding.table or "*").replace("*", "%")
    cur = await conn.execute(
        "SELECT schemaname, tablename FROM pg_publication_tables "
        "WHERE pubname = %s AND schemaname LIKE %s AND tablename LIKE %s",
        (publication, schema_pat, table_pat),
    )
    rows = await cur.fetchall()
    params = binding.params_text()
    if not rows:
        return (
            "Unable to subscribe to changes with given parameters. Please check Realtime is enabled for the "
            f"given connect parameters: {params}"
        )
    if binding.filter is not None:
        for schema, table in rows:
            cur = await conn.execute(
                "SELECT 1 FROM pg_attribute WHERE attrelid = format('%%I.%%I', %s::text, %s::text)::regclass "
                "AND attname = %s AND NOT attisdropped AND attnum > 0",
                (schema, table, binding.filter.column),
            )
            if await cur.fetchone() is None:
                return (
                    "Unable to subscribe to changes with given parameters. An exception happened so please check "
                    f"your connect parameters: {params}. Exception: ERROR P0001 (raise_exception) "
                    f"invalid column for filter {binding.filter.column}"
                )
    return None


# --------------------------------------------------------------------------------------------
# wal2json -> Realtime payload


def _commit_timestamp(text: str | None) -> str:
    if not text:
        stamp = datetime.now(UTC)
    else:
        value = text.strip()
        if len(value) >= 3 and value[-3] in "+-" and value[-2:].isdigit():
            value += ":00"
        stamp = datetime.fromisoformat(value.replace(" ", "T", 1)).astimezone(UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def _json_value(value: Any, typname: str) -> Any:
    # Realtime builds records with to_jsonb(), which renders timestamps in ISO 8601.
    if isinstance(value, str) and typname in ("timestamptz", "timestamp"):
        out = value.replace(" ", "T", 1)
        if typname == "timestamptz" and len(out) >= 3 and out[-3] in "+-" and out[-2:].isdigit():
            out += ":00"
        return out
    return value


@dataclass
class Change:
    """One decoded row change, in Realtime's shape before per-subscriber filtering."""

    schema: str
    table: str
    type: str
    commit_timestamp: str
    columns: list[dict[str, str]]
    record: dict[str, Any] | None
    old_record: dict[str, Any] | None
    pk: list[tuple[str, str]]  # (name, sql type)
    errors: list[str] | None = None
    pk_values: dict[str, Any] = field(default_factory=dict)

    def payload(self, ids: list[int], *, pk_only_old: bool = False) -> dict[str, Any]:
        """The ``postgres_changes`` push payload for one subscriber."""
        data: dict[str, Any] = {
            "schema": self.schema,
            "table": self.table,
            "commit_timestamp": self.commit_timestamp,
            "type": self.type,
            "columns": self.columns,
            "errors": self.errors,
        }
        if self.type in ("INSERT", "UPDATE"):
            data["record"] = self.record or {}
        if self.type in ("UPDATE", "DELETE"):
            old = self.old_record or {}
            if pk_only_old:
                names = {n for n, _ in self.pk}
                old = {k: v for k, v in old.items() if k in names}
            data["old_record"] = old
        return {"ids": ids, "data": data}


_ACTIONS = {"I": "INSERT", "U": "UPDATE", "D": "DELETE"}


def wal_to_change(wal: dict[str, Any], typnames: dict[int, str]) -> Change | None:
    """Convert one wal2json format-version 2 record; None for B/C/T/M records."""
    action = _ACTIONS.get(str(wal.get("action")))
    if action is None:
        return None

    def typ(col: dict[str, Any]) -> str:
        oid = col.get("typeoid")
        return typnames.get(int(oid), str(col.get("type"))) if oid is not None else str(col.get("type"))

    cols = wal.get("columns") or []
    ident = wal.get("identity") or []
    described = cols or ident
    columns = [{"name": str(c["name"]), "type": typ(c)} for c in described]
    record = {str(c["name"]): _json_value(c.get("value"), typ(c)) for c in cols} if cols else None
    old = {str(c["name"]): _json_value(c.get("value"), typ(c)) for c in ident} if ident else None
    pk = [(str(p["name"]), str(p["type"])) for p in (wal.get("pk") or [])]
    change = Change(
        schema=str(wal.get("schema")),
        table=str(wal.get("table")),
        type=action,
        commit_timestamp=_commit_timestamp(wal.get("timestamp")),
        columns=columns,
        record=record,
        old_record=old,
        pk=pk,
    )
    if action == "UPDATE" and change.old_record is None and record is not None:
        # Default replica identity without a key change: the identity is the primary key.
        change.old_record = {n: record.get(n) for n, _ in pk}
    source = record if record is not None else (old or {})
    change.pk_values = {n: source.get(n) for n, _ in pk}
    if not pk:
        change.errors = ["Error 400: Bad Request, no primary key"]
        change.record = {} if record is not None else None
        change.old_record = {} if change.old_record is not None else None
    return change


def _compare(actual: Any, op: str, expected: str | tuple[str, ...]) -> bool:
    if actual is None:
        return False

    def coerce(text: str) -> Any:
        if isinstance(actual, bool):
            return text.strip().lower() in ("true", "t", "1", "yes", "on")
        if isinstance(actual, int | float):
            try:
                return float(text)
            except ValueError:
                return None
        return text

    left: Any = float(actual) if isinstance(actual, int | float) and not isinstance(actual, bool) else actual
    if op == "in":
        assert isinstance(expected, tuple)
        return any(left == coerce(v) for v in expected)
    assert isinstance(expected, str)
    right = coerce(expected)
    if right is None:
        return False
    try:
        if op == "eq":
            return bool(left == right)
        if op == "neq":
            return bool(left != right)
        if op == "lt":
            return bool(left < right)
        if op == "lte":
            return bool(left <= right)
        if op == "gt":
            return bool(left > right)
        if op == "gte":
            return bool(left >= right)
    except TypeError:
        return False
    return False


def filter_matches(binding: Binding, change: Change) -> bool:
    """Evaluate the binding's filter on the new record (INSERT/UPDATE) or the old identity (DELETE)."""
    if binding.filter is None:
        return True
    row = change.old_record if change.type == "DELETE" else change.record
    if not row or binding.filter.column not in row:
        return False
    return _compare(row[binding.filter.column], binding.filter.op, binding.filter.value)


# --------------------------------------------------------------------------------------------
# The poller


class CdcPoller:
    """Polls one tenant's slot while any channel has postgres_changes bindings."""

    def __init__(
        self,
        tenant: Callable[[], Tenant],
        subscribers: Callable[[], Iterable[CdcSubscriber]],
        *,
        slot_suffix: str,
        poll_interval_ms: int | None,
        allow_event: Callable[[], bool],
    ) -> None:
        self._tenant = tenant
        self._subscribers = subscribers
        self._slot_suffix = slot_suffix
        self._poll_interval_ms = poll_interval_ms
        self._allow_event = allow_event
        self._task: asyncio.Task[None] | None = None
        self._typnames: dict[int, str] = {}
        self._rls: dict[str, tuple[float, bool]] = {}
        self.slot_name = ""
        self._prepared = asyncio.Event()
        self.connected = False
        self.last_error: str | None = None

    @property
    def running(self) -> bool:
        """True while the polling task is alive."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start polling (no-op when already running)."""
        if not self.running:
            self._prepared.clear()
            self._task = asyncio.create_task(self._run(), name="cdc-poller")

    async def wait_prepared(self, timeout: float) -> None:
        """Wait until the slot exists, or the first attempt to create it has failed."""
        with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
            await asyncio.wait_for(self._prepared.wait(), timeout)

    async def stop(self) -> None:
        """Stop polling; the temporary slot goes with the connection."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _interval(self, tenant: Tenant) -> float:
        if self._poll_interval_ms is not None:
            return self._poll_interval_ms / 1000
        try:
            return int(tenant.settings.get("poll_interval_ms", 100)) / 1000
        except (TypeError, ValueError):
            return 0.1

    async def _run(self) -> None:
        backoff = 0.1
        failures = 0
        while True:
            if not any(s.bindings for s in self._subscribers()):
                return
            tenant = self._tenant()
            base = str(tenant.settings.get("slot_name") or "supabase_realtime_replication_slot")
            self.slot_name = f"{base}_{self._slot_suffix}"
            stage = "PoolingReplicationPreparationError"
            try:
                async with await psycopg.AsyncConnection.connect(
                    tenant.conninfo("realtime_rls"), autocommit=True
                ) as conn:
                    await self._prepare_slot(conn, failures)
                    self._prepared.set()
                    self.connected = True
                    self.last_error = None
                    stage = "PoolingReplicationError"
                    backoff, failures = 0.1, 0
                    while any(s.bindings for s in self._subscribers()):
                        delivered = await self._poll_once(conn, tenant)
                        if delivered == 0:
                            await asyncio.sleep(self._interval(tenant))
                        tenant = self._tenant()
                    return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # every failure is logged and retried, as Realtime does
                self.connected = False
                failures += 1
                self.last_error = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                log.error("%s: %s", stage, self.last_error)
                self._prepared.set()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                self.connected = False

    async def _prepare_slot(self, conn: psycopg.AsyncConnection[Any], failures: int) -> None:
        cur = await conn.execute(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (self.slot_name,)
        )
        row = await cur.fetchone()
        if row is not None:
            if row[0] is not None:
                if failures > 3:
                    await conn.execute("SELECT pg_terminate_backend(%s)", (row[0],))
                raise RuntimeError(
                    f'ReplicationSlotBeingUsed: replication slot "{self.slot_name}" is active for PID {row[0]}'
                )
            await conn.execute("SELECT pg_drop_replication_slot(%s)", (self.slot_name,))
        await conn.execute(
            "SELECT pg_create_logical_replication_slot(%s, 'wal2json', true)", (self.slot_name,)
        )

    async def _publication_tables(self, conn: psycopg.AsyncConnection[Any], publication: str) -> tuple[set[str], str]:
        cur = await conn.execute(
            "SELECT p.pubinsert, p.pubupdate, p.pubdelete, "
            "coalesce(array_agg(format('%%s.%%s', t.schemaname, t.tablename)) "
            "FILTER (WHERE t.tablename IS NOT NULL), '{}') "
            "FROM pg_publication p LEFT JOIN pg_publication_tables t ON t.pubname = p.pubname "
            "WHERE p.pubname = %s GROUP BY 1, 2, 3",
            (publication,),
        )
        row = await cur.fetchone()
        if row is None:
            return set(), "insert,update,delete"
        actions = ",".join(a for a, on in zip(("insert", "update", "delete"), row[:3], strict=True) if on)
        return set(row[3]), actions or "none"

    async def _poll_once(self, conn: psycopg.AsyncConnection[Any], tenant: Tenant) -> int:
        tables, actions = await self._publication_tables(conn, tenant.publication)
        max_changes = int(tenant.settings.get("poll_max_changes") or 100)
        args: list[Any] = [
            self.slot_name, max_changes,
        ]
        options = [
            "include-pk", "true", "include-transaction", "false", "include-timestamp", "true",
            "include-type-oids", "true", "format-version", "2",
        ]
        if actions != "none":
            options += ["actions", actions]
        if tables:
            escaped = ",".join(
                ".".join(part.replace("\\", "\\\\").replace(",", "\\,").replace("*", "\\*") for part in t.split(".", 1))
                for t in sorted(tables)
            )
            options += ["add-tables", escaped]
        placeholders = ", ".join(["%s"] * len(options))
        cur = await conn.execute(
            f"SELECT data FROM pg_logical_slot_get_changes(%s, NULL, %s, {placeholders})",
            (*args, *options),
        )
        rows = await cur.fetchall()
        if not rows:
            return 0
        delivered = 0
        for (data,) in rows:
            try:
                wal = json.loads(data)
            except ValueError:
                continue
            if f"{wal.get('schema')}.{wal.get('table')}" not in tables:
                continue
            await self._ensure_typnames(conn, wal)
            change = wal_to_change(wal, self._typnames)
            if change is None:
                continue
            if not self._allow_event():
                log.warning("MessagePerSecondRateLimitReached: postgres_changes dropped for tenant over the limit")
                continue
            await self._dispatch(conn, tenant, change)
            delivered += 1
        return len(rows) if delivered == 0 else delivered

    async def _ensure_typnames(self, conn: psycopg.AsyncConnection[Any], wal: dict[str, Any]) -> None:
        oids = {
            int(c["typeoid"])
            for key in ("columns", "identity")
            for c in (wal.get(key) or [])
            if c.get("typeoid") is not None and int(c["typeoid"]) not in self._typnames
        }
        if oids:
            cur = await conn.execute("SELECT oid::int, typname::text FROM pg_type WHERE oid = ANY(%s)", (list(oids),))
            for oid, name in await cur.fetchall():
                self._typnames[int(oid)] = str(name)

    async def _rls_enabled(self, conn: psycopg.AsyncConnection[Any], schema: str, table: str) -> bool:
        key = f"{schema}.{table}"
        hit = self._rls.get(key)
        if hit is not None and time.monotonic() - hit[0] < 1.0:
            return hit[1]
        cur = await conn.execute(
            "SELECT relrowsecurity FROM pg_class WHERE oid = format('%%I.%%I', %s::text, %s::text)::regclass",
            (schema, table),
        )
        row = await cur.fetchone()
        enabled = bool(row and row[0])
        self._rls[key] = (time.monotonic(), enabled)
        return enabled

    async def _visible(
        self, conn: psycopg.AsyncConnection[Any], change: Change, claims: dict[str, Any]
    ) -> bool:
        role = str(claims.get("role") or "anon")
        where = sql.SQL(" AND ").join(
            sql.SQL("{} = %s::{}").format(sql.Identifier(name), sql.SQL(typ)) for name, typ in change.pk
        )
        query = sql.SQL("SELECT 1 FROM {}.{} WHERE {}").format(
            sql.Identifier(change.schema), sql.Identifier(change.table), where
        )
        values = [
            json.dumps(change.pk_values.get(n)) if isinstance(change.pk_values.get(n), bool | dict | list)
            else (None if change.pk_values.get(n) is None else str(change.pk_values.get(n)))
            for n, _ in change.pk
        ]
        visible = False
        try:
            async with conn.transaction():
                await conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
                await conn.execute(
                    "SELECT set_config('request.jwt.claims', %s, true), "
                    "set_config('request.jwt.claim.role', %s, true), "
                    "set_config('request.jwt.claim.sub', %s, true)",
                    (json.dumps(claims), role, str(claims.get("sub") or "")),
                )
                cur = await conn.execute(query, values)
                visible = await cur.fetchone() is not None
                raise psycopg.Rollback()
        except psycopg.Error as exc:
            log.warning("RlsCheckFailed: %s", str(exc).strip().splitlines()[0] if str(exc).strip() else exc)
            return False
        return visible

    async def _dispatch(self, conn: psycopg.AsyncConnection[Any], tenant: Tenant, change: Change) -> None:
        targets: list[tuple[CdcSubscriber, list[int]]] = []
        for sub in self._subscribers():
            if not sub.cdc_ready:
                continue
            ids = [
                b.id for b in sub.bindings
                if b.matches(change.schema, change.table, change.type) and filter_matches(b, change)
            ]
            if ids:
                targets.append((sub, ids))
        if not targets:
            return
        rls = await self._rls_enabled(conn, change.schema, change.table)
        verdicts: dict[str, bool] = {}
        for sub, ids in targets:
            if rls and change.type != "DELETE" and change.pk:
                key = json.dumps(sub.claims, sort_keys=True)
                if key not in verdicts:
                    verdicts[key] = await self._visible(conn, change, sub.claims)
                if not verdicts[key]:
                    continue
            sub.push_postgres_changes(change.payload(ids, pk_only_old=rls and change.type == "DELETE"))
