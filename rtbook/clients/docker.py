"""Typed views of ``docker inspect`` data.

The Docker SDK hands back ``container.attrs``: a nested dict whose shape changes between engine
versions. It is parsed here, once, into frozen dataclasses; unknown keys are ignored and missing
ones get neutral defaults, so a newer engine never breaks the checks (testcontainers does the same
in ``core/inspect.py``).
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rtbook.config.images import image_repository
from rtbook.target import Target

__all__ = [
    "COMPOSE_NETWORK_LABEL",
    "COMPOSE_PROJECT_LABEL",
    "COMPOSE_SERVICE_LABEL",
    "STACK_NAMESPACE_LABEL",
    "SWARM_SERVICE_LABEL",
    "ContainerInfo",
    "ContainerState",
    "Discovery",
    "EngineSession",
    "ExecOutcome",
    "Health",
    "HealthProbe",
    "Healthcheck",
    "NetworkEndpoint",
    "OpenFiles",
    "Ulimit",
    "classify_engine_error",
    "connect_engine",
    "discover",
    "docker_session",
    "exec_in",
    "parse_env_list",
    "read_open_files",
]


COMPOSE_PROJECT_LABEL = "com.docker.compose.project"
COMPOSE_SERVICE_LABEL = "com.docker.compose.service"
COMPOSE_NETWORK_LABEL = "com.docker.compose.network"
# `docker stack deploy` (swarm) labels its tasks' containers with these instead.
STACK_NAMESPACE_LABEL = "com.docker.stack.namespace"
SWARM_SERVICE_LABEL = "com.docker.swarm.service.name"


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> Sequence[Any]:
    return value if isinstance(value, list | tuple) else ()


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return 0


def parse_env_list(items: Sequence[Any]) -> dict[str, str]:
    """Turn Docker's ``["KEY=value", ...]`` into a dict (a bare ``KEY`` maps to an empty string)."""
    env: dict[str, str] = {}
    for item in items:
        if not isinstance(item, str) or not item:
            continue
        key, _, value = item.partition("=")
        env[key] = value
    return env


@dataclass(frozen=True)
class HealthProbe:
    """One run of the container's healthcheck."""

    start: str = ""
    end: str = ""
    exit_code: int = 0
    output: str = ""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HealthProbe:
        """Parse one entry of ``State.Health.Log``."""
        return cls(
            start=_str(data.get("Start")),
            end=_str(data.get("End")),
            exit_code=_int(data.get("ExitCode")),
            output=_str(data.get("Output")),
        )


@dataclass(frozen=True)
class Health:
    """``State.Health``: the healthcheck verdict and its last probes (oldest first)."""

    status: str = ""
    failing_streak: int = 0
    log: tuple[HealthProbe, ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Health:
        """Parse ``State.Health``."""
        return cls(
            status=_str(data.get("Status")),
            failing_streak=_int(data.get("FailingStreak")),
            log=tuple(HealthProbe.from_dict(_map(p)) for p in _list(data.get("Log"))),
        )


@dataclass(frozen=True)
class ContainerState:
    """``State``: whether the container runs, how its last run ended."""

    status: str = ""
    running: bool = False
    paused: bool = False
    restarting: bool = False
    oom_killed: bool = False
    dead: bool = False
    pid: int = 0
    exit_code: int = 0
    error: str = ""
    started_at: str = ""
    finished_at: str = ""
    health: Health | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ContainerState:
        """Parse ``State``."""
        health = data.get("Health")
        return cls(
            status=_str(data.get("Status")),
            running=bool(data.get("Running")),
            paused=bool(data.get("Paused")),
            restarting=bool(data.get("Restarting")),
            oom_killed=bool(data.get("OOMKilled")),
            dead=bool(data.get("Dead")),
            pid=_int(data.get("Pid")),
            exit_code=_int(data.get("ExitCode")),
            error=_str(data.get("Error")),
            started_at=_str(data.get("StartedAt")),
            finished_at=_str(data.get("FinishedAt")),
            health=Health.from_dict(health) if isinstance(health, Mapping) else None,
        )


@dataclass(frozen=True)
class Healthcheck:
    """``Config.Healthcheck``: the probe command and its timing (nanoseconds, as Docker stores them)."""

    # The probe carries a Bearer token once compose has interpolated ${ANON_KEY}: keep it out of reprs.
    test: tuple[str, ...] = field(default=(), repr=False)
    interval_ns: int = 0
    timeout_ns: int = 0
    retries: int = 0
    start_period_ns: int = 0

    @property
    def command(self) -> str:
        """The probe as one shell-like string (``CMD-SHELL`` body or the joined exec form)."""
        if not self.test:
            return ""
        kind, *rest = self.test
        return " ".join(rest if kind in ("CMD-SHELL", "CMD") else self.test)

    @property
    def disabled(self) -> bool:
        """True for ``healthcheck: disable`` (test ``["NONE"]``)."""
        return bool(self.test) and self.test[0] == "NONE"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Healthcheck:
        """Parse ``Config.Healthcheck``."""
        return cls(
            test=tuple(str(x) for x in _list(data.get("Test"))),
            interval_ns=_int(data.get("Interval")),
            timeout_ns=_int(data.get("Timeout")),
            retries=_int(data.get("Retries")),
            start_period_ns=_int(data.get("StartPeriod")),
        )


@dataclass(frozen=True)
class NetworkEndpoint:
    """The container's attachment to one network (``NetworkSettings.Networks[name]``)."""

    network: str
    network_id: str = ""
    aliases: tuple[str, ...] = ()
    dns_names: tuple[str, ...] = ()
    ip_address: str = ""

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, Any]) -> NetworkEndpoint:
        """Parse one ``NetworkSettings.Networks`` entry."""
        return cls(
            network=name,
            network_id=_str(data.get("NetworkID")),
            aliases=tuple(str(a) for a in _list(data.get("Aliases"))),
            # Engines >= 25 list every resolvable name here; older ones only have Aliases.
            dns_names=tuple(str(a) for a in _list(data.get("DNSNames"))),
            ip_address=_str(data.get("IPAddress")),
        )


