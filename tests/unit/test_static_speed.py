"""What keeps ``rtbook check --stack`` fast, tested as mechanisms.

No wall-time assertion here (a timed test on a shared machine is a flaky test, not a benchmark):
bench/speed_bench.py measures. These tests pin the mechanisms the figures rest on: a file check
imports none of the live-check dependencies, every stack file is parsed once per Stack, the
registry imports a check module only when one of its checks is selected, and libyaml's loader
gives exactly what PyYAML's pure-Python loader gives.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from rtbook.config.stack import Stack, _construct_override, _construct_reset
from rtbook.config.yamlfile import load_yaml
from rtbook.exceptions import ConfigError, InputError
from rtbook.registry import areas_for, register, run_checks
from rtbook.target import Target
from tests.conftest import ROOT, require

OFFICIAL_2026 = "official/2026-09-1f37f2a"
OFFICIAL_2025 = "official/2025-11-f8a85e7"
# What only the live checks (database, Phoenix sessions, Docker) and the runner use.
LIVE_ONLY = ("sqlalchemy", "psycopg", "docker", "websocket", "aiohttp", "papermill", "nbclient", "nbformat",
             "jupyter_client", "rtbook.seeding", "rtbook.sandbox", "rtbook.clients.db", "rtbook.clients.phoenix",
             "rtbook.checks.db", "rtbook.checks.tenant", "rtbook.checks.gateway", "rtbook.checks.realtime")


def _stack_copy(src: Path, dest: Path, extra_env: str = "") -> Path:
    shutil.copytree(src, dest)
    (dest / ".env").write_text((src / "env.example").read_text() + extra_env)
    return dest


@pytest.fixture
def official(corpus: Path, tmp_path: Path) -> Path:
    return _stack_copy(corpus / OFFICIAL_2026, tmp_path / "stack")


_PROBE = """
import json, sys
from rtbook.cli import main
code = main(sys.argv[1:-1])
with open(sys.argv[-1], "w") as fh:
    json.dump({"code": code, "modules": sorted(sys.modules)}, fh)
