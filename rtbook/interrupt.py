"""SIGINT and SIGTERM as one exception, raised once, with cleanup that a second signal cannot cut short.

Without this, SIGTERM (a CI cancel, ``timeout``) ends the interpreter on the spot: no ``finally``
runs, so the sandbox's processes, the kernel and the temp files stay behind. :func:`handle_signals`
(entered by ``rtbook``'s ``main``) turns both signals into :class:`Interrupted`, a
``KeyboardInterrupt``, so every ``finally`` and ``except BaseException`` that already cleans up
after Ctrl-C does the same after SIGTERM.

Only the first signal is raised. Later ones are ignored while the cleanup runs (it is bounded:
each process gets a few seconds before SIGKILL): a Ctrl-C pressed twice, or the SIGINT a terminal
also sends to the kernel in the same process group, must not abort ``sandbox down`` halfway and
leave PostgreSQL running. Code that must finish even when the first signal arrives inside it
(stopping processes, writing a record) runs under :func:`shielded`: the signal is raised when the
block ends.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

__all__ = ["EXIT_CODES", "Interrupted", "exit_code", "handle_signals", "shielded"]

# The shell's convention, 128 + signal number: what `timeout`, CI runners and shells expect.
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Interrupted(KeyboardInterrupt):
    """The run was stopped by ``signum``; ``record`` is the partial record written, if any."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        self.signum = signal.Signals(signum)
        self.record: str | None = None
        self.outcome: Any = None  # rtbook run: the RunOutcome of the notebooks that ran
        super().__init__(self.signum.name)

    @property
    def exit_code(self) -> int:
        """130 for SIGINT, 143 for SIGTERM."""
        return EXIT_CODES.get(self.signum, 128 + int(self.signum))


def exit_code(exc: BaseException) -> int:
    """The exit code for an interrupt: :class:`Interrupted`'s own, else 130 (a plain Ctrl-C)."""
    return exc.exit_code if isinstance(exc, Interrupted) else 130


def as_interrupted(exc: KeyboardInterrupt) -> Interrupted:
    """``exc`` itself when it is an :class:`Interrupted`, else one for SIGINT (Python's own Ctrl-C)."""
    return exc if isinstance(exc, Interrupted) else Interrupted(signal.SIGINT)


class _State:
    def __init__(self) -> None:
        self.raised: int | None = None  # the signal already raised: later ones are ignored
        self.pending: int | None = None  # a signal that arrived inside a shielded block
        self.shield = 0


_STATE = _State()


def _handler(signum: int, _frame: FrameType | None) -> None:
    if _STATE.raised is not None:
        return  # cleanup after the first signal is under way and bounded; let it finish
    if _STATE.shield:
        _STATE.pending = signum
        return
    _STATE.raised = signum
    raise Interrupted(signum)


@contextlib.contextmanager
def handle_signals() -> Iterator[None]:
    """Inside: SIGINT and SIGTERM raise :class:`Interrupted` (once). A no-op outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    # A signal the parent set to be ignored stays ignored (a shell's `rtbook ... &` ignores SIGINT, as
    # Python's own Ctrl-C handling respects).
    previous = {sig: old for sig in EXIT_CODES if (old := signal.getsignal(sig)) is not signal.SIG_IGN}
    _STATE.raised = _STATE.pending = None
    for sig in previous:
        signal.signal(sig, _handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        _STATE.raised = _STATE.pending = None


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Run the block to its end even if SIGINT/SIGTERM arrives; raise :class:`Interrupted` afterwards.

    Only signals handled by :func:`handle_signals` are held back (a bare Python Ctrl-C handler still
    raises at once). Nested blocks hold the signal until the outermost one ends.
    """
    _STATE.shield += 1
    try:
        yield
    finally:
        _STATE.shield -= 1
        pending, _STATE.pending = _STATE.pending, None
        if pending is not None and _STATE.shield == 0 and _STATE.raised is None:
            _STATE.raised = pending
            raise Interrupted(pending)
        if pending is not None and _STATE.shield:
            _STATE.pending = pending
