"""What changed between two runs: checks that broke, checks that were fixed, latencies that moved."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rtbook.history.index import RunSnapshot

__all__ = ["LatencyMove", "RunDiff", "StatusChange", "diff_runs"]

_BAD = frozenset({"fail", "error"})

# A latency "moved" when it changed by at least this factor and this many milliseconds: the
# factor alone would flag 1 ms -> 3 ms on a loopback sandbox, the floor alone a 2 s -> 2.3 s wobble.
MOVE_RATIO = 1.5
MOVE_FLOOR_MS = 50.0


@dataclass(frozen=True)
class StatusChange:
    """One check whose status differs between the two runs (``None``: not run there)."""

    check_id: str
    before: str | None
    after: str | None
    summary: str = ""


@dataclass(frozen=True)
class LatencyMove:
    """One measured figure that moved noticeably."""

    check_id: str
    name: str
    before_ms: float
    after_ms: float

    @property
    def ratio(self) -> float:
        """after / before (inf when before was 0)."""
        return self.after_ms / self.before_ms if self.before_ms else float("inf")


@dataclass
class RunDiff:
    """The differences from run ``a`` to run ``b``."""

    a: RunSnapshot
    b: RunSnapshot
    broke: list[StatusChange] = field(default_factory=list)
    fixed: list[StatusChange] = field(default_factory=list)
    changed: list[StatusChange] = field(default_factory=list)
    latencies: list[LatencyMove] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        """True when nothing broke, was fixed, changed or moved."""
        return not (self.broke or self.fixed or self.changed or self.latencies)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``rtbook diff --format json``)."""
        def change(c: StatusChange) -> dict[str, Any]:
            return {"check_id": c.check_id, "before": c.before, "after": c.after, "summary": c.summary}

        return {
            "a": self.a.id, "b": self.b.id,
            "broke": [change(c) for c in self.broke],
            "fixed": [change(c) for c in self.fixed],
            "changed": [change(c) for c in self.changed],
            "latencies": [{"check_id": m.check_id, "name": m.name, "before_ms": round(m.before_ms, 3),
                           "after_ms": round(m.after_ms, 3)} for m in self.latencies],
        }

    def __str__(self) -> str:
        lines = [f"{self.a.id} ({self.a.target}, {self.a.started}) -> {self.b.id} ({self.b.target}, {self.b.started})"]
        if self.a.target != self.b.target:
            lines.append("note: the two runs are of different targets")
        sections = (("broke", self.broke), ("fixed", self.fixed), ("changed", self.changed))
        for title, changes in sections:
            if changes:
                lines.append(f"{title} ({len(changes)}):")
                for c in changes:
                    lines.append(f"  {c.check_id}: {c.before or 'not run'} -> {c.after or 'not run'}"
                                 + (f"  {c.summary}" if c.summary else ""))
        if self.latencies:
            lines.append(f"latencies moved ({len(self.latencies)}):")
            for m in self.latencies:
                lines.append(f"  {m.check_id} {m.name}: {m.before_ms:.0f} ms -> {m.after_ms:.0f} ms")
        if self.empty:
            lines.append("no differences: the same verdicts, no latency moved")
        return "\n".join(lines)


def _moved(before: float, after: float) -> bool:
    low, high = sorted((before, after))
    return high - low >= MOVE_FLOOR_MS and (low == 0 or high / low >= MOVE_RATIO)


def diff_runs(a: RunSnapshot, b: RunSnapshot) -> RunDiff:
    """Compare run ``a`` (before) with run ``b`` (after).

    *Broke*: failing or erroring in ``b`` but not in ``a``. *Fixed*: the reverse. *Changed*: any
    other status change (e.g. pass -> warn, skip -> pass). Latencies: figures both runs measured
    that moved by at least x1.5 and 50 ms.
    """
    out = RunDiff(a, b)
    for check_id in sorted(set(a.statuses) | set(b.statuses)):
        before, after = a.statuses.get(check_id), b.statuses.get(check_id)
        if before == after:
            continue
        change = StatusChange(check_id, before, after, b.summaries.get(check_id) or a.summaries.get(check_id, ""))
        if after in _BAD and before not in _BAD:
            out.broke.append(change)
        elif before in _BAD and after not in _BAD:
            out.fixed.append(change)
        else:
            out.changed.append(change)
    for key in sorted(set(a.metrics) & set(b.metrics)):
        if _moved(a.metrics[key], b.metrics[key]):
            out.latencies.append(LatencyMove(key[0], key[1], a.metrics[key], b.metrics[key]))
    return out
