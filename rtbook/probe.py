"""The rtbook probe: a table the user installs once, on purpose, so the live checks can prove delivery.

By default no live check writes anything to the database (no DDL, no publication change, no
row). Proving that a change is *delivered* needs a write, and on a real stack a write to the
user's tables, or a scratch table added to the publication on every run, is not acceptable: a
change of the publication's tables makes Realtime drop and re-create every postgres_changes
subscription of every user (within its 60 s publication re-check), and since v2.107.1 an empty
publication means no replication slot at all (notes/realtime.md §4.1, §4.4).

So the probe is installed once, by the user: ``rtbook probe install --yes`` creates
``rtbook_probe.events`` (SQL in :mod:`rtbook.probe_sql`) and adds it to the publication, in one
transaction. With the probe present, ``realtime.postgres_changes`` and ``realtime.rls`` write to
that table only (their own rows, deleted afterwards). ``rtbook probe remove --yes`` undoes it.

:func:`status` reads the current state; :func:`plan_install` / :func:`plan_remove` return the
exact SQL that :func:`install` / :func:`remove` would run (a dry run); those two refuse without
``yes=True``, re-read the state inside their transaction, and write nothing when it changed
since the plan.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from rtbook import probe_sql
from rtbook.clients.db import _publication_name, classify_db_error, connect
from rtbook.exceptions import ConfirmationRequired, ConnectionSetupError
from rtbook.results import CheckResult, Status
from rtbook.target import Target

__all__ = [
    "RECHECK_S",
    "ProbePlan",
    "ProbeState",
    "install",
    "plan_install",
    "plan_remove",
    "read_state",
    "remove",
    "status",
]

log = logging.getLogger("rtbook.probe")

# Realtime re-reads the publication's tables every 60 s, in the ReplicationPoller (since v2.107.1:
# slot only while the publication has tables) and in the SubscriptionManager (all versions:
# a change re-creates every subscription). Both @check_oids_interval 60_000 (notes/realtime.md §4).
RECHECK_S = 60.0

RESUBSCRIBE_NOTE = (
    "Changing the publication's tables makes a running Realtime re-create every postgres_changes "
    f"subscription once (each subscribed client gets another 'Subscribed to PostgreSQL'), at its next "
    f"publication re-check, within {RECHECK_S:.0f} s. If the publication was empty, that re-check is also when "
    "Realtime (v2.107.1 and newer) creates its replication slot and starts reading changes "
    "(if the publication becomes empty, it drops the slot)."
)


@dataclass(frozen=True)
class ProbeState:
    """What the database holds of the probe, and the publication it belongs in."""

    publication: str
    publication_exists: bool
    publication_all_tables: bool
    publication_tables: tuple[str, ...]
    schema_exists: bool
    table_exists: bool
    in_publication: bool
    rls: bool = False
    replica_identity: str = ""
    policies: tuple[str, ...] = ()
    comment: str = ""
    other_objects: tuple[str, ...] = ()
    missing_roles: tuple[str, ...] = ()
    read_only: bool = False

    @property
    def installed(self) -> bool:
        """The table exists with RLS, REPLICA IDENTITY FULL, both policies, and is in the publication."""
        return (
            self.table_exists
            and self.in_publication
            and self.rls
            and self.replica_identity == "f"
            and set(self.policies) >= {"rtbook_probe_anon_public", "rtbook_probe_authenticated_own"}
        )

    @property
    def installed_at(self) -> dt.datetime | None:
        """When the probe was installed (from the table's comment), UTC."""
        text = probe_sql.parse_installed_at(self.comment)
        if text is None:
            return None
        return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)

    @property
    def table(self) -> str:
        """``rtbook_probe.events``."""
        return probe_sql.qualified()

    def describe(self) -> str:
        """One line for humans: what exists now."""
        pub = (f"publication {self.publication}: " + (
            "missing" if not self.publication_exists else
            "FOR ALL TABLES" if self.publication_all_tables else
            f"{len(self.publication_tables)} table(s)"
            + (f" ({', '.join(self.publication_tables[:8])}{', ...' if len(self.publication_tables) > 8 else ''})"
               if self.publication_tables else "")))
        if not self.schema_exists:
            probe = f"schema {probe_sql.SCHEMA}: absent"
        elif not self.table_exists:
            probe = f"schema {probe_sql.SCHEMA}: present, table {self.table}: absent"
        else:
            probe = (f"table {self.table}: present (RLS {'on' if self.rls else 'off'}, replica identity "
                     f"{ {'f': 'FULL', 'd': 'DEFAULT', 'n': 'NOTHING', 'i': 'INDEX'}.get(self.replica_identity, '?')}, "
                     f"policies {', '.join(self.policies) or 'none'}, "
                     f"{'in' if self.in_publication else 'NOT in'} the publication"
                     + (f", installed {self.installed_at:%Y-%m-%d %H:%M:%S} UTC" if self.installed_at else "") + ")")
        return f"{probe}; {pub}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        data = dataclasses.asdict(self)
        data["installed"] = self.installed
        data["installed_at"] = self.installed_at.isoformat() if self.installed_at else None
        return data

    def fingerprint(self) -> str:
        """A hash of the state (a plan is only applied to the state it was made for)."""
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True, default=str).encode()).hexdigest()


