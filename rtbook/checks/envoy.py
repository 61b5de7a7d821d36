"""``envoy.*`` checks: the Envoy gateway config judged as Envoy reads it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rtbook.checks._common import result as _result
from rtbook.checks._gateway import GatewayKind, public_url, realtime_port
from rtbook.config.envoy import OPTIONAL_EMPTY, EnvoyConfig, EnvoyLoaded, _upstream_hosts, load_envoy_detailed
from rtbook.config.gateway import tenant_of
from rtbook.config.kong import realtime_names
from rtbook.config.reader import (
    REALTIME_REST_PATH,
    REALTIME_TENANTS_PATH,
    REALTIME_WS_PATH,
)
from rtbook.registry import register
from rtbook.results import CheckResult, Status

if TYPE_CHECKING:
    from rtbook.target import Target



# ====================================================================== checks


_ENVOY = GatewayKind(
    kind="envoy",
    title="Envoy",
    other=("kong", "Kong", "kong"),
    files="the Envoy files",
    config="the Envoy config",
    unreadable="The Envoy config files could not be read.",
    unreadable_remedy="Mount envoy.yaml, cds.yaml, lds.template.yaml and docker-entrypoint.sh from "
    "volumes/api/envoy/ into the api-gw service as the official docker-compose.yml does.",
    load=load_envoy_detailed,
)


def _cfg(ctx: EnvoyLoaded) -> EnvoyConfig:
    assert ctx.config is not None
    return ctx.config


def _lds_name(ctx: EnvoyLoaded) -> str:
    return ctx.files.get("lds", "lds.template.yaml")


@register("envoy.parse", "The Envoy gateway config substitutes and parses", needs=("stack",),
          using=_ENVOY.provider(need_config=False))
def check_parse(target: Target, cid: str, ctx: EnvoyLoaded) -> CheckResult:
    """The LDS/CDS files parse after the entrypoint's substitution and define listeners and clusters."""
    evidence: dict[str, Any] = {
        "files": dict(ctx.files),
        "substituted": {k: list(v) for k, v in ctx.substituted.items()},
    }
    if ctx.config is None:
        return _result(
            cid,
            Status.FAIL,
            "The Envoy config does not parse; Envoy will not start.",
            detail=ctx.error or "",
            remedy="Fix the file at the line named above.",
            evidence=evidence,
        )
    config = ctx.config
    evidence |= {"listeners": len(config.listeners), "routes": sum(len(x.routes) for x in config.listeners)}
    evidence["clusters"] = [c.name for c in config.clusters]
    rds = [x.name for x in config.listeners if x.uses_rds]
    if rds:
        return _result(
            cid,
            Status.WARN,
            f"Listener(s) {', '.join(rds)} take routes from RDS, which rtbook does not read.",
            detail="The route checks only see inline route_config; with RDS they cannot tell where /realtime/v1/ goes.",
            remedy="Inline the route_config in the listener (as the official lds.template.yaml does) "
            "to have it checked.",
            evidence=evidence,
        )
    if not config.listeners or not config.clusters:
        missing = "listeners" if not config.listeners else "clusters"
        return _result(
            cid,
            Status.FAIL,
            f"The Envoy config defines no {missing}.",
            detail=f"Files read: {', '.join(ctx.files.values())}.",
            remedy="Mount the official volumes/api/envoy/"
            + ("lds.template.yaml" if missing == "listeners" else "cds.yaml")
            + " "
            f"into service {ctx.service_name!r}.",
            evidence=evidence,
        )
    return _result(
        cid,
        Status.PASS,
        f"Envoy config parses ({len(config.listeners)} listener(s), {evidence['routes']} routes, "
        f"{len(config.clusters)} clusters).",
        evidence=evidence,
    )


@register("envoy.placeholders", "Every ${VAR} in the Envoy templates is substituted with a value", needs=("stack",),
          using=_ENVOY.provider(need_config=False))
