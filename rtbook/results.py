"""Check results, reports and the check registry.

Every check returns a frozen :class:`CheckResult`. A :class:`Report` collects them and renders
as plain text (terminals, logs, papermill), as HTML (JupyterLab), as JSON and as JUnit XML.
Checks are registered with :func:`register` so that ``rtbook checks`` can print the catalogue
straight from the code.
"""

from __future__ import annotations

import dataclasses
import enum
import html
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree as ET

from rtbook.exceptions import ChecksFailedError
from rtbook.secrets import Redactor

if TYPE_CHECKING:
    pass

__all__ = ["CheckResult", "Report", "Status", "printable", "xml_safe"]


class Status(enum.StrEnum):
    """The verdict of one check."""

    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"
    ERROR = "error"

    @property
    def failed(self) -> bool:
        """True for the statuses that make the gate raise."""
        return self in (Status.FAIL, Status.ERROR)

    @property
    def symbol(self) -> str:
        """A short fixed-width tag for text output."""
        return {"pass": "PASS", "warn": "WARN", "fail": "FAIL", "skip": "SKIP", "error": "ERR "}[self.value]

    def __str__(self) -> str:
        return self.value


_COLOURS = {
    Status.PASS: ("#e6f4ea", "#137333"),
    Status.WARN: ("#fef7e0", "#b06000"),
    Status.FAIL: ("#fce8e6", "#c5221f"),
    Status.ERROR: ("#fce8e6", "#a50e0e"),
    Status.SKIP: ("#f1f3f4", "#5f6368"),
}


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check.

    Attributes:
        id: stable dotted id, e.g. ``compose.realtime.tenant_consistency``.
        status: the verdict.
        title: what the check verifies, in a few words.
        summary: one sentence with the finding.
        detail: longer explanation: every source and the value it implies.
        remedy: what to change, concretely (file, key, value), empty when nothing is needed.
        evidence: redacted supporting data (parsed values, HTTP statuses, transcripts).
        metrics: measured figures such as latencies in milliseconds.
        cause: for a failure, the id of the known cause in :mod:`rtbook.remedies`, if one applies.
        see_also: ids of related checks, e.g. the static check that would have caught a live failure.
        duration_ms: how long the check took.
    """

    id: str
    status: Status
    title: str = ""
    summary: str = ""
    detail: str = ""
    remedy: str = ""
    evidence: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    cause: str = ""
    see_also: tuple[str, ...] = ()
    duration_ms: float = 0.0

    @property
    def failed(self) -> bool:
        """True when the status is fail or error."""
        return self.status.failed

    def redacted(self, redactor: Redactor) -> CheckResult:
        """Return a copy with every text field and the evidence passed through ``redactor``."""
        return dataclasses.replace(
            self,
            title=redactor.text(self.title),
            summary=redactor.text(self.summary),
            detail=redactor.text(self.detail),
            remedy=redactor.text(self.remedy),
            evidence=redactor.data(dict(self.evidence)),
        )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "id": self.id,
            "status": self.status.value,
            "title": self.title,
            "summary": self.summary,
            "detail": self.detail,
            "remedy": self.remedy,
            "evidence": _jsonable(self.evidence),
            "metrics": dict(self.metrics),
            "cause": self.cause,
            "see_also": list(self.see_also),
            "duration_ms": round(self.duration_ms, 3),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CheckResult:
        """Rebuild a result from :meth:`to_dict` output."""
        return cls(
            id=str(data["id"]),
            status=Status(data["status"]),
            title=str(data.get("title", "")),
            summary=str(data.get("summary", "")),
            detail=str(data.get("detail", "")),
            remedy=str(data.get("remedy", "")),
            evidence=dict(data.get("evidence") or {}),
            metrics=dict(data.get("metrics") or {}),
            cause=str(data.get("cause", "")),
            see_also=tuple(data.get("see_also") or ()),
            duration_ms=float(data.get("duration_ms", 0.0)),
        )

    def __str__(self) -> str:
        lines = [f"[{self.status.symbol}] {self.id}: {self.summary or self.title}"]
        if self.detail and self.status is not Status.PASS:
            lines += ["       " + line for line in self.detail.splitlines()]
        if self.remedy and self.status is not Status.PASS:
            lines.append("       remedy: " + self.remedy.replace("\n", "\n               "))
        return printable("\n".join(lines))

    def _repr_html_(self) -> str:
        return Report([self])._repr_html_()


# C0 controls except tab and newline, DEL, and the C1 range: in a terminal they are escape
# sequences (colours, cursor moves, title changes), and XML 1.0 cannot carry most of them at all.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Characters XML 1.0 forbids outright (surrogates and the two non-characters as well).
_NOT_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def printable(text: str) -> str:
    """``text`` with control characters shown as ``\\xNN`` (``\\r`` too), so they cannot drive a terminal."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def xml_safe(text: str) -> str:
    """``text`` with every character XML 1.0 cannot hold (and other controls) shown as ``\\xNN``."""
    return _NOT_XML.sub(lambda m: f"\\x{ord(m.group()):02x}", printable(text))


