"""Private channels: RLS on ``realtime.messages`` decides who may read and write a topic.

Like ``Realtime.Tenants.Authorization`` (v2.129.8 / v2.78.19 ``lib/realtime/tenants/authorization.ex``):

* read (at join): in one transaction, insert one probe row per extension (``broadcast``, plus ``presence`` when
  presence is enabled) as the connection's user, then ``set_config`` (transaction-local) ``role`` = the JWT
  role, ``realtime.topic`` = the sub-topic, ``request.jwt.claims``, ``request.jwt.claim.sub``,
  ``request.jwt.claim.role`` and ``request.headers``, and SELECT the probe ids as that role: a row that comes
  back means that extension's read is allowed. Everything is rolled back.
* write (on the first broadcast / presence track): as the role, insert a row per extension under a
  savepoint; success means write allowed, ``insufficient_privilege`` (42501, also "new row violates
  row-level security policy") means not allowed.

Errors are returned as :class:`PolicyError` with Realtime's classification: ``missing_partition`` (a
check violation on ``messages``), ``rls_policy_error`` (any other server error, e.g. a policy that fails or
a role that does not exist), ``unavailable`` (no usable connection).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg

__all__ = ["AuthContext", "Policies", "PolicyError", "read_policies", "write_policies"]


@dataclass
class Policies:
    """``Realtime.Tenants.Authorization.Policies``: None = not evaluated yet."""

    broadcast_read: bool | None = None
    broadcast_write: bool | None = None
    presence_read: bool | None = None
    presence_write: bool | None = None


class PolicyError(Exception):
    """The policy check could not decide; ``kind`` is Realtime's error atom."""

    def __init__(self, kind: str, error: BaseException) -> None:
        super().__init__(str(error))
        self.kind = kind
        self.error = error


@dataclass(frozen=True)
class AuthContext:
    """``Realtime.Tenants.Authorization``'s context: topic, claims and the socket's ``x-*`` headers."""

    topic: str
    claims: Mapping[str, Any]
    headers: Mapping[str, str]

    @property
    def role(self) -> str:
        """The JWT role (``set_config('role', …)`` fails for a role that does not exist)."""
        return str(self.claims.get("role") or "")

    @property
    def sub(self) -> str:
        """The JWT sub ('' when absent)."""
        sub = self.claims.get("sub")
        return "" if sub is None else str(sub)


_SET_CONFIG = (
    "SELECT set_config('role', %s, true), set_config('realtime.topic', %s, true), "
    "set_config('request.jwt.claims', %s, true), set_config('request.jwt.claim.sub', %s, true), "
    "set_config('request.jwt.claim.role', %s, true), set_config('request.headers', %s, true)"
)
_INSERT = (
    "INSERT INTO realtime.messages (id, topic, extension, private, inserted_at, updated_at) "
    "VALUES (%s, %s, %s, true, now() at time zone 'utc', now() at time zone 'utc')"
)


async def _set_config(conn: psycopg.AsyncConnection[Any], ctx: AuthContext) -> None:
    await conn.execute(
        _SET_CONFIG,
        (ctx.role, ctx.topic, json.dumps(dict(ctx.claims)), ctx.sub, ctx.role, json.dumps(dict(ctx.headers))),
    )


def _classify(exc: psycopg.Error) -> PolicyError:
    if exc.sqlstate == "23514" and exc.diag.table_name == "messages":
        return PolicyError("missing_partition", exc)
    if exc.sqlstate == "57014":
        return PolicyError("query_canceled", exc)
    if exc.sqlstate is None or isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return PolicyError("unavailable", exc)
    return PolicyError("rls_policy_error", exc)


class _Rollback(Exception):
    pass


async def read_policies(
    conn: psycopg.AsyncConnection[Any], lock: asyncio.Lock, ctx: AuthContext, policies: Policies, *,
    presence: bool,
) -> Policies:
    """Evaluate the read policies (broadcast, and presence when ``presence``) into ``policies``.

    Raises:
        PolicyError: the check failed (see the module doc for the kinds).
    """
    probes = {"broadcast": uuid.uuid4(), **({"presence": uuid.uuid4()} if presence else {})}
    seen: set[uuid.UUID] = set()
    try:
        async with lock:
            try:
                async with conn.transaction():
                    for ext, probe_id in probes.items():
                        await conn.execute(_INSERT, (probe_id, ctx.topic, ext))
                    await _set_config(conn, ctx)
                    cur = await conn.execute("SELECT id FROM realtime.messages WHERE id = ANY(%s)",
                                             (list(probes.values()),))
                    seen = {row[0] for row in await cur.fetchall()}
                    raise _Rollback
            except _Rollback:
                pass
    except psycopg.Error as exc:
        raise _classify(exc) from exc
    policies.broadcast_read = probes["broadcast"] in seen
    if presence:
        policies.presence_read = probes["presence"] in seen
    return policies


async def write_policies(
    conn: psycopg.AsyncConnection[Any], lock: asyncio.Lock, ctx: AuthContext, policies: Policies
) -> Policies:
    """Evaluate both write policies into ``policies`` (Realtime checks broadcast and presence together).

    Raises:
        PolicyError: the check failed.
    """
    extensions = ["broadcast", "presence"]
    result: dict[str, bool] = {}
    try:
        async with lock:
            try:
                async with conn.transaction():
                    await _set_config(conn, ctx)
                    for ext in extensions:
                        try:
                            async with conn.transaction():  # a savepoint, like Repo.insert(mode: :savepoint)
                                await conn.execute(_INSERT, (uuid.uuid4(), ctx.topic, ext))
                            result[ext] = True
                        except psycopg.errors.InsufficientPrivilege:
                            result[ext] = False
                    raise _Rollback
            except _Rollback:
                pass
    except psycopg.Error as exc:
        raise _classify(exc) from exc
    policies.broadcast_write = result["broadcast"]
    policies.presence_write = result["presence"]
    return policies
