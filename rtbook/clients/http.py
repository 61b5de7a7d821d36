"""Plain HTTP probes: one request, one typed answer, never an exception for a network failure."""

from __future__ import annotations

import json
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpcore
import httpx

import rtbook.deadline as _deadline

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
    The whole request (connect, headers, body) ends within twice ``timeout`` (one for the
    connection, one for the answer) and by the running check's deadline (:mod:`rtbook.deadline`),
    whatever the server does: a body or headers dripping one byte a second are cut off.
    """
    with _deadline.bounded(2 * timeout, f"{method} {url}"):
        return _request(method, url, headers, timeout, host_header, max_body)


def _request(method: str, url: str, headers: Mapping[str, str] | None, timeout: float, host_header: str | None,
             max_body: int) -> HttpAnswer:
    sent = {"Accept-Encoding": "identity", **(headers or {})}
    if host_header is not None:
        sent["Host"] = host_header
    started = time.monotonic()
    awaiting = f"the answer to {method} {_path(url)}"
    try:
        timeout = _deadline.cap(timeout, _endpoint(url), awaiting)
        with (
            httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False,
                         transport=_transport(url, awaiting)) as client,
            client.stream(method, url, headers=sent) as resp,
        ):
            chunks: list[bytes] = []
            size = 0
            # Every read is cut to the check's deadline by the transport, so a body that drips
            # one byte at a time ends with the deadline instead of running on.
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
        spent = _deadline.spent()
        if spent is not None and not isinstance(exc, _deadline.DeadlineExceeded):
            # A read cut short by the check's deadline: say so, not just "timed out".
            exc = spent.exceeded(_endpoint(url), awaiting)
        return HttpAnswer(
            url,
            elapsed_ms=(time.monotonic() - started) * 1000,
            error_kind=_error_kind(exc),
            error=f"{type(exc).__name__}: {exc}",
        )


def _endpoint(url: str) -> str:
    """scheme://host:port of ``url`` (what an overrun names)."""
    try:
        parsed = httpx.URL(url)
    except Exception:  # an unparsable URL fails in the request itself; name it as given
        return url
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{parsed.host}{port}"


def _path(url: str) -> str:
    try:
        return httpx.URL(url).path or "/"
    except Exception:  # as above
        return url


# ------------------------------------------------------------------ deadline-aware transport
#
# httpx's timeouts bound each read, not the response: a server that sends one byte a second never
# trips them. The network backend below cuts every connect, read and write to what is left of the
# running check's deadline (rtbook.deadline) and registers each blocking read with the deadline's
# timer, which shuts the socket down the moment the deadline passes.


class _Stream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream, endpoint: str, awaiting: str) -> None:
        self._inner = inner
        self._endpoint = endpoint
        self._awaiting = awaiting

    def _shutdown(self) -> None:
        sock = self._inner.get_extra_info("socket")
        if isinstance(sock, socket.socket):
            sock.shutdown(socket.SHUT_RDWR)

    def _timeout(self, timeout: float | None, exc_type: type[Exception]) -> float | None:
        try:
            return _deadline.cap(timeout if timeout is not None else float("inf"), self._endpoint, self._awaiting)
        except _deadline.DeadlineExceeded as exc:
            raise exc_type(str(exc)) from exc

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        capped = self._timeout(timeout, httpcore.ReadTimeout)
        with _deadline.guard(self._endpoint, self._awaiting, self._shutdown):
            return self._inner.read(max_bytes, None if capped == float("inf") else capped)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        capped = self._timeout(timeout, httpcore.WriteTimeout)
        with _deadline.guard(self._endpoint, "the request to be sent", self._shutdown):
            self._inner.write(buffer, None if capped == float("inf") else capped)

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        capped = self._timeout(timeout, httpcore.ConnectTimeout)
        with _deadline.guard(self._endpoint, "the TLS handshake", self._shutdown):
            inner = self._inner.start_tls(ssl_context, server_hostname, None if capped == float("inf") else capped)
        return _Stream(inner, self._endpoint, self._awaiting)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self, endpoint: str, awaiting: str) -> None:
        self._inner = httpcore.SyncBackend()
        self._endpoint = endpoint
        self._awaiting = awaiting

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Any = None) -> httpcore.NetworkStream:
        try:
            capped = _deadline.cap(timeout if timeout is not None else float("inf"), self._endpoint, "a connection")
        except _deadline.DeadlineExceeded as exc:
            raise httpcore.ConnectTimeout(str(exc)) from exc
        with _deadline.guard(self._endpoint, "a connection"):
            stream = self._inner.connect_tcp(host, port, None if capped == float("inf") else capped,
                                             local_address, socket_options)
        return _Stream(stream, self._endpoint, self._awaiting)

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Any = None) -> httpcore.NetworkStream:
        return self._inner.connect_unix_socket(path, timeout, socket_options)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def _transport(url: str, awaiting: str) -> httpx.HTTPTransport:
    """httpx's own transport (no proxies from the environment) over the deadline-aware backend."""
    transport = httpx.HTTPTransport(trust_env=False)
    # httpx builds its pool without a way to pass a network backend; the pool it builds for these
    # arguments is this one (verify=True, http1 only, default limits).
    transport._pool = httpcore.ConnectionPool(
        ssl_context=httpx.create_ssl_context(trust_env=False),
        network_backend=_Backend(_endpoint(url), awaiting),
    )
    return transport


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