@dataclass(frozen=True)
class Ulimit:
    """One ``HostConfig.Ulimits`` entry."""

    name: str
    soft: int
    hard: int


@dataclass(frozen=True)
class ContainerInfo:
    """What rtbook needs from ``docker inspect <container>``."""

    id: str
    name: str
    image: str = ""
    image_id: str = ""
    hostname: str = ""
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    labels: Mapping[str, str] = field(default_factory=dict)
    state: ContainerState = field(default_factory=ContainerState)
    restart_count: int = 0
    restart_policy: str = ""
    healthcheck: Healthcheck | None = None
    networks: Mapping[str, NetworkEndpoint] = field(default_factory=dict)
    network_mode: str = ""
    memory_limit: int = 0
    ulimits: tuple[Ulimit, ...] = ()

    @property
    def compose_project(self) -> str:
        """The compose project (or swarm stack namespace); empty when neither created the container."""
        return self.labels.get(COMPOSE_PROJECT_LABEL) or self.labels.get(STACK_NAMESPACE_LABEL, "")

    @property
    def compose_service(self) -> str:
        """The compose service (or swarm service without its stack prefix); empty when unknown."""
        service = self.labels.get(COMPOSE_SERVICE_LABEL)
        if service:
            return service
        swarm = self.labels.get(SWARM_SERVICE_LABEL, "")
        namespace = self.labels.get(STACK_NAMESPACE_LABEL, "")
        if swarm and namespace and swarm.startswith(namespace + "_"):
            return swarm[len(namespace) + 1 :]
        return swarm

    @property
    def repository(self) -> str:
        """The image repository without registry and tag (``supabase/realtime``)."""
        return image_repository(self.image)

    def dns_names(self, network: str) -> set[str]:
        """Names other containers on ``network`` can resolve to this container.

        Docker's embedded DNS answers for the container name and every alias on user-defined
        networks; the hostname is *not* registered.
        """
        endpoint = self.networks.get(network)
        if endpoint is None:
            return set()
        names = {self.name, *endpoint.aliases, *endpoint.dns_names}
        return {n for n in names if n}

    def all_dns_names(self) -> set[str]:
        """Union of :meth:`dns_names` over every network the container is on."""
        out: set[str] = set()
        for network in self.networks:
            out |= self.dns_names(network)
        return out

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> ContainerInfo:
        """Parse ``container.attrs`` (the output of ``docker inspect``)."""
        config = _map(attrs.get("Config"))
        host = _map(attrs.get("HostConfig"))
        settings = _map(attrs.get("NetworkSettings"))
        health = config.get("Healthcheck")
        ulimits = []
        for item in _list(host.get("Ulimits")):
            item = _map(item)
            ulimits.append(Ulimit(_str(item.get("Name")), _int(item.get("Soft")), _int(item.get("Hard"))))
        return cls(
            id=_str(attrs.get("Id")),
            name=_str(attrs.get("Name")).lstrip("/"),
            image=_str(config.get("Image")),
            image_id=_str(attrs.get("Image")),
            hostname=_str(config.get("Hostname")),
            env=parse_env_list(_list(config.get("Env"))),
            labels={str(k): str(v) for k, v in _map(config.get("Labels")).items()},
            state=ContainerState.from_dict(_map(attrs.get("State"))),
            restart_count=_int(attrs.get("RestartCount")),
            restart_policy=_str(_map(host.get("RestartPolicy")).get("Name")),
            healthcheck=Healthcheck.from_dict(health) if isinstance(health, Mapping) else None,
            networks={
                str(name): NetworkEndpoint.from_dict(str(name), _map(data))
                for name, data in _map(settings.get("Networks")).items()
            },
            network_mode=_str(host.get("NetworkMode")),
            memory_limit=_int(host.get("Memory")),
            ulimits=tuple(ulimits),
        )

