"""The guided form without a browser: validation as you type, saving, running, the guarded apply."""

from __future__ import annotations

import html
import json
import shutil
from pathlib import Path

import pytest

from rtbook.exceptions import ConfigError
from rtbook.runbook.params import PARAMS, load_params_file, saved_params, validate_params
from rtbook.runbook.widgets import STEPS, ParamForm, params_table
from tests.conftest import CORPUS, require

OFFICIAL = CORPUS / "official" / "2026-09-1f37f2a"


def test_form_validates_as_you_type(tmp_path: Path) -> None:
    form = ParamForm(params_path=tmp_path / "params.json")
    assert "rtbook-valid" in form.status.value and not form.run_button.disabled
    form.widgets["api_url"].value = "localhost:8000"
    assert "rtbook-invalid" in form.status.value
    assert "must start with http:// or https://" in form.status.value
    assert form.run_button.disabled and form.save_button.disabled
    assert form.save() is None and not (tmp_path / "params.json").exists()
    form.widgets["api_url"].value = "http://localhost:8000"
    assert "rtbook-valid" in form.status.value and not form.run_button.disabled


def test_form_refuses_a_token_typed_into_a_field() -> None:
    form = ParamForm()
    form.widgets["tenant"].value = "sb_secret_abcdefghijklmnopqrstu"
    assert "secrets are never parameters" in form.status.value
    assert "sb_secret_abcdefghijklmnopqrstu" not in form.status.value


def test_form_saves_the_parameter_set_the_runner_reads(tmp_path: Path) -> None:
    form = ParamForm({"tenant": "t1"}, params_path=tmp_path / "out" / "params.json")
    form.widgets["tables"].value = "public.todos, public.messages"
    saved = form.save()
    assert saved == tmp_path / "out" / "params.json"
    data = load_params_file(saved)
    assert "run_dir" not in data
    params = validate_params(data)
    assert params["tables"] == ["public.todos", "public.messages"] and params["tenant"] == "t1"


def test_saving_never_stores_the_apply_confirmation(tmp_path: Path) -> None:
    form = ParamForm(params_path=tmp_path / "params.json")
    form.widgets["apply_fixes"].value = True
    assert form.run_params() is not None, "in the form, its own Confirm button is the second switch"
    saved = form.save()
    assert saved is not None
    data = json.loads(saved.read_text())
    assert data["apply_fixes"] is True and "confirm_apply" not in data
    assert "without its confirmation" in form.output.outputs[0]["data"]["text/plain"]
    # A headless run from the saved file is refused until it is confirmed there and then.
    with pytest.raises(ConfigError, match="apply_fixes is true but confirm_apply is false"):
        validate_params(load_params_file(saved))
    assert validate_params({**load_params_file(saved), "confirm_apply": True})["apply_fixes"] is True
    # A hand-edited file that does hold the confirmation is not honoured by the notebooks' reader.
    saved.write_text(json.dumps({**data, "confirm_apply": True}))
    reread = saved_params(saved)
    assert reread is not None and reread["apply_fixes"] is True and "confirm_apply" not in reread


def test_saving_into_the_installed_package_is_refused(tmp_path: Path) -> None:
    import rtbook

    inside = Path(rtbook.__file__).parent / "notebooks" / "outputs" / "params.json"
    form = ParamForm(params_path=inside)
    assert form.save() is None and not inside.exists()
    assert "rtbook notebooks copy" in form.output.outputs[0]["data"]["text/plain"]


def test_the_invalid_field_is_marked_and_old_results_are_cleared() -> None:
    form = ParamForm()
    form.output.outputs = ({"output_type": "display_data", "data": {"text/plain": "old table"}, "metadata": {}},)
    form.confirm_button.layout.display = None
    form.widgets["realtime_url"].value = "ws://nowhere"
    assert form.invalid_fields == ["realtime_url"]
    assert form.output.outputs == () and form.confirm_button.layout.display == "none"
    assert form.last_report is None
    form.widgets["realtime_url"].value = ""
    assert form.invalid_fields == [] and "rtbook-valid" in form.status.value


