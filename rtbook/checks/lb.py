"""``lb.*`` checks: the load balancer in front of the stack, judged for Realtime's WebSockets.

Each ``--lb`` file is read by its kind's parser (:mod:`rtbook.config.lb`) and every rule returns
one result per file. Remedies are written in that load balancer's own syntax, with the route,
upstream and ``file:line`` filled in.

The numbers the rules use, from source:
- realtime-js (supabase-js v2.112.2 ``packages/core/realtime-js/src/RealtimeClient.ts``
  ``CONNECTION_TIMEOUTS.HEARTBEAT_INTERVAL: 25000``) and realtime-py (2.7.0
  ``realtime/types.py`` ``DEFAULT_HEARTBEAT_INTERVAL = 25``) send a heartbeat every 25 s; the
  server answers each one, so a quiet socket carries a frame each way every 25 s.
- Realtime's endpoint keeps Phoenix's WebSocket ``timeout`` (60 s without a frame from the
  client closes the socket; realtime-facts §5.3).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from rtbook.checks._common import result as _result
from rtbook.config.lb import LbConfig, LbRoute, Setting
from rtbook.exceptions import InputError
from rtbook.registry import register
from rtbook.results import CheckResult, Status

if TYPE_CHECKING:
    from rtbook.config.kong import KongConfig
    from rtbook.target import Target

# (client, heartbeat seconds, where the number is defined)
CLIENT_HEARTBEATS: tuple[tuple[str, float, str], ...] = (
    ("realtime-js (supabase-js v2.112.2)", 25.0,
     "packages/core/realtime-js/src/RealtimeClient.ts CONNECTION_TIMEOUTS.HEARTBEAT_INTERVAL"),
    ("realtime-py 2.7.0", 25.0, "realtime/types.py DEFAULT_HEARTBEAT_INTERVAL"),
)
HEARTBEAT_S = max(s for _, s, _ in CLIENT_HEARTBEATS)
# Phoenix's WebSocket transport timeout, which Realtime's endpoint does not override.
SERVER_IDLE_S = 60.0
WS_PATH = "/realtime/v1/websocket"

_STICKINESS_TRUTH = (
    "What stickiness does: it sends a client's new connections (reconnects, the REST broadcast and longpoll "
    "requests) to the node it used before. What it does not do: make Realtime nodes share broadcasts or "
    "presence. Each WebSocket already stays on one node for its whole life; two clients on two unclustered "
    "nodes never see each other's broadcasts or presence, sticky or not. Only a Realtime cluster fixes that "
    "(see the cluster.* checks and realtime.cluster)."
)


# ====================================================================== provider


Loaded = list[tuple[str, LbConfig | str]]


def _loaded(target: Target, cid: str) -> Loaded:
    """Every ``--lb`` file, parsed once per target: its config, or the parse error."""
    key = "lb.loaded"
    if key not in target.cache:
        from rtbook.config.lb import load_lb

        out: Loaded = []
        for spec in target.lb:
            try:
                out.append((spec, load_lb(spec)))
            except InputError as exc:
                out.append((spec, str(exc)))
        target.cache[key] = out
    cached: Loaded = target.cache[key]
    return cached


def _each(target: Target, cid: str, judge: Callable[[str, LbConfig], CheckResult]) -> Iterator[CheckResult]:
    for spec, config in _loaded(target, cid):
        if isinstance(config, str):
            yield _result(cid, Status.SKIP, f"Skipped: {spec} could not be read (see lb.parse).", detail=config)
        elif not config.realtime_routes() and cid != "lb.realtime_route":
            yield _result(cid, Status.SKIP, f"Skipped: no route in {config.source} takes {WS_PATH} "
                          "(see lb.realtime_route).")
        else:
            yield judge(cid, config)


def _ev(config: LbConfig, **more: Any) -> dict[str, Any]:
    return {"file": config.source, "kind": config.kind, "parser": config.parser, **more}


# ====================================================================== lb.parse


@register("lb.parse", "Each --lb file parses as the load balancer it is", needs=("lb",), using=_loaded)
def check_parse(target: Target, cid: str, loaded: Loaded) -> Iterator[CheckResult]:
    """The file is read by its kind's parser; evidence names the parser (Caddy: ``caddy adapt`` or the fallback)."""
    for spec, config in loaded:
        if isinstance(config, str):
            yield _result(cid, Status.FAIL, f"{spec} does not parse.", detail=config,
                          remedy="Fix the file at the line named (the load balancer would refuse it too), or name "
                          "its kind: --lb nginx:FILE, haproxy:, caddy:, traefik:, alb:.", evidence={"file": spec})
            continue
        routes = [f"{r.name} ({r.where})" for r in config.routes]
        yield _result(cid, Status.PASS,
                      f"{config.source}: {config.kind} config, {len(config.routes)} route(s), "
                      f"read with {config.parser}.",
                      evidence=_ev(config, files=list(config.files), routes=routes, notes=list(config.notes)))


