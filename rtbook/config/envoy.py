"""Envoy's gateway config as the official stack generates it, a typed model, and the ``envoy.*`` checks.

The Envoy container of the official stack (``volumes/api/envoy/``) runs ``docker-entrypoint.sh``:
it computes ``DASHBOARD_BASIC_AUTH`` (``user:{SHA}base64(sha1(password))``) and
``WELL_KNOWN_OAUTH_PATH`` (from ``JWT_ISSUER``), then runs ``sed -e "s|\\${NAME}|${NAME}|g" ...``
over ``lds.template.yaml`` (and, in some forks, ``cds.template.yaml``) for a fixed list of names.
Only those names are substituted; any other ``${...}`` reaches Envoy as written.

Envoy separates two things Kong merges: the cluster address decides *which container* gets the
request, while ``host_rewrite_literal`` decides the Host header, hence the Realtime tenant.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rtbook.bounded import read_text
from rtbook.config.kong import display_path
from rtbook.config.reader import (
    ConfigReader,
    volume_mounts,
)
from rtbook.config.yamlfile import load_yaml
from rtbook.exceptions import InputError

if TYPE_CHECKING:
    from rtbook.config.stack import Service, Stack

__all__ = [
    "EnvoyCluster",
    "EnvoyConfig",
    "EnvoyFilter",
    "EnvoyListener",
    "EnvoyLoaded",
    "EnvoyRoute",
    "load_envoy",
    "load_envoy_detailed",
    "parse_envoy",
    "sed_substitutions",
    "substitute",
]


# What the official docker-entrypoint.sh substitutes, when the script itself is not available.
DEFAULT_SUBSTITUTIONS: Mapping[str, tuple[str, ...]] = {
    "lds": (
        "ANON_KEY",
        "ANON_KEY_ASYMMETRIC",
        "SERVICE_ROLE_KEY",
        "SERVICE_ROLE_KEY_ASYMMETRIC",
        "SUPABASE_PUBLISHABLE_KEY",
        "SUPABASE_SECRET_KEY",
        "SUPABASE_PUBLIC_URL",
        "DASHBOARD_BASIC_AUTH",
        "WELL_KNOWN_OAUTH_PATH",
    ),
    "cds": (),
}
# Substituted names that may legitimately be empty (opaque keys are optional).
OPTIONAL_EMPTY = frozenset(
    {"SUPABASE_PUBLISHABLE_KEY", "SUPABASE_SECRET_KEY", "ANON_KEY_ASYMMETRIC", "SERVICE_ROLE_KEY_ASYMMETRIC"}
)


# ====================================================================== substitution


def sed_substitutions(script: str) -> dict[str, tuple[str, ...]]:
    """Map each template file name the entrypoint's ``sed`` reads to the ``${NAME}`` it substitutes."""
    joined = re.sub(r"\\\n", " ", script)
    out: dict[str, tuple[str, ...]] = {}
    for line in joined.splitlines():
        if not re.match(r"\s*sed\b", line) or "-i" in line.split():
            continue
        names = re.findall(r"s\|\\\$\{([A-Za-z_][A-Za-z_0-9]*)\}\|", line)
        before_redirect = line.split(">", 1)[0]
        files = re.findall(r"(\S+\.ya?ml)\b", before_redirect)
        if names and files:
            out[Path(files[-1]).name] = tuple(dict.fromkeys(names))
    return out


def _sed_replacement(value: str, matched: str) -> str:
    # In a sed replacement, & is the matched text and a backslash escapes the next character.
    out: list[str] = []
    i = 0
    while i < len(value):
        c = value[i]
        if c == "\\" and i + 1 < len(value):
            nxt = value[i + 1]
            out.append("\n" if nxt == "n" else nxt)
            i += 2
            continue
        out.append(matched if c == "&" else c)
        i += 1
    return "".join(out)


