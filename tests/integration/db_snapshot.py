"""What a database looks like, to prove that a run of checks changed nothing (no DDL, no write).

Three independent witnesses, because each alone has a blind spot:

* :func:`snapshot`: counts and hashes of the catalog rows that DDL changes (namespaces, relations,
  columns, policies, publications and their tables, comments, roles, triggers, functions), the
  contents of every user table, and the replication slots not owned by Realtime. Equal before and
  after means nothing was left changed, but a table created and dropped again leaves no trace.
* :func:`oid_counter`: PostgreSQL hands out object ids from one counter; creating any object (even
  one dropped at once) advances it. Read by allocating one large-object id (the reader's own cost is
  one id per read).
* :class:`StatementLog`: with ``log_statement = 'all'`` and the application name in each line, every
  statement rtbook's sessions (``application_name=rtbook``) ran; :func:`writes` keeps those that write
  (DDL, DML, slot functions), which also catches a slot created and dropped or a row inserted and
  deleted again.

Realtime's own activity is not rtbook's: its temporary ``supabase_realtime%`` slots come and go with
subscribers, and its ``realtime`` schema holds its subscription rows; both are left out.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Runs one statement as a superuser, in autocommit, with psycopg parameters only when given (so a
# literal % needs no escaping otherwise); returns the rows.
Sql = Callable[..., list[tuple[Any, ...]]]

_TEMP = r"^pg_(toast_)?temp"
# Catalog rows whose change is DDL; planner statistics (relpages, reltuples...) are left out on purpose.
_CATALOG: dict[str, str] = {
    "pg_namespace": f"SELECT oid, nspname, nspowner, nspacl::text FROM pg_namespace WHERE nspname !~ '{_TEMP}'",
    "pg_class": "SELECT c.oid, c.relname, c.relnamespace, c.relkind, c.relowner, c.relacl::text, c.relrowsecurity, "
                "c.relforcerowsecurity, c.relreplident, c.relispartition FROM pg_class c "
                f"JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname !~ '{_TEMP}'",
    "pg_attribute": "SELECT a.attrelid, a.attname, a.attnum, a.atttypid, a.attnotnull, a.attisdropped, "
                    "a.attidentity, a.attacl::text FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
                    f"JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname !~ '{_TEMP}'",
    "pg_policy": "SELECT oid, polname, polrelid, polcmd, polroles::text, pg_get_expr(polqual, polrelid), "
                 "pg_get_expr(polwithcheck, polrelid) FROM pg_policy",
    "pg_publication": "SELECT oid, pubname, puballtables, pubinsert, pubupdate, pubdelete, pubtruncate "
                      "FROM pg_publication",
    "pg_publication_rel": "SELECT oid, prpubid, prrelid FROM pg_publication_rel",
    "pg_description": "SELECT objoid, classoid, objsubid, description FROM pg_description",
    "pg_trigger": "SELECT oid, tgrelid, tgname, tgenabled FROM pg_trigger",
    "pg_proc": "SELECT p.oid, p.proname, p.pronamespace, md5(p.prosrc) FROM pg_proc p "
               "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname NOT IN ('pg_catalog', "
               "'information_schema')",
    "pg_roles": "SELECT oid, rolname, rolsuper, rolreplication, rolbypassrls, rolcanlogin FROM pg_roles",
    "pg_event_trigger": "SELECT oid, evtname, evtenabled FROM pg_event_trigger",
}
# Schemas whose rows are not user data: the catalogs, and Realtime's own (realtime.subscription rows are
# written by Realtime at every postgres_changes join).
_NOT_USER = ("pg_catalog", "information_schema", "pg_toast", "realtime")


def _digest(rows: list[tuple[Any, ...]]) -> tuple[int, str]:
    lines = sorted("\x1f".join("" if v is None else str(v) for v in row) for row in rows)
    return len(lines), hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def snapshot(sql: Sql) -> dict[str, tuple[int, str]]:
    """Count and hash of each catalog part, of each user table's rows and of the non-Realtime slots."""
    out = {name: _digest(sql(query)) for name, query in _CATALOG.items()}
    tables = sql(
        "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'p') AND n.nspname <> ALL(%s) AND n.nspname !~ '^pg_(toast_)?temp' ORDER BY 1",
        (list(_NOT_USER),),
    )
    for (table,) in tables:
        out[f"rows {table}"] = _digest(sql(f"SELECT t::text FROM {table} t"))
    out["replication slots"] = _digest(sql(
        r"SELECT slot_name, plugin, slot_type, temporary, database FROM pg_replication_slots "
        r"WHERE slot_name NOT LIKE 'supabase\_realtime%'"))
    return out


