"""The runbook: notebook parameters, the per-notebook session, headless runs, audit records and the form.

Notebooks call ``rtbook.runbook.start(name, globals())`` in their second cell; everything else here
is used by ``rtbook run`` and the widgets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rtbook.runbook.session import NotebookRun, start

__all__ = ["NotebookRun", "start"]


def __getattr__(name: str) -> Any:
    # Loaded on first use: the CLI imports rtbook.runbook.params for 'rtbook check' and must not pay
    # for the notebook session (and the troubleshooting tables) it never uses there.
    if name in __all__:
        from rtbook.runbook import session

        return getattr(session, name)
    raise AttributeError(f"module 'rtbook.runbook' has no attribute {name!r}")