# ====================================================================== lb.realtime_route


def _route_remedy(config: LbConfig, route: LbRoute | None) -> str:
    up = route.upstream if route else "kong"
    server = (route.servers[0] if route and route.servers else "kong:8000")
    at = f" (at {route.where})" if route else ""
    return {
        "nginx": (f"in `location {route.paths[0]}`{at} write `proxy_pass http://{up};` " if route and route.rewrite
                  else f"add to the server block{at}: `location /realtime/v1/ {{ proxy_pass http://{up}; }}` ")
        + "(no URI after the upstream, so /realtime/v1/ reaches the gateway unchanged)",
        "haproxy": f"in the frontend{at}: `use_backend {up} if {{ path_beg /realtime/v1/ }}`",
        "caddy": f"in the site block{at}: `handle /realtime/v1/* {{ reverse_proxy {server} }}` "
                 "(handle, not handle_path, which strips the prefix)",
        "traefik": f"give the router{at} `rule: PathPrefix(`/realtime/v1/`)` (or a Host rule alone) and no "
                   "stripPrefix middleware for /realtime/v1",
        "alb": "add a listener rule with condition path-pattern /realtime/v1/* forwarding to the Kong target group",
    }[config.kind]


def _direct_remedy(config: LbConfig, r: LbRoute) -> str:
    return {
        "nginx": f"in `location {r.paths[0]}` ({r.where}) write `proxy_pass http://"
                 f"{r.servers[0] if len(r.servers) == 1 and r.servers[0].startswith(r.upstream + ':') else r.upstream}"
                 "/socket/;`",
        "haproxy": f"in backend {r.upstream} ({r.where}) add `http-request replace-path /realtime/v1/(.*) /socket/\\1`",
        "caddy": f"({r.where}) proxy it as\n    handle_path /realtime/v1/* {{\n        rewrite * /socket{{path}}\n"
                 f"        reverse_proxy {' '.join(r.servers)}\n    }}\n",
        "traefik": f"add a replacePathRegex middleware (regex ^/realtime/v1/(.*), replacement /socket/$1) to the "
                   f"router ({r.where})",
        "alb": "an ALB cannot rewrite paths: forward /realtime/v1/ to the Kong target group",
    }[config.kind]


@register("lb.realtime_route", "A route takes /realtime/v1/ to the gateway with the path unchanged", needs=("lb",),
          using=_loaded)