def read_state(conn: Connection, publication: str) -> ProbeState:
    """Read the probe's state (read-only)."""
    prow = conn.execute(sa.text("SELECT puballtables FROM pg_publication WHERE pubname = :p"),
                        {"p": publication}).first()
    tables = tuple(
        f"{r[0]}.{r[1]}" for r in conn.execute(
            sa.text("SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = :p ORDER BY 1, 2"),
            {"p": publication}).all()
    )
    schema = conn.execute(sa.text("SELECT oid FROM pg_namespace WHERE nspname = :s"),
                          {"s": probe_sql.SCHEMA}).scalar()
    missing_roles = tuple(
        r for r in probe_sql.PROBE_ROLES
        if conn.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": r}).first() is None
    )
    read_only = bool(conn.execute(sa.text(
        "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on'")).scalar())
    base = ProbeState(
        publication=publication,
        publication_exists=prow is not None,
        publication_all_tables=bool(prow[0]) if prow is not None else False,
        publication_tables=tables,
        schema_exists=False,
        table_exists=False,
        in_publication=False,
        missing_roles=missing_roles,
        read_only=read_only,
    )
    if schema is None:
        return base
    row = conn.execute(
        sa.text("SELECT c.oid, c.relrowsecurity, c.relreplident::text, "
                "coalesce(obj_description(c.oid, 'pg_class'), '') "
                "FROM pg_class c WHERE c.relnamespace = :ns AND c.relname = :t AND c.relkind = 'r'"),
        {"ns": schema, "t": probe_sql.TABLE},
    ).first()
    others = tuple(
        str(r[0]) for r in conn.execute(
            sa.text("SELECT c.relname FROM pg_class c WHERE c.relnamespace = :ns AND c.relname <> :t "
                    "AND c.relkind IN ('r', 'p', 'v', 'm', 'f') "
                    "UNION ALL SELECT p.proname FROM pg_proc p WHERE p.pronamespace = :ns "
                    "UNION ALL SELECT t.typname FROM pg_type t WHERE t.typnamespace = :ns AND t.typrelid = 0 "
                    "AND t.typelem = 0 ORDER BY 1"),
            {"ns": schema, "t": probe_sql.TABLE}).all()
    )
    if row is None:
        return dataclasses.replace(base, schema_exists=True, other_objects=others)
    policies = tuple(str(p) for p in conn.execute(
        sa.text("SELECT polname FROM pg_policy WHERE polrelid = :oid ORDER BY 1"), {"oid": row[0]}).scalars())
    in_pub = f"{probe_sql.SCHEMA}.{probe_sql.TABLE}" in tables
    return dataclasses.replace(
        base, schema_exists=True, table_exists=True, in_publication=in_pub, rls=bool(row[1]),
        replica_identity=str(row[2]), policies=policies, comment=str(row[3]), other_objects=others,
    )


def _db_error(exc: BaseException, target: Target, doing: str) -> ConnectionSetupError:
    problem = classify_db_error(exc, target)
    return ConnectionSetupError(target.redactor.text(
        f"cannot {doing}: {problem.summary} {problem.message} Fix: {problem.remedy}"))


def status(target: Target) -> ProbeState:
    """The probe's current state (read-only).

    Raises:
        ConnectionSetupError: the database cannot be reached or read.
    """
    try:
        with connect(target) as conn:
            return read_state(conn, _publication_name(target, conn))
    except (SQLAlchemyError, OSError) as exc:
        raise _db_error(exc, target, "read the probe's state") from None


