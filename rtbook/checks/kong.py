"""``kong.*`` checks: the Kong declarative config judged as Kong reads it."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from rtbook.checks._common import result as _result
from rtbook.checks._gateway import GatewayKind, public_url, realtime_port
from rtbook.config.gateway import tenant_of
from rtbook.config.kong import (
    _AWK_VAR,
    _COMPOSE_SOURCE,
    KNOWN_FORMAT_VERSIONS,
    OSS_PROTOCOLS,
    KongConfig,
    KongConsumer,
    KongLoaded,
    KongRoute,
    KongService,
    bundled_plugins,
    load_kong_detailed,
    realtime_names,
    upstream_path,
)
from rtbook.config.reader import (
    DEFAULT_REALTIME_PORT,
    REALTIME_REST_PATH,
    REALTIME_TENANTS_PATH,
    REALTIME_WS_PATH,
)
from rtbook.registry import register
from rtbook.results import CheckResult, Status

if TYPE_CHECKING:
    from rtbook.target import Target



# ====================================================================== checks


_KONG = GatewayKind(
    kind="kong",
    title="Kong",
    other=("envoy", "Envoy", "api-gw"),
    files="kong.yml",
    config="kong.yml",
    unreadable="kong.yml could not be read.",
    unreadable_remedy="Mount kong.yml into the kong service at /home/kong/temp.yml (volumes), "
    "e.g. ./volumes/api/kong.yml:/home/kong/temp.yml:ro",
    load=load_kong_detailed,
)


def _config(ctx: KongLoaded) -> KongConfig:
    assert ctx.config is not None
    return ctx.config


def _line_of(text: str, needle: str) -> int | None:
    for n, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return n
    return None


@register("kong.parse", "kong.yml parses as Kong's declarative config", needs=("stack",),
          using=_KONG.provider(need_config=False))
def check_parse(target: Target, cid: str, ctx: KongLoaded) -> CheckResult:
    """kong.yml expands and parses; an unknown or missing ``_format_version`` is reported."""
    evidence: dict[str, Any] = {
        "file": ctx.source,
        "expansion": ctx.style,
        "why": ctx.style_reason,
        "service": ctx.service_name,
    }
    if ctx.config is None:
        return _result(
            cid,
            Status.FAIL,
            f"kong.yml does not load after the {ctx.style} expansion.",
            detail=f"{ctx.error}\nExpansion style: {ctx.style} ({ctx.style_reason}).",
            remedy=f"Fix {ctx.source} at the line named above; Kong refuses to start with it as it is.",
            evidence=evidence,
        )
    config = ctx.config
    evidence |= {
        "format_version": config.format_version,
        "services": len(config.services),
        "routes": len(config.routes),
    }
    if config.format_version is None:
        return _result(
            cid,
            Status.FAIL,
            "kong.yml has no _format_version; Kong rejects it.",
            detail=f"{ctx.source} parsed, but the top-level key _format_version is missing.",
            remedy=f"Add `_format_version: '2.1'` as the first line of {ctx.source}.",
            evidence=evidence,
        )
    evidence |= {"kong_version": config.kong_version or "unknown", "router_flavor": config.router_flavor}
    if config.refusals:
        first = config.refusals[0]
        return _result(
            cid,
            Status.FAIL,
            f"Kong {config.kong_version or ''} refuses to load kong.yml and does not start: {first}".replace(
                "Kong  ", "Kong "
            ),
            detail="Kong's declarative loader reports:\n" + "\n".join(config.refusals)
            + f"\nKong version: {config.kong_version or 'unknown (image tag without a version)'}"
            + (f", router flavor {config.router_flavor}" if config.router_flavor else "") + ".",
            remedy=f"Fix {ctx.source} at the places named above; " + _refusal_fixes(config.refusals),
            evidence=evidence | {"refusals": list(config.refusals)},
        )
    if config.format_version not in KNOWN_FORMAT_VERSIONS:
        return _result(
            cid,
            Status.WARN,
            f"kong.yml declares _format_version {config.format_version!r}, which rtbook does not know.",
            detail=f"Known versions: {', '.join(KNOWN_FORMAT_VERSIONS)}. YAML turns an unquoted 2.1 into a "
            "float, and Kong only accepts the listed strings.",
            remedy=f"Set `_format_version: '2.1'` (quoted) in {ctx.source}.",
            evidence=evidence,
        )
    if not config.services:
        return _result(
            cid,
            Status.FAIL,
            "kong.yml defines no services.",
            detail=f"{ctx.source} parsed, but there is no `services:` list, so Kong routes nothing.",
            remedy=f"Restore the services list of the official volumes/api/kong.yml in {ctx.source}.",
            evidence=evidence,
        )
    if config.unmodelled:
        return _result(
            cid,
            Status.WARN,
            f"kong.yml loads, but rtbook cannot evaluate {len(config.unmodelled)} part(s) of it.",
            detail="\n".join(config.unmodelled),
            remedy="Check those routes by hand (or with a request through Kong); the kong.* routing verdicts "
            "assume they match nothing.",
            evidence=evidence,
        )
    return _result(
        cid,
        Status.PASS,
        f"kong.yml parses ({len(config.services)} services, {len(config.routes)} routes, {ctx.style} expansion"
        + (f", Kong {config.kong_version}" if config.kong_version else "") + ").",
        evidence=evidence,
    )


def _refusal_fixes(refusals: tuple[str, ...]) -> str:
    """What to do about the usual refusals, in the order they appear."""
    fixes: list[str] = []
    text = "\n".join(refusals)
    if "in 'protocol'" in text or "in 'protocols'" in text:
        fixes.append("Kong OSS has no ws/wss protocol: give the service `url: http://<host>:<port>/<path>` "
                     "(Kong proxies WebSocket upgrades on http services) and drop `protocol: ws`/`protocols: [ws]`")
    if "in 'expression'" in text:
        fixes.append("set KONG_ROUTER_FLAVOR: expressions in the kong service's environment (Kong 3.x), or "
                     "replace the expression route by `paths:`")
    if "uniqueness violation" in text:
        fixes.append("give every consumer its own key (ANON_KEY, SERVICE_ROLE_KEY, SUPABASE_PUBLISHABLE_KEY and "
                     "SUPABASE_SECRET_KEY must all differ)")
    if "config.allow" in text:
        fixes.append("give the acl plugin exactly one of allow or deny (the official files use allow)")
    if "unknown field" in text and "in 'config'" in text:
        fixes.append("remove the option this Kong version does not know")
    return ("; ".join(fixes) + ".") if fixes else "Kong refuses to start with it as it is."


@register("kong.placeholders", "Every $VAR in kong.yml is set in the Kong service's environment", needs=("stack",),
          using=_KONG.provider(need_config=False))
def check_placeholders(target: Target, cid: str, ctx: KongLoaded) -> CheckResult:
    """Each ``$VAR`` in kong.yml is provided by the kong service's environment (or its entrypoint)."""
    exp = ctx.expansion
    if exp is None:
        return _result(
            cid,
            Status.SKIP,
            "Skipped: kong.yml could not be expanded (see kong.parse).",
            detail=ctx.error or "",
        )
    # Empty values are fine where the awk entrypoint deletes the `- key:` line they leave behind.
    deleted_vars = set()
    template_lines = ctx.template.split("\n")
    for n in exp.deleted_lines:
        deleted_vars.update(_AWK_VAR.findall(template_lines[n - 1]))
    # A variable that only appears in YAML comments cannot hurt, whatever it expands to.
    live_vars: set[str] = set()
    for text_line in template_lines:
        if not text_line.lstrip().startswith("#"):
            live_vars.update(_AWK_VAR.findall(text_line))
            live_vars.update(re.findall(r"\$\{([A-Za-z_][A-Za-z_0-9]*)", text_line))
    empty_bad = [n for n in exp.empty if n not in deleted_vars and n in live_vars]
    unresolved = [n for n in exp.unresolved if n in live_vars]
    evidence = {
        "file": ctx.source,
        "expansion": ctx.style,
        "referenced": list(exp.referenced),
        "unresolved": unresolved,
        "empty": list(exp.empty),
        "set_by_entrypoint": list(ctx.script_vars),
    }
    if ctx.style == "none" and exp.referenced:
        return _result(
            cid,
            Status.FAIL,
            f"kong.yml uses {len(exp.referenced)} $VAR placeholders but nothing substitutes them.",
            detail=f"{ctx.source} refers to {', '.join('$' + n for n in exp.referenced)}; the service "
            f"{ctx.service_name!r} has no substituting entrypoint, so Kong would load the literal text "
            "(a consumer key of '$SUPABASE_ANON_KEY').",
            remedy=f"Mount kong.yml at /home/kong/temp.yml and give service {ctx.service_name!r} the official "
            'entrypoint: `entrypoint: ["/bin/sh", "/home/kong/kong-entrypoint.sh"]` with '
            "./volumes/api/kong-entrypoint.sh mounted at /home/kong/kong-entrypoint.sh.",
            evidence=evidence,
        )
    problems: list[str] = []
    remedies: list[str] = []
    for name in unresolved:
        line = _line_of(ctx.template, "$" + name) or _line_of(ctx.template, "${" + name)
        effect = (
            "is left in the file as the literal text '$" + name + "'"
            if ctx.style == "awk"
            else "expands to an empty string"
        )
        problems.append(
            f"${name} (kong.yml line {line}) is not in the environment of service {ctx.service_name!r}, so it {effect}."
        )
        remedies.append(f"`{name}: {_COMPOSE_SOURCE.get(name, '${' + name + '}')}`")
    for name in empty_bad:
        line = _line_of(ctx.template, "$" + name)
        problems.append(
            f"${name} (kong.yml line {line}) is set but empty in service {ctx.service_name!r}'s "
            "environment, so Kong gets an empty value there."
        )
    if problems:
        remedy_parts = []
        if remedies:
            remedy_parts.append(
                f"Add to services.{ctx.service_name}.environment in the compose file: "
                + ", ".join(remedies)
                + " (and define the right-hand variables in .env)."
            )
        if empty_bad:
            remedy_parts.append(
                "Give " + ", ".join(empty_bad) + " a value in .env (they are interpolated into the "
                "kong service's environment)."
            )
        status = Status.FAIL
        return _result(
            cid,
            status,
            f"{len(unresolved) + len(empty_bad)} kong.yml placeholder(s) have no value: "
            + ", ".join("$" + n for n in (*unresolved, *empty_bad))
            + ".",
            detail="\n".join(problems) + f"\nExpansion style: {ctx.style} ({ctx.style_reason}).",
            remedy=" ".join(remedy_parts),
            evidence=evidence,
        )
    return _result(
        cid,
        Status.PASS,
        f"All {len(exp.referenced)} placeholders in kong.yml have values ({ctx.style} expansion).",
        evidence=evidence,
    )


