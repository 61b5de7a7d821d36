"""Gateway probes (``gateway.*``) and Realtime's tenant health (``realtime.health``).

These ask the running stack what the static checks can only predict: does the public URL route
``/realtime/v1/api`` and ``/realtime/v1/websocket`` to Realtime, does Kong demand a key, is the
tenant admin API closed, does a browser's CORS preflight pass, and is the tenant's database
connected. Every request has the target's timeout; every failure names the cause from
:mod:`rtbook.remedies` and the static checks that would have caught it.
"""

from __future__ import annotations

from rtbook.checks._live import (
    SocketEndpoint,
    _answer_failure,
    _answered,
    _no_key,
    failure,
    gateway_host,
    open_socket,
    refusal_grace,
    refusal_waits,
    socket_failure,
)
from rtbook.clients.http import http_request
from rtbook.clients.phoenix import PhoenixError
from rtbook.registry import register
from rtbook.remedies import CAUSES, diagnose
from rtbook.results import CheckResult, Status
from rtbook.target import Target

ORIGIN = "http://rtbook.localhost:3000"


# ------------------------------------------------------------------ gateway checks


def _ping_url(target: Target) -> str:
    return f"{target.api_url}/realtime/v1/api/ping"


@register("gateway.rest", "The gateway routes /realtime/v1/api/ping to Realtime's tenant", needs=("gateway",))
def check_rest(target: Target, cid: str) -> CheckResult:
    """``GET {api_url}/realtime/v1/api/ping`` with the anon key answers 200 ``{"message":"Success"}``."""
    anon = target.secret("ANON_KEY")
    if anon is None:
        return _no_key(cid, "ANON_KEY")
    ans = http_request("GET", _ping_url(target), {"apikey": anon.reveal()}, target.timeout)
    data = ans.json
    if ans.status == 200 and isinstance(data, dict) and data.get("message") == "Success":
        return _answered(cid, f"Realtime answered the ping through the gateway for tenant "
                         f"{target.resolved_tenant()!r} in {ans.elapsed_ms:.0f} ms.", ans)
    return _answer_failure(cid, "The ping through the gateway failed", ans, 'HTTP 200 {"message":"Success"}', target)


@register("gateway.key_auth", "The gateway refuses Realtime requests without an apikey", needs=("gateway",))
def check_key_auth(target: Target, cid: str) -> CheckResult:
    """The same ping without a key is refused by the gateway (Kong: 401 No API key found in request)."""
    ans = http_request("GET", _ping_url(target), {}, target.timeout)
    if ans.status is None:
        return _answer_failure(cid, "The keyless ping got no answer", ans, "HTTP 401 from the gateway", target)
    found = diagnose(status=ans.status, body=ans.body)
    by_gateway = found is not None and found.id.startswith("kong_")
    if ans.status in (401, 403) and (by_gateway or (found is None and ans.produced_by_kong)):
        return _answered(cid, f"The gateway refused the keyless request: HTTP {ans.status} "
                         f"{ans.body.strip()[:80] or '(empty body)'}.", ans)
    if ans.status < 400 or (found is not None and not found.id.startswith("kong_")):
        reached = "answered it" if ans.status < 400 else f"answered it (HTTP {ans.status}: {ans.body.strip()[:80]})"
        return failure(
            cid,
            f"A request without an apikey reached Realtime, which {reached}.",
            cause=CAUSES["gateway_no_key_auth"],
            detail="Kong's key-auth plugin should refuse requests without a key before they reach Realtime "
            "(401 No API key found in request).",
            evidence=ans.evidence(),
            metrics={"elapsed_ms": ans.elapsed_ms},
        )
    return _answer_failure(cid, "The keyless ping got an unexpected answer", ans, "HTTP 401 from the gateway", target)


@register("gateway.tenants_api_blocked", "The gateway blocks Realtime's tenant admin API", needs=("gateway",))
def check_tenants_api_blocked(target: Target, cid: str) -> CheckResult:
    """``/realtime/v1/api/tenants`` is refused by the gateway itself (Kong: 403 Access is forbidden.)."""
    anon = target.secret("ANON_KEY")
    headers = {"apikey": anon.reveal()} if anon else {}
    ans = http_request("GET", f"{target.api_url}/realtime/v1/api/tenants", headers, target.timeout)
    if ans.status is None:
        return _answer_failure(cid, "The tenants API probe got no answer", ans, "HTTP 403 from the gateway", target)
    found = diagnose(status=ans.status, body=ans.body)
    evidence, metrics = ans.evidence(), {"elapsed_ms": ans.elapsed_ms}
    if found is not None and found.id in ("kong_forbidden", "kong_no_route"):
        return _answered(cid, f"The gateway blocks /realtime/v1/api/tenants (HTTP {ans.status} "
                         f"{ans.body.strip()[:60]}).", ans)
    exposed = CAUSES["tenants_api_exposed"]
    if 200 <= ans.status < 300:
        return failure(
            cid,
            f"Realtime's tenant admin API answers through the gateway (HTTP {ans.status}).",
            cause=exposed,
            detail="GET /realtime/v1/api/tenants reached Realtime and returned data: tenant rows (and settings) "
            "are readable from the public URL.",
            evidence=evidence,
            metrics=metrics,
        )
    if ans.status in (401, 403, 404) and not (found is not None and found.id.startswith("kong_")):
        return failure(
            cid,
            f"/realtime/v1/api/tenants reaches Realtime (HTTP {ans.status}); only its JWT check protects it.",
            cause=exposed,
            detail="The gateway forwarded the admin API request; Realtime refused it only because the token was "
            "not signed with API_JWT_SECRET. Anyone holding that secret, or a leaked admin token, can "
            "create, change or delete tenants from the public URL.",
            evidence=evidence,
            metrics=metrics,
            status=Status.WARN,
        )
    return _answer_failure(cid, "The tenants API probe got an unexpected answer", ans, "HTTP 403 from the gateway",
                           target)


