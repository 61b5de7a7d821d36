"""Terminal output: rich tables and coloured progress on a terminal, the plain text of old everywhere else.

Output that goes to a pipe, a file or a test's capture stays plain (no colour, no box drawing), so
scripts that read it keep working. Consoles are made per call, on the stream current at that
moment (``sys.stdout`` may have been replaced, as pytest's capture does).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    # rich is imported where a terminal asks for it: output to a pipe or a file never pays for it.
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

__all__ = ["checks_table", "console_for", "is_terminal", "progress_line", "verdict_line"]

_STATUS_STYLES = {"PASSED": "bold green", "FAILED": "bold red", "ERROR": "bold red"}


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is an interactive terminal that can show colour (not a pipe, not ``TERM=dumb``)."""
    if os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False


def console_for(stream: TextIO | None = None) -> Console | None:
    """A rich console writing to ``stream`` (default: the current stdout) when it is a terminal, else None."""
    stream = stream if stream is not None else sys.stdout
    if not is_terminal(stream):
        return None
    from rich.console import Console

    return Console(file=stream, force_terminal=True, highlight=False, soft_wrap=True)


def checks_table(rows: Iterable[tuple[str, str, tuple[str, ...]]]) -> Table:
    """The check catalogue as a table: id, title and what each check needs."""
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    table.add_column("id", style="cyan", no_wrap=True)
    table.add_column("title")
    table.add_column("needs", style="dim")
    for check_id, title, needs in rows:
        table.add_row(check_id, title, ", ".join(needs))
    return table


def progress_line(message: str) -> Text:
    """One progress line of ``rtbook run`` with the step counter dimmed and the verdict coloured."""
    from rich.text import Text

    text = Text(message)
    step = re.match(r"^(\[\d+/\d+\]) ([^:]+)", message)
    if step:
        text.stylize("dim", *step.span(1))
        text.stylize("bold", *step.span(2))
    text.highlight_regex(r"^sandbox:.*", "dim")
    for word, style in _STATUS_STYLES.items():
        text.highlight_regex(rf"^\s*{word}\b", style)
    return text


def verdict_line(line: str) -> Text:
    """The ``PASSED: ...`` / ``FAILED: ...`` line of ``rtbook run``, its first word coloured."""
    from rich.text import Text

    text = Text(line)
    match = re.match(r"^(PASSED|FAILED)\b", line)
    if match:
        text.stylize(_STATUS_STYLES[match.group(1)], 0, match.end())
    return text
