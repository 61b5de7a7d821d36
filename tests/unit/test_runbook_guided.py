"""The guided start without a browser: the form's saved parameters under the notebooks' own, the
target status panel, and rtbook's errors as one line in IPython."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rtbook.exceptions import ConfigError
from rtbook.runbook.params import default_params
from rtbook.runbook.session import with_saved_params
from rtbook.runbook.widgets import TargetStatus


def _save(path: Path, **values: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(values))
    return path


def test_saved_values_fill_the_names_the_notebook_left_at_their_default(tmp_path: Path) -> None:
    saved = _save(tmp_path / "params.json", tenant="saved-tenant", timeout_s=30.0, docker="off")
    cell = {**default_params(), "docker": "on"}  # docker changed in the notebook's own cell
    params, line = with_saved_params(cell, {}, saved)
    assert params["tenant"] == "saved-tenant" and params["timeout_s"] == 30.0
    assert params["docker"] == "on", "a value changed in the parameters cell wins over the saved one"
    assert "used for: tenant, timeout_s" in line and str(saved) in line


def test_papermill_parameters_override_the_saved_ones_even_when_they_are_defaults(tmp_path: Path) -> None:
    saved = _save(tmp_path / "params.json", tenant="saved-tenant", docker="off")
    injected = '# Parameters\ndocker = "auto"\n'  # papermill's injected cell, as IPython keeps it in In
    params, _ = with_saved_params(default_params(), {"In": ["", "import x", injected]}, saved)
    assert params["docker"] == "auto" and params["tenant"] == "saved-tenant"


def test_under_rtbook_run_the_saved_file_is_not_read(tmp_path: Path) -> None:
    saved = _save(tmp_path / "params.json", tenant="saved-tenant")
    params, line = with_saved_params({**default_params(), "run_dir": str(tmp_path)}, {}, saved)
    assert params["tenant"] == "" and line == ""


def test_no_file_changes_nothing(tmp_path: Path) -> None:
    assert with_saved_params(default_params(), {}, tmp_path / "none.json") == (default_params(), "")


def test_a_saved_apply_is_a_dry_run_unless_the_notebook_confirms(tmp_path: Path) -> None:
    saved = _save(tmp_path / "params.json", apply_fixes=True, confirm_apply=True)
    params, line = with_saved_params(default_params(), {}, saved)
    assert params["apply_fixes"] is False and params["confirm_apply"] is False
    assert "set confirm_apply = True in this notebook" in line
    params, _ = with_saved_params({**default_params(), "confirm_apply": True}, {}, saved)
    assert params["apply_fixes"] is True and params["confirm_apply"] is True


def test_a_bad_saved_file_names_the_file_and_the_fix(tmp_path: Path) -> None:
    saved = _save(tmp_path / "params.json", timeout_s=-5)
    with pytest.raises(ConfigError, match=r"params\.json: parameter 'timeout_s' must be between") as info:
        with_saved_params(default_params(), {}, saved)
    assert "correct it with the form in 00_start_here or delete the file" in str(info.value)


def test_status_without_a_sandbox_says_so_and_offers_the_button(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RTBOOK_HOME", str(tmp_path / "home"))
    status = TargetStatus(default_params())
    assert status.running is False
    assert str(status).startswith("No sandbox is running. Start it with the button below")
    assert status.start_button.layout.display is None and not status.start_button.disabled
    assert "rtbook-status-down" in status.html.value
    assert status._repr_mimebundle_()["text/plain"] == str(status)


def test_status_of_a_stack_lists_its_resolved_endpoints(tmp_path: Path) -> None:
    from tests.conftest import CORPUS, require

    official = CORPUS / "official" / "2026-09-1f37f2a"
    require(official.is_dir(), f"corpus not found at {official}")
    import shutil

    stack = tmp_path / "stack"
    shutil.copytree(official, stack)
    shutil.copy(stack / "env.example", stack / ".env")
    status = TargetStatus({**default_params(), "target_kind": "stack", "stack_dir": str(stack),
                           "api_url": "http://localhost:8000"})
    assert status.running is True and status.start_button.layout.display == "none"
    text = str(status)
    assert "gateway (api_url): http://localhost:8000" in text and "tenant: realtime-dev" in text
    missing = TargetStatus({**default_params(), "target_kind": "stack", "stack_dir": str(tmp_path / "nope")})
    assert missing.running is False and "is not a directory" in str(missing)


def test_rtbook_errors_show_as_one_red_line_in_ipython(monkeypatch: pytest.MonkeyPatch) -> None:
    from IPython.testing.globalipapp import get_ipython

    shell = get_ipython()
    assert shell.custom_exceptions == (), "no custom handler: trio and others warn when one is installed"
    shown: list[list[str]] = []
    monkeypatch.setattr(shell, "_showtraceback", lambda etype, value, stb: shown.append(stb))  # ipykernel sends this
    result = shell.run_cell(
        "from rtbook.exceptions import ConfigError\n"
        "def deep():\n"
        "    raise ConfigError(\"no running sandbox: x does not exist; start one with 'rtbook sandbox up'\")\n"
        "deep()\n"
    )
    assert isinstance(result.error_in_exec, ConfigError)
    assert shown == [["\x1b[1;31mConfigError\x1b[0m: no running sandbox: x does not exist; "
                      "start one with 'rtbook sandbox up'"]]
    shown.clear()
    shell.run_cell("raise ValueError('a bug')")  # not rtbook's: the full traceback stays
    assert len(shown) == 1 and len(shown[0]) > 1


def test_status_warns_when_the_installed_notebooks_run_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rtbook.runbook.notebooks import notebook_dir

    monkeypatch.setenv("RTBOOK_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(notebook_dir())  # where JupyterLab runs a notebook opened from the package
    status = TargetStatus(default_params())
    assert "Running in place" in str(status) and "rtbook notebooks copy" in str(status)
    assert "rtbook-in-place" in status.html.value
    monkeypatch.chdir(tmp_path)
    assert "Running in place" not in TargetStatus(default_params()).refresh()
