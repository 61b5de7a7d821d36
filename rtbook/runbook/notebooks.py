"""The shipped notebooks: which exist, where they are, and which one covers a check."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rtbook.exceptions import (
    ConfigError,
    InputError,
)

if TYPE_CHECKING:
    pass

__all__ = ['NOTEBOOKS', 'NotebookSpec', 'copy_notebooks', 'notebook_dir', 'notebook_for', 'select_notebooks']



# ================================================================ inside a notebook


def notebook_for(check_id: str) -> str:
    """The notebook whose steps run (and explain how to fix) the check ``check_id``."""
    area = check_id.split(".", 1)[0]
    return {
        "compose": "01_setup",
        "env": "01_setup",
        "docker": "01_setup",
        "tenant": "02_tenant_seeding",
        "db": "02_tenant_seeding",
        "kong": "03_kong_routing",
        "envoy": "03_kong_routing",
        "gateway": "03_kong_routing",
        "realtime": "04_subscription_tests",
        "troubleshoot": "05_troubleshooting",
    }.get(area, "05_troubleshooting")


@dataclass(frozen=True)
class NotebookSpec:
    """A notebook of the runbook: its file stem and what it covers."""

    name: str
    title: str

    @property
    def number(self) -> str:
        """The two-digit prefix used by ``--notebooks 01,03``."""
        return self.name[:2]


NOTEBOOKS: tuple[NotebookSpec, ...] = (
    NotebookSpec("00_start_here", "What the runbook does, its parameters and the guided form"),
    NotebookSpec("01_setup", "Stack files, containers and Realtime's health"),
    NotebookSpec("02_tenant_seeding", "The tenant row, the database and the seeding plan"),
    NotebookSpec("03_kong_routing", "Gateway configuration and live routing probes"),
    NotebookSpec("04_subscription_tests", "Heartbeat, broadcast, presence, postgres_changes and RLS"),
    NotebookSpec("05_troubleshooting", "From a symptom to the checks that decide it and the fix"),
)


def notebook_dir() -> Path:
    """Where the runbook's notebooks live (``$RTBOOK_NOTEBOOKS`` or the repository's ``notebooks/``)."""
    env = os.environ.get("RTBOOK_NOTEBOOKS")
    return Path(env) if env else Path(__file__).resolve().parent.parent.parent / "notebooks"


def select_notebooks(selection: str | Sequence[str] | None) -> list[NotebookSpec]:
    """Resolve ``--notebooks 01,03`` (numbers or names) to notebook specs in run order."""
    if not selection:
        return list(NOTEBOOKS)
    wanted = [s.strip() for s in (selection.split(",") if isinstance(selection, str) else selection) if s.strip()]
    chosen: list[NotebookSpec] = []
    for item in wanted:
        match = [nb for nb in NOTEBOOKS if item in (nb.number, nb.name, nb.name + ".ipynb")]
        if not match:
            names = ", ".join(nb.name for nb in NOTEBOOKS)
            raise ConfigError(f"--notebooks: no notebook {item!r}; choose numbers or names among {names}")
        chosen.extend(m for m in match if m not in chosen)
    return [nb for nb in NOTEBOOKS if nb in chosen]


def copy_notebooks(dest: Path, *, force: bool = False) -> list[Path]:
    """Copy every shipped notebook from :func:`notebook_dir` into ``dest`` and return the new paths.

    ``dest`` is created when missing. Nothing is copied when a notebook of the same name is
    already there, unless ``force``.

    Raises:
        ConfigError: ``dest`` is a file, is the shipped folder itself, or already holds one of
            the notebooks (without ``force``).
        InputError: a shipped notebook is missing.
    """
    src = notebook_dir()
    dest = Path(dest).expanduser()
    if dest.exists() and not dest.is_dir():
        raise ConfigError(f"{dest} is a file, not a folder; choose a folder to copy the notebooks into")
    sources = [src / f"{nb.name}.ipynb" for nb in NOTEBOOKS]
    missing = [s.name for s in sources if not s.is_file()]
    if missing:
        raise InputError(f"shipped notebooks not found in {src}: {', '.join(missing)}; set RTBOOK_NOTEBOOKS")
    if dest.is_dir() and dest.resolve() == src.resolve():
        raise ConfigError(f"{dest} is where the notebooks are shipped; pass another directory")
    targets = [dest / s.name for s in sources]
    existing = [t for t in targets if t.exists()]
    if existing and not force:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise ConfigError(f"{existing[0]} already exists{more}; pass --force to overwrite")
    dest.mkdir(parents=True, exist_ok=True)
    for source, target in zip(sources, targets, strict=True):
        shutil.copyfile(source, target)
    return targets
