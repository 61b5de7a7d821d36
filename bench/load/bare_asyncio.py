"""A bare asyncio client (aiohttp, no accounting, no histograms) for bench/load_bench.py: the floor.

One sender at a fixed rate and N receivers counting arrivals on one topic, or N sockets held
(connect). Prints {"delivered": n} as JSON. Configured by environment variables (BENCH_URL,
BENCH_RATE, BENCH_RECEIVERS, BENCH_DURATION, BENCH_CONNECTIONS).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import time

import aiohttp

URL = os.environ.get("BENCH_URL", "")
TOPIC = "realtime:bench-bare"


async def _joined(session: aiohttp.ClientSession) -> aiohttp.ClientWebSocketResponse:
    ws = await session.ws_connect(URL)
    await ws.send_str(json.dumps({"topic": TOPIC, "event": "phx_join", "ref": "1", "join_ref": "1",
                                  "payload": {"config": {"broadcast": {"self": False}}}}))
    while json.loads((await ws.receive()).data).get("event") != "phx_reply":
        pass
    return ws


async def main() -> None:
    rate = float(os.environ.get("BENCH_RATE", "10"))
    duration = float(os.environ.get("BENCH_DURATION", "5"))
    receivers = int(os.environ.get("BENCH_RECEIVERS", "4"))
    connections = int(os.environ.get("BENCH_CONNECTIONS", "0"))
    delivered = 0
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        if connections:
            socks = [await _joined(session) for _ in range(connections)]
            await asyncio.sleep(duration)
            for ws in socks:
                await ws.close()
            print(json.dumps({"held": len(socks), "cpu_s": _cpu(cpu0)}))
            return
        sender = await _joined(session)
        socks = [await _joined(session) for _ in range(receivers)]

        async def read(ws: aiohttp.ClientWebSocketResponse) -> None:
            nonlocal delivered
            async for msg in ws:
                if json.loads(msg.data).get("event") == "broadcast":
                    delivered += 1

        readers = [asyncio.create_task(read(ws)) for ws in socks]
        start = time.monotonic()
        for k in range(int(rate * duration)):
            delay = start + k / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await sender.send_str(json.dumps({"topic": TOPIC, "event": "broadcast", "ref": None, "join_ref": "1",
                                              "payload": {"type": "broadcast", "event": "m", "payload": {"k": k}}}))
        await asyncio.sleep(1.0)
        for ws in [sender, *socks]:
            await ws.close()
        for r in readers:
            r.cancel()
    print(json.dumps({"delivered": delivered, "cpu_s": _cpu(cpu0)}))


def _cpu(before: resource.struct_rusage) -> float:
    now = resource.getrusage(resource.RUSAGE_SELF)
    return round(now.ru_utime - before.ru_utime + now.ru_stime - before.ru_stime, 3)


if __name__ == "__main__":
    asyncio.run(main())
