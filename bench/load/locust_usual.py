"""A Locust WebSocket user written the usual way (websocket-client under gevent), for bench/load_bench.py.

What a user of Locust typically writes for Realtime: one sender paced by ``constant_throughput``,
receivers reading in a greenlet, latency from the sender's wall clock to arrival, reported
through Locust's request event. No delivery accounting. Configured by environment variables
(BENCH_URL, BENCH_RATE, BENCH_RESULT); the result file gets the receivers' delivery count.
"""

from __future__ import annotations

import json
import os
import resource
import time

import gevent
import websocket
from locust import User, constant_throughput, events, task

URL = os.environ.get("BENCH_URL", "")
RATE = float(os.environ.get("BENCH_RATE", "10"))
TOPIC = "realtime:bench-locust"
DELIVERED = [0]
CPU0: list[float] = []


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


@events.test_start.add_listener
def _start(environment: object, **_: object) -> None:
    CPU0.append(_cpu())


def _join(ws: websocket.WebSocket) -> None:
    ws.send(json.dumps({"topic": TOPIC, "event": "phx_join", "ref": "1", "join_ref": "1",
                        "payload": {"config": {"broadcast": {"self": False}}}}))
    while json.loads(ws.recv()).get("event") != "phx_reply":
        pass


class Sender(User):
    fixed_count = 1
    wait_time = constant_throughput(RATE)

    def on_start(self) -> None:
        self.ws = websocket.create_connection(URL, timeout=10)
        _join(self.ws)

    @task
    def send(self) -> None:
        body = {"type": "broadcast", "event": "m", "payload": {"ts": time.time()}}
        self.ws.send(json.dumps({"topic": TOPIC, "event": "broadcast", "ref": None, "join_ref": "1", "payload": body}))

    def on_stop(self) -> None:
        self.ws.close()


class Receiver(User):
    wait_time = constant_throughput(1)

    def on_start(self) -> None:
        self.ws = websocket.create_connection(URL, timeout=10)
        _join(self.ws)
        self.reader = gevent.spawn(self._read)

    def _read(self) -> None:
        while True:
            try:
                msg = json.loads(self.ws.recv())
            except Exception:
                return
            if msg.get("event") == "broadcast":
                DELIVERED[0] += 1
                sent = msg["payload"]["payload"]["ts"]
                events.request.fire(request_type="WS", name="broadcast", response_time=(time.time() - sent) * 1000,
                                    response_length=0, exception=None, context={})

    @task
    def idle(self) -> None:
        pass

    def on_stop(self) -> None:
        self.ws.close()


@events.quitting.add_listener
def _write(environment: object, **_: object) -> None:
    path = os.environ.get("BENCH_RESULT")
    if path:
        with open(path, "w", encoding="utf-8") as fh:
            json.dump({"delivered": DELIVERED[0], "cpu_s": round(_cpu() - (CPU0[0] if CPU0 else 0.0), 3)}, fh)
