"""Notebook 07's step: a load run from the notebook's parameters, recorded with its figures and histograms."""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from rtbook.exceptions import ConfigError

if TYPE_CHECKING:
    from rtbook.load.runner import LoadResult
    from rtbook.results import CheckResult
    from rtbook.target import Target


class _Notebook(Protocol):
    """What the step needs of :class:`rtbook.runbook.session.NotebookRun` (which calls it)."""

    @property
    def params(self) -> Mapping[str, Any]: ...

    @property
    def target(self) -> Target: ...

    def record(self, results: Iterable[CheckResult]) -> Any: ...

__all__ = ["LoadStep", "load_step"]

RECORD_FOLDER = "07_load"


@dataclass
class LoadStep:
    """What 07 shows: the run's text, its figures, and the check results it recorded."""

    result: LoadResult
    step: Any  # the StepReport the notebook recorded
    figures: list[Path] = field(default_factory=list)
    folder: Path | None = None

    def __str__(self) -> str:
        saved = f"\n(saved in {self.folder.name}/ of the run's record)" if self.folder else ""
        return f"{self.result.text()}{saved}\n\n{self.step}"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))

    def _repr_html_(self) -> str:
        images = "".join(
            f'<img alt="{html.escape(p.stem)}" style="max-width:100%" '
            f'src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode("ascii")}"/>'
            for p in self.figures
        )
        return f"<pre>{html.escape(self.result.text())}</pre>{images}{self.step._repr_html_()}"


def _number(value: object, default: float) -> float:
    """A schema-checked numeric parameter (the schema already refused anything else)."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default


def load_step(run: _Notebook) -> LoadStep:
    """Run the load the parameters describe against the notebook's target and record it.

    Raises ConfigError (shown as a short red box, not a traceback) when the parameters cannot
    describe a run or the target may not be loaded.
    """
    from rtbook.load.plots import save
    from rtbook.load.runner import require_consent, run_load, write_record
    from rtbook.load.scenario import Scenario
    from rtbook.load.thresholds import MAX_THRESHOLDS, parse_threshold

    p = run.params
    kind = str(p.get("load_scenario") or "broadcast")
    rate = _number(p.get("load_rate"), 20.0)
    sockets = int(_number(p.get("load_sockets"), 4.0))
    duration = _number(p.get("load_duration_s"), 3.0)
    raw = p.get("load_thresholds")
    texts = [str(t) for t in raw] if isinstance(raw, list) else []
    if len(texts) > MAX_THRESHOLDS:
        raise ConfigError(f"load_thresholds has {len(texts)} entries; at most {MAX_THRESHOLDS}")
    thresholds = [parse_threshold(t) for t in texts]
    if kind == "connect":
        scenario = Scenario(kind="connect", connections=max(sockets, 1), join_rate=rate, duration_s=duration)
    else:
        scenario = Scenario(kind=kind, senders=1, receivers=sockets, rate=rate, duration_s=duration)  # type: ignore[arg-type]
    target = run.target
    require_consent(target, bool(p.get("load_own_target")))
    result = run_load(target, scenario, thresholds)
    step = run.record(result.to_report())
    step.title = f"Load: {result.label}"
    out = LoadStep(result, step)
    run_dir = str(p.get("run_dir") or "")
    if run_dir:
        folder = Path(run_dir) / RECORD_FOLDER
        write_record(result, folder)
        out.figures = save(result, folder)
        out.folder = folder
    else:
        import tempfile

        out.figures = save(result, Path(tempfile.mkdtemp(prefix="rtbook-load-")))
    return out