def check_realtime_route(target: Target, cid: str, loaded: Loaded) -> Iterator[CheckResult]:
    """``/realtime/v1/websocket`` matches a route and reaches the backend still starting with ``/realtime/v1/``.

    The gateway (Kong/Envoy) routes on ``/realtime/v1/``; a proxy that strips the prefix sends
    ``/websocket``, which no gateway route matches.
    """
    def judge(cid: str, config: LbConfig) -> CheckResult:
        if config.kind == "alb":
            return _result(cid, Status.PASS, f"{config.source}: the ALB forwards paths unchanged to its target group.",
                           detail="Listener rules are not in this file; an ALB never rewrites the path.",
                           evidence=_ev(config))
        routes = config.realtime_routes()
        if not routes:
            return _result(cid, Status.FAIL, f"{config.source}: no route takes {WS_PATH}.",
                           detail="Routes found: "
                           + ("; ".join(f"{r.name} paths {list(r.paths)}" for r in config.routes) or "none") + ".",
                           remedy=_route_remedy(config, config.routes[0] if config.routes else None) + ".",
                           evidence=_ev(config))
        direct = [r for r in routes if _backend_is_realtime(r)]
        wrong_direct = [r for r in direct if r.forwarded(WS_PATH) != "/socket/websocket"]
        if wrong_direct:
            r = wrong_direct[0]
            return _result(
                cid, Status.FAIL,
                f"{config.source}: {r.name} sends {WS_PATH} straight to Realtime ({', '.join(r.servers)}) as "
                f"{r.forwarded(WS_PATH)!r}; Realtime serves /socket/websocket.",
                detail="Without the gateway, the load balancer must do Kong's rewrite (/realtime/v1/ → /socket/) and "
                "send a Host whose first label is the tenant; it also skips Kong's key-auth.",
                remedy=_direct_remedy(config, r) + ", or send /realtime/v1/ to the gateway (Kong :8000) instead.",
                evidence=_ev(config, forwarded=r.forwarded(WS_PATH), servers=list(r.servers)))
        bad = [r for r in routes if r not in direct and not r.forwarded(WS_PATH).startswith("/realtime/v1/")]
        if bad:
            r = bad[0]
            return _result(
                cid, Status.FAIL,
                f"{config.source}: {r.name} sends {WS_PATH} to the gateway as {r.forwarded(WS_PATH)!r}.",
                detail=f"The route at {r.where} replaces {r.rewrite[0] if r.rewrite else ''!r} before proxying; the "
                "gateway routes Realtime on /realtime/v1/ and answers the shortened path with 404 (Kong: no Route "
                "matched).",
                remedy=_route_remedy(config, r) + ".",
                evidence=_ev(config, routes=[x.name for x in routes], forwarded=r.forwarded(WS_PATH)))
        how = "as /socket/websocket (the load balancer plays the gateway: no key-auth, and the Host it sends picks "\
            "the tenant)" if direct else "unchanged"
        return _result(cid, Status.PASS,
                       f"{config.source}: {WS_PATH} takes {', '.join(r.name for r in routes)} to "
                       f"{', '.join(sorted({s for r in routes for s in r.servers}))} {how}.",
                       evidence=_ev(config, routes=[f"{r.name} ({r.where})" for r in routes]))

    yield from _each(target, cid, judge)


# ====================================================================== lb.websocket_upgrade


@register("lb.websocket_upgrade", "The load balancer speaks HTTP/1.1 and forwards Upgrade/Connection",
          needs=("lb",), using=_loaded)
def check_upgrade(target: Target, cid: str, loaded: Loaded) -> Iterator[CheckResult]:
    """nginx needs ``proxy_http_version 1.1`` and both headers set; HAProxy, Caddy and Traefik do it themselves."""
    def judge(cid: str, config: LbConfig) -> CheckResult:
        problems: list[str] = []
        fixes: list[str] = []
        for r in config.realtime_routes():
            if config.kind == "nginx":
                missing = []
                if not r.http11:
                    missing.append("proxy_http_version 1.1 (nginx defaults to HTTP/1.0, which has no Upgrade)")
                if not r.upgrade:
                    missing.append("proxy_set_header Upgrade $http_upgrade and Connection \"upgrade\" (nginx does "
                                   "not pass hop-by-hop headers on its own)")
                if missing:
                    problems.append(f"{r.name} at {r.where}: missing " + "; ".join(missing) + ".")
                    fixes.append(f"in `location {r.paths[0]}` at {r.where} add:\n"
                                 "    proxy_http_version 1.1;\n"
                                 "    proxy_set_header Upgrade $http_upgrade;\n"
                                 "    proxy_set_header Connection \"upgrade\";\n"
                                 "    proxy_set_header Host $host;\n"
                                 "(a location that sets any proxy_set_header drops the ones inherited from above, so "
                                 "repeat the others there too)")
            elif config.kind == "alb" and r.http11 is False:
                problems.append(f"the target group's ProtocolVersion is not HTTP1 ({r.where}): an ALB sends an HTTP2 "
                                "or GRPC target group only HTTP/2 requests, and the WebSocket handshake is HTTP/1.1.")
                fixes.append(f"set the target group's ProtocolVersion to HTTP1 ({r.where}); it cannot be changed on "
                             "an existing target group, so create a new one")
        if problems:
            return _result(cid, Status.FAIL, f"{config.source}: the WebSocket upgrade does not reach the gateway.",
                           detail="\n".join(problems) + "\nThe browser sees \"WebSocket connection ... failed\" and "
                           "realtime-js keeps reconnecting (supabase/realtime#472, #993).",
                           remedy="\n".join(fixes), evidence=_ev(config))
        how = {"nginx": "proxy_http_version 1.1 with Upgrade and Connection forwarded",
               "haproxy": "HAProxy forwards the upgrade itself (HTTP/1.1, tunnel after 101)",
               "caddy": "Caddy's reverse_proxy forwards the upgrade itself",
               "traefik": "Traefik forwards the upgrade itself",
               "alb": "the ALB forwards WebSocket upgrades on HTTP/1.1 target groups"}[config.kind]
        return _result(cid, Status.PASS, f"{config.source}: {how}.", evidence=_ev(config))

    yield from _each(target, cid, judge)


