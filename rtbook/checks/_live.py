"""What the live ``gateway.*`` and ``realtime.*`` checks share: tokens, socket endpoints, failure results."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rtbook.clients.db import realtime_value
from rtbook.clients.http import HttpAnswer
from rtbook.clients.phoenix import VSN1, ConnectFailed, HandshakeRefused, PhoenixClient, PhoenixError
from rtbook.remedies import CAUSES, Cause, diagnose
from rtbook.results import CheckResult, Status
from rtbook.secrets import Secret
from rtbook.target import Target

__all__ = ['RefusalWaits', 'SocketEndpoint', 'failure', 'open_socket', 'realtime_version', 'refusal_waits',
           'socket_endpoint']



def jwt_secret(target: Target) -> Secret | None:
    """The secret client tokens are signed with (``JWT_SECRET``, else ``API_JWT_SECRET``)."""
    return target.secret("JWT_SECRET") or target.secret("API_JWT_SECRET")


def admin_secret(target: Target) -> Secret | None:
    """The secret of Realtime's admin API (``API_JWT_SECRET``, else ``JWT_SECRET``)."""
    return target.secret("API_JWT_SECRET") or target.secret("JWT_SECRET")


# ------------------------------------------------------------------ refusal delays

# Realtime holds its refusals before answering (research notes §2, §3): every failed handshake
# sleeps CONNECT_ERROR_BACKOFF_MS (default 2 s, since v2.81.0, commit 83da1ae9) and every refused
# join CHANNEL_ERROR_BACKOFF_MS (default 5 s, since v2.83.0, commit d8e0d6fc); older images answer
# at once. A wait of only --timeout would report a clear refusal as a timeout.
CONNECT_BACKOFF_SINCE = (2, 81, 0)
CHANNEL_BACKOFF_SINCE = (2, 83, 0)
CONNECT_BACKOFF_DEFAULT_S = 2.0
CHANNEL_BACKOFF_DEFAULT_S = 5.0
# An environment value is honoured up to this many seconds, so every wait stays bounded.
BACKOFF_CAP_S = 30.0

_VERSION = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)")


def realtime_version(target: Target) -> tuple[tuple[int, int, int] | None, str]:
    """The Realtime image's version from the stack (``supabase/realtime:v2.134.10``), and the image."""
    if target.stack is None:
        return None, ""
    service = target.stack.realtime_service()
    if service is None or not service.image:
        return None, ""
    image = service.image.split("@", 1)[0]
    tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
    m = _VERSION.match(tag)
    if m is None:
        return None, image
    return (int(m.group(1)), int(m.group(2)), int(m.group(3))), image


@dataclass(frozen=True)
class RefusalWaits:
    """How long a check waits for a handshake answer and a join reply: the timeout plus Realtime's hold."""

    timeout: float
    connect_backoff: float
    join_backoff: float
    basis: str

    @property
    def connect(self) -> float:
        """Seconds to wait for the answer to the WebSocket upgrade."""
        return self.timeout + self.connect_backoff

    @property
    def join(self) -> float:
        """Seconds to wait for a ``phx_join`` reply."""
        return self.timeout + self.join_backoff

    def describe(self) -> str:
        """One sentence for a result's detail."""
        return (f"Waits: up to {self.connect:g} s for the handshake answer (timeout {self.timeout:g} s + "
                f"{self.connect_backoff:g} s CONNECT_ERROR_BACKOFF) and up to {self.join:g} s for a join reply "
                f"(timeout {self.timeout:g} s + {self.join_backoff:g} s CHANNEL_ERROR_BACKOFF), because Realtime "
                f"holds each refusal that long before it answers; {self.basis}.")

    def evidence(self) -> dict[str, Any]:
        """JSON-ready figures."""
        return {"timeout_s": self.timeout, "connect_backoff_s": self.connect_backoff,
                "join_backoff_s": self.join_backoff, "basis": self.basis}


def _backoff_s(target: Target, name: str, version: tuple[int, int, int] | None, since: tuple[int, int, int],
               default_s: float) -> tuple[float, str]:
    raw, where = realtime_value(target, name)
    if raw is not None:
        try:
            ms = int(raw.strip())
        except ValueError:
            ms = -1
        if ms >= 0:
            return min(ms / 1000, BACKOFF_CAP_S), f"{name}={ms} from {where}"
    if version is None:
        return default_s, f"{name} default {default_s:g} s (image version unknown, so the newest behaviour)"
    if version >= since:
        return default_s, f"{name} default {default_s:g} s (v{'.'.join(map(str, since))}+)"
    return 0.0, f"no {name} before v{'.'.join(map(str, since))}"


