"""The one wait/retry helper: deadlines measured on the monotonic clock, and polling until a condition holds.

Every loop in rtbook that waits for something (a server to print READY, PostgreSQL to accept
connections, a process to exit, Realtime to report its database) goes through :func:`wait_until`,
so each wait is bounded the same way and says what it waited for.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

__all__ = ["Deadline", "wait_until"]

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
    overshoots the deadline.
    """
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
