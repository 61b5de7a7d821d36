"""Notebook 02's rename / added-tenant cells (``NotebookRun.tenant_change`` and ``apply_plan``) on a real database.

The plans are dry runs shown as diffs with their files under ``<run_dir>/tenant-plans/``; rows are written only
with both switches, and the notebook's example names never reach a database other than the sandbox's.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from rtbook.exceptions import ConfirmationRequired
from rtbook.lifecycle import LifecyclePlan
from rtbook.runbook.session import Note, NotebookRun
from tests.integration.test_db_fixtures import Lab, pg_lab  # noqa: F401
from tests.integration.test_tenants_stack import _target, stack_lab  # noqa: F401

pytestmark = [pytest.mark.postgres]


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def _run(lab: Lab, stack: Path, run_dir: Path, **params: Any) -> NotebookRun:
    return NotebookRun("02_tenant_seeding", {"run_dir": str(run_dir), **params}, _target(lab, stack))


def test_plans_are_diffs_and_rows_need_both_switches(stack_lab: tuple[Lab, Path], tmp_path: Path) -> None:  # noqa: F811
    lab, stack = stack_lab
    before = _digest(stack)
    dry = _run(lab, stack, tmp_path / "run")
    renamed = dry.tenant_change("rename", "acme")
    assert isinstance(renamed, LifecyclePlan)
    html = renamed._repr_html_()
    assert "+++ b/docker-compose.override.yml" in html and "Order of operations" in html
    assert (tmp_path / "run" / "tenant-plans" / "rename-acme" / "docker-compose.override.yml").is_file()
    assert _digest(stack) == before
    assert isinstance(dry.apply_plan(renamed), Note)  # apply_fixes is false: a dry run
    with pytest.raises(ConfirmationRequired):
        _run(lab, stack, tmp_path / "run", apply_fixes=True).apply_plan(renamed)
    assert lab.query("SELECT count(*) FROM _realtime.tenants WHERE external_id = 'acme'") == [(0,)]

    allowed = _run(lab, stack, tmp_path / "run", apply_fixes=True, confirm_apply=True)
    # The notebook's example names are not written outside the sandbox, even with both switches.
    example = allowed.tenant_change("add", "tenant-b", "tenant-b.localhost")
    note = allowed.apply_plan(example)
    assert isinstance(note, Note) and "example name" in note.text
    assert lab.query("SELECT count(*) FROM _realtime.tenants WHERE external_id = 'tenant-b'") == [(0,)]
    step = allowed.apply_plan(allowed.tenant_change("rename", "acme"))
    assert not isinstance(step, Note)
    assert lab.query("SELECT count(*) FROM _realtime.tenants WHERE external_id = 'acme'") == [(1,)]
    assert lab.query("SELECT count(*) FROM _realtime.extensions WHERE tenant_external_id = 'acme'") == [(1,)]
    assert _digest(stack) == before
