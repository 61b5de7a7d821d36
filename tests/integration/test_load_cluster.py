"""rtbook load through nginx in front of two nodes, one of which is killed mid-run.

The loss must be exactly the deliveries that involve the sockets that sat on the killed node, those
sockets must come back through the proxy on the surviving node and receive again, and the result must
name the cause. Which sockets sat on node 2 is known from outside the generator: nginx's access log
records the upstream of every WebSocket it carried.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from rtbook.clients.phoenix import Message, decode, encode
from rtbook.load.generator import Endpoint, ProcessResult, run_share
from rtbook.load.histograms import Histograms
from rtbook.load.runner import LoadResult, run_load
from rtbook.load.scenario import Scenario
from tests.integration.test_sandbox_cluster import cluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

SENDERS, RECEIVERS, RATE, DURATION_S = 2, 4, 40.0, 8.0
PER_SENDER = RATE / SENDERS  # each sender sends every SENDERS-th message of the run


def _upgrades_by_upstream(access_log: Path) -> dict[str, int]:
    """nginx's 101 answers by the upstream that finally served them (a retried request lists several)."""
    out: dict[str, int] = {}
    for line in access_log.read_text().splitlines():
        found = re.search(r'"GET /realtime/v1/websocket" 101 upstream=(\S.*)$', line)
        if found:
            served = found.group(1).split(",")[-1].strip()
            out[served] = out.get(served, 0) + 1
    return out


