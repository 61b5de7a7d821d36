"""The database part of ``rtbook tenant rename`` on a real PostgreSQL, with the official stack's expectations.

The rows are seeded as the stack's Realtime would seed ``realtime-dev`` (see test_tenants_stack.py); the rename
inserts ``my-tenant`` with exactly one ``postgres_cdc_rls`` row, both encrypted as ``Realtime.Crypto`` does
(decrypted here with rtbook.crypto and the stack's ``DB_ENC_KEY``). A half-applied rename whose files are in
place but whose rows are not is caught by ``tenant.row``, whose remedy is the remaining step.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from rtbook.crypto import decrypt
from rtbook.lifecycle import apply, plan_rename
from rtbook.registry import run_checks
from rtbook.results import Status
from rtbook.target import Target
from tests.integration.test_db_fixtures import JWT_CANARY, Lab, pg_lab  # noqa: F401
from tests.integration.test_tenants_stack import _target, stack_lab  # noqa: F401

pytestmark = [pytest.mark.postgres]
ENC_KEY = "supabaserealtime"  # the official compose's DB_ENC_KEY


def _rows(lab: Lab, tenant: str) -> tuple[list[Any], list[Any]]:
    tenants = lab.query(f"SELECT external_id, jwt_secret FROM _realtime.tenants WHERE external_id = '{tenant}'")
    exts = lab.query(f"SELECT type, settings FROM _realtime.extensions WHERE tenant_external_id = '{tenant}'")
    return tenants, exts


def test_rename_inserts_one_encrypted_tenant_and_cdc_row_and_keeps_the_old(stack_lab: tuple[Lab, Path]) -> None:  # noqa: F811
    lab, stack = stack_lab
    plan = plan_rename(_target(lab, stack), "my-tenant")
    assert [(c.kind, c.table) for c in plan.rows.changes] == [("insert", "tenants"), ("insert", "extensions")]
    assert JWT_CANARY not in str(plan) + repr(plan.to_dict()) and lab.password not in str(plan)
    result = apply(_target(lab, stack), plan, yes=True)
    assert result.status is Status.PASS, str(result)
    assert result.evidence["prior_rows"] == []  # my-tenant had no rows before
    tenants, exts = _rows(lab, "my-tenant")
    assert len(tenants) == 1 and decrypt(tenants[0][1], ENC_KEY) == JWT_CANARY
    assert [e[0] for e in exts] == ["postgres_cdc_rls"]
    settings = exts[0][1]
    assert decrypt(settings["db_host"], ENC_KEY) == "db" and decrypt(settings["db_password"], ENC_KEY) == lab.password
    assert len(_rows(lab, "realtime-dev")[0]) == 1  # kept by default
    renamed = Target.from_stack_dir(stack, db_url=lab.cluster.url(), timeout=5, tenant="my-tenant")
    report = run_checks(renamed, only="tenant.")
    assert [str(r) for r in report if r.status is not Status.PASS] == []


def test_drop_old_deletes_the_old_rows_in_the_same_transaction(stack_lab: tuple[Lab, Path]) -> None:  # noqa: F811
    lab, stack = stack_lab
    plan = plan_rename(_target(lab, stack), "my-tenant", drop_old=True)
    assert [(c.kind, c.table) for c in plan.rows.changes][-2:] == [("delete", "extensions"), ("delete", "tenants")]
    result = apply(_target(lab, stack), plan, yes=True)
    assert result.status is Status.PASS
    assert _rows(lab, "realtime-dev") == ([], []) and len(_rows(lab, "my-tenant")[0]) == 1
    # The deleted rows are recorded (redacted) so they can be put back.
    prior = [r for r in result.evidence["prior_rows"] if r.get("external_id") == "realtime-dev"]
    assert prior and JWT_CANARY not in str(result.evidence) and prior[0]["jwt_secret"] != ""


def test_a_stale_plan_writes_nothing(stack_lab: tuple[Lab, Path]) -> None:  # noqa: F811
    lab, stack = stack_lab
    plan = plan_rename(_target(lab, stack), "my-tenant", drop_old=True)
    lab.sql("UPDATE _realtime.tenants SET max_concurrent_users = 7 WHERE external_id = 'realtime-dev'")
    result = apply(_target(lab, stack), plan, yes=True)
    assert result.status is Status.FAIL and "changed since the plan" in result.summary
    assert _rows(lab, "my-tenant") == ([], []) and len(_rows(lab, "realtime-dev")[0]) == 1


def test_files_without_rows_is_caught_with_the_rows_as_the_remaining_step(stack_lab: tuple[Lab, Path],  # noqa: F811
                                                                        tmp_path: Path) -> None:
    lab, stack = stack_lab
    out = tmp_path / "out"
    plan_rename(_target(lab, stack), "my-tenant").write(out, stack)
    for f in out.rglob("*"):
        if f.is_file():
            dest = stack / f.relative_to(out)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dest)
    # The stack now implies my-tenant; its rows were never written.
    result = run_checks(_target(lab, stack), only="tenant.row").by_id("tenant.row")
    assert result.status is Status.FAIL and "'my-tenant'" in result.summary
    assert "rtbook tenant rename my-tenant --stack DIR --apply --yes" in result.remedy
    # That step plans the rows only (the files are done) and completes the rename.
    rest = plan_rename(_target(lab, stack), "my-tenant")
    assert rest.files == [] and [c.table for c in rest.rows.changes] == ["tenants", "extensions"]
    assert apply(_target(lab, stack), rest, yes=True).status is Status.PASS
    assert run_checks(_target(lab, stack), only="tenant.row").by_id("tenant.row").status is Status.PASS