def check_placeholders(target: Target, cid: str, ctx: EnvoyLoaded) -> CheckResult:
    """No ``${VAR}`` is left unsubstituted, and required substituted values are not empty."""
    problems: list[str] = []
    fixes: list[str] = []
    for path, names in ctx.leftovers.items():
        problems.append(
            f"{path}: {', '.join('${' + n + '}' for n in names)} reach Envoy as literal text: the entrypoint's sed "
            "does not substitute them."
        )
        fixes.append(
            f'add `-e "s|\\${{{names[0]}}}|${{{names[0]}}}|g"` (one per name) to the sed command in '
            f"{ctx.files.get('entrypoint', 'docker-entrypoint.sh')}, or write the value into {Path(path).name}"
        )
    empty = sorted(
        {n for names in ctx.substituted.values() for n in names if not ctx.env.get(n) and n not in OPTIONAL_EMPTY}
    )
    for name in empty:
        problems.append(
            f"${{{name}}} is substituted with an empty value: {name} is not set in service "
            f"{ctx.service_name!r}'s environment."
        )
        fixes.append(f"add `{name}: ${{{name}}}` to services.{ctx.service_name}.environment and set {name} in .env")
    evidence = {"leftovers": {k: list(v) for k, v in ctx.leftovers.items()}, "empty": empty}
    if problems:
        return _result(
            cid,
            Status.FAIL,
            f"{len(problems)} Envoy template placeholder problem(s).",
            detail="\n".join(problems),
            remedy="; ".join(fixes) + ".",
            evidence=evidence,
        )
    count = sum(len(v) for v in ctx.substituted.values())
    return _result(
        cid, Status.PASS, f"All {count} substituted placeholders have values.", evidence=evidence
    )


def _route_problems(
    ctx: EnvoyLoaded, target: Target, request: str, expected_path: str, label: str
) -> tuple[list[str], list[str], dict[str, Any]]:
    config = _cfg(ctx)
    port = realtime_port(target)
    lds = _lds_name(ctx)
    matched = config.route_for(request, public_url(target)[1])
    if matched is None:
        return [f"No Envoy route matches {request}."], [f"add the official {label} route to {lds}"], {}
    listener, route = matched
    problems: list[str] = []
    fixes: list[str] = []
    upstream = route.rewritten(request)
    cluster = config.cluster(route.cluster)
    evidence: dict[str, Any] = {
        "route": route.name,
        "cluster": route.cluster,
        "endpoints": [f"{h}:{p}" for h, p in cluster.endpoints] if cluster else [],
        "upstream_path": upstream,
        "prefix_rewrite": route.prefix_rewrite,
    }
    where = f"{lds}: route {route.name!r}"
    if route.blocked:
        problems.append(f"{where} matches {request} first and blocks it (RBAC deny or direct_response).")
        fixes.append(f"move route {route.name!r} after the {label} route or narrow its prefix")
        return problems, fixes, evidence
    if route.cluster is None:
        problems.append(f"{where} has no cluster.")
        fixes.append(f"set `route: {{cluster: realtime}}` on {route.name!r}")
        return problems, fixes, evidence
    if cluster is None:
        problems.append(f"{where} sends to cluster {route.cluster!r}, which no CDS file defines.")
        fixes.append(f"define cluster {route.cluster!r} in cds.yaml with address realtime-dev.supabase-realtime:{port}")
    else:
        bad_ports = [p for _, p in cluster.endpoints if p != port]
        if not cluster.endpoints:
            problems.append(f"cluster {cluster.name!r} has no endpoints.")
            fixes.append(f"give cluster {cluster.name!r} the endpoint realtime-dev.supabase-realtime:{port}")
        elif bad_ports:
            problems.append(
                f"cluster {cluster.name!r} dials port {bad_ports[0]}, Realtime listens on {port} (its PORT)."
            )
            fixes.append(f"set port_value: {port} in cluster {cluster.name!r}")
        names = realtime_names(target.stack)
        unknown = [h for h, _ in cluster.endpoints if names and h not in names]
        if unknown:
            problems.append(
                f"cluster {cluster.name!r} dials {unknown[0]!r}, which is not a name of the Realtime container "
                f"({', '.join(sorted(names))}), so Envoy cannot reach it."
            )
            fixes.append(
                f"give the realtime service `container_name: {unknown[0]}` (or that network alias), or set the "
                f"cluster address to one of {', '.join(sorted(names))}"
            )
    if upstream != expected_path:
        problems.append(
            f"{where}: {request} arrives at Realtime as {upstream} (prefix {route.prefix!r}, "
            f"prefix_rewrite {route.prefix_rewrite!r}), not {expected_path}."
        )
        want = "/socket/" if label == "WebSocket" else "/api"
        fixes.append(f"set `prefix_rewrite: {want}` on route {route.name!r}")
    evidence["websocket_upgrade"] = listener.websocket_allowed(route)
    return problems, fixes, evidence


