"""The one gateway interface: which hosts the stack's gateway sends Realtime traffic to, and the tenant that implies.

Realtime takes the tenant from the first label of the Host header it receives (realtime-facts §1.1).
Kong (``preserve_host`` off, its default) sends its service's upstream host, unless a
request-transformer ``replace``/``append`` of ``Host`` sets another one (Kong 2.8.1/3.9.3 PDK
``set_header('host')`` writes the upstream Host) or ``preserve_host: true`` forwards the client's;
Envoy sends the ``host_rewrite_literal`` of the route, or the client's own Host when it has none.
Every check that needs "the Host Realtime sees" (compose, docker, kong, envoy) asks
:func:`realtime_upstream`.
"""

from __future__ import annotations

from dataclasses import dataclass

from rtbook.config.envoy import load_envoy
from rtbook.config.kong import load_kong
from rtbook.config.stack import DEFAULT_TENANT, Stack
from rtbook.exceptions import InputError

__all__ = ["RealtimeUpstream", "implied_tenant", "realtime_upstream", "tenant_of"]


def tenant_of(host: str) -> str:
    """The tenant Realtime reads from a Host: its first label (``Realtime.Database.get_external_id``).

    Whatever suffix a region adds, the first label stays the tenant:
    ``realtime-dev.supabase-realtime-east`` is tenant ``realtime-dev`` (``kong.realtime_region_host``).
    """
    return host.split(".", 1)[0]


@dataclass(frozen=True)
class RealtimeUpstream:
    """Where the gateway sends Realtime traffic.

    Attributes:
        kind: ``"kong"``, ``"envoy"``, or ``""`` when the stack has no gateway.
        connect_hosts: the hosts the gateway connects to (these must resolve to the Realtime container).
        host_headers: the Host values Realtime receives (their first label is the tenant), without a
            port; a route that keeps the client's Host adds none.
        source: where the values come from, in words.
        error: why the gateway config could not be read (its ``<kind>.parse`` check has the detail).
        keeps_client_host: some Realtime route forwards the client's Host (Kong ``preserve_host``,
            Envoy without a host rewrite), so the public host name chooses the tenant there.
        host_origins: for each of ``host_headers``, where the value comes from, in words.
        routed: ``(public host, Host sent)`` of Realtime routes that match only some public hosts
            (Kong route ``hosts``, an Envoy virtual host without ``*``): the extra tenants of a
            multi-tenant stack. Their Host values are not in ``host_headers``.
    """

    kind: str
    connect_hosts: tuple[str, ...] = ()
    host_headers: tuple[str, ...] = ()
    source: str = ""
    error: str = ""
    keeps_client_host: bool = False
    host_origins: tuple[str, ...] = ()
    routed: tuple[tuple[str, str], ...] = ()

    @property
    def tenants(self) -> tuple[str, ...]:
        """The tenants the Host values of the routes for every public host imply, in order, without repeats."""
        return tuple(dict.fromkeys(tenant_of(h) for h in self.host_headers if h))

    @property
    def routed_tenants(self) -> dict[str, tuple[str, ...]]:
        """Each extra tenant of a multi-tenant stack and the public hosts that reach it."""
        out: dict[str, list[str]] = {}
        for public, host in self.routed:
            out.setdefault(tenant_of(_no_port(host)), []).append(_no_port(public))
        return {t: tuple(dict.fromkeys(hs)) for t, hs in out.items()}


def _hosts(values: object) -> tuple[str, ...]:
    return tuple(dict.fromkeys(str(v) for v in (values or ()) if str(v)))  # type: ignore[attr-defined]


def _no_port(host: str) -> str:
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def realtime_upstream(stack: Stack) -> RealtimeUpstream:
    """What the stack's gateway sends to Realtime (never raises; an unreadable config sets ``error``)."""
    kind = stack.gateway_kind() or ""
    try:
        if kind == "kong":
            kong = load_kong(stack)
            if kong is None:
                return RealtimeUpstream(kind, source="no kong.yml")
            hosts = _hosts(kong.realtime_upstream_hosts())
            # What each Realtime route sends as Host (kong.realtime_preserve_host judges it).
            seen = kong.realtime_hosts_seen()
            origins: dict[str, str] = {}
            routed: list[tuple[str, str]] = []
            by_name = {r.name: r for r in kong.routes}
            for s in seen:
                route = by_name.get(s.route)
                if s.host and route is not None and route.hosts:
                    routed += [(h, _no_port(s.host)) for h in route.hosts]
                elif s.host:
                    origins.setdefault(_no_port(s.host), s.how)
            return RealtimeUpstream(
                kind,
                hosts,
                tuple(origins),
                "kong.yml's Realtime services",
                keeps_client_host=any(s.host is None for s in seen),
                host_origins=tuple(origins.values()),
                routed=tuple(dict.fromkeys(routed)),
            )
        if kind == "envoy":
            envoy = load_envoy(stack)
            if envoy is None:
                return RealtimeUpstream(kind, source="no Envoy config")
            every = envoy.realtime_host_rewrites()
            routed_e = [(d, h) for d, h in envoy.realtime_routed_rewrites()]
            rewrites = _hosts([h for h in every if h not in {r for _, r in routed_e}])
            return RealtimeUpstream(
                kind,
                _hosts(envoy.realtime_cluster_hosts()),
                rewrites,
                "the Envoy cluster and host rewrite of the Realtime routes",
                keeps_client_host=not rewrites,
                host_origins=tuple("the route's host_rewrite_literal" for _ in rewrites),
                routed=tuple(dict.fromkeys(routed_e)),
            )
    except InputError as exc:
        return RealtimeUpstream(kind, source="gateway config unreadable", error=f"{type(exc).__name__}: {exc}")
    return RealtimeUpstream(kind, source="no gateway")


def implied_tenant(stack: Stack) -> str:
    """The tenant the stack implies: ``SELF_HOST_TENANT_NAME``, else the gateway's Host, else ``realtime-dev``."""
    rt = stack.realtime_service()
    if rt is not None and rt.environment.get("SELF_HOST_TENANT_NAME"):
        return rt.environment["SELF_HOST_TENANT_NAME"]
    for tenant in realtime_upstream(stack).tenants:
        return tenant
    return DEFAULT_TENANT
