"""A Realtime-compatible server for the sandbox (``python -m rtbook.sandbox.server CONFIG.json``).

It follows supabase/realtime (>= 2.116 for handshake error bodies): the tenant is the first label
of the Host header, looked up in ``_realtime.tenants`` of the metadata DB; Phoenix channels over
``/socket/websocket`` with ``vsn`` 1.0.0 (JSON objects) and 2.0.0 (JSON arrays); broadcast,
presence, postgres_changes (wal2json polling with RLS per subscriber) and the HTTP endpoints
``/api/ping``, ``/api/broadcast``, ``/api/tenants/{id}/health``, ``/healthcheck``, ``/metrics``.

It prints ``READY <port>`` on stdout once listening and stops cleanly on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import signal
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import psycopg
from aiohttp import WSMsgType, web

from rtbook.exceptions import RtbookError
from rtbook.sandbox._child import config_argument
from rtbook.sandbox.server_cdc import Binding, CdcPoller, binding_id, check_subscription, make_binding
from rtbook.sandbox.server_tenants import AuthError, ServerConfig, Tenant, TenantStore, verify_jwt

__all__ = ["RealtimeServer", "main", "serve"]

log = logging.getLogger("rtbook.sandbox.server")

# Compact JSON bodies, as Phoenix/Jason render them.
_json_response = partial(web.json_response, dumps=partial(json.dumps, separators=(",", ":")))

# RealtimeWeb.UserSocket.handle_error/2 (>= 2.116): reason -> HTTP status and body text.
_CONNECT_ERRORS: dict[str, tuple[int, str]] = {
    "tenant_not_found": (404, "Tenant not found"),
    "tenant_suspended": (403, "Realtime was disabled for this tenant"),
    "missing_api_key": (401, "API key is missing"),
    "expired_token": (401, "Token has expired"),
    "missing_claims": (401, "Fields `role` and `exp` are required in JWT"),
    "token_malformed": (401, "The token provided is not a valid JWT"),
    "signature_error": (401, "Failed to validate JWT signature"),
    "error_generating_signer": (401, "Failed to generate JWT signer, check your JWT secret or JWKS configuration"),
    "too_many_connections": (429, "Too many connected users"),
    "too_many_joins": (429, "Too many joins per second"),
}


def tenant_from_host(host: str) -> str:
    """Realtime.Database.get_external_id/1: the host up to the first dot (port removed)."""
    name = host.strip()
    if name.startswith("["):
        name = name[1 : name.find("]")] if "]" in name else name[1:]
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    return name.split(".", 1)[0]


class StartupError(RtbookError):
    """The server cannot start (metadata database unusable)."""


class RateCounter:
    """Events in a sliding window, compared as events per second (Realtime averages over ~60 s)."""

    def __init__(self, window_s: float) -> None:
        self._window = max(window_s, 0.05)
        self._events: collections.deque[float] = collections.deque()

    def hit(self) -> float:
        """Record one event and return the current rate per second."""
        now = time.monotonic()
        self._events.append(now)
        return self.rate(now)

    def rate(self, now: float | None = None) -> float:
        """The current rate per second."""
        now = time.monotonic() if now is None else now
        while self._events and now - self._events[0] > self._window:
            self._events.popleft()
        return len(self._events) / self._window


# --------------------------------------------------------------------------------------------
# Sockets and channels


@dataclass(eq=False)
class Channel:
    """One joined ``realtime:*`` topic on one socket."""

    session: Session
    topic: str
    join_ref: str | None
    broadcast_self: bool
    broadcast_ack: bool
    presence_key: str
    presence_enabled: bool
    private: bool
    token_claims: dict[str, Any]
    bindings: list[Binding] = field(default_factory=list)
    cdc_ready: bool = False
    presence_meta: dict[str, Any] | None = None

    @property
    def claims(self) -> dict[str, Any]:
        """The claims RLS checks run with."""
        return self.token_claims

    @property
    def sub_topic(self) -> str:
        """The topic without ``realtime:``."""
        return self.topic.split(":", 1)[1] if ":" in self.topic else self.topic

    def push(self, event: str, payload: dict[str, Any], *, with_join_ref: bool = False) -> None:
        """Queue a server push on this channel."""
        self.session.send(self.join_ref if with_join_ref else None, None, self.topic, event, payload)

    def push_postgres_changes(self, payload: dict[str, Any]) -> None:
        """Deliver one postgres_changes event."""
        self.push("postgres_changes", payload)


class Session:
    """One WebSocket connection."""

    def __init__(self, ws: web.WebSocketResponse, runtime: TenantRuntime, vsn: str, claims: dict[str, Any], token: str):
        self.ws = ws
        self.runtime = runtime
        self.vsn = vsn
        self.socket_claims = claims
        self.socket_token = token
        self.channels: dict[str, Channel] = {}
        self.id = uuid.uuid4().hex
        self._queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=10_000)
        self._writer = asyncio.create_task(self._write(), name="ws-writer")
        self.closing = False

    def encode(self, join_ref: str | None, ref: str | None, topic: str, event: str, payload: Any) -> str:
        """Serialize a frame for this socket's vsn."""
        if self.vsn == "2.0.0":
            return json.dumps([join_ref, ref, topic, event, payload], separators=(",", ":"))
        return json.dumps({"ref": ref, "topic": topic, "event": event, "payload": payload}, separators=(",", ":"))

    def send(self, join_ref: str | None, ref: str | None, topic: str, event: str, payload: Any) -> None:
        """Queue a frame; a socket that cannot keep up is closed rather than buffered forever."""
        if self.closing:
            return
        try:
            self._queue.put_nowait(self.encode(join_ref, ref, topic, event, payload))
        except asyncio.QueueFull:
            log.error("SlowConsumer: closing a socket of tenant %s", self.runtime.external_id)
            self.close()

    def reply(self, join_ref: str | None, ref: str | None, topic: str, status: str, response: Any) -> None:
        """Queue a phx_reply."""
        self.send(join_ref, ref, topic, "phx_reply", {"status": status, "response": response})

    def close(self) -> None:
        """Ask the writer to close the socket after the queued frames."""
        if not self.closing:
            self.closing = True
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(None)

    async def _write(self) -> None:
        try:
            while True:
                frame = await self._queue.get()
                if frame is None:
                    await self.ws.close()
                    return
                await self.ws.send_str(frame)
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            return

    async def finish(self, flush_timeout: float = 1.0) -> None:
        """Let the writer flush what is queued (bounded), then stop it."""
        self.close()
        try:
            await asyncio.wait_for(asyncio.shield(self._writer), flush_timeout)
        except (TimeoutError, asyncio.CancelledError, Exception):
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._writer


