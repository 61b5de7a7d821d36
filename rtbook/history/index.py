"""Reading runs into the history index and asking it questions.

A run enters the index as a :class:`RunSnapshot`: its id (the record folder's name, or the
report file's stem for ``rtbook check --output``), the target it ran against, when it started,
the last status of every check and every latency the checks measured. Records are already
redacted when they are written; a check report is redacted by the caller before it is indexed.

The database is SQLite at ``outputs/history.sqlite`` unless an SQLAlchemy URL is given
(``--history-url`` or ``RTBOOK_HISTORY_URL``); the tables are created on first use.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rtbook.exceptions import ConfigError, ConnectionSetupError, InputError
from rtbook.results import Report, Status

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import Session

__all__ = [
    "HISTORY_URL_ENV",
    "HistoryIndex",
    "RunSnapshot",
    "failing_since",
    "history_url",
    "snapshot_from_record",
    "snapshot_from_report",
    "target_key",
]

HISTORY_URL_ENV = "RTBOOK_HISTORY_URL"
_FAILING = frozenset({Status.FAIL.value, Status.ERROR.value})


@dataclass(frozen=True)
class RunSnapshot:
    """What the index keeps of one run.

    Attributes:
        id: the run id (record folder name, or report file stem).
        target: which target it ran against (see :func:`target_key`).
        kind: ``run`` (a runbook record) or ``check`` (an ``rtbook check`` report).
        started: ISO-8601 UTC start time.
        record: where the run's files are.
        exit_code: the command's exit code (0 nothing failed).
        statuses: check id -> status value, the last result per check id.
        summaries: check id -> the result's one-line summary.
        metrics: (check id, metric name) -> milliseconds.
    """

    id: str
    target: str
    kind: str
    started: str
    record: str
    exit_code: int
    statuses: Mapping[str, str] = field(default_factory=dict)
    summaries: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[tuple[str, str], float] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """How many checks ended with each status."""
        out = {s.value: 0 for s in Status}
        for status in self.statuses.values():
            out[status] = out.get(status, 0) + 1
        return out

    @property
    def failing(self) -> set[str]:
        """The check ids that failed or errored."""
        return {cid for cid, status in self.statuses.items() if status in _FAILING}


def target_key(params: Mapping[str, Any]) -> str:
    """How the index names a target: ``sandbox``, or ``stack <stack_dir>``, plus the tenant when one was named."""
    kind = str(params.get("target_kind") or "sandbox")
    key = kind if kind == "sandbox" else f"{kind} {params.get('stack_dir') or '?'}"
    tenant = str(params.get("tenant") or "")
    return f"{key} tenant {tenant}" if tenant else key


def _metrics_of(check_id: str, metrics: Mapping[str, Any]) -> Iterator[tuple[tuple[str, str], float]]:
    for name, value in metrics.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            yield (check_id, str(name)), float(value)


def snapshot_from_report(
    report: Report, *, run_id: str, target: str, started: str, record: str, exit_code: int, kind: str = "check"
) -> RunSnapshot:
    """A snapshot of ``report`` (already redacted); a later result with the same check id wins."""
    statuses: dict[str, str] = {}
    summaries: dict[str, str] = {}
    metrics: dict[tuple[str, str], float] = {}
    for result in report:
        statuses[result.id] = result.status.value
        summaries[result.id] = result.summary
        metrics.update(_metrics_of(result.id, result.metrics))
    return RunSnapshot(run_id, target, kind, started, record, exit_code, statuses, summaries, metrics)


def snapshot_from_record(record_dir: str | Path) -> RunSnapshot:
    """Read a ``rtbook run`` record folder (its ``summary.json``) as a snapshot.

    Raises:
        InputError: when the folder holds no readable ``summary.json``.
    """
    folder = Path(record_dir)
    path = folder / "summary.json"
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise InputError(f"{folder} is not a run record (no readable summary.json: {exc.strerror}); "
                         "pass a folder written by 'rtbook run' or a run id from 'rtbook history'") from exc
    except ValueError as exc:
        raise InputError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("notebooks"), list):
        raise InputError(f"{path} is not an rtbook summary (no 'notebooks' list)")
    report = Report()
    for notebook in data["notebooks"]:
        report.extend(Report.from_dict({"results": notebook.get("results") or []}))
    return snapshot_from_report(
        report,
        run_id=folder.resolve().name,
        target=target_key(data.get("parameters") or {}),
        started=str(data.get("started") or ""),
        record=str(folder.resolve()),
        exit_code=int(data.get("exit_code", 1)),
        kind="run",
    )


def history_url(url: str | None = None, output_dir: str | Path = "outputs") -> str:
    """The index's SQLAlchemy URL: ``url``, else ``$RTBOOK_HISTORY_URL``, else SQLite in ``output_dir``."""
    chosen = url or os.environ.get(HISTORY_URL_ENV, "")
    if chosen:
        return chosen
    return f"sqlite:///{(Path(output_dir) / 'history.sqlite').resolve()}"


def _shown(url: str) -> str:
    # A database URL may carry a password: never print it.
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: show it with anything secret-looking masked
        from rtbook.secrets import Redactor

        return Redactor().text(url)


def _why(exc: BaseException) -> str:
    # The driver's exception (sqlite3.OperationalError...) without its message, which may quote the URL.
    return type(getattr(exc, "orig", None) or exc).__name__


