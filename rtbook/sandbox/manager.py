"""Start, describe and stop the embedded sandbox (``rtbook sandbox up|status|down``).

``up`` starts, on free 127.0.0.1 ports: a throwaway PostgreSQL 15 cluster (bootstrapped like the
supabase/postgres image plus the seeded tenant), the Realtime-compatible server and the
Kong-compatible gateway, writes the stack directory and records everything in the state file
(``rtbook.target.sandbox_state_path()``, under ``$RTBOOK_HOME``). The children run in their own
sessions, so they outlive the ``rtbook sandbox up`` command; ``down`` stops them by pid.

Each sandbox is an *instance* with a name (``default`` unless told otherwise) and a folder of its
own (state file, stack directory, run directory; the cluster has its own temp directory), so two
sandboxes run side by side on their own ports. ``up`` without a name takes the first free one of
``default``, ``sandbox-2``, ``sandbox-3``...; an exclusive lock per name (``sandbox/locks/<name>.lock``,
held while ``up`` or ``down`` works on it, released by the kernel if the process dies) keeps two
commands from starting or removing the same instance at once.

Secrets reach the children through environment variables or 0600 files, never argv. On any
failure ``up`` stops what it started and raises :class:`SandboxError` with one line saying why.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from psycopg.conninfo import make_conninfo

from rtbook.deadline import wait_until
from rtbook.exceptions import ConfigError, RtbookError, SandboxError
from rtbook.interrupt import shielded
from rtbook.sandbox import cluster as cl
from rtbook.sandbox import scenarios as sc
from rtbook.sandbox.server_version import parse_version
from rtbook.sandbox.stackdir import (
    REALTIME_HOST,
    _compose_files,
    _environment,
    compose_hosts,
    generate_secrets,
    interpolate,
    kong_environment,
    kong_image_version,
    load_compose,
    read_env,
    realtime_image_version,
    write_stack_dir,
)
from rtbook.target import DEFAULT_SANDBOX, sandbox_state_path

__all__ = ["Sandbox", "SandboxState", "down", "instances", "reload_gateway", "status", "up"]

TENANT = "realtime-dev"
_CHILDREN: dict[int, subprocess.Popen[str]] = {}


@dataclass
class SandboxState:
    """What ``up`` recorded: endpoints (no passwords), pids and paths."""

    stack_dir: str
    gateway_url: str
    realtime_url: str
    realtime_host: str
    db_url: str
    tenant: str
    pids: dict[str, int]
    data_dir: str
    breaks: list[str] = field(default_factory=list)
    owns_stack_dir: bool = True
    run_dir: str = ""
    logs: dict[str, str] = field(default_factory=dict)
    # The sandbox's application tables: the live checks watch these unless the user names others,
    # so a scenario that empties the publication is seen as the missing table it is.
    tables: list[str] = field(default_factory=lambda: ["public.todos"])
    # Whether the rtbook probe (rtbook_probe.events) was installed at start: the live checks then prove delivery.
    probe: bool = False
    # The Realtime image tag the stand-in behaves as (the stack's compose tag unless --realtime-version).
    realtime_version: str = ""
    # The instance's name, and who started it: "" for 'rtbook sandbox up', "rtbook run" for a run's own
    # sandbox (another run never reuses that one: its owner stops it when it ends).
    name: str = DEFAULT_SANDBOX
    owner: str = ""
    owner_pid: int = 0
    # --nodes/--lb: every node's name and URLs, and the load balancer (kind, url, config); empty for one bare node.
    nodes: list[dict[str, str]] = field(default_factory=list)
    lb: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        """The state as written to the state file."""
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> SandboxState:
        """Read a state file's content."""
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def _state_file(home: str | Path | None, name: str | None = None) -> Path:
    return sandbox_state_path(name, home=home)


def _home(home: str | Path | None, name: str | None = None) -> Path:
    """The instance's folder: ``sandbox/`` for ``default``, ``sandbox/instances/<name>/`` otherwise."""
    return _state_file(home, name).parent


def _name(name: str | None) -> str:
    """The instance ``name`` addresses: itself, else ``$RTBOOK_SANDBOX``, else ``default`` (validated)."""
    chosen = name or os.environ.get("RTBOOK_SANDBOX") or DEFAULT_SANDBOX
    sandbox_state_path(chosen, home="/")  # raises ConfigError for a name that cannot be a folder name
    return chosen