class TenantRuntime:
    """Per-tenant live state: sockets, channels by topic, presence, rate counters, DB handles."""

    def __init__(self, server: RealtimeServer, tenant: Tenant) -> None:
        self.server = server
        self.tenant = tenant
        self.external_id = tenant.external_id
        self.sessions: set[Session] = set()
        self.topics: dict[str, set[Channel]] = collections.defaultdict(set)
        window = server.config.rate_window_s
        self.events = RateCounter(window)
        self.joins = RateCounter(window)
        self.db: psycopg.AsyncConnection[Any] | None = None
        self.db_lock = asyncio.Lock()
        self.replication_ok = False
        self.poller = CdcPoller(
            lambda: self.tenant,
            self.cdc_channels,
            slot_suffix=server.config.slot_name_suffix,
            poll_interval_ms=server.config.poll_interval_ms,
            allow_event=self._allow_cdc_event,
        )

    def _allow_cdc_event(self) -> bool:
        return self.events.hit() <= self.tenant.max_events_per_second

    def cdc_channels(self) -> list[Channel]:
        """Channels with postgres_changes bindings."""
        return [c for chans in self.topics.values() for c in chans if c.bindings]

    def connected_users(self, exclude: Session | None = None) -> int:
        """Sockets with at least one joined channel (what Realtime counts)."""
        return sum(1 for s in self.sessions if s.channels and s is not exclude)

    async def connect_db(self) -> psycopg.AsyncConnection[Any]:
        """The tenant DB connection (opened on first join, like Realtime's Connect)."""
        async with self.db_lock:
            if self.db is None or self.db.closed or self.db.broken:
                self.db = await psycopg.AsyncConnection.connect(
                    self.tenant.conninfo("realtime_connect"), autocommit=True
                )
                cur = await self.db.execute("SHOW wal_level")
                row = await cur.fetchone()
                self.replication_ok = bool(row and row[0] == "logical")
            return self.db

    async def close(self) -> None:
        """Stop CDC and close the DB connection."""
        await self.poller.stop()
        if self.db is not None:
            with contextlib.suppress(Exception):
                await self.db.close()
            self.db = None

    # presence -----------------------------------------------------------------------------

    def presence_state(self, topic: str) -> dict[str, Any]:
        """``presence_state`` payload for a topic."""
        state: dict[str, Any] = {}
        for chan in self.topics.get(topic, ()):
            if chan.presence_meta is not None:
                state.setdefault(chan.presence_key, {"metas": []})["metas"].append(chan.presence_meta)
        return state

    def presence_diff(self, topic: str, joins: dict[str, Any], leaves: dict[str, Any]) -> None:
        """Broadcast a ``presence_diff`` to the presence-enabled channels of a topic."""
        payload = {"joins": joins, "leaves": leaves}
        for chan in list(self.topics.get(topic, ())):
            if chan.presence_enabled or chan.presence_meta is not None:
                chan.push("presence_diff", payload)

    def untrack(self, chan: Channel) -> None:
        """Remove a channel's presence and tell the others."""
        if chan.presence_meta is not None:
            meta, chan.presence_meta = chan.presence_meta, None
            self.presence_diff(chan.topic, {}, {chan.presence_key: {"metas": [meta]}})

    def remove_channel(self, chan: Channel) -> None:
        """Forget a channel (leave, close, socket gone)."""
        self.untrack(chan)
        members = self.topics.get(chan.topic)
        if members is not None:
            members.discard(chan)
            if not members:
                del self.topics[chan.topic]
        if chan.session.channels.get(chan.topic) is chan:
            del chan.session.channels[chan.topic]