def substitute(text: str, names: Sequence[str], env: Mapping[str, str]) -> str:
    """Apply ``sed -e "s|\\${NAME}|${NAME}|g"`` for each of ``names`` in order (unset names become empty)."""
    for name in names:
        token = "${" + name + "}"
        value = env.get(name, "")
        if "|" in value:
            raise InputError(
                f"the value of {name} contains '|', which breaks the entrypoint's sed command s|${{{name}}}|...|g; "
                f"remove the '|' from {name}"
            )
        text = text.replace(token, _sed_replacement(value, token))
    return text


def computed_env(env: Mapping[str, str]) -> dict[str, str]:
    """The variables docker-entrypoint.sh computes before running sed."""
    password = env.get("DASHBOARD_PASSWORD", "")
    digest = base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()
    path = "/.well-known/oauth-authorization-server"
    issuer = env.get("JWT_ISSUER", "").rstrip("/")
    if issuer.startswith(("http://", "https://")):
        rest = issuer.split("://", 1)[1]
        if "/" in rest:
            path += "/" + rest.split("/", 1)[1]
    return {
        "DASHBOARD_BASIC_AUTH": f"{env.get('DASHBOARD_USERNAME', '')}:{{SHA}}{digest}",
        "WELL_KNOWN_OAUTH_PATH": path,
    }


# ====================================================================== model


@dataclass(frozen=True)
class EnvoyRoute:
    """One route of a virtual host, with what it matches and where it sends the request."""

    name: str
    virtual_host: str
    prefix: str | None = None
    path: str | None = None
    regex: str | None = None
    cluster: str | None = None
    prefix_rewrite: str | None = None
    regex_rewrite: tuple[str, str] | None = None
    host_rewrite_literal: str | None = None
    auto_host_rewrite: bool = False
    upgrades: Mapping[str, bool] = field(default_factory=dict)
    direct_status: int | None = None
    rbac_deny: bool = False
    disabled_filters: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()  # of its virtual host

    def matches(self, request_path: str) -> bool:
        """Whether Envoy's matcher for this route accepts ``request_path`` (query string excluded)."""
        if self.prefix is not None:
            return request_path.startswith(self.prefix)
        if self.path is not None:
            return request_path == self.path
        if self.regex is not None:
            try:
                return re.fullmatch(self.regex, request_path) is not None
            except re.error:
                return False
        return False

    def rewritten(self, request_path: str) -> str:
        """The path sent upstream after ``prefix_rewrite`` / ``regex_rewrite``."""
        if self.prefix_rewrite is not None and self.prefix is not None and request_path.startswith(self.prefix):
            return self.prefix_rewrite + request_path[len(self.prefix) :]
        if self.prefix_rewrite is not None and self.path is not None and request_path == self.path:
            return self.prefix_rewrite
        if self.regex_rewrite is not None:
            pattern, sub = self.regex_rewrite
            try:
                return re.sub(pattern, re.sub(r"\\(\d)", r"\\g<\1>", sub), request_path)
            except re.error:
                return request_path
        return request_path

    @property
    def blocked(self) -> bool:
        """True when the route answers by itself (RBAC deny or a 4xx/5xx direct response)."""
        return self.rbac_deny or (self.direct_status is not None and self.direct_status >= 400)


@dataclass(frozen=True)
class EnvoyFilter:
    """An HTTP filter of the connection manager (Lua code and RBAC rules kept for the checks)."""

    name: str
    # Both hold the substituted API keys: keep them out of reprs.
    inline_code: str | None = field(default=None, repr=False)
    rbac: Mapping[str, Any] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class EnvoyListener:
    """A listener with its HTTP connection manager's routes, filters and upgrade settings."""

    name: str
    address: str
    port: int | None
    routes: tuple[EnvoyRoute, ...] = ()
    filters: tuple[EnvoyFilter, ...] = ()
    upgrades: Mapping[str, bool] = field(default_factory=dict)
    uses_rds: bool = False

    def websocket_allowed(self, route: EnvoyRoute) -> bool:
        """Whether a WebSocket upgrade on ``route`` is proxied (route setting overrides the listener's)."""
        if "websocket" in route.upgrades:
            return route.upgrades["websocket"]
        return self.upgrades.get("websocket", False)


