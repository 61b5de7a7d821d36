"""db.* and tenant.* checks against the embedded sandbox, healthy and with each database break scenario.

The target is built the way a user builds it (``Target.from_sandbox``): expectations come from the
sandbox's stack directory (its realtime service environment and .env), the password from its .env.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rtbook.checks import run_checks
from rtbook.results import Report, Status
from rtbook.target import Target
from tests.conftest import have_postgres, require
from tests.integration.test_db_fixtures import finding

pytestmark = [pytest.mark.postgres, pytest.mark.sandbox]

AREAS = ("db.", "tenant.")


class Box:
    """A running sandbox in its own RTBOOK home."""

    def __init__(self, breaks: tuple[str, ...]) -> None:
        from rtbook.sandbox.manager import Sandbox

        self.home = Path(tempfile.mkdtemp(prefix="rtbook-h6-sbx-"))
        # The cluster runs as an unprivileged user when the tests run as root.
        self.home.chmod(0o755)
        self.sandbox = Sandbox(breaks=breaks, home=self.home)
        try:
            self.state = self.sandbox.__enter__()
        except BaseException:
            # up() stops what it started; the home is ours to remove.
            shutil.rmtree(self.home, ignore_errors=True)
            raise

    def target(self, **kwargs: Any) -> Target:
        kwargs.setdefault("tables", ("public.todos",))
        kwargs.setdefault("timeout", 5.0)
        return Target.from_sandbox(self.home / "sandbox" / "state.json", **kwargs)

    def secrets(self) -> list[str]:
        out = []
        for line in Path(self.state.stack_dir, ".env").read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() in ("JWT_SECRET", "POSTGRES_PASSWORD", "ANON_KEY", "SERVICE_ROLE_KEY") and value.strip():
                out.append(value.strip().strip('"'))
        return out

    def close(self) -> None:
        self.sandbox.__exit__(None, None, None)
        shutil.rmtree(self.home, ignore_errors=True)


@contextlib.contextmanager
def _box(breaks: tuple[str, ...] = ()) -> Iterator[Box]:
    require(have_postgres(), "PostgreSQL 15 binaries with wal2json are not installed")
    box = Box(breaks)
    try:
        yield box
    finally:
        box.close()


def _run(box: Box, **kwargs: Any) -> Report:
    report = run_checks(box.target(**kwargs), only=AREAS)
    text = str(report) + report.to_json() + report._repr_html_()
    for secret in box.secrets():
        assert secret not in text
    return report


def test_healthy_sandbox_every_db_and_tenant_check_passes() -> None:
    with _box() as box:
        # The server opens its metadata connection (supabase_mt_realtime) right away; give it a moment.
        deadline = time.monotonic() + 10
        report = _run(box)
        while report.by_id("db.realtime_connections").status is not Status.PASS and time.monotonic() < deadline:
            time.sleep(0.5)
            report = _run(box)
        for result in report:
            assert result.status is Status.PASS, str(result)
        assert "db_host=" in report.by_id("tenant.db_settings").summary


@pytest.mark.slow
@pytest.mark.parametrize(
    ("scenario", "check_id", "status", "found"),
    [
        ("tenant-missing", "tenant.row", Status.FAIL, "tenant.not_found"),
        ("jwt-mismatch", "tenant.jwt_secret", Status.FAIL, "tenant.jwt_secret_mismatch"),
        ("wal-level-replica", "db.wal_level", Status.FAIL, "db.wal_level_not_logical"),
        ("not-in-publication", "db.publication", Status.FAIL, "db.table_not_in_publication"),
        ("rls-denies", "db.rls", Status.WARN, "db.rls_no_policy"),
        ("replica-identity-default", "db.replica_identity", Status.WARN, "db.replica_identity"),
    ],
)
def test_break_scenario_is_found_by_the_right_check(scenario: str, check_id: str, status: Status, found: str) -> None:
    with _box((scenario,)) as box:
        report = _run(box)
        result = report.by_id(check_id)
        assert result.status is status, str(result)
        assert finding(result) == found
        # Only that check (and the checks that depend on the same row) complain.
        others = [r for r in report if r.status in (Status.FAIL, Status.WARN) and r.id != check_id]
        allowed = {"db.realtime_connections", "db.wal2json", "tenant.extension", "tenant.jwt_secret",
                   "tenant.db_settings", "tenant.limits"}
        assert {r.id for r in others} <= allowed, [str(r) for r in others]
        if check_id.startswith("tenant."):
            _repair(box)


def _repair(box: Box) -> None:
    """plan/apply fixes the tenant rows from the sandbox stack's own values."""
    from rtbook import tenants

    target = box.target()
    the_plan = tenants.plan(target, create=True)
    assert the_plan.changes and not the_plan.blocked
    result = tenants.apply(target, the_plan, yes=True)
    assert result.status is Status.PASS, str(result)
    after = run_checks(box.target(), only="tenant.")
    for r in after:
        assert r.status is Status.PASS, str(r)
    assert tenants.plan(box.target()).empty
    text = str(the_plan) + the_plan._repr_html_() + str(result) + str(after)
    for secret in box.secrets():
        assert secret not in text