# ====================================================================== lb.idle_timeout


def _timeout_remedy(config: LbConfig, r: LbRoute, t: Setting) -> str:
    where = t.where if ":" in t.where else r.where
    return {
        "nginx": f"set `{t.name} 3600s;` in `location {r.paths[0]}` ({where})",
        "haproxy": f"add `timeout tunnel 1h` to backend {r.upstream} ({where}); it applies once the connection is "
                   "upgraded and leaves timeout client/server for plain HTTP",
        "caddy": f"remove `{t.name}` from the transport block of reverse_proxy {r.upstream} ({where}), or raise it "
                 "to 1h",
        "traefik": "raise the entryPoint's respondingTimeouts in the static config",
        "alb": f"set idle_timeout.timeout_seconds to 3600 ({where}): Terraform `idle_timeout = 3600` on aws_lb, "
               "CloudFormation LoadBalancerAttributes Key idle_timeout.timeout_seconds Value \"3600\", or "
               "`aws elbv2 modify-load-balancer-attributes --attributes Key=idle_timeout.timeout_seconds,Value=3600`",
    }[config.kind]


@register("lb.idle_timeout", "Idle/read timeouts outlast the clients' 25 s heartbeat", needs=("lb",), using=_loaded)
def check_idle_timeout(target: Target, cid: str, loaded: Loaded) -> Iterator[CheckResult]:
    """A timeout at or below the heartbeat closes quiet sockets; below 60 s it leaves no room for a late heartbeat."""
    clients = "; ".join(f"{name} every {s:g} s ({where})" for name, s, where in CLIENT_HEARTBEATS)

    def judge(cid: str, config: LbConfig) -> CheckResult:
        short: list[str] = []
        tight: list[str] = []
        fixes: list[str] = []
        seen: list[str] = []
        for r in config.realtime_routes():
            for t in r.timeouts:
                seen.append(f"{t.name} {t.value} ({t.where})")
                if t.seconds is None:
                    continue
                if t.seconds <= HEARTBEAT_S:
                    short.append(f"{r.name}: {t.name} {t.value} ({t.where}) closes a WebSocket that is quiet for "
                                 f"{t.seconds:g} s, before the next heartbeat at {HEARTBEAT_S:g} s.")
                    fixes.append(_timeout_remedy(config, r, t))
                elif t.seconds < SERVER_IDLE_S:
                    tight.append(f"{r.name}: {t.name} {t.value} ({t.where}) is shorter than Realtime's own "
                                 f"{SERVER_IDLE_S:g} s: a heartbeat a few seconds late (a throttled background tab, a "
                                 "busy event loop) drops the socket at the load balancer first.")
                    fixes.append(_timeout_remedy(config, r, t))
        evidence = _ev(config, timeouts=seen, heartbeat_s=HEARTBEAT_S, server_idle_s=SERVER_IDLE_S)
        detail_tail = f"Clients: {clients}. Realtime closes a socket after {SERVER_IDLE_S:g} s without a frame."
        if short:
            return _result(cid, Status.FAIL,
                           f"{config.source}: a timeout closes quiet Realtime sockets before the {HEARTBEAT_S:g} s "
                           "heartbeat.",
                           detail="\n".join(short + tight) + "\nClients see the socket close about every "
                           "timeout and reconnect (channels rejoin, messages in between are lost).\n" + detail_tail,
                           remedy="\n".join(dict.fromkeys(fixes)), evidence=evidence)
        if tight:
            return _result(cid, Status.WARN,
                           f"{config.source}: a timeout is shorter than Realtime's {SERVER_IDLE_S:g} s.",
                           detail="\n".join(tight) + "\n" + detail_tail, remedy="\n".join(dict.fromkeys(fixes)),
                           evidence=evidence)
        if not seen:
            what = ("idle_timeout.timeout_seconds is not in this file (ALB default 60 s)" if config.kind == "alb"
                    else "no WebSocket timeout in the dynamic config (Traefik's entryPoint timeouts are static "
                    "settings, not read)" if config.kind == "traefik" else "no timeout applies")
            return _result(cid, Status.PASS, f"{config.source}: {what}.", detail=detail_tail, evidence=evidence)
        return _result(cid, Status.PASS, f"{config.source}: timeouts outlast the heartbeat ({'; '.join(seen)}).",
                       detail=detail_tail, evidence=evidence)

    yield from _each(target, cid, judge)