def _enabled_plugins(value: str | None, kong_version: str | None = None) -> tuple[set[str], bool]:
    """Plugins KONG_PLUGINS loads in this Kong version, and whether it includes ``bundled``."""
    if value is None or not value.strip():
        return set(bundled_plugins(kong_version)), True
    names = {p.strip() for p in value.split(",") if p.strip()}
    bundled = "bundled" in names
    if bundled:
        names |= bundled_plugins(kong_version)
    names.discard("off")
    return names, bundled


@register("kong.plugins_enabled", "Every plugin in kong.yml is listed in KONG_PLUGINS", needs=("stack",),
          using=_KONG.provider())
def check_plugins_enabled(target: Target, cid: str, ctx: KongLoaded) -> CheckResult:
    """Kong refuses a declarative config that uses a plugin ``KONG_PLUGINS`` does not load."""
    config = _config(ctx)
    setting = ctx.compose_env.get("KONG_PLUGINS")
    enabled, _ = _enabled_plugins(setting, ctx.kong_version)
    used: dict[str, list[str]] = {}
    for plugin in config.all_plugins():
        used.setdefault(plugin.name, []).append(plugin.scope)
    missing = sorted(n for n in used if n not in enabled)
    evidence = {
        "KONG_PLUGINS": setting if setting is not None else "(unset: bundled)",
        "used": sorted(used),
        "missing": missing,
    }
    if missing:
        where = "; ".join(f"{n} (on {', '.join(sorted(set(used[n]))[:4])})" for n in missing)
        new_value = ",".join([*(p.strip() for p in (setting or "bundled").split(",") if p.strip()), *missing])
        return _result(
            cid,
            Status.FAIL,
            f"kong.yml uses plugin(s) that KONG_PLUGINS does not load: {', '.join(missing)}; Kong will not start.",
            detail=f"services.{ctx.service_name}.environment.KONG_PLUGINS = {setting!r}. Used but not loaded: {where}. "
            "Kong rejects the declarative config with \"plugin '<name>' not enabled; add it to the 'plugins' "
            'configuration property".',
            remedy=f"Set services.{ctx.service_name}.environment.KONG_PLUGINS: {new_value} in the compose file.",
            evidence=evidence,
        )
    return _result(
        cid,
        Status.PASS,
        f"All {len(used)} plugins used in kong.yml are loaded by KONG_PLUGINS.",
        evidence=evidence,
    )


def _route_label(route: KongRoute, service: KongService | None) -> str:
    return f"route {route.name!r}" + (f" (service {service.name!r})" if service else " (no service)")