@register(
    "envoy.realtime_ws", "Envoy routes /realtime/v1/ to Realtime's /socket/ with WebSocket upgrades", needs=("stack",),
    using=_ENVOY.provider(),
)
def check_realtime_ws(target: Target, cid: str, ctx: EnvoyLoaded) -> CheckResult:
    """``/realtime/v1/websocket`` reaches the Realtime cluster as ``/socket/websocket`` with upgrades enabled."""
    problems, fixes, evidence = _route_problems(ctx, target, REALTIME_WS_PATH, "/socket/websocket", "WebSocket")
    config = _cfg(ctx)
    matched = config.route_for(REALTIME_WS_PATH, public_url(target)[1])
    if matched is not None and not matched[1].blocked:
        listener, route = matched
        if not listener.websocket_allowed(route):
            where = "route-level upgrade_configs disable it" if "websocket" in route.upgrades else "no upgrade_configs"
            problems.append(
                f"{_lds_name(ctx)}: listener {listener.name!r} does not proxy WebSocket upgrades for route "
                f"{route.name!r} ({where}); the handshake gets 403/404 from Envoy."
            )
            fixes.append(
                "add `upgrade_configs: [{upgrade_type: websocket}]` to the http_connection_manager's typed_config "
                f"(or enable it on route {route.name!r})"
            )
    if problems:
        return _result(
            cid,
            Status.FAIL,
            "Envoy's Realtime WebSocket route is wrong: " + problems[0],
            detail="\n".join(problems),
            remedy=f"In {_lds_name(ctx)} / cds.yaml: " + "; ".join(fixes) + ".",
            evidence=evidence,
        )
    return _result(
        cid,
        Status.PASS,
        f"{REALTIME_WS_PATH} -> cluster {evidence['cluster']!r} ({', '.join(evidence['endpoints'])}) as "
        f"{evidence['upstream_path']}, WebSocket upgrade enabled.",
        evidence=evidence,
    )


@register("envoy.realtime_rest", "Envoy routes /realtime/v1/api to Realtime's /api", needs=("stack",),
          using=_ENVOY.provider())
def check_realtime_rest(target: Target, cid: str, ctx: EnvoyLoaded) -> CheckResult:
    """``/realtime/v1/api/broadcast`` reaches the Realtime cluster as ``/api/broadcast``."""
    problems, fixes, evidence = _route_problems(ctx, target, REALTIME_REST_PATH, "/api/broadcast", "REST")
    if problems:
        return _result(
            cid,
            Status.FAIL,
            "Envoy's Realtime REST route is wrong: " + problems[0],
            detail="\n".join(problems),
            remedy=f"In {_lds_name(ctx)}: "
            + "; ".join(fixes)
            + " (official: prefix /realtime/v1/api, cluster realtime, prefix_rewrite /api, "
            "placed before /realtime/v1/).",
            evidence=evidence,
        )
    return _result(
        cid,
        Status.PASS,
        f"{REALTIME_REST_PATH} -> cluster {evidence['cluster']!r} as {evidence['upstream_path']}.",
        evidence=evidence,
    )


@register("envoy.realtime_host_rewrite", "Envoy sets the Host (the tenant) on the Realtime routes", needs=("stack",),
          using=_ENVOY.provider())
def check_host_rewrite(target: Target, cid: str, ctx: EnvoyLoaded) -> CheckResult:
    """The Realtime routes rewrite Host (``host_rewrite_literal``), since Realtime takes the tenant from it."""
    config = _cfg(ctx)
    lds = _lds_name(ctx)
    problems: list[str] = []
    hosts: dict[str, str] = {}
    expected = target.lookup("SELF_HOST_TENANT_NAME") or "realtime-dev"
    for request in (REALTIME_WS_PATH, REALTIME_REST_PATH):
        matched = config.route_for(request, public_url(target)[1])
        if matched is None or matched[1].blocked or not matched[1].cluster:
            continue
        route = matched[1]
        found = _upstream_hosts(config, route)
        if not found:
            _, public_host = public_url(target)
            problems.append(
                f"{lds}: route {route.name!r} has no host_rewrite_literal, so Envoy forwards the client's Host "
                f"(e.g. {public_host!r} from SUPABASE_PUBLIC_URL) and Realtime looks up tenant "
                f'{tenant_of(public_host)!r} instead of {expected!r}: "Tenant not found".'
            )
        else:
            hosts[route.name] = found[0]
    tenants = {name: tenant_of(host) for name, host in hosts.items()}
    evidence = {"host_rewrites": hosts, "tenants": tenants, "self_host_tenant_name": expected}
    if problems:
        return _result(
            cid,
            Status.FAIL,
            "A Realtime route in Envoy does not set the Host header, so the tenant comes from the client.",
            detail="\n".join(problems),
            remedy=f"In {lds}: add `host_rewrite_literal: {expected}.supabase-realtime` under `route:` of the "
            "realtime-v1-ws-protected and realtime-v1-api-protected routes (the first label is the tenant).",
            evidence=evidence,
        )
    if len(set(tenants.values())) > 1:
        return _result(
            cid,
            Status.FAIL,
            "The Realtime routes in Envoy imply different tenants: "
            + ", ".join(f"{k} -> {v!r}" for k, v in tenants.items()),
            detail=f"Host rewrites: {hosts}.",
            remedy=f"In {lds}: use the same host_rewrite_literal on every Realtime route.",
            evidence=evidence,
        )
    if not tenants:
        return _result(
            cid, Status.SKIP, "Skipped: no Realtime route (see envoy.realtime_ws)."
        )
    tenant = next(iter(tenants.values()))
    return _result(
        cid,
        Status.PASS,
        f"The Realtime routes send Host {next(iter(hosts.values()))!r}, i.e. tenant {tenant!r}.",
        evidence=evidence,
    )