def _skip_line(reason: str, group: Sequence[CheckResult]) -> str:
    """One text line for skips that share a reason: ``[SKIP] a, b, c (3): reason``."""
    ids = ", ".join(r.id for r in group)
    return printable(f"[{Status.SKIP.symbol}] {ids} ({len(group)}): {reason}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, enum.Enum):
        return _jsonable(value.value)
    return str(value)


class Report(Sequence[CheckResult]):
    """An ordered collection of results with renderings and a gate."""

    def __init__(self, results: Iterable[CheckResult] = (), title: str = "") -> None:
        self._results: list[CheckResult] = list(results)
        self.title = title

    # Sequence protocol
    def __getitem__(self, index: Any) -> Any:
        return self._results[index]

    def __len__(self) -> int:
        return len(self._results)

    def __iter__(self) -> Iterator[CheckResult]:
        return iter(self._results)

    def add(self, result: CheckResult | Iterable[CheckResult]) -> None:
        """Append one result or several."""
        if isinstance(result, CheckResult):
            self._results.append(result)
        else:
            self._results.extend(result)

    def extend(self, other: Iterable[CheckResult]) -> None:
        """Append every result of ``other``."""
        self._results.extend(other)

    def by_id(self, check_id: str) -> CheckResult:
        """Return the result with ``check_id``; raise KeyError if absent."""
        for result in self._results:
            if result.id == check_id:
                return result
        raise KeyError(check_id)

    def get(self, check_id: str) -> CheckResult | None:
        """Return the result with ``check_id`` or None."""
        try:
            return self.by_id(check_id)
        except KeyError:
            return None

    def select(self, *prefixes: str) -> Report:
        """Return the results whose id starts with any of ``prefixes``."""
        return Report([r for r in self._results if r.id.startswith(prefixes)], title=self.title)

    @property
    def failures(self) -> list[CheckResult]:
        """Results with status fail or error."""
        return [r for r in self._results if r.failed]

    @property
    def ok(self) -> bool:
        """True when nothing failed or errored."""
        return not self.failures

    def counts(self) -> dict[str, int]:
        """Number of results per status, every status present."""
        counts = {s.value: 0 for s in Status}
        for result in self._results:
            counts[result.status.value] += 1
        return counts

    def raise_for_failures(self, strict: bool = False) -> None:
        """Raise :class:`ChecksFailedError` if any check failed (or warned, when ``strict``)."""
        bad = [r for r in self._results if r.failed or (strict and r.status is Status.WARN)]
        if bad:
            names = ", ".join(f"{r.id} ({r.status.value})" for r in bad)
            raise ChecksFailedError(
                f"{len(bad)} of {len(self._results)} checks did not pass: {names}. "
                "Read each result's remedy above, fix the stack, and run again."
            )

    # Renderings
    def summary_line(self) -> str:
        """One line of counts, e.g. ``12 passed, 1 failed, 2 warned``."""
        c = self.counts()
        parts = [f"{c['pass']} passed", f"{c['fail']} failed"]
        for key, word in (("warn", "warned"), ("error", "errored"), ("skip", "skipped")):
            if c[key]:
                parts.append(f"{c[key]} {word}")
        return ", ".join(parts)

    def rows(self) -> list[CheckResult | tuple[str, list[CheckResult]]]:
        """The results in order, with repeated SKIP rows collapsed: ``(reason, [results])`` stands for
        every skip that gives the same reason, at the place of the first of them.

        Seven ``envoy.*`` checks skipped because the gateway is Kong say one thing, once.
        """
        by_reason: dict[str, list[CheckResult]] = {}
        for r in self._results:
            if r.status is Status.SKIP:
                by_reason.setdefault(r.summary or r.title, []).append(r)
        out: list[CheckResult | tuple[str, list[CheckResult]]] = []
        placed: set[str] = set()
        for r in self._results:
            reason = r.summary or r.title
            if r.status is not Status.SKIP or len(by_reason[reason]) < 2:
                out.append(r)
            elif reason not in placed:
                placed.add(reason)
                out.append((reason, by_reason[reason]))
        return out

    def __str__(self) -> str:
        head = [printable(self.title)] if self.title else []
        body = [str(row) if isinstance(row, CheckResult) else _skip_line(*row) for row in self.rows()]
        return "\n".join([*head, *body, self.summary_line()])

    def __repr__(self) -> str:
        return f"<Report {self.title!r}: {self.summary_line()}>"

    def _repr_html_(self) -> str:
        rows = []
        for row in self.rows():
            if not isinstance(row, CheckResult):
                reason, group = row
                bg, fg = _COLOURS[Status.SKIP]
                ids = ", ".join(f"<code>{html.escape(r.id)}</code>" for r in group)
                rows.append(
                    f'<tr class="rtbook-skip" style="background:{bg}">'
                    f'<td style="color:{fg};font-weight:bold">SKIP ×{len(group)}</td>'
                    f"<td>{ids}</td><td>{html.escape(reason)}</td><td></td></tr>"
                )
                continue
            r = row
            bg, fg = _COLOURS[r.status]
            detail = html.escape(r.detail).replace("\n", "<br>")
            remedy = html.escape(r.remedy).replace("\n", "<br>")
            rows.append(
                f'<tr class="rtbook-{r.status.value}" style="background:{bg}">'
                f'<td style="color:{fg};font-weight:bold">{r.status.value.upper()}</td>'
                f"<td><code>{html.escape(r.id)}</code></td>"
                f"<td>{html.escape(r.summary or r.title)}"
                # Folded: a failure's detail is there when wanted, not a wall of small text in every row.
                + (f'<details style="color:#444;font-size:90%"><summary>detail</summary>{detail}</details>'
                   if detail and r.status is not Status.PASS else "")
                + "</td>"
                f"<td>{remedy if r.status is not Status.PASS else ''}</td></tr>"
            )
        title = f"<h4>{html.escape(self.title)}</h4>" if self.title else ""
        return (
            f'{title}<table class="rtbook-report" style="border-collapse:collapse;text-align:left">'
            "<thead><tr><th>status</th><th>check</th><th>finding</th><th>remedy</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>"
            f"<p>{html.escape(self.summary_line())}</p>"
        )

    def to_dict(self) -> dict[str, Any]:
        """Return ``{"results": [...], "summary": {counts}}``."""
        return {"results": [r.to_dict() for r in self._results], "summary": self.counts()}

    def to_json(self, indent: int | None = 2) -> str:
        """Serialise to JSON."""
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], title: str = "") -> Report:
        """Rebuild a report from :meth:`to_dict` output."""
        return cls([CheckResult.from_dict(r) for r in data.get("results", [])], title=title)

    def to_junit(self, suite: str = "rtbook") -> str:
        """Serialise to JUnit XML: one testcase per check, grouped by area."""
        c = self.counts()
        root = ET.Element(
            "testsuites",
            name=xml_safe(suite),
            tests=str(len(self)),
            failures=str(c["fail"]),
            errors=str(c["error"]),
            skipped=str(c["skip"]),
        )
        ts = ET.SubElement(
            root,
            "testsuite",
            name=xml_safe(self.title or suite),
            tests=str(len(self)),
            failures=str(c["fail"]),
            errors=str(c["error"]),
            skipped=str(c["skip"]),
            time=f"{sum(r.duration_ms for r in self._results) / 1000:.3f}",
        )
        for r in self._results:
            area = r.id.split(".", 1)[0]
            tc = ET.SubElement(
                ts, "testcase", classname=xml_safe(f"rtbook.{area}"), name=xml_safe(r.id),
                time=f"{r.duration_ms / 1000:.3f}",
            )
            message = xml_safe(r.summary or r.title)
            body = xml_safe("\n".join(x for x in (r.detail, f"remedy: {r.remedy}" if r.remedy else "") if x))
            if r.status is Status.FAIL:
                ET.SubElement(tc, "failure", message=message).text = body
            elif r.status is Status.ERROR:
                ET.SubElement(tc, "error", message=message).text = body
            elif r.status is Status.SKIP:
                ET.SubElement(tc, "skipped", message=message)
            elif r.status is Status.WARN:
                ET.SubElement(tc, "system-out").text = f"WARN: {message}\n{body}".strip()
        return ET.tostring(root, encoding="unicode", xml_declaration=True)
