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
    BUNDLED_PLUGINS,
    KNOWN_FORMAT_VERSIONS,
    KongConfig,
    KongConsumer,
    KongLoaded,
    KongRoute,
    KongService,
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
    return _result(
        cid,
        Status.PASS,
        f"kong.yml parses ({len(config.services)} services, {len(config.routes)} routes, {ctx.style} expansion).",
        evidence=evidence,
    )


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


def _enabled_plugins(value: str | None) -> tuple[set[str], bool]:
    """Plugins KONG_PLUGINS loads, and whether it includes ``bundled``."""
    if value is None or not value.strip():
        return set(BUNDLED_PLUGINS), True
    names = {p.strip() for p in value.split(",") if p.strip()}
    bundled = "bundled" in names
    if bundled:
        names |= BUNDLED_PLUGINS
    names.discard("off")
    return names, bundled


@register("kong.plugins_enabled", "Every plugin in kong.yml is listed in KONG_PLUGINS", needs=("stack",),
          using=_KONG.provider())
def check_plugins_enabled(target: Target, cid: str, ctx: KongLoaded) -> CheckResult:
    """Kong refuses a declarative config that uses a plugin ``KONG_PLUGINS`` does not load."""
    config = _config(ctx)
    setting = ctx.compose_env.get("KONG_PLUGINS")
    enabled, _ = _enabled_plugins(setting)
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


@register("kong.realtime_ws", "Kong routes /realtime/v1/ to Realtime's /socket over WebSocket", needs=("stack",),
          using=_KONG.provider())
def check_realtime_ws(target: Target, cid: str, ctx: KongLoaded) -> CheckResult:
    """``/realtime/v1/websocket`` reaches ``<host>:4000/socket/websocket`` on a ``protocol: ws`` service."""
    config = _config(ctx)
    port = realtime_port(target)
    matched = config.route_for(REALTIME_WS_PATH)
    if matched is None:
        return _result(
            cid,
            Status.FAIL,
            f"No Kong route matches {REALTIME_WS_PATH}; WebSockets get 404.",
            detail=f"{ctx.source} has no route with a path prefix of /realtime/v1/.",
            remedy=f"Add to {ctx.source} the official service realtime-v1-ws: url "
            f"http://realtime-dev.supabase-realtime:{port}/socket, protocol: ws, route paths "
            "[/realtime/v1/] with strip_path: true.",
        )
    route, service = matched
    upstream = upstream_path(route, service, REALTIME_WS_PATH)
    evidence = {
        "route": route.name,
        "service": service.name if service else None,
        "upstream": service.upstream if service else None,
        "upstream_path": upstream,
        "strip_path": route.strip_path,
        "paths": list(route.paths),
    }
    compose_fix = ""
    problems: list[str] = []
    fixes: list[str] = []
    where = f"{ctx.source}: {_route_label(route, service)}"
    if config.effective_plugin(route, "request-termination") is not None:
        problems.append(f"{where} is terminated by request-termination, so WebSockets never reach Realtime.")
        fixes.append(f"remove the request-termination plugin from {route.name!r}")
    if service is None:
        problems.append(f"{where} has no service.")
        fixes.append(f"attach route {route.name!r} to a service with url http://<realtime-host>:{port}/socket")
    else:
        if service.protocol not in ("ws", "wss"):
            problems.append(
                f"{where}: service protocol is {service.protocol!r}, the official config sets protocol: ws."
            )
            fixes.append(f"set `protocol: ws` on service {service.name!r}")
        if service.port != port:
            problems.append(f"{where}: upstream port is {service.port}, Realtime listens on {port} (its PORT).")
            fixes.append(f"use port {port} in the url of service {service.name!r}")
        names = realtime_names(target.stack)
        if names and service.host not in names:
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
    return _result(
        cid,
        Status.PASS,
        f"{REALTIME_WS_PATH} -> {service.protocol}://{service.host}:{service.port}{upstream} "
        f"(route {route.name!r}, tenant {tenant_of(service.host)!r} from the upstream host).",
        evidence=evidence,
    )


@register("kong.realtime_rest", "Kong routes /realtime/v1/api to Realtime's /api", needs=("stack",),
          using=_KONG.provider())
def check_realtime_rest(target: Target, cid: str, ctx: KongLoaded) -> CheckResult:
    """``/realtime/v1/api/broadcast`` reaches ``<host>:4000/api/broadcast``."""
    config = _config(ctx)
    port = realtime_port(target)
    matched = config.route_for(REALTIME_REST_PATH)
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
        if service.protocol not in ("http", "https"):
            problems.append(f"{where}: service protocol is {service.protocol!r}; the REST API needs http.")
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


def _consumers_with(config: KongConfig, value: str | None) -> list[KongConsumer]:
    if not value:
        return []
    return [c for c in config.consumers if any(k.reveal() == value for k in c.keyauth_credentials)]


@register("kong.realtime_auth", "Kong key-auth and ACL let the anon and service keys into Realtime", needs=("stack",),
          using=_KONG.provider())
