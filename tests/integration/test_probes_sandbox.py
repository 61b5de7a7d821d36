"""gateway.*, realtime.health and realtime.* against the real sandbox (rtbook.sandbox.manager):
PostgreSQL 15 + the Realtime-compatible server + the Kong-compatible gateway serving the stack's
own kong.yml, with the target built by ``Target.from_sandbox()``.

Healthy: every live check of this area passes. Each break scenario: the right check fails with the
right cause (and points back to the static check that catches it).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rtbook.checks import run_checks
from rtbook.results import CheckResult, Report, Status
from rtbook.target import Target
from tests.conftest import have_postgres, require

pytestmark = [pytest.mark.postgres, pytest.mark.sandbox]

LIVE = ("gateway.", "realtime.")
TABLES = ("public.todos",)


class Running:
    """A started sandbox and a target for it."""

    def __init__(self, breaks: tuple[str, ...] = ()) -> None:
        from rtbook.sandbox.manager import Sandbox

        self.home = Path(tempfile.mkdtemp(prefix="rtbook-h5-sbx-"))
        # The cluster runs as an unprivileged user when the tests run as root: it must reach its directory.
        self.home.chmod(0o755)
        self.sandbox = Sandbox(breaks=breaks, home=self.home)
        self.state = self.sandbox.__enter__()

    def target(self, **kwargs: Any) -> Target:
        kwargs.setdefault("tables", TABLES)
        kwargs.setdefault("timeout", 4.0)
        return Target.from_sandbox(self.home / "sandbox" / "state.json", **kwargs)

    def secrets(self) -> list[str]:
        env = Path(self.state.stack_dir, ".env").read_text()
        out = []
        for line in env.splitlines():
            key, _, value = line.partition("=")
            if key.strip() in ("JWT_SECRET", "ANON_KEY", "SERVICE_ROLE_KEY", "POSTGRES_PASSWORD") and value:
                out.append(value.strip().strip('"'))
        return out

    def close(self) -> None:
        self.sandbox.__exit__(None, None, None)
        shutil.rmtree(self.home, ignore_errors=True)


def start(breaks: tuple[str, ...] = ()) -> Iterator[Running]:
    require(have_postgres(), "PostgreSQL 15 binaries with wal2json are not installed")
    running = Running(breaks)
    try:
        yield running
    finally:
        running.close()


@pytest.fixture(scope="module")
def healthy() -> Iterator[Running]:
    yield from start()


def outputs(report: Report) -> str:
    return str(report) + report.to_json() + report._repr_html_() + report.to_junit()


def test_healthy_sandbox_every_live_check_passes(healthy: Running) -> None:
    report = run_checks(healthy.target(), only=LIVE)
    ids = {r.id for r in report}
    assert ids >= {"gateway.rest", "gateway.key_auth", "gateway.tenants_api_blocked", "gateway.cors",
                   "gateway.websocket", "realtime.health", "realtime.join", "realtime.broadcast",
                   "realtime.presence", "realtime.postgres_changes", "realtime.rls", "realtime.bad_token"}
    bad = [str(r) for r in report if r.status is not Status.PASS]
    assert not bad, "\n".join(bad)
    ws = report.by_id("gateway.websocket")
    assert ws.metrics["connect_ms"] > 0 and ws.metrics["heartbeat_ms"] >= 0
    assert report.by_id("realtime.join").evidence["endpoint"].endswith("(gateway)")
    text = outputs(report)
    for secret in healthy.secrets():
        assert secret not in text


def check(report: Report, cid: str) -> CheckResult:
    return report.by_id(cid)


# scenario -> the checks that must fail, with their cause, and a static check each must point back to
EXPECTED: dict[str, list[tuple[str, str, str]]] = {
    "tenant-mismatch": [
        ("gateway.websocket", "tenant_not_found", "compose.realtime.tenant_consistency"),
        ("gateway.rest", "tenant_not_found", "kong.realtime_ws"),
        ("realtime.join", "tenant_not_found", "compose.realtime.tenant_consistency"),
    ],
    "tenant-missing": [
        ("gateway.websocket", "tenant_not_found", "tenant.row"),
        ("gateway.rest", "tenant_not_found", "tenant.row"),
        ("realtime.join", "tenant_not_found", "tenant.row"),
        ("realtime.health", "tenant_missing_admin", "tenant.row"),
    ],
    "jwt-mismatch": [
        ("gateway.websocket", "jwt_signature", "tenant.jwt_secret"),
        ("realtime.join", "jwt_signature", "tenant.jwt_secret"),
        ("realtime.broadcast", "jwt_signature", "tenant.jwt_secret"),
    ],
    "wal-level-replica": [
        ("realtime.postgres_changes", "wal_level", "db.wal_level"),
        ("realtime.rls", "wal_level", "db.wal_level"),
    ],
    "not-in-publication": [
        ("realtime.postgres_changes", "not_in_publication", "db.publication"),
    ],
    "rls-denies": [
        ("realtime.rls", "rls_denies", "db.rls"),
    ],
    "ws-route-missing": [
        ("gateway.websocket", "kong_no_route", "kong.realtime_ws"),
        ("realtime.join", "kong_no_route", "kong.realtime_ws"),
    ],
    "no-apikey-forwarding": [
        ("gateway.websocket", "missing_api_key", "kong.realtime_auth"),
        ("realtime.join", "missing_api_key", "kong.realtime_auth"),
    ],
}

# Checks that must keep passing in a scenario (the failure is specific, not everything red).
STILL_PASS: dict[str, tuple[str, ...]] = {
    "tenant-mismatch": ("gateway.key_auth", "realtime.health"),
    "jwt-mismatch": ("gateway.rest",),
    "wal-level-replica": ("realtime.join", "realtime.broadcast", "gateway.websocket"),
    "not-in-publication": ("realtime.join", "realtime.rls"),
    "rls-denies": ("realtime.join", "realtime.postgres_changes"),
    "ws-route-missing": ("gateway.rest",),
    "no-apikey-forwarding": ("gateway.rest",),
    "replica-identity-default": ("realtime.postgres_changes", "gateway.websocket"),
}


@pytest.mark.slow
@pytest.mark.parametrize("scenario", sorted(set(EXPECTED) | set(STILL_PASS)))
def test_break_scenario_fails_the_right_check(scenario: str) -> None:
    for running in start((scenario,)):
        started = time.monotonic()
        only = {cid for cid, _, _ in EXPECTED.get(scenario, [])} | set(STILL_PASS.get(scenario, ()))
        if scenario == "jwt-mismatch":
            only.add("realtime.health")
        report = run_checks(running.target(), only=tuple(sorted(only)))
        elapsed = time.monotonic() - started
        for cid, cause, static in EXPECTED.get(scenario, []):
            r = check(report, cid)
            assert (r.status, r.cause) == (Status.FAIL, cause), f"{scenario}: {r}"
            assert static in r.see_also, f"{scenario}: {cid} see_also {r.see_also}"
            assert r.remedy, r
        for cid in STILL_PASS.get(scenario, ()):
            r = check(report, cid)
            assert r.status is Status.PASS, f"{scenario}: {r}"
        text = outputs(report)
        for secret in running.secrets():
            assert secret not in text
        if scenario == "jwt-mismatch":
            # Health cannot prove the DB connection when its probe join is refused: a warning naming why.
            health = check(report, "realtime.health")
            assert (health.status, health.cause) == (Status.WARN, "jwt_signature"), str(health)
        assert elapsed < 120, elapsed
