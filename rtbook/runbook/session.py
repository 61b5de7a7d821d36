"""The notebook side of a run: ``start(name, globals())`` and the ``NotebookRun`` each notebook reports into."""

from __future__ import annotations

import ast
import html
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rtbook.exceptions import (
    ConfigError,
    ConfirmationRequired,
    InputError,
    RtbookError,
)
from rtbook.results import CheckResult, Report
from rtbook.runbook.notebooks import notebook_for
from rtbook.runbook.params import (
    ParamValue,
    RunParams,
    default_params,
    notebook_params,
    saved_params,
    saved_params_path,
    target_from_params,
)
from rtbook.runbook.troubleshoot import deciding_prefixes, diagnose
from rtbook.secrets import Redactor

if TYPE_CHECKING:
    from rtbook.target import Target

__all__ = ['NotebookRun', 'StepReport', 'start', 'with_saved_params']



class StepReport(Report):
    """A report that shows its full text (not just the counts) when rendered as plain text."""

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))

    def _repr_html_(self) -> str:
        links = sorted({notebook_for(r.id) for r in self if r.failed})
        # JupyterLab right-aligns table cells by default; findings and remedies read better left-aligned.
        body = (
            super()
            ._repr_html_()
            .replace("<th>", '<th style="text-align:left">')
            .replace("<td>", '<td style="text-align:left">')
            .replace('<td style="color:', '<td style="text-align:left;color:')
        )
        if links:
            body += "<p>Fix it here: " + ", ".join(f'<a href="{n}.ipynb">{n}</a>' for n in links) + "</p>"
        return body

    def __str__(self) -> str:
        text = super().__str__()
        links = sorted({notebook_for(r.id) for r in self if r.failed})
        return text + (f"\nFix it here: {', '.join(links)}" if links else "")


# The names notebook 02 plans with by default; their rows are written only on the sandbox.
EXAMPLE_TENANTS = frozenset({"my-tenant", "tenant-b"})


