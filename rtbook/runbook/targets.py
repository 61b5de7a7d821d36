"""Many targets in one command: ``rtbook check --targets FILE`` and ``rtbook run --targets FILE``.

``check`` runs the targets in a small thread pool (``parallel:`` in the file, default 2): a check
waits on the network, not the CPU, each target has its own :class:`~rtbook.target.Target` (its own
cache, redactor and secrets, passed as ``Target.env``, never through ``os.environ``), and the
registry's per-check limits run in threads already.

``run`` runs the targets one after the other. A run's kernels read the target's secrets and its
sandbox (``$RTBOOK_SANDBOX``) from the process environment they inherit, so each target's run
gets an environment of its own for its duration (restored afterwards), which only one run at a
time can have; and every run starts its own kernel, which on two shared cores gains nothing from
running side by side. Each target writes its own audit record (``rtbook verify`` checks it); the
combined summary (``summary.md``, ``summary.html``, ``summary.json``) goes to a folder of its own
next to the records.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rtbook.config.targets import TargetsFile, TargetSpec
from rtbook.exceptions import ConfigError
from rtbook.report.targets import Combined, TargetRow, report_facts, rows_in_order
from rtbook.results import Report

if TYPE_CHECKING:
    from rtbook.config.stack import Stack
    from rtbook.secrets import Redactor
    from rtbook.target import Target

__all__ = ["build_target", "check_targets", "run_targets", "stack_facts", "write_summary"]

Progress = Callable[[str], None]


def build_target(spec: TargetSpec, *, timeout: float = 10.0, docker: bool | None = None,
                 environ: Mapping[str, str] | None = None) -> Target:
    """The :class:`~rtbook.target.Target` of one spec, its secrets read from the variables it names.

    Raises:
        ConfigError: a named variable is not set, or the sandbox is not running.
        InputError: the stack directory cannot be read.
    """
    from rtbook.config.stack import Stack
    from rtbook.target import Target, sandbox_state_path

    common: dict[str, Any] = {"name": spec.name, "env": spec.resolve_env(environ), "timeout": timeout,
                              "tenant": spec.tenants[0] if spec.tenants else None}
    if docker is not None:
        common["docker"] = docker
    if spec.sandbox is not None:
        state = sandbox_state_path(spec.sandbox)
        if not state.is_file():
            raise ConfigError(f"target {spec.name!r}: no running sandbox named {spec.sandbox!r} ({state} does not "
                              f"exist); start it with 'rtbook sandbox up --name {spec.sandbox}'")
        return Target.from_sandbox(state, **{k: v for k, v in common.items() if v is not None})
    stack = Stack.load(spec.stack) if spec.stack is not None else None
    if stack is not None:
        stack.check_gateway_files()
    return Target(stack=stack, api_url=spec.api_url, realtime_url=spec.realtime_url,
                  realtime_host=spec.realtime_host, db_url=spec.db_url, **common)


def stack_facts(stack: Stack | None) -> dict[str, str]:
    """What the stack's files say that every region should share: the Realtime image and the gateway kind."""
    from rtbook.config.gateway import realtime_upstream

    if stack is None:
        return {}
    facts: dict[str, str] = {}
    realtime = stack.realtime_service()
    if realtime is not None and realtime.image:
        facts["realtime image"] = realtime.image
    with contextlib.suppress(Exception):  # an unreadable gateway is its own check's finding, not a fact
        kind = realtime_upstream(stack).kind
        facts["gateway"] = kind or "none"
    return facts


def _tenants(target: Target, spec: TargetSpec, all_tenants: bool) -> list[str]:
    from rtbook.config.gateway import realtime_upstream

    tenants = list(spec.tenants)
    if all_tenants:
        found = [target.resolved_tenant()]
        if target.stack is not None:
            found += list(realtime_upstream(target.stack).routed_tenants)
        tenants = list(dict.fromkeys([*tenants, *found]))
    return tenants


# ================================================================ check


def check_targets(
    targets: TargetsFile,
    *,
    only: Sequence[str] = (),
    live: bool = False,
    timeout: float = 10.0,
    docker: bool | None = None,
    all_tenants: bool = False,
    progress: Progress | None = None,
) -> tuple[Combined, list[Redactor]]:
    """Check every target of the file, ``targets.parallel`` at a time; return the summary and each target's redactor.

    Every target is built before any check runs, so a missing variable, a stopped sandbox or an
    unreadable stack is a usage error (exit 2) naming the target, not a half-done run.
    """
    from rtbook.registry import areas_for, load_check_modules, run_checks, run_checks_per_tenant

    say = progress or (lambda _msg: None)
    # Imported here, once: a check module registers its checks as it is imported, and the registry
    # must not grow in one thread while another iterates it.
    load_check_modules(areas_for(tuple(only)))
    built = [(spec, build_target(spec, timeout=timeout, docker=docker)) for spec in targets.targets]
    reports = {spec.name: Report(title=f"rtbook check ({spec.name})") for spec in targets.targets}

    def one(spec: TargetSpec, target: Target) -> TargetRow:
        exclude: list[str] = []
        if not live and spec.sandbox is None:
            exclude += ["db.", "tenant.", "gateway.", "realtime."]  # as 'rtbook check' without --live
        tenants = _tenants(target, spec, all_tenants)
        report = reports[spec.name]
        if len(tenants) > 1:
            report.extend(run_checks_per_tenant(target, tenants, only=only, exclude=exclude, title=report.title))
        else:
            run_checks(target, only=only, exclude=exclude, into=report)
        say(f"{spec.name}: {report.summary_line()}")
        return TargetRow(spec.name, spec.region, report, {**stack_facts(target.stack), **report_facts(report)})

    rows: list[TargetRow] = []
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=min(targets.parallel, len(built)),
                                                 thread_name_prefix="rtbook-target")
    try:
        futures = {pool.submit(one, spec, target): spec for spec, target in built}
        for future in concurrent.futures.as_completed(futures):
            spec = futures[future]
            try:
                rows.append(future.result())
            except Exception as exc:  # a bug or a crash in one target must not hide the others' verdicts
                rows.append(TargetRow(spec.name, spec.region, reports[spec.name],
                                      error=f"{type(exc).__name__}: {exc}"))
    except KeyboardInterrupt:
        # Checks are bounded: the running ones end on their own deadlines; none that has not started starts.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    combined = Combined(rows_in_order(rows, [s.name for s in targets.targets]),
                        title=f"rtbook check --targets {targets.path.name}")
    return combined, [target.redactor for _, target in built]