@dataclass
class ProbePlan:
    """What :func:`install` or :func:`remove` would run. Planning writes nothing."""

    action: str  # install | remove
    before: ProbeState
    statements: list[str]
    notes: list[str] = field(default_factory=list)
    blocked: str = ""
    target_name: str = ""

    @property
    def empty(self) -> bool:
        """True when there is nothing to run."""
        return not self.statements

    @property
    def changes_publication(self) -> bool:
        """True when the plan adds or drops a table of the publication (Realtime resubscribes everyone)."""
        return any(s.startswith("ALTER PUBLICATION") for s in self.statements)

    def sql(self) -> str:
        """The exact SQL, as one transaction."""
        if not self.statements:
            return ""
        return "BEGIN;\n" + "".join(f"{s};\n" for s in self.statements) + "COMMIT;"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"action": self.action, "target": self.target_name, "before": self.before.to_dict(),
                "statements": list(self.statements), "notes": list(self.notes), "blocked": self.blocked,
                "changes_publication": self.changes_publication}

    def text(self, *, dry_run: bool = True) -> str:
        """The prior state and the SQL; ``dry_run=False`` words it as what was run."""
        where = f" on {self.target_name}" if self.target_name else ""
        head = f"Probe {self.action} plan{where} (dry run)" if dry_run else f"Probe {self.action}{where}"
        lines = [head, f"  before: {self.before.describe()}"]
        if self.blocked:
            lines.append(f"  BLOCKED: {self.blocked}")
        elif not self.statements:
            lines.append("  Nothing to do: " + ("the probe is installed." if self.action == "install"
                                                 else "there is no probe to remove."))
        else:
            lines.append("  SQL (one transaction; any error rolls all of it back):" if dry_run
                         else "  SQL run (one transaction):")
            lines += ["    " + line for line in self.sql().splitlines()]
        lines += [f"  note: {n}" for n in self.notes]
        if dry_run and self.statements and not self.blocked:
            lines.append(f"  Run it with: rtbook probe {self.action} --yes")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.text()


def _plan(target: Target, action: str, build: Callable[[ProbeState], tuple[list[str], list[str], str]]) -> ProbePlan:
    try:
        with connect(target) as conn:
            state = read_state(conn, _publication_name(target, conn))
    except (SQLAlchemyError, OSError) as exc:
        raise _db_error(exc, target, "read the probe's state") from None
    statements, notes, blocked = build(state)
    return ProbePlan(action, state, statements, notes, blocked, target.name)


def _install_steps(state: ProbeState) -> tuple[list[str], list[str], str]:
    if state.read_only:
        return [], [], "the database is read-only (a standby, or default_transaction_read_only is on)"
    if not state.publication_exists:
        return [], [], (f"the publication {state.publication} does not exist, so Realtime delivers no change at all "
                        "(see db.publication); create it first")
    if state.missing_roles:
        return [], [], (f"role(s) {', '.join(state.missing_roles)} do not exist; the probe's policies are written for "
                        "the roles of the Supabase image")
    if state.installed:
        return [], [], ""
    statements = probe_sql.object_statements()
    notes: list[str] = []
    if state.table_exists:
        notes.append("The probe exists but is incomplete; these statements complete it (they keep its rows).")
    if state.in_publication:
        # The comment records when the probe joined the publication (the checks wait for Realtime's re-check
        # after it); completing a probe already in the publication does not change that time.
        statements = [s for s in statements if not s.startswith("DO $$")]
    if state.publication_all_tables:
        notes.append(f"{state.publication} is FOR ALL TABLES, so the probe is in it as soon as it exists.")
    elif not state.in_publication:
        statements.append(probe_sql.add_to_publication_sql(state.publication))
    if state.publication_all_tables or not state.in_publication:
        notes.append(RESUBSCRIBE_NOTE + " realtime.postgres_changes and realtime.rls wait for that re-check "
                     f"(bounded by their time budget) when they run within {RECHECK_S:.0f} s of the install.")
    return statements, notes, ""


def _remove_steps(state: ProbeState) -> tuple[list[str], list[str], str]:
    if not state.schema_exists:
        return [], [], ""
    if state.read_only:
        return [], [], "the database is read-only (a standby, or default_transaction_read_only is on)"
    statements: list[str] = []
    notes: list[str] = []
    if state.in_publication and not state.publication_all_tables:
        statements.append(probe_sql.drop_from_publication_sql(state.publication))
    if state.table_exists:
        statements.append(probe_sql.drop_table_sql())
    if state.other_objects:
        notes.append(f"The schema {probe_sql.SCHEMA} is kept: it holds objects rtbook did not create "
                     f"({', '.join(state.other_objects)}).")
    else:
        statements.append(probe_sql.drop_schema_sql())
    if state.in_publication:
        notes.append(RESUBSCRIBE_NOTE)
    return statements, notes, ""


