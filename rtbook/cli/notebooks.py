"""``rtbook notebooks copy DIR``: editable copies of the shipped notebooks."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rtbook.runbook.notebooks import copy_notebooks

__all__ = ['add_cli']


def add_cli(subparsers: Any) -> None:
    """Add ``rtbook notebooks copy``."""
    parser = subparsers.add_parser("notebooks", help="copy the runbook's notebooks somewhere you can edit them")
    actions = parser.add_subparsers(dest="notebooks_command", metavar="ACTION", parser_class=type(parser))
    parser.set_defaults(func=lambda _args: (parser.print_help(), 2)[1])
    p = actions.add_parser(
        "copy",
        help="copy every notebook into DIR (created if needed)",
        description="Copy the notebooks shipped with rtbook into DIR, to open in JupyterLab or change, and run "
        "them with 'rtbook run --notebook-dir DIR'. Existing files are left alone unless --force is given.",
    )
    p.add_argument("dest", metavar="DIR", help="the folder to copy the notebooks into")
    p.add_argument("--force", action="store_true", help="overwrite notebooks that already exist in DIR")
    p.set_defaults(func=_cmd_copy)


def _cmd_copy(args: argparse.Namespace) -> int:
    dest = Path(args.dest)
    copies = copy_notebooks(dest, force=args.force)
    for path in copies:
        sys.stdout.write(f"{path}\n")
    sys.stdout.write(
        f"copied {len(copies)} notebooks to {dest}; open them with 'jupyter lab {dest}', "
        f"run them with 'rtbook run --notebook-dir {dest} ...'\n"
    )
    return 0
