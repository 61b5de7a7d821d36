"""Running the notebooks headless with papermill (and the sandbox around them)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rtbook.exceptions import (
    ChecksFailedError,
    ConfigError,
    DependencyError,
    InputError,
)
from rtbook.results import Report
from rtbook.runbook.engine import (
    WarmKernel,
    cell_deadline_s,
    import_papermill,
    is_ipython_kernel,
    kernel_spec_manager,
)
from rtbook.runbook.notebooks import NotebookSpec, notebook_dir, select_notebooks
from rtbook.runbook.params import target_from_params, validate_params
from rtbook.runbook.record import (
    NotebookOutcome,
    RunOutcome,
    _read_notebook,
    _run_redactor,
    _write_record,
    environment_facts,
)

if TYPE_CHECKING:
    pass

__all__ = ['RunOutcome', 'run_notebooks']



Progress = Callable[[str], None]


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _record_dir(output_dir: Path, label: str, started: dt.datetime) -> Path:
    """Create and return this run's record folder: ``<UTC time>-<label>``, then ``-2``, ``-3``... if taken.

    The folder is made here, atomically, so two runs started in the same second (or two processes
    sharing ``outputs/``) can never pick the same name.
    """
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", label).strip("-") or "run"
    base = output_dir / f"{started.strftime('%Y%m%dT%H%M%SZ')}-{safe}"
    output_dir.mkdir(parents=True, exist_ok=True)
    for i in range(1, 10_000):
        path = base if i == 1 else Path(f"{base}-{i}")
        try:
            path.mkdir(mode=0o755)
        except FileExistsError:
            continue
        return path
    raise ConfigError(f"{output_dir} already holds 10000 runs named {base.name}-N; clean it up or pass --output-dir")


def run_notebooks(
    params: Mapping[str, Any],
    *,
    notebooks: str | Sequence[str] | None = None,
    output_dir: str | Path = "outputs",
    label: str = "",
    source_dir: str | Path | None = None,
    kernel_name: str = "python3",
    cell_timeout_s: float | None = None,
    progress: Progress | None = None,
    warm_kernel: bool = True,
) -> RunOutcome:
    """Execute the selected notebooks with papermill and write the redacted audit record.

    Every notebook runs even when an earlier one failed, so the record is complete. With
    ``warm_kernel`` (the default) the notebooks share one kernel, reset to a fresh namespace
    before each (:class:`~rtbook.runbook.engine.WarmKernel`); without it, or when
    ``kernel_name`` is not an IPython kernel (which that reset needs), each notebook gets a
    kernel of its own, as plain papermill does.

    Raises:
        ConfigError: for bad parameters or notebook names, before any notebook runs.
        InputError: when the stack in ``stack_dir`` cannot be read, before any notebook runs.
        DependencyError: when papermill or the kernel is missing.
    """
    say = progress or (lambda _msg: None)
    clean = validate_params({k: v for k, v in params.items() if k != "run_dir"})
    specs = select_notebooks(notebooks)
    src = Path(source_dir) if source_dir else notebook_dir()
    missing = [nb.name for nb in specs if not (src / f"{nb.name}.ipynb").is_file()]
    if missing:
        raise ConfigError(f"notebooks not found in {src}: {', '.join(missing)}; pass --notebook-dir")
    if clean["target_kind"] == "stack":
        # An unreadable stack is a usage error (exit 2, one line), as for 'rtbook check', not six failed notebooks.
        target_from_params(**clean)
    with contextlib.ExitStack() as cleanup:
        kernel: WarmKernel | None = None
        if not (warm_kernel and is_ipython_kernel(kernel_name)):
            _require_kernel(kernel_name)  # a WarmKernel says so itself when it starts
        else:
            # Started first: the kernel boots and imports rtbook on one core while papermill is
            # imported (and the redactor built) here on the other.
            kernel = cleanup.enter_context(WarmKernel(kernel_name, src, warmup=_WARMUP))
        pm = import_papermill()
        cell_s = cell_deadline_s(clean.get("timeout_s"), cell_timeout_s)  # None: derived from timeout_s
        return _run(pm, kernel, clean, specs, src, Path(output_dir), label, kernel_name, cell_s, say)


# Run silently in the warm kernel before the first notebook: what every notebook imports.
_WARMUP = """
try:
    import ipywidgets
    import rtbook.registry
    import rtbook.runbook
    import rtbook.runbook.widgets
    rtbook.registry.load_check_modules()
except Exception:
    pass