@dataclass(frozen=True)
class EnvoyCluster:
    """An upstream cluster and its endpoint addresses."""

    name: str
    endpoints: tuple[tuple[str, int | None], ...] = ()


@dataclass(frozen=True)
class EnvoyConfig:
    """Listeners and clusters as Envoy loads them."""

    sources: tuple[str, ...]
    listeners: tuple[EnvoyListener, ...] = ()
    clusters: tuple[EnvoyCluster, ...] = ()

    def cluster(self, name: str | None) -> EnvoyCluster | None:
        """The cluster called ``name``."""
        return next((c for c in self.clusters if c.name == name), None)

    def route_for(self, path: str, host: str | None = None) -> tuple[EnvoyListener, EnvoyRoute] | None:
        """The first route (Envoy matches in order, not by length) that accepts ``path``.

        With ``host``, only the virtual host Envoy picks for it is searched: the most specific
        ``domains`` entry wins (exact, then ``*.suffix``, then ``prefix*``, then ``*``).
        """
        for listener in self.listeners:
            best = -1 if host is None else max((_domain_rank(d, host) for r in listener.routes for d in r.domains),
                                               default=-1)
            for route in listener.routes:
                if host is not None and route.domains and max(
                        (_domain_rank(d, host) for d in route.domains), default=-1) != best:
                    continue
                if route.matches(path):
                    return listener, route
        return None

    def realtime_routes(self) -> list[EnvoyRoute]:
        """Routes under ``/realtime/v1`` that forward (blocked routes excluded)."""
        out = []
        for listener in self.listeners:
            for route in listener.routes:
                text = route.prefix or route.path or route.regex or ""
                if "/realtime/v1" in text and not route.blocked and route.cluster:
                    out.append(route)
        return out

    def realtime_cluster_hosts(self) -> list[str]:
        """Endpoint host names of the clusters the Realtime routes use."""
        hosts: list[str] = []
        for route in self.realtime_routes():
            cluster = self.cluster(route.cluster)
            for host, _ in cluster.endpoints if cluster else ():
                if host not in hosts:
                    hosts.append(host)
        return hosts

    def realtime_routed_rewrites(self) -> list[tuple[str, str]]:
        """``(domain, Host sent)`` of Realtime routes in virtual hosts that serve only named domains (no ``*``)."""
        out: list[tuple[str, str]] = []
        for route in self.realtime_routes():
            if route.domains and "*" not in route.domains:
                out += [(d, h) for d in route.domains for h in _upstream_hosts(self, route)]
        return list(dict.fromkeys(out))

    def realtime_host_rewrites(self) -> list[str]:
        """The Host values the Realtime routes send upstream (``host_rewrite_literal`` or auto rewrite)."""
        out: list[str] = []
        for route in self.realtime_routes():
            for host in _upstream_hosts(self, route):
                if host not in out:
                    out.append(host)
        return out


def _domain_rank(domain: str, host: str) -> int:
    """How specifically a virtual host's ``domains`` entry matches ``host`` (-1: not at all)."""
    d, h = domain.lower(), host.lower()
    if d == "*":
        return 0
    if d == h:
        return 3 + len(d)
    if d.startswith("*") and h.endswith(d[1:]) and len(h) > len(d) - 1:
        return 2
    if d.endswith("*") and h.startswith(d[:-1]) and len(h) > len(d) - 1:
        return 1
    return -1


def _upstream_hosts(config: EnvoyConfig, route: EnvoyRoute) -> list[str]:
    if route.host_rewrite_literal:
        return [route.host_rewrite_literal]
    if route.auto_host_rewrite:
        cluster = config.cluster(route.cluster)
        return [h for h, _ in cluster.endpoints] if cluster else []
    return []


