"""``cluster.*`` checks: the clustering settings of Realtime services that run more than one node.

Names, defaults and behaviour from supabase/realtime v2.129.8 and v2.78.19 (same in both unless said):
- ``config/runtime.exs``: ``CLUSTER_STRATEGIES`` (comma-separated ``DNS``, ``POSTGRES``, ``EPMD``,
  case-insensitive, unknown words ignored; default ``POSTGRES`` in the image, which is built with
  ``MIX_ENV=prod``, since v2.46.2, ``DNS`` before). ``DNS`` is libcluster's DNSPoll with ``query: DNS_NODES`` and
  ``node_basename: APP_NAME``; ``POSTGRES`` finds nodes through the metadata database
  (``DB_HOST``/``DB_NAME``); ``EPMD`` lists only ``orange@127.0.0.1`` and ``pink@127.0.0.1`` (dev).
- ``rel/env.sh.eex``: the node is ``${NODE_NAME:-${APP_NAME:-realtime}}@<ip>``, where ip is
  ``POD_IP`` (read since v2.41.23) or Fly's / ECS Fargate's address, and otherwise ``127.0.0.1``.
- ``Dockerfile``: ``ERL_AFLAGS="-proto_dist inet6_tcp"`` unless the service overrides it.
- Release cookie: ``mix release`` without a ``cookie`` option (``mix.exs``) writes a random
  ``releases/COOKIE`` when the image is built; ``RELEASE_COOKIE`` overrides it.
- ``REGION``: from v2.80.11 (#1786, checked in v2.129.8 ``lib/realtime/gen_rpc/pub_sub.ex``) a
  broadcast goes to ``Realtime.Nodes.region_nodes(REGION)`` plus one node of each other region, and
  ``region_nodes(nil)`` is ``[]``: a node without ``REGION`` relays to no other node. v2.78.19 sends
  to every connected node unless ``REGIONAL_BROADCASTING=true``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rtbook.checks._common import result as _result
from rtbook.config.images import parse_version
from rtbook.registry import register
from rtbook.results import CheckResult, Status

if TYPE_CHECKING:
    from rtbook.config.stack import Service
    from rtbook.target import Target

REGION_ONLY_SINCE = (2, 80, 11)
# config/runtime.exs: the prod default strategy became POSTGRES in v2.46.2 (#1511); DNS before.
POSTGRES_DEFAULT_SINCE = (2, 46, 2)
# rel/env.sh.eex reads POD_IP since v2.41.23 (#1486); before, only Fly and ECS Fargate gave an address.
POD_IP_SINCE = (2, 41, 23)
IMAGE_ERL_AFLAGS = "-proto_dist inet6_tcp"
_KNOWN_STRATEGIES = ("DNS", "POSTGRES", "EPMD")
# Variables rel/env.sh.eex reads for the node's address, besides POD_IP.
_ADDRESS_SOURCES = ("POD_IP", "FLY_APP_NAME", "AWS_EXECUTION_ENV")


@dataclass(frozen=True)
class Nodes:
    """The Realtime services of the stack and why rtbook thinks they form (or should form) a cluster."""

    services: tuple[Service, ...]
    count: int
    why: str


def _replicas(svc: Service) -> int:
    deploy = svc.raw.get("deploy") if isinstance(svc.raw, dict) else None
    raw = deploy.get("replicas") if isinstance(deploy, dict) else svc.raw.get("scale")
    try:
        return max(int(raw), 1) if raw is not None else 1
    except (TypeError, ValueError):
        return 1


def _nodes(target: Target, cid: str) -> Nodes | CheckResult:
    stack = target.stack
    assert stack is not None
    services = tuple(s for s in stack.services.values() if s.image_repo().endswith("supabase/realtime"))
    if not services:
        rt = stack.realtime_service()
        services = (rt,) if rt is not None else ()
    if not services:
        return _result(cid, Status.SKIP, "Skipped: the stack has no Realtime service.")
    count = sum(_replicas(s) for s in services)
    why = f"{count} Realtime node(s) in the stack ({', '.join(f'{s.name} x{_replicas(s)}' for s in services)})"
    if count < 2:
        lb_servers = _lb_realtime_servers(target)
        if len(lb_servers) >= 2:
            return Nodes(services, len(lb_servers),
                         f"the load balancer spreads Realtime traffic over {len(lb_servers)} backends "
                         f"({', '.join(lb_servers)}); each runs a Realtime node like this stack's")
        return _result(cid, Status.SKIP, f"Skipped: one Realtime node ({services[0].name}); nothing to cluster.")
    return Nodes(services, count, why)


def _lb_realtime_servers(target: Target) -> list[str]:
    if not target.lb:
        return []
    from rtbook.checks.lb import _loaded

    out: list[str] = []
    for _, config in _loaded(target, "cluster"):
        if isinstance(config, str):
            continue
        for r in config.realtime_routes():
            out.extend(s for s in r.servers if s not in out)
    return out


def _env(svc: Service, name: str) -> str | None:
    value = svc.environment.get(name)
    return value if value not in (None, "") else None


def _names(nodes: Nodes) -> str:
    return ", ".join(s.name for s in nodes.services)


@register("cluster.strategy", "Realtime nodes can find each other (CLUSTER_STRATEGIES, DNS_NODES)",
          needs=("stack",), using=_nodes)
def check_strategy(target: Target, cid: str, nodes: Nodes) -> CheckResult:
    """A working libcluster strategy on every node: POSTGRES (the default) or DNS with a DNS_NODES name."""
    problems: list[str] = []
    fixes: list[str] = []
    seen: dict[str, str] = {}
    for svc in nodes.services:
        raw = _env(svc, "CLUSTER_STRATEGIES")
        default = "POSTGRES" if parse_version(svc.image).at_least(POSTGRES_DEFAULT_SINCE) else "DNS"
        words = [w.strip().upper() for w in (raw or default).split(",") if w.strip()]
        usable = [w for w in words if w in _KNOWN_STRATEGIES and w != "EPMD"]
        seen[svc.name] = raw or f"{default} (default of {parse_version(svc.image).describe()})"
        unknown = [w for w in words if w not in _KNOWN_STRATEGIES]
        if not usable:
            problems.append(f"{svc.name}: CLUSTER_STRATEGIES={raw!r} has no strategy that finds other nodes"
                            + (f" ({', '.join(unknown)} unknown, ignored)" if unknown else "")
                            + ("; EPMD only knows orange@127.0.0.1 and pink@127.0.0.1 (development)"
                               if "EPMD" in words else "") + ".")
            fixes.append(f"services.{svc.name}.environment.CLUSTER_STRATEGIES: POSTGRES")
        if "DNS" in words:
            dns = _env(svc, "DNS_NODES")
            if not dns or dns.strip("'\"") == "":
                problems.append(f"{svc.name}: CLUSTER_STRATEGIES {'includes DNS' if raw else 'defaults to DNS'} "
                                f"({seen[svc.name]}) but DNS_NODES is {dns!r}: DNSPoll has no name to look up (the "
                                "official compose's DNS_NODES: \"''\" is for one node).")
                fixes.append(f"services.{svc.name}.environment.DNS_NODES: a DNS name that resolves to every "
                             "Realtime node's address (e.g. tasks.<service> in Swarm, a headless Service in k8s)"
                             + ("" if raw else ", or CLUSTER_STRATEGIES: POSTGRES (nodes meet through the database)"))
            node_name = _env(svc, "NODE_NAME")
            app = _env(svc, "APP_NAME") or "realtime"
            if node_name and node_name != app:
                problems.append(f"{svc.name}: DNSPoll connects to {app}@<ip> (APP_NAME) but the node is named "
                                f"{node_name}@<ip> (NODE_NAME).")
                fixes.append(f"remove NODE_NAME from services.{svc.name}.environment or set it to {app}")
    db_targets = {(_env(s, "DB_HOST") or "127.0.0.1", _env(s, "DB_NAME") or "postgres") for s in nodes.services
                  if "POSTGRES" in seen[s.name].upper()}
    if len(db_targets) > 1:
        problems.append("POSTGRES clustering meets through the metadata database, but the nodes use different ones: "
                        + ", ".join(f"{h}/{d}" for h, d in sorted(db_targets)) + ".")
        fixes.append("point every Realtime node's DB_HOST and DB_NAME at the same database")
    evidence = {"nodes": nodes.count, "why": nodes.why, "CLUSTER_STRATEGIES": seen}
    if problems:
        return _result(cid, Status.FAIL, f"Realtime nodes ({_names(nodes)}) cannot find each other.",
                       detail="\n".join(problems) + f"\nThis applies because {nodes.why}.",
                       remedy="; ".join(dict.fromkeys(fixes)) + ".", evidence=evidence)
    return _result(cid, Status.PASS, f"Cluster strategy: {', '.join(sorted(set(seen.values())))} ({nodes.why}).",
                   evidence=evidence)


@register("cluster.node_address", "Each Realtime node is named by an address the others can reach",
          needs=("stack",), using=_nodes)
def check_node_address(target: Target, cid: str, nodes: Nodes) -> CheckResult:
    """rel/env.sh.eex names the node ``<name>@127.0.0.1`` unless POD_IP (or Fly/ECS) gives its address."""
    too_old = [s for s in nodes.services if not parse_version(s.image).at_least(POD_IP_SINCE)
               and not _env(s, "FLY_APP_NAME") and not _env(s, "AWS_EXECUTION_ENV")]
    missing = [s for s in nodes.services if not any(_env(s, v) for v in _ADDRESS_SOURCES) and s not in too_old]
    evidence = {"nodes": nodes.count, "POD_IP": {s.name: _env(s, "POD_IP") for s in nodes.services}}
    if too_old:
        names = ", ".join(f"{s.name} ({parse_version(s.image).describe()})" for s in too_old)
        return _result(
            cid, Status.FAIL, f"{names}: the node is named realtime@127.0.0.1; no other node can reach it.",
            detail="Before v2.41.23 the image's rel/env.sh.eex takes the node's address only from Fly or ECS "
            "Fargate and otherwise names it @127.0.0.1 (POD_IP is not read); env.sh exports RELEASE_NODE itself, so "
            f"no variable overrides it. This applies because {nodes.why}.",
            remedy="Upgrade Realtime to v2.41.23 or later (e.g. the tag the official compose pins) and set POD_IP "
            "on each node.", evidence=evidence)
    if missing:
        names = ", ".join(s.name for s in missing)
        return _result(
            cid, Status.FAIL, f"{names}: the Erlang node is named realtime@127.0.0.1; no other node can reach it.",
            detail="The image's rel/env.sh.eex builds RELEASE_NODE=${NODE_NAME:-${APP_NAME:-realtime}}@<ip> with ip "
            "from POD_IP (Kubernetes), Fly or ECS Fargate, else 127.0.0.1. Clustering (POSTGRES or DNS) connects to "
            f"that name, so nodes named @127.0.0.1 each reach only themselves. This applies because {nodes.why}. "
            "The nodes must also reach each other on epmd (4369), the Erlang distribution port and gen_rpc "
            "(GEN_RPC_TCP_SERVER_PORT, default 5369).",
            remedy="; ".join(_address_fix(s) for s in missing) + ".",
            evidence=evidence)
    return _result(cid, Status.PASS, "Every Realtime node takes its address from POD_IP/Fly/ECS.", evidence=evidence)


def _address_fix(svc: Service) -> str:
    if _replicas(svc) > 1:
        # Replicas share one environment, so each must find its own address when it starts (the image has
        # `hostname`; v2.78.19's env.sh.eex itself used `hostname -I`).
        return (f"services.{svc.name}.entrypoint: [\"/usr/bin/tini\", \"-s\", \"-g\", \"--\", \"sh\", \"-c\", "
                "\"POD_IP=$$(hostname -i) exec /app/run.sh /app/bin/server\"] (each replica exports its own address)")
    return (f"services.{svc.name}.environment.POD_IP: the address other nodes reach this one at (a fixed "
            "ipv4_address on the shared network, or the host's IP when each host runs one node)")


def _fingerprint(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:8]


@register("cluster.cookie", "Realtime nodes share one release cookie", needs=("stack",), using=_nodes)
def check_cookie(target: Target, cid: str, nodes: Nodes) -> CheckResult:
    """Same RELEASE_COOKIE everywhere; unset is only safe when every node runs the very same image build."""
    cookies: dict[str, str | None] = {}
    for svc in nodes.services:
        value = _env(svc, "RELEASE_COOKIE")
        if value:
            target.redactor.add(value)  # the cookie authenticates distribution: it must never reach an output
        cookies[svc.name] = value
    images = {s.name: s.image for s in nodes.services}
    # Compare digests, never the values; the evidence says only set/unset and whether they agree.
    evidence: dict[str, Any] = {"RELEASE_COOKIE": {k: ("set" if v else "unset") for k, v in cookies.items()},
                                "images": images}
    set_values = {_fingerprint(v) for v in cookies.values() if v}
    if len(set_values) > 1 or (set_values and None in cookies.values()):
        return _result(cid, Status.FAIL, "Realtime nodes have different release cookies; they refuse each other.",
                       detail="Erlang distribution only connects nodes with the same cookie (RELEASE_COOKIE, else the "
                       "image's releases/COOKIE). Nodes: " + ", ".join(f"{k} {evidence['RELEASE_COOKIE'][k]}"
                                                                       for k in cookies) + ".",
                       remedy="Set the same RELEASE_COOKIE on every Realtime node (e.g. RELEASE_COOKIE: "
                       "${REALTIME_RELEASE_COOKIE} in each service, one value in .env).", evidence=evidence)
    if not set_values:
        distinct = sorted(set(images.values()))
        other_hosts = nodes.count > sum(_replicas(s) for s in nodes.services)
        if len(distinct) > 1 or other_hosts:
            return _result(cid, Status.FAIL if len(distinct) > 1 else Status.WARN,
                           "RELEASE_COOKIE is unset: each image build carries its own random cookie.",
                           detail="mix release writes a random releases/COOKIE when the image is built (Realtime's "
                           "mix.exs sets no cookie), so nodes from different images or builds ("
                           + ", ".join(distinct) + ("; and the other hosts' images, which rtbook cannot see"
                                                    if other_hosts else "")
                           + f") do not connect. This applies because {nodes.why}.",
                           remedy="Set the same RELEASE_COOKIE on every Realtime node, on every host.",
                           evidence=evidence)
        return _result(cid, Status.PASS, "RELEASE_COOKIE is unset; the nodes share the cookie baked into "
                       f"{distinct[0]}.",
                       detail="That holds only while every node runs the same image build; set RELEASE_COOKIE to be "
                       "independent of it.", evidence=evidence)
    return _result(cid, Status.PASS, "Every Realtime node sets the same RELEASE_COOKIE.", evidence=evidence)


def _ipv6(target: Target, svc: Service) -> bool | None:
    stack = target.stack
    assert stack is not None
    nets = stack.networks()
    names = list(svc.networks) or ["default"]
    flags = []
    for n in names:
        cfg = nets.get(n) if isinstance(nets.get(n), dict) else {}
        flags.append(bool(cfg.get("enable_ipv6")) if isinstance(cfg, dict) else False)
    return any(flags)


@register("cluster.erl_aflags", "ERL_AFLAGS -proto_dist matches the network's IP version", needs=("stack",),
          using=_nodes)
def check_erl_aflags(target: Target, cid: str, nodes: Nodes) -> CheckResult:
    """The image defaults to ``-proto_dist inet6_tcp``; on an IPv4-only Docker network it must be ``inet_tcp``."""
    problems: list[str] = []
    fixes: list[str] = []
    seen: dict[str, str] = {}
    for svc in nodes.services:
        flags = _env(svc, "ERL_AFLAGS") or IMAGE_ERL_AFLAGS
        seen[svc.name] = flags if _env(svc, "ERL_AFLAGS") else f"{flags} (image default)"
        v6 = _ipv6(target, svc)
        if "inet6_tcp" in flags and not v6:
            problems.append(f"{svc.name}: ERL_AFLAGS {seen[svc.name]} makes Erlang distribution use IPv6, but its "
                            "networks do not enable IPv6 (no enable_ipv6: true).")
            fixes.append(f"services.{svc.name}.environment.ERL_AFLAGS: -proto_dist inet_tcp")
        elif "inet_tcp" in flags.replace("inet6_tcp", "") and v6 and _env(svc, "POD_IP") and ":" in (
                _env(svc, "POD_IP") or ""):
            problems.append(f"{svc.name}: ERL_AFLAGS uses IPv4 but POD_IP is an IPv6 address.")
            fixes.append(f"services.{svc.name}.environment.ERL_AFLAGS: -proto_dist inet6_tcp")
    if len({v.split(" (")[0] for v in seen.values()}) > 1:
        problems.append("The nodes use different ERL_AFLAGS: " + ", ".join(f"{k}: {v}" for k, v in seen.items()) + ".")
        fixes.append("use one ERL_AFLAGS value on every Realtime node")
    evidence = {"ERL_AFLAGS": seen, "nodes": nodes.count}
    if problems:
        return _result(cid, Status.FAIL, "Erlang distribution's IP version does not match the network.",
                       detail="\n".join(problems) + "\nNodes then never connect (supabase/realtime#811: "
                       "\"Error polling replication\" in clusters).", remedy="; ".join(dict.fromkeys(fixes)) + ".",
                       evidence=evidence)
    return _result(cid, Status.PASS, "ERL_AFLAGS matches the network: " + ", ".join(f"{k} {v}" for k, v in seen.items())
                   + ".", evidence=evidence)


@register("cluster.region", "Realtime nodes set REGION so broadcasts reach the other nodes", needs=("stack",),
          using=_nodes)
def check_region(target: Target, cid: str, nodes: Nodes) -> Iterator[CheckResult]:
    """From v2.80.11 a node without REGION relays broadcasts (and presence) to no other node."""
    problems: list[str] = []
    fixes: list[str] = []
    regions = {s.name: _env(s, "REGION") for s in nodes.services}
    for svc in nodes.services:
        version = parse_version(svc.image)
        regional = version.at_least(REGION_ONLY_SINCE) or (_env(svc, "REGIONAL_BROADCASTING") or "") == "true"
        if regional and not regions[svc.name]:
            problems.append(f"{svc.name} ({version.describe()}): REGION is unset, so the node broadcasts to "
                            "Realtime.Nodes.region_nodes(nil), which is empty: clients on other nodes never get its "
                            "broadcasts or presence, even when the nodes are clustered.")
            fixes.append(f"services.{svc.name}.environment.REGION: the same region name on every node of one region "
                         "(e.g. us-east-1)")
    evidence = {"REGION": regions, "nodes": nodes.count}
    if problems:
        yield _result(cid, Status.FAIL, "A Realtime node without REGION keeps its broadcasts to itself.",
                      detail="\n".join(problems) + "\nSource: supabase/realtime v2.129.8 lib/realtime/gen_rpc/"
                      "pub_sub.ex (flood_all) and lib/realtime/nodes.ex (region_nodes(nil) is []); since v2.80.11.",
                      remedy="; ".join(fixes) + ".", evidence=evidence)
        return
    distinct = sorted({r for r in regions.values() if r})
    yield _result(cid, Status.PASS, "REGION: " + (", ".join(distinct) if distinct else "unset (this image version "
                  "sends broadcasts to every connected node)") + (
                      " (several regions: one node per other region forwards)" if len(distinct) > 1 else "") + ".",
                  evidence=evidence)