def _lock_file(home: str | Path | None, name: str) -> Path:
    # Next to the instances, not inside one: down removes an instance's folder while holding its lock.
    return _state_file(home, DEFAULT_SANDBOX).parent / "locks" / f"{name}.lock"


def _lock(path: Path, wait: float) -> int | None:
    """An exclusive lock on ``path`` (its open fd), or None when another process holds it for ``wait`` s."""
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.1)
            continue
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        # The holder removed the file before we got the lock (its instance is gone): lock the new one.
        os.close(fd)


def _unlock(fd: int, path: Path, *, remove: bool = False) -> None:
    if remove:
        path.unlink(missing_ok=True)
    os.close(fd)  # closing releases the flock


@contextlib.contextmanager
def _instance_locked(home: str | Path | None, name: str, wait: float) -> Iterator[None]:
    path = _lock_file(home, name)
    fd = _lock(path, wait)
    if fd is None:
        raise ConfigError(f"sandbox {name!r} is being started or stopped by another rtbook command; "
                          "wait for it, or pass another --name")
    gone = False
    try:
        yield
        gone = name != DEFAULT_SANDBOX and not _state_file(home, name).exists()
    finally:
        _unlock(fd, path, remove=gone)


def instances(*, home: str | Path | None = None) -> list[str]:
    """The names of the sandbox instances that have a state file (running or not)."""
    found = [DEFAULT_SANDBOX] if _state_file(home, DEFAULT_SANDBOX).exists() else []
    folder = _home(home, DEFAULT_SANDBOX) / "instances"
    with contextlib.suppress(OSError):
        found += sorted(p.parent.name for p in folder.glob("*/state.json"))
    return found


def _pid_alive(pid: int) -> bool:
    proc = _CHILDREN.get(pid)
    if proc is not None:
        return proc.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # A zombie is dead for our purposes (its parent has not reaped it yet).
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _stop_pid(pid: int, expect: str, sig: signal.Signals = signal.SIGTERM, timeout: float = 10) -> None:
    """Signal ``pid`` (only if its command line mentions ``expect``), wait, then SIGKILL."""
    if not _pid_alive(pid):
        return
    if expect not in _cmdline(pid):
        return  # the pid was reused by another program: leave it alone
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    if not wait_until(lambda: not _pid_alive(pid), timeout):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not _pid_alive(pid), 5)
    proc = _CHILDREN.pop(pid, None)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=1)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


@dataclass
class _Child:
    proc: subprocess.Popen[str]
    found: list[int]
    log_path: Path
    what: str
    port_hint: int = 0


def _launch(argv: list[str], *, env: dict[str, str], log_path: Path, what: str) -> _Child:
    """Start a child that will print ``READY <port>`` (read by a thread)."""
    full_env = dict(os.environ)
    full_env.update(env)
    full_env["PYTHONUNBUFFERED"] = "1"
    with log_path.open("w") as log_fh:
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=log_fh, stdin=subprocess.DEVNULL, text=True, env=full_env,
            start_new_session=True,
        )
    _CHILDREN[proc.pid] = proc
    child = _Child(proc, [], log_path, what)

    def reader() -> None:
        assert proc.stdout is not None
        with contextlib.suppress(ValueError, OSError):
            for line in proc.stdout:
                if line.startswith("READY "):
                    with contextlib.suppress(ValueError, IndexError):
                        child.found.append(int(line.split()[1]))
                    return

    threading.Thread(target=reader, daemon=True).start()
    return child


def _await_ready(child: _Child, timeout: float) -> tuple[int, int]:
    """(pid, port) once the child printed READY; otherwise kill it and raise SandboxError with its last log line."""
    proc = child.proc
    wait_until(lambda: bool(child.found), timeout, stop=lambda: proc.poll() is not None)
    if child.found:
        return proc.pid, child.found[0]
    if proc.poll() is None:
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
    _CHILDREN.pop(proc.pid, None)
    lines = [ln for ln in child.log_path.read_text(errors="replace").strip().splitlines() if ln.strip()]
    tail = lines[-1].strip() if lines else "no output"
    state = f"exited with {proc.returncode}" if proc.returncode is not None else f"not ready after {timeout:.0f} s"
    raise SandboxError(f"the {child.what} {state}: {tail[-300:]} (log: {child.log_path})")