# ---------------------------------------------------------------------- parsing


class _P(ConfigReader):
    def port(self, value: Any, where: str) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not str(value).isdigit():
            raise self.err(where, f"expected a port number, got {value!r}")
        return int(value)


def _upgrades(p: _P, raw: Any, where: str) -> dict[str, bool]:
    out: dict[str, bool] = {}
    for n, item in enumerate(p.seq(raw, where)):
        data = p.mapping(item, f"{where}[{n}]")
        kind = (p.text(data.get("upgrade_type"), f"{where}[{n}].upgrade_type") or "").lower()
        enabled = data.get("enabled", True)
        out[kind] = enabled is not False
    return out


def _route(p: _P, raw: Any, where: str, vhost: str) -> EnvoyRoute:
    data = p.mapping(raw, where)
    match = p.mapping(data.get("match"), f"{where}.match")
    action = p.mapping(data.get("route"), f"{where}.route")
    regex = None
    if match.get("safe_regex") is not None:
        regex = p.text(
            p.mapping(match.get("safe_regex"), f"{where}.match.safe_regex").get("regex"), f"{where}.match.safe_regex"
        )
    prefix = p.text(match.get("prefix"), f"{where}.match.prefix")
    if prefix is None and match.get("path_separated_prefix") is not None:
        prefix = p.text(match.get("path_separated_prefix"), f"{where}.match.path_separated_prefix")
    regex_rewrite = None
    if action.get("regex_rewrite") is not None:
        rr = p.mapping(action.get("regex_rewrite"), f"{where}.route.regex_rewrite")
        pattern = p.mapping(rr.get("pattern"), f"{where}.route.regex_rewrite.pattern").get("regex")
        regex_rewrite = (str(pattern or ""), str(rr.get("substitution") or ""))
    per_filter = p.mapping(data.get("typed_per_filter_config"), f"{where}.typed_per_filter_config")
    disabled: list[str] = []
    rbac_deny = False
    for fname, cfg in per_filter.items():
        cfg_map = cfg if isinstance(cfg, Mapping) else {}
        if cfg_map.get("disabled") is True:
            disabled.append(str(fname))
        rules = cfg_map.get("rbac", {}).get("rules", {}) if isinstance(cfg_map.get("rbac"), Mapping) else {}
        if isinstance(rules, Mapping) and str(rules.get("action", "ALLOW")).upper() == "DENY" and rules.get("policies"):
            rbac_deny = True
    direct = data.get("direct_response")
    direct_status = None
    if isinstance(direct, Mapping) and direct.get("status") is not None:
        direct_status = p.port(direct.get("status"), f"{where}.direct_response.status")
    return EnvoyRoute(
        name=p.text(data.get("name"), f"{where}.name") or where,
        virtual_host=vhost,
        prefix=prefix,
        path=p.text(match.get("path"), f"{where}.match.path"),
        regex=regex,
        cluster=p.text(action.get("cluster"), f"{where}.route.cluster"),
        prefix_rewrite=p.text(action.get("prefix_rewrite"), f"{where}.route.prefix_rewrite"),
        regex_rewrite=regex_rewrite,
        host_rewrite_literal=p.text(action.get("host_rewrite_literal"), f"{where}.route.host_rewrite_literal"),
        auto_host_rewrite=action.get("auto_host_rewrite") is True,
        upgrades=_upgrades(p, action.get("upgrade_configs"), f"{where}.route.upgrade_configs"),
        direct_status=direct_status,
        rbac_deny=rbac_deny,
        disabled_filters=tuple(disabled),
    )


