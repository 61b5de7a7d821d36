"""rtbook.checks.db."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from rtbook import probe_sql
from rtbook.clients.db import (
    FINDING_CAUSES,
    PROBLEM_KEY,
    REALTIME_APPLICATION_NAMES,
    SLOT_LAG_WARN_BYTES,
    SUPABASE_ROLES,
    DbProblem,
    TableInfo,
    TableRef,
    _error_text,
    _publication_name,
    _tables_to_check,
    classify_db_error,
    connect,
    parse_table,
    publication_tables,
    quote_ident,
    realtime_value,
    table_info,
)
from rtbook.exceptions import ConfigError
from rtbook.registry import register
from rtbook.results import CheckResult, Status
from rtbook.target import Target

__all__ = ['RoleAccess', 'role_access', 'with_connection', 'with_finding']



def _problem_result(cid: str, problem: DbProblem, during: str) -> CheckResult:
    return CheckResult(
        cid,
        Status.FAIL,
        summary=f"Could not {during}: {problem.summary}",
        detail=f"Database said: {problem.message}" if problem.message else "",
        remedy=problem.remedy,
        cause=f"db.{problem.kind}",
        see_also=("db.connect",) if cid != "db.connect" else (),
        evidence={"error_kind": problem.kind},
    )


def with_finding(result: CheckResult) -> CheckResult:
    """Move an rtbook finding id from ``cause`` to ``evidence["finding"]`` and set the remedies cause."""
    if result.cause not in FINDING_CAUSES:
        return result
    return dataclasses.replace(
        result, cause=FINDING_CAUSES[result.cause], evidence={**result.evidence, "finding": result.cause}
    )


Body = Callable[[Connection], "CheckResult | list[CheckResult]"]


def with_connection(target: Target, cid: str, body: Body) -> CheckResult | list[CheckResult]:
    """Run ``body`` on a fresh connection; connection and query errors become failed results.

    A connection failure is remembered in ``target.cache`` so that the other checks of the run
    fail at once instead of waiting for the same timeout again.
    """
    problem = target.cache.get(PROBLEM_KEY)
    if isinstance(problem, DbProblem):
        return with_finding(_problem_result(cid, problem, "connect to the database"))
    try:
        conn = connect(target)
    except ConfigError as exc:
        problem = DbProblem("config", "the database URL or password setting cannot be used.", str(exc), str(exc))
        target.cache[PROBLEM_KEY] = problem
        return with_finding(_problem_result(cid, problem, "connect to the database"))
    except (SQLAlchemyError, OSError) as exc:
        problem = classify_db_error(exc, target)
        target.cache[PROBLEM_KEY] = problem
        return with_finding(_problem_result(cid, problem, "connect to the database"))
    try:
        with conn:
            produced = body(conn)
    except (SQLAlchemyError, OSError) as exc:
        return with_finding(_problem_result(cid, classify_db_error(exc, target), "run the check's query"))
    if isinstance(produced, CheckResult):
        return with_finding(produced)
    return [with_finding(r) for r in produced]


# ------------------------------------------------------------------ checks


@register("db.connect", "The database accepts rtbook's connection", needs=("db",))
def check_connect(target: Target, cid: str) -> CheckResult:
    """Connect and read the server version, the user and the database."""
    target.cache.pop(PROBLEM_KEY, None)
    started = time.perf_counter()

    def body(conn: Connection) -> CheckResult:
        row = conn.execute(
            sa.text("SELECT current_setting('server_version'), current_user, current_database(), "
                    "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user)")
        ).one()
        elapsed = (time.perf_counter() - started) * 1000
        version, user, database, superuser = str(row[0]), str(row[1]), str(row[2]), bool(row[3])
        major = int(version.split(".")[0]) if version.split(".")[0].isdigit() else 0
        evidence = {"server_version": version, "user": user, "database": database, "superuser": superuser}
        db_name, source = realtime_value(target, "DB_NAME")
        if db_name and db_name != database:
            return CheckResult(
                cid, Status.WARN,
                summary=f"Connected to database {database!r}, but Realtime's DB_NAME is {db_name!r}.",
                detail=f"DB_NAME={db_name!r} comes from {source}. Realtime keeps its _realtime tables and the "
                "tenant's publication in that database, so the db.* and tenant.* results describe another one.",
                remedy=f"Point --db-url at /{db_name} (e.g. postgresql://{user}@HOST:PORT/{db_name}).",
                evidence={**evidence, "realtime_db_name": db_name}, metrics={"connect_ms": elapsed},
            )
        if major and major < 14:
            return CheckResult(
                cid, Status.WARN,
                summary=f"Connected as {user} to {database}, but PostgreSQL {version} is older than Realtime supports.",
                detail="Realtime's tenant migrations and the supabase/postgres image target PostgreSQL 15 and newer.",
                remedy="Upgrade to PostgreSQL 15 (supabase/postgres:15.x).",
                evidence=evidence, metrics={"connect_ms": elapsed},
            )
        return CheckResult(
            cid, Status.PASS,
            summary=f"Connected as {user} to {database} (PostgreSQL {version}) in {elapsed:.0f} ms.",
            evidence=evidence, metrics={"connect_ms": elapsed},
        )

    return with_connection(target, cid, body)  # type: ignore[return-value]


@register("db.wal_level", "wal_level is logical", needs=("db",))
def check_wal_level(target: Target, cid: str) -> CheckResult | list[CheckResult]:
    """postgres_changes need logical decoding, i.e. ``wal_level = logical``."""

    def body(conn: Connection) -> CheckResult:
        level = str(conn.execute(sa.text("SHOW wal_level")).scalar())
        if level == "logical":
            return CheckResult(cid, Status.PASS, summary="wal_level is logical.", evidence={"wal_level": level})
        return CheckResult(
            cid, Status.FAIL,
            summary=f"wal_level is {level}; Realtime's replication slot needs logical.",
            detail=f"SHOW wal_level returned {level!r}. Realtime creates a wal2json logical slot for postgres_changes "
            "and fails with 'logical decoding requires wal_level >= logical' (logged as "
            "PoolingReplicationPreparationError); clients may still see 'Subscribed to PostgreSQL' but no events "
            "arrive.",
            remedy="ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL (the setting needs a restart). "
            "The supabase/postgres image sets it by default.",
            cause="db.wal_level_not_logical", evidence={"wal_level": level},
        )

    return with_connection(target, cid, body)


@register("db.wal2json", "The wal2json output plugin is available (proved read-only)", needs=("db",))
def check_wal2json(target: Target, cid: str) -> CheckResult | list[CheckResult]:
    """Prove wal2json without writing anything: Realtime's own wal2json slot, else ``LOAD 'wal2json'``.

    Creating a slot (even a temporary one) writes to the catalog and holds WAL, so this check does
    not. Realtime's ``supabase_realtime_replication_slot...`` slot with plugin wal2json proves the
    plugin works on this server (Realtime created it). Without one, ``LOAD 'wal2json'`` proves the
    library is installed and loads into this PostgreSQL (it reads a file into this session only;
    superusers may load it, others get "access ... is not allowed" and the check says it could not
    tell). What stays unproven without a slot: that a slot can be created right now and that the
    plugin decodes format-version 2. The read-only facts that decide it are reported too (free
    slots, Realtime's DB user's REPLICATION privilege, long-open transactions, which a new logical
    slot waits for). ``realtime.postgres_changes`` with the probe proves the whole path.
    wal2json is an output plugin, not an extension, so ``pg_available_extensions`` never lists it;
    listing ``$libdir`` (``pg_ls_dir``) would need the same superuser right as ``LOAD`` and prove less.
    """

    def body(conn: Connection) -> CheckResult:
        auto = conn.execution_options(isolation_level="AUTOCOMMIT")
        level = str(auto.execute(sa.text("SHOW wal_level")).scalar())
        allowed = auto.execute(sa.text(
            "SELECT setting FROM pg_settings WHERE name = 'output_plugin_libraries'")).scalar()
        slots = [str(r[0]) for r in auto.execute(sa.text(
            r"SELECT slot_name FROM pg_replication_slots WHERE plugin = 'wal2json' "
            r"AND slot_name LIKE 'supabase\_realtime%' ORDER BY 1")).all()]
        free = int(auto.execute(sa.text(
            "SELECT current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_replication_slots)"))
            .scalar() or 0)
        db_user, user_source = realtime_value(target, "DB_USER")
        role = auto.execute(sa.text(
            "SELECT rolname, rolsuper OR rolreplication FROM pg_roles "
            "WHERE rolname = coalesce(CAST(:u AS name), current_user)"), {"u": db_user}).first()
        holders = auto.execute(sa.text(
            "SELECT count(*), coalesce(max(extract(epoch FROM now() - xact_start)), 0) FROM pg_stat_activity "
            "WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid() "
            "AND xact_start < now() - make_interval(secs => :s)"), {"s": target.timeout}).one()
        evidence: dict[str, Any] = {"wal_level": level, "realtime_wal2json_slots": slots, "free_slots": free,
                                    "output_plugin_libraries": allowed, "writes": "none (read-only check)"}
        if level != "logical":
            return CheckResult(
                cid, Status.FAIL, summary="Logical decoding is off (wal_level is not logical), so no wal2json slot "
                "can exist.",
                detail=f"SHOW wal_level returned {level!r}; Realtime's pg_create_logical_replication_slot(..., "
                "'wal2json', true) fails with 'logical decoding requires wal_level >= logical'.",
                remedy="ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL.",
                cause="db.wal_level_not_logical", see_also=("db.wal_level",), evidence=evidence,
            )
        if allowed is not None and "wal2json" not in [p.strip() for p in str(allowed).split(",")]:
            return CheckResult(
                cid, Status.FAIL, summary="This PostgreSQL build only allows the decoding plugins in "
                f"output_plugin_libraries ({allowed}); wal2json is not among them.",
                detail="Realtime's slot creation fails with this setting even for superusers.",
                remedy="Add wal2json to output_plugin_libraries (postgresql.conf) and restart PostgreSQL.",
                cause="db.wal2json_missing", evidence=evidence,
            )
        if slots:
            return CheckResult(
                cid, Status.PASS,
                summary=f"Realtime's own slot {', '.join(slots)} decodes with wal2json: the plugin works on this "
                "server (proved by Realtime, nothing written by rtbook).",
                evidence=evidence,
            )
        try:
            auto.execute(sa.text("LOAD 'wal2json'"))
        except DBAPIError as exc:
            text = _error_text(exc)
            evidence["load_error"] = text
            if "is not allowed" in text.lower():
                return CheckResult(
                    cid, Status.SKIP,
                    summary="Could not tell read-only whether wal2json is installed: Realtime has no wal2json slot "
                    "yet and this user may not LOAD it.",
                    detail=f"LOAD 'wal2json' answered: {text}. Only superusers may load a library outside "
                    "$libdir/plugins. rtbook does not create a slot to find out (that is a write).",
                    remedy="Run the check as supabase_admin, or install the probe (rtbook probe install --yes) and "
                    "let realtime.postgres_changes prove delivery end to end.",
                    evidence=evidence, see_also=("realtime.postgres_changes",),
                )
            return _wal2json_failure(cid, exc, target, evidence)
        notes = []
        if free <= 0:
            return CheckResult(
                cid, Status.FAIL, summary="wal2json loads, but every replication slot is in use, so Realtime "
                "cannot create its slot.",
                detail=f"max_replication_slots minus the slots in pg_replication_slots is {free}.",
                remedy="Drop unused slots (SELECT slot_name, active FROM pg_replication_slots; then "
                "SELECT pg_drop_replication_slot('<name>');) or raise max_replication_slots and restart.",
                cause="db.no_free_slots", see_also=("db.replication_capacity",), evidence=evidence,
            )
        if role is not None and not role[1]:
            who = f"Realtime's DB_USER {role[0]!r} ({user_source})" if db_user else f"The database user {role[0]!r}"
            return CheckResult(
                cid, Status.FAIL, summary=f"{who} has neither SUPERUSER nor REPLICATION, so it cannot create "
                "Realtime's replication slot.",
                remedy=f"ALTER ROLE {quote_ident(str(role[0]))} WITH REPLICATION; (supabase_admin has it in the "
                "Supabase image).", cause="db.no_replication_privilege", evidence=evidence,
            )
        count, oldest = int(holders[0]), float(holders[1])
        if count:
            evidence["long_transactions"] = {"count": count, "oldest_s": round(oldest)}
            return CheckResult(
                cid, Status.WARN,
                summary=f"wal2json loads, but {count} transaction(s) holding a transaction id have been open for "
                f"up to {oldest:.0f} s; creating Realtime's slot waits until they end.",
                detail="A new logical slot needs a consistent snapshot, which waits for every transaction that "
                "holds a transaction id; Realtime's poller times out and retries meanwhile.",
                remedy="Find them: SELECT pid, state, xact_start, query FROM pg_stat_activity WHERE backend_xid IS "
                "NOT NULL ORDER BY xact_start; end them (or raise --timeout if they are expected).",
                cause="db.long_transaction", evidence=evidence,
            )
        notes.append(f"{free} free slot(s)")
        if role is not None:
            notes.append(f"{role[0]} may create slots")
        return CheckResult(
            cid, Status.PASS,
            summary="The wal2json library loads on this server and wal_level is logical ("
            + ", ".join(notes) + "); nothing was written.",
            detail="Proved read-only with LOAD 'wal2json'. Not proved without a write: creating a slot and decoding "
            "format-version 2; Realtime does both when a channel subscribes to a published table "
            "(db.realtime_slots then lists its slot), and realtime.postgres_changes with the probe proves delivery.",
            evidence=evidence,
        )

    return with_connection(target, cid, body)


def _wal2json_failure(cid: str, exc: DBAPIError, target: Target, evidence: dict[str, Any]) -> CheckResult:
    text = _error_text(exc)
    low = text.lower()
    if "wal2json" in low and ("could not access file" in low or "no such file" in low):
        summary = "The wal2json output plugin is not installed on the database server."
        remedy = ("Install wal2json on the server (Debian: apt-get install postgresql-15-wal2json) or use the "
                  "supabase/postgres image, which ships it.")
        cause = "db.wal2json_missing"
    elif "statement timeout" in low:
        summary = "Loading wal2json timed out."
        remedy = "Raise --timeout if the server is just slow."
        cause = "db.other"
    else:
        summary = "Loading the wal2json library failed."
        remedy = "Read the database's message in the detail."
        cause = "db.other"
    return CheckResult(
        cid, Status.FAIL, summary=summary,
        detail=f"LOAD 'wal2json' failed: {text}. Realtime's pg_create_logical_replication_slot(..., 'wal2json', "
        "true) needs the same library (Extensions.PostgresCdcRls.Replications.prepare_replication).",
        remedy=remedy, cause=cause, see_also=("db.wal_level", "db.replication_capacity"),
        evidence={**evidence, "error": text},
    )


def _tenant_count(conn: Connection) -> int | None:
    if conn.execute(sa.text("SELECT to_regclass('_realtime.tenants')")).scalar() is None:
        return None
    return int(conn.execute(sa.text("SELECT count(*) FROM _realtime.tenants WHERE NOT coalesce(suspend, false)"))
               .scalar() or 0)


@register("db.replication_capacity", "Free replication slots and WAL senders for Realtime", needs=("db",))
def check_replication_capacity(target: Target, cid: str) -> CheckResult | list[CheckResult]:
    """Realtime needs up to two slots per tenant (CDC and broadcast-from-database) and one WAL sender."""

    def body(conn: Connection) -> CheckResult:
        row = conn.execute(
            sa.text(
                r"""
                SELECT current_setting('max_replication_slots')::int,
                       current_setting('max_wal_senders')::int,
                       (SELECT count(*) FROM pg_replication_slots),
                       (SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'supabase\_realtime%'),
                       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender'),
                       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender'
                          AND application_name = 'realtime_replication_connection')
                """
            )
        ).one()
        max_slots, max_senders, used_slots, rt_slots, used_senders, rt_senders = (int(v) for v in row)
        counted = _tenant_count(conn)
        tenants = counted if counted else 1
        need_slots = max(0, 2 * tenants - rt_slots)
        need_senders = max(0, tenants - rt_senders)
        free_slots = max_slots - used_slots
        free_senders = max_senders - used_senders
        evidence = {
            "max_replication_slots": max_slots, "slots_in_use": used_slots, "realtime_slots": rt_slots,
            "max_wal_senders": max_senders, "wal_senders_in_use": used_senders,
            "tenants": counted if counted is not None else "unknown (no _realtime.tenants), assumed 1",
            "slots_still_needed": need_slots, "wal_senders_still_needed": need_senders,
        }
        detail = (
            f"max_replication_slots={max_slots}, {used_slots} in use ({rt_slots} of them Realtime's), {free_slots} "
            f"free; max_wal_senders={max_senders}, {used_senders} in use, {free_senders} free. For {tenants} "
            f"tenant(s) Realtime needs up to {2 * tenants} slots (one wal2json slot for postgres_changes and one "
            f"pgoutput slot for broadcast-from-database per tenant) and {tenants} WAL sender(s)."
        )
        problems = []
        if free_slots < need_slots:
            problems.append(f"{free_slots} free slot(s) but Realtime still needs {need_slots}")
        if free_senders < need_senders:
            problems.append(f"{free_senders} free WAL sender(s) but Realtime still needs {need_senders}")
        if problems:
            return CheckResult(
                cid, Status.FAIL, summary="Not enough replication capacity: " + "; ".join(problems) + ".",
                detail=detail + " Realtime logs ReplicationMaxWalSendersReached or 'all replication slots are in "
                "use' and postgres_changes stay silent.",
                remedy="Drop slots nobody uses (SELECT slot_name, active FROM pg_replication_slots; then "
                "SELECT pg_drop_replication_slot('<name>');) or raise the limits: ALTER SYSTEM SET "
                f"max_replication_slots = {max_slots + need_slots - free_slots + 2}; ALTER SYSTEM SET "
                f"max_wal_senders = {max(max_senders, max_senders + need_senders - free_senders + 2)}; "
                "then restart PostgreSQL.",
                cause="db.no_free_slots", evidence=evidence,
            )
        if free_slots == need_slots:
            return CheckResult(
                cid, Status.WARN,
                summary=f"Just enough replication slots ({free_slots} free, {need_slots} needed) and no spare.",
                detail=detail + " A Realtime restart can briefly hold old temporary slots; with no spare slot "
                "the new ones fail until the old session ends.",
                remedy=f"ALTER SYSTEM SET max_replication_slots = {max_slots + 2}; then restart PostgreSQL.",
                evidence=evidence,
            )
        return CheckResult(
            cid, Status.PASS,
            summary=f"{free_slots} free replication slot(s) and {free_senders} free WAL sender(s); Realtime may still "
            f"need {need_slots} slot(s) and {need_senders} WAL sender(s).",
            detail=detail, evidence=evidence,
        )

    return with_connection(target, cid, body)


@register("db.realtime_slots", "Realtime's replication slots: active, and how far they lag", needs=("db",))
def check_realtime_slots(target: Target, cid: str) -> CheckResult | list[CheckResult]:
    """List the ``supabase_realtime%`` slots with their state and lag in bytes."""

    def body(conn: Connection) -> CheckResult:
        rows = conn.execute(
            sa.text(
                r"""
                SELECT slot_name, plugin, slot_type, temporary, active, active_pid, database, wal_status,
                       CASE WHEN pg_is_in_recovery() THEN NULL ELSE
                         pg_wal_lsn_diff(pg_current_wal_lsn(), coalesce(confirmed_flush_lsn, restart_lsn))::bigint
                       END
                FROM pg_replication_slots WHERE slot_name LIKE 'supabase\_realtime%' ORDER BY slot_name
                """
            )
        ).all()
        slots = [
            {"slot_name": r[0], "plugin": r[1], "slot_type": r[2], "temporary": bool(r[3]), "active": bool(r[4]),
             "active_pid": r[5], "database": r[6], "wal_status": r[7], "lag_bytes": r[8]}
            for r in rows
        ]
        metrics = {f"lag_bytes.{s['slot_name']}": float(s["lag_bytes"] or 0) for s in slots}
        if not slots:
            return CheckResult(
                cid, Status.PASS,
                summary="No Realtime replication slot exists (normal while nobody subscribes to postgres_changes).",
                detail="Realtime creates its temporary wal2json slot (supabase_realtime_replication_slot...) when "
                "the first postgres_changes channel joins, and it vanishes with the poller's connection.",
                evidence={"slots": []},
            )
        problems: list[str] = []
        remedies: list[str] = []
        failed = False
        for s in slots:
            name = s["slot_name"]
            if s["wal_status"] == "lost":
                failed = True
                problems.append(f"{name} has lost required WAL (wal_status=lost) and can never be read again")
                remedies.append(f"SELECT pg_drop_replication_slot('{name}');")
            elif not s["active"] and not s["temporary"]:
                problems.append(f"{name} is a permanent slot nobody reads; it keeps WAL "
                                f"({_bytes(s['lag_bytes'])} so far)")
                remedies.append(f"SELECT pg_drop_replication_slot('{name}');")
            elif s["lag_bytes"] is not None and s["lag_bytes"] > SLOT_LAG_WARN_BYTES:
                problems.append(f"{name} lags by {_bytes(s['lag_bytes'])}")
                remedies.append(
                    f"Check Realtime's logs for poller errors; if the slot is stuck, "
                    f"SELECT pg_terminate_backend({s['active_pid']}); and let Realtime recreate it."
                )
            if name == "supabase_realtime_rls":
                problems.append("supabase_realtime_rls is the slot of Realtime v0, which current images never read")
                remedies.append("SELECT pg_drop_replication_slot('supabase_realtime_rls');")
        listing = "; ".join(
            f"{s['slot_name']} ({s['plugin']}, {'temporary' if s['temporary'] else 'permanent'}, "
            f"{'active pid ' + str(s['active_pid']) if s['active'] else 'inactive'}, lag {_bytes(s['lag_bytes'])})"
            for s in slots
        )
        if problems:
            return CheckResult(
                cid, Status.FAIL if failed else Status.WARN,
                summary="Realtime slot problem: " + "; ".join(dict.fromkeys(problems)) + ".",
                detail="Slots found: " + listing + ".",
                remedy=" ".join(dict.fromkeys(remedies)),
                cause="db.slot_lost" if failed else "db.slot_idle",
                evidence={"slots": slots}, metrics=metrics,
            )
        return CheckResult(
            cid, Status.PASS, summary=f"{len(slots)} Realtime slot(s), none stuck: {listing}.",
            evidence={"slots": slots}, metrics=metrics,
        )

    return with_connection(target, cid, body)


def _bytes(value: Any) -> str:
    if value is None:
        return "unknown"
    n = float(value)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


@register("db.publication", "The supabase_realtime publication holds the tables", needs=("db",))
def check_publication(target: Target, cid: str) -> CheckResult | list[CheckResult]:
    """The publication exists, lists its tables, and contains the tables the user named."""
    def body(conn: Connection) -> CheckResult:
        pub = _publication_name(target, conn)
        prow = conn.execute(
            sa.text("SELECT puballtables, pubinsert, pubupdate, pubdelete FROM pg_publication WHERE pubname = :p"),
            {"p": pub},
        ).first()
        if prow is None:
            return CheckResult(
                cid, Status.FAIL, summary=f"The publication {pub} does not exist.",
                detail=f"Realtime subscribes postgres_changes only for tables in publication {pub!r} (the "
                "extension's 'publication' setting). Without it every postgres_changes join is refused with "
                "'Unable to subscribe to changes with given parameters'.",
                remedy=f"CREATE PUBLICATION {quote_ident(pub)};"
                + "".join(f" ALTER PUBLICATION {quote_ident(pub)} ADD TABLE {parse_table(t).sql};"
                          for t in target.tables),
                cause="db.publication_missing",
            )
        tables = publication_tables(conn, pub) or []
        names = [str(t) for t in tables]
        ops = [op for op, on in zip(("insert", "update", "delete"), prow[1:], strict=True) if on]
        evidence: dict[str, Any] = {"publication": pub, "tables": names, "all_tables": bool(prow[0]),
                                    "publishes": ops}
        wanted = [parse_table(t) for t in target.tables]
        missing = [t for t in wanted if t not in tables]
        if missing:
            absent = [t for t in missing if not _table_exists(conn, t)]
            present = [t for t in missing if t not in absent]
            parts = []
            if present:
                parts.append(f"{', '.join(map(str, present))} {'is' if len(present) == 1 else 'are'} not in {pub}")
            if absent:
                parts.append(f"{', '.join(map(str, absent))} do{'es' if len(absent) == 1 else ''} not exist")
            remedy = " ".join(f"ALTER PUBLICATION {quote_ident(pub)} ADD TABLE {t.sql};" for t in present)
            if absent:
                remedy += (" " if remedy else "") + "Create the missing table(s) or fix the name(s) you passed."
            return CheckResult(
                cid, Status.FAIL, summary="; ".join(parts) + ".",
                detail=f"Publication {pub} holds: {', '.join(names) or 'no tables'}. A postgres_changes join "
                "on a table outside it gets the system error 'Unable to subscribe to changes with given "
                "parameters' and no events.",
                remedy=remedy, cause="db.table_not_in_publication", evidence=evidence,
            )
        if missing_ops := [op for op in ("insert", "update", "delete") if op not in ops]:
            return CheckResult(
                cid, Status.WARN,
                summary=f"{pub} does not publish {', '.join(missing_ops)}; those events are never delivered.",
                detail=f"pg_publication says the publication publishes only {', '.join(ops) or 'nothing'}.",
                remedy=f"ALTER PUBLICATION {quote_ident(pub)} SET (publish = 'insert, update, delete');",
                evidence=evidence,
            )
        if not tables:
            return CheckResult(
                cid, Status.WARN, summary=f"The publication {pub} exists but holds no tables.",
                detail="No postgres_changes subscription can succeed until a table is added (Studio's "
                "'Replication' toggle does the same).",
                remedy=_add_tables_remedy(conn, pub),
                cause="db.publication_empty", evidence=evidence,
            )
        return CheckResult(
            cid, Status.PASS,
            summary=f"{pub} holds {len(tables)} table(s): {', '.join(names)}"
            + (f"; {target.tables_from or f'the {len(wanted)} you named'} {'are' if len(wanted) > 1 else 'is'} in it."
               if wanted else "."),
            evidence=evidence,
        )

    return with_connection(target, cid, body)


def _add_tables_remedy(conn: Connection, pub: str) -> str:
    """ALTER PUBLICATION for the application tables that exist (a few), so the remedy names real tables."""
    rows = conn.execute(sa.text(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND n.nspname NOT IN "
        "('pg_catalog', 'information_schema', 'realtime', '_realtime', 'auth', 'storage', 'extensions', "
        "'graphql', 'graphql_public', 'vault', 'pgsodium', 'supabase_functions', 'supabase_migrations', "
        ":probe) AND n.nspname NOT LIKE 'pg_%' ORDER BY 1, 2 LIMIT 5"), {"probe": probe_sql.SCHEMA}).all()
    if not rows:
        return (f"Create the tables clients subscribe to, then ALTER PUBLICATION {quote_ident(pub)} ADD TABLE "
                "each of them (the database holds no application table yet).")
    names = ", ".join(TableRef(r[0], r[1]).sql for r in rows)
    return (f"ALTER PUBLICATION {quote_ident(pub)} ADD TABLE {names}; (keep only the tables clients subscribe to; "
            "these are the database's application tables).")


def _table_exists(conn: Connection, ref: TableRef) -> bool:
    return conn.execute(
        sa.text("SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = :s AND c.relname = :t AND c.relkind IN ('r', 'p')"),
        {"s": ref.schema, "t": ref.name},
    ).first() is not None


Verdict = tuple[Status, str, str, str]  # status, finding text, remedy SQL, finding id


def _per_table_check(
    target: Target, cid: str, judge: Callable[[Connection, TableInfo], Verdict],
) -> CheckResult | list[CheckResult]:
    """Run ``judge`` on each table to check and fold the verdicts into one result."""

    def body(conn: Connection) -> CheckResult:
        tables, scope = _tables_to_check(conn, target)
        if not tables:
            return CheckResult(
                cid, Status.SKIP,
                summary=f"No table to check: the {_publication_name(target)} publication is empty or missing and "
                "no table was named.",
                remedy="Name tables with --table schema.table (or the tables parameter).",
                see_also=("db.publication",),
            )
        verdicts: list[tuple[TableInfo, Status, str, str, str]] = []
        for ref in tables:
            info = table_info(conn, ref, _publication_name(target, conn))
            if not info.exists:
                verdicts.append((info, Status.FAIL, f"{ref} does not exist", "Fix the table name or create it.",
                                 "db.table_missing"))
                continue
            verdicts.append((info, *judge(conn, info)))
        worst = _worst(v[1] for v in verdicts)
        bad = [v for v in verdicts if v[1] is not Status.PASS]
        evidence = {"scope": scope, "tables": {str(v[0].ref): {"status": v[1].value, "finding": v[2]}
                                               for v in verdicts}}
        if not bad:
            return CheckResult(
                cid, Status.PASS, summary=f"{len(verdicts)} table(s) OK ({scope}): "
                + "; ".join(f"{v[0].ref}: {v[2]}" for v in verdicts) + ".",
                evidence=evidence,
            )
        return CheckResult(
            cid, worst,
            summary="; ".join(f"{v[0].ref}: {v[2]}" for v in bad) + ".",
            detail=f"Checked {scope}: " + "; ".join(f"{v[0].ref} {v[1].value} ({v[2]})" for v in verdicts) + ".",
            remedy=" ".join(dict.fromkeys(v[3] for v in bad if v[3])),
            # The worst table's finding names the cause.
            cause=next(v[4] for v in bad if v[1] is worst), evidence=evidence,
        )

    return with_connection(target, cid, body)


def _worst(statuses: Iterable[Status]) -> Status:
    order = [Status.PASS, Status.SKIP, Status.WARN, Status.FAIL, Status.ERROR]
    return max(statuses, key=order.index, default=Status.PASS)


@register("db.replica_identity", "REPLICA IDENTITY gives UPDATE/DELETE events their old values", needs=("db",))
def check_replica_identity(target: Target, cid: str) -> CheckResult | list[CheckResult]:
    """FULL gives complete old records; DEFAULT gives only the primary key; NOTHING breaks UPDATE/DELETE."""

    def judge(_conn: Connection, info: TableInfo) -> Verdict:
        ri = info.replica_identity
        full = f"ALTER TABLE {info.ref.sql} REPLICA IDENTITY FULL;"
        if ri == "f":
            return Status.PASS, "REPLICA IDENTITY FULL", "", ""
        if ri == "i":
            return Status.PASS, "REPLICA IDENTITY USING INDEX (old records carry the index columns)", "", ""
        if ri == "n":
            return (Status.FAIL, "REPLICA IDENTITY NOTHING: UPDATE and DELETE on a published table fail with "
                    "'cannot update table ... does not have a replica identity'", full, cid)
        if not info.primary_key:
            return (Status.FAIL, "REPLICA IDENTITY DEFAULT without a primary key: old records are empty and "
                    "UPDATE/DELETE fail once the table is published", full, cid)
        return (Status.WARN, f"REPLICA IDENTITY DEFAULT: old_record of UPDATE/DELETE holds only "
                f"{', '.join(info.primary_key)}, and DELETE filters on other columns never match", full,
                cid)

    return _per_table_check(target, cid, judge)


@register("db.primary_key", "Every checked table has a primary key", needs=("db",))
def check_primary_key(target: Target, cid: str) -> CheckResult | list[CheckResult]:
    """Without a primary key Realtime sends ``Error 400: Bad Request, no primary key`` instead of rows."""

    def judge(_conn: Connection, info: TableInfo) -> Verdict:
        if info.primary_key:
            return Status.PASS, f"primary key ({', '.join(info.primary_key)})", "", ""
        return (Status.FAIL, "no primary key: subscribers get errors ['Error 400: Bad Request, no primary key'] "
                "instead of records", f"ALTER TABLE {info.ref.sql} ADD PRIMARY KEY (id);  -- use your key column(s)",
                "db.no_primary_key")

    return _per_table_check(target, cid, judge)


@dataclass(frozen=True)
class RoleAccess:
    """Whether one role can receive a table's changes."""

    role: str
    verdict: str  # bypass | policies | no_policy | no_privilege | no_role | rls_off
    policies: tuple[str, ...] = ()


