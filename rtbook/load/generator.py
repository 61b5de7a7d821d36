"""The load generator: Phoenix sockets on asyncio (aiohttp), open-model sends, exact accounting.

One process drives whole topics, so a message's sender and all its receivers read one monotonic
clock and latency is measured from the message's *scheduled* send time. Sends happen at their
scheduled times whatever the server answers (open model): a slow server shows as latency and
loss, not as a lower send rate. Every run is bounded by the scenario's numbers plus a drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import resource
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rtbook.clients.phoenix import VSN1, Message, ProtocolError, decode, encode
from rtbook.load.histograms import Histograms
from rtbook.load.ledger import DeliveryCounts, Ledger, Receipt
from rtbook.load.scenario import Scenario

__all__ = ["Endpoint", "ProcessResult", "reconnect_after_s", "run_share"]

HEARTBEAT_S = 25.0  # realtime-js's default heartbeat interval; Realtime closes idle sockets after 60 s.
DRAIN_MIN_S = 1.0
_EVENT = "rtbook-load"
COLD_SUBSCRIBE_S = 4.0  # Realtime re-subscribes 1-3 s after a tenant's first join (see checks/realtime.py)
# The probe table (rtbook.probe_sql): the only table a load run writes to.
PROBE_SCHEMA = "rtbook_probe"
PROBE_TABLE = "events"
# realtime-js's reconnect schedule, by attempt: 1, 2, 5, 10 s, then 10 s for every further attempt
# (supabase/supabase-js v2.112.2 packages/core/realtime-js/src/RealtimeClient.ts RECONNECT_INTERVALS /
# DEFAULT_RECONNECT_FALLBACK in `reconnectAfterMs`, the same in supabase/realtime-js v2.15.6 and the npm
# 2.109.0 of tests/node; src/lib/timer.ts counts the tries and resets them once the socket is open again).
RECONNECT_AFTER_S = (1.0, 2.0, 5.0, 10.0)
RECONNECT_FALLBACK_S = 10.0
# The per-pair losses a process reports are bounded (largest first); the totals stay exact.
LOST_PAIRS_MAX = 1000


def reconnect_after_s(tries: int) -> float:
    """How long realtime-js waits before reconnect attempt ``tries`` (1-based) after a socket closed."""
    return RECONNECT_AFTER_S[tries - 1] if 1 <= tries <= len(RECONNECT_AFTER_S) else RECONNECT_FALLBACK_S


@dataclass(frozen=True)
class Endpoint:
    """Where the generator connects. ``apikey``/``token`` are plain strings only inside the run.

    ``label`` is what outputs show (no key). ``repr`` hides the secrets.
    """

    base: str
    host_header: str | None
    label: str
    apikey: str = field(repr=False, default="")
    token: str | None = field(repr=False, default=None)
    # libpq keywords (password included) for the postgres_changes writer; only that scenario uses it.
    db: dict[str, Any] | None = field(repr=False, default=None)

    def url(self) -> str:
        parts = urllib.parse.urlsplit(self.base)
        scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
        path = parts.path.rstrip("/")
        if not path.endswith("/websocket"):
            path += "/websocket"
        query = urllib.parse.urlencode({"apikey": self.apikey, "vsn": VSN1})
        return urllib.parse.urlunsplit((scheme, parts.netloc, path, query, ""))


@dataclass
class ProcessResult:
    """What one generator process measured; merged by :mod:`rtbook.load.runner`."""

    counts: DeliveryCounts
    histograms: dict[str, str]
    errors: dict[str, int]
    opened: int
    joined: int
    held: int
    cpu_s: float
    wall_s: float
    sent_per_s: list[int]
    delivered_per_s: list[int]
    expected_per_s: list[int] = field(default_factory=list)
    # Latency per interval (names "<step>#<interval index>"), for percentiles over time.
    timeline: dict[str, str] = field(default_factory=dict)
    interval_s: int = 1
    # One entry per time a socket was closed by the other side during the run (see :class:`_Socket`):
    # {"socket", "down_s", "up_s" (None: never back), "attempts", "delivered_after"}, seconds from the
    # run's start of sending.
    outages: list[dict[str, Any]] = field(default_factory=list)
    # Lost deliveries by "sender > receiver" (at most LOST_PAIRS_MAX pairs, largest first).
    lost_by_pair: dict[str, int] = field(default_factory=dict)
    # Lost deliveries whose sender or receiver had an outage (exact, whatever the pair bound).
    lost_around_outages: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "counts": self.counts.to_dict(),
            "histograms": self.histograms,
            "errors": self.errors,
            "opened": self.opened,
            "joined": self.joined,
            "held": self.held,
            "cpu_s": self.cpu_s,
            "wall_s": self.wall_s,
            "sent_per_s": self.sent_per_s,
            "delivered_per_s": self.delivered_per_s,
            "expected_per_s": self.expected_per_s,
            "timeline": self.timeline,
            "interval_s": self.interval_s,
            "outages": self.outages,
            "lost_by_pair": self.lost_by_pair,
            "lost_around_outages": self.lost_around_outages,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProcessResult:
        return cls(
            counts=DeliveryCounts.from_dict(data["counts"]),
            histograms=dict(data["histograms"]),
            errors={str(k): int(v) for k, v in data["errors"].items()},
            opened=int(data["opened"]),
            joined=int(data["joined"]),
            held=int(data["held"]),
            cpu_s=float(data["cpu_s"]),
            wall_s=float(data["wall_s"]),
            sent_per_s=[int(x) for x in data["sent_per_s"]],
            delivered_per_s=[int(x) for x in data["delivered_per_s"]],
            expected_per_s=[int(x) for x in data.get("expected_per_s", [])],
            timeline=dict(data.get("timeline", {})),
            interval_s=int(data.get("interval_s", 1)),
            outages=[dict(o) for o in data.get("outages", [])],
            lost_by_pair={str(k): int(v) for k, v in data.get("lost_by_pair", {}).items()},
            lost_around_outages=int(data.get("lost_around_outages", 0)),
        )


def _reason(payload: Any) -> str:
    """A server refusal's text, bounded (it goes into error-kind names)."""
    if isinstance(payload, dict):
        resp = payload.get("response", payload)
        if isinstance(resp, dict):
            text = resp.get("reason") or resp.get("message") or json.dumps(resp, sort_keys=True)
        else:
            text = str(resp)
        return str(text)[:120]
    return str(payload)[:120]


