"""The ``rtbook`` command, on click. Thin: parse, call, render, exit code.

Exit codes: 0 nothing failed, 1 a check failed or errored, 2 usage error or unreadable input
(one line on stderr naming the value and the fix), 130 interrupted (143 by SIGTERM). Subcommands other than
``check`` and ``checks`` are contributed by their modules through an ``add_cli(group)`` function,
so each area keeps its own flags next to its code. Argument parsing happens only in this
package (a test keeps argparse, click and optparse out of every other module).
"""

from __future__ import annotations

import atexit
import gc
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from rtbook.cli._click import CheckPrefix, InputPath, OutputFile, RtbookGroup, SectionOption
from rtbook.cli._output import checks_table, console_for
from rtbook.cli._target import TargetOptions, build_target, target_options
from rtbook.exceptions import ChecksFailedError, ConfigError, RtbookError
from rtbook.interrupt import exit_code as interrupt_exit_code
from rtbook.interrupt import handle_signals

if TYPE_CHECKING:
    from rtbook.target import Target

__all__ = ["cli", "main"]

# Modules that add subcommands: each defines add_cli(group).
_CLI_MODULES = ("rtbook.cli.run", "rtbook.cli.tenant", "rtbook.cli.probe", "rtbook.cli.sandbox",
                "rtbook.cli.notebooks", "rtbook.cli.history", "rtbook.cli.load")


def _version() -> str:
    from rtbook import __version__

    return __version__


_AT_EXIT: list[object] = []


@click.group(cls=RtbookGroup, invoke_without_command=True, subcommand_metavar="COMMAND [ARGS]...",
             help="A runbook for self-hosted Supabase Realtime.")
@click.version_option(_version(), "--version", prog_name="rtbook", message="%(prog)s %(version)s",
                      help="show the version and exit")
@click.option("--debug", is_flag=True, expose_value=False,
              help="show the traceback of an unexpected error (also RTBOOK_DEBUG=1)")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """The ``rtbook`` group; without a command it prints the help and exits 2."""
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())
        ctx.exit(2)


@cli.command("check", short_help="run checks against a stack and print the verdicts",
             help="Run checks against a stack and print the verdicts. Without --live (or --target sandbox) "
             "only the files and the containers are checked. Exit 0 when nothing failed, 1 when a check "
             "failed or errored, 2 for usage errors and unreadable input.")
@target_options
@click.option("--only", "only", multiple=True, type=CheckPrefix(), cls=SectionOption,
              help="only check ids with this prefix (repeatable)")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "junit"]), default="text", cls=SectionOption,
              help="report format (default: text)")
@click.option("--output", type=OutputFile(), cls=SectionOption, help="write the report to FILE instead of stdout")
@click.option("--lb", "lb", multiple=True, metavar="[KIND:]FILE", cls=SectionOption,
              help="load-balancer config in front of the stack (repeatable; nginx, haproxy, caddy, traefik, alb; "
              "the kind is recognised from the content)")
@click.option("--all-tenants", is_flag=True, cls=SectionOption,
              help="run the tenant checks for every tenant the stack routes to (multi-tenant stacks)")
@click.option("--targets", "targets_file", type=InputPath(), cls=SectionOption,
              help="check every target of this YAML file (stacks, regions, sandboxes) and print a "
              "targets x checks matrix (README 'Many targets')")