REALTIME_IMAGES = ("supabase/realtime",)
GATEWAY_IMAGES = {"kong": "kong", "kong/kong": "kong", "envoyproxy/envoy": "envoy"}
DB_IMAGES = ("supabase/postgres",)
DEFAULT_REALTIME_SERVICE = "realtime"
DEFAULT_REALTIME_CONTAINER = "realtime-dev.supabase-realtime"


# ------------------------------------------------------------------ engine connection


@dataclass(frozen=True)
class EngineProblem:
    """Why the engine could not be used, and what to do about it."""

    kind: str  # permission | no_engine | docker_host | timeout | sdk | other
    summary: str
    detail: str
    remedy: str


@dataclass
class EngineSession:
    """A connected client (or the reason there is none) and the discovered containers."""

    client: Any = None
    problem: EngineProblem | None = None
    docker_host: str = ""
    server_version: str = ""
    discovery: Discovery | None = None
    created: float = field(default_factory=time.monotonic)


def _docker_host(env: Mapping[str, str]) -> str:
    return env.get("DOCKER_HOST", "") or "unix:///var/run/docker.sock"


def classify_engine_error(exc: BaseException, docker_host: str, host_from_env: bool) -> EngineProblem:
    """Map an exception raised while connecting to the engine to a problem with its remedy.

    Args:
        exc: what ``docker.from_env(...).ping()`` raised.
        docker_host: the address tried.
        host_from_env: whether that address came from ``DOCKER_HOST`` (then it is the first suspect).
    """
    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and len(chain) < 10:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    text = " | ".join(f"{type(e).__name__}: {e}" for e in chain)
    lowered = text.lower()
    no_docker = "Or pass --no-docker (docker=False) to skip the container checks."
    if any(isinstance(e, PermissionError) for e in chain) or "permission denied" in lowered:
        sock = docker_host.removeprefix("unix://")
        return EngineProblem(
            "permission",
            f"Permission denied on the Docker socket {sock}.",
            f"Connecting to {docker_host} failed: {text}. The engine runs, but this user may not use its socket.",
            "Add your user to the docker group (sudo usermod -aG docker $USER, then log in again), "
            "run rtbook as a user that may use the socket, or set DOCKER_HOST to an engine you can reach "
            "(rootless: unix:///run/user/$UID/docker.sock). " + no_docker,
        )
    if "timed out" in lowered or any(isinstance(e, TimeoutError | socket.timeout) for e in chain):
        return EngineProblem(
            "timeout",
            f"The Docker engine at {docker_host} did not answer in time.",
            f"Connecting to {docker_host} timed out: {text}.",
            "Check that the engine is responsive (docker info), raise the timeout, or fix DOCKER_HOST. " + no_docker,
        )
    if host_from_env:
        return EngineProblem(
            "docker_host",
            f"DOCKER_HOST={docker_host} does not answer.",
            f"DOCKER_HOST is set to {docker_host!r} and connecting failed: {text}.",
            f"Fix DOCKER_HOST (now {docker_host!r}) or unset it to use the local socket "
            "unix:///var/run/docker.sock; 'docker context ls' shows the engines this machine knows. " + no_docker,
        )
    if (
        any(isinstance(e, FileNotFoundError | ConnectionRefusedError) for e in chain)
        or "no such file" in lowered
        or "connection refused" in lowered
    ):
        return EngineProblem(
            "no_engine",
            f"No Docker engine answers at {docker_host}.",
            f"Connecting to {docker_host} failed: {text}. The engine is not running on this machine "
            "or listens elsewhere.",
            "Start the engine (sudo systemctl start docker, or Docker Desktop), or set DOCKER_HOST to the engine "
            "that runs the stack (e.g. ssh://user@host or unix:///run/user/$UID/docker.sock). " + no_docker,
        )
    return EngineProblem(
        "other",
        f"The Docker engine at {docker_host} could not be used.",
        f"Connecting to {docker_host} failed: {text}.",
        "Run 'docker info' with the same user and DOCKER_HOST to see the engine's own error. " + no_docker,
    )