def _realtime_host(target: Target) -> str:
    """The name Kong should send to: the Realtime container's name that carries the tenant, else the official one."""
    tenant = target.resolved_tenant()
    names = realtime_names(target.stack)
    return next((n for n in sorted(names) if tenant_of(n) == tenant and "." in n), f"{tenant}.supabase-realtime")


@register("kong.realtime_ws", "Kong routes /realtime/v1/ to Realtime's /socket over WebSocket", needs=("stack",),
          using=_KONG.provider())
def check_realtime_ws(target: Target, cid: str, ctx: KongLoaded) -> CheckResult:
    """``/realtime/v1/websocket`` reaches ``<host>:4000/socket/websocket`` on an http service.

    Kong OSS has no ``ws`` protocol: the official files' ``protocol: ws`` is overwritten by the
    ``url`` (http), and Kong proxies the WebSocket upgrade on any http service. A ``url: ws://``
    (or ``protocol: ws`` without a url) makes Kong refuse the whole file.
    """
    config = _config(ctx)
    port = realtime_port(target)
    matched = config.match(REALTIME_WS_PATH, "GET", public_url(target)[1])
    if matched is None:
        return _result(
            cid,
            Status.FAIL,
            f"No Kong route matches {REALTIME_WS_PATH}; WebSockets get 404.",
            detail=f"{ctx.source} has no route with a path prefix of /realtime/v1/.",
            remedy=f"Add to {ctx.source} the official service realtime-v1-ws: url "
            f"http://realtime-dev.supabase-realtime:{port}/socket, route paths [/realtime/v1/] with "
            "strip_path: true, plugins cors, key-auth, acl.",
        )
    route, service = matched.route, matched.service
    if not any(p.startswith("/realtime") for p in route.paths) and route.paths:
        # A catch-all (the dashboard's "/") took the request: the Realtime route is missing, and "fix" advice
        # for the catch-all's service (port, path, container name) would break the dashboard instead.
        return _result(
            cid,
            Status.FAIL,
            f"No Kong route for /realtime/v1/: {REALTIME_WS_PATH} falls through to the catch-all "
            f"{_route_label(route, service)} (paths {list(route.paths)}).",
            detail=f"{ctx.source} has no route with a path prefix of /realtime/v1/, so the WebSocket upgrade reaches "
            f"{service.upstream if service else 'no service'} instead of Realtime.",
            remedy=f"Add to {ctx.source} the official service realtime-v1-ws: url "
            f"http://{_realtime_host(target)}:{port}/socket, route paths [/realtime/v1/] with "
            "strip_path: true, plugins cors, key-auth (hide_credentials: false), acl (allow: admin, anon).",
            evidence={"route": route.name, "service": service.name if service else None, "paths": list(route.paths)},
        )
    upstream = upstream_path(route, service, REALTIME_WS_PATH)
    evidence: dict[str, Any] = {
        "route": route.name,
        "service": service.name if service else None,
        "upstream": service.upstream if service else None,
        "upstream_path": upstream,
        "strip_path": route.strip_path,
        "paths": list(route.paths),
        "kong_version": config.kong_version or "unknown",
    }
    if service is not None and service.declared_protocol and service.url:
        evidence["protocol_field_ignored"] = (
            f"protocol: {service.declared_protocol} is overwritten by the url ({service.protocol})"
        )
    compose_fix = ""
    problems: list[str] = []
    fixes: list[str] = []
    where = f"{ctx.source}: {_route_label(route, service)}"
    if config.effective_plugin(route, "request-termination") is not None:
        problems.append(f"{where} is terminated by request-termination, so WebSockets never reach Realtime.")
        fixes.append(f"remove the request-termination plugin from {route.name!r}")
    bad_protocols = [p for p in route.protocols if p not in OSS_PROTOCOLS]
    if bad_protocols:
        problems.append(
            f"{where}: route protocols {list(route.protocols)} include {', '.join(bad_protocols)}; Kong refuses the "
            f"file ({_one_of()})."
        )
        fixes.append(f"remove `protocols:` from route {route.name!r} (the default http, https carries WebSockets)")
    if service is None:
        problems.append(f"{where} has no service.")
        fixes.append(f"attach route {route.name!r} to a service with url http://<realtime-host>:{port}/socket")
    else:
        if service.protocol not in OSS_PROTOCOLS:
            source = f"url {service.url!r}" if service.url else f"protocol: {service.protocol}"
            problems.append(
                f"{where}: the service's {source} gives protocol {service.protocol!r}, which Kong OSS does not have; "
                f"Kong refuses the file at start-up (in 'protocol': {_one_of()}), so nothing is proxied."
            )
            fixes.append(
                f"give service {service.name!r} `url: http://{service.host or 'realtime-dev.supabase-realtime'}:"
                f"{service.port or port}{service.path or '/socket'}` (WebSockets are upgraded on http services)"
                + (" and drop `protocol:`" if service.declared_protocol and not service.url else "")
            )
        elif service.protocol not in ("http", "https"):
            problems.append(
                f"{where}: service protocol is {service.protocol!r}; the WebSocket handshake is HTTP, so the "
                "service must be http (or https)."
            )
            fixes.append(f"use an http:// url for service {service.name!r}")
        if service.port != port:
            problems.append(f"{where}: upstream port is {service.port}, Realtime listens on {port} (its PORT).")
            fixes.append(f"use port {port} in the url of service {service.name!r}")
        names = realtime_names(target.stack)
        if names and service.host and service.host not in names:
            problems.append(
                f"{where}: upstream host {service.host!r} is not a name of the Realtime container "
                f"({', '.join(sorted(names))}), so Kong cannot resolve it."
            )
            compose_fix = (
                f"In the compose file, give the realtime service `container_name: {service.host}` (or that network "
                f"alias) so the upstream resolves and its first label {tenant_of(service.host)!r} stays the tenant."
            )
        if not route.strip_path:
            problems.append(f"{where}: strip_path is false, so Realtime receives {upstream} and answers 404.")
            fixes.append(f"set `strip_path: true` on route {route.name!r}")
        elif upstream != "/socket/websocket":
            problems.append(f"{where}: {REALTIME_WS_PATH} arrives at Realtime as {upstream}, not /socket/websocket.")
            fixes.append(f"set the url path of service {service.name!r} to /socket and the route path to /realtime/v1/")
    if problems:
        return _result(
            cid,
            Status.FAIL,
            "Kong's Realtime WebSocket route is wrong: " + problems[0].split(": ", 1)[-1],
            detail="\n".join(problems),
            remedy=" ".join(
                x for x in ((f"In {ctx.source}: " + "; ".join(fixes) + ".") if fixes else "", compose_fix) if x
            ),
            evidence=evidence,
        )
    assert service is not None
    seen = config.host_seen(route)
    tenant_note = (
        f"tenant {tenant_of(seen.host)!r} from {seen.how}" if seen.host else f"the tenant comes from {seen.how}"
    )
    return _result(
        cid,
        Status.PASS,
        f"{REALTIME_WS_PATH} -> {service.protocol}://{service.host}:{service.port}{upstream} "
        f"(route {route.name!r}, {tenant_note}).",
        evidence=evidence,
    )


