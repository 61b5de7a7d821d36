"""A Realtime-compatible server for the sandbox (``python -m rtbook.sandbox.server CONFIG.json``).

It behaves as the Realtime image version given as ``realtime_version`` (see
:mod:`rtbook.sandbox.server_version` for the switches): the tenant is the first label of the Host
header, looked up in ``_realtime.tenants`` of the metadata DB; Phoenix channels over
``/socket/websocket`` with ``vsn`` 1.0.0 (JSON objects) and 2.0.0 (JSON arrays and binary user
broadcasts); broadcast, presence, private channels authorised by RLS on ``realtime.messages``,
postgres_changes (wal2json polling with RLS per subscriber) and the HTTP endpoints ``/api/ping``,
``/api/broadcast``, ``/api/tenants/{id}/health``, ``/api/tenants``, ``/healthcheck``, ``/metrics``.
Log lines use Realtime's console format and levels (:mod:`rtbook.sandbox.server_log`).

It prints ``READY <port>`` on stdout once listening and stops cleanly on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import random
import signal
import sys
import time
import uuid
from collections.abc import Iterable
from functools import partial
from typing import Any

import psycopg
from aiohttp import WSMsgType, web

from rtbook.exceptions import RtbookError
from rtbook.sandbox._child import config_argument
from rtbook.sandbox.server_cdc import SubscribeError, binding_id, make_binding
from rtbook.sandbox.server_channels import (
    Channel,
    Session,
    TenantRuntime,
    UserBroadcast,
    encode_user_broadcast,
    peek_claims,
)
from rtbook.sandbox.server_cluster import ClusterRelay
from rtbook.sandbox.server_connect import TenantDatabaseUnavailable, run_migrations
from rtbook.sandbox.server_log import Atom, Formatter, emit, inspect, inspect_pg_error
from rtbook.sandbox.server_private import AuthContext, Policies, PolicyError, read_policies, write_policies
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
_SERIALIZERS = '[{Phoenix.Socket.V1.JSONSerializer, "~> 1.0.0"}, {RealtimeWeb.Socket.V2Serializer, "~> 2.0.0"}]'
_CONFIRM_TOKEN_S = 300  # @confirm_token_ms_interval :timer.minutes(5)


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


def _flex_bool(value: Any) -> bool:
    """RealtimeWeb.Channels.Payloads.FlexibleBoolean (booleans and "true"/"false" in any case)."""
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return value is True


def _truthy(value: Any) -> bool:
    """Elixir's ``!!value``: everything but nil and false."""
    return value is not None and value is not False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _vsn_ok(vsn: str) -> bool | None:
    """True for ~> 1.0.0 / ~> 2.0.0, False for another version, None for a text that is not a version."""
    parts = vsn.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return None
    major, minor = int(parts[0]), int(parts[1])
    return (major, minor) in ((1, 0), (2, 0))


_REF_COUNTER = iter(range(1, 1 << 62))


def _phx_ref() -> str:
    # Phoenix.Presence refs are opaque strings; a unique one per track is all clients rely on.
    return f"F{next(_REF_COUNTER):x}{uuid.uuid4().hex[:8]}"


