"""Audit records: notebook redaction, the manifest, ``rtbook verify``, troubleshooting verdicts."""

from __future__ import annotations

import base64
import concurrent.futures
import datetime as dt
import json
import os
import time
from pathlib import Path

import pytest

from rtbook.cli import main
from rtbook.exceptions import ChecksFailedError
from rtbook.results import CheckResult, Report, Status
from rtbook.runbook.record import redact_notebook, verify, write_manifest
from rtbook.runbook.runner import _record_dir
from rtbook.runbook.session import NotebookRun, load_results
from rtbook.runbook.troubleshoot import SYMPTOMS, deciding_prefixes, diagnose
from rtbook.secrets import Redactor

CANARY = "canary-7f3Kq9ZxW2mN5vB8cD1e"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0."
    "c2lnbmF0dXJlX2J5dGVzX2hlcmVfMTIzNDU2Nzg5MA"
)


def _notebook(home: str, staging: str) -> dict[str, object]:
    b64 = base64.b64encode(CANARY.encode()).decode()
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {
            "papermill": {
                "parameters": {"tenant": "t", "run_dir": staging, "leaked": CANARY},
                "input_path": f"{home}/work/notebooks/01_setup.ipynb",
                "output_path": f"{staging}/01_setup.ipynb",
                "environment_variables": {"JWT_SECRET": CANARY},
            },
            "widgets": {"state": {"x": {"value": f"Authorization: Bearer {CANARY}"}}},
        },
        "cells": [
            {"cell_type": "code", "metadata": {"tags": ["injected-parameters"]}, "execution_count": 1,
             "source": f'run_dir = "{staging}"\ntenant = "{CANARY}"', "outputs": []},
            {
                "cell_type": "code",
                "metadata": {"papermill": {"exception": True}},
                "execution_count": 2,
                "source": "run.checks('env.')",
                "outputs": [
                    {"output_type": "stream", "name": "stdout", "text": [f"key={JWT}\n", f"b64 {b64}\n"]},
                    {
                        "output_type": "display_data",
                        "metadata": {},
                        "data": {"text/html": f"<td>{CANARY}</td>", "text/plain": f"{home}/x {CANARY}",
                                 "application/json": {"password": "hunter2hunter2", "ok": [CANARY]}},
                    },
                    {"output_type": "error", "ename": "ChecksFailedError", "evalue": f"bad {CANARY}",
                     "traceback": [f"File {home}/.pyenv/lib/x.py", f"Authorization: Bearer {CANARY}"]},
                ],
            },
        ],
    }


def test_redact_notebook_removes_secrets_tokens_and_paths() -> None:
    home, staging = "/home/alice", "/tmp/rtbook-run-abc"
    redactor = Redactor([CANARY])
    out = redact_notebook(
        _notebook(home, staging),
        redactor,
        paths=[(staging, "."), (home, "~")],
        parameters={"tenant": "t", "run_dir": "."},
    )
    text = json.dumps(out)
    assert CANARY not in text
    assert base64.b64encode(CANARY.encode()).decode().rstrip("=") not in text
    assert JWT not in text
    assert "hunter2hunter2" not in text
    assert home not in text and staging not in text
    pm = out["metadata"]["papermill"]
    assert pm["parameters"] == {"tenant": "t", "run_dir": "."}
    assert pm["input_path"] == "01_setup.ipynb" and pm["output_path"] == "01_setup.ipynb"
    assert "environment_variables" not in pm
    # Structure is preserved: outputs keep their types, the notebook is still valid nbformat.
    assert [o["output_type"] for o in out["cells"][1]["outputs"]] == ["stream", "display_data", "error"]
    assert "~/.pyenv" in out["cells"][1]["outputs"][2]["traceback"][0]


