"""``--threshold`` expressions: ``broadcast.p99<50ms``, ``lost==0``, ``errors.handshake<=3``.

The left side names a number in a load result: ``<step>.<stat>`` for latencies (stats p50, p90,
p99, p99.9, max, mean; the value in milliseconds; a unit ``ms`` or ``s`` on the right side is
converted), a delivery count (sent, expected, delivered, lost, duplicated, out_of_order, late),
``errors`` (all failures) or ``errors.<kind>``. A violated threshold makes the run exit 1.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from rtbook.exceptions import ConfigError

__all__ = ["MAX_THRESHOLDS", "Threshold", "Verdict", "evaluate", "parse_threshold"]

MAX_THRESHOLDS = 32
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
}
_STATS = ("p50", "p90", "p99", "p99.9", "max", "mean")
_COUNTS = ("sent", "expected", "delivered", "lost", "duplicated", "out_of_order", "late", "unexpected")
_EXPR = re.compile(
    r"^\s*(?P<name>[a-z_][a-z0-9_]*(?:\.[a-z0-9_.]+)?)\s*(?P<op><=|>=|==|!=|<|>)\s*"
    r"(?P<value>\d+(?:\.\d+)?)\s*(?P<unit>ms|s)?\s*$"
)


@dataclass(frozen=True)
class Threshold:
    """One parsed expression; ``limit`` is in milliseconds for latencies, a count otherwise."""

    text: str
    name: str
    op: str
    limit: float

    @property
    def is_latency(self) -> bool:
        return "." in self.name and self.name.rsplit(".", 1)[0] not in ("errors",) and self.stat in _STATS

    @property
    def stat(self) -> str:
        step, _, rest = self.name.partition(".")
        return rest if step != "errors" else ""

    def check(self, value: float | None) -> Verdict:
        if value is None:
            return Verdict(self, None, False, f"{self.text}: nothing was measured for {self.name!r}")
        ok = _OPS[self.op](value, self.limit)
        unit = " ms" if self.is_latency else ""
        shown = f"{value:g}{unit}"
        return Verdict(self, value, ok, f"{self.text}: {self.name} = {shown} ({'met' if ok else 'VIOLATED'})")


@dataclass(frozen=True)
class Verdict:
    threshold: Threshold
    value: float | None
    ok: bool
    line: str


def parse_threshold(text: str) -> Threshold:
    """Parse one expression or raise ConfigError naming it and the accepted forms."""
    if len(text) > 200:
        raise ConfigError(f"--threshold {text[:40]!r}...: longer than 200 characters")
    m = _EXPR.match(text)
    if not m:
        raise ConfigError(
            f"--threshold {text!r} is not understood; write e.g. 'broadcast.p99<50ms', 'lost==0' or 'errors<=3'"
        )
    name, op, value, unit = m["name"], m["op"], float(m["value"]), m["unit"]
    step, _, stat = name.partition(".")
    if step == "errors" or name in _COUNTS:
        if unit:
            raise ConfigError(f"--threshold {text!r}: {name} is a count; drop the unit {unit!r}")
    elif stat in _STATS:
        value = value * 1000 if unit == "s" else value
    else:
        raise ConfigError(
            f"--threshold {text!r}: unknown measure {name!r}; use <step>.<{'|'.join(_STATS)}>, "
            f"one of {', '.join(_COUNTS)}, errors or errors.<kind>"
        )
    return Threshold(text=text.strip(), name=name, op=op, limit=value)


def evaluate(thresholds: list[Threshold], numbers: Mapping[str, float]) -> list[Verdict]:
    """Judge each threshold against the flat numbers of a load result (missing measure = violated)."""
    return [t.check(numbers.get(t.name)) for t in thresholds]