def _cmd_check(opts: TargetOptions, only: tuple[str, ...], fmt: str, output: str | None,
               lb: tuple[str, ...] = (), all_tenants: bool = False, targets_file: str | None = None) -> int:
    import dataclasses

    from rtbook.registry import run_checks, run_checks_per_tenant
    from rtbook.results import Report

    if targets_file:
        return _check_targets(targets_file, opts, only, fmt, output, lb, all_tenants)
    if lb:
        from rtbook.config.lb import split_spec

        for spec in lb:
            split_spec(spec)  # a missing file or an unknown kind is a usage error (exit 2), not a failed check
    target = build_target(dataclasses.replace(opts, tenants=opts.tenants[:1]), lb=lb)
    exclude: list[str] = []
    if not opts.live and opts.target != "sandbox":
        exclude += ["db.", "tenant.", "gateway.", "realtime."]
    tenants = list(opts.tenants)
    if all_tenants:
        tenants = list(dict.fromkeys([*tenants, *_stack_tenants(target)]))
    report = Report(title=f"rtbook check ({target.name})")
    try:
        if len(tenants) > 1:
            report.extend(run_checks_per_tenant(target, tenants, only=only, exclude=exclude, title=report.title))
        else:
            run_checks(target, only=only, exclude=exclude, into=report)
    except KeyboardInterrupt as exc:  # SIGINT/SIGTERM: keep what ran, marked incomplete
        from rtbook.cli._interrupt import write_interrupted_report
        from rtbook.interrupt import as_interrupted

        write_interrupted_report(report, fmt, output, target.redactor, as_interrupted(exc))
        raise
    if fmt == "json":
        text = report.to_json()
    elif fmt == "junit":
        text = report.to_junit()
    else:
        from rtbook.report.rootcause import closing_lines

        # After the verdicts: the root cause(s) with their one remedy, the last line naming the cause.
        text = "\n".join([str(report), *closing_lines(report)])
    text = target.redactor.text(text)
    if output:
        try:
            Path(output).write_text(text + "\n")
        except OSError as exc:  # checked up front (OutputFile); this is a disk that filled up meanwhile
            raise ConfigError(f"--output {output!r}: cannot write the report: {exc.strerror or exc}") from None
        print(report.summary_line())
        from rtbook.cli.history import index_check_report

        index_check_report(opts, target, report, output, 1 if report.failures else 0)
    else:
        print(text)
    return 1 if report.failures else 0


# Target flags that a targets file replaces: each target names its own stack, URLs and tenants.
_PER_TARGET_FLAGS = ("stack", "compose", "env_file", "kong", "target", "api_url", "realtime_url", "realtime_host",
                     "db_url", "tenants", "tables")


def _check_targets(path: str, opts: TargetOptions, only: tuple[str, ...], fmt: str, output: str | None,
                   lb: tuple[str, ...], all_tenants: bool) -> int:
    """``rtbook check --targets FILE``: each target's report, then the matrix and the disagreements."""
    from rtbook.config.targets import load_targets
    from rtbook.runbook.targets import check_targets, redact

    given = [name for name in _PER_TARGET_FLAGS if getattr(opts, name)] + (["lb"] if lb else [])
    if given:
        spelled = {"env_file": "env", "tenants": "tenant", "tables": "table"}
        flags = ", ".join("--" + spelled.get(n, n).replace("_", "-") for n in given)
        raise click.UsageError(f"--targets and {flags} exclude each other; put them in the targets file's entries")
    if fmt == "junit":
        raise click.UsageError("--format junit is one suite per run; with --targets use --format text or json")
    targets = load_targets(path)

    def say(line: str) -> None:  # as each target ends (they finish in any order): stdout keeps the report alone
        sys.stderr.write(f"checked {line}\n")
        sys.stderr.flush()

    combined, redactors = check_targets(targets, only=only, live=opts.live, timeout=opts.timeout,
                                        docker=opts.docker, all_tenants=all_tenants, progress=say)
    if fmt == "json":
        text = combined.to_json()
    else:
        parts = [f"== {row.name}" + (f" ({row.region})" if row.region else "") + f"\n{row.report}"
                 for row in combined.rows]
        text = "\n\n".join([*parts, combined.text()])
    text = redact(text, redactors)
    if output:
        try:
            Path(output).write_text(text + "\n")
        except OSError as exc:
            raise ConfigError(f"--output {output!r}: cannot write the report: {exc.strerror or exc}") from None
        print(combined.text().splitlines()[0])
    else:
        print(text)
    return combined.exit_code


