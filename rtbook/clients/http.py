"""Plain HTTP probes: one request, one typed answer, never an exception for a network failure."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ['HttpAnswer', 'http_request']



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
