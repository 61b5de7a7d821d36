"""Two sandboxes and two runs at once, each with its own state, ports, folders and record.

All commands are the real CLI started at the same moment under one ``RTBOOK_HOME`` and one output
folder, the way two CI jobs or two terminals on one machine would collide. The records are also
searched, byte for byte, for the local folders they must not name.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from rtbook.runbook.record import verify
from rtbook.runbook.runner import _record_dir
from rtbook.sandbox import manager
from tests.conftest import ROOT
from tests.integration.process_support import (
    Cli,
    alive,
    assert_no_local_paths,
    pids_mentioning,
    port_open,
    sandbox_states,
    shared_tmpdir,
    state_ports,
)
from tests.integration.runbook_support import require_sandbox

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]


def _env(tmp_path: Path, tmpdir: Path) -> dict[str, str]:
    return {"RTBOOK_HOME": str(tmp_path / "home"), "TMPDIR": str(tmpdir), "RTBOOK_SANDBOX": ""}


def _cli(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rtbook", *args], env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, check=False)


def _cleanup(env: dict[str, str], tmpdir: Path) -> None:
    with contextlib.suppress(Exception):
        for name in manager.instances(home=env["RTBOOK_HOME"]):
            manager.down(home=env["RTBOOK_HOME"], name=name, timeout=5)
    for pid in pids_mentioning(env["RTBOOK_HOME"]) + pids_mentioning(str(tmpdir)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(tmpdir, ignore_errors=True)


def test_two_sandbox_ups_at_once_both_succeed_and_down_stops_only_its_own(tmp_path: Path) -> None:
    require_sandbox()
    tmpdir = shared_tmpdir()
    env = _env(tmp_path, tmpdir)
    home = Path(env["RTBOOK_HOME"])
    try:
        ups = [Cli(["sandbox", "up", "--timeout", "120"], env) for _ in range(2)]
        codes = [u.finish(timeout=300) for u in ups]
        assert codes == [0, 0], [u.err for u in ups]
        states = sandbox_states(home)
        assert sorted(states) == ["default", "sandbox-2"], states
        a, b = states["default"], states["sandbox-2"]
        assert "sandbox name: sandbox-2" in "\n".join(u.out for u in ups)
        # Nothing shared: ports, stack, run and cluster folders, processes.
        assert not set(state_ports(a)) & set(state_ports(b))
        for key in ("stack_dir", "run_dir", "data_dir"):
            assert a[key] != b[key] and Path(str(a[key])).is_dir() and Path(str(b[key])).is_dir(), key
        assert not set(a["pids"].values()) & set(b["pids"].values())  # type: ignore[union-attr]
        for name in states:
            status = _cli(["sandbox", "status", "--name", name, "--json"], env)
            assert status.returncode == 0 and json.loads(status.stdout)["name"] == name, status.stdout
        # Each answers on its own gateway: the stacks' ping works with each one's own anon key.
        assert all(port_open(p) for s in (a, b) for p in state_ports(s))

        down = _cli(["sandbox", "down", "--name", "sandbox-2"], env)
        assert down.returncode == 0 and "sandbox stopped" in down.stdout, down.stderr
        assert not any(alive(p) for p in b["pids"].values())  # type: ignore[union-attr]
        assert not any(port_open(p) for p in state_ports(b))
        assert not Path(str(b["stack_dir"])).exists() and not Path(str(b["data_dir"])).exists()
        # The other one is untouched.
        assert manager.status(home=home)["running"] is True
        assert all(port_open(p) for p in state_ports(a)) and Path(str(a["stack_dir"])).is_dir()
        assert _cli(["sandbox", "down"], env).returncode == 0
        assert sandbox_states(home) == {}
        assert pids_mentioning(str(home)) == []
    finally:
        _cleanup(env, tmpdir)


def test_two_runs_at_once_each_start_stop_their_own_sandbox_and_write_their_own_record(tmp_path: Path) -> None:
    require_sandbox()
    tmpdir = shared_tmpdir()
    env = _env(tmp_path, tmpdir)
    home = Path(env["RTBOOK_HOME"])
    out = tmp_path / "out"
    try:
        # The same output folder and label: only the atomic folder reservation keeps the records apart.
        args = ["run", "--target", "sandbox", "--output-dir", str(out), "--label", "ci", "--notebooks", "01,02"]
        runs = [Cli(args, env) for _ in range(2)]
        codes = [r.finish(timeout=600) for r in runs]
        assert codes == [0, 0], [r.err for r in runs]
        started = [next(ln for ln in r.err_lines if ln.startswith("sandbox: starting ")) for r in runs]
        assert started[0] != started[1], started  # each its own sandbox, none reused
        records = sorted(p for p in out.iterdir() if p.is_dir())  # beside them: history.sqlite
        assert len(records) == 2, records
        for record in records:
            result = verify(record)
            assert result.intact and result.complete, str(result)
            summary = json.loads((record / "summary.json").read_text())
            assert [n["status"] for n in summary["notebooks"]] == ["passed", "passed"]
        printed = {Path(ln[len("record: "):]).name for r in runs for ln in r.out.splitlines()
                   if ln.startswith("record: ")}
        assert printed == {r.name for r in records}
        # Each run stopped its own sandbox, and nothing of either is left.
        assert sandbox_states(home) == {}
        assert pids_mentioning(str(home)) == [] and pids_mentioning(str(tmpdir)) == []
        assert list(tmpdir.iterdir()) == []

        # No local folder in any byte of either record (README: local paths are replaced by placeholders).
        forbidden = {"the home folder": str(Path.home()), "the test's tmp folder": str(tmp_path),
                     "the temp folder": str(tmpdir), "the repository": str(ROOT), "RTBOOK_HOME": str(home)}
        for record in records:
            assert_no_local_paths(record, forbidden)
        # ... while the evidence still says which file: the stack's .env, relative to the stack.
        assert "<stack>/.env" in (records[0] / "01_setup.results.json").read_text()
    finally:
        _cleanup(env, tmpdir)


def test_a_run_reuses_the_users_sandbox_without_stopping_it_while_another_starts_its_own(tmp_path: Path) -> None:
    require_sandbox()
    tmpdir = shared_tmpdir()
    env = _env(tmp_path, tmpdir)
    home = Path(env["RTBOOK_HOME"])
    out = tmp_path / "out"
    try:
        up = _cli(["sandbox", "up", "--timeout", "120"], env, timeout=300)
        assert up.returncode == 0, up.stderr
        users = manager.status(home=home)
        reuse = Cli(["run", "--target", "sandbox", "--output-dir", str(out / "a"), "--notebooks", "02"], env)
        own = Cli(["run", "--target", "sandbox", "--output-dir", str(out / "b"), "--notebooks", "02",
                   "--break", "not-in-publication"], env)
        assert reuse.finish(timeout=600) == 0, reuse.err
        assert own.finish(timeout=600) in (0, 1), own.err
        assert any("reusing the running sandbox 'default'" in ln for ln in reuse.err_lines), reuse.err
        assert any(ln.startswith("sandbox: starting run-") for ln in own.err_lines), own.err
        # The user's sandbox is still running, on the same processes; the run's own one is gone.
        after = manager.status(home=home)
        assert after["running"] is True and after["pids"] == users["pids"]
        assert list(sandbox_states(home)) == ["default"]
        for sub in ("a", "b"):
            (record,) = [p for p in (out / sub).iterdir() if p.is_dir()]
            assert verify(record).intact
    finally:
        _cleanup(env, tmpdir)


def test_record_folders_reserved_in_the_same_second_are_distinct(tmp_path: Path) -> None:
    # The reservation itself, under real contention: 16 threads, one timestamp, one label.
    started = dt.datetime(2026, 12, 3, 11, 0, 0, tzinfo=dt.UTC)
    barrier = threading.Barrier(16)
    got: list[Path] = []

    def reserve() -> None:
        barrier.wait(timeout=30)
        got.append(_record_dir(tmp_path, "ci", started))

    threads = [threading.Thread(target=reserve) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(got) == 16 and len(set(got)) == 16
    assert sorted(p.name for p in got)[0] == "20261203T110000Z-ci"