def connect_engine(env: Mapping[str, str] | None = None, timeout: float = 10.0) -> EngineSession:
    """Connect to the engine named by ``DOCKER_HOST`` (or the local socket) and ping it.

    Never raises: a failure is returned as ``EngineSession.problem``.
    """
    environ = dict(os.environ if env is None else env)
    host = _docker_host(environ)
    from_env = bool(environ.get("DOCKER_HOST"))
    try:
        import docker
    except ImportError as exc:  # pragma: no cover - docker is a hard dependency
        return EngineSession(
            problem=EngineProblem(
                "sdk",
                "The docker Python package is not installed.",
                str(exc),
                "pip install 'docker>=7' (it is a dependency of rtbook; reinstall rtbook).",
            ),
            docker_host=host,
        )
    client = None
    try:
        client = docker.from_env(timeout=max(1, round(timeout)), environment=environ)
        client.ping()
        version = str(client.version().get("Version", ""))
    except Exception as exc:  # every failure becomes a result, never a traceback
        if client is not None:
            try:
                client.close()
            except Exception:
                pass
        return EngineSession(problem=classify_engine_error(exc, host, from_env), docker_host=host)
    return EngineSession(client=client, docker_host=host, server_version=version)


# ------------------------------------------------------------------ discovery


@dataclass(frozen=True)
class Discovery:
    """The stack's containers found on the engine and how each was recognised."""

    realtime: ContainerInfo | None = None
    realtime_how: str = ""
    gateway: ContainerInfo | None = None
    gateway_how: str = ""
    gateway_kind: str = ""
    db: ContainerInfo | None = None
    project: str = ""
    realtime_service: str = DEFAULT_REALTIME_SERVICE
    gateway_service: str = ""
    looked_for: Mapping[str, str] = field(default_factory=dict)
    seen: tuple[str, ...] = ()

    @property
    def anything(self) -> bool:
        """Whether any container of the stack was found."""
        return any(c is not None for c in (self.realtime, self.gateway, self.db))


@dataclass(frozen=True)
class _Expect:
    services: tuple[str, ...]
    container_names: tuple[str, ...]
    images: tuple[str, ...]

    @property
    def service(self) -> str:
        return self.services[0]


def _service_expect(service: Any, default: _Expect) -> _Expect:
    """What to look for: the stack's service when it has one, else the official stack's names."""
    if service is None:
        return default
    name = str(getattr(service, "name", "") or default.service)
    cname = str(getattr(service, "container_name", "") or "")
    image = str(getattr(service, "image", "") or "")
    repo = image_repository(image) if image and "$" not in image else ""
    images = tuple(dict.fromkeys([*(r for r in [repo] if r), *default.images]))
    return _Expect((name,), (cname,) if cname else (), images)


def _stack_project(stack: Any, target: Target | None) -> str:
    for attr in ("project_name", "project"):
        value = getattr(stack, attr, None)
        if isinstance(value, str) and value:
            return value
    if target is not None:
        value = target.lookup("COMPOSE_PROJECT_NAME")
        if value:
            return value
    for attr in ("root", "path", "directory", "dir"):
        value = getattr(stack, attr, None)
        if value:
            base = os.path.basename(str(value).rstrip("/"))
            return re.sub(r"[^a-z0-9_-]", "", base.lower())
    return ""


