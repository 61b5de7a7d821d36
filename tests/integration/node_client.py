"""The realtime-js driver (tests/node/realtime_client.mjs) as a child process, shared by the official-client tests."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

from tests.conftest import ROOT

NODE_DIR = ROOT / "tests" / "node"


def have_node_client() -> bool:
    return shutil.which("node") is not None and (NODE_DIR / "node_modules" / "@supabase" / "realtime-js").is_dir()


class NodeClient:
    """realtime-js in a child process emitting JSON lines; ``close()`` always reaps it."""

    def __init__(self, url: str, topic: str, key: str, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            ["node", str(NODE_DIR / "realtime_client.mjs"), url, topic, key], cwd=NODE_DIR,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **env},
        )
        self.events: list[dict[str, Any]] = []
        self._q: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self._q.put(json.loads(line))
            except ValueError:
                self._q.put({"kind": "raw", "line": line.strip()})

    def drain(self) -> None:
        while True:
            try:
                self.events.append(self._q.get_nowait())
            except queue.Empty:
                return

    def has(self, kind: str, pred: Callable[[dict[str, Any]], bool] = lambda e: True) -> bool:
        self.drain()
        return any(e.get("kind") == kind and pred(e) for e in self.events)

    def command(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def close(self) -> str:
        if self.proc.poll() is None:
            try:
                self.command("quit")
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(timeout=5)
        return self.proc.stderr.read() if self.proc.stderr else ""


async def until(pred: Callable[[], bool], timeout: float, what: str, pump: Callable[[], None] | None = None) -> None:
    """Poll ``pred`` (after ``pump``) every 50 ms; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pump:
            pump()
        if pred():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
