"""rtbook.interrupt with real signals sent to this process: raised once, held back while shielded, exit codes."""

from __future__ import annotations

import os
import signal
import time

import pytest

from rtbook.interrupt import Interrupted, exit_code, handle_signals, shielded


def _deliver(sig: signal.Signals) -> None:
    os.kill(os.getpid(), sig)
    time.sleep(0.05)  # the handler runs between bytecodes of the main thread; give it the chance


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_raises_interrupted_with_its_exit_code(sig: signal.Signals, code: int) -> None:
    with pytest.raises(Interrupted) as info, handle_signals():
        _deliver(sig)
    assert info.value.signum is sig and info.value.exit_code == code == exit_code(info.value)
    assert isinstance(info.value, KeyboardInterrupt)  # every Ctrl-C cleanup path runs for SIGTERM too


def test_only_the_first_signal_raises_so_cleanup_runs_to_its_end() -> None:
    cleaned = False
    with pytest.raises(Interrupted) as info, handle_signals():
        try:
            _deliver(signal.SIGTERM)
        finally:
            _deliver(signal.SIGINT)  # Ctrl-C pressed during the cleanup: ignored
            cleaned = True
    assert cleaned and info.value.signum is signal.SIGTERM


def test_a_signal_inside_a_shielded_block_is_raised_when_it_ends() -> None:
    steps = []
    with pytest.raises(Interrupted) as info, handle_signals():
        with shielded():
            _deliver(signal.SIGTERM)
            steps.append("after the signal, still inside")
        steps.append("never reached")
    assert steps == ["after the signal, still inside"] and info.value.signum is signal.SIGTERM


def test_the_previous_handlers_come_back_and_an_ignored_signal_stays_ignored() -> None:
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        term_before = signal.getsignal(signal.SIGTERM)
        with handle_signals():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            _deliver(signal.SIGINT)  # ignored, as the parent asked (a shell's background job)
        assert signal.getsignal(signal.SIGTERM) == term_before
    finally:
        signal.signal(signal.SIGINT, before)


def test_exit_code_of_a_plain_keyboard_interrupt_is_130() -> None:
    assert exit_code(KeyboardInterrupt()) == 130
