"""The one wait helper: returns the first truthy value, gives up on time or on stop(), retries only what it is told."""

from __future__ import annotations

import time

import pytest

from rtbook.deadline import Deadline, wait_until


def test_returns_the_first_truthy_value() -> None:
    calls = iter([0, None, "", "ready", "later"])
    assert wait_until(lambda: next(calls), 5, interval=0) == "ready"


def test_gives_up_at_the_deadline_without_overshooting() -> None:
    started = time.monotonic()
    assert wait_until(lambda: False, 0.2, interval=0.15) is None
    assert 0.2 <= time.monotonic() - started < 0.5


def test_probe_runs_once_even_with_no_time() -> None:
    seen: list[int] = []
    assert wait_until(lambda: seen.append(1) or False, 0) is None  # type: ignore[func-returns-value]
    assert seen == [1]


def test_stop_ends_the_wait_early() -> None:
    started = time.monotonic()
    assert wait_until(lambda: False, 10, interval=0.01, stop=lambda: time.monotonic() - started > 0.05) is None
    assert time.monotonic() - started < 1


def test_listed_errors_are_retried_others_propagate() -> None:
    attempts = iter([ConnectionError("not yet"), ConnectionError("not yet"), "up"])

    def probe() -> str:
        item = next(attempts)
        if isinstance(item, Exception):
            raise item
        return item

    assert wait_until(probe, 5, interval=0, retry_on=(ConnectionError,)) == "up"
    with pytest.raises(ValueError):
        wait_until(lambda: int("x"), 5, retry_on=(ConnectionError,))


def test_deadline_counts_down() -> None:
    d = Deadline(0.1)
    assert not d.expired and 0 < d.remaining() <= 0.1
    time.sleep(0.12)
    assert d.expired and d.remaining() == 0 and d.elapsed() >= 0.1