def role_access(conn: Connection, info: TableInfo, roles: Sequence[str] = SUPABASE_ROLES) -> list[RoleAccess]:
    """For each role: bypasses RLS, has SELECT policies (named), or receives nothing."""
    policies = conn.execute(
        sa.text(
            "SELECT policyname, permissive, roles::text[], cmd FROM pg_policies "
            "WHERE schemaname = :s AND tablename = :t AND cmd IN ('SELECT', 'ALL')"
        ),
        {"s": info.ref.schema, "t": info.ref.name},
    ).all()
    out = []
    for role in roles:
        flags = conn.execute(
            sa.text("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = :r"), {"r": role}
        ).first()
        if flags is None:
            out.append(RoleAccess(role, "no_role"))
            continue
        if not info.privileges.get(role, False):
            out.append(RoleAccess(role, "no_privilege"))
            continue
        if not info.rls:
            out.append(RoleAccess(role, "rls_off"))
            continue
        if flags[0] and not info.force_rls:
            out.append(RoleAccess(role, "bypass"))
            continue
        mine = [p for p in policies if p[1] == "PERMISSIVE" and (role in p[2] or "public" in p[2])]
        if mine:
            out.append(RoleAccess(role, "policies", tuple(str(p[0]) for p in mine)))
        else:
            out.append(RoleAccess(role, "no_policy"))
    return out


