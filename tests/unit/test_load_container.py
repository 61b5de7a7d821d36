"""rtbook.load.container's judgement: a pair of container readings and a run's numbers -> the limit named."""

from __future__ import annotations

from dataclasses import replace

import pytest

from rtbook.load.container import ContainerLimits, container_limits_hit, merge_hits, read_container_limits
from rtbook.load.runner import limits_hit
from rtbook.target import Target

MIB = 1 << 20
BEFORE = ContainerLimits(
    container="realtime-dev.supabase-realtime", container_id="a" * 64, service="realtime",
    memory_limit=300 * MIB, nofile_soft=2048, nofile_hard=4096, nofile_pid=7, restart_count=0,
    oom_killed=False, started_at="2026-12-03T14:00:00.000000000Z", running=True, rlimit_nofile="2048",
    read_at=1_796_306_400.0,
)


def hits(before: ContainerLimits | None, after: ContainerLimits | None, wanted: int, joined: int,
         errors: dict[str, int] | None = None) -> list[dict[str, str]]:
    return container_limits_hit(before, after, sockets_wanted=wanted, joined=joined, errors=errors or {})


def test_sockets_above_the_open_files_limit_name_rlimit_nofile_with_its_value_and_a_number() -> None:
    got = hits(BEFORE, BEFORE, wanted=3000, joined=1010)
    assert [h["limit"] for h in got] == ["RLIMIT_NOFILE"]
    why, remedy = got[0]["why"], got[0]["remedy"]
    assert "now 2048" in why and "hard 4096" in why and "1010 of 3000 sockets joined" in why
    # 2 x 3000 + 1024 rounds up to 8000, under the official compose file's 10000.
    assert "RLIMIT_NOFILE: \"10000\"" in remedy and "soft: 10000, hard: 10000" in remedy
    assert "the realtime service" in remedy and "docker compose up -d realtime" in remedy
    assert "below ~1024 sockets" in remedy


def test_the_remedy_number_grows_with_the_sockets_wanted() -> None:
    big = replace(BEFORE, nofile_soft=10000, nofile_hard=10000)
    got = hits(big, big, wanted=12000, joined=8900)
    assert "soft: 26000, hard: 26000" in got[0]["remedy"], got  # 2 x 12000 + 1024 -> 26000
    assert "RLIMIT_NOFILE: \"26000\"" in got[0]["remedy"]


def test_a_run_that_got_every_socket_names_no_open_files_limit() -> None:
    # Over the rough bound but nothing fell short: the limit did not limit this run.
    assert hits(BEFORE, BEFORE, wanted=1500, joined=1500) == []
    # Short of sockets, but far below the limit: something else (the tenant, the gateway).
    assert hits(BEFORE, BEFORE, wanted=500, joined=200) == []


def test_emfile_errors_name_the_limit_even_below_the_bound() -> None:
    got = hits(BEFORE, BEFORE, wanted=500, joined=500, errors={"join: EMFILE": 3})
    assert [h["limit"] for h in got] == ["RLIMIT_NOFILE"]
    assert "3 EMFILE error(s)" in got[0]["why"]


def test_unreadable_or_unlimited_open_files_name_nothing() -> None:
    assert hits(replace(BEFORE, nofile_soft=None, nofile_hard=None), None, wanted=9000, joined=10) == []
    assert hits(replace(BEFORE, nofile_soft=1 << 62, nofile_hard=1 << 62), None, wanted=9000, joined=10) == []


@pytest.mark.parametrize("after, seen", [
    (replace(BEFORE, restart_count=1, started_at="2026-12-03T14:01:00Z"), "restart count 0 -> 1"),
    (replace(BEFORE, started_at="2026-12-03T14:01:00Z"), "then at 2026-12-03T14:01:00Z"),
    (replace(BEFORE, container_id="b" * 64), "was recreated"),
    (replace(BEFORE, running=False), "stopped"),
])
def test_a_restart_with_a_memory_limit_names_the_memory_limit(after: ContainerLimits, seen: str) -> None:
    got = hits(BEFORE, after, wanted=100, joined=100)
    assert [h["limit"] for h in got] == ["mem_limit"], got
    assert seen in got[0]["why"] and "now 300 MiB" in got[0]["why"]
    # Not confirmed as an OOM kill: the text says how to confirm it.
    assert "read the logs to confirm" in got[0]["why"]
    remedy = got[0]["remedy"]
    assert "mem_limit: 768m" in remedy and "deploy.resources.limits.memory: 768M" in remedy  # 2 x 300 -> 768
    assert "docker logs --since 2026-12-03T" in remedy and "realtime-dev.supabase-realtime" in remedy


