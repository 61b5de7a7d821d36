"""The sandbox as a small cluster: ``rtbook sandbox up --nodes N --lb nginx|haproxy|caddy``.

Each node is what one host running the stack would be: a Realtime-compatible server and its own
Kong-compatible gateway; all nodes share the one PostgreSQL (Realtime's metadata and tenant database, as
in a real multi-node deployment). The nodes are clustered the way the stand-in can be (broadcast and
presence relayed through PostgreSQL LISTEN/NOTIFY, :mod:`rtbook.sandbox.server_cluster`; real Realtime
uses Phoenix.PubSub and Phoenix.Tracker over distributed Erlang, with libcluster finding the nodes). In
front of the gateways runs a real load balancer (:mod:`rtbook.sandbox.lb`), whose URL becomes the
target's public URL (``gateway_url``).

This module holds the cluster's plan and start-up order; the manager keeps starting the processes (it
passes its own start functions in), so it never imports the manager.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rtbook.exceptions import ConfigError
from rtbook.sandbox import lb as lbmod
from rtbook.sandbox.postgres import free_port

__all__ = ["MAX_NODES", "ClusterSpec", "Started", "check_options", "process_marker", "spec_for", "start"]

MAX_NODES = 8


@dataclass(frozen=True)
class ClusterSpec:
    """How many nodes, which proxy, and whether the nodes relay to each other."""

    nodes: int
    lb: str | None
    lb_variant: str = "healthy"
    clustered: bool = True
    channel: str = ""

    def node_name(self, i: int) -> str:
        """The node's name as Realtime's health reports it (``Node.self()``), unique on one host."""
        return "realtime@127.0.0.1" if self.nodes == 1 else f"realtime-node{i}@127.0.0.1"

    def server_extra(self, i: int) -> dict[str, Any]:
        """Server config keys for node ``i`` (1-based): its name and, when clustered, the relay channel."""
        extra: dict[str, Any] = {"node": self.node_name(i)}
        if i > 1:
            # Real Realtime runs a tenant's database connection and CDC poller on one node of the cluster
            # (a global registry) and fans changes out through PubSub; the stand-in's nodes each run their
            # own, so each needs its own replication slots (Realtime's SLOT_NAME_SUFFIX) to not collide.
            extra["slot_name_suffix"] = f"node{i}"
        if self.clustered and self.nodes > 1:
            extra["cluster_channel"] = self.channel
        return extra


def check_options(nodes: int, lb: str | None) -> None:
    """Refuse a node count or proxy the sandbox cannot run, with one line naming the value and the fix."""
    if isinstance(nodes, bool) or not isinstance(nodes, int) or not 1 <= nodes <= MAX_NODES:
        raise ConfigError(f"--nodes {nodes!r}: choose a number of nodes from 1 to {MAX_NODES}")
    if lb is not None and lb not in lbmod.KINDS:
        raise ConfigError(f"--lb {lb!r}: choose one of {', '.join(lbmod.KINDS)}")
    if nodes > 1 and lb is None:
        raise ConfigError(f"--nodes {nodes} needs a load balancer in front of the nodes: add --lb nginx, "
                          "--lb haproxy or --lb caddy")


def spec_for(nodes: int, lb: str | None, scenarios: Sequence[Any]) -> ClusterSpec:
    """The cluster for ``nodes``/``lb`` and the chosen break scenarios (which may change the proxy or the relay).

    Raises:
        ConfigError: bad ``nodes``/``lb``, or a scenario that needs a proxy or nodes the options do not give.
    """
    check_options(nodes, lb)
    variant = "healthy"
    clustered = True
    for s in scenarios:
        wanted = getattr(s, "lb_variant", None)
        if wanted:
            if lb is None:
                raise ConfigError(f"break scenario {s.name!r} changes the load balancer: add --lb nginx, --lb haproxy "
                                  "or --lb caddy (and --nodes 2)")
            if variant != "healthy" and variant != wanted:
                raise ConfigError(f"break scenario {s.name!r} cannot be combined with another load-balancer scenario")
            variant = wanted
        if getattr(s, "clustered", True) is False:
            if nodes < 2:
                raise ConfigError(f"break scenario {s.name!r} needs two nodes: add --nodes 2 --lb nginx")
            clustered = False
    return ClusterSpec(nodes, lb, variant, clustered, f"rtbook_cluster_{secrets.token_hex(6)}")


def process_marker(name: str) -> str:
    """What the command line of the process recorded as ``name`` contains (so a reused pid is left alone)."""
    return name[3:] if name.startswith("lb-") else "rtbook.sandbox"


@dataclass
class Started:
    """What :func:`start` brought up: node 1's URLs, the public URL and every node's."""

    realtime_url: str
    public_url: str
    nodes: list[dict[str, str]]
    lb: dict[str, str]
    logs: dict[str, str]


# start_node(i) -> (server child, gateway child), both launched, not yet ready.
StartNode = Callable[[int], tuple[Any, Any]]
AwaitReady = Callable[[Any, float], tuple[int, int]]


def start(spec: ClusterSpec, start_node: StartNode, await_ready: AwaitReady, run_dir: Path, timeout: float,
          pids: dict[str, int]) -> Started:
    """Start every node (server + gateway), then the load balancer in front of the gateways.

    ``pids`` is filled as processes start, so the caller can stop them all if a later part fails.
    """
    launched: list[tuple[Any, Any]] = []
    for i in range(1, spec.nodes + 1):
        server, gateway = start_node(i)
        suffix = "" if i == 1 else f"-{i}"
        pids[f"realtime{suffix}"] = server.proc.pid
        pids[f"gateway{suffix}"] = gateway.proc.pid
        launched.append((server, gateway))
    nodes: list[dict[str, str]] = []
    logs: dict[str, str] = {}
    for i, (server, gateway) in enumerate(launched, start=1):
        _, server_port = await_ready(server, timeout)
        _, gateway_port = await_ready(gateway, timeout)
        suffix = "" if i == 1 else f"-{i}"
        nodes.append({"name": spec.node_name(i), "realtime_url": f"http://127.0.0.1:{server_port}",
                      "gateway_url": f"http://127.0.0.1:{gateway_port}"})
        logs[f"realtime{suffix}"] = str(run_dir / f"realtime-server{suffix}.log")
        logs[f"gateway{suffix}"] = str(run_dir / f"gateway{suffix}.log")
    public = nodes[0]["gateway_url"]
    lb_info: dict[str, str] = {}
    if spec.lb is not None:
        ports = [int(n["gateway_url"].rsplit(":", 1)[1]) for n in nodes]
        proxy = lbmod.start(spec.lb, free_port(), ports, run_dir / "lb", variant=spec.lb_variant, timeout=timeout)
        pids[f"lb-{spec.lb}"] = proxy.pid
        public = proxy.url
        lb_info = {"kind": spec.lb, "url": proxy.url, "config": str(proxy.config), "variant": proxy.variant,
                   "relay": spec.channel if spec.clustered and spec.nodes > 1 else ""}
        logs["lb"] = str(proxy.log)
    return Started(nodes[0]["realtime_url"], public, nodes, lb_info, logs)