class Note:
    """A short message that renders the same as text and as HTML (e.g. "nothing applied")."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text

    def _repr_html_(self) -> str:
        return f"<p>{html.escape(self.text)}</p>"


class NotebookRun:
    """What one notebook has found so far: its parameters, target and results, saved as it goes.

    Each step adds its results; a later result with the same id replaces an earlier one (the
    check after an apply wins over the check before it). :meth:`gate` saves and raises.
    """

    def __init__(self, notebook: str, params: Mapping[str, ParamValue], target: Target | None) -> None:
        self.notebook = notebook
        self.params = dict(params)
        self._target = target
        self._results: dict[str, list[CheckResult]] = {}
        self._earlier_results: Report | None = None
        self.notes: list[str] = []

    @property
    def target(self) -> Target:
        """The target under test (ConfigError when the notebook has none, e.g. 05 over a record)."""
        if self._target is None:
            raise ConfigError(f"{self.notebook} has no target; check its parameters")
        return self._target

    @property
    def report(self) -> Report:
        """Every result this notebook recorded, latest per check id."""
        return Report([r for rs in self._results.values() for r in rs], title=self.notebook)

    def record(self, results: Iterable[CheckResult]) -> StepReport:
        """Add results to the notebook's record (replacing same-id results) and save it."""
        step = StepReport(results)
        grouped: dict[str, list[CheckResult]] = {}
        for r in step:
            grouped.setdefault(r.id, []).append(r)
        self._results.update(grouped)
        self.save()
        return step

    def checks(self, *prefixes: str, title: str = "", skip_done: bool = False,
               exclude: tuple[str, ...] = ()) -> StepReport:
        """Run the checks whose id starts with one of ``prefixes`` and record their results.

        With ``skip_done``, checks this notebook already ran are left out (a "everything else" step);
        ``exclude`` leaves out ids with these prefixes (a check another notebook owns).
        """
        from rtbook.registry import run_one, select_checks

        target = self.target
        results: list[CheckResult] = []
        for spec in select_checks(prefixes, exclude):
            if skip_done and spec.id in self._results:
                continue
            results.extend(run_one(spec, target))
        step = self.record(results)
        step.title = title or ", ".join(prefixes)
        if not len(step):
            self.notes.append(f"no check registered for {', '.join(prefixes)}")
        return step

    def seeding_plan(self) -> Any:
        """The tenant seeding plan for the target (``rtbook.seeding.plan``), or a note saying why there is none.

        Planning is a dry run; it may propose creating a missing tenant row, which only
        :meth:`apply_plan` with ``apply_fixes`` and ``confirm_apply`` would write.
        """
        from rtbook import seeding as tenants

        if not self.target.has("db"):
            return Note(f"No seeding plan: the target has no database ({self.target.why_missing('db')}).")
        try:
            return tenants.plan(self.target, create=True)
        except RtbookError as exc:
            return Note(f"No seeding plan: {self.target.redactor.text(str(exc))}")

    def tenant_change(self, action: str, name: str, public_host: str = "") -> Any:
        """A tenant ``rename``/``add``/``remove`` plan (``rtbook.lifecycle``, a dry run shown as diffs), or a Note.

        With ``run_dir`` set, the changed files are written under ``<run_dir>/tenant-plans/<action>-<name>/``
        for review; the stack's own files are never edited. :meth:`apply_plan` writes its rows.
        """
        from rtbook import lifecycle

        if not name:
            return Note(f"No {action} planned: no tenant name given.")
        if self.target.stack is None:
            return Note(f"No {action} planned: the target has no stack files (stack_dir).")
        try:
            if action == "rename":
                plan = lifecycle.plan_rename(self.target, name)
            elif action == "add":
                plan = lifecycle.plan_add(self.target, name, public_host or f"{name}.localhost")
            else:
                plan = lifecycle.plan_remove(self.target, name)
            run_dir = str(self.params.get("run_dir") or "")
            if run_dir and plan.files:
                plan.write(Path(run_dir) / "tenant-plans" / f"{action}-{name}", self.target.stack.root)
        except RtbookError as exc:
            return Note(f"No {action} planned: {self.target.redactor.text(str(exc))}")
        return plan

    def apply_plan(self, plan: Any) -> Any:
        """Apply ``plan`` when ``apply_fixes`` and ``confirm_apply`` allow it, then re-run the tenant checks."""
        if isinstance(plan, Note):
            return plan
        from rtbook.lifecycle import LifecyclePlan

        if isinstance(plan, LifecyclePlan) and not plan.rows.changes:
            return Note(f"Nothing to apply to the database for this {plan.action}.")
        if isinstance(plan, LifecyclePlan) and plan.tenant in EXAMPLE_TENANTS and self.target.name != "sandbox":
            # Seeding with apply_fixes must not also create the notebook's example tenants in a real database.
            return Note(f"Not applied: {plan.tenant!r} is the notebook's example name; put your own tenant name in "
                        "the cell above to write its rows (or use rtbook tenant rename|add --apply --yes).")
        if getattr(plan, "empty", False):
            return Note("Nothing to apply: the stored tenant rows already match the stack.")
        if not self.params.get("apply_fixes"):
            return Note("Not applied: apply_fixes is false (a dry run). Set apply_fixes and confirm_apply to write.")
        if not self.params.get("confirm_apply"):
            raise ConfirmationRequired("apply_fixes is true but confirm_apply is false; nothing was written")
        from rtbook import seeding as tenants

        if isinstance(plan, LifecyclePlan):
            from rtbook import lifecycle

            outcome: Any = lifecycle.apply(self.target, plan, yes=True)
        else:
            outcome = tenants.apply(self.target, plan, yes=True)
        applied = [outcome] if isinstance(outcome, CheckResult) else [r for r in outcome if isinstance(r, CheckResult)]
        after = self.checks("tenant.", "db.", title="After applying the plan")
        step = self.record([*applied, *after])
        step.title = "Applied the plan; the tenant and database checks again"
        return step

    def _earlier(self) -> Report:
        """The results of the run's earlier notebooks (from ``run_dir``), else the deciding checks run now."""
        if self._earlier_results is not None:
            return self._earlier_results
        symptom = str(self.params.get("symptom") or "")
        run_dir = str(self.params.get("run_dir") or "")
        earlier = load_results(run_dir, exclude=(self.notebook,)) if run_dir else None
        if earlier is None or not len(earlier):
            earlier = Report() if self._target is None else _run_deciding_checks(self.target, symptom)
        self._earlier_results = earlier
        return earlier

    def troubleshoot(self) -> StepReport:
        """Explain the chosen symptom(s) from the results of the run's earlier notebooks."""
        symptom = str(self.params.get("symptom") or "")
        return self.record(diagnose(self._earlier(), symptom))

    def root_causes(self) -> Any:
        """The root cause(s) of the run's failures, each with its one remedy, and the path with the failing hop.

        Read from the earlier notebooks' results (05), else from this notebook's own.
        """
        from rtbook.runbook.views import RootCauseView

        results = self._earlier() if self.notebook.startswith("05") else self.report
        return RootCauseView(results, tenant=self._tenant())

    def path(self) -> Any:
        """The message path (client to database), coloured by the verdicts known so far.

        Uses the run's saved results when ``run_dir`` has them; otherwise (00 before any run) the quick static
        checks of the target's files, which run here and are not recorded.
        """
        from rtbook.report.diagram import PathDiagram

        results: Report = self.report
        run_dir = str(self.params.get("run_dir") or "")
        if not len(results) and run_dir and Path(run_dir).is_dir():
            results = load_results(run_dir, exclude=(self.notebook,))
        if not len(results) and self._target is not None and self._target.stack is not None:
            from rtbook.registry import run_checks

            results = run_checks(self._target, only=("compose.", "env.", "kong.", "envoy."))
        return PathDiagram.from_results(results, tenant=self._tenant())

    def latency_chart(self) -> Any:
        """The latency chart (connect, join, broadcast, presence, postgres_changes) of this notebook's results."""
        from rtbook.report.charts import LatencyChart

        return LatencyChart.from_results(self.report)

    def _tenant(self) -> str:
        if self._target is not None:
            return self._target.resolved_tenant()
        return str(self.params.get("tenant") or "")

    def load(self) -> Any:
        """Notebook 07: run the load the ``load_*`` parameters describe, record it, show its figures."""
        from rtbook.runbook.loadstep import load_step

        return load_step(self)

    def save(self) -> Path | None:
        """Write ``<run_dir>/<notebook>.results.json`` (redacted); no-op without ``run_dir``."""
        run_dir = str(self.params.get("run_dir") or "")
        if not run_dir:
            return None
        path = Path(run_dir) / f"{self.notebook}.results.json"
        redactor = self._target.redactor if self._target is not None else Redactor()
        data = {"notebook": self.notebook, **self.report.to_dict(), "notes": self.notes}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(redactor.data(data), indent=2))
        tmp.replace(path)
        return path

    def gate(self) -> None:
        """Save the results, then raise ChecksFailedError if a check failed (or warned, when strict)."""
        self.save()
        report = self.report
        report.raise_for_failures(strict=bool(self.params.get("strict")))


