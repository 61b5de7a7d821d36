"""A small synchronous Phoenix channels client for probing Realtime (websocket-client).

Realtime speaks the Phoenix channels protocol over a WebSocket (realtime-facts §5): frames are
JSON objects ``{"topic","event","payload","ref","join_ref"}`` with ``vsn=1.0.0`` and JSON arrays
``[join_ref, ref, topic, event, payload]`` with ``vsn=2.0.0``, where Realtime also sends and
accepts binary frames (:func:`decode`, :func:`encode_user_broadcast`). :class:`PhoenixClient` connects,
joins, pushes and waits for replies with explicit timeouts, and keeps a :class:`Transcript` of
every frame in both directions with the ``apikey`` and every ``access_token`` redacted, so a
check can put the conversation into its evidence.

A refused handshake raises :class:`HandshakeRefused` carrying the HTTP status and body (Realtime
≥ 2.116 answers e.g. 404 ``{"error":"Tenant not found"}``, older images 403 with no body).

    PhoenixError (ConnectionSetupError)
    ├── ConnectFailed       the TCP/TLS connection or the upgrade could not be made at all
    │   └── HandshakeRefused  the server answered the upgrade with a non-101 status
    ├── PhoenixTimeout      no matching frame within the timeout
    └── PhoenixClosed       the socket closed while waiting
"""

from __future__ import annotations

import json
import socket
import ssl
import struct
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import websocket

import rtbook.deadline as _deadline
from rtbook.exceptions import ConfigError, ConnectionSetupError
from rtbook.secrets import REDACTED, Redactor, Secret

__all__ = [
    "VSN1",
    "VSN2",
    "ConnectFailed",
    "HandshakeRefused",
    "Message",
    "PhoenixClient",
    "PhoenixClosed",
    "PhoenixError",
    "PhoenixTimeout",
    "ProtocolError",
    "Reply",
    "Transcript",
    "decode",
    "encode",
    "encode_user_broadcast",
    "socket_url",
]


VSN1 = "1.0.0"
VSN2 = "2.0.0"
Vsn = Literal["1.0.0", "2.0.0"]
# Keys whose values are tokens wherever they appear in a payload.
_TOKEN_KEYS = frozenset({"access_token", "user_token", "apikey", "token", "jwt"})


# ------------------------------------------------------------------ errors


class PhoenixError(ConnectionSetupError):
    """Base of the Phoenix client's errors."""


class ConnectFailed(PhoenixError):
    """The WebSocket could not be opened (refused, timed out, DNS, TLS, or a bad upgrade).

    Attributes:
        kind: ``refused``, ``timeout``, ``dns``, ``tls``, ``handshake`` or ``other``.
        url: the redacted URL that was tried.
        elapsed_ms: how long the attempt took.
        transcript: the attempt's transcript (set by :meth:`PhoenixClient.connect`).
    """

    def __init__(self, message: str, kind: str, url: str, elapsed_ms: float = 0.0) -> None:
        super().__init__(message)
        self.kind = kind
        self.url = url
        self.elapsed_ms = elapsed_ms
        self.transcript: Transcript | None = None


class HandshakeRefused(ConnectFailed):
    """The server answered the upgrade request with a status other than 101.

    Attributes:
        status: the HTTP status code.
        body: the response body as text (empty when there was none).
        headers: the response headers (lower-case names).
    """

    def __init__(
        self, status: int, body: str, headers: Mapping[str, str], url: str, elapsed_ms: float = 0.0
    ) -> None:
        shown = body.strip()[:300] or "(empty body)"
        super().__init__(
            f"WebSocket upgrade to {url} refused with HTTP {status}: {shown}", "handshake", url, elapsed_ms
        )
        self.status = status
        self.body = body
        self.headers = dict(headers)

    @property
    def error_text(self) -> str:
        """The ``error`` (or ``message``) field of a JSON body, else the raw body."""
        try:
            data = json.loads(self.body)
        except ValueError:
            return self.body.strip()
        if isinstance(data, dict):
            for key in ("error", "message", "reason"):
                if isinstance(data.get(key), str):
                    return str(data[key])
        return self.body.strip()


class PhoenixTimeout(PhoenixError):
    """No matching frame arrived within the timeout."""


class PhoenixClosed(PhoenixError):
    """The socket was closed (by either side) while a frame was awaited."""


class ProtocolError(PhoenixError):
    """A frame that is not a Phoenix message for the negotiated ``vsn``."""


# ------------------------------------------------------------------ codec


