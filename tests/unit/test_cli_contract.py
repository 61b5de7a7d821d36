"""The ``rtbook`` command's contract (README): commands, flags, help, exit codes and one-line usage errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rtbook import __version__
from rtbook.cli import _output, main
from rtbook.runbook.notebooks import NOTEBOOKS, notebook_dir
from tests.conftest import ROOT

ANSI = re.compile(r"\x1b\[")
BOX = re.compile(r"[\u2500-\u257f]")


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# Every flag each command had before the move to click; none may disappear or be renamed.
FLAGS = {
    ("check",): ["--stack", "--compose", "--env", "--kong", "--target", "--live", "--api-url", "--realtime-url",
                 "--realtime-host", "--db-url", "--tenant", "--table", "--timeout", "--docker", "--no-docker",
                 "--only", "--format", "--output", "--lb", "--all-tenants", "--targets"],
    ("checks",): ["--only", "-v, --verbose"],
    ("run",): ["--target", "--stack", "--api-url", "--realtime-url", "--realtime-host", "--db-url", "--tenant",
               "--no-sandbox-start", "--break", "-p, --param", "--params-file", "--notebooks", "--output-dir",
               "--label", "--notebook-dir", "--kernel", "--cell-timeout", "--list-params", "-q, --quiet",
               "-v, --verbose", "--targets"],
    ("verify",): ["RUN_DIR"],
    ("tenant", "plan"): ["--stack", "--db-url", "--timeout", "--no-docker", "--create", "--limit", "--delete-extra",
                         "--format"],
    ("tenant", "apply"): ["--stack", "--db-url", "--create", "--limit", "--delete-extra", "--format", "--yes"],
    ("tenant", "rename"): ["NEW", "--stack", "--db-url", "--out", "--apply", "--yes", "--drop-old", "--format"],
    ("tenant", "add"): ["NAME", "--stack", "--db-url", "--public-host", "--out", "--apply", "--yes", "--format"],
    ("tenant", "remove"): ["NAME", "--stack", "--db-url", "--keep-rows", "--out", "--apply", "--yes", "--format"],
    ("probe", "install"): ["--stack", "--target", "--db-url", "--format", "--yes"],
    ("probe", "remove"): ["--stack", "--target", "--db-url", "--format", "--yes"],
    ("probe", "status"): ["--stack", "--target", "--db-url", "--format"],
    ("sandbox", "up"): ["--dir", "--break", "--timeout", "--no-probe", "--realtime-version", "--nodes", "--lb"],
    ("sandbox", "down"): [],
    ("sandbox", "status"): ["--json"],
    ("sandbox", "scenarios"): ["--json"],
    ("notebooks", "copy"): ["DIR", "--force"],
    ("history",): ["--target", "--limit", "--add", "--format", "--history-url", "--output-dir"],
    ("diff",): ["RUN_A", "RUN_B", "--format", "--history-url", "--output-dir"],
    ("load",): ["--target", "--stack", "--api-url", "--tenant", "--timeout", "--scenario", "--connections", "--senders",
                "--receivers", "--topics", "--rate", "--join-rate", "--duration", "--ramp", "--payload-bytes", "--ack",
                "--late-ms", "--processes", "--threshold", "--format", "--output", "--locustfile",
                "--i-own-this-target", "--no-docker"],
}


@pytest.mark.parametrize("command", list(FLAGS), ids=" ".join)
def test_every_command_and_flag_is_there(command: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    for help_flag in ("--help", "-h"):
        code, out, err = run([*command, help_flag], capsys)
        assert code == 0 and err == ""
        assert out.startswith(f"Usage: rtbook {' '.join(command)}")
        for flag in FLAGS[command]:
            assert flag in out, (command, flag)


def test_top_level_help_lists_the_commands_in_workflow_order(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--help"], capsys)
    assert code == 0
    listed = re.findall(r"^  (\w+)\s", out.split("Commands:")[1], flags=re.MULTILINE)
    assert listed == ["check", "checks", "run", "verify", "tenant", "probe", "sandbox", "notebooks",
                      "history", "diff", "load"]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--version"], capsys) == (0, f"rtbook {__version__}\n", "")


@pytest.mark.parametrize(("argv", "stream"), [([], "out"), (["tenant"], "out"), (["notebooks"], "out"),
                                              (["sandbox"], "err")])
def test_a_group_without_its_command_exits_2(argv: list[str], stream: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(argv, capsys)
    assert code == 2
    if stream == "out":
        assert out.startswith("Usage: rtbook") and err == ""
    else:
        assert out == "" and err.count("\n") == 1 and "up,down,status,scenarios" in err


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["chek"], ["No such command 'chek'", "'check'", "(see 'rtbook --help')"]),
        (["check", "--bogus"], ["No such option '--bogus'", "(see 'rtbook check --help')"]),
        (["check", "--format", "xml"], ["'xml' is not one of 'text', 'json', 'junit'"]),
        (["check", "--timeout", "abc"], ["--timeout must be a number of seconds (0 < t <= 3600), got 'abc'"]),
        (["check", "--timeout", "0"], ["--timeout must be between 0 and 3600 seconds (0 < t <= 3600), got 0"]),
        (["check", "--timeout", "3601"], ["--timeout", "(0 < t <= 3600), got 3601"]),
        (["check", "--timeout", "nan"], ["--timeout", "0 < t <= 3600"]),
        (["check", "--api-url", "localhost:8000"], ["--api-url must start with http:// or https://",
                                                    "'localhost:8000'"]),
        (["check", "--realtime-url", "ws://x:4000"], ["--realtime-url must start with http:// or https://"]),
        (["check", "--db-url", "mysql://root@h/db"], ["--db-url must be a PostgreSQL URL"]),
        (["check", "--table", "todos"], ["--table: 'todos' is not schema.table"]),
        (["check", "--docker", "--no-docker"], ["--docker and --no-docker exclude each other"]),
        (["check"], ["nothing to check: pass --stack DIR"]),
        (["tenant", "plan", "--timeout", "-1"], ["--timeout", "(see 'rtbook tenant plan --help')"]),
        (["tenant", "apply", "--format", "junit"], ["'junit' is not one of 'text', 'json'"]),
        (["run", "-p"], ["Option '-p' requires an argument", "(see 'rtbook run --help')"]),
        (["run", "--cell-timeout", "-5", "--target", "sandbox"], ["--cell-timeout", "(0 < t <= 86400)"]),
        (["run", "--target", "sandbox", "-p", "timeout_s=7200"], ["'timeout_s' must be between 0 and 3600 seconds"]),
        (["run", "--api-url", "localhost", "--target", "sandbox"], ["--api-url must start with http://"]),
        (["verify"], ["Missing argument 'RUN_DIR'", "(see 'rtbook verify --help')"]),
        (["sandbox", "up", "--timeout", "0"], ["--timeout must be a number of seconds between 0 and 3600"]),
        (["sandbox", "up", "--nodes", "0"], ["--nodes", "0"]),
        (["sandbox", "up", "--lb", "traefik"], ["--lb", "'traefik'", "nginx"]),
        (["notebooks", "copy"], ["Missing argument 'DIR'"]),
        (["diff", "a"], ["Missing argument 'RUN_B'", "(see 'rtbook diff --help')"]),
        (["history", "--history-url", "nonsense"], ["history URL 'nonsense' is not an SQLAlchemy database URL"]),
        (["diff", "nosuchrun", "nosuchrun2", "--history-url", "sqlite://"],
         ["'nosuchrun' is neither a run record folder nor a run id", "'rtbook history' lists the run ids"]),
    ],
)
def test_usage_errors_are_one_line_naming_the_value_and_exit_2(
    argv: list[str], words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(argv, capsys)
    assert code == 2, err
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("rtbook: error: "), err
    for word in words:
        assert word in err, (word, err)


def test_unique_prefixes_of_long_options_still_work(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--vers"], capsys)[:2] == (0, f"rtbook {__version__}\n")
    code, out, _ = run(["run", "--list"], capsys)
    assert code == 0 and "timeout_s: float" in out
    code, out, _ = run(["checks", "--on=db.wal_level"], capsys)
    assert code == 0 and out.startswith("db.wal_level")
    code, out, err = run(["check", "--t", "x"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "ambiguous option: --t could match --table, --target, --targets, --tenant, --timeout" in err
    code, _, err = run(["check", "--", "--stack"], capsys)
    assert code == 2 and "--stack" in err


def test_a_password_in_db_url_is_refused_without_echoing_it(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["check", "--db-url", "postgresql://postgres:hunter2hunter2@localhost/postgres"], capsys)
    assert code == 2 and "must not contain a password" in err and "hunter2" not in err


def test_a_token_in_a_flag_is_refused_without_echoing_it(capsys: pytest.CaptureFixture[str]) -> None:
    token = "sb_secret_abcdefghijklmnopqrstu"
    code, _, err = run(["check", "--tenant", token], capsys)
    assert code == 2 and "secrets are never parameters" in err and token not in err


def test_ctrl_c_exits_130(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("rtbook.registry.select_checks", interrupted)
    assert run(["checks"], capsys) == (130, "", "rtbook: interrupted\n")


# ------------------------------------------------------------------ output


def test_checks_is_plain_when_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["checks", "--only", "db.", "-v"], capsys)
    assert code == 0
    assert not ANSI.search(out) and not BOX.search(out)
    assert re.search(r"^db\.wal_level\s+wal_level is logical  \[db\]$", out, flags=re.MULTILINE), out
    code, out, _ = run(["checks", "--only", "db."], capsys)
    assert "[db]" not in out


def test_checks_is_a_table_on_a_terminal(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(_output, "is_terminal", lambda _stream: True)
    monkeypatch.setenv("COLUMNS", "160")
    code, out, _ = run(["checks", "--only", "db.wal", "--only", "realtime.health"], capsys)
    assert code == 0
    plain = ANSI.sub("", re.sub(r"\x1b\[[0-9;]*m", "", out))
    header = plain.splitlines()[0].split()
    assert header == ["id", "title", "needs"]
    assert re.search(r"db\.wal_level\s+wal_level is logical\s+db", plain)
    assert re.search(r"realtime\.health\s+.*realtime_direct", plain)


def test_is_terminal_is_false_for_pipes_files_and_dumb_terminals(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    with (tmp_path / "f").open("w") as fh:
        assert not _output.is_terminal(fh)
    assert _output.console_for(open(os.devnull, "w")) is None  # noqa: SIM115
    monkeypatch.setenv("TERM", "dumb")

    class Tty:
        def isatty(self) -> bool:
            return True

    assert not _output.is_terminal(Tty())  # type: ignore[arg-type]


def test_progress_and_verdict_lines_keep_their_text() -> None:
    for message in ("[2/6] 01_setup: Stack files, containers and Realtime's health ...",
                    "      FAILED in 3.2s: 40 passed, 1 failed", "sandbox: starting ..."):
        assert _output.progress_line(message).plain == message
    verdict = _output.verdict_line("FAILED: 1 failed; notebooks not passing: 03_kong_routing")
    assert verdict.plain.startswith("FAILED: ") and verdict.spans


def test_run_list_params_prints_the_schema(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["run", "--list-params"], capsys)
    assert code == 0
    assert "timeout_s: float = 10.0\n" in out and "docker: str = 'auto' (auto|on|off)" in out


# ------------------------------------------------------------------ notebooks copy


def test_notebooks_copy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "mine" / "notebooks"
    code, out, err = run(["notebooks", "copy", str(dest)], capsys)
    assert code == 0, err
    names = sorted(p.name for p in dest.iterdir())
    assert names == sorted(f"{nb.name}.ipynb" for nb in NOTEBOOKS)
    assert out.splitlines()[:-1] == [str(dest / f"{nb.name}.ipynb") for nb in NOTEBOOKS]
    assert out.splitlines()[-1].startswith(f"copied {len(NOTEBOOKS)} notebooks to {dest}; ")
    assert f"rtbook run --notebook-dir {dest}" in out
    shipped = notebook_dir() / "01_setup.ipynb"
    assert (dest / "01_setup.ipynb").read_bytes() == shipped.read_bytes()
    json.loads((dest / "00_start_here.ipynb").read_text())
    # A second copy would overwrite the user's edits: refused, nothing touched.
    (dest / "01_setup.ipynb").write_text("edited")
    code, out, err = run(["notebooks", "copy", str(dest)], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert f"00_start_here.ipynb already exists (and {len(NOTEBOOKS) - 1} more)" in err and "--force" in err
    assert (dest / "01_setup.ipynb").read_text() == "edited"
    assert run(["notebooks", "copy", str(dest), "--force"], capsys)[0] == 0
    assert (dest / "01_setup.ipynb").read_bytes() == shipped.read_bytes()


def test_notebooks_copy_into_a_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "file.txt"
    target.write_text("x")
    code, out, err = run(["notebooks", "copy", str(target)], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "is a file" in err and str(target) in err


# ------------------------------------------------------------------ entry points


def test_python_m_rtbook_and_the_console_script_entry(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ok = subprocess.run([sys.executable, "-m", "rtbook", "--version"], capture_output=True, text=True,
                        timeout=60, env=env, cwd=tmp_path)
    assert (ok.returncode, ok.stdout) == (0, f"rtbook {__version__}\n")
    bad = subprocess.run([sys.executable, "-m", "rtbook", "check", "--timeout", "-1"], capture_output=True,
                         text=True, timeout=60, env=env, cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and bad.stdout == ""
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"rtbook": "rtbook.cli:main"}
