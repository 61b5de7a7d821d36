"""Local folders in a record are replaced by placeholders, whole path components only."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from rtbook.runbook.record import _path_replacements, _scrub_text
from rtbook.secrets import Redactor


@pytest.fixture
def paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    monkeypatch.setenv("RTBOOK_HOME", str(tmp_path / "rthome"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "stack").mkdir()
    staging = Path(tempfile.mkdtemp(prefix="rtbook-run-"))
    try:
        return _path_replacements(staging, tmp_path / "nbs", {"target_kind": "stack",
                                                             "stack_dir": str(tmp_path / "stack")})
    finally:
        staging.rmdir()


def test_each_folder_gets_its_placeholder(tmp_path: Path, paths: list[tuple[str, str]]) -> None:
    text = " ".join([f"{tmp_path}/stack/.env", f"{tmp_path}/rthome/sandbox/state.json", f"{tmp_path}/nbs/01.ipynb",
                     f"{Path.home()}/.pyenv/x.py", f"{Path(__file__).resolve().parents[2]}/rtbook/cli/run.py",
                     f"{tempfile.gettempdir()}/rtbook-pg-1/data", f"{tmp_path}/outputs/run1"])
    assert _scrub_text(text, Redactor(), paths).split() == [
        "<stack>/.env", "$RTBOOK_HOME/sandbox/state.json", "notebooks/01.ipynb", "~/.pyenv/x.py",
        "<rtbook>/rtbook/cli/run.py", "$TMPDIR/rtbook-pg-1/data", "./outputs/run1"]


def test_only_whole_components_are_replaced(tmp_path: Path, paths: list[tuple[str, str]]) -> None:
    tmp = tempfile.gettempdir()
    text = f"{tmp_path}/stackx/a /var{tmp}/b {tmp_path}/stack.bak"
    out = _scrub_text(text, Redactor(), paths)
    assert "<stack>" not in out and "$TMPDIR" not in out.split()[1]
    assert out.split()[1] == f"/var{tmp}/b"