def _one_of() -> str:
    return "expected one of: " + ", ".join(OSS_PROTOCOLS)


@register("kong.realtime_rest", "Kong routes /realtime/v1/api to Realtime's /api", needs=("stack",),
          using=_KONG.provider())
def check_realtime_rest(target: Target, cid: str, ctx: KongLoaded) -> CheckResult:
    """``/realtime/v1/api/broadcast`` reaches ``<host>:4000/api/broadcast``."""
    config = _config(ctx)
    port = realtime_port(target)
    host = public_url(target)[1]  # a route restricted to other hosts does not take the clients' requests
    matched = config.route_for(REALTIME_REST_PATH, "POST", host)  # realtime-js posts broadcasts
    fix_all = (
        f"add the official service realtime-v1-rest: url http://realtime-dev.supabase-realtime:{port}/api, "
        "route paths [/realtime/v1/api], strip_path: true"
    )
    if matched is None:
        return _result(
            cid,
            Status.FAIL,
            f"No Kong route matches {REALTIME_REST_PATH}.",
            detail=f"{ctx.source} has no route for /realtime/v1/api.",
            remedy=f"In {ctx.source}: {fix_all}.",
        )
    route, service = matched
    upstream = upstream_path(route, service, REALTIME_REST_PATH)
    evidence = {
        "route": route.name,
        "service": service.name if service else None,
        "upstream": service.upstream if service else None,
        "upstream_path": upstream,
    }
    where = f"{ctx.source}: {_route_label(route, service)}"
    problems: list[str] = []
    if config.effective_plugin(route, "request-termination") is not None:
        problems.append(f"{where} is terminated by request-termination.")
    if service is None:
        problems.append(f"{where} has no service.")
    else:
        if service.port != port:
            problems.append(f"{where}: upstream port is {service.port}, Realtime listens on {port}.")
        if upstream != "/api/broadcast":
            problems.append(
                f"{where}: {REALTIME_REST_PATH} arrives at Realtime as {upstream}, not /api/broadcast "
                "(a longer /realtime/v1/api route is missing, or the path/strip_path is off)."
            )
        if service.protocol not in OSS_PROTOCOLS:
            problems.append(f"{where}: service protocol {service.protocol!r} (from its "
                            f"{'url' if service.url else 'protocol field'}) does not exist in Kong OSS; Kong "
                            f"refuses the file ({_one_of()}).")
        elif service.protocol not in ("http", "https"):
            problems.append(f"{where}: service protocol is {service.protocol!r}; the REST API needs http.")
    # GET /realtime/v1/api/ping (health probes) may take another route: in Kong a route with `methods`
    # (or `hosts`) outranks a longer path-only route.
    ping = config.match(_REALTIME_PING_PATH, "GET", host)
    if ping is not None and ping.route is not route:
        ping_up = upstream_path(ping.route, ping.service, _REALTIME_PING_PATH)
        evidence["get_ping_route"] = ping.route.name
        if ping_up != "/api/ping" or ping.service is None or ping.service.host != (service.host if service else ""):
            problems.append(
                f"{ctx.source}: GET {_REALTIME_PING_PATH} takes route {ping.route.name!r} instead (Kong ranks a route "
                "with methods or hosts above a longer path-only one, and expression routes above all), so it reaches "
                f"{ping.service.host if ping.service else 'no service'} as {ping_up}."
            )
    if problems:
        return _result(
            cid,
            Status.FAIL,
            "Kong's Realtime REST route is wrong.",
            detail="\n".join(problems),
            remedy=f"In {ctx.source}: {fix_all}.",
            evidence=evidence,
        )
    assert service is not None
    return _result(
        cid,
        Status.PASS,
        f"{REALTIME_REST_PATH} -> {service.upstream.rsplit('/api', 1)[0]}{upstream} (route {route.name!r}).",
        evidence=evidence,
    )


_REALTIME_PING_PATH = "/realtime/v1/api/ping"


def _consumers_with(config: KongConfig, value: str | None) -> list[KongConsumer]:
    if not value:
        return []
    return [c for c in config.consumers if any(k.reveal() == value for k in c.keyauth_credentials)]


# Plugins that identify a consumer; rtbook models key-auth and basic-auth, the others it can only name.
_AUTH_PLUGINS = ("key-auth", "basic-auth", "jwt", "hmac-auth", "oauth2", "ldap-auth", "session", "openid-connect")


def _invalid_key_text(major: int | None) -> str:
    """Kong's 401 text for a key no consumer holds (key-auth ERR_INVALID_AUTH_CRED)."""
    if major == 2:
        return '"Invalid authentication credentials"'
    if major is not None:
        return '"Unauthorized" (with WWW-Authenticate: Key)'
    return '"Invalid authentication credentials" (Kong 2.8) or "Unauthorized" (Kong 3.x)'


def _acl_admits(config: Any, groups: tuple[str, ...], *, credential: bool) -> tuple[bool, str]:
    """Kong's acl verdict for a consumer with ``groups``: (allowed, the refusal when not)."""
    allow = [str(g) for g in config.get("allow") or ()] if isinstance(config.get("allow"), list) else []
    deny = [str(g) for g in config.get("deny") or ()] if isinstance(config.get("deny"), list) else []
    if not groups and allow:
        # acl handler: a consumer without ACL rows is refused: 403 with a credential, 401 when anonymous.
        return False, '403 "You cannot consume this service"' if credential else '401 "Unauthorized"'
    if allow and not set(groups) & set(allow):
        return False, '403 "You cannot consume this service"'
    if deny and set(groups) & set(deny):
        return False, '403 "You cannot consume this service"'
    return True, ""


def _templates_read_apikey(plugin: Any) -> bool:
    """True when a request-transformer template reads ``headers.apikey``/``query_params.apikey`` (2026 LUA_*)."""
    if plugin is None:
        return False
    text = repr(plugin.config)
    return "$(" in text and ("headers.apikey" in text or "query_params.apikey" in text)


@register("kong.realtime_auth", "Kong key-auth and ACL let the anon and service keys into Realtime", needs=("stack",),
          using=_KONG.provider())
