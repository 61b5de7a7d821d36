"""Every break scenario yields exactly its expected root cause at the top, with one concrete remedy.

A table over ``rtbook.sandbox.scenarios.SCENARIOS``: a new scenario fails
``test_every_scenario_has_an_expected_root_cause`` until it is added here. Each scenario needs a sandbox
of its own: the manager applies a scenario's stack edits before the gateway starts (it reads kong.yml
once), its database edits before the server starts, and ``wal-level-replica`` at cluster creation, so
scenarios cannot be switched on a running sandbox. To keep it short, each sandbox runs every check once
(``run_checks``, in process, no papermill), and the results are cached for the summary.html browser test.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from rtbook.registry import run_checks
from rtbook.remedies import PLACEHOLDER
from rtbook.report.rootcause import closing_lines, root_causes
from rtbook.results import CheckResult, Report, Status
from rtbook.sandbox.scenarios import SCENARIOS
from rtbook.target import Target
from tests.conftest import ROOT, require
from tests.integration.sandbox_support import start

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

# scenario -> the check that must head the root causes.
EXPECTED = {
    "tenant-mismatch": "compose.realtime.tenant_consistency",
    "tenant-missing": "tenant.row",
    "jwt-mismatch": "tenant.jwt_secret",
    "wal-level-replica": "compose.db.wal_level",
    "not-in-publication": "db.publication",
    "publication-empty": "db.publication",
    "rls-denies": "db.rls",
    "replica-identity-default": "db.replica_identity",  # a warning: nothing fails, the warning leads
    "ws-route-missing": "kong.realtime_ws",
    "no-apikey-forwarding": "kong.realtime_auth",
    # Cluster scenarios run on two nodes behind nginx (rtbook sandbox up --nodes 2 --lb nginx).
    "nodes-not-clustered": "realtime.cluster",
    "lb-no-upgrade": "gateway.websocket",
    "lb-short-timeout": "realtime.cluster",
}
# Scenarios whose truthful symptom is that nothing fails: without stickiness, WebSockets to clustered
# nodes keep working (a WebSocket is one TCP connection); realtime.cluster notes the missing cookie.
NO_FAILURE = {"lb-no-sticky"}

# What the remedy must name, with the sandbox's real values (not a placeholder, not a generic phrase).
REMEDY_NAMES = {
    "tenant-mismatch": "http://realtime-dev.supabase-realtime:4000",
    "tenant-missing": "--tenant realtime-dev",
    "jwt-mismatch": "--tenant realtime-dev",
    "wal-level-replica": "wal_level=logical",
    "not-in-publication": "ADD TABLE public.todos",
    "publication-empty": "ADD TABLE public.todos",
    "rls-denies": "ON public.todos FOR SELECT TO authenticated",
    "replica-identity-default": "ALTER TABLE public.todos REPLICA IDENTITY FULL",
    "ws-route-missing": "realtime-v1-ws",
    "no-apikey-forwarding": "hide_credentials: false",
    "nodes-not-clustered": "CLUSTER_STRATEGIES",
    "lb-no-upgrade": "Upgrade and Connection",
    "lb-short-timeout": "proxy_read_timeout",
}

_CACHE: dict[str, tuple[list[CheckResult], list[str]]] = {}


def scenario_results(name: str) -> tuple[list[CheckResult], list[str]]:
    """Every check's result under scenario ``name`` and the tenant plan's change count when it was offered."""
    if name not in _CACHE and SCENARIOS[name].needs_cluster:
        with _cluster(name) as target:
            _CACHE[name] = (list(run_checks(target)), [])
    if name not in _CACHE:
        with start((name,)) as box:
            target = box.target()
            report = run_checks(target)
            roots = root_causes(report)
            plans = []
            if roots and "rtbook tenant apply" in roots[0].remedy:
                from rtbook import seeding

                plans = [c.kind for c in seeding.plan(target, create=True).changes]
        _CACHE[name] = (list(report), plans)
    return _CACHE[name]


@contextlib.contextmanager
def _cluster(name: str) -> Iterator[Target]:
    from rtbook.sandbox.manager import Sandbox
    from tests.conftest import have_postgres

    require(have_postgres(), "PostgreSQL 15 binaries with wal2json are not installed")
    require(Path("/usr/sbin/nginx").is_file(), "nginx is not installed")
    home = Path(tempfile.mkdtemp(prefix="rtbook-rc-cluster-"))
    home.chmod(0o755)
    try:
        with Sandbox(home=home, breaks=[name], nodes=2, lb="nginx"):
            yield Target.from_sandbox(home / "sandbox" / "state.json", tables=("public.todos",), timeout=4.0)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_every_scenario_has_an_expected_root_cause() -> None:
    assert set(EXPECTED) | NO_FAILURE == set(SCENARIOS) and set(EXPECTED) == set(REMEDY_NAMES)


@pytest.mark.parametrize("name", sorted(NO_FAILURE))
def test_scenario_without_failure(name: str) -> None:
    results, _ = scenario_results(name)
    assert not [r.id for r in results if r.failed]
    cluster = next(r for r in results if r.id == "realtime.cluster")
    assert cluster.evidence["affinity"]["cookies"] == [] and "one TCP connection" in cluster.detail


@pytest.mark.parametrize("name", list(EXPECTED))
def test_scenario_root_cause(name: str) -> None:
    results, plans = scenario_results(name)
    roots = root_causes(results)
    assert roots, f"{name}: no root cause found"
    top = roots[0]
    assert top.check_id == EXPECTED[name], [(rc.check_id, len(rc.symptoms)) for rc in roots]
    assert REMEDY_NAMES[name] in top.remedy, top.remedy
    # Every live failure is folded under the top cause: the reader sees one cause, not ten rows.
    live_failures = {r.id for r in results if r.failed and r.id.startswith(("gateway.", "realtime."))}
    # (The top cause itself may be a live check: realtime.cluster, gateway.websocket behind a load balancer.)
    folded = {s.id for s in top.symptoms} | {top.check_id}
    assert live_failures <= folded, live_failures - folded
    # No remedy anywhere keeps a <name> placeholder.
    for r in results:
        assert PLACEHOLDER.search(r.remedy) is None, f"{r.id}: {r.remedy}"
    # A remedy offering 'rtbook tenant apply' plans real changes here.
    if "rtbook tenant apply" in top.remedy:
        assert plans, f"{name}: the remedy offers a tenant apply that would plan nothing"
    # The CLI ends with the cause (or, when nothing failed, with nothing about causes).
    lines = closing_lines(results)
    if any(r.failed for r in results):
        assert lines[-1].startswith(f"root cause: {EXPECTED[name]}"), lines[-1]
    else:
        assert top.result.status is Status.WARN and lines == []


def test_tenant_mismatch_offers_no_empty_tenant_apply() -> None:
    results, _plans = scenario_results("tenant-mismatch")
    roots = root_causes(results)
    assert len([rc for rc in roots if rc.result.failed]) == 1
    assert "rtbook tenant apply" not in roots[0].remedy
    # The live checks' own remedy mentions it; the rows passed, so the grouping must not pass it on.
    assert any("rtbook tenant apply" in s.remedy for s in roots[0].symptoms)


def test_missing_table_is_reported_missing_and_wording_follows_the_configuration() -> None:
    with start(()) as box:
        named = box.target(tables=("public.todos", "public.nosuchtable"))
        report = run_checks(named, only=("db.publication", "db.replica_identity", "realtime.postgres_changes"))
        # As the notebooks build it when the tables parameter is empty: the sandbox's tables, not the user's.
        default = Target.from_sandbox(box.home / "sandbox" / "state.json", timeout=box.timeout)
        plain = run_checks(default, only=("db.replica_identity", "docker.engine"))
    pub = report.by_id("db.publication")
    assert pub.status is Status.FAIL and "public.nosuchtable does not exist" in pub.summary
    assert "not in" not in pub.summary and "ADD TABLE public.nosuchtable" not in pub.remedy
    pgc = report.by_id("realtime.postgres_changes")
    assert pgc.failed and pgc.cause == "table_missing", (pgc.cause, pgc.summary)
    assert "public.nosuchtable" in pgc.remedy and "ALTER PUBLICATION supabase_realtime ADD TABLE public.nosuchtable;" \
        in pgc.remedy and "Fix the table name" in pgc.remedy
    assert "the tables you named" in report.by_id("db.replica_identity").detail
    # Without tables named, the sandbox's own tables are checked and said to be that.
    ri = plain.by_id("db.replica_identity")
    assert "the tables you named" not in ri.detail + ri.summary and "sandbox" in ri.detail + ri.summary
    docker = plain.by_id("docker.engine")
    assert docker.status is Status.SKIP and "turned off" not in docker.summary


# ---------------------------------------------------------------- summary.html in Chromium

ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture
def chromium_page() -> Iterator[object]:
    chromium = shutil.which("chromium")
    require(chromium is not None, "Chromium not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "pip package playwright not installed")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"],
                                     headless=True, timeout=60_000)
        try:
            yield browser.new_page(viewport={"width": 1440, "height": 900})
        finally:
            browser.close()


def _write_record(results: list[CheckResult], record: Path) -> None:
    """A record written by the runner's own writer, the results split over the notebooks that run them."""
    from rtbook.runbook.notebooks import notebook_dir, notebook_for
    from rtbook.runbook.record import NotebookOutcome, RunOutcome, _write_record, environment_facts
    from rtbook.secrets import Redactor

    by_nb: dict[str, list[CheckResult]] = {}
    for r in results:
        by_nb.setdefault(notebook_for(r.id), []).append(r)
    outcome = RunOutcome(record_dir=record)
    for nb in sorted(by_nb):
        rep = Report(by_nb[nb])
        outcome.notebooks.append(NotebookOutcome(nb, "failed" if rep.failures else "passed", 1.0, rep))
    record.mkdir(parents=True)
    staging = record.parent / "staging"
    staging.mkdir()
    now = dt.datetime.now(dt.UTC)
    _write_record(record, outcome, {}, staging, notebook_dir(), {"target_kind": "sandbox", "tenant": "realtime-dev"},
                  Redactor(), now, now, environment_facts(), since={"realtime.join": "run 20261201T0900Z-sandbox"})


