"""The Realtime container's own limits around a load run: open files, memory, restarts.

A plateau or an error burst in a load run can come from the container rather than the tenant:
the BEAM may open only as many files as its soft ``nofile`` limit (Realtime's ``run.sh`` raises it
to ``RLIMIT_NOFILE``, supabase/realtime v2.129.8 ``run.sh``), and a memory limit ends in the
kernel's OOM kill and a restart. :func:`read_container_limits` reads them through the Docker
Engine API before and after the run (read only, every call bounded by the target's timeout) and
:func:`container_limits_hit` turns a pair of readings into limits hit, in the shape of
:func:`rtbook.load.runner.limits_hit`, with the setting's current value and a concrete remedy.
"""

from __future__ import annotations

import ipaddress
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from rtbook.target import Target

__all__ = ["ContainerLimits", "container_limits_hit", "merge_hits", "read_container_limits"]

# FD_BASELINE, MEM_BASELINE and MEM_PER_USER come from rtbook.clients.docker (the docker.realtime.limits
# check uses the same figures); they are imported where used, so that importing this module stays cheap.
MIN_NOFILE = 10000  # the official compose file's RLIMIT_NOFILE
MAX_OOM_EVENTS = 1000  # stop counting a runaway event stream


@dataclass(frozen=True)
class ContainerLimits:
    """One reading of the Realtime container (``memory_limit`` 0 = none; None = unreadable)."""

    container: str
    container_id: str
    service: str
    memory_limit: int
    nofile_soft: int | None
    nofile_hard: int | None
    nofile_pid: int | None
    restart_count: int
    oom_killed: bool
    started_at: str
    running: bool
    rlimit_nofile: str = ""
    read_at: float = 0.0
    # 'oom' events of the engine since the previous reading (None: not asked or not answered).
    # State.OOMKilled tells only how the main process last ended, maybe before the run; an OOM kill
    # of another process in the container (the kernel picks one) leaves it false.
    oom_events: int | None = None
    nofile_problem: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        """One line for the text output."""
        files = (f"open files {_n(self.nofile_soft)} soft / {_n(self.nofile_hard)} hard"
                 + (f" (pid {self.nofile_pid})" if self.nofile_pid else "")
                 if self.nofile_soft is not None else f"open files unreadable ({self.nofile_problem})")
        return (f"{self.container}: memory limit {_mib(self.memory_limit)}, {files}, "
                f"{self.restart_count} restart(s), started {self.started_at or '?'}"
                + ("" if self.running else ", NOT running") + (", OOMKilled" if self.oom_killed else "")
                + (f", {self.oom_events} OOM kill(s) since the run began" if self.oom_events else ""))


def _n(value: int | None) -> str:
    from rtbook.clients.docker import UNLIMITED

    return "?" if value is None else "unlimited" if value >= UNLIMITED else str(value)


def _mib(n: int) -> str:
    return "none" if n <= 0 else f"{n / (1 << 20):.0f} MiB"


