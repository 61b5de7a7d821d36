"""Exact latency percentiles: one HDR histogram per measured step, mergeable across processes.

Latencies are recorded in microseconds from the *scheduled* send time (open model), so a stalled
server shows up as latency instead of silently lowering the send rate (coordinated omission).
Histograms travel between processes as the standard compressed base64 encoding and are saved in
the HdrHistogram log format, which the Java, Go and Python HdrHistogram tools read.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["HIGHEST_US", "LOWEST_US", "SIGNIFICANT_FIGURES", "Histograms", "Percentiles"]

LOWEST_US = 1
# A latency above a minute is not a latency any more; it is clamped and counted as the maximum.
HIGHEST_US = 60_000_000
SIGNIFICANT_FIGURES = 3
_PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def _new(tag: str) -> Any:
    from hdrh.histogram import HdrHistogram

    hist = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_FIGURES)
    hist.set_tag(tag)
    return hist


@dataclass(frozen=True)
class Percentiles:
    """Exact (to 3 significant figures) percentiles of one histogram, in milliseconds."""

    count: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    mean_ms: float

    def to_dict(self) -> dict[str, float | int]:
        return {
            "count": self.count,
            "p50_ms": self.p50_ms,
            "p90_ms": self.p90_ms,
            "p99_ms": self.p99_ms,
            "p99.9_ms": self.p999_ms,
            "max_ms": self.max_ms,
            "mean_ms": self.mean_ms,
        }


class Histograms:
    """Named HDR histograms (``connect``, ``join``, ``broadcast``...)."""

    def __init__(self) -> None:
        self._hists: dict[str, Any] = {}
        self._started = time.time()

    def record(self, name: str, latency_us: int) -> None:
        hist = self._hists.get(name)
        if hist is None:
            hist = self._hists[name] = _new(name)
        hist.record_value(min(max(int(latency_us), LOWEST_US), HIGHEST_US))

    def names(self) -> list[str]:
        return sorted(self._hists)

    def count(self, name: str) -> int:
        hist = self._hists.get(name)
        return int(hist.get_total_count()) if hist is not None else 0

    def percentiles(self, name: str) -> Percentiles | None:
        hist = self._hists.get(name)
        if hist is None or hist.get_total_count() == 0:
            return None
        values = hist.get_percentile_to_value_dict(list(_PERCENTILES))
        return Percentiles(
            count=int(hist.get_total_count()),
            p50_ms=values[50.0] / 1000,
            p90_ms=values[90.0] / 1000,
            p99_ms=values[99.0] / 1000,
            p999_ms=values[99.9] / 1000,
            max_ms=hist.get_max_value() / 1000,
            mean_ms=round(hist.get_mean_value() / 1000, 3),
        )

    def encode(self) -> dict[str, str]:
        """Each histogram in HdrHistogram's compressed base64 form (for shipping between processes)."""
        return {name: h.encode().decode("ascii") for name, h in self._hists.items()}

    @classmethod
    def decode(cls, encoded: Mapping[str, str]) -> Histograms:
        out = cls()
        for name, payload in encoded.items():
            out.merge_encoded(name, payload)
        return out

    def merge_encoded(self, name: str, payload: str) -> None:
        hist = self._hists.get(name)
        if hist is None:
            hist = self._hists[name] = _new(name)
        hist.decode_and_add(payload)

    def merge(self, other: Histograms) -> None:
        for name, payload in other.encode().items():
            self.merge_encoded(name, payload)

    @classmethod
    def merged(cls, parts: Iterable[Histograms]) -> Histograms:
        out = cls()
        for part in parts:
            out.merge(part)
        return out

    def write_log(self, path: Path, timeline: Histograms | None = None, interval_s: int = 1) -> None:
        """Save every histogram as one tagged interval in the HdrHistogram log format (v1.3).

        Written here rather than with ``hdrh.log.HistogramLogWriter``: that writer cannot emit the
        ``Tag=`` prefix (format 1.3) that names each histogram, and its start-time line fails.
        """
        end = time.time()
        started = datetime.fromtimestamp(self._started, tz=UTC).isoformat()
        lines = [
            "#rtbook load: latency from each message's scheduled send time, in microseconds",
            "#[Histogram log format version 1.3]",
            f"#[StartTime: {self._started:.3f} (seconds since epoch), {started}]",
            '"StartTimestamp","Interval_Length","Interval_Max","Interval_Compressed_Histogram"',
        ]
        for name in self.names():
            hist = self._hists[name]
            payload = hist.encode().decode("ascii")
            lines.append(f"Tag={name},0.000,{end - self._started:.3f},{hist.get_max_value() / 1000:.3f},{payload}")
        for name in timeline.names() if timeline is not None else ():
            assert timeline is not None
            step, _, index = name.partition("#")
            hist = timeline._hists[name]
            lines.append(
                f"Tag={step}-interval,{int(index) * interval_s:.3f},{interval_s:.3f},"
                f"{hist.get_max_value() / 1000:.3f},{hist.encode().decode('ascii')}"
            )
        path.write_text("\n".join(lines) + "\n", encoding="ascii")

    @classmethod
    def read_log(cls, path: Path) -> Histograms:
        """Read a v1.2/v1.3 HdrHistogram log; intervals with the same tag are added together."""
        out = cls()
        for line in path.read_text(encoding="ascii").splitlines():
            if not line or line.startswith(("#", '"')):
                continue
            tag = "untagged"
            if line.startswith("Tag="):
                tag, line = line[4:].split(",", 1)
            payload = line.rsplit(",", 1)[-1]
            out.merge_encoded(tag, payload)
        return out
