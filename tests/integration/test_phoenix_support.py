"""Shared plumbing for the Phoenix client, probe and subscription integration tests (no tests here).

* :class:`Silent`: a TCP listener that accepts connections and never answers (a hung endpoint).
* :func:`closed_port`: a port nothing listens on.
* :class:`Lab`: a throwaway PostgreSQL cluster bootstrapped like the supabase image (with the rtbook
  probe installed, as a user who ran ``rtbook probe install --yes``), plus the sandbox's
  Realtime-compatible server, reached directly with the tenant's Host header.
Secrets are fresh canaries; tests assert that none reaches an output.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import jwt

from rtbook.results import Report
from rtbook.target import Target
from tests.integration.sandbox_support import cluster_and_server

TENANT = "realtime-dev"
TENANT_HOST = "realtime-dev.localhost"


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


class Silent:
    """Accepts TCP connections on 127.0.0.1 and never sends a byte (until stopped)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted.append(conn)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for c in self.accepted:
            c.close()
        self.sock.close()

    def __enter__(self) -> Silent:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def make_token(secret: str, role: str, ttl: int = 3600, **claims: Any) -> str:
    payload = {"role": role, "exp": int(time.time()) + ttl, "iss": "rtbook-test", **claims}
    return jwt.encode(payload, secret, algorithm="HS256")


class Lab:
    """A PostgreSQL cluster and the Realtime-compatible server, with canary secrets."""

    def __init__(self, wal_level: str = "logical", probe: bool = True, env: dict[str, str] | None = None) -> None:
        self.jwt_secret = "CANARY-jwt-" + secrets.token_hex(16)
        self.anon_key = make_token(self.jwt_secret, "anon")
        self.service_key = make_token(self.jwt_secret, "service_role")
        self._running = contextlib.ExitStack()
        self.cluster, self.server = self._running.enter_context(cluster_and_server(
            self.jwt_secret,
            lambda cluster: {
                "db": f"host=127.0.0.1 port={cluster.port} user=supabase_admin dbname=postgres",
                "db_enc_key": "supabaserealtime",
                "api_jwt_secret": self.jwt_secret,
                "metrics_jwt_secret": self.jwt_secret,
            },
            wal_level=wal_level,
            probe=probe,
            env=env,
            kept_out_of_the_log=(self.jwt_secret, self.anon_key, self.service_key),
        ))

    @property
    def canaries(self) -> tuple[str, ...]:
        return (self.jwt_secret, self.anon_key, self.service_key, self.cluster.password.reveal())

    @property
    def realtime_url(self) -> str:
        return self.server.url()

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            "ANON_KEY": self.anon_key,
            "SERVICE_ROLE_KEY": self.service_key,
            "JWT_SECRET": self.jwt_secret,
            "API_JWT_SECRET": self.jwt_secret,
            "POSTGRES_PASSWORD": self.cluster.password.reveal(),
        }
        env.update(extra)
        return env

    def target(self, **kwargs: Any) -> Target:
        kwargs.setdefault("realtime_url", self.realtime_url)
        kwargs.setdefault("realtime_host", TENANT_HOST)
        kwargs.setdefault("db_url", self.cluster.url())
        kwargs.setdefault("timeout", 5.0)
        kwargs.setdefault("tables", ("public.todos",))
        env = kwargs.pop("env", None) or self.env()
        return Target(name="h5-lab", env=env, **kwargs)

    def sql(self, statement: str) -> None:
        self.cluster.execute(statement)

    def close(self) -> None:
        """Stop the server and the cluster; then no canary may be in the server's log."""
        self._running.close()


def lab_fixture(env: dict[str, str] | None = None) -> Iterator[Lab]:
    lab = Lab(env=env)
    try:
        yield lab
    finally:
        lab.close()


def assert_no_canary(report: Report | Any, canaries: tuple[str, ...]) -> None:
    """No canary secret appears in any rendering of ``report`` (text, JSON, HTML, JUnit)."""
    if isinstance(report, Report):
        blobs = [str(report), report.to_json(), report._repr_html_(), report.to_junit()]
    else:
        blobs = [json.dumps(report, default=str), str(report)]
    for blob in blobs:
        for canary in canaries:
            assert canary not in blob, f"secret leaked: {canary[:10]}..."
