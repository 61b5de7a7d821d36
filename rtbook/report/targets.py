"""The combined summary of a many-target run: targets × checks, and what differs where it should not.

Pure rendering of what ``rtbook check|run --targets`` gathered (rtbook.runbook.targets): it runs
nothing. A cell is the worst verdict the target got for that check id (a multi-tenant target has
one result per tenant); a target that could not be run at all shows ``error`` in the row ``target``.
The comparison lists facts that every region or copy of a deployment is expected to share: the
Realtime image, the gateway kind, and the tenant limits and flags stored in ``_realtime.tenants``
(the evidence of ``tenant.limits``). A fact a target does not know (no stack, no database) is left
out of its comparison rather than counted as a difference.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rtbook.report.rootcause import closing_lines
from rtbook.results import Report, Status

__all__ = ["Combined", "Disagreement", "TargetRow", "report_facts", "worst"]

# Worst first: the verdict a cell shows when a check has several results (one per tenant).
_SEVERITY = (Status.ERROR, Status.FAIL, Status.WARN, Status.PASS, Status.SKIP)


def worst(statuses: Iterable[Status]) -> Status | None:
    """The most severe of ``statuses`` (error, fail, warn, pass, skip), or None when there are none."""
    seen = set(statuses)
    return next((s for s in _SEVERITY if s in seen), None)


@dataclass
class TargetRow:
    """One target's outcome: its report, the facts compared across targets, and where its record is."""

    name: str
    region: str = ""
    report: Report = field(default_factory=Report)
    facts: dict[str, str] = field(default_factory=dict)
    record: str = ""  # the audit record folder (run) or empty (check)
    manifest_sha256: str = ""
    error: str = ""  # why the target could not be run at all (then the report is empty)

    @property
    def failed(self) -> bool:
        """True when the target could not run or a check failed or errored."""
        return bool(self.error) or bool(self.report.failures)

    def cell(self, check_id: str) -> Status | None:
        return worst(r.status for r in self.report if r.id == check_id)


@dataclass(frozen=True)
class Disagreement:
    """A fact whose value differs between targets: ``values`` maps target name to its value."""

    fact: str
    values: tuple[tuple[str, str], ...]

    def line(self) -> str:
        return f"{self.fact}: " + ", ".join(f"{name}={value}" for name, value in self.values)


def report_facts(report: Report) -> dict[str, str]:
    """The facts a report carries that targets should share: stored tenant limits and flags.

    Taken from the first ``tenant.limits`` result (the target's first tenant): other tenants of
    the same Realtime may have limits of their own on purpose.
    """
    facts: dict[str, str] = {}
    result = next((r for r in report if r.id == "tenant.limits" and isinstance(r.evidence, Mapping)), None)
    if result is None:
        return facts
    for group, label in (("limits", "tenant limit"), ("flags", "tenant flag")):
        values = result.evidence.get(group)
        if isinstance(values, Mapping):
            for key, value in values.items():
                if value is not None:
                    facts[f"{label} {key}"] = str(value)
    return facts