def _stack_tenants(target: Target) -> list[str]:
    """The stack's own tenant, then every tenant its gateway routes a public host to."""
    from rtbook.config.gateway import realtime_upstream

    found = [target.resolved_tenant()]
    if target.stack is not None:
        found += list(realtime_upstream(target.stack).routed_tenants)
    return list(dict.fromkeys(found))


@cli.command("checks", short_help="list every check id with its title",
             help="List every check id with its title (a table on a terminal, plain lines otherwise).")
@click.option("--only", "only", multiple=True, type=CheckPrefix(), help="only check ids with this prefix (repeatable)")
@click.option("-v", "--verbose", is_flag=True, help="also show what each check needs (the terminal table always does)")
def _cmd_checks(only: tuple[str, ...], verbose: bool) -> int:
    from rtbook.registry import select_checks

    specs = select_checks(only)
    console = console_for()
    if console is not None:
        console.print(checks_table((s.id, s.title, tuple(s.needs)) for s in specs))
        return 0
    width = max((len(s.id) for s in specs), default=10)
    for spec in specs:
        needs = f"  [{', '.join(spec.needs)}]" if spec.needs and verbose else ""
        print(f"{spec.id:<{width}}  {spec.title}{needs}")
    return 0


def _add_subcommands(group: click.Group) -> None:
    for name in _CLI_MODULES:
        importlib.import_module(name).add_cli(group)


_add_subcommands(cli)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _usage_error_line(exc: click.UsageError) -> str:
    path = exc.ctx.command_path if exc.ctx is not None else "rtbook"
    return f"rtbook: error: {_one_line(exc.format_message())} (see '{path} --help')"


def _error(line: str) -> None:
    from rtbook.results import printable
    from rtbook.secrets import Redactor

    # A message may quote a value the user typed; a token in it must not reach the terminal's scrollback,
    # nor an escape sequence in a file name drive the terminal (and a newline in one split the line).
    sys.stderr.write(printable(Redactor().text(line)).replace("\n", "\\n") + "\n")
    sys.stderr.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code (the console script and ``python -m rtbook``)."""
    # The command's objects live until the process ends: keep them out of the garbage collections
    # the interpreter runs on its way out (0.1 s or more after 'rtbook run', for nothing).
    if gc.freeze not in _AT_EXIT:
        atexit.register(gc.freeze)
        _AT_EXIT.append(gc.freeze)
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        # SIGTERM raises like Ctrl-C, so every command cleans up after both (rtbook.interrupt).
        with handle_signals(), cli.make_context("rtbook", args) as ctx:
            return int(cli.invoke(ctx) or 0)
    except click.exceptions.Exit as exc:  # --help, --version, or ctx.exit(code)
        return int(exc.exit_code)
    except click.UsageError as exc:
        _error(_usage_error_line(exc))
        return 2
    except click.ClickException as exc:
        _error(f"rtbook: error: {_one_line(exc.format_message())}")
        return int(exc.exit_code)
    except ChecksFailedError as exc:
        _error(f"rtbook: {exc}")
        return 1
    except RtbookError as exc:
        _error(f"rtbook: error: {exc}")
        return 2
    except KeyboardInterrupt as exc:
        _error(f"rtbook: interrupted ({exc})" if str(exc) else "rtbook: interrupted")
        return interrupt_exit_code(exc)
    except BrokenPipeError:
        # The reader went away (`rtbook check ... | head`): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as exc:
        # A bug in rtbook, not the user's input: one line (the contract), the traceback on request.
        if _debug(args):
            raise
        _error(f"rtbook: internal error: {type(exc).__name__}: {_one_line(str(exc))} "
               "(a bug in rtbook; rerun with --debug for the traceback)")
        return 1


def _debug(args: Sequence[str]) -> bool:
    """``rtbook --debug ...`` (before the command) or ``RTBOOK_DEBUG`` set to anything but 0."""
    if os.environ.get("RTBOOK_DEBUG", "") not in ("", "0"):
        return True
    for arg in args:
        if arg == "--debug":
            return True
        if not arg.startswith("-"):
            return False
    return False


if __name__ == "__main__":
    sys.exit(main())
