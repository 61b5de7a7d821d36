"""``summary.html``: one self-contained page per run record.

Root causes first (``rtbook-rootcause``), then the path diagram (``rtbook-path``), the latency
chart, the notebooks (links to the executed copies next to it) and one collapsible ``<details>``
per check. Styles are inline, the chart is a data URI, there is no script, font or stylesheet
from anywhere: the page opens the same offline, from a CI artifact or a mail attachment. Every
piece of check text is escaped.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from typing import Any

from rtbook.report.charts import LatencyChart
from rtbook.report.diagram import PathDiagram
from rtbook.report.markdown import NotebookLike, interrupted_line
from rtbook.report.rootcause import RootCause, root_causes
from rtbook.results import CheckResult, Report, Status

__all__ = ["rootcause_html", "summary_html"]

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;padding:16px 20px;
max-width:1200px;color:#202124;line-height:1.4}
h1{font-size:1.4em;margin:0 0 4px}h2{font-size:1.15em;margin:24px 0 8px;border-bottom:1px solid #dadce0}
.verdict{display:inline-block;padding:2px 10px;border-radius:12px;font-weight:bold;color:#fff}
.verdict.passed{background:#137333}.verdict.failed{background:#c5221f}
.meta{color:#5f6368;font-size:.9em}
.rtbook-rootcause{border:2px solid #c5221f;background:#fce8e6;border-radius:8px;padding:10px 14px;margin:8px 0}
.rtbook-rootcause.rtbook-ok{border-color:#137333;background:#e6f4ea}
.rtbook-rootcause.rtbook-warning{border-color:#b06000;background:#fef7e0}
.rtbook-rootcause h3{margin:0 0 6px;font-size:1.05em}
.remedy{background:#fff;border:1px solid #dadce0;border-radius:6px;padding:8px;white-space:pre-wrap;
overflow-wrap:anywhere;font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.88em;margin:6px 0}
code{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.92em}
table{border-collapse:collapse}td,th{padding:3px 10px;text-align:left;border-bottom:1px solid #eee}
details.check{border-left:5px solid #dadce0;margin:3px 0;padding:2px 8px;background:#fafafa}
details.check>summary{cursor:pointer}
details.rtbook-pass{border-color:#137333}details.rtbook-warn{border-color:#b06000}
details.rtbook-fail,details.rtbook-error{border-color:#c5221f;background:#fff7f6}
details.rtbook-skip{border-color:#bdc1c6}
.st{display:inline-block;min-width:3.2em;font-weight:bold}
.st.pass{color:#137333}.st.warn{color:#b06000}.st.fail,.st.error{color:#c5221f}.st.skip{color:#5f6368}
.since{color:#c5221f;font-size:.85em}
pre.evidence{white-space:pre-wrap;overflow-wrap:anywhere;font-size:.8em;background:#f1f3f4;padding:6px}
"""


def _e(text: Any) -> str:
    return html.escape(str(text))


# Inline styles as well as classes: JupyterLab strips <style> from untrusted outputs, not style attributes.
_BOX = {"fail": "border:2px solid #c5221f;background:#fce8e6", "ok": "border:2px solid #137333;background:#e6f4ea",
        "warn": "border:2px solid #b06000;background:#fef7e0"}
_BOX_REST = ";border-radius:8px;padding:8px 12px;margin:6px 0;color:#202124"
_REMEDY_STYLE = ("background:#fff;border:1px solid #dadce0;border-radius:6px;padding:6px 8px;white-space:pre-wrap;"
                 "overflow-wrap:anywhere;font-family:monospace;font-size:.9em;margin:6px 0")


def _remedy(remedy: str) -> str:
    return f'<div class="remedy" style="{_REMEDY_STYLE}">{_e(remedy)}</div>' if remedy else ""


def rootcause_html(roots: Sequence[RootCause]) -> str:
    """The root-cause block(s): each cause with its one remedy and the failures it explains folded below it."""
    failing = [rc for rc in roots if rc.result.failed or rc.symptoms]
    warned = [rc for rc in roots if rc not in failing]
    if not failing:
        parts = [f'<section class="rtbook-rootcause rtbook-ok" style="{_BOX["ok"]}{_BOX_REST}"><h3>No check failed</h3>'
                 + (f"<p>{len(warned)} warning(s) below are worth a look.</p>" if warned else "") + "</section>"]
    else:
        parts = []
        for i, rc in enumerate(failing, 1):
            n = len(rc.symptoms)
            symptoms = "".join(
                f'<li><span class="st {_e(s.status.value)}">{_e(s.status.value.upper())}</span> '
                f"<code>{_e(s.id)}</code>: {_e(s.summary or s.title)}</li>" for s in rc.symptoms)
            explains = f"explains {n} other failing check{'s' if n != 1 else ''}" if n else "no other failure"
            parts.append(
                f'<section class="rtbook-rootcause" style="{_BOX["fail"]}{_BOX_REST}" data-check="{_e(rc.check_id)}">'
                f"<h3>Root cause {i} of {len(failing)}: <code>{_e(rc.check_id)}</code> ({explains})"
                f"</h3><p>{_e(rc.title)}</p>{_remedy(rc.remedy)}"
                + (f"<details><summary>{n} failing check{'s' if n != 1 else ''} explained by this cause</summary>"
                   f"<ul>{symptoms}</ul></details>" if n else "")
                + "</section>"
            )
    for rc in warned:
        parts.append(
            f'<section class="rtbook-rootcause rtbook-warning" style="{_BOX["warn"]}{_BOX_REST}" '
            f'data-check="{_e(rc.check_id)}">'
            f"<h3>Warning: <code>{_e(rc.check_id)}</code></h3><p>{_e(rc.title)}</p>{_remedy(rc.remedy)}</section>"
        )
    return "".join(parts)