@dataclass
class Combined:
    """All targets of one ``--targets`` command, in file order."""

    rows: list[TargetRow]
    title: str = "rtbook targets"

    @property
    def exit_code(self) -> int:
        """1 when any target failed (or could not run), else 0. Disagreements alone do not fail it."""
        return 1 if any(r.failed for r in self.rows) else 0

    def check_ids(self) -> list[str]:
        """Every check id any target ran, in the order they first appear."""
        ids = ["target"] if any(r.error for r in self.rows) else []
        seen = set(ids)
        for row in self.rows:
            for result in row.report:
                if result.id not in seen:  # a multi-tenant target has one result per tenant: one row
                    seen.add(result.id)
                    ids.append(result.id)
        return ids

    def matrix(self) -> list[tuple[str, list[str]]]:
        """(check id, one verdict per target): ``pass``/``warn``/``fail``/``error``/``skip``, ``-`` when not run."""
        out: list[tuple[str, list[str]]] = []
        for cid in self.check_ids():
            cells = []
            for row in self.rows:
                if cid == "target":
                    cells.append("error" if row.error else "pass")
                else:
                    status = row.cell(cid)
                    cells.append(str(status) if status is not None else "-")
            out.append((cid, cells))
        return out

    def disagreements(self) -> list[Disagreement]:
        """Facts with more than one value among the targets that know them."""
        facts = sorted({f for row in self.rows for f in row.facts})
        found = []
        for fact in facts:
            values = tuple((row.name, row.facts[fact]) for row in self.rows if fact in row.facts)
            if len({v for _, v in values}) > 1:
                found.append(Disagreement(fact, values))
        return found

    def failed_cells(self) -> list[str]:
        """``target: check`` for every failing or erroring cell (what to look at first)."""
        out = []
        for cid, cells in self.matrix():
            out += [f"{row.name}: {cid}" for row, cell in zip(self.rows, cells, strict=True)
                    if cell in ("fail", "error")]
        return out

    def _status_line(self, row: TargetRow) -> str:
        label = f"{row.name}" + (f" ({row.region})" if row.region else "")
        if row.error:
            return f"{label}: ERROR {row.error}"
        verdict = "FAILED" if row.failed else "PASSED"
        line = f"{label}: {verdict}: {row.report.summary_line()}"
        return line + (f"; record {row.record}" if row.record else "")

    # ------------------------------------------------------------ renderings
    def text(self) -> str:
        """The matrix (checks down, targets across) and the disagreements, as plain text."""
        lines = [f"{self.title}: {len(self.rows)} target(s), "
                 f"{sum(r.failed for r in self.rows)} failing"]
        lines += ["  " + self._status_line(r) for r in self.rows]
        matrix = self.matrix()
        width = max([len("check"), *(len(cid) for cid, _ in matrix)])
        widths = [max(len(r.name), 5) for r in self.rows]
        lines.append("")
        names = "  ".join(f"{r.name:<{w}}" for r, w in zip(self.rows, widths, strict=True))
        lines.append(f"{'check':<{width}}  {names}".rstrip())
        for cid, cells in matrix:
            mark = "  <- differs" if len(set(cells)) > 1 else ""
            cols = "  ".join(f"{c:<{w}}" for c, w in zip(cells, widths, strict=True))
            lines.append(f"{cid:<{width}}  {cols}{mark}".rstrip())
        lines += ["", *self._disagreement_lines()]
        for row in self.rows:
            causes = closing_lines(row.report)
            if causes:  # what to fix first on that target, as 'rtbook check' ends with it
                lines += ["", f"{row.name}:", *("  " + line for c in causes for line in c.splitlines())]
        failed = self.failed_cells()
        if failed:
            lines.append(f"failing: {'; '.join(failed)}")
        return "\n".join(lines)

    def _disagreement_lines(self) -> list[str]:
        found = self.disagreements()
        if not found:
            return ["Targets agree on every compared fact (Realtime image, gateway, tenant limits and flags)."]
        return ["Targets that disagree where they should agree:", *(f"  {d.line()}" for d in found)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "exit_code": self.exit_code,
            "targets": [
                {"name": r.name, "region": r.region, "failed": r.failed, "error": r.error, "record": r.record,
                 "manifest_sha256": r.manifest_sha256, "summary": r.report.summary_line(), "facts": r.facts,
                 "report": r.report.to_dict()}
                for r in self.rows
            ],
            "matrix": {cid: dict(zip([r.name for r in self.rows], cells, strict=True))
                       for cid, cells in self.matrix()},
            "disagreements": [{"fact": d.fact, "values": dict(d.values)} for d in self.disagreements()],
            "failing": self.failed_cells(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

    def markdown(self) -> str:
        names = [r.name for r in self.rows]
        lines = [f"# {self.title}", "", *(f"- {self._status_line(r)}" for r in self.rows), "",
                 "| check | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for cid, cells in self.matrix():
            lines.append(f"| {cid} | " + " | ".join(c.upper() if c in ("fail", "error") else c for c in cells) + " |")
        lines += ["", *(("## " + line) if i == 0 else f"- {line.strip()}"
                        for i, line in enumerate(self._disagreement_lines()))]
        return "\n".join(lines) + "\n"

    def html(self) -> str:
        esc = html.escape
        colours = {"pass": "#e6f4ea", "warn": "#fef7e0", "fail": "#fce8e6", "error": "#fce8e6", "skip": "#f1f3f4"}
        head = "".join(f"<th>{esc(r.name)}<br><small>{esc(r.region)}</small></th>" for r in self.rows)
        body = []
        for cid, cells in self.matrix():
            tds = "".join(f'<td style="background:{colours.get(c, "#fff")}">{esc(c)}</td>' for c in cells)
            body.append(f"<tr><th style=\"text-align:left\">{esc(cid)}</th>{tds}</tr>")
        items = "".join(f"<li>{esc(self._status_line(r))}</li>" for r in self.rows)
        found = self._disagreement_lines()
        agree = f"<h2>{esc(found[0])}</h2><ul>" + "".join(f"<li>{esc(x.strip())}</li>" for x in found[1:]) + "</ul>"
        return (f"<!doctype html><meta charset=\"utf-8\"><title>{esc(self.title)}</title>"
                f"<h1>{esc(self.title)}</h1><ul>{items}</ul>"
                f"<table border=\"1\" cellspacing=\"0\" cellpadding=\"3\"><tr><th>check</th>{head}</tr>"
                f"{''.join(body)}</table>{agree}\n")


def rows_in_order(rows: Sequence[TargetRow], names: Sequence[str]) -> list[TargetRow]:
    """``rows`` sorted into the order of ``names`` (the file's), whatever order the pool finished them in."""
    rank = {n: i for i, n in enumerate(names)}
    return sorted(rows, key=lambda r: rank.get(r.name, len(rank)))