# ====================================================================== lb.buffering


@register("lb.buffering", "Nothing on the Realtime route holds WebSocket frames back", needs=("lb",), using=_loaded)
def check_buffering(target: Target, cid: str, loaded: Loaded) -> Iterator[CheckResult]:
    """What holds frames: nginx ``tcp_nodelay off`` (Nagle). Response buffering does not touch upgraded sockets.

    nginx relays an upgraded connection as a tunnel (``proxy_buffering`` has no effect there);
    Caddy and Traefik hijack the connection (Traefik's buffering middleware passes the hijack
    through); HAProxy tunnels after 101. So a ``proxy_buffering on`` is reported, not failed.
    """
    def judge(cid: str, config: LbConfig) -> CheckResult:
        problems: list[str] = []
        fixes: list[str] = []
        notes: list[str] = []
        for r in config.realtime_routes():
            for b in r.buffering:
                if config.kind == "nginx" and b.name == "tcp_nodelay" and b.value == "off":
                    problems.append(f"{r.name}: tcp_nodelay off ({b.where}) lets Nagle's algorithm hold small frames "
                                    "(heartbeats, broadcasts) until the previous one is acknowledged, up to the "
                                    "peer's delayed-ACK time (~40-200 ms) per frame.")
                    fixes.append(f"remove `tcp_nodelay off;` at {b.where} (nginx turns TCP_NODELAY on for WebSocket "
                                 "proxying by default)")
                else:
                    notes.append(f"{r.name}: {b.name} {b.value} ({b.where}) applies to plain HTTP responses; after the "
                                 f"101 {config.kind} relays WebSocket frames as they arrive.")
        evidence = _ev(config, buffering=notes)
        if problems:
            return _result(cid, Status.FAIL, f"{config.source}: WebSocket frames are held back on the Realtime route.",
                           detail="\n".join(problems + notes), remedy="\n".join(fixes), evidence=evidence)
        return _result(cid, Status.PASS,
                       f"{config.source}: nothing holds WebSocket frames"
                       + (f" ({len(notes)} buffering setting(s) apply to plain HTTP only)." if notes else "."),
                       detail="\n".join(notes), evidence=evidence)

    yield from _each(target, cid, judge)


# ====================================================================== lb.health_check


def _backend_is_realtime(route: LbRoute) -> bool:
    # Realtime listens on 4000 (compose PORT); the gateway on 8000/8443.
    return bool(route.servers) and all(s.rstrip("/").endswith(":4000") for s in route.servers)


def _kong_for(target: Target) -> tuple[KongConfig | None, str]:
    """The Kong config the load balancer's backends run: the stack's kong.yml, else the official one rtbook ships."""
    key = "lb.kong"
    if key not in target.cache:
        from rtbook.config.kong import load_kong, parse_kong

        found: tuple[KongConfig | None, str] = (None, "")
        if target.stack is not None and target.stack.gateway_kind() == "kong":
            try:
                found = (load_kong(target.stack), "the stack's kong.yml")
            except InputError:
                found = (None, "")
        if found[0] is None:
            from importlib import resources

            path = resources.files("rtbook") / "data" / "official" / "volumes" / "api" / "kong.yml"
            try:
                found = (parse_kong(path.read_text(), source="official kong.yml"), "the official kong.yml")
            except (OSError, InputError):
                found = (None, "")
        target.cache[key] = found
    cached: tuple[KongConfig | None, str] = target.cache[key]
    return cached


