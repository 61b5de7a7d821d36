"""``rtbook tenant rename|add|remove`` on the official stacks of the corpus: the files it writes, laid over a copy of
the stack, pass every static check for the new tenant; the stack itself is never touched.

Layouts: official/2025-11 (Kong 2.8.1, eval entrypoint), official/2026-09 with Envoy (the default) and with the
Kong 3.9 overlay selected through ``COMPOSE_FILE`` in ``.env`` (as the official docs tell Kong users).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from rtbook.cli import main
from rtbook.config.envoy import load_envoy
from rtbook.config.gateway import realtime_upstream
from rtbook.config.kong import load_kong
from rtbook.config.stack import Stack
from rtbook.lifecycle import plan_add, plan_remove, plan_rename
from rtbook.registry import run_checks
from rtbook.results import Status
from rtbook.target import Target
from tests.conftest import require

STATIC = ("compose", "env", "kong", "envoy")
LAYOUTS = {
    "2025-kong": ("official/2025-11-f8a85e7", None),
    "2026-envoy": ("official/2026-09-1f37f2a", None),
    "2026-kong": ("official/2026-09-1f37f2a", "docker-compose.yml:docker-compose.kong.yml"),
}


def _stack(corpus: Path, tmp_path: Path, layout: str) -> Path:
    folder, compose_file = LAYOUTS[layout]
    stack = tmp_path / "stack"
    shutil.copytree(corpus / folder, stack)
    env = (stack / "env.example").read_text()
    if compose_file:
        env = "\n".join(f"COMPOSE_FILE={compose_file}" if line.startswith("COMPOSE_FILE=") else line
                        for line in env.splitlines()) + "\n"
        if f"COMPOSE_FILE={compose_file}" not in env:
            env += f"COMPOSE_FILE={compose_file}\n"
    (stack / ".env").write_text(env)
    return stack


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def _lay_over(out: Path, stack: Path) -> Path:
    """What the user does with --out: copy the files in, apply the .env patch with patch(1)."""
    laid = stack.parent / f"laid-{out.name}"
    shutil.copytree(stack, laid)
    for f in out.rglob("*"):
        if f.is_file() and not f.name.endswith(".patch"):
            dest = laid / f.relative_to(out)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dest)
    for patch in out.rglob("*.patch"):
        require(shutil.which("patch") is not None, "patch(1) is not installed")
        subprocess.run(["patch", "-p1", "-s", "-d", str(laid), "-i", str(patch.resolve())], check=True, timeout=30)
    return laid


def _statuses(stack: Path, tenant: str | None) -> dict[str, Status]:
    report = run_checks(Target.from_stack_dir(stack, tenant=tenant), only=STATIC)
    return {r.id: r.status for r in report}


def _bad(stack: Path, tenant: str) -> list[str]:
    report = run_checks(Target.from_stack_dir(stack, tenant=tenant), only=STATIC)
    return [f"{r.id}: {r.summary}" for r in report if r.status in (Status.FAIL, Status.ERROR)]


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_rename_files_pass_every_static_check_and_the_stack_is_untouched(
        layout: str, corpus: Path, tmp_path: Path, clean_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    stack = _stack(corpus, tmp_path, layout)
    before = _digest(stack)
    # The unchanged stack does not serve my-tenant: the check that must catch it does.
    assert _statuses(stack, "my-tenant")["compose.realtime.tenant_consistency"] is Status.FAIL
    out = tmp_path / "out"
    assert main(["tenant", "rename", "my-tenant", "--stack", str(stack), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert _digest(stack) == before, "rtbook edited the stack in place"
    assert "--- a/" in printed and "+++ b/" in printed and "Order of operations" in printed
    laid = _lay_over(out, stack)
    assert _bad(laid, "my-tenant") == []
    # Every check the original passes for its own tenant passes for the new one on the laid-over stack.
    original, renamed = _statuses(stack, None), _statuses(laid, "my-tenant")
    assert {c for c, s in original.items() if s is Status.PASS} <= {c for c, s in renamed.items() if s is Status.PASS}
    loaded = Stack.load(laid)
    assert realtime_upstream(loaded).tenants == ("my-tenant",)
    rt = loaded.realtime_service()
    assert rt is not None and rt.environment["SELF_HOST_TENANT_NAME"] == "my-tenant"
    assert "/api/tenants/my-tenant/health" in rt.healthcheck.command  # type: ignore[union-attr]
    # The old name still resolves (zero-downtime order): it stays the container name, the new one is an alias.
    assert {"realtime-dev.supabase-realtime", "my-tenant.supabase-realtime"} <= set(rt.dns_names)


@pytest.mark.parametrize("layout", ["2025-kong", "2026-kong"])
def test_kong_edit_touches_only_the_realtime_host_lines(layout: str, corpus: Path, tmp_path: Path,
                                                        clean_env: None) -> None:
    stack = _stack(corpus, tmp_path, layout)
    plan = plan_rename(Target.from_stack_dir(stack), "my-tenant")
    kong = next(f for f in plan.files if f.path.endswith("kong.yml"))
    assert kong.before is not None
    old_lines, new_lines = kong.before.splitlines(), kong.after.splitlines()
    assert len(old_lines) == len(new_lines)
    changed = [(a, b) for a, b in zip(old_lines, new_lines, strict=True) if a != b]
    assert changed and all("url: http://" in a and a.replace("realtime-dev.", "my-tenant.") == b for a, b in changed)
    # The entrypoint's $VARS survive untouched (the file is a template).
    dollars = [w for w in kong.before.split() if w.startswith(("$", '"$'))]
    assert dollars and all(w in kong.after.split() for w in dollars)


def test_env_holds_secrets_so_only_its_compose_file_line_leaves(corpus: Path, tmp_path: Path,
                                                                 clean_env: None) -> None:
    stack = _stack(corpus, tmp_path, "2026-kong")
    with (stack / ".env").open("a") as fh:
        fh.write("JWT_SECRET=CANARY-lifecycle-secret-0123456789abcdef0123456789\n")
    plan = plan_rename(Target.from_stack_dir(stack), "my-tenant")
    out = tmp_path / "out"
    written = plan.write(out, stack)
    assert (out / ".env.patch").is_file() and not (out / ".env").exists()
    everything = "".join(p.read_text() for p in written) + str(plan) + repr(plan.to_dict())
    assert "CANARY-lifecycle" not in everything
    assert "+COMPOSE_FILE=docker-compose.yml:docker-compose.kong.yml:docker-compose.override.yml" in plan.diff()


def test_out_inside_the_stack_and_bad_names_are_usage_errors(corpus: Path, tmp_path: Path, clean_env: None,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    stack = _stack(corpus, tmp_path, "2025-kong")
    before = _digest(stack)
    assert main(["tenant", "rename", "my-tenant", "--stack", str(stack), "--out", str(stack)]) == 2
    assert main(["tenant", "rename", "Bad.Name", "--stack", str(stack)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert any("--out" in e and "inside the stack" in e for e in err) and any("'Bad.Name'" in e for e in err)
    assert _digest(stack) == before
    assert main(["tenant", "rename", "my-tenant", "--stack", str(stack), "--apply"]) == 2  # --apply needs --yes


@pytest.mark.parametrize("layout", ["2025-kong", "2026-kong", "2026-envoy"])
def test_added_tenant_is_routed_by_host_and_both_tenants_pass(layout: str, corpus: Path, tmp_path: Path,
                                                              clean_env: None) -> None:
    stack = _stack(corpus, tmp_path, layout)
    renamed = tmp_path / "renamed"
    plan_rename(Target.from_stack_dir(stack), "my-tenant").write(renamed, stack)
    base = _lay_over(renamed, stack)
    added = tmp_path / "added"
    plan = plan_add(Target.from_stack_dir(base), "tenant-b", "b.example.com")
    assert not plan.blocked and plan.write(added, base)
    both = _lay_over(added, base)
    for tenant in ("my-tenant", "tenant-b"):
        assert _bad(both, tenant) == [], tenant
    loaded = Stack.load(both)
    up = realtime_upstream(loaded)
    assert up.tenants == ("my-tenant",) and up.routed_tenants == {"tenant-b": ("b.example.com",)}
    assert "tenant-b.supabase-realtime" in loaded.realtime_service().dns_names  # type: ignore[union-attr]
    if layout.endswith("kong"):
        kong = load_kong(loaded)
        assert kong is not None
        for host, upstream in (("b.example.com", "tenant-b"), ("localhost", "my-tenant"), (None, "my-tenant")):
            found = kong.route_for("/realtime/v1/websocket", "GET", host or "other.example.com")
            assert found is not None and found[1] is not None and found[1].host == f"{upstream}.supabase-realtime"
    else:
        envoy = load_envoy(loaded)
        assert envoy is not None
        for host, upstream in (("b.example.com", "tenant-b"), ("localhost", "my-tenant")):
            found = envoy.route_for("/realtime/v1/websocket", host)
            assert found is not None and found[1].host_rewrite_literal == f"{upstream}.supabase-realtime"
    # remove undoes add: the gateway file is back to what it was.
    gone = plan_remove(Target.from_stack_dir(both), "tenant-b")
    gateway = next(f for f in gone.files if not f.path.endswith(("override.yml", ".env")))
    original = (base / gateway.path).read_text()
    assert gateway.after == original
    assert plan_remove(Target.from_stack_dir(both), "my-tenant").blocked  # the stack's own tenant: rename first


def test_rows_only_half_of_a_rename_is_caught_with_the_rename_as_remedy(corpus: Path, tmp_path: Path,
                                                                        clean_env: None) -> None:
    stack = _stack(corpus, tmp_path, "2026-envoy")
    report = run_checks(Target.from_stack_dir(stack, tenant="my-tenant"), only="compose.realtime.tenant_consistency")
    result = report.by_id("compose.realtime.tenant_consistency")
    assert result.status is Status.FAIL and "rtbook tenant rename my-tenant" in result.remedy


def test_without_a_database_the_rows_are_described_not_planned(corpus: Path, tmp_path: Path,
                                                               clean_env: None) -> None:
    stack = _stack(corpus, tmp_path, "2025-kong")
    plan = plan_rename(Target.from_stack_dir(stack), "my-tenant")
    assert not plan.rows.reachable and plan.rows.changes == []
    assert any("postgres_cdc_rls" in n and "DB_ENC_KEY" in n for n in plan.rows.notes)
    steps = "\n".join(plan.steps)
    assert steps.index("Database first") < steps.index("docker compose up -d realtime") < steps.index("kong")


def test_check_all_tenants_runs_the_tenant_checks_per_tenant(corpus: Path, tmp_path: Path, clean_env: None,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    import json

    stack = _stack(corpus, tmp_path, "2026-kong")
    base = _lay_over(_written(plan_rename(Target.from_stack_dir(stack), "my-tenant"), tmp_path / "r", stack), stack)
    both = _lay_over(_written(plan_add(Target.from_stack_dir(base), "tenant-b", "b.example.com"), tmp_path / "a",
                              base), base)
    capsys.readouterr()
    # Static and (unreachable) live checks: tenant-dependent ones run once more for tenant-b.
    code = main(["check", "--stack", str(both), "--all-tenants", "--live", "--no-docker", "--timeout", "1",
                 "--db-url", "postgresql://supabase_admin@127.0.0.1:9/postgres", "--format", "json"])
    results = json.loads(capsys.readouterr().out)["results"]
    assert code == 1  # no database there
    by_tenant = {t: [r["id"] for r in results if r["summary"].startswith(f"[{t}] ")] for t in ("my-tenant", "tenant-b")}
    assert len(by_tenant["my-tenant"]) + len(by_tenant["tenant-b"]) == len(results)
    assert "compose.realtime.tenant_consistency" in by_tenant["my-tenant"]
    assert {"tenant.row", "realtime.join", "gateway.websocket", "kong.realtime_ws",
            "compose.realtime.tenant_consistency"} <= set(by_tenant["tenant-b"])
    # The files, the database and the keys are the same for every tenant: checked once.
    once = ("env.", "kong.parse", "db.", "compose.realtime.present")
    assert not any(i.startswith(once) for i in by_tenant["tenant-b"])
    ws = next(r for r in results if r["id"] == "kong.realtime_ws" and r["summary"].startswith("[tenant-b]"))
    assert ws["status"] == "pass" and "tenant-b.supabase-realtime" in ws["summary"]
    # Several --tenant are for check only.
    assert main(["tenant", "plan", "--stack", str(both), "--tenant", "a", "--tenant", "b"]) == 2


def _written(plan: object, out: Path, stack: Path) -> Path:
    plan.write(out, stack)  # type: ignore[attr-defined]
    return out


def test_a_public_host_whose_routes_reach_two_tenants_fails(corpus: Path, tmp_path: Path, clean_env: None) -> None:
    stack = _stack(corpus, tmp_path, "2026-kong")
    base = _lay_over(_written(plan_rename(Target.from_stack_dir(stack), "my-tenant"), tmp_path / "r", stack), stack)
    both = _lay_over(_written(plan_add(Target.from_stack_dir(base), "tenant-b", "b.example.com"), tmp_path / "a",
                              base), base)
    assert _bad(both, "tenant-b") == []
    kong = both / "volumes/api/kong.yml"
    kong.write_text(kong.read_text().replace("url: http://tenant-b.supabase-realtime:4000/socket",
                                             "url: http://my-tenant.supabase-realtime:4000/socket"))
    result = run_checks(Target.from_stack_dir(both, tenant="tenant-b"),
                        only="compose.realtime.tenant_consistency").by_id("compose.realtime.tenant_consistency")
    assert result.status is Status.FAIL and "b.example.com reach different tenants" in result.summary