"""


def _run(
    pm: Any,
    kernel: WarmKernel | None,
    clean: dict[str, Any],
    specs: Sequence[NotebookSpec],
    src: Path,
    output_dir: Path,
    label: str,
    kernel_name: str,
    cell_timeout_s: float,
    say: Progress,
) -> RunOutcome:
    redactor = _run_redactor(clean)
    facts = environment_facts()  # while a warm kernel is still starting
    started = _utc_now()
    record = _record_dir(output_dir, label or str(clean["target_kind"]), started)
    outcome = RunOutcome(record_dir=record)
    workdir = Path.cwd()
    staging = Path(tempfile.mkdtemp(prefix="rtbook-run-"))
    os.chmod(staging, 0o700)
    executed: dict[str, Any] = {}
    try:
        for i, spec in enumerate(specs, 1):
            say(f"[{i}/{len(specs)}] {spec.name}: {spec.title} ...")
            t0 = time.monotonic()
            run_params = {**clean, "run_dir": str(staging)}
            nb_in = src / f"{spec.name}.ipynb"
            nb_out = staging / f"{spec.name}.ipynb"
            error_name = error = ""
            try:
                if kernel is not None:
                    kernel.execute_notebook(
                        pm, nb_in, nb_out, parameters=run_params, execution_timeout=cell_timeout_s, cwd=workdir
                    )
                else:
                    pm.execute_notebook(
                        str(nb_in),
                        str(nb_out),
                        parameters=run_params,
                        kernel_name=kernel_name,
                        progress_bar=False,
                        # The caller's folder, not src: the shipped notebooks may sit in a read-only
                        # site-packages, and a relative stack_dir must mean what it means to 'rtbook run'.
                        cwd=str(workdir),
                        execution_timeout=cell_timeout_s,
                    )
            except pm.PapermillExecutionError as exc:
                error_name, error = str(exc.ename), str(exc.evalue)
            except Exception as exc:  # a dead kernel must not lose the rest of the record
                error_name, error = type(exc).__name__, str(exc)
            duration = time.monotonic() - t0
            results_file = staging / f"{spec.name}.results.json"
            report = load_one(results_file) if results_file.exists() else Report()
            if not error_name:
                status = "passed"
            elif error_name == ChecksFailedError.__name__:
                status = "failed"
            else:
                status = "error"
            outcome.notebooks.append(
                NotebookOutcome(spec.name, status, duration, report, redactor.text(error), error_name)
            )
            if nb_out.exists():
                executed[spec.name] = _read_notebook(nb_out)
            detail = f" ({error_name}: {redactor.text(error)[:200]})" if status == "error" else ""
            say(f"      {status.upper()} in {duration:.1f}s: {report.summary_line()}{detail}")
        ended = _utc_now()
        if kernel is not None:
            kernel.kill()  # it has done its work; it dies while the record is written
        _write_record(record, outcome, executed, staging, src, clean, redactor, started, ended, facts)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return outcome


def load_one(path: Path) -> Report:
    """Read one ``<notebook>.results.json``."""
    try:
        return Report.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"cannot read {path.name}: {exc}") from exc


def _require_kernel(name: str) -> None:
    try:
        from jupyter_client.kernelspec import NoSuchKernel
    except ImportError as exc:
        raise DependencyError("jupyter_client is not installed; run pip install ipykernel") from exc
    try:
        kernel_spec_manager().get_kernel_spec(name)
    except NoSuchKernel:
        raise DependencyError(
            f"no Jupyter kernel named {name!r}; install one with: python3 -m ipykernel install --sys-prefix"
        ) from None


# ================================================================ sandbox


@contextlib.contextmanager
def _sandbox_running(say: Progress, breaks: Sequence[str] = (), timeout_s: float = 60) -> Iterator[None]:
    """Start the embedded sandbox (with ``breaks``) for the run and stop it afterwards.

    A sandbox that is already running is reused as it is (and left running) when no break
    scenario was asked for.
    """
    from rtbook.sandbox import manager

    current = manager.status()
    if current.get("running"):
        if breaks or current.get("breaks"):
            raise ConfigError(
                f"a sandbox is already running (breaks: {current.get('breaks') or 'none'}); stop it with "
                "'rtbook sandbox down', or pass --no-sandbox-start to run against it as it is"
            )
        say("sandbox: reusing the sandbox that is already running (left running afterwards)")
        yield
        return
    say("sandbox: starting" + (f" with break scenario(s) {', '.join(breaks)}" if breaks else "") + " ...")
    t0 = time.monotonic()
    manager.up(breaks=list(breaks), timeout=timeout_s)
    say(f"sandbox: up in {time.monotonic() - t0:.1f}s")
    try:
        yield
    finally:
        say("sandbox: stopping ...")
        manager.down()