def _lua_protects(code: str, route: str) -> bool:
    return f'["{route}"] = true' in code and "apikey" in code and "respond" in code


def _rbac_protects(rules: Mapping[str, Any], path: str, keys: Sequence[str]) -> tuple[bool, bool]:
    """(covers ``path`` with an apikey principal, and lists every key in ``keys``)."""
    if str(rules.get("action", "ALLOW")).upper() != "ALLOW":
        return False, False
    policies = rules.get("policies")
    if not isinstance(policies, Mapping):
        return False, False
    for policy in policies.values():
        if not isinstance(policy, Mapping):
            continue
        prefixes = []
        for perm in policy.get("permissions") or ():
            if isinstance(perm, Mapping):
                url_path = perm.get("url_path", {})
                spec = url_path.get("path", {}) if isinstance(url_path, Mapping) else {}
                if isinstance(spec, Mapping) and spec.get("prefix"):
                    prefixes.append(str(spec["prefix"]))
        if not any(path.startswith(p) for p in prefixes):
            continue
        values = []
        for principal in policy.get("principals") or ():
            header = principal.get("header") if isinstance(principal, Mapping) else None
            if isinstance(header, Mapping) and str(header.get("name", "")).lower() == "apikey":
                match = header.get("string_match") or {}
                values.append(str(match.get("exact", "")) if isinstance(match, Mapping) else "")
        if values:
            return True, all(k in values for k in keys if k)
    return False, False


