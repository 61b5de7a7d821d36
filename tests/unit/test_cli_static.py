"""``rtbook check`` on static stacks: exit codes, formats, ``--only`` and one-line errors on bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from rtbook.cli import main
from tests.conftest import ROOT

OFFICIAL_2026 = "official/2026-09-1f37f2a"


@pytest.fixture(autouse=True)
def pinned_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The corpus demo keys expire on 2027-01-09: judge them as of 2026-11-18 so verdicts stay stable."""
    monkeypatch.setattr("rtbook.checks._common.now", lambda: 1795000000.0)


@pytest.fixture
def good_stack(corpus: Path, tmp_path: Path) -> Path:
    d = tmp_path / "stack"
    shutil.copytree(corpus / OFFICIAL_2026, d)
    shutil.copy(d / "env.example", d / ".env")
    return d


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_good_stack_exits_0(good_stack: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["check", "--stack", str(good_stack), "--no-docker"], capsys)
    assert code == 0, out + err
    assert "compose.realtime.tenant_consistency" in out
    assert " 0 failed" in out.splitlines()[-1]


def test_failing_stack_exits_1(good_stack: Path, capsys: pytest.CaptureFixture[str]) -> None:
    compose = good_stack / "docker-compose.yml"
    compose.write_text(compose.read_text().replace("container_name: realtime-dev.supabase-realtime",
                                                   "container_name: supabase-realtime"))
    code, out, _ = run(["check", "--stack", str(good_stack), "--no-docker", "--only", "compose."], capsys)
    assert code == 1
    assert "[FAIL] compose.realtime.tenant_consistency" in out
    assert "remedy: Set container_name: realtime-dev.supabase-realtime" in out


def test_json_shape(good_stack: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["check", "--stack", str(good_stack), "--no-docker", "--format", "json"], capsys)
    assert code == 0
    data = json.loads(out)
    assert set(data) == {"results", "summary"}
    assert set(data["summary"]) == {"pass", "warn", "fail", "skip", "error"}
    assert data["summary"]["fail"] == 0
    first = data["results"][0]
    assert {"id", "status", "title", "summary", "detail", "remedy", "evidence"} <= set(first)
    ids = [r["id"] for r in data["results"]]
    assert "compose.realtime.present" in ids and "env.api_keys" in ids
    assert sum(data["summary"].values()) == len(data["results"])