def test_summary_html_in_chromium(tmp_path: Path, chromium_page: object) -> None:
    from playwright.sync_api import Page, Request, Route, expect

    results, _ = scenario_results("tenant-mismatch")
    record = tmp_path / "20261203T110000Z-sandbox"
    _write_record(results, record)
    page: Page = chromium_page  # type: ignore[assignment]
    requested: list[str] = []

    def block(route: Route, request: Request) -> None:
        if not request.url.startswith("file://"):
            requested.append(request.url)
            route.abort()
        else:
            route.continue_()

    page.route("**/*", block)
    page.goto((record / "summary.html").as_uri())
    cause = page.locator(".rtbook-rootcause").first
    expect(cause).to_contain_text("compose.realtime.tenant_consistency")
    expect(cause).to_contain_text("http://realtime-dev.supabase-realtime:4000")
    box = cause.bounding_box()
    assert box is not None and box["y"] + box["height"] < 900, "the root cause is not in the first screen"
    fail_hops = page.locator(".rtbook-path .hop-fail")
    expect(fail_hops).to_have_count(1)
    assert fail_hops.first.get_attribute("data-hop") == "host"
    stroke = page.locator(".rtbook-path .hop-fail rect").first.get_attribute("stroke")
    assert stroke == "#c5221f"
    ARTIFACTS.mkdir(exist_ok=True)
    shot = tmp_path / "summary-html-tenant-mismatch.png"
    page.screenshot(path=str(shot), full_page=False)  # the first screen: cause, remedy, path
    shutil.copy(shot, ARTIFACTS / shot.name)
    assert shot.stat().st_size > 10_000
    join = page.locator('details.check[data-check="realtime.join"]')
    expect(join).to_contain_text("failing since run 20261201T0900Z-sandbox")
    join.locator(":scope > summary").click()
    expect(join).to_contain_text("Explained by root cause 1 (compose.realtime.tenant_consistency)")
    expect(page.locator('a[href="01_setup.ipynb"]').first).to_be_visible()
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"horizontal scrollbar: {overflow} px"
    assert requested == [], f"summary.html reached the network: {requested}"
