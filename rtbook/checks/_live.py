"""What the live ``gateway.*`` and ``realtime.*`` checks share: tokens, socket endpoints, failure results."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rtbook.clients.http import HttpAnswer
from rtbook.clients.phoenix import VSN1, ConnectFailed, HandshakeRefused, PhoenixClient, PhoenixError
from rtbook.remedies import CAUSES, Cause, diagnose
from rtbook.results import CheckResult, Status
from rtbook.secrets import Secret
from rtbook.target import Target

__all__ = ['SocketEndpoint', 'failure', 'open_socket', 'socket_endpoint']



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
    """Connect a Phoenix socket to the target (raises :class:`~rtbook.clients.phoenix.ConnectFailed`)."""
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
