"""The scale-out sandbox (``--nodes 2 --lb nginx|haproxy|caddy``) through the REAL proxies from Debian's packages.

Two Realtime-compatible nodes, each behind its own gateway, share one PostgreSQL and relay broadcast and
presence to each other; nginx, HAProxy or Caddy runs in front with the configuration the sandbox writes.
The live checks run through the proxy's URL, and every break scenario is caught by the check that owns
its symptom.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from rtbook.registry import run_checks
from rtbook.results import CheckResult, Status
from rtbook.sandbox import lb
from rtbook.sandbox.manager import Sandbox, SandboxState
from rtbook.target import Target
from tests.conftest import have_postgres, require
from tests.integration.runbook_support import rtbook_cli

KINDS = ("nginx", "haproxy", "caddy")


def _require_binary(kind: str) -> None:
    require(Path(lb.BINARIES[kind]).is_file(), f"{kind} is not installed ({lb.BINARIES[kind]})")


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@contextlib.contextmanager
def cluster(kind: str, breaks: tuple[str, ...] = (), timeout: float = 4.0) -> Iterator[tuple[SandboxState, Target]]:
    """A two-node sandbox behind ``kind``; after it stops, no proxy is left and no log holds a secret."""
    require(have_postgres(), "PostgreSQL 15 binaries with wal2json are not installed")
    _require_binary(kind)
    home = Path(tempfile.mkdtemp(prefix="rtbook-cluster-"))
    home.chmod(0o755)  # PostgreSQL runs as postgres when the tests run as root
    state: SandboxState | None = None
    texts: dict[str, str] = {}
    secrets: list[str] = []
    try:
        with Sandbox(home=home, breaks=breaks, nodes=2, lb=kind) as state:
            env = dict(line.split("=", 1) for line in Path(state.stack_dir, ".env").read_text().splitlines()
                       if "=" in line and not line.startswith("#"))
            secrets = [env[k].strip('"') for k in ("JWT_SECRET", "ANON_KEY", "SERVICE_ROLE_KEY", "POSTGRES_PASSWORD")]
            assert all(secrets)
            yield state, Target.from_sandbox(home / "sandbox" / "state.json", tables=("public.todos",),
                                             timeout=timeout)
            for path in [*state.logs.values(), *Path(state.lb["config"]).parent.glob("*.log")]:
                if Path(path).is_file():
                    texts[str(path)] = Path(path).read_text(errors="replace")
    finally:
        shutil.rmtree(home, ignore_errors=True)
    assert state is not None
    assert not _alive(state.pids[f"lb-{kind}"]), f"{kind} still runs after down()"
    assert not any(_alive(pid) for name, pid in state.pids.items() if name != "postgres")
    for path, text in texts.items():
        assert not [s for s in secrets if s in text], f"a secret of the stack reached {path}"


def _by_id(results: Iterable[CheckResult]) -> dict[str, CheckResult]:
    return {r.id: r for r in results}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("variant", lb.VARIANTS)
def test_generated_configs_are_accepted_by_the_real_binary(kind: str, variant: str, tmp_path: Path) -> None:
    _require_binary(kind)
    text = lb.render(kind, 18080, [18081, 18082], variant, tmp_path)
    config = tmp_path / {"nginx": "nginx.conf", "haproxy": "haproxy.cfg", "caddy": "Caddyfile"}[kind]
    config.write_text(text)
    (tmp_path / "nginx-tmp").mkdir()
    argv = {
        "nginx": [lb.BINARIES["nginx"], "-t", "-c", str(config), "-p", str(tmp_path), "-e", str(tmp_path / "e.log")],
        "haproxy": [lb.BINARIES["haproxy"], "-c", "-f", str(config)],
        "caddy": [lb.BINARIES["caddy"], "adapt", "--config", str(config), "--adapter", "caddyfile"],
    }[kind]
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("kind", KINDS)
def test_live_suite_passes_through_the_real_proxy_and_the_nodes_share_messages(kind: str) -> None:
    with cluster(kind) as (state, target):
        # The public URL is the proxy's, and the process recorded for it is the real binary.
        assert state.gateway_url == state.lb["url"] and state.lb["kind"] == kind
        assert lb.BINARIES[kind] in Path(f"/proc/{state.pids[f'lb-{kind}']}/cmdline").read_bytes().decode()
        assert [n["name"] for n in state.nodes] == ["realtime-node1@127.0.0.1", "realtime-node2@127.0.0.1"]
        results = _by_id(run_checks(target, "realtime."))
        failed = {cid: r.summary for cid, r in results.items() if r.status.failed}
        assert not failed, failed
        cluster_result = results["realtime.cluster"]
        assert cluster_result.status is Status.PASS, cluster_result.summary
        assert cluster_result.evidence["groups"] == [[f"c{i}" for i in range(1, 7)]]
        assert cluster_result.evidence["affinity"]["cookies"] == [lb.AFFINITY_COOKIE]
        # Both gateways carried WebSockets: the proxy spread the clients, so the pass proves the relay.
        for name in ("gateway", "gateway-2"):
            log = Path(state.logs[name]).read_text()
            assert len(re.findall(r"WS /realtime/v1/websocket", log)) >= 2, f"{name} got no share of the sockets"


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
def test_nodes_not_clustered_splits_the_clients_into_one_group_per_node(kind: str) -> None:
    with cluster(kind, ("nodes-not-clustered",)) as (state, target):
        assert state.lb["relay"] == ""
        results = _by_id(run_checks(target, ["realtime.join", "realtime.cluster"]))
        assert results["realtime.join"].status is Status.PASS, "one client alone still works"
        found = results["realtime.cluster"]
        assert found.status is Status.FAIL, found.summary
        grouped = found.evidence["groups"]
        # Round robin over two nodes: two groups, every client in exactly one, and within a group all see all.
        assert len(grouped) == 2 and sorted(c for g in grouped for c in g) == [f"c{i}" for i in range(1, 7)]
        for group in grouped:
            for client in group:
                assert set(found.evidence["saw_broadcast_of"][client]) == set(group) - {client}
        assert "split into 2 groups" in found.summary and "Sticky sessions do not fix this" in found.remedy


@pytest.mark.parametrize("kind", KINDS)
def test_lb_no_upgrade_refuses_every_handshake(kind: str) -> None:
    with cluster(kind, ("lb-no-upgrade",)) as (_state, target):
        results = _by_id(run_checks(target, ["realtime.join", "realtime.cluster"]))
        for cid in ("realtime.join", "realtime.cluster"):
            r = results[cid]
            assert r.status is Status.FAIL and "WebSocket upgrade was refused" in r.summary, (cid, r.summary)
        assert results["realtime.join"].cause == "ws_not_upgraded"


@pytest.mark.parametrize("kind", KINDS)
def test_lb_short_timeout_cuts_idle_sockets_before_the_heartbeat(kind: str) -> None:
    # The check idles min(timeout, 25 s): 6 s here, longer than the broken proxy's 3 s.
    with cluster(kind, ("lb-short-timeout",), timeout=6.0) as (_state, target):
        found = _by_id(run_checks(target, "realtime.cluster"))["realtime.cluster"]
        assert found.status is Status.FAIL, found.summary
        cut = found.evidence["closed_after_s"]
        assert cut and all(lb.SHORT_TIMEOUT_S - 1 <= t <= 6.0 + 6.0 for t in cut.values()), cut
        assert "before the clients' next heartbeat" in found.summary and "proxy_read_timeout" in found.remedy


@pytest.mark.parametrize("kind", ["nginx", "caddy"])
def test_lb_no_sticky_leaves_websockets_working_and_says_so(kind: str) -> None:
    with cluster(kind, ("lb-no-sticky",)) as (_state, target):
        found = _by_id(run_checks(target, "realtime.cluster"))["realtime.cluster"]
        # The truthful symptom: nothing breaks for open WebSockets of clustered nodes; no affinity cookie.
        assert found.status is Status.PASS, found.summary
        assert found.evidence["affinity"]["cookies"] == []
        assert "no affinity cookie" in found.detail and "one TCP connection" in found.detail


@pytest.mark.parametrize(("breaks", "code"), [((), 0), (("--break", "nodes-not-clustered"), 1)])
def test_cli_scale_out_and_notebook_06_headless(breaks: tuple[str, ...], code: int, tmp_path: Path) -> None:
    """``rtbook sandbox up --nodes 2 --lb nginx`` then notebook 06 under papermill: green, or the split gated."""
    require(have_postgres(), "PostgreSQL 15 binaries with wal2json are not installed")
    _require_binary("nginx")
    home = tmp_path / "home"
    env = {"RTBOOK_HOME": str(home)}
    up = rtbook_cli(["sandbox", "up", "--nodes", "2", "--lb", "nginx", *breaks], env, 300)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "load balancer: nginx at http://127.0.0.1:" in up.stdout
        assert ("NOT clustered" in up.stdout) == bool(breaks)
        out = tmp_path / "outputs"
        ran = rtbook_cli(["run", "--target", "sandbox", "--no-sandbox-start", "--notebooks", "06",
                          "--output-dir", str(out)], env, 600)
        assert ran.returncode == code, ran.stdout + ran.stderr[-3000:]
        (record,) = [p for p in out.iterdir() if p.is_dir()]
        (nb,) = json.loads((record / "summary.json").read_text())["notebooks"]
        verdicts = {r["id"]: r["status"] for r in nb["results"]}
        assert verdicts["realtime.cluster"] == ("fail" if breaks else "pass"), nb
    finally:
        down = rtbook_cli(["sandbox", "down"], env, 120)
    assert down.returncode == 0 and "sandbox stopped" in down.stdout


def test_relay_between_two_named_nodes_and_presence_leaves_when_a_node_stops() -> None:
    """Deterministic, without the proxy: a client on node 1's gateway and one on node 2's see each other's
    broadcast and presence; when node 2 stops, node 1's client gets the presence leave (Tracker's nodedown)."""
    import signal
    import uuid

    from rtbook.clients.phoenix import PhoenixClient

    with cluster("nginx") as (state, target):
        anon = target.secret("ANON_KEY")
        assert anon is not None
        topic = f"realtime:rtbook-relay-{uuid.uuid4().hex[:8]}"
        a = PhoenixClient.connect(f"{state.nodes[0]['gateway_url']}/realtime/v1", anon, timeout=10)
        b = PhoenixClient.connect(f"{state.nodes[1]['gateway_url']}/realtime/v1", anon, timeout=10)
        try:
            for client, key in ((a, "ka"), (b, "kb")):
                cfg = {"broadcast": {"self": False}, "presence": {"key": key, "enabled": True}, "private": False}
                assert client.join(topic, cfg, timeout=10).ok
            tracked = b.push(topic, "presence", {"type": "presence", "event": "track", "payload": {"n": 2}}, timeout=10)
            assert tracked is not None and tracked.ok
            a.wait_for(lambda m: m.event == "presence_diff" and "kb" in m.payload.get("joins", {}), 10, "kb's join")
            a.push(topic, "broadcast", {"type": "broadcast", "event": "e", "payload": {"x": 1}}, wait_reply=False)
            got = b.wait_for(lambda m: m.event == "broadcast", 10, "node 1's broadcast at node 2")
            assert got.payload["payload"] == {"x": 1}
            os.kill(state.pids["realtime-2"], signal.SIGTERM)
            a.wait_for(lambda m: m.event == "presence_diff" and "kb" in m.payload.get("leaves", {}), 10, "kb's leave")
        finally:
            a.close()
            b.close()