@register("db.rls", "RLS is on and each role has a SELECT policy", needs=("db",))
def check_rls(target: Target, cid: str) -> CheckResult | list[CheckResult]:
    """Realtime checks each change against the subscriber's role by running a SELECT as that role."""

    def judge(conn: Connection, info: TableInfo) -> Verdict:
        access = role_access(conn, info)
        t = info.ref.sql
        if not info.rls:
            no_priv = [a.role for a in access if a.verdict == "no_privilege"]
            return (Status.WARN, "RLS is off: every subscriber whose filter matches receives every row"
                    + (f" (no SELECT privilege for {', '.join(no_priv)})" if no_priv else ""),
                    f"ALTER TABLE {t} ENABLE ROW LEVEL SECURITY; then CREATE POLICY ... ON {t} FOR SELECT "
                    "TO authenticated USING (...);", "db.rls_off")
        parts = []
        remedies = []
        finding = ""
        status = Status.PASS
        for a in access:
            if a.verdict == "policies":
                parts.append(f"{a.role}: {', '.join(a.policies)}")
            elif a.verdict == "bypass":
                parts.append(f"{a.role}: bypasses RLS")
            elif a.verdict == "no_role":
                parts.append(f"{a.role}: role does not exist")
            elif a.verdict == "no_privilege":
                status = _worst((status, Status.WARN))
                parts.append(f"{a.role}: no SELECT privilege, receives no events ('Error 401: Unauthorized')")
                remedies.append(f"GRANT SELECT ON {t} TO {a.role};")
                finding = finding or "db.rls_no_privilege"
            elif a.verdict == "no_policy":
                status = _worst((status, Status.WARN))
                parts.append(f"{a.role}: no SELECT policy, receives no INSERT/UPDATE events")
                finding = "db.rls_no_policy"
                remedies.append(
                    f"CREATE POLICY {quote_ident(info.ref.name + '_select_' + a.role)} ON {t} FOR SELECT "
                    f"TO {a.role} USING (true);  -- narrow the USING clause to the rows {a.role} may see"
                )
        return status, "RLS on; " + "; ".join(parts), " ".join(remedies), finding

    return _per_table_check(target, cid, judge)


