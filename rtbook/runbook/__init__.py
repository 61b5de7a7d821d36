"""The runbook: notebook parameters, the per-notebook session, headless runs, audit records and the form.

Notebooks call ``rtbook.runbook.start(name, globals())`` in their second cell; everything else here
is used by ``rtbook run`` and the widgets.
"""

from __future__ import annotations

from rtbook.runbook.session import NotebookRun, start

__all__ = ["NotebookRun", "start"]
