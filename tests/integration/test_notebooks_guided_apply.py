"""The guided form against a real sandbox: the apply step sits behind the confirm button, and the
parameter file it saves drives a headless run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.runbook_support import Sandbox, rtbook_cli, start_sandbox, stop_sandbox

pytestmark = [pytest.mark.notebooks, pytest.mark.sandbox, pytest.mark.slow]


@pytest.fixture
def broken_sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    home = tmp_path / "rtbook-home"
    box = start_sandbox(home, breaks=["tenant-missing"])
    monkeypatch.setenv("RTBOOK_HOME", str(home))
    try:
        yield box
    finally:
        stop_sandbox(home)


def test_confirm_button_applies_the_plan_and_the_saved_file_runs_headless(
    tmp_path: Path, broken_sandbox: Sandbox
) -> None:
    from rtbook.runbook.widgets import ParamForm

    form = ParamForm(params_path=tmp_path / "params.json")
    form.step.value = "02 tenant and database"
    report = form.run()
    assert report is not None and report.by_id("tenant.row").failed
    # Without apply_fixes: no plan, the confirm button stays hidden, nothing can be written.
    assert form.confirm_button.disabled and form.apply() is None

    form.widgets["apply_fixes"].value = True
    report = form.run()
    assert report is not None and report.by_id("tenant.row").failed, "Run alone writes nothing"
    assert not form.confirm_button.disabled, "a plan is ready and waits for the confirm button"
    html = form.output.outputs[0]["data"]["text/html"]
    assert "Seeding plan (nothing written yet" in html and "rtbook-plan" in html
    # The button says what it will do, and sits directly under the plan (the output's last block).
    n = len(form._plan.changes)
    assert n >= 1
    assert form.confirm_button.description == f"Apply {n} change{'s' if n != 1 else ''} to tenant realtime-dev"
    assert form.confirm_button.layout.display is None
    children = list(form.box.children)
    assert children.index(form.confirm_button) == children.index(form.output) + 1
    assert html.rstrip().endswith("</table>") or html.rstrip().endswith("</ul>")
    # The diff is whole: the "after" cells hold the complete JSON, wrapped, not cut with "...".
    assert "...</pre>" not in html and "<pre>" in html

    form.confirm_button.click()  # the explicit confirmation
    html = form.output.outputs[0]["data"]["text/html"]
    assert "After applying the plan" in html
    assert 'class="rtbook-pass"' in html and "<code>tenant.row</code>" in html
    assert form.confirm_button.disabled, "one click applies once"

    # Planned again on the repaired tenant: "Nothing to change", and no button to press.
    assert form.run() is not None
    assert "Nothing to change" in form.output.outputs[0]["data"]["text/html"]
    assert form.confirm_button.disabled and form.confirm_button.layout.display == "none"
    assert form.apply() is None

    # The saved parameter set drives the headless runner; the repaired tenant now passes 02.
    # The confirmation is not in it: a headless run that should write needs its own.
    saved = form.save()
    assert saved is not None
    stored = json.loads(saved.read_text())
    assert stored["apply_fixes"] is True and "confirm_apply" not in stored
    refused = rtbook_cli(["run", "--params-file", str(saved), "--no-sandbox-start", "--notebooks", "02",
                          "--output-dir", str(tmp_path / "refused")], broken_sandbox.env, 120)
    assert refused.returncode == 2 and "apply_fixes is true but confirm_apply is false" in refused.stderr
    assert not (tmp_path / "refused").exists() or not any((tmp_path / "refused").iterdir())
    out = tmp_path / "outputs"
    proc = rtbook_cli(
        ["run", "--params-file", str(saved), "-p", "apply_fixes=false", "-p", "confirm_apply=false",
         "--no-sandbox-start", "--notebooks", "02", "--output-dir", str(out)],
        broken_sandbox.env,
        600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    record = next(p for p in out.iterdir() if p.is_dir())
    summary = json.loads((record / "summary.json").read_text())
    statuses = {r["id"]: r["status"] for r in summary["notebooks"][0]["results"]}
    assert statuses["tenant.row"] == "pass"
