"""The guided form of ``00_start_here`` and the tables it shows.

The form edits exactly the parameter set of :data:`rtbook.runbook.params.PARAMS` and builds a
:class:`~rtbook.runbook.params.RunParams` from it on every keystroke, as ``rtbook run`` does, so
both refuse the same values with the same messages. It saves the set as JSON for
``rtbook run --params-file``, runs the checks of a chosen step against the target and shows
the coloured result table. Writing to the database sits behind a separate confirm button, shown
under the seeding plan only when the plan has something to write.

:class:`TargetStatus` opens ``00_start_here``: is the sandbox running (with a button to start
it), or which endpoints the stack resolves to.

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
from rtbook.runbook.params import NOT_SAVED, PARAMS, Param, ParamValue, RunParams, saved_params_path
from rtbook.runbook.session import StepReport
from rtbook.secrets import Redactor

__all__ = ['STEPS', 'ParamForm', 'ParamsTable', 'TargetStatus', 'params_table', 'target_status']

_PARAM_NAME = re.compile(r"parameter '([a-z_]+)'")
_RED = "#c5221f"

# The form's own styles: an invalid field gets a red border, help lines wrap under their field,
# and nothing in the form may be wider than the output area (a 4 px overflow gave every notebook
# a permanent horizontal scrollbar).
_STYLE = f"""<style>
.rtbook-form, .rtbook-form * {{ box-sizing: border-box; }}
.rtbook-form {{ max-width: 100%; overflow-x: hidden; }}
.rtbook-form .widget-inline-hbox, .rtbook-form .widget-text, .rtbook-form .widget-dropdown {{ max-width: 100%; }}
.rtbook-field-invalid input, .rtbook-field-invalid select {{
  border: 2px solid {_RED} !important; background: #fce8e6 !important; }}
.rtbook-help {{ color: #5f6368; font-size: 12px; line-height: 1.35; white-space: normal; overflow-wrap: anywhere;
  margin: -2px 0 6px 128px; }}
.rtbook-form pre {{ white-space: pre-wrap; overflow-wrap: anywhere; margin: 0; }}
.rtbook-form table {{ max-width: 100%; table-layout: auto; }}
.rtbook-form td {{ overflow-wrap: break-word; vertical-align: top; }}
</style>"""

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


def _installed_folder(path: Path) -> Path | None:
    """The rtbook package folder when ``path`` lies inside it (the installed or tracked notebooks), else None."""
    import rtbook

    package = Path(rtbook.__file__).resolve().parent
    resolved = path.resolve()
    return package if resolved == package or package in resolved.parents else None


_COPY_HINT = ("these are the notebooks installed with rtbook (or tracked in its repository): work on copies. "
              "Run 'rtbook notebooks copy ~/rtbook-notebooks' in a terminal and open the copies in JupyterLab")


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
        self.params_path = Path(params_path) if params_path else saved_params_path()
        self.widgets: dict[str, Any] = {}
        fields: list[Any] = []
        for p in PARAMS:
            if p.name in ("run_dir", "confirm_apply", "symptom"):
                continue  # set by the runner, by the confirm button, and by 05 respectively
            self.widgets[p.name] = self._input(p, start[p.name])
            # The whole help text, wrapped under its field (a placeholder or tooltip cuts it).
            help_line = w.HTML(f'<div class="rtbook-help">{html.escape(p.help)}</div>')
            fields.append(w.VBox([self.widgets[p.name], help_line], layout=w.Layout(width="100%")))
        self.step = w.Dropdown(options=list(STEPS), value=next(iter(STEPS)), description="checks",
                               style={"description_width": "120px"}, layout=w.Layout(width="100%"))
        self.status = w.HTML()
        self.output = w.Output(layout=w.Layout(width="100%", overflow="hidden"))
        self.save_button = w.Button(description="Save parameters", icon="save")
        self.run_button = w.Button(description="Run checks", button_style="primary", icon="play")
        # Shown only under a plan that has changes, labelled with what it will do; width auto so
        # the label is never cut.
        self.confirm_button = w.Button(
            description="Apply the plan", button_style="danger", disabled=True, icon="check",
            layout=w.Layout(display="none", width="auto"),
        )
        self.confirm_button.add_class("rtbook-confirm")
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
                w.HTML(_STYLE + "<b>Runbook parameters</b> (secrets are never entered here: they come from the "
                       "environment or the stack's .env)"),
                *fields,
                self.status,
                self.step,
                w.HBox([self.save_button, self.run_button]),
                self.output,
                self.confirm_button,
            ],
            layout=w.Layout(width="100%", max_width="900px", overflow="hidden"),
        )
        self.box.add_class("rtbook-form")
        self.validate()

    def _input(self, p: Param, value: ParamValue) -> Any:
        w = self._w
        style = {"description_width": "120px"}
        layout = w.Layout(width="100%")
        if p.choices:
            widget = w.Dropdown(options=list(p.choices), value=value, description=p.name, style=style,
                                layout=w.Layout(width="auto", max_width="100%"))
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
            widget = w.Text(value=str(value), description=p.name, style=style, layout=layout,
                            continuous_update=True)
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
        """Build :class:`RunParams` from the current values; show the verdict under the form (None if invalid).

        An invalid form marks the field the message names, and clears the results and any plan
        shown below it: they belong to values the form no longer holds.
        """
        try:
            params = RunParams.from_mapping(self.raw_values())
        except RtbookError as exc:
            self.last_error = str(exc)
            self.status.value = (
                f'<span class="rtbook-invalid" style="color:{_RED}">&#10007; {html.escape(str(exc))}</span>'
            )
            self.run_button.disabled = self.save_button.disabled = True
            self._mark_invalid(_PARAM_NAME.findall(str(exc)))
            self._clear_results()
            return None
        self.last_error = ""
        self.status.value = '<span class="rtbook-valid" style="color:#137333">&#10003; parameters are valid</span>'
        self.run_button.disabled = self.save_button.disabled = False
        self._mark_invalid([])
        return params

    def _mark_invalid(self, names: list[str]) -> None:
        for name, widget in self.widgets.items():
            if name in names:
                widget.add_class("rtbook-field-invalid")
            else:
                widget.remove_class("rtbook-field-invalid")

    @property
    def invalid_fields(self) -> list[str]:
        """The names of the fields marked invalid."""
        return [n for n, wdg in self.widgets.items() if "rtbook-field-invalid" in wdg._dom_classes]

    def _clear_results(self) -> None:
        self._hide_confirm()
        self._plan = None
        self.last_report = None
        self.output.outputs = ()

    def _hide_confirm(self) -> None:
        self.confirm_button.disabled = True
        self.confirm_button.layout.display = "none"

    @property
    def params(self) -> dict[str, ParamValue] | None:
        """The validated parameter set, or None while the form is invalid."""
        return self.validate()

    # ------------------------------------------------------------ actions
    def save(self, path: str | Path | None = None) -> Path | None:
        """Write the validated parameters as JSON: what notebooks 01-05 and ``rtbook run --params-file`` read.

        The file goes to the working folder (``outputs/params.json`` beside the notebook copies),
        never into the installed package. The apply confirmation is never saved: a later run that
        should write to the database needs its own ``confirm_apply`` (this form's Confirm button,
        the notebook's parameters cell, or ``-p confirm_apply=true``).
        """
        params = self.validate()
        if params is None:
            return None
        target = Path(path) if path else self.params_path
        if _installed_folder(target.parent) is not None:
            self._show_error(f"Not saved to {target}: {_COPY_HINT}.")
            return None
        target.parent.mkdir(parents=True, exist_ok=True)
        saved = {k: v for k, v in params.items() if k not in NOT_SAVED}
        target.write_text(json.dumps(saved, indent=2) + "\n")
        confirm = (" apply_fixes is saved without its confirmation: add -p confirm_apply=true to write."
                   if saved.get("apply_fixes") else "")
        self._show(f"Saved to {target}; notebooks 01-05 in this folder now use these values. "
                   f"Headless: rtbook run --params-file {target}.{confirm}")
        return target

    def run(self) -> Report | None:
        """Build the target from the form and run the chosen step's checks; show the coloured table."""
        from rtbook.registry import run_checks

        params = self.run_params()
        if params is None:
            return None
        self._hide_confirm()
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
            self._show_error(self.last_error)
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
        plan = self._plan
        changes = list(getattr(plan, "changes", []))
        if changes and not getattr(plan, "blocked", ""):
            n = len(changes)
            self.confirm_button.description = f"Apply {n} change{'s' if n != 1 else ''} to tenant {plan.tenant}"
            self.confirm_button.disabled = False
            self.confirm_button.layout.display = None
            head = "Seeding plan (nothing written yet: the button under it applies it)"
        else:
            head = "Seeding plan (nothing to apply)"
            self._plan = None  # nothing the confirm button could do
        return f"<h4>{head}</h4>{_plan_html(plan)}"

    def apply(self) -> Any:
        """Apply the prepared plan; only reachable through the confirm button after a Run with apply_fixes."""
        if self._plan is None or self._target is None or not getattr(self._plan, "changes", None):
            self._show("Nothing to apply: press Run checks with apply_fixes ticked, and a plan with changes.")
            return None
        from rtbook import seeding as tenants

        self._hide_confirm()
        try:
            outcome = tenants.apply(self._target, self._plan, yes=True)
        except RtbookError as exc:
            self._show_error(self._redact(str(exc)))
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

    def _show_error(self, text: str) -> None:
        self._show_html(f'<p class="rtbook-error" style="color:{_RED}">{html.escape(text)}</p>')

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


def _plan_html(plan: Any) -> str:
    """The seeding plan as a diff table whose before/after cells hold the whole value, wrapped, never cut."""
    esc = html.escape
    redactor = getattr(plan, "redactor", None) or Redactor()
    blocked = str(getattr(plan, "blocked", ""))
    parts = []
    if blocked:
        parts.append(f'<p style="color:{_RED}"><b>Blocked:</b> {esc(redactor.text(blocked))}</p>')
    changes = list(getattr(plan, "changes", []))
    if not changes:
        parts.append("<p>Nothing to change: the stored rows match the stack.</p>")
    else:
        rows = []
        for change in changes:
            data = redactor.data(change.to_dict())

            def cell(value: Any) -> str:
                text = "-" if value is None else json.dumps(value, indent=1, default=str)
                return f"<pre>{esc(text)}</pre>"

            rows.append(
                f"<tr><td>{esc(str(data['kind']))}</td><td><code>{esc(str(data['table']))}[{esc(str(data['key']))}]"
                f"</code></td><td>{cell(data['before'])}</td><td>{cell(data['after'])}</td>"
                f"<td>{esc(str(data['reason']))}</td></tr>"
            )
        parts.append(
            '<table class="rtbook-plan" style="border-collapse:collapse;text-align:left;width:100%">'
            "<colgroup><col style='width:8%'><col style='width:17%'><col style='width:30%'><col style='width:30%'>"
            "<col style='width:15%'></colgroup><thead><tr><th>change</th><th>row</th><th>before</th><th>after</th>"
            f"<th>why</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )
    notes = [n for n in getattr(plan, "notes", []) if n]
    if notes:
        parts.append("<ul>" + "".join(f"<li>{esc(redactor.text(n))}</li>" for n in notes) + "</ul>")
    return "".join(parts)


# ================================================================ the target's status


class TargetStatus:
    """The first thing ``00_start_here`` shows: what the runbook will test, and whether it is there.

    For the sandbox: running or not, with a button that starts it (the same as ``rtbook sandbox
    up``). For a stack: the endpoints the stack and the parameters resolve to. Outside a widget
    frontend it renders as text.
    """

    def __init__(self, params: Mapping[str, ParamValue], *, start_timeout_s: float = 120) -> None:
        import ipywidgets as w

        self._w = w
        self.params = dict(params)
        self.start_timeout_s = start_timeout_s
        self.html = w.HTML()
        self.start_button = w.Button(description="Start the sandbox", icon="play", button_style="success",
                                     layout=w.Layout(width="auto", display="none"))
        self.start_button.add_class("rtbook-start-sandbox")
        self.start_button.on_click(lambda _b: self.start_sandbox())
        self.box = w.VBox([self.html, self.start_button], layout=w.Layout(width="100%", overflow="hidden"))
        self.box.add_class("rtbook-status")
        self.text = ""
        self.running: bool | None = None
        self.refresh()

    # ------------------------------------------------------------ state
    def _in_place_warning(self) -> str:
        if _installed_folder(Path.cwd()) is None:
            return ""
        return f"Running in place: {_COPY_HINT}."

    def refresh(self) -> str:
        """Look again (sandbox state, or the stack's files) and redraw; return the text shown."""
        warning = self._in_place_warning()
        if self.params.get("target_kind", "sandbox") == "sandbox":
            text, ok, lines = self._sandbox()
        else:
            text, ok, lines = self._stack()
        self.running = ok
        self.start_button.layout.display = (
            None if (self.params.get("target_kind", "sandbox") == "sandbox" and not ok) else "none"
        )
        self.start_button.disabled = False
        cls = "rtbook-status-ok" if ok else "rtbook-status-down"
        colour, background = ("#137333", "#e6f4ea") if ok else (_RED, "#fce8e6")
        items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
        warn = (f'<p class="rtbook-in-place" style="color:{_RED}"><b>{html.escape(warning)}</b></p>'
                if warning else "")
        self.html.value = (
            f'<div class="{cls}" style="border-left:4px solid {colour};background:{background};padding:6px 10px">'
            f"<b>{html.escape(text)}</b>" + (f"<ul>{items}</ul>" if items else "") + f"</div>{warn}"
        )
        self.text = "\n".join([text, *(f"  {line}" for line in lines), *([warning] if warning else [])])
        return self.text

    def _sandbox(self) -> tuple[str, bool, list[str]]:
        from rtbook.sandbox import manager

        try:
            state = manager.status()
        except RtbookError as exc:
            return f"The sandbox cannot be read: {exc}", False, []
        if not state.get("running"):
            if state.get("pids"):
                return ("The sandbox is recorded but not running (a process died). Start it again with the "
                        "button, or 'rtbook sandbox down' then 'rtbook sandbox up' in a terminal.", False, [])
            return ("No sandbox is running. Start it with the button below (or 'rtbook sandbox up' in a terminal), "
                    "or set target_kind to 'stack' to check your own stack.", False, [])
        redact = Redactor().text
        lines = [f"{label}: {redact(str(state.get(key)))}" for label, key in (
            ("gateway (Kong stand-in)", "gateway_url"), ("Realtime", "realtime_url"),
            ("Host header for Realtime", "realtime_host"), ("database", "db_url"), ("tenant", "tenant"),
            ("stack files", "stack_dir")) if state.get(key)]
        breaks = state.get("breaks") or []
        if breaks:
            lines.append(f"break scenarios: {', '.join(breaks)}")
        return "The sandbox is running.", True, lines

    def _stack(self) -> tuple[str, bool, list[str]]:
        try:
            target = RunParams.from_mapping(
                {k: v for k, v in self.params.items() if k not in ("run_dir",)}
            ).target()
        except RtbookError as exc:
            return f"The stack cannot be read: {exc}", False, []
        redact = target.redactor.text
        lines = [f"stack files: {self.params.get('stack_dir')}"]
        for label, value in (("gateway (api_url)", target.api_url), ("Realtime (realtime_url)", target.realtime_url),
                             ("Host header for Realtime", target.realtime_host), ("database", target.db_url)):
            lines.append(f"{label}: {redact(value) if value else 'not set (those checks are skipped)'}")
        lines.append(f"tenant: {target.resolved_tenant()}")
        return "Target: your stack, resolved as below.", True, lines

    # ------------------------------------------------------------ action
    def start_sandbox(self) -> bool:
        """Start the sandbox (``rtbook sandbox up``) and redraw; False (with the reason shown) if it did not start."""
        from rtbook.sandbox import manager

        self.start_button.disabled = True
        self.html.value = ("<p class='rtbook-status-starting'>Starting the sandbox (PostgreSQL, Realtime, gateway)"
                           " ...</p>")
        try:
            manager.up(timeout=self.start_timeout_s)
        except RtbookError as exc:
            self.refresh()
            self.html.value += f'<p class="rtbook-error" style="color:{_RED}">{html.escape(str(exc))}</p>'
            return False
        self.refresh()
        return bool(self.running)

    # ------------------------------------------------------------ display
    def __str__(self) -> str:
        return self.text

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle: dict[str, Any] = dict(self.box._repr_mimebundle_(include=include, exclude=exclude) or {})
        bundle["text/plain"] = str(self)
        return bundle


def target_status(params: Mapping[str, ParamValue]) -> TargetStatus:
    """The target's status panel for ``params`` (see :class:`TargetStatus`)."""
    return TargetStatus(params)
