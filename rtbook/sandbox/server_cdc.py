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
import random
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import psycopg
from psycopg import sql

from rtbook.exceptions import RtbookError
from rtbook.sandbox.server_log import Atom, emit, inspect, inspect_pg_error
from rtbook.sandbox.server_tenants import Tenant
from rtbook.sandbox.server_version import NEWEST_READ, RealtimeBehaviour, Timers

__all__ = [
    "Binding",
    "CdcWorkers",
    "Filter",
    "SubscribeError",
    "binding_id",
    "check_subscription",
    "make_binding",
    "parse_filter",
    "wal_to_change",
]

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

    def tuple_text(self, negate: bool) -> str:
        """``{"col", "eq", "1"}`` (and ``, false`` from v2.112.0), as Elixir inspects the filter tuple."""
        value = "{" + ",".join(self.value) + "}" if isinstance(self.value, tuple) else self.value
        parts = [inspect(self.column), inspect(self.op), inspect(value)]
        if negate:
            parts.append("false")
        return "{" + ", ".join(parts) + "}"


def parse_filter(text: str) -> Filter:
    """Parse ``col=op.value`` (``in.(a,b)`` for lists).

    Raises:
        ValueError: the text is not a filter Realtime understands; the message is Realtime's
            ``Error parsing `filter` params: <inspected step>`` (e.g. ``["foo"]``).
    """
    column, sep, rest = text.partition("=")
    if not sep:
        raise ValueError(f"Error parsing `filter` params: {inspect([text])}")
    op, dot, value = rest.partition(".")
    if not dot or op not in OPS:
        raise ValueError(f"Error parsing `filter` params: {inspect([op, value] if dot else [rest])}")
    if op == "in":
        inner = value.strip()
        if not (inner.startswith("(") and inner.endswith(")")):
            raise ValueError(f"Error parsing `filter` params: {inspect([op, value])}")
        items = tuple(v.strip().strip('"') for v in inner[1:-1].split(",") if v.strip())
        return Filter(column, op, items)
    return Filter(column, op, value)


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

    def params_text(self, behaviour: RealtimeBehaviour | None = None) -> str:
        """``[event: *, schema: public, table: todos, filters: []]`` as in Realtime's error text.

        From v2.112.0 a filter is a 4-tuple (the negation flag) and from v2.101.0 ``, select: nil`` follows.
        """
        b = behaviour or RealtimeBehaviour.of(NEWEST_READ)
        filters = f"[{self.filter.tuple_text(b.cdc_filters_negate)}]" if self.filter else "[]"
        text = f"[event: {self.event}, schema: {self.schema}, table: {self.table or '*'}, filters: {filters}"
        if b.cdc_params_select:
            select = self.raw.get("select")
            cols = [c for c in select if isinstance(c, str)] if isinstance(select, list) else []
            text += f", select: {inspect(cols) if cols else 'nil'}"
        return text + "]"


def make_binding(raw: dict[str, Any]) -> Binding:
    """Turn a join payload binding into a :class:`Binding` (the id hashes the raw map).

    Raises:
        ValueError: the params cannot be parsed (Realtime's ``parse_subscription_params`` texts).
    """
    event = str(raw.get("event", "*")).upper()
    if event not in EVENTS:
        event = "*"
    schema = raw.get("schema")
    table = raw.get("table")
    has_filter = "filter" in raw
    if isinstance(schema, str) and isinstance(table, str):
        pass
    elif isinstance(schema, str) and "table" not in raw and not has_filter:
        table = "*"
    elif isinstance(table, str) and "schema" not in raw and not has_filter:
        schema = "public"
    else:
        shown = "<redacted>" if ("user_token" in raw or "auth_token" in raw) else _inspect_map(raw)
        raise ValueError(
            "No subscription params provided. Please provide at least a `schema` or `table` to subscribe to: "
            + shown
        )
    filt = parse_filter(str(raw["filter"])) if isinstance(raw.get("filter"), str) else None
    return Binding(
        id=binding_id(raw),
        event=event,
        schema=str(schema),
        table=str(table) if table else None,
        filter=filt,
        raw=raw,
    )


def _inspect_map(raw: dict[str, Any]) -> str:
    items = ", ".join(f"{inspect(str(k))} => {inspect(v)}" for k, v in sorted(raw.items()))
    return "%{" + items + "}"


class CdcSubscriber(Protocol):
    """What the CDC workers need from a channel."""

    bindings: list[Binding]

    @property
    def claims(self) -> dict[str, Any]: ...

    def push_postgres_changes(self, payload: dict[str, Any]) -> None: ...

    def request_postgres_subscribe(self, times: int) -> None: ...


class SubscribeError(Exception):
    """A subscription could not be created; ``retry`` says whether Realtime tries again (5–10 s later)."""

    def __init__(self, message: str, *, retry: bool) -> None:
        super().__init__(message)
        self.message = message
        self.retry = retry


async def check_subscription(
    conn: psycopg.AsyncConnection[Any], publication: str, binding: Binding,
    behaviour: RealtimeBehaviour | None = None,
) -> tuple[str | None, set[tuple[str, str]]]:
    """Realtime's error text when the binding cannot be subscribed (else None), and the published tables it covers.

    Stands in for ``Subscriptions.create``'s insert into ``realtime.subscription`` and the
    ``subscription_check_filters`` trigger: 0 rows when no published table matches, the exception
    variant when a filter column does not exist. Like the rows Realtime inserts (one per table, by oid),
    the covered tables are fixed here: a table added to the publication later is only covered after the
    subscription manager's resubscribe.
    """
    schema_pat = binding.schema.replace("*", "%")
    table_pat = (binding.table or "*").replace("*", "%")
    cur = await conn.execute(
        "SELECT schemaname, tablename FROM pg_publication_tables "
        "WHERE pubname = %s AND schemaname LIKE %s AND tablename LIKE %s",
        (publication, schema_pat, table_pat),
    )
    rows = await cur.fetchall()
    params = binding.params_text(behaviour)
    entities = {(str(schema), str(table)) for schema, table in rows}
    if not rows:
        return (
            "Unable to subscribe to changes with given parameters. Please check Realtime is enabled for the "
            f"given connect parameters: {params}"
        ), entities
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
                ), entities
    return None, entities


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


@dataclass
class Registration:
    """Rows of ``realtime.subscription`` for one channel: its bindings, the tables each covered when it was
    created, and the claims it was created with."""

    bindings: list[Binding]
    entities: list[set[tuple[str, str]]]
    claims: dict[str, Any]


class CdcWorkers:
    """One tenant's ``postgres_cdc_rls`` workers: ``SubscriptionManager`` + ``ReplicationPoller``.

    Started by the first subscribe attempt (which is then retried 1–3 s later by the channel, as
    ``handle_connect`` returns nil while the workers start). The manager owns the subscription table; on a
    cold start it is empty (``delete_all_if_table_exists``), so channels subscribed to an earlier generation of
    workers get nothing until they resubscribe. Every ``cdc_manager_check_oids_interval_ms`` the manager compares the
    publication's tables: on a change it logs ``Found new oids …``, deletes every subscription and asks each
    registered row's channel to resubscribe. Every ``cdc_check_no_users_interval_ms`` it counts the rows and
    stops the workers once zero has lasted ``cdc_stop_after_ms`` (``Stop tenant <id> because of no connected
    users``). The poller stopping for good (connection failure, max retries, a failed slot drop) stops the
    manager too (``auto_shutdown: :any_significant``); nothing tells the channels.
    """

    def __init__(
        self,
        tenant: Callable[[], Tenant],
        *,
        behaviour: RealtimeBehaviour,
        timers: Timers,
        slot_suffix: str,
        poll_interval_ms: int | None,
        allow_event: Callable[[], bool],
    ) -> None:
        self._tenant = tenant
        self.behaviour = behaviour
        self.timers = timers
        self._slot_suffix = slot_suffix
        self._poll_interval_ms = poll_interval_ms
        self._allow_event = allow_event
        self.registrations: dict[CdcSubscriber, Registration] = {}
        self._manager_conn: psycopg.AsyncConnection[Any] | None = None
        self._manager_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._starting: asyncio.Task[None] | None = None
        self._typnames: dict[int, str] = {}
        self._rls: dict[str, tuple[float, bool]] = {}
        self.slot_name = ""
        self.generation = 0
        self._background: set[asyncio.Task[None]] = set()
        self._prepared = asyncio.Event()

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True when the manager is up (``get_manager_conn`` → ``{:ok, pid, conn}``)."""
        return self._manager_conn is not None and bool(self._tasks)

    @property
    def active(self) -> bool:
        """True while the workers run or start."""
        return self.ready or (self._starting is not None and not self._starting.done())

    @property
    def external_id(self) -> str:
        """The tenant's external id."""
        return self._tenant().external_id

    def _emit(self, level: int, message: str, code: str | None = None) -> None:
        emit(level, message, code=code, tenant=self.external_id)

    def start(self) -> None:
        """Start the workers in the background (``start_distributed``); no-op while active."""
        if not self.active:
            self._starting = asyncio.create_task(self._start(), name="cdc-start")

    async def _start(self) -> None:
        tenant = self._tenant()
        try:
            conn = await psycopg.AsyncConnection.connect(
                tenant.conninfo("realtime_subscription_manager"), autocommit=True)
            oids = await _publication_oids(conn, tenant.publication)
        except (psycopg.Error, RtbookError) as exc:
            reason = inspect(inspect_pg_error(exc)) if isinstance(exc, psycopg.Error) else str(exc)
            self._emit(logging.ERROR, reason, "SubscriptionManagerConnectionFailed")
            return
        # Cold start: the subscription table is emptied, as delete_all_if_table_exists does.
        self.registrations.clear()
        self.generation += 1
        # The WorkerSupervisor starts the poller first; in Realtime its slot exists within milliseconds, long
        # before a channel's 1-3 s retry finds the manager. A loaded stand-in may be slower, so the manager
        # registers only after the poller's first prepare attempt (bounded), keeping that order.
        self._prepared = asyncio.Event()
        poller = asyncio.create_task(self._poller(), name="cdc-poller")
        self._tasks = [poller]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._prepared.wait()), 5.0)
        if poller.done():
            with contextlib.suppress(Exception):
                await conn.close()
            return
        self._manager_conn = conn
        self._tasks.append(asyncio.create_task(self._manager(oids), name="cdc-manager"))

    async def stop(self) -> None:
        """Stop both workers; the temporary slot goes with the poller's connection."""
        starting, self._starting = self._starting, None
        if starting is not None and not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await starting
        tasks, self._tasks = self._tasks, []
        current = asyncio.current_task()
        for task in tasks:
            if task is not current:
                task.cancel()
        for task in tasks:
            if task is not current:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        conn, self._manager_conn = self._manager_conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()
        self.registrations.clear()

    def _stop_soon(self) -> None:
        # From inside the poller or manager task: stop() cancels the others and must not await itself.
        task = asyncio.create_task(self.stop(), name="cdc-stop")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- subscriptions ---------------------------------------------------------------------------

    async def subscribe(self, sub: CdcSubscriber, publication: str) -> None:
        """Create the channel's subscriptions (``Subscriptions.create`` in one transaction).

        Raises:
            SubscribeError: Realtime's message, and whether it retries.
        """
        conn = self._manager_conn
        generation = self.generation
        if conn is None:
            raise SubscribeError('{:error, "Too many database timeouts"}', retry=True)
        try:
            async with self._manager_lock:
                if conn.closed or conn.broken:
                    conn = self._manager_conn = await psycopg.AsyncConnection.connect(
                        self._tenant().conninfo("realtime_subscription_manager"), autocommit=True)
                entities = []
                for binding in sub.bindings:
                    error, covered = await check_subscription(conn, publication, binding, self.behaviour)
                    if error:
                        raise SubscribeError(error, retry=False)
                    entities.append(covered)
        except (psycopg.OperationalError, psycopg.InterfaceError, RtbookError):
            # DBConnection.ConnectionError → {:error, "Too many database timeouts"}, retried.
            raise SubscribeError('{:error, "Too many database timeouts"}', retry=True) from None
        except psycopg.Error as exc:
            raise SubscribeError(inspect((Atom("error"), inspect_pg_error(exc))), retry=True) from exc
        if self._manager_conn is None or self.generation != generation:
            # The workers stopped meanwhile: the manager's connection went with them (a DBConnection error).
            raise SubscribeError('{:error, "Too many database timeouts"}', retry=True)
        self.registrations[sub] = Registration(list(sub.bindings), entities, dict(sub.claims))

    def unsubscribe(self, sub: CdcSubscriber) -> None:
        """The channel went away (the manager's ``:DOWN``): its rows are deleted."""
        self.registrations.pop(sub, None)

    # -- SubscriptionManager -----------------------------------------------------------------

    async def _manager(self, oids: dict[Any, list[int]]) -> None:
        oids_every = self.timers.cdc_manager_check_oids_interval_ms / 1000
        users_every = self.timers.cdc_check_no_users_interval_ms / 1000
        stop_after = self.timers.cdc_stop_after_ms / 1000
        now = time.monotonic()
        next_oids, next_users = now + oids_every, now + users_every
        no_users_since: float | None = None
        while True:
            await asyncio.sleep(max(0.0, min(next_oids, next_users) - time.monotonic()))
            now = time.monotonic()
            if now >= next_oids:
                next_oids = now + oids_every
                try:
                    assert self._manager_conn is not None
                    async with self._manager_lock:
                        new = await _publication_oids(self._manager_conn, self._tenant().publication)
                except (psycopg.Error, AssertionError) as exc:
                    reason = inspect(inspect_pg_error(exc)) if isinstance(exc, psycopg.Error) else "no connection"
                    self._emit(logging.ERROR, reason, "CheckOidsError")
                    new = oids
                if new != oids:
                    self._emit(logging.WARNING, f"Found new oids {inspect(new)}")
                    rows = list(self.registrations.items())
                    self.registrations.clear()
                    for sub, reg in rows:
                        # One :postgres_subscribe per row, and there is a row per binding.
                        sub.request_postgres_subscribe(len(reg.bindings))
                    oids = new
            if now >= next_users:
                next_users = now + users_every
                if self.registrations:
                    no_users_since = None
                elif no_users_since is None:
                    no_users_since = now
                elif no_users_since + stop_after < now:
                    self._emit(logging.INFO, f"Stop tenant {self.external_id} because of no connected users")
                    self._stop_soon()
                    return

    def note_subscribed(self) -> None:
        """A ``{:subscribed, …}`` message: clears the no-users stamp (done by the next check)."""

    # -- ReplicationPoller -------------------------------------------------------------------

    def _interval(self, tenant: Tenant) -> float:
        if self._poll_interval_ms is not None:
            return self._poll_interval_ms / 1000
        try:
            return int(tenant.settings.get("poll_interval_ms", 100)) / 1000
        except (TypeError, ValueError):
            return 0.1

    async def _poller(self) -> None:
        tenant = self._tenant()
        base = str(tenant.settings.get("slot_name") or "supabase_realtime_replication_slot")
        self.slot_name = f"{base}_{self._slot_suffix}"
        try:
            conn = await psycopg.AsyncConnection.connect(tenant.conninfo("realtime_rls"), autocommit=True)
        except (psycopg.Error, RtbookError) as exc:
            self._prepared.set()
            reason = inspect(inspect_pg_error(exc)) if isinstance(exc, psycopg.Error) else str(exc)
            self._emit(logging.ERROR, reason, "ReplicationPollerConnectionFailed")
            self._stop_soon()
            return
        try:
            await self._poll_loop(conn)
        finally:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _reconnect(self, conn: psycopg.AsyncConnection[Any]) -> psycopg.AsyncConnection[Any]:
        # Postgrex reconnects a dropped connection by itself; so does the stand-in, before the next attempt.
        if conn.closed or conn.broken:
            with contextlib.suppress(Exception):
                await conn.close()
            return await psycopg.AsyncConnection.connect(self._tenant().conninfo("realtime_rls"), autocommit=True)
        return conn

    async def _poll_loop(self, conn: psycopg.AsyncConnection[Any]) -> None:
        b = self.behaviour
        lifecycle = b.poller_publication_lifecycle
        check_every = self.timers.cdc_poller_check_oids_interval_ms / 1000
        oids: dict[Any, list[int]] = {}
        retries = 0
        backoff = _Backoff()
        need_prepare = True
        next_check: float | None = None
        wait = 0.0
        while True:
            if wait > 0:
                await asyncio.sleep(wait if next_check is None else max(0.0, min(wait, next_check - time.monotonic())))
            wait = 0.0
            tenant = self._tenant()
            if need_prepare:
                try:
                    conn = await self._reconnect(conn)
                    if lifecycle:
                        oids = await _publication_oids(conn, tenant.publication)
                        next_check = time.monotonic() + check_every
                        if not oids:
                            need_prepare = False  # idle: no slot until tables appear
                            self._prepared.set()
                            wait = check_every
                            continue
                    await _create_slot(conn, self.slot_name)
                except (psycopg.Error, RtbookError) as exc:
                    self._prepared.set()
                    reason = inspect(inspect_pg_error(exc)) if isinstance(exc, psycopg.Error) else str(exc)
                    self._emit(logging.ERROR, reason, "PoolingReplicationPreparationError")
                    if self._give_up(retries, reason):
                        return
                    retries += 1
                    wait = backoff.next()
                    continue
                need_prepare = False
                self._prepared.set()
                retries = 0
                backoff.reset()
            if lifecycle and next_check is not None and time.monotonic() >= next_check:
                next_check = time.monotonic() + check_every
                try:
                    new = await _publication_oids(conn, tenant.publication)
                except psycopg.Error as exc:
                    self._emit(logging.ERROR, inspect(inspect_pg_error(exc)), "CheckOidsError")
                    new = oids
                if not oids and new:
                    if b.poller_lifecycle_logs:
                        self._emit(logging.INFO, f"ReplicationPoller's publication went from 0 to {_tables(new)} "
                                   "tables, starting replication")
                    oids = new
                    need_prepare = True
                    continue
                if oids and not new:
                    if b.poller_lifecycle_logs:
                        self._emit(logging.INFO, f"ReplicationPoller's publication went from {_tables(oids)} to 0 "
                                   "tables, stopping replication")
                    try:
                        await conn.execute("SELECT pg_drop_replication_slot(%s)", (self.slot_name,))
                    except psycopg.errors.UndefinedObject:
                        pass
                    except psycopg.Error as exc:
                        self._emit(logging.ERROR, inspect(inspect_pg_error(exc)), "DropReplicationSlotFailed")
                        self._stop_soon()
                        return
                    retries = 0
                oids = new
            if lifecycle and not oids:
                wait = max(0.0, (next_check or time.monotonic()) - time.monotonic())
                continue
            try:
                processed, slot_changes = await self._poll_once(conn, tenant)
            except psycopg.Error as exc:
                if exc.sqlstate == "55006":  # object_in_use
                    msg = exc.diag.message_primary or str(exc)
                    self._emit(logging.ERROR, msg, "ReplicationSlotBeingUsed")
                    if retries > 3:
                        with contextlib.suppress(psycopg.Error):
                            await conn.execute(
                                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                                "WHERE slot_name = %s AND active_pid IS NOT NULL", (self.slot_name,))
                            self._emit(logging.WARNING, "Replication slot in use - terminating")
                    reason = inspect(inspect_pg_error(exc))
                else:
                    reason = inspect(inspect_pg_error(exc))
                    self._emit(logging.ERROR, reason, "PoolingReplicationError")
                if self._give_up(retries, reason):
                    return
                retries += 1
                wait = backoff.next()
                need_prepare = True  # the :retry message runs prepare_replication again
                continue
            retries = 0
            backoff.reset()
            interval = self._interval(tenant)
            if processed > 0:
                wait = 0.0
            elif slot_changes > 0 and b.poll_idle_multiplier > 1:
                wait = interval + random.uniform(0.05, 0.1)
            else:
                wait = interval * b.poll_idle_multiplier

    def _give_up(self, retries: int, reason: str) -> bool:
        limit = self.behaviour.poller_max_retries
        if limit is not None and retries >= limit:
            self._emit(logging.ERROR, reason, "ReplicationPollerMaxRetriesReached")
            self._stop_soon()
            return True
        return False

    async def _poll_once(self, conn: psycopg.AsyncConnection[Any], tenant: Tenant) -> tuple[int, int]:
        """One ``list_changes``: (rows delivered to subscribers, raw changes read from the slot)."""
        tables, actions = await _publication_tables(conn, tenant.publication)
        max_changes = int(tenant.settings.get("poll_max_changes") or 100)
        options = [
            "include-pk", "true", "include-transaction", "false", "include-timestamp", "true",
            "include-type-oids", "true", "format-version", "2",
        ]
        if actions != "none":
            options += ["actions", actions]
        if tables:
            escaped = ",".join(
                ".".join(part.replace("\\", "\\\\").replace(",", "\\,").replace("*", "\\*")
                         for part in t.split(".", 1))
                for t in sorted(tables)
            )
            options += ["add-tables", escaped]
        placeholders = ", ".join(["%s"] * len(options))
        cur = await conn.execute(
            f"SELECT data FROM pg_logical_slot_get_changes(%s, NULL, %s, {placeholders})",
            (self.slot_name, max_changes, *options),
        )
        rows = await cur.fetchall()
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
                # Realtime only emits telemetry here (no log line).
                continue
            delivered += await self._dispatch(conn, change)
        return delivered, len(rows)

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
            emit(logging.WARNING, inspect(inspect_pg_error(exc)), code="RlsCheckFailed", tenant=self.external_id)
            return False
        return visible

    async def _dispatch(self, conn: psycopg.AsyncConnection[Any], change: Change) -> int:
        targets: list[tuple[CdcSubscriber, Registration, list[int]]] = []
        for sub, reg in list(self.registrations.items()):
            ids = [
                b.id for b, covered in zip(reg.bindings, reg.entities, strict=True)
                if (change.schema, change.table) in covered
                and b.matches(change.schema, change.table, change.type) and filter_matches(b, change)
            ]
            if ids:
                targets.append((sub, reg, ids))
        if not targets:
            return 0
        rls = await self._rls_enabled(conn, change.schema, change.table)
        verdicts: dict[str, bool] = {}
        sent = 0
        for sub, reg, ids in targets:
            if rls and change.type != "DELETE" and change.pk:
                key = json.dumps(reg.claims, sort_keys=True)
                if key not in verdicts:
                    verdicts[key] = await self._visible(conn, change, reg.claims)
                if not verdicts[key]:
                    continue
            sub.push_postgres_changes(change.payload(ids, pk_only_old=rls and change.type == "DELETE"))
            sent += 1
        return sent


class _Backoff:
    """DBConnection.Backoff ``rand_exp`` between 100 ms and 5 s."""

    def __init__(self) -> None:
        self._last = 0.1

    def reset(self) -> None:
        self._last = 0.1

    def next(self) -> float:
        value = random.uniform(0.1, min(5.0, self._last * 3))
        self._last = value
        return value


async def _publication_oids(conn: psycopg.AsyncConnection[Any], publication: str) -> dict[Any, list[int]]:
    """``Subscriptions.fetch_publication_tables``: ``{{schema, table} => [oid], {schema} => […], {"*"} => […]}``."""
    cur = await conn.execute(
        "SELECT schemaname::text, tablename::text, format('%%I.%%I', schemaname, tablename)::regclass::oid::bigint "
        "FROM pg_publication_tables WHERE pubname = %s", (publication,))
    out: dict[Any, list[int]] = {}
    for schema, table, oid in await cur.fetchall():
        out[(schema, table)] = [int(oid)]
        out.setdefault((schema,), []).append(int(oid))
        out.setdefault(("*",), []).append(int(oid))
    return {k: sorted(v) for k, v in sorted(out.items(), key=lambda kv: (len(kv[0]), kv[0]))}


def _tables(oids: dict[Any, list[int]]) -> int:
    return sum(1 for key in oids if len(key) == 2)


async def _create_slot(conn: psycopg.AsyncConnection[Any], slot: str) -> None:
    """``Replications.prepare_replication``: a temporary wal2json slot, only if none of that name exists."""
    cur = await conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,))
    if await cur.fetchone() is None:
        await conn.execute("SELECT pg_create_logical_replication_slot(%s, 'wal2json', true)", (slot,))


async def _publication_tables(conn: psycopg.AsyncConnection[Any], publication: str) -> tuple[set[str], str]:
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