def _listener(p: _P, raw: Any, where: str) -> EnvoyListener:
    data = p.mapping(raw, where)
    sock = p.mapping(
        p.mapping(data.get("address"), f"{where}.address").get("socket_address"), f"{where}.address.socket_address"
    )
    routes: list[EnvoyRoute] = []
    filters: list[EnvoyFilter] = []
    upgrades: dict[str, bool] = {}
    rds = False
    for c, chain in enumerate(p.seq(data.get("filter_chains"), f"{where}.filter_chains")):
        cw = f"{where}.filter_chains[{c}]"
        for f, flt in enumerate(p.seq(p.mapping(chain, cw).get("filters"), f"{cw}.filters")):
            fw = f"{cw}.filters[{f}]"
            fdata = p.mapping(flt, fw)
            typed = p.mapping(fdata.get("typed_config"), f"{fw}.typed_config")
            if "http_connection_manager" not in str(fdata.get("name", "")) and not str(typed.get("@type", "")).endswith(
                "HttpConnectionManager"
            ):
                continue
            upgrades.update(_upgrades(p, typed.get("upgrade_configs"), f"{fw}.typed_config.upgrade_configs"))
            if typed.get("rds") is not None:
                rds = True
            rc = p.mapping(typed.get("route_config"), f"{fw}.typed_config.route_config")
            for v, vh in enumerate(p.seq(rc.get("virtual_hosts"), f"{fw}.route_config.virtual_hosts")):
                vw = f"{fw}.route_config.virtual_hosts[{v}]"
                vdata = p.mapping(vh, vw)
                vname = p.text(vdata.get("name"), f"{vw}.name") or vw
                domains = tuple(str(d) for d in p.seq(vdata.get("domains"), f"{vw}.domains"))
                for r, route in enumerate(p.seq(vdata.get("routes"), f"{vw}.routes")):
                    routes.append(dataclasses.replace(_route(p, route, f"{vw}.routes[{r}]", vname), domains=domains))
            for h, hf in enumerate(p.seq(typed.get("http_filters"), f"{fw}.typed_config.http_filters")):
                hw = f"{fw}.http_filters[{h}]"
                hdata = p.mapping(hf, hw)
                htyped = p.mapping(hdata.get("typed_config"), f"{hw}.typed_config")
                code = htyped.get("inline_code")
                if code is None and isinstance(htyped.get("default_source_code"), Mapping):
                    code = htyped["default_source_code"].get("inline_string")
                rbac = htyped.get("rules") if isinstance(htyped.get("rules"), Mapping) else None
                filters.append(
                    EnvoyFilter(
                        name=p.text(hdata.get("name"), f"{hw}.name") or "", inline_code=p.text(code, hw), rbac=rbac
                    )
                )
    return EnvoyListener(
        name=p.text(data.get("name"), f"{where}.name") or where,
        address=p.text(sock.get("address"), f"{where}.address") or "",
        port=p.port(sock.get("port_value"), f"{where}.address.port_value"),
        routes=tuple(routes),
        filters=tuple(filters),
        upgrades=upgrades,
        uses_rds=rds,
    )


def _cluster(p: _P, raw: Any, where: str) -> EnvoyCluster:
    data = p.mapping(raw, where)
    endpoints: list[tuple[str, int | None]] = []
    la = p.mapping(data.get("load_assignment"), f"{where}.load_assignment")
    for e, group in enumerate(p.seq(la.get("endpoints"), f"{where}.load_assignment.endpoints")):
        gw = f"{where}.load_assignment.endpoints[{e}]"
        for n, lb in enumerate(p.seq(p.mapping(group, gw).get("lb_endpoints"), f"{gw}.lb_endpoints")):
            lw = f"{gw}.lb_endpoints[{n}]"
            endpoint = p.mapping(p.mapping(lb, lw).get("endpoint"), f"{lw}.endpoint")
            address = p.mapping(endpoint.get("address"), f"{lw}.address")
            sock = p.mapping(address.get("socket_address"), f"{lw}.socket_address")
            host = p.text(sock.get("address"), f"{lw}.socket_address.address")
            if host is not None:
                endpoints.append((host, p.port(sock.get("port_value"), f"{lw}.socket_address.port_value")))
    return EnvoyCluster(name=p.text(data.get("name"), f"{where}.name") or where, endpoints=tuple(endpoints))