def differences(before: dict[str, tuple[int, str]], after: dict[str, tuple[int, str]]) -> dict[str, Any]:
    """The parts that differ, with their (count, hash) before and after."""
    return {k: (before.get(k), after.get(k)) for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)}


def oid_counter(sql: Sql) -> int:
    """The object-id counter's position (allocates, then frees, one large-object id)."""
    ((oid,),) = sql("SELECT lo_create(0)::bigint")
    sql("SELECT lo_unlink(%s::oid)", (oid,))
    return int(oid)


_LINE = re.compile(r"^\S+ \S+ \S+ \[\d+\] app=(?P<app>.*?): (?P<level>[A-Z]+):  (?P<msg>.*)$")
_STATEMENT = re.compile(r"^(?:statement|execute [^:]*): (?P<sql>.*)$", re.S)
_LITERAL = re.compile(r"'(?:[^']|'')*'")
_WRITE = re.compile(
    r"\b(INSERT|UPDATE|DELETE|MERGE|TRUNCATE|COPY|CREATE|ALTER|DROP|GRANT|REVOKE|COMMENT|REINDEX|VACUUM|ANALYZE|"
    r"CLUSTER|REFRESH|LOCK|NOTIFY|DO|CALL|SECURITY\s+LABEL|"
    r"pg_create_\w+_slot|pg_drop_replication_slot|pg_logical_slot_get_\w+|pg_replication_slot_advance|"
    r"nextval|setval|lo_\w+|pg_terminate_backend|pg_cancel_backend)\b",
    re.I,
)


class StatementLog:
    """Turn on ``log_statement = 'all'`` with the application name in each line, and read what was logged."""

    def __init__(self, sql: Sql, log_file: str | Path) -> None:
        self.sql = sql
        self.path = Path(log_file)
        sql("ALTER SYSTEM SET log_statement = 'all'")
        sql("ALTER SYSTEM SET log_line_prefix = '%m [%p] app=%a: '")
        sql("SELECT pg_reload_conf()")
        time.sleep(1.0)  # the postmaster applies the reload asynchronously; new sessions then log
        self.mark()

    def mark(self) -> None:
        """Read only what is logged from now on."""
        self.offset = self.path.stat().st_size

    def statements(self, app: str = "rtbook") -> list[str]:
        """Every statement a session named ``app`` ran since the mark."""
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            text = fh.read().decode(errors="replace")
        found: list[str] = []
        current: list[str] | None = None
        for line in text.splitlines():
            m = _LINE.match(line)
            if m is None:
                if current is not None:
                    current.append(line)  # a continuation line of a multi-line statement
                continue
            if current is not None:
                found.append("\n".join(current))
                current = None
            if m.group("app") != app or m.group("level") != "LOG":
                continue
            s = _STATEMENT.match(m.group("msg"))
            if s is not None:
                current = [s.group("sql")]
        if current is not None:
            found.append("\n".join(current))
        return found

    def close(self) -> None:
        self.sql("ALTER SYSTEM RESET log_statement")
        self.sql("ALTER SYSTEM RESET log_line_prefix")
        self.sql("SELECT pg_reload_conf()")


def writes(statements: list[str]) -> list[str]:
    """The statements that write (string literals ignored, so a word inside quotes does not count)."""
    return [s for s in statements if _WRITE.search(_LITERAL.sub("''", s))]
