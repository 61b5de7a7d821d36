"""What keeps ``rtbook run``'s own start cheap, tested as mechanisms in a fresh interpreter each.

The kernel is looked up without importing IPython (0.9 s of terminal and prompt_toolkit imports),
papermill is imported without jsonschema's optional IRI checker (a Lark grammar compiled at
import, 0.9 s), and neither workaround changes what the process can import afterwards.
bench/speed_bench.py has the figures; tests/integration/test_warm_kernel.py runs the engine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import ROOT


def _probe(code: str, env: dict[str, str] | None = None) -> Any:
    """Run ``code`` in a fresh interpreter; the JSON it prints last."""
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_kernel_is_found_without_importing_ipython() -> None:
    got = _probe(
        "import json, sys\n"
        "from jupyter_client.kernelspec import KernelSpecManager\n"
        "from rtbook.runbook.engine import kernel_spec_manager\n"
        "ours = kernel_spec_manager().get_kernel_spec('python3')\n"
        "imported = 'IPython' in sys.modules\n"
        "theirs = KernelSpecManager().get_kernel_spec('python3')\n"
        "print(json.dumps({'ipython': imported, 'same': ours.argv == theirs.argv and"
        " ours.resource_dir == theirs.resource_dir, 'dirs_tail': kernel_spec_manager().kernel_dirs[-1]}))\n"
    )
    assert got["ipython"] is False
    assert got["same"] is True, "the same kernel as jupyter_client's default lookup"
    assert str(got["dirs_tail"]).endswith("/kernels")


def test_papermill_is_imported_without_the_iri_checker_and_nothing_else_changes() -> None:
    got = _probe(
        "import json, sys\n"
        "from rtbook.runbook.engine import import_papermill\n"
        "pm = import_papermill()\n"
        "hidden = sys.modules.get('rfc3987_syntax', 'absent')\n"
        "lark = 'lark' in sys.modules\n"
        "import nbformat\n"
        "nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('1')])\n"
        "nbformat.validate(nb)\n"
        "try:\n"
        "    import rfc3987_syntax\n"
        "    later = 'imported'\n"
        "except ImportError:\n"
        "    later = 'not installed'\n"
        "print(json.dumps({'papermill': pm.__name__, 'hidden': str(hidden), 'lark': lark, 'later': later}))\n"
    )
    assert got["papermill"] == "papermill"
    assert got["lark"] is False, "no grammar was compiled"
    assert got["hidden"] == "absent", "the placeholder is removed once papermill is imported"
    # Installed or not, the package imports as usual afterwards (JupyterLab's dependencies install it).
    assert got["later"] in ("imported", "not installed")


def test_an_interpreter_that_already_has_jsonschema_is_left_alone() -> None:
    got = _probe(
        "import json, sys\n"
        "import jsonschema\n"
        "before = 'rfc3987_syntax' in sys.modules\n"
        "from rtbook.runbook.engine import import_papermill\n"
        "import_papermill()\n"
        "print(json.dumps({'same': ('rfc3987_syntax' in sys.modules) == before,"
        " 'none': sys.modules.get('rfc3987_syntax', 1) is None}))\n"
    )
    assert got == {"same": True, "none": False}


def test_a_file_check_does_not_import_the_runner_machinery() -> None:
    got = _probe(
        "import json, sys\n"
        "import rtbook.cli  # builds the whole command: every subcommand module is imported\n"
        "assert 'run' in rtbook.cli.cli.commands\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in"
        " ('papermill', 'nbformat', 'jupyter_client', 'IPython', 'zmq', 'jsonschema'))))\n"
    )
    assert got == []


def test_only_an_ipython_kernel_is_shared(tmp_path: Path) -> None:
    """The reset between notebooks is IPython's; another kernel gets one kernel per notebook."""
    for name, argv, language in (
        ("other", ["other-kernel", "-f", "{connection_file}"], "python"),
        ("ipy", [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"], "python"),
        ("rlang", [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"], "R"),
    ):
        folder = tmp_path / "kernels" / name
        folder.mkdir(parents=True)
        (folder / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": name, "language": language}))
    got = _probe(
        "import json\n"
        "from rtbook.runbook.engine import is_ipython_kernel\n"
        "print(json.dumps({n: is_ipython_kernel(n) for n in ('python3', 'ipy', 'other', 'rlang', 'absent')}))\n",
        {"JUPYTER_PATH": str(tmp_path)},
    )
    assert got == {"python3": True, "ipy": True, "other": False, "rlang": False, "absent": False}
