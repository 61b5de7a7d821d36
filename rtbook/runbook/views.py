"""What notebook cells show that is more than a table: the root-cause block with the path diagram."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rtbook.report.diagram import PathDiagram
from rtbook.report.html import rootcause_html
from rtbook.report.rootcause import root_causes
from rtbook.results import CheckResult

__all__ = ["RootCauseView"]


class RootCauseView:
    """The root cause(s) with their one remedy, then the path with the failing hop; HTML in JupyterLab, text else."""

    def __init__(self, results: Iterable[CheckResult], tenant: str = "") -> None:
        listed = list(results)
        self.roots = root_causes(listed)
        self.diagram = PathDiagram.from_results(listed, self.roots, tenant)
        self.ran = bool(listed)

    def __str__(self) -> str:
        if not self.ran:
            return "No results yet: run notebooks 01 to 04 first (or 'rtbook run')."
        causes = [rc.text() for rc in self.roots] or ["No check failed."]
        return "\n".join([*causes, "", self.diagram.text()])

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))

    def _repr_html_(self) -> str:
        if not self.ran:
            return "<p>No results yet: run notebooks 01 to 04 first (or <code>rtbook run</code>).</p>"
        return (
            '<div class="rtbook-rootcauses" style="max-width:100%">'
            f"{rootcause_html(self.roots)}{self.diagram._repr_html_()}</div>"
        )
