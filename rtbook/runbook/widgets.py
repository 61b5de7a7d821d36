"""The guided form of ``00_start_here`` and the tables it shows.

The form edits exactly the parameter set of :data:`rtbook.runbook.params.PARAMS` and builds a
:class:`~rtbook.runbook.params.RunParams` from it on every keystroke, as ``rtbook run`` does, so
both refuse the same values with the same messages. It saves the set as JSON for
``rtbook run --params-file``, runs the checks of a chosen step against the target and shows
the coloured result table. Writing to the database sits behind a separate confirm button.

Without a widget frontend (papermill, nbconvert, a terminal) the form renders as a plain text
table of the parameters and the command to run them headless.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rtbook.exceptions import RtbookError
from rtbook.results import Report
from rtbook.runbook.params import PARAMS, Param, ParamValue, RunParams
from rtbook.runbook.session import StepReport

__all__ = ['STEPS', 'ParamForm', 'ParamsTable', 'params_table']

# A list parameter (tables, load_thresholds) is typed as comma-separated text in the form.
_BY_NAME_TYPES = {p.name: p.type for p in PARAMS}


_TAGS = re.compile(r"<[^>]+>")

# The checks each step of the runbook runs, as offered by the form's step picker.
STEPS: dict[str, tuple[str, ...]] = {
    "01 setup: compose, env, containers, health": ("compose.", "env.", "docker.", "realtime.health"),
    "02 tenant and database": ("tenant.", "db."),
    "03 gateway: kong, envoy, live probes": ("kong.", "envoy.", "gateway."),
    "04 subscriptions": ("realtime.",),
    "static files only (01 + 03 configuration)": ("compose.", "env.", "kong.", "envoy."),
    "everything": (),
}


class ParamsTable:
    """The parameter set as a two-column table (HTML in JupyterLab, text elsewhere)."""

    def __init__(self, params: Mapping[str, ParamValue]) -> None:
        self.params = dict(params)

    def __str__(self) -> str:
        width = max(len(p.name) for p in PARAMS)
        lines = [f"{p.name:<{width}}  {json.dumps(self.params.get(p.name, p.default))}" for p in PARAMS]
        return "\n".join(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td><code>{html.escape(p.name)}</code></td>"
            f"<td><code>{html.escape(json.dumps(self.params.get(p.name, p.default)))}</code></td>"
            f'<td style="text-align:left">{html.escape(p.help)}</td></tr>'
            for p in PARAMS
        )
        return (
            '<table class="rtbook-params" style="text-align:left">'
            "<thead><tr><th>parameter</th><th>value</th><th>meaning</th></tr>"
            f"</thead><tbody>{rows}</tbody></table>"
        )


def params_table(params: Mapping[str, ParamValue]) -> ParamsTable:
    """A displayable table of ``params``."""
    return ParamsTable(params)


def _default_params_path() -> Path:
    # The kernel's working folder is the notebook's (in JupyterLab, the user's copy made by
    # 'rtbook notebooks copy'), never the installed notebooks: 'outputs/params.json' beside the
    # copies is where 'rtbook run --params-file outputs/params.json' run from there finds it.
    return Path.cwd() / "outputs" / "params.json"


class ParamForm:
    """An ipywidgets form over the runbook parameters with Save, Run and a guarded Apply.

    Attributes:
        widgets: one input widget per parameter name.
        status: the validation line, updated on every change.
        output: where results appear after Run.
        last_report: the report of the last Run (None before).
    """

    def __init__(self, params: Mapping[str, ParamValue] | None = None, params_path: str | Path | None = None) -> None:
        import ipywidgets as w

        self._w = w
        start = RunParams.from_mapping(dict(params or {})).as_dict()
        self.params_path = Path(params_path) if params_path else _default_params_path()
        self.widgets: dict[str, Any] = {}
        for p in PARAMS:
            if p.name in ("run_dir", "confirm_apply", "symptom"):
                continue  # set by the runner, by the confirm button, and by 05 respectively
            self.widgets[p.name] = self._input(p, start[p.name])
        self.step = w.Dropdown(options=list(STEPS), value=next(iter(STEPS)), description="checks")
        self.status = w.HTML()
        self.output = w.Output()
        self.save_button = w.Button(description="Save parameters", icon="save")
        self.run_button = w.Button(description="Run checks", button_style="primary", icon="play")
        self.confirm_button = w.Button(
            description="Confirm: apply the plan", button_style="danger", disabled=True, layout=w.Layout(display="none")
        )
        self.save_button.on_click(lambda _b: self.save())
        self.run_button.on_click(lambda _b: self.run())
        self.confirm_button.on_click(lambda _b: self.apply())
        for widget in self.widgets.values():
            widget.observe(lambda _change: self.validate(), names="value")
        self.last_report: Report | None = None
        self.last_error: str = ""
        self._plan: Any = None
        self._target: Any = None
        self.box = w.VBox(
            [
                w.HTML("<b>Runbook parameters</b> (secrets are never entered here: they come from the "
                       "environment or the stack's .env)"),
                *self.widgets.values(),
                self.status,
                self.step,
                w.HBox([self.save_button, self.run_button, self.confirm_button]),
                self.output,
            ],
            layout=w.Layout(max_width="900px"),
        )
        self.box.add_class("rtbook-form")
        self.validate()

    def _input(self, p: Param, value: ParamValue) -> Any:
        w = self._w
        style = {"description_width": "120px"}
        layout = w.Layout(width="100%")
        if p.choices:
            widget = w.Dropdown(options=list(p.choices), value=value, description=p.name, style=style)
        elif p.type is bool:
            widget = w.Checkbox(value=bool(value), description=p.name, style=style, indent=True)
        elif p.type is float:
            # A plain FloatText: a bounded one would clamp an out-of-range value silently, and the
            # schema refuses it with the range instead.
            widget = w.FloatText(value=float(value), description=p.name, style=style)  # type: ignore[arg-type]
        elif p.type is list:
            widget = w.Text(value=", ".join(value) if isinstance(value, list) else "", description=p.name,
                            placeholder="public.messages, public.todos", style=style, layout=layout,
                            continuous_update=True)
        else:
            widget = w.Text(value=str(value), description=p.name, placeholder=p.help[:80], style=style,
                            layout=layout, continuous_update=True)
        widget.tooltip = p.help
        widget.add_class(f"rtbook-param-{p.name}")
        return widget

    # ------------------------------------------------------------ values
    def raw_values(self) -> dict[str, Any]:
        """The form's current values, typed as the schema expects (not yet validated)."""
        out: dict[str, Any] = {}
        for name, widget in self.widgets.items():
            value = widget.value
            if _BY_NAME_TYPES.get(name) is list:
                value = [v.strip() for v in str(value).split(",") if v.strip()]
            out[name] = value
        if out.get("apply_fixes"):
            # The form's own confirm button is the second switch; the saved set must pass validation.
            out["confirm_apply"] = True
        return out

    def validate(self) -> dict[str, ParamValue] | None:
        """Validate the current values; show the verdict under the form and return the set (None if invalid)."""
        run_params = self.run_params()
        return run_params.as_dict() if run_params is not None else None

    def run_params(self) -> RunParams | None:
        """Build :class:`RunParams` from the current values; show the verdict under the form (None if invalid)."""
        try:
            params = RunParams.from_mapping(self.raw_values())
        except RtbookError as exc:
            self.last_error = str(exc)
            self.status.value = (
                f'<span class="rtbook-invalid" style="color:#c5221f">&#10007; {html.escape(str(exc))}</span>'
            )
            self.run_button.disabled = self.save_button.disabled = True
            return None
        self.last_error = ""
        self.status.value = '<span class="rtbook-valid" style="color:#137333">&#10003; parameters are valid</span>'
        self.run_button.disabled = self.save_button.disabled = False
        return params

    @property
    def params(self) -> dict[str, ParamValue] | None:
        """The validated parameter set, or None while the form is invalid."""
        return self.validate()

    # ------------------------------------------------------------ actions
    def save(self, path: str | Path | None = None) -> Path | None:
        """Write the validated parameters as JSON (the file ``rtbook run --params-file`` reads)."""
        params = self.validate()
        if params is None:
            return None
        target = Path(path) if path else self.params_path
        target.parent.mkdir(parents=True, exist_ok=True)
        saved = {k: v for k, v in params.items() if k != "run_dir"}
        target.write_text(json.dumps(saved, indent=2) + "\n")
        self._show(f"Saved to {target}. Headless: rtbook run --params-file {target}")
        return target

    def run(self) -> Report | None:
        """Build the target from the form and run the chosen step's checks; show the coloured table."""
        from rtbook.registry import run_checks

        params = self.run_params()
        if params is None:
            return None
        self.confirm_button.disabled = True
        self.confirm_button.layout.display = "none"
        self._show(f"Running {self.step.value} ...")
        self._target = self._plan = None
        try:
            self._target = params.target()
            prefixes = STEPS[self.step.value]
            report = StepReport(run_checks(self._target, only=prefixes), title=str(self.step.value))
        except Exception as exc:  # a button callback has nowhere else to show an error
            self.last_error = self._redact(
                f"{type(exc).__name__}: {exc}" if not isinstance(exc, RtbookError) else str(exc)
            )
            self._show_html(f'<p class="rtbook-error" style="color:#c5221f">{html.escape(self.last_error)}</p>')
            return None
        self.last_report = report
        parts = [report._repr_html_()]
        if params.apply_fixes:
            parts.append(self._prepare_plan())
        self._show_html("".join(parts))
        return report

    def _prepare_plan(self) -> str:
        from rtbook import seeding as tenants

        try:
            self._plan = tenants.plan(self._target, create=True)
        except RtbookError as exc:
            return f"<p>No seeding plan: {html.escape(self._redact(str(exc)))}</p>"
        self.confirm_button.disabled = False
        self.confirm_button.layout.display = None
        if hasattr(self._plan, "_repr_html_"):
            body = str(self._plan._repr_html_())
        else:
            body = f"<pre>{html.escape(str(self._plan))}</pre>"
        return f"<h4>Seeding plan (nothing written yet: press Confirm to apply)</h4>{body}"

    def apply(self) -> Any:
        """Apply the prepared plan; only reachable through the confirm button after a Run with apply_fixes."""
        if self._plan is None or self._target is None:
            self._show("Nothing to apply: press Run checks with apply_fixes ticked first.")
            return None
        from rtbook import seeding as tenants

        self.confirm_button.disabled = True
        try:
            outcome = tenants.apply(self._target, self._plan, yes=True)
        except RtbookError as exc:
            self._show_html(f'<p class="rtbook-error" style="color:#c5221f">{html.escape(self._redact(str(exc)))}</p>')
            return None
        from rtbook.registry import run_checks

        after = StepReport(run_checks(self._target, only=("tenant.", "db.")), title="After applying the plan")
        self._show_html(f"<p>Applied: {html.escape(self._redact(str(outcome)))}</p>{after._repr_html_()}")
        self._plan = None
        return outcome

    # ------------------------------------------------------------ display
    def _redact(self, text: str) -> str:
        # Error texts from the database or the plan may quote a connection string or a stored secret.
        return self._target.redactor.text(text) if self._target is not None else text

    def _show(self, text: str) -> None:
        self._show_html(f"<pre>{html.escape(text)}</pre>")

    def _show_html(self, body: str, text: str = "") -> None:
        # Setting the outputs directly works from button callbacks, outside any cell's context.
        plain = text or html.unescape(_TAGS.sub(" ", body)).strip()
        self.output.outputs = (
            {"output_type": "display_data", "data": {"text/html": body, "text/plain": plain}, "metadata": {}},
        )

    def __str__(self) -> str:
        params = self.validate()
        lines = ["Runbook parameters (guided form; text view because no widget frontend is attached):"]
        lines.append(str(ParamsTable(params or self.raw_values())))
        lines.append("valid" if params is not None else f"INVALID: {self.last_error}")
        lines.append("Headless: rtbook run --target sandbox  (or --params-file FILE saved from this form)")
        return "\n".join(lines)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle: dict[str, Any] = dict(self.box._repr_mimebundle_(include=include, exclude=exclude) or {})
        bundle["text/plain"] = str(self)
        return bundle
