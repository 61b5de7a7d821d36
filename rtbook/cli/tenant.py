"""``rtbook tenant plan|apply``."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import click

from rtbook.cli._click import RtbookGroup, SectionOption
from rtbook.cli._target import TargetOptions, build_target, target_options
from rtbook.exceptions import ConfirmationRequired

if TYPE_CHECKING:
    from rtbook.target import Target

__all__ = ["add_cli"]


def add_cli(group: click.Group) -> None:
    """Add ``rtbook tenant plan`` and ``rtbook tenant apply``."""
    group.add_command(_tenant)


@click.group("tenant", cls=RtbookGroup, invoke_without_command=True, subcommand_metavar="ACTION [ARGS]...",
             short_help="plan or apply repairs of Realtime's tenant rows",
             help="Plan or apply repairs of Realtime's tenant rows. Exit 0 nothing failed, 1 the plan is "
             "blocked or the apply failed, 2 usage errors, unreadable input or apply without --yes.")
@click.pass_context
def _tenant(ctx: click.Context) -> None:
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())
        ctx.exit(2)


def _plan_options(f: Callable[..., Any]) -> Callable[..., Any]:
    for decorator in reversed((
        target_options,
        click.option("--create", is_flag=True, cls=SectionOption, help="insert the tenant if it does not exist"),
        click.option("--limit", "limits", multiple=True, metavar="NAME=VALUE", cls=SectionOption,
                     help="set a limit or flag, e.g. max_concurrent_users=500 (repeatable)"),
        click.option("--delete-extra", is_flag=True, cls=SectionOption,
                     help="also delete extension rows rtbook did not create (duplicates, broadcast/presence)"),
        click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", cls=SectionOption,
                     help="output format (default: text)"),
    )):
        f = decorator(f)
    return f


@_tenant.command("plan", short_help="show what apply would change (dry run, the default)",
                 help="Show what apply would change (a dry run; nothing is written).")
@_plan_options
def _cmd_plan(opts: TargetOptions, create: bool, limits: tuple[str, ...], delete_extra: bool, fmt: str) -> int:
    return _run_tenant(opts, "plan", create=create, limits=limits, delete_extra=delete_extra, fmt=fmt, yes=False)


@_tenant.command("apply", short_help="write the plan in one transaction (needs --yes)",
                 help="Write the plan in one transaction (needs --yes; without it the plan is shown and "
                 "nothing is written, exit 2).")
@_plan_options
@click.option("--yes", is_flag=True, cls=SectionOption, help="confirm the write")
def _cmd_apply(opts: TargetOptions, create: bool, limits: tuple[str, ...], delete_extra: bool, fmt: str,
               yes: bool) -> int:
    return _run_tenant(opts, "apply", create=create, limits=limits, delete_extra=delete_extra, fmt=fmt, yes=yes)


def _run_tenant(opts: TargetOptions, action: str, *, create: bool, limits: tuple[str, ...], delete_extra: bool,
                fmt: str, yes: bool) -> int:
    from rtbook.seeding import apply, plan  # SQLAlchemy: only when a tenant command runs

    target = build_target(opts)
    the_plan = plan(target, tenant=opts.tenant, create=create, limits=list(limits), delete_extra=delete_extra)
    out: dict[str, Any] = {"plan": the_plan.to_dict()}
    if action == "plan":
        _emit(target, fmt, str(the_plan), out)
        return 1 if the_plan.blocked else 0
    if not yes:
        _emit(target, fmt, str(the_plan), out)
        raise ConfirmationRequired("rtbook tenant apply writes to the database; read the plan above and "
                                   "run again with --yes")
    result = apply(target, the_plan, yes=True).redacted(target.redactor)
    out["result"] = result.to_dict()
    _emit(target, fmt, f"{the_plan}\n{result}", out)
    return 1 if result.failed else 0


def _emit(target: Target, fmt: str, text: str, data: Mapping[str, Any]) -> None:
    if fmt == "json":
        text = json.dumps(target.redactor.data(dict(data)), indent=2, default=str)
    # The CLI's output; rtbook.cli owns print, so write to stdout directly.
    sys.stdout.write(target.redactor.text(text) + "\n")