def _resources(p: _P, data: Any, kind: str) -> Iterator[Any]:
    """Listener or Cluster resources from an xDS file (``resources:``) or a bootstrap's static_resources."""
    if data is None:
        return
    top = p.mapping(data, "top level")
    for n, res in enumerate(p.seq(top.get("resources"), "resources")):
        rtype = str(p.mapping(res, f"resources[{n}]").get("@type", ""))
        if rtype.endswith(kind) or not rtype:
            yield res
    static = p.mapping(top.get("static_resources"), "static_resources")
    yield from p.seq(static.get("listeners" if kind == "Listener" else "clusters"), f"static_resources.{kind.lower()}s")


def parse_envoy(
    lds: str | None, cds: str | None, bootstrap: str | None = None, *, sources: Sequence[str] = ()
) -> EnvoyConfig:
    """Parse generated LDS/CDS files (and static resources in the bootstrap) into an :class:`EnvoyConfig`.

    Raises:
        InputError: a file is not YAML or not shaped like Envoy's v3 config; names the file and key.
    """
    names = list(sources) + ["lds", "cds", "envoy.yaml"][len(sources) :]
    listeners: list[EnvoyListener] = []
    clusters: list[EnvoyCluster] = []
    for text, source in ((lds, names[0]), (cds, names[1]), (bootstrap, names[2])):
        if text is None:
            continue
        if not isinstance(text, str):
            raise InputError(f"{source}: expected text, got {type(text).__name__}")
        p = _P(source)
        data = load_yaml(text, source)
        if data is not None and not isinstance(data, Mapping):
            raise InputError(f"{source}: the top level is a {type(data).__name__}; Envoy needs a mapping")
        for n, raw in enumerate(_resources(p, data, "Listener")):
            listeners.append(_listener(p, raw, f"listener[{n}]"))
        for n, raw in enumerate(_resources(p, data, "Cluster")):
            clusters.append(_cluster(p, raw, f"cluster[{n}]"))
    return EnvoyConfig(sources=tuple(s for s in names[:3]), listeners=tuple(listeners), clusters=tuple(clusters))


# ====================================================================== stack loading


@dataclass(frozen=True)
class EnvoyLoaded:
    """The files found, what was substituted, and the parsed config (or the error)."""

    service_name: str
    files: Mapping[str, str]
    substituted: Mapping[str, tuple[str, ...]]
    env: Mapping[str, str] = field(repr=False)
    compose_env: Mapping[str, str] = field(repr=False)
    leftovers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    config: EnvoyConfig | None = None
    error: str | None = None


def _find_files(stack: Stack, service: Service) -> dict[str, Path]:
    """Host paths of the bootstrap, the LDS/CDS templates or files, and the entrypoint script."""
    candidates: dict[str, Path] = {}
    given = stack.envoy_files() or {}
    for key, path in {**{str(k): Path(v) for k, v in given.items()}, **volume_mounts(stack, service)}.items():
        name = Path(key).name.lower() + " " + Path(path).name.lower()
        if "entrypoint" in name:
            candidates.setdefault("entrypoint", Path(path))
        elif "lds" in name:
            candidates.setdefault("lds", Path(path))
        elif "cds" in name:
            candidates.setdefault("cds", Path(path))
        elif "envoy.y" in name:
            candidates.setdefault("bootstrap", Path(path))
    # A folder-per-service layout (pgonrails: envoy/*.template.yaml baked in by a Dockerfile).
    folder = next((p.parent for k, p in candidates.items() if k != "entrypoint"), None)
    if folder is not None:
        for kind, names in (
            ("entrypoint", ("docker-entrypoint.sh",)),
            ("lds", ("lds.template.yaml", "lds.yaml")),
            ("cds", ("cds.template.yaml", "cds.yaml")),
            ("bootstrap", ("envoy.yaml",)),
        ):
            for n in names:
                if kind not in candidates and (folder / n).is_file():
                    candidates[kind] = folder / n
    return candidates


