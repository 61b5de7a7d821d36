"""``rtbook sandbox up|status|down``: real processes, ports and directories, nothing left behind."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import requests

from rtbook.exceptions import ConfigError, SandboxError
from rtbook.sandbox import manager
from tests.conftest import have_postgres, require

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def _need() -> None:
    require(have_postgres(), "PostgreSQL 15 with wal2json is needed by the sandbox")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text() if Path(f"/proc/{pid}/stat").exists() else ""
    return bool(stat) and stat.rsplit(")", 1)[1].split()[0] != "Z"


def _secret_values(stack_dir: Path) -> list[str]:
    names = ("POSTGRES_PASSWORD", "JWT_SECRET", "ANON_KEY", "SERVICE_ROLE_KEY", "DASHBOARD_PASSWORD",
             "SECRET_KEY_BASE", "REALTIME_DB_ENC_KEY")
    env = dict(line.split("=", 1) for line in (stack_dir / ".env").read_text().splitlines()
               if "=" in line and not line.startswith("#"))
    return [env[n] for n in names]


def _cli(args: list[str], home: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, RTBOOK_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "rtbook", *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=ROOT, check=False)


def test_up_then_down_leaves_no_process_port_or_directory(tmp_path: Path) -> None:
    _need()
    home = tmp_path / "home"
    state = manager.up(home=home, timeout=60)
    try:
        ports = [int(state.gateway_url.rsplit(":", 1)[1]), int(state.realtime_url.rsplit(":", 1)[1]),
                 int(state.db_url.rsplit(":", 1)[1].split("/")[0])]
        assert set(state.pids) == {"postgres", "realtime", "gateway"}
        assert all(_alive(pid) for pid in state.pids.values())
        assert all(_port_open(p) for p in ports)
        assert state.realtime_host == "realtime-dev.supabase-realtime" and state.tenant == "realtime-dev"
        assert state.db_url.startswith("postgresql://supabase_admin@127.0.0.1:")
        stack = Path(state.stack_dir)
        for name in ("docker-compose.yml", "docker-compose.kong.yml", ".env", "volumes/api/kong.yml",
                     "volumes/api/kong-entrypoint.sh", "volumes/db/realtime.sql"):
            assert (stack / name).is_file(), name
        env_text = (stack / ".env").read_text()
        assert "COMPOSE_FILE=docker-compose.yml:docker-compose.kong.yml" in env_text
        assert f"KONG_HTTP_PORT={ports[0]}" in env_text
        assert (stack / ".env").stat().st_mode & 0o077 == 0
        # Secrets: never in argv, the state file or status output.
        secrets = _secret_values(stack)
        state_text = (home / "sandbox" / "state.json").read_text()
        status_text = json.dumps(manager.status(home=home))
        for pid in (state.pids["realtime"], state.pids["gateway"]):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            assert not any(s in cmdline for s in secrets)
        assert not any(s in state_text or s in status_text for s in secrets)
        for cfg in Path(state.run_dir).glob("*.json"):
            assert cfg.stat().st_mode & 0o077 == 0, cfg
        info = manager.status(home=home)
        assert info["running"] is True
        # It answers through the gateway.
        anon = dict(line.split("=", 1) for line in env_text.splitlines() if line.startswith("ANON_KEY="))["ANON_KEY"]
        r = requests.get(state.gateway_url + "/realtime/v1/api/ping", headers={"apikey": anon}, timeout=10)
        assert (r.status_code, r.json()) == (200, {"message": "Success"})
        with pytest.raises(ConfigError, match="already running"):
            manager.up(home=home, name="default")  # a derived name would start a second sandbox
    finally:
        assert manager.down(home=home) is True
    assert not any(_alive(pid) for pid in state.pids.values())
    assert not any(_port_open(p) for p in ports)
    assert not Path(state.data_dir).exists()  # the cluster
    assert not Path(state.run_dir).exists()  # configs and logs
    assert not Path(state.stack_dir).exists()
    assert not (home / "sandbox" / "state.json").exists()
    assert manager.status(home=home) == {"running": False, "state_file": str(home / "sandbox" / "state.json")}
    assert manager.down(home=home) is False


def test_cli_up_status_down_keeps_a_given_dir(tmp_path: Path) -> None:
    _need()
    home, stack = tmp_path / "home", tmp_path / "mystack"
    up = _cli(["sandbox", "up", "--dir", str(stack), "--break", "not-in-publication"], home)
    try:
        assert up.returncode == 0, up.stderr
        status = _cli(["sandbox", "status", "--json"], home)
        assert status.returncode == 0, status.stderr
        info = json.loads(status.stdout)
        for key in ("stack_dir", "gateway_url", "realtime_url", "realtime_host", "db_url", "tenant", "pids",
                    "data_dir", "breaks"):
            assert key in info, key
        assert info["stack_dir"] == str(stack.resolve()) and info["breaks"] == ["not-in-publication"]
        text = _cli(["sandbox", "status"], home)
        assert "gateway URL" in text.stdout and info["gateway_url"] in text.stdout
        again = _cli(["sandbox", "up", "--name", "default"], home)
        assert again.returncode == 2 and "already running" in again.stderr
    finally:
        down = _cli(["sandbox", "down"], home)
    assert down.returncode == 0, down.stderr
    assert not any(_alive(pid) for pid in info["pids"].values())
    assert (stack / ".env").is_file()  # the user's --dir is kept
    assert not Path(info["data_dir"]).exists() and not Path(info["run_dir"]).exists()
    assert _cli(["sandbox", "status", "--json"], home).returncode == 1


def test_failed_up_says_why_in_one_line_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("RTBOOK_PG_BIN", str(tmp_path / "no-postgres-here"))
    with pytest.raises(SandboxError) as err:
        manager.up(home=home, timeout=20)
    message = str(err.value)
    assert "\n" not in message and "initdb" in message and "no-postgres-here" in message
    assert not (home / "sandbox" / "state.json").exists()
    assert not (home / "sandbox" / "run").exists()
    assert not (home / "sandbox" / "stack").exists()


def test_failed_up_after_postgres_started_stops_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _need()
    home, stack = tmp_path / "home", tmp_path / "busy"
    stack.mkdir()
    (stack / "keep.txt").write_text("mine")
    # Clusters go to a directory of their own here, so this test sees only its own postgres.
    pg_parent = Path(tempfile.mkdtemp(prefix="rtbook-mgr-test-"))
    pg_parent.chmod(0o711)
    monkeypatch.setattr(tempfile, "tempdir", str(pg_parent))
    try:
        with pytest.raises(SandboxError) as err:
            manager.up(stack, home=home, timeout=30)
        assert "\n" not in str(err.value) and "not empty" in str(err.value) and str(stack) in str(err.value)
        left = subprocess.run(["pgrep", "-f", str(pg_parent)], capture_output=True, text=True, check=False).stdout
        assert left == "", f"processes left behind: {left}"
        assert list(pg_parent.iterdir()) == []
    finally:
        shutil.rmtree(pg_parent, ignore_errors=True)
    assert (stack / "keep.txt").read_text() == "mine"
    assert not (home / "sandbox" / "run").exists()


def test_cli_rejects_unknown_scenario_with_the_list(tmp_path: Path) -> None:
    out = _cli(["sandbox", "up", "--break", "no-such-break"], tmp_path, timeout=60)
    assert out.returncode == 2
    assert "no-such-break" in out.stderr and "tenant-mismatch" in out.stderr


def test_cli_scenarios_lists_each_with_its_symptom(tmp_path: Path) -> None:
    out = _cli(["sandbox", "scenarios", "--json"], tmp_path, timeout=60)
    assert out.returncode == 0
    listed = {s["name"]: s["symptom"] for s in json.loads(out.stdout)}
    assert set(listed) >= {"tenant-mismatch", "tenant-missing", "jwt-mismatch", "wal-level-replica",
                           "not-in-publication", "rls-denies", "replica-identity-default", "ws-route-missing",
                           "no-apikey-forwarding"}
    assert "Tenant not found" in listed["tenant-mismatch"]
    text = _cli(["sandbox", "scenarios"], tmp_path, timeout=60).stdout
    assert "symptom:" in text and "ws-route-missing" in text


def test_cli_up_with_a_realtime_version(tmp_path: Path) -> None:
    """``--realtime-version`` pins the stack's compose tag and the stand-in behaves as that image."""
    _need()
    home = tmp_path / "home"
    up = _cli(["sandbox", "up", "--realtime-version", "v2.78.19"], home)
    try:
        assert up.returncode == 0, up.stderr
        info = json.loads(_cli(["sandbox", "status", "--json"], home).stdout)
        assert info["realtime_version"] == "2.78.19"
        compose = (Path(info["stack_dir"]) / "docker-compose.yml").read_text()
        assert "image: supabase/realtime:v2.78.19" in compose and "v2.134.10" not in compose
        # v2.78.19: a refused handshake is 403 with an empty body (no JSON error, no delay)
        r = requests.get(info["realtime_url"] + "/socket/websocket", timeout=10,
                         headers={"Host": info["realtime_host"], "Connection": "Upgrade", "Upgrade": "websocket",
                                  "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
        assert (r.status_code, r.content) == (403, b"")
    finally:
        _cli(["sandbox", "down"], home)
    bad = _cli(["sandbox", "up", "--realtime-version", "latest"], tmp_path / "other")
    assert bad.returncode == 2 and "is not a version like 2.78.19" in bad.stderr
