"""Cluster relay of the Realtime-compatible server: broadcast and presence reach every node.

How real Realtime does it (supabase/realtime v2.129.8 ``config/runtime.exs``, ``lib/realtime/application.ex``):
the nodes form one distributed-Erlang cluster, found by libcluster (``CLUSTER_STRATEGIES``: ``POSTGRES`` by
default in prod, i.e. ``LibclusterPostgres.Strategy`` which announces nodes with LISTEN/NOTIFY on the
metadata database; ``DNS`` = ``Cluster.Strategy.DNSPoll`` over ``DNS_NODES``; ``EPMD`` for development);
every channel broadcast goes through ``Phoenix.PubSub`` (which fans out to all connected nodes) and presence
is a ``Phoenix.Tracker`` CRDT replicated between them. Nodes that never joined the cluster each hold only
their own sockets: clients on different nodes do not see each other.

The stand-in has no Erlang distribution, so it relays the same two things through the shared PostgreSQL:
every node LISTENs on one channel and NOTIFYs its local broadcasts and presence diffs with its node name;
the others deliver them to their local channels and keep the remote presences for ``presence_state``.
A node that starts announces itself and the others send it their presences; a node that stops says so and
the others push presence leaves for its clients (as Phoenix.Tracker does on nodedown). Limits of the
stand-in (documented in docs/conformance.md): a NOTIFY payload is at most 8000 bytes, so a larger
broadcast stays on its node (logged ``ClusterRelayPayloadTooLarge``); a node that dies without stopping
(SIGKILL) leaves its presences behind on the others.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

import psycopg

from rtbook.sandbox.server_log import emit

__all__ = ["NOTIFY_LIMIT", "ClusterRelay"]

# PostgreSQL's NOTIFY payload limit (bytes, in the default configuration) minus a margin for the envelope.
NOTIFY_LIMIT = 7900

# (tenant, topic, private) -> {phx_ref: (node, key, meta)}
RemoteKey = tuple[str, str, bool]
Deliver = Callable[[dict[str, Any]], None]


class ClusterRelay:
    """LISTEN/NOTIFY link between the nodes of one sandbox cluster."""

    def __init__(self, conninfo: str, channel: str, node: str, deliver: Deliver) -> None:
        self._conninfo = conninfo
        self.channel = channel
        self.node = node
        self._deliver = deliver
        self._listen: psycopg.AsyncConnection[Any] | None = None
        self._send: psycopg.AsyncConnection[Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._queue: asyncio.Queue[str] = asyncio.Queue(maxsize=10_000)
        self._sender: asyncio.Task[None] | None = None
        self.remote_presence: dict[RemoteKey, dict[str, tuple[str, str, dict[str, Any]]]] = {}
        self.peers: set[str] = set()

    async def start(self) -> None:
        """Connect, LISTEN, and announce this node (the others answer with their presence state)."""
        self._listen = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        self._send = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        # The channel name is an identifier chosen by the manager (letters, digits, underscore).
        await self._listen.execute(f"LISTEN {self.channel}")
        self._task = asyncio.create_task(self._receive(), name="cluster-relay-listen")
        # One sender keeps this node's messages in order (a leave never overtakes its join).
        self._sender = asyncio.create_task(self._send_loop(), name="cluster-relay-send")
        self.publish({"t": "hello"})

    async def stop(self) -> None:
        """Tell the others this node leaves (they drop its presences), stop listening, close both connections."""
        if self._send is not None:
            # Like a nodedown seen by Phoenix.Tracker: the others send presence leaves for this node's clients.
            bye = json.dumps({"t": "bye", "from": self.node}, separators=(",", ":"))
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._send.execute("SELECT pg_notify(%s, %s)", (self.channel, bye)), 0.5)
        for task in (self._task, self._sender):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        for conn in (self._listen, self._send):
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()

    # ------------------------------------------------------------------ sending

    def publish(self, message: dict[str, Any]) -> None:
        """Queue one message for the other nodes (dropped with a log line when it cannot fit a NOTIFY)."""
        text = json.dumps({**message, "from": self.node}, separators=(",", ":"))
        if len(text.encode()) > NOTIFY_LIMIT:
            emit(logging.ERROR, f"a {message.get('t')} of {len(text.encode())} bytes exceeds the stand-in's "
                 f"NOTIFY relay limit ({NOTIFY_LIMIT}); other nodes do not receive it",
                 code="ClusterRelayPayloadTooLarge", tenant=message.get("tenant"))
            return
        try:
            self._queue.put_nowait(text)
        except asyncio.QueueFull:
            emit(logging.ERROR, "the cluster relay queue is full; dropping a message", code="ClusterRelayFull")

    async def _send_loop(self) -> None:
        assert self._send is not None
        while True:
            text = await self._queue.get()
            try:
                await self._send.execute("SELECT pg_notify(%s, %s)", (self.channel, text))
            except psycopg.Error as exc:
                emit(logging.ERROR, f"cannot relay to the other nodes: {str(exc).strip().splitlines()[0]}",
                     code="ClusterRelayError")

    def broadcast(self, tenant: str, topic: str, private: bool, payload: Any) -> None:
        """Relay a broadcast (a JSON payload dict, or a binary user broadcast as event/encoding/bytes)."""
        msg: dict[str, Any] = {"t": "broadcast", "tenant": tenant, "topic": topic, "private": private}
        if isinstance(payload, dict):
            msg["payload"] = payload
        else:
            msg["user"] = {"event": payload.event, "encoding": payload.encoding,
                           "data": base64.b64encode(payload.payload).decode()}
        self.publish(msg)

    def presence(self, tenant: str, topic: str, private: bool, joins: dict[str, Any], leaves: dict[str, Any]) -> None:
        """Relay a local presence diff."""
        self.publish({"t": "presence", "tenant": tenant, "topic": topic, "private": private,
                      "joins": joins, "leaves": leaves})

    # ------------------------------------------------------------------ receiving

    async def _receive(self) -> None:
        assert self._listen is not None
        try:
            async for note in self._listen.notifies():
                try:
                    msg = json.loads(note.payload)
                except ValueError:
                    continue
                if not isinstance(msg, dict) or msg.get("from") == self.node:
                    continue
                self._handle(msg)
        except psycopg.Error as exc:
            emit(logging.ERROR, f"the cluster relay lost its connection: {str(exc).strip().splitlines()[0]}",
                 code="ClusterRelayError")

    def _handle(self, msg: dict[str, Any]) -> None:
        kind = msg.get("t")
        origin = str(msg.get("from"))
        if origin not in self.peers:
            self.peers.add(origin)
            emit(logging.INFO, f"node {origin} joined the cluster (relay channel {self.channel})")
        if kind == "bye":
            self.peers.discard(origin)
            emit(logging.INFO, f"node {origin} left the cluster")
            for msg in self._forget(origin):
                self._deliver(msg)
            return
        if kind == "hello":
            # The newcomer learns this node too, and (like Phoenix.Tracker's state transfer to a new
            # replica) receives what this node tracks.
            self.publish({"t": "welcome"})
            self._deliver({"t": "sync", "to": origin})
            return
        if kind == "presence":
            self._remember(msg, origin)
        if kind in ("broadcast", "presence"):
            self._deliver(msg)

    def _remember(self, msg: dict[str, Any], origin: str) -> None:
        key = (str(msg.get("tenant")), str(msg.get("topic")), bool(msg.get("private")))
        store = self.remote_presence.setdefault(key, {})
        for section, add in (("leaves", False), ("joins", True)):
            entries = msg.get(section)
            if not isinstance(entries, dict):
                continue
            for pkey, value in entries.items():
                metas = value.get("metas") if isinstance(value, dict) else None
                for meta in metas if isinstance(metas, list) else []:
                    if not isinstance(meta, dict) or "phx_ref" not in meta:
                        continue
                    if add:
                        store[str(meta["phx_ref"])] = (origin, str(pkey), meta)
                    else:
                        store.pop(str(meta["phx_ref"]), None)
        if not store:
            self.remote_presence.pop(key, None)

    def _forget(self, origin: str) -> list[dict[str, Any]]:
        """Drop every presence ``origin`` tracked; the presence leaves to push, per topic."""
        out: list[dict[str, Any]] = []
        for key in list(self.remote_presence):
            store = self.remote_presence[key]
            leaves: dict[str, Any] = {}
            for ref, (node, pkey, meta) in list(store.items()):
                if node == origin:
                    leaves.setdefault(pkey, {"metas": []})["metas"].append(meta)
                    del store[ref]
            if not store:
                del self.remote_presence[key]
            if leaves:
                out.append({"t": "presence", "from": origin, "tenant": key[0], "topic": key[1], "private": key[2],
                            "joins": {}, "leaves": leaves})
        return out

    def remote_state(self, tenant: str, topic: str, private: bool) -> dict[str, Any]:
        """The other nodes' presences on a topic, grouped by key like ``presence_state``."""
        state: dict[str, Any] = {}
        for _node, pkey, meta in self.remote_presence.get((tenant, topic, private), {}).values():
            state.setdefault(pkey, {"metas": []})["metas"].append(meta)
        return state