# ================================================================ run


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set ``values`` in ``os.environ`` for the block (the kernels inherit them), then restore what was there."""
    previous = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in previous.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def run_params(spec: TargetSpec, base: Mapping[str, Any]) -> dict[str, Any]:
    """The notebook parameters of one target: ``base`` (``-p``, ``--params-file``) plus the target's own.

    Raises:
        ConfigError: the target names several tenants (a run records one tenant), or a parameter is bad.
    """
    from rtbook.runbook.params import validate_params

    if len(spec.tenants) > 1:
        raise ConfigError(f"target {spec.name!r}: 'rtbook run' records one tenant per target, the file lists "
                          f"{len(spec.tenants)}; give each tenant a target of its own (same sandbox or stack)")
    values = dict(base)
    if spec.sandbox is not None:
        values["target_kind"] = "sandbox"
    elif spec.stack is None:
        raise ConfigError(f"target {spec.name!r}: 'rtbook run' needs stack: DIR (the notebooks read the stack's "
                          "files); URLs alone are enough for 'rtbook check --targets'")
    else:
        values["target_kind"] = "stack"
        values["stack_dir"] = str(spec.stack)
    for key in ("api_url", "realtime_url", "realtime_host", "db_url"):
        value = getattr(spec, key)
        if value is not None:
            values[key] = value
    if spec.tenants:
        values["tenant"] = spec.tenants[0]
    try:
        return dict(validate_params(values))
    except ConfigError as exc:  # a -p value, or one the file allows but the runbook does not
        raise ConfigError(f"target {spec.name!r}: {exc}") from None


def run_targets(
    targets: TargetsFile,
    *,
    base_params: Mapping[str, Any],
    output_dir: str | Path = "outputs",
    notebooks: str | None = None,
    source_dir: str | Path | None = None,
    kernel_name: str = "python3",
    cell_timeout_s: float | None = None,
    progress: Progress | None = None,
) -> tuple[Combined, Path]:
    """Run the notebooks against every target in turn: one audit record each, then the combined summary.

    Returns the summary and the folder it was written to. Every target is prepared (parameters,
    secrets, sandbox state) before the first notebook runs, so a bad file entry is a usage error.
    """
    from rtbook.runbook.runner import run_notebooks

    say = progress or (lambda _msg: None)
    prepared: list[tuple[TargetSpec, dict[str, Any], dict[str, str], Target]] = []
    for spec in targets.targets:
        params = run_params(spec, base_params)
        env = spec.resolve_env()
        if spec.sandbox is not None:
            env["RTBOOK_SANDBOX"] = spec.sandbox
        with _environment(env):
            target = build_target(spec)  # the sandbox is running, the stack readable, before anything runs
        prepared.append((spec, params, env, target))
    rows: list[TargetRow] = []
    for i, (spec, params, env, target) in enumerate(prepared, 1):
        say(f"target {i}/{len(prepared)}: {spec.name}" + (f" ({spec.region})" if spec.region else ""))
        with _environment(env):
            outcome = run_notebooks(params, notebooks=notebooks, output_dir=output_dir, label=spec.name,
                                    source_dir=source_dir, kernel_name=kernel_name, cell_timeout_s=cell_timeout_s,
                                    progress=say)
        report = Report([r for n in outcome.notebooks for r in n.report], title=f"rtbook run ({spec.name})")
        rows.append(TargetRow(spec.name, spec.region, report, {**stack_facts(target.stack), **report_facts(report)},
                              record=str(outcome.record_dir), manifest_sha256=outcome.manifest_sha256))
    combined = Combined(rows, title=f"rtbook run --targets {targets.path.name}")
    folder = write_summary(combined, Path(output_dir), [t.redactor for *_, t in prepared])
    return combined, folder


def write_summary(combined: Combined, output_dir: Path, redactors: Sequence[Redactor]) -> Path:
    """Write ``summary.md``, ``summary.html`` and ``summary.json`` to ``<output_dir>/<UTC time>-targets[-N]/``."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    output_dir.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        folder = output_dir / (f"{stamp}-targets" if n == 1 else f"{stamp}-targets-{n}")
        try:
            folder.mkdir()
            break
        except FileExistsError:
            continue
    else:
        raise ConfigError(f"{output_dir} already holds 1000 summaries named {stamp}-targets-N; pass --output-dir")
    # Records sit next to this folder: link them relatively, so the tree can be moved or archived whole.
    shown = dataclasses.replace(combined, rows=[
        dataclasses.replace(r, record=os.path.relpath(r.record, folder)) if r.record else r for r in combined.rows])
    for name, text in (("summary.md", shown.markdown()), ("summary.html", shown.html()),
                       ("summary.json", shown.to_json() + "\n")):
        (folder / name).write_text(redact(text, redactors), encoding="utf-8")
    return folder


def redact(text: str, redactors: Sequence[Redactor]) -> str:
    """``text`` with every target's secrets replaced."""
    for redactor in redactors:
        text = redactor.text(text)
    return text

