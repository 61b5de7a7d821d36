"""``rtbook tenant plan|apply`` (repair the rows) and ``rtbook tenant rename|add|remove`` (the tenant lifecycle)."""

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
    from rtbook.lifecycle import LifecyclePlan
    from rtbook.target import Target

__all__ = ["add_cli"]


def add_cli(group: click.Group) -> None:
    """Add ``rtbook tenant plan|apply|rename|add|remove``."""
    group.add_command(_tenant)


@click.group("tenant", cls=RtbookGroup, invoke_without_command=True, subcommand_metavar="ACTION [ARGS]...",
             short_help="repair tenant rows; rename, add or remove tenants",
             help="Plan or apply repairs of Realtime's tenant rows, or rename, add and remove tenants across the "
             "stack (files as diffs, rows in one transaction). Exit 0 nothing failed, 1 the plan is "
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


# ------------------------------------------------------------------ lifecycle: rename / add / remove


def _lifecycle_options(f: Callable[..., Any]) -> Callable[..., Any]:
    for decorator in reversed((
        target_options,
        click.option("--out", "out_dir", metavar="DIR", cls=SectionOption,
                     help="write the changed files there for review (never into the stack)"),
        click.option("--apply", "do_apply", is_flag=True, cls=SectionOption,
                     help="write the database part in one transaction (needs --yes)"),
        click.option("--yes", is_flag=True, cls=SectionOption, help="confirm --apply"),
        click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", cls=SectionOption,
                     help="output format (default: text)"),
    )):
        f = decorator(f)
    return f


@_tenant.command("rename", short_help="plan renaming the stack's tenant (files as diffs, rows)",
                 help="Plan renaming the stack's tenant to NEW: a docker-compose.override.yml, the gateway files "
                 "and the new tenant rows, with the order of operations. A dry run unless --apply --yes (which writes "
                 "only the rows); --out DIR writes the files for you to copy. The stack is never edited.")
@click.argument("new", metavar="NEW")
@_lifecycle_options
@click.option("--drop-old", is_flag=True, cls=SectionOption, help="also delete the old tenant's rows")
def _cmd_rename(new: str, opts: TargetOptions, out_dir: str | None, do_apply: bool, yes: bool, fmt: str,
                drop_old: bool) -> int:
    from rtbook.lifecycle import plan_rename

    target = build_target(opts)
    return _lifecycle(target, plan_rename(target, new, drop_old=drop_old), out_dir, do_apply, yes, fmt)


@_tenant.command("add", short_help="plan serving another tenant from the same Realtime",
                 help="Plan serving tenant NAME from the same Realtime: its rows, a gateway route for its public "
                 "host (Kong hosts match / an Envoy virtual host) and a network alias. Same dry run, --out and "
                 "--apply --yes as rename.")
@click.argument("name", metavar="NAME")
@_lifecycle_options
@click.option("--public-host", metavar="HOST", cls=SectionOption,
              help="the host name clients use for this tenant (default: NAME.<host of SUPABASE_PUBLIC_URL>)")
def _cmd_add(name: str, opts: TargetOptions, out_dir: str | None, do_apply: bool, yes: bool, fmt: str,
             public_host: str | None) -> int:
    import re

    from rtbook.lifecycle import plan_add

    target = build_target(opts)
    if not public_host:
        url = target.lookup("SUPABASE_PUBLIC_URL") or target.lookup("API_EXTERNAL_URL") or "http://localhost"
        m = re.match(r"\w+://([^/:]+)", url)
        public_host = f"{name}.{m.group(1) if m else 'localhost'}"
    return _lifecycle(target, plan_add(target, name, public_host), out_dir, do_apply, yes, fmt)


@_tenant.command("remove", short_help="plan removing an added tenant (routes, alias, rows)",
                 help="Plan removing tenant NAME: the routes and alias rtbook added for it, then its rows. Same dry "
                 "run, --out and --apply --yes as rename.")
@click.argument("name", metavar="NAME")
@_lifecycle_options
@click.option("--keep-rows", is_flag=True, cls=SectionOption, help="keep the tenant's rows")
def _cmd_remove(name: str, opts: TargetOptions, out_dir: str | None, do_apply: bool, yes: bool, fmt: str,
                keep_rows: bool) -> int:
    from rtbook.lifecycle import plan_remove

    target = build_target(opts)
    return _lifecycle(target, plan_remove(target, name, keep_rows=keep_rows), out_dir, do_apply, yes, fmt)


def _lifecycle(target: Target, the_plan: LifecyclePlan, out_dir: str | None, do_apply: bool, yes: bool,
               fmt: str) -> int:
    from rtbook.lifecycle import apply

    out: dict[str, Any] = {"plan": the_plan.to_dict()}
    text = str(the_plan)
    if out_dir:
        stack_root = target.stack.root if target.stack is not None else None
        written = the_plan.write(out_dir, stack_root)
        out["written"] = [str(p) for p in written]
        text += f"\n\nWrote {len(written)} file(s) under {out_dir} for review: " + ", ".join(
            str(p) for p in written) if written else f"\n\nNothing to write under {out_dir}."
    if not do_apply:
        _emit(target, fmt, text, out)
        return 1 if the_plan.blocked else 0
    if not yes:
        _emit(target, fmt, text, out)
        raise ConfirmationRequired("--apply writes the tenant rows to the database; read the plan above and run "
                                   "again with --apply --yes")
    result = apply(target, the_plan, yes=True)
    out["result"] = result.to_dict()
    _emit(target, fmt, f"{text}\n\n{result}", out)
    return 1 if result.failed or the_plan.blocked else 0
