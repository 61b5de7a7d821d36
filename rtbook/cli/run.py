"""``rtbook run`` and ``rtbook verify``."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from rtbook.exceptions import (
    ConfigError,
)
from rtbook.results import Report
from rtbook.runbook.notebooks import select_notebooks
from rtbook.runbook.params import PARAMS, load_params_file, parse_assignment, validate_params
from rtbook.runbook.record import verify
from rtbook.runbook.runner import RunOutcome, _sandbox_running, run_notebooks

if TYPE_CHECKING:
    pass

__all__ = ['add_cli']



# ================================================================ CLI


def add_cli(subparsers: Any) -> None:
    """Add ``rtbook run`` and ``rtbook verify`` to the ``rtbook`` command."""
    p = subparsers.add_parser(
        "run",
        help="run the runbook's notebooks with papermill and write an audit record",
        description="Execute the notebooks in order against a target and write outputs/<UTC time>-<target>/. "
        "Exit 0 when every check passed, 1 when a check failed, 2 for usage errors.",
    )
    g = p.add_argument_group("target")
    g.add_argument("--target", choices=["sandbox"], help="start the embedded sandbox, run against it, stop it")
    g.add_argument("--stack", metavar="DIR", help="a stack directory laid out like supabase/docker")
    g.add_argument("--api-url", help="public gateway URL, e.g. http://localhost:8000")
    g.add_argument("--realtime-url", help="Realtime reached directly, e.g. http://127.0.0.1:4000")
    g.add_argument("--realtime-host", help="Host header for direct Realtime requests")
    g.add_argument("--db-url", help="database URL without password (password from POSTGRES_PASSWORD)")
    g.add_argument("--tenant", help="tenant id")
    g.add_argument("--no-sandbox-start", action="store_true",
                   help="with --target sandbox: use the sandbox already running instead of starting one")
    g.add_argument("--break", dest="breaks", action="append", default=[], metavar="SCENARIO",
                   help="with --target sandbox: start it with this break scenario (repeatable; "
                   "see 'rtbook sandbox scenarios')")
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                   help="set a notebook parameter (repeatable); see 'rtbook run --list-params'")
    p.add_argument("--params-file", metavar="FILE", help="parameters as JSON/YAML (e.g. written by 00_start_here)")
    p.add_argument("--notebooks", metavar="LIST", help="comma-separated numbers or names, e.g. 01,03")
    p.add_argument("--output-dir", default="outputs", metavar="DIR", help="where run folders go (default: outputs)")
    p.add_argument("--label", help="name suffix of the run folder (default: the target kind)")
    p.add_argument("--notebook-dir", metavar="DIR",
                   help="run the notebooks in DIR, e.g. copies made by 'rtbook notebooks copy DIR' "
                   "(default: the ones shipped with rtbook)")
    p.add_argument("--kernel", default="python3", help="Jupyter kernel name (default: python3)")
    p.add_argument("--cell-timeout", type=float, default=900.0, metavar="S", help="seconds allowed per cell")
    p.add_argument("--list-params", action="store_true", help="print the parameter schema and exit")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    p.add_argument("-v", "--verbose", action="store_true", help="also show the kernels' own stderr (warnings)")
    p.set_defaults(func=_cmd_run)

    v = subparsers.add_parser("verify", help="check that an audit record was not altered since it was written")
    v.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by 'rtbook run'")
    v.set_defaults(func=_cmd_verify)


def params_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Merge ``--params-file``, the target flags and ``-p`` (in that order of precedence, lowest first)."""
    values: dict[str, Any] = {}
    if args.params_file:
        values.update(load_params_file(args.params_file))
    if args.target and args.stack:
        raise ConfigError("pass either --target sandbox or --stack DIR, not both")
    if args.target:
        values["target_kind"] = "sandbox"
    if args.stack:
        values["target_kind"] = "stack"
        values["stack_dir"] = str(Path(args.stack).resolve())
    for flag in ("api_url", "realtime_url", "realtime_host", "db_url", "tenant"):
        if getattr(args, flag, None):
            values[flag] = getattr(args, flag)
    for item in args.param:
        name, value = parse_assignment(item)
        values[name] = value
    if "run_dir" in values:
        raise ConfigError("run_dir is set by 'rtbook run' itself; use --output-dir to choose where records go")
    if not (args.target or args.stack or args.params_file or any(a.startswith("target_kind=") for a in args.param)):
        raise ConfigError("nothing to run against: pass --target sandbox, or --stack DIR with --api-url/--db-url")
    return values


def _cmd_run(args: argparse.Namespace) -> int:
    if args.list_params:
        for param in PARAMS:
            allowed = " (" + "|".join(c or '""' for c in param.choices) + ")" if param.choices else ""
            sys.stdout.write(f"{param.name}: {param.type_name} = {param.default!r}{allowed}\n    {param.help}\n")
        return 0
    values = params_from_args(args)
    params = validate_params(values)
    progress: list[TextIO] = [sys.stderr]

    def say(msg: str) -> None:
        if not args.quiet:
            progress[0].write(msg + "\n")
            progress[0].flush()

    def execute() -> RunOutcome:
        return run_notebooks(
            params,
            notebooks=args.notebooks,
            output_dir=args.output_dir,
            label=args.label or "",
            source_dir=args.notebook_dir,
            kernel_name=args.kernel,
            cell_timeout_s=args.cell_timeout,
            progress=say,
        )

    select_notebooks(args.notebooks)  # a bad --notebooks is a usage error before the sandbox starts
    if args.breaks and (params["target_kind"] != "sandbox" or args.no_sandbox_start):
        raise ConfigError("--break needs --target sandbox (rtbook starts the sandbox with the scenario)")
    with contextlib.ExitStack() as stack:
        if not args.verbose:
            progress[0] = stack.enter_context(_kernel_stderr_hidden())
        if params["target_kind"] == "sandbox" and not args.no_sandbox_start:
            stack.enter_context(_sandbox_running(say, args.breaks))
        outcome = execute()
    overall = Report([r for n in outcome.notebooks for r in n.report])
    verdict = "PASSED" if outcome.exit_code == 0 else "FAILED"
    failed = [n.name for n in outcome.notebooks if n.status != "passed"]
    sys.stdout.write(
        f"{verdict}: {overall.summary_line()}"
        + (f"; notebooks not passing: {', '.join(failed)}" if failed else "")
        + f"\nrecord: {outcome.record_dir}\nmanifest sha256: {outcome.manifest_sha256}\n"
    )
    return outcome.exit_code


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


def _cmd_verify(args: argparse.Namespace) -> int:
    result = verify(args.run_dir)
    sys.stdout.write(str(result) + "\n")
    return 0 if result.intact else 1
