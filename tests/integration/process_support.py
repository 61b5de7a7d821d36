"""What the interruption and concurrency tests look at: real processes, their groups, ports and folders.

Every helper reads /proc or connects to 127.0.0.1; nothing here is a stand-in for what rtbook does.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

from tests.conftest import ROOT


def _stat_fields(pid: int) -> list[str]:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    return text.rsplit(")", 1)[1].split()


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    fields = _stat_fields(pid)
    return bool(fields) and fields[0] != "Z"


def pids_in_group(pgid: int) -> list[int]:
    """Live processes whose process group is ``pgid`` (what Ctrl-C or ``kill -- -pgid`` reaches)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if len(fields) > 2 and fields[0] != "Z" and int(fields[2]) == pgid:
                found.append(int(entry.name))
    return found


def pids_mentioning(marker: str) -> list[int]:
    """Live processes whose environment or command line contains ``marker`` (a test-private folder).

    The sandbox's children run in sessions of their own, so their process group says nothing; they
    inherit the environment (``RTBOOK_HOME``, ``TMPDIR``), and PostgreSQL names its data folder in argv.
    """
    needle = marker.encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        for name in ("environ", "cmdline"):
            with contextlib.suppress(OSError):
                if needle in (entry / name).read_bytes() and alive(int(entry.name)):
                    found.append(int(entry.name))
                    break
    return found


def port_open(port: int) -> bool:
    """Something accepts TCP connections on 127.0.0.1:``port``."""
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def tcp_peer_ports(pid: int) -> set[int]:
    """Remote ports of the TCP connections process ``pid`` holds (its socket fds matched in /proc/net/tcp*)."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                link = os.readlink(fd)
                if link.startswith("socket:["):
                    inodes.add(link[len("socket:["):-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 9 and fields[9] in inodes:
                    ports.add(int(fields[2].rsplit(":", 1)[1], 16))
    return ports


def state_ports(state: Mapping[str, object]) -> list[int]:
    """The gateway, Realtime and database ports a sandbox state names."""
    ports = []
    for key in ("gateway_url", "realtime_url", "db_url"):
        port = urlsplit(str(state[key])).port
        assert port, (key, state[key])
        ports.append(port)
    return ports


def sandbox_states(home: Path) -> dict[str, dict[str, object]]:
    """Every sandbox instance recorded under ``home`` (an ``RTBOOK_HOME``), by name."""
    paths = [home / "sandbox" / "state.json", *sorted((home / "sandbox" / "instances").glob("*/state.json"))]
    out = {}
    for path in paths:
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(path.read_text())
            out[str(data.get("name") or "default")] = data
    return out


def shared_tmpdir() -> Path:
    """A private TMPDIR the postgres user can enter (pytest's tmp_path sits under a 0700 folder)."""
    path = Path(tempfile.mkdtemp(prefix="rtbook-test-tmp-", dir="/tmp"))
    path.chmod(0o755)
    return path


class Cli:
    """``python -m rtbook ARGS`` in a new session (its own process group), stderr read line by line."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str], cwd: Path = ROOT) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rtbook", *args], env={**os.environ, **env}, cwd=str(cwd),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
            start_new_session=True,
        )
        self.err_lines: list[str] = []
        self._out: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(self.proc.stderr, self.err_lines), daemon=True),
                         threading.Thread(target=self._read, args=(self.proc.stdout, self._out), daemon=True)]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: IO[str] | None, into: list[str]) -> None:
        assert stream is not None
        for line in stream:
            into.append(line.rstrip("\n"))

    @property
    def out(self) -> str:
        return "\n".join(self._out)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_for_line(self, pattern: str, timeout: float) -> str:
        """The first stderr line matching ``pattern``; fails if the process ends or ``timeout`` passes first."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.err_lines):
                if regex.search(line):
                    return line
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"no stderr line matching {pattern!r} within {timeout} s "
                             f"(exit {self.proc.poll()}); stderr so far:\n" + "\n".join(self.err_lines))

    def finish(self, timeout: float) -> int:
        """Wait for the exit (bounded), collect stdout; returns the exit code."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        for reader in self._readers:
            reader.join(timeout=5)
        return self.proc.returncode

    @property
    def err(self) -> str:
        return "\n".join(self.err_lines)

    def kill(self) -> None:
        """SIGKILL the whole group (test cleanup only)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, 9)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


def assert_no_local_paths(record: Path, forbidden: Mapping[str, str]) -> None:
    """No byte of any file in ``record`` names one of the ``forbidden`` folders ({what: path})."""
    files = [p for p in sorted(record.rglob("*")) if p.is_file()]
    assert files, record
    for path in files:
        data = path.read_bytes()
        for what, value in forbidden.items():
            assert value.encode() not in data, f"{path.name} names {what} ({value})"
