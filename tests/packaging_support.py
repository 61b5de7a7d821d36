"""Building rtbook's wheel for the packaging tests: offline, from a clean copy of the sources."""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from tests.conftest import ROOT, require

# setuptools builds wheels without the separate 'wheel' package from 70.1 on (a dev dependency).
MIN_SETUPTOOLS = (70, 1)


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def require_wheel_build() -> None:
    """Skip locally / fail in CI when this interpreter cannot build the wheel offline."""
    try:
        have = metadata.version("setuptools")
    except metadata.PackageNotFoundError:
        have = ""
    require(
        bool(have) and _version_tuple(have) >= MIN_SETUPTOOLS,
        f"setuptools>={'.'.join(map(str, MIN_SETUPTOOLS))} is needed to build the wheel without network "
        f"(found {have or 'none'}; pip install -e '.[dev]')",
    )


def build_wheel(work: Path, timeout: float = 300) -> Path:
    """Build rtbook's wheel into ``work/dist`` and return its path.

    The sources are copied to ``work/src`` first (pyproject.toml, README.md and rtbook/ are all a
    build reads): an in-tree build would write build/ and rtbook.egg-info/ into the checkout, two
    tests building at once would race there, and a stale build/lib could put files deleted from
    the sources into the wheel. ``--no-build-isolation --no-index``: the installed setuptools
    builds it and nothing is downloaded.
    """
    require_wheel_build()
    src = work / "src"
    dist = work / "dist"
    src.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "rtbook",
        src / "rtbook",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints", "outputs"),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "--wheel-dir", str(dist), str(src)],
        capture_output=True, text=True, timeout=timeout, cwd=str(work), check=False,
    )
    assert proc.returncode == 0, f"pip wheel failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    wheels = sorted(dist.glob("rtbook-*.whl"))
    assert len(wheels) == 1, f"expected one wheel in {dist}, found {wheels}"
    return wheels[0]