class _Socket:
    """One WebSocket with at most one channel (as one browser tab subscribed to one topic)."""

    def __init__(self, run: _Run, name: str) -> None:
        self.run = run
        self.name = name
        self.ws: Any = None
        self.topic: str | None = None
        self.joined = False
        self._ref = 0
        self._join_ref: str | None = None
        self._replies: dict[str, asyncio.Future[Message]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.subscribed = asyncio.Event()
        self._closed = False
        self.ever_joined = False
        self._reconnecting = False
        # The current outage (an entry of run.outages) while down and after coming back.
        self.outage: dict[str, Any] | None = None

    def next_ref(self) -> str:
        self._ref += 1
        return str(self._ref)

    async def open(self, again: bool = False) -> bool:
        """Open the WebSocket; ``again``: a reconnect (errors counted under "reconnect failed: ...")."""
        run = self.run
        started = time.monotonic_ns()
        headers = {"Host": run.endpoint.host_header} if run.endpoint.host_header else None
        try:
            self.ws = await asyncio.wait_for(
                run.session.ws_connect(run.endpoint.url(), headers=headers, autoping=True, max_msg_size=1 << 20),
                run.step_timeout,
            )
        except Exception as exc:  # every failure to open is counted by its kind, never raised
            run.error(("reconnect failed: " if again else "") + _handshake_kind(exc))
            return False
        if not again:  # a reconnect's time is recorded whole, from the close to the rejoin (_attempts)
            run.hists.record("connect", (time.monotonic_ns() - started) // 1000)
            run.opened += 1
        self._tasks.append(asyncio.create_task(self._read()))
        self._tasks.append(asyncio.create_task(self._heartbeat()))
        return True

    async def join(self, topic: str, ack: bool, again: bool = False) -> bool:
        if self.ws is None or self.ws.closed:
            return False
        run = self.run
        again_kind = "reconnect failed: " if again else ""
        ref = self.next_ref()
        self._join_ref = ref
        self.topic = topic
        config: dict[str, Any] = {"broadcast": {"self": False, "ack": ack}, "presence": {"key": ""}}
        if run.scenario.kind == "presence":
            # Keyed by the socket's name, so every diff says whose track it carries.
            config["presence"] = {"key": self.name, "enabled": True}
        elif run.scenario.kind == "postgres_changes":
            config["postgres_changes"] = [{"event": "INSERT", "schema": PROBE_SCHEMA, "table": PROBE_TABLE}]
        payload: dict[str, Any] = {"config": config}
        if run.endpoint.token:
            payload["access_token"] = run.endpoint.token
        started = time.monotonic_ns()
        reply = await self._request(Message(topic, "phx_join", payload, ref, ref))
        if reply is None:
            run.error(f"{again_kind}join: no reply in time")
            return False
        if not isinstance(reply.payload, dict) or reply.payload.get("status") != "ok":
            run.error(f"{again_kind}join: {_reason(reply.payload)}")
            return False
        run.hists.record("join", (time.monotonic_ns() - started) // 1000)
        if run.scenario.kind == "postgres_changes":
            # Changes flow only after Realtime's 'Subscribed to PostgreSQL' (1-3 s on a cold tenant).
            try:
                await asyncio.wait_for(self.subscribed.wait(), run.step_timeout + COLD_SUBSCRIBE_S)
            except TimeoutError:
                run.error(f"{again_kind}postgres_changes: no 'Subscribed to PostgreSQL' in time")
                return False
            run.hists.record("subscribe", (time.monotonic_ns() - started) // 1000)
        self.joined = True
        if not again:
            run.joined += 1
        self.ever_joined = True
        return True

    async def track(self, seq: int, scheduled_ns: int, pad: str) -> bool:
        """Track a new presence state (a changed payload, so Realtime sends a diff to every member)."""
        if not self.joined or self.ws is None or self.ws.closed or self.topic is None:
            return False
        body = {"type": "presence", "event": "track",
                "payload": {"s": self.name, "q": seq, "t": scheduled_ns, "p": pad}}
        try:
            await self.ws.send_str(encode(Message(self.topic, "presence", body, self.next_ref(), self._join_ref)))
        except (ConnectionError, RuntimeError):
            return False
        return True

    async def _request(self, message: Message) -> Message | None:
        assert message.ref is not None
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._replies[message.ref] = fut
        try:
            await self.ws.send_str(encode(message))
            return await asyncio.wait_for(fut, self.run.step_timeout)
        except (TimeoutError, ConnectionError, RuntimeError):
            return None
        finally:
            self._replies.pop(message.ref, None)

    async def broadcast(self, seq: int, scheduled_ns: int, ack: bool, pad: str) -> bool:
        """Send one broadcast; False when the socket or channel can no longer send."""
        if not self.joined or self.ws is None or self.ws.closed or self.topic is None:
            return False
        ref = self.next_ref()
        inner = {"s": self.name, "q": seq, "t": scheduled_ns, "p": pad}
        body = {"type": "broadcast", "event": _EVENT, "payload": inner}
        msg = Message(self.topic, "broadcast", body, ref, self._join_ref)
        if not ack:
            try:
                await self.ws.send_str(encode(msg))
            except (ConnectionError, RuntimeError):
                return False
            return True
        reply = await self._request(msg)
        if reply is None:
            self.run.error("broadcast: no ack in time")
        else:
            self.run.hists.record("broadcast_ack", (time.monotonic_ns() - scheduled_ns) // 1000)
        return True

    async def _heartbeat(self) -> None:
        ws = self.ws  # this WebSocket's own loop: a reconnect starts another for the new one
        while ws is not None and not ws.closed:
            await asyncio.sleep(HEARTBEAT_S)
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_str(encode(Message("phoenix", "heartbeat", {}, self.next_ref())))

    async def _read(self) -> None:
        import aiohttp

        run = self.run
        ws = self.ws
        async for frame in ws:
            if frame.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                break
            try:
                msg = decode(frame.data)
            except ProtocolError:
                run.error("protocol: undecodable frame")
                continue
            if msg.event == "phx_reply" and msg.ref in self._replies:
                fut = self._replies[msg.ref]
                if not fut.done():
                    fut.set_result(msg)
            elif msg.event == "broadcast":
                run.on_broadcast(self, msg.payload)
            elif msg.event == "presence_diff":
                run.on_presence_diff(self, msg.payload)
            elif msg.event == "postgres_changes":
                run.on_change(self, msg.payload)
            elif msg.event == "system" and isinstance(msg.payload, dict) and msg.payload.get("status") == "ok":
                if msg.payload.get("extension") == "postgres_changes":
                    self.subscribed.set()
            elif msg.event in ("phx_close", "phx_error"):
                if self.joined:
                    run.error(f"channel closed by server: {msg.event}")
                self.joined = False
            elif msg.event == "system" and isinstance(msg.payload, dict) and msg.payload.get("status") == "error":
                run.error(f"system: {_reason(msg.payload)}")
        if ws is not self.ws:
            return  # a WebSocket a failed reconnect attempt opened and closed again; a newer one is current
        self.joined = False
        # A socket reopened by _reconnect that closes again before its rejoin is that attempt's
        # failure (counted there), not a second disconnect.
        if not run.stopping and not self._closed and not self._reconnecting:
            run.error("disconnect: socket closed during the run")
            if run.reconnect and self.ever_joined and self.topic is not None:
                self._reconnecting = True
                self._tasks.append(asyncio.create_task(self._reconnect()))

    async def _reconnect(self) -> None:
        """Reopen and rejoin as realtime-js does: after its backoff, until the run stops.

        While down the socket is not owed anything (the ledger owes a message to the members joined
        when it was sent); from the rejoin on it is owed again. Never outlives the run: it stops
        when the run stops or this socket is closed, and every wait is one of the backoff steps or
        a step timeout.
        """
        run = self.run
        down_ns = time.monotonic_ns()
        outage: dict[str, Any] = {"socket": self.name, "down_s": run.at_s(down_ns), "up_s": None,
                                  "attempts": 0, "delivered_after": 0}
        run.outages.append(outage)
        self.outage = outage
        topic = self.topic
        assert topic is not None
        try:
            await self._attempts(outage, topic, down_ns)
        finally:
            self._reconnecting = False

    async def _attempts(self, outage: dict[str, Any], topic: str, down_ns: int) -> None:
        run = self.run
        tries = 0
        while True:
            tries += 1
            await asyncio.sleep(reconnect_after_s(tries))
            if run.stopping or self._closed:
                return
            outage["attempts"] = tries
            old = self.ws
            if await self.open(again=True):
                self.subscribed.clear()
                if await self.join(topic, run.scenario.ack, again=True):
                    up_ns = time.monotonic_ns()
                    outage["up_s"] = run.at_s(up_ns)
                    run.hists.record("reconnect", (up_ns - down_ns) // 1000)  # time away, backoff included
                    run.error("reconnect: socket reopened and channel rejoined")
                    return
                # Opened but not joined: close it and try again after the next step, as the
                # channel's own rejoin timer (the same schedule) would.
                if self.ws is not old and self.ws is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(self.ws.close(), 1.0)

    async def close(self) -> None:
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(), 1.0)
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def _handshake_kind(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    if status is not None:
        message = getattr(exc, "message", "") or ""
        return f"handshake: HTTP {status} {str(message)[:80]}".rstrip()
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "handshake: timeout"
    if isinstance(exc, OSError) and exc.errno is not None:
        import errno as errno_mod

        return f"handshake: {errno_mod.errorcode.get(exc.errno, exc.errno)}"
    return f"handshake: {type(exc).__name__}"


class _Run:
    """State shared by one process's sockets."""

    def __init__(self, scenario: Scenario, endpoint: Endpoint, prefix: str, step_timeout: float) -> None:
        self.scenario = scenario
        self.endpoint = endpoint
        self.prefix = prefix
        self.step_timeout = step_timeout
        self.hists = Histograms()
        self.ledger = Ledger(late_after_us=int(scenario.late_ms * 1000))
        self.errors: Counter[str] = Counter()
        self.opened = 0
        self.joined = 0
        self.held = 0
        self.stopping = False
        # Sockets closed by the other side reopen and rejoin (message scenarios; see _Socket._reconnect).
        self.reconnect = scenario.kind != "connect"
        self.outages: list[dict[str, Any]] = []
        self.session: Any = None
        self.t0_ns = time.monotonic_ns()
        seconds = int(scenario.duration_s) + 2
        self.sent_per_s = [0] * seconds
        self.delivered_per_s = [0] * seconds
        self.expected_per_s = [0] * seconds
        # At most ~60 latency intervals whatever the duration: percentiles over time stay cheap.
        self.interval_s = max(1, math.ceil(scenario.duration_s / 60))
        self.timeline = Histograms()

    def error(self, kind: str) -> None:
        self.errors[kind] += 1

    def at_s(self, now_ns: int) -> float:
        """Seconds from the start of sending (negative while the sockets still join)."""
        return round((now_ns - self.t0_ns) / 1e9, 3)

    def _second(self, now_ns: int) -> int:
        return min(max((now_ns - self.t0_ns) // 1_000_000_000, 0), len(self.sent_per_s) - 1)

    def on_broadcast(self, sock: _Socket, payload: Any) -> None:
        inner = payload.get("payload") if isinstance(payload, dict) else None
        if isinstance(payload, dict) and payload.get("event") == _EVENT:
            self._arrived(sock, inner, "broadcast")

    def on_presence_diff(self, sock: _Socket, payload: Any) -> None:
        joins = payload.get("joins") if isinstance(payload, dict) else None
        if not isinstance(joins, dict):
            return
        for entry in joins.values():
            for meta in entry.get("metas", ()) if isinstance(entry, dict) else ():
                if isinstance(meta, dict) and str(meta.get("s", "")).startswith(self.prefix):
                    self._arrived(sock, meta, "presence")

    def on_change(self, sock: _Socket, payload: Any) -> None:
        data = payload.get("data") if isinstance(payload, dict) else None
        record = data.get("record") if isinstance(data, dict) else None
        body = record.get("payload") if isinstance(record, dict) else None
        if isinstance(body, str):  # a jsonb column arrives as text from some wal2json settings
            with contextlib.suppress(ValueError):
                body = json.loads(body)
        if isinstance(body, dict) and str(body.get("s", "")).startswith(self.prefix):
            self._arrived(sock, body, "postgres_changes")

    def _arrived(self, sock: _Socket, inner: Any, step: str) -> None:
        if not isinstance(inner, dict):
            return
        sender, seq, sched = inner.get("s"), inner.get("q"), inner.get("t")
        if not isinstance(sender, str) or not isinstance(seq, int) or not isinstance(sched, int):
            self.error("protocol: malformed load message")
            return
        now = time.monotonic_ns()
        latency_us = max((now - sched) // 1000, 1)
        receipt = self.ledger.received(sock.name, sender, seq, latency_us)
        if sock.outage is not None and sock.outage["up_s"] is not None and receipt in (Receipt.DELIVERED,
                                                                                        Receipt.LATE):
            sock.outage["delivered_after"] += 1
        self.hists.record(step, latency_us)
        second = self._second(now)
        self.timeline.record(f"{step}#{second // self.interval_s}", latency_us)
        self.delivered_per_s[second] += 1


async def _paced(items: list[Any], rate: float, ramp_s: float, action: Any) -> list[Any]:
    """Start ``action(item)`` at ``rate`` per second (or spread over ``ramp_s``); gather results."""
    interval = ramp_s / len(items) if ramp_s > 0 and items else 1.0 / rate
    start = time.monotonic()
    tasks = []
    for i, item in enumerate(items):
        delay = start + i * interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(action(item)))
    return list(await asyncio.gather(*tasks))


async def _messages(run: _Run) -> None:
    """broadcast, presence and postgres_changes: join every socket, send on schedule, account, drain."""
    sc = run.scenario
    topics: dict[str, tuple[list[_Socket], list[_Socket]]] = {
        f"realtime:rtbook-load-{run.prefix}-{t}": ([], []) for t in range(sc.topics)
    }
    socks: list[tuple[str, _Socket, bool]] = []
    for topic, (senders, receivers) in topics.items():
        t = topic.rsplit("-", 1)[-1]
        # postgres_changes has one sender, the database writer, outside the topics.
        for i in range(0 if sc.kind == "postgres_changes" else sc.senders):
            s = _Socket(run, f"{run.prefix}-t{t}-s{i}")
            senders.append(s)
            socks.append((topic, s, True))
        for i in range(sc.receivers):
            r = _Socket(run, f"{run.prefix}-t{t}-r{i}")
            receivers.append(r)
            socks.append((topic, r, False))

    async def up(entry: tuple[str, _Socket, bool]) -> bool:
        topic, sock, _ = entry
        return await sock.open() and await sock.join(topic, sc.ack)

    await _paced(socks, sc.join_rate, sc.ramp_s, up)

    pad = "x" * sc.payload_bytes
    writer: _Writer | None = None
    if sc.kind == "postgres_changes":
        writer = await _Writer.open(run)
        if writer is None:
            run.stopping = True
            await asyncio.gather(*(s.close() for _, s, _ in socks))
            return
        all_senders: list[Any] = [writer]
    else:
        all_senders = [s for senders, _ in topics.values() for s in senders]
    # Message k of the run (k < rate x duration) is due at start + k / rate; sender i sends every
    # len(all_senders)-th message from k = i, so the senders interleave evenly.
    total = int(sc.rate * sc.duration_s)
    period_ns = 1e9 / sc.rate
    start = time.monotonic_ns() + 50_000_000
    run.t0_ns = start

    async def send_loop(index: int, sock: Any, members_of_topic: list[_Socket]) -> None:
        for seq, k in enumerate(range(index, total, len(all_senders))):
            scheduled = start + int(k * period_ns)
            delay = (scheduled - time.monotonic_ns()) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)
            # Who is owed the message: for broadcast every other joined socket of the topic,
            # senders included (self: false spares only the sender); for presence every joined
            # member, the tracker too (Realtime sends the diff to all); for postgres_changes every
            # subscribed socket of every topic (each subscribes to the probe table).
            owed = [r for r in members_of_topic if r.joined and (r is not sock or sc.kind == "presence")]
            run.ledger.sent(sock.name, seq, frozenset(r.name for r in owed))
            run.sent_per_s[run._second(scheduled)] += 1
            run.expected_per_s[run._second(scheduled)] += len(owed)
            if sc.kind == "broadcast":
                ok = await sock.broadcast(seq, scheduled, sc.ack, pad)
            elif sc.kind == "presence":
                ok = await sock.track(seq, scheduled, pad)
            else:
                ok = await sock.insert(seq, scheduled, pad)
            if not ok:
                # Still counted as sent, and lost at every receiver it was owed to: the application
                # meant to send it on schedule (open model). A sender waiting to reconnect says so.
                down = isinstance(sock, _Socket) and sock.outage is not None and sock.outage["up_s"] is None
                why = "insert failed" if writer else "socket down, reconnecting" if down else "channel closed"
                run.error(f"send: {why}, message not sent")

    loops = []
    if writer is not None:
        everyone = [r for _, receivers in topics.values() for r in receivers]
        loops.append(send_loop(0, writer, everyone))
    else:
        index = 0
        for senders, receivers in topics.values():
            for s in senders:
                loops.append(send_loop(index, s, senders + receivers))
                index += 1
    try:
        await asyncio.gather(*loops)
        await _drain(run)
    finally:
        run.stopping = True
        await asyncio.gather(*(s.close() for _, s, _ in socks))
        if writer is not None:
            await writer.close()


class _Writer:
    """The postgres_changes sender: INSERTs into the probe table (never any other table) at schedule."""

    def __init__(self, run: _Run, conn: Any) -> None:
        self.run = run
        self.conn = conn
        self.name = f"{run.prefix}-db"

    @classmethod
    async def open(cls, run: _Run) -> _Writer | None:
        import psycopg

        if not run.endpoint.db:
            run.error("postgres_changes: no database to write to (give --db-url or use the sandbox)")
            return None
        try:
            conn = await asyncio.wait_for(
                psycopg.AsyncConnection.connect(**run.endpoint.db, autocommit=True, connect_timeout=10),
                run.step_timeout,
            )
        except Exception as exc:  # counted and reported, never raised: the run's numbers stand
            run.error(f"postgres_changes: cannot connect to the database ({type(exc).__name__})")
            return None
        return cls(run, conn)

    async def insert(self, seq: int, scheduled_ns: int, pad: str) -> bool:
        body = json.dumps({"s": self.name, "q": seq, "t": scheduled_ns, "p": pad})
        try:
            await asyncio.wait_for(self.conn.execute(
                f"INSERT INTO {PROBE_SCHEMA}.{PROBE_TABLE} (is_public, payload) VALUES (true, %s::jsonb)", (body,)
            ), self.run.step_timeout)
        except Exception as exc:  # a refused insert is a counted error kind, not a crash
            self.run.error(f"postgres_changes: insert failed ({type(exc).__name__})")
            return False
        return True

    async def close(self) -> None:
        # The run's rows are removed again, so the probe table does not grow run after run.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.conn.execute(
                f"DELETE FROM {PROBE_SCHEMA}.{PROBE_TABLE} WHERE payload->>'s' = %s", (self.name,)
            ), self.run.step_timeout)
        with contextlib.suppress(Exception):
            await self.conn.close()


async def _drain(run: _Run) -> None:
    """Wait for outstanding deliveries: until nothing is pending or the lateness bound has passed."""
    deadline = time.monotonic() + max(run.scenario.late_ms / 1000, DRAIN_MIN_S)
    while time.monotonic() < deadline and run.ledger.counts().lost > 0:
        await asyncio.sleep(0.05)


async def _connect(run: _Run) -> None:
    sc = run.scenario
    socks = [_Socket(run, f"{run.prefix}-c{i}") for i in range(sc.connections)]

    async def up(sock: _Socket) -> bool:
        topic = f"realtime:rtbook-load-{run.prefix}-{int(sock.name.rsplit('c', 1)[-1]) % 100}"
        return await sock.open() and await sock.join(topic, False)

    await _paced(socks, sc.join_rate, sc.ramp_s, up)
    held_until = time.monotonic() + sc.duration_s
    while time.monotonic() < held_until:
        await asyncio.sleep(min(0.2, max(held_until - time.monotonic(), 0)))
    run.held = sum(1 for s in socks if s.joined)
    run.stopping = True
    await asyncio.gather(*(s.close() for s in socks))


def hard_bound_s(scenario: Scenario, step_timeout: float) -> float:
    """The longest a process may run: joins + duration + drain + one step timeout of slack each."""
    joins = scenario.ramp_s or scenario.sockets / scenario.join_rate
    return joins + 2 * step_timeout + scenario.duration_s + max(scenario.late_ms / 1000, DRAIN_MIN_S) + 5


async def _ticker(run: _Run, on_tick: Callable[[str], None]) -> None:
    """Once a second, one progress line (sockets, sent, delivered, lost so far, errors)."""
    started = time.monotonic()
    while True:
        await asyncio.sleep(1.0)
        c = run.ledger.counts()
        on_tick(f"{time.monotonic() - started:5.0f} s  sockets {run.joined}/{run.scenario.sockets} joined  "
                f"sent {c.sent}  delivered {c.delivered}/{c.expected}  errors {sum(run.errors.values())}")


async def _run(scenario: Scenario, endpoint: Endpoint, prefix: str, step_timeout: float,
               on_tick: Callable[[str], None] | None = None) -> ProcessResult:
    import aiohttp

    run = _Run(scenario, endpoint, prefix, step_timeout)
    ticker = asyncio.create_task(_ticker(run, on_tick)) if on_tick is not None else None
    wall0 = time.monotonic()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    limit = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=limit) as session:
        run.session = session
        body = _connect(run) if scenario.kind == "connect" else _messages(run)
        try:
            await asyncio.wait_for(body, hard_bound_s(scenario, step_timeout))
        except TimeoutError:
            run.error("run: stopped at its hard bound")
        finally:
            if ticker is not None:
                ticker.cancel()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    pairs = run.ledger.lost_pairs()
    down = {o["socket"] for o in run.outages}
    largest = sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[:LOST_PAIRS_MAX]
    return ProcessResult(
        counts=run.ledger.counts(),
        histograms=run.hists.encode(),
        errors=dict(run.errors),
        opened=run.opened,
        joined=run.joined,
        held=run.held,
        cpu_s=round((cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime), 3),
        wall_s=round(time.monotonic() - wall0, 3),
        sent_per_s=run.sent_per_s,
        delivered_per_s=run.delivered_per_s,
        expected_per_s=run.expected_per_s,
        timeline=run.timeline.encode(),
        interval_s=run.interval_s,
        outages=run.outages,
        lost_by_pair={f"{sender} > {receiver}": n for (sender, receiver), n in largest},
        lost_around_outages=sum(n for (sender, receiver), n in pairs.items() if sender in down or receiver in down),
    )


def run_share(scenario: Scenario, endpoint: Endpoint, prefix: str, step_timeout: float,
              on_tick: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run one process's share (picklable entry point for worker processes); returns a plain dict.

    Inside a Jupyter kernel an event loop already runs in this thread; the share then gets a
    thread (and loop) of its own.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_run(scenario, endpoint, prefix, step_timeout, on_tick)).to_dict()
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="rtbook-load") as pool:
        future = pool.submit(asyncio.run, _run(scenario, endpoint, prefix, step_timeout, on_tick))
        return future.result().to_dict()