def test_help_texts_are_whole_and_nothing_is_wider_than_the_output() -> None:
    from rtbook.runbook.params import PARAMS

    form = ParamForm()
    rendered = "".join(child.value for field in form.box.children for child in getattr(field, "children", ())
                       if "rtbook-help" in str(getattr(child, "value", "")))
    for p in PARAMS:
        if p.name in form.widgets:
            assert html.escape(p.help) in rendered, p.name
            assert getattr(form.widgets[p.name], "placeholder", "") in ("", "\u200b", "public.messages, public.todos")
    style = form.box.children[0].value
    assert "overflow-x: hidden" in style and "box-sizing: border-box" in style
    assert form.box.layout.overflow == "hidden"


def test_form_refuses_an_out_of_range_timeout_with_the_range() -> None:
    form = ParamForm()
    form.widgets["timeout_s"].value = 7200.0
    assert form.widgets["timeout_s"].value == 7200.0, "the form must not clamp"
    assert "rtbook-invalid" in form.status.value and "0 &lt; t &lt;= 3600" in form.status.value
    assert form.run_params() is None and form.run_button.disabled
    form.widgets["timeout_s"].value = 30.0
    params = form.run_params()
    assert params is not None and params.timeout_s == 30.0


def test_headless_rendering_is_text() -> None:
    form = ParamForm({"tenant": "t1"})
    bundle = form._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert "text view because no widget frontend is attached" in bundle["text/plain"]
    assert 'tenant'.ljust(max(len(p.name) for p in PARAMS) + 2) + '"t1"' in bundle["text/plain"]
    table = params_table({"tenant": "t1"})
    assert "tenant" in str(table) and "<table" in table._repr_html_()


def test_run_shows_the_coloured_report_and_apply_needs_a_plan(tmp_path: Path) -> None:
    require(OFFICIAL.is_dir(), f"corpus not found at {OFFICIAL}")
    stack = tmp_path / "stack"
    shutil.copytree(OFFICIAL, stack)
    shutil.copy(stack / "env.example", stack / ".env")
    form = ParamForm({"target_kind": "stack", "stack_dir": str(stack)})
    form.step.value = "static files only (01 + 03 configuration)"
    report = form.run()
    assert report is not None and len(report) > 3
    assert {r.id.split(".")[0] for r in report} <= {"compose", "env", "kong", "envoy"}
    html = form.output.outputs[0]["data"]["text/html"]
    assert 'class="rtbook-report"' in html and "background:#" in html
    # The published example secrets in env.example are not a pass, and the table shows the remedy.
    flagged = report.by_id("env.default_secrets")
    assert flagged.status.value != "pass" and flagged.remedy
    assert 'class="rtbook-warn"' in html or 'class="rtbook-fail"' in html
    # Without apply_fixes there is no plan and the confirm button stays hidden and disabled.
    assert form.confirm_button.disabled
    assert form.apply() is None
    assert "Nothing to apply" in json.dumps(form.output.outputs)


def test_steps_cover_the_notebooks() -> None:
    prefixes = {p for step in STEPS.values() for p in step}
    assert {"compose.", "env.", "docker.", "tenant.", "db.", "kong.", "envoy.", "gateway.", "realtime."} <= prefixes


@pytest.mark.parametrize("bad", [{"tennant": "x"}, {"jwt_secret": "x"}])
def test_form_refuses_bad_starting_parameters(bad: dict[str, str]) -> None:
    from rtbook.exceptions import ConfigError

    with pytest.raises(ConfigError):
        ParamForm(bad)


def test_form_saves_beside_the_notebook_not_in_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel's working folder is the notebook's (the user's copy): outputs/params.json goes there."""
    monkeypatch.chdir(tmp_path)
    form = ParamForm({"api_url": "http://localhost:8000"})
    assert form.params_path == tmp_path / "outputs" / "params.json"
    assert form.save() == tmp_path / "outputs" / "params.json"
