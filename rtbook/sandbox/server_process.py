"""Start and stop the Realtime-compatible server as a child process.

The config JSON is written with mode 0600; the metadata DB password goes through the
environment (``RTBOOK_SANDBOX_DB_PASSWORD``), never argv. Readiness is the ``READY <port>``
line on the child's stdout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rtbook.deadline import wait_until
from rtbook.exceptions import SandboxError
from rtbook.sandbox.server_tenants import DB_PASSWORD_ENV
from rtbook.secrets import Secret

__all__ = ["ServerProcess", "start_server"]


@dataclass
class ServerProcess:
    """A running server child process."""

    proc: subprocess.Popen[str]
    port: int
    host: str
    config_path: Path
    log_path: Path

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.proc.pid

    def url(self, host: str | None = None) -> str:
        """``http://<host>:<port>``; pass a host like ``realtime-dev.localhost`` to carry the tenant."""
        return f"http://{host or self.host}:{self.port}"

    def alive(self) -> bool:
        """True while the child runs."""
        return self.proc.poll() is None

    def log_text(self) -> str:
        """The server's stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 5) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode


def start_server(
    config: dict[str, Any],
    *,
    workdir: Path,
    db_password: str | Secret | None = None,
    timeout: float = 20,
    extra_env: dict[str, str] | None = None,
) -> ServerProcess:
    """Write ``config`` to ``workdir/realtime-server.json`` and start the server; wait for READY.

    Raises:
        SandboxError: the server exited or did not print READY within ``timeout`` (stderr tail included).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "realtime-server.json"
    fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(config, fh, indent=2)
    log_path = workdir / "realtime-server.log"
    env = dict(os.environ)
    env.update(extra_env or {})
    if db_password is not None:
        env[DB_PASSWORD_ENV] = db_password.reveal() if isinstance(db_password, Secret) else db_password
    env.setdefault("PYTHONUNBUFFERED", "1")
    with log_path.open("w") as log_fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rtbook.sandbox.server", str(config_path)],
            stdout=subprocess.PIPE,
            stderr=log_fh,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
            start_new_session=True,
        )
    lines: list[str] = []

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.strip())
            if line.startswith("READY "):
                return

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    ready = wait_until(lambda: [line for line in lines if line.startswith("READY ")], timeout,
                       stop=lambda: proc.poll() is not None)
    if ready:
        port = int(ready[0].split()[1])
        return ServerProcess(proc, port, str(config.get("host", "127.0.0.1")), config_path, log_path)
    proc.kill()
    proc.wait(timeout=5)
    tail = " | ".join(log_path.read_text(errors="replace").strip().splitlines()[-5:])
    raise SandboxError(f"the Realtime-compatible server did not become ready within {timeout:.0f} s: {tail}")
