"""``rtbook check|run --targets FILE`` over two real named sandboxes, two "regions" that should agree and do not.

east serves its own tenant, ``realtime-east`` (renamed the way ``rtbook tenant rename`` plans it: rows,
files, gateway reload, old rows removed) and is healthy; west serves ``realtime-dev`` and runs another
Realtime version, a lower stored tenant limit and the ``tenant-mismatch`` break; its checks take the
database password from the variable the targets file names (``WEST_PG_PASSWORD``), before the stack's
``.env`` (a wrong value there fails west's db.connect alone), and it is written nowhere. The run
writes two verifiable records and one combined summary, exits 1, and the matrix names west and the
checks that failed there, not east.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import require
from tests.integration.runbook_support import require_sandbox, rtbook_cli

pytestmark = [pytest.mark.notebooks, pytest.mark.sandbox, pytest.mark.slow]

# 01 reads the stack files (the renamed upstream fails the tenant consistency check), 02 the tenant
# rows (tenant.limits, compared across targets), 03 the gateway through Kong.
NOTEBOOKS = "01,02,03"


def _up(env: dict[str, str], name: str, *extra: str) -> dict[str, object]:
    up = rtbook_cli(["sandbox", "up", "--name", name, *extra], env, 180)
    assert up.returncode == 0, up.stderr[-2000:]
    status = rtbook_cli(["sandbox", "status", "--name", name, "--json"], env, 60)
    assert status.returncode == 0, status.stderr
    data: dict[str, object] = json.loads(status.stdout)
    return data


def _rename_tenant(home: Path, name: str, stack: Path, new: str, tmp_path: Path) -> None:
    """Rename the sandbox ``name``'s tenant to ``new`` in the plan's order (rows, files, gateway, old rows)."""
    import subprocess

    from rtbook.lifecycle import apply, plan_remove, plan_rename
    from rtbook.results import Status
    from rtbook.sandbox.manager import reload_gateway
    from rtbook.target import Target

    def target() -> Target:
        return Target.from_sandbox(home / "sandbox" / "instances" / name / "state.json", timeout=5)

    plan = plan_rename(target(), new)
    assert apply(target(), plan, yes=True).status is Status.PASS
    out = tmp_path / f"rename-{name}"
    plan.write(out, stack)
    for f in out.rglob("*"):
        if f.is_file() and not f.name.endswith(".patch"):
            (stack / f.relative_to(out)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, stack / f.relative_to(out))
    for patch in out.rglob("*.patch"):
        subprocess.run(["patch", "-p1", "-s", "-d", str(stack), "-i", str(patch.resolve())], check=True, timeout=30)
    assert reload_gateway(home=home, name=name).tenant == new
    assert apply(target(), plan_remove(target(), "realtime-dev"), yes=True).status is Status.PASS


def _secret_free(text: str, secret: str, where: str) -> None:
    assert secret not in text, f"the west database password leaked into {where}"


def test_two_regions_in_one_run_and_one_check(tmp_path: Path) -> None:
    require_sandbox()
    require(shutil.which("patch") is not None, "patch(1) is needed to lay the rename plan's .env patch")
    env = {"RTBOOK_HOME": str(tmp_path / "home")}
    try:
        east = _up(env, "east")
        _rename_tenant(tmp_path / "home", "east", Path(str(east["stack_dir"])), "realtime-east", tmp_path)
        west = _up(env, "west", "--break", "tenant-mismatch", "--realtime-version", "2.78.19")
        west_env = (Path(str(west["stack_dir"])) / ".env").read_text()
        password = next(line.split("=", 1)[1].strip().strip('"') for line in west_env.splitlines()
                        if line.startswith("POSTGRES_PASSWORD="))
        assert len(password) >= 16
        # A region whose stored limit was changed by hand: a real UPDATE through rtbook's own tenant apply.
        limit = rtbook_cli(["tenant", "apply", "--stack", str(west["stack_dir"]), "--db-url", str(west["db_url"]),
                            "--tenant", "realtime-dev", "--limit", "max_events_per_second=50", "--yes"], env, 120)
        assert limit.returncode == 0, limit.stdout + limit.stderr
        targets = tmp_path / "targets.yml"
        targets.write_text(
            "targets:\n"
            "  - {name: east, region: us-east-1, sandbox: east, tenant: realtime-east}\n"
            "  - name: west\n    region: eu-west-1\n    sandbox: west\n    tenant: realtime-dev\n"
            "    env: {POSTGRES_PASSWORD: WEST_PG_PASSWORD}\n")
        with_secret = {**env, "WEST_PG_PASSWORD": password}
        out = tmp_path / "outputs"

        # Without the variable the file names: a usage error before anything runs.
        missing = rtbook_cli(["run", "--targets", str(targets), "--notebooks", NOTEBOOKS, "--output-dir", str(out)],
                             env, 120)
        assert missing.returncode == 2 and "WEST_PG_PASSWORD, which is not set" in missing.stderr, missing.stderr
        assert not out.exists()

        run = rtbook_cli(["run", "--targets", str(targets), "--notebooks", NOTEBOOKS, "--output-dir", str(out)],
                         with_secret, 900)
        assert run.returncode == 1, run.stdout + run.stderr[-3000:]
        _secret_free(run.stdout + run.stderr, password, "the run's output")
        lines = run.stdout.splitlines()
        assert any(line.startswith("  east (us-east-1): PASSED") for line in lines), run.stdout
        assert any(line.startswith("  west (eu-west-1): FAILED") for line in lines), run.stdout
        row = next(line.split() for line in lines if line.startswith("compose.realtime.tenant_consistency "))
        assert row[1:3] == ["pass", "fail"], row
        failing = next(line for line in lines if line.startswith("failing: "))
        assert "west: compose.realtime.tenant_consistency" in failing and "east:" not in failing

        records = sorted(p for p in out.iterdir() if p.is_dir() and not p.name.endswith("-targets"))
        assert [p.name.rsplit("-", 1)[1] for p in records] == ["east", "west"]
        for record in records:
            verified = rtbook_cli(["verify", str(record)], env, 120)
            assert verified.returncode == 0 and "intact" in verified.stdout, verified.stdout + verified.stderr
            assert f"record ({record.name.rsplit('-', 1)[1]}): {record}" in run.stdout
        (folder,) = [p for p in out.iterdir() if p.name.endswith("-targets")]
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["exit_code"] == 1
        assert [t["name"] for t in summary["targets"]] == ["east", "west"]
        assert [t["failed"] for t in summary["targets"]] == [False, True]
        assert summary["matrix"]["compose.realtime.tenant_consistency"] == {"east": "pass", "west": "fail"}
        assert all(cells["east"] not in ("fail", "error") for cells in summary["matrix"].values())
        # The records are linked relatively, so the outputs folder can be archived whole.
        assert summary["targets"][1]["record"] == f"../{records[1].name}"
        differ = {d["fact"]: d["values"] for d in summary["disagreements"]}
        assert differ["tenant limit max_events_per_second"] == {"east": "100", "west": "50"}
        assert differ["realtime image"]["west"].endswith(":v2.78.19")
        assert differ["realtime image"]["east"] != differ["realtime image"]["west"]
        assert "gateway" not in differ  # both are Kong: an agreement is not listed
        md = (folder / "summary.md").read_text()
        assert "| compose.realtime.tenant_consistency | pass | FAIL |" in md
        assert "tenant limit max_events_per_second: east=100, west=50" in md
        assert "compose.realtime.tenant_consistency" in (folder / "summary.html").read_text()
        for path in out.rglob("*"):
            if path.is_file():
                _secret_free(path.read_text(errors="replace"), password, str(path))

        # check: the same two targets in the thread pool; one report each, then the matrix.
        check = rtbook_cli(["check", "--targets", str(targets), "--format", "json"], with_secret, 600)
        assert check.returncode == 1, check.stderr[-3000:]
        _secret_free(check.stdout + check.stderr, password, "the check's output")
        data = json.loads(check.stdout)
        assert data["matrix"]["compose.realtime.tenant_consistency"] == {"east": "pass", "west": "fail"}
        assert data["matrix"]["tenant.row"] == {"east": "pass", "west": "pass"}
        east_report, west_report = (t["report"] for t in data["targets"])
        assert not any(r["status"] in ("fail", "error") for r in east_report["results"])
        assert any(r["id"] == "gateway.websocket" and r["status"] == "fail" for r in west_report["results"])

        # West again as a plain stack target (its folder and URLs, as for a real deployment), checked --live.
        # The mapped variable is what west's checks use (before the stack's .env): a wrong value fails there only.
        direct = tmp_path / "direct.yml"
        direct.write_text(targets.read_text() + (
            f"  - name: west-direct\n    stack: {west['stack_dir']}\n    api_url: {west['gateway_url']}\n"
            f"    realtime_url: {west['realtime_url']}\n    db_url: {west['db_url']}\n"
            "    env: {POSTGRES_PASSWORD: WEST_PG_PASSWORD}\n"))
        args = ["check", "--targets", str(direct), "--live", "--only", "db.connect", "--format", "json"]
        right = rtbook_cli(args, with_secret, 300)
        assert right.returncode == 0, right.stdout + right.stderr[-2000:]
        assert json.loads(right.stdout)["matrix"]["db.connect"] == {"east": "pass", "west": "pass",
                                                                    "west-direct": "pass"}
        wrong = rtbook_cli(args, {**env, "WEST_PG_PASSWORD": "not-the-password-7Qx"}, 300)
        assert wrong.returncode == 1, wrong.stderr[-2000:]
        assert json.loads(wrong.stdout)["matrix"]["db.connect"] == {"east": "pass", "west": "fail",
                                                                    "west-direct": "fail"}
    finally:
        for name in ("east", "west"):
            rtbook_cli(["sandbox", "down", "--name", name], env, 120)


def test_sigterm_during_the_second_target_keeps_the_first_record_and_writes_no_summary(tmp_path: Path) -> None:
    import os
    import signal
    import time

    from tests.integration.process_support import Cli

    require_sandbox()
    env = {"RTBOOK_HOME": str(tmp_path / "home")}
    try:
        _up(env, "east")
        targets = tmp_path / "targets.yml"
        # Two targets on the one sandbox (two tenants' views of one region would look the same).
        targets.write_text("targets:\n  - {name: one, sandbox: east}\n  - {name: two, sandbox: east}\n")
        out = tmp_path / "outputs"
        cli = Cli(["run", "--targets", str(targets), "--notebooks", "03", "--output-dir", str(out)], env)
        try:
            cli.wait_for_line(r"^target 2/2: two$", 600)
            deadline = time.monotonic() + 300
            while sum(line.startswith("[1/1] 03_kong_routing") for line in cli.err_lines) < 2:
                assert time.monotonic() < deadline and cli.proc.poll() is None, cli.err
                time.sleep(0.05)
            os.kill(cli.pid, signal.SIGTERM)
            assert cli.finish(120) == 143, cli.err
        finally:
            cli.kill()
        one, two = sorted(p for p in out.iterdir() if p.is_dir())
        assert one.name.endswith("-one") and two.name.endswith("-two")
        assert "intact" in rtbook_cli(["verify", str(one)], env, 120).stdout
        second = rtbook_cli(["verify", str(two)], env, 120)
        assert "INCOMPLETE" in second.stdout, second.stdout + second.stderr
        assert f"record (incomplete): {two}" in cli.out
        assert not [p for p in out.iterdir() if p.name.endswith("-targets")]
    finally:
        rtbook_cli(["sandbox", "down", "--name", "east"], env, 120)