def test_junit_and_output_file(good_stack: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "report.xml"
    code, out, _ = run(["check", "--stack", str(good_stack), "--no-docker", "--format", "junit",
                        "--output", str(target)], capsys)
    assert code == 0
    assert "passed" in out
    root = ET.fromstring(target.read_text())
    assert root.tag == "testsuites"
    names = [tc.get("name") for tc in root.iter("testcase")]
    assert "compose.realtime.seed_self_host" in names


def test_only_prefix(good_stack: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["check", "--stack", str(good_stack), "--no-docker", "--only", "compose.",
                        "--format", "json"], capsys)
    assert code == 0
    ids = {r["id"] for r in json.loads(out)["results"]}
    assert ids and all(i.startswith("compose.") for i in ids)
    assert "compose.realtime.healthcheck" in ids


def test_compose_env_flags(good_stack: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["check", "--compose", str(good_stack / "docker-compose.yml"),
                        "--compose", str(good_stack / "docker-compose.kong.yml"),
                        "--env", str(good_stack / ".env"), "--no-docker", "--only", "compose.",
                        "--only", "kong.", "--format", "json"], capsys)
    assert code == 0, out
    results = {r["id"]: r for r in json.loads(out)["results"]}
    assert results["kong.realtime_ws"]["status"] == "pass"


def _bad_inputs(tmp_path: Path, good: Path) -> dict[str, tuple[list[str], str]]:
    cases: dict[str, tuple[list[str], str]] = {}
    cases["missing file"] = (["--compose", str(tmp_path / "nope.yml")], "nope.yml: compose file not found")
    cases["missing dir"] = (["--stack", str(tmp_path / "nodir")], "stack directory not found")
    syntax = tmp_path / "syntax.yml"
    syntax.write_text("services:\n  realtime:\n    image: [\n")
    cases["yaml syntax"] = (["--compose", str(syntax)], "YAML syntax error at line")
    listed = tmp_path / "list.yml"
    listed.write_text("- realtime\n- kong\n")
    cases["list"] = (["--compose", str(listed)], "top level is a list")
    junk = tmp_path / "junk.yml"
    junk.write_bytes(os.urandom(64) + b"\x00\x01")
    cases["binary"] = (["--compose", str(junk)], "binary data")
    empty_env = tmp_path / "empty.env"
    empty_env.write_text("")
    cases["empty env"] = (["--compose", str(good / "docker-compose.yml"), "--env", str(empty_env)],
                          "defines no variables")
    return cases


@pytest.mark.parametrize("case", ["missing file", "missing dir", "yaml syntax", "list", "binary", "empty env"])
def test_bad_input_exit_2_one_line(good_stack: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   case: str) -> None:
    args, needle = _bad_inputs(tmp_path, good_stack)[case]
    code, out, err = run(["check", *args, "--no-docker"], capsys)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert needle in lines[0]
    assert "Traceback" not in err


def test_empty_env_in_stack_dir(good_stack: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (good_stack / ".env").write_text("\n# nothing here\n")
    code, _, err = run(["check", "--stack", str(good_stack), "--no-docker"], capsys)
    assert code == 2 and ".env: the env file defines no variables" in err


def test_subprocess_module_entry(good_stack: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # env.api_keys is left out: a separate process cannot have its clock pinned (demo keys expire 2027-01-09).
    ok = subprocess.run([sys.executable, "-m", "rtbook", "check", "--stack", str(good_stack), "--no-docker",
                         "--only", "compose.", "--only", "env.default_secrets"],
                        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "compose.realtime.present" in ok.stdout
    bad = tmp_path / "bad.yml"
    bad.write_text("services: [a\n")
    res = subprocess.run([sys.executable, "-m", "rtbook", "check", "--compose", str(bad), "--no-docker"],
                         capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert "bad.yml: YAML syntax error" in res.stderr


def test_checks_lists_static_ids(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["checks", "--only", "compose.", "--only", "env."], capsys)
    assert code == 0
    for cid in ("compose.realtime.present", "compose.realtime.tenant_consistency", "compose.realtime.seed_self_host",
                "compose.realtime.jwt_secret", "compose.realtime.metrics_jwt_secret", "compose.realtime.db_enc_key",
                "compose.realtime.secret_key_base", "compose.realtime.search_path", "compose.realtime.db_connection",
                "compose.realtime.healthcheck", "compose.realtime.network", "env.api_keys", "env.default_secrets"):
        assert cid in out


def test_relative_stack_path_gives_the_same_verdicts(
    good_stack: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Kong's entrypoint mount is resolved against the stack folder, not the working directory.
    (good_stack / ".env").write_text(
        (good_stack / ".env").read_text() + "\nCOMPOSE_FILE=docker-compose.yml:docker-compose.kong.yml\n"
    )
    absolute = run(["check", "--stack", str(good_stack), "--no-docker", "--format", "json"], capsys)
    monkeypatch.chdir(good_stack.parent.parent)
    relative = run(["check", "--stack", str(good_stack.relative_to(good_stack.parent.parent)), "--no-docker",
                    "--format", "json"], capsys)
    assert relative[0] == absolute[0] == 0, relative[1]
    statuses = lambda out: {r["id"]: r["status"] for r in json.loads(out)["results"]}  # noqa: E731
    assert statuses(relative[1]) == statuses(absolute[1])
    assert statuses(relative[1])["kong.placeholders"] == "pass"