def _pick(
    containers: Sequence[ContainerInfo], expect: _Expect, project: str
) -> tuple[ContainerInfo | None, str]:
    def best(cands: list[ContainerInfo]) -> ContainerInfo | None:
        if not cands:
            return None
        cands.sort(key=lambda c: (not c.state.running, c.compose_project != project, c.name))
        return cands[0]

    services = " or ".join(expect.services)
    steps: list[tuple[str, Callable[[ContainerInfo], bool]]] = []
    if project:
        steps.append(
            (
                f"compose labels project={project} service={services}",
                lambda c: c.compose_project == project and c.compose_service in expect.services,
            )
        )
    if expect.container_names:
        steps.append((f"container name {' or '.join(expect.container_names)}",
                      lambda c: c.name in expect.container_names))
    steps.append((f"compose label service={services}", lambda c: c.compose_service in expect.services))
    if expect.images:
        steps.append(
            (f"image {' or '.join(expect.images)}", lambda c: c.repository in expect.images)
        )
    for how, pred in steps:
        found = best([c for c in containers if pred(c)])
        if found is not None:
            how = how.replace(f"service={services}", f"service={found.compose_service}")
            if found.compose_project and "labels" not in how:
                how += f" (compose project {found.compose_project})"
            return found, how
    return None, ""


_DEFAULT_REALTIME = _Expect((DEFAULT_REALTIME_SERVICE,), (DEFAULT_REALTIME_CONTAINER,), REALTIME_IMAGES)
_DEFAULT_GATEWAY = _Expect(("api-gw", "kong", "envoy"), ("supabase-kong", "supabase-envoy"), tuple(GATEWAY_IMAGES))


def _looked(expect: _Expect, project: str) -> str:
    text = "compose service " + " or ".join(repr(s) for s in expect.services)
    if project:
        text += f" in project {project!r}"
    if expect.container_names:
        text += ", container name " + " or ".join(repr(n) for n in expect.container_names)
    return text + ", image " + " or ".join(expect.images)


def discover(client: Any, stack: Any = None, target: Target | None = None) -> Discovery:
    """Find Realtime, the gateway and the database among the engine's containers (running or not)."""
    raw = client.containers.list(all=True)
    containers = [ContainerInfo.from_attrs(c.attrs) for c in raw]
    project = _stack_project(stack, target) if stack is not None else ""

    rt_service = stack.realtime_service() if stack is not None else None
    gw_service = stack.gateway_service() if stack is not None else None
    kind = str(stack.gateway_kind() or "") if stack is not None else ""
    rt_expect = _service_expect(rt_service, _DEFAULT_REALTIME)
    gw_expect = _service_expect(gw_service, _DEFAULT_GATEWAY)

    realtime, rt_how = _pick(containers, rt_expect, project)
    # Once Realtime is found, its compose project is the stack's project.
    scope = project or (realtime.compose_project if realtime else "")
    gateway, gw_how = _pick([c for c in containers if c is not realtime], gw_expect, scope)
    db, _ = _pick(containers, _Expect(("db",), ("supabase-db",), DB_IMAGES), scope)
    if gateway is not None and not kind:
        kind = GATEWAY_IMAGES.get(gateway.repository, "")
        if not kind:
            kind = "envoy" if "envoy" in gateway.repository else ("kong" if "kong" in gateway.repository else "")
    looked = {
        "realtime": _looked(rt_expect, project),
        "gateway": _looked(gw_expect, project),
    }
    return Discovery(
        realtime=realtime,
        realtime_how=rt_how,
        gateway=gateway,
        gateway_how=gw_how,
        gateway_kind=kind,
        db=db,
        project=scope,
        realtime_service=(realtime.compose_service if realtime and realtime.compose_service else rt_expect.service),
        gateway_service=(gateway.compose_service if gateway and gateway.compose_service else gw_expect.service),
        looked_for=looked,
        seen=tuple(sorted(c.name for c in containers)),
    )


# One run of the docker.* checks shares one connection and discovery; a later run (a notebook
# cell executed again after a fix) discovers again.
SESSION_TTL_S = 30.0


def docker_session(target: Target) -> EngineSession:
    """The engine session of ``target`` (connected and discovered once, then cached)."""
    cached = target.cache.get("docker.session")
    if isinstance(cached, EngineSession) and time.monotonic() - cached.created < SESSION_TTL_S:
        return cached
    if isinstance(cached, EngineSession) and cached.client is not None:
        # A notebook re-runs the checks after a fix: containers may have been recreated since.
        try:
            cached.client.close()
        except Exception:
            pass
    env = dict(os.environ)
    docker_host = target.env.get("DOCKER_HOST")
    if docker_host:
        env["DOCKER_HOST"] = docker_host
    session = connect_engine(env, timeout=target.timeout)
    if session.client is not None:
        try:
            session.discovery = discover(session.client, target.stack, target)
        except Exception as exc:
            session.problem = classify_engine_error(exc, session.docker_host, bool(env.get("DOCKER_HOST")))
        if session.discovery is not None:
            for info in (session.discovery.realtime, session.discovery.gateway, session.discovery.db):
                if info is not None:
                    # The live env holds the real secrets, which may differ from the files'.
                    target.redactor.add_env(info.env)
    target.cache["docker.session"] = session
    return session


