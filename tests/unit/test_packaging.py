"""pyproject.toml is the single source of dependencies; environment.yml must mirror it."""

import re
import tomllib

import yaml

from tests.conftest import ROOT


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
