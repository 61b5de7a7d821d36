"""Sockets, channels and per-tenant state of the Realtime-compatible server.

A :class:`Session` is one WebSocket (Phoenix transport): it serializes frames for its ``vsn`` — 1.0.0 JSON
objects, 2.0.0 JSON arrays plus the binary kind-4 user broadcast of ``RealtimeWeb.Socket.V2Serializer``
(header: kind, topic length, user event length, metadata length, encoding; then topic, event, metadata and the
payload). A :class:`Channel` is one joined ``realtime:*`` topic. :class:`TenantRuntime` holds a tenant's
sockets, channels by topic, rate counters, its :class:`~rtbook.sandbox.server_connect.Connect` and its
:class:`~rtbook.sandbox.server_cdc.CdcWorkers`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import jwt
from aiohttp import web

from rtbook.sandbox.server_cdc import Binding, CdcWorkers
from rtbook.sandbox.server_cluster import ClusterRelay
from rtbook.sandbox.server_connect import Connect
from rtbook.sandbox.server_log import emit
from rtbook.sandbox.server_private import Policies
from rtbook.sandbox.server_tenants import ServerConfig, Tenant
from rtbook.sandbox.server_version import RealtimeBehaviour, Timers

__all__ = [
    "Channel",
    "RateCounter",
    "Session",
    "TenantRuntime",
    "UserBroadcast",
    "encode_user_broadcast",
    "peek_claims",
]


class RateCounter:
    """Events in a sliding window, compared as events per second (Realtime averages over ~60 s)."""

    def __init__(self, window_s: float) -> None:
        self._window = max(window_s, 0.05)
        self._events: collections.deque[float] = collections.deque()
        self.tripped = False

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


class TickRateCounter:
    """Realtime's ``RateCounter`` for a tenant's channel events, ticked lazily.

    Events are added as they happen; at every tick the count so far becomes a bucket (the newest
    ``max_buckets`` are kept) and ``avg = sum(buckets) / len(buckets) / tick``, so a young counter
    averages over the ticks it has lived, not a fixed minute. At a tick the limit triggers when
    ``avg >= limit`` (logged once per trip) and clears at a later tick when ``avg < limit``
    (``maybe_trigger_limit``). Between ticks ``triggered`` does not change.
    """

    def __init__(self, tick_s: float, max_buckets: int, limit: Callable[[], float],
                 on_trip: Callable[[], None], clock: Callable[[], float] = time.monotonic) -> None:
        self._tick = max(tick_s, 0.01)
        self._limit = limit
        self._on_trip = on_trip
        self._clock = clock
        self._started = clock()
        self._ticks = 0
        self._count = 0
        self._buckets: collections.deque[int] = collections.deque(maxlen=max_buckets)
        self.avg = 0.0
        self.triggered = False

    def _advance(self) -> None:
        due = int((self._clock() - self._started) / self._tick)
        while self._ticks < due:
            self._ticks += 1
            self._buckets.appendleft(self._count)
            self._count = 0
            self.avg = sum(self._buckets) / len(self._buckets) / self._tick
            if self.triggered:
                self.triggered = self.avg >= self._limit()
            elif self.avg >= self._limit():
                self.triggered = True
                self._on_trip()

    def add(self, n: int = 1) -> None:
        self._advance()
        self._count += n

    def is_triggered(self) -> bool:
        self._advance()
        return self.triggered


@dataclass(frozen=True)
class UserBroadcast:
    """A kind-3 push turned into ``RealtimeWeb.Socket.UserBroadcast`` (metadata is not used by Realtime)."""

    event: str
    encoding: int  # 0 = binary, 1 = JSON
    payload: bytes


def encode_user_broadcast(topic: str, msg: UserBroadcast) -> bytes:
    """The kind-4 frame ``V2Serializer.fastlane!/1`` sends (no metadata)."""
    t, e = topic.encode(), msg.event.encode()
    if len(t) > 255 or len(e) > 255:
        raise ValueError("topic and event must be at most 255 bytes")
    return bytes([4, len(t), len(e), 0, msg.encoding]) + t + e + msg.payload


class Session:
    """One WebSocket connection."""

    def __init__(self, ws: web.WebSocketResponse, runtime: TenantRuntime, vsn: str, claims: dict[str, Any],
                 token: str, *, log_level: str = "error", headers: dict[str, str] | None = None) -> None:
        self.ws = ws
        self.runtime = runtime
        self.vsn = vsn
        self.socket_claims = claims
        self.socket_token = token
        self.log_level = log_level
        self.headers = headers or {}
        self.channels: dict[str, Channel] = {}
        self.id = uuid.uuid4().hex
        self._queue: asyncio.Queue[str | bytes | None] = asyncio.Queue(maxsize=10_000)
        self._writer = asyncio.create_task(self._write(), name="ws-writer")
        self.closing = False

    @property
    def v2(self) -> bool:
        """True for the 2.0.0 serializer."""
        return self.vsn.startswith("2.")

    def encode(self, join_ref: str | None, ref: str | None, topic: str, event: str, payload: Any) -> str:
        """Serialize a frame for this socket's vsn."""
        if self.v2:
            return json.dumps([join_ref, ref, topic, event, payload], separators=(",", ":"))
        return json.dumps({"ref": ref, "topic": topic, "event": event, "payload": payload}, separators=(",", ":"))

    def _put(self, frame: str | bytes) -> None:
        if self.closing:
            return
        try:
            self._queue.put_nowait(frame)
        except asyncio.QueueFull:
            emit(logging.ERROR, "closing a socket that does not read its frames", code="SlowConsumer",
                 tenant=self.runtime.external_id)
            self.close()

    def send(self, join_ref: str | None, ref: str | None, topic: str, event: str, payload: Any) -> None:
        """Queue a frame; a socket that cannot keep up is closed rather than buffered forever."""
        self._put(self.encode(join_ref, ref, topic, event, payload))

    def send_binary(self, frame: bytes) -> None:
        """Queue a binary frame."""
        self._put(frame)

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
                if isinstance(frame, bytes):
                    await self.ws.send_bytes(frame)
                else:
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
    access_token: str
    token_claims: dict[str, Any]
    is_new_api: bool = True
    bindings: list[Binding] = field(default_factory=list)
    binding_error: str | None = None
    policies: Policies | None = None
    presence_meta: dict[str, Any] | None = None
    presence_payload: dict[str, Any] | None = None
    pg_pending: int = 0
    pg_task: asyncio.Task[None] | None = None
    confirm_task: asyncio.Task[None] | None = None
    closed: bool = False

    @property
    def claims(self) -> dict[str, Any]:
        """The claims RLS checks run with."""
        return self.token_claims

    @property
    def sub_topic(self) -> str:
        """The topic without ``realtime:``."""
        return self.topic.split(":", 1)[1] if ":" in self.topic else self.topic

    @property
    def tenant(self) -> str:
        """The tenant's external id."""
        return self.session.runtime.external_id

    def push(self, event: str, payload: dict[str, Any], *, with_join_ref: bool = False) -> None:
        """Queue a server push on this channel (channel pushes carry the join_ref, fastlane ones do not)."""
        if not self.closed:
            self.session.send(self.join_ref if with_join_ref else None, None, self.topic, event, payload)

    def push_postgres_changes(self, payload: dict[str, Any]) -> None:
        """Deliver one change: ``postgres_changes`` with ids (new API), or the bare type event (legacy API)."""
        if self.is_new_api:
            self.push("postgres_changes", payload)
        else:
            self.push(str(payload["data"]["type"]), payload["data"])

    def push_system(self, extension: str, status: str, message: str) -> None:
        """``push_system_message``: a channel push with the channel's join_ref."""
        self.push("system", {"extension": extension, "status": status, "message": message,
                             "channel": self.sub_topic}, with_join_ref=True)

    def request_postgres_subscribe(self, times: int = 1) -> None:
        """``send(pid, :postgres_subscribe)`` ``times`` times (the manager's resubscribe after an oids change)."""
        self.session.runtime.server.request_postgres_subscribe(self, times)

    def log(self, level: int, code: str | None, message: str) -> None:
        """``Logging.log_*``/``maybe_log_*``: the channel's token claims as metadata, the socket's log level."""
        emit(level, message, code=code, tenant=self.tenant, claims=peek_claims(self.access_token),
             socket_level=self.session.log_level if level < logging.ERROR else None)

    def readable_broadcast(self) -> bool:
        """Public channels always; private ones when RLS allowed reading broadcasts."""
        return not self.private or bool(self.policies and self.policies.broadcast_read)

    def readable_presence(self) -> bool:
        """Public channels always; private ones when RLS allowed reading presence."""
        return not self.private or bool(self.policies and self.policies.presence_read)


