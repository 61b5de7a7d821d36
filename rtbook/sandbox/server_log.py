"""Log lines of the Realtime-compatible server in Realtime's console format.

Realtime's formatter (``config/config.exs``, ``:default_formatter``) is ``$time $metadata[$level] $message``
with the metadata keys ``request_id project external_id application_name error_code sub iss exp`` in
that order, each rendered ``key=value `` when set. So an error of a channel looks like
``10:00:00.123 project=realtime-dev external_id=realtime-dev error_code=TenantNotFound [error] TenantNotFound: …``.

Sockets and channels run with ``Logger.put_process_level(self(), log_level)`` where ``log_level`` is the
client's ``log_level`` parameter (default ``error``): their warnings and infos are dropped unless the
client asked for them. :func:`emit` takes that level as ``socket_level``.

Non-string reasons are rendered as Elixir's ``inspect(term, pretty: true)`` would show them; Postgrex
errors become ``%Postgrex.Error{…}`` structs built from the psycopg diagnostics.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg

__all__ = [
    "LEVELS",
    "Atom",
    "Formatter",
    "emit",
    "inspect",
    "inspect_pg_error",
    "log",
]

log = logging.getLogger("rtbook.sandbox.server")

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_META_ORDER = ("request_id", "project", "external_id", "application_name", "error_code", "sub", "iss", "exp")


def emit(
    level: int,
    message: str,
    *,
    code: str | None = None,
    tenant: str | None = None,
    claims: Mapping[str, Any] | None = None,
    socket_level: str | None = None,
    with_code_metadata: bool = True,
) -> None:
    """Log ``"<code>: <message>"`` (or ``message``) with Realtime's metadata.

    ``claims`` adds ``sub``/``iss``/``exp`` for errors and warnings (``Logging.update_metadata_with_token_claims``);
    ``socket_level`` drops lines below the client's ``log_level``; ``with_code_metadata=False`` logs the code in the
    text only (the rate counter's critical line has no ``error_code``).
    """
    if socket_level is not None and level < LEVELS.get(socket_level, logging.ERROR):
        return
    meta: dict[str, str] = {}
    if tenant:
        meta["project"] = tenant
        meta["external_id"] = tenant
    if code and with_code_metadata:
        meta["error_code"] = code
    if claims and level >= logging.WARNING:
        for key in ("sub", "iss", "exp"):
            if claims.get(key) is not None:
                meta[key] = str(claims[key])
    text = f"{code}: {message}" if code else message
    log.log(level, text, extra={"rt_meta": meta})


class Formatter(logging.Formatter):
    """``HH:MM:SS.mmm key=value … [level] message`` (UTC, no date, as the Realtime image prints)."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}"
        meta = getattr(record, "rt_meta", None) or {}
        rendered = "".join(f"{k}={meta[k]} " for k in _META_ORDER if k in meta)
        return f"{stamp} {rendered}[{record.levelname.lower()}] {record.getMessage()}"


# --------------------------------------------------------------------------------------------
# Elixir inspect


class Atom(str):
    """A string rendered as an Elixir atom (``:name``)."""


class Struct:
    """An Elixir struct for :func:`inspect`: ``%Name{k: v, …}`` with fields in definition order."""

    def __init__(self, name: str, fields: Sequence[tuple[str, Any]]) -> None:
        self.name = name
        self.fields = list(fields)


_WIDTH = 98


def _string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{escaped}"'


def _flat(term: Any) -> str:
    if term is None:
        return "nil"
    if isinstance(term, bool):
        return "true" if term else "false"
    if isinstance(term, Atom):
        return f":{term}"
    if isinstance(term, str):
        return _string(term)
    if isinstance(term, int | float):
        return str(term)
    if isinstance(term, tuple):
        return "{" + ", ".join(_flat(t) for t in term) + "}"
    if isinstance(term, list):
        return "[" + ", ".join(_flat(t) for t in term) + "]"
    if isinstance(term, Struct):
        return f"%{term.name}{{" + ", ".join(f"{k}: {_flat(v)}" for k, v in term.fields) + "}"
    if isinstance(term, dict):
        return "%{" + ", ".join(f"{_key(k)}{_flat(v)}" for k, v in term.items()) + "}"
    return _string(str(term))


def _key(key: Any) -> str:
    # Atom keys (plain str here) print as `key: `, any other term as `term => `.
    return f"{key}: " if isinstance(key, str) and not isinstance(key, Atom) else f"{_flat(key)} => "


def _pretty(term: Any, indent: int, used: int) -> str:
    """``term`` starting at column ``used`` on a line indented by ``indent`` (Inspect.Algebra nests by 2)."""
    flat = _flat(term)
    if used + len(flat) <= _WIDTH:
        return flat
    inner_indent = indent + 2
    pad = " " * inner_indent
    if isinstance(term, Struct | dict):
        items = term.fields if isinstance(term, Struct) else list(term.items())
        opener = f"%{term.name}{{" if isinstance(term, Struct) else "%{"
        inner = ",\n".join(
            f"{pad}{_key(k)}{_pretty(v, inner_indent, inner_indent + len(_key(k)))}" for k, v in items
        )
        return f"{opener}\n{inner}\n{' ' * indent}}}"
    if isinstance(term, list | tuple):
        open_, close = ("[", "]") if isinstance(term, list) else ("{", "}")
        inner = ",\n".join(f"{pad}{_pretty(v, inner_indent, inner_indent)}" for v in term)
        return f"{open_}\n{inner}\n{' ' * indent}{close}"
    return flat


def inspect(term: Any) -> str:
    """Elixir's ``inspect(term, pretty: true)`` for the terms the stand-in logs."""
    return _pretty(term, 0, 0)


def _condition(sqlstate: str | None) -> str:
    if not sqlstate:
        return "unknown"
    cls = psycopg.errors.lookup(sqlstate)
    name = cls.__name__ if cls is not None else "unknown"
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def inspect_pg_error(exc: BaseException, connection_id: int | None = None) -> Struct:
    """A psycopg error as Postgrex shows it: ``%Postgrex.Error{}`` for server errors, else
    ``%DBConnection.ConnectionError{}``."""
    if isinstance(exc, psycopg.Error) and exc.sqlstate:
        diag = exc.diag
        postgres: dict[str, Any] = {"code": Atom(_condition(exc.sqlstate))}
        # Postgrex.Error's postgres map, keys sorted as Elixir prints small maps.
        optional = {
            "column": diag.column_name, "constraint": diag.constraint_name, "detail": diag.message_detail,
            "file": diag.source_file, "hint": diag.message_hint, "line": diag.source_line,
            "message": diag.message_primary, "pg_code": exc.sqlstate, "routine": diag.source_function,
            "schema": diag.schema_name, "severity": diag.severity, "table": diag.table_name,
            "unknown": diag.severity,
        }
        for key in sorted(optional):
            if optional[key] is not None:
                postgres[key] = optional[key]
        return Struct("Postgrex.Error", [("message", None), ("postgres", postgres),
                                         ("connection_id", connection_id), ("query", None)])
    return Struct("DBConnection.ConnectionError", [("message", connection_message(exc)),
                                                   ("severity", Atom("error")), ("reason", Atom("error"))])


def connection_message(exc: BaseException) -> str:
    """DBConnection's wording for a connection that could not be made (``tcp connect (host:port): …``)."""
    text = str(exc).strip()
    m = re.search(r'connection to server at "([^"]+)"(?: \([^)]*\))?, port (\d+) failed: ([^\n]+)', text)
    if m:
        host, port, why = m.groups()
        low = why.lower()
        if "connection refused" in low:
            return f"tcp connect ({host}:{port}): connection refused - :econnrefused"
        if "timeout" in low or "timed out" in low:
            return f"tcp connect ({host}:{port}): timeout"
        return f"tcp connect ({host}:{port}): {why.strip()}"
    return text.splitlines()[0] if text else type(exc).__name__
