"""Typed views of ``docker inspect`` data.

The Docker SDK hands back ``container.attrs``: a nested dict whose shape changes between engine
versions. It is parsed here, once, into frozen dataclasses; unknown keys are ignored and missing
ones get neutral defaults, so a newer engine never breaks the checks (testcontainers does the same
in ``core/inspect.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "COMPOSE_NETWORK_LABEL",
    "COMPOSE_PROJECT_LABEL",
    "COMPOSE_SERVICE_LABEL",
    "STACK_NAMESPACE_LABEL",
    "SWARM_SERVICE_LABEL",
    "ContainerInfo",
    "ContainerState",
    "Health",
    "HealthProbe",
    "Healthcheck",
    "NetworkEndpoint",
    "Ulimit",
    "image_repository",
    "parse_env_list",
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


def image_repository(image: str) -> str:
    """The repository part of an image reference, without registry host, tag or digest.

    ``public.ecr.aws/supabase/realtime:v2.34.47`` gives ``supabase/realtime``;
    ``kong:2.8.1`` gives ``kong``; ``docker.io/library/kong`` gives ``kong``.
    """
    ref = image.split("@", 1)[0]
    last = ref.rsplit("/", 1)
    if ":" in last[-1]:
        ref = ref[: ref.rfind(":")]
    parts = ref.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]
    if parts and parts[0] == "library" and len(parts) == 2:
        parts = parts[1:]
    return "/".join(parts)


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
