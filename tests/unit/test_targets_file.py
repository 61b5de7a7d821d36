"""The targets file (``--targets FILE``): every key and value checked at the boundary, secrets refused unechoed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rtbook.bounded import LIMITS
from rtbook.cli import main
from rtbook.config.targets import MAX_TARGETS, SECRET_VARIABLES, TargetSpec, load_targets, parse_targets
from rtbook.exceptions import ConfigError, InputError, InputFileError
from rtbook.report.targets import Combined, TargetRow, report_facts
from rtbook.results import CheckResult, Report, Status

JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJyb2xlIjoiYW5vbiIsImlzcyI6InN1cGFiYXNlIn0."
       "Zq8wX1vR4tY7uI0oP3aSdF6gH9jK2lZx")


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "targets.yml"
    path.write_text(text)
    return path


GOOD = """
parallel: 3
targets:
  - name: east
    region: us-east-1
    sandbox: east
  - name: west
    region: eu-west-1
    stack: ../west
    api_url: https://west.example.com/
    db_url: postgresql://postgres@db.west.example.com:5432/postgres
    tenants: [realtime-dev, realtime-eu]
    env:
      ANON_KEY: WEST_ANON_KEY
      POSTGRES_PASSWORD: WEST_PG_PASSWORD
"""


def test_a_good_file_becomes_typed_specs(tmp_path: Path) -> None:
    parsed = load_targets(_write(tmp_path, GOOD))
    assert parsed.parallel == 3
    east, west = parsed.targets
    assert east == TargetSpec(name="east", region="us-east-1", sandbox="east")
    assert west.stack == (tmp_path.parent / "west").resolve()  # relative to the file, not the working directory
    assert west.tenants == ("realtime-dev", "realtime-eu")
    assert west.env == (("ANON_KEY", "WEST_ANON_KEY"), ("POSTGRES_PASSWORD", "WEST_PG_PASSWORD"))
    assert west.resolve_env({"WEST_ANON_KEY": "a", "WEST_PG_PASSWORD": "b"}) == {"ANON_KEY": "a",
                                                                               "POSTGRES_PASSWORD": "b"}
    with pytest.raises(ConfigError, match="WEST_PG_PASSWORD, which is not set; export WEST_PG_PASSWORD"):
        west.resolve_env({"WEST_ANON_KEY": "a"})


@pytest.mark.parametrize(("text", "message"), [
    ("targets: []", "'targets:' must be a non-empty list"),
    ("- name: a", "a targets file is a mapping with 'targets:'"),
    ("target: [{name: a, sandbox: a}]", "unknown key 'target'; did you mean 'targets'?"),
    ("parallel: 0\ntargets: [{name: a, sandbox: a}]", "parallel is 0; give a whole number from 1 to 8"),
    ("parallel: true\ntargets: [{name: a, sandbox: a}]", "parallel is True"),
    ("targets: [{name: a, sandbx: a}]", "target 1 ('a'): unknown key 'sandbx'; did you mean 'sandbox'?"),
    ("targets: [{sandbox: a}]", "target 1: name is None; give 1-40 letters"),
    ("targets: [{name: ../etc, sandbox: a}]", "name is '../etc'"),
    ("targets: [{name: yes, sandbox: a}]", "name is True"),
    ("targets: [{name: a, sandbox: a}, {name: a, sandbox: b}]", "name 'a' is used twice"),
    ("targets: [{name: a}]", "nothing to check; give sandbox: NAME, or stack: DIR"),
    ("targets: [{name: a, sandbox: a, api_url: 'http://x'}]", "sandbox and api_url exclude each other"),
    ("targets: [{name: a, api_url: 'ftp://x'}]", "api_url is 'ftp://x'; give an http:// or https:// base URL"),
    ("targets: [{name: a, api_url: 8000}]", "api_url is 8000; give a non-empty string"),
    ("targets: [{name: a, db_url: 'mysql://x'}]", "db_url is 'mysql://x'; give a postgresql:// URL"),
    ("targets: [{name: a, realtime_host: 'a b'}]", "realtime_host is 'a b'"),
    ("targets: [{name: a, sandbox: a, tenant: x, tenants: [y]}]", "tenant and tenants exclude each other"),
    ("targets: [{name: a, sandbox: a, tenants: realtime-dev}]", "tenants is 'realtime-dev'; give a list"),
    ("targets: [{name: a, sandbox: a, tenants: [x, x]}]", "lists a tenant twice"),
    ("targets: [{name: a, sandbox: a, tenant: 'a/b'}]", "tenant 'a/b' is not a tenant id"),
    ("targets: [{name: a, sandbox: a, env: [ANON_KEY]}]", "env is ['ANON_KEY'] (list); give a mapping"),
    ("targets: [{name: a, sandbox: a, env: {ANON_KY: X}}]", "env key 'ANON_KY' is not a secret rtbook reads; "
                                                            "did you mean ANON_KEY?"),
    ("targets: [{name: a, sandbox: a, env: {ANON_KEY: 'not a name'}}]", "env ANON_KEY must be the NAME"),
    ("targets: [{name: a, sandbox: a, env: {ANON_KEY: 12}}]", "env ANON_KEY must be the NAME"),
])
def test_bad_input_is_one_line_naming_the_value_and_the_fix(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_targets(_write(tmp_path, text))
    assert message in str(exc.value)
    assert "\n" not in str(exc.value) and str(exc.value).startswith(str(tmp_path / "targets.yml"))


def test_too_many_targets_and_the_size_limit(tmp_path: Path) -> None:
    many = "targets:\n" + "".join(f"  - {{name: t{i}, sandbox: s}}\n" for i in range(MAX_TARGETS + 1))
    with pytest.raises(ConfigError, match=f"{MAX_TARGETS + 1} targets, over the limit of {MAX_TARGETS}"):
        load_targets(_write(tmp_path, many))
    assert LIMITS["targets file"] == 64 * 1024
    big = _write(tmp_path, "targets: [{name: a, sandbox: a}]\n" + "#" * LIMITS["targets file"])
    with pytest.raises(InputFileError, match="over rtbook's 64 KiB limit"):
        load_targets(big)
    with pytest.raises(InputFileError, match="is a directory"):
        load_targets(tmp_path)
    fifo = tmp_path / "fifo.yml"
    os.mkfifo(fifo)
    with pytest.raises(InputFileError, match="FIFO"):
        load_targets(fifo)  # refused without opening it (it would block)
    with pytest.raises(InputError, match="YAML syntax error at line"):
        load_targets(_write(tmp_path, "targets: [{name: a"))


@pytest.mark.parametrize("where", [
    "targets: [{{name: a, sandbox: a, env: {{ANON_KEY: '{s}'}}}}]",   # the secret where its variable's name goes
    "targets: [{{name: a, api_url: 'https://x.example.com/?apikey={s}'}}]",
    "targets: [{{name: a, sandbox: a, region: '{s}'}}]",
    "targets: [{{name: a, sandbox: a, tenant: '{s}'}}]",
    "targets: [{{name: a, sandbox: a, '{s}': 1}}]",                     # even as a key
    "targets: [{{name: '{s}', sandbox: a}}]",
    "'{s}': 1",
])
@pytest.mark.parametrize("secret", [JWT, "sb_secret_abcdefghijklmnopqrstu"])
def test_a_secret_anywhere_in_the_file_is_refused_without_echoing_it(tmp_path: Path, where: str, secret: str) -> None:
    path = _write(tmp_path, where.format(s=secret))
    with pytest.raises(ConfigError) as exc:
        load_targets(path)
    assert "looks like a token, key or password" in str(exc.value) and secret not in str(exc.value)


def test_a_value_equal_to_a_secret_of_the_environment_is_refused(tmp_path: Path) -> None:
    canary = "canary-Zq8wX1vR4tY7uI0oP3aS"  # not token-shaped: only the environment says it is a secret
    data = {"targets": [{"name": "a", "sandbox": "a", "region": f"eu-{canary}"}]}
    with pytest.raises(ConfigError) as exc:
        parse_targets(data, tmp_path / "t.yml", environ={"WEST_PG_PASSWORD": canary})
    assert "the value of a secret found in the environment" in str(exc.value) and canary not in str(exc.value)
    parse_targets(data, tmp_path / "t.yml", environ={})  # the same file with no such secret is fine


def test_a_password_in_db_url_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "targets: [{name: a, db_url: 'postgresql://postgres:hunter2hunter2@db/postgres'}]")
    with pytest.raises(ConfigError) as exc:
        load_targets(path)
    assert "hunter2" not in str(exc.value) and "password" in str(exc.value)


def test_env_keys_are_the_secrets_the_target_reads() -> None:
    from rtbook.target import _KNOWN_SECRET_VARS

    assert SECRET_VARIABLES == _KNOWN_SECRET_VARS  # two copies (rooms), kept equal here


def test_the_cli_refuses_a_bad_file_with_exit_2_and_one_line(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, f"targets: [{{name: a, sandbox: a, env: {{ANON_KEY: '{JWT}'}}}}]")
    for argv in (["check", "--targets", str(path)], ["run", "--targets", str(path)]):
        assert main(argv) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1 and JWT not in err and "looks like a token" in err
    good = _write(tmp_path, "targets: [{name: a, sandbox: a}]")
    assert main(["check", "--targets", str(good), "--stack", str(tmp_path)]) == 2
    assert "--targets and --stack exclude each other" in capsys.readouterr().err
    assert main(["run", "--targets", str(good), "--break", "tenant-mismatch"]) == 2
    assert "--targets and --break exclude each other" in capsys.readouterr().err
    assert main(["check", "--targets", str(good), "--format", "junit"]) == 2
    capsys.readouterr()
    home = tmp_path / "home"
    os.environ["RTBOOK_HOME"] = str(home)
    try:
        assert main(["check", "--targets", str(good)]) == 2  # no sandbox 'a' is running: usage error, not a failure
    finally:
        del os.environ["RTBOOK_HOME"]
    err = capsys.readouterr().err
    assert "target 'a': no running sandbox named 'a'" in err and "rtbook sandbox up --name a" in err


def _row(name: str, statuses: dict[str, Status], facts: dict[str, str] | None = None, error: str = "") -> TargetRow:
    report = Report([CheckResult(cid, status, summary="s") for cid, status in statuses.items()])
    return TargetRow(name, "r-" + name, report, facts or {}, error=error)


def test_the_matrix_shows_which_target_and_check_failed() -> None:
    east = _row("east", {"db.connect": Status.PASS, "gateway.rest": Status.PASS}, {"gateway": "kong"})
    west = _row("west", {"db.connect": Status.PASS, "gateway.rest": Status.FAIL}, {"gateway": "envoy"})
    # A multi-tenant target has one result per tenant: the cell is the worst of them.
    west.report.add(CheckResult("db.connect", Status.ERROR, summary="[other] s"))
    combined = Combined([east, west])
    assert combined.exit_code == 1
    assert combined.matrix() == [("db.connect", ["pass", "error"]), ("gateway.rest", ["pass", "fail"])]
    assert combined.failed_cells() == ["west: db.connect", "west: gateway.rest"]
    assert [d.line() for d in combined.disagreements()] == ["gateway: east=kong, west=envoy"]
    data = combined.to_dict()
    assert data["matrix"]["gateway.rest"] == {"east": "pass", "west": "fail"}
    assert "| gateway.rest | pass | FAIL |" in combined.markdown()
    assert "gateway.rest" in combined.html() and "west=envoy" in combined.html()
    text = combined.text()
    assert "west (r-west): FAILED" in text and "east (r-east): PASSED" in text
    assert Combined([east]).exit_code == 0


def test_a_target_that_could_not_run_is_a_row_of_its_own() -> None:
    combined = Combined([_row("east", {"db.connect": Status.PASS}), _row("west", {}, error="ConnectionError: x")])
    assert combined.matrix()[0] == ("target", ["pass", "error"])
    assert combined.exit_code == 1


def test_facts_unknown_to_a_target_are_not_differences() -> None:
    limits = CheckResult("tenant.limits", Status.PASS, summary="s",
                         evidence={"limits": {"max_concurrent_users": 200, "max_events_per_second": 100},
                                   "flags": {"private_only": False}})
    other = CheckResult("tenant.limits", Status.PASS, summary="s",
                        evidence={"limits": {"max_concurrent_users": 200, "max_events_per_second": 10}})
    a, b = report_facts(Report([limits])), report_facts(Report([other]))
    assert a == {"tenant limit max_concurrent_users": "200", "tenant limit max_events_per_second": "100",
                 "tenant flag private_only": "False"}
    combined = Combined([TargetRow("a", facts=a), TargetRow("b", facts=b), TargetRow("c")])
    assert [d.line() for d in combined.disagreements()] == ["tenant limit max_events_per_second: a=100, b=10"]


@pytest.mark.parametrize("value", ["x" * 600, "us-east\x1b[31m"])
def test_overlong_or_control_character_values_are_refused(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match="region is longer than 512 characters or holds control characters"):
        parse_targets({"targets": [{"name": "a", "sandbox": "a", "region": value}]}, tmp_path / "t.yml", environ={})


def test_check_targets_over_two_real_stacks_static(corpus: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Two copies of the official stack, one on another Realtime tag and checked for two tenants (files only)."""
    import shutil

    for name in ("a", "b"):
        shutil.copytree(corpus / "official/2026-09-1f37f2a", tmp_path / name)
        shutil.copy(tmp_path / name / "env.example", tmp_path / name / ".env")
    compose = tmp_path / "b" / "docker-compose.yml"
    compose.write_text(compose.read_text().replace("supabase/realtime:v2.134.10", "supabase/realtime:v2.78.19"))
    path = _write(tmp_path, "parallel: 2\ntargets:\n"
                            "  - {name: a, region: east, stack: a, tenants: [realtime-dev, other-tenant]}\n"
                            "  - {name: b, region: west, stack: b}\n")
    code = main(["check", "--targets", str(path), "--only", "compose.", "--format", "json", "--no-docker"])
    data = json.loads(capsys.readouterr().out)
    assert code == data["exit_code"] == 1
    # The second tenant of 'a' is not the one its files serve: a fails that check for it, b does not.
    assert data["matrix"]["compose.realtime.tenant_consistency"] == {"a": "fail", "b": "pass"}
    a_results = [r for r in data["targets"][0]["report"]["results"] if r["id"] == "compose.realtime.tenant_consistency"]
    assert [r["summary"].split("]")[0] for r in a_results] == ["[realtime-dev", "[other-tenant"]
    assert data["disagreements"] == [{"fact": "realtime image", "values": {"a": "supabase/realtime:v2.134.10",
                                                                          "b": "supabase/realtime:v2.78.19"}}]
    assert data["failing"] == ["a: compose.realtime.tenant_consistency"]
    # Text: each target's report, then the matrix; its last line names the failing cell.
    assert main(["check", "--targets", str(path), "--only", "compose.realtime.tenant", "--no-docker"]) == 1
    text = capsys.readouterr().out
    assert text.startswith("== a (east)\nrtbook check (a)\n")
    assert text.rstrip().endswith("failing: a: compose.realtime.tenant_consistency")
    # --output: the whole report to the file, the headline on stdout.
    written = tmp_path / "report.txt"
    assert main(["check", "--targets", str(path), "--only", "compose.realtime.tenant", "--no-docker",
                 "--output", str(written)]) == 1
    assert capsys.readouterr().out == f"rtbook check --targets {path.name}: 2 target(s), 1 failing\n"
    assert written.read_text() == text


def test_run_parameters_of_a_target(tmp_path: Path) -> None:
    from rtbook.runbook.targets import run_params

    sandbox = run_params(TargetSpec(name="e", sandbox="east", tenants=("realtime-dev",)), {"timeout_s": 5.0})
    assert (sandbox["target_kind"], sandbox["tenant"], sandbox["timeout_s"]) == ("sandbox", "realtime-dev", 5.0)
    stack = run_params(TargetSpec(name="w", stack=tmp_path, api_url="http://localhost:8000"), {})
    assert (stack["target_kind"], stack["stack_dir"], stack["api_url"]) == ("stack", str(tmp_path),
                                                                          "http://localhost:8000")
    with pytest.raises(ConfigError, match="target 'u': 'rtbook run' needs stack: DIR"):
        run_params(TargetSpec(name="u", api_url="http://localhost:8000"), {})
    with pytest.raises(ConfigError, match="target 'm': 'rtbook run' records one tenant per target"):
        run_params(TargetSpec(name="m", sandbox="s", tenants=("a", "b")), {})
    with pytest.raises(ConfigError, match=r"^target 'e': parameter 'timeout_s' must be between"):
        run_params(TargetSpec(name="e", sandbox="east"), {"timeout_s": 0.0})
