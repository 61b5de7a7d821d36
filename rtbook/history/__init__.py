"""Run history: every run's verdicts and latencies indexed in a small SQL database.

One role per module: :mod:`~rtbook.history.models` (the tables), :mod:`~rtbook.history.index`
(reading records into the index and querying it) and :mod:`~rtbook.history.diff` (what changed
between two runs). SQLAlchemy is imported only by those modules, never by ``rtbook check --stack``.
"""

from __future__ import annotations

__all__: list[str] = []