def _check(r: CheckResult, explained_by: Mapping[str, str], since: Mapping[str, str]) -> str:
    body = []
    if r.id in explained_by and r.status is not Status.PASS:
        body.append(f"<p><em>{_e(explained_by[r.id])}</em></p>")
    if r.detail:
        body.append(f'<p style="white-space:pre-wrap">{_e(r.detail)}</p>')
    if r.remedy and r.status is not Status.PASS and r.id not in explained_by:
        body.append(_remedy(r.remedy))
    if r.metrics:
        body.append("<p>" + ", ".join(f"{_e(k)}: {float(v):.1f}" for k, v in r.metrics.items()) + "</p>")
    if r.evidence:
        text = json.dumps(r.evidence, indent=1, default=str)
        if len(text) > 4000:
            text = text[:4000] + "\n… (cut; the full evidence is in the notebook's results.json)"
        body.append(f'<details><summary>evidence</summary><pre class="evidence">{_e(text)}</pre></details>')
    when = f' <span class="since">failing since {_e(since[r.id])}</span>' if r.id in since and r.failed else ""
    return (
        f'<details class="check rtbook-{_e(r.status.value)}" data-check="{_e(r.id)}"'
        + (" open" if r.failed and r.id not in explained_by else "")
        + f'><summary><span class="st {_e(r.status.value)}">{_e(r.status.value.upper())}</span> '
        f"<code>{_e(r.id)}</code> {_e(r.summary or r.title)}{when}</summary>{''.join(body)}</details>"
    )


def _checks(report: Report, explained_by: Mapping[str, str], since: Mapping[str, str]) -> str:
    out = []
    for row in report.rows():
        if isinstance(row, CheckResult):
            out.append(_check(row, explained_by, since))
        else:
            reason, group = row
            ids = ", ".join(f"<code>{_e(r.id)}</code>" for r in group)
            out.append(f'<details class="check rtbook-skip"><summary><span class="st skip">SKIP</span> '
                       f"×{len(group)}: {_e(reason)}</summary><p>{ids}</p></details>")
    return "".join(out)


def summary_html(
    name: str,
    notebooks: Sequence[NotebookLike],
    params: Mapping[str, Any],
    started: str,
    ended: str,
    exit_code: int,
    since: Mapping[str, str] | None = None,
    interrupted: Mapping[str, Any] | None = None,
) -> str:
    """The whole ``summary.html`` of a run record (``interrupted``: the record is incomplete, and why).

    ``since`` maps a check id to when it started failing (filled from the run history); such
    checks say "failing since ..." next to their verdict.
    """
    since = since or {}
    overall = Report([r for n in notebooks for r in n.report])
    roots = root_causes(overall)
    explained_by: dict[str, str] = {}
    numbered = [rc for rc in roots if rc.result.failed or rc.symptoms]
    for i, rc in enumerate(numbered, 1):
        explained_by[rc.check_id] = f"Root cause {i}; its remedy is at the top of this page."
        for s in rc.symptoms:
            explained_by[s.id] = f"Explained by root cause {i} ({rc.check_id}); fix that first."
    tenant = str(params.get("tenant") or "")
    diagram = PathDiagram.from_results(overall, roots, tenant)
    chart = LatencyChart.from_results(overall)
    verdict = "incomplete" if interrupted else "passed" if exit_code == 0 else "failed"
    banner = (f'<p class="meta"><b>INCOMPLETE</b>: {_e(interrupted_line(interrupted))}</p>' if interrupted else "")
    rows = "".join(
        f'<tr><td><a href="{_e(n.name)}.ipynb">{_e(n.name)}</a></td><td><span class="st '
        f'{"pass" if n.status == "passed" else "fail"}">{_e(n.status)}</span></td>'
        f"<td>{_e(n.report.summary_line())}</td><td>{n.duration_s:.1f} s</td></tr>"
        for n in notebooks
    )
    sections = []
    for n in notebooks:
        error = (f"<p>The notebook stopped with {_e(n.error_name)}: {_e(n.error)}</p>"
                 if n.error_name and n.status == "error" else "")
        sections.append(
            f'<h3 id="nb-{_e(n.name)}"><a href="{_e(n.name)}.ipynb">{_e(n.name)}</a>: {_e(n.status)}</h3>'
            f"{error}{_checks(n.report, explained_by, since) or '<p>No check results were recorded.</p>'}"
        )
    target = _e(params.get("target_kind") or "") + (f", tenant {_e(tenant)}" if tenant else "")
    chart_html = (f"<h2>Latency</h2>{chart.img()}" if chart.measured else "")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>rtbook run {_e(name)}</title><style>{_CSS}</style></head><body>"
        f'<h1>rtbook run {_e(name)} <span class="verdict {verdict}">{verdict.upper()}</span></h1>'
        f'<p class="meta">{_e(overall.summary_line())} · target: {target} · started {_e(started)}, '
        f"ended {_e(ended)} · <a href=\"summary.md\">summary.md</a></p>{banner}"
        f"<h2>Root cause</h2>{rootcause_html(roots)}"
        f"<h2>Path</h2>{diagram._repr_html_()}"
        f"{chart_html}"
        f"<h2>Notebooks</h2><table><thead><tr><th>notebook</th><th>status</th><th>results</th><th>time</th></tr>"
        f"</thead><tbody>{rows}</tbody></table>"
        f"<h2>Checks</h2>{''.join(sections)}"
        "</body></html>\n"
    )