def refusal_waits(target: Target) -> RefusalWaits:
    """The waits for the target's Realtime: its version (from the stack's image) and any backoff env values."""
    version, image = realtime_version(target)
    connect, why_connect = _backoff_s(target, "CONNECT_ERROR_BACKOFF_MS", version, CONNECT_BACKOFF_SINCE,
                                      CONNECT_BACKOFF_DEFAULT_S)
    join, why_join = _backoff_s(target, "CHANNEL_ERROR_BACKOFF_MS", version, CHANNEL_BACKOFF_SINCE,
                                CHANNEL_BACKOFF_DEFAULT_S)
    basis = (f"image {image}" if image else "no stack image") + f": {why_connect}; {why_join}"
    return RefusalWaits(target.timeout, connect, join, basis)


def refusal_grace(connects: int = 0, joins: int = 0, extra_s: float = 0.0,
                  table_steps: int = 0) -> Callable[[Target], float]:
    """A check's deadline grace (``@register(grace=...)``): Realtime's holds on that many refused
    handshakes and joins, ``extra_s`` fixed seconds, and ``table_steps`` x --timeout per named table."""

    def grace(target: Target) -> float:
        waits = refusal_waits(target)
        return (connects * waits.connect_backoff + joins * waits.join_backoff + extra_s
                + table_steps * len(target.tables) * target.timeout)

    return grace


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


def gateway_host(target: Target) -> str | None:
    """The public host to send through the gateway for an added tenant of a multi-tenant stack, else None.

    Such a tenant is reached only by the routes whose ``hosts`` (Kong) or virtual-host ``domains``
    (Envoy) name its public host; every other Host reaches the stack's own tenant.
    """
    if not target.tenant or target.stack is None:
        return None
    from rtbook.config.gateway import realtime_upstream

    publics = realtime_upstream(target.stack).routed_tenants.get(target.tenant)
    return publics[0] if publics else None


def socket_endpoint(target: Target) -> SocketEndpoint:
    """Through the gateway (``{api_url}/realtime/v1``) when there is one, else Realtime directly."""
    if target.api_url:
        return SocketEndpoint(f"{target.api_url}/realtime/v1", gateway_host(target), "gateway")
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
    """Connect a Phoenix socket to the target (raises :class:`~rtbook.clients.phoenix.ConnectFailed`).

    The upgrade is awaited :attr:`RefusalWaits.connect` seconds and every join of the client
    :attr:`RefusalWaits.join` (see :func:`refusal_waits`).
    """
    ep = endpoint or socket_endpoint(target)
    waits = refusal_waits(target)
    return PhoenixClient.connect(
        ep.base, apikey, vsn=vsn, host_header=ep.host_header, timeout=waits.connect, redactor=target.redactor,
        join_grace=waits.join_backoff,
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


def socket_failure(cid: str, exc: PhoenixError, what: str, ep: SocketEndpoint,
                   evidence: Mapping[str, Any] | None = None, waits: RefusalWaits | None = None,
                   apikey_sent: bool | None = None) -> CheckResult:
    """A failed result for an exception from the Phoenix client (``waits``: what the check allowed)."""
    ev: dict[str, Any] = dict(evidence or {})
    transcript = getattr(exc, "transcript", None)
    if transcript is not None:
        ev["transcript"] = transcript.to_list()
    waited = f" {waits.describe()}" if waits is not None else ""
    if waits is not None:
        ev["waits"] = waits.evidence()
    if isinstance(exc, HandshakeRefused):
        found = diagnose(status=exc.status, body=exc.body, apikey_sent=apikey_sent)
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
            f"{exc.body.strip()[:300] or '(empty)'} after {exc.elapsed_ms / 1000:.1f} s instead of 101 Switching "
            f"Protocols.{note}{waited}",
            evidence=ev,
            metrics={"connect_ms": exc.elapsed_ms},
        )
    if isinstance(exc, ConnectFailed):
        return failure(
            cid,
            f"{what}: cannot open a WebSocket to {ep.base} ({exc.kind}).",
            cause=transport_cause(exc.kind),
            detail=str(exc) + waited,
            evidence=ev,
            metrics={"connect_ms": exc.elapsed_ms},
        )
    return failure(cid, f"{what}: {exc}", cause=CAUSES["timeout"], detail=str(exc) + waited, evidence=ev)