@dataclass(frozen=True)
class Message:
    """One Phoenix frame, independent of the serializer version."""

    topic: str
    event: str
    payload: Any = field(default_factory=dict)
    ref: str | None = None
    join_ref: str | None = None

    @property
    def is_reply(self) -> bool:
        """True for ``phx_reply`` frames."""
        return self.event == "phx_reply"


def encode(message: Message, vsn: str = VSN1) -> str:
    """Serialise ``message`` for the wire: an object for vsn 1.0.0, an array for 2.0.0.

    Raises:
        ConfigError: ``vsn`` is neither 1.0.0 nor 2.0.0.
    """
    if vsn == VSN1:
        obj: dict[str, Any] = {
            "topic": message.topic,
            "event": message.event,
            "payload": message.payload,
            "ref": message.ref,
        }
        if message.join_ref is not None:
            obj["join_ref"] = message.join_ref
        return json.dumps(obj, separators=(",", ":"))
    if vsn == VSN2:
        return json.dumps(
            [message.join_ref, message.ref, message.topic, message.event, message.payload], separators=(",", ":")
        )
    raise ConfigError(f"vsn {vsn!r} is not a Phoenix serializer version; use '1.0.0' or '2.0.0'")


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def decode(frame: str | bytes, vsn: str = VSN1) -> Message:
    """Parse one frame received from the server.

    Text frames are JSON (an object for vsn 1.0.0, an array for 2.0.0; either shape is accepted
    whatever ``vsn`` says, since a server may ignore the requested version). Binary frames are
    Phoenix V2 binary pushes (kind 0), replies (1) and broadcasts (2), and Realtime's user
    broadcasts (kind 4), which come back shaped as supabase-js shows them: event ``broadcast``
    with ``{"type": "broadcast", "event", "payload", "meta"?}``.

    Raises:
        ProtocolError: the frame is not a Phoenix message.
    """
    if isinstance(frame, bytes | bytearray):
        return _decode_binary(bytes(frame))
    try:
        data = json.loads(frame)
    except ValueError as exc:
        raise ProtocolError(f"frame is not JSON: {frame[:120]!r}") from exc
    if isinstance(data, dict):
        topic, event = data.get("topic"), data.get("event")
        if not isinstance(topic, str) or not isinstance(event, str):
            raise ProtocolError(f"frame lacks a string topic/event: {frame[:120]!r}")
        return Message(topic, event, data.get("payload"), _opt_str(data.get("ref")), _opt_str(data.get("join_ref")))
    if isinstance(data, list) and len(data) == 5:
        join_ref, ref, topic, event, payload = data
        if not isinstance(topic, str) or not isinstance(event, str):
            raise ProtocolError(f"frame lacks a string topic/event: {frame[:120]!r}")
        return Message(topic, event, payload, _opt_str(ref), _opt_str(join_ref))
    raise ProtocolError(f"frame is neither a vsn 1.0.0 object nor a vsn 2.0.0 array: {frame[:120]!r}")


def _strings(data: bytes, pos: int, lengths: tuple[int, ...]) -> tuple[list[str], int]:
    """The consecutive UTF-8 strings of ``lengths`` from ``pos``, and the position after them.

    Raises:
        ProtocolError: the header announces more bytes than the frame has.
    """
    out = []
    for n in lengths:
        if pos + n > len(data):
            raise ProtocolError(f"binary frame of {len(data)} bytes is shorter than its header says")
        out.append(data[pos : pos + n].decode())
        pos += n
    return out, pos


# Binary frame kinds of Realtime's V2 serializer (RealtimeWeb.Socket.V2Serializer, v2.63.0+).
KIND_PUSH = 0
KIND_REPLY = 1
KIND_BROADCAST = 2
KIND_USER_BROADCAST_PUSH = 3
KIND_USER_BROADCAST = 4
# The encoding byte of kinds 3 and 4: how the user payload is carried.
ENCODING_BINARY = 0
ENCODING_JSON = 1


def _binary(raw: bytes) -> dict[str, str]:
    # Raw binary payloads stay visible (and JSON-serialisable) in transcripts and evidence as hex.
    return {"binary": raw.hex()}


