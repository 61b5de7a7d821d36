"""pyproject.toml is the single source of dependencies (environment.yml mirrors it); the wheel holds what runs."""

import re
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

from rtbook.runbook.notebooks import NOTEBOOKS
from tests.conftest import ROOT
from tests.packaging_support import build_wheel


def _norm(req: str) -> str:
    return re.sub(r"\s+", "", req).lower()


def test_environment_yml_mirrors_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_norm(r) for r in project["dependencies"]}
    wanted |= {_norm(r) for r in project["optional-dependencies"]["dev"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_block = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    have = {_norm(r) for r in pip_block if not r.startswith("-e")}
    assert have == wanted, f"only in environment.yml: {have - wanted}; only in pyproject: {wanted - have}"
    assert any(p.startswith("python") for p in env["dependencies"] if isinstance(p, str))


def test_public_api_is_sorted_and_importable():
    import rtbook

    assert list(rtbook.__all__) == sorted(rtbook.__all__)
    for name in rtbook.__all__:
        assert getattr(rtbook, name) is not None


# ------------------------------------------------------------------ the wheel's contents


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """rtbook's wheel, built once for this module (a few seconds, offline)."""
    return build_wheel(tmp_path_factory.mktemp("wheel"))


def _names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        return set(zf.namelist())


def _tracked(folder: Path) -> set[str]:
    return {
        p.relative_to(ROOT).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and ".ipynb_checkpoints" not in p.parts
    }


def test_wheel_ships_the_notebooks_byte_for_byte(wheel: Path):
    names = _names(wheel)
    with zipfile.ZipFile(wheel) as zf:
        for nb in NOTEBOOKS:
            member = f"rtbook/notebooks/{nb.name}.ipynb"
            assert member in names, f"{member} missing from the wheel"
            assert zf.read(member) == (ROOT / member).read_bytes(), f"{member} differs from the tracked notebook"
    shipped = {n for n in names if n.startswith("rtbook/notebooks/")}
    assert shipped == {f"rtbook/notebooks/{nb.name}.ipynb" for nb in NOTEBOOKS}, (
        "only the .ipynb ship: the paired .py and jupytext.toml are for reviews in the repository"
    )


def test_wheel_ships_every_module_the_data_and_py_typed(wheel: Path):
    names = _names(wheel)
    assert "rtbook/py.typed" in names
    data = _tracked(ROOT / "rtbook" / "data")
    assert data, "rtbook/data/ is empty in this checkout"
    assert data <= names, f"data files missing from the wheel: {sorted(data - names)}"
    modules = {n for n in _tracked(ROOT / "rtbook") if n.endswith(".py") and not n.startswith("rtbook/notebooks/")}
    assert modules <= names, f"modules missing from the wheel: {sorted(modules - names)}"
    assert {n.split("/")[0] for n in names} == {"rtbook", "rtbook-0.1.0.dist-info"}, "nothing but the package"


def test_wheel_declares_the_rtbook_command(wheel: Path):
    with zipfile.ZipFile(wheel) as zf:
        entry_points = zf.read("rtbook-0.1.0.dist-info/entry_points.txt").decode()
    assert "[console_scripts]" in entry_points
    assert "rtbook = rtbook.cli:main" in entry_points
