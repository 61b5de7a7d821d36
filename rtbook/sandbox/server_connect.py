"""The tenant database connection of the Realtime-compatible server (``Realtime.Tenants.Connect``).

One :class:`Connect` per tenant, started by the first join (``Connect.lookup_or_start_connection``):

* connects to the tenant DB (``application_name`` ``realtime_connect``); failure logs
  ``UnableToConnectToTenantDatabase: <error>`` then ``UnableToConnectToTenantDatabase: Unable to connect to tenant
  database`` and the caller answers ``UnableToConnectToProject``;
* provisions the tenant: runs the tenant "migrations" when ``migrations_ran`` is behind the version's count
  (here: the ``realtime.messages`` / ``realtime.topic()`` DDL of :mod:`rtbook.sandbox.tenant_schema`) and records
  ``migrations_ran``, then creates the day partitions of ``realtime.messages``;
* starts the broadcast-from-database replication connection (``realtime_replication_connection``): publication
  ``supabase_realtime_messages_publication`` for ``realtime.messages`` and a temporary logical slot
  ``supabase_realtime_messages_replication_slot_<suffix>`` (pgoutput). The stand-in does not stream from it; it
  exists so ``replication_connected`` in the health answer and ``StartReplicationFailed`` mean what they mean
  in Realtime. Failures are retried with a 5 s … 5 min backoff;
* samples the tenant's connected users every ``connect_check_users_interval_ms`` and stops after
  ``connect_zero_samples`` zero samples plus one interval (v2.98.2+: 60 s × 11, before: 50 s × 6);
* v2.123.5+: a lost connection opens a recovery window (``DatabaseConnectionDown`` warning); no reconnect within
  ``db_recovery_ms`` (10 min) stops Connect (``DatabaseConnectionRecoveryWindowExceeded``). Older versions keep the
  pool (and ``db_connected: true``) until the idle shutdown.

``db_connected`` in the health answer is "a Connect with a connection exists", whether or not the database
answers right now, as in Realtime (the pool pid is there while it reconnects).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg

from rtbook.exceptions import RtbookError
from rtbook.sandbox.server_log import emit, inspect, inspect_pg_error
from rtbook.sandbox.server_tenants import ServerConfig, Tenant
from rtbook.sandbox.tenant_schema import partitions_sql, tenant_schema_sql

__all__ = ["Connect", "TenantDatabaseUnavailable", "run_migrations"]

MESSAGES_PUBLICATION = "supabase_realtime_messages_publication"
MESSAGES_SLOT = "supabase_realtime_messages_replication_slot"


class TenantDatabaseUnavailable(RtbookError):
    """Connect could not start (``{:error, :tenant_database_unavailable}``)."""


async def run_migrations(
    config: ServerConfig, tenant: Tenant, conn: psycopg.AsyncConnection[Any] | None = None
) -> None:
    """Apply the tenant schema and record ``migrations_ran`` in the metadata DB (``Migrations.run_migrations``).

    Raises:
        psycopg.Error, RtbookError: the tenant DB could not be reached or the DDL failed.
    """
    behaviour = config.behaviour
    own = conn is None
    db = conn or await psycopg.AsyncConnection.connect(tenant.conninfo("realtime_migrations"), autocommit=True)
    try:
        await db.execute(tenant_schema_sql(behaviour).encode())
    finally:
        if own:
            await db.close()
    if tenant.migrations_ran is not None:
        async with await psycopg.AsyncConnection.connect(config.metadata_conninfo(), autocommit=True) as meta:
            await meta.execute("UPDATE _realtime.tenants SET migrations_ran = %s WHERE external_id = %s",
                               (behaviour.tenant_migrations, tenant.external_id))
    tenant.migrations_ran = behaviour.tenant_migrations if tenant.migrations_ran is not None else None


class Connect:
    """``Realtime.Tenants.Connect`` for one tenant (see the module doc)."""

    def __init__(
        self,
        config: ServerConfig,
        tenant: Callable[[], Tenant],
        users: Callable[[], int],
        *,
        on_stop: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._config = config
        self._tenant = tenant
        self._users = users
        self._on_stop = on_stop
        self.behaviour = config.behaviour
        self.timers = config.resolved_timers()
        self.conn: psycopg.AsyncConnection[Any] | None = None
        self.lock = asyncio.Lock()  # one transaction at a time on the shared connection
        self._start_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._replication: psycopg.AsyncConnection[Any] | None = None
        self._recovery_started: float | None = None
        self._background: set[asyncio.Task[None]] = set()

    @property
    def external_id(self) -> str:
        """The tenant's external id."""
        return self._tenant().external_id

    @property
    def alive(self) -> bool:
        """True while Connect holds a connection (``get_status`` → ``{:ok, conn}``)."""
        return self.conn is not None

    @property
    def replication_connected(self) -> bool:
        """True while the broadcast-from-database replication connection is up."""
        return self._replication is not None and not self._replication.closed

    def _emit(self, level: int, message: str, code: str | None = None) -> None:
        emit(level, message, code=code, tenant=self.external_id)

    async def lookup_or_start(self) -> psycopg.AsyncConnection[Any]:
        """The connection, starting Connect first when needed.

        Raises:
            TenantDatabaseUnavailable: the tenant DB cannot be reached (already logged).
        """
        if self.conn is not None:
            return self.conn
        async with self._start_lock:
            if self.conn is not None:
                return self.conn
            tenant = self._tenant()
            self._emit(logging.INFO, "Connection process starting up")
            try:
                conn = await psycopg.AsyncConnection.connect(tenant.conninfo("realtime_connect"), autocommit=True)
            except (psycopg.Error, RtbookError) as exc:
                reason = inspect(inspect_pg_error(exc)) if isinstance(exc, psycopg.Error) else str(exc)
                self._emit(logging.ERROR, reason, "UnableToConnectToTenantDatabase")
                self._emit(logging.ERROR, "Unable to connect to tenant database", "UnableToConnectToTenantDatabase")
                raise TenantDatabaseUnavailable(reason) from exc
            self._emit(logging.INFO, f'Tenant {tenant.external_id} is initializing: :"{self._config.node}"')
            try:
                migrations = self.behaviour.tenant_migrations
                if tenant.migrations_ran is None or tenant.migrations_ran < migrations:
                    await run_migrations(self._config, tenant, conn)
                for statement in partitions_sql():
                    try:
                        await conn.execute(statement.encode())
                    except psycopg.errors.DuplicateTable:
                        pass
                    except psycopg.Error as exc:
                        self._emit(logging.ERROR, inspect(inspect_pg_error(exc)), "PartitionCreationFailed")
            except (psycopg.Error, RtbookError) as exc:
                reason = inspect(inspect_pg_error(exc)) if isinstance(exc, psycopg.Error) else str(exc)
                self._emit(logging.ERROR, reason, "MigrationsFailedToRun")
                with contextlib.suppress(Exception):
                    await conn.close()
                self._emit(logging.ERROR, "Unable to connect to tenant database", "UnableToConnectToTenantDatabase")
                raise TenantDatabaseUnavailable(reason) from exc
            self.conn = conn
            self._recovery_started = None
            self._tasks = [
                asyncio.create_task(self._replication_loop(), name="connect-replication"),
                asyncio.create_task(self._users_loop(), name="connect-users"),
            ]
            if self.behaviour.connect_db_recovery:
                self._tasks.append(asyncio.create_task(self._recovery_loop(), name="connect-recovery"))
            return conn

    async def connection(self) -> psycopg.AsyncConnection[Any]:
        """A working connection: the pool reconnects on use after the database came back.

        Raises:
            TenantDatabaseUnavailable: Connect cannot start, or the database does not answer now.
        """
        conn = await self.lookup_or_start()
        if conn.closed or conn.broken:
            async with self._start_lock:
                if self.conn is not None and (self.conn.closed or self.conn.broken):
                    try:
                        self.conn = await psycopg.AsyncConnection.connect(
                            self._tenant().conninfo("realtime_connect"), autocommit=True)
                    except (psycopg.Error, RtbookError) as exc:
                        raise TenantDatabaseUnavailable(str(exc)) from exc
                if self.conn is None:
                    raise TenantDatabaseUnavailable("Connect stopped")
                conn = self.conn
        return conn

    async def stop(self, reason: str = ":shutdown") -> None:
        """Stop Connect: close the connections, cancel the timers."""
        tasks, self._tasks = self._tasks, []
        current = asyncio.current_task()
        for task in tasks:
            if task is not current:
                task.cancel()
        for task in tasks:
            if task is not current:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        for conn in (self.conn, self._replication):
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
        was_alive = self.conn is not None
        self.conn = None
        self._replication = None
        if was_alive:
            self._emit(logging.INFO, f"Tenant {self.external_id} has been terminated: {reason}")
            if self._on_stop is not None:
                await self._on_stop()

    def _stop_soon(self) -> None:
        # From inside one of the timer tasks: stop() cancels the others and must not await itself.
        task = asyncio.create_task(self.stop(), name="connect-stop")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- timers ------------------------------------------------------------------------------

    async def _users_loop(self) -> None:
        interval = self.timers.connect_check_users_interval_ms / 1000
        samples: collections.deque[int] = collections.deque([1], maxlen=self.timers.connect_zero_samples)
        while True:
            await asyncio.sleep(interval)
            samples.append(self._users())
            if len(samples) == samples.maxlen and not any(samples):
                # Realtime schedules the shutdown one interval later and then stops unconditionally.
                await asyncio.sleep(interval)
                self._emit(logging.INFO, "Tenant has no connected users, database connection will be terminated")
                self._stop_soon()
                return

    async def _recovery_loop(self) -> None:
        window = self.timers.db_recovery_ms / 1000
        probe = max(0.05, min(5.0, window / 4))
        while True:
            await asyncio.sleep(probe)
            conn = self.conn
            if conn is None:
                return
            ok = False
            if not (conn.closed or conn.broken):
                try:
                    async with self.lock:
                        await conn.execute("SELECT 1")
                    ok = True
                except psycopg.Error:
                    ok = False
            if not ok:
                with contextlib.suppress(psycopg.Error, RtbookError):
                    self.conn = await psycopg.AsyncConnection.connect(
                        self._tenant().conninfo("realtime_connect"), autocommit=True)
                    with contextlib.suppress(Exception):
                        await conn.close()
                    ok = True
            now = time.monotonic()
            if ok and self._recovery_started is not None:
                self._recovery_started = None
                self._emit(logging.INFO, "Database pool reconnected, recovery window closed")
            elif not ok and self._recovery_started is None:
                self._recovery_started = now
                self._emit(logging.WARNING, "Database pool connection lost, recovery window opened",
                           "DatabaseConnectionDown")
            elif not ok and self._recovery_started is not None and now - self._recovery_started >= window:
                self._emit(logging.WARNING, f"Database pool could not reconnect within "
                           f"{self.timers.db_recovery_ms}ms, terminating connection",
                           "DatabaseConnectionRecoveryWindowExceeded")
                self._stop_soon()
                return

    async def _replication_loop(self) -> None:
        backoff = 5.0
        while True:
            error = await self._start_replication()
            if error is None:
                # Watch the connection; a drop reopens the recovery (Realtime: ReplicationConnectionDown).
                while self._replication is not None and not self._replication.closed:
                    await asyncio.sleep(1.0)
                    try:
                        await self._replication.execute("SELECT 1")
                    except psycopg.Error:
                        break
                self._emit(logging.WARNING, "Replication connection has been terminated, recovery window opened",
                           "ReplicationConnectionDown")
                if self._replication is not None:
                    with contextlib.suppress(Exception):
                        await self._replication.close()
                self._replication = None
                backoff = 5.0
            else:
                code, message = error
                self._emit(logging.ERROR, message, code)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 300.0)

    async def _start_replication(self) -> tuple[str, str] | None:
        tenant = self._tenant()
        slot = f"{MESSAGES_SLOT}_{self._config.slot_name_suffix}"
        try:
            conn = await psycopg.AsyncConnection.connect(
                tenant.conninfo("realtime_replication_connection"), autocommit=True)
        except (psycopg.Error, RtbookError) as exc:
            reason = inspect(inspect_pg_error(exc)) if isinstance(exc, psycopg.Error) else str(exc)
            return "StartReplicationFailed", reason
        try:
            cur = await conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,))
            if await cur.fetchone() is not None:
                self._emit(logging.INFO, "Replication slot already exists and in use, deferring connection")
                await conn.close()
                return "StartReplicationFailed", "{:shutdown, :replication_slot_in_use}"
            cur = await conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (MESSAGES_PUBLICATION,))
            if await cur.fetchone() is None:
                try:
                    await conn.execute(f"CREATE PUBLICATION {MESSAGES_PUBLICATION} FOR TABLE realtime.messages")
                except psycopg.Error as exc:
                    await conn.close()
                    return "StartReplicationFailed", f"Error creating publication: {_pg_message(exc)}"
            try:
                await conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput', true)", (slot,))
            except psycopg.Error as exc:
                await conn.close()
                if exc.sqlstate in ("53300", "53400"):
                    return ("ReplicationMaxWalSendersReached",
                            "Tenant database has reached the maximum number of WAL senders")
                return "StartReplicationFailed", f"Error starting replication: {_pg_message(exc)}"
        except psycopg.Error as exc:
            with contextlib.suppress(Exception):
                await conn.close()
            return "StartReplicationFailed", inspect(inspect_pg_error(exc))
        self._replication = conn
        return None


def _pg_message(exc: psycopg.Error) -> str:
    primary = exc.diag.message_primary if exc.sqlstate else None
    text = primary or str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
