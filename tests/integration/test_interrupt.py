"""SIGTERM and Ctrl-C of the real CLI mid-run: nothing left running or listening, a partial record that verifies.

``timeout`` and CI runners send SIGTERM to the command's process; a terminal's Ctrl-C sends SIGINT to
the whole foreground process group (the kernel and the sandbox's children run in sessions of their
own, so only rtbook's handler can stop them). Each test starts ``python -m rtbook`` in a
session of its own with a private ``RTBOOK_HOME``, ``TMPDIR`` and Jupyter runtime folder, waits until a
notebook is running, sends the signal, then looks at /proc, the ports and the folders.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rtbook.sandbox import manager
from tests.conftest import ROOT
from tests.integration.process_support import (
    Cli,
    alive,
    assert_no_local_paths,
    pids_in_group,
    pids_mentioning,
    port_open,
    sandbox_states,
    shared_tmpdir,
    state_ports,
    tcp_peer_ports,
)
from tests.integration.runbook_support import require_sandbox

pytestmark = [pytest.mark.sandbox, pytest.mark.notebooks, pytest.mark.slow]

# Generous for a loaded 2-core machine; the point is that the command ends by itself, and the
# measured time is printed. Without the handlers SIGTERM leaves the sandbox running forever.
_STOP_WITHIN_S = 60.0


def _env(tmp_path: Path, tmpdir: Path) -> dict[str, str]:
    runtime = tmp_path / "jupyter-runtime"
    runtime.mkdir()
    return {"RTBOOK_HOME": str(tmp_path / "home"), "TMPDIR": str(tmpdir), "JUPYTER_RUNTIME_DIR": str(runtime),
            "RTBOOK_SANDBOX": ""}


def _cleanup(env: dict[str, str], tmpdir: Path) -> None:
    """Whatever a failing test left behind must not stay on the shared machine."""
    with contextlib.suppress(Exception):
        for name in manager.instances(home=env["RTBOOK_HOME"]):
            manager.down(home=env["RTBOOK_HOME"], name=name, timeout=5)
    for pid in pids_mentioning(env["RTBOOK_HOME"]) + pids_mentioning(str(tmpdir)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(tmpdir, ignore_errors=True)


@pytest.mark.parametrize(
    ("sig", "to_group", "code"),
    [(signal.SIGTERM, False, 143), (signal.SIGINT, True, 130)],
    ids=["sigterm-to-process", "ctrl-c-to-group"],
)
def test_interrupted_run_stops_what_it_started_and_writes_an_incomplete_record(
    tmp_path: Path, sig: signal.Signals, to_group: bool, code: int
) -> None:
    require_sandbox()
    tmpdir = shared_tmpdir()
    env = _env(tmp_path, tmpdir)
    out = tmp_path / "out"
    cli = Cli(["run", "--target", "sandbox", "--output-dir", str(out), "--notebooks", "03,04,05"], env)
    try:
        cli.wait_for_line(r"\] 04_subscription_tests: ", timeout=300)
        time.sleep(1.5)  # inside the notebook: its first live checks are under way
        states = sandbox_states(Path(env["RTBOOK_HOME"]))
        assert len(states) == 1, states
        (state,) = states.values()
        assert state["owner"] == "rtbook run" and str(state["name"]).startswith("run-")
        ports = state_ports(state)
        pids = dict(state["pids"])  # type: ignore[call-overload]
        # jupyter_client starts a kernel in a session of its own: found by its connection file's folder.
        kernels = pids_mentioning(env["JUPYTER_RUNTIME_DIR"])
        assert kernels, "the run's kernel should be running"
        assert all(port_open(p) for p in ports) and all(alive(p) for p in pids.values())

        t0 = time.monotonic()
        if to_group:
            os.killpg(cli.pid, sig)
        else:
            os.kill(cli.pid, sig)
        rc = cli.finish(timeout=_STOP_WITHIN_S + 30)
        took = time.monotonic() - t0
        print(f"{sig.name}: exited {rc} after {took:.1f} s")
        assert rc == code, (rc, cli.err)
        assert took < _STOP_WITHIN_S

        # Nothing left running or listening: the group (kernel), the sandbox's children (own sessions),
        # PostgreSQL, the ports; no cluster, run, stack or state folder; no kernel connection file; no temp file.
        assert pids_in_group(cli.pid) == []
        assert not any(alive(p) for p in kernels)
        assert pids_mentioning(env["RTBOOK_HOME"]) == []
        assert pids_mentioning(str(tmpdir)) == []
        assert not any(alive(p) for p in pids.values()), pids
        assert not any(port_open(p) for p in ports), ports
        for key in ("data_dir", "run_dir", "stack_dir"):
            assert not Path(str(state[key])).exists(), key
        assert sandbox_states(Path(env["RTBOOK_HOME"])) == {}
        assert list(Path(env["JUPYTER_RUNTIME_DIR"]).iterdir()) == []
        assert list(tmpdir.iterdir()) == []

        # The record so far, marked incomplete, and verify says both things.
        (record,) = [p for p in out.iterdir() if p.is_dir()]  # beside it: history.sqlite
        assert f"INTERRUPTED by {sig.name}" in cli.out and "record (incomplete):" in cli.out
        manifest = json.loads((record / "manifest.json").read_text())
        assert manifest["complete"] is False and manifest["exit_code"] == code
        assert manifest["interrupted"]["signal"] == sig.name
        assert manifest["interrupted"]["during"] == "04_subscription_tests"
        assert manifest["interrupted"]["not_run"] == ["05_troubleshooting"]
        summary = json.loads((record / "summary.json").read_text())
        assert summary["complete"] is False
        assert [(n["notebook"], n["status"]) for n in summary["notebooks"]] == [
            ("03_kong_routing", "passed"), ("04_subscription_tests", "interrupted")]
        assert "INCOMPLETE" in (record / "summary.md").read_text()
        assert {"03_kong_routing.ipynb", "03_kong_routing.results.json", "summary.json", "junit.xml"} <= {
            p.name for p in record.iterdir()}
        assert_no_local_paths(record, {"the home folder": str(Path.home()), "the test's tmp folder": str(tmp_path),
                                       "the temp folder": str(tmpdir), "the repository": str(ROOT)})
        verify = subprocess.run([sys.executable, "-m", "rtbook", "verify", str(record)], capture_output=True,
                                text=True, timeout=60, cwd=ROOT, check=False)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert "intact" in verify.stdout
        assert f"INCOMPLETE: the run was interrupted by {sig.name} during 04_subscription_tests" in verify.stdout
    finally:
        if cli.proc.poll() is None:
            cli.kill()
        _cleanup(env, tmpdir)


def test_sigterm_while_the_sandbox_starts_leaves_nothing(tmp_path: Path) -> None:
    require_sandbox()
    tmpdir = shared_tmpdir()
    env = _env(tmp_path, tmpdir)
    cli = Cli(["run", "--target", "sandbox", "--output-dir", str(tmp_path / "out"), "--notebooks", "01"], env)
    try:
        cli.wait_for_line(r"sandbox: starting run-", timeout=120)
        # Wait until PostgreSQL runs (the cluster's temp folder holds its data), so there is something to stop.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(tmpdir.glob("rtbook-pg-*/data/postmaster.pid")):
            time.sleep(0.05)
        assert any(tmpdir.glob("rtbook-pg-*/data/postmaster.pid")), cli.err
        os.kill(cli.pid, signal.SIGTERM)
        rc = cli.finish(timeout=_STOP_WITHIN_S + 30)
        assert rc == 143, (rc, cli.err)
        assert pids_mentioning(env["RTBOOK_HOME"]) == [] and pids_mentioning(str(tmpdir)) == []
        assert pids_in_group(cli.pid) == []
        assert list(tmpdir.iterdir()) == []
        assert sandbox_states(Path(env["RTBOOK_HOME"])) == {}
        # Nothing ran, so there is no record to speak of: no empty folder pretending to be one.
        assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
    finally:
        if cli.proc.poll() is None:
            cli.kill()
        _cleanup(env, tmpdir)


def test_sigterm_of_check_live_ends_it_and_leaves_the_users_sandbox_running(tmp_path: Path) -> None:
    require_sandbox()
    tmpdir = shared_tmpdir()
    env = _env(tmp_path, tmpdir)
    home = env["RTBOOK_HOME"]
    state = manager.up(home=home, timeout=120)
    try:
        out = tmp_path / "report.json"
        cli = Cli(["check", "--target", "sandbox", "--live", "--format", "json", "--output", str(out)], env)
        try:
            # Signal once the live checks talk to the sandbox (the file checks have ended by then); the
            # subscription checks wait on Realtime for seconds each, so the signal lands inside one.
            ports = set(state_ports(json.loads(state.to_json())))
            deadline = time.monotonic() + 120
            # Remember the sighting: a short HTTP or database connection may be closed again by the
            # time it would be looked up a second time.
            seen = tcp_peer_ports(cli.pid) & ports
            while time.monotonic() < deadline and not seen:
                assert cli.proc.poll() is None, cli.err
                time.sleep(0.05)
                seen = tcp_peer_ports(cli.pid) & ports
            assert seen, "the live checks never connected to the sandbox"
            time.sleep(1)
            assert cli.proc.poll() is None, cli.err
            os.kill(cli.pid, signal.SIGTERM)
            rc = cli.finish(timeout=_STOP_WITHIN_S)
        finally:
            if cli.proc.poll() is None:
                cli.kill()
        assert rc == 143, (rc, cli.err)
        assert "interrupted" in cli.err
        assert pids_in_group(cli.pid) == []
        # The check used the user's sandbox; it must not have stopped it.
        assert manager.status(home=home)["running"] is True
        assert all(port_open(p) for p in state_ports(json.loads(state.to_json())))
        # What ran before the signal is kept, marked incomplete.
        report = json.loads(out.read_text())
        assert report["complete"] is False and report["interrupted"] == "SIGTERM"
        assert report["results"], "the checks that finished before the signal are in the report"
    finally:
        manager.down(home=home, timeout=10)
        _cleanup(env, tmpdir)


def test_sigterm_of_sandbox_up_stops_the_parts_already_started(tmp_path: Path) -> None:
    require_sandbox()
    tmpdir = shared_tmpdir()
    env = _env(tmp_path, tmpdir)
    cli = Cli(["sandbox", "up", "--name", "halfway"], env)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any(tmpdir.glob("rtbook-pg-*/data/postmaster.pid")):
            assert cli.proc.poll() is None, cli.err
            time.sleep(0.05)
        assert any(tmpdir.glob("rtbook-pg-*/data/postmaster.pid")), cli.err
        os.kill(cli.pid, signal.SIGTERM)
        rc = cli.finish(timeout=_STOP_WITHIN_S)
        assert rc == 143, (rc, cli.err)
        assert "rtbook: interrupted (SIGTERM)" in cli.err
        assert pids_mentioning(env["RTBOOK_HOME"]) == [] and pids_mentioning(str(tmpdir)) == []
        assert list(tmpdir.iterdir()) == []
        assert sandbox_states(Path(env["RTBOOK_HOME"])) == {}
        assert not (Path(env["RTBOOK_HOME"]) / "sandbox" / "instances" / "halfway").exists()
    finally:
        if cli.proc.poll() is None:
            cli.kill()
        _cleanup(env, tmpdir)