@register(
    "envoy.realtime_auth",
    "Envoy validates the apikey on Realtime routes and mirrors it to x-api-key",
    needs=("stack",),
    using=_ENVOY.provider(),
)
def check_realtime_auth(target: Target, cid: str, ctx: EnvoyLoaded) -> CheckResult:
    """The Realtime routes require a known apikey (Lua or RBAC) and the WebSocket route copies it to ``x-api-key``."""
    config = _cfg(ctx)
    lds = _lds_name(ctx)
    anon = ctx.env.get("ANON_KEY", "")
    service_key = ctx.env.get("SERVICE_ROLE_KEY", "")
    problems: list[str] = []
    warnings: list[str] = []
    fixes: list[str] = []
    evidence: dict[str, Any] = {}
    checked = 0
    for request, label in ((REALTIME_WS_PATH, "WebSocket"), (REALTIME_REST_PATH, "REST")):
        matched = config.route_for(request, public_url(target)[1])
        if matched is None or matched[1].blocked or not matched[1].cluster:
            continue
        checked += 1
        listener, route = matched
        lua = [
            f
            for f in listener.filters
            if f.name.endswith("lua") and f.inline_code and "lua" not in route.disabled_filters
        ]
        if any(f.name in route.disabled_filters for f in listener.filters if f.name.endswith("lua")):
            lua = []
        by_lua = any(_lua_protects(f.inline_code or "", route.name) for f in lua)
        rbac_cover = False
        rbac_keys = False
        for f in listener.filters:
            if f.rbac is not None and f.name not in route.disabled_filters:
                cover, keys_ok = _rbac_protects(f.rbac, request, [anon, service_key])
                rbac_cover, rbac_keys = rbac_cover or cover, rbac_keys or (cover and keys_ok)
        evidence[route.name] = {"lua_validation": by_lua, "rbac_validation": rbac_cover}
        if not by_lua and not rbac_cover:
            problems.append(
                f"{lds}: route {route.name!r} ({label}) is not in any Lua PROTECTED_ROUTES table nor covered by "
                "an RBAC apikey policy: requests without a valid apikey reach Realtime."
            )
            fixes.append(
                f'add `["{route.name}"] = true` to PROTECTED_ROUTES in the apikey-validating Lua filter and '
                f"the prefix {route.prefix or request} to the RBAC apikey policy"
            )
        elif rbac_cover and not rbac_keys and (anon or service_key):
            problems.append(
                f"{lds}: the RBAC apikey policy for {route.name!r} does not list the current ANON_KEY and "
                'SERVICE_ROLE_KEY, so those keys get 403 "RBAC: access denied".'
            )
            fixes.append("keep `exact: '${ANON_KEY}'` and `exact: '${SERVICE_ROLE_KEY}'` principals in the RBAC filter")
        if label == "WebSocket":
            mirrored = any(
                "x-api-key" in (f.inline_code or "")
                and (route.name in (f.inline_code or "") or "REALTIME_WS_ROUTE" not in (f.inline_code or ""))
                for f in lua
            )
            evidence[route.name]["x_api_key_mirror"] = mirrored
            if not mirrored:
                warnings.append(
                    f"{lds}: no Lua filter copies the apikey into x-api-key on {route.name!r}; legacy JWT keys still "
                    "work through ?apikey=, but translated sb_ keys do not reach Realtime."
                )
                fixes.append(
                    "restore the official 'Mirrors apikey into x-api-key' Lua filter "
                    f'(REALTIME_WS_ROUTE = "{route.name}", headers:replace("x-api-key", apikey))'
                )
    if not anon or not service_key:
        missing = [n for n, v in (("ANON_KEY", anon), ("SERVICE_ROLE_KEY", service_key)) if not v]
        problems.append(
            f"{', '.join(missing)} is empty in service {ctx.service_name!r}'s environment, so the gateway accepts no "
            "legacy key at all."
        )
        fixes.append(f"add `{missing[0]}: ${{{missing[0]}}}` to services.{ctx.service_name}.environment")
    if not checked:
        return _result(cid, Status.SKIP, "Skipped: no Realtime route (see envoy.realtime_ws).")
    if problems:
        return _result(
            cid,
            Status.FAIL,
            "Envoy's apikey handling on the Realtime routes is broken.",
            detail="\n".join(problems + warnings),
            remedy="; ".join(fixes) + ".",
            evidence=evidence,
        )
    if warnings:
        return _result(
            cid,
            Status.WARN,
            "Envoy does not mirror the apikey to x-api-key on the Realtime WebSocket route.",
            detail="\n".join(warnings),
            remedy="; ".join(fixes) + ".",
            evidence=evidence,
        )
    return _result(
        cid,
        Status.PASS,
        "The Realtime routes require a valid apikey and the WebSocket route mirrors it to x-api-key.",
        evidence=evidence,
    )


@register("envoy.tenants_api_blocked", "Envoy blocks Realtime's tenant admin API", needs=("stack",),
          using=_ENVOY.provider())
def check_tenants_api_blocked(target: Target, cid: str, ctx: EnvoyLoaded) -> CheckResult:
    """``/realtime/v1/api/tenants`` is denied (RBAC deny or direct response) rather than proxied."""
    config = _cfg(ctx)
    matched = config.route_for(REALTIME_TENANTS_PATH, public_url(target)[1])
    if matched is None:
        return _result(cid, Status.PASS, f"No Envoy route matches {REALTIME_TENANTS_PATH}.")
    _, route = matched
    upstream = route.rewritten(REALTIME_TENANTS_PATH)
    evidence = {"route": route.name, "cluster": route.cluster, "upstream_path": upstream}
    if route.blocked:
        return _result(
            cid,
            Status.PASS,
            f"{REALTIME_TENANTS_PATH} is blocked by route {route.name!r}.",
            evidence=evidence,
        )
    if route.cluster and upstream.startswith("/api/tenants"):
        return _result(
            cid,
            Status.WARN,
            "Realtime's tenant admin API is reachable through Envoy.",
            detail=f"{REALTIME_TENANTS_PATH} matches route {route.name!r} and reaches Realtime as {upstream}. "
            "The admin API accepts any JWT signed with API_JWT_SECRET, which the public anon key is.",
            remedy=f"In {_lds_name(ctx)}, before the realtime-v1-api-protected route, add the official route "
            "realtime-v1-api-tenants-blocked (match prefix /realtime/v1/api/tenants) with a per-route "
            "envoy.filters.http.rbac DENY policy (or `direct_response: {status: 403}`).",
            evidence=evidence,
        )
    return _result(
        cid,
        Status.PASS,
        f"{REALTIME_TENANTS_PATH} does not reach the tenant API (route {route.name!r} -> {upstream}).",
        evidence=evidence,
    )
