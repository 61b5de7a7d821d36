"""A whole sandbox (rtbook.sandbox.manager) in a home of its own, for the tests that run checks against it."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import psycopg

from rtbook.target import Target
from tests.conftest import have_postgres, require

if TYPE_CHECKING:
    from rtbook.sandbox import PostgresCluster
    from rtbook.sandbox.server_process import ServerProcess

TABLES = ("public.todos",)


class Running:
    """A started sandbox and a target for it."""

    def __init__(self, breaks: tuple[str, ...] = (), timeout: float = 4.0, probe: bool = True, *,
                 realtime_version: str | None = None, server_env: dict[str, str] | None = None) -> None:
        from rtbook.sandbox.manager import Sandbox

        self.timeout = timeout
        self.home = Path(tempfile.mkdtemp(prefix="rtbook-sbx-"))
        # Traversable by the postgres user, as which PostgreSQL runs when the tests run as root.
        self.home.chmod(0o755)
        self.sandbox = Sandbox(breaks=breaks, home=self.home, probe=probe, realtime_version=realtime_version,
                               server_env=server_env)
        try:
            self.state = self.sandbox.__enter__()
        except BaseException:
            # up() stops what it started; the home is ours to remove.
            shutil.rmtree(self.home, ignore_errors=True)
            raise

    def target(self, **kwargs: Any) -> Target:
        kwargs.setdefault("tables", TABLES)
        kwargs.setdefault("timeout", self.timeout)
        return Target.from_sandbox(self.home / "sandbox" / "state.json", **kwargs)

    def env(self) -> dict[str, str]:
        out = {}
        for line in Path(self.state.stack_dir, ".env").read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and not key.lstrip().startswith("#"):
                out[key.strip()] = value.strip().strip('"')
        return out

    def secrets(self) -> list[str]:
        """The stack's secrets; each must be set, so a no-leak assertion over them cannot pass vacuously."""
        env = self.env()
        found = [env.get(k, "") for k in ("JWT_SECRET", "ANON_KEY", "SERVICE_ROLE_KEY", "POSTGRES_PASSWORD")]
        assert all(found), "the sandbox's .env lacks a secret the no-leak assertions look for"
        return found

    def sql(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run SQL in the sandbox's database as supabase_admin (outside any sandbox switch)."""
        url = urlsplit(self.state.db_url)
        with psycopg.connect(host=url.hostname, port=url.port, user=url.username, dbname=url.path.lstrip("/"),
                             password=self.env()["POSTGRES_PASSWORD"], connect_timeout=5, autocommit=True) as conn:
            cur = conn.execute(statement, params)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []

    def close(self) -> None:
        try:
            self.sandbox.__exit__(None, None, None)
        finally:
            shutil.rmtree(self.home, ignore_errors=True)


@contextlib.contextmanager
def start(breaks: tuple[str, ...] = (), timeout: float = 4.0, probe: bool = True, *,
          realtime_version: str | None = None, server_env: dict[str, str] | None = None) -> Iterator[Running]:
    """A running sandbox, stopped and removed on leaving (also when the test fails).

    ``probe``: the sandbox installs the rtbook probe (as a user who ran ``rtbook probe install --yes``).
    """
    require(have_postgres(), "PostgreSQL 15 binaries with wal2json are not installed")
    running = Running(breaks, timeout, probe, realtime_version=realtime_version, server_env=server_env)
    logs: dict[str, str] = {}
    try:
        secrets = running.secrets()
        yield running
    finally:
        try:
            logs = {name: Path(path).read_text(errors="replace") for name, path in running.state.logs.items()
                    if name in ("realtime", "gateway") and Path(path).exists()}
        finally:
            running.close()
    # Checked after the clean-up, so a leak found here leaves no process or directory behind.
    for name, text in logs.items():
        assert not [s for s in secrets if s in text], f"a secret of the stack reached the sandbox's {name} log"


@contextlib.contextmanager
def cluster_and_server(
    jwt_secret: str,
    config: Callable[[PostgresCluster], dict[str, Any]],
    *,
    setup_sql: tuple[str, ...] = (),
    kept_out_of_the_log: tuple[str, ...] = (),
    wal_level: str = "logical",
    probe: bool = False,
    env: dict[str, str] | None = None,
    realtime_version: str | None = None,
) -> Iterator[tuple[PostgresCluster, ServerProcess]]:
    """A bootstrapped PostgreSQL 15 cluster and the Realtime-compatible server on it, both stopped on leaving.

    ``env`` is the server's extra environment (e.g. ``CHANNEL_ERROR_BACKOFF_MS`` where a test is not about the
    delay); ``realtime_version`` bootstraps and runs the server as that image tag (default: the server's).
    After the clean-up, the server's log must hold none of ``kept_out_of_the_log`` nor the cluster's password.
    """
    from rtbook.sandbox import PostgresCluster, bootstrap
    from rtbook.sandbox.server_process import start_server

    require(have_postgres(), "PostgreSQL 15 binaries with wal2json are not installed")
    cluster = PostgresCluster(wal_level=wal_level)
    cluster.start()
    workdir = Path(tempfile.mkdtemp(prefix="rtbook-srv-"))
    server: ServerProcess | None = None
    log = ""
    try:
        from rtbook.sandbox.server_version import NEWEST_READ

        version = realtime_version or NEWEST_READ
        bootstrap(cluster, jwt_secret=jwt_secret, realtime_version=version, probe=probe)
        for statement in setup_sql:
            cluster.execute(statement)
        server = start_server({"realtime_version": version, **config(cluster)}, workdir=workdir,
                              db_password=cluster.password, extra_env=env)
        yield cluster, server
    finally:
        try:
            if server is not None:
                server.stop()
                log = server.log_text()
        finally:
            cluster.stop()
            shutil.rmtree(workdir, ignore_errors=True)
    # Checked after the clean-up, so a leak found here leaves no process or directory behind.
    for secret in (*kept_out_of_the_log, cluster.password.reveal()):
        assert secret not in log, "a secret reached the server log"


# What Realtime's tenant migrations create for private channels (supabase/realtime v2.129.8
# priv/repo/tenant_schema/realtime/tables/messages.sql and functions/topic.sql, research notes §5),
# which the sandbox's stand-in does not run (notes §10 item 17), plus the SELECT and INSERT policies
# that realtime.private's remedy shows for its probe topic. Idempotent.
PRIVATE_CHANNELS_SQL = """
CREATE SCHEMA IF NOT EXISTS realtime;
CREATE TABLE IF NOT EXISTS realtime.messages (
    topic text NOT NULL, extension text NOT NULL, payload jsonb, event text, private boolean DEFAULT false,
    updated_at timestamp NOT NULL DEFAULT now(), inserted_at timestamp NOT NULL DEFAULT now(),
    id uuid NOT NULL DEFAULT gen_random_uuid(), PRIMARY KEY (id, inserted_at)
) PARTITION BY RANGE (inserted_at);
CREATE TABLE IF NOT EXISTS realtime.messages_rtbook_default PARTITION OF realtime.messages DEFAULT;
ALTER TABLE realtime.messages ENABLE ROW LEVEL SECURITY;
GRANT USAGE ON SCHEMA realtime TO anon, authenticated, service_role;
GRANT SELECT, INSERT, UPDATE ON realtime.messages TO anon, authenticated, service_role;
CREATE OR REPLACE FUNCTION realtime.topic() RETURNS text LANGUAGE sql STABLE
    AS $$ select nullif(current_setting('realtime.topic', true), '')::text $$;
DROP POLICY IF EXISTS "authenticated reads rtbook-private-probe" ON realtime.messages;
CREATE POLICY "authenticated reads rtbook-private-probe" ON realtime.messages FOR SELECT TO authenticated
    USING (realtime.topic() = 'rtbook-private-probe' AND realtime.messages.extension IN ('broadcast', 'presence'));
DROP POLICY IF EXISTS "authenticated writes rtbook-private-probe" ON realtime.messages;
CREATE POLICY "authenticated writes rtbook-private-probe" ON realtime.messages FOR INSERT TO authenticated
    WITH CHECK (realtime.topic() = 'rtbook-private-probe'
                AND realtime.messages.extension IN ('broadcast', 'presence'));
"""