class HistoryIndex:
    """The history database: add runs, list them, and answer "since when is this check failing"."""

    def __init__(self, url: str | None = None, *, output_dir: str | Path = "outputs") -> None:
        import sqlalchemy as sa
        from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

        from rtbook.history.models import Base

        self.url = history_url(url, output_dir)
        if self.url.startswith("sqlite:///"):
            Path(self.url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.engine: Engine = sa.create_engine(self.url)
        except (ArgumentError, NoSuchModuleError, ValueError) as exc:
            raise ConfigError(
                f"history URL {_shown(self.url)!r} is not an SQLAlchemy database URL ({exc}); "
                f"e.g. sqlite:///outputs/history.sqlite, set with --history-url or {HISTORY_URL_ENV}"
            ) from None
        try:
            Base.metadata.create_all(self.engine)
        except SQLAlchemyError as exc:
            raise ConnectionSetupError(
                f"cannot open the history database {_shown(self.url)}: {_why(exc)}; "
                f"check the URL given with --history-url or {HISTORY_URL_ENV}"
            ) from None

    @contextmanager
    def _session(self) -> Iterator[Session]:
        from sqlalchemy.orm import Session

        with Session(self.engine) as session, session.begin():
            yield session

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()

    def __enter__(self) -> HistoryIndex:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ writing
    def add(self, snap: RunSnapshot) -> None:
        """Index ``snap``; a run already indexed under the same id is replaced (re-indexing is idempotent)."""
        from sqlalchemy.exc import SQLAlchemyError

        counts = snap.counts()
        try:
            self._add(snap, counts)
        except SQLAlchemyError as exc:
            raise ConnectionSetupError(
                f"cannot write run {snap.id} to the history database {_shown(self.url)}: "
                f"{_why(exc)}"
            ) from None

    def _add(self, snap: RunSnapshot, counts: Mapping[str, int]) -> None:
        from rtbook.history.models import MetricRow, RunRow, VerdictRow

        with self._session() as session:
            old = session.get(RunRow, snap.id)
            if old is not None:
                session.delete(old)
                session.flush()
            session.add(
                RunRow(
                    id=snap.id, target=snap.target, kind=snap.kind, started=snap.started, record=snap.record,
                    exit_code=snap.exit_code, passed=counts["pass"], warned=counts["warn"], failed=counts["fail"],
                    skipped=counts["skip"], errored=counts["error"],
                    verdicts=[VerdictRow(check_id=cid, status=st, summary=snap.summaries.get(cid, ""))
                              for cid, st in snap.statuses.items()],
                    metrics=[MetricRow(check_id=cid, name=name, value=value)
                             for (cid, name), value in snap.metrics.items()],
                )
            )

    def add_record(self, record_dir: str | Path) -> RunSnapshot:
        """Index a ``rtbook run`` record folder and return its snapshot."""
        snap = snapshot_from_record(record_dir)
        self.add(snap)
        return snap

    # ------------------------------------------------------------ reading
    def _snapshot(self, row: Any) -> RunSnapshot:
        return RunSnapshot(
            row.id, row.target, row.kind, row.started, row.record, row.exit_code,
            {v.check_id: v.status for v in row.verdicts},
            {v.check_id: v.summary for v in row.verdicts},
            {(m.check_id, m.name): m.value for m in row.metrics},
        )

    def runs(self, target: str | None = None, limit: int = 50) -> list[RunSnapshot]:
        """The newest ``limit`` runs (of ``target`` when given), newest first."""
        import sqlalchemy as sa

        from rtbook.history.models import RunRow

        query = sa.select(RunRow).order_by(RunRow.started.desc(), RunRow.id.desc()).limit(limit)
        if target is not None:
            query = query.where(RunRow.target == target)
        with self._session() as session:
            return [self._snapshot(row) for row in session.scalars(query)]

    def get(self, run_id: str) -> RunSnapshot | None:
        """The indexed run ``run_id``, or None."""
        from rtbook.history.models import RunRow

        with self._session() as session:
            row = session.get(RunRow, run_id)
            return self._snapshot(row) if row is not None else None

    def resolve(self, ref: str) -> RunSnapshot:
        """A run named by its record folder (read from disk) or by its id in the index.

        Raises:
            InputError: when ``ref`` is neither a record folder nor an indexed run id.
        """
        path = Path(ref)
        if path.is_dir():
            return snapshot_from_record(path)
        found = self.get(path.name if path.name else ref)
        if found is None:
            raise InputError(
                f"{ref!r} is neither a run record folder nor a run id in {_shown(self.url)}; "
                "'rtbook history' lists the run ids"
            )
        return found

    def failing_since(self, target: str, failing: Iterable[str], started: str) -> dict[str, str]:
        """For each check id in ``failing`` (failing in a run of ``target`` started at ``started``), since when.

        The answer is the start of the oldest run in the unbroken series of earlier runs of the
        same target where the check also failed; ``started`` itself when the run before it did
        not fail that check (or did not run it).
        """
        earlier = [s for s in self.runs(target, limit=10_000) if s.started < started]
        since: dict[str, str] = {}
        for check_id in sorted(set(failing)):
            first = started
            for snap in earlier:  # newest first
                if snap.statuses.get(check_id) not in _FAILING:
                    break
                first = snap.started
            since[check_id] = first
        return since


def failing_since(
    failing: Iterable[str], *, target: str, started: str, url: str | None = None, output_dir: str | Path = "outputs"
) -> dict[str, str]:
    """``{check_id: ISO time}``: since when each check in ``failing`` has been failing for ``target``.

    For the HTML summary's "since when" column; see :meth:`HistoryIndex.failing_since`.
    """
    with HistoryIndex(url, output_dir=output_dir) as index:
        return index.failing_since(target, failing, started)
