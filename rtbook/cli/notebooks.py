"""``rtbook notebooks copy DIR``: a working copy of the shipped notebooks."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from rtbook.cli._click import RtbookGroup

__all__ = ["add_cli"]


def add_cli(group: click.Group) -> None:
    """Add ``rtbook notebooks ...`` to the ``rtbook`` command."""
    group.add_command(_notebooks)


@click.group("notebooks", cls=RtbookGroup, invoke_without_command=True, subcommand_metavar="ACTION [ARGS]...",
             short_help="copy the runbook's notebooks somewhere to run or edit them",
             help="The runbook's notebooks, as shipped.")
@click.pass_context
def _notebooks(ctx: click.Context) -> None:
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())
        ctx.exit(2)


@_notebooks.command("copy", short_help="copy every shipped notebook into DIR",
                    help="Copy every shipped notebook into DIR (created when missing) and print the paths. "
                    "Existing notebooks are not overwritten unless --force. Exit 2 when DIR is a file or "
                    "already holds a notebook.")
@click.argument("dest", metavar="DIR")
@click.option("--force", is_flag=True, help="overwrite notebooks that are already in DIR")
def _copy(dest: str, force: bool) -> int:
    from rtbook.runbook.notebooks import copy_notebooks

    for path in copy_notebooks(Path(dest), force=force):
        sys.stdout.write(f"{path}\n")
    return 0
