"""Benchmark the sandbox itself: broadcast round trip/throughput and postgres_changes delivery.

Starts its own sandbox (a temporary ``RTBOOK_HOME``), raises the tenant's rate limits so the
measurement shows the sandbox's ceiling rather than Realtime's default 100 events/s, then measures
each figure twice in the same run, directly against the Realtime-compatible server and through the
Kong-compatible gateway, and prints them side by side with the gateway/direct ratio.

    python bench/sandbox_bench.py [--rtt 200] [--burst 1000] [--changes 50] [--bulk 500]

Not a test: the numbers depend on the machine. Later load tests use them as the ceiling they run into.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rtbook.sandbox.manager import Sandbox, SandboxState  # noqa: E402
from rtbook.sandbox.stackdir import read_env  # noqa: E402

TIMEOUT = 30.0


class Client:
    """A minimal Phoenix vsn 1.0.0 client on aiohttp (JSON objects)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ref = 0

    @classmethod
    async def connect(cls, session: aiohttp.ClientSession, url: str, host: str | None) -> Client:
        headers = {"Host": host} if host else None
        ws = await session.ws_connect(url, headers=headers, max_msg_size=0, timeout=aiohttp.ClientWSTimeout(10, 5))
        return cls(ws)

    async def send(self, topic: str, event: str, payload: dict[str, Any]) -> str:
        self.ref += 1
        await self.ws.send_str(json.dumps({"topic": topic, "event": event, "payload": payload,
                                           "ref": str(self.ref), "join_ref": "1"}))
        return str(self.ref)

    async def recv_until(self, pred: Callable[[dict[str, Any]], bool], timeout: float = TIMEOUT) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no matching message in time")
            msg = await self.ws.receive(timeout=left)
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise ConnectionError(f"socket closed: {msg.type} {msg.data!r}")
            data = json.loads(msg.data)
            if pred(data):
                return data

    async def join(self, topic: str, config: dict[str, Any], wait_system: bool = False) -> None:
        ref = await self.send(topic, "phx_join", {"config": config})
        reply = await self.recv_until(lambda m: m["event"] == "phx_reply" and m["ref"] == ref)
        if reply["payload"]["status"] != "ok":
            raise RuntimeError(f"join refused: {reply['payload']}")
        if wait_system:
            sysmsg = await self.recv_until(lambda m: m["event"] == "system")
            if sysmsg["payload"].get("status") != "ok":
                raise RuntimeError(f"postgres_changes not subscribed: {sysmsg['payload']}")


class Target:
    """Where clients connect: directly (with the tenant Host) or through the gateway."""

    def __init__(self, name: str, url: str, host: str | None) -> None:
        self.name, self.url, self.host = name, url, host


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def broadcast_rtt(session: aiohttp.ClientSession, targets: list[Target], n: int) -> dict[str, list[float]]:
    """Round trips, alternating between the targets each iteration so both see the same machine load."""
    clients = {}
    for t in targets:
        c = await Client.connect(session, t.url, t.host)
        await c.join(f"realtime:bench-rtt-{t.name}", {"broadcast": {"self": True}})
        clients[t.name] = c
    out: dict[str, list[float]] = {t.name: [] for t in targets}
    for i in range(n):
        for t in targets:
            c, topic = clients[t.name], f"realtime:bench-rtt-{t.name}"
            t0 = time.perf_counter()
            await c.send(topic, "broadcast", {"type": "broadcast", "event": "rtt", "payload": {"i": i}})
            await c.recv_until(lambda m, i=i: m["event"] == "broadcast" and m["payload"]["payload"].get("i") == i)
            out[t.name].append((time.perf_counter() - t0) * 1000)
    for c in clients.values():
        await c.ws.close()
    return out


async def broadcast_burst(session: aiohttp.ClientSession, t: Target, n: int) -> float:
    sender = await Client.connect(session, t.url, t.host)
    receiver = await Client.connect(session, t.url, t.host)
    topic = f"realtime:bench-burst-{t.name}"
    await receiver.join(topic, {"broadcast": {"self": False}})
    await sender.join(topic, {"broadcast": {"self": False}})
    got = 0

    async def receive() -> None:
        nonlocal got
        while got < n:
            await receiver.recv_until(lambda m: m["event"] == "broadcast")
            got += 1

    task = asyncio.ensure_future(receive())
    t0 = time.perf_counter()
    for i in range(n):
        await sender.send(topic, "broadcast", {"type": "broadcast", "event": "burst", "payload": {"i": i}})
    await asyncio.wait_for(task, TIMEOUT)
    elapsed = time.perf_counter() - t0
    await sender.ws.close()
    await receiver.ws.close()
    return n / elapsed