def _reload(session: EngineSession, info: ContainerInfo) -> tuple[Any, ContainerInfo] | None:
    """Fetch a container again (state changes between checks); None when it was removed meanwhile."""
    from docker.errors import NotFound  # the SDK is imported by connect_engine, once a Docker check runs

    try:
        container = session.client.containers.get(info.id)
    except NotFound:
        return None
    return container, ContainerInfo.from_attrs(container.attrs)


# ------------------------------------------------------------------ helpers


@dataclass(frozen=True)
class ExecOutcome:
    """The result of running a command inside a container."""

    command: tuple[str, ...]
    exit_code: int | None
    output: str
    missing: bool = False  # the executable does not exist in the image
    error: str = ""


def exec_in(container: Any, command: Sequence[str]) -> ExecOutcome:
    """Run ``command`` in ``container`` and capture its output; never raises."""
    cmd = tuple(command)
    try:
        result = container.exec_run(list(cmd), stdout=True, stderr=True, demux=False)
    except Exception as exc:
        return ExecOutcome(cmd, None, "", error=f"{type(exc).__name__}: {exc}")
    output = (result.output or b"").decode("utf-8", "replace") if isinstance(result.output, bytes) else ""
    code = result.exit_code
    lowered = output.lower()
    missing = code in (126, 127) and (
        "executable file not found" in lowered or "no such file" in lowered or "not found" in lowered
    )
    return ExecOutcome(cmd, code, output, missing=missing)


# ------------------------------------------------------------------ open-files limit inside a container

_LIMITS_LINE = re.compile(r"^Max open files\s+(\S+)\s+(\S+)", re.M)
# The limit that matters is the BEAM's (Realtime's start script raises it to RLIMIT_NOFILE), not
# the exec'd shell's; fall back to PID 1 when no beam process is found.
OPEN_FILES_SCRIPT = (
    "pid=1; for p in /proc/[0-9]*; do c=$(cat $p/comm 2>/dev/null); "
    'case "$c" in beam*) pid=${p#/proc/}; break;; esac; done; '
    'echo "pid=$pid"; cat /proc/$pid/limits 2>/dev/null; echo ---; ulimit -n; ulimit -Hn'
)
# Rough needs, shared by the docker.realtime.limits check and rtbook load: one descriptor per
# WebSocket plus the BEAM's own (distribution, DB pools, files); memory for the VM plus a small
# per-connection share.
FD_BASELINE = 1024
MEM_BASELINE = 256 << 20
MEM_PER_USER = 200 << 10
UNLIMITED = 1 << 62


def _limit_value(value: str) -> int | None:
    if value == "unlimited":
        return UNLIMITED
    try:
        return int(value)
    except ValueError:
        return None


@dataclass(frozen=True)
class OpenFiles:
    """The open-files limit of Realtime's process inside its container (None when unreadable)."""

    soft: int | None
    hard: int | None
    pid: int | None  # the process whose /proc/<pid>/limits was read (None: only the shell's ulimit)
    outcome: ExecOutcome

    @property
    def problem(self) -> str:
        """Why the limit could not be read (empty when it was)."""
        if self.soft is not None:
            return ""
        return self.outcome.error or self.outcome.output.strip()[:200] or "no output"


def read_open_files(container: Any) -> OpenFiles:
    """Read the BEAM's (else PID 1's) open-files limit from ``/proc/<pid>/limits``; never raises.

    Falls back to the exec'd shell's ``ulimit -n``/``-Hn`` when ``/proc`` gives nothing.
    """
    outcome = exec_in(container, ("sh", "-c", OPEN_FILES_SCRIPT))
    soft = hard = pid = None
    if outcome.exit_code == 0:
        m = _LIMITS_LINE.search(outcome.output)
        if m:
            soft, hard = _limit_value(m.group(1)), _limit_value(m.group(2))
        else:
            tail = outcome.output.split("---", 1)[-1].split()
            if len(tail) >= 2:
                soft, hard = _limit_value(tail[0]), _limit_value(tail[1])
        pid_m = re.search(r"^pid=(\d+)", outcome.output, re.M)
        pid = int(pid_m.group(1)) if pid_m else None
    return OpenFiles(soft, hard, pid, outcome)