class RealtimeServer:
    """The aiohttp application and the state shared by all tenants."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.behaviour = config.behaviour
        self.timers = config.resolved_timers()
        self.store = TenantStore(config)
        self.runtimes: dict[str, TenantRuntime] = {}
        self.started = time.time()
        self._tasks: set[asyncio.Task[Any]] = set()
        # Broadcast and presence reach the other nodes of a sandbox cluster (Phoenix.PubSub/Tracker in Realtime).
        self._relay: ClusterRelay | None = None
        if config.cluster_channel:
            self._relay = ClusterRelay(config.metadata_conninfo(), config.cluster_channel, config.node,
                                       self._on_relay)
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

    @property
    def relay(self) -> ClusterRelay | None:
        """The cluster relay, or None for a lone node."""
        return self._relay

    def _on_relay(self, msg: dict[str, Any]) -> None:
        """A message from another node: deliver it to this node's channels (never relayed back)."""
        if msg.get("t") == "sync":
            # A node joined: send it this node's presences, as a Tracker replica transfers its state.
            for rt in list(self.runtimes.values()):
                for topic, chans in list(rt.topics.items()):
                    for private in (False, True):
                        joins: dict[str, Any] = {}
                        for chan in chans:
                            if chan.private == private and chan.presence_meta is not None:
                                joins.setdefault(chan.presence_key, {"metas": []})["metas"].append(chan.presence_meta)
                        if joins and self._relay is not None:
                            self._relay.presence(rt.external_id, topic, private, joins, {})
            return
        local = self.runtimes.get(str(msg.get("tenant")))
        if local is None:
            return  # no socket of that tenant on this node
        topic, private = str(msg.get("topic")), bool(msg.get("private"))
        if msg.get("t") == "presence":
            pjoins, pleaves = msg.get("joins"), msg.get("leaves")
            local.presence_diff(topic, private, pjoins if isinstance(pjoins, dict) else {},
                                pleaves if isinstance(pleaves, dict) else {}, relay=False)
            return
        payload: dict[str, Any] | UserBroadcast
        user = msg.get("user")
        if isinstance(user, dict):
            payload = UserBroadcast(str(user.get("event")), int(user.get("encoding") or 0),
                                    base64.b64decode(str(user.get("data") or "")))
        elif isinstance(msg.get("payload"), dict):
            payload = msg["payload"]
        else:
            return
        for chan in list(local.topics.get(topic, ())):
            if chan.private == private and chan.readable_broadcast():
                self._deliver(chan, payload)

    def runtime(self, tenant: Tenant) -> TenantRuntime:
        """The live state for a tenant, refreshed with the newest row."""
        rt = self.runtimes.get(tenant.external_id)
        if rt is None:
            rt = self.runtimes[tenant.external_id] = TenantRuntime(self, tenant)
        else:
            rt.tenant = tenant
        return rt

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _on_shutdown(self, _app: web.Application) -> None:
        for rt in list(self.runtimes.values()):
            for session in list(rt.sessions):
                with contextlib.suppress(Exception):
                    await session.ws.close(code=1001, message=b"server shutting down")

    async def _on_cleanup(self, _app: web.Application) -> None:
        for task in list(self._tasks):
            task.cancel()
        for rt in list(self.runtimes.values()):
            await rt.close()
        if self._relay is not None:
            await self._relay.stop()
        await self.store.close()

    async def _sleep_ms(self, ms: int) -> None:
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
            emit(logging.ERROR, _first_line(exc), code="UnableToConnectToMetadataDb")
            return _json_response({"message": "Error connecting to Realtime"}, status=500)
        if tenant is None:
            emit(logging.ERROR, f"Tenant not found: {external_id}", code="TenantNotFound", tenant=external_id)
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
        """``POST /api/broadcast`` (``Realtime.Tenants.BatchBroadcast``): 202, or 401/403/422/429."""
        tenant = await self._assign_tenant(request)
        if isinstance(tenant, web.Response):
            return tenant
        if tenant.suspend:
            return _json_response({"message": "Tenant is suspended"}, status=403)
        auth = request.headers.get("Authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else request.headers.get("apikey")
        try:
            claims = verify_jwt(token, tenant.jwt_secret, tenant.jwt_jwks)
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
        errors: list[dict[str, list[str]]] = []
        for msg in messages:
            err: dict[str, list[str]] = {}
            if not isinstance(msg, dict):
                err["topic"] = ["can't be blank"]
            else:
                for key in ("topic", "event"):
                    if not isinstance(msg.get(key), str) or not msg.get(key):
                        err[key] = ["can't be blank"]
                if not isinstance(msg.get("payload"), dict):
                    err["payload"] = ["can't be blank"]
            errors.append(err)
        if any(errors):
            return _json_response({"errors": {"messages": errors}}, status=422)
        if rt.events.rate() + len(messages) / max(self.config.rate_window_s, 0.05) > tenant.max_events_per_second:
            return _json_response({"message": "You have exceeded your rate limit"}, status=429)
        for msg in messages:
            rt.events.hit()
            payload: dict[str, Any] = {"event": msg["event"], "payload": msg["payload"], "type": "broadcast"}
            if msg.get("id") is not None:
                payload["meta"] = {"id": msg["id"]}
            private = _truthy(msg.get("private"))
            if private and not await self._rest_may_write(rt, msg["topic"], claims, dict(request.headers)):
                continue  # no INSERT policy on realtime.messages for this role: 202 and not delivered
            for chan in list(rt.topics.get("realtime:" + msg["topic"], ())):
                if chan.private == private and chan.readable_broadcast():
                    chan.push("broadcast", payload)
            if self._relay is not None:
                self._relay.broadcast(rt.external_id, "realtime:" + msg["topic"], private, payload)
        return web.Response(status=202)

    async def _rest_may_write(self, rt: TenantRuntime, topic: str, claims: dict[str, Any],
                              headers: dict[str, str]) -> bool:
        ctx = AuthContext(topic, claims, {k.lower(): v for k, v in headers.items() if k.lower().startswith("x-")})
        try:
            conn = await rt.connect.connection()
            policies = await write_policies(conn, rt.connect.lock, ctx, Policies())
        except TenantDatabaseUnavailable:
            emit(logging.ERROR, "Realtime was unable to connect to the project database",
                 code="UnableToConnectToProject", tenant=rt.external_id)
            return False
        except PolicyError as exc:
            emit(logging.ERROR, _policy_reason(exc), code=_policy_code(exc), tenant=rt.external_id)
            return False
        return bool(policies.broadcast_write)

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
        """``GET /api/tenants/{id}/health`` (Bearer JWT signed with API_JWT_SECRET), ``Tenants.health_check/1``."""
        if not self._admin_authorized(request, self.config.api_jwt_secret):
            return web.Response(status=403)
        external_id = request.match_info["tenant_id"]
        try:
            tenant = await self.store.get(external_id)
        except psycopg.Error as exc:
            emit(logging.ERROR, _first_line(exc), code="UnableToConnectToMetadataDb")
            return _json_response({"message": "Error connecting to Realtime"}, status=500)
        if tenant is None:
            emit(logging.ERROR, "Tenant not found", code="TenantNotFound")
            return _json_response({"message": "not found"}, status=404)
        rt = self.runtime(tenant)
        users = rt.connected_users()
        replication = False
        if rt.connect.alive:
            healthy, db_connected, replication = True, True, rt.connect.replication_connected
        elif users > 0:
            healthy, db_connected = False, False
        else:
            db_connected = False
            healthy = await self._health_migrations(tenant)
        return _json_response(
            {
                "data": {
                    "healthy": healthy,
                    "db_connected": db_connected,
                    "replication_connected": replication,
                    "connected_cluster": users,
                    "region": self.config.region,
                    "node": self.config.node,
                }
            }
        )

    async def _health_migrations(self, tenant: Tenant) -> bool:
        """No connection and no users: NEW compares ``migrations_ran`` (and migrates in the background); OLD runs
        the migrations in the request (``:noop`` without touching the DB when they already ran)."""
        due = tenant.migrations_ran is None or tenant.migrations_ran < self.behaviour.tenant_migrations
        if not due:
            return True
        if self.behaviour.health_async_migrations:
            self._spawn(self._migrate(tenant), "health-migrations")
            return False
        return await self._migrate(tenant)

    async def _migrate(self, tenant: Tenant) -> bool:
        try:
            await run_migrations(self.config, tenant)
        except (psycopg.Error, RtbookError) as exc:
            emit(logging.ERROR, _first_line(exc), code="MigrationsFailedToRun", tenant=tenant.external_id)
            return False
        self.store.invalidate(tenant.external_id)
        return True

    async def handle_tenants(self, request: web.Request) -> web.Response:
        """``GET /api/tenants[/{id}]``: the admin API (read-only in the sandbox)."""
        if not self._admin_authorized(request, self.config.api_jwt_secret):
            return web.Response(status=403)
        external_id = request.match_info.get("tenant_id")
        try:
            views = await self.store.views(external_id)
        except psycopg.Error as exc:
            emit(logging.ERROR, _first_line(exc), code="UnableToConnectToMetadataDb")
            return _json_response({"message": "Error connecting to Realtime"}, status=500)
        if external_id is None:
            return _json_response({"data": views})
        if not views:
            emit(logging.ERROR, "Tenant not found", code="TenantNotFound")
            return _json_response({"message": "not found"}, status=404)
        return _json_response({"data": views[0]})

    async def handle_reload(self, request: web.Request) -> web.Response:
        """``POST /api/tenants/{id}/reload``: drop caches, stop CDC and Connect, disconnect the tenant's sockets."""
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
            emit(logging.WARNING, f"Disconnecting all sockets for tenant {external_id}", tenant=external_id)
            for session in list(rt.sessions):
                for chan in list(session.channels.values()):
                    # Through the fastlane dispatcher: no join_ref.
                    chan.push("system", {"extension": "system", "status": "ok",
                                         "message": "Server requested disconnect"})
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

    # WebSocket handshake ------------------------------------------------------------------

    async def _refuse(self, reason: str) -> web.Response:
        """``connect_error/1``: sleep CONNECT_ERROR_BACKOFF_MS, then the version's refusal."""
        await self._sleep_ms(self.timers.connect_error_backoff_ms)
        if not self.behaviour.handshake_json_errors:
            return web.Response(status=403)
        status, text = _CONNECT_ERRORS.get(reason, (500, "Error connecting to Realtime"))
        return _json_response({"error": text}, status=status)

    async def handle_socket(self, request: web.Request) -> web.StreamResponse:
        """``GET /socket/websocket``: ``RealtimeWeb.UserSocket.connect/3``, then Phoenix channels."""
        started = time.monotonic()
        vsn = request.query.get("vsn", "1.0.0")
        ok = _vsn_ok(vsn)
        if not ok:
            # Phoenix.Socket.negotiate_serializer: logged by the transport, refused before connect/3 runs.
            text = (f'Client sent invalid transport version "{vsn}"' if ok is None else
                    f"The client's requested transport version \"{vsn}\" does not match server's version "
                    f"requirements of {_SERIALIZERS}")
            emit(logging.WARNING, text)
            return web.Response(status=403)
        external_id = tenant_from_host(request.host)
        raw_level = request.query.get("log_level")
        log_level = raw_level if raw_level in ("info", "warning", "error") else "error"
        # Phoenix's x_headers: only x-* headers reach connect/3; x-api-key wins over ?apikey, even when empty.
        x_headers = {k.lower(): v for k, v in request.headers.items() if k.lower().startswith("x-")}
        token = x_headers["x-api-key"] if "x-api-key" in x_headers else request.query.get("apikey")
        socket_claims = peek_claims(token)

        def slog(level: int, code: str, message: str, *, with_claims: bool = False) -> None:
            emit(level, message, code=code, tenant=external_id, claims=socket_claims if with_claims else None,
                 socket_level=log_level if level < logging.ERROR else None)

        try:
            tenant = await self.store.get(external_id)
        except psycopg.Error as exc:
            slog(logging.ERROR, "ErrorConnectingToWebsocket", inspect_error_tuple(exc))
            return await self._refuse("unknown")
        b = self.behaviour
        if tenant is None:
            slog(logging.ERROR, "TenantNotFound", f"Tenant not found: {external_id}")
            return await self._refuse("tenant_not_found")
        if tenant.suspend:
            slog(logging.ERROR, "RealtimeDisabledForTenant", "Realtime disabled for this tenant", with_claims=True)
            return await self._refuse("tenant_suspended")
        if token is None:
            if b.missing_apikey_code:
                slog(logging.ERROR, "MissingAPIKey", "API key is missing or not a valid string")
            else:
                # Before v2.86.3 the nil token fell into the `nil ->` clause of the with: logged as a missing tenant.
                slog(logging.ERROR, "TenantNotFound", f"Tenant not found: {external_id}")
            return await self._refuse("missing_api_key" if b.missing_apikey_code else "tenant_not_found")
        try:
            claims = verify_jwt(token, tenant.jwt_secret, tenant.jwt_jwks)
        except AuthError as exc:
            if exc.reason in ("expired_token", "missing_claims") and exc.message != "Token expiration time is invalid":
                slog(logging.WARNING, "InvalidJWTToken", exc.message, with_claims=True)
                return await self._refuse(exc.reason)
            if exc.reason == "token_malformed":
                slog(logging.ERROR, "MalformedJWT", "The token provided is not a valid JWT")
                return await self._refuse(exc.reason)
            slog(logging.ERROR, "ErrorConnectingToWebsocket", _auth_error_tuple(exc))
            return await self._refuse(exc.reason if exc.reason != "expired_token" else "unknown")
        rt = self.runtime(tenant)
        if rt.connected_users() >= tenant.max_concurrent_users:
            slog(logging.ERROR, "ConnectionRateLimitReached", "Too many connected users", with_claims=True)
            return await self._refuse("too_many_connections")
        if rt.joins.rate() > tenant.max_joins_per_second:
            slog(logging.ERROR, "JoinsRateLimitReached", "Too many joins per second", with_claims=True)
            return await self._refuse("too_many_joins")
        ws = web.WebSocketResponse(max_msg_size=5_000_000, autoping=True)
        await ws.prepare(request)
        session = Session(ws, rt, vsn, claims, token, log_level=log_level, headers=x_headers)
        rt.sessions.add(session)
        params = ", ".join(f'"{k}" => "[FILTERED]"' for k in sorted(request.query))
        serializer = "RealtimeWeb.Socket.V2Serializer" if session.v2 else "Phoenix.Socket.V1.JSONSerializer"
        emit(logging.INFO, f"CONNECTED TO RealtimeWeb.UserSocket in {int((time.monotonic() - started) * 1e6)}µs\n"
             f"  Transport: :websocket\n  Serializer: {serializer}\n  Parameters: %{{{params}}}",
             tenant=external_id, socket_level=log_level)
        try:
            while True:
                try:
                    msg = await ws.receive(timeout=self.config.idle_timeout_s)
                except TimeoutError:
                    # Phoenix closes a socket that sent nothing for its transport timeout (60 s).
                    break
                if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                    break
                if msg.type == WSMsgType.TEXT:
                    try:
                        await self._on_frame(session, msg.data)
                    except (psycopg.Error, RtbookError, ValueError, TypeError, KeyError) as exc:
                        emit(logging.ERROR, _first_line(exc), code="UnknownErrorOnWebSocketMessage",
                             tenant=external_id)
                elif msg.type == WSMsgType.BINARY:
                    await self._on_binary(session, msg.data)
                if session.closing:
                    break
        finally:
            for chan in list(session.channels.values()):
                rt.remove_channel(chan)
            rt.sessions.discard(session)
            await session.finish()
            if not ws.closed:
                await ws.close()
        return ws

    # Frames -------------------------------------------------------------------------------

    def _decode(self, session: Session, data: str) -> tuple[str | None, str | None, str, str, Any] | None:
        try:
            frame = json.loads(data)
        except ValueError:
            return None
        if session.v2:
            if not isinstance(frame, list) or len(frame) < 5:
                return None
            join_ref, ref, topic, event, payload = frame[:5]
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

    async def _on_binary(self, session: Session, data: bytes) -> None:
        """V2 binary frames: kind 3 is a user broadcast push (what supabase-js sends for ``channel.send``)."""
        rt = session.runtime
        if not session.v2 or not self.behaviour.user_broadcast_binary or len(data) < 7 or data[0] != 3:
            emit(logging.ERROR, f"unexpected binary frame of kind {data[0] if data else None}",
                 code="MalformedWebSocketMessage", tenant=rt.external_id)
            return
        lengths = list(data[1:6])
        encoding = data[6]
        offset = 7
        parts: list[str] = []
        for size in lengths:
            parts.append(data[offset : offset + size].decode("utf-8", "replace"))
            offset += size
        join_ref, ref, topic, event, _metadata = parts
        chan = session.channels.get(topic)
        if chan is None:
            session.reply(join_ref or None, ref or None, topic, "error", {"reason": "unmatched topic"})
            return
        # The metadata is decoded by the serializer but not used by Realtime ("not using the metadata").
        await self._broadcast(chan, ref or None, UserBroadcast(event, 0 if encoding == 0 else 1, bytes(data[offset:])))

    async def _on_frame(self, session: Session, data: str) -> None:
        decoded = self._decode(session, data)
        if decoded is None:
            emit(logging.ERROR, "expected a Phoenix message", code="MalformedWebSocketMessage",
                 tenant=session.runtime.external_id)
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
        elif event == "broadcast":
            await self._broadcast(chan, ref, payload)
        elif event == "presence":
            await self._presence(chan, ref, payload)
        elif event == "access_token" and isinstance(payload, dict) and "access_token" in payload:
            await self._access_token(chan, payload.get("access_token"))
        else:
            chan.log(logging.INFO, None, f"Unexpected message from client of type `{event}` with payload: "
                     f"{inspect(payload)}")

    def _shutdown_channel(self, chan: Channel, message: str) -> None:
        """``shutdown_response/2``: system error push, ``ChannelShutdown`` warning, channel stopped."""
        chan.push_system("system", "error", message)
        chan.log(logging.WARNING, "ChannelShutdown", message)
        chan.session.runtime.remove_channel(chan)
        chan.session.send(chan.join_ref, chan.join_ref, chan.topic, "phx_close", {})

    # Broadcast and presence ---------------------------------------------------------------

    async def _private_policies(self, chan: Channel, *, write: bool, read_presence: bool = False) -> bool:
        """Evaluate missing private-channel policies; False when the check failed (already logged)."""
        rt = chan.session.runtime
        policies = chan.policies or Policies()
        ctx = AuthContext(chan.sub_topic, chan.claims, chan.session.headers)
        try:
            conn = await rt.connect.connection()
            if read_presence and policies.presence_read is None:
                policies = await read_policies(conn, rt.connect.lock, ctx, policies, presence=True)
            if write and policies.broadcast_write is None:
                policies = await write_policies(conn, rt.connect.lock, ctx, policies)
        except TenantDatabaseUnavailable:
            emit(logging.ERROR, "Realtime was unable to connect to the project database",
                 code="UnableToConnectToProject", tenant=rt.external_id)
            return False
        except PolicyError as exc:
            emit(logging.ERROR, _policy_reason(exc), code=_policy_code(exc), tenant=rt.external_id)
            return False
        chan.policies = policies
        return True

    async def _broadcast(self, chan: Channel, ref: str | None, payload: Any) -> None:
        """``BroadcastHandler.handle``: private needs the INSERT policy (else dropped silently, no ack)."""
        rt = chan.session.runtime
        if chan.private:
            unknown = chan.policies is None or chan.policies.broadcast_write is None
            if unknown and not await self._private_policies(chan, write=True):
                return
            if not (chan.policies and chan.policies.broadcast_write):
                return
        # BroadcastHandler counts the send; each receiving channel counts its delivery and, when the
        # tenant's counter is triggered, shuts itself (RealtimeChannel handle_info(:update_rate_counter)).
        # The sender is not stopped by its own sends. The delivery itself (fastlane) has happened.
        rt.channel_events.add()
        if not isinstance(payload, dict | UserBroadcast):
            payload = {}
        for other in list(rt.topics.get(chan.topic, ())):
            if other is chan and not chan.broadcast_self:
                continue
            if other.private != chan.private or not other.readable_broadcast():
                continue
            self._deliver(other, payload)
            rt.channel_events.add()
            if rt.channel_events.is_triggered():
                self._shutdown_channel(other, "Too many messages per second")
        if self._relay is not None:
            self._relay.broadcast(rt.external_id, chan.topic, chan.private, payload)
        if chan.broadcast_ack:
            chan.session.reply(chan.join_ref, ref, chan.topic, "ok", {})

    def _deliver(self, chan: Channel, payload: dict[str, Any] | UserBroadcast) -> None:
        """Fastlane one broadcast to one channel in its socket's format (MessageDispatcher)."""
        if isinstance(payload, dict):
            chan.push("broadcast", payload)
            return
        if chan.session.v2 and self.behaviour.user_broadcast_binary:
            chan.session.send_binary(encode_user_broadcast(chan.topic, payload))
            return
        if payload.encoding != 1:
            return  # UserBroadcast.convert_to_json_broadcast: a binary payload cannot reach a V1 socket
        try:
            user_payload = json.loads(payload.payload.decode()) if payload.payload else None
        except (ValueError, UnicodeDecodeError):
            return
        chan.push("broadcast", {"event": payload.event, "payload": user_payload, "type": "broadcast"})

    async def _presence(self, chan: Channel, ref: str | None, payload: Any) -> None:
        """``PresenceHandler.handle`` and the channel's ``handle_in("presence", …)`` replies."""
        rt = chan.session.runtime
        if not isinstance(payload, dict) or "event" not in payload:
            chan.session.reply(chan.join_ref, ref, chan.topic, "ok", {})
            return
        event = str(payload.get("event")).lower()
        if event == "track":
            unknown = chan.policies is None or chan.policies.presence_write is None
            if chan.private and unknown and not await self._private_policies(chan, write=True, read_presence=True):
                chan.log(logging.ERROR, "UnableToHandlePresence", ":rls_policy_error")
                chan.session.reply(chan.join_ref, ref, chan.topic, "error", {})
                return
            if chan.private and not (chan.policies and chan.policies.presence_write):
                chan.log(logging.ERROR, "UnableToHandlePresence", ":unauthorized")
                chan.session.reply(chan.join_ref, ref, chan.topic, "error", {})
                return
            state = payload.get("payload", {})
            if not isinstance(state, dict):
                chan.log(logging.ERROR, "InvalidPresencePayload", ":invalid_payload")
                chan.session.reply(chan.join_ref, ref, chan.topic, "error",
                                   {"reason": "Presence track payload must be a map"})
                return
            chan.presence_enabled = True
            if chan.presence_payload == state:
                chan.session.reply(chan.join_ref, ref, chan.topic, "ok", {})
                return
            meta = {**state, "phx_ref": _phx_ref()}
            previous = chan.presence_meta
            leaves: dict[str, Any] = {}
            if previous is not None:
                meta["phx_ref_prev"] = previous["phx_ref"]
                leaves = {chan.presence_key: {"metas": [previous]}}
            chan.presence_meta = meta
            chan.presence_payload = state
            rt.presence_diff(chan.topic, chan.private, {chan.presence_key: {"metas": [meta]}}, leaves)
            chan.session.reply(chan.join_ref, ref, chan.topic, "ok", {})
        elif event == "untrack":
            rt.untrack(chan)
            chan.session.reply(chan.join_ref, ref, chan.topic, "ok", {})
        else:
            emit(logging.ERROR, event, code="UnknownPresenceEvent", tenant=chan.tenant)
            chan.log(logging.ERROR, "UnableToHandlePresence", ":unknown_presence_event")
            chan.session.reply(chan.join_ref, ref, chan.topic, "error", {})

    # Tokens -------------------------------------------------------------------------------

    def _channel_token(self, session: Session, payload: dict[str, Any]) -> str:
        """``assign_access_token/2``: ``sb_…`` → the socket token; else ``user_token``, ``access_token``, socket."""
        candidate = payload.get("access_token")
        if not _truthy(candidate):
            candidate = payload.get("user_token")
        if isinstance(candidate, str) and candidate.startswith("sb_"):
            return session.socket_token
        if isinstance(payload.get("user_token"), str):
            return str(payload["user_token"])
        if isinstance(payload.get("access_token"), str):
            return str(payload["access_token"])
        return session.socket_token

    def _confirm_token(self, rt: TenantRuntime, token: str) -> dict[str, Any]:
        """``confirm_token/1``: verify with role+exp required.

        Raises:
            AuthError: Realtime's reason and text.
        """
        return verify_jwt(token, rt.tenant.jwt_secret, rt.tenant.jwt_jwks)

    def _watch_token(self, chan: Channel) -> None:
        """Re-check the token every ``min(5 min, time to exp)``; at expiry the channel is shut down."""
        if chan.confirm_task is not None:
            chan.confirm_task.cancel()
        chan.confirm_task = self._spawn(self._confirm_loop(chan), "confirm-token")

    async def _confirm_loop(self, chan: Channel) -> None:
        while not chan.closed:
            exp = chan.claims.get("exp")
            left = float(exp) - time.time() if isinstance(exp, int | float) else _CONFIRM_TOKEN_S
            await asyncio.sleep(max(0.0, min(_CONFIRM_TOKEN_S, left)) + 0.01)
            if chan.closed:
                return
            try:
                chan.token_claims = self._confirm_token(chan.session.runtime, chan.access_token)
            except AuthError as exc:
                if exc.reason == "missing_claims":
                    self._shutdown_channel(chan, "Fields `role` and `exp` are required in JWT")
                elif exc.reason in ("expired_token", "token_malformed"):
                    self._shutdown_channel(chan, exc.message)
                else:
                    self._shutdown_channel(chan, f":{exc.reason}")
                return

    async def _access_token(self, chan: Channel, token: Any) -> None:
        """``handle_in("access_token", …)``: ignored for nil, ``sb_…`` and the channel's current token."""
        if token is None or not isinstance(token, str) or token.startswith("sb_") or token == chan.access_token:
            return
        rt = chan.session.runtime
        previous = chan.policies
        chan.access_token = token
        chan.policies = Policies() if chan.private else None
        try:
            claims = self._confirm_token(rt, token)
        except AuthError as exc:
            if exc.reason == "missing_claims":
                self._shutdown_channel(chan, "Fields `role` and `exp` are required in JWT")
            elif exc.reason in ("expired_token", "token_malformed"):
                self._shutdown_channel(chan, exc.message)
            else:
                if exc.reason == "error_generating_signer" and "kid" in exc.message:
                    chan.log(logging.ERROR, "JwtSignerError", exc.message)
                    self._shutdown_channel(chan, exc.message)
                else:
                    self._shutdown_channel(chan, f":{exc.reason}")
            return
        chan.token_claims = claims
        if chan.private:
            try:
                conn = await rt.connect.connection()
                policies = await read_policies(conn, rt.connect.lock, AuthContext(chan.sub_topic, claims,
                                               chan.session.headers), Policies(), presence=chan.presence_enabled)
            except (TenantDatabaseUnavailable, PolicyError) as exc:
                if isinstance(exc, PolicyError) and exc.kind == "rls_policy_error":
                    chan.log(logging.ERROR, "RlsPolicyError", inspect(_pg_struct(exc.error)))
                    self._shutdown_channel(chan, "You do not have permissions to read from this Channel topic: "
                                           f"{chan.sub_topic}")
                else:
                    self._shutdown_channel(chan, "Realtime was unable to connect to the project database")
                return
            # check_read_permissions_revoked/2: a read granted under the previous token and denied now
            revoked = previous is not None and (
                (previous.broadcast_read is True and policies.broadcast_read is False)
                or (previous.presence_read is True and policies.presence_read is False)
            )
            if not (policies.broadcast_read or policies.presence_read):
                self._shutdown_channel(chan, "You do not have permissions to read from this Channel topic: "
                                       f"{chan.sub_topic}")
                return
            if revoked:
                self._shutdown_channel(chan, f"You no longer have permission to read from this Channel topic: "
                                       f"{chan.sub_topic}")
                return
            chan.policies = policies
        self._watch_token(chan)
        if chan.bindings or chan.binding_error:
            self.request_postgres_subscribe(chan, 1, delay=random.uniform(1, 3))

    # Joins --------------------------------------------------------------------------------

    async def _join_refused(self, session: Session, join_ref: str | None, ref: str | None, topic: str, code: str,
                            message: str, *, level: int | None = logging.ERROR, claims_token: str | None = None,
                            disconnect: bool = False, reason: str | None = None) -> None:
        """``log_error``/``maybe_log_warning`` then ``join_error/1`` (CHANNEL_ERROR_BACKOFF_MS) and the reply."""
        if level is not None:
            emit(level, message, code=code, tenant=session.runtime.external_id, claims=peek_claims(claims_token),
                 socket_level=session.log_level if level < logging.ERROR else None)
        await self._sleep_ms(self.timers.channel_error_backoff_ms)
        session.reply(join_ref, ref, topic, "error", {"reason": reason if reason is not None else f"{code}: {message}"})
        if disconnect:
            session.close()

    async def _join(self, session: Session, join_ref: str | None, ref: str | None, topic: str, payload: Any) -> None:
        """``RealtimeChannel.join/3`` (checks in Realtime's order)."""
        if not topic.startswith("realtime:"):
            session.reply(join_ref, ref, topic, "error", {"reason": "unmatched topic"})
            return
        b = self.behaviour
        if topic == "realtime:":
            # This join clause runs before assign_access_token: the socket's token gives the log metadata.
            await self._join_refused(session, join_ref, ref, topic, "TopicNameRequired",
                                     "You must provide a topic name", claims_token=session.socket_token)
            return
        rt = session.runtime
        existing = session.channels.get(topic)
        if existing is not None:
            # Phoenix closes the previous channel on a duplicate join.
            rt.remove_channel(existing)
            session.send(existing.join_ref, None, topic, "phx_close", {})
        payload = payload if isinstance(payload, dict) else {}
        raw_config = payload.get("config")
        config: dict[str, Any] = raw_config if isinstance(raw_config, dict) else {}
        is_new_api = "config" in payload
        private = _flex_bool(config.get("private")) if b.private_flexible_boolean else _truthy(config.get("private"))
        access_token = self._channel_token(session, payload)
        try:
            tenant = await self.store.get(rt.external_id)
        except psycopg.Error:
            tenant = None
        if tenant is None:
            if b.join_handles_missing_tenant:
                await self._join_refused(session, join_ref, ref, topic, "TenantNotFound",
                                         "Tenant with the given ID does not exist", disconnect=True,
                                         claims_token=access_token)
            elif b.join_rescues_exceptions:
                await self._join_refused(session, join_ref, ref, topic, "UnknownErrorOnChannel",
                                         "no with clause matching: nil", claims_token=access_token)
            else:
                emit(logging.ERROR, "GenServer terminating\n** (WithClauseError) no with clause matching: nil",
                     tenant=rt.external_id)
                session.reply(join_ref, ref, topic, "error", {"reason": "join crashed"})
            return
        rt.tenant = tenant
        broadcast = config.get("broadcast") if isinstance(config.get("broadcast"), dict) else {}
        presence = config.get("presence") if isinstance(config.get("presence"), dict) else {}
        assert isinstance(broadcast, dict) and isinstance(presence, dict)
        presence_enabled = _flex_bool(presence.get("enabled")) or tenant.presence_enabled
        if tenant.private_only and not private:
            await self._join_refused(session, join_ref, ref, topic, "PrivateOnly",
                                     "This project only allows private channels", claims_token=access_token)
            return
        if not session.channels and rt.connected_users(exclude=session) >= tenant.max_concurrent_users:
            await self._join_refused(session, join_ref, ref, topic, "ConnectionRateLimitReached",
                                     "Too many connected users", claims_token=access_token)
            return
        if rt.joins.hit() > tenant.max_joins_per_second:
            if not rt.joins.tripped:
                # The rate counter's log_fn: once per trip, critical, no error_code metadata.
                rt.joins.tripped = True
                emit(logging.CRITICAL, "Too many joins per second", code="ClientJoinRateLimitReached",
                     tenant=rt.external_id, with_code_metadata=False)
            await self._join_refused(session, join_ref, ref, topic, "ClientJoinRateLimitReached",
                                     "Too many joins per second", level=None, disconnect=True)
            return
        rt.joins.tripped = False
        count = len(session.channels)
        if count >= tenant.max_channels_per_client:
            await self._join_refused(session, join_ref, ref, topic, "ChannelRateLimitReached", "Too many channels",
                                     level=None if b.channel_limit_logged_when_reached else logging.ERROR,
                                     claims_token=access_token)
            return
        if count + 1 == tenant.max_channels_per_client and b.channel_limit_logged_when_reached:
            emit(logging.ERROR, "Too many channels", code="ChannelRateLimitReached", tenant=rt.external_id,
                 claims=peek_claims(access_token))
        try:
            claims = self._confirm_token(rt, access_token)
        except AuthError as exc:
            await self._join_token_refused(session, join_ref, ref, topic, exc, access_token)
            return
        try:
            conn = await rt.connect.lookup_or_start()
        except TenantDatabaseUnavailable:
            await self._join_refused(session, join_ref, ref, topic, "UnableToConnectToProject",
                                     "Realtime was unable to connect to the project database",
                                     claims_token=access_token)
            return
        policies: Policies | None = None
        if private:
            try:
                conn = await rt.connect.connection()
                policies = await read_policies(conn, rt.connect.lock, AuthContext(topic[len("realtime:"):], claims,
                                               session.headers), Policies(), presence=presence_enabled)
            except TenantDatabaseUnavailable:
                await self._join_refused(session, join_ref, ref, topic, "UnableToConnectToProject",
                                         "Realtime was unable to connect to the project database",
                                         claims_token=access_token)
                return
            except PolicyError as exc:
                await self._join_policy_error(session, join_ref, ref, topic, exc, access_token)
                return
            if not (policies.broadcast_read or policies.presence_read):
                await self._join_refused(session, join_ref, ref, topic, "Unauthorized",
                                         "You do not have permissions to read from this Channel topic: "
                                         f"{topic[len('realtime:'):]}", claims_token=access_token)
                return
        if "replay" in broadcast:
            if not private:
                await self._join_refused(session, join_ref, ref, topic, "UnableToReplayMessages",
                                         "Replay is not allowed for public channels", claims_token=access_token)
                return
            if policies is not None and policies.broadcast_read is False:
                await self._join_refused(session, join_ref, ref, topic, "Unauthorized",
                                         "You do not have permissions to read from this Channel topic: "
                                         f"{topic[len('realtime:'):]}", claims_token=access_token)
                return
        sub_topic = topic[len("realtime:"):]
        raw_bindings = self._pg_change_params(is_new_api, config, sub_topic)
        bindings = []
        echoed = []
        binding_error: str | None = None
        for raw in raw_bindings:
            try:
                binding = make_binding(raw)
                bindings.append(binding)
            except ValueError as exc:
                binding_error = binding_error or str(exc)
            echoed.append({**raw, "id": binding_id(raw)})
        chan = Channel(
            session=session,
            topic=topic,
            join_ref=join_ref,
            broadcast_self=_flex_bool(broadcast.get("self")),
            broadcast_ack=_flex_bool(broadcast.get("ack")),
            presence_key=_presence_key(presence),
            presence_enabled=presence_enabled,
            private=private,
            access_token=access_token,
            token_claims=claims,
            is_new_api=is_new_api,
            bindings=bindings,
            binding_error=binding_error,
            policies=policies,
        )
        session.channels[topic] = chan
        rt.topics[topic].add(chan)
        session.reply(join_ref, ref, topic, "ok", {"postgres_changes": echoed})
        if chan.presence_enabled and chan.readable_presence():
            chan.push("presence_state", rt.presence_state(topic, private), with_join_ref=True)
        self._watch_token(chan)
        if raw_bindings:
            self.request_postgres_subscribe(chan, 1)

    def _pg_change_params(self, is_new_api: bool, config: dict[str, Any], sub_topic: str) -> list[dict[str, Any]]:
        """``pg_change_params/5``: ``config.postgres_changes``, or for the legacy API the sub-topic itself."""
        if is_new_api:
            raw = config.get("postgres_changes")
            return [r for r in raw if isinstance(r, dict)] if isinstance(raw, list) else []
        parts = sub_topic.split(":", 2)
        keys = ("schema", "table", "filter")
        return [dict(zip(keys, parts, strict=False))]

    async def _join_token_refused(self, session: Session, join_ref: str | None, ref: str | None, topic: str,
                                  exc: AuthError, token: str) -> None:
        if exc.reason in ("expired_token", "missing_claims") and exc.message != "Token expiration time is invalid":
            await self._join_refused(session, join_ref, ref, topic, "InvalidJWTToken", exc.message,
                                     level=logging.WARNING, claims_token=token)
        elif exc.reason == "expired_token":
            await self._join_refused(session, join_ref, ref, topic, "InvalidJWTToken", exc.message, claims_token=token)
        elif exc.reason == "token_malformed":
            await self._join_refused(session, join_ref, ref, topic, "MalformedJWT", exc.message, claims_token=token)
        elif exc.reason == "signature_error":
            await self._join_refused(session, join_ref, ref, topic, "JwtSignatureError",
                                     "Failed to validate JWT signature", claims_token=token)
        elif exc.reason == "error_generating_signer":
            await self._join_refused(session, join_ref, ref, topic, "JwtSignerError", exc.message, claims_token=token)
        else:
            await self._join_refused(session, join_ref, ref, topic, "UnknownErrorOnChannel", f":{exc.reason}",
                                     claims_token=token, reason="Unknown Error on Channel")

    async def _join_policy_error(self, session: Session, join_ref: str | None, ref: str | None, topic: str,
                                 exc: PolicyError, token: str) -> None:
        sub = topic[len("realtime:"):]
        if exc.kind == "rls_policy_error" or (exc.kind == "missing_partition" and not self._missing_partition_code):
            emit(logging.ERROR, inspect(_pg_struct(exc.error)), code="RlsPolicyError",
                 tenant=session.runtime.external_id, claims=peek_claims(token))
            await self._join_refused(session, join_ref, ref, topic, "Unauthorized",
                                     f"You do not have permissions to read from this Channel topic: {sub}",
                                     claims_token=token)
        elif exc.kind == "missing_partition":
            await self._join_refused(session, join_ref, ref, topic, "MissingPartition",
                                     "Realtime was unable to find the expected messages partition", claims_token=token)
        elif exc.kind == "query_canceled":
            await self._join_refused(session, join_ref, ref, topic, "QueryCanceled", inspect(_pg_struct(exc.error)),
                                     claims_token=token)
        else:
            await self._join_refused(session, join_ref, ref, topic, "UnableToConnectToProject",
                                     "Realtime was unable to connect to the project database", claims_token=token)

    @property
    def _missing_partition_code(self) -> bool:
        # {:error, :missing_partition} and its MissingPartition reply: 0ca9def6, first tag v2.90.1.
        return self.behaviour.since((2, 90, 1))

    # postgres_changes subscribe -----------------------------------------------------------

    def request_postgres_subscribe(self, chan: Channel, times: int, delay: float = 0.0) -> None:
        """Queue ``times`` ``:postgres_subscribe`` messages for a channel (handled one after the other)."""
        if chan.closed:
            return
        chan.pg_pending += times
        if chan.pg_task is None or chan.pg_task.done():
            chan.pg_task = self._spawn(self._pg_subscriber(chan, delay), "postgres-subscribe")

    async def _pg_subscriber(self, chan: Channel, delay: float) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        while chan.pg_pending > 0 and not chan.closed:
            outcome = await self._postgres_subscribe(chan)
            if outcome == "connect":
                await asyncio.sleep(random.uniform(1, 3))
            elif outcome == "retry":
                await asyncio.sleep(random.uniform(5, 10))
            else:
                chan.pg_pending -= 1

    async def _postgres_subscribe(self, chan: Channel) -> str:
        """``handle_info(:postgres_subscribe, …)``: "connect" / "retry" (keep the message), "done"."""
        rt = chan.session.runtime
        cdc = rt.cdc
        if not cdc.ready:
            cdc.start()
            params = [b.raw for b in chan.bindings]
            chan.log(logging.WARNING, "ReconnectSubscribeToPostgres",
                     f"Re-connecting to PostgreSQL with params: {inspect(params)}")
            return "connect"
        if chan.binding_error is not None:
            chan.log(logging.WARNING, "RealtimeDisabledForConfiguration", chan.binding_error)
            chan.push_system("postgres_changes", "error", chan.binding_error)
            return "done"
        try:
            await cdc.subscribe(chan, rt.tenant.publication)
        except SubscribeError as exc:
            chan.log(logging.WARNING, "RealtimeDisabledForConfiguration", exc.message)
            if chan.closed:
                return "done"
            chan.push_system("postgres_changes", "error", exc.message)
            return "retry" if exc.retry else "done"
        if chan.closed:
            cdc.unsubscribe(chan)
            return "done"
        chan.log(logging.INFO, None, "Subscribed to PostgreSQL")
        chan.push_system("postgres_changes", "ok", "Subscribed to PostgreSQL")
        return "done"


def _presence_key(presence: dict[str, Any]) -> str:
    """``config.presence.key`` when a non-empty string, else a random UUID v1 (``Join.presence_key/1``)."""
    key = presence.get("key")
    return key if isinstance(key, str) and key else str(uuid.uuid1())


def _auth_error_tuple(exc: AuthError) -> str:
    """How ``log_error("ErrorConnectingToWebsocket", error)`` shows a verification error."""
    if exc.reason == "error_generating_signer" and 'kid) "' in exc.message:
        kid = exc.message.split('kid) "', 1)[1].split('"', 1)[0]
        return f'{{:error, {{:error_generating_signer, "{kid}"}}}}'
    if exc.reason == "expired_token":
        return "{:error, :invalid_exp}"
    return f"{{:error, :{exc.reason}}}"


def inspect_error_tuple(exc: BaseException) -> str:
    """``{:error, %DBConnection.ConnectionError{…}}`` for an unusable metadata DB."""
    return inspect((Atom("error"), inspect_pg_error(exc)))


def _pg_struct(error: BaseException) -> Any:
    return inspect_pg_error(error)


def _policy_code(exc: PolicyError) -> str:
    return {"rls_policy_error": "RlsPolicyError", "missing_partition": "MissingPartition",
            "query_canceled": "QueryCanceled"}.get(exc.kind, "UnableToConnectToProject")


def _policy_reason(exc: PolicyError) -> str:
    if exc.kind == "missing_partition":
        return "Realtime was unable to find the expected messages partition"
    if exc.kind in ("rls_policy_error", "query_canceled"):
        return inspect(_pg_struct(exc.error))
    return "Realtime was unable to connect to the project database"


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
    if server.relay is not None:
        try:
            await server.relay.start()
        except psycopg.Error as exc:
            await server.store.close()
            raise StartupError(f"cannot start the cluster relay: {_first_line(exc)}") from exc
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
    t = server.timers
    emit(logging.INFO, f"Realtime-compatible server (behaving as supabase/realtime v{server.behaviour.text}) "
         f"listening on {config.host}:{port}; CONNECT_ERROR_BACKOFF_MS={t.connect_error_backoff_ms} "
         f"CHANNEL_ERROR_BACKOFF_MS={t.channel_error_backoff_ms}")
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
            emit(logging.WARNING, "shutdown took longer than 1.5 s; exiting anyway")


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
    handler.setFormatter(Formatter())
    root = logging.getLogger("rtbook.sandbox.server")
    root.handlers[:] = [handler]
    root.setLevel(str(config.log_level or "info").upper())
    root.propagate = False
    try:
        asyncio.run(serve(config))
    except StartupError as exc:
        emit(logging.ERROR, str(exc))
        return 1
    except OSError as exc:
        sys.stderr.write(f"error: cannot listen on {config.host}:{config.port}: {exc.strerror}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
