"""The shipped notebooks: which exist, where they are, which one covers a check, and copies to edit.

The notebooks are package data (``rtbook/notebooks/*.ipynb``), so ``rtbook run`` finds them from
a wheel install as well as from a checkout. Users who want to change a notebook take a copy with
:func:`copy_notebooks` (``rtbook notebooks copy DIR``) and run it with ``rtbook run --notebook-dir
DIR``; the installed and the tracked notebooks are never edited in place.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rtbook.exceptions import (
    ConfigError,
)

if TYPE_CHECKING:
    pass

__all__ = ['NOTEBOOKS', 'NotebookSpec', 'copy_notebooks', 'notebook_dir', 'notebook_for', 'select_notebooks']



# ================================================================ inside a notebook


def notebook_for(check_id: str) -> str:
    """The notebook whose steps run (and explain how to fix) the check ``check_id``."""
    if check_id == "realtime.cluster":
        return "06_scale_out"  # a split or a cut socket is fixed at the load balancer or the cluster
    area = check_id.split(".", 1)[0]
    return {
        "lb": "06_scale_out",
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
        "load": "07_load_test",
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
    NotebookSpec("04_subscription_tests", "Join, broadcast, presence, postgres_changes, RLS and their latencies"),
    NotebookSpec("05_troubleshooting", "From a symptom to the checks that decide it and the fix"),
    NotebookSpec("06_scale_out", "Load balancers and Realtime clusters: upgrade, timeouts, stickiness, one cluster"),
    NotebookSpec("07_load_test", "Measured load: exact latency percentiles, every message accounted for"),
)


def notebook_dir() -> Path:
    """The folder of the notebooks shipped inside the package (``rtbook/notebooks/``).

    Read-only by convention: ``rtbook run`` executes them without changing them, and users edit
    the copies made by :func:`copy_notebooks`.
    """
    return Path(__file__).resolve().parent.parent / "notebooks"


def copy_notebooks(dest: Path, force: bool = False) -> list[Path]:
    """Copy every shipped notebook into ``dest`` (created if needed); return the copies in run order.

    Only the ``.ipynb`` files are copied: they are what JupyterLab opens and what ``rtbook run
    --notebook-dir DEST`` executes. (The repository's paired ``.py`` files are a review aid; beside
    an edited copy they would silently go stale.) Nothing is written unless every file can be.

    Raises:
        ConfigError: when ``dest`` is an existing file, when a notebook already exists in ``dest``
            and ``force`` is false, or when a notebook's place in ``dest`` is taken by a folder.
    """
    dest = Path(dest).expanduser()
    if dest.exists() and not dest.is_dir():
        raise ConfigError(f"{dest} is a file, not a folder; choose a folder to copy the notebooks into")
    src = notebook_dir()
    pairs = [(src / f"{nb.name}.ipynb", dest / f"{nb.name}.ipynb") for nb in NOTEBOOKS]
    for source, _ in pairs:
        if not source.is_file():
            raise ConfigError(f"{source} is missing: the rtbook installation is incomplete; reinstall rtbook")
    for _, target in pairs:
        if target.is_dir():
            raise ConfigError(f"{target} is a folder; move it away before copying the notebooks")
    existing = [target for _, target in pairs if target.exists()]
    if existing and not force:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise ConfigError(f"{existing[0]} already exists{more}; pass --force to overwrite")
    try:
        dest.mkdir(parents=True, exist_ok=True)
        for source, target in pairs:
            # copyfile, not copy2: a copy taken from a read-only installation must be editable.
            shutil.copyfile(source, target)
    except OSError as exc:
        raise ConfigError(f"cannot copy the notebooks into {dest}: {exc.strerror or exc}") from exc
    return [target for _, target in pairs]


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

