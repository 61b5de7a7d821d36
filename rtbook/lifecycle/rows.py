"""The database part of a tenant rename, add or remove: Realtime's rows, planned as a dry run and applied in one go.

A new tenant gets exactly what Realtime's seed gives one (:func:`rtbook.seeding.plan` with
``create=True``): the ``_realtime.tenants`` row with ``jwt_secret`` encrypted under ``DB_ENC_KEY``
and ONE ``postgres_cdc_rls`` extension row holding the five encrypted database settings
(``rtbook.crypto`` encrypts as ``Realtime.Crypto`` does). Removing a tenant deletes its extension
rows, then its tenant row. :func:`apply_rows` writes every change in one transaction after locking
each tenant's rows and checking they did not change since the plan; the rows as they were are
kept in the result's evidence (redacted), so the previous state can be put back.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from rtbook import seeding
from rtbook.checks.db import with_finding
from rtbook.clients.db import classify_db_error, connect
from rtbook.exceptions import ConfirmationRequired, ConnectionSetupError
from rtbook.results import CheckResult, Status
from rtbook.seeding import _Statement as Statement  # the plan/apply statement record, shared with tenant plan
from rtbook.target import Target

__all__ = ["RowsPlan", "apply_rows", "plan_rows"]

log = logging.getLogger("rtbook.lifecycle")


@dataclass
class RowsPlan:
    """Row changes for one or more tenants (a dry run).

    Attributes:
        tenants: every tenant whose rows the changes touch (each is locked and compared at apply).
        changes: inserts first, deletes last, in the order they run.
        fingerprints: a digest of each tenant's rows when planned.
        prior_rows: the rows as they were (redacted).
        reachable: False when the database could not be read; then ``changes`` is empty and
            ``notes`` say what would be written.
    """

    tenants: tuple[str, ...]
    changes: list[seeding.Change] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    fingerprints: dict[str, str] = field(default_factory=dict)
    prior_rows: list[dict[str, Any]] = field(default_factory=list)
    blocked: str = ""
    reachable: bool = True


def _deletes(state: seeding.MetadataState, tenant: str, why: str) -> list[seeding.Change]:
    out: list[seeding.Change] = []
    for e in state.extensions_of(tenant):
        out.append(seeding.Change("delete", "extensions", f"{tenant}/{e.type}/{e.id}", e.redacted(), None, why,
                                  Statement(f"DELETE FROM {seeding.SCHEMA}.extensions WHERE id = CAST(:_id AS uuid)",
                                            {"_id": e.id})))
    row = state.tenant(tenant)
    if row is not None:
        out.append(seeding.Change("delete", "tenants", tenant, row.redacted(), None, why,
                                  Statement(f"DELETE FROM {seeding.SCHEMA}.tenants WHERE id = CAST(:_id AS uuid)",
                                            {"_id": row.id})))
    return out


def own_slot_name(tenant: str) -> str:
    """A replication slot name of the tenant's own for its postgres_cdc_rls row.

    Realtime's poller names its slot ``settings.slot_name`` + ``_<SLOT_NAME_SUFFIX>`` (realtime-facts
    §4.1), so two tenants on one database with the seed's default ``slot_name`` fight over one slot: the
    second poller fails with ``ReplicationSlotBeingUsed`` and its clients get no changes. Slot names take
    lowercase letters, digits and ``_`` (63 bytes at most, and the suffix is appended at run time).
    """
    part = re.sub(r"[^a-z0-9_]", "_", tenant.lower())[:16]
    return f"supabase_realtime_replication_slot_{part}"


def _with_slot(change: seeding.Change, slot: str) -> seeding.Change:
    settings = dict(change.statement.params.get("settings") or {})
    settings["slot_name"] = slot
    params = {**change.statement.params, "settings": settings}
    after = {**(change.after or {}), "slot_name": slot}
    return dataclasses.replace(change, after=after, statement=Statement(change.statement.sql, params,
                                                                         change.statement.rows))


def plan_rows(target: Target, *, create: str | None = None, delete: str | None = None,
              keep_note: str = "", own_slot: bool = False) -> RowsPlan:
    """Plan inserting tenant ``create`` (with its one postgres_cdc_rls row) and/or deleting tenant ``delete``.

    ``own_slot`` gives the new row a replication slot name of its own (:func:`own_slot_name`): needed
    when the tenant shares its database with another tenant that keeps polling.

    Without a reachable database the plan lists no changes and says what it would write.

    Raises:
        ConfigError: a value needed to create the rows (DB_ENC_KEY, API_JWT_SECRET, DB_*) is not set.
    """
    tenants = tuple(t for t in (create, delete) if t)
    out = RowsPlan(tenants)
    if not target.has("db"):
        out.reachable = False
        if create:
            out.notes.append(f"would insert tenant {create!r} and its one postgres_cdc_rls row (jwt_secret and the "
                             "five db_* settings encrypted under DB_ENC_KEY), once a database is given (--db-url "
                             f"or POSTGRES_PASSWORD): {target.why_missing('db')}")
        if delete:
            out.notes.append(f"would delete tenant {delete!r} and its extension rows, once a database is given")
        if keep_note:
            out.notes.append(keep_note)
        return out
    try:
        if create:
            made = seeding.plan(target, tenant=create, create=True)
            out.changes += [_with_slot(c, own_slot_name(create))
                            if own_slot and c.kind == "insert" and c.table == "extensions" else c
                            for c in made.changes]
            out.notes += made.notes
            out.blocked = made.blocked
        with connect(target) as conn:
            state = seeding.read_state(conn, target.redactor)
    except ConnectionSetupError as exc:
        out.reachable = False
        out.changes = []
        out.notes.append(f"the database could not be read, so no row change is planned: {exc}")
        return out
    except SQLAlchemyError as exc:
        problem = classify_db_error(exc, target)
        out.reachable = False
        out.changes = []
        out.notes.append(f"the database could not be read ({problem.summary}); fix: {problem.remedy}")
        return out
    if delete:
        if state.tenant(delete) is None and not state.extensions_of(delete):
            out.notes.append(f"tenant {delete!r} has no rows; nothing to delete")
        out.changes += _deletes(state, delete, f"tenant {delete!r} is removed (asked for)")
    elif keep_note:
        out.notes.append(keep_note)
    for t in tenants:
        out.fingerprints[t] = state.fingerprint(t)
        row = state.tenant(t)
        if row is not None:
            out.prior_rows.append({"table": "tenants", **row.redacted()})
        out.prior_rows += [{"table": "extensions", **e.redacted()} for e in state.extensions_of(t)]
    return out


def apply_rows(target: Target, rows: RowsPlan, *, yes: bool = False) -> CheckResult:
    """Write ``rows`` in one transaction; a redacted ``tenant.apply`` result (prior rows in its evidence).

    Raises:
        ConfirmationRequired: ``yes`` was not given.
    """
    if not yes:
        raise ConfirmationRequired(f"refusing to write {len(rows.changes)} change(s) to the rows of "
                                   f"{', '.join(rows.tenants)} without confirmation: pass --yes after reading the plan")
    return with_finding(_apply(target, rows)).redacted(target.redactor)


def _apply(target: Target, rows: RowsPlan) -> CheckResult:
    cid = "tenant.apply"
    evidence: dict[str, Any] = {"tenants": list(rows.tenants), "changes": [c.to_dict() for c in rows.changes],
                                "prior_rows": rows.prior_rows}
    if rows.blocked:
        return CheckResult(cid, Status.FAIL, summary=f"Nothing written: the plan is blocked: {rows.blocked}",
                           remedy="Fix what tenant.schema reports, then plan again.", evidence=evidence)
    if not rows.reachable:
        return CheckResult(cid, Status.FAIL, summary="Nothing written: the database was not reachable when planning.",
                           remedy="Give the database (--db-url, POSTGRES_PASSWORD) and plan again.", evidence=evidence)
    if not rows.changes:
        return CheckResult(cid, Status.PASS, summary="Nothing to write: the rows already match.", evidence=evidence)
    try:
        with connect(target) as conn, conn.begin():
            prior: list[dict[str, Any]] = []
            for tenant in rows.tenants:
                current = seeding.read_state(conn, target.redactor, lock_tenant=tenant)
                if current.fingerprint(tenant) != rows.fingerprints.get(tenant):
                    return CheckResult(
                        cid, Status.FAIL, cause="tenant.plan_stale", evidence=evidence,
                        summary=f"Nothing written: the rows of tenant {tenant!r} changed since the plan was made.",
                        remedy="Plan again, read the new plan, and apply it.")
                prior += [{"table": "tenants", **t.redacted()} for t in current.tenants]
                prior += [{"table": "extensions", **e.redacted()} for e in current.extensions]
            evidence["prior_rows"] = prior
            for change in rows.changes:
                from rtbook.seeding import _reveal  # secrets leave their wrapper only here, for the driver

                params = {k: _reveal(v) for k, v in change.statement.params.items()}
                result = conn.execute(sa.text(change.statement.sql), params)
                if result.rowcount != change.statement.rows:
                    raise _Stale(f"{change.kind} on {change.table}[{change.key}] affected {result.rowcount} row(s)")
    except _Stale as exc:
        return CheckResult(cid, Status.FAIL, cause="tenant.plan_stale", evidence=evidence,
                           summary=f"Nothing written: {exc}; the transaction was rolled back.",
                           remedy="Plan again and apply the new plan.")
    except (SQLAlchemyError, OSError) as exc:
        problem = classify_db_error(exc, target)
        return CheckResult(cid, Status.FAIL, cause=f"db.{problem.kind}", evidence=evidence,
                           summary=f"Nothing written: the transaction failed and was rolled back ({problem.summary})",
                           detail=f"Database said: {problem.message}", remedy=problem.remedy + " Then plan again.")
    log.info("tenant lifecycle: %d change(s) committed for %s", len(rows.changes), ", ".join(rows.tenants))
    return CheckResult(
        cid, Status.PASS, evidence=evidence,
        summary=f"Applied {len(rows.changes)} change(s) to the rows of {', '.join(rows.tenants)} in one transaction.",
        detail="\n".join(str(c) for c in rows.changes),
    )


class _Stale(Exception):
    pass