def _record(tmp_path: Path) -> Path:
    record = tmp_path / "20260101T000000Z-sandbox"
    record.mkdir()
    (record / "01_setup.ipynb").write_text(json.dumps({"cells": [], "metadata": {}}))
    (record / "summary.json").write_text('{"counts": {"pass": 3}}\n')
    (record / "summary.md").write_text("# run\n")
    (record / "junit.xml").write_text("<testsuites/>\n")
    (record / "sub").mkdir()
    (record / "sub" / "nested.txt").write_text("nested\n")
    write_manifest(record, {"started": "2026-01-01T00:00:00+00:00", "parameters": {"tenant": "t"}})
    return record


def test_verify_intact_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    record = _record(tmp_path)
    result = verify(record)
    assert result.intact, str(result)
    assert main(["verify", str(record)]) == 0
    assert "intact" in capsys.readouterr().out


def test_verify_detects_a_one_byte_change_in_every_file(tmp_path: Path) -> None:
    record = _record(tmp_path)
    files = sorted(p for p in record.rglob("*") if p.is_file())
    assert {p.name for p in files} >= {"manifest.json", "summary.json", "nested.txt"}
    for path in files:
        original = path.read_bytes()
        # Every byte position matters, not just the first: flip one in the middle.
        for position in (0, len(original) // 2, len(original) - 1):
            changed = bytearray(original)
            changed[position] ^= 0x01
            path.write_bytes(bytes(changed))
            result = verify(record)
            assert not result.intact, f"{path.name} byte {position} change went unnoticed"
            rel = path.relative_to(record).as_posix()
            assert rel in result.altered or (rel == "manifest.json" and not result.manifest_ok)
            path.write_bytes(original)
    assert verify(record).intact


def test_verify_missing_and_extra_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    record = _record(tmp_path)
    (record / "summary.md").unlink()
    (record / "added.txt").write_text("x")
    result = verify(record)
    assert result.missing == ["summary.md"] and result.extra == ["added.txt"]
    assert main(["verify", str(record)]) == 1
    out = capsys.readouterr().out
    assert "ALTERED" in out and "missing: summary.md" in out and "extra:   added.txt" in out


def test_verify_of_a_folder_without_manifest_is_a_usage_error(tmp_path: Path) -> None:
    assert main(["verify", str(tmp_path)]) == 2


def test_verify_names_fifos_and_symlinks_and_never_reads_them(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    record = _record(tmp_path)
    os.mkfifo(record / "pipe")
    (record / "link.json").symlink_to(record / "summary.json")
    (record / "escape").symlink_to("/etc/passwd")
    started = time.monotonic()
    result = verify(record)
    assert time.monotonic() - started < 5
    assert result.unexpected == {"escape": "a symlink", "link.json": "a symlink", "pipe": "a FIFO"}
    assert not result.intact and not result.altered and not result.missing
    assert main(["verify", str(record)]) == 1
    assert "unexpected: pipe is a FIFO" in capsys.readouterr().out


def test_verify_of_a_fifo_manifest_is_refused_at_once(tmp_path: Path) -> None:
    record = _record(tmp_path)
    (record / "manifest.json").unlink()
    os.mkfifo(record / "manifest.json")
    started = time.monotonic()
    assert main(["verify", str(record)]) == 2
    assert time.monotonic() - started < 5
    assert main(["verify", str(record / "summary.md")]) == 2


def test_record_folders_are_unique_within_one_second(tmp_path: Path) -> None:
    started = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        made = list(pool.map(lambda _: _record_dir(tmp_path / "out", "sandbox", started), range(16)))
    assert len(set(made)) == 16 and all(p.is_dir() for p in made)
    assert sorted(p.name for p in made)[:2] == ["20260101T000000Z-sandbox", "20260101T000000Z-sandbox-10"]


def _r(cid: str, status: Status, remedy: str = "") -> CheckResult:
    return CheckResult(cid, status, summary=f"{cid} is {status.value}", remedy=remedy)


def test_troubleshoot_first_failing_deciding_check_is_the_verdict() -> None:
    results = [
        _r("compose.realtime.tenant_consistency", Status.PASS),
        _r("tenant.row", Status.FAIL, "run the seed: set SEED_SELF_HOST=true"),
        _r("realtime.health", Status.FAIL, "see tenant.row"),
        _r("db.wal_level", Status.PASS),
        _r("db.publication", Status.PASS),
    ]
    verdicts = {r.id: r for r in diagnose(results)}
    tnf = verdicts["troubleshoot.tenant_not_found"]
    assert tnf.status is Status.FAIL
    assert tnf.summary.startswith("Explained by tenant.row")
    assert "SEED_SELF_HOST=true" in tnf.remedy and "02_tenant_seeding.ipynb" in tnf.remedy
    assert tnf.see_also == ("tenant.row", "realtime.health")
    assert verdicts["troubleshoot.no_changes"].status is Status.PASS
    assert verdicts["troubleshoot.high_memory"].status is Status.SKIP
    assert len(verdicts) == len(SYMPTOMS)


def test_troubleshoot_sub_results_and_single_symptom() -> None:
    results = [_r("db.publication.public.todos", Status.FAIL, "ALTER PUBLICATION supabase_realtime ADD TABLE x")]
    (only,) = diagnose(results, "no_changes")
    assert only.status is Status.FAIL and "ALTER PUBLICATION" in only.remedy
    assert "db.publication" in deciding_prefixes("no_changes")
    assert diagnose([_r("db.rls", Status.WARN, "add a policy")], "no_changes")[0].status is Status.WARN


def test_notebook_run_saves_latest_result_per_id(tmp_path: Path) -> None:
    run = NotebookRun("02_tenant_seeding", {"run_dir": str(tmp_path), "strict": False}, None)
    run.record([_r("tenant.row", Status.FAIL)])
    run.record([_r("tenant.row", Status.PASS), _r("tenant.extension", Status.WARN)])
    saved = load_results(tmp_path)
    assert [(r.id, r.status) for r in saved] == [("tenant.row", Status.PASS), ("tenant.extension", Status.WARN)]
    run.gate()  # a warning does not fail without strict
    run.params["strict"] = True
    with pytest.raises(ChecksFailedError, match=r"tenant\.extension"):
        run.gate()


def test_notebook_run_troubleshoot_reads_earlier_results(tmp_path: Path) -> None:
    earlier = NotebookRun("03_kong_routing", {"run_dir": str(tmp_path)}, None)
    earlier.record([_r("kong.realtime_ws", Status.FAIL, "add the websocket route")])
    run = NotebookRun("05_troubleshooting", {"run_dir": str(tmp_path), "symptom": "socket_closes"}, None)
    report = run.troubleshoot()
    assert isinstance(report, Report)
    assert [r.id for r in report] == ["troubleshoot.socket_closes"]
    assert report[0].status is Status.FAIL and "03_kong_routing" in report[0].remedy
    assert "Fix it here: 05_troubleshooting" in str(report)


def test_every_deciding_check_is_registered() -> None:
    from rtbook.registry import all_checks
    from rtbook.runbook.troubleshoot import matches

    ids = {spec.id for spec in all_checks()}
    missing = [p for p in deciding_prefixes() if not any(matches(i, p) for i in ids)]
    assert not missing, f"troubleshooting names checks that do not exist (renamed?): {missing}"


def test_run_redactor_knows_html_escaped_secrets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import html

    from rtbook.runbook.record import _run_redactor

    password = 'p&ss<w"rd-' + CANARY
    monkeypatch.setenv("DASHBOARD_PASSWORD", password)
    monkeypatch.setenv("RTBOOK_HOME", str(tmp_path))  # no sandbox: the target cannot be built, env still counts
    redactor = _run_redactor({"target_kind": "sandbox"})
    for form in (password, html.escape(password), html.escape(password, quote=False)):
        assert CANARY not in redactor.text(f"<td>{form}</td>")