def _read(path: Path) -> str:
    if not os.path.lexists(path):
        raise InputError(f"{path}: file not found (mounted into the Envoy gateway); create it or fix the volume")
    return read_text(path, "Envoy file")  # bounded: regular file, 1 MiB, never blocks


_LEFTOVER = re.compile(r"\$\{([A-Za-z_][A-Za-z_0-9]*)\}")


def load_envoy_detailed(stack: Stack) -> EnvoyLoaded | None:
    """Find, substitute and parse the stack's Envoy files; None when the stack does not run Envoy.

    Done once per Stack (:meth:`Stack.memo`).

    Raises:
        InputError: a required file is missing or unreadable.
    """
    return stack.memo("envoy.loaded", lambda: _load_envoy_detailed(stack))


def _load_envoy_detailed(stack: Stack) -> EnvoyLoaded | None:
    if stack.gateway_kind() != "envoy":
        return None
    service = stack.gateway_service()
    if service is None:
        return None
    files = _find_files(stack, service)
    shown = {k: display_path(stack, v) for k, v in files.items()}
    if "lds" not in files:
        raise InputError(
            f"the stack runs Envoy (service {service.name!r}) but no lds(.template).yaml was found: mount "
            "./volumes/api/envoy/lds.template.yaml at /etc/envoy/lds.template.yaml"
        )
    compose_env = {str(k): "" if v is None else str(v) for k, v in dict(service.environment).items()}
    env = {**compose_env, **computed_env(compose_env)}
    script = _read(files["entrypoint"]) if "entrypoint" in files and os.path.lexists(files["entrypoint"]) else None
    plan = sed_substitutions(script) if script else {}
    substituted: dict[str, tuple[str, ...]] = {}
    texts: dict[str, str] = {}
    leftovers: dict[str, tuple[str, ...]] = {}
    for kind in ("lds", "cds", "bootstrap"):
        if kind not in files:
            continue
        path = files[kind]
        raw = _read(path)
        names = plan.get(path.name)
        if names is None and not plan and kind in DEFAULT_SUBSTITUTIONS and "template" in path.name:
            names = DEFAULT_SUBSTITUTIONS[kind]
        names = names or ()
        substituted[display_path(stack, path)] = names
        base = dict(service_name=service.name, files=shown, env=env, compose_env=compose_env)
        try:
            texts[kind] = substitute(raw, names, env)
        except InputError as exc:
            return EnvoyLoaded(**base, substituted=substituted, error=f"{display_path(stack, path)}: {exc}")  # type: ignore[arg-type]
        left = tuple(dict.fromkeys(_LEFTOVER.findall(_strip_comments(texts[kind]))))
        if left:
            leftovers[display_path(stack, path)] = left
    base_args: dict[str, Any] = dict(
        service_name=service.name,
        files=shown,
        substituted=substituted,
        env=env,
        compose_env=compose_env,
        leftovers=leftovers,
    )
    try:
        config = parse_envoy(
            texts.get("lds"),
            texts.get("cds"),
            texts.get("bootstrap"),
            sources=[shown.get(k, k) for k in ("lds", "cds", "bootstrap")],
        )
    except InputError as exc:
        return EnvoyLoaded(**base_args, error=str(exc))
    return EnvoyLoaded(**base_args, config=config)


def _strip_comments(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def load_envoy(stack: Stack) -> EnvoyConfig | None:
    """The stack's Envoy config as Envoy would load it; None when the stack has no Envoy.

    Raises:
        InputError: a file is missing or does not parse.
    """
    loaded = load_envoy_detailed(stack)
    if loaded is None:
        return None
    if loaded.config is None:
        raise InputError(loaded.error or "the Envoy config cannot be loaded")
    return loaded.config
