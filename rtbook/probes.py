"""Gateway probes (``gateway.*``) and Realtime's tenant health (``realtime.health``).

These ask the running stack what the static checks can only predict: does the public URL route
``/realtime/v1/api`` and ``/realtime/v1/websocket`` to Realtime, does Kong demand a key, is the
tenant admin API closed, does a browser's CORS preflight pass, and is the tenant's database
connected. Every request has the target's timeout; every failure names the cause from
:mod:`rtbook.remedies` and the static checks that would have caught it.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
import urllib.parse
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt

from rtbook.phoenix import VSN1, ConnectFailed, HandshakeRefused, PhoenixClient, PhoenixError
from rtbook.remedies import CAUSES, Cause, diagnose
from rtbook.results import CheckResult, Status, register
from rtbook.secrets import Secret
from rtbook.target import Target

__all__ = [
    "HttpAnswer",
    "SocketEndpoint",
    "failure",
    "http_request",
    "mint_jwt",
    "open_socket",
    "socket_endpoint",
]

ORIGIN = "http://rtbook.localhost:3000"


# ------------------------------------------------------------------ HTTP


@dataclass(frozen=True)
class HttpAnswer:
    """What an HTTP request produced: a response, or the transport error that prevented one."""

    url: str
    status: int | None = None
    body: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    elapsed_ms: float = 0.0
    error_kind: str = ""  # refused, timeout, dns, tls, reset, other
    error: str = ""

    @property
    def json(self) -> Any:
        """The body parsed as JSON, or None."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    @property
    def produced_by_kong(self) -> bool:
        """True when Kong itself answered (its ``Server`` header; proxied answers carry ``Via``)."""
        return "kong" in self.headers.get("server", "").lower()

    @property
    def from_kong(self) -> bool:
        """True when Kong produced or proxied the answer (its ``Server``/``Via`` headers)."""
        return "kong" in (self.headers.get("server", "") + self.headers.get("via", "")).lower()

    def evidence(self) -> dict[str, Any]:
        """A JSON-ready summary (the caller's redactor cleans it)."""
        out: dict[str, Any] = {"url": self.url, "elapsed_ms": round(self.elapsed_ms, 1)}
        if self.status is not None:
            out["status"] = self.status
            out["body"] = self.body[:500]
            keep = ("server", "via", "content-type", "access-control-allow-origin", "access-control-allow-headers",
                    "access-control-allow-methods", "x-kong-upstream-latency", "x-kong-proxy-latency")
            out["headers"] = {k: v for k, v in self.headers.items() if k in keep}
        else:
            out["error"] = f"{self.error_kind}: {self.error}"
        return out


def http_request(
    method: str,
    url: str,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
    host_header: str | None = None,
    max_body: int = 65536,
) -> HttpAnswer:
    """Send one request with ``http.client`` and return the answer; never raises for network errors.

    ``host_header`` replaces the Host header (Realtime takes the tenant from it).
    """
    parts = urllib.parse.urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(parts.hostname or "", parts.port, timeout=timeout,
                                           context=ssl.create_default_context())
    else:
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    started = time.monotonic()
    try:
        conn.putrequest(method, path, skip_host=host_header is not None, skip_accept_encoding=True)
        if host_header is not None:
            conn.putheader("Host", host_header)
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        conn.endheaders()
        resp = conn.getresponse()
        body = resp.read(max_body).decode("utf-8", errors="replace")
        return HttpAnswer(
            url,
            resp.status,
            body,
            {k.lower(): v for k, v in resp.getheaders()},
            (time.monotonic() - started) * 1000,
        )
    except Exception as exc:  # every transport failure becomes an answer, not a crash
        return HttpAnswer(
            url,
            elapsed_ms=(time.monotonic() - started) * 1000,
            error_kind=_error_kind(exc),
            error=f"{type(exc).__name__}: {exc}",
        )
    finally:
        conn.close()


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timeout"
    if isinstance(exc, socket.gaierror):
        return "dns"
    if isinstance(exc, ssl.SSLError):
        return "tls"
    if isinstance(exc, ConnectionResetError | http.client.RemoteDisconnected | BrokenPipeError):
        return "reset"
    return "other"