def check_realtime_auth(target: Target, cid: str, ctx: KongLoaded) -> CheckResult:
    """key-auth keeps the apikey, the ACL admits anon and admin, and consumers hold both keys."""
    config = _config(ctx)
    env = ctx.env
    anon = env.get("SUPABASE_ANON_KEY") or target.lookup("ANON_KEY")
    service_key = env.get("SUPABASE_SERVICE_KEY") or target.lookup("SERVICE_ROLE_KEY")
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
                f'requests with that key get 401 "Invalid authentication credentials".'
            )
            fixes.append(f"give consumer {label!r} `keyauth_credentials: [{{key: ${var}}}]`")
    evidence: dict[str, Any] = {
        "consumers": {
            c.username: {"keys": len(c.keyauth_credentials), "groups": list(c.groups)} for c in config.consumers
        }
    }
    routes_checked = []
    for path, label in ((REALTIME_WS_PATH, "WebSocket"), (REALTIME_REST_PATH, "REST")):
        matched = config.route_for(path)
        if matched is None:
            continue
        route, _ = matched
        routes_checked.append(route.name)
        key_auth = config.effective_plugin(route, "key-auth")
        acl = config.effective_plugin(route, "acl")
        where = f"{ctx.source}: route {route.name!r} ({label})"
        if key_auth is None:
            warnings.append(f"{where} has no key-auth plugin: any client reaches Realtime without an API key.")
            fixes.append(
                f"add `- name: key-auth` with `config: {{hide_credentials: false}}` to route {route.name!r}'s service"
            )
        elif key_auth.config.get("hide_credentials") is True and label == "WebSocket":
            problems.append(
                f"{where}: key-auth has hide_credentials: true, so Kong strips the apikey that Realtime "
                "needs as its socket token; every join fails."
            )
            fixes.append(f"set `hide_credentials: false` on key-auth for {route.name!r}")
        key_names = key_auth.config.get("key_names") if key_auth is not None else None
        if isinstance(key_names, list) and "apikey" not in [str(k) for k in key_names]:
            problems.append(
                f"{where}: key-auth looks for {key_names} only, but supabase clients send the key as 'apikey' "
                '(header and ?apikey= query); every request gets 401 "No API key found in request".'
            )
            fixes.append(f"add 'apikey' to key-auth's key_names on {route.name!r} (or remove key_names)")
        if acl is None:
            if key_auth is not None:
                warnings.append(f"{where} has no acl plugin: any consumer may use it.")
            continue
        allow = [str(g) for g in (acl.config.get("allow") or ())] if isinstance(acl.config.get("allow"), list) else []
        deny = [str(g) for g in (acl.config.get("deny") or ())] if isinstance(acl.config.get("deny"), list) else []
        evidence[f"acl_{label.lower()}"] = {"allow": allow, "deny": deny}
        for who in ("anon", "service_role"):
            for consumer in holders.get(who, []):
                ok = (not allow or any(g in allow for g in consumer.groups)) and not any(
                    g in deny for g in consumer.groups
                )
                if not ok:
                    problems.append(
                        f"{where}: the acl (allow {allow}, deny {deny}) rejects consumer "
                        f"{consumer.username!r} (groups {list(consumer.groups)}); its key gets 403 "
                        '"You cannot consume this service".'
                    )
                    group = consumer.groups[0] if consumer.groups else ("anon" if who == "anon" else "admin")
                    fixes.append(
                        f"add {group!r} to the acl allow list of {route.name!r}"
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
            remedy=f"In {ctx.source}: " + "; ".join(fixes) + ".",
            evidence=evidence,
        )
    if warnings:
        return _result(
            cid,
            Status.WARN,
            "Kong's Realtime authentication is incomplete.",
            detail="\n".join(warnings),
            remedy=(f"In {ctx.source}: " + "; ".join(fixes) + ".")
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
    matched = config.route_for(REALTIME_TENANTS_PATH)
    if matched is None:
        return _result(
            cid,
            Status.PASS,
            f"No Kong route matches {REALTIME_TENANTS_PATH}; the tenant API is not exposed.",
        )
    route, service = matched
    term = config.effective_plugin(route, "request-termination")
    evidence = {"route": route.name, "service": service.name if service else None}
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
        "key can list, change or delete tenants.",
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
    """``preserve_host: true`` on a Realtime route makes the client's Host, not the upstream, choose the tenant."""
    config = _config(ctx)
    bad = [
        r
        for r in config.realtime_routes()
        if r.preserve_host and config.effective_plugin(r, "request-termination") is None
    ]
    hosts = config.realtime_upstream_hosts()
    evidence: dict[str, Any] = {"upstream_hosts": hosts, "tenants": [tenant_of(h) for h in hosts]}
    if bad:
        public, public_host = public_url(target)
        names = ", ".join(repr(r.name) for r in bad)
        return _result(
            cid,
            Status.FAIL,
            f"preserve_host: true on {names}: Realtime takes the tenant from the client's Host, not the upstream.",
            detail=f"With preserve_host Kong forwards the Host the client used (e.g. {public_host!r} from "
            f"SUPABASE_PUBLIC_URL={public}), so Realtime looks up tenant {tenant_of(public_host)!r} instead of "
            f"{', '.join(repr(tenant_of(h)) for h in hosts) or 'the upstream host label'}; joins fail with "
            '"Tenant not found".',
            remedy=f"In {ctx.source}: remove `preserve_host: true` (or set it to false) on route(s) {names}.",
            evidence=evidence,
        )
    return _result(
        cid,
        Status.PASS,
        "Realtime routes do not preserve the client Host; the tenant comes from the upstream host "
        + (", ".join(repr(h) for h in hosts) if hosts else "(no Realtime upstream)")
        + ".",
        evidence=evidence,
    )
