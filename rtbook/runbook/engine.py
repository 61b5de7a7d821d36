"""Executing the runbook's notebooks in one warm kernel.

Starting an IPython kernel and importing rtbook (with SQLAlchemy, psycopg, websocket-client...)
costs more than most notebooks of the runbook take to run, and papermill pays it once per
notebook. :class:`WarmKernel` pays it once per run:

* the kernel is started before the runner imports papermill, and a warm-up cell (run silently,
  outside every notebook) imports what the notebooks will import, while the runner is still
  importing papermill on the other core;
* before each notebook the kernel is reset to what a new kernel would offer the notebook: an
  empty user namespace, a new history session whose execution count starts at 1, the working
  directory, the environment variables and the warning filters the kernel started with (and the
  "warn once" registries forgotten, so a notebook shows its own warnings). Imported modules stay
  imported: that is the point;
* each notebook is then executed by papermill itself (through the ``rtbook-warm`` engine, which
  is papermill's nbclient engine handed the running kernel), so the parameters cell, the injected
  parameters cell, the papermill metadata, the outputs and the execution counts of every executed
  notebook are those of its own cells, as with a kernel of its own;
* a notebook whose cell raises stops only that notebook (papermill's rule; the kernel is idle
  again and is reused); a notebook that ends any other way (the kernel died, a cell timed out and
  may still be running, the client lost the kernel) leaves the kernel marked, and it is restarted
  before the next notebook, so one notebook's crash never reaches the next.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from queue import Empty
from types import TracebackType
from typing import Any

from rtbook.exceptions import DependencyError

__all__ = ["CELL_SLACK_S", "ENGINE_NAME", "WarmKernel", "cell_deadline_s", "import_papermill", "is_ipython_kernel",
           "kernel_spec_manager"]

# A cell's deadline (papermill's per-cell timeout) comes from the same numbers as the checks':
# a notebook cell runs the checks of one area at most (``session.checks("realtime.")``), so it gets
# the largest area's command deadline (the sum of its checks' deadlines, rtbook.registry) at the
# run's timeout_s, plus CELL_SLACK_S for the kernel's own work (imports, rendering, recording).
CELL_SLACK_S = 60.0


def cell_deadline_s(timeout_s: object, requested: float | None = None) -> float:
    """Seconds one cell may run: ``requested`` (``--cell-timeout``) when given, else derived from ``timeout_s``."""
    if requested:
        return requested
    from rtbook.registry import all_checks, command_deadline
    from rtbook.target import Target

    target = Target(timeout=float(timeout_s) if isinstance(timeout_s, int | float) and timeout_s > 0 else 10.0)
    areas: dict[str, list[Any]] = {}
    for spec in all_checks():
        areas.setdefault(spec.area, []).append(spec)
    return max((command_deadline(specs, target) for specs in areas.values()), default=0.0) + CELL_SLACK_S

ENGINE_NAME = "rtbook-warm"

# nbclient starts kernels with an in-memory history database (no ~/.ipython/.../history.sqlite
# writes, no lock between concurrent runs); the warm kernel is started the same way.
_KERNEL_ARGS = ["--HistoryManager.hist_file=:memory:"]

# Runs in the kernel before each notebook (silently: no output, no history, no execution count).
# The baseline is recorded on the first call, right after the warm-up, and lives on the shell
# object, which %reset leaves alone.
_RESET = r"""
def _rtbook_reset(cwd):
    import os, sys, warnings
    shell = get_ipython()
    base = getattr(shell, "_rtbook_baseline", None)
    if base is None:
        import gc
        base = shell._rtbook_baseline = {
            "environ": dict(os.environ), "filters": list(warnings.filters), "path": list(sys.path),
        }
        # The modules imported so far live as long as the kernel: leave them out of the garbage
        # collections (reset() runs one), which would otherwise walk them before every notebook.
        gc.freeze()
    shell.reset(new_session=True)
    os.chdir(cwd)
    if dict(os.environ) != base["environ"]:
        os.environ.clear()
        os.environ.update(base["environ"])
    sys.path[:] = base["path"]
    warnings.resetwarnings()  # also makes every "warn once" registry stale
    warnings.filters[:] = base["filters"]
