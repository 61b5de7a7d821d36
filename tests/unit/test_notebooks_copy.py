"""``copy_notebooks`` and ``rtbook notebooks copy``: editable copies, never an overwrite by surprise."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from rtbook.cli import main
from rtbook.exceptions import ConfigError
from rtbook.runbook.notebooks import NOTEBOOKS, copy_notebooks, notebook_dir

NAMES = [f"{nb.name}.ipynb" for nb in NOTEBOOKS]


def test_copies_every_notebook_in_run_order_into_a_new_folder(tmp_path: Path) -> None:
    dest = tmp_path / "a" / "b"
    copies = copy_notebooks(dest)
    assert copies == [dest / name for name in NAMES]
    assert sorted(p.name for p in dest.iterdir()) == NAMES, "only the notebooks, nothing else"
    for copy in copies:
        assert copy.read_bytes() == (notebook_dir() / copy.name).read_bytes()


def test_an_existing_empty_folder_is_fine(tmp_path: Path) -> None:
    assert len(copy_notebooks(tmp_path)) == len(NOTEBOOKS)


def test_copies_are_editable_even_from_a_read_only_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "installed"
    src.mkdir()
    for name in NAMES:
        (src / name).write_text("{}")
        (src / name).chmod(0o444)
    monkeypatch.setattr("rtbook.runbook.notebooks.notebook_dir", lambda: src)
    for copy in copy_notebooks(tmp_path / "mine"):
        assert copy.stat().st_mode & stat.S_IWUSR, f"{copy.name} is not writable"


def test_refuses_to_overwrite_without_force_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "03_kong_routing.ipynb").write_text("my edits")
    with pytest.raises(ConfigError) as err:
        copy_notebooks(tmp_path)
    message = str(err.value)
    assert "03_kong_routing.ipynb" in message and "--force" in message
    assert "\n" not in message
    assert [p.name for p in tmp_path.iterdir()] == ["03_kong_routing.ipynb"], "nothing copied when one file is taken"
    assert (tmp_path / "03_kong_routing.ipynb").read_text() == "my edits"


def test_names_the_first_existing_file_and_counts_the_rest(tmp_path: Path) -> None:
    copy_notebooks(tmp_path)
    more = len(NOTEBOOKS) - 1
    with pytest.raises(ConfigError, match=rf"00_start_here\.ipynb already exists \(and {more} more\); pass --force"):
        copy_notebooks(tmp_path)


def test_force_overwrites(tmp_path: Path) -> None:
    (tmp_path / "01_setup.ipynb").write_text("old")
    (tmp_path / "notes.txt").write_text("mine")
    copies = copy_notebooks(tmp_path, force=True)
    assert (tmp_path / "01_setup.ipynb").read_bytes() == (notebook_dir() / "01_setup.ipynb").read_bytes()
    assert (tmp_path / "notes.txt").read_text() == "mine", "other files are left alone"
    assert len(copies) == len(NOTEBOOKS)


def test_dest_being_a_file_is_a_config_error(tmp_path: Path) -> None:
    target = tmp_path / "file.txt"
    target.write_text("x")
    for force in (False, True):
        with pytest.raises(ConfigError, match="is a file, not a folder"):
            copy_notebooks(target, force=force)
    assert target.read_text() == "x"


def test_a_folder_in_a_notebooks_place_is_a_config_error_even_with_force(tmp_path: Path) -> None:
    (tmp_path / "02_tenant_seeding.ipynb").mkdir()
    with pytest.raises(ConfigError, match=r"02_tenant_seeding\.ipynb is a folder"):
        copy_notebooks(tmp_path, force=True)
    assert not (tmp_path / "00_start_here.ipynb").exists()


def test_a_dest_that_cannot_be_created_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ConfigError, match=r"cannot copy the notebooks into .*sub: Not a directory"):
        copy_notebooks(tmp_path / "file.txt" / "sub")


def test_cli_copy_then_refuse_then_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "nb"
    assert main(["notebooks", "copy", str(dest)]) == 0
    out = capsys.readouterr().out
    assert f"copied {len(NOTEBOOKS)} notebooks to {dest}" in out
    assert f"rtbook run --notebook-dir {dest}" in out
    assert sorted(p.name for p in dest.iterdir()) == NAMES

    (dest / "01_setup.ipynb").write_text("edited")
    assert main(["notebooks", "copy", str(dest)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rtbook: error: ") and len(err.strip().splitlines()) == 1
    assert "--force" in err and "already exists" in err
    assert (dest / "01_setup.ipynb").read_text() == "edited"

    assert main(["notebooks", "copy", str(dest), "--force"]) == 0
    assert (dest / "01_setup.ipynb").read_bytes() == (notebook_dir() / "01_setup.ipynb").read_bytes()


def test_cli_dest_file_and_missing_action_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "f"
    target.write_text("")
    assert main(["notebooks", "copy", str(target)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert main(["notebooks"]) == 2
    assert "copy" in capsys.readouterr().out
    assert main(["notebooks", "copy"]) == 2
    assert "Missing argument 'DIR'" in capsys.readouterr().err