def plan_install(target: Target) -> ProbePlan:
    """The SQL that installs (or completes) the probe; empty when it is installed. Writes nothing.

    Raises:
        ConnectionSetupError: the database cannot be reached or read.
    """
    return _plan(target, "install", _install_steps)


def plan_remove(target: Target) -> ProbePlan:
    """The SQL that removes the probe; empty when there is none. Writes nothing.

    Raises:
        ConnectionSetupError: the database cannot be reached or read.
    """
    return _plan(target, "remove", _remove_steps)


StepHook = Callable[[int, str, int], None]


def install(target: Target, plan: ProbePlan, *, yes: bool = False, on_step: StepHook | None = None) -> CheckResult:
    """Run an install plan in one transaction; a ``probe.install`` result (prior and new state in the evidence).

    ``on_step(index, statement, backend_pid)`` runs before each statement (a test hook: it may
    kill the connection; nothing is then left behind).

    Raises:
        ConfirmationRequired: ``yes`` was not given.
    """
    return _run(target, plan, "install", yes=yes, on_step=on_step)


def remove(target: Target, plan: ProbePlan, *, yes: bool = False, on_step: StepHook | None = None) -> CheckResult:
    """Run a remove plan in one transaction; a ``probe.remove`` result.

    Raises:
        ConfirmationRequired: ``yes`` was not given.
    """
    return _run(target, plan, "remove", yes=yes, on_step=on_step)


class _Stale(Exception):
    pass


def _run(target: Target, plan: ProbePlan, action: str, *, yes: bool, on_step: StepHook | None) -> CheckResult:
    cid = f"probe.{action}"
    if plan.action != action:
        raise ValueError(f"a {plan.action} plan was given to {action}()")
    if not yes:
        raise ConfirmationRequired(
            f"refusing to {action} the probe without confirmation: read the plan (rtbook probe {action}) and run "
            f"again with --yes (yes=True)")
    evidence: dict[str, Any] = {"before": plan.before.to_dict(), "sql": list(plan.statements)}
    if plan.blocked:
        return CheckResult(cid, Status.FAIL, summary=f"Nothing written: the {action} is blocked: {plan.blocked}",
                           evidence=evidence, see_also=("db.publication",))
    if not plan.statements:
        return CheckResult(cid, Status.PASS, summary=("The probe is already installed; nothing was changed."
                                                      if action == "install" else
                                                      "There is no probe; nothing was changed."),
                           detail=f"State: {plan.before.describe()}.", evidence=evidence)
    try:
        with connect(target) as conn, conn.begin():
            pid = int(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar() or 0)
            current = read_state(conn, plan.before.publication)
            if current.fingerprint() != plan.before.fingerprint():
                raise _Stale(current.describe())
            for index, statement in enumerate(plan.statements):
                if on_step is not None:
                    on_step(index, statement, pid)
                conn.exec_driver_sql(statement)
            after = read_state(conn, plan.before.publication)
    except _Stale as exc:
        return CheckResult(cid, Status.FAIL,
                           summary=f"Nothing written: the probe or the publication changed since the plan was made "
                           f"(now: {exc}).",
                           remedy=f"Run 'rtbook probe {action}' again, read the new plan, then add --yes.",
                           evidence=evidence)
    except (SQLAlchemyError, OSError) as exc:
        problem = classify_db_error(exc, target)
        log.warning("probe %s rolled back (%s)", action, problem.kind)
        return CheckResult(
            cid, Status.FAIL,
            summary=f"Nothing written: the transaction failed and was rolled back ({problem.summary})",
            detail=f"Database said: {problem.message}", remedy=problem.remedy, cause=f"db.{problem.kind}",
            evidence=evidence,
        )
    evidence["after"] = after.to_dict()
    target.cache.pop("rtbook.db.publication", None)
    log.info("probe %s committed (%d statement(s))", action, len(plan.statements))
    done = ("Installed the probe" if action == "install" else "Removed the probe")
    pub_note = f" {RESUBSCRIBE_NOTE}" if plan.changes_publication or (
        action == "install" and plan.before.publication_all_tables) else ""
    return CheckResult(
        cid, Status.PASS,
        summary=f"{done} in one transaction ({len(plan.statements)} statement(s)).{pub_note}",
        detail=f"Before: {plan.before.describe()}.\nAfter: {after.describe()}.",
        evidence=evidence,
    )
