"""rtbook load's reading of the Realtime container against a real engine: the BEAM's own open-files
limit from /proc, the memory limit, a restart and an OOM kill between two readings, and an engine
that does not answer."""

from __future__ import annotations

import time

import pytest
from docker.types import Ulimit

from rtbook.load.container import ContainerLimits, container_limits_hit, read_container_limits
from rtbook.target import Target
from tests.docker.harness import Lab

pytestmark = pytest.mark.docker

# The stand-in runs as a process named beam.smp (a symlink to python3) that lowers its own soft
# limit below the container's: only /proc/<beam pid>/limits gives 200, HostConfig says 256.
BEAM = ("/bin/sh", "-c", "ln -sf /usr/bin/python3 /tmp/beam.smp && ulimit -Sn 200 && "
        "exec /tmp/beam.smp -u /standin/realtime_standin.py")


def _read_when_beam_runs(target: Target, timeout: float = 20) -> ContainerLimits:
    """The first reading that found the beam process (the shell may not have exec'd it yet)."""
    deadline = time.monotonic() + timeout
    got, why = None, ""
    while time.monotonic() < deadline:
        got, why = read_container_limits(target)
        if got is not None and got.nofile_pid not in (None, 1) and got.nofile_soft == 200:
            return got
        time.sleep(0.2)
    raise AssertionError(f"no reading of the beam process: {got} {why}")


def test_load_container_reads_the_beams_limits_and_notices_a_restart(lab: Lab, target: Target) -> None:
    rt = lab.realtime(ulimits=[Ulimit(name="nofile", soft=256, hard=512)], mem_limit="300m", healthcheck=False,
                      command=BEAM)

    before = _read_when_beam_runs(target)

    assert before.container == rt.name and before.container_id == rt.id and before.service == "realtime"
    assert (before.nofile_soft, before.nofile_hard) == (200, 512)
    assert before.memory_limit == 300 << 20
    assert before.running and before.restart_count == 0 and before.started_at
    # No restart yet: a second reading names nothing, and the engine reports no OOM kill.
    same, why = read_container_limits(target, before)
    assert same is not None, why
    assert same.oom_events == 0
    assert container_limits_hit(before, same, sockets_wanted=10, joined=10, errors={}) == []
    # 400 sockets wanted against 200 files: the open-files limit, with its value and a number to set.
    short = container_limits_hit(before, same, sockets_wanted=400, joined=150, errors={})
    assert [h["limit"] for h in short] == ["RLIMIT_NOFILE"] and "now 200" in short[0]["why"]
    assert "hard 512" in short[0]["why"] and "RLIMIT_NOFILE: \"10000\"" in short[0]["remedy"]

    rt.restart(timeout=2)
    after, why = read_container_limits(target, before)

    assert after is not None, why
    assert after.container_id == before.container_id and after.started_at != before.started_at
    hit = container_limits_hit(before, after, sockets_wanted=10, joined=10, errors={})
    assert [h["limit"] for h in hit] == ["mem_limit"], hit
    assert "restarted (started at" in hit[0]["why"] and "now 300 MiB" in hit[0]["why"]
    assert "mem_limit: 768m" in hit[0]["remedy"] and rt.name in hit[0]["remedy"]


def test_load_container_counts_an_oom_kill_inside_the_container(lab: Lab, target: Target) -> None:
    rt = lab.realtime(mem_limit="64m", healthcheck=False)
    before, why = read_container_limits(target)
    assert before is not None, why
    assert before.memory_limit == 64 << 20

    # The kernel kills a process that outgrows the container's limit; the main process stays up,
    # so only the engine's 'oom' event tells of it.
    killed = rt.exec_run(["/usr/bin/python3", "-c", "b = b'x' * (256 << 20)"])
    assert killed.exit_code == 137, killed
    deadline = time.monotonic() + 15
    after, why = read_container_limits(target, before)
    while (after is None or not after.oom_events) and time.monotonic() < deadline:
        time.sleep(0.3)
        after, why = read_container_limits(target, before)

    assert after is not None and after.oom_events, (after, why)
    assert after.running and after.started_at == before.started_at
    hit = container_limits_hit(before, after, sockets_wanted=10, joined=10, errors={})
    assert [h["limit"] for h in hit] == ["mem_limit"], hit
    assert "OOM kill" in hit[0]["why"] and "now 64 MiB" in hit[0]["why"]


@pytest.mark.parametrize("docker_host", ["unix:///nonexistent/rtbook-docker.sock", "tcp://127.0.0.1:1"])
def test_load_container_without_an_engine_is_none_with_a_reason(lab: Lab, docker_host: str) -> None:
    assert lab.stack_dir is not None
    for docker in (True, None):
        target = Target.from_stack_dir(lab.stack_dir, docker=docker, env={"DOCKER_HOST": docker_host}, timeout=5)
        got, why = read_container_limits(target)
        assert got is None
        assert docker_host in why, why
