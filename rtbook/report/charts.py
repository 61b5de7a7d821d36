"""The latency chart: connect, join, broadcast, presence and postgres_changes, from a run's metrics.

matplotlib is imported here, lazily, with the Agg backend (no display, no GUI toolkit), and the
chart is written as SVG text with its glyphs drawn as paths: it embeds in a notebook or in
``summary.html`` as a data URI and needs no font or file from anywhere.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rtbook.results import CheckResult, Status

__all__ = ["LATENCIES", "LatencyChart", "latencies"]

# (label, check id, metric): what a user means by "how fast is Realtime", in the order a client meets it.
LATENCIES: tuple[tuple[str, str, str], ...] = (
    ("connect", "realtime.join", "connect_ms"),
    ("join", "realtime.join", "join_ms"),
    ("broadcast", "realtime.broadcast", "peer_ms"),
    ("presence", "realtime.presence", "join_seen_ms"),
    ("postgres_changes", "realtime.postgres_changes", "insert_ms"),
)


def latencies(results: Iterable[CheckResult]) -> dict[str, float | None]:
    """The five latencies in ms (None where the check did not pass or did not measure it)."""
    by_id: dict[str, CheckResult] = {}
    for r in results:
        by_id[r.id] = r
    out: dict[str, float | None] = {}
    for label, cid, metric in LATENCIES:
        got = by_id.get(cid)
        value = got.metrics.get(metric) if got is not None and got.status in (Status.PASS, Status.WARN) else None
        out[label] = float(value) if isinstance(value, int | float) else None
    return out


def _svg(values: Mapping[str, float | None], title: str) -> str:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    labels = list(values)
    numbers = [values[k] or 0.0 for k in labels]
    fig = Figure(figsize=(6.4, 2.6), dpi=100)
    ax = fig.add_subplot()
    bars = ax.barh(labels, numbers, color=["#1a73e8" if values[k] is not None else "#dadce0" for k in labels])
    ax.invert_yaxis()
    ax.set_xlabel("milliseconds")
    ax.set_title(title, fontsize=10)
    top = max(numbers, default=0.0) or 1.0
    ax.set_xlim(0, top * 1.25)
    for bar, key in zip(bars, labels, strict=True):
        v = values[key]
        ax.text(bar.get_width() + top * 0.01, bar.get_y() + bar.get_height() / 2,
                "not measured" if v is None else f"{v:.0f} ms" if v >= 1 else f"{v:.1f} ms",
                va="center", fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    buf = io.StringIO()
    # Glyphs as paths (no font needed to view it); no date or random ids, so a record's bytes are reproducible.
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": "rtbook"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    return buf.getvalue()


@dataclass
class LatencyChart:
    """The latency chart of a run; an inline SVG image in JupyterLab and HTML, a table of numbers as text."""

    values: dict[str, float | None] = field(default_factory=dict)
    title: str = "Latency measured by rtbook's clients"

    @classmethod
    def from_results(cls, results: Iterable[CheckResult]) -> LatencyChart:
        """The chart of ``results``' metrics."""
        return cls(latencies(results))

    @property
    def measured(self) -> bool:
        """True when at least one latency was measured."""
        return any(v is not None for v in self.values.values())

    def svg(self) -> str:
        """The chart as SVG text (matplotlib, Agg)."""
        return _svg(self.values, self.title)

    def data_uri(self) -> str:
        """The chart as a ``data:image/svg+xml;base64,...`` URI (self-contained)."""
        return "data:image/svg+xml;base64," + base64.b64encode(self.svg().encode()).decode()

    def img(self) -> str:
        """An ``<img class="rtbook-latency">`` element carrying the chart, with the numbers as alt text."""
        return (f'<img class="rtbook-latency" alt="{html.escape(self.text())}" src="{self.data_uri()}" '
                'style="max-width:100%">')

    def text(self) -> str:
        """The numbers, one per line."""
        return "\n".join(f"{k}: {'not measured' if v is None else f'{v:.1f} ms'}" for k, v in self.values.items())

    def __str__(self) -> str:
        return self.text()

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(self.text())

    def _repr_html_(self) -> str:
        if not self.measured:
            return "<p>No latency was measured (the live checks did not pass or did not run).</p>"
        return self.img()
