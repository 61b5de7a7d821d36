"""tenant.* checks and plan/apply with the expectations read from a real stack directory.

The corpus's official compose gives the realtime service ``DB_HOST: ${POSTGRES_HOST}``,
``API_JWT_SECRET: ${JWT_SECRET}``, ``DB_ENC_KEY: supabaserealtime`` ...; the tenant rows are seeded
the way that stack's Realtime would seed them, then the stack's ``.env`` is changed under them.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from rtbook import seeding
from rtbook.registry import run_checks
from rtbook.results import Status
from rtbook.target import Target
from tests.integration.test_db_fixtures import JWT_CANARY, TENANT, Lab, finding, pg_lab, reset  # noqa: F401

pytestmark = [pytest.mark.postgres]
OFFICIAL = "official/2025-11-f8a85e7"


@pytest.fixture
def stack_lab(pg_lab: Lab, corpus: Path, tmp_path: Path, clean_env: Any) -> tuple[Lab, Path]:  # noqa: F811
    """A copy of the official stack whose .env points at the cluster, and rows seeded as its Realtime would."""
    from rtbook.sandbox.bootstrap import seed_tenant

    lab = reset(pg_lab)
    stack = tmp_path / "stack"
    shutil.copytree(corpus / OFFICIAL, stack)
    stack.chmod(0o755)
    _write_env(stack, lab, JWT_SECRET=JWT_CANARY)
    lab.sql("DELETE FROM _realtime.tenants")
    seed_tenant(lab.cluster, tenant=TENANT, jwt_secret=JWT_CANARY, db_enc_key="supabaserealtime",
                db_host="db", db_port="5432", db_name="postgres", db_user="supabase_admin",
                db_password=lab.cluster.password)
    return lab, stack


def _write_env(stack: Path, lab: Lab, **values: str) -> None:
    lines = (stack / "env.example").read_text().splitlines()
    wanted = {"POSTGRES_PASSWORD": lab.password, "POSTGRES_HOST": "db", "POSTGRES_PORT": "5432",
              "POSTGRES_DB": "postgres", **values}
    out = [line for line in lines if line.split("=", 1)[0] not in wanted]
    out += [f"{k}={v}" for k, v in wanted.items()]
    env = stack / ".env"
    if env.exists():
        env.chmod(0o644)
    env.write_text("\n".join(out) + "\n")


def _target(lab: Lab, stack: Path) -> Target:
    return Target.from_stack_dir(stack, db_url=lab.cluster.url(), timeout=5)


def test_rows_seeded_like_the_stack_pass(stack_lab: tuple[Lab, Path]) -> None:
    lab, stack = stack_lab
    report = run_checks(_target(lab, stack), only="tenant.")
    for result in report:
        assert result.status is Status.PASS, str(result)
    assert "db_host=db" in report.by_id("tenant.db_settings").summary
    text = str(report) + report.to_json()
    assert JWT_CANARY not in text and lab.password not in text


def test_rotated_jwt_secret_in_env_is_found_and_repaired(stack_lab: tuple[Lab, Path]) -> None:
    lab, stack = stack_lab
    rotated = "CANARY-rotated-" + "x" * 32
    _write_env(stack, lab, JWT_SECRET=rotated)
    target = _target(lab, stack)
    result = run_checks(target, only="tenant.jwt_secret").by_id("tenant.jwt_secret")
    assert result.status is Status.FAIL and finding(result) == "tenant.jwt_secret_mismatch"
    assert "the realtime service's environment" in result.detail
    the_plan = seeding.plan(target)
    assert [(c.kind, c.table) for c in the_plan.changes] == [("update", "tenants")]
    assert seeding.apply(target, the_plan, yes=True).status is Status.PASS
    assert run_checks(_target(lab, stack), only="tenant.jwt_secret").by_id("tenant.jwt_secret").status is Status.PASS
    assert rotated not in str(the_plan) + str(result)


def test_changed_db_host_in_env(stack_lab: tuple[Lab, Path]) -> None:
    lab, stack = stack_lab
    _write_env(stack, lab, POSTGRES_HOST="db.internal")
    result = run_checks(_target(lab, stack), only="tenant.db_settings").by_id("tenant.db_settings")
    assert result.status is Status.FAIL
    assert "db_host is 'db' but DB_HOST is 'db.internal'" in result.summary