def _decode_binary(data: bytes) -> Message:
    # Header layouts (1-byte lengths, UTF-8 strings, payload = the rest of the frame), as the server
    # sends them: kind 0 push [kind, join_ref_len, topic_len, event_len]; kind 1 reply [kind,
    # join_ref_len, ref_len, topic_len, status_len]; kind 2 broadcast [kind, topic_len, event_len];
    # kind 4 user broadcast [kind, topic_len, user_event_len, metadata_len, encoding].
    try:
        kind = data[0]
        if kind == KIND_PUSH:
            (join_ref, topic, event), pos = _strings(data, 4, (data[1], data[2], data[3]))
            return Message(topic, event, _binary(data[pos:]), None, join_ref or None)
        if kind == KIND_REPLY:
            (join_ref, ref, topic, status), pos = _strings(data, 5, (data[1], data[2], data[3], data[4]))
            payload = {"status": status, "response": _binary(data[pos:])}
            return Message(topic, "phx_reply", payload, ref, join_ref or None)
        if kind == KIND_BROADCAST:
            (topic, event), pos = _strings(data, 3, (data[1], data[2]))
            return Message(topic, event, _binary(data[pos:]))
        if kind == KIND_USER_BROADCAST:
            return _decode_user_broadcast(data)
    except (IndexError, UnicodeDecodeError, struct.error) as exc:
        raise ProtocolError(f"malformed binary frame ({len(data)} bytes)") from exc
    raise ProtocolError(f"unknown binary frame kind {data[:1].hex() or 'empty'}")


def _decode_user_broadcast(data: bytes) -> Message:
    """Kind 4, what a V2 socket receives for a client's ``channel.send({type: "broadcast", ...})``.

    Shaped the way supabase-js decodes it, so checks match it like a JSON broadcast: event
    ``broadcast`` and payload ``{"type": "broadcast", "event": <user event>, "payload": ..., "meta"?}``.
    """
    encoding = data[4]
    (topic, user_event, metadata), pos = _strings(data, 5, (data[1], data[2], data[3]))
    raw = data[pos:]
    payload: dict[str, Any] = {"type": "broadcast", "event": user_event}
    if encoding == ENCODING_JSON:
        try:
            payload["payload"] = json.loads(raw.decode())
        except ValueError as exc:
            raise ProtocolError(f"user broadcast on {topic!r} says JSON but its payload is not JSON") from exc
    elif encoding == ENCODING_BINARY:
        payload["payload"] = _binary(raw)
    else:
        raise ProtocolError(f"user broadcast on {topic!r} has unknown encoding byte {encoding}")
    if metadata:
        try:
            payload["meta"] = json.loads(metadata)
        except ValueError as exc:
            raise ProtocolError(f"user broadcast on {topic!r} has metadata that is not JSON") from exc
    return Message(topic, "broadcast", payload)


def encode_user_broadcast(
    topic: str,
    user_event: str,
    payload: Any,
    *,
    join_ref: str | None,
    ref: str | None,
    metadata: Mapping[str, Any] | None = None,
) -> bytes:
    """A kind-3 binary user broadcast push, as supabase-js >= 2.81 sends ``channel.send`` on vsn 2.0.0.

    Header ``[3, join_ref_len, ref_len, topic_len, user_event_len, metadata_len, encoding]``, then
    the strings, the metadata JSON (empty when none) and the payload: ``bytes`` go as they are
    (encoding 0), anything else as JSON (encoding 1).

    Raises:
        ConfigError: a string is longer than 255 bytes (one length byte each).
    """
    if isinstance(payload, bytes | bytearray):
        body, encoding = bytes(payload), ENCODING_BINARY
    else:
        body, encoding = json.dumps(payload, separators=(",", ":")).encode(), ENCODING_JSON
    meta = json.dumps(dict(metadata), separators=(",", ":")).encode() if metadata else b""
    parts = [(join_ref or "").encode(), (ref or "").encode(), topic.encode(), user_event.encode(), meta]
    for name, part in zip(("join_ref", "ref", "topic", "event", "metadata"), parts, strict=True):
        if len(part) > 255:
            raise ConfigError(f"{name} is {len(part)} bytes; a binary broadcast allows at most 255")
    header = bytes([KIND_USER_BROADCAST_PUSH, *(len(p) for p in parts), encoding])
    return header + b"".join(parts) + body


# ------------------------------------------------------------------ transcript


@dataclass(frozen=True)
class TranscriptEntry:
    """One line of a transcript: milliseconds since connect, direction and the redacted frame."""

    t_ms: float
    direction: str  # "sent", "recv" or "note"
    text: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for a result's evidence."""
        return {"t_ms": round(self.t_ms, 1), "dir": self.direction, "frame": self.text}


