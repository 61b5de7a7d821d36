"""The ``rtbook`` command. Thin: parse, call, render, exit code.

Exit codes: 0 nothing failed, 1 a check failed or errored, 2 usage error or unreadable input.
Subcommands other than ``check`` and ``checks`` are contributed by their modules through an
``add_cli(subparsers)`` function, so each area keeps its own flags next to its code.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from rtbook.cli._target import _add_target_args, build_target
from rtbook.exceptions import ChecksFailedError, RtbookError

__all__ = ['main']


# Modules that add subcommands: each defines add_cli(subparsers).
_CLI_MODULES = ("rtbook.cli.sandbox", "rtbook.cli.tenant", "rtbook.cli.run")
_AT_EXIT: list[object] = []


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"rtbook: error: {message} (see 'rtbook --help')\n")


def _cmd_check(args: argparse.Namespace) -> int:
    from rtbook.registry import run_checks
    from rtbook.target import Target

    target = build_target(args)
    assert isinstance(target, Target)
    exclude: list[str] = []
    if not args.live and args.target != "sandbox":
        exclude += ["db.", "tenant.", "gateway.", "realtime."]
    report = run_checks(target, only=args.only or (), exclude=exclude, title=f"rtbook check ({target.name})")
    if args.format == "json":
        text = report.to_json()
    elif args.format == "junit":
        text = report.to_junit()
    else:
        text = str(report)
    text = target.redactor.text(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
        print(report.summary_line())
    else:
        print(text)
    return 1 if report.failures else 0


def _cmd_checks(args: argparse.Namespace) -> int:
    from rtbook.registry import select_checks

    specs = select_checks(args.only or ())
    width = max((len(s.id) for s in specs), default=10)
    for spec in specs:
        needs = f"  [{', '.join(spec.needs)}]" if spec.needs and args.verbose else ""
        print(f"{spec.id:<{width}}  {spec.title}{needs}")
    return 0


def make_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every subcommand."""
    from rtbook import __version__

    parser = _Parser(prog="rtbook", description="A runbook for self-hosted Supabase Realtime.")
    parser.add_argument("--version", action="version", version=f"rtbook {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("check", help="run checks against a stack and print the verdicts")
    _add_target_args(p)
    p.add_argument("--only", action="append", metavar="PREFIX", help="only check ids with this prefix (repeatable)")
    p.add_argument("--format", choices=["text", "json", "junit"], default="text")
    p.add_argument("--output", metavar="FILE", help="write the report to FILE instead of stdout")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("checks", help="list every check id with its title")
    p.add_argument("--only", action="append", metavar="PREFIX")
    p.add_argument("-v", "--verbose", action="store_true", help="also show what each check needs")
    p.set_defaults(func=_cmd_checks)

    for name in _CLI_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        add_cli = getattr(module, "add_cli", None)
        if add_cli is not None:
            add_cli(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code."""
    # The command's objects live until the process ends: keep them out of the garbage collections
    # the interpreter runs on its way out (0.1 s or more after 'rtbook run', for nothing).
    if gc.freeze not in _AT_EXIT:
        atexit.register(gc.freeze)
        _AT_EXIT.append(gc.freeze)
    parser = make_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except ChecksFailedError as exc:
        print(f"rtbook: {exc}", file=sys.stderr)
        return 1
    except RtbookError as exc:
        print(f"rtbook: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rtbook: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`rtbook check ... | head`): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