async def changes(session: aiohttp.ClientSession, t: Target, dsn: str, n: int, bulk: int) -> tuple[list[float], float]:
    c = await Client.connect(session, t.url, t.host)
    topic = f"realtime:bench-cdc-{t.name}"
    tag = f"bench-{t.name}-{time.time_ns()}"
    await c.join(topic, {"postgres_changes": [{"event": "INSERT", "schema": "public", "table": "todos",
                                               "filter": f"task=eq.{tag}"}]}, wait_system=True)
    latencies = []
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as db:
        for _ in range(n):
            row = db.execute("INSERT INTO public.todos (task) VALUES (%s) RETURNING id", (tag,)).fetchone()
            t0 = time.perf_counter()
            assert row is not None
            await c.recv_until(lambda m, rid=row[0]: m["event"] == "postgres_changes"
                               and m["payload"]["data"]["record"]["id"] == rid)
            latencies.append((time.perf_counter() - t0) * 1000)
        db.execute("INSERT INTO public.todos (task) SELECT %s FROM generate_series(1, %s)", (tag, bulk))
        t0 = time.perf_counter()
        for _ in range(bulk):
            await c.recv_until(lambda m: m["event"] == "postgres_changes")
        rate = bulk / (time.perf_counter() - t0)
    await c.ws.close()
    return latencies, rate


async def run(state: SandboxState, args: argparse.Namespace) -> list[tuple[str, float, float, str]]:
    env = read_env(Path(state.stack_dir) / ".env")
    key = env["SERVICE_ROLE_KEY"]
    dsn = state.db_url.replace("supabase_admin@", f"supabase_admin:{env['POSTGRES_PASSWORD']}@")
    targets = [
        Target("direct", state.realtime_url.replace("http", "ws") + f"/socket/websocket?apikey={key}&vsn=1.0.0",
               state.realtime_host),
        Target("gateway", state.gateway_url.replace("http", "ws") + f"/realtime/v1/websocket?apikey={key}&vsn=1.0.0",
               None),
    ]
    results: dict[str, dict[str, float]] = {t.name: {} for t in targets}
    async with aiohttp.ClientSession() as session:
        await broadcast_rtt(session, targets, 5)  # warm-up: first connections pay for tenant lookups
        rtt = await broadcast_rtt(session, targets, args.rtt)
        for t in targets:
            results[t.name]["rtt_p50"] = statistics.median(rtt[t.name])
            results[t.name]["rtt_p95"] = pct(rtt[t.name], 0.95)
        bursts: dict[str, list[float]] = {t.name: [] for t in targets}
        lats: dict[str, list[float]] = {t.name: [] for t in targets}
        rates: dict[str, list[float]] = {t.name: [] for t in targets}
        for _ in range(2):  # two alternating rounds, so neither path always runs first
            for t in targets:
                bursts[t.name].append(await broadcast_burst(session, t, args.burst))
                lat, rate = await changes(session, t, dsn, args.changes, args.bulk)
                lats[t.name] += lat
                rates[t.name].append(rate)
        for t in targets:
            results[t.name]["burst"] = statistics.mean(bursts[t.name])
            results[t.name]["cdc_p50"] = statistics.median(lats[t.name])
            results[t.name]["cdc_p95"] = pct(lats[t.name], 0.95)
            results[t.name]["cdc_rate"] = statistics.mean(rates[t.name])
    rows = [
        ("broadcast round trip p50", "rtt_p50", "ms"),
        ("broadcast round trip p95", "rtt_p95", "ms"),
        (f"broadcast burst ({args.burst} msgs, 1 receiver, mean of 2)", "burst", "msg/s"),
        ("postgres_changes commit->client p50", "cdc_p50", "ms"),
        ("postgres_changes commit->client p95", "cdc_p95", "ms"),
        (f"postgres_changes bulk ({args.bulk} rows, mean of 2)", "cdc_rate", "rows/s"),
    ]
    return [(label, results["direct"][k], results["gateway"][k], unit) for label, k, unit in rows]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rtt", type=int, default=200, help="sequential broadcast round trips (default 200)")
    parser.add_argument("--burst", type=int, default=1000, help="broadcasts sent back to back (default 1000)")
    parser.add_argument("--changes", type=int, default=50, help="single-row inserts timed one by one (default 50)")
    parser.add_argument("--bulk", type=int, default=500, help="rows inserted in one statement (default 500)")
    args = parser.parse_args()
    for name in ("rtt", "burst", "changes", "bulk"):
        value = getattr(args, name)
        if not 1 <= value <= 20000:
            parser.error(f"--{name} must be between 1 and 20000, got {value}")
    with tempfile.TemporaryDirectory(prefix="rtbook-bench-") as home, Sandbox(home=home) as state:
        password = read_env(Path(state.stack_dir) / ".env")["POSTGRES_PASSWORD"]
        dsn = state.db_url.replace("supabase_admin@", f"supabase_admin:{password}@")
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as db:
            # Measure the sandbox, not Realtime's default tenant limits (100 events/s).
            db.execute("UPDATE _realtime.tenants SET max_events_per_second = 1000000, max_joins_per_second = 100000")
        time.sleep(1.5)  # the server's tenant cache TTL is 1 s
        t0 = time.monotonic()
        rows = asyncio.run(run(state, args))
        took = time.monotonic() - t0
    width = max(len(r[0]) for r in rows)
    print(f"{'metric':<{width}}  {'direct':>10}  {'gateway':>10}  {'gw/direct':>9}  unit")
    for label, direct, gateway, unit in rows:
        ratio = gateway / direct if direct else float("nan")
        print(f"{label:<{width}}  {direct:>10.1f}  {gateway:>10.1f}  {ratio:>9.2f}  {unit}")
    print(f"(measured in {took:.1f} s; direct = Realtime-compatible server with Host realtime-dev.*, "
          "gateway = through the Kong-compatible gateway; one Python asyncio client process)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
