"""Run history on real records: a healthy sandbox run, then the same sandbox broken with
``tenant-mismatch``; ``rtbook history`` lists both and ``rtbook diff`` names what broke.
Then the sandbox is healthy again and the diff says what was fixed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.runbook_support import rtbook_cli, start_sandbox, stop_sandbox

pytestmark = [pytest.mark.notebooks, pytest.mark.sandbox, pytest.mark.slow]

# 01 reads the stack files (the renamed upstream breaks the tenant consistency check) and 03 the
# gateway routes and live probes through Kong; both are enough to see the break and its repair.
NOTEBOOKS = "01,03"


def _run(home: Path, out: Path, cwd: Path, breaks: tuple[str, ...] = ()) -> Path:
    box = start_sandbox(home, breaks=breaks)
    try:
        before = set(out.iterdir()) if out.is_dir() else set()
        proc = rtbook_cli(["run", "--target", "sandbox", "--no-sandbox-start", "--notebooks", NOTEBOOKS,
                           "--output-dir", str(out)], box.env, 900, cwd=cwd)
        assert proc.returncode == (1 if breaks else 0), proc.stdout + proc.stderr[-3000:]
        assert "history: indexed as" in proc.stderr, proc.stderr[-3000:]
    finally:
        stop_sandbox(home)
    (record,) = [p for p in set(out.iterdir()) - before if p.is_dir()]
    return record


def test_history_and_diff_on_a_healthy_and_a_broken_sandbox_run(tmp_path: Path) -> None:
    out = tmp_path / "outputs"
    env = {"RTBOOK_HISTORY_URL": ""}  # the default: SQLite in --output-dir
    healthy = _run(tmp_path / "home1", out, tmp_path)
    broken = _run(tmp_path / "home2", out, tmp_path, breaks=("tenant-mismatch",))
    assert (out / "history.sqlite").is_file()

    listing = rtbook_cli(["history", "--output-dir", str(out)], env, 120, cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0] == "sandbox"
    # Newest first, with the verdict counts of each run as its summary.json has them.
    assert lines[1].startswith(f"  {broken.name}  ") and "FAILED" in lines[1]
    assert lines[2].startswith(f"  {healthy.name}  ") and "PASSED" in lines[2] and "fail 0 " in lines[2]
    counts = json.loads((broken / "summary.json").read_text())["counts"]
    assert f"fail {counts['fail']} " in lines[1] and counts["fail"] >= 1

    # By record folder and by run id: the same answer.
    by_dir = rtbook_cli(["diff", str(healthy), str(broken), "--format", "json"], env, 120, cwd=tmp_path)
    by_id = rtbook_cli(["diff", healthy.name, broken.name, "--format", "json", "--output-dir", str(out)],
                       env, 120, cwd=tmp_path)
    assert by_dir.returncode == by_id.returncode == 1, by_dir.stderr + by_id.stderr  # something broke
    diff = json.loads(by_dir.stdout)
    assert diff == json.loads(by_id.stdout)
    broke = {c["check_id"]: c for c in diff["broke"]}
    assert "compose.realtime.tenant_consistency" in broke, diff
    assert broke["compose.realtime.tenant_consistency"]["before"] == "pass"
    assert diff["fixed"] == []
    # Every check that fails in the broken record is reported as broken (the healthy run passed them all).
    summary = json.loads((broken / "summary.json").read_text())
    failing = {r["id"] for nb in summary["notebooks"] for r in nb["results"] if r["status"] in ("fail", "error")}
    assert set(broke) == failing

    # Repaired: the reverse diff lists the same checks as fixed, and exits 0.
    back = rtbook_cli(["diff", str(broken), str(healthy)], env, 120, cwd=tmp_path)
    assert back.returncode == 0, back.stderr
    assert "fixed (" in back.stdout and "compose.realtime.tenant_consistency: fail -> pass" in back.stdout
