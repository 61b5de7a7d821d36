"""The deadline a running check must meet: capping, aborts, nesting, the registry's formula and watchdog."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from rtbook import deadline
from rtbook.registry import (
    LOCAL_S,
    NETWORK_STEPS,
    WATCHDOG_S,
    CheckSpec,
    check_deadline,
    command_deadline,
    run_one,
)
from rtbook.results import CheckResult, Status
from rtbook.runbook.engine import CELL_SLACK_S, cell_deadline_s
from rtbook.target import Target

pytestmark = pytest.mark.timeout(60)


def test_cap_is_a_no_op_outside_a_check() -> None:
    assert deadline.current() is None
    assert deadline.cap(7.5, "http://x", "y") == 7.5


def test_cap_shortens_to_what_is_left_and_raises_once_spent() -> None:
    with deadline.scope(0.3, "t.check") as sc:
        assert deadline.current() is sc
        assert 0 < deadline.cap(10, "http://x", "y") <= 0.3
        assert deadline.cap(0.05, "http://x", "y") == 0.05  # a shorter own timeout stays
        time.sleep(0.35)
        with pytest.raises(deadline.DeadlineExceeded) as info:
            deadline.cap(10, "http://127.0.0.1:9", "the answer to GET /")
    assert isinstance(info.value, TimeoutError)  # so code that handles timeouts handles this one
    text = str(info.value)
    assert "http://127.0.0.1:9" in text and "the answer to GET /" in text and "t.check" in text
    assert deadline.current() is None


def test_the_abort_ends_a_read_blocked_on_a_silent_peer() -> None:
    # A real socket pair: the peer never writes, so recv blocks until the deadline's abort shuts it down.
    ours, peer = socket.socketpair()
    try:
        ours.settimeout(30)
        started = time.monotonic()
        with deadline.scope(0.3, "t.check"), deadline.guard("peer", "a byte", lambda: ours.shutdown(socket.SHUT_RDWR)):
            data = ours.recv(1)
        assert data == b""  # shut down, not timed out
        assert time.monotonic() - started < 5
    finally:
        ours.close()
        peer.close()


def test_an_abort_registered_after_the_deadline_runs_at_once() -> None:
    called = threading.Event()
    with deadline.scope(0.05, "t.check") as sc:
        time.sleep(0.1)
        deadline.wait_until(lambda: sc.fired, 5, interval=0.01)
        with deadline.guard("e", "w", called.set):
            assert called.is_set()


def test_aborts_left_before_the_deadline_are_not_called() -> None:
    called = threading.Event()
    with deadline.scope(0.2, "t.check"):
        with deadline.guard("e", "w", called.set):
            pass
        time.sleep(0.3)
    assert not called.is_set()


def test_a_nested_scope_is_cut_to_the_outer_one_and_reports_to_it() -> None:
    with deadline.scope(0.5, "outer") as outer:
        with deadline.scope(100, "inner") as inner:
            assert inner.seconds <= 0.5
            assert inner.parent is outer
            with deadline.guard("ws://h:1/socket", "the upgrade"):
                assert outer.waiting() == ("ws://h:1/socket", "the upgrade")
        # Once left, the outer scope still knows what was awaited last (for the watchdog's message).
        assert outer.waiting() == ("ws://h:1/socket", "the upgrade")


def test_bounded_gives_a_call_its_own_limit_outside_a_check() -> None:
    with deadline.bounded(0.2, "GET x") as sc:
        assert sc.seconds == 0.2
        assert deadline.cap(5, "e", "w") <= 0.2


def test_wait_until_ends_with_the_check_deadline() -> None:
    started = time.monotonic()
    with deadline.scope(0.2, "t.check"):
        assert deadline.wait_until(lambda: False, 30, interval=0.02) is None
    assert time.monotonic() - started < 2


# ------------------------------------------------------------------ the registry's formula


def _noop(target: Target, cid: str) -> CheckResult:
    return CheckResult(cid, Status.PASS, summary="ok")


def test_check_deadline_formula() -> None:
    target = Target(timeout=3)
    files = CheckSpec("compose.x", "t", _noop, needs=("stack",))
    net = CheckSpec("db.x", "t", _noop, needs=("db",))
    declared = CheckSpec("realtime.x", "t", _noop, needs=("realtime",), steps=6, grace=4.0)
    computed = CheckSpec("realtime.y", "t", _noop, needs=("realtime",), steps=1, grace=lambda t: 2 * t.timeout)
    broken = CheckSpec("realtime.z", "t", _noop, needs=("realtime",), steps=1, grace=lambda t: 1 / 0)
    assert check_deadline(files, target) == LOCAL_S
    assert check_deadline(net, target) == LOCAL_S + NETWORK_STEPS * 3
    assert check_deadline(declared, target) == LOCAL_S + 6 * 3 + 4
    assert check_deadline(computed, target) == LOCAL_S + 3 + 6
    assert check_deadline(broken, target) == LOCAL_S + 3  # a grace that cannot be computed adds nothing
    assert command_deadline([files, net, declared], target) == sum(
        check_deadline(s, target) for s in (files, net, declared))
    # It scales with --timeout.
    assert check_deadline(declared, Target(timeout=10)) == LOCAL_S + 6 * 10 + 4


def test_a_check_that_overruns_becomes_a_fail_naming_what_it_waited_for() -> None:
    release = threading.Event()

    def stuck(target: Target, cid: str) -> CheckResult:
        # Ignores the deadline on purpose (no client would): only the watchdog can end this.
        with deadline.guard("tcp://127.0.0.1:9", "a greeting"):
            release.wait(60)
        return CheckResult(cid, Status.PASS, summary="too late")

    spec = CheckSpec("db.stuck", "a stuck check", stuck, needs=())
    started = time.monotonic()
    try:
        [result] = run_one(spec, Target(timeout=1), limit_s=0.5)
    finally:
        release.set()
    took = time.monotonic() - started
    assert result.status is Status.FAIL
    assert "tcp://127.0.0.1:9" in result.summary and "a greeting" in result.summary
    assert result.evidence["endpoint"] == "tcp://127.0.0.1:9"
    assert 0.5 <= took < 0.5 + WATCHDOG_S + 1.5


def test_a_spent_deadline_raised_inside_a_check_is_a_fail_not_an_error() -> None:
    def slow(target: Target, cid: str) -> CheckResult:
        time.sleep(0.3)
        deadline.cap(5, "http://127.0.0.1:9", "the answer to GET /")
        return CheckResult(cid, Status.PASS, summary="unreachable")

    [result] = run_one(CheckSpec("gateway.slow", "slow", slow), Target(timeout=1), limit_s=0.2)
    assert result.status is Status.FAIL
    assert "http://127.0.0.1:9" in result.summary


def test_a_check_within_its_deadline_is_untouched_and_crashes_stay_errors() -> None:
    [ok] = run_one(CheckSpec("db.ok", "ok", _noop), Target(timeout=1))
    assert ok.status is Status.PASS

    def crash(target: Target, cid: str) -> CheckResult:
        raise ValueError("boom")

    [err] = run_one(CheckSpec("db.crash", "crash", crash), Target(timeout=1))
    assert err.status is Status.ERROR and "boom" in err.summary


def test_the_check_runs_in_the_callers_context() -> None:
    import contextvars

    var: contextvars.ContextVar[str] = contextvars.ContextVar("probe", default="unset")
    seen: list[str] = []

    def look(target: Target, cid: str) -> CheckResult:
        seen.append(var.get())
        assert deadline.current() is not None and deadline.current().label == cid  # type: ignore[union-attr]
        return CheckResult(cid, Status.PASS, summary="ok")

    token = var.set("caller")
    try:
        run_one(CheckSpec("db.ctx", "ctx", look), Target(timeout=1))
    finally:
        var.reset(token)
    assert seen == ["caller"]


# ------------------------------------------------------------------ notebook cells


def test_cell_deadline_is_derived_from_the_timeout_unless_given() -> None:
    assert cell_deadline_s(10, 123.0) == 123.0
    short, long = cell_deadline_s(3), cell_deadline_s(10)
    assert CELL_SLACK_S < short < long
    # Every area's checks fit in one cell's deadline (a cell runs one area at most).
    from rtbook.registry import all_checks

    specs = [s for s in all_checks() if s.area == "realtime"]
    assert command_deadline(specs, Target(timeout=10)) + CELL_SLACK_S <= long
    assert cell_deadline_s("nonsense") == cell_deadline_s(10)  # a bad value falls back to the default timeout
