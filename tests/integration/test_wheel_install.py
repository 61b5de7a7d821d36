"""The wheel, installed in a fresh virtual environment, runs the whole runbook: nothing comes from the checkout.

The wheel is built offline from a clean copy of the sources, installed into a new venv outside the
source tree, and ``<venv>/bin/rtbook run --target sandbox`` runs from a temporary folder with
``PYTHONPATH`` unset; its record must verify. This is what a user gets from ``pip install rtbook``:
the notebooks, the stack templates in ``rtbook/data`` and every module must be in the wheel.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from rtbook.runbook.notebooks import NOTEBOOKS
from tests.conftest import ROOT
from tests.integration.runbook_support import find_leaks, require_sandbox, stop_sandbox
from tests.packaging_support import build_wheel, require_wheel_build

pytestmark = [pytest.mark.slow, pytest.mark.sandbox]

# Run inside the venv: where every rtbook module, the distribution and the kernel come from.
PROBE = r"""
import importlib, json, pkgutil, sys
from importlib import metadata
import rtbook
files = [rtbook.__file__]
for info in pkgutil.walk_packages(rtbook.__path__, "rtbook."):
    if not info.name.endswith(".__main__"):
        files.append(importlib.import_module(info.name).__file__)
from jupyter_client.manager import KernelManager
print(json.dumps({
    "rtbook": rtbook.__file__,
    "modules": files,
    "finders": [type(f).__module__ for f in sys.meta_path],
    "dist_path": str(metadata.distribution("rtbook")._path),
    "direct_url": json.loads(metadata.distribution("rtbook").read_text("direct_url.json") or "{}"),
    "kernel_argv0": KernelManager(kernel_name="python3").format_kernel_cmd()[0],
    "executable": sys.executable,
}))
"""


def _run(
    args: Sequence[str | Path], env: Mapping[str, str], cwd: Path, timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run ``args`` with exactly ``env``, in ``cwd``, killed after ``timeout`` seconds."""
    return subprocess.run(
        [str(a) for a in args], env=dict(env), cwd=str(cwd), capture_output=True, text=True, timeout=timeout,
        check=False,
    )


def _dependency_dirs() -> list[str]:
    """The site-packages folders this test process imports its dependencies from."""
    return [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages") and Path(p).is_dir()]


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "rtbook-home"
    yield path
    stop_sandbox(path)  # in case a failing run left its sandbox up


def test_the_wheel_in_a_fresh_venv_runs_the_runbook_and_its_record_verifies(tmp_path: Path, home: Path) -> None:
    require_sandbox()
    require_wheel_build()
    assert not tmp_path.resolve().is_relative_to(ROOT.resolve()), "the venv must live outside the source tree"
    wheel = build_wheel(tmp_path / "build")

    # A venv WITHOUT --system-site-packages: with them, the system site-packages' .pth files run, and
    # the editable install of rtbook that a developer machine has there ('pip install -e .') installs
    # a meta-path finder that serves any rtbook module missing from the wheel out of the checkout,
    # so a wheel lacking a subpackage would still pass. Instead the wheel is installed first (pip then
    # sees nothing but the venv and cannot touch the editable install), and only afterwards a .pth
    # file lists the folders the dependencies are installed in. Path lines in a .pth only extend
    # sys.path, they do not run the .pth files of those folders, so no editable finder is installed;
    # the venv's site-packages comes first on sys.path, so its rtbook wins. No network is needed.
    venv = tmp_path / "venv"
    made = _run([sys.executable, "-m", "venv", venv], os.environ, tmp_path, 300)
    assert made.returncode == 0, made.stderr[-3000:]
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")}
    installed = _run(
        [python, "-m", "pip", "install", "--no-deps", "--no-index", "--force-reinstall", "--disable-pip-version-check",
         wheel],
        env, tmp_path, 300,
    )
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], env, tmp_path, 60)
    site_dir = Path(purelib.stdout.strip())
    assert site_dir.is_relative_to(venv), purelib.stdout + purelib.stderr
    (site_dir / "_rtbook_test_dependencies.pth").write_text("\n".join(_dependency_dirs()) + "\n")

    # The kernel papermill starts must be the venv's python too: a 'python3' kernelspec elsewhere
    # (e.g. 'ipykernel install --user' with the system python's absolute path) would import rtbook
    # from wherever that python finds it. JUPYTER_PATH comes first in Jupyter's search path.
    kernel_dir = tmp_path / "jupyter" / "kernels" / "python3"
    kernel_dir.mkdir(parents=True)
    (kernel_dir / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (rtbook wheel test venv)",
        "language": "python",
    }))
    work = tmp_path / "work"  # the working folder: neither the checkout nor anything in it
    work.mkdir()
    env.update({
        "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        "VIRTUAL_ENV": str(venv),
        "JUPYTER_PATH": str(tmp_path / "jupyter"),
        "JUPYTER_DATA_DIR": str(tmp_path / "jupyter-data"),
        "RTBOOK_HOME": str(home),
    })

    probe = _run([python, "-c", PROBE], env, work, 300)
    assert probe.returncode == 0, probe.stderr[-3000:]
    seen = json.loads(probe.stdout)
    assert Path(seen["rtbook"]).is_relative_to(site_dir), f"rtbook imported from {seen['rtbook']}, not the venv"
    outside = [f for f in seen["modules"] if not Path(f).is_relative_to(site_dir)]
    assert not outside, f"rtbook modules imported from outside the venv: {outside}"
    assert len(seen["modules"]) > 40, "every rtbook module was imported"
    assert not [m for m in seen["finders"] if m.startswith("__editable__")], seen["finders"]
    assert Path(seen["dist_path"]).is_relative_to(site_dir), seen["dist_path"]
    assert seen["direct_url"].get("url", "").endswith(wheel.name), seen["direct_url"]
    assert seen["kernel_argv0"] == seen["executable"] and Path(seen["executable"]).is_relative_to(venv), seen

    out = tmp_path / "outputs"
    run = _run([venv / "bin" / "rtbook", "run", "--target", "sandbox", "--output-dir", out], env, work, 900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-4000:]
    assert "PASSED" in run.stdout
    records = sorted(p for p in out.iterdir() if p.is_dir())
    assert len(records) == 1, records
    record = records[0]
    for nb in NOTEBOOKS:
        assert (record / f"{nb.name}.ipynb").is_file(), f"{nb.name} missing from the record"
    assert find_leaks(record, [str(ROOT)]) == [], "the record mentions the checkout"

    verify = _run([venv / "bin" / "rtbook", "verify", record], env, work, 120)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "intact" in verify.stdout
    assert not list(work.iterdir()), "rtbook run wrote into its working folder"

    # Editable copies come out of the installed package too, identical to the tracked notebooks.
    mine = tmp_path / "my-notebooks"
    copied = _run([venv / "bin" / "rtbook", "notebooks", "copy", mine], env, work, 120)
    assert copied.returncode == 0, copied.stdout + copied.stderr
    assert sorted(p.name for p in mine.iterdir()) == sorted(f"{nb.name}.ipynb" for nb in NOTEBOOKS)
    for nb in NOTEBOOKS:
        tracked = ROOT / "rtbook" / "notebooks" / f"{nb.name}.ipynb"
        assert (mine / f"{nb.name}.ipynb").read_bytes() == tracked.read_bytes(), nb.name