"""


def _cli_modules(argv: list[str], tmp_path: Path) -> tuple[int, str, list[str]]:
    """Run ``rtbook <argv>`` in a fresh interpreter; its exit code, stdout and every module it imported."""
    out = tmp_path / "modules.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", _PROBE, *argv, str(out)], capture_output=True, text=True,
                          env=env, timeout=120, check=False)
    assert out.exists(), proc.stderr
    data = json.loads(out.read_text())
    return int(data["code"]), proc.stdout, list(data["modules"])


def _live_only(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == p or m.startswith(p + ".") for p in LIVE_ONLY)]


@pytest.mark.parametrize("variant", ["envoy", "kong"])
def test_a_file_check_imports_no_live_dependency(official: Path, tmp_path: Path, variant: str) -> None:
    if variant == "kong":
        with (official / ".env").open("a") as fh:
            fh.write("\nCOMPOSE_FILE=docker-compose.yml:docker-compose.kong.yml\n")
    code, out, modules = _cli_modules(["check", "--stack", str(official), "--no-docker"], tmp_path)
    assert code in (0, 1), out
    # The static areas ran (and the docker.* checks were reported as skipped, from their module) ...
    assert "compose.realtime.tenant_consistency" in out and f"{variant}.parse" in out
    assert "[SKIP] docker.engine" in out
    # ... without importing what only the live checks need.
    assert _live_only(modules) == []
    assert "yaml" in modules and "rtbook.checks.compose" in modules


def test_the_probe_sees_live_imports(official: Path, tmp_path: Path) -> None:
    """The probe above is not blind: selecting a db check imports SQLAlchemy and the db module."""
    _code, _out, modules = _cli_modules(["check", "--stack", str(official), "--no-docker", "--live",
                                         "--only", "db.connect"], tmp_path)
    assert {"sqlalchemy", "rtbook.checks.db"} <= set(_live_only(modules))
    assert "rtbook.checks.realtime" not in modules


# ---------------------------------------------------------------- each file parsed once


def _count_yaml_parses(monkeypatch: pytest.MonkeyPatch) -> collections.Counter[str]:
    """Count every YAML parse by the text parsed (load_yaml calls yaml.load)."""
    parsed: collections.Counter[str] = collections.Counter()
    real = yaml.load

    def counting(stream: Any, Loader: Any) -> Any:
        parsed[stream if isinstance(stream, str) else repr(stream)] += 1
        return real(stream, Loader=Loader)

    monkeypatch.setattr(yaml, "load", counting)
    return parsed


@pytest.mark.parametrize(
    "variant, files",
    [
        # docker-compose.yml; lds, cds and the bootstrap envoy.yaml
        ("envoy", 4),
        # docker-compose.yml + docker-compose.kong.yml; kong.yml
        ("kong", 3),
    ],
)
def test_each_stack_file_is_parsed_once(
    official: Path, monkeypatch: pytest.MonkeyPatch, variant: str, files: int
) -> None:
    if variant == "kong":
        with (official / ".env").open("a") as fh:
            fh.write("\nCOMPOSE_FILE=docker-compose.yml:docker-compose.kong.yml\n")
    parsed = _count_yaml_parses(monkeypatch)
    target = Target(name="stack", stack=Stack.load(official), docker=False)
    report = run_checks(target, exclude=("db.", "tenant.", "gateway.", "realtime."))
    assert len(report) > 20 and report.by_id(f"{variant}.parse").status.value == "pass"
    assert sum(parsed.values()) == files, f"{sum(parsed.values())} parses of {len(parsed)} texts"
    assert max(parsed.values()) == 1


def test_a_gateway_file_error_is_remembered(official: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lds = official / "volumes/api/envoy/lds.template.yaml"
    lds.write_text(lds.read_text().replace("resources:", "resources: [", 1))
    parsed = _count_yaml_parses(monkeypatch)
    stack = Stack.load(official)
    from rtbook.config.envoy import load_envoy
    from rtbook.config.gateway import realtime_upstream

    for _ in range(3):
        with pytest.raises(InputError, match=r"lds.template.yaml: YAML syntax error at line \d+"):
            load_envoy(stack)
    assert "YAML syntax error" in realtime_upstream(stack).error
    assert sum(parsed.values()) == 2  # the compose file, then the LDS file once (the parse stops there)


# ---------------------------------------------------------------- the registry imports by area


@pytest.mark.parametrize(
    "only, exclude, areas",
    [
        ((), (), ["compose", "env", "kong", "envoy", "docker", "tenant", "db", "gateway", "realtime", "lb", "cluster"]),
        (("kong.",), (), ["kong"]),
        (("realtime.health",), (), ["realtime"]),
        (("e",), (), ["env", "envoy"]),
        (("env",), (), ["env", "envoy"]),
        (("env.",), (), ["env"]),
        (("realtime.join", "realtime.broadcast"), (), ["realtime"]),
        ((), ("db.", "tenant.", "gateway.", "realtime."), ["compose", "env", "kong", "envoy", "docker", "lb",
                                                           "cluster"]),
        # an exclude that removes only some ids of an area keeps the area
        (("compose.",), ("compose.realtime.",), ["compose"]),
        (("nothing.",), (), []),
    ],
)
def test_areas_for(only: tuple[str, ...], exclude: tuple[str, ...], areas: list[str]) -> None:
    assert areas_for(only, exclude) == areas


def test_a_check_module_registers_only_its_own_area() -> None:
    def stray(target: Target, cid: str) -> Any:
        raise AssertionError("never called")

    stray.__module__ = "rtbook.checks.kong"
    with pytest.raises(ConfigError, match=r"registered in rtbook\.checks\.kong; put it in rtbook\.checks\.compose"):
        register("compose.stray", "A check in the wrong module")(stray)


def test_listing_still_imports_every_area(tmp_path: Path) -> None:
    code, out, modules = _cli_modules(["checks"], tmp_path)
    assert code == 0
    areas = {line.split(".", 1)[0] for line in out.splitlines() if line.strip()}
    assert areas == {"compose", "env", "kong", "envoy", "docker", "tenant", "db", "gateway", "realtime", "lb",
                     "cluster"}
    assert "rtbook.checks.realtime" in modules


# ---------------------------------------------------------------- libyaml gives what PyYAML gives


def _loaders() -> tuple[type[Any], type[Any]]:
    """(pure-Python, libyaml) compose loaders with the same !override/!reset constructors."""
    require(hasattr(yaml, "CSafeLoader"), "PyYAML without libyaml (no yaml.CSafeLoader)")

    def tagged(base: type[Any]) -> type[Any]:
        cls = type(f"Compose{base.__name__}", (base,), {})
        cls.add_constructor("!override", _construct_override)
        cls.add_constructor("!reset", _construct_reset)
        return cls

    return tagged(yaml.SafeLoader), tagged(yaml.CSafeLoader)


def _outcome(text: str, path: Path, loader: type[Any]) -> Any:
    """The data, or where the error is (the wording of the problem differs between the two parsers)."""
    try:
        return ("ok", load_yaml(text, path, loader=loader))
    except InputError as exc:
        return ("error", str(exc).split(": YAML syntax error", 1)[-1].split(":", 1)[0])


def test_libyaml_and_pure_python_agree_on_the_corpus(corpus: Path) -> None:
    py, c = _loaders()
    files = sorted(p for p in corpus.rglob("*") if p.suffix in (".yml", ".yaml") and p.is_file())
    assert len(files) >= 15
    for path in files:
        text = path.read_text(encoding="utf-8-sig")
        assert _outcome(text, path, py) == _outcome(text, path, c), path


@pytest.mark.parametrize(
    "text",
    [
        # YAML 1.1 quirks compose files rely on (or trip over)
        "a: on\nb: yes\nc: off\nd: no\ne: y\nf: 0o14\ng: 014\nh: 0x1F\ni: 1_000\nj: 1:20\n",
        "k: .inf\nl: ~\nm: 2001-12-14\nn: 2001-12-14t21:59:43.10-05:00\no: =\np: -.5e+3\n",
        "base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\n",
        "services:\n  a:\n    ports: !override ['8000:8000']\n    environment: !reset {}\n    command: !reset null\n",
        "services:\n  a:\n    volumes: !override\n      - ./x:/y\n    labels: !reset\n",
        "'quoted': \"\\u00e9\\t\"\nplain: caf\u00e9\nblock: |\n  line 1\n  line 2\nfolded: >-\n  a\n  b\n",
        "k: 'it''s'\nlist: [a, 'b', \"c\", 1, 1.5, true, null]\n",
    ],
)
def test_libyaml_and_pure_python_agree_on_quirks(text: str) -> None:
    py, c = _loaders()
    assert _outcome(text, Path("x.yml"), py) == _outcome(text, Path("x.yml"), c)


@pytest.mark.parametrize(
    "text, where",
    [
        ("resources:\n  - name: [unclosed\n", "line 3, column 1"),
        ("services:\n  a: !unknown x\n", "line 2, column 6"),
        ("a: b\n\tc: d\n", "line 2, column 1"),
        ("- a\n b: c\n", "line 2, column 3"),
        ("x: *nope\n", "line 1, column 4"),
    ],
)
def test_yaml_errors_name_file_line_and_column_with_either_loader(text: str, where: str) -> None:
    for loader in _loaders():
        with pytest.raises(InputError) as err:
            load_yaml(text, "dir/file.yml", loader=loader)
        message = str(err.value)
        assert message.startswith(f"dir/file.yml: YAML syntax error at {where}: "), message
        assert "\n" not in message


def test_unreadable_characters_are_an_input_error() -> None:
    for loader in _loaders():
        with pytest.raises(InputError, match=r"^f\.yml: not valid YAML: unacceptable character #x0007"):
            load_yaml("a: \x07\n", "f.yml", loader=loader)