def check_realtime_auth(target: Target, cid: str, ctx: KongLoaded) -> CheckResult:
    """key-auth finds the apikey where clients send it, the ACL admits anon and admin, consumers hold both keys.

    Judged as Kong 2.8.1/3.9.3 do it: acl without an authentication plugin refuses every request
    (401 "Unauthorized"); key-auth looks the header up case-insensitively and the query
    case-sensitively, only where ``key_in_header``/``key_in_query`` allow; ``hide_credentials``
    strips the key before request-transformer templates read it; ``anonymous`` lets failed
    requests in as that consumer.
    """
    config = _config(ctx)
    env = ctx.env
    major = config.major
    anon = env.get("SUPABASE_ANON_KEY") or target.lookup("ANON_KEY")
    service_key = env.get("SUPABASE_SERVICE_KEY") or target.lookup("SERVICE_ROLE_KEY")
    opaque = bool(env.get("SUPABASE_PUBLISHABLE_KEY") or env.get("SUPABASE_SECRET_KEY"))
    problems: list[str] = []
    fixes: list[str] = []
    warnings: list[str] = []
    # Consumers holding the keys, and their groups.
    holders: dict[str, list[KongConsumer]] = {}
    for label, value, var in (
        ("anon", anon, "SUPABASE_ANON_KEY"),
        ("service_role", service_key, "SUPABASE_SERVICE_KEY"),
    ):
        found = _consumers_with(config, value)
        holders[label] = found
        if value is None:
            warnings.append(f"{var} has no value, so rtbook cannot tell which consumer holds the {label} key.")
        elif not found:
            problems.append(
                f"No consumer in {ctx.source} has the {label} key ({var}) among its keyauth_credentials; "
                f"requests with that key get 401 {_invalid_key_text(major)}."
            )
            fixes.append(f"give consumer {label!r} `keyauth_credentials: [{{key: ${var}}}]`")
    evidence: dict[str, Any] = {
        "consumers": {
            c.username: {"keys": len(c.keyauth_credentials), "groups": list(c.groups)} for c in config.consumers
        },
        "kong_version": config.kong_version or "unknown",
    }
    routes_checked = []
    for path, method, label in ((REALTIME_WS_PATH, "GET", "WebSocket"), (REALTIME_REST_PATH, "POST", "REST")):
        matched = config.route_for(path, method, public_url(target)[1])
        if matched is None:
            continue
        route, _ = matched
        if config.effective_plugin(route, "request-termination") is not None:
            continue  # kong.realtime_ws / kong.realtime_rest report the block
        routes_checked.append(route.name)
        key_auth = config.effective_plugin(route, "key-auth")
        acl = config.effective_plugin(route, "acl")
        basic = config.effective_plugin(route, "basic-auth")
        others = [n for n in _AUTH_PLUGINS[2:] if config.effective_plugin(route, n) is not None]
        where = f"{ctx.source}: route {route.name!r} ({label})"
        if key_auth is None:
            if basic is not None:
                problems.append(
                    f"{where} has basic-auth instead of key-auth: Realtime clients send an apikey, not a dashboard "
                    'password, so every request gets 401 "Unauthorized" (WWW-Authenticate: Basic).'
                )
                fixes.append(f"replace basic-auth by `- name: key-auth` with `config: {{hide_credentials: false}}` "
                             f"on route {route.name!r}'s service")
            elif others:
                warnings.append(f"{where} authenticates with {', '.join(others)}, which rtbook does not model; "
                                "Realtime clients send only an apikey.")
            elif acl is not None:
                problems.append(
                    f"{where} has an acl plugin but no authentication plugin: no consumer is ever identified, so "
                    'Kong answers every request 401 "Unauthorized" (acl handler, Kong 2.8 and 3.x).'
                )
                fixes.append(f"add `- name: key-auth` with `config: {{hide_credentials: false}}` to route "
                             f"{route.name!r}'s service (before acl; the plugin order does not matter)")
            else:
                warnings.append(f"{where} has no key-auth plugin: any client reaches Realtime without an API key.")
                fixes.append(
                    f"add `- name: key-auth` with `config: {{hide_credentials: false}}` to route {route.name!r}'s "
                    "service"
                )
            continue
        conf = key_auth.config
        key_names = conf.get("key_names")
        names = [str(k) for k in key_names] if isinstance(key_names, list) else ["apikey"]
        in_header = conf.get("key_in_header", True) is not False
        in_query = conf.get("key_in_query", True) is not False
        # ngx.req.get_headers() looks names up case-insensitively with _ read as -; query args are exact.
        header_ok = in_header and any(n.lower().replace("_", "-") == "apikey" for n in names)
        query_ok = in_query and "apikey" in names
        no_key = '401 "No API key found in request"'
        if label == "WebSocket" and not query_ok:
            why = (
                "key_in_query is false" if not in_query
                else f"key_names is {names}, and query arguments are matched case-sensitively"
            )
            problems.append(
                f"{where}: key-auth never reads ?apikey= ({why}), but WebSocket clients (realtime-js, browsers) can "
                f"only send the key in the query string; every socket gets {no_key}."
            )
            fixes.append(f"on key-auth of {route.name!r} keep `key_in_query: true` and 'apikey' in key_names "
                         "(or remove key_names)")
        if label == "REST" and not header_ok and not query_ok:
            why = "key_in_header is false" if not in_header else f"key_names is {names}"
            problems.append(
                f"{where}: key-auth never reads the apikey header ({why}); supabase clients send the key as "
                f"'apikey' (header and ?apikey= query); every request gets {no_key}."
            )
            fixes.append(f"add 'apikey' to key-auth's key_names on {route.name!r} (or remove key_names) and keep "
                         "key_in_header: true")
        elif label == "REST" and not header_ok:
            why = "key_in_header is false" if not in_header else f"key_names is {names}"
            warnings.append(f"{where}: key-auth does not read the apikey header ({why}); REST calls that send "
                            f"the key only as a header (realtime-js does) get {no_key}.")
        if conf.get("hide_credentials") is True:
            transformer = config.effective_plugin(route, "request-transformer")
            if label == "WebSocket":
                problems.append(
                    f"{where}: key-auth has hide_credentials: true, so Kong strips the apikey (header and query) that "
                    "Realtime needs as its socket token"
                    + (" and the request-transformer template that copies it runs after key-auth and finds nothing"
                       if _templates_read_apikey(transformer) else "")
                    + "; every join fails."
                )
                fixes.append(f"set `hide_credentials: false` on key-auth for {route.name!r}")
            elif _templates_read_apikey(transformer):
                text = (
                    f"{where}: key-auth has hide_credentials: true, so the apikey is gone when the request-transformer "
                    "template (LUA_AUTH_EXPR) falls back to headers.apikey; a client that sends only the apikey, or an "
                    "opaque sb_ key as Bearer, reaches Realtime with a blank Authorization and gets 401."
                )
                (problems if opaque else warnings).append(text)
                fixes.append(f"set `hide_credentials: false` on key-auth for {route.name!r}")
        anonymous = conf.get("anonymous")
        anon_consumer = config.consumer(str(anonymous)) if anonymous else None
        if anonymous and anon_consumer is None:
            warnings.append(
                f"{where}: key-auth anonymous names {anonymous!r}, which is no consumer in {ctx.source}; requests "
                "without a valid key make Kong fail with 500 (\"either credential or consumer must be provided\")."
            )
            fixes.append(f"remove `anonymous` from key-auth on {route.name!r} or create that consumer")
        elif anon_consumer is not None:
            admitted = acl is None or _acl_admits(acl.config, anon_consumer.groups, credential=False)[0]
            if admitted:
                warnings.append(
                    f"{where}: key-auth anonymous lets requests without a valid key in as consumer "
                    f"{anon_consumer.username!r}" + (" and the acl admits it" if acl is not None else "")
                    + ": Realtime is reachable without an API key (it still checks the token itself)."
                )
                fixes.append(f"remove `anonymous` from key-auth on {route.name!r}")
        if acl is None:
            warnings.append(f"{where} has no acl plugin: any consumer may use it.")
            continue
        allow_raw, deny_raw = acl.config.get("allow"), acl.config.get("deny")
        allow = [str(g) for g in allow_raw] if isinstance(allow_raw, list) else []
        deny = [str(g) for g in deny_raw] if isinstance(deny_raw, list) else []
        evidence[f"acl_{label.lower()}"] = {"allow": allow, "deny": deny}
        if bool(allow) == bool(deny):
            continue  # Kong refuses this acl config at start-up: kong.parse reports it
        for who in ("anon", "service_role"):
            for consumer in holders.get(who, []):
                ok, refusal = _acl_admits(acl.config, consumer.groups, credential=True)
                if not ok:
                    problems.append(
                        f"{where}: the acl ({'allow ' + str(allow) if allow else 'deny ' + str(deny)}) rejects "
                        f"consumer {consumer.username!r} (groups {list(consumer.groups)}); its key gets {refusal}."
                    )
                    group = consumer.groups[0] if consumer.groups else ("anon" if who == "anon" else "admin")
                    fixes.append(
                        (f"add {group!r} to the acl allow list of {route.name!r}" if allow
                         else f"remove {group!r} from the acl deny list of {route.name!r}")
                        + (
                            ""
                            if consumer.groups
                            else f" and an acls entry `{{consumer: {consumer.username}, group: {group}}}`"
                        )
                    )
    evidence["routes"] = routes_checked
    if not routes_checked:
        return _result(
            cid, Status.SKIP, "Skipped: no Realtime route to inspect (see kong.realtime_ws)."
        )
    if problems:
        return _result(
            cid,
            Status.FAIL,
            "Kong rejects valid API keys on the Realtime routes.",
            detail="\n".join(problems + warnings),
            remedy=f"In {ctx.source}: " + "; ".join(dict.fromkeys(fixes)) + ".",
            evidence=evidence,
        )
    if warnings:
        return _result(
            cid,
            Status.WARN,
            "Kong's Realtime authentication is incomplete.",
            detail="\n".join(warnings),
            remedy=(f"In {ctx.source}: " + "; ".join(dict.fromkeys(fixes)) + ".")
            if fixes
            else "Set ANON_KEY and SERVICE_ROLE_KEY in .env so the consumers can be matched.",
            evidence=evidence,
        )
    return _result(
        cid,
        Status.PASS,
        "key-auth keeps the apikey, the acl admits the anon and service_role consumers, and both keys "
        "belong to a consumer.",
        evidence=evidence,
    )