class RealtimeServer:
    """The aiohttp application and the state shared by all tenants."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.store = TenantStore(config)
        self.runtimes: dict[str, TenantRuntime] = {}
        self.started = time.time()
        self._tasks: set[asyncio.Task[None]] = set()
        self.app = web.Application()
        self.app.router.add_get("/socket/websocket", self.handle_socket)
        self.app.router.add_get("/healthcheck", self.handle_healthcheck)
        self.app.router.add_get("/api/ping", self.handle_ping)
        self.app.router.add_post("/api/broadcast", self.handle_broadcast)
        self.app.router.add_get("/api/tenants/{tenant_id}/health", self.handle_health)
        self.app.router.add_get("/api/tenants", self.handle_tenants)
        self.app.router.add_get("/api/tenants/{tenant_id}", self.handle_tenants)
        self.app.router.add_post("/api/tenants/{tenant_id}/reload", self.handle_reload)
        self.app.router.add_get("/metrics", self.handle_metrics)
        self.app.on_shutdown.append(self._on_shutdown)
        self.app.on_cleanup.append(self._on_cleanup)

    def runtime(self, tenant: Tenant) -> TenantRuntime:
        """The live state for a tenant, refreshed with the newest row."""
        rt = self.runtimes.get(tenant.external_id)
        if rt is None:
            rt = self.runtimes[tenant.external_id] = TenantRuntime(self, tenant)
        else:
            rt.tenant = tenant
        return rt

    async def _on_shutdown(self, _app: web.Application) -> None:
        for rt in list(self.runtimes.values()):
            for session in list(rt.sessions):
                with contextlib.suppress(Exception):
                    await session.ws.close(code=1001, message=b"server shutting down")

    async def _on_cleanup(self, _app: web.Application) -> None:
        for rt in list(self.runtimes.values()):
            await rt.close()
        await self.store.close()

    async def _backoff(self, ms: int) -> None:
        if ms > 0:
            await asyncio.sleep(ms / 1000)

    async def _lookup(self, host: str) -> tuple[str, Tenant | None]:
        external_id = tenant_from_host(host)
        return external_id, await self.store.get(external_id)

    async def _assign_tenant(self, request: web.Request) -> Tenant | web.Response:
        """RealtimeWeb.Plugs.AssignTenant for the HTTP API: the Host's tenant, or the error response."""
        try:
            external_id, tenant = await self._lookup(request.host)
        except psycopg.Error as exc:
            log.error("UnableToConnectToMetadataDb: %s", _first_line(exc))
            return _json_response({"message": "Error connecting to Realtime"}, status=500)
        if tenant is None:
            log.error("TenantNotFound: Tenant not found: %s", external_id)
            return _json_response({"message": "Tenant not found in database"}, status=401)
        return tenant

    # HTTP ---------------------------------------------------------------------------------

    async def handle_healthcheck(self, _request: web.Request) -> web.Response:
        """``GET /healthcheck``: liveness only."""
        return web.Response(text="ok")

    async def handle_ping(self, request: web.Request) -> web.Response:
        """``GET /api/ping``: tenant from Host."""
        tenant = await self._assign_tenant(request)
        if isinstance(tenant, web.Response):
            return tenant
        rt = self.runtime(tenant)
        if rt.events.rate() > tenant.max_events_per_second:
            return _json_response({"message": "Too many requests"}, status=429)
        return _json_response({"message": "Success"})

    async def handle_broadcast(self, request: web.Request) -> web.Response:
        """``POST /api/broadcast``: deliver messages to public channels of the Host's tenant."""
        tenant = await self._assign_tenant(request)
        if isinstance(tenant, web.Response):
            return tenant
        if tenant.suspend:
            return _json_response({"message": "Tenant is suspended"}, status=403)
        auth = request.headers.get("Authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else request.headers.get("apikey")
        try:
            verify_jwt(token, tenant.jwt_secret, tenant.jwt_jwks)
        except AuthError:
            return _json_response({"message": "Unauthorized"}, status=401)
        rt = self.runtime(tenant)
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return _json_response({"errors": {"messages": ["is invalid"]}}, status=422)
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list):
            return _json_response({"errors": {"messages": ["can't be blank"]}}, status=422)
        for msg in messages:
            if not isinstance(msg, dict) or not isinstance(msg.get("topic"), str):
                return _json_response({"errors": {"messages": [{"topic": ["can't be blank"]}]}}, status=422)
        if rt.events.rate() + len(messages) / max(self.config.rate_window_s, 0.05) > tenant.max_events_per_second:
            return _json_response({"message": "You have exceeded your rate limit"}, status=429)
        for msg in messages:
            rt.events.hit()
            if msg.get("private"):
                continue  # no RLS write policy on realtime.messages in the sandbox: dropped silently
            payload: dict[str, Any] = {
                "type": "broadcast",
                "event": msg.get("event"),
                "payload": msg.get("payload") or {},
                "meta": {"id": str(msg.get("id") or uuid.uuid4())},
            }
            for chan in list(rt.topics.get("realtime:" + msg["topic"], ())):
                if not chan.private:
                    chan.push("broadcast", payload)
        return web.Response(status=202)

    def _admin_authorized(self, request: web.Request, secret: Any) -> bool:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return False
        try:
            verify_jwt(auth[7:], secret, None, require_claims=False)
        except AuthError:
            return False
        return True

    async def handle_health(self, request: web.Request) -> web.Response:
        """``GET /api/tenants/{id}/health`` (Bearer JWT signed with API_JWT_SECRET)."""
        if not self._admin_authorized(request, self.config.api_jwt_secret):
            return web.Response(status=403)
        external_id = request.match_info["tenant_id"]
        try:
            tenant = await self.store.get(external_id)
        except psycopg.Error as exc:
            log.error("UnableToConnectToMetadataDb: %s", _first_line(exc))
            return _json_response({"message": "Error connecting to Realtime"}, status=500)
        if tenant is None:
            log.error("TenantNotFound: Tenant not found: %s", external_id)
            return _json_response({"message": "not found"}, status=404)
        rt = self.runtime(tenant)
        users = rt.connected_users()
        db_connected = rt.db is not None and not rt.db.closed and not rt.db.broken
        if db_connected:
            healthy, replication = True, rt.replication_ok
        elif users > 0:
            healthy, replication = False, False
        else:
            # 2.78.15 runs the tenant migrations inside this request: healthy means "the DB answered".
            healthy, replication = False, False
            try:
                async with await psycopg.AsyncConnection.connect(
                    tenant.conninfo("realtime_health_check"), autocommit=True
                ) as conn:
                    await conn.execute("SELECT 1")
                    healthy = True
            except (psycopg.Error, RtbookError) as exc:
                log.error("UnableToConnectToProject: %s", _first_line(exc))
        return _json_response(
            {
                "data": {
                    "healthy": healthy,
                    "db_connected": db_connected,
                    "replication_connected": replication,
                    "connected_cluster": users,
                    "region": tenant.region,
                    "node": self.config.node,
                }
            }
        )

    async def handle_tenants(self, request: web.Request) -> web.Response:
        """``GET /api/tenants[/{id}]``: the admin API (read-only in the sandbox)."""
        if not self._admin_authorized(request, self.config.api_jwt_secret):
            return web.Response(status=403)
        external_id = request.match_info.get("tenant_id")
        try:
            views = await self.store.views(external_id)
        except psycopg.Error as exc:
            log.error("UnableToConnectToMetadataDb: %s", _first_line(exc))
            return _json_response({"message": "Error connecting to Realtime"}, status=500)
        if external_id is None:
            return _json_response({"data": views})
        if not views:
            log.error("TenantNotFound: Tenant not found: %s", external_id)
            return _json_response({"message": "not found"}, status=404)
        return _json_response({"data": views[0]})

    async def handle_reload(self, request: web.Request) -> web.Response:
        """``POST /api/tenants/{id}/reload``: drop caches, stop CDC and disconnect the tenant's sockets."""
        if not self._admin_authorized(request, self.config.api_jwt_secret):
            return web.Response(status=403)
        external_id = request.match_info["tenant_id"]
        self.store.invalidate(external_id)
        try:
            tenant = await self.store.get(external_id)
        except psycopg.Error:
            return _json_response({"message": "Error connecting to Realtime"}, status=500)
        if tenant is None:
            return _json_response({"message": "not found"}, status=404)
        rt = self.runtimes.pop(external_id, None)
        if rt is not None:
            for session in list(rt.sessions):
                for chan in list(session.channels.values()):
                    chan.push("system", {"extension": "system", "status": "ok",
                                         "message": "Server requested disconnect"}, with_join_ref=True)
                session.close()
            await rt.close()
        return web.Response(status=204)

    async def handle_metrics(self, request: web.Request) -> web.Response:
        """``GET /metrics`` (Bearer JWT signed with METRICS_JWT_SECRET)."""
        if not self._admin_authorized(request, self.config.metrics_jwt_secret):
            return web.Response(status=403)
        lines = ["# TYPE realtime_connections_connected gauge"]
        for ext_id, rt in sorted(self.runtimes.items()):
            lines.append(f'realtime_connections_connected{{tenant="{ext_id}"}} {rt.connected_users()}')
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    # WebSocket ----------------------------------------------------------------------------

    def _connect_error(self, reason: str) -> web.Response:
        status, text = _CONNECT_ERRORS.get(reason, (500, "Error connecting to Realtime"))
        return _json_response({"error": text}, status=status)

    async def handle_socket(self, request: web.Request) -> web.StreamResponse:
        """``GET /socket/websocket``: authenticate on the Host's tenant, then speak Phoenix channels."""
        try:
            external_id, tenant = await self._lookup(request.host)
        except psycopg.Error as exc:
            log.error("UnableToConnectToMetadataDb: %s", _first_line(exc))
            await self._backoff(self.config.connect_error_backoff_ms)
            return self._connect_error("unknown")
        if tenant is None:
            log.error("TenantNotFound: Tenant not found: %s", external_id)
            await self._backoff(self.config.connect_error_backoff_ms)
            return self._connect_error("tenant_not_found")
        if tenant.suspend:
            log.error("RealtimeDisabledForTenant: Realtime disabled for this tenant")
            await self._backoff(self.config.connect_error_backoff_ms)
            return self._connect_error("tenant_suspended")
        token = request.headers.get("x-api-key") or request.query.get("apikey")
        try:
            claims = verify_jwt(token, tenant.jwt_secret, tenant.jwt_jwks)
        except AuthError as exc:
            log.error("%s: %s", exc.code, exc.message)
            await self._backoff(self.config.connect_error_backoff_ms)
            return self._connect_error(exc.reason)
        rt = self.runtime(tenant)
        if rt.connected_users() >= tenant.max_concurrent_users:
            log.error("ConnectionRateLimitReached: Too many connected users")
            await self._backoff(self.config.connect_error_backoff_ms)
            return self._connect_error("too_many_connections")
        if rt.joins.rate() > tenant.max_joins_per_second:
            log.error("ClientJoinRateLimitReached: Too many joins per second")
            await self._backoff(self.config.connect_error_backoff_ms)
            return self._connect_error("too_many_joins")
        vsn = request.query.get("vsn", "1.0.0")
        if vsn not in ("1.0.0", "2.0.0"):
            return web.Response(status=400, text=f"unsupported vsn {vsn}")
        ws = web.WebSocketResponse(max_msg_size=4 * 1024 * 1024, autoping=True)
        await ws.prepare(request)
        session = Session(ws, rt, vsn, claims, token or "")
        rt.sessions.add(session)
        log.info("SocketConnected: tenant=%s vsn=%s role=%s", rt.external_id, vsn, claims.get("role"))
        try:
            while True:
                try:
                    msg = await ws.receive(timeout=self.config.idle_timeout_s)
                except TimeoutError:
                    # Phoenix closes a socket that sent nothing for its transport timeout (60 s).
                    log.info("IdleTimeout: no frame for %.0f s, closing the socket", self.config.idle_timeout_s)
                    break
                if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                    break
                if msg.type == WSMsgType.TEXT:
                    try:
                        await self._on_frame(session, msg.data)
                    except (psycopg.Error, RtbookError, ValueError, TypeError, KeyError) as exc:
                        # A crashed channel answers phx_error in Phoenix; the socket stays up.
                        log.error("UnknownErrorOnChannel: %s", type(exc).__name__)
                elif msg.type == WSMsgType.BINARY:
                    self._on_binary(session, msg.data)
                if session.closing:
                    break
        finally:
            for chan in list(session.channels.values()):
                rt.remove_channel(chan)
            rt.sessions.discard(session)
            await session.finish()
            if not ws.closed:
                await ws.close()
            if not rt.cdc_channels():
                await rt.poller.stop()
        return ws

    def _decode(self, session: Session, data: str) -> tuple[str | None, str | None, str, str, Any] | None:
        try:
            frame = json.loads(data)
        except ValueError:
            return None
        if session.vsn == "2.0.0":
            if not isinstance(frame, list) or len(frame) != 5:
                return None
            join_ref, ref, topic, event, payload = frame
        else:
            if not isinstance(frame, dict):
                return None
            join_ref, ref = frame.get("join_ref"), frame.get("ref")
            topic, event, payload = frame.get("topic"), frame.get("event"), frame.get("payload")
        if not isinstance(topic, str) or not isinstance(event, str):
            return None
        return (
            None if join_ref is None else str(join_ref),
            None if ref is None else str(ref),
            topic,
            event,
            payload if payload is not None else {},
        )

    def _on_binary(self, session: Session, data: bytes) -> None:
        """V2 binary frames: kind 3 is a user broadcast push (realtime-js sends broadcasts this way)."""
        if session.vsn != "2.0.0" or len(data) < 7 or data[0] != 3:
            log.warning("UnsupportedBinaryFrame: kind %s", data[0] if data else None)
            return
        lengths = list(data[1:6])
        encoding = data[6]
        offset = 7
        parts: list[str] = []
        for size in lengths:
            parts.append(data[offset : offset + size].decode("utf-8", "replace"))
            offset += size
        join_ref, ref, topic, event, metadata = parts
        body = data[offset:]
        chan = session.channels.get(topic)
        if chan is None:
            session.reply(join_ref or None, ref or None, topic, "error", {"reason": "unmatched topic"})
            return
        if encoding != 1:
            # Binary user payloads can only be relayed as binary kind-4 frames; not supported here.
            log.warning("UnsupportedBinaryFrame: binary broadcast payloads are not relayed by the sandbox")
            return
        try:
            user_payload = json.loads(body.decode()) if body else {}
            meta = json.loads(metadata) if metadata else None
        except ValueError:
            log.warning("InvalidMessage: a binary broadcast could not be decoded")
            return
        payload: dict[str, Any] = {"type": "broadcast", "event": event, "payload": user_payload}
        if isinstance(meta, dict):
            payload.update({k: v for k, v in meta.items() if k not in payload})
        self._broadcast(chan, ref or None, payload)

    async def _on_frame(self, session: Session, data: str) -> None:
        decoded = self._decode(session, data)
        if decoded is None:
            log.warning("InvalidMessage: a frame could not be decoded")
            return
        join_ref, ref, topic, event, payload = decoded
        if topic == "phoenix":
            if event == "heartbeat":
                session.reply(None, ref, "phoenix", "ok", {})
            return
        if event == "phx_join":
            await self._join(session, join_ref, ref, topic, payload)
            return
        chan = session.channels.get(topic)
        if chan is None:
            session.reply(join_ref, ref, topic, "error", {"reason": "unmatched topic"})
            return
        if event == "phx_leave":
            session.runtime.remove_channel(chan)
            session.reply(chan.join_ref, ref, topic, "ok", {})
            session.send(chan.join_ref, chan.join_ref, topic, "phx_close", {})
            if not session.runtime.cdc_channels():
                await session.runtime.poller.stop()
        elif event == "broadcast":
            self._broadcast(chan, ref, payload)
        elif event == "presence":
            self._presence(chan, ref, payload)
        elif event == "access_token":
            await self._access_token(chan, payload)
        else:
            log.info("UnknownEvent: %s on %s", event, topic)

    def _shutdown_channel(self, chan: Channel, message: str) -> None:
        chan.push("system", {"extension": "system", "status": "error", "message": message, "channel": chan.sub_topic},
                  with_join_ref=True)
        chan.session.runtime.remove_channel(chan)
        chan.session.send(chan.join_ref, chan.join_ref, chan.topic, "phx_close", {})

    def _broadcast(self, chan: Channel, ref: str | None, payload: Any) -> None:
        rt = chan.session.runtime
        if rt.events.hit() > rt.tenant.max_events_per_second:
            log.error("MessagePerSecondRateLimitReached: Too many messages per second")
            self._shutdown_channel(chan, "Too many messages per second")
            return
        if not isinstance(payload, dict):
            payload = {}
        out = {k: v for k, v in payload.items() if k in ("type", "event", "payload", "meta")}
        out.setdefault("type", "broadcast")
        for other in list(rt.topics.get(chan.topic, ())):
            if other is chan and not chan.broadcast_self:
                continue
            if other.private != chan.private:
                continue
            other.push("broadcast", out)
        if chan.broadcast_ack:
            chan.session.reply(chan.join_ref, ref, chan.topic, "ok", {})

    def _presence(self, chan: Channel, ref: str | None, payload: Any) -> None:
        rt = chan.session.runtime
        if not isinstance(payload, dict):
            chan.session.reply(chan.join_ref, ref, chan.topic, "error", {})
            return
        event = payload.get("event")
        if event == "track":
            state = payload.get("payload", {})
            if not isinstance(state, dict):
                chan.session.reply(chan.join_ref, ref, chan.topic, "error",
                                   {"reason": "Presence track payload must be a map"})
                return
            chan.presence_enabled = True
            meta = {**state, "phx_ref": _phx_ref()}
            previous = chan.presence_meta
            if previous is not None and {k: v for k, v in previous.items() if not k.startswith("phx_ref")} == state:
                chan.session.reply(chan.join_ref, ref, chan.topic, "ok", {})
                return
            leaves: dict[str, Any] = {}
            if previous is not None:
                meta["phx_ref_prev"] = previous["phx_ref"]
                leaves = {chan.presence_key: {"metas": [previous]}}
            chan.presence_meta = meta
            rt.presence_diff(chan.topic, {chan.presence_key: {"metas": [meta]}}, leaves)
            chan.session.reply(chan.join_ref, ref, chan.topic, "ok", {})
        elif event == "untrack":
            rt.untrack(chan)
            chan.session.reply(chan.join_ref, ref, chan.topic, "ok", {})
        else:
            chan.session.reply(chan.join_ref, ref, chan.topic, "error", {})

    async def _access_token(self, chan: Channel, payload: Any) -> None:
        token = payload.get("access_token") if isinstance(payload, dict) else None
        if not token or token == chan.session.socket_token or str(token).startswith("sb_"):
            return
        rt = chan.session.runtime
        try:
            claims = verify_jwt(str(token), rt.tenant.jwt_secret, rt.tenant.jwt_jwks)
        except AuthError as exc:
            log.error("%s: %s", exc.code, exc.message)
            self._shutdown_channel(chan, exc.message)
            return
        chan.token_claims = claims

    async def _join_error(self, session: Session, join_ref: str | None, ref: str | None, topic: str,
                          code: str, message: str, *, critical: bool = False) -> None:
        if critical:
            log.critical("%s: %s", code, message)
        else:
            log.error("%s: %s", code, message)
        await self._backoff(self.config.channel_error_backoff_ms)
        session.reply(join_ref, ref, topic, "error", {"reason": f"{code}: {message}"})

    async def _join(self, session: Session, join_ref: str | None, ref: str | None, topic: str, payload: Any) -> None:
        if not topic.startswith("realtime:"):
            session.reply(join_ref, ref, topic, "error", {"reason": "unmatched topic"})
            return
        if topic == "realtime:":
            await self._join_error(session, join_ref, ref, topic, "TopicNameRequired", "You must provide a topic name")
            return
        rt = session.runtime
        existing = session.channels.get(topic)
        if existing is not None:
            # Phoenix closes the previous channel on a duplicate join.
            rt.remove_channel(existing)
            session.send(existing.join_ref, None, topic, "phx_close", {})
        try:
            tenant = await self.store.get(rt.external_id)
        except psycopg.Error:
            tenant = None
        if tenant is None:
            await self._join_error(session, join_ref, ref, topic, "TenantNotFound",
                                   "Tenant with the given ID does not exist")
            session.close()
            return
        rt.tenant = tenant
        payload = payload if isinstance(payload, dict) else {}
        config = payload.get("config") if isinstance(payload.get("config"), dict) else {}
        assert isinstance(config, dict)
        private = _flex_bool(config.get("private"))
        if tenant.private_only and not private:
            await self._join_error(session, join_ref, ref, topic, "PrivateOnly",
                                   "This project only allows private channels")
            return
        if not session.channels and rt.connected_users(exclude=session) >= tenant.max_concurrent_users:
            await self._join_error(session, join_ref, ref, topic, "ConnectionRateLimitReached",
                                   "Too many connected users")
            return
        if rt.joins.hit() > tenant.max_joins_per_second:
            await self._join_error(session, join_ref, ref, topic, "ClientJoinRateLimitReached",
                                   "Too many joins per second", critical=True)
            session.close()
            return
        if len(session.channels) >= tenant.max_channels_per_client:
            await self._join_error(session, join_ref, ref, topic, "ChannelRateLimitReached", "Too many channels")
            return
        token = payload.get("access_token") or payload.get("user_token")
        claims = session.socket_claims
        if isinstance(token, str) and token and not token.startswith("sb_"):
            try:
                claims = verify_jwt(token, tenant.jwt_secret, tenant.jwt_jwks)
            except AuthError as exc:
                await self._join_error(session, join_ref, ref, topic, exc.code, exc.message)
                return
        try:
            db = await rt.connect_db()
        except (psycopg.Error, RtbookError) as exc:
            first = _first_line(exc)
            log.error("UnableToConnectToProject: %s", first)
            await self._join_error(session, join_ref, ref, topic, "UnableToConnectToProject",
                                   "Realtime was unable to connect to the project database")
            return
        if private:
            cur = await db.execute("SELECT to_regclass('realtime.messages') IS NOT NULL")
            row = await cur.fetchone()
            if not (row and row[0]):
                await self._join_error(session, join_ref, ref, topic, "Unauthorized",
                                       f"You do not have permissions to read from this Channel topic: {topic}")
                return
        broadcast = config.get("broadcast") if isinstance(config.get("broadcast"), dict) else {}
        presence = config.get("presence") if isinstance(config.get("presence"), dict) else {}
        assert isinstance(broadcast, dict) and isinstance(presence, dict)
        raw_bindings = config.get("postgres_changes") or []
        bindings: list[Binding] = []
        bad_binding: str | None = None
        echoed: list[dict[str, Any]] = []
        if isinstance(raw_bindings, list):
            for raw in raw_bindings:
                if not isinstance(raw, dict):
                    continue
                try:
                    binding = make_binding(raw)
                except ValueError as exc:
                    bad_binding = str(exc)
                    binding = make_binding({k: v for k, v in raw.items() if k != "filter"})
                    binding.id = binding_id(raw)
                bindings.append(binding)
                echoed.append({**raw, "id": binding.id})
        chan = Channel(
            session=session,
            topic=topic,
            join_ref=join_ref,
            broadcast_self=_flex_bool(broadcast.get("self")),
            broadcast_ack=_flex_bool(broadcast.get("ack")),
            presence_key=str(presence.get("key") or uuid.uuid4()),
            presence_enabled=_flex_bool(presence.get("enabled")) or tenant.presence_enabled,
            private=private,
            token_claims=claims,
            bindings=bindings,
        )
        session.channels[topic] = chan
        rt.topics[topic].add(chan)
        session.reply(join_ref, ref, topic, "ok", {"postgres_changes": echoed})
        if chan.presence_enabled:
            chan.push("presence_state", rt.presence_state(topic), with_join_ref=True)
        if bindings:
            task = asyncio.create_task(self._subscribe_cdc(chan, db, bad_binding), name="cdc-subscribe")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _subscribe_cdc(self, chan: Channel, db: psycopg.AsyncConnection[Any], bad: str | None) -> None:
        rt = chan.session.runtime
        error = bad
        if error is None:
            try:
                async with rt.db_lock:
                    for binding in chan.bindings:
                        error = await check_subscription(db, rt.tenant.publication, binding)
                        if error:
                            break
            except psycopg.Error as exc:
                error = "Unable to subscribe to changes with given parameters: " + _first_line(exc)
        if chan.session.channels.get(chan.topic) is not chan:
            return
        if error:
            log.error("RealtimeChannelError: %s", error)
            chan.bindings = []
            chan.push("system", {"extension": "postgres_changes", "status": "error", "message": error,
                                 "channel": chan.sub_topic}, with_join_ref=True)
            return
        chan.cdc_ready = True
        rt.poller.start()
        # Answer once the slot exists (or could not be made), so changes right after "Subscribed" are seen.
        await rt.poller.wait_prepared(5.0)
        if chan.session.channels.get(chan.topic) is not chan:
            return
        chan.push("system", {"extension": "postgres_changes", "status": "ok", "message": "Subscribed to PostgreSQL",
                             "channel": chan.sub_topic}, with_join_ref=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _flex_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1")
    return bool(value)


_REF_COUNTER = iter(range(1, 1 << 62))


def _phx_ref() -> str:
    # Phoenix.Presence refs are opaque strings; a unique one per track is all clients rely on.
    return f"F{next(_REF_COUNTER):x}{uuid.uuid4().hex[:8]}"


# --------------------------------------------------------------------------------------------
# Running


async def serve(config: ServerConfig, *, ready: asyncio.Event | None = None, stop: asyncio.Event | None = None,
                announce: bool = True) -> None:
    """Run the server until ``stop`` is set (or SIGTERM/SIGINT when ``stop`` is None)."""
    server = RealtimeServer(config)
    # Realtime migrates its metadata DB at boot and exits when it cannot; so does the sandbox.
    try:
        await server.store.check()
    except psycopg.Error as exc:
        await server.store.close()
        raise StartupError(f"cannot use the metadata database: {_first_line(exc)}") from exc
    runner = web.AppRunner(server.app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, reuse_address=True)
    await site.start()
    sockets = getattr(site._server, "sockets", None) or []
    port = int(sockets[0].getsockname()[1]) if sockets else config.port
    stop_event = stop or asyncio.Event()
    if stop is None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop_event.set)
    log.info("Realtime-compatible server listening on %s:%d", config.host, port)
    if announce:
        sys.stdout.write(f"READY {port}\n")
        sys.stdout.flush()
    if ready is not None:
        ready.set()
    try:
        await stop_event.wait()
    finally:
        try:
            await asyncio.wait_for(runner.cleanup(), timeout=1.5)
        except TimeoutError:
            log.warning("shutdown took longer than 1.5 s; exiting anyway")


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}"
        return f"{stamp} [{record.levelname.lower()}] {record.getMessage()}"


def main(argv: Iterable[str] | None = None) -> int:
    """Entry point of ``python -m rtbook.sandbox.server CONFIG.json`` (see :class:`ServerConfig`)."""
    config_path = config_argument(argv, "rtbook.sandbox.server")
    if config_path is None:
        return 2
    try:
        config = ServerConfig.load(config_path)
    except RtbookError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    root = logging.getLogger("rtbook.sandbox.server")
    root.handlers[:] = [handler]
    root.setLevel(config.log_level.upper())
    root.propagate = False
    try:
        asyncio.run(serve(config))
    except StartupError as exc:
        log.error("%s", exc)
        return 1
    except OSError as exc:
        sys.stderr.write(f"error: cannot listen on {config.host}:{config.port}: {exc.strerror}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
