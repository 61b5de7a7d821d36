"""What ``rtbook check`` writes when SIGINT/SIGTERM stops it: the results so far, marked incomplete."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rtbook.interrupt import Interrupted, shielded
from rtbook.results import Report
from rtbook.secrets import Redactor

__all__ = ["write_interrupted_report"]


def write_interrupted_report(report: Report, fmt: str, output: str | None, redactor: Redactor,
                             exc: Interrupted) -> None:
    """Write (or print) the checks that ended before the signal, in ``fmt``, saying the report is incomplete.

    JSON gains ``"complete": false`` and ``"interrupted": "<signal>"``; text ends with an INCOMPLETE
    line; JUnit carries the same line as an XML comment after its declaration (its counts stay
    those of the checks that ran).
    """
    note = f"INCOMPLETE: interrupted by {exc.signum.name} after {len(report)} result(s)"
    if fmt == "json":
        data = {**report.to_dict(), "complete": False, "interrupted": exc.signum.name}
        text = json.dumps(data, indent=2)
    elif fmt == "junit":
        head, sep, rest = report.to_junit().partition("?>")
        text = f"{head}{sep}\n<!-- rtbook: {note} -->{rest}" if sep else f"<!-- rtbook: {note} -->\n{head}"
    else:
        text = f"{report}\n{note}"
    text = redactor.text(text)
    # The report is short; writing it must not be cut by a second Ctrl-C.
    with shielded():
        if output:
            Path(output).write_text(text + "\n")
            sys.stdout.write(f"{report.summary_line()} ({note})\n")
        else:
            sys.stdout.write(text + "\n")
        sys.stdout.flush()
