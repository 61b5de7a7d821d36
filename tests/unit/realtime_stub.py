"""A tiny Realtime look-alike on 127.0.0.1 for the live checks' unit tests (no tests here).

A real aiohttp server in a background thread: the health endpoint answers the JSON shapes of
Realtime's ``TenantController.health/2`` (research notes §1), and the WebSocket speaks Phoenix
channels (vsn 1.0.0 objects, 2.0.0 arrays and binary kind 3 -> kind 4) with refusals that can be
held back the way Realtime holds them (CONNECT_ERROR_BACKOFF_MS, CHANNEL_ERROR_BACKOFF_MS). Each
test scripts what it needs on a :class:`Stub`; everything it receives is kept for assertions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

# (status, body) of one health answer; the last one is repeated once the list is used up.
HealthAnswer = tuple[int, str]
# A join decision: (status, response). "ok" joins; "error" refuses with response {"reason": ...}.
JoinDecision = tuple[str, dict[str, Any]]


def health_json(healthy: bool, db_connected: bool, connected_cluster: int = 0, replication: bool = False) -> str:
    """A health body with exactly the keys Realtime sends (``region`` null as in the official compose)."""
    return json.dumps({"data": {"healthy": healthy, "db_connected": db_connected,
                                "replication_connected": replication, "connected_cluster": connected_cluster,
                                "region": None, "node": "realtime@127.0.0.1"}})


def join_ok(_topic: str, _payload: dict[str, Any]) -> JoinDecision:
    return "ok", {"postgres_changes": []}


def refuse(reason: str) -> Callable[[str, dict[str, Any]], JoinDecision]:
    def decide(_topic: str, _payload: dict[str, Any]) -> JoinDecision:
        return "error", {"reason": reason}

    return decide


@dataclass
class Stub:
    """The script (set by a test) and what the server saw."""

    health: list[HealthAnswer] = field(default_factory=lambda: [(200, health_json(True, True))])
    handshake_refusal: tuple[int, str] | None = None
    handshake_delay_s: float = 0.0
    join: Callable[[str, dict[str, Any]], JoinDecision] = join_ok
    join_error_delay_s: float = 0.0
    # Private channels whose broadcasts are dropped without a reply (no INSERT policy).
    drop_private_broadcasts: bool = False
    health_calls: int = 0
    joins: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    binary_pushes: list[bytes] = field(default_factory=list)
    handshakes: list[dict[str, str]] = field(default_factory=list)


class StubServer:
    """Runs a :class:`Stub` on 127.0.0.1 in a thread; ``url`` is its base URL."""

    def __init__(self, stub: Stub) -> None:
        self.stub = stub
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="realtime-stub")
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the stub server did not start within 10 s")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_get("/api/tenants/{tenant}/health", self._health)
        app.router.add_get("/socket/websocket", self._socket)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        server = site._server
        assert server is not None
        self.port = int(server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    # ---------------------------------------------------------------- HTTP
    async def _health(self, request: web.Request) -> web.Response:
        s = self.stub
        answer = s.health[min(s.health_calls, len(s.health) - 1)]
        s.health_calls += 1
        status, body = answer
        return web.Response(status=status, text=body, content_type="application/json" if body else None)

    # ---------------------------------------------------------------- WebSocket
    async def _socket(self, request: web.Request) -> web.StreamResponse:
        s = self.stub
        s.handshakes.append(dict(request.query))
        if s.handshake_refusal is not None:
            await asyncio.sleep(s.handshake_delay_s)
            status, body = s.handshake_refusal
            return web.Response(status=status, text=body, content_type="application/json" if body else None)
        vsn = request.query.get("vsn", "1.0.0")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        channels: dict[str, dict[str, Any]] = {}
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await self._on_text(ws, vsn, json.loads(msg.data), channels)
            elif msg.type == WSMsgType.BINARY:
                await self._on_binary(ws, bytes(msg.data), channels)
        return ws

    @staticmethod
    async def _send(ws: web.WebSocketResponse, vsn: str, join_ref: Any, ref: Any, topic: str, event: str,
                    payload: Any) -> None:
        if vsn == "2.0.0":
            await ws.send_str(json.dumps([join_ref, ref, topic, event, payload]))
        else:
            await ws.send_str(json.dumps({"topic": topic, "event": event, "payload": payload, "ref": ref,
                                          "join_ref": join_ref}))

    async def _on_text(self, ws: web.WebSocketResponse, vsn: str, data: Any,
                       channels: dict[str, dict[str, Any]]) -> None:
        if isinstance(data, list):
            join_ref, ref, topic, event, payload = data
        else:
            join_ref, ref, topic, event, payload = (data.get("join_ref"), data.get("ref"), data["topic"],
                                                    data["event"], data.get("payload"))
        s = self.stub
        if event == "heartbeat":
            await self._send(ws, vsn, None, ref, topic, "phx_reply", {"status": "ok", "response": {}})
        elif event == "phx_join":
            s.joins.append((topic, payload))
            status, response = s.join(topic, payload)
            if status != "ok":
                await asyncio.sleep(s.join_error_delay_s)
            else:
                channels[topic] = (payload or {}).get("config") or {}
            await self._send(ws, vsn, join_ref, ref, topic, "phx_reply", {"status": status, "response": response})
        elif event == "broadcast" and topic in channels:
            config = channels[topic]
            if config.get("private") and s.drop_private_broadcasts:
                return  # Realtime: no INSERT permission -> dropped, no reply even with ack
            if (config.get("broadcast") or {}).get("self"):
                await self._send(ws, vsn, None, None, topic, "broadcast", payload)
            if (config.get("broadcast") or {}).get("ack"):
                await self._send(ws, vsn, join_ref, ref, topic, "phx_reply", {"status": "ok", "response": {}})
        elif event == "phx_leave":
            channels.pop(topic, None)
            await self._send(ws, vsn, join_ref, ref, topic, "phx_reply", {"status": "ok", "response": {}})

    async def _on_binary(self, ws: web.WebSocketResponse, data: bytes, channels: dict[str, dict[str, Any]]) -> None:
        # Kind 3 from the client: [3, join_ref_len, ref_len, topic_len, event_len, metadata_len, encoding] ...
        self.stub.binary_pushes.append(data)
        if data[0] != 3:
            return
        lengths = list(data[1:6])
        pos = 7
        parts = []
        for n in lengths:
            parts.append(data[pos:pos + n])
            pos += n
        join_ref, ref, topic_b, event_b, _meta = parts
        topic = topic_b.decode()
        payload = data[pos:]
        config = channels.get(topic, {})
        if (config.get("broadcast") or {}).get("self"):
            # Kind 4 to V2 receivers, metadata dropped (the server ignores incoming metadata).
            await ws.send_bytes(bytes([4, len(topic_b), len(event_b), 0, data[6]]) + topic_b + event_b + payload)
        if (config.get("broadcast") or {}).get("ack"):
            await ws.send_str(json.dumps([join_ref.decode() or None, ref.decode(), topic, "phx_reply",
                                          {"status": "ok", "response": {}}]))


@contextlib.contextmanager
def running(stub: Stub) -> Iterator[StubServer]:
    server = StubServer(stub)
    try:
        yield server
    finally:
        server.stop()
