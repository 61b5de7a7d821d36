"""The warm kernel (rtbook.runbook.engine): one kernel for a run, and still each notebook's own output.

Small notebooks written here exercise what a kernel shared between notebooks could get wrong: a
name, a working directory, an environment variable or a "warn once" registry surviving from one
notebook into the next; execution counts; papermill's parameter injection; a failing cell; a
kernel that dies or a cell that times out. The last test compares the real runbook executed in
the warm kernel with one kernel per notebook, against the sandbox.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

from rtbook.runbook.engine import WarmKernel, import_papermill

pytestmark = [pytest.mark.notebooks]


def _notebook(folder: Path, name: str, *cells: str, parameters: str | None = None) -> Path:
    nb = nbformat.v4.new_notebook()
    if parameters is not None:
        nb.cells.append(nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}))
    nb.cells.extend(nbformat.v4.new_code_cell(c) for c in cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = folder / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


def _outputs(path: Path) -> list[tuple[int | None, list[str]]]:
    """(execution count, texts of the outputs) of every code cell."""
    nb = json.loads(path.read_text())
    out = []
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        texts = []
        for o in cell.get("outputs", []):
            if o["output_type"] == "stream":
                texts.append("".join(o["text"]))
            elif o["output_type"] in ("execute_result", "display_data"):
                texts.append("".join(o["data"].get("text/plain", "")))
            elif o["output_type"] == "error":
                texts.append(f"{o['ename']}: {o['evalue']}")
        out.append((cell.get("execution_count"), texts))
    return out


@pytest.fixture(scope="module")
def pm() -> Any:
    return import_papermill()


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[WarmKernel]:
    with WarmKernel("python3", tmp_path, warmup="import json, textwrap") as k:
        yield k


def test_each_notebook_starts_from_a_fresh_namespace(tmp_path: Path, kernel: WarmKernel, pm: Any) -> None:
    first = _notebook(
        tmp_path, "first",
        "secret_name = 41\nimport os, sys, warnings\nos.environ['RTBOOK_WARM_TEST'] = 'set by first'",
        "os.chdir('/')\nsys.path.insert(0, '/nonexistent-rtbook')\nprint(os.getcwd())",
        "warnings.warn('shown in every notebook that triggers it', UserWarning)",
        "secret_name + 1",
    )
    second = _notebook(
        tmp_path, "second",
        "print(sorted(n for n in globals() if not n.startswith('_') and n not in ('In', 'Out', 'exit', 'quit', "
        "'get_ipython', 'open')))",
        "import os, sys, warnings\nprint(os.getcwd(), os.environ.get('RTBOOK_WARM_TEST'), "
        "'/nonexistent-rtbook' in sys.path)",
        "warnings.warn('shown in every notebook that triggers it', UserWarning)",
        "_i1[:5], len(In)",
    )
    for nb in (first, second, first):
        kernel.execute_notebook(pm, nb, tmp_path / f"out-{nb.stem}.ipynb", parameters={}, execution_timeout=60)
    got = _outputs(tmp_path / "out-second.ipynb")
    assert [count for count, _ in got] == [1, 2, 3, 4], "execution counts start at 1 in every notebook"
    assert got[0][1] == ["[]\n"], "no name survives from the previous notebook"
    assert got[1][1] == [f"{tmp_path} None False\n"], "cwd, environment and sys.path are the kernel's own"
    assert any("shown in every notebook" in t for t in got[2][1]), "a warning shown before is shown again"
    assert got[3][1] == ["('print', 5)"], "In holds this notebook's cells only"
    again = _outputs(tmp_path / "out-first.ipynb")
    assert [count for count, _ in again] == [1, 2, 3, 4]
    assert again[1][1] == ["/\n"] and again[3][1] == ["42"]
    assert any("shown in every notebook" in t for t in again[2][1])
    assert kernel.starts == 1, "one kernel served all three notebooks"


def test_papermill_parameters_and_metadata_are_papermills(tmp_path: Path, kernel: WarmKernel, pm: Any) -> None:
    nb = _notebook(tmp_path, "params", "print(target, n * 2)", parameters="target = 'default'\nn = 1")
    out = tmp_path / "out.ipynb"
    kernel.execute_notebook(pm, nb, out, parameters={"target": "sandbox", "n": 21}, execution_timeout=60)
    data = json.loads(out.read_text())
    tags = [c["metadata"].get("tags", []) for c in data["cells"]]
    assert tags[0] == ["parameters"] and tags[1] == ["injected-parameters"]
    assert "target = \"sandbox\"" in "".join(data["cells"][1]["source"])
    meta = data["metadata"]["papermill"]
    assert meta["parameters"] == {"target": "sandbox", "n": 21}
    assert meta["input_path"] == str(nb) and meta["output_path"] == str(out)
    assert meta["exception"] is None and meta["duration"] >= 0
    assert all(c["metadata"]["papermill"]["status"] == "completed" for c in data["cells"])
    assert data["metadata"]["language_info"]["name"] == "python"
    assert _outputs(out) == [(1, []), (2, []), (3, ["sandbox 42\n"])]


def test_a_failing_cell_stops_only_its_notebook(tmp_path: Path, kernel: WarmKernel, pm: Any) -> None:
    bad = _notebook(tmp_path, "bad", "x = 1", "raise ValueError('boom')", "print('never')")
    good = _notebook(tmp_path, "good", "print('ran')")
    with pytest.raises(pm.PapermillExecutionError) as err:
        kernel.execute_notebook(pm, bad, tmp_path / "out-bad.ipynb", parameters={}, execution_timeout=60)
    assert err.value.ename == "ValueError"
    got = _outputs(tmp_path / "out-bad.ipynb")
    assert got[1][1] == ["ValueError: boom"] and got[2] == (None, []), "the cells after the error did not run"
    kernel.execute_notebook(pm, good, tmp_path / "out-good.ipynb", parameters={}, execution_timeout=60)
    assert _outputs(tmp_path / "out-good.ipynb") == [(1, ["ran\n"])]
    assert kernel.starts == 1, "an error in a cell leaves the kernel usable"


@pytest.mark.parametrize(
    "crash",
    [
        "import os\nos._exit(3)",  # the kernel process dies
        "import time\ntime.sleep(60)",  # the cell outlives its timeout and keeps the kernel busy
        "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)",
    ],
)
def test_a_crashed_kernel_does_not_reach_the_next_notebook(
    tmp_path: Path, kernel: WarmKernel, pm: Any, crash: str
) -> None:
    crashing = _notebook(tmp_path, "crashing", "leak = 'from the crashed notebook'", crash, "print('never')")
    after = _notebook(tmp_path, "after", "print('leak' in globals())", "print('after')")
    with pytest.raises(Exception) as err:
        kernel.execute_notebook(pm, crashing, tmp_path / "out-crash.ipynb", parameters={}, execution_timeout=3)
    assert not isinstance(err.value, pm.PapermillExecutionError), "a crash, not an error in a cell"
    saved = _outputs(tmp_path / "out-crash.ipynb")
    assert saved[0][0] == 1, "the crashed notebook is still written, with the cells it ran"
    kernel.execute_notebook(pm, after, tmp_path / "out-after.ipynb", parameters={}, execution_timeout=60)
    assert _outputs(tmp_path / "out-after.ipynb") == [(1, ["False\n"]), (2, ["after\n"])]
    assert kernel.starts == 2, "the next notebook ran in a new kernel"


def test_a_kernel_that_cannot_start_is_a_dependency_error(tmp_path: Path) -> None:
    from rtbook.exceptions import DependencyError

    with pytest.raises(DependencyError, match="no Jupyter kernel named 'no-such-kernel'"):
        WarmKernel("no-such-kernel", tmp_path).start()


def test_the_kernel_is_gone_after_the_run(tmp_path: Path, pm: Any) -> None:
    nb = _notebook(tmp_path, "pid", "import os\nprint(os.getpid())")
    with WarmKernel("python3", tmp_path) as k:
        k.execute_notebook(pm, nb, tmp_path / "out.ipynb", parameters={}, execution_timeout=60)
        pid = int(_outputs(tmp_path / "out.ipynb")[0][1][0])
        os.kill(pid, 0)  # alive while the run lasts
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


# ---------------------------------------------------------------- the real runbook, warm and fresh


def _shape(nb: dict[str, Any]) -> list[tuple[Any, ...]]:
    """What must not depend on how the kernel was shared: sources, tags, counts, output kinds, verdicts."""
    out = []
    for cell in nb["cells"]:
        kinds = tuple(o["output_type"] for o in cell.get("outputs", []))
        out.append((cell["cell_type"], "".join(cell["source"]), tuple(cell["metadata"].get("tags", [])),
                    cell.get("execution_count"), kinds, cell["metadata"].get("papermill", {}).get("status")))
    return out


@pytest.mark.sandbox
@pytest.mark.slow
def test_the_runbook_records_the_same_notebooks_warm_and_fresh(tmp_path: Path) -> None:
    from rtbook.runbook.params import validate_params
    from rtbook.runbook.runner import run_notebooks
    from tests.integration.runbook_support import require_sandbox, start_sandbox, stop_sandbox

    require_sandbox()
    home = tmp_path / "home"
    box = start_sandbox(home)
    old = os.environ.get("RTBOOK_HOME")
    os.environ["RTBOOK_HOME"] = str(box.home)
    try:
        params = validate_params({"target_kind": "sandbox"})
        warm = run_notebooks(params, output_dir=tmp_path / "warm", warm_kernel=True)
        fresh = run_notebooks(params, output_dir=tmp_path / "fresh", warm_kernel=False)
    finally:
        if old is None:
            os.environ.pop("RTBOOK_HOME", None)
        else:
            os.environ["RTBOOK_HOME"] = old
        stop_sandbox(home)
    assert warm.exit_code == fresh.exit_code == 0
    for w, f in zip(warm.notebooks, fresh.notebooks, strict=True):
        assert (w.name, w.status) == (f.name, f.status)
        assert [(r.id, r.status) for r in w.report] == [(r.id, r.status) for r in f.report], w.name
        wnb = json.loads((warm.record_dir / f"{w.name}.ipynb").read_text())
        fnb = json.loads((fresh.record_dir / f"{f.name}.ipynb").read_text())
        assert _shape(wnb) == _shape(fnb), w.name
        assert wnb["metadata"]["papermill"]["parameters"] == fnb["metadata"]["papermill"]["parameters"]
        assert set(wnb["metadata"]["papermill"]) == set(fnb["metadata"]["papermill"])