def _postmaster_pid(data_dir: Path) -> int:
    try:
        return int((data_dir / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return 0


def up(
    dir: str | Path | None = None,
    breaks: Sequence[str] = (),
    timeout: float = 60,
    *,
    home: str | Path | None = None,
    probe: bool = True,
    realtime_version: str | None = None,
    server_env: Mapping[str, str] | None = None,
    name: str | None = None,
    owner: str = "",
    nodes: int = 1,
    lb: str | None = None,
) -> SandboxState:
    """Start a sandbox instance and return its state (also written to its state file).

    Args:
        dir: where to write the stack directory (default: ``stack`` in the instance's folder,
            ``$RTBOOK_HOME/sandbox/stack`` for ``default``; removed by ``down``).
        breaks: break scenario names (see :data:`rtbook.sandbox.scenarios.SCENARIOS`).
        timeout: seconds each part may take to become ready.
        home: use ``home/sandbox/`` instead of ``$RTBOOK_HOME/sandbox/`` (for tests).
        probe: install the rtbook probe before the server starts (unless a scenario says otherwise), as a
            user who ran ``rtbook probe install --yes`` would have; without it the live checks write nothing.
        realtime_version: the Realtime image tag the stand-in behaves as (e.g. ``2.78.19``); the stack's
            compose file is rewritten to name that tag. Default: the tag the bundled compose names.
        server_env: extra environment for the Realtime-compatible server, e.g. ``CONNECT_ERROR_BACKOFF_MS``
            (see :mod:`rtbook.sandbox.server_version`).
        name: the instance's name. Default: ``$RTBOOK_SANDBOX`` if set, else the first free one of
            ``default``, ``sandbox-2``, ``sandbox-3``... (a name taken by a running or starting sandbox
            is skipped, so two ``up`` at once both succeed).
        owner: who started it (``rtbook run`` for a run's own sandbox; empty for ``rtbook sandbox up``).
        nodes: how many Realtime nodes (each with its own gateway), clustered, sharing the database.
        lb: ``nginx``, ``haproxy`` or ``caddy``: a real load balancer in front of the gateways, whose URL
            becomes ``gateway_url`` (see :mod:`rtbook.sandbox.cluster`).

    Raises:
        SandboxError: a part did not start (the message says which and why); nothing is left running.
        ConfigError: an unknown scenario or bad name, or the named sandbox is already running or starting.
    """
    chosen = sc.resolve(breaks)
    spec = cl.spec_for(nodes, lb, chosen) if (nodes != 1 or lb is not None or any(s.needs_cluster for s in chosen)) \
        else None
    if realtime_version is not None:
        realtime_version = ".".join(str(p) for p in parse_version(realtime_version))
    explicit = name or os.environ.get("RTBOOK_SANDBOX")
    candidates = [_name(explicit)] if explicit else [DEFAULT_SANDBOX] + [f"sandbox-{i}" for i in range(2, 100)]
    for candidate in candidates:
        path = _lock_file(home, candidate)
        fd = _lock(path, 0)
        if fd is None:
            if explicit:
                raise ConfigError(f"sandbox {candidate!r} is being started or stopped by another rtbook command; "
                                  "wait for it, or pass another --name")
            continue  # another 'up' is starting this one right now: take the next name
        started = False
        try:
            state_file = _state_file(home, candidate)
            if state_file.exists():
                try:
                    old = status(home=home, name=candidate)
                except RtbookError:
                    old = None
                if old is not None and old.get("running"):
                    if explicit:
                        raise ConfigError(
                            f"sandbox {candidate!r} is already running (state {state_file}); stop it with "
                            f"'rtbook sandbox down{'' if candidate == DEFAULT_SANDBOX else ' --name ' + candidate}'")
                    continue
                _down_locked(home, candidate, timeout=15)  # what a dead sandbox left behind
            state = _up_locked(dir, chosen, timeout, home=home, probe=probe, realtime_version=realtime_version,
                               server_env=server_env, name=candidate, owner=owner, spec=spec)
            started = True
            return state
        finally:
            _unlock(fd, path, remove=not started and candidate != DEFAULT_SANDBOX
                    and not _state_file(home, candidate).exists())
    raise ConfigError(f"every sandbox name from {candidates[0]} to {candidates[-1]} is taken; "
                      "stop some with 'rtbook sandbox down --name NAME'")


# A port chosen free can be taken by another process before our child binds it (two sandboxes
# starting at once pick from the same range): such an up is retried with fresh ports.
_PORT_RETRIES = 3


def _up_locked(
    dir: str | Path | None,
    chosen: Sequence[sc.Scenario],
    timeout: float,
    *,
    home: str | Path | None,
    probe: bool,
    realtime_version: str | None,
    server_env: Mapping[str, str] | None,
    name: str,
    owner: str,
    spec: cl.ClusterSpec | None = None,
) -> SandboxState:
    for attempt in range(1, _PORT_RETRIES + 1):
        try:
            return _start(dir, chosen, timeout, home=home, probe=probe, realtime_version=realtime_version,
                          server_env=server_env, name=name, owner=owner, spec=spec)
        except SandboxError as exc:
            if attempt == _PORT_RETRIES or not _port_clash(str(exc)):
                raise
    raise AssertionError("unreachable")


def _port_clash(message: str) -> bool:
    return any(s in message for s in ("already in use", "Errno 98", "EADDRINUSE", "could not bind"))


def _start(
    dir: str | Path | None,
    chosen: Sequence[sc.Scenario],
    timeout: float,
    *,
    home: str | Path | None,
    probe: bool,
    realtime_version: str | None,
    server_env: Mapping[str, str] | None,
    name: str,
    owner: str,
    spec: cl.ClusterSpec | None = None,
) -> SandboxState:
    state_file = _state_file(home, name)
    base = state_file.parent
    run_dir = base / "run"
    owns_stack = dir is None
    stack_dir = Path(dir) if dir is not None else base / "stack"
    if owns_stack and stack_dir.exists():
        shutil.rmtree(stack_dir, ignore_errors=True)
    if run_dir.exists():
        shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    run_dir.chmod(0o700)
    pids: dict[str, int] = {}
    cluster: Any = None
    try:
        from rtbook.sandbox.postgres import PostgresCluster, free_port

        values = generate_secrets()
        # The cluster lives in its own temporary directory: when we run as root, PostgreSQL runs as the
        # postgres user, who cannot enter a private $RTBOOK_HOME (e.g. under /root).
        cluster = PostgresCluster(wal_level=sc.wal_level_for(chosen), password=values["POSTGRES_PASSWORD"])
        cluster.start(timeout=timeout)
        # Outlive this process: down() stops the cluster by pid, not the atexit hook.
        atexit.unregister(cluster.stop)
        pids["postgres"] = _postmaster_pid(cluster.data_dir)
        gateway_port = free_port()
        write_stack_dir(stack_dir, values, gateway_port=gateway_port, db_port=cluster.port)
        if realtime_version is not None:
            _pin_realtime_image(stack_dir, realtime_version)
        sc.apply_stack(stack_dir, chosen)
        version = realtime_image_version(stack_dir)
        with_probe = probe and all(s.probe for s in chosen)
        _bootstrap(cluster, values, version, chosen, with_probe)
        started: cl.Started | None = None
        if spec is not None:
            def start_node(i: int) -> tuple[_Child, _Child]:
                suffix = "" if i == 1 else f"-{i}"
                srv = _start_server(cluster, values, run_dir, free_port(), version, server_env or {},
                                    suffix=suffix, extra=spec.server_extra(i))
                gw = _start_gateway(stack_dir, run_dir, gateway_port if i == 1 else free_port(), srv.port_hint,
                                    suffix=suffix)
                return srv, gw

            started = cl.start(spec, start_node, _await_ready, run_dir, timeout, pids)
            public_url, realtime_url = started.public_url, started.realtime_url
        else:
            # Both children start at once (each pays ~1 s of Python imports); the server's port is chosen here
            # so the gateway's host map can name it before the server is up.
            server = _start_server(cluster, values, run_dir, free_port(), version, server_env or {})
            pids["realtime"] = server.proc.pid
            gateway = _start_gateway(stack_dir, run_dir, gateway_port, server.port_hint)
            pids["gateway"] = gateway.proc.pid
            _, server_port = _await_ready(server, timeout)
            if server_port != server.port_hint:
                raise SandboxError(f"the Realtime-compatible server listens on {server_port}, not the port "
                                   f"{server.port_hint} the gateway was given")
            _, gateway_port = _await_ready(gateway, timeout)
            public_url, realtime_url = f"http://127.0.0.1:{gateway_port}", f"http://127.0.0.1:{server_port}"
        state = SandboxState(
            stack_dir=str(stack_dir.resolve()),
            gateway_url=public_url,
            realtime_url=realtime_url,
            realtime_host=REALTIME_HOST,
            db_url=f"postgresql://supabase_admin@127.0.0.1:{cluster.port}/postgres",
            tenant=TENANT,
            pids=pids,
            data_dir=str(cluster.base_dir),
            run_dir=str(run_dir.resolve()),
            breaks=[s.name for s in chosen],
            owns_stack_dir=owns_stack,
            probe=with_probe,
            logs={"realtime": str(run_dir / "realtime-server.log"), "gateway": str(run_dir / "gateway.log"),
                  "postgres": str(cluster.log_file), **(started.logs if started else {})},
            realtime_version=version,
            name=name,
            owner=owner,
            owner_pid=os.getpid() if owner else 0,
            nodes=started.nodes if started else [],
            lb=started.lb if started else {},
        )
        state_file.parent.mkdir(parents=True, exist_ok=True)
        _write_private(state_file, state.to_json())
        return state
    except BaseException as exc:
        # Also after SIGINT/SIGTERM (raised as KeyboardInterrupt): stop what was started, to the end.
        with shielded():
            # The load balancer first (it was started last), then every node's gateway and server.
            for part in [p for p in pids if p != "postgres"][::-1]:
                _stop_pid(pids[part], cl.process_marker(part), timeout=5)
            if cluster is not None:
                with contextlib.suppress(Exception):
                    cluster.stop()
            shutil.rmtree(run_dir, ignore_errors=True)
            if owns_stack:
                shutil.rmtree(stack_dir, ignore_errors=True)
            if name != DEFAULT_SANDBOX:
                with contextlib.suppress(OSError):
                    base.rmdir()  # the instance's folder, empty again: a failed up leaves no trace
        if isinstance(exc, SandboxError | ConfigError):
            raise
        if isinstance(exc, RtbookError | OSError | ImportError):
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            raise SandboxError(f"sandbox up failed: {first}") from exc
        raise


def _pin_realtime_image(stack_dir: Path, version: str) -> None:
    """Name ``supabase/realtime:v<version>`` in the stack's compose file, so the stack says what the stand-in is."""
    path = stack_dir / "docker-compose.yml"
    text = path.read_text()
    pinned, count = re.subn(r"(image:\s*supabase/realtime:)v?[\w.\-]+", rf"\g<1>v{version}", text)
    if count != 1:
        raise SandboxError(f"cannot find the realtime image line in {path} to pin it to v{version}")
    path.write_text(pinned)


def _bootstrap(cluster: Any, values: dict[str, str], version: str, chosen: Sequence[sc.Scenario],
               probe: bool) -> None:
    from rtbook.sandbox.bootstrap import bootstrap

    try:
        bootstrap(
            cluster, tenant=TENANT, jwt_secret=values["JWT_SECRET"], db_enc_key=values["REALTIME_DB_ENC_KEY"],
            realtime_version=version, probe=probe,
        )
        with cluster.connect() as conn:
            sc.apply_db(conn, sc.DbContext(TENANT, values["REALTIME_DB_ENC_KEY"]), chosen)
    except SandboxError:
        raise
    except Exception as exc:  # psycopg errors: one line is enough to say why
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SandboxError(f"bootstrapping the sandbox database failed: {first}") from exc


def _start_server(cluster: Any, values: dict[str, str], run_dir: Path, port: int, version: str,
                  server_env: Mapping[str, str], *, suffix: str = "", extra: Mapping[str, Any] | None = None) -> _Child:
    config = {
        **(extra or {}),
        "db": make_conninfo(host=cluster.host, port=str(cluster.port), user="supabase_admin", dbname="postgres",
                            connect_timeout="5"),
        "host": "127.0.0.1",
        "port": port,
        "realtime_version": version,
    }
    path = run_dir / f"realtime-server{suffix}.json"
    _write_private(path, json.dumps(config, indent=2))
    env = {
        **server_env,
        "RTBOOK_SANDBOX_DB_PASSWORD": values["POSTGRES_PASSWORD"],
        "RTBOOK_SANDBOX_DB_ENC_KEY": values["REALTIME_DB_ENC_KEY"],
        "RTBOOK_SANDBOX_API_JWT_SECRET": values["JWT_SECRET"],
        "RTBOOK_SANDBOX_METRICS_JWT_SECRET": values["JWT_SECRET"],
    }
    child = _launch([sys.executable, "-m", "rtbook.sandbox.server", str(path)], env=env,
                    log_path=run_dir / f"realtime-server{suffix}.log",
                    what=f"Realtime-compatible server{suffix.replace('-', ' ')}")
    child.port_hint = port
    return child


def _start_gateway(stack_dir: Path, run_dir: Path, port: int, server_port: int, *, suffix: str = "") -> _Child:
    names = compose_hosts(stack_dir)
    hosts: dict[str, str | None] = {
        name: (f"127.0.0.1:{server_port}" if service == "realtime" else None) for name, service in names.items()
    }
    config = {
        "kong_yml": str(stack_dir / "volumes" / "api" / "kong.yml"),
        "env": kong_environment(stack_dir),
        "hosts": hosts,
        "host": "127.0.0.1",
        "port": port,
        # The stand-in answers like the Kong version of the stack's image (texts, headers, routing).
        "kong_version": kong_image_version(stack_dir),
    }
    path = run_dir / f"gateway{suffix}.json"
    _write_private(path, json.dumps(config, indent=2))
    return _launch([sys.executable, "-m", "rtbook.sandbox.gateway", str(path)], env={},
                   log_path=run_dir / f"gateway{suffix}.log", what=f"Kong-compatible gateway{suffix.replace('-', ' ')}")


def _read_state(home: str | Path | None, name: str | None = None) -> SandboxState | None:
    path = _state_file(home, name)
    try:
        return SandboxState.from_mapping(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        raise SandboxError(f"cannot read sandbox state {path}: {exc}; remove it and run 'rtbook sandbox up'") from exc


def status(*, home: str | Path | None = None, name: str | None = None) -> dict[str, Any]:
    """The recorded state of instance ``name`` plus ``running`` (all processes alive) and ``alive`` per process.

    ``name`` defaults to ``$RTBOOK_SANDBOX``, else ``default``. Returns ``{"running": False,
    "state_file": ...}`` when that instance was not started.
    """
    state_file = _state_file(home, name)
    state = _read_state(home, name)
    if state is None:
        return {"running": False, "state_file": str(state_file)}
    alive = {part: _pid_alive(pid) for part, pid in state.pids.items()}
    out = asdict(state)
    out.update(running=all(alive.values()) and bool(alive), alive=alive, state_file=str(state_file))
    return out


def down(*, home: str | Path | None = None, timeout: float = 15, name: str | None = None) -> bool:
    """Stop instance ``name``'s processes, remove its cluster, run directory and state file.

    ``name`` defaults to ``$RTBOOK_SANDBOX``, else ``default``; no other instance is touched. A stack
    directory given with ``--dir`` is kept; the default one is removed. Returns False when that
    instance was not recorded. Waits up to ``timeout`` s for an ``up`` of the same name to finish.
    """
    instance = _name(name)
    with _instance_locked(home, instance, wait=timeout):
        return _down_locked(home, instance, timeout)


def _down_locked(home: str | Path | None, name: str, timeout: float) -> bool:
    state_file = _state_file(home, name)
    state = _read_state(home, name)
    if state is None:
        return False
    # Runs to its end even when SIGINT/SIGTERM arrives meanwhile: half a down leaves PostgreSQL running.
    with shielded():
        # The load balancer first (it was started last), then every node's gateway and server.
        for part in [p for p in state.pids if p != "postgres"][::-1]:
            _stop_pid(state.pids[part], cl.process_marker(part), timeout=timeout)
        if state.pids.get("postgres"):
            # SIGINT is PostgreSQL's fast shutdown.
            _stop_pid(state.pids["postgres"], "postgres", sig=signal.SIGINT, timeout=timeout)
        shutil.rmtree(state.data_dir, ignore_errors=True)
        if state.run_dir:
            shutil.rmtree(state.run_dir, ignore_errors=True)
        if state.owns_stack_dir:
            shutil.rmtree(state.stack_dir, ignore_errors=True)
        state_file.unlink(missing_ok=True)
        if name != DEFAULT_SANDBOX:
            with contextlib.suppress(OSError):
                state_file.parent.rmdir()  # the instance's folder, empty now (a --dir stack lives elsewhere)
    return True


def _stack_tenant(stack_dir: Path) -> str:
    """``SELF_HOST_TENANT_NAME`` of the realtime service in the stack's compose files (later files win)."""
    env = read_env(stack_dir / ".env")
    tenant = TENANT
    for path in _compose_files(stack_dir, env):
        if not path.is_file():
            continue
        service = (load_compose(path).get("services") or {}).get("realtime")
        if isinstance(service, dict) and service.get("environment") is not None:
            named = _environment(service["environment"]).get("SELF_HOST_TENANT_NAME")
            if named:
                tenant = interpolate(named, env)
    return tenant


def reload_gateway(*, home: str | Path | None = None, timeout: float = 30, name: str | None = None) -> SandboxState:
    """Restart the gateway on its port with the stack directory's current files, as ``docker compose up -d`` would.

    For a tenant rename or add: copy the plan's files into the sandbox's stack directory (its own
    copy), then reload. The state records the tenant the stack now seeds (``SELF_HOST_TENANT_NAME``).

    Raises:
        SandboxError: no sandbox is running, or the gateway did not come back (its log says why).
    """
    state = _read_state(home, name)
    if state is None or not status(home=home, name=name).get("running"):
        raise SandboxError("no running sandbox to reload; start one with 'rtbook sandbox up'")
    stack_dir = Path(state.stack_dir)
    port = int(state.gateway_url.rsplit(":", 1)[1])
    server_port = int(state.realtime_url.rsplit(":", 1)[1])
    _stop_pid(state.pids["gateway"], "rtbook.sandbox", timeout=10)
    gateway = _start_gateway(stack_dir, Path(state.run_dir), port, server_port)
    state.pids["gateway"] = gateway.proc.pid
    _await_ready(gateway, timeout)
    state.tenant = _stack_tenant(stack_dir)
    state.realtime_host = f"{state.tenant}.{REALTIME_HOST.split('.', 1)[1]}"
    _write_private(_state_file(home, name), state.to_json())
    return state


class Sandbox:
    """``with Sandbox(breaks=[...]) as state:`` starts the sandbox and always stops it.

    For tests and notebooks; ``home`` keeps its state apart from ``$RTBOOK_HOME``.
    """

    def __init__(
        self,
        dir: str | Path | None = None,
        breaks: Iterable[str] = (),
        timeout: float = 60,
        *,
        home: str | Path | None = None,
        probe: bool = True,
        realtime_version: str | None = None,
        server_env: Mapping[str, str] | None = None,
        name: str | None = None,
        nodes: int = 1,
        lb: str | None = None,
    ) -> None:
        self.name = name
        self.nodes = nodes
        self.lb = lb
        self.dir = dir
        self.breaks = tuple(breaks)
        self.timeout = timeout
        self.home = home
        self.probe = probe
        self.realtime_version = realtime_version
        self.server_env = dict(server_env or {})
        self.state: SandboxState | None = None

    def __enter__(self) -> SandboxState:
        self.state = up(self.dir, self.breaks, self.timeout, home=self.home, probe=self.probe,
                        realtime_version=self.realtime_version, server_env=self.server_env, name=self.name,
                        nodes=self.nodes, lb=self.lb)
        return self.state

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        down(home=self.home, name=self.state.name if self.state is not None else self.name)

    def __repr__(self) -> str:
        return f"Sandbox(breaks={list(self.breaks)}, home={self.home!r})"
