"""docs/conformance.md stays true: every row has a real source and names a test that exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "conformance.md"
# A source cell names one of the projects read and a version (tag or commit) of it.
PROJECTS = ("supabase/realtime", "Kong/kong", "supabase/supabase-js", "supabase/realtime-js", "supabase/supabase",
            "supabase/realtime-py", "supabase/postgres")
VERSION = re.compile(r"\bv?\d+\.\d+(\.\d+)?\b|@[0-9a-f]{7,40}\b|\b[0-9a-f]{7,40}\b")
TEST_REF = re.compile(r"(tests/[\w/]+\.py)::(\w+)")


def _rows() -> list[tuple[str, list[str]]]:
    """(section, cells) for every body row of every table."""
    rows: list[tuple[str, list[str]]] = []
    section = ""
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
        elif line.startswith("|") and not re.match(r"^\|[\s:|-]+\|$", line) and not line.startswith("| behaviour"):
            rows.append((section, [c.strip() for c in line.strip().strip("|").split("|")]))
    return rows


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}


ROWS = _rows()


def test_every_section_has_rows() -> None:
    sections = [line[3:].strip() for line in DOC.read_text(encoding="utf-8").splitlines() if line.startswith("## ")]
    assert sections, "no sections"
    empty = [s for s in sections if not any(sec == s for sec, _ in ROWS)]
    assert empty == []


@pytest.mark.parametrize("row", ROWS, ids=[f"{s[:20]}:{c[0][:40]}" for s, c in ROWS])
def test_row_is_complete(row: tuple[str, list[str]]) -> None:
    _section, cells = row
    assert len(cells) == 5, f"expected 5 cells (behaviour, source, versions, stand-in, test), got {cells}"
    behaviour, source, _versions, stand_in, test = cells
    assert behaviour and stand_in, cells
    assert any(p in source for p in PROJECTS), f"source names no project read: {source!r}"
    assert VERSION.search(source), f"source names no tag or commit: {source!r}"
    refs = TEST_REF.findall(test)
    assert refs, f"no tests/...py::test_name in {test!r}"
    for path, name in refs:
        file = ROOT / path
        assert file.is_file(), f"{path} does not exist"
        assert name in _test_names(file), f"{path} has no test {name}"