def predict_health(route: LbRoute, kong: KongConfig | None = None, kong_source: str = "") -> tuple[int | None, str]:
    """What the backend answers to the health check request, and why (None when rtbook cannot tell)."""
    h = route.health
    assert h is not None
    path = h.path.split("?", 1)[0]
    if path.startswith("("):
        return None, "a TCP connect check"
    if _backend_is_realtime(route):
        if path == "/healthcheck":
            return 200, "Realtime answers GET /healthcheck with 200 ok without auth"
        if re.match(r"/api/tenants/[^/]+/health", path):
            if "authorization" in h.headers:
                return None, "Realtime's tenant health with an Authorization header"
            return 403, f"Realtime's {path} needs Authorization: Bearer <JWT signed with API_JWT_SECRET>"
        return None, f"Realtime's answer to {path}"
    if kong is None:
        return None, f"the gateway's answer to {path}"
    # Otherwise the backend is the gateway: Kong's own router on its kong.yml decides.
    found = kong.match(path)
    if found is None:
        return 404, f"no route in {kong_source} matches {path}: Kong answers 404 \"no Route matched with those values\""
    r = found.route
    blocked = kong.effective_plugin(r, "request-termination")
    if blocked is not None:
        status = blocked.config.get("status_code", 503)
        return (status if isinstance(status, int) else 503), f"route {r.name!r} in {kong_source} is request-terminated"
    if kong.effective_plugin(r, "key-auth") is not None and "apikey" not in h.headers and "apikey=" not in h.path:
        return 401, f"route {r.name!r} in {kong_source} has key-auth: without an apikey Kong answers 401"
    if kong.effective_plugin(r, "basic-auth") is not None and "authorization" not in h.headers:
        return 401, f"route {r.name!r} in {kong_source} has basic-auth (the dashboard): without credentials Kong " \
            "answers 401"
    if path.startswith("/realtime/v1/api/ping"):
        return 200, f"route {r.name!r} in {kong_source} passes the apikey to Realtime's /api/ping"
    return None, f"route {r.name!r} in {kong_source} passes {path} to {found.service.name if found.service else '?'}"


def _accepts(expect: str, status: int) -> bool | None:
    text = expect.lower()
    codes = re.findall(r"\d{3}(?:-\d{3})?", text)
    if "2xx/3xx" in text:
        return 200 <= status < 400
    if "2xx" in text and not codes:
        return 200 <= status < 300
    if not codes:
        return None
    for c in codes:
        lo, _, hi = c.partition("-")
        if int(lo) <= status <= int(hi or lo):
            return True
    if "rstatus" in text or "!" in text:
        return None
    return False


def _health_remedy(config: LbConfig, r: LbRoute) -> str:
    h = r.health
    assert h is not None
    return {
        "haproxy": f"in backend {r.upstream} ({h.where}): `option httpchk` with "
                   "`http-check send meth GET uri /realtime/v1/api/ping hdr apikey <ANON_KEY>` and "
                   "`http-check expect status 200` (the anon key is public; this proves Kong, Realtime and the tenant)",
        "caddy": f"in reverse_proxy {r.upstream} ({h.where}): `health_uri /realtime/v1/api/ping` with "
                 "`health_headers { apikey <ANON_KEY> }`",
        "traefik": f"on service {r.upstream} ({h.where}): `healthCheck: {{path: /realtime/v1/api/ping, headers: "
                   "{apikey: <ANON_KEY>}}}`",
        "alb": f"an ALB health check cannot send the apikey, so let it prove that Kong routes the Realtime path: "
               f"HealthCheckPath \"/realtime/v1/api/ping\" with Matcher HttpCode \"401\" ({h.where}) (Kong's key-auth "
               "answers 401 there; Terraform: health_check { path = \"/realtime/v1/api/ping\" matcher = \"401\" })",
        "nginx": f"(NGINX Plus) `health_check uri=/realtime/v1/api/ping;` with a `match` block and "
                 f"`proxy_set_header apikey <ANON_KEY>;` ({h.where})",
    }[config.kind]


