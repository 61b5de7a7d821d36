"""Running the notebooks headless with papermill (and the sandbox around them)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import secrets
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
from rtbook.interrupt import Interrupted, as_interrupted, shielded
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
    staging = Path(tempfile.mkdtemp(prefix="rtbook-run-"))
    os.chmod(staging, 0o700)
    executed: dict[str, Any] = {}
    # SIGINT/SIGTERM (a KeyboardInterrupt, see rtbook.interrupt): the notebooks stop, the record so far
    # is written and marked incomplete, and the interrupt is raised again once it is on disk.
    interrupted: Interrupted | None = None
    during = ""
    try:
        try:
            for i, spec in enumerate(specs, 1):
                during = spec.name
                interrupted = _run_one(pm, kernel, clean, spec, i, len(specs), src, staging, kernel_name,
                                       cell_timeout_s, say, redactor, outcome, executed)
                if interrupted is not None:
                    break
        except KeyboardInterrupt as exc:  # just before or after a notebook (its outcome may be recorded)
            interrupted = as_interrupted(exc)
        ended = _utc_now()
        # Shielded: a second signal (Ctrl-C pressed again) must not leave half a record or a live kernel.
        with shielded():
            if kernel is not None:
                kernel.kill()  # it has done its work; it dies while the record is written
            stop = None
            if interrupted is not None:
                outcome.interrupted = interrupted.signum.name
                done = {n.name for n in outcome.notebooks}
                if any(n.name == during and n.status != "interrupted" for n in outcome.notebooks):
                    during = ""  # the signal came after that notebook ended: it was during none
                stop = {"signal": interrupted.signum.name, "during": during,
                        "not_run": [s.name for s in specs if s.name not in done]}
                say(f"interrupted by {interrupted.signum.name}: writing the record so far (marked incomplete)")
            with _history(output_dir, say) as history:
                if history is not None:
                    outcome.since = _failing_since(history, outcome, clean, started)
                _write_record(record, outcome, executed, staging, src, clean, redactor, started, ended, facts,
                              interrupted=stop, since=outcome.since)
                if history is not None:
                    _index(history, record, say)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if interrupted is not None:
        interrupted.record = str(record)
        interrupted.outcome = outcome
        raise interrupted
    return outcome


def _run_one(
    pm: Any,
    kernel: WarmKernel | None,
    clean: dict[str, Any],
    spec: NotebookSpec,
    i: int,
    count: int,
    src: Path,
    staging: Path,
    kernel_name: str,
    cell_timeout_s: float,
    say: Progress,
    redactor: Any,
    outcome: RunOutcome,
    executed: dict[str, Any],
) -> Interrupted | None:
    """Run one notebook and add its outcome; return the interrupt that stopped it, if one did."""
    say(f"[{i}/{count}] {spec.name}: {spec.title} ...")
    workdir = Path.cwd()
    t0 = time.monotonic()
    run_params = {**clean, "run_dir": str(staging)}
    nb_in = src / f"{spec.name}.ipynb"
    nb_out = staging / f"{spec.name}.ipynb"
    error_name = error = ""
    interrupted: Interrupted | None = None
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
    except KeyboardInterrupt as exc:  # SIGINT/SIGTERM while the notebook ran
        interrupted = as_interrupted(exc)
        error_name, error = "Interrupted", f"stopped by {interrupted.signum.name} while running"
    # Bookkeeping runs to its end even if a signal arrives now: the outcome must match the files.
    with shielded():
        duration = time.monotonic() - t0
        results_file = staging / f"{spec.name}.results.json"
        try:
            report = load_one(results_file) if results_file.exists() else Report()
        except InputError:
            if interrupted is None:
                raise
            report = Report()  # half-written when the signal came
        if interrupted is not None:
            status = "interrupted"
        elif not error_name:
            status = "passed"
        elif error_name == ChecksFailedError.__name__:
            status = "failed"
        else:
            status = "error"
        outcome.notebooks.append(
            NotebookOutcome(spec.name, status, duration, report, redactor.text(error), error_name)
        )
        if nb_out.exists():
            try:
                executed[spec.name] = _read_notebook(nb_out)
            except InputError:
                if interrupted is None:
                    raise
        detail = f" ({error_name}: {redactor.text(error)[:200]})" if status in ("error", "interrupted") else ""
        say(f"      {status.upper()} in {duration:.1f}s: {report.summary_line()}{detail}")
    return interrupted


# ================================================================ run history


@contextlib.contextmanager
def _history(output_dir: Path, say: Progress) -> Iterator[Any]:
    """The run history index (``outputs/history.sqlite`` or ``$RTBOOK_HISTORY_URL``), or None if it cannot open.

    The history is a convenience: a database that cannot be opened costs a warning line, never the record.
    """
    from rtbook.exceptions import RtbookError
    from rtbook.history.index import HistoryIndex

    try:
        index = HistoryIndex(output_dir=output_dir)
    except (RtbookError, OSError) as exc:
        say(f"history: not indexed ({exc})")
        yield None
        return
    try:
        yield index
    finally:
        index.close()


def _failing_since(
    history: Any, outcome: RunOutcome, params: Mapping[str, Any], started: dt.datetime
) -> dict[str, str]:
    """Since when (ISO UTC) each check failing in this run has been failing, for the summaries."""
    from sqlalchemy.exc import SQLAlchemyError

    from rtbook.exceptions import RtbookError
    from rtbook.history.index import target_key

    failing = {r.id for n in outcome.notebooks for r in n.report if r.failed}
    when = started.isoformat(timespec="seconds")
    try:
        since: dict[str, str] = history.failing_since(target_key(params), failing, when)
    except (RtbookError, OSError, SQLAlchemyError):
        return {}
    return since


def _index(history: Any, record: Path, say: Progress) -> None:
    from rtbook.exceptions import RtbookError

    try:
        snap = history.add_record(record)
    except (RtbookError, OSError) as exc:
        say(f"history: not indexed ({exc})")
        return
    say(f"history: indexed as {snap.id} ({snap.target}); see 'rtbook history'")


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
def _sandbox_running(
    say: Progress, breaks: Sequence[str] = (), timeout_s: float = 60, *, home: str | Path | None = None
) -> Iterator[str]:
    """Give the run a sandbox and yield its name; stop it afterwards only if this run started it.

    The sandbox the user addresses (``$RTBOOK_SANDBOX``, else ``default``) is reused as it is, and
    left running, when it was started by ``rtbook sandbox up`` and neither it nor the run has a break
    scenario. Otherwise the run starts a sandbox of its own, ``run-<pid>-<hex>``, which no other
    run reuses, points its kernels at it through ``$RTBOOK_SANDBOX`` and stops it at the end (also
    after SIGINT/SIGTERM), never touching any other sandbox.
    """
    from rtbook.sandbox import manager

    current = manager.status(home=home)
    if current.get("running") and not current.get("owner") and not breaks and not current.get("breaks"):
        say(f"sandbox: reusing the running sandbox {current.get('name', 'default')!r} (left running afterwards)")
        yield str(current.get("name") or "default")
        return
    name = f"run-{os.getpid()}-{secrets.token_hex(2)}"
    say(f"sandbox: starting {name}" + (f" with break scenario(s) {', '.join(breaks)}" if breaks else "") + " ...")
    t0 = time.monotonic()
    previous = os.environ.get("RTBOOK_SANDBOX")
    try:
        state = manager.up(breaks=list(breaks), timeout=timeout_s, home=home, name=name, owner="rtbook run")
        say(f"sandbox: up in {time.monotonic() - t0:.1f}s")
        # The kernels (started after this) and the record's target fingerprint find this run's sandbox.
        os.environ["RTBOOK_SANDBOX"] = state.name
        yield state.name
    finally:
        if previous is None:
            os.environ.pop("RTBOOK_SANDBOX", None)
        else:
            os.environ["RTBOOK_SANDBOX"] = previous
        # By name, not by the state up returned: a signal right after up returned must not leak it.
        # up() stops what it started itself when it fails or is interrupted; then there is nothing to stop.
        if name in manager.instances(home=home):
            say(f"sandbox: stopping {name} ...")
            manager.down(home=home, name=name, timeout=10)
