"""Every notebook executed with papermill through ``rtbook run``: green, broken, and leak-free."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest

from rtbook.runbook.notebooks import NOTEBOOKS
from rtbook.runbook.record import verify
from tests.integration.runbook_support import (
    find_leaks,
    require_sandbox,
    rtbook_cli,
    stack_copy,
    start_sandbox,
    stop_sandbox,
)

pytestmark = [pytest.mark.notebooks, pytest.mark.slow]

ALL = [nb.name for nb in NOTEBOOKS]


def _record(out: Path) -> Path:
    runs = sorted(p for p in out.iterdir() if p.is_dir())
    assert len(runs) == 1, f"expected one record in {out}, found {runs}"
    return runs[0]


def _summary(record: Path) -> dict[str, Any]:
    return dict(json.loads((record / "summary.json").read_text()))


def _assert_complete_record(record: Path, notebooks: list[str]) -> dict[str, Any]:
    for name in notebooks:
        assert (record / f"{name}.ipynb").is_file(), f"{name}.ipynb missing from the record"
    for name in ("summary.json", "summary.md", "summary.html", "junit.xml", "manifest.json"):
        assert (record / name).is_file(), name
    assert verify(record).intact, str(verify(record))
    summary = _summary(record)
    assert [n["notebook"] for n in summary["notebooks"]] == notebooks
    manifest = json.loads((record / "manifest.json").read_text())
    assert set(manifest["files"]) >= {f"{n}.ipynb" for n in notebooks}
    assert manifest["packages"]["papermill"]
    assert manifest["parameters"]["run_dir"] == "."
    return summary


def _gate_error(record: Path, name: str) -> str:
    nb = json.loads((record / f"{name}.ipynb").read_text())
    last = nb["cells"][-1]
    errors = [o for o in last.get("outputs", []) if o["output_type"] == "error"]
    return str(errors[0]["ename"]) if errors else ""


@pytest.fixture
def home(tmp_path: Path) -> Any:
    path = tmp_path / "rtbook-home"
    yield path
    stop_sandbox(path)  # in case a failing run left it up


def test_green_run_against_the_sandbox(tmp_path: Path, home: Path) -> None:
    """The README's first command: rtbook starts the sandbox, runs every notebook, stops it; exit 0."""
    require_sandbox()
    out = tmp_path / "outputs"
    proc = rtbook_cli(["run", "--target", "sandbox", "--output-dir", str(out)], {"RTBOOK_HOME": str(home)}, 900)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    assert "PASSED" in proc.stdout
    for name in ALL:
        assert name in proc.stderr, "progress lists every notebook"
    record = _record(out)
    assert record.name.endswith("-sandbox")
    summary = _assert_complete_record(record, ALL)
    assert all(n["status"] == "passed" for n in summary["notebooks"]), summary["notebooks"]
    assert summary["counts"]["fail"] == 0 and summary["counts"]["error"] == 0
    areas = {r["id"].split(".")[0] for n in summary["notebooks"] for r in n["results"]}
    assert {"compose", "kong", "db", "tenant", "gateway", "realtime", "troubleshoot"} <= areas, areas
    # A one-byte change in any file of this real record is caught by rtbook verify (exit 1).
    for path in sorted(p for p in record.iterdir() if p.is_file()):
        original = path.read_bytes()
        changed = bytearray(original)
        changed[len(changed) // 2] ^= 0x20
        path.write_bytes(bytes(changed))
        proc = rtbook_cli(["verify", str(record)], {}, 60)
        path.write_bytes(original)
        assert proc.returncode == 1 and path.name in proc.stdout, (path.name, proc.stdout)
    assert rtbook_cli(["verify", str(record)], {}, 60).returncode == 0
    # Headless, the guided form degraded to text in the executed 00_start_here.
    start = json.loads((record / "00_start_here.ipynb").read_text())
    texts = ["".join(o.get("data", {}).get("text/plain", "")) for c in start["cells"] for o in c.get("outputs", [])]
    assert any("text view because no widget frontend is attached" in t for t in texts)
    status = rtbook_cli(["sandbox", "status", "--json"], {"RTBOOK_HOME": str(home)}, 60)
    assert status.returncode != 0 or '"running": false' in status.stdout, "the run must stop the sandbox it started"


@pytest.mark.sandbox
def test_break_scenario_fails_the_right_notebook_and_keeps_every_result(tmp_path: Path, home: Path) -> None:
    """ws-route-missing: 03 fails at its gate, the notebooks after it still run, exit code 1."""
    require_sandbox()
    out = tmp_path / "outputs"
    proc = rtbook_cli(
        ["run", "--target", "sandbox", "--break", "ws-route-missing", "--output-dir", str(out)],
        {"RTBOOK_HOME": str(home)},
        900,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr[-4000:]
    record = _record(out)
    summary = _assert_complete_record(record, ALL)
    by_name = {n["notebook"]: n for n in summary["notebooks"]}
    assert by_name["03_kong_routing"]["status"] == "failed"
    assert _gate_error(record, "03_kong_routing") == "ChecksFailedError"
    failing = [r["id"] for r in by_name["03_kong_routing"]["results"] if r["status"] == "fail"]
    assert any(i.startswith("kong.realtime_ws") for i in failing), failing
    # Unrelated notebooks pass; the ones after the failure ran and recorded their results.
    assert by_name["02_tenant_seeding"]["status"] == "passed"
    assert by_name["04_subscription_tests"]["results"], "04 ran after 03 failed"
    verdicts = {r["id"]: r for r in by_name["05_troubleshooting"]["results"]}
    assert verdicts["troubleshoot.socket_closes"]["status"] == "fail"
    junit = (record / "junit.xml").read_text()
    assert 'name="kong.realtime_ws"' in junit and "<failure" in junit
    md = (record / "summary.md").read_text()
    assert "FAILED" in md
    # Root cause first, in the summary and on the CLI's last line (not the list of failing notebooks).
    assert md.index("**`kong.realtime_ws`**") < md.index("## Notebooks")
    assert proc.stdout.strip().splitlines()[-1].startswith("root cause: kong.realtime_ws"), proc.stdout[-2000:]
    assert 'class="rtbook-rootcause"' in (record / "summary.html").read_text()


def test_usage_errors_exit_2_before_anything_runs(tmp_path: Path) -> None:
    out = tmp_path / "outputs"
    stack = tmp_path / "stack"
    stack.mkdir()
    for args in (
        ["run", "--stack", str(stack), "-p", "tennant=x"],
        ["run", "--stack", str(stack), "-p", "jwt_secret=abc"],
        ["run", "--stack", str(stack), "--notebooks", "09"],
        ["run", "--stack", str(stack), "-p", "timeout_s=soon"],
        ["run"],
        ["run", "--stack", str(stack)],  # no compose file in it
        ["run", "--stack", str(tmp_path / "absent")],
    ):
        proc = rtbook_cli([*args, "--output-dir", str(out)], {}, 60)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "rtbook: error:" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not out.exists(), "a usage error must not leave a record"


def test_canary_secrets_appear_nowhere_in_the_record(tmp_path: Path, home: Path) -> None:
    """Canaries in the environment and the stack's .env are found nowhere, raw or base64-encoded."""
    canary_env = "cnry-env-" + secrets.token_hex(12)
    canary_dotenv = "cnry-dotenv-" + secrets.token_hex(12)
    canary_enc = "cnry" + secrets.token_hex(6)  # 16 characters, the shape DB_ENC_KEY must have
    stack = stack_copy(
        tmp_path / "stack",
        {"POSTGRES_PASSWORD": canary_dotenv, "JWT_SECRET": canary_dotenv + "-jwt", "DB_ENC_KEY": canary_enc},
    )
    env = {
        "RTBOOK_HOME": str(home),
        "SERVICE_ROLE_KEY": canary_env,
        "DASHBOARD_PASSWORD": canary_env + "-dash",
        "SECRET_KEY_BASE": canary_env * 3,
    }
    out = tmp_path / "outputs"
    args = ["run", "--stack", str(stack), "--output-dir", str(out), "-p", "docker=off"]
    # Point the live checks at a running sandbox so that they really use (and could leak) the secrets.
    box = start_sandbox(home)
    args += ["--api-url", str(box.status["gateway_url"]), "--db-url", str(box.status["db_url"])]
    proc = rtbook_cli(args, env, 900)
    assert proc.returncode in (0, 1), proc.stderr[-4000:]
    record = _record(out)
    _assert_complete_record(record, ALL)
    canaries = [canary_env, canary_env + "-dash", canary_env * 3, canary_dotenv, canary_dotenv + "-jwt", canary_enc]
    assert find_leaks(record, canaries) == []
    # The run did read the stack: its files are fingerprinted (hashes only).
    manifest = json.loads((record / "manifest.json").read_text())
    assert ".env" in manifest["target_fingerprint"]["stack_files_sha256"]
    assert str(Path.home()) + "/" not in "".join(p.read_text() for p in record.iterdir() if p.is_file())
    # And the sandbox's own freshly generated secrets (used by the live checks) did not leak either.
    assert find_leaks(record, box.secret_values()) == []


@pytest.mark.sandbox
def test_seeding_is_a_dry_run_unless_allowed_then_apply_repairs_the_tenant(tmp_path: Path, home: Path) -> None:
    """tenant-missing: 02 fails with the plan shown and nothing written; with both switches it repairs and passes."""
    require_sandbox()
    dry = rtbook_cli(
        ["run", "--target", "sandbox", "--break", "tenant-missing", "--notebooks", "02",
         "--output-dir", str(tmp_path / "dry")],
        {"RTBOOK_HOME": str(home)},
        600,
    )
    assert dry.returncode == 1, dry.stdout + dry.stderr[-3000:]
    record = _record(tmp_path / "dry")
    results = {r["id"]: r["status"] for r in _summary(record)["notebooks"][0]["results"]}
    assert results.get("tenant.row") == "fail", results
    assert "tenant.apply" not in results
    text = (record / "02_tenant_seeding.ipynb").read_text()
    assert "(dry run)" in text and "Not applied: apply_fixes is false" in text

    fixed = rtbook_cli(
        ["run", "--target", "sandbox", "--break", "tenant-missing", "--notebooks", "02",
         "-p", "apply_fixes=true", "-p", "confirm_apply=true", "--output-dir", str(tmp_path / "apply")],
        {"RTBOOK_HOME": str(home)},
        600,
    )
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr[-3000:]
    results = {r["id"]: r["status"] for r in _summary(_record(tmp_path / "apply"))["notebooks"][0]["results"]}
    assert results.get("tenant.apply") == "pass" and results.get("tenant.row") == "pass", results