@register("lb.health_check", "The load balancer's health check can pass", needs=("lb",), using=_loaded)
def check_health(target: Target, cid: str, loaded: Loaded) -> Iterator[CheckResult]:
    """The status the backend gives the health request is one the check accepts (else every backend is down)."""
    def judge(cid: str, config: LbConfig) -> CheckResult:
        problems: list[str] = []
        fixes: list[str] = []
        notes: list[str] = []
        for r in config.realtime_routes():
            if r.health is None and config.kind == "alb":
                notes.append(f"{r.name}: the target group's health check is not in this file.")
                continue
            if r.health is None:
                notes.append(f"{r.name}: no active health check"
                             + (" (nginx open source has none; failed requests mark a server down)"
                                if config.kind == "nginx" else "") + ".")
                continue
            status, why = predict_health(r, *_kong_for(target))
            if status is None:
                notes.append(f"{r.name}: {r.health.path} ({r.health.where}): {why}; rtbook cannot predict the status.")
                continue
            ok = _accepts(r.health.expect, status)
            if ok is False:
                problems.append(f"{r.name}: the check GET {r.health.path} ({r.health.where}) expects "
                                f"{r.health.expect}, but gets {status}: {why}.")
                fixes.append(_health_remedy(config, r))
            else:
                notes.append(f"{r.name}: GET {r.health.path} → {status} ({why}), accepted by {r.health.expect}.")
        evidence = _ev(config, health=notes + problems)
        if problems:
            return _result(cid, Status.FAIL, f"{config.source}: the health check cannot pass; every backend is marked "
                           "down.",
                           detail="\n".join(problems + notes) + "\nWith every target unhealthy the load balancer "
                           "refuses connections (HAProxy/Caddy/Traefik: 503) or fails open (ALB routes to all).",
                           remedy="\n".join(fixes), evidence=evidence)
        return _result(cid, Status.PASS, f"{config.source}: " + ("; ".join(notes) or "health checks can pass."),
                       evidence=evidence)

    yield from _each(target, cid, judge)


# ====================================================================== lb.sticky


def _sticky_remedy(config: LbConfig, r: LbRoute) -> str:
    return {
        "nginx": f"add `ip_hash;` to `upstream {r.upstream}` "
                 f"({(r.notes[-1] if r.notes else r.where).replace('upstream at ', '')})",
        "haproxy": f"add `balance source` (or `cookie SERVERID insert indirect nocache` with `cookie <name>` on each "
                   f"server) to backend {r.upstream} ({r.where})",
        "caddy": f"add `lb_policy ip_hash` (or `lb_policy cookie`) to reverse_proxy {r.upstream} ({r.where})",
        "traefik": f"add `loadBalancer: {{sticky: {{cookie: {{name: rt_sticky}}}}}}` to service {r.upstream} "
                   f"(labels: traefik.http.services.{r.upstream}.loadbalancer.sticky.cookie=true) ({r.where})",
        "alb": f"set stickiness.enabled=true, stickiness.type=lb_cookie, stickiness.lb_cookie.duration_seconds=86400 "
               f"on {r.upstream} ({r.where}); Terraform: stickiness {{ type = \"lb_cookie\" cookie_duration = 86400 "
               "enabled = true }",
    }[config.kind]


@register("lb.sticky", "Sticky sessions as the guide recommends (and what they do not fix)", needs=("lb",),
          using=_loaded)