# ------------------------------------------------------------------ tokens


def mint_jwt(
    secret: Secret | str,
    role: str,
    *,
    expires_in: float = 300,
    sub: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Sign an HS256 JWT with ``role`` and ``exp`` (now + ``expires_in``; negative for an expired one).

    Realtime uses the secret string's raw bytes as the HMAC key (realtime-facts §6).
    """
    now = int(time.time())
    claims: dict[str, Any] = {"role": role, "iat": now - 5, "exp": int(now + expires_in), "iss": "rtbook"}
    if sub is not None:
        claims["sub"] = sub
    claims.update(extra or {})
    key = secret.reveal() if isinstance(secret, Secret) else secret
    return jwt.encode(claims, key, algorithm="HS256")


def jwt_secret(target: Target) -> Secret | None:
    """The secret client tokens are signed with (``JWT_SECRET``, else ``API_JWT_SECRET``)."""
    return target.secret("JWT_SECRET") or target.secret("API_JWT_SECRET")


def admin_secret(target: Target) -> Secret | None:
    """The secret of Realtime's admin API (``API_JWT_SECRET``, else ``JWT_SECRET``)."""
    return target.secret("API_JWT_SECRET") or target.secret("JWT_SECRET")


# ------------------------------------------------------------------ sockets


@dataclass(frozen=True)
class SocketEndpoint:
    """Where a Phoenix socket for the target connects, and with which Host header."""

    base: str
    host_header: str | None
    via: str  # "gateway" or "direct"

    @property
    def label(self) -> str:
        """For messages: the base URL and how it is reached."""
        host = f" with Host {self.host_header}" if self.host_header else ""
        return f"{self.base} ({self.via}{host})"


def realtime_host(target: Target) -> str:
    """The Host header for direct requests: ``target.realtime_host`` or ``<tenant>.supabase-realtime``."""
    return target.realtime_host or f"{target.resolved_tenant()}.supabase-realtime"


def socket_endpoint(target: Target) -> SocketEndpoint:
    """Through the gateway (``{api_url}/realtime/v1``) when there is one, else Realtime directly."""
    if target.api_url:
        return SocketEndpoint(f"{target.api_url}/realtime/v1", None, "gateway")
    if target.realtime_url:
        return SocketEndpoint(f"{target.realtime_url}/socket", realtime_host(target), "direct")
    raise ValueError("target has neither api_url nor realtime_url")


def open_socket(
    target: Target,
    apikey: Secret | str | None,
    *,
    vsn: str = VSN1,
    endpoint: SocketEndpoint | None = None,
) -> PhoenixClient:
    """Connect a Phoenix socket to the target (raises :class:`~rtbook.phoenix.ConnectFailed`)."""
    ep = endpoint or socket_endpoint(target)
    return PhoenixClient.connect(
        ep.base, apikey, vsn=vsn, host_header=ep.host_header, timeout=target.timeout, redactor=target.redactor
    )


# ------------------------------------------------------------------ results


def failure(
    cid: str,
    summary: str,
    *,
    cause: Cause | None,
    detail: str = "",
    remedy: str = "",
    evidence: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
    status: Status = Status.FAIL,
    see_also: tuple[str, ...] = (),
) -> CheckResult:
    """A non-pass result whose remedy, cause and see_also come from ``cause`` when it is known."""
    parts = [detail] if detail else []
    if cause is not None:
        parts.append(f"Cause: {cause.title}. {cause.explanation}")
        if cause.static_checks:
            parts.append("Static checks that catch this: " + ", ".join(cause.static_checks) + ".")
    return CheckResult(
        cid,
        status,
        summary=summary,
        detail="\n".join(parts),
        remedy=remedy or (cause.remedy if cause else "Read the evidence (status, body, transcript) for what answered."),
        evidence=dict(evidence or {}),
        metrics=dict(metrics or {}),
        cause=cause.id if cause else "",
        see_also=tuple(dict.fromkeys((*(cause.static_checks if cause else ()), *see_also))),
    )


def transport_cause(kind: str) -> Cause:
    """The cause for a transport error kind (``refused``/``dns`` → unreachable, else timeout)."""
    return CAUSES["unreachable"] if kind in ("refused", "dns") else CAUSES["timeout"]


def _answer_failure(cid: str, what: str, ans: HttpAnswer, expected: str, target: Target) -> CheckResult:
    if ans.status is None:
        return failure(
            cid,
            f"{what}: no answer from {ans.url} ({ans.error_kind}) within {target.timeout:g} s.",
            cause=transport_cause(ans.error_kind),
            detail=f"Expected {expected}; the request failed: {ans.error}.",
            evidence=ans.evidence(),
            metrics={"elapsed_ms": ans.elapsed_ms},
        )
    found = diagnose(status=ans.status, body=ans.body)
    return failure(
        cid,
        f"{what}: HTTP {ans.status} {ans.body.strip()[:120] or '(empty body)'}.",
        cause=found,
        detail=f"Expected {expected}; {ans.url} answered HTTP {ans.status}"
        + (" from Kong" if ans.from_kong else "") + f" with body {ans.body.strip()[:300] or '(empty)'}.",
        evidence=ans.evidence(),
        metrics={"elapsed_ms": ans.elapsed_ms},
    )


def _answered(cid: str, summary: str, ans: HttpAnswer) -> CheckResult:
    """A pass that carries the answer as evidence and its latency as the metric."""
    return CheckResult(cid, Status.PASS, summary=summary, evidence=ans.evidence(),
                       metrics={"elapsed_ms": ans.elapsed_ms})


def _no_key(cid: str, name: str) -> CheckResult:
    return CheckResult(
        cid,
        Status.SKIP,
        summary=f"Skipped: {name} is not set.",
        remedy=f"Export {name} or put it in the stack's .env (it is never read from notebook parameters).",
    )


# ------------------------------------------------------------------ gateway checks


def _ping_url(target: Target) -> str:
    return f"{target.api_url}/realtime/v1/api/ping"


@register("gateway.rest", "The gateway routes /realtime/v1/api/ping to Realtime's tenant", needs=("gateway",))
def check_rest(target: Target) -> CheckResult:
    """``GET {api_url}/realtime/v1/api/ping`` with the anon key answers 200 ``{"message":"Success"}``."""
    cid = "gateway.rest"
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
def check_key_auth(target: Target) -> CheckResult:
    """The same ping without a key is refused by the gateway (Kong: 401 No API key found in request)."""
    cid = "gateway.key_auth"
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
def check_tenants_api_blocked(target: Target) -> CheckResult:
    """``/realtime/v1/api/tenants`` is refused by the gateway itself (Kong: 403 Access is forbidden.)."""
    cid = "gateway.tenants_api_blocked"
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
def check_cors(target: Target) -> CheckResult:
    """OPTIONS preflight with Origin and Access-Control-Request-* is answered with allow headers."""
    cid = "gateway.cors"
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


def socket_failure(cid: str, exc: PhoenixError, what: str, ep: SocketEndpoint,
                   evidence: Mapping[str, Any] | None = None) -> CheckResult:
    """A failed result for an exception from the Phoenix client."""
    ev: dict[str, Any] = dict(evidence or {})
    transcript = getattr(exc, "transcript", None)
    if transcript is not None:
        ev["transcript"] = transcript.to_list()
    if isinstance(exc, HandshakeRefused):
        found = diagnose(status=exc.status, body=exc.body)
        note = ""
        if exc.status == 401 and exc.headers.get("www-authenticate", "").lower().startswith("basic"):
            # Kong's basic-auth (the dashboard's catch-all route) answered: no Realtime route matched.
            found = CAUSES["kong_no_route"]
            note = " The answer asks for basic auth: the request fell through to the dashboard's catch-all route."
        elif exc.status == 200 or (found is None and exc.status in (400, 426)):
            found = CAUSES["ws_not_upgraded"]
        ev["handshake"] = {"status": exc.status, "body": exc.body[:500]}
        return failure(
            cid,
            f"{what}: the WebSocket upgrade was refused with HTTP {exc.status} {exc.error_text[:100]}.",
            cause=found,
            detail=f"Connecting to {ep.label} answered HTTP {exc.status} with body "
            f"{exc.body.strip()[:300] or '(empty)'} instead of 101 Switching Protocols.{note}",
            evidence=ev,
            metrics={"connect_ms": exc.elapsed_ms},
        )
    if isinstance(exc, ConnectFailed):
        return failure(
            cid,
            f"{what}: cannot open a WebSocket to {ep.base} ({exc.kind}).",
            cause=transport_cause(exc.kind),
            detail=str(exc),
            evidence=ev,
            metrics={"connect_ms": exc.elapsed_ms},
        )
    return failure(cid, f"{what}: {exc}", cause=CAUSES["timeout"], detail=str(exc), evidence=ev)


@register("gateway.websocket", "The WebSocket upgrade through the gateway works and heartbeats are answered",
          needs=("gateway",))
def check_websocket(target: Target) -> CheckResult:
    """``/realtime/v1/websocket?apikey=…&vsn=1.0.0`` answers 101 and a heartbeat gets its reply."""
    cid = "gateway.websocket"
    anon = target.secret("ANON_KEY")
    if anon is None:
        return _no_key(cid, "ANON_KEY")
    ep = SocketEndpoint(f"{target.api_url}/realtime/v1", None, "gateway")
    try:
        client = open_socket(target, anon, endpoint=ep)
    except PhoenixError as exc:
        return socket_failure(cid, exc, "The WebSocket through the gateway failed", ep)
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


# ------------------------------------------------------------------ realtime.health


@dataclass(frozen=True)
class Health:
    """Realtime's tenant health JSON (realtime-facts §7.1)."""

    healthy: bool | None
    db_connected: bool | None
    replication_connected: bool | None
    connected_cluster: int | None

    @classmethod
    def parse(cls, data: Any) -> Health | None:
        """Parse ``{"data": {...}}``; None when the shape is not the health JSON."""
        if not isinstance(data, dict) or not isinstance(data.get("data"), dict):
            return None
        d = data["data"]

        def b(key: str) -> bool | None:
            v = d.get(key)
            return v if isinstance(v, bool) else None

        cc = d.get("connected_cluster")
        return cls(b("healthy"), b("db_connected"), b("replication_connected"), cc if isinstance(cc, int) else None)


def _health(target: Target, token: str) -> HttpAnswer:
    tenant = urllib.parse.quote(target.resolved_tenant(), safe="")
    return http_request(
        "GET",
        f"{target.realtime_url}/api/tenants/{tenant}/health",
        {"Authorization": f"Bearer {token}"},
        target.timeout,
        host_header=realtime_host(target),
    )


@register("realtime.health", "Realtime's tenant health: the tenant database is connected",
          needs=("realtime_direct",))
def check_health(target: Target) -> CheckResult:
    """``GET {realtime_url}/api/tenants/{tenant}/health`` reads ``db_connected``, not only ``healthy``.

    With no client connected Realtime may report healthy without a DB connection, so when
    ``db_connected`` is false one channel is joined and the health read again.
    """
    cid = "realtime.health"
    secret = admin_secret(target)
    if secret is None:
        return _no_key(cid, "API_JWT_SECRET (or JWT_SECRET)")
    token = mint_jwt(secret, "service_role", expires_in=120)
    target.redactor.add(token)
    ans = _health(target, token)
    tenant = target.resolved_tenant()
    metrics: dict[str, float] = {"elapsed_ms": ans.elapsed_ms}
    evidence: dict[str, Any] = {"first": ans.evidence()}
    if ans.status is None:
        return _answer_failure(cid, "Realtime's health endpoint got no answer", ans, "HTTP 200", target)
    if ans.status == 403:
        return failure(
            cid,
            "Realtime refused the health request's token (HTTP 403).",
            cause=CAUSES["admin_jwt_mismatch"],
            detail="The token was signed with API_JWT_SECRET (or JWT_SECRET) as rtbook sees it; Realtime's "
            "API_JWT_SECRET must be a different value.",
            evidence=evidence,
            metrics=metrics,
        )
    if ans.status == 404:
        return failure(
            cid,
            f"Realtime has no tenant {tenant!r} (HTTP 404 on /api/tenants/{tenant}/health).",
            cause=CAUSES["tenant_missing_admin"],
            evidence=evidence,
            metrics=metrics,
        )
    health = Health.parse(ans.json)
    if ans.status != 200 or health is None:
        return _answer_failure(cid, "Unexpected health answer", ans, 'HTTP 200 {"data":{...}}', target)
    joined = False
    join_cause: Cause | None = None
    if not health.db_connected:
        # Realtime connects to the tenant DB on the first join; ask again after one.
        anon = target.secret("ANON_KEY")
        if anon is not None:
            ep = SocketEndpoint(f"{target.realtime_url}/socket", realtime_host(target), "direct")
            try:
                with open_socket(target, anon, endpoint=ep) as client:
                    reply = client.join(f"realtime:rtbook-health-{uuid.uuid4().hex[:8]}", {"private": False},
                                        timeout=target.timeout)
                    joined = reply.ok
                    evidence["join"] = {"status": reply.status, "reason": reply.reason}
                    deadline = time.monotonic() + target.timeout
                    while time.monotonic() < deadline:
                        again = _health(target, token)
                        parsed = Health.parse(again.json)
                        evidence["after_join"] = again.evidence()
                        if parsed is not None:
                            health = parsed
                        if health.db_connected or not joined:
                            break
                        time.sleep(0.3)
            except PhoenixError as exc:
                evidence["join_error"] = str(exc)
                if isinstance(exc, HandshakeRefused):
                    join_cause = diagnose(status=exc.status, body=exc.body)
    evidence["health"] = {
        "healthy": health.healthy,
        "db_connected": health.db_connected,
        "replication_connected": health.replication_connected,
        "connected_cluster": health.connected_cluster,
    }
    if health.db_connected:
        return CheckResult(
            cid,
            Status.PASS,
            summary=f"Tenant {tenant!r} is healthy with its database connected"
            + (" (after one join)." if joined else "."),
            evidence=evidence,
            metrics=metrics,
        )
    reason = str(evidence.get("join", {}).get("reason", "")) if isinstance(evidence.get("join"), dict) else ""
    found = diagnose(reason=reason) if reason else join_cause
    if not joined and health.healthy:
        # Nothing proves the DB is down: Realtime connects on the first join, and ours was refused.
        return failure(
            cid,
            f"Tenant {tenant!r} reports healthy=true, db_connected=false, and rtbook's probe join was refused, "
            "so the database connection is unproven.",
            cause=found,
            detail="Realtime connects to the tenant database on the first channel join; "
            + (f"the join failed with {reason}." if reason else f"the socket was refused: "
               f"{evidence.get('join_error', 'no ANON_KEY to join with')}."),
            evidence=evidence,
            metrics=metrics,
            status=Status.WARN,
        )
    return failure(
        cid,
        f"Tenant {tenant!r} reports db_connected=false (healthy={health.healthy}).",
        cause=found or CAUSES["tenant_db_unreachable"],
        detail="healthy=true alone does not prove the tenant database is reachable (Realtime reports migration "
        "status when no client is connected); db_connected stayed false"
        + (" after a channel join." if joined else "; no join succeeded to make Realtime connect.")
        + (f" Join reply: {reason}." if reason else ""),
        evidence=evidence,
        metrics=metrics,
    )
