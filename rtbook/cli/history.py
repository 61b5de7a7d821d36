"""``rtbook history`` and ``rtbook diff``: the run history index, read from the command line."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from rtbook.cli._click import RtbookCommand, SectionOption

if TYPE_CHECKING:
    from rtbook.cli._target import TargetOptions
    from rtbook.history.index import RunSnapshot
    from rtbook.results import Report
    from rtbook.target import Target

__all__ = ["add_cli", "index_check_report"]

_WHERE = "History database"


def add_cli(group: click.Group) -> None:
    """Add ``rtbook history`` and ``rtbook diff``."""
    group.add_command(_cmd_history)
    group.add_command(_cmd_diff)


def _db_options(f: click.decorators.FC) -> click.decorators.FC:
    f = click.option("--output-dir", default="outputs", metavar="DIR", cls=SectionOption, section=_WHERE,
                     help="the folder whose history.sqlite is used (default: outputs)")(f)
    f = click.option("--history-url", metavar="URL", cls=SectionOption, section=_WHERE,
                     help="any SQLAlchemy database URL instead (default: $RTBOOK_HISTORY_URL, "
                     "else sqlite:///DIR/history.sqlite)")(f)
    return f


@click.command("history", cls=RtbookCommand, short_help="list the indexed runs per target with their verdicts",
               help="List the runs indexed by 'rtbook run' and 'rtbook check --output', newest first, grouped by "
               "target, with how many checks passed, warned, failed, were skipped or errored. Exit 0.")
@click.option("--target", "target_name", metavar="TARGET", help="only this target (as listed)")
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True,
              help="newest runs per target")
@click.option("--add", "add", multiple=True, metavar="RECORD_DIR",
              help="index this run record folder first (repeatable), e.g. one written before indexing existed")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", help="output format")
@_db_options
def _cmd_history(target_name: str | None, limit: int, add: tuple[str, ...], fmt: str, history_url: str | None,
                 output_dir: str) -> int:
    from rtbook.history.index import HistoryIndex

    with HistoryIndex(history_url, output_dir=output_dir) as index:
        for record in add:
            snap = index.add_record(record)
            sys.stderr.write(f"indexed {snap.id} ({snap.target})\n")
        runs = index.runs(target_name, limit=100_000)
    by_target: dict[str, list[RunSnapshot]] = {}
    for snap in runs:
        group = by_target.setdefault(snap.target, [])
        if len(group) < limit:
            group.append(snap)
    if fmt == "json":
        data = {t: [{"id": s.id, "kind": s.kind, "started": s.started, "exit_code": s.exit_code,
                     "counts": s.counts(), "record": s.record} for s in snaps]
                for t, snaps in by_target.items()}
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return 0
    if not by_target:
        sys.stdout.write("no runs indexed yet" + (f" for target {target_name!r}" if target_name else "")
                         + "; 'rtbook run' and 'rtbook check --output FILE' index theirs\n")
        return 0
    for target, snaps in by_target.items():
        sys.stdout.write(f"{target}\n")
        for snap in snaps:
            c = snap.counts()
            verdict = "PASSED" if snap.exit_code == 0 else "FAILED"
            sys.stdout.write(
                f"  {snap.id}  {snap.started}  {snap.kind:<5}  {verdict}  pass {c['pass']} warn {c['warn']} "
                f"fail {c['fail']} skip {c['skip']} error {c['error']}\n"
            )
    return 0


@click.command("diff", cls=RtbookCommand, short_help="what broke, what was fixed and which latencies moved",
               help="Compare two runs, RUN_A (before) and RUN_B (after), each a record folder or a run id from "
               "'rtbook history': the checks that broke, the ones fixed, other status changes, and the latencies "
               "that moved (x1.5 and 50 ms or more). Exit 0 when nothing broke, 1 when something broke.")
@click.argument("run_a", metavar="RUN_A")
@click.argument("run_b", metavar="RUN_B")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", help="output format")
@_db_options
def _cmd_diff(run_a: str, run_b: str, fmt: str, history_url: str | None, output_dir: str) -> int:
    from rtbook.history.diff import diff_runs
    from rtbook.history.index import HistoryIndex, snapshot_from_record

    if Path(run_a).is_dir() and Path(run_b).is_dir():
        # Two record folders need no database at all.
        a, b = snapshot_from_record(run_a), snapshot_from_record(run_b)
    else:
        with HistoryIndex(history_url, output_dir=output_dir) as index:
            a, b = index.resolve(run_a), index.resolve(run_b)
    result = diff_runs(a, b)
    sys.stdout.write((json.dumps(result.to_dict(), indent=2) if fmt == "json" else str(result)) + "\n")
    return 1 if result.broke else 0


def index_check_report(opts: TargetOptions, target: Target, report: Report, output: str, exit_code: int) -> None:
    """Index the report ``rtbook check --output FILE`` just wrote; a history problem is one warning line."""
    from rtbook.exceptions import RtbookError
    from rtbook.history.index import HistoryIndex, snapshot_from_report, target_key

    started = dt.datetime.now(dt.UTC)
    params = {"target_kind": "sandbox" if opts.target == "sandbox" else "stack",
              "stack_dir": str(Path(opts.stack).resolve()) if opts.stack else target.name,
              "tenant": opts.tenant or ""}
    redacted = type(report)([r.redacted(target.redactor) for r in report], title=report.title)
    snap = snapshot_from_report(
        redacted, run_id=f"{started.strftime('%Y%m%dT%H%M%S.%fZ')}-check", target=target_key(params),
        started=started.isoformat(timespec="seconds"), record=str(Path(output).resolve()), exit_code=exit_code,
    )
    try:
        with HistoryIndex() as index:
            index.add(snap)
    except (RtbookError, OSError) as exc:
        sys.stderr.write(f"rtbook: warning: the run was not indexed in the history: {exc}\n")