def check_sticky(target: Target, cid: str, loaded: Loaded) -> Iterator[CheckResult]:
    """With several backends: nginx ``ip_hash``, HAProxy ``balance source``/cookie, Caddy/Traefik, ALB lb_cookie."""
    def judge(cid: str, config: LbConfig) -> CheckResult:
        problems: list[str] = []
        fixes: list[str] = []
        notes: list[str] = []
        for r in config.realtime_routes():
            many = len(r.servers) > 1 or config.kind == "alb"
            s = r.sticky
            # A load-balancer attributes file describes no target group: stickiness is simply not in it.
            if config.kind == "alb" and s is None and r.upstream == "target group":
                notes.append("stickiness is a target-group attribute; it is not in this file.")
                continue
            if s is None or not s.enabled:
                if not many:
                    notes.append(f"{r.name}: one backend ({', '.join(r.servers) or 'none'}), nothing to stick to.")
                    continue
                problems.append(f"{r.name}: {len(r.servers) if r.servers else 'several'} backends and "
                                + (f"{s.detail} ({s.where})" if s else "no stickiness") + ".")
                fixes.append(_sticky_remedy(config, r))
                continue
            if config.kind == "alb":
                kind = s.method.split("=", 1)[-1]
                if kind.startswith("source_ip"):
                    problems.append(f"{r.name}: {s.method} ({s.where}) is a Network Load Balancer type; an ALB takes "
                                    "lb_cookie or app_cookie.")
                    fixes.append(_sticky_remedy(config, r))
                    continue
                if s.duration_s is not None and s.duration_s < 3600:
                    problems.append(f"{r.name}: stickiness lasts {s.duration_s:g} s ({s.where}); a client that "
                                    "reconnects after that lands on any target.")
                    fixes.append(_sticky_remedy(config, r))
                    continue
            notes.append(f"{r.name}: {s.method} ({s.where})"
                         + (f", {s.duration_s:g} s" if s.duration_s else "") + ".")
            if "cookie" in s.method and config.kind != "alb":
                notes.append("A cookie sticks browsers only: realtime-js in Node and realtime-py send no cookies on "
                             "the WebSocket handshake.")
        evidence = _ev(config, sticky=notes + problems)
        if problems:
            return _result(cid, Status.WARN, f"{config.source}: the Realtime route is not sticky as the guide "
                           "recommends.",
                           detail="\n".join(problems + notes) + "\n" + _STICKINESS_TRUTH,
                           remedy="\n".join(fixes) + "\nAnd cluster the Realtime nodes: stickiness does not share "
                           "broadcasts or presence between them.", evidence=evidence)
        return _result(cid, Status.PASS, f"{config.source}: " + " ".join(notes),
                       detail=_STICKINESS_TRUTH, evidence=evidence)

    yield from _each(target, cid, judge)


# ====================================================================== lb.tls


@register("lb.tls", "TLS ends at the load balancer and plain HTTP goes to the gateway", needs=("lb",), using=_loaded)
def check_tls(target: Target, cid: str, loaded: Loaded) -> Iterator[CheckResult]:
    """A TLS listener in front (clients use wss://) and ``http`` to the gateway, as the guide lays it out."""
    def judge(cid: str, config: LbConfig) -> CheckResult:
        routes = config.realtime_routes()
        plain = [r for r in routes if not r.tls_listener]
        if config.kind == "alb" and plain and not any(k.lower().startswith("protocol") for k in config.settings):
            return _result(cid, Status.PASS, f"{config.source}: the listener is not in this file; nothing to judge.",
                           evidence=_ev(config))
        if plain:
            r = plain[0]
            fix = {
                "nginx": f"`listen 443 ssl;` with ssl_certificate/ssl_certificate_key in the server of {r.where}",
                "haproxy": f"`bind :443 ssl crt /etc/haproxy/certs/site.pem` in the frontend of {r.where}",
                "caddy": f"use the site's host name as its address (Caddy then serves HTTPS itself) ({r.where})",
                "traefik": f"put router {r.upstream} on a TLS entryPoint with `tls: {{}}` ({r.where})",
                "alb": "add an HTTPS listener (port 443, a certificate) forwarding to the target group",
            }[config.kind]
            return _result(cid, Status.WARN, f"{config.source}: clients reach Realtime over plain HTTP (ws://).",
                           detail=f"{r.name} ({r.where}) listens without TLS. realtime-js turns an https:// "
                           "SUPABASE_URL into wss://, and a page served over https cannot open ws:// at all.",
                           remedy=fix, evidence=_ev(config))
        tls_back = [r for r in routes if r.backend_scheme == "https"]
        if tls_back:
            return _result(cid, Status.PASS, f"{config.source}: TLS at the load balancer, re-encrypted to "
                           f"{', '.join(r.upstream for r in tls_back)}.",
                           detail="The guide puts plain HTTP behind TLS termination (Kong :8000); re-encrypting to "
                           "Kong :8443 also works.", evidence=_ev(config))
        return _result(cid, Status.PASS, f"{config.source}: TLS ends at the load balancer; plain HTTP to the gateway.",
                       evidence=_ev(config))

    yield from _each(target, cid, judge)