@register("kong.tenants_api_blocked", "Kong blocks Realtime's tenant admin API", needs=("stack",),
          using=_KONG.provider())
def check_tenants_api_blocked(target: Target, cid: str, ctx: KongLoaded) -> CheckResult:
    """``/realtime/v1/api/tenants`` is answered by request-termination rather than passed to Realtime."""
    config = _config(ctx)
    matched = config.route_for(REALTIME_TENANTS_PATH, "GET", public_url(target)[1])
    if matched is None:
        return _result(
            cid,
            Status.PASS,
            f"No Kong route matches {REALTIME_TENANTS_PATH}; the tenant API is not exposed.",
        )
    route, service = matched
    term = config.effective_plugin(route, "request-termination")
    evidence: dict[str, Any] = {"route": route.name, "service": service.name if service else None}
    trigger_note = ""
    if term is not None and term.config.get("trigger"):
        # request-termination only acts when the trigger header or query argument is present.
        trigger_note = (f" request-termination on route {route.name!r} has `trigger: {term.config['trigger']}`, so "
                        "Kong only blocks requests that carry that header or query argument.")
        evidence["trigger"] = str(term.config["trigger"])
        term = None
    if term is not None:
        evidence["status_code"] = term.config.get("status_code", 503)
        return _result(
            cid,
            Status.PASS,
            f"{REALTIME_TENANTS_PATH} is blocked by request-termination on route {route.name!r} "
            f"(status {term.config.get('status_code', 503)}).",
            evidence=evidence,
        )
    upstream = upstream_path(route, service, REALTIME_TENANTS_PATH)
    evidence["upstream_path"] = upstream
    reaches_admin = upstream.startswith("/api/tenants")
    if not reaches_admin:
        return _result(
            cid,
            Status.PASS,
            f"{REALTIME_TENANTS_PATH} reaches {upstream} on route {route.name!r}, not the tenant API.",
            evidence=evidence,
        )
    return _result(
        cid,
        Status.WARN,
        "Realtime's tenant admin API is reachable through Kong.",
        detail=f"{REALTIME_TENANTS_PATH} matches route {route.name!r} and reaches Realtime as {upstream}. The admin "
        "API accepts any JWT signed with API_JWT_SECRET, which the public anon key is, so anyone with the anon "
        "key can list, change or delete tenants." + trigger_note,
        remedy=f"Add to {ctx.source} (before realtime-v1-rest) a service realtime-v1-rest-tenants with url "
        f"http://{service.host if service else 'realtime-dev.supabase-realtime'}:"
        f"{service.port if service else DEFAULT_REALTIME_PORT}/api/tenants, route paths [/realtime/v1/api/tenants], "
        "and plugin request-termination {status_code: 403, message: 'Access is forbidden.'}; make sure "
        "request-termination is in KONG_PLUGINS.",
        evidence=evidence,
    )


@register("kong.realtime_preserve_host", "Kong sends the upstream host (the tenant) to Realtime", needs=("stack",),
          using=_KONG.provider())
