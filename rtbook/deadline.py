"""Deadlines: the monotonic clock, the wait/retry helper, and the deadline a running check must meet.

Every loop in rtbook that waits for something (a server to print READY, PostgreSQL to accept
connections, a process to exit, Realtime to report its database) goes through :func:`wait_until`,
so each wait is bounded the same way and says what it waited for.

A socket timeout bounds one operation, not a conversation: a server that sends one byte a second
never trips a 3 s read timeout, and a check that waits ``--timeout`` at each of its steps can take
many times that. So the registry runs every check inside a :func:`scope` (see
:mod:`rtbook.registry` for how its length is derived from ``--timeout``), and the clients ask this
module, before and during every socket operation, how long they may still wait:

* :func:`cap` shortens an operation's own timeout to what is left of the check's deadline, and
  raises :class:`DeadlineExceeded` (naming the endpoint and what was awaited) once it is spent;
* :func:`guard` marks what the check is waiting for and registers an abort (shut the socket down)
  that the scope's timer calls the moment the deadline passes, which ends a read blocked on a
  dripping or silent peer;
* the registry's watchdog reads :meth:`Scope.waiting` to name the endpoint when a check still
  overruns.

Outside a scope (library use, the sandbox, tests calling a client directly) nothing changes: the
operation's own timeout applies.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

__all__ = ["Deadline", "DeadlineExceeded", "Scope", "bounded", "cap", "current", "guard", "note", "scope", "spent",
           "wait_until"]

T = TypeVar("T")


@dataclass
class Deadline:
    """A point in time ``seconds`` from now on the monotonic clock."""

    seconds: float
    started: float = field(default_factory=time.monotonic)

    @property
    def at(self) -> float:
        """The monotonic time at which the deadline passes."""
        return self.started + self.seconds

    def remaining(self) -> float:
        """Seconds left (never negative)."""
        return max(0.0, self.at - time.monotonic())

    @property
    def expired(self) -> bool:
        """True once the deadline has passed."""
        return time.monotonic() >= self.at

    def elapsed(self) -> float:
        """Seconds since the deadline was set."""
        return time.monotonic() - self.started


class DeadlineExceeded(TimeoutError):
    """A check's deadline was spent while it waited for ``awaiting`` from ``endpoint``.

    A :class:`TimeoutError` (so an ``OSError``), so code that already turns a network timeout into a
    failed result does the same with this one.
    """

    def __init__(self, label: str, seconds: float, endpoint: str, awaiting: str, elapsed: float) -> None:
        self.label = label
        self.seconds = seconds
        self.endpoint = endpoint
        self.awaiting = awaiting
        self.elapsed = elapsed
        super().__init__(
            f"timed out waiting for {awaiting} from {endpoint}: the {round(seconds, 1):g} s deadline of {label} "
            f"ran out after {elapsed:.1f} s"
        )


_ids = itertools.count(1)


class Scope:
    """The deadline of one running check: what it is waiting for, and what to abort when time is up.

    The timer thread (started by :func:`scope`) calls every registered abort when the deadline
    passes; aborts run at most once, and one registered after the deadline runs at once.
    """

    def __init__(self, seconds: float, label: str, parent: Scope | None = None) -> None:
        self.deadline = Deadline(seconds)
        self.label = label
        self.parent = parent
        self._lock = threading.Lock()
        self._aborts: dict[int, Callable[[], None]] = {}
        self._waiting: dict[int, tuple[str, str]] = {}
        self._last: tuple[str, str] | None = None
        self._fired = False

    @property
    def seconds(self) -> float:
        """The length of the deadline."""
        return self.deadline.seconds

    @property
    def fired(self) -> bool:
        """True once the deadline passed and the aborts were called."""
        return self._fired

    def waiting(self) -> tuple[str, str] | None:
        """(endpoint, what) the check waits for now, else the last thing it waited for, else None."""
        with self._lock:
            if self._waiting:
                return self._waiting[max(self._waiting)]
            return self._last

    def exceeded(self, endpoint: str = "", awaiting: str = "") -> DeadlineExceeded:
        """The error for this scope, naming ``endpoint``/``awaiting`` (else what the check waited for)."""
        if not endpoint:
            endpoint, awaiting = self.waiting() or ("(no endpoint)", "its own work")
        return DeadlineExceeded(self.label, self.seconds, endpoint, awaiting, self.deadline.elapsed())

    def note(self, endpoint: str, awaiting: str) -> None:
        """Record what the check is about to wait for (when no :func:`guard` block can wrap the wait)."""
        with self._lock:
            self._last = (endpoint, awaiting)

    def enter(self, endpoint: str, awaiting: str, abort: Callable[[], None] | None) -> int:
        """Register a wait (and its abort); :meth:`leave` with the returned key ends it."""
        key = next(_ids)
        run_now = False
        with self._lock:
            self._waiting[key] = (endpoint, awaiting)
            self._last = (endpoint, awaiting)
            if abort is not None:
                if self._fired:
                    run_now = True
                else:
                    self._aborts[key] = abort
        if run_now and abort is not None:
            _call_quietly(abort)
        return key

    def leave(self, key: int) -> None:
        """End the wait registered under ``key``."""
        with self._lock:
            self._waiting.pop(key, None)
            self._aborts.pop(key, None)

    def fire(self) -> None:
        """Call every registered abort (the timer does this when the deadline passes)."""
        with self._lock:
            if self._fired:
                return
            self._fired = True
            aborts = list(self._aborts.values())
            self._aborts.clear()
        for abort in aborts:
            _call_quietly(abort)


def _call_quietly(abort: Callable[[], None]) -> None:
    try:
        abort()
    except Exception:  # an abort closes a socket that may already be gone; it must never raise
        pass


_CURRENT: contextvars.ContextVar[Scope | None] = contextvars.ContextVar("rtbook_deadline", default=None)


def current() -> Scope | None:
    """The deadline scope of the check running in this context, if any."""
    return _CURRENT.get()


@contextlib.contextmanager
def scope(seconds: float | Scope, label: str = "the operation") -> Iterator[Scope]:
    """Run the body under a deadline of ``seconds`` (or an existing :class:`Scope`).

    A timer thread calls the scope's aborts when the deadline passes; it is cancelled when the
    body ends. Nested scopes never extend the outer one: the inner deadline is cut to what the
    outer has left.
    """
    if isinstance(seconds, Scope):
        sc = seconds
    else:
        outer = _CURRENT.get()
        if outer is not None:
            seconds = min(seconds, outer.deadline.remaining())
        sc = Scope(seconds, label, outer)
    timer = threading.Timer(sc.deadline.remaining(), sc.fire)
    timer.daemon = True
    timer.name = f"rtbook-deadline-{sc.label}"
    timer.start()
    token = _CURRENT.set(sc)
    try:
        yield sc
    finally:
        _CURRENT.reset(token)
        timer.cancel()


def bounded(seconds: float, label: str) -> contextlib.AbstractContextManager[Scope]:
    """A scope of ``seconds`` for one client call (an HTTP request, a WebSocket upgrade), cut to the check's.

    The call ends within ``seconds`` however its peer behaves, inside a check or not (library use,
    the sandbox); what it waits for is shown to the enclosing check's scope too.
    """
    return scope(seconds, label)


def cap(timeout: float, endpoint: str, awaiting: str) -> float:
    """``timeout`` shortened to what is left of the current check's deadline.

    Raises:
        DeadlineExceeded: the deadline is already spent (nothing left to wait with).
    """
    sc = _CURRENT.get()
    if sc is None:
        return timeout
    left = sc.deadline.remaining()
    if left <= 0:
        raise sc.exceeded(endpoint, awaiting)
    return min(timeout, left)


def spent() -> Scope | None:
    """The current scope if its deadline has passed, else None (for labelling a timeout after the fact)."""
    sc = _CURRENT.get()
    return sc if sc is not None and sc.deadline.expired else None


@contextlib.contextmanager
def guard(endpoint: str, awaiting: str, abort: Callable[[], None] | None = None) -> Iterator[Scope | None]:
    """Mark that the check waits for ``awaiting`` from ``endpoint``; ``abort`` runs if the deadline passes meanwhile.

    ``abort`` should make the blocked call return at once (``socket.shutdown``); the caller then
    sees an error and reports :meth:`Scope.exceeded`. Outside a scope this does nothing.
    """
    sc = _CURRENT.get()
    if sc is None:
        yield None
        return
    # The innermost scope is the one that expires first (nested scopes are cut to their parent);
    # the enclosing ones only learn what is awaited, for the watchdog's message.
    keys = [(s, s.enter(endpoint, awaiting, abort if s is sc else None)) for s in _chain(sc)]
    try:
        yield sc
    finally:
        for s, key in keys:
            s.leave(key)


def note(endpoint: str, awaiting: str) -> None:
    """Tell the current scopes what the check is about to wait for (when no :func:`guard` block fits)."""
    sc = _CURRENT.get()
    if sc is not None:
        for s in _chain(sc):
            s.note(endpoint, awaiting)


def _chain(sc: Scope) -> list[Scope]:
    out = [sc]
    while out[-1].parent is not None:
        out.append(out[-1].parent)  # type: ignore[arg-type]
    return out


def wait_until(
    probe: Callable[[], T],
    timeout: float,
    *,
    interval: float = 0.05,
    stop: Callable[[], bool] | None = None,
    retry_on: tuple[type[BaseException], ...] = (),
) -> T | None:
    """Call ``probe`` until it returns a truthy value, ``timeout`` seconds pass, or ``stop()`` is true.

    Returns the first truthy value, or None when the time ran out or ``stop`` said to give up (the
    caller reports what it waited for). Exceptions in ``retry_on`` count as "not yet"; any other
    exception propagates. The probe always runs at least once, and the sleep between calls never
    overshoots the deadline. Inside a check the wait also ends with the check's deadline.
    """
    sc = _CURRENT.get()
    if sc is not None:
        timeout = min(timeout, sc.deadline.remaining())
    deadline = Deadline(timeout)
    while True:
        try:
            value = probe()
        except retry_on:
            value = None  # type: ignore[assignment]
        if value:
            return value
        if deadline.expired or (stop is not None and stop()):
            return None
        time.sleep(min(interval, deadline.remaining()))
