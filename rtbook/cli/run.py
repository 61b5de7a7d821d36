"""``rtbook run`` and ``rtbook verify``."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import click

from rtbook.cli._click import InputPath, NotebookList, OutputDir, RtbookCommand, Seconds, SectionOption
from rtbook.cli._output import console_for, progress_line, verdict_line
from rtbook.cli._target import shared_options
from rtbook.exceptions import ConfigError
from rtbook.interrupt import Interrupted
from rtbook.results import Report
from rtbook.runbook.notebooks import select_notebooks
from rtbook.runbook.params import PARAMS, RunParams, load_params_file, parse_assignment

if TYPE_CHECKING:
    from rtbook.runbook.runner import RunOutcome

__all__ = ["add_cli", "params_from_args"]

_TARGET = "Target"
# The longest a cell may run: papermill's per-cell timeout; a day is already far past any real step.
_MAX_CELL_S = 86400.0


def add_cli(group: click.Group) -> None:
    """Add ``rtbook run`` and ``rtbook verify`` to the ``rtbook`` command."""
    group.add_command(_cmd_run)
    group.add_command(_cmd_verify)


def params_from_args(
    *,
    target: str | None = None,
    stack: str | None = None,
    api_url: str | None = None,
    realtime_url: str | None = None,
    realtime_host: str | None = None,
    db_url: str | None = None,
    tenant: str | None = None,
    params_file: str | None = None,
    param: tuple[str, ...] | list[str] = (),
) -> RunParams:
    """Merge ``--params-file``, the target flags and ``-p`` (in that order of precedence, lowest first).

    Raises:
        ConfigError: for a bad parameter (the same message the guided form shows), or nothing to run against.
        InputError: when the parameters file cannot be read.
    """
    values: dict[str, Any] = {}
    if params_file:
        values.update(load_params_file(params_file))
    if target and stack:
        raise ConfigError("pass either --target sandbox or --stack DIR, not both")
    if target:
        values["target_kind"] = "sandbox"
    if stack:
        values["target_kind"] = "stack"
        values["stack_dir"] = str(Path(stack).resolve())
    flags = {"api_url": api_url, "realtime_url": realtime_url, "realtime_host": realtime_host, "db_url": db_url,
             "tenant": tenant}
    values.update({name: value for name, value in flags.items() if value})
    for item in param:
        name, value = parse_assignment(item)
        values[name] = value
    if "run_dir" in values:
        raise ConfigError("run_dir is set by 'rtbook run' itself; use --output-dir to choose where records go")
    if not (target or stack or params_file or any(a.startswith("target_kind=") for a in param)):
        raise ConfigError("nothing to run against: pass --target sandbox, or --stack DIR with --api-url/--db-url")
    return RunParams.from_mapping(values)


def _print_params() -> None:
    for p in PARAMS:
        allowed = " (" + "|".join(c or '""' for c in p.choices) + ")" if p.choices else ""
        sys.stdout.write(f"{p.name}: {p.type_name} = {p.default!r}{allowed}\n    {p.help}\n")


@click.command(
    "run",
    cls=RtbookCommand,
    short_help="run the runbook's notebooks with papermill and write an audit record",
    help="Execute the notebooks in order against a target and write outputs/<UTC time>-<target>/. "
    "Exit 0 when every check passed, 1 when a check failed, 2 for usage errors, 130 (SIGINT) or 143 (SIGTERM) "
    "when interrupted: the record so far is written, marked incomplete, and a sandbox the run started is stopped.",
)
@click.option("--target", type=click.Choice(["sandbox"]), cls=SectionOption, section=_TARGET,
              help="start the embedded sandbox, run against it, stop it")
@shared_options("stack", "api_url", "realtime_url", "realtime_host", "db_url", "tenant", section=_TARGET)
@click.option("--no-sandbox-start", is_flag=True, cls=SectionOption, section=_TARGET,
              help="with --target sandbox: use the sandbox already running instead of starting one")
@click.option("--break", "breaks", multiple=True, metavar="SCENARIO", cls=SectionOption, section=_TARGET,
              help="with --target sandbox: start it with this break scenario (repeatable; "
              "see 'rtbook sandbox scenarios')")
@click.option("--targets", "targets_file", type=InputPath(), cls=SectionOption, section=_TARGET,
              help="run against every target of this YAML file, one after the other: one record each and a "
              "combined summary (README 'Many targets')")
@click.option("-p", "--param", "param", multiple=True, metavar="NAME=VALUE",
              help="set a notebook parameter (repeatable); see 'rtbook run --list-params'")
@click.option("--params-file", type=InputPath(), help="parameters as JSON/YAML (e.g. written by 00_start_here)")
@click.option("--notebooks", type=NotebookList(), help="comma-separated numbers or names, e.g. 01,03")
@click.option("--output-dir", type=OutputDir(), default="outputs", help="where run folders go (default: outputs)")
@click.option("--label", metavar="LABEL", help="name suffix of the run folder (default: the target kind)")
@click.option("--notebook-dir", metavar="DIR",
              help="run the notebooks in DIR, e.g. copies made by 'rtbook notebooks copy DIR' "
              "(default: the ones shipped with rtbook)")
@click.option("--kernel", default="python3", metavar="KERNEL", help="Jupyter kernel name (default: python3)")
@click.option("--cell-timeout", type=Seconds(_MAX_CELL_S), default=None,
              help=f"seconds allowed per cell (0 < t <= {_MAX_CELL_S:g}; default: derived from -p timeout_s, "
              "see README 'Deadlines')")
@click.option("--list-params", is_flag=True, help="print the parameter schema and exit")
@click.option("-q", "--quiet", is_flag=True, help="no progress lines")
@click.option("-v", "--verbose", is_flag=True, help="also show the kernels' own stderr (warnings)")
def _cmd_run(
    target: str | None,
    stack: str | None,
    api_url: str | None,
    realtime_url: str | None,
    realtime_host: str | None,
    db_url: str | None,
    tenant: str | None,
    no_sandbox_start: bool,
    breaks: tuple[str, ...],
    param: tuple[str, ...],
    params_file: str | None,
    notebooks: str | None,
    output_dir: str,
    label: str | None,
    notebook_dir: str | None,
    kernel: str,
    cell_timeout: float | None,
    list_params: bool,
    quiet: bool,
    verbose: bool,
    targets_file: str | None = None,
) -> int:
    if list_params:
        _print_params()
        return 0
    if targets_file:
        given = {"--target": target, "--stack": stack, "--api-url": api_url, "--realtime-url": realtime_url,
                 "--realtime-host": realtime_host, "--db-url": db_url, "--tenant": tenant,
                 "--no-sandbox-start": no_sandbox_start, "--break": breaks, "--label": label}
        clash = [flag for flag, value in given.items() if value]
        if clash:
            raise click.UsageError(f"--targets and {', '.join(clash)} exclude each other; each target of the file "
                                   "names its own sandbox or stack, URLs and tenant (--break: start the sandbox "
                                   "with 'rtbook sandbox up --name NAME --break SCENARIO')")
        return _run_targets(targets_file, params_file, param, notebooks, output_dir, notebook_dir, kernel,
                            cell_timeout, quiet, verbose)
    params = params_from_args(target=target, stack=stack, api_url=api_url, realtime_url=realtime_url,
                              realtime_host=realtime_host, db_url=db_url, tenant=tenant, params_file=params_file,
                              param=param)
    progress: list[TextIO] = [sys.stderr]

    def say(msg: str) -> None:
        if quiet:
            return
        console = console_for(progress[0])
        if console is not None:
            console.print(progress_line(msg))
        else:
            progress[0].write(msg + "\n")
        progress[0].flush()

    select_notebooks(notebooks)  # a bad --notebooks is a usage error before the sandbox starts
    # The runner (papermill, the kernel engine) is imported only when a run starts, not for 'rtbook check'.
    from rtbook.runbook.runner import _sandbox_running, run_notebooks

    if breaks and (params.target_kind != "sandbox" or no_sandbox_start):
        raise ConfigError("--break needs --target sandbox (rtbook starts the sandbox with the scenario)")
    try:
        with contextlib.ExitStack() as stack_:
            if not verbose:
                progress[0] = stack_.enter_context(_kernel_stderr_hidden())
            if params.target_kind == "sandbox" and not no_sandbox_start:
                stack_.enter_context(_sandbox_running(say, breaks))
            outcome: RunOutcome = run_notebooks(
                params.as_dict(),
                notebooks=notebooks,
                output_dir=output_dir,
                label=label or "",
                source_dir=notebook_dir,
                kernel_name=kernel,
                cell_timeout_s=cell_timeout,
                progress=say,
            )
    except Interrupted as exc:
        # Said after the sandbox was stopped (the ExitStack above), so the lines are the run's last word.
        if exc.outcome is not None:
            done = [n for n in exc.outcome.notebooks if n.status != "interrupted"]
            sys.stdout.write(f"INTERRUPTED by {exc.signum.name}: {len(done)} notebook(s) finished\n"
                             f"record (incomplete): {exc.record}\nmanifest sha256: {exc.outcome.manifest_sha256}\n")
            sys.stdout.flush()
        raise
    overall = Report([r for n in outcome.notebooks for r in n.report])
    verdict = "PASSED" if outcome.exit_code == 0 else "FAILED"
    failed = [n.name for n in outcome.notebooks if n.status != "passed"]
    first = f"{verdict}: {overall.summary_line()}" + (f"; notebooks not passing: {', '.join(failed)}" if failed else "")
    console = console_for()
    if console is not None:
        console.print(verdict_line(first))
    else:
        sys.stdout.write(first + "\n")
    from rtbook.report.diagram import PathDiagram
    from rtbook.report.rootcause import closing_lines

    sys.stdout.write(PathDiagram.from_results(overall).text() + "\n")
    sys.stdout.write(f"record: {outcome.record_dir}\nmanifest sha256: {outcome.manifest_sha256}\n"
                     f"summary: {outcome.record_dir / 'summary.html'}\n")
    # Last: the cause to fix, not the list of notebooks it made fail.
    for line in closing_lines(overall):
        sys.stdout.write(line + "\n")
    return outcome.exit_code


def _run_targets(path: str, params_file: str | None, param: tuple[str, ...], notebooks: str | None,
                 output_dir: str, notebook_dir: str | None, kernel: str, cell_timeout: float | None, quiet: bool,
                 verbose: bool) -> int:
    """``rtbook run --targets FILE``: the targets in file order, then the combined summary."""
    from rtbook.config.targets import load_targets
    from rtbook.runbook.targets import run_targets

    base: dict[str, Any] = dict(load_params_file(params_file)) if params_file else {}
    for item in param:
        name, value = parse_assignment(item)
        base[name] = value
    for name in ("run_dir", "target_kind", "stack_dir"):
        if name in base:
            raise ConfigError(f"parameter {name!r} is set by each target of --targets; remove it from -p and "
                              "--params-file")
    targets = load_targets(path)
    select_notebooks(notebooks)
    progress: list[TextIO] = [sys.stderr]

    def say(msg: str) -> None:
        if not quiet:
            progress[0].write(msg + "\n")
            progress[0].flush()

    with contextlib.ExitStack() as stack_:
        if not verbose:
            progress[0] = stack_.enter_context(_kernel_stderr_hidden())
        try:
            combined, folder = run_targets(targets, base_params=base, output_dir=output_dir, notebooks=notebooks,
                                           source_dir=notebook_dir, kernel_name=kernel,
                                           cell_timeout_s=cell_timeout, progress=say)
        except Interrupted as exc:
            if exc.record:
                sys.stdout.write(f"INTERRUPTED by {exc.signum.name}: record (incomplete): {exc.record}; "
                                 "the records of the targets before it are complete; no combined summary\n")
                sys.stdout.flush()
            raise
    sys.stdout.write(combined.text() + "\n")
    for row in combined.rows:
        sys.stdout.write(f"record ({row.name}): {row.record}\nmanifest sha256 ({row.name}): {row.manifest_sha256}\n")
    sys.stdout.write(f"summary: {folder / 'summary.html'}\n")
    return combined.exit_code


@contextlib.contextmanager
def _kernel_stderr_hidden() -> Iterator[TextIO]:
    """Send file descriptor 2 (inherited by the kernels) to a discarded file; yield the real stderr.

    Kernels print transport warnings and "KeyboardInterrupt caught" lines on shutdown that say
    nothing about the stack; the executed notebooks hold everything that matters.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    fd, path = tempfile.mkstemp(prefix="rtbook-kernels-", suffix=".log")
    real = os.fdopen(os.dup(saved), "w")
    os.dup2(fd, 2)
    try:
        yield real
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(fd)
        real.close()
        os.unlink(path)


@click.command("verify", cls=RtbookCommand,
               short_help="check that an audit record was not altered since it was written",
               help="Check that an audit record was not altered since it was written. "
               "Exit 0 intact, 1 altered, 2 not a record.")
@click.argument("run_dir", metavar="RUN_DIR")
def _cmd_verify(run_dir: str) -> int:
    from rtbook.runbook.record import verify

    result = verify(run_dir)
    sys.stdout.write(str(result) + "\n")
    return 0 if result.intact else 1