def _round_up(n: int, step: int) -> int:
    return -(-n // step) * step


# ------------------------------------------------------------------ reading


def read_container_limits(
    target: Target, previous: ContainerLimits | None = None
) -> tuple[ContainerLimits | None, str]:
    """Read the Realtime container's limits; ``(None, reason)`` when Docker is off, absent or unhealthy.

    With ``previous`` (the reading before the run) the same container is read again, or the
    stack's new one when it was recreated meanwhile, and the engine's OOM events since then are
    counted. Never raises.
    """
    if not target.has("docker"):
        return None, target.why_missing("docker")
    remote = _remote_host(target)
    if remote and target.docker is None and not (target.env.get("DOCKER_HOST") or os.environ.get("DOCKER_HOST")):
        # The local engine's Realtime would be another deployment's: its limits would explain nothing.
        return None, (f"not read: the target {remote} is not this machine and DOCKER_HOST is not set (set it to "
                      "that host's engine, e.g. ssh://user@host, to have its container's limits read)")
    try:
        return _read(target, previous)
    except Exception as exc:  # the limits explain a run; the run's own numbers stand without them
        return None, f"could not read the Realtime container: {type(exc).__name__}: {exc}"


def _remote_host(target: Target) -> str:
    """The target's host when it is not a loopback address or name; empty otherwise."""
    host = urlsplit(target.api_url or target.realtime_url or "").hostname or ""
    if not host or host == "localhost" or host.endswith(".localhost"):
        return ""
    try:
        return "" if ipaddress.ip_address(host).is_loopback else host
    except ValueError:
        return host


def _read(target: Target, previous: ContainerLimits | None) -> tuple[ContainerLimits | None, str]:
    from rtbook.clients.docker import ContainerInfo, discover, docker_session, read_open_files

    session = docker_session(target)
    if session.problem is not None or session.client is None:
        return None, session.problem.summary if session.problem else "no Docker client"
    client = session.client
    disc = session.discovery
    ids = [previous.container_id] if previous is not None else []
    if disc is not None and disc.realtime is not None:
        ids.append(disc.realtime.id)
    container = _first_existing(client, ids)
    if container is None and previous is not None:
        # Recreated during the run (docker compose up --force-recreate): the stack's new container.
        disc = discover(client, target.stack, target)
        container = _first_existing(client, [disc.realtime.id] if disc.realtime is not None else [])
    if container is None:
        looked = disc.looked_for.get("realtime", "") if disc is not None else ""
        return None, f"no Realtime container on {session.docker_host}" + (f" (looked for {looked})" if looked else "")
    info = ContainerInfo.from_attrs(container.attrs)
    target.redactor.add_env(info.env)
    soft = hard = pid = None
    problem = "the container is not running"
    if info.state.running and not info.state.restarting:
        files = read_open_files(container)
        soft, hard, pid, problem = files.soft, files.hard, files.pid, files.problem
    oom = None
    if previous is not None:
        oom = _oom_events(client, {previous.container_id, info.id}, previous.read_at)
    service = (disc.realtime_service if disc is not None and disc.realtime is not None
               and disc.realtime.id == info.id else "") or info.compose_service or "realtime"
    return ContainerLimits(
        container=info.name, container_id=info.id, service=service, memory_limit=info.memory_limit,
        nofile_soft=soft, nofile_hard=hard, nofile_pid=pid, restart_count=info.restart_count,
        oom_killed=info.state.oom_killed, started_at=info.state.started_at, running=info.state.running,
        rlimit_nofile=info.env.get("RLIMIT_NOFILE", ""), read_at=time.time(), oom_events=oom,
        nofile_problem=problem,
    ), ""


def _first_existing(client: Any, ids: Iterable[str]) -> Any:
    from docker.errors import NotFound  # imported by connect_engine already, once Docker is used

    for cid in dict.fromkeys(i for i in ids if i):
        try:
            return client.containers.get(cid)
        except NotFound:
            continue
    return None


def _oom_events(client: Any, ids: set[str], since: float) -> int | None:
    """The engine's ``oom`` events for ``ids`` since ``since`` (epoch s); None when not answered."""
    try:
        # A finite query (until = now): the engine answers with the past events and closes; the
        # client's socket timeout bounds it.
        stream = client.events(since=int(since), until=math.ceil(time.time()), decode=True,
                               filters={"event": ["oom"], "container": sorted(i for i in ids if i)})
        count = 0
        try:
            for _event in stream:
                count += 1
                if count >= MAX_OOM_EVENTS:
                    break
        finally:
            stream.close()
        return count
    except Exception:  # an engine without the events API (or a proxy refusing it): unknown
        return None


# ------------------------------------------------------------------ judging


def container_limits_hit(
    before: ContainerLimits | None,
    after: ContainerLimits | None,
    *,
    sockets_wanted: int,
    joined: int,
    errors: Mapping[str, int],
) -> list[dict[str, str]]:
    """The container limits a run hit: ``{"limit", "why", "remedy"}`` each, like ``limits_hit``.

    * Open files: the run fell short (fewer sockets joined than wanted, or ``EMFILE``) and the
      sockets wanted exceed the BEAM's soft limit less what the VM itself keeps open.
    * Memory: the container was OOM-killed, restarted or stopped between the readings.
    """
    from rtbook.clients.docker import FD_BASELINE

    out: list[dict[str, str]] = []
    first = before or after
    emfile = sum(n for k, n in errors.items() if "EMFILE" in k or "too many open files" in k.lower())
    short = joined < sockets_wanted or emfile > 0
    if first is not None and first.nofile_soft is not None and short:
        from rtbook.clients.docker import UNLIMITED

        soft, hard = first.nofile_soft, first.nofile_hard
        room = max(soft - FD_BASELINE, 0)
        if soft < UNLIMITED and (sockets_wanted > room or emfile):
            # Twice the sockets wanted: room for the next, larger run; never below the official 10000.
            want = max(MIN_NOFILE, _round_up(2 * sockets_wanted + FD_BASELINE, 1000))
            seen = f"{joined} of {sockets_wanted} sockets joined" + (f", {emfile} EMFILE error(s)" if emfile else "")
            env = f"; RLIMIT_NOFILE={first.rlimit_nofile}" if first.rlimit_nofile else ""
            out.append({
                "limit": "RLIMIT_NOFILE",
                "why": (f"{sockets_wanted} sockets wanted, but Realtime in {first.container} may open only {soft} "
                        f"files (soft limit, now {soft}; hard {_n(hard)}{env}), about {FD_BASELINE} of which "
                        f"the VM keeps for itself; {seen}"),
                "remedy": (f"in docker-compose.override.yml give the {first.service} service "
                           f"'ulimits: {{nofile: {{soft: {want}, hard: {want}}}}}' and "
                           f"'environment: {{RLIMIT_NOFILE: \"{want}\"}}' (Realtime raises its soft limit to "
                           f"RLIMIT_NOFILE, which must not exceed the hard limit), then "
                           f"'docker compose up -d {first.service}'; or keep the run below ~{room} sockets"),
            })
    if before is not None and after is not None:
        out.extend(_restart_hits(before, after, sockets_wanted))
    return out


def _restart_hits(before: ContainerLimits, after: ContainerLimits, sockets: int) -> list[dict[str, str]]:
    from rtbook.clients.docker import MEM_BASELINE, MEM_PER_USER

    events: list[str] = []
    # A flag already set before the run is an old exit, not this run's.
    flagged = after.oom_killed and not before.oom_killed
    oom = bool(flagged or after.oom_events)
    if flagged:
        events.append("was OOM-killed (State.OOMKilled)")
    elif after.oom_events:
        events.append(f"had {after.oom_events} OOM kill(s) (engine events)")
    if after.container_id != before.container_id:
        events.append(f"was recreated (id {before.container_id[:12]} -> {after.container_id[:12]})")
    elif after.restart_count > before.restart_count:
        events.append(f"restarted (restart count {before.restart_count} -> {after.restart_count})")
    elif after.started_at != before.started_at:
        events.append(f"restarted (started at {before.started_at}, then at {after.started_at})")
    if before.running and not after.running:
        events.append("stopped")
    if not events:
        return []
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(before.read_at)) if before.read_at else "10m"
    logs = f"'docker logs --since {since} {after.container}'"
    happened = f"{after.container} " + " and ".join(events) + " during the run"
    limit = after.memory_limit or before.memory_limit
    if limit > 0:
        mib = limit >> 20
        need = (MEM_BASELINE + sockets * MEM_PER_USER) >> 20
        new = _round_up(max(2 * mib, need, 512), 256)
        cause = ("" if oom else "; under load with a memory limit the kernel's OOM kill is the usual cause, "
                 "but the engine reported none, so read the logs to confirm")
        return [{
            "limit": "mem_limit",
            "why": f"{happened}; its memory limit is now {mib} MiB{cause}",
            "remedy": (f"raise the memory limit: in docker-compose.override.yml give the {after.service} service "
                       f"'mem_limit: {new}m' (swarm: 'deploy.resources.limits.memory: {new}M'), then "
                       f"'docker compose up -d {after.service}'; {logs} shows what happened; or lower the load"),
        }]
    what = "the host ran out of memory (no memory limit is set on the container)" if oom else \
        "no memory limit is set, so it was not the container's memory limit"
    return [{
        "limit": "container restart",
        "why": f"{happened}; {what}",
        "remedy": (f"read its logs: {logs} (a crash, the host's OOM killer: 'dmesg | grep -i oom', or a manual "
                   "restart), fix that cause, then run the load again"),
    }]


def merge_hits(hits: Sequence[dict[str, str]], more: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """``hits`` with ``more`` added; an entry of ``more`` replaces one of ``hits`` naming the same limit."""
    names = {h["limit"] for h in more}
    return [h for h in hits if h["limit"] not in names] + list(more)