_rtbook_reset(%r)
"""


class KernelReplyError(RuntimeError):
    """The warm kernel did not answer a control request in time, or answered it with an error."""


class WarmKernel:
    """One kernel for a whole run (see the module docstring); a context manager that shuts it down.

    Args:
        kernel_name: the Jupyter kernel to start (``python3``).
        cwd: the working directory of every notebook (the notebooks' folder, as papermill's ``cwd``).
        warmup: code run silently once the kernel is up, before the first notebook (imports).
        startup_timeout: seconds allowed for the kernel to start and for each control request.
    """

    def __init__(self, kernel_name: str, cwd: str | Path, *, warmup: str = "", startup_timeout: float = 60) -> None:
        self.kernel_name = kernel_name
        self.cwd = str(cwd)
        self.warmup = warmup
        self.startup_timeout = startup_timeout
        self.km: Any = None
        self._control: Any = None
        self._client: Any = None  # the AsyncKernelClient every notebook's nbclient uses
        self._client_ready = False
        self._pending: str | None = None  # msg_id of a warm-up whose reply is still to be read
        self._reset: str | None = None  # msg_id of a reset sent when the last notebook ended
        self._suspect = False
        self.starts = 0  # how many kernel processes this run used (1 unless one had to be restarted)

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Launch the kernel and queue the warm-up; returns without waiting for either."""
        from jupyter_client.blocking.client import BlockingKernelClient
        from jupyter_client.kernelspec import NoSuchKernel
        from jupyter_client.manager import AsyncKernelManager
        from jupyter_core.utils import run_sync

        # nbclient's own kernel manager class, so the engine's client is the one it expects.
        self.km = AsyncKernelManager(kernel_name=self.kernel_name, kernel_spec_manager=kernel_spec_manager())
        try:
            run_sync(self.km.start_kernel)(extra_arguments=list(_KERNEL_ARGS), cwd=self.cwd)
        except NoSuchKernel:
            self.km = None
            raise DependencyError(
                f"no Jupyter kernel named {self.kernel_name!r}; install one with: "
                "python3 -m ipykernel install --sys-prefix"
            ) from None
        self.starts += 1
        # A blocking client on the shell channel only: ZeroMQ queues the request until the kernel
        # binds its socket, so the warm-up starts as soon as the kernel can run it. It has a
        # Session of its own: a client's session id is its ZeroMQ routing id on the shell channel,
        # and the manager's session is the one nbclient's per-notebook clients use.
        self._control = BlockingKernelClient()
        self._control.load_connection_info(self.km.get_connection_info())
        self._control.start_channels(shell=True, iopub=False, stdin=False, hb=False, control=False)
        self._pending = self._send(self.warmup) if self.warmup else None
        self._reset = self._send(_RESET % self.cwd)  # queued behind the warm-up: the first notebook's
        # The notebooks' client connects now, so its IOPub subscription is live long before the
        # first notebook (a subscription made later misses messages until ZeroMQ completes it).
        self._client = self.km.client()
        self._client.start_channels()
        self._client_ready = False

    def restart(self) -> None:
        """Kill the kernel and start a new one (warm-up included)."""
        self.shutdown()
        self.start()

    def shutdown(self) -> None:
        """Stop the kernel and the control client (idempotent)."""
        from jupyter_core.utils import run_sync

        for client in (self._control, self._client):
            if client is not None:
                with contextlib.suppress(Exception):
                    client.stop_channels()
        self._control = self._client = None
        if self.km is not None:
            with contextlib.suppress(Exception):
                run_sync(self.km.shutdown_kernel)(now=True)
            with contextlib.suppress(Exception):
                run_sync(self.km.cleanup_resources)()
            self.km = None
        self._pending = self._reset = None
        self._suspect = False

    def kill(self) -> None:
        """Send the kernel SIGKILL without waiting for it to exit (:meth:`shutdown` still cleans up)."""
        from jupyter_core.utils import run_sync

        if self.km is not None and self.km.has_kernel:
            with contextlib.suppress(Exception):
                run_sync(self.km.provisioner.kill)()

    def __enter__(self) -> WarmKernel:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.shutdown()

    def alive(self) -> bool:
        """Whether the kernel process is still running."""
        from jupyter_core.utils import run_sync

        return self.km is not None and bool(run_sync(self.km.is_alive)())

    # ------------------------------------------------------------ control requests
    def _send(self, code: str) -> str:
        return str(self._control.execute(code, silent=True, store_history=False, allow_stdin=False,
                                         stop_on_error=False))

    def _wait(self, msg_id: str, timeout: float) -> dict[str, Any]:
        """The execute_reply to ``msg_id``; KernelReplyError when the kernel dies or does not answer in time."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise KernelReplyError(f"the kernel did not answer within {timeout:.0f}s")
            try:
                msg = self._control.get_shell_msg(timeout=min(left, 1.0))
            except Empty:  # nothing yet: check the kernel is still there
                if not self.alive():
                    raise KernelReplyError("the kernel died") from None
                continue
            if msg.get("parent_header", {}).get("msg_id") == msg_id:
                return dict(msg["content"])

    def _check(self, msg_id: str) -> None:
        reply = self._wait(msg_id, self.startup_timeout)
        if reply.get("status") != "ok":
            raise KernelReplyError(f"{reply.get('ename', 'error')}: {reply.get('evalue', '')}")

    def prepare(self) -> None:
        """Make the kernel ready for the next notebook: restarted if marked or dead, warm, and reset."""
        if self.km is None:
            self.start()
        elif self._suspect or not self.alive():
            self.restart()
        for attempt in (1, 2):
            try:
                if self._pending is not None:
                    # A failed warm-up is not the notebook's business: its own import cell shows the error.
                    pending, self._pending = self._pending, None
                    self._wait(pending, self.startup_timeout)
                reset, self._reset = self._reset, None
                self._check(reset or self._send(_RESET % self.cwd))
                if not self._client_ready:
                    self._wait_client_ready()
                return
            except RuntimeError:  # KernelReplyError, or jupyter_client's word for a kernel that died
                if attempt == 2:
                    raise
                self.restart()

    def _wait_client_ready(self) -> None:
        """Wait until the notebooks' client gets the kernel's replies and its IOPub messages.

        nbclient runs every notebook of the run through this one client; it would otherwise make
        a client per notebook and wait for its IOPub subscription each time. Messages left over
        from an earlier notebook are harmless: nbclient takes only the outputs whose parent is
        the cell it is running.
        """
        from jupyter_core.utils import run_sync

        run_sync(self._async_client_ready)()
        self._client.allow_stdin = False
        self._client_ready = True

    async def _async_client_ready(self) -> None:
        # KernelClient.wait_for_ready does the same, then waits for 0.2 s of IOPub silence; the
        # silence is not needed here, since nbclient ignores messages that are not its cells'.
        client = self._client
        deadline = time.monotonic() + self.startup_timeout
        sent: set[str] = set()
        replied = published = False
        last_sent = 0.0
        while not (replied and published):
            if time.monotonic() > deadline:
                raise KernelReplyError(f"the kernel did not answer within {self.startup_timeout:.0f}s")
            if time.monotonic() - last_sent > 0.5:  # again, in case IOPub was not yet subscribed
                if last_sent and not await self.km.is_alive():
                    raise KernelReplyError("the kernel died")
                sent.add(client.kernel_info())
                last_sent = time.monotonic()
            for channel in ("shell", "iopub"):
                if (replied if channel == "shell" else published):
                    continue
                try:
                    msg = await getattr(client, f"{channel}_channel").get_msg(timeout=0.05)
                except Empty:
                    continue
                if msg.get("parent_header", {}).get("msg_id") in sent:
                    if channel == "shell":
                        replied = True
                    else:
                        published = True

    def mark_suspect(self) -> None:
        """The last notebook did not end with an idle kernel: restart it before the next one."""
        self._suspect = True

    # ------------------------------------------------------------ notebooks
    def execute_notebook(
        self,
        pm: Any,
        input_path: str | Path,
        output_path: str | Path,
        *,
        parameters: Mapping[str, Any],
        execution_timeout: float,
        cwd: str | Path | None = None,
    ) -> None:
        """Execute one notebook with ``papermill.execute_notebook`` in this kernel.

        Raises what papermill raises: ``PapermillExecutionError`` when a cell raised (the kernel
        is then reused), anything else after marking the kernel for a restart.
        """
        self.prepare()
        register_engine()
        try:
            pm.execute_notebook(
                str(input_path),
                str(output_path),
                parameters=dict(parameters),
                kernel_name=self.kernel_name,
                engine_name=ENGINE_NAME,
                km=self.km,
                kc=self._client,
                progress_bar=False,
                cwd=str(cwd or self.cwd),
                start_timeout=self.startup_timeout,
                execution_timeout=execution_timeout,
            )
        except pm.PapermillExecutionError:
            self._reset = self._send(_RESET % self.cwd)
            raise
        except BaseException:
            self.mark_suspect()
            raise
        # The kernel is idle and nothing else will run in it before the next notebook: reset it
        # now, while the runner files this notebook and papermill reads the next one.
        self._reset = self._send(_RESET % self.cwd)


def is_ipython_kernel(kernel_name: str) -> bool:
    """Whether ``kernel_name`` is an IPython kernel (ipykernel), the kind :class:`WarmKernel` can reset.

    False when there is no such kernel, so that the caller's usual path reports it.
    """
    try:
        from jupyter_client.kernelspec import NoSuchKernel
    except ImportError:
        return False
    try:
        spec = kernel_spec_manager().get_kernel_spec(kernel_name)
    except NoSuchKernel:
        return False
    return spec.language.lower() == "python" and any("ipykernel" in str(arg) for arg in spec.argv)


def kernel_spec_manager() -> Any:
    """A ``KernelSpecManager`` that finds kernels without importing IPython.

    Its default search path ends with IPython's own folder (``<ipython dir>/kernels``), which it
    works out by importing IPython, and IPython's terminal and prompt_toolkit imports take about
    0.9 s here, longer than the kernel takes to start. The folder is ``$IPYTHONDIR`` or
    ``~/.ipython``, as IPython names it; the Jupyter folders come first, as by default.
    """
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_core.paths import jupyter_path

    ipython_dir = os.environ.get("IPYTHONDIR") or os.path.join(os.path.expanduser("~"), ".ipython")
    return KernelSpecManager(kernel_dirs=[*jupyter_path("kernels"), os.path.join(ipython_dir, "kernels")])


# ================================================================ papermill


def register_engine() -> None:
    """Register the ``rtbook-warm`` papermill engine: nbclient's engine, run in a given kernel."""
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import NBClientEngine, NotebookExecutionManager, papermill_engines
    from papermill.log import logger
    from papermill.utils import merge_kwargs, remove_args

    if ENGINE_NAME in papermill_engines._engines:
        return

    class _SaveOnCrash(NotebookExecutionManager):  # type: ignore[misc]
        """Writes the executed notebook only when the engine fails, not at the start and end of every cell.

        papermill rewrites the whole output notebook (validated, serialised) at every cell so that
        someone can watch it; the runner's output is a private staging file read at the end, and
        those writes cost more than running most of the cells. papermill itself writes the
        finished notebook once (with the error marker when a cell raised); only when the engine
        raises (a dead kernel, a timeout) does it not, and then this writes what ran.
        """

        crashed = False

        def save(self, **kwargs: Any) -> None:
            if kwargs.get("nb"):
                self.nb = kwargs["nb"]
            if self.crashed:
                super().save()

    class _Client(PapermillNotebookClient):  # type: ignore[misc]
        def execute(self, **kwargs: Any) -> Any:
            try:
                return super().execute(**kwargs)
            finally:
                self.kc = None  # the WarmKernel's client: it outlives the notebook

    class _WarmEngine(NBClientEngine):  # type: ignore[misc]
        """papermill's NBClientEngine, run in a given kernel through a given client."""

        @classmethod
        def execute_notebook(
            cls,
            nb: Any,
            kernel_name: str,
            output_path: str | None = None,
            progress_bar: bool = True,
            log_output: bool = False,
            autosave_cell_every: int = 30,
            **kwargs: Any,
        ) -> Any:
            # papermill's Engine.execute_notebook, with the manager that saves at the end.
            nb_man = _SaveOnCrash(nb, output_path=output_path, progress_bar=progress_bar, log_output=log_output,
                                  autosave_cell_every=autosave_cell_every)
            nb_man.notebook_start()
            try:
                cls.execute_managed_notebook(nb_man, kernel_name, log_output=log_output, **kwargs)
            except BaseException:
                nb_man.crashed = True
                raise
            finally:
                nb_man.cleanup_pbar()
                nb_man.notebook_complete()  # saves when crashed
            return nb_man.nb

        @classmethod
        def execute_managed_notebook(
            cls,
            nb_man: Any,
            kernel_name: str,
            log_output: bool = False,
            stdout_file: Any = None,
            stderr_file: Any = None,
            start_timeout: float = 60,
            execution_timeout: float | None = None,
            **kwargs: Any,
        ) -> Any:
            km = kwargs.pop("km")
            kc = kwargs.pop("kc")
            kwargs = remove_args(["input_path"], **kwargs)
            safe_kwargs = remove_args(["timeout", "startup_timeout"], **kwargs)
            final_kwargs = merge_kwargs(
                safe_kwargs,
                timeout=execution_timeout if execution_timeout else kwargs.get("timeout"),
                startup_timeout=start_timeout,
                kernel_name=kernel_name,
                log=logger,
                log_output=log_output,
                stdout_file=stdout_file,
                stderr_file=stderr_file,
            )
            client = _Client(nb_man, km=km, **final_kwargs)
            client.kc = kc  # so nbclient neither makes nor waits for a client of its own
            return client.execute()

    papermill_engines.register(ENGINE_NAME, _WarmEngine)


