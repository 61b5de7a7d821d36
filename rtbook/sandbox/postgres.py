"""A throwaway PostgreSQL 15 cluster for the sandbox and the tests.

The cluster is created with the Debian binaries (``/usr/lib/postgresql/15/bin``, override with
``RTBOOK_PG_BIN``), listens on 127.0.0.1 on a free port with SCRAM password authentication and
on a Unix socket in its own directory with ``trust``, and runs with ``wal_level=logical`` so the
wal2json slot used by postgres_changes works. When rtbook runs as root, the server runs as the
``postgres`` OS user (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg.conninfo import make_conninfo

from rtbook.deadline import wait_until
from rtbook.exceptions import SandboxError
from rtbook.secrets import Secret

__all__ = ["DEFAULT_PG_BIN", "PostgresCluster", "free_port", "pg_bin"]

DEFAULT_PG_BIN = "/usr/lib/postgresql/15/bin"
_OS_USER = "postgres"


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def pg_bin() -> Path:
    """The directory holding ``initdb``/``pg_ctl`` (``RTBOOK_PG_BIN`` or the Debian default)."""
    return Path(os.environ.get("RTBOOK_PG_BIN", DEFAULT_PG_BIN))


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _has_setting(name: str) -> bool:
    """True when this server build knows the configuration parameter ``name``."""
    try:
        out = subprocess.run(
            [str(pg_bin() / "postgres"), "--describe-config"],
            capture_output=True, text=True, timeout=20, check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return any(line.split("\t", 1)[0] == name for line in out.splitlines())


class PostgresCluster:
    """A temporary PostgreSQL cluster; ``start()`` creates it, ``stop()`` removes it.

    The bootstrap superuser is ``supabase_admin`` (as in the supabase/postgres image) with the
    generated ``password``. Use :func:`rtbook.sandbox.bootstrap.bootstrap` to add the roles,
    schemas and demo table Realtime expects.
    """

    host = "127.0.0.1"
    superuser = "supabase_admin"

    def __init__(
        self,
        base_dir: Path | None = None,
        *,
        port: int | None = None,
        wal_level: str = "logical",
        password: str | None = None,
        max_replication_slots: int = 10,
        max_wal_senders: int = 10,
    ) -> None:
        if wal_level not in ("minimal", "replica", "logical"):
            raise SandboxError(f"wal_level must be minimal, replica or logical, got {wal_level!r}")
        self._own_base = base_dir is None
        self._base_arg = base_dir
        self.base_dir: Path | None = None
        self.port: int = port or 0
        self._fixed_port = port is not None
        self.wal_level = wal_level
        self.password = Secret(password or secrets.token_urlsafe(18), "POSTGRES_PASSWORD")
        self.max_replication_slots = max_replication_slots
        self.max_wal_senders = max_wal_senders
        self._started = False
        self._as_root = os.geteuid() == 0
        self._atexit_registered = False

    # -- paths --------------------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory."""
        return self._base() / "data"

    @property
    def socket_dir(self) -> Path:
        """The directory holding the Unix socket (``host=`` for local trust connections)."""
        return self._base()

    @property
    def log_file(self) -> Path:
        """The server log."""
        return self._base() / "postgres.log"

    def _base(self) -> Path:
        if self.base_dir is None:
            raise SandboxError("the cluster has not been started; call start() first")
        return self.base_dir

    @property
    def running(self) -> bool:
        """True between a successful start() and stop()."""
        return self._started

    # -- lifecycle ----------------------------------------------------------------------------

    def _cmd(self, argv: list[str]) -> list[str]:
        # PostgreSQL refuses to run as root; drop to the postgres OS user in that case.
        return ["runuser", "-u", _OS_USER, "--", *argv] if self._as_root else argv

    def _run(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                self._cmd(argv), capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise SandboxError(f"{Path(argv[0]).name} did not finish within {timeout:.0f} s") from exc
        except FileNotFoundError as exc:
            raise SandboxError(
                f"cannot run {argv[0]}: {exc.strerror}; install postgresql-15 or set RTBOOK_PG_BIN"
            ) from exc

    def start(self, timeout: float = 30) -> None:
        """Create the cluster (initdb), configure it and start the server; wait until it accepts connections.

        Raises:
            SandboxError: binaries missing, initdb or the server failed (the log tail is included).
        """
        if self._started:
            return
        binary = pg_bin()
        if not (binary / "initdb").exists():
            raise SandboxError(
                f"initdb not found in {binary}; install postgresql-15 (Debian) or set RTBOOK_PG_BIN"
            )
        if self._own_base:
            self.base_dir = Path(tempfile.mkdtemp(prefix="rtbook-pg-"))
        else:
            assert self._base_arg is not None
            self.base_dir = self._base_arg
            self.base_dir.mkdir(parents=True, exist_ok=True)
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise SandboxError(f"{self.data_dir} already holds a cluster; pass an empty --dir or remove it")
        if not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True
        try:
            self._initdb(binary, timeout)
            self._configure()
            self._start_server(binary, timeout)
        except BaseException:
            self._teardown(binary)
            raise
        self._started = True

    def _chown(self, path: Path) -> None:
        if self._as_root:
            entry = pwd.getpwnam(_OS_USER)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _initdb(self, binary: Path, timeout: float) -> None:
        base = self._base()
        base.chmod(0o700)
        self._chown(base)
        pwfile = base / ".pwfile"
        pwfile.write_text(self.password.reveal() + "\n")
        pwfile.chmod(0o600)
        self._chown(pwfile)
        try:
            result = self._run(
                [
                    str(binary / "initdb"),
                    "-D", str(self.data_dir),
                    "-U", self.superuser,
                    f"--pwfile={pwfile}",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
                timeout,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise SandboxError(f"initdb failed (exit {result.returncode}): {result.stderr.strip()[-800:]}")

    def _configure(self) -> None:
        if not self.port:
            self.port = free_port(self.host)
        settings = {
            "listen_addresses": f"'{self.host}'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "wal_level": self.wal_level,
            "max_replication_slots": str(self.max_replication_slots),
            "max_wal_senders": str(self.max_wal_senders if self.wal_level != "minimal" else 0),
            "password_encryption": "'scram-sha-256'",
            # A throwaway cluster: durability is not worth the I/O on a shared CI box.
            "fsync": "off",
            "full_page_writes": "off",
            "max_connections": "200",
            "shared_buffers": "64MB",
            "log_min_messages": "warning",
            "timezone": "'UTC'",
        }
        if _has_setting("output_plugin_libraries"):
            # Some patched builds (Debian 15.20) only allow listed decoding plugins, even for superusers;
            # Realtime's CDC slot uses wal2json.
            settings["output_plugin_libraries"] = "'pgoutput, test_decoding, wal2json'"
        conf = self.data_dir / "postgresql.conf"
        with conf.open("a") as fh:
            fh.write("\n# rtbook sandbox\n")
            for key, value in settings.items():
                fh.write(f"{key} = {value}\n")

    def _start_server(self, binary: Path, timeout: float) -> None:
        log = self.log_file
        log.touch()
        self._chown(log)
        result = self._run(
            [
                str(binary / "pg_ctl"),
                "-D", str(self.data_dir),
                "-l", str(log),
                "-w", "-t", str(int(timeout)),
                "start",
            ],
            timeout + 5,
        )
        if result.returncode != 0:
            tail = log.read_text(errors="replace").strip().splitlines()[-8:] if log.exists() else []
            hint = " (port in use?)" if any("could not bind" in line for line in tail) else ""
            raise SandboxError(
                f"PostgreSQL did not start on {self.host}:{self.port}{hint}: " + " | ".join(tail)
            )
        last: list[Exception] = []

        def accepts() -> bool:
            try:
                with psycopg.connect(self.conninfo(self.superuser), connect_timeout=3):
                    return True
            except psycopg.OperationalError as exc:
                last[:] = [exc]
                return False

        if not wait_until(accepts, timeout, interval=0.1):
            raise SandboxError(f"PostgreSQL on {self.host}:{self.port} did not accept connections: "
                               f"{last[0] if last else 'no answer'}")

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove the data directory. Safe to call twice."""
        if self.base_dir is None:
            return
        self._teardown(pg_bin())
        self._started = False

    def _teardown(self, binary: Path) -> None:
        base = self.base_dir
        if base is None:
            return
        postmaster = self._postmaster_pid()
        if (self.data_dir / "postmaster.pid").exists():
            with contextlib.suppress(SandboxError, OSError, subprocess.SubprocessError):
                argv = [str(binary / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "20", "stop"]
                self._run(argv, 25)
        # A server stopped while it was still starting (a signal during 'pg_ctl start') may not answer
        # pg_ctl; it must not outlive the sandbox, nor write into the folder while it is removed.
        if postmaster is not None and _alive(postmaster) and self._is_ours(postmaster):
            with contextlib.suppress(OSError):
                os.kill(postmaster, 9)
            wait_until(lambda: not _alive(postmaster), 5, interval=0.05)
        target = base if self._own_base else self.data_dir
        for _ in range(3):  # a file the server wrote while it went down can make one pass miss it
            shutil.rmtree(target, ignore_errors=True)
            if not target.exists():
                break
        self.base_dir = None

    def _is_ours(self, pid: int) -> bool:
        """Whether ``pid`` is a postgres serving this cluster's data directory (never another process)."""
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return bool(argv) and argv[0].endswith(b"postgres") and str(self.data_dir).encode() in argv

    def _postmaster_pid(self) -> int | None:
        """The server's pid from its postmaster.pid (None when there is none or it cannot be read)."""
        try:
            first = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0].strip()
        except OSError:
            return None
        return int(first) if first.isdigit() else None

    def __enter__(self) -> PostgresCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- connecting ---------------------------------------------------------------------------

    def url(
        self,
        user: str = "supabase_admin",
        db: str = "postgres",
        *,
        with_password: bool = False,
        driver: str = "postgresql+psycopg",
    ) -> str:
        """A SQLAlchemy-style URL; the password is only included when ``with_password`` is set."""
        auth = quote(user, safe="")
        if with_password:
            auth += ":" + quote(self.password.reveal(), safe="")
        return f"{driver}://{auth}@{self.host}:{self.port}/{quote(db, safe='')}"

    def conninfo(self, user: str = "supabase_admin", db: str = "postgres") -> str:
        """A libpq conninfo string over TCP, including the password (for internal use only)."""
        return make_conninfo(
            host=self.host,
            port=str(self.port),
            user=user,
            dbname=db,
            password=self.password.reveal(),
            connect_timeout="5",
        )

    def socket_conninfo(self, user: str = "supabase_admin", db: str = "postgres") -> str:
        """A conninfo over the Unix socket (trust authentication, no password)."""
        return make_conninfo(host=str(self.socket_dir), port=str(self.port), user=user, dbname=db, connect_timeout="5")

    def connect(
        self, user: str = "supabase_admin", db: str = "postgres", *, autocommit: bool = True
    ) -> psycopg.Connection[tuple[Any, ...]]:
        """Open a psycopg connection over TCP with the cluster password."""
        return psycopg.connect(self.conninfo(user, db), autocommit=autocommit)

    def execute(self, sql: str, user: str = "supabase_admin", db: str = "postgres") -> None:
        """Run one or more SQL statements in autocommit mode."""
        with self.connect(user, db) as conn:
            conn.execute(sql.encode())  # bytes: no parameter parsing, several statements allowed

    def __repr__(self) -> str:
        state = "running" if self._started else "stopped"
        return f"PostgresCluster({self.host}:{self.port}, wal_level={self.wal_level}, {state})"