class Transcript:
    """Every frame sent and received, redacted at the moment it is recorded.

    Bounded: after ``limit`` entries only a count of dropped frames is kept, so a chatty
    server cannot grow memory without end.
    """

    def __init__(self, redactor: Redactor, limit: int = 500) -> None:
        self._redactor = redactor
        self._start = time.monotonic()
        self._entries: list[TranscriptEntry] = []
        self._dropped = 0
        self._limit = limit
        self._lock = threading.Lock()

    def restart_clock(self) -> None:
        """Make later timestamps relative to now."""
        self._start = time.monotonic()

    def record(self, direction: str, text: str) -> None:
        """Append one redacted entry."""
        clean = self._redactor.text(_redact_token_fields(text))
        with self._lock:
            if len(self._entries) >= self._limit:
                self._dropped += 1
                return
            self._entries.append(TranscriptEntry((time.monotonic() - self._start) * 1000, direction, clean))

    @property
    def entries(self) -> list[TranscriptEntry]:
        """A copy of the entries."""
        with self._lock:
            return list(self._entries)

    def to_list(self) -> list[dict[str, Any]]:
        """The transcript as JSON-ready dicts (with a final note when frames were dropped)."""
        out = [e.to_dict() for e in self.entries]
        if self._dropped:
            out.append({"t_ms": None, "dir": "note", "frame": f"{self._dropped} more frames not kept"})
        return out

    def __len__(self) -> int:
        return len(self._entries)

    def __str__(self) -> str:
        return "\n".join(f"{e.t_ms:9.1f} ms {e.direction:4} {e.text}" for e in self.entries)


def _redact_token_fields(text: str) -> str:
    # Tokens may not look like JWTs (a wrong or garbage token must not leak either).
    if '"' not in text:
        return text
    try:
        data = json.loads(text)
    except ValueError:
        return text
    return json.dumps(_scrub(data), separators=(",", ":"))