@pytest.mark.sandbox
def test_a_node_killed_mid_run_loses_exactly_what_involved_its_sockets_and_they_come_back() -> None:
    with cluster("nginx") as (state, target):
        sc = Scenario(kind="broadcast", senders=SENDERS, receivers=RECEIVERS, topics=1, rate=RATE,
                      duration_s=DURATION_S)
        sending = threading.Event()
        box: dict[str, Any] = {}

        def progress(line: str) -> None:
            # Once-a-second ticks: kill once ~2 s of messages went out, wherever the joins left the clock.
            found = re.search(r"\bsent (\d+)", line)
            if found and int(found.group(1)) >= 2 * RATE:
                sending.set()

        def body() -> None:
            try:
                box["result"] = run_load(target, sc, on_progress=progress)
            except BaseException as exc:  # handed to the test thread, which fails with it
                box["error"] = exc

        runner = threading.Thread(target=body, daemon=True)
        runner.start()
        assert sending.wait(60), f"the run never got to 2 s of sending: {box}"
        # Node 2 goes away as a host does: its Realtime and the gateway in front of it. nginx then
        # fails a reconnect over to node 1 (a refused connection is an nginx 'error'). With Realtime
        # alone killed, gateway-2 would answer 502, which nginx passes on (proxy_next_upstream does not
        # name http_502), so some reconnects would fail and back off 2-10 s: longer than this run.
        os.kill(state.pids["realtime-2"], signal.SIGKILL)
        os.kill(state.pids["gateway-2"], signal.SIGKILL)
        runner.join(120)
        assert not runner.is_alive(), "the run outlived its bound"
        if "error" in box:
            raise box["error"]
        result: LoadResult = box["result"]
        ports = [n["gateway_url"].removeprefix("http://") for n in state.nodes]
        log = Path(state.lb["config"]).parent / "nginx-access.log"
        upgrades = _upgrades_by_upstream(log)
        deadline = time.monotonic() + 10  # nginx writes a WebSocket's line when it closes
        while sum(upgrades.values()) < SENDERS + RECEIVERS + len(result.outages) and time.monotonic() < deadline:
            time.sleep(0.2)
            upgrades = _upgrades_by_upstream(log)

    c = result.counts
    detail = result.text()
    assert c.sent == int(RATE * DURATION_S), detail  # open model: every scheduled message counts as sent
    assert c.expected == c.delivered + c.lost, detail
    down = {o["socket"] for o in result.outages}
    # Ground truth from the proxy: as many sockets went away as nginx had carried to node 2, every one
    # came back (one outage each), and nginx carried the comebacks to node 1.
    on_node2 = upgrades.get(ports[1], 0)
    assert 1 <= on_node2 < SENDERS + RECEIVERS, upgrades
    assert len(down) == len(result.outages) == on_node2, (result.outages, upgrades)
    assert upgrades.get(ports[0], 0) == SENDERS + RECEIVERS, upgrades
    assert result.errors.get("disconnect: socket closed during the run") == on_node2, result.errors
    assert result.errors.get("reconnect: socket reopened and channel rejoined") == on_node2, result.errors
    # One event: all went away within a second of each other, came back, and received again.
    first = min(o["down_s"] for o in result.outages)
    for o in result.outages:
        assert o["down_s"] - first < 1.0 and o["up_s"] is not None and o["up_s"] > o["down_s"], o
        assert o["delivered_after"] > 0, o  # every socket hears the other sender once both are up
    # Every lost delivery involves a socket that was on node 2: nothing was lost between two sockets
    # that stayed up, and the per-pair losses add up to the total.
    assert sum(result.lost_by_pair.values()) == c.lost == result.lost_around_outages, detail
    for pair, n in result.lost_by_pair.items():
        sender, receiver = pair.split(" > ")
        assert n > 0 and (sender in down or receiver in down), (pair, n)
    # What the senders on node 2 lost to a receiver that stayed up is the messages they could not send
    # while away (counted at send time, apart from the ledger), plus at most ~1 s of messages written
    # into the dying socket before its close arrived; and that is about their time away x their rate.
    stayed = [r for r in _receivers(result) if r not in down]
    down_senders = [s for s in _senders(result) if s in down]
    assert down_senders, f"the proxy's round robin put no sender on node 2: {result.outages}"
    unsent = result.errors.get("send: socket down, reconnecting, message not sent", 0)
    away = sum(o["up_s"] - o["down_s"] for o in result.outages if o["socket"] in down_senders) * PER_SENDER
    assert unsent >= away - PER_SENDER / 2 - 2, (unsent, away, detail)
    for r in stayed:
        lost = sum(result.lost_by_pair.get(f"{s} > {r}", 0) for s in down_senders)
        assert unsent <= lost <= unsent + len(down_senders) * PER_SENDER, (r, unsent, lost, detail)
    assert c.lost > 0
    # The cause is named, with the numbers and a remedy.
    cause = next((b for b in result.bottlenecks if b.startswith("sockets going away")), "")
    assert f"{on_node2} socket(s) were disconnected" in cause and f"{c.lost} deliveries" in cause, result.bottlenecks
    assert f"{on_node2} reconnected" in cause and "load balancer" in cause, cause


class _DroppingServer:
    """A minimal Phoenix broadcast server on 127.0.0.1 that can drop every socket and refuse handshakes.

    It answers joins and heartbeats and relays broadcasts to the topic's other members, as Realtime
    does with ``self: false``; :meth:`drop` closes every socket and refuses the next ``refuse``
    handshakes with 502, as a proxy in front of a dead node does.
    """

    def __init__(self) -> None:
        import asyncio

        self.loop = asyncio.new_event_loop()
        self.handshakes: list[float] = []
        self.refuse = 0
        self.members: dict[str, set[Any]] = {}
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        import asyncio

        from aiohttp import web

        async def socket(request: web.Request) -> web.StreamResponse:
            self.handshakes.append(time.monotonic())
            if self.refuse > 0:
                self.refuse -= 1
                return web.Response(status=502, text="Bad Gateway")
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            async for frame in ws:
                msg = decode(frame.data)
                if msg.event in ("phx_join", "heartbeat"):
                    if msg.event == "phx_join":
                        self.members.setdefault(msg.topic, set()).add(ws)
                    await ws.send_str(encode(Message(msg.topic, "phx_reply", {"status": "ok", "response": {}},
                                                     msg.ref, msg.join_ref)))
                elif msg.event == "broadcast":
                    for other in list(self.members.get(msg.topic, ())):
                        if other is not ws and not other.closed:
                            await other.send_str(encode(Message(msg.topic, "broadcast", msg.payload)))
            for group in self.members.values():
                group.discard(ws)
            return ws

        async def main() -> None:
            app = web.Application()
            app.router.add_get("/socket/websocket", socket)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self._ready.set()
            self._stop = asyncio.Event()
            await self._stop.wait()
            await runner.cleanup()

        self.loop.run_until_complete(main())

    def __enter__(self) -> _DroppingServer:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def drop(self, refuse: int) -> None:
        async def close_all() -> None:
            self.refuse = refuse
            for ws in {ws for group in self.members.values() for ws in group}:
                await ws.close()

        import asyncio

        asyncio.run_coroutine_threadsafe(close_all(), self.loop).result(10)