def test_an_oom_kill_is_named_as_such() -> None:
    got = hits(BEFORE, replace(BEFORE, oom_events=2), wanted=100, joined=100)
    assert got[0]["limit"] == "mem_limit" and "2 OOM kill(s)" in got[0]["why"]
    assert "confirm" not in got[0]["why"]
    flagged = hits(BEFORE, replace(BEFORE, oom_killed=True, running=False), wanted=100, joined=100)
    assert "OOMKilled" in flagged[0]["why"] and "stopped" in flagged[0]["why"]


def test_the_memory_remedy_covers_the_sockets_wanted() -> None:
    # 256 MiB + 20000 x 200 KiB = 4162 MiB, rounded up to 4352 (a multiple of 256).
    got = hits(BEFORE, replace(BEFORE, oom_events=1), wanted=20000, joined=20000)
    assert "mem_limit: 4352m" in got[0]["remedy"], got


def test_an_oom_flag_from_before_the_run_is_not_this_runs() -> None:
    old = replace(BEFORE, oom_killed=True)
    assert hits(old, replace(old, oom_events=0), wanted=100, joined=100) == []


def test_a_restart_without_a_memory_limit_says_read_the_logs() -> None:
    free = replace(BEFORE, memory_limit=0)
    got = hits(free, replace(free, restart_count=2), wanted=100, joined=100)
    assert [h["limit"] for h in got] == ["container restart"]
    assert "no memory limit is set" in got[0]["why"] and "docker logs --since" in got[0]["remedy"]
    host = hits(free, replace(free, oom_events=1), wanted=100, joined=100)
    assert "the host ran out of memory" in host[0]["why"]


def test_an_unchanged_container_names_nothing() -> None:
    assert hits(BEFORE, replace(BEFORE, read_at=BEFORE.read_at + 60, oom_events=0), wanted=100, joined=100) == []
    assert hits(None, None, wanted=100, joined=0) == []


def test_the_container_entry_replaces_the_generic_emfile_entry() -> None:
    errors = {"handshake: EMFILE": 4}
    generic = limits_hit(errors, "realtime-dev")
    assert [h["limit"] for h in generic] == ["RLIMIT_NOFILE"]
    merged = merge_hits(generic, hits(BEFORE, BEFORE, wanted=3000, joined=10, errors=errors))
    assert len(merged) == 1 and "now 2048" in merged[0]["why"]


def test_docker_off_is_a_reason_not_a_reading() -> None:
    got, why = read_container_limits(Target(realtime_url="http://127.0.0.1:4000", docker=False))
    assert got is None and "docker=off" in why


def test_a_remote_target_is_not_judged_by_the_local_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    got, why = read_container_limits(Target(api_url="https://staging.example.com:8000", docker=None))
    assert got is None and "staging.example.com is not this machine" in why and "DOCKER_HOST" in why


def test_the_text_line_shows_the_values() -> None:
    line = replace(BEFORE, oom_events=1).line()
    assert "memory limit 300 MiB" in line and "open files 2048 soft / 4096 hard (pid 7)" in line
    assert "1 OOM kill(s)" in line
    assert "open files unreadable (no sh)" in replace(BEFORE, nofile_soft=None, nofile_problem="no sh").line()


def test_the_readings_are_in_the_json_the_text_and_the_bottlenecks() -> None:
    import json

    from rtbook.load.runner import bottlenecks, merge
    from rtbook.load.scenario import Scenario

    result = merge(Scenario(), "x", [])
    after = replace(BEFORE, restart_count=1, started_at="2026-12-03T14:02:00Z")
    result.container_before, result.container_after = BEFORE, after
    result.limits_hit = hits(BEFORE, after, wanted=100, joined=100)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["container"]["before"]["nofile_soft"] == 2048
    assert data["container"]["after"]["restart_count"] == 1
    assert data["limits_hit"][0]["limit"] == "mem_limit"
    text = result.text()
    assert "container before: realtime-dev.supabase-realtime: memory limit 300 MiB" in text
    assert "limit hit: mem_limit" in text and "mem_limit: 768m" in text
    assert bottlenecks(result)[0] == "a tenant or server limit: mem_limit"
    unread = merge(Scenario(), "x", [])
    unread.container_note = "No Docker engine answers at unix:///var/run/docker.sock."
    assert unread.to_dict()["container"] == {"before": None, "after": None, "note": unread.container_note}
    assert "container: No Docker engine answers" in unread.text()
