"""Shared plumbing for the runbook's notebook and browser tests: the sandbox, a stack copy, scanning a record."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import CORPUS, ROOT, have_postgres, require

OFFICIAL = CORPUS / "official" / "2026-09-1f37f2a"


def rtbook_cli(
    args: Sequence[str], env: Mapping[str, str], timeout: float = 600, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m rtbook ARGS`` with ``env`` added to the environment."""
    return subprocess.run(
        [sys.executable, "-m", "rtbook", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(cwd or ROOT),
        check=False,
    )


@dataclass
class Sandbox:
    """A sandbox started with ``rtbook sandbox up`` under its own ``RTBOOK_HOME``."""

    home: Path
    status: dict[str, object]

    @property
    def env(self) -> dict[str, str]:
        """Variables that make ``Target.from_sandbox`` find this sandbox."""
        return {"RTBOOK_HOME": str(self.home)}

    @property
    def stack_dir(self) -> Path:
        """The stack directory the sandbox wrote."""
        return Path(str(self.status["stack_dir"]))

    def secret_values(self) -> list[str]:
        """Every secret value in the sandbox stack's ``.env`` (the real secrets the checks use)."""
        from rtbook.secrets import is_secret_name

        out = []
        for line in (self.stack_dir / ".env").read_text().splitlines():
            name, sep, value = line.partition("=")
            value = value.strip().strip('"').strip("'")
            if sep and not name.lstrip().startswith("#") and is_secret_name(name.strip()) and len(value) >= 8:
                out.append(value)
        return out


def require_sandbox() -> None:
    """Skip locally / fail in CI when the sandbox cannot run here."""
    require(have_postgres(), "PostgreSQL 15 with wal2json is needed by the sandbox")


def start_sandbox(home: Path, breaks: Sequence[str] = ()) -> Sandbox:
    """``rtbook sandbox up`` (with ``--break`` scenarios) under ``home``; the caller stops it."""
    require_sandbox()
    env = {"RTBOOK_HOME": str(home)}
    args = ["sandbox", "up"]
    for scenario in breaks:
        args += ["--break", scenario]
    up = rtbook_cli(args, env, timeout=240)
    if up.returncode != 0:
        stop_sandbox(home)
        pytest.fail(f"rtbook sandbox up failed ({up.returncode}): {up.stderr[-2000:]}")
    status = rtbook_cli(["sandbox", "status", "--json"], env, timeout=60)
    assert status.returncode == 0, status.stderr
    return Sandbox(home, json.loads(status.stdout))


def stop_sandbox(home: Path) -> None:
    """``rtbook sandbox down`` under ``home`` (idempotent)."""
    rtbook_cli(["sandbox", "down"], {"RTBOOK_HOME": str(home)}, timeout=120)


def stack_copy(dest: Path, env_overrides: Mapping[str, str] | None = None) -> Path:
    """A copy of the official stack with ``.env`` from ``env.example`` (plus overrides) and the Kong overlay."""
    require(OFFICIAL.is_dir(), f"corpus not found at {OFFICIAL}")
    import shutil

    shutil.copytree(OFFICIAL, dest)
    from rtbook.sandbox.stackdir import render_env

    overrides = dict(env_overrides or {})
    if "COMPOSE_FILE" not in overrides and (dest / "docker-compose.kong.yml").exists():
        overrides["COMPOSE_FILE"] = "docker-compose.yml:docker-compose.kong.yml"
    (dest / ".env").write_text(render_env((dest / "env.example").read_text(), overrides))
    return dest


@dataclass
class RunbookTarget:
    """What the browser test fills into the form, and what the kernel's environment needs."""

    target_kind: str
    env: dict[str, str]
    form_values: dict[str, str]
    step: str
    expect_ids: tuple[str, ...] = ()


@pytest.fixture
def runbook_target(tmp_path: Path) -> Iterator[RunbookTarget]:
    """The sandbox when it is available (as the brief requires), else skip/fail with the reason."""
    require_sandbox()
    home = tmp_path / "rtbook-home"
    box = start_sandbox(home)
    try:
        yield RunbookTarget(
            target_kind="sandbox",
            env=box.env,
            form_values={"api_url": "", "tenant": str(box.status.get("tenant") or "")},
            step="01 setup: compose, env, containers, health",
            expect_ids=("compose.realtime.tenant_consistency", "env.api_keys", "realtime.health"),
        )
    finally:
        stop_sandbox(home)


def encodings(value: str) -> list[bytes]:
    """The raw bytes of ``value`` and its base64 forms (standard and URL-safe, padded and not)."""
    raw = value.encode()
    forms = {raw}
    for enc in (base64.b64encode(raw), base64.urlsafe_b64encode(raw)):
        forms.add(enc)
        forms.add(enc.rstrip(b"="))
    return sorted(forms)


def find_leaks(folder: Path, secrets: Sequence[str]) -> list[str]:
    """Every (file, form) where a secret or its base64 form appears in ``folder``."""
    leaks = []
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert files, f"{folder} is empty"
    for path in files:
        data = path.read_bytes()
        for secret in secrets:
            for form in encodings(secret):
                if form in data:
                    leaks.append(f"{path.relative_to(folder)}: {'raw' if form == secret.encode() else 'base64'}")
    return leaks
