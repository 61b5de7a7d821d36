"""Plain HTTP probes: one request, one typed answer, never an exception for a network failure."""

from __future__ import annotations

import json
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

__all__ = ["HttpAnswer", "http_request"]


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
    """Send one request with httpx and return the answer; never raises for network errors.

    ``host_header`` replaces the Host header (Realtime takes the tenant from it). At most
    ``max_body`` bytes of the body are read; redirects are not followed (a probe reports them).
    """
    sent = {"Accept-Encoding": "identity", **(headers or {})}
    if host_header is not None:
        sent["Host"] = host_header
    started = time.monotonic()
    try:
        with (
            httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client,
            client.stream(method, url, headers=sent) as resp,
        ):
            chunks: list[bytes] = []
            size = 0
            for chunk in resp.iter_raw():
                chunks.append(chunk)
                size += len(chunk)
                if size >= max_body:
                    break
            body = b"".join(chunks)[:max_body].decode("utf-8", errors="replace")
            return HttpAnswer(
                url,
                resp.status_code,
                body,
                {k.lower(): v for k, v in resp.headers.items()},
                (time.monotonic() - started) * 1000,
            )
    except Exception as exc:  # every transport failure becomes an answer, not a crash
        return HttpAnswer(
            url,
            elapsed_ms=(time.monotonic() - started) * 1000,
            error_kind=_error_kind(exc),
            error=f"{type(exc).__name__}: {exc}",
        )


def _error_kind(exc: BaseException) -> str:
    """refused, timeout, dns, tls, reset or other, from httpx's error or the OS error behind it."""
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    causes: list[BaseException] = [exc]
    while causes[-1].__cause__ is not None or causes[-1].__context__ is not None:
        nxt = causes[-1].__cause__ or causes[-1].__context__
        if nxt is None or nxt in causes:
            break
        causes.append(nxt)
    for c in causes:
        if isinstance(c, ConnectionRefusedError):
            return "refused"
        if isinstance(c, TimeoutError | socket.timeout):
            return "timeout"
        if isinstance(c, socket.gaierror):
            return "dns"
        if isinstance(c, ssl.SSLError):
            return "tls"
        if isinstance(c, ConnectionResetError | BrokenPipeError | httpx.RemoteProtocolError):
            return "reset"
    text = str(exc).lower()
    if "name or service not known" in text or "nodename nor servname" in text or "temporary failure in name" in text:
        return "dns"
    if "connection refused" in text:
        return "refused"
    return "other"