def test_a_refused_reconnect_backs_off_counts_by_kind_and_nothing_reconnects_after_the_run() -> None:
    sc = Scenario(kind="broadcast", senders=1, receivers=1, rate=10.0, duration_s=7.0)
    with _DroppingServer() as server:
        endpoint = Endpoint(f"http://127.0.0.1:{server.port}/socket", None, "dropping server")
        dropped = threading.Event()

        def tick(line: str) -> None:
            found = re.search(r"\bsent (\d+)", line)
            if found and int(found.group(1)) >= 10 and not dropped.is_set():
                dropped.set()
                threading.Thread(target=server.drop, args=(2,), daemon=True).start()

        result = ProcessResult.from_dict(run_share(sc, endpoint, "drop", 5.0, tick))
        after_run = len(server.handshakes)
        time.sleep(1.5)  # longer than the first backoff step: a loop still running would show here
        assert len(server.handshakes) == after_run
    assert dropped.is_set()
    # 2 first joins, 2 attempts refused with 502, 2 that came back: exactly, and no attempt after the run.
    assert after_run == 6
    assert result.errors["disconnect: socket closed during the run"] == 2, result.errors
    refused = {k: v for k, v in result.errors.items() if k.startswith("reconnect failed: handshake: HTTP 502")}
    assert sum(refused.values()) == 2, result.errors
    assert result.errors["reconnect: socket reopened and channel rejoined"] == 2, result.errors
    assert len(result.outages) == 2
    for o in result.outages:
        # realtime-js's schedule: the first attempt after 1 s (refused), the second 2 s later.
        assert o["attempts"] == 2 and o["up_s"] - o["down_s"] >= 3.0, o
    away = Histograms()
    away.merge_encoded("reconnect", result.histograms["reconnect"])
    p = away.percentiles("reconnect")
    assert p is not None and p.count == 2 and p.p50_ms >= 3000.0  # the time away, backoff included
    receiver = next(o for o in result.outages if "-r0" in o["socket"])
    assert receiver["delivered_after"] > 0
    c = result.counts
    assert c.sent == 70 and c.expected == c.delivered + c.lost and c.lost == result.lost_around_outages
    # While both were away the sender's messages were sent to nobody: counted, owed to no one.
    assert result.errors["send: socket down, reconnecting, message not sent"] >= 25, result.errors


def _names(result: LoadResult, role: str) -> list[str]:
    # The generator names sockets <prefix>-t<topic>-s<i> (senders) and -r<i> (receivers).
    names = {n for pair in result.lost_by_pair for n in pair.split(" > ")} | {o["socket"] for o in result.outages}
    prefix = next(iter(names)).rsplit("-t", 1)[0]
    count = SENDERS if role == "s" else RECEIVERS
    return [f"{prefix}-t0-{role}{i}" for i in range(count)]


def _senders(result: LoadResult) -> list[str]:
    return _names(result, "s")


def _receivers(result: LoadResult) -> list[str]:
    return _names(result, "r")