@register("db.realtime_connections", "Realtime's sessions in pg_stat_activity", needs=("db",))
def check_realtime_connections(target: Target, cid: str) -> CheckResult | list[CheckResult]:
    """Count Realtime's sessions by application_name; none means Realtime is not using this database."""

    def body(conn: Connection) -> CheckResult:
        rows = conn.execute(
            sa.text(
                r"""
                SELECT application_name, coalesce(state, ''), count(*), coalesce(max(client_addr::text), 'local')
                FROM pg_stat_activity
                WHERE application_name = ANY(:names) OR application_name LIKE 'cluster\_node\_%'
                GROUP BY 1, 2 ORDER BY 1, 2
                """
            ),
            {"names": list(REALTIME_APPLICATION_NAMES)},
        ).all()
        sessions: dict[str, dict[str, int]] = {}
        clients: set[str] = set()
        for name, state, count, addr in rows:
            sessions.setdefault(str(name), {})[str(state) or "unknown"] = int(count)
            clients.add(str(addr))
        total = sum(sum(v.values()) for v in sessions.values())
        evidence = {"sessions": sessions, "client_addresses": sorted(clients)}
        if not sessions:
            return CheckResult(
                cid, Status.WARN, summary="No Realtime session is connected to this database.",
                detail="pg_stat_activity has no session named " + ", ".join(REALTIME_APPLICATION_NAMES[:4])
                + ", ... Realtime keeps supabase_mt_realtime sessions for its own metadata while it runs against "
                "this database; tenant sessions (realtime_connect, realtime_rls) start with the first client.",
                remedy="Check that Realtime runs (docker ps) and that its DB_HOST/DB_PORT/DB_NAME point at this "
                "database; then connect a client and run this check again.",
                cause="db.realtime_not_connected", evidence=evidence,
            )
        listing = ", ".join(f"{name} ×{sum(states.values())}" for name, states in sessions.items())
        if "realtime_rls" not in sessions and "realtime_connect" not in sessions:
            note = " No tenant session yet (they start with the first client)."
        else:
            note = ""
        return CheckResult(
            cid, Status.PASS, summary=f"{total} Realtime session(s): {listing}.{note}",
            evidence=evidence, metrics={"sessions": float(total)},
        )

    return with_connection(target, cid, body)
