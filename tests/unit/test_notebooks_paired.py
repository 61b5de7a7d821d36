"""Each notebook's paired py:percent file says the same thing, and the .ipynb stays output-free.

Reviewers read the ``.py`` diff; ``rtbook run``, papermill and JupyterLab open the ``.ipynb``. The
two must never disagree: after changing either, run ``jupytext --sync rtbook/notebooks/*.ipynb``.
"""

from __future__ import annotations

import importlib.util
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

from rtbook.runbook.notebooks import NOTEBOOKS
from tests.conftest import ROOT, require

NB_DIR = ROOT / "rtbook" / "notebooks"
NAMES = [nb.name for nb in NOTEBOOKS]
SYNC = "run: jupytext --sync rtbook/notebooks/*.ipynb"


def _jupytext() -> Any:
    require(importlib.util.find_spec("jupytext") is not None, "jupytext is not installed (pip install -e '.[dev]')")
    import jupytext

    return jupytext


def _cells(nb: Any) -> list[tuple[str, str, list[str]]]:
    return [(c.cell_type, c.source.rstrip("\n"), list(c.metadata.get("tags", []))) for c in nb.cells]


def test_the_folder_is_paired_with_py_percent() -> None:
    config = tomllib.loads((NB_DIR / "jupytext.toml").read_text())
    assert config["formats"] == "ipynb,py:percent"
    assert sorted(p.stem for p in NB_DIR.glob("*.py")) == NAMES, "one .py per notebook, and no other .py"


@pytest.mark.parametrize("name", NAMES)
def test_ipynb_and_py_agree(name: str) -> None:
    jupytext = _jupytext()
    ipynb = jupytext.read(NB_DIR / f"{name}.ipynb")
    text = jupytext.read(NB_DIR / f"{name}.py", fmt="py:percent")
    left, right = _cells(ipynb), _cells(text)
    assert len(left) == len(right), f"{name}: {len(left)} cells in the .ipynb, {len(right)} in the .py; {SYNC}"
    for i, (a, b) in enumerate(zip(left, right, strict=True)):
        assert a == b, f"{name}: cell {i} differs between {name}.ipynb and {name}.py; {SYNC}"


@pytest.mark.parametrize("name", NAMES)
def test_ipynb_has_no_outputs_and_no_execution_counts(name: str) -> None:
    nb = json.loads((NB_DIR / f"{name}.ipynb").read_text())
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [], f"{name}: outputs committed in cell {i}"
            assert cell["execution_count"] is None, f"{name}: execution count committed in cell {i}"
        assert "attachments" not in cell or not cell["attachments"], f"{name}: attachment in cell {i}"
    assert "jupytext" not in nb["metadata"], f"{name}: pairing lives in jupytext.toml, not in the notebook"


def test_a_py_edit_that_was_not_synced_is_caught(tmp_path: Path) -> None:
    """The agreement test is not vacuous: a changed line in the .py makes the cells differ."""
    jupytext = _jupytext()
    name = NAMES[1]
    edited = tmp_path / f"{name}.py"
    source = (NB_DIR / f"{name}.py").read_text()
    assert "run.gate()" in source
    edited.write_text(source.replace("run.gate()", "run.gate(strict=True)"))
    assert _cells(jupytext.read(NB_DIR / f"{name}.ipynb")) != _cells(jupytext.read(edited, fmt="py:percent"))
