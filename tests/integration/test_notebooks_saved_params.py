"""The form's saved parameters drive notebooks 01-05 in the folder the user works in (a copy made by
``rtbook notebooks copy``), against a real sandbox; a papermill parameter still overrides them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rtbook.runbook.notebooks import copy_notebooks
from tests.integration.runbook_support import Sandbox, start_sandbox, stop_sandbox

pytestmark = [pytest.mark.notebooks, pytest.mark.sandbox, pytest.mark.slow]

NOTEBOOKS = ("01_setup", "02_tenant_seeding", "03_kong_routing", "04_subscription_tests", "05_troubleshooting")


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    home = tmp_path / "rtbook-home"
    box = start_sandbox(home)
    monkeypatch.setenv("RTBOOK_HOME", str(home))
    monkeypatch.delenv("RTBOOK_PARAMS_FILE", raising=False)
    try:
        yield box
    finally:
        stop_sandbox(home)


def _start_cell_text(nb: Any) -> str:
    """Everything the notebook's start cell (the one calling rtbook.runbook.start) printed or displayed."""
    cell = next(c for c in nb.cells if c.cell_type == "code" and "rtbook.runbook.start(" in c.source)
    parts = []
    for out in cell.outputs:
        if out.output_type == "stream":
            parts.append(out.text)
        elif "data" in out:
            parts.append(out.data.get("text/plain", ""))
    return "\n".join(parts)


def test_saved_parameters_drive_notebooks_01_to_05(tmp_path: Path, sandbox: Sandbox) -> None:
    import papermill as pm

    from rtbook.runbook.widgets import ParamForm

    work = tmp_path / "notebooks"
    copy_notebooks(work)
    form = ParamForm(params_path=work / "outputs" / "params.json")
    form.widgets["timeout_s"].value = 25.0
    form.widgets["tables"].value = "public.todos"
    form.widgets["docker"].value = "off"
    saved = form.save()
    assert saved == work / "outputs" / "params.json"

    for name in NOTEBOOKS:
        # 03 gets a papermill parameter equal to the default: it must still win over the saved value.
        parameters = {"timeout_s": 10.0} if name == "03_kong_routing" else {}
        out = tmp_path / f"{name}.out.ipynb"
        nb = pm.execute_notebook(str(work / f"{name}.ipynb"), str(out), parameters=parameters,
                                 cwd=str(work), kernel_name="python3", progress_bar=False,
                                 execution_timeout=600)
        text = _start_cell_text(nb)
        assert f"Parameters saved by the form ({saved}) used for:" in text, (name, text)
        if name == "03_kong_routing":
            assert "used for: docker, tables." in text, text
            assert "'timeout_s': 10.0" in text, text
        else:
            assert "used for: docker, tables, timeout_s." in text, (name, text)
            assert "'timeout_s': 25.0" in text, (name, text)
        assert "'tables': ['public.todos']" in text and "'docker': 'off'" in text, (name, text)

    # The checks ran with those values: 01's docker step was skipped because the saved docker is 'off'.
    import nbformat

    setup = nbformat.read(str(tmp_path / "01_setup.out.ipynb"), as_version=4)
    docker_cell = next(c for c in setup.cells if c.cell_type == "code" and 'run.checks("docker."' in c.source)
    shown = "".join(o.get("data", {}).get("text/plain", "") for o in docker_cell.outputs)
    assert "docker" in shown and "SKIP" in shown.upper(), shown


def test_01_without_a_sandbox_stops_on_one_red_line_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The newcomer's first mistake: 01 opened before any sandbox runs. One line, ending with the fix."""
    import nbformat
    import papermill as pm

    monkeypatch.setenv("RTBOOK_HOME", str(tmp_path / "empty-home"))
    monkeypatch.delenv("RTBOOK_PARAMS_FILE", raising=False)
    work = tmp_path / "notebooks"
    copy_notebooks(work)
    out = tmp_path / "01.out.ipynb"
    with pytest.raises(pm.PapermillExecutionError) as info:
        pm.execute_notebook(str(work / "01_setup.ipynb"), str(out), cwd=str(work), kernel_name="python3",
                            progress_bar=False, execution_timeout=300)
    assert info.value.ename == "ConfigError"  # what 'rtbook run' classifies notebooks by is unchanged
    nb = nbformat.read(str(out), as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert len(errors) == 1
    (line,) = errors[0].traceback  # no frames: a single line
    assert line.startswith("\x1b[1;31mConfigError\x1b[0m: no running sandbox:")
    assert line.endswith("start one with 'rtbook sandbox up'")