@contextlib.contextmanager
def _without_rfc3987_syntax() -> Iterator[None]:
    """Hide the optional ``rfc3987_syntax`` package while jsonschema is first imported.

    papermill imports nbformat, which imports jsonschema, which imports ``rfc3987_syntax`` when it
    is installed (JupyterLab's dependencies install it) only to offer an "iri" format checker; that
    import compiles a Lark grammar, about 0.9 s here, more than all the rest of papermill.
    nbformat validates notebooks without a format checker, so nothing in ``rtbook run`` uses it.
    A ``None`` entry in ``sys.modules`` makes that one import fail, which jsonschema expects and
    tolerates; the entry is removed afterwards, so the package can still be imported normally.
    """
    if "jsonschema" in sys.modules or "rfc3987_syntax" in sys.modules:
        yield
        return
    sys.modules["rfc3987_syntax"] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        if "rfc3987_syntax" in sys.modules and sys.modules["rfc3987_syntax"] is None:
            del sys.modules["rfc3987_syntax"]


def import_papermill() -> Any:
    """Import papermill (without the IRI checker jsonschema does not need here); DependencyError if missing."""
    try:
        with _without_rfc3987_syntax():
            import papermill
    except ImportError as exc:
        raise DependencyError("papermill is not installed; run pip install papermill") from exc
    return papermill
