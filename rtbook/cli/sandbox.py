"""``rtbook sandbox up|down|status|scenarios``."""

from __future__ import annotations

import json
import os
import sys

import click

from rtbook.cli._click import OutputDir, RtbookGroup, Seconds
from rtbook.exceptions import RtbookError, SandboxError

__all__ = ["add_cli"]

# How long each part of the sandbox may take to start: generous for a slow machine, bounded so a typo
# (--timeout 6000) is caught.
_MAX_START_S = 3600.0


def add_cli(group: click.Group) -> None:
    """Add ``rtbook sandbox ...`` to the ``rtbook`` command."""
    group.add_command(_sandbox)


@click.group(
    "sandbox",
    cls=RtbookGroup,
    invoke_without_command=True,
    subcommand_metavar="{up,down,status,scenarios} [ARGS]...",
    short_help="start/stop the embedded sandbox (PostgreSQL + Realtime-compatible server + Kong-compatible gateway)",
    help="The embedded sandbox: a throwaway Realtime stack on 127.0.0.1 with fresh secrets.",
)
@click.pass_context
def _sandbox(ctx: click.Context) -> None:
    if ctx.invoked_subcommand is None:
        raise click.UsageError("the following arguments are required: {up,down,status,scenarios}", ctx)


_NAME_HELP = ("the sandbox instance (default: $RTBOOK_SANDBOX, else 'default'); 'rtbook check --target sandbox' "
              "and 'rtbook run' find it through RTBOOK_SANDBOX=NAME")


def _fail(exc: RtbookError) -> int:
    print(f"rtbook sandbox: {exc}", file=sys.stderr)
    return 1 if isinstance(exc, SandboxError) else 2


@_sandbox.command("up", short_help="start the sandbox and return when it is ready",
                  help="Start the sandbox and return when it is ready.")
@click.option("--dir", "stack_dir", type=OutputDir(), help="write the stack directory here (kept by 'down')")
@click.option("--break", "breaks", multiple=True, metavar="SCENARIO",
              help="apply a break scenario (repeatable); see 'rtbook sandbox scenarios'")
@click.option("--timeout", type=Seconds(_MAX_START_S), default=60.0,
              help=f"seconds each part may take to start (0 < t <= {_MAX_START_S:g}; default 60)")
@click.option("--no-probe", "no_probe", is_flag=True,
              help="do not install the rtbook probe (then the live checks prove subscriptions, not delivery)")
@click.option("--realtime-version", metavar="VERSION",
              help="behave as this Realtime image tag, e.g. 2.78.19 (default: the stack's compose tag)")
@click.option("--name", metavar="NAME",
              help="name this sandbox (default: $RTBOOK_SANDBOX, else the first free of default, sandbox-2, "
              "sandbox-3...); each has its own state, ports and folders")
@click.option("--nodes", type=click.IntRange(1, 8), default=1, show_default=True,
              help="Realtime nodes, each with its own gateway, clustered and sharing the database (needs --lb if > 1)")
@click.option("--lb", type=click.Choice(["nginx", "haproxy", "caddy"]),
              help="start this real load balancer in front of the gateways; its URL becomes the public URL")
def _up(stack_dir: str | None, breaks: tuple[str, ...], timeout: float, no_probe: bool,
        realtime_version: str | None, name: str | None, nodes: int, lb: str | None) -> int:
    from rtbook.sandbox import manager

    try:
        state = manager.up(stack_dir, list(breaks), timeout, probe=not no_probe,
                           realtime_version=realtime_version, name=name, nodes=nodes, lb=lb)
    except RtbookError as exc:
        return _fail(exc)
    if state.name != "default":
        print(f"sandbox name: {state.name} (address it with --name {state.name} or RTBOOK_SANDBOX={state.name})")
    print(f"sandbox up: gateway {state.gateway_url}, realtime {state.realtime_url} (Host {state.realtime_host}), "
          f"db {state.db_url}, tenant {state.tenant}")
    print(f"stack directory: {state.stack_dir}")
    for node in state.nodes:
        print(f"node {node['name']}: realtime {node['realtime_url']}, gateway {node['gateway_url']}")
    if state.lb:
        print(f"load balancer: {state.lb['kind']} at {state.lb['url']} (config {state.lb['config']}); "
              f"nodes {'relay broadcast and presence' if state.lb.get('relay') else 'are NOT clustered'}")
    if state.breaks:
        print(f"break scenarios: {', '.join(state.breaks)}")
    print("rtbook probe: " + ("installed (rtbook_probe.events)" if state.probe else "not installed"))
    return 0


