"""Shared test plumbing.

Components a test needs (PostgreSQL binaries, Docker, Node, Chromium) are asked for through
:func:`require`. Locally a missing component skips the test with the reason; with ``CI=true``
the same test fails, so CI never passes by skipping.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("RTBOOK_CORPUS", ROOT / "tests" / "fixtures" / "corpus"))
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PG_BIN = Path(os.environ.get("RTBOOK_PG_BIN", "/usr/lib/postgresql/15/bin"))


def require(ok: bool, reason: str) -> None:
    """Skip (locally) or fail (in CI) when a component the test needs is missing."""
    if ok:
        return
    if IN_CI:
        pytest.fail(f"required component missing in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def have_postgres() -> bool:
    """PostgreSQL 15 server binaries and the wal2json plugin are installed."""
    if not (PG_BIN / "initdb").exists() or not (PG_BIN / "postgres").exists():
        return False
    try:
        libdir = subprocess.run(
            [str(PG_BIN / "pg_config") if (PG_BIN / "pg_config").exists() else "pg_config", "--pkglibdir"],
            capture_output=True, text=True, timeout=10, check=False,
        ).stdout.strip()
    except OSError:
        libdir = ""
    candidates = [Path(libdir) / "wal2json.so", Path("/usr/lib/postgresql/15/lib/wal2json.so")]
    return any(c.exists() for c in candidates)


def have_docker() -> bool:
    """A Docker engine answers on the default socket or DOCKER_HOST."""
    try:
        import docker

        client = docker.from_env(timeout=5)
        client.ping()
        client.close()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The shared corpus of real stack files (read-only)."""
    require(CORPUS.is_dir(), f"corpus not found at {CORPUS}; set RTBOOK_CORPUS")
    return CORPUS


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Remove Supabase-related variables from the process environment for the test."""
    for name in list(os.environ):
        if name.startswith(("SUPABASE_", "POSTGRES_", "RTBOOK_SANDBOX")) or name in (
            "ANON_KEY", "SERVICE_ROLE_KEY", "JWT_SECRET", "COMPOSE_FILE", "DB_ENC_KEY",
        ):
            monkeypatch.delenv(name, raising=False)
    yield


def which(name: str) -> str | None:
    """shutil.which, for tests."""
    return shutil.which(name)
