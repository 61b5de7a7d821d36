"""``rtbook probe install|remove|status``: thin; the logic is in :mod:`rtbook.probe`.

Without ``--yes``, install and remove are dry runs: they print the prior state and the exact SQL
and change nothing (exit 0). With ``--yes`` the SQL runs in one transaction (exit 1 if it failed).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click

from rtbook.cli._click import RtbookGroup, SectionOption
from rtbook.cli._target import TargetOptions, build_target, target_options
from rtbook.target import Target

__all__ = ["add_cli"]


def add_cli(group: click.Group) -> None:
    """Add ``rtbook probe ...`` to the ``rtbook`` command."""
    group.add_command(_probe)


@click.group("probe", cls=RtbookGroup, invoke_without_command=True, subcommand_metavar="ACTION [ARGS]...",
             short_help="install or remove the probe table the live checks write to (nothing else is ever written)",
             help="The probe table (rtbook_probe.events) that proves delivery of changes. Exit 0 done or dry "
             "run, 1 the plan is blocked or the SQL failed, 2 usage errors or unreadable input.")
@click.pass_context
def _probe(ctx: click.Context) -> None:
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())
        ctx.exit(2)


def _format(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", cls=SectionOption,
                        help="output format (default: text)")(f)


_YES = click.option("--yes", is_flag=True, cls=SectionOption,
                    help="run the SQL (without it: print it, change nothing)")


@_probe.command("install", short_help="create rtbook_probe.events and add it to the publication (dry run unless --yes)",
                help="Create rtbook_probe.events and add it to the publication, in one transaction (a dry run "
                "printing the SQL unless --yes).")
@target_options
@_format
@_YES
def _install(opts: TargetOptions, fmt: str, yes: bool) -> int:
    return _change(opts, "install", fmt, yes)


@_probe.command("remove", short_help="drop the probe and take it out of the publication (dry run unless --yes)",
                help="Drop the probe and take it out of the publication, in one transaction (a dry run printing "
                "the SQL unless --yes).")
@target_options
@_format
@_YES
def _remove(opts: TargetOptions, fmt: str, yes: bool) -> int:
    return _change(opts, "remove", fmt, yes)


@_probe.command("status", short_help="show whether the probe is installed (read-only)",
                help="Show whether the probe is installed (read-only).")
@target_options
@_format
def _status(opts: TargetOptions, fmt: str) -> int:
    from rtbook import probe

    target = build_target(opts)
    state = probe.status(target)
    text = ("installed" if state.installed else "not installed") + f": {state.describe()}"
    _emit(target, fmt, text, {"status": state.to_dict()})
    return 0


def _change(opts: TargetOptions, action: str, fmt: str, yes: bool) -> int:
    from rtbook import probe

    target = build_target(opts)
    plan = probe.plan_install(target) if action == "install" else probe.plan_remove(target)
    out: dict[str, Any] = {"plan": plan.to_dict()}
    if not yes:
        tail = "\nDry run: nothing was changed." + (" Add --yes to run the SQL above." if plan.statements else "")
        _emit(target, fmt, str(plan) + tail, out)
        return 1 if plan.blocked else 0
    run = probe.install if action == "install" else probe.remove
    result = run(target, plan, yes=True).redacted(target.redactor)
    out["result"] = result.to_dict()
    text = f"{plan.text(dry_run=False)}\n{result.status.symbol} {result.summary}\n{result.detail}".rstrip()
    _emit(target, fmt, text, out)
    return 1 if result.failed else 0


def _emit(target: Target, fmt: str, text: str, data: dict[str, Any]) -> None:
    if fmt == "json":
        text = json.dumps(target.redactor.data(data), indent=2, default=str)
    sys.stdout.write(target.redactor.text(text) + "\n")
