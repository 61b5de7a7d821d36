"""``summary.md``: root causes first, each remedy once, everything escaped for GitHub's renderer.

Text from checks can hold ``<``, ``>``, ``|``, backticks and ``*``: unescaped, GitHub swallows
``<name>`` as an HTML tag, a ``|`` splits a table cell and a backtick opens a code span. Every
piece of check text goes through :func:`md_escape` (or into a fenced block that cannot close early).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from rtbook.report.charts import latencies
from rtbook.report.diagram import PathDiagram
from rtbook.report.rootcause import RootCause, root_causes
from rtbook.results import CheckResult, Report, Status

__all__ = ["NotebookLike", "md_escape", "summary_markdown"]


class NotebookLike(Protocol):
    """What a summary needs of one executed notebook (``rtbook.runbook.record.NotebookOutcome``)."""

    name: str
    status: str
    duration_s: float
    report: Report
    error: str
    error_name: str


_SPECIAL = re.compile(r"([\\`*_\[\]|#])")


def md_escape(text: str) -> str:
    """``text`` as one line of inline markdown that renders literally (HTML special characters as entities)."""
    flat = " ".join(str(text).split())
    flat = flat.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _SPECIAL.sub(r"\\\1", flat)


def _fenced(text: str) -> list[str]:
    """A fenced block whose fence is longer than any backtick run inside (so it cannot be closed early)."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence + "text", *text.splitlines(), fence]


def _remedy_lines(remedy: str, indent: str = "   ") -> list[str]:
    if "\n" in remedy.strip():
        return [f"{indent}- remedy:", "", *(indent + "  " + line for line in _fenced(remedy.strip())), ""]
    return [f"{indent}- remedy: {md_escape(remedy)}"]


def _cause_lines(roots: Sequence[RootCause]) -> list[str]:
    failing = [rc for rc in roots if rc.result.failed or rc.symptoms]
    warned = [rc for rc in roots if rc not in failing]
    lines: list[str] = []
    if failing:
        n_sym = sum(len(rc.symptoms) for rc in failing)
        lines += [f"## Root cause{'s' if len(failing) > 1 else ''}", "",
                  f"{len(failing)} cause{'s' if len(failing) > 1 else ''} explain{'s' if len(failing) == 1 else ''} "
                  f"{len(failing) + n_sym} failing check{'s' if len(failing) + n_sym != 1 else ''}.", ""]
        for i, rc in enumerate(failing, 1):
            lines.append(f"{i}. **`{rc.check_id}`** ({rc.result.status.value}): {md_escape(rc.title)}")
            if rc.remedy:
                lines += _remedy_lines(rc.remedy)
            if rc.symptoms:
                ids = ", ".join(f"`{s.id}`" for s in rc.symptoms)
                lines.append(f"   - explains {len(rc.symptoms)} other failing check"
                             f"{'s' if len(rc.symptoms) != 1 else ''}: {ids}")
        lines.append("")
    else:
        lines += ["## Root cause", "", "No check failed.", ""]
    if warned:
        lines += ["## Warnings", ""]
        for rc in warned:
            lines.append(f"- **`{rc.check_id}`**: {md_escape(rc.title)}")
            if rc.remedy:
                lines += _remedy_lines(rc.remedy, indent="  ")
        lines.append("")
    return lines


def _check_lines(report: Report, where: Mapping[str, int], since: Mapping[str, str]) -> list[str]:
    lines: list[str] = []
    for row in report.rows():
        if isinstance(row, CheckResult):
            r = row
            line = f"- **{r.status.value.upper()}** `{r.id}`: {md_escape(r.summary or r.title)}"
            if r.id in where and r.status is not Status.PASS:
                # The remedy is written once, in the root-cause section; here only where to find it.
                line += f" (see root cause {where[r.id]})" if where[r.id] else " (see Warnings)"
            elif r.remedy and r.status is not Status.PASS:
                line += f"; remedy: {md_escape(r.remedy)}"
            if r.id in since and r.failed:
                line += f"; failing since {md_escape(since[r.id])}"
            lines.append(line)
        else:
            reason, group = row
            ids = ", ".join(f"`{r.id}`" for r in group)
            lines.append(f"- **SKIP** ×{len(group)} {ids}: {md_escape(reason)}")
    return lines


def interrupted_line(interrupted: Mapping[str, Any]) -> str:
    """``interrupted by SIGTERM during 04_...; not run: 05_...: this record holds what ran until then``."""
    return (f"interrupted by {interrupted.get('signal')}"
            + (f" during {interrupted['during']}" if interrupted.get("during") else "")
            + (f"; not run: {', '.join(interrupted['not_run'])}" if interrupted.get("not_run") else "")
            + ": this record holds what ran until then")


def summary_markdown(
    name: str,
    notebooks: Sequence[NotebookLike],
    params: Mapping[str, Any],
    started: str,
    ended: str,
    exit_code: int,
    since: Mapping[str, str] | None = None,
    interrupted: Mapping[str, Any] | None = None,
) -> str:
    """The whole ``summary.md`` of a run record (``interrupted``: the record is incomplete, and why)."""
    since = since or {}
    overall = Report([r for n in notebooks for r in n.report])
    roots = root_causes(overall)
    failing_roots = [rc for rc in roots if rc.result.failed or rc.symptoms]
    where: dict[str, int] = {}
    for i, rc in enumerate(failing_roots, 1):
        where[rc.check_id] = i
        for s in rc.symptoms:
            where[s.id] = i
    for rc in roots:
        if rc not in failing_roots:
            where.setdefault(rc.check_id, 0)
    target = md_escape(str(params.get("target_kind") or "")) + (
        f", tenant {md_escape(str(params['tenant']))}" if params.get("tenant") else "")
    lines = [
        f"# rtbook run {md_escape(name)}",
        "",
        f"- verdict: **{'INCOMPLETE' if interrupted else 'PASSED' if exit_code == 0 else 'FAILED'}** "
        f"({md_escape(overall.summary_line())})",
        *([f"- {md_escape(interrupted_line(interrupted))}"] if interrupted else []),
        f"- started {md_escape(started)}, ended {md_escape(ended)}",
        f"- target: {target}",
        "- details: [summary.html](summary.html)",
        "",
        *_cause_lines(roots),
        "## Path",
        "",
        *_fenced(PathDiagram.from_results(overall, roots).text()),
        "",
    ]
    values = latencies(overall)
    if any(v is not None for v in values.values()):
        lines += ["## Latency", "", "| step | ms |", "|---|---|"]
        lines += [f"| {md_escape(k)} | {'not measured' if v is None else f'{v:.1f}'} |" for k, v in values.items()]
        lines.append("")
    lines += ["## Notebooks", "", "| notebook | status | results | time |", "|---|---|---|---|"]
    for n in notebooks:
        lines.append(f"| [{md_escape(n.name)}]({n.name}.ipynb) | {md_escape(n.status)} | "
                     f"{md_escape(n.report.summary_line())} | {n.duration_s:.1f}s |")
    for n in notebooks:
        lines += ["", f"## {md_escape(n.name)}: {md_escape(n.status)}", ""]
        if n.error_name and n.status == "error":
            lines += [f"The notebook stopped with {md_escape(n.error_name)}: {md_escape(n.error)}", ""]
        if not len(n.report):
            lines.append("No check results were recorded.")
        lines += _check_lines(n.report, where, since)
    return "\n".join(lines) + "\n"
