"""Reports for people: the root causes of a run, the message path, latency charts, and the summaries.

One role per module: :mod:`~rtbook.report.rootcause` groups failing verdicts under the causes that
explain them, :mod:`~rtbook.report.diagram` draws the client-to-database path (SVG and text),
:mod:`~rtbook.report.charts` draws the latency chart (matplotlib, imported lazily),
:mod:`~rtbook.report.html` writes ``summary.html`` and :mod:`~rtbook.report.markdown` writes
``summary.md``. The result model stays in :mod:`rtbook.results`.
"""

from __future__ import annotations

__all__: list[str] = []
