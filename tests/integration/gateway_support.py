"""The Kong-compatible gateway as a child process, and an echo upstream to watch what it forwards.

Shared by the gateway tests: :class:`Upstream` answers every HTTP request with what it received
(method, path, query, headers, body) and echoes WebSocket frames; :func:`start_gateway` runs
``python -m rtbook.sandbox.gateway`` on 127.0.0.1 with a bounded wait for its READY line.
"""

from __future__ import annotations

import asyncio
import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

ANON, SERVICE = "anon-key-canary-111", "service-key-canary-222"


class Upstream:
    """An aiohttp server in a thread: echoes HTTP requests and WebSocket frames."""

    def __init__(self) -> None:
        self.port = 0
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.runner: web.AppRunner | None = None
        self.closes: list[Any] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    async def echo(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            if request.query.get("fail"):
                return web.json_response({"error": "Tenant not found"}, status=404)
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            await ws.send_json({"hello": True, "path": request.path, "query": dict(request.query),
                                "headers": dict(request.headers)})
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    if msg.data == "close-me":
                        await ws.close(code=4001, message=b"bye")
                        break
                    await ws.send_str("echo:" + msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await ws.send_bytes(b"echo:" + msg.data)
            self.closes.append(ws.close_code)
            return ws
        return web.json_response({"method": request.method, "path": request.path, "query": dict(request.query),
                                  "headers": dict(request.headers), "body": (await request.text())})

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.echo)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.ready.set()
        self.loop.run_forever()

    def start(self) -> Upstream:
        self.thread.start()
        assert self.ready.wait(10)
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            assert self.runner is not None
            await self.runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def start_gateway(tmp: Path, kong_text: str, hosts: dict[str, Any], env: dict[str, str] | None = None,
                  timeout: float = 15, kong_version: str = "3.9.3") -> tuple[subprocess.Popen[str], int, Path]:
    (tmp / "kong.yml").write_text(kong_text)
    config = {"kong_yml": str(tmp / "kong.yml"), "hosts": hosts, "port": 0, "kong_version": kong_version,
              "env": env if env is not None else {
                  "SUPABASE_ANON_KEY": ANON, "SUPABASE_SERVICE_KEY": SERVICE, "SUPABASE_PUBLISHABLE_KEY": "",
                  "SUPABASE_SECRET_KEY": "", "DASHBOARD_USERNAME": "dash", "DASHBOARD_PASSWORD": "dash-pw-canary",
              }}
    cfg = tmp / "gateway.json"
    cfg.write_text(json.dumps(config))
    cfg.chmod(0o600)
    log = tmp / "gateway.log"
    with log.open("w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "rtbook.sandbox.gateway", str(cfg)],
                                stdout=subprocess.PIPE, stderr=fh, text=True)
    # A reader thread, so a gateway that neither prints nor exits cannot block past the deadline.
    out: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for text in proc.stdout:
            out.put(text)
        out.put("")  # end of output: the gateway exited

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout
    line = ""
    while time.monotonic() < deadline:
        try:
            line = out.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line.startswith("READY ") or not line:
            break
    if not line.startswith("READY "):
        proc.kill()
        proc.wait(5)
        return proc, 0, log
    return proc, int(line.split()[1]), log


def stop(proc: subprocess.Popen[str]) -> int | None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode
