"""The ``rtbook`` command, on click. Thin: parse, call, render, exit code.

Exit codes: 0 nothing failed, 1 a check failed or errored, 2 usage error or unreadable input
(one line on stderr naming the value and the fix), 130 interrupted. Subcommands other than
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

import click

from rtbook.cli._click import RtbookGroup, SectionOption
from rtbook.cli._output import checks_table, console_for
from rtbook.cli._target import TargetOptions, build_target, target_options
from rtbook.exceptions import ChecksFailedError, RtbookError

__all__ = ["cli", "main"]

# Modules that add subcommands: each defines add_cli(group).
_CLI_MODULES = ("rtbook.cli.run", "rtbook.cli.tenant", "rtbook.cli.probe", "rtbook.cli.sandbox",
                "rtbook.cli.notebooks", "rtbook.cli.load")


def _version() -> str:
    from rtbook import __version__

    return __version__


_AT_EXIT: list[object] = []


@click.group(cls=RtbookGroup, invoke_without_command=True, subcommand_metavar="COMMAND [ARGS]...",
             help="A runbook for self-hosted Supabase Realtime.")
@click.version_option(_version(), "--version", prog_name="rtbook", message="%(prog)s %(version)s",
                      help="show the version and exit")
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
@click.option("--only", "only", multiple=True, metavar="PREFIX", cls=SectionOption,
              help="only check ids with this prefix (repeatable)")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "junit"]), default="text", cls=SectionOption,
              help="report format (default: text)")
@click.option("--output", metavar="FILE", cls=SectionOption, help="write the report to FILE instead of stdout")
def _cmd_check(opts: TargetOptions, only: tuple[str, ...], fmt: str, output: str | None) -> int:
    from rtbook.registry import run_checks

    target = build_target(opts)
    exclude: list[str] = []
    if not opts.live and opts.target != "sandbox":
        exclude += ["db.", "tenant.", "gateway.", "realtime."]
    report = run_checks(target, only=only, exclude=exclude, title=f"rtbook check ({target.name})")
    if fmt == "json":
        text = report.to_json()
    elif fmt == "junit":
        text = report.to_junit()
    else:
        text = str(report)
    text = target.redactor.text(text)
    if output:
        Path(output).write_text(text + "\n")
        print(report.summary_line())
    else:
        print(text)
    return 1 if report.failures else 0


@cli.command("checks", short_help="list every check id with its title",
             help="List every check id with its title (a table on a terminal, plain lines otherwise).")
@click.option("--only", "only", multiple=True, metavar="PREFIX", help="only check ids with this prefix (repeatable)")
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
    from rtbook.secrets import Redactor

    # A message may quote a value the user typed; a token in it must not reach the terminal's scrollback.
    sys.stderr.write(Redactor().text(line) + "\n")
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
        with cli.make_context("rtbook", args) as ctx:
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
    except KeyboardInterrupt:
        _error("rtbook: interrupted")
        return 130
    except BrokenPipeError:
        # The reader went away (`rtbook check ... | head`): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
