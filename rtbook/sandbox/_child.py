"""The command line of the sandbox's child processes: one argument, the config file.

The children (``python -m rtbook.sandbox.server`` and ``python -m rtbook.sandbox.gateway``) are
started by the manager, never by hand, so they take no options; everything they need is in
the JSON file written with mode 0600 (secrets come through the environment). Argument parsing
of the ``rtbook`` command lives in :mod:`rtbook.cli` only.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

__all__ = ["config_argument"]


def config_argument(argv: Iterable[str] | None, prog: str) -> Path | None:
    """The config file named by the child's only argument; None after a usage line on stderr otherwise.

    Args:
        argv: the arguments after the program name (``sys.argv[1:]`` when None).
        prog: the module, for the usage line (``rtbook.sandbox.server``).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0].startswith("-"):
        sys.stderr.write(f"usage: python -m {prog} CONFIG.json (the child's config file, written by the manager)\n")
        return None
    return Path(args[0])