def check_preserve_host(target: Target, cid: str, ctx: KongLoaded) -> CheckResult:
    """The Host Realtime receives through each Realtime route names the upstream's tenant.

    ``preserve_host: true`` forwards the client's Host; a request-transformer ``replace`` (or
    ``append``) of ``Host`` sends its value instead (Kong writes it to the upstream Host), whatever
    ``preserve_host`` says. Either changes the tenant Realtime looks up.
    """
    config = _config(ctx)
    seen = config.realtime_hosts_seen()
    hosts = config.realtime_upstream_hosts()
    evidence: dict[str, Any] = {
        "upstream_hosts": hosts,
        "tenants": [tenant_of(h) for h in hosts],
        "hosts_seen": {s.route: s.host for s in seen},
    }
    expected = {tenant_of(h) for h in hosts}
    public, public_host = public_url(target)
    problems: list[str] = []
    fixes: list[str] = []
    warnings: list[str] = []
    for s in seen:
        if s.replaced and s.host is None:
            warnings.append(f"route {s.route!r}: {s.how}; rtbook cannot tell which tenant Realtime looks up.")
            fixes.append(f"remove the Host entry from request-transformer on {s.route!r}")
        elif s.replaced and s.host is not None and expected and tenant_of(s.host) not in expected:
            problems.append(
                f"route {s.route!r}: {s.how} to {s.host!r}, so Realtime looks up tenant {tenant_of(s.host)!r} "
                f"instead of {', '.join(repr(x) for x in sorted(expected))}; joins fail with \"Tenant not found\"."
            )
            fixes.append(f"remove the Host entry from request-transformer (replace/append headers) on {s.route!r}")
        elif not s.replaced and s.host is None and "preserve_host" in s.how:
            problems.append(
                f"route {s.route!r}: preserve_host: true forwards the Host the client used (e.g. {public_host!r} "
                f"from SUPABASE_PUBLIC_URL={public}), so Realtime looks up tenant {tenant_of(public_host)!r} instead "
                f"of {', '.join(repr(tenant_of(h)) for h in hosts) or 'the upstream host label'}; joins fail with "
                '"Tenant not found".'
            )
            fixes.append(f"remove `preserve_host: true` (or set it to false) on route {s.route!r}")
    if problems:
        names = ", ".join(repr(p.split("'")[1]) for p in problems)
        return _result(
            cid,
            Status.FAIL,
            f"Realtime does not get the upstream host as Host on {names}: the tenant changes.",
            detail="\n".join(problems + warnings),
            remedy=f"In {ctx.source}: " + "; ".join(dict.fromkeys(fixes)) + ".",
            evidence=evidence,
        )
    if warnings:
        return _result(
            cid,
            Status.WARN,
            "A Realtime route sets Host with a template; the tenant is decided per request.",
            detail="\n".join(warnings),
            remedy=f"In {ctx.source}: " + "; ".join(dict.fromkeys(fixes)) + ".",
            evidence=evidence,
        )
    replaced = [s for s in seen if s.replaced]
    return _result(
        cid,
        Status.PASS,
        "Realtime routes do not preserve the client Host; the tenant comes from the upstream host "
        + (", ".join(repr(h) for h in hosts) if hosts else "(no Realtime upstream)")
        + (f" (request-transformer sets Host {replaced[0].host!r} on {replaced[0].route!r}, same tenant)"
           if replaced else "")
        + ".",
        evidence=evidence,
    )


# ====================================================================== cloud DNS (KONG_DNS_ORDER, resolver, regions)
# Kong 2.8.1/3.9.3 kong/templates/kong_defaults.lua: dns_order = LAST,SRV,A,CNAME; dns_resolver empty (the
# nameservers of /etc/resolv.conf); there is no dns_search option: kong/resty/dns/client.lua takes the search
# list and ndots (default 1) from /etc/resolv.conf, which compose's dns_search/dns_opt write (notes/kong.md §12).

_KONG_DNS_DEFAULT_ORDER = "LAST,SRV,A,CNAME"
_DNS_RECORD_TYPES = ("LAST", "SRV", "A", "AAAA", "CNAME")
_DOCKER_DNS = "127.0.0.11"


def _kong_service_env(target: Target, ctx: KongLoaded) -> tuple[dict[str, str], Any]:
    stack = target.stack
    svc = stack.services.get(ctx.service_name) if stack is not None else None
    return dict(svc.environment) if svc is not None else dict(ctx.compose_env), svc


def _docker_names(target: Target, hosts: list[str]) -> list[str]:
    """The Realtime upstream hosts that only Docker's embedded DNS can answer (compose names and aliases)."""
    names = realtime_names(target.stack)
    return [h for h in hosts if h in names or "." not in h]


@register("kong.dns_order", "KONG_DNS_ORDER lets Kong resolve the Realtime host (A, no SRV surprise)",
          needs=("stack",), using=_KONG.provider())
def check_dns_order(target: Target, cid: str, ctx: KongLoaded) -> CheckResult:
    """The record types Kong asks for, in order: A (or AAAA) must be there; SRV lets DNS choose the port."""
    env, svc = _kong_service_env(target, ctx)
    raw = env.get("KONG_DNS_ORDER")
    order = [w.strip().upper() for w in (raw or _KONG_DNS_DEFAULT_ORDER).split(",") if w.strip()]
    hosts = _config(ctx).realtime_upstream_hosts()
    evidence = {"KONG_DNS_ORDER": raw or f"{_KONG_DNS_DEFAULT_ORDER} (Kong default)", "realtime_hosts": hosts}
    where = f"services.{ctx.service_name}.environment.KONG_DNS_ORDER"
    unknown = [w for w in order if w not in _DNS_RECORD_TYPES]
    if unknown or not ({"A", "AAAA"} & set(order)):
        return _result(
            cid, Status.FAIL,
            f"KONG_DNS_ORDER={raw!r} cannot resolve {', '.join(hosts) or 'the Realtime host'} to an address.",
            detail=("Unknown record types: " + ", ".join(unknown) + ". " if unknown else "")
            + "Without A (or AAAA) Kong finds no address and answers 503 \"name resolution failed\".",
            remedy=f"{where}: LAST,A,CNAME (as the official compose sets it).", evidence=evidence)
    if "SRV" in order:
        return _result(
            cid, Status.WARN,
            f"Kong asks for SRV records first ({evidence['KONG_DNS_ORDER']}): a DNS that publishes SRV records for "
            f"{', '.join(hosts) or 'the Realtime host'} chooses the port Kong connects to.",
            detail="Kong takes the target and port from an SRV answer instead of the service's port (4000). Cloud "
            "DNS does publish SRV records (Consul, AWS Cloud Map, Kubernetes headless Services with named ports); "
            "Docker's DNS does not, so the official stack removes SRV from the order.",
            remedy=f"{where}: LAST,A,CNAME.", evidence=evidence)
    if "AAAA" not in order and svc is not None and _realtime_ipv6_only(target):
        return _result(
            cid, Status.FAIL, "The Realtime network is IPv6-only but KONG_DNS_ORDER asks for no AAAA records.",
            detail=f"KONG_DNS_ORDER={evidence['KONG_DNS_ORDER']}; Kong finds no IPv4 address for "
            f"{', '.join(hosts)}.", remedy=f"{where}: LAST,AAAA,A,CNAME.", evidence=evidence)
    return _result(cid, Status.PASS, f"KONG_DNS_ORDER={evidence['KONG_DNS_ORDER']}: A records, no SRV.",
                   evidence=evidence)