@_sandbox.command("down", short_help="stop the sandbox and remove its cluster and state",
                  help="Stop one sandbox instance (or --all) and remove its cluster and state.")
@click.option("--name", metavar="NAME", help=_NAME_HELP)
@click.option("--all", "all_", is_flag=True, help="stop every sandbox instance recorded under $RTBOOK_HOME")
def _down(name: str | None, all_: bool) -> int:
    from rtbook.sandbox import manager

    if name and all_:
        raise click.UsageError("pass --name NAME or --all, not both")
    try:
        names = manager.instances() if all_ else [name]
        stopped = [manager.down(name=n) for n in names]
    except RtbookError as exc:
        return _fail(exc)
    if all_:
        print(f"stopped {sum(stopped)} sandbox(es): {', '.join(str(n) for n in names)}" if names
              else "no sandbox was running")
        return 0
    print("sandbox stopped" if stopped[0] else f"no sandbox {_addressed(name)!r} was running"
          + _others(manager.instances()))
    return 0


def _addressed(name: str | None) -> str:
    return name or os.environ.get("RTBOOK_SANDBOX") or "default"


def _others(names: list[str]) -> str:
    return f" (recorded: {', '.join(names)}; pass --name NAME)" if names else ""


_FIELDS = (("name", "name"), ("stack directory", "stack_dir"), ("gateway URL", "gateway_url"),
           ("realtime URL", "realtime_url"), ("realtime Host", "realtime_host"),
           ("database URL", "db_url"), ("tenant", "tenant"), ("break scenarios", "breaks"))


@_sandbox.command("status", short_help="show the running sandbox's endpoints",
                  help="Show the running sandbox's endpoints. Exit 0 running, 1 not running.")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.option("--name", metavar="NAME", help=_NAME_HELP)
def _status(as_json: bool, name: str | None) -> int:
    from rtbook.sandbox import manager

    try:
        info = manager.status(name=name)
        others = [n for n in manager.instances() if n != info.get("name")]
    except RtbookError as exc:
        return _fail(exc)
    if as_json:
        print(json.dumps(info, indent=2))
        return 0 if info.get("running") else 1
    if "stack_dir" not in info:
        print(f"no sandbox {_addressed(name)!r} is running" + _others(others)
              + "; start one with 'rtbook sandbox up'")
        return 1
    print("running" if info["running"] else f"NOT running (processes alive: {info.get('alive')}); "
          "run 'rtbook sandbox down' then 'up'")
    for label, key in _FIELDS:
        value = info.get(key)
        print(f"  {label:16} {', '.join(value) if isinstance(value, list) else value}")
    for node in info.get("nodes") or []:
        print(f"  {'node':16} {node['name']}: realtime {node['realtime_url']}, gateway {node['gateway_url']}")
    if info.get("lb"):
        print(f"  {'load balancer':16} {info['lb']['kind']} {info['lb']['url']} (config {info['lb']['config']})")
    return 0 if info["running"] else 1


@_sandbox.command("scenarios", short_help="list the break scenarios and the symptom each produces",
                  help="List the break scenarios and the symptom each produces.")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def _scenarios(as_json: bool) -> int:
    from rtbook.sandbox.scenarios import SCENARIOS

    if as_json:
        print(json.dumps([{"name": s.name, "symptom": s.symptom, "cause": s.cause} for s in SCENARIOS.values()],
                         indent=2))
        return 0
    for s in SCENARIOS.values():
        print(f"{s.name}\n  symptom: {s.symptom}\n  cause:   {s.cause}")
    return 0
