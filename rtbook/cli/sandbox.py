"""``rtbook sandbox up|down|status|scenarios``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rtbook.exceptions import RtbookError, SandboxError

__all__ = ['add_cli']



def add_cli(subparsers: Any) -> None:
    """Add ``rtbook sandbox ...`` to the ``rtbook`` command."""
    p = subparsers.add_parser(
        "sandbox",
        help="start/stop the embedded sandbox (PostgreSQL + Realtime-compatible server + Kong-compatible gateway)",
        description="The embedded sandbox: a throwaway Realtime stack on 127.0.0.1 with fresh secrets.",
    )
    sub = p.add_subparsers(dest="sandbox_command", metavar="{up,down,status,scenarios}")
    sub.required = True
    up = sub.add_parser("up", help="start the sandbox and return when it is ready")
    up.add_argument("--dir", metavar="DIR", help="write the stack directory here (kept by 'down')")
    up.add_argument("--break", dest="breaks", action="append", default=[], metavar="SCENARIO",
                    help="apply a break scenario (repeatable); see 'rtbook sandbox scenarios'")
    up.add_argument("--timeout", type=float, default=60, help="seconds each part may take to start (default 60)")
    up.add_argument("--realtime-version", help="behave as this Realtime image tag (default: the stack's compose tag)")
    up.set_defaults(func=_up)
    down = sub.add_parser("down", help="stop the sandbox and remove its cluster and state")
    down.set_defaults(func=_down)
    st = sub.add_parser("status", help="show the running sandbox's endpoints")
    st.add_argument("--json", action="store_true", help="print JSON")
    st.set_defaults(func=_status)
    scen = sub.add_parser("scenarios", help="list the break scenarios and the symptom each produces")
    scen.add_argument("--json", action="store_true", help="print JSON")
    scen.set_defaults(func=_scenarios)


def _fail(exc: RtbookError) -> int:
    print(f"rtbook sandbox: {exc}", file=sys.stderr)
    return 1 if isinstance(exc, SandboxError) else 2


def _up(args: argparse.Namespace) -> int:
    from rtbook.sandbox import manager

    try:
        state = manager.up(args.dir, args.breaks, args.timeout, realtime_version=args.realtime_version)
    except RtbookError as exc:
        return _fail(exc)
    print(f"sandbox up: gateway {state.gateway_url}, realtime {state.realtime_url} (Host {state.realtime_host}), "
          f"db {state.db_url}, tenant {state.tenant}")
    print(f"stack directory: {state.stack_dir}")
    if state.breaks:
        print(f"break scenarios: {', '.join(state.breaks)}")
    return 0


def _down(args: argparse.Namespace) -> int:
    from rtbook.sandbox import manager

    try:
        stopped = manager.down()
    except RtbookError as exc:
        return _fail(exc)
    print("sandbox stopped" if stopped else "no sandbox was running")
    return 0


_FIELDS = (("stack directory", "stack_dir"), ("gateway URL", "gateway_url"), ("realtime URL", "realtime_url"),
           ("realtime Host", "realtime_host"), ("database URL", "db_url"), ("tenant", "tenant"),
           ("break scenarios", "breaks"))


def _status(args: argparse.Namespace) -> int:
    from rtbook.sandbox import manager

    try:
        info = manager.status()
    except RtbookError as exc:
        return _fail(exc)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0 if info.get("running") else 1
    if "stack_dir" not in info:
        print("no sandbox is running; start one with 'rtbook sandbox up'")
        return 1
    print("running" if info["running"] else f"NOT running (processes alive: {info.get('alive')}); "
          "run 'rtbook sandbox down' then 'up'")
    for label, key in _FIELDS:
        value = info.get(key)
        print(f"  {label:16} {', '.join(value) if isinstance(value, list) else value}")
    return 0 if info["running"] else 1


def _scenarios(args: argparse.Namespace) -> int:
    from rtbook.sandbox.scenarios import SCENARIOS

    if args.json:
        print(json.dumps([{"name": s.name, "symptom": s.symptom, "cause": s.cause} for s in SCENARIOS.values()],
                         indent=2))
        return 0
    for s in SCENARIOS.values():
        print(f"{s.name}\n  symptom: {s.symptom}\n  cause:   {s.cause}")
    return 0
