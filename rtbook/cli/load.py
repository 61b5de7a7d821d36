"""``rtbook load``: measured load against the sandbox or a stack (open model, exact percentiles)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from rtbook.cli._click import RtbookCommand, SectionOption
from rtbook.cli._target import TargetOptions, build_target, shared_options

__all__ = ["add_cli"]

F = TypeVar("F", bound=Callable[..., Any])

_SECTION = "Load"
# The target options that mean something for a load run (no --live/--table). --no-docker skips reading the
# Realtime container's limits before and after the run (read when an engine answers).
_TARGET = ("stack", "env_file", "target", "api_url", "realtime_url", "realtime_host", "db_url", "tenant", "timeout",
           "docker_off")


def add_cli(group: click.Group) -> None:
    """Add ``rtbook load`` to the ``rtbook`` command."""
    group.add_command(_load)


def _opt(*decls: str, **kw: Any) -> Callable[[F], F]:
    return click.option(*decls, cls=SectionOption, section=_SECTION, **kw)


def _locustfile(ctx: click.Context, wanted: bool) -> None:
    if wanted:
        from importlib.util import find_spec

        spec = find_spec("rtbook.load.locustfile")
        assert spec is not None and spec.origin is not None
        click.echo(spec.origin)
        ctx.exit(0)


@click.command(
    "load", cls=RtbookCommand,
    short_help="put measured load on Realtime: exact latency percentiles, every message accounted for",
    help="Open-model load with Phoenix sockets: messages are sent at their scheduled times and latency runs from "
    "that time (no coordinated omission), recorded in HDR histograms; every expected receiver accounts for every "
    "message (sent = delivered + lost; duplicates, reordering and late arrivals counted apart). A target that is "
    "not this machine or the sandbox needs --i-own-this-target. Exit 0 all thresholds met, 1 a threshold "
    "violated, 2 usage errors.",
)
@shared_options(*_TARGET)
@_opt("--scenario", type=click.Choice(["connect", "broadcast", "presence", "postgres_changes"]),
      default="broadcast", show_default=True,
      help="connect: hold sockets; broadcast: senders and receivers per topic; presence: senders track, "
      "every member gets each diff; postgres_changes: INSERTs into the probe table (rtbook probe install) reach "
      "every receiver")
@_opt("--scenario-file", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
      help="a weighted mix of scenarios run at once (YAML or JSON with 'parts:'); replaces --scenario and its numbers")
@_opt("--connections", type=int, default=10, show_default=True, help="connect: sockets to open and hold")
@_opt("--senders", type=int, default=1, show_default=True, help="broadcast: senders per topic")
@_opt("--receivers", type=int, default=4, show_default=True, help="broadcast: receivers per topic")
@_opt("--topics", type=int, default=1, show_default=True, help="broadcast: topics")
@_opt("--rate", type=float, default=10.0, show_default=True, help="broadcast: messages per second in all")
@_opt("--join-rate", type=float, default=20.0, show_default=True, help="sockets opened and joined per second")
@_opt("--duration", "duration_s", type=float, default=10.0, show_default=True, help="seconds of sending or holding")
@_opt("--ramp", "ramp_s", type=float, default=0.0, show_default=True, help="spread the joins over this many seconds")
@_opt("--payload-bytes", type=int, default=64, show_default=True, help="padding carried by each message")
@_opt("--ack", is_flag=True, help="ask Realtime to acknowledge each broadcast (measures broadcast_ack)")
@_opt("--late-ms", type=float, default=1000.0, show_default=True, help="a delivery slower than this counts as late")
@_opt("--processes", type=int, default=1, show_default=True, help="generator processes (one per core at most)")
@_opt("--threshold", "thresholds", multiple=True, metavar="EXPR",
      help="e.g. 'broadcast.p99<50ms', 'lost==0', 'errors<=3' (repeatable); a violation exits 1")
@_opt("--format", "fmt", type=click.Choice(["text", "json", "junit"]), default="text",
      help="output format (default: text; junit: one test case for delivery and one per threshold)")
@_opt("--output", type=click.Path(path_type=Path, file_okay=False), metavar="DIR",
      help="write load.json, load.txt, the raw histograms (latency.hlog, HdrHistogram log format) and the "
      "figures (load_*.png) here")
@_opt("--locustfile", is_flag=True, expose_value=False, is_eager=True, callback=lambda ctx, _p, v: _locustfile(ctx, v),
      help="print the path of rtbook's Locust file (distributed load: master and workers) and exit")
@_opt("--i-own-this-target", "confirmed", is_flag=True,
      help="confirm a target that is not 127.0.0.1 or the sandbox may be loaded")
def _load(scenario: str, scenario_file: Path | None, fmt: str, output: Path | None, thresholds: tuple[str, ...],
          confirmed: bool, **numbers: Any) -> int:
    opts = TargetOptions.from_flags(**{name: numbers.pop(name) for name in _TARGET})
    from rtbook.exceptions import ConfigError
    from rtbook.load.runner import require_consent, run_load, write_record
    from rtbook.load.scenario import Mix, Scenario
    from rtbook.load.thresholds import MAX_THRESHOLDS, parse_threshold

    if len(thresholds) > MAX_THRESHOLDS:
        raise ConfigError(f"--threshold given {len(thresholds)} times; at most {MAX_THRESHOLDS}")
    parsed = [parse_threshold(t) for t in thresholds]
    plan: Scenario | Mix = (Mix.load(str(scenario_file)) if scenario_file is not None
                            else Scenario(kind=scenario, **numbers))  # type: ignore[arg-type]
    if output is not None and output.exists() and not output.is_dir():
        raise ConfigError(f"--output {output} is not a directory; give a directory to write the record into")
    target = build_target(opts)
    require_consent(target, confirmed)

    def progress(line: str) -> None:
        if fmt == "text":
            sys.stderr.write(f"rtbook load: {line}\n")

    result = run_load(target, plan, parsed, on_progress=progress)
    if output is not None:
        from rtbook.load.plots import save

        write_record(result, output)
        save(result, output)
    if fmt == "json":
        text = json.dumps(result.to_dict(), indent=2)
    elif fmt == "junit":
        text = result.to_report().to_junit(suite="rtbook load")
    else:
        text = result.text()
    sys.stdout.write(target.redactor.text(text) + "\n")
    return 1 if result.failed else 0
