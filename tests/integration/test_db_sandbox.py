"""db.* and tenant.* checks against the embedded sandbox, healthy and with each database break scenario.

The target is built the way a user builds it (``Target.from_sandbox``): expectations come from the
sandbox's stack directory (its realtime service environment and .env), the password from its .env.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import pytest

from rtbook.registry import run_checks
from rtbook.results import Report, Status
from tests.integration.sandbox_support import Running, start
from tests.integration.test_db_fixtures import finding

pytestmark = [pytest.mark.postgres, pytest.mark.sandbox]

AREAS = ("db.", "tenant.")


def _box(breaks: tuple[str, ...] = ()) -> contextlib.AbstractContextManager[Running]:
    return start(breaks, timeout=5.0)


def _run(box: Running, **kwargs: Any) -> Report:
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


def _repair(box: Running) -> None:
    """plan/apply fixes the tenant rows from the sandbox stack's own values."""
    from rtbook import seeding

    target = box.target()
    the_plan = seeding.plan(target, create=True)
    assert the_plan.changes and not the_plan.blocked
    result = seeding.apply(target, the_plan, yes=True)
    assert result.status is Status.PASS, str(result)
    after = run_checks(box.target(), only="tenant.")
    for r in after:
        assert r.status is Status.PASS, str(r)
    assert seeding.plan(box.target()).empty
    text = str(the_plan) + the_plan._repr_html_() + str(result) + str(after)
    for secret in box.secrets():
        assert secret not in text