def _scrub(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: (REDACTED if k in _TOKEN_KEYS and isinstance(v, str) and v else _scrub(v)) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


# ------------------------------------------------------------------ replies


@dataclass(frozen=True)
class Reply:
    """A ``phx_reply`` to one push.

    Attributes:
        topic: the channel topic.
        ref: the ref of the push this answers.
        status: ``ok``, ``error`` (or ``timeout`` as reported by the server).
        response: the reply's ``response`` object.
        latency_ms: time from sending the push to receiving the reply.
    """

    topic: str
    ref: str | None
    status: str
    response: Any
    latency_ms: float

    @property
    def ok(self) -> bool:
        """True when the status is ``ok``."""
        return self.status == "ok"

    @property
    def reason(self) -> str:
        """The ``reason`` of an error reply (``Code: message`` in Realtime), else ``""``."""
        if isinstance(self.response, dict) and isinstance(self.response.get("reason"), str):
            return str(self.response["reason"])
        return ""


# ------------------------------------------------------------------ client


def socket_url(base: str, apikey: str | None = None, vsn: str = VSN1, params: Mapping[str, str] | None = None) -> str:
    """The WebSocket URL for ``base``.

    ``base`` may be the gateway's Realtime prefix (``http://host:8000/realtime/v1``), Realtime's
    socket path (``http://host:4000/socket``) or a full ``ws(s)://…/websocket`` URL; ``http`` becomes
    ``ws``, ``/websocket`` is appended when missing and ``apikey``/``vsn`` go into the query.

    Raises:
        ConfigError: the scheme is not http, https, ws or wss.
    """
    parts = urllib.parse.urlsplit(base)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None:
        raise ConfigError(f"cannot open a WebSocket to {base!r}; use an http(s):// or ws(s):// URL")
    path = parts.path.rstrip("/")
    if not path.endswith("/websocket"):
        path += "/websocket"
    query = dict(urllib.parse.parse_qsl(parts.query))
    if apikey is not None:
        query["apikey"] = apikey
    query["vsn"] = vsn
    query.update(params or {})
    return urllib.parse.urlunsplit((scheme, parts.netloc, path, urllib.parse.urlencode(query), ""))


Predicate = Callable[[Message], bool]


class PhoenixClient:
    """A connected Phoenix socket with a background reader thread.

    Build it with :meth:`connect`. Every blocking call takes a timeout; :meth:`close` is always
    safe (idempotent, never raises). Received frames go to an inbox from which
    :meth:`wait_for` takes the first one a predicate accepts; all frames also stay in
    :attr:`history`.
    """

    def __init__(
        self,
        ws: websocket.WebSocket,
        *,
        url: str,
        vsn: str,
        redactor: Redactor,
        transcript: Transcript,
        connect_ms: float,
        heartbeat_interval: float | None = None,
        max_inbox: int = 2000,
        join_grace: float = 0.0,
    ) -> None:
        self._ws = ws
        self.url = url
        self.vsn = vsn
        self.redactor = redactor
        self.transcript = transcript
        self.connect_ms = connect_ms
        self.history: deque[tuple[float, Message]] = deque(maxlen=max_inbox)
        self._inbox: deque[tuple[float, Message]] = deque(maxlen=max_inbox)
        self._cond = threading.Condition()
        self._closed = threading.Event()
        self._close_reason = ""
        self._ref = 0
        self._ref_lock = threading.Lock()
        self._join_refs: dict[str, str] = {}
        self._heartbeat_interval = heartbeat_interval
        self.join_grace = join_grace
        self._last_sent = time.monotonic()
        self._reader = threading.Thread(target=self._read_loop, name="rtbook-phoenix-reader", daemon=True)
        self._reader.start()

    # -------------------------------------------------------------- connect
    @classmethod
    def connect(
        cls,
        url: str,
        apikey: Secret | str | None = None,
        vsn: str = VSN1,
        host_header: str | None = None,
        timeout: float = 10.0,
        *,
        redactor: Redactor | None = None,
        headers: Mapping[str, str] | None = None,
        heartbeat_interval: float | None = None,
        params: Mapping[str, str] | None = None,
        join_grace: float = 0.0,
    ) -> PhoenixClient:
        """Open the socket and return the client.

        Args:
            url: base URL (see :func:`socket_url`).
            apikey: the socket token, sent as the ``apikey`` query parameter (never shown).
            vsn: ``1.0.0`` (JSON objects) or ``2.0.0`` (JSON arrays).
            host_header: a Host header to send instead of the URL's host (Realtime takes the
                tenant from it).
            timeout: seconds for the TCP connect and the upgrade.
            redactor: registers the apikey; shared with the caller's redactor if given.
            headers: extra request headers (e.g. ``Origin``).
            heartbeat_interval: send ``phoenix``/``heartbeat`` this often while open (None: never).
            params: extra query parameters.
            join_grace: seconds every :meth:`join` waits beyond its ``timeout``: Realtime >= 2.83
                holds each join refusal for CHANNEL_ERROR_BACKOFF_MS (5 s by default) before it
                answers, so a short timeout alone would turn a clear refusal into a timeout.

        Raises:
            ConfigError: bad ``vsn``, ``url`` or ``timeout``.
            HandshakeRefused: the upgrade was answered with a non-101 status.
            ConnectFailed: the connection could not be made.
        """
        if vsn not in (VSN1, VSN2):
            raise ConfigError(f"vsn {vsn!r} is not a Phoenix serializer version; use '1.0.0' or '2.0.0'")
        if timeout <= 0:
            raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
        red = redactor if redactor is not None else Redactor()
        key = apikey.reveal() if isinstance(apikey, Secret) else apikey
        if key:
            red.add(key)
        full = socket_url(url, key, vsn, params)
        shown = red.text(full)
        transcript = Transcript(red)
        options: dict[str, Any] = {}
        if host_header:
            options["host"] = host_header
        if headers:
            options["header"] = [f"{k}: {v}" for k, v in headers.items()]
        transcript.record("note", f"connect {shown}" + (f" (Host: {host_header})" if host_header else ""))
        started = time.monotonic()
        endpoint = _endpoint(shown)
        ws = websocket.WebSocket(enable_multithread=True)

        def abort() -> None:
            # Called by the deadline's timer: ends a handshake read blocked on a silent or dripping peer.
            sock = ws.sock
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)

        try:
            # The whole upgrade (TCP connect, request, the answer's headers) ends within ``timeout``,
            # or sooner when the running check's deadline comes first: a socket timeout alone bounds
            # each read, and a peer dripping one byte a second never trips it.
            with _deadline.bounded(timeout, f"the WebSocket upgrade at {endpoint}"):
                try:
                    ws.settimeout(_deadline.cap(timeout, endpoint, "a TCP connection"))
                    with _deadline.guard(endpoint, "the answer to the WebSocket upgrade", abort):
                        ws.connect(full, **options)  # type: ignore[no-untyped-call]
                except websocket.WebSocketBadStatusException:
                    raise
                except Exception as exc:
                    spent = _deadline.spent()
                    if spent is not None and not isinstance(exc, _deadline.DeadlineExceeded):
                        raise spent.exceeded(endpoint, "the answer to the WebSocket upgrade") from exc
                    raise
        except websocket.WebSocketBadStatusException as exc:
            elapsed = (time.monotonic() - started) * 1000
            raw = exc.resp_body or b""
            body = red.text(raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw))
            hdrs = {str(k).lower(): red.text(str(v)) for k, v in (exc.resp_headers or {}).items()}
            transcript.record("note", f"handshake refused: HTTP {exc.status_code} {body[:300]}")
            refused = HandshakeRefused(int(exc.status_code), body, hdrs, shown, elapsed)
            refused.transcript = transcript
            raise refused from None
        except Exception as exc:  # every way a connect can fail becomes one typed error
            elapsed = (time.monotonic() - started) * 1000
            kind = _connect_error_kind(exc)
            text = red.text(f"{type(exc).__name__}: {exc}")
            transcript.record("note", f"connect failed ({kind}): {text}")
            failed = ConnectFailed(f"cannot open a WebSocket to {shown}: {text}", kind, shown, elapsed)
            failed.transcript = transcript
            raise failed from None
        elapsed = (time.monotonic() - started) * 1000
        transcript.record("note", f"upgraded: HTTP {ws.getstatus()} in {elapsed:.1f} ms")
        # A short socket timeout lets the reader notice close() and send heartbeats.
        ws.settimeout(0.2)
        return cls(
            ws,
            url=shown,
            vsn=vsn,
            redactor=red,
            transcript=transcript,
            connect_ms=elapsed,
            heartbeat_interval=heartbeat_interval,
            join_grace=join_grace,
        )

    # -------------------------------------------------------------- state
    @property
    def closed(self) -> bool:
        """True once the socket is closed (by us or by the server)."""
        return self._closed.is_set()

    @property
    def close_reason(self) -> str:
        """Why the socket closed, if it did."""
        return self._close_reason

    def next_ref(self) -> str:
        """A fresh message ref."""
        with self._ref_lock:
            self._ref += 1
            return str(self._ref)

    def join_ref(self, topic: str) -> str | None:
        """The join ref of ``topic`` if it was joined."""
        return self._join_refs.get(topic)

    # -------------------------------------------------------------- sending
    def send(self, message: Message) -> None:
        """Send one frame as is.

        Raises:
            PhoenixClosed: the socket is closed.
        """
        if self.closed:
            raise PhoenixClosed(f"socket to {self.url} is closed ({self._close_reason or 'closed'})")
        text = encode(message, self.vsn)
        # Recorded before sending so that the reply never precedes its request in the transcript.
        self.transcript.record("sent", text)
        try:
            self._ws.send(text)
        except (websocket.WebSocketException, OSError) as exc:
            self._mark_closed(f"send failed: {type(exc).__name__}: {exc}")
            raise PhoenixClosed(f"socket to {self.url} closed while sending: {self._close_reason}") from None
        self._last_sent = time.monotonic()

    def send_user_broadcast(
        self,
        topic: str,
        user_event: str,
        payload: Any,
        *,
        wait_reply: bool = False,
        timeout: float = 10.0,
    ) -> Reply | None:
        """Send ``channel.send({type: "broadcast", event, payload})`` as supabase-js does on vsn 2.0.0.

        The frame is a binary kind-3 push (:func:`encode_user_broadcast`); with ``wait_reply``
        the ``phx_reply`` (only sent when the channel joined with ``broadcast.ack``) is awaited.

        Raises:
            ConfigError: the socket is not vsn 2.0.0 (vsn 1.0.0 has no binary frames).
            PhoenixTimeout: ``wait_reply`` and no reply within ``timeout``.
            PhoenixClosed: the socket is closed.
        """
        if self.vsn != VSN2:
            raise ConfigError(f"binary broadcasts need vsn 2.0.0; this socket speaks {self.vsn}")
        ref = self.next_ref()
        frame = encode_user_broadcast(topic, user_event, payload, join_ref=self._join_refs.get(topic), ref=ref)
        if self.closed:
            raise PhoenixClosed(f"socket to {self.url} is closed ({self._close_reason or 'closed'})")
        started = time.monotonic()
        self.transcript.record("note", f"binary frame kind 3, {len(frame)} bytes, as JSON:")
        shown_payload = _binary(bytes(payload)) if isinstance(payload, bytes | bytearray) else payload
        self.transcript.record("sent", encode(Message(topic, "broadcast", {"type": "broadcast", "event": user_event,
                                                                          "payload": shown_payload}, ref,
                                                      self._join_refs.get(topic)), VSN2))
        try:
            self._ws.send_binary(frame)
        except (websocket.WebSocketException, OSError) as exc:
            self._mark_closed(f"send failed: {type(exc).__name__}: {exc}")
            raise PhoenixClosed(f"socket to {self.url} closed while sending: {self._close_reason}") from None
        self._last_sent = time.monotonic()
        if not wait_reply:
            return None
        return self._await_reply(topic, ref, started, timeout, f"binary broadcast on {topic}")

    def push(
        self,
        topic: str,
        event: str,
        payload: Any = None,
        wait_reply: bool = True,
        timeout: float = 10.0,
    ) -> Reply | None:
        """Push ``event`` on ``topic``; with ``wait_reply`` wait for and return its ``phx_reply``.

        Raises:
            PhoenixTimeout: ``wait_reply`` and no reply within ``timeout``.
            PhoenixClosed: the socket closed.
        """
        ref = self.next_ref()
        join_ref = self._join_refs.get(topic)
        started = time.monotonic()
        self.send(Message(topic, event, {} if payload is None else payload, ref, join_ref))
        if not wait_reply:
            return None
        return self._await_reply(topic, ref, started, timeout, f"{event} on {topic}")

    def _await_reply(self, topic: str, ref: str, started: float, timeout: float, what: str) -> Reply:
        msg = self.wait_for(
            lambda m: m.is_reply and m.ref == ref and m.topic == topic,
            timeout,
            what=f"a reply to {what} (ref {ref})",
            _started=started,
        )
        payload = msg.payload if isinstance(msg.payload, dict) else {}
        return Reply(
            topic,
            ref,
            str(payload.get("status", "")),
            payload.get("response", {}),
            (time.monotonic() - started) * 1000,
        )

    def heartbeat(self, timeout: float = 10.0) -> Reply:
        """Send ``phoenix``/``heartbeat`` and wait for its reply."""
        reply = self.push("phoenix", "heartbeat", {}, wait_reply=True, timeout=timeout)
        assert reply is not None
        return reply

    def join(
        self,
        topic: str,
        config: Mapping[str, Any] | None = None,
        access_token: Secret | str | None = None,
        timeout: float = 10.0,
        extra: Mapping[str, Any] | None = None,
    ) -> Reply:
        """Send ``phx_join`` for ``topic`` and return the reply (``ok`` or ``error`` with a reason).

        A ``None`` config sends no ``config`` key (the legacy API); the token, if given, goes in
        the payload as ``access_token``. The reply is awaited ``timeout`` + :attr:`join_grace`
        seconds (see :meth:`connect`).

        Raises:
            PhoenixTimeout: no reply within ``timeout``.
            PhoenixClosed: the socket closed.
        """
        payload: dict[str, Any] = {}
        if config is not None:
            payload["config"] = dict(config)
        if access_token is not None:
            token = access_token.reveal() if isinstance(access_token, Secret) else access_token
            self.redactor.add(token)
            payload["access_token"] = token
        payload.update(extra or {})
        ref = self.next_ref()
        self._join_refs[topic] = ref
        started = time.monotonic()
        self.send(Message(topic, "phx_join", payload, ref, ref))
        return self._await_reply(topic, ref, started, timeout + self.join_grace, f"phx_join on {topic}")

    def leave(self, topic: str, timeout: float = 10.0) -> Reply:
        """Send ``phx_leave`` and wait for its reply."""
        reply = self.push(topic, "phx_leave", {}, wait_reply=True, timeout=timeout)
        assert reply is not None
        self._join_refs.pop(topic, None)
        return reply

    # -------------------------------------------------------------- receiving
    def wait_for(
        self,
        predicate: Predicate,
        timeout: float,
        what: str = "a matching frame",
        _started: float | None = None,
    ) -> Message:
        """Take from the inbox the first frame ``predicate`` accepts, waiting up to ``timeout`` s.

        Raises:
            PhoenixTimeout: nothing matched in time.
            PhoenixClosed: the socket closed and nothing buffered matches.
        """
        deadline = (_started if _started is not None else time.monotonic()) + timeout
        # Inside a check the wait also ends with the check's deadline (rtbook.deadline).
        sc = _deadline.current()
        with _deadline.guard(_endpoint(self.url), what), self._cond:
            while True:
                for item in self._inbox:
                    if _safe(predicate, item[1]):
                        self._inbox.remove(item)
                        return item[1]
                if self._closed.is_set():
                    raise PhoenixClosed(
                        f"socket closed ({self._close_reason or 'closed'}) while waiting for {what}"
                    )
                remaining = deadline - time.monotonic()
                if sc is not None and sc.deadline.remaining() < remaining:
                    remaining = sc.deadline.remaining()
                    if remaining <= 0:
                        raise PhoenixTimeout(str(sc.exceeded(_endpoint(self.url), what)))
                if remaining <= 0:
                    raise PhoenixTimeout(f"no {what} within {timeout:g} s")
                self._cond.wait(min(remaining, 0.5))

    def wait_message(self, timeout: float, what: str = "a frame", **match: Any) -> Message:
        """:meth:`wait_for` with field equality, e.g. ``topic=..., event="system"``."""
        return self.wait_for(lambda m: all(getattr(m, k) == v for k, v in match.items()), timeout, what)

    def collect(self, predicate: Predicate, duration: float) -> list[Message]:
        """Wait the whole ``duration`` and take every matching frame (to prove something did NOT arrive).

        Inside a check the wait ends with the check's deadline at the latest.
        """
        sc = _deadline.current()
        if sc is not None:
            duration = min(duration, sc.deadline.remaining())
        deadline = time.monotonic() + duration
        with self._cond:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed.is_set():
                    break
                self._cond.wait(min(remaining, 0.5))
            taken = [item for item in self._inbox if _safe(predicate, item[1])]
            for item in taken:
                self._inbox.remove(item)
        return [m for _, m in taken]

    def received_at(self, message: Message) -> float | None:
        """The monotonic time ``message`` was received, if it is in the history."""
        for t, m in self.history:
            if m is message:
                return t
        return None

    def _read_loop(self) -> None:
        while not self._closed.is_set():
            self._maybe_heartbeat()
            try:
                opcode, data = self._ws.recv_data(control_frame=False)
            except websocket.WebSocketTimeoutException:
                continue
            except TimeoutError:
                continue
            except websocket.WebSocketConnectionClosedException:
                self._mark_closed("closed by the server")
                return
            except (websocket.WebSocketException, OSError, ValueError) as exc:
                self._mark_closed(f"{type(exc).__name__}: {exc}")
                return
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
                self._mark_closed(f"closed by the server (code {code})")
                return
            if opcode == websocket.ABNF.OPCODE_TEXT:
                text = data.decode("utf-8", errors="replace")
                frame: str | bytes = text
                self.transcript.record("recv", text)
            elif opcode == websocket.ABNF.OPCODE_BINARY:
                frame = data
            else:
                continue
            try:
                msg = decode(frame, self.vsn)
            except ProtocolError as exc:
                if isinstance(frame, bytes):
                    self.transcript.record("recv", f"<binary {len(frame)} bytes>")
                self.transcript.record("note", f"not a Phoenix frame: {exc}")
                continue
            if isinstance(frame, bytes):
                # Shown decoded (as a vsn 2.0.0 array) so the transcript reads like the text frames.
                self.transcript.record("note", f"binary frame kind {frame[0]}, {len(frame)} bytes, decoded:")
                self.transcript.record("recv", encode(msg, VSN2))
            now = time.monotonic()
            with self._cond:
                self.history.append((now, msg))
                self._inbox.append((now, msg))
                self._cond.notify_all()

    def _maybe_heartbeat(self) -> None:
        if self._heartbeat_interval and time.monotonic() - self._last_sent >= self._heartbeat_interval:
            try:
                self.send(Message("phoenix", "heartbeat", {}, self.next_ref()))
            except PhoenixClosed:
                pass

    def _mark_closed(self, reason: str) -> None:
        with self._cond:
            if not self._closed.is_set():
                self._close_reason = self.redactor.text(reason)
                self.transcript.record("note", self._close_reason)
                self._closed.set()
            self._cond.notify_all()

    # -------------------------------------------------------------- closing
    def close(self) -> None:
        """Close the socket and stop the reader; safe to call any number of times."""
        first = not self._closed.is_set()
        self._mark_closed("closed by the client")
        if first:
            try:
                self._ws.send_close(websocket.STATUS_NORMAL)
            except Exception:  # the socket may already be gone; closing must never raise
                pass
        try:
            self._ws.shutdown()  # type: ignore[no-untyped-call]
        except Exception:  # same: best effort
            pass
        if self._reader.is_alive() and threading.current_thread() is not self._reader:
            self._reader.join(timeout=2.0)

    def __enter__(self) -> PhoenixClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<PhoenixClient {self.url} vsn={self.vsn} {state}>"


def _endpoint(url: str) -> str:
    """scheme://host:port/path of a socket URL without its query (which holds the apikey)."""
    return url.split("?", 1)[0]


def _safe(predicate: Predicate, message: Message) -> bool:
    try:
        return bool(predicate(message))
    except Exception:  # a predicate that trips on an odd payload just does not match
        return False


def _connect_error_kind(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, websocket.WebSocketTimeoutException | TimeoutError | socket.timeout):
        return "timeout"
    if isinstance(exc, socket.gaierror | websocket.WebSocketAddressException):
        return "dns"
    if isinstance(exc, ssl.SSLError):
        return "tls"
    if isinstance(exc, websocket.WebSocketException):
        return "handshake"
    if isinstance(exc, ConnectionResetError | ConnectionAbortedError | BrokenPipeError):
        return "reset"
    return "other"


def topics(messages: Iterable[Message]) -> list[str]:
    """Distinct topics, in order (for summaries)."""
    seen: list[str] = []
    for m in messages:
        if m.topic not in seen:
            seen.append(m.topic)
    return seen
