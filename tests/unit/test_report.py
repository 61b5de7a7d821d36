"""rtbook.report: root-cause grouping, placeholder-free remedies, the path diagram, the chart and the summaries.

Pure logic over CheckResults; the same functions run on real sandbox results in
tests/integration/test_rootcause_scenarios.py.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from rtbook.remedies import CAUSES, PLACEHOLDER, finish
from rtbook.report.charts import LatencyChart
from rtbook.report.diagram import PathDiagram, hop_of
from rtbook.report.html import summary_html
from rtbook.report.markdown import md_escape, summary_markdown
from rtbook.report.rootcause import (
    DEPENDS_ON,
    RANK,
    _declared,
    closing_lines,
    dependencies,
    offerable_remedy,
    root_causes,
)
from rtbook.results import CheckResult, Report, Status
from rtbook.runbook.record import NotebookOutcome

P, F, W, S = Status.PASS, Status.FAIL, Status.WARN, Status.SKIP

TENANT_APPLY = ("Make the Host's first label equal the seeded tenant, and restart realtime with SEED_SELF_HOST=true "
                "so the row exists (or run 'rtbook tenant apply --yes').")


def _r(cid: str, status: Status, summary: str = "", remedy: str = "", **kw: Any) -> CheckResult:
    return CheckResult(cid, status, summary=summary or f"{cid} {status.value}", remedy=remedy, **kw)


def _tenant_mismatch() -> list[CheckResult]:
    """The shape of a real tenant-mismatch run: one static failure, live failures that name it in see_also."""
    live = dict(cause="tenant_not_found", remedy=TENANT_APPLY,
                see_also=("compose.realtime.tenant_consistency", "tenant.row"))
    return [
        _r("compose.realtime.tenant_consistency", F, "Tenant mismatch: Host supabase-realtime",
           "Point kong.yml at http://realtime-dev.supabase-realtime:4000"),
        _r("kong.realtime_ws", P), *[_r(f"envoy.x{i}", S, "Skipped: the gateway is Kong") for i in range(7)],
        _r("tenant.row", P), _r("tenant.jwt_secret", P), _r("tenant.extension", P), _r("tenant.db_settings", P),
        _r("db.wal_level", P), _r("db.publication", P), _r("db.rls", P),
        _r("gateway.rest", F, "HTTP 401 Tenant not found", **live),
        _r("gateway.websocket", F, "HTTP 404 Tenant not found", **live),
        _r("realtime.join", F, "HTTP 404", **live, metrics={"connect_ms": 3.0}),
        _r("realtime.postgres_changes", F, "HTTP 404", **live),
    ]


# ---------------------------------------------------------------- the dependency table


def test_declared_edges_within_a_rank_have_no_cycle() -> None:
    """Edges to an earlier rank cannot loop; same-rank edges come only from DEPENDS_ON, which must be acyclic."""
    ids = {d for deps in DEPENDS_ON.values() for d in deps} | {k for k in DEPENDS_ON if not k.endswith(".")}

    def rank(c: str) -> int:
        return RANK.get(c.split(".", 1)[0], 3)

    graph = {c: [d for d in _declared(c) if d != c and rank(d) == rank(c)] for c in ids}
    state: dict[str, int] = {}

    def visit(c: str, path: tuple[str, ...]) -> None:
        assert state.get(c) != 1, f"cycle: {' -> '.join((*path, c))}"
        if state.get(c) == 2:
            return
        state[c] = 1
        for d in graph.get(c, []):
            visit(d, (*path, c))
        state[c] = 2

    for c in sorted(ids):
        visit(c, ())
    assert graph["realtime.rls"] == ["realtime.join", "realtime.postgres_changes"]


def test_see_also_and_cause_edges_only_point_upstream() -> None:
    # A static check naming the live check that would show it must not make the live check its cause.
    static = _r("kong.realtime_auth", F, see_also=("gateway.websocket", "kong.parse"))
    assert dependencies(static) == ("kong.parse", "kong.realtime_ws", "kong.plugins_enabled")
    live = _r("gateway.websocket", F, cause="jwt_signature")
    assert "tenant.jwt_secret" in dependencies(live) and "env.api_keys" in dependencies(live)


# ---------------------------------------------------------------- grouping


def test_one_cause_explains_the_live_failures() -> None:
    roots = root_causes(_tenant_mismatch())
    assert [rc.check_id for rc in roots] == ["compose.realtime.tenant_consistency"]
    assert [s.id for s in roots[0].symptoms] == ["gateway.rest", "gateway.websocket", "realtime.join",
                                                 "realtime.postgres_changes"]
    assert roots[0].remedy == "Point kong.yml at http://realtime-dev.supabase-realtime:4000"
    assert "explains 4 other failing checks" in roots[0].headline()


def test_without_the_static_failure_the_live_one_is_the_root_and_an_empty_plan_is_not_offered() -> None:
    results = [r for r in _tenant_mismatch() if r.id != "compose.realtime.tenant_consistency"]
    roots = root_causes(results)
    # gateway.rest and gateway.websocket are both rank 3 and neither declares the other: two roots; the join
    # (which needs the WebSocket) folds under gateway.websocket.
    assert roots[0].check_id == "gateway.websocket"
    assert [s.id for s in roots[0].symptoms] == ["realtime.join", "realtime.postgres_changes"]
    # Every tenant check passed, so 'rtbook tenant apply' would plan "Nothing to change": not offered.
    assert "rtbook tenant apply" not in roots[0].remedy
    assert roots[0].remedy == ("Make the Host's first label equal the seeded tenant, and restart realtime with "
                               "SEED_SELF_HOST=true so the row exists.")


def test_tenant_apply_is_offered_when_a_tenant_check_failed() -> None:
    results = [_r("tenant.row", F, "No tenant row", "rtbook tenant apply --yes --create --tenant realtime-dev"),
               _r("tenant.jwt_secret", P), _r("tenant.extension", P), _r("tenant.db_settings", P)]
    assert offerable_remedy(TENANT_APPLY, results) == TENANT_APPLY
    assert root_causes(results)[0].remedy == "rtbook tenant apply --yes --create --tenant realtime-dev"
    # A tenant check that did not run is not proof of an empty plan either.
    assert offerable_remedy(TENANT_APPLY, [_r("tenant.row", P)]) == TENANT_APPLY


@pytest.mark.parametrize("remedy, expected", [
    ("Restart realtime, or run 'rtbook tenant apply --yes'.", "Restart realtime."),
    ("Restore the row (restart realtime with SEED_SELF_HOST=true, or 'rtbook tenant apply --yes'), then reconnect.",
     "Restore the row, then reconnect."),
    ("Run rtbook tenant apply --yes. Then reconnect.", "Then reconnect."),
])
def test_offerable_remedy_removes_only_the_empty_plan(remedy: str, expected: str) -> None:
    passed = [_r(c, P) for c in ("tenant.row", "tenant.jwt_secret", "tenant.extension", "tenant.db_settings")]
    assert offerable_remedy(remedy, passed) == expected


def test_a_warning_a_failure_needs_is_its_cause_and_lone_warnings_come_after_failures() -> None:
    results = [_r("db.rls", W, "authenticated: no SELECT policy", "CREATE POLICY todos_select ON public.todos"),
               _r("realtime.private", W, "private channels not set up"),
               _r("realtime.join", P), _r("realtime.postgres_changes", P),
               _r("realtime.rls", F, "authenticated got nothing")]
    roots = root_causes(results)
    assert [(rc.check_id, [s.id for s in rc.symptoms]) for rc in roots] == [
        ("db.rls", ["realtime.rls"]), ("realtime.private", [])]
    assert roots[0].remedy.startswith("CREATE POLICY")


def test_later_result_of_the_same_check_wins() -> None:
    results = [_r("tenant.row", F, "missing"), _r("realtime.join", F, cause="tenant_not_found"),
               _r("tenant.row", P, "present after apply")]
    assert [rc.check_id for rc in root_causes(results)] == ["realtime.join"]


def test_healthy_run_has_no_cause_and_the_cli_adds_nothing() -> None:
    results = [_r("compose.realtime.tenant_consistency", P), _r("realtime.join", P)]
    assert root_causes(results) == [] and closing_lines(results) == []


def test_cli_last_line_names_the_root_cause() -> None:
    lines = closing_lines(_tenant_mismatch())
    assert lines[-1].startswith("root cause: compose.realtime.tenant_consistency, explains 4 other failing checks")
    assert "notebook" not in lines[-1]
    assert sum("remedy:" in line for line in lines) == 1


# ---------------------------------------------------------------- placeholders


@pytest.mark.parametrize("cause_id", sorted(CAUSES))
def test_no_cause_remedy_keeps_a_placeholder_once_finished(cause_id: str) -> None:
    c = CAUSES[cause_id]
    for text in (c.title, c.explanation, c.remedy):
        done = finish(text, {"tenant": "realtime-dev"})
        assert PLACEHOLDER.search(done) is None, done


def test_finish_fills_known_values_and_never_a_secret() -> None:
    text = "UPDATE ... WHERE external_id = '<tenant>'; send apikey=<ANON_KEY>; ADD TABLE <schema>.<table>;"
    done = finish(text, {"tenant": "acme", "schema": "public", "table": "todos"})
    assert done == "UPDATE ... WHERE external_id = 'acme'; send apikey=$ANON_KEY; ADD TABLE public.todos;"


def test_registry_fills_placeholders_of_every_result(tmp_path: Path) -> None:
    from rtbook.registry import CheckSpec, run_one
    from rtbook.target import Target

    spec = CheckSpec("kong.demo", "demo", lambda _t, cid: CheckResult(
        cid, F, summary="x", remedy="POST /api/tenants/<tenant>/reload; DROP <name>; DB_HOST=<DB_HOST>"))
    target = Target(tenant="acme", env={"DB_HOST": "db.internal"})
    [result] = run_one(spec, target)
    assert result.remedy == "POST /api/tenants/acme/reload; DROP the slot name; DB_HOST=db.internal"


# ---------------------------------------------------------------- collapsing skips


def test_repeated_skips_collapse_into_one_line_per_reason() -> None:
    report = Report(_tenant_mismatch())
    text = str(report)
    assert text.count("Skipped: the gateway is Kong") == 1
    assert "[SKIP] envoy.x0, envoy.x1, envoy.x2, envoy.x3, envoy.x4, envoy.x5, envoy.x6 (7):" in text
    html = report._repr_html_()
    assert html.count("Skipped: the gateway is Kong") == 1 and "SKIP ×7" in html
    single = Report([_r("docker.engine", S, "Skipped: no engine")])
    assert str(single).startswith("[SKIP] docker.engine: Skipped: no engine")


# ---------------------------------------------------------------- the diagram


def test_diagram_marks_the_root_hop_failing_and_the_rest_affected() -> None:
    diagram = PathDiagram.from_results(_tenant_mismatch(), tenant="realtime-dev")
    status = {h.key: h.status for h in diagram.hops}
    assert status == {"client": "unknown", "gateway": "affected", "host": "fail", "tenant": "pass",
                      "realtime": "affected", "database": "affected"}
    assert [h.key for h in diagram.failing] == ["host"]
    svg = diagram.svg()
    root = ET.fromstring(svg)  # well-formed XML
    assert root.get("class") == "rtbook-path"
    fails = [g for g in root.iter("{http://www.w3.org/2000/svg}g") if "hop-fail" in (g.get("class") or "")]
    assert [g.get("data-hop") for g in fails] == ["host"]
    assert "<- root cause" in diagram.text().splitlines()[3]


def test_load_balancer_hop_only_when_checked_and_text_is_escaped() -> None:
    results = [_r("kong.realtime_ws", P, evidence={"route": "<script>alert(1)</script>", "upstream": "http://a&b"})]
    diagram = PathDiagram.from_results(results)
    assert "lb" not in [h.key for h in diagram.hops]
    svg = diagram.svg()
    ET.fromstring(svg)
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    with_lb = PathDiagram.from_results([*results, _r("lb.upstream", F, "nginx drops Upgrade")])
    assert [h.key for h in with_lb.hops][:3] == ["client", "lb", "gateway"]
    assert hop_of("realtime.postgres_changes") == "database" and hop_of("realtime.join") == "realtime"


# ---------------------------------------------------------------- the chart


def test_latency_chart_is_self_contained_svg() -> None:
    results = [_r("realtime.join", P, metrics={"connect_ms": 4.2, "join_ms": 1.7}),
               _r("realtime.broadcast", P, metrics={"peer_ms": 1.0}),
               _r("realtime.postgres_changes", F, metrics={"insert_ms": 9.0})]
    chart = LatencyChart.from_results(results)
    assert chart.values == {"connect": 4.2, "join": 1.7, "broadcast": 1.0, "presence": None, "postgres_changes": None}
    svg = chart.svg()
    ET.fromstring(svg)
    assert not re.search(r'(?:href|src)="(?!#)', svg), "the chart refers to something outside itself"
    assert chart.img().startswith('<img class="rtbook-latency"') and "data:image/svg+xml;base64," in chart.img()


# ---------------------------------------------------------------- summaries


def _notebooks(results: list[CheckResult]) -> list[NotebookOutcome]:
    first = [r for r in results if not r.id.startswith(("gateway.", "realtime."))]
    rest = [r for r in results if r.id.startswith(("gateway.", "realtime."))]
    return [NotebookOutcome("01_setup", "failed", 1.5, Report(first)),
            NotebookOutcome("04_subscription_tests", "failed", 9.0, Report(rest))]


def test_markdown_escape_renders_literally() -> None:
    from markdown_it import MarkdownIt

    text = "http://realtime-dev.<name>:4000 | `x` *y* [z](u) a\\b & c"
    out = MarkdownIt("commonmark").enable("table").render(f"| a |\n|---|\n| {md_escape(text)} |\n")
    assert "<td>http://realtime-dev.&lt;name&gt;:4000 | `x` *y* [z](u) a\\b &amp; c</td>" in out


def test_summary_md_root_cause_first_each_remedy_once_and_renders() -> None:
    from markdown_it import MarkdownIt

    results = _tenant_mismatch()
    results[0] = _r("compose.realtime.tenant_consistency", F, "Host <name> | `x`", "Use http://<host>:4000 | `y`")
    md = summary_markdown("run-1", _notebooks(results), {"target_kind": "sandbox"}, "t0", "t1", 1,
                          since={"realtime.join": "run-0"})
    assert md.index("## Root cause") < md.index("## Notebooks") < md.index("## 01\\_setup")
    assert md.count(TENANT_APPLY) == 0  # folded under the root cause, not repeated
    assert md.count("Use http://") == 1
    assert "(see root cause 1)" in md and "failing since run-0" in md
    html = MarkdownIt("commonmark").enable("table").render(md)
    assert "<name>" not in html and "<host>" not in html
    assert "Use http://&lt;host&gt;:4000 | `y`" in html
    for row in re.findall(r"<tr>(.*?)</tr>", html, re.S):  # no stray | split a cell
        assert row.count("<td>") in (0, 4), row


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name in ("src", "href", "action", "data") and value:
                self.refs.append((tag, name, value))


def test_summary_html_is_self_contained_and_leads_with_the_root_cause() -> None:
    results = _tenant_mismatch()
    results.append(_r("realtime.broadcast", F, "<img src=http://evil/x>", cause="tenant_not_found",
                      see_also=("compose.realtime.tenant_consistency",)))
    page = summary_html("run-1", _notebooks(results), {"target_kind": "sandbox", "tenant": "realtime-dev"},
                        "t0", "t1", 1, since={"realtime.join": "2026-12-01 (run-0)"})
    parser = _Refs()
    parser.feed(page)
    assert "script" not in parser.tags and "link" not in parser.tags and "iframe" not in parser.tags
    for tag, name, value in parser.refs:
        assert value.startswith(("data:", "#")) or re.fullmatch(r"[\w.-]+\.(ipynb|md)", value), (tag, name, value)
    for nb in ("01_setup", "04_subscription_tests"):
        assert ("a", "href", f"{nb}.ipynb") in parser.refs
    assert "@import" not in page and not re.search(r"url\((?!#)", page)
    assert "&lt;img src=http://evil/x&gt;" in page
    assert page.index('class="rtbook-rootcause"') < page.index('class="rtbook-path"') < page.index("<h2>Checks")
    assert page.count('data-check="compose.realtime.tenant_consistency"') == 2  # the cause block and its row
    assert "failing since 2026-12-01 (run-0)" in page
    assert page.count("<details") >= len(results) - 6  # one per check, the seven skips as one
    assert page.count(TENANT_APPLY) == 0


def test_a_symptom_verdict_that_restates_warnings_is_not_a_cause_of_its_own() -> None:
    from rtbook.runbook.troubleshoot import diagnose

    results = [_r("realtime.private", W, "private channels not set up"), _r("realtime.join", P),
               _r("gateway.websocket", P)]
    verdicts = diagnose(results, "socket_closes")
    assert verdicts[0].status is Status.WARN and "The same root cause" not in verdicts[0].remedy
    assert [rc.check_id for rc in root_causes([*results, *verdicts])] == ["realtime.private"]


def test_two_symptoms_of_one_cause_give_its_remedy_once() -> None:
    from rtbook.runbook.troubleshoot import diagnose

    verdicts = diagnose(_tenant_mismatch())
    failing = [v for v in verdicts if v.failed]
    assert len(failing) >= 2
    assert failing[0].remedy.startswith("Point kong.yml at http://realtime-dev.supabase-realtime:4000")
    for v in failing[1:]:
        assert v.remedy == ("The same root cause as above (compose.realtime.tenant_consistency): apply its remedy "
                            "once.")


def test_a_benign_warning_does_not_take_a_failure_from_its_failing_cause() -> None:
    results = [*_tenant_mismatch(), _r("tenant.db_settings", W, "db_pool is small")]
    roots = root_causes(results)
    assert roots[0].check_id == "compose.realtime.tenant_consistency" and len(roots[0].symptoms) == 4
    assert [rc.check_id for rc in roots[1:]] == ["tenant.db_settings"] and not roots[1].symptoms


def test_notebook_view_shows_the_cause_then_the_path_with_the_failing_hop() -> None:
    from rtbook.runbook.views import RootCauseView

    view = RootCauseView(_tenant_mismatch(), tenant="realtime-dev")
    page = view._repr_html_()
    assert page.index('class="rtbook-rootcause"') < page.index('class="rtbook-path"')
    assert page.count("hop hop-fail") == 1 and 'data-hop="host"' in page
    assert "border:2px solid #c5221f" in page  # styled without a <style> element
    text = str(view)
    assert text.startswith("ROOT CAUSE compose.realtime.tenant_consistency") and "path: Client" in text
    assert "No results yet" in str(RootCauseView([]))