def _run_deciding_checks(target: Target, symptom: str) -> Report:
    from rtbook.registry import run_checks

    prefixes = deciding_prefixes(symptom)
    return run_checks(target, only=prefixes)


def _papermill_names(namespace: Mapping[str, Any]) -> set[str]:
    """Names papermill injected: assignments in a cell that starts with papermill's ``# Parameters`` line."""
    names: set[str] = set()
    for source in namespace.get("In") or ():
        if not (isinstance(source, str) and source.startswith("# Parameters\n")):
            continue
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def with_saved_params(
    params: Mapping[str, ParamValue], namespace: Mapping[str, Any], path: str | Path | None = None
) -> tuple[dict[str, ParamValue], str]:
    """Merge the form's saved parameters under the notebook's own; return the set and a line saying what was used.

    A name keeps the notebook's value when it differs from the schema default (changed in the
    parameters cell) or when papermill injected it; every other name takes the saved value. Under
    ``rtbook run`` (``run_dir`` set) the saved file is not read: the command's ``--params-file`` is.
    A saved ``apply_fixes`` is a dry run unless this notebook itself sets ``confirm_apply``.
    """
    merged = dict(params)
    if merged.get("run_dir"):
        return merged, ""
    file = Path(path) if path else saved_params_path()
    saved = saved_params(file)
    if not saved:
        return merged, ""
    defaults = default_params()
    explicit = {name for name, value in params.items() if value != defaults.get(name)} | _papermill_names(namespace)
    used = sorted(name for name, value in saved.items() if name not in explicit and value != merged.get(name))
    merged.update({name: saved[name] for name in used})
    note = ""
    if merged.get("apply_fixes") and not merged.get("confirm_apply"):
        merged["apply_fixes"] = False
        used = [n for n in used if n != "apply_fixes"]
        note = (" apply_fixes from that file is not used (a dry run): set confirm_apply = True in this notebook "
                "to write.")
    merged = RunParams.from_mapping(merged).as_dict()
    what = ", ".join(used) if used else "nothing (every saved value is already the notebook's)"
    return merged, f"Parameters saved by the form ({file}) used for: {what}.{note}"


def start(notebook: str, namespace: Mapping[str, Any], *, need_target: bool = True) -> NotebookRun:
    """Validate the notebook's parameters from ``namespace`` (over the form's saved ones) and build its target.

    The second cell of every notebook calls this. Without ``need_target`` (05 reading a record)
    a target that cannot be built is tolerated. In IPython, an error raised here shows as one red
    line ending with the fix (:meth:`rtbook.exceptions.RtbookError._render_traceback_`).
    """
    params, origin = with_saved_params(notebook_params(namespace), namespace)
    if origin:
        print(origin)  # noqa: T201 - the cell's output is where the user looks
    try:
        target = target_from_params(**params)
    except (RtbookError, ImportError):
        if need_target:
            raise
        target = None
    run = NotebookRun(notebook, params, target)
    run.save()
    return run


def load_results(run_dir: str | Path, exclude: Sequence[str] = ()) -> Report:
    """Every result saved by the notebooks of a run (``*.results.json`` in ``run_dir``), in notebook order."""
    folder = Path(run_dir)
    if not folder.is_dir():
        raise ConfigError(f"run_dir {str(folder)!r} is not a directory; pass the folder of a run (outputs/<run>)")
    report = Report(title=f"results in {folder.name}")
    for path in sorted(folder.glob("*.results.json")):
        name = path.name.removesuffix(".results.json")
        if name in exclude:
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read {path.name}: {exc}") from exc
        report.extend(Report.from_dict(data))
    return report


# ================================================================ the runner