def _realtime_ipv6_only(target: Target) -> bool:
    stack = target.stack
    rt = stack.realtime_service() if stack is not None else None
    if stack is None or rt is None:
        return False
    nets = stack.networks()
    cfgs = [nets.get(n) for n in (list(rt.networks) or ["default"])]
    return bool(cfgs) and all(isinstance(c, dict) and c.get("enable_ipv6") and c.get("enable_ipv4") is False
                              for c in cfgs)


@register("kong.dns_resolver", "Kong's resolver and search domains reach the Realtime container's name",
          needs=("stack",), using=_KONG.provider())
def check_dns_resolver(target: Target, cid: str, ctx: KongLoaded) -> CheckResult:
    """KONG_DNS_RESOLVER must keep Docker's DNS for compose names; dns_search/ndots must not rename them first."""
    env, svc = _kong_service_env(target, ctx)
    hosts = _config(ctx).realtime_upstream_hosts()
    docker_names = _docker_names(target, hosts)
    resolver = env.get("KONG_DNS_RESOLVER", "")
    raw = svc.raw if svc is not None else {}
    search = raw.get("dns_search") if isinstance(raw, dict) else None
    search_list = [search] if isinstance(search, str) else list(search or [])
    opts = raw.get("dns_opt") if isinstance(raw, dict) else None
    ndots = 1
    for opt in ([opts] if isinstance(opts, str) else list(opts or [])):
        if str(opt).startswith("ndots:") and str(opt)[6:].isdigit():
            ndots = int(str(opt)[6:])
    evidence = {"KONG_DNS_RESOLVER": resolver or "(unset: /etc/resolv.conf, Docker's 127.0.0.11)",
                "dns_search": search_list, "ndots": ndots, "realtime_hosts": hosts, "docker_names": docker_names}
    svc_path = f"services.{ctx.service_name}"
    if resolver and docker_names and _DOCKER_DNS not in resolver:
        return _result(
            cid, Status.FAIL,
            f"KONG_DNS_RESOLVER={resolver} bypasses Docker's DNS: Kong cannot resolve {', '.join(docker_names)}.",
            detail="Compose service and container names are answered only by Docker's embedded DNS (127.0.0.11); "
            "Kong asks the resolvers in KONG_DNS_RESOLVER directly and gets no answer for them, so every Realtime "
            "request ends in 503 \"name resolution failed\".",
            remedy=f"remove KONG_DNS_RESOLVER from {svc_path}.environment (compose's `dns:` keeps Docker's DNS and "
            f"forwards other names to your resolvers), or put {_DOCKER_DNS} first: KONG_DNS_RESOLVER: "
            f"{_DOCKER_DNS}:53,{resolver}.", evidence=evidence)
    renamed = [(h, f"{h}.{search_list[0]}") for h in hosts if search_list and h.count(".") < ndots]
    if renamed:
        return _result(
            cid, Status.WARN,
            f"Kong tries {renamed[0][1]} before {renamed[0][0]} (dns_search {search_list[0]}, ndots {ndots}).",
            detail=f"A name with fewer than ndots ({ndots}) dots is tried with each search domain first; if the cloud "
            f"DNS has {renamed[0][1]} (another region's or another stack's Realtime), Kong connects there and the "
            "tenant is looked up in the wrong Realtime.",
            remedy=f"use a name with at least {ndots} dot(s) for the Realtime upstream (e.g. "
            f"{renamed[0][0]}.supabase-realtime as container_name/alias), or lower ndots in {svc_path}.dns_opt.",
            evidence=evidence)
    return _result(cid, Status.PASS,
                   f"Kong resolves {', '.join(hosts) or 'the Realtime host'} through "
                   + (resolver or "Docker's DNS") + (f" (search {', '.join(search_list)}, ndots {ndots}: tried as "
                                                     "written first)" if search_list else "") + ".",
                   evidence=evidence)


@register("kong.realtime_region_host", "Each Realtime upstream host starts with the tenant, whatever its region suffix",
          needs=("stack",), using=_KONG.provider())
def check_region_host(target: Target, cid: str, ctx: KongLoaded) -> CheckResult:
    """Multi-region naming: ``<tenant>.supabase-realtime-<region>``; the region goes after the first label.

    Realtime takes the tenant from the first label of the Host (realtime-facts §1.1); the tenant
    the stack implies comes from :func:`rtbook.config.gateway.implied_tenant`, the one place for it.
    """
    from rtbook.config.gateway import implied_tenant, realtime_upstream

    upstream = realtime_upstream(target.stack) if target.stack is not None else None
    hosts = list(upstream.host_headers) if upstream is not None else []
    expected = target.tenant or (implied_tenant(target.stack) if target.stack is not None else "")
    if upstream is not None and expected in upstream.routed_tenants:
        # A further tenant of a multi-tenant stack: judged by the routes its public hosts take.
        hosts = list(dict.fromkeys(h.rsplit(":", 1)[0] for _, h in upstream.routed
                                   if tenant_of(h.rsplit(":", 1)[0]) == expected))
    tenants = {h: tenant_of(h) for h in hosts}
    evidence = {"hosts": hosts, "tenants": tenants, "expected_tenant": expected}
    wrong = {h: t for h, t in tenants.items() if expected and t != expected}
    if wrong:
        host, tenant = next(iter(wrong.items()))
        rest = host.split(".", 1)[1] if "." in host else "supabase-realtime"
        return _result(
            cid, Status.FAIL,
            f"Realtime upstream host {host!r} makes Realtime look up tenant {tenant!r}, not {expected!r}.",
            detail="Realtime reads the tenant from the first label of the Host only; a region belongs in the suffix "
            f"(e.g. {expected}.{rest}), never in the first label. Hosts: "
            + ", ".join(f"{h} → tenant {t}" for h, t in tenants.items()) + ".",
            remedy=f"In {ctx.source}: use url http://{expected}.{rest}:4000/socket (and the same name as the Realtime "
            "container's container_name or network alias), or seed the tenant "
            f"{tenant!r} (SELF_HOST_TENANT_NAME: {tenant}).", evidence=evidence)
    return _result(cid, Status.PASS,
                   "Realtime upstream hosts name the tenant in their first label: "
                   + (", ".join(f"{h} → {t}" for h, t in tenants.items()) or "none") + ".", evidence=evidence)
