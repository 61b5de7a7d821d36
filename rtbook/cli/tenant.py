"""``rtbook tenant plan|apply``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from rtbook.exceptions import ConfirmationRequired

if TYPE_CHECKING:
    from rtbook.target import Target

__all__ = ['add_cli']



# ------------------------------------------------------------------ CLI


def add_cli(subparsers: Any) -> None:
    """Add ``rtbook tenant plan`` and ``rtbook tenant apply``."""
    from rtbook.cli._target import _add_target_args

    parser = subparsers.add_parser("tenant", help="plan or apply repairs of Realtime's tenant rows")
    actions = parser.add_subparsers(dest="tenant_command", metavar="ACTION", parser_class=type(parser))
    parser.set_defaults(func=lambda _args: (parser.print_help(), 2)[1])
    for name, help_text in (("plan", "show what apply would change (dry run, the default)"),
                            ("apply", "write the plan in one transaction (needs --yes)")):
        p = actions.add_parser(name, help=help_text)
        _add_target_args(p)
        p.add_argument("--create", action="store_true", help="insert the tenant if it does not exist")
        p.add_argument("--limit", action="append", default=[], metavar="NAME=VALUE",
                       help="set a limit or flag, e.g. max_concurrent_users=500 (repeatable)")
        p.add_argument("--delete-extra", action="store_true",
                       help="also delete extension rows rtbook did not create (duplicates, broadcast/presence)")
        p.add_argument("--format", choices=["text", "json"], default="text")
        if name == "apply":
            p.add_argument("--yes", action="store_true", help="confirm the write")
        p.set_defaults(func=_cmd_tenant, tenant_action=name)


def _cmd_tenant(args: argparse.Namespace) -> int:
    from rtbook.cli._target import build_target
    from rtbook.seeding import apply, plan  # SQLAlchemy: only when a tenant command runs
    from rtbook.target import Target

    target = build_target(args)
    assert isinstance(target, Target)
    the_plan = plan(target, tenant=args.tenant, create=args.create, limits=args.limit,
                    delete_extra=args.delete_extra)
    out: dict[str, Any] = {"plan": the_plan.to_dict()}
    if args.tenant_action == "plan":
        _emit(target, args, str(the_plan), out)
        return 1 if the_plan.blocked else 0
    if not args.yes:
        _emit(target, args, str(the_plan), out)
        raise ConfirmationRequired("rtbook tenant apply writes to the database; read the plan above and "
                                   "run again with --yes")
    result = apply(target, the_plan, yes=True).redacted(target.redactor)
    out["result"] = result.to_dict()
    _emit(target, args, f"{the_plan}\n{result}", out)
    return 1 if result.failed else 0


def _emit(target: Target, args: argparse.Namespace, text: str, data: Mapping[str, Any]) -> None:
    if args.format == "json":
        text = json.dumps(target.redactor.data(dict(data)), indent=2, default=str)
    # The CLI's output; rtbook.cli owns print, so write to stdout directly.
    sys.stdout.write(target.redactor.text(text) + "\n")
