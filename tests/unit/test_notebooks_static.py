"""The committed notebooks: thin, output-free, parameterised from the one schema, gated."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import pytest

from rtbook.runbook.notebooks import NOTEBOOKS, notebook_dir
from rtbook.runbook.params import PARAMS, parameters_cell_source
from tests.conftest import ROOT

# The tracked notebooks of this checkout (what the wheel ships).
NB_DIR = ROOT / "rtbook" / "notebooks"
NAMES = [nb.name for nb in NOTEBOOKS]


def _load(name: str) -> dict[str, Any]:
    return dict(json.loads((NB_DIR / f"{name}.ipynb").read_text()))


def _source(cell: dict[str, Any]) -> str:
    src = cell["source"]
    return "".join(src) if isinstance(src, list) else str(src)


def _code(nb: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def test_notebook_dir_is_the_folder_inside_the_package() -> None:
    import rtbook

    assert notebook_dir() == Path(rtbook.__file__).resolve().parent / "notebooks"
    assert [p.stem for p in sorted(notebook_dir().glob("*.ipynb"))] == NAMES


def test_every_notebook_is_listed_and_every_listed_one_exists() -> None:
    on_disk = sorted(p.stem for p in NB_DIR.glob("*.ipynb"))
    assert on_disk == sorted(NAMES)
    assert sorted(NAMES) == NAMES, "run order follows the numbers"


@pytest.mark.parametrize("name", NAMES)
def test_committed_without_outputs(name: str) -> None:
    nb = _load(name)
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    assert "papermill" not in nb["metadata"] and "widgets" not in nb["metadata"]
    for cell in _code(nb):
        assert cell["outputs"] == [], f"{name}: outputs committed"
        assert cell["execution_count"] is None, f"{name}: execution count committed"
        assert "papermill" not in cell["metadata"]


@pytest.mark.parametrize("name", NAMES)
def test_parameters_cell_first_tagged_and_documented(name: str) -> None:
    code = _code(_load(name))
    first = code[0]
    assert first["metadata"].get("tags") == ["parameters"]
    assert sum("parameters" in c["metadata"].get("tags", []) for c in code) == 1
    assert _source(first) == parameters_cell_source(), f"{name}: regenerate the parameters cell from PARAMS"
    lines = [ln for ln in _source(first).splitlines() if not ln.startswith("#")]
    assert len(lines) == len(PARAMS)
    for line, param in zip(lines, PARAMS, strict=True):
        assert re.match(rf"^{param.name}: {param.type_name} = .+  # .+$", line), line
        assert line.count("=") == 1, "papermill skips lines with two '='"


@pytest.mark.parametrize("name", NAMES)
def test_second_cell_builds_the_target_with_one_call(name: str) -> None:
    second = _source(_code(_load(name))[1])
    assert f'rtbook.runbook.start("{name}", globals()' in second


@pytest.mark.parametrize("name", NAMES)
def test_code_cells_are_thin(name: str) -> None:
    for cell in _code(_load(name))[1:]:
        src = _source(cell)
        assert len(src.splitlines()) <= 5, f"{name}: cell too long:\n{src}"
        tree = ast.parse(src)
        for node in ast.walk(tree):
            assert not isinstance(
                node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.For | ast.While | ast.Lambda
            ), f"{name}: logic belongs in rtbook, not in a cell:\n{src}"
        calls = [
            n for n in ast.walk(tree)
            if isinstance(n, ast.Call) and not (isinstance(n.func, ast.Name) and n.func.id == "globals")
        ]
        assert len(calls) <= 1, f"{name}: one rtbook call per cell:\n{src}"


@pytest.mark.parametrize("name", NAMES)
def test_every_code_step_is_explained_by_markdown(name: str) -> None:
    cells = _load(name)["cells"]
    assert cells[0]["cell_type"] == "markdown" and _source(cells[0]).startswith("# ")
    for i, cell in enumerate(cells):
        if cell["cell_type"] == "code" and i > 0 and "parameters" not in cell["metadata"].get("tags", []):
            assert cells[i - 1]["cell_type"] == "markdown", f"{name}: code cell {i} has no explanation"


@pytest.mark.parametrize("name", NAMES)
def test_gate_cell_is_last(name: str) -> None:
    nb = _load(name)
    assert nb["cells"][-1]["cell_type"] == "code"
    assert _source(nb["cells"][-1]).strip() == "run.gate()"


@pytest.mark.parametrize("name", [n for n in NAMES if n not in ("00_start_here", "05_troubleshooting")])
def test_check_steps_say_when_it_fails_and_link_the_fixing_notebook(name: str) -> None:
    cells = _load(name)["cells"]
    for i, cell in enumerate(cells):
        if cell["cell_type"] == "code" and "run.checks(" in _source(cell) and "skip_done" not in _source(cell):
            text = _source(cells[i - 1])
            assert "fails" in text, f"{name}: step before cell {i} does not say what to do when it fails"
            assert re.search(r"\]\(0\d_[a-z_]+\.ipynb\)", text), f"{name}: no link to the fixing notebook"


def test_notebooks_use_the_check_areas_from_the_brief() -> None:
    sources = {n: "\n".join(_source(c) for c in _code(_load(n))) for n in NAMES}
    for prefix in ('"compose."', '"env."', '"docker."', '"realtime.health"'):
        assert prefix in sources["01_setup"]
    for prefix in ('"tenant."', '"db."', "seeding_plan()", "apply_plan(plan)"):
        assert prefix in sources["02_tenant_seeding"]
    for prefix in ('"kong."', '"envoy."', '"gateway."'):
        assert prefix in sources["03_kong_routing"]
    assert '"realtime.' in sources["04_subscription_tests"]
    assert "run.troubleshoot()" in sources["05_troubleshooting"]
    assert "ParamForm" in sources["00_start_here"]


def test_links_between_notebooks_resolve() -> None:
    for name in NAMES:
        for cell in _load(name)["cells"]:
            for link in re.findall(r"\]\(([^)]+\.ipynb)\)", _source(cell)):
                assert (NB_DIR / link).is_file(), f"{name}: broken link {link}"


def test_troubleshooting_table_matches_the_symptom_catalogue() -> None:
    from rtbook.runbook.troubleshoot import SYMPTOMS

    text = _source(_load("05_troubleshooting")["cells"][0])
    rows = [ln for ln in text.splitlines() if ln.startswith("| ") and "`" in ln]
    assert len(rows) == len(SYMPTOMS), "one table row per symptom"
    for symptom, row in zip(SYMPTOMS, rows, strict=True):
        assert f"(`{symptom.key}`)" in row, f"row for {symptom.key} missing or out of order: {row}"
        named = re.findall(r"`([a-z0-9_]+\.[a-z0-9_.]+)`", row)
        assert tuple(named) == symptom.deciding, f"05's row for {symptom.key} must list its deciding checks in order"