@register("gateway.cors", "A browser's CORS preflight to Realtime's REST API is allowed", needs=("gateway",))
def check_cors(target: Target, cid: str) -> CheckResult:
    """OPTIONS preflight with Origin and Access-Control-Request-* is answered with allow headers."""
    wanted = "apikey,authorization,content-type,x-client-info"
    ans = http_request(
        "OPTIONS",
        _ping_url(target),
        {
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": wanted,
        },
        target.timeout,
    )
    if ans.status is None:
        return _answer_failure(cid, "The CORS preflight got no answer", ans, "a 2xx preflight answer", target)
    allow_origin = ans.headers.get("access-control-allow-origin", "")
    allow_headers = ans.headers.get("access-control-allow-headers", "").lower()
    problems = []
    if not 200 <= ans.status < 300:
        problems.append(f"status {ans.status} (expected 2xx)")
    if allow_origin not in ("*", ORIGIN):
        problems.append(f"Access-Control-Allow-Origin is {allow_origin or 'absent'!r}")
    missing = [h for h in wanted.split(",") if allow_headers != "*" and h not in allow_headers]
    if allow_headers and missing:
        problems.append(f"Access-Control-Allow-Headers lacks {', '.join(missing)}")
    if not problems:
        return _answered(cid, f"The preflight from {ORIGIN} is allowed (origin {allow_origin}).", ans)
    found = diagnose(status=ans.status, body=ans.body)
    return failure(
        cid,
        "Browsers cannot call Realtime's REST API through the gateway: " + "; ".join(problems) + ".",
        cause=CAUSES["cors_missing"],
        detail=f"Preflight OPTIONS {ans.url} from Origin {ORIGIN} answered HTTP {ans.status}"
        + (f" ({found.title}: without the cors plugin the preflight falls through to the other plugins)"
           if found is not None else "") + ".",
        evidence=ans.evidence(),
        metrics={"elapsed_ms": ans.elapsed_ms},
        see_also=CAUSES["cors_missing"].static_checks,
    )


@register("gateway.websocket", "The WebSocket upgrade through the gateway works and heartbeats are answered",
          needs=("gateway",), steps=3, grace=refusal_grace(connects=1))
def check_websocket(target: Target, cid: str) -> CheckResult:
    """``/realtime/v1/websocket?apikey=…&vsn=1.0.0`` answers 101 and a heartbeat gets its reply."""
    anon = target.secret("ANON_KEY")
    if anon is None:
        return _no_key(cid, "ANON_KEY")
    ep = SocketEndpoint(f"{target.api_url}/realtime/v1", gateway_host(target), "gateway")
    try:
        client = open_socket(target, anon, endpoint=ep)
    except PhoenixError as exc:
        # The upgrade was awaited --timeout plus Realtime's hold on refusals; the result says how long.
        return socket_failure(cid, exc, "The WebSocket through the gateway failed", ep, waits=refusal_waits(target))
    try:
        try:
            beat = client.heartbeat(timeout=target.timeout)
        except PhoenixError as exc:
            return failure(
                cid,
                f"The socket opened but the heartbeat got no reply ({exc}).",
                cause=CAUSES["timeout"],
                detail="The upgrade succeeded, so the route exists; the server did not answer phoenix/heartbeat. "
                "Something other than Realtime may have accepted the upgrade.",
                evidence={"transcript": client.transcript.to_list()},
                metrics={"connect_ms": client.connect_ms},
            )
        ok = beat.ok
        return CheckResult(
            cid,
            Status.PASS if ok else Status.FAIL,
            summary=f"Upgrade in {client.connect_ms:.0f} ms, heartbeat reply in {beat.latency_ms:.0f} ms."
            if ok else f"The heartbeat was answered with status {beat.status!r}.",
            evidence={"url": client.url, "transcript": client.transcript.to_list()},
            metrics={"connect_ms": client.connect_ms, "heartbeat_ms": beat.latency_ms},
        )
    finally:
        client.close()