def peek_claims(token: str | None) -> dict[str, Any] | None:
    """Joken.peek_claims: the token's claims without verifying it (log metadata only)."""
    if not token:
        return None
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    return claims if isinstance(claims, dict) else None


class ServerLike(Protocol):
    """What a tenant's runtime needs from the server (the server module imports this one, not the reverse)."""

    config: ServerConfig
    behaviour: RealtimeBehaviour
    timers: Timers

    def request_postgres_subscribe(self, chan: Channel, times: int) -> None: ...

    @property
    def relay(self) -> ClusterRelay | None: ...


class TenantRuntime:
    """Per-tenant live state: sockets, channels by topic, presence, rate counters, Connect and CDC."""

    def __init__(self, server: ServerLike, tenant: Tenant) -> None:
        self.server = server
        self.tenant = tenant
        self.external_id = tenant.external_id
        self.sessions: set[Session] = set()
        self.topics: dict[str, set[Channel]] = collections.defaultdict(set)
        window = server.config.rate_window_s
        self.events = RateCounter(window)
        self.joins = RateCounter(window)
        behaviour = server.behaviour
        tick = server.config.rate_tick_s or behaviour.events_tick_s
        # The tenant's channel events (RealtimeChannel's rate_counter): +1 per broadcast sent and +1 per
        # delivery (:update_rate_counter); a receiving channel that finds it triggered is shut.
        self.channel_events = TickRateCounter(
            tick, behaviour.events_buckets, lambda: self.tenant.max_events_per_second,
            lambda: emit(logging.ERROR, "Too many messages per second", code="MessagePerSecondRateLimitReached",
                         tenant=self.external_id, with_code_metadata=False),
        )
        self.connect = Connect(server.config, lambda: self.tenant, self.connected_users)
        self.cdc = CdcWorkers(
            lambda: self.tenant,
            behaviour=server.behaviour,
            timers=server.timers,
            slot_suffix=server.config.slot_name_suffix,
            poll_interval_ms=server.config.poll_interval_ms,
            allow_event=self._allow_cdc_event,
        )

    def _allow_cdc_event(self) -> bool:
        return self.events.hit() <= self.tenant.max_events_per_second

    def connected_users(self, exclude: Session | None = None) -> int:
        """Sockets with at least one joined channel (what Realtime's UsersCounter counts)."""
        return sum(1 for s in self.sessions if s.channels and s is not exclude)

    async def close(self) -> None:
        """Stop CDC and Connect."""
        for chans in list(self.topics.values()):
            for chan in list(chans):
                self.remove_channel(chan)
        await self.cdc.stop()
        await self.connect.stop()

    # presence -----------------------------------------------------------------------------

    def presence_state(self, topic: str, private: bool) -> dict[str, Any]:
        """``presence_state`` payload for a topic (Phoenix.Presence grouping by key)."""
        state: dict[str, Any] = {}
        for chan in self.topics.get(topic, ()):
            if chan.private == private and chan.presence_meta is not None:
                state.setdefault(chan.presence_key, {"metas": []})["metas"].append(chan.presence_meta)
        relay = self.server.relay
        if relay is not None:
            # Phoenix.Tracker's state is cluster-wide: presences tracked on the other nodes belong here too.
            for key, value in relay.remote_state(self.external_id, topic, private).items():
                state.setdefault(key, {"metas": []})["metas"].extend(value["metas"])
        return state

    def presence_diff(self, topic: str, private: bool, joins: dict[str, Any], leaves: dict[str, Any],
                      *, relay: bool = True) -> None:
        """``presence_diff`` to every channel of the topic that may read presence (all of them when public).

        A local change is also relayed to the other nodes (``relay``); a relayed one is not sent back.
        """
        payload = {"joins": joins, "leaves": leaves}
        for chan in list(self.topics.get(topic, ())):
            if chan.private == private and chan.readable_presence():
                chan.push("presence_diff", payload)
        link = self.server.relay
        if relay and link is not None:
            link.presence(self.external_id, topic, private, joins, leaves)

    def untrack(self, chan: Channel) -> None:
        """Remove a channel's presence and tell the others."""
        if chan.presence_meta is not None:
            meta, chan.presence_meta = chan.presence_meta, None
            chan.presence_payload = None
            self.presence_diff(chan.topic, chan.private, {}, {chan.presence_key: {"metas": [meta]}})

    def remove_channel(self, chan: Channel) -> None:
        """Forget a channel (leave, close, socket gone)."""
        chan.closed = True
        self.untrack(chan)
        self.cdc.unsubscribe(chan)
        for task in (chan.pg_task, chan.confirm_task):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        members = self.topics.get(chan.topic)
        if members is not None:
            members.discard(chan)
            if not members:
                del self.topics[chan.topic]
        if chan.session.channels.get(chan.topic) is chan:
            del chan.session.channels[chan.topic]
