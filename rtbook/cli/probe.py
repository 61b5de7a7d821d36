"""``rtbook probe install|remove|status``: thin; the logic is in :mod:`rtbook.probe`.

Without ``--yes``, install and remove are dry runs: they print the prior state and the exact SQL
and change nothing (exit 0). With ``--yes`` the SQL runs in one transaction (exit 1 if it failed).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["add_cli"]


def add_cli(subparsers: Any) -> None:
    """Add ``rtbook probe ...`` to the ``rtbook`` command."""
    from rtbook.cli._target import _add_target_args

    parser = subparsers.add_parser(
        "probe", help="install or remove the probe table the live checks write to (nothing else is ever written)")
    actions = parser.add_subparsers(dest="probe_command", metavar="ACTION", parser_class=type(parser))
    parser.set_defaults(func=lambda _args: (parser.print_help(), 2)[1])
    for name, help_text in (
        ("install", "create rtbook_probe.events and add it to the publication (dry run unless --yes)"),
        ("remove", "drop the probe and take it out of the publication (dry run unless --yes)"),
        ("status", "show whether the probe is installed (read-only)"),
    ):
        p = actions.add_parser(name, help=help_text)
        _add_target_args(p)
        p.add_argument("--format", choices=["text", "json"], default="text")
        if name != "status":
            p.add_argument("--yes", action="store_true", help="run the SQL (without it: print it, change nothing)")
        p.set_defaults(func=_cmd_probe, probe_action=name)


def _cmd_probe(args: argparse.Namespace) -> int:
    from rtbook import probe
    from rtbook.cli._target import build_target
    from rtbook.target import Target

    target = build_target(args)
    assert isinstance(target, Target)
    if args.probe_action == "status":
        state = probe.status(target)
        text = ("installed" if state.installed else "not installed") + f": {state.describe()}"
        _emit(target, args, text, {"status": state.to_dict()})
        return 0
    plan = probe.plan_install(target) if args.probe_action == "install" else probe.plan_remove(target)
    out: dict[str, Any] = {"plan": plan.to_dict()}
    if not args.yes:
        tail = "\nDry run: nothing was changed." + (" Add --yes to run the SQL above." if plan.statements else "")
        _emit(target, args, str(plan) + tail, out)
        return 1 if plan.blocked else 0
    run = probe.install if args.probe_action == "install" else probe.remove
    result = run(target, plan, yes=True).redacted(target.redactor)
    out["result"] = result.to_dict()
    text = f"{plan.text(dry_run=False)}\n{result.status.symbol} {result.summary}\n{result.detail}".rstrip()
    _emit(target, args, text, out)
    return 1 if result.failed else 0


def _emit(target: Any, args: argparse.Namespace, text: str, data: dict[str, Any]) -> None:
    if args.format == "json":
        text = json.dumps(target.redactor.data(data), indent=2, default=str)
    # The CLI's output; rtbook.cli owns print, so write to stdout directly.
    sys.stdout.write(target.redactor.text(text) + "\n")
