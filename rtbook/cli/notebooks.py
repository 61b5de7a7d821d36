"""``rtbook notebooks copy DIR``: editable copies of the shipped notebooks."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from rtbook.cli._click import RtbookGroup

__all__ = ["add_cli"]


def add_cli(group: click.Group) -> None:
    """Add ``rtbook notebooks copy``."""
    group.add_command(_notebooks)


@click.group("notebooks", cls=RtbookGroup, invoke_without_command=True, subcommand_metavar="ACTION [ARGS]...",
             short_help="copy the runbook's notebooks somewhere you can edit them",
             help="The notebooks shipped with rtbook.")
@click.pass_context
def _notebooks(ctx: click.Context) -> None:
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())
        ctx.exit(2)


@_notebooks.command("copy", short_help="copy every notebook into DIR (created if needed)",
                    help="Copy the notebooks shipped with rtbook into DIR, to open in JupyterLab or change, and run "
                    "them with 'rtbook run --notebook-dir DIR'. Existing files are left alone unless --force is "
                    "given (exit 2).")
@click.argument("dest", metavar="DIR")
@click.option("--force", is_flag=True, help="overwrite notebooks that already exist in DIR")
def _copy(dest: str, force: bool) -> int:
    from rtbook.runbook.notebooks import copy_notebooks

    folder = Path(dest)
    copies = copy_notebooks(folder, force=force)
    for path in copies:
        sys.stdout.write(f"{path}\n")
    sys.stdout.write(
        f"copied {len(copies)} notebooks to {folder}; open them with 'jupyter lab {folder}', "
        f"run them with 'rtbook run --notebook-dir {folder} ...'\n"
    )
    return 0
