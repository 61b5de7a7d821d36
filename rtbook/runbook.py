"""The runbook: one parameter schema, notebook runs with papermill, audit records and ``verify``.

Every notebook starts with a cell tagged ``parameters`` whose lines are generated from
:data:`PARAMS`, so the notebooks, ``rtbook run -p name=value``, ``--params-file`` and the guided
form in ``00_start_here`` all accept exactly the same names, types and values. A mistyped or
unknown parameter is refused before any cell runs, and so is anything that looks like a secret:
secrets come from the environment or the stack's ``.env``, never from parameters.

``rtbook run`` executes the notebooks in order in a private staging folder, then writes the
audit record ``outputs/<UTC timestamp>-<target>/`` only after a redaction pass: executed
notebooks, ``summary.json``, ``summary.md``, ``junit.xml`` and ``manifest.json`` (sha256 of every
file). ``rtbook verify RUN_DIR`` re-hashes the record and names what changed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import difflib
import hashlib
import html
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TextIO
from xml.etree import ElementTree as ET

from rtbook.exceptions import (
    ChecksFailedError,
    ConfigError,
    ConfirmationRequired,
    DependencyError,
    InputError,
    RtbookError,
)
from rtbook.results import CheckResult, Report, Status
from rtbook.secrets import REDACTED, Redactor, is_secret_name, looks_secret

if TYPE_CHECKING:
    from rtbook.target import Target

__all__ = [
    "NOTEBOOKS",
    "PARAMS",
    "NotebookOutcome",
    "NotebookRun",
    "NotebookSpec",
    "Param",
    "RunOutcome",
    "StepReport",
    "VerifyResult",
    "add_cli",
    "default_params",
    "load_params_file",
    "notebook_for",
    "notebook_params",
    "parameters_cell_source",
    "parse_assignment",
    "redact_notebook",
    "run_notebooks",
    "start",
    "target_from_params",
    "validate_params",
    "verify",
    "write_manifest",
]

ParamValue = str | int | float | bool | list[str]


# ================================================================ parameter schema


@dataclass(frozen=True)
class Param:
    """One notebook parameter.

    Attributes:
        name: the variable name in the ``parameters`` cell and the key for ``-p name=value``.
        type: ``str``, ``float``, ``bool`` or ``list`` (a list of strings).
        default: the value the notebooks use when nothing is passed.
        help: one line for ``papermill --help-notebook`` and the form; no ``=`` in it.
        choices: the allowed values, when the parameter is an enumeration.
        required_for: the ``target_kind`` values for which an empty value is an error.
    """

    name: str
    type: type
    default: ParamValue
    help: str
    choices: tuple[str, ...] = ()
    required_for: tuple[str, ...] = ()

    @property
    def type_name(self) -> str:
        """The annotation written in the parameters cell (``str``, ``float``, ``bool``, ``list``)."""
        return self.type.__name__


SYMPTOMS = ("", "tenant_not_found", "socket_closes", "no_changes", "high_memory")

PARAMS: tuple[Param, ...] = (
    Param(
        "target_kind",
        str,
        "sandbox",
        "sandbox: the running embedded sandbox; stack: the stack in stack_dir and the URLs below",
        choices=("sandbox", "stack"),
    ),
    Param(
        "stack_dir",
        str,
        "",
        "directory laid out like supabase/docker (docker-compose.yml, .env, volumes/api/kong.yml)",
        required_for=("stack",),
    ),
    Param("api_url", str, "", "public gateway (Kong) URL, e.g. http://localhost:8000; empty skips live gateway checks"),
    Param("realtime_url", str, "", "Realtime reached directly, e.g. http://127.0.0.1:4000 (optional)"),
    Param("realtime_host", str, "", "Host header for direct Realtime requests; its first label is the tenant"),
    Param(
        "db_url",
        str,
        "",
        "database URL WITHOUT password, e.g. postgresql://supabase_admin@localhost:5432/postgres",
    ),
    Param("tenant", str, "", "tenant id; empty means what the stack implies (realtime-dev for the official stack)"),
    Param("tables", list, [], "schema.table names for the postgres_changes tests; empty means the whole publication"),
    Param("docker", str, "auto", "auto: container checks when an engine answers; on: require them; off: skip them",
          choices=("auto", "on", "off")),
    Param("timeout_s", float, 10.0, "seconds allowed for each network operation"),
    Param("apply_fixes", bool, False, "02 applies the tenant seeding plan (writes to the database)"),
    Param("confirm_apply", bool, False, "second switch that headless runs need before apply_fixes writes anything"),
    Param("strict", bool, False, "the gate cell also fails on warnings"),
    Param("symptom", str, "", "05 only: the symptom to explain; empty means every known symptom", choices=SYMPTOMS),
    Param("run_dir", str, "", "folder where each notebook saves its results (set by rtbook run); 05 reads it"),
)

_BY_NAME = {p.name: p for p in PARAMS}

# Names a notebook defines itself after the parameters cell; they are not parameters.
_RUNBOOK_NAMES = frozenset({"run", "target", "params", "report", "plan", "form", "diagnosis", "rtbook"})
_IPYTHON_NAMES = frozenset({"In", "Out", "exit", "quit", "get_ipython", "open"})
_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*\.[A-Za-z_][A-Za-z0-9_$]*$")
_TRUE = frozenset({"true", "yes", "1", "on"})
_FALSE = frozenset({"false", "no", "0", "off"})


def default_params() -> dict[str, ParamValue]:
    """Every parameter with its default value (lists copied)."""
    return {p.name: (list(p.default) if isinstance(p.default, list) else p.default) for p in PARAMS}


def _secret_name_error(name: str) -> ConfigError:
    return ConfigError(
        f"parameter {name!r} looks like a secret, and secrets are never parameters (they would be "
        f"copied into the executed notebooks); export {name.upper()} in the environment or put it in the "
        "stack's .env instead"
    )


def _unknown_error(name: str) -> ConfigError:
    close = difflib.get_close_matches(name, list(_BY_NAME), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return ConfigError(
        f"unknown parameter {name!r}: {hint}the runbook's parameters are {', '.join(_BY_NAME)} "
        "(see notebooks/00_start_here.ipynb or 'papermill --help-notebook')"
    )


def _env_secret_values() -> frozenset[str]:
    """Values of the environment's secret-looking variables (long enough to be matched safely)."""
    return frozenset(
        value
        for name, value in os.environ.items()
        if len(value) >= 8 and (is_secret_name(name) or looks_secret(value))
    )


def _check_value(param: Param, value: Any, env_secrets: frozenset[str]) -> ParamValue:
    name = param.name
    if param.type is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"parameter {name!r} must be true or false, got {value!r} ({type(value).__name__})")
        return value
    if param.type is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"parameter {name!r} must be a number, got {value!r} ({type(value).__name__})")
        if not 0 < float(value) <= 3600:
            raise ConfigError(f"parameter {name!r} must be between 0 and 3600 seconds, got {value!r}")
        return float(value)
    items: list[str]
    if param.type is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(
                f"parameter {name!r} must be a list of strings, e.g. [\"public.messages\"], got {value!r}"
            )
        items = [v.strip() for v in value if v.strip()]
    else:
        if not isinstance(value, str):
            raise ConfigError(f"parameter {name!r} must be a string, got {value!r} ({type(value).__name__})")
        items = [value]
    for item in items:
        if name == "db_url" and item:
            netloc = item.split("://", 1)[-1].split("/", 1)[0]
            if "@" in netloc and ":" in netloc.rsplit("@", 1)[0]:
                raise ConfigError(
                    "parameter 'db_url' must not contain a password (it would be copied into the record); "
                    "remove it from the URL and set POSTGRES_PASSWORD in the environment or the stack's .env"
                )
        if looks_secret(item) or Redactor().text(item) != item:
            raise ConfigError(
                f"parameter {name!r} holds a value that looks like a token, key or password ({REDACTED}); "
                "secrets are never parameters: put it in the environment or the stack's .env instead"
            )
        if any(secret in item for secret in env_secrets):
            raise ConfigError(
                f"parameter {name!r} holds the value of a secret found in the environment ({REDACTED}); "
                "secrets are never parameters, remove it"
            )
    if param.type is list:
        for item in items:
            if not _TABLE.match(item):
                raise ConfigError(f"parameter {name!r}: {item!r} is not schema.table, e.g. public.messages")
        return items
    text = items[0]
    if param.choices and text not in param.choices:
        allowed = ", ".join(repr(c) for c in param.choices)
        raise ConfigError(f"parameter {name!r} must be one of {allowed}, got {text!r}")
    if name in ("api_url", "realtime_url") and text and not text.startswith(("http://", "https://")):
        raise ConfigError(f"parameter {name!r} must start with http:// or https://, got {text!r}")
    return text


def validate_params(values: Mapping[str, Any], *, fill_defaults: bool = True) -> dict[str, ParamValue]:
    """Check ``values`` against :data:`PARAMS` and return the complete, typed parameter set.

    Raises:
        ConfigError: naming the parameter, the value and the fix, for an unknown name, a
            secret-looking name or value, a wrong type, a value outside the allowed ones, or a
            missing required value.
    """
    env_secrets = _env_secret_values()
    out: dict[str, ParamValue] = default_params() if fill_defaults else {}
    for name, value in values.items():
        if name not in _BY_NAME:
            if is_secret_name(name):
                raise _secret_name_error(name)
            raise _unknown_error(name)
        out[name] = _check_value(_BY_NAME[name], value, env_secrets)
    if fill_defaults:
        kind = str(out["target_kind"])
        for param in PARAMS:
            if kind in param.required_for and not out[param.name]:
                raise ConfigError(
                    f"parameter {param.name!r} is required when target_kind is {kind!r}: {param.help}"
                )
        if out["apply_fixes"] and not out["confirm_apply"]:
            raise ConfigError(
                "apply_fixes is true but confirm_apply is false: writing to the database needs both "
                "(pass -p confirm_apply=true, or press the confirm button in 00_start_here)"
            )
    return out


def parse_assignment(text: str) -> tuple[str, ParamValue]:
    """Parse one ``name=value`` from the command line into a typed value for that parameter."""
    if "=" not in text:
        raise ConfigError(f"-p expects name=value, got {text!r}; e.g. -p tenant=realtime-dev")
    name, raw = (part.strip() for part in text.split("=", 1))
    if name not in _BY_NAME:
        if is_secret_name(name):
            raise _secret_name_error(name)
        raise _unknown_error(name)
    param = _BY_NAME[name]
    value: ParamValue
    if param.type is bool:
        if raw.lower() in _TRUE:
            value = True
        elif raw.lower() in _FALSE:
            value = False
        else:
            raise ConfigError(f"parameter {name!r} must be true or false, got {raw!r}")
    elif param.type is float:
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"parameter {name!r} must be a number of seconds, got {raw!r}") from None
    elif param.type is list:
        if raw.startswith("["):
            try:
                parsed = json.loads(raw)
            except ValueError:
                raise ConfigError(f"parameter {name!r}: {raw!r} is not a JSON list") from None
            value = parsed if isinstance(parsed, list) else raw  # type: ignore[assignment]
        else:
            value = [v.strip() for v in raw.split(",") if v.strip()]
    else:
        value = raw
    return name, _check_value(param, value, _env_secret_values())


def load_params_file(path: str | Path) -> dict[str, Any]:
    """Read a parameter set written by the guided form (JSON) or by hand (JSON or YAML)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise InputError(f"cannot read the parameters file {p}: {exc.strerror}") from exc
    try:
        if p.suffix in (".yml", ".yaml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except ValueError as exc:
        raise InputError(f"{p} is not valid {'YAML' if p.suffix in ('.yml', '.yaml') else 'JSON'}: {exc}") from exc
    if not isinstance(data, dict):
        raise InputError(f"{p} must hold a mapping of parameter names to values, got {type(data).__name__}")
    return dict(data)


def parameters_cell_source() -> str:
    """The source of every notebook's ``parameters`` cell, generated from :data:`PARAMS`."""
    lines = ["# Parameters: papermill and 'rtbook run -p name=value' override these. Never put a secret here."]
    for p in PARAMS:
        default = json.dumps(p.default) if p.type is list else repr(p.default)
        lines.append(f"{p.name}: {p.type_name} = {default}  # {p.help}")
    return "\n".join(lines)


def notebook_params(namespace: Mapping[str, Any]) -> dict[str, ParamValue]:
    """Collect and validate the parameters a notebook's first cells defined in ``namespace``.

    Any other public, non-module, non-callable name is an unknown parameter (for example one
    injected by papermill for a name the schema does not have).
    """
    found: dict[str, Any] = {}
    for name, value in namespace.items():
        if name.startswith("_") or name in _IPYTHON_NAMES:
            continue
        if name in _RUNBOOK_NAMES and not isinstance(value, str | int | float | list):
            # The notebook's own objects (run, target, report...) on a re-run; a plain value under
            # one of these names (papermill -p target sandbox) is still reported as unknown.
            continue
        if isinstance(value, ModuleType | type) or callable(value):
            continue
        found[name] = value
    return validate_params(found)


# ================================================================ targets


def target_from_params(**params: Any) -> Target:
    """Validate ``params`` and build the :class:`~rtbook.target.Target` they describe."""
    from rtbook.target import Target

    p = validate_params(params)
    common: dict[str, Any] = {
        key: p[key] for key in ("api_url", "realtime_url", "realtime_host", "db_url", "tenant") if p[key]
    }
    if p["tables"]:
        common["tables"] = tuple(p["tables"])  # type: ignore[arg-type]
    common["timeout"] = float(p["timeout_s"])  # type: ignore[arg-type]
    docker = {"auto": None, "on": True, "off": False}[str(p["docker"])]
    if p["target_kind"] == "sandbox":
        if p["docker"] != "auto":
            common["docker"] = docker
        return Target.from_sandbox(**common)
    stack_dir = Path(str(p["stack_dir"])).expanduser()
    if not stack_dir.is_dir():
        raise ConfigError(
            f"stack_dir {str(stack_dir)!r} is not a directory; pass the folder holding docker-compose.yml"
        )
    return Target.from_stack_dir(stack_dir, name="stack", docker=docker, **common)


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

    def checks(self, *prefixes: str, title: str = "", skip_done: bool = False) -> StepReport:
        """Run the checks whose id starts with one of ``prefixes`` and record their results.

        With ``skip_done``, checks this notebook already ran are left out (a "everything else" step).
        """
        from rtbook.checks import select_checks
        from rtbook.results import run_one

        target = self.target
        results: list[CheckResult] = []
        for spec in select_checks(prefixes):
            if skip_done and spec.id in self._results:
                continue
            results.extend(run_one(spec, target))
        step = self.record(results)
        step.title = title or ", ".join(prefixes)
        if not len(step):
            self.notes.append(f"no check registered for {', '.join(prefixes)}")
        return step

    def seeding_plan(self) -> Any:
        """The tenant seeding plan for the target (``rtbook.tenants.plan``), or a note saying why there is none.

        Planning is a dry run; it may propose creating a missing tenant row, which only
        :meth:`apply_plan` with ``apply_fixes`` and ``confirm_apply`` would write.
        """
        from rtbook import tenants

        if not self.target.has("db"):
            return Note(f"No seeding plan: the target has no database ({self.target.why_missing('db')}).")
        try:
            return tenants.plan(self.target, create=True)
        except RtbookError as exc:
            return Note(f"No seeding plan: {self.target.redactor.text(str(exc))}")

    def apply_plan(self, plan: Any) -> Any:
        """Apply ``plan`` when ``apply_fixes`` and ``confirm_apply`` allow it, then re-run the tenant checks."""
        if isinstance(plan, Note):
            return plan
        if getattr(plan, "empty", False):
            return Note("Nothing to apply: the stored tenant rows already match the stack.")
        if not self.params.get("apply_fixes"):
            return Note("Not applied: apply_fixes is false (a dry run). Set apply_fixes and confirm_apply to write.")
        if not self.params.get("confirm_apply"):
            raise ConfirmationRequired("apply_fixes is true but confirm_apply is false; nothing was written")
        from rtbook import tenants

        outcome = tenants.apply(self.target, plan, yes=True)
        applied = [outcome] if isinstance(outcome, CheckResult) else [r for r in outcome if isinstance(r, CheckResult)]
        after = self.checks("tenant.", "db.", title="After applying the plan")
        step = self.record([*applied, *after])
        step.title = "Applied the plan; the tenant and database checks again"
        return step

    def troubleshoot(self) -> StepReport:
        """Explain the chosen symptom(s) from the results of the run's earlier notebooks."""
        from rtbook import troubleshoot

        symptom = str(self.params.get("symptom") or "")
        run_dir = str(self.params.get("run_dir") or "")
        earlier = load_results(run_dir, exclude=(self.notebook,)) if run_dir else None
        if earlier is None or not len(earlier):
            if self._target is None:
                return self.record(troubleshoot.diagnose(Report(), symptom))
            earlier = _run_deciding_checks(self.target, symptom)
        return self.record(troubleshoot.diagnose(earlier, symptom))

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
    from rtbook import troubleshoot
    from rtbook.checks import run_checks

    prefixes = troubleshoot.deciding_prefixes(symptom)
    return run_checks(target, only=prefixes)


def start(notebook: str, namespace: Mapping[str, Any], *, need_target: bool = True) -> NotebookRun:
    """Validate the notebook's parameters from ``namespace`` and build its target.

    The second cell of every notebook calls this. Without ``need_target`` (05 reading a record)
    a target that cannot be built is tolerated.
    """
    params = notebook_params(namespace)
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
    return Path(env) if env else Path(__file__).resolve().parent.parent / "notebooks"


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


@dataclass
class NotebookOutcome:
    """How one notebook of a run went."""

    name: str
    status: str  # passed | failed | error
    duration_s: float
    report: Report
    error: str = ""
    error_name: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for ``summary.json``."""
        return {
            "notebook": self.name,
            "status": self.status,
            "duration_s": round(self.duration_s, 3),
            "error_name": self.error_name,
            "error": self.error,
            "counts": self.report.counts(),
            "results": [r.to_dict() for r in self.report],
        }


@dataclass
class RunOutcome:
    """The result of ``rtbook run``: where the record is and how each notebook went."""

    record_dir: Path
    notebooks: list[NotebookOutcome] = field(default_factory=list)
    manifest_sha256: str = ""

    @property
    def exit_code(self) -> int:
        """0 when every notebook passed, 1 otherwise."""
        return 0 if self.notebooks and all(n.status == "passed" for n in self.notebooks) else 1


Progress = Callable[[str], None]


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _record_dir(output_dir: Path, label: str, started: dt.datetime) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", label).strip("-") or "run"
    base = output_dir / f"{started.strftime('%Y%m%dT%H%M%SZ')}-{safe}"
    path = base
    for i in range(2, 100):
        if not path.exists():
            break
        path = Path(f"{base}-{i}")
    return path


def run_notebooks(
    params: Mapping[str, Any],
    *,
    notebooks: str | Sequence[str] | None = None,
    output_dir: str | Path = "outputs",
    label: str = "",
    source_dir: str | Path | None = None,
    kernel_name: str = "python3",
    cell_timeout_s: float = 900,
    progress: Progress | None = None,
) -> RunOutcome:
    """Execute the selected notebooks with papermill and write the redacted audit record.

    Every notebook runs even when an earlier one failed, so the record is complete.

    Raises:
        ConfigError: for bad parameters or notebook names, before any notebook runs.
        InputError: when the stack in ``stack_dir`` cannot be read, before any notebook runs.
        DependencyError: when papermill or the kernel is missing.
    """
    say = progress or (lambda _msg: None)
    clean = validate_params({k: v for k, v in params.items() if k != "run_dir"})
    specs = select_notebooks(notebooks)
    src = Path(source_dir) if source_dir else notebook_dir()
    missing = [nb.name for nb in specs if not (src / f"{nb.name}.ipynb").is_file()]
    if missing:
        raise ConfigError(f"notebooks not found in {src}: {', '.join(missing)}; pass --notebook-dir")
    if clean["target_kind"] == "stack":
        # An unreadable stack is a usage error (exit 2, one line), as for 'rtbook check', not six failed notebooks.
        target_from_params(**clean)
    pm = _papermill()
    _require_kernel(kernel_name)
    redactor = _run_redactor(clean)
    started = _utc_now()
    record = _record_dir(Path(output_dir), label or str(clean["target_kind"]), started)
    outcome = RunOutcome(record_dir=record)
    staging = Path(tempfile.mkdtemp(prefix="rtbook-run-"))
    os.chmod(staging, 0o700)
    executed: dict[str, Any] = {}
    try:
        for i, spec in enumerate(specs, 1):
            say(f"[{i}/{len(specs)}] {spec.name}: {spec.title} ...")
            t0 = time.monotonic()
            run_params = {**clean, "run_dir": str(staging)}
            nb_out = staging / f"{spec.name}.ipynb"
            error_name = error = ""
            try:
                pm.execute_notebook(
                    str(src / f"{spec.name}.ipynb"),
                    str(nb_out),
                    parameters=run_params,
                    kernel_name=kernel_name,
                    progress_bar=False,
                    cwd=str(src),
                    execution_timeout=cell_timeout_s,
                )
            except pm.PapermillExecutionError as exc:
                error_name, error = str(exc.ename), str(exc.evalue)
            except Exception as exc:  # a dead kernel must not lose the rest of the record
                error_name, error = type(exc).__name__, str(exc)
            duration = time.monotonic() - t0
            results_file = staging / f"{spec.name}.results.json"
            report = load_one(results_file) if results_file.exists() else Report()
            if not error_name:
                status = "passed"
            elif error_name == ChecksFailedError.__name__:
                status = "failed"
            else:
                status = "error"
            outcome.notebooks.append(
                NotebookOutcome(spec.name, status, duration, report, redactor.text(error), error_name)
            )
            if nb_out.exists():
                executed[spec.name] = _read_notebook(nb_out)
            detail = f" ({error_name}: {redactor.text(error)[:200]})" if status == "error" else ""
            say(f"      {status.upper()} in {duration:.1f}s: {report.summary_line()}{detail}")
        ended = _utc_now()
        _write_record(record, outcome, executed, staging, src, clean, redactor, started, ended)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return outcome


def load_one(path: Path) -> Report:
    """Read one ``<notebook>.results.json``."""
    try:
        return Report.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"cannot read {path.name}: {exc}") from exc


def _papermill() -> Any:
    try:
        import papermill
    except ImportError as exc:
        raise DependencyError("papermill is not installed; run pip install papermill") from exc
    return papermill


def _require_kernel(name: str) -> None:
    try:
        from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    except ImportError as exc:
        raise DependencyError("jupyter_client is not installed; run pip install ipykernel") from exc
    try:
        KernelSpecManager().get_kernel_spec(name)
    except NoSuchKernel:
        raise DependencyError(
            f"no Jupyter kernel named {name!r}; install one with: python3 -m ipykernel install --sys-prefix"
        ) from None


def _run_redactor(params: Mapping[str, ParamValue]) -> Redactor:
    """Every secret the run could have seen: the environment's and the target stack's.

    Values are also registered HTML-escaped, because HTML outputs (result tables) escape a
    password holding ``&``, ``<`` or a quote, and the escaped form must not survive either.
    """
    redactor = Redactor()
    sources: list[Mapping[str, str]] = [os.environ]
    with contextlib.suppress(RtbookError, OSError, ImportError):
        target = target_from_params(**params)
        redactor.extend(target.redactor)
        if target.stack is not None:
            sources.append(target.stack.env)
            realtime = target.stack.realtime_service()
            if realtime is not None:
                sources.append(realtime.environment)
    for source in sources:
        redactor.add_env(source)
        for name, value in source.items():
            if isinstance(value, str) and value and (is_secret_name(name) or looks_secret(value)):
                for variant in (html.escape(value), html.escape(value, quote=False)):
                    if variant != value:
                        redactor.add(variant)
    return redactor


# ================================================================ redaction


def _path_replacements(staging: Path, source_dir: Path) -> list[tuple[str, str]]:
    home = str(Path.home())
    pairs = [(str(staging), "."), (str(source_dir.resolve()), "notebooks"), (str(source_dir), "notebooks")]
    with contextlib.suppress(OSError):
        pairs.append((str(staging.resolve()), "."))
    if home not in ("/", ""):
        pairs.append((home, "~"))
    # Longest first so the staging dir wins over a home dir that contains it.
    return sorted({p for p in pairs if p[0]}, key=lambda p: len(p[0]), reverse=True)


def _scrub_text(text: str, redactor: Redactor, paths: Sequence[tuple[str, str]]) -> str:
    for old, new in paths:
        text = text.replace(old, new)
    return redactor.text(text)


def _scrub(value: Any, redactor: Redactor, paths: Sequence[tuple[str, str]]) -> Any:
    if isinstance(value, str):
        return _scrub_text(value, redactor, paths)
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            skey = _scrub_text(str(key), redactor, paths)
            out[skey] = REDACTED if isinstance(item, str) and item and is_secret_name(str(key)) else _scrub(
                item, redactor, paths
            )
        return out
    if isinstance(value, list | tuple):
        return [_scrub(v, redactor, paths) for v in value]
    return value


def redact_notebook(
    nb: Mapping[str, Any],
    redactor: Redactor,
    *,
    paths: Sequence[tuple[str, str]] = (),
    parameters: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Return a copy of notebook JSON with secrets, tokens and local paths removed everywhere.

    Cell sources, outputs (streams, rich data, tracebacks), cell and notebook metadata are all
    scrubbed. ``metadata.papermill.parameters`` is replaced by ``parameters`` (the validated,
    non-secret set) and papermill's input/output paths are reduced to file names.
    """
    data: dict[str, Any] = json.loads(json.dumps(nb))
    meta = data.setdefault("metadata", {})
    pmeta = meta.get("papermill")
    if isinstance(pmeta, dict):
        if parameters is not None:
            pmeta["parameters"] = dict(parameters)
        for key in ("input_path", "output_path"):
            if pmeta.get(key):
                pmeta[key] = Path(str(pmeta[key])).name
        pmeta.pop("environment_variables", None)
    return dict(_scrub(data, redactor, paths))


def _read_notebook(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the executed notebook {path.name}: {exc}") from exc
    return dict(data)


# ================================================================ the record


def _write_record(
    record: Path,
    outcome: RunOutcome,
    executed: Mapping[str, Any],
    staging: Path,
    source_dir: Path,
    params: Mapping[str, ParamValue],
    redactor: Redactor,
    started: dt.datetime,
    ended: dt.datetime,
) -> None:
    paths = _path_replacements(staging, source_dir)
    safe_params = {**_scrub(dict(params), redactor, paths), "run_dir": "."}
    record.mkdir(parents=True, exist_ok=False)

    def write(name: str, text: str) -> None:
        (record / name).write_text(_scrub_text(text, redactor, paths))

    for name, nb in executed.items():
        clean = redact_notebook(nb, redactor, paths=paths, parameters=safe_params)
        write(f"{name}.ipynb", json.dumps(clean, indent=1, ensure_ascii=False) + "\n")
    for nb_outcome in outcome.notebooks:
        write(
            f"{nb_outcome.name}.results.json",
            json.dumps(_scrub(nb_outcome.to_dict(), redactor, paths), indent=2) + "\n",
        )
    overall = Report([r for n in outcome.notebooks for r in n.report])
    summary = {
        "rtbook_version": _version(),
        "started": started.isoformat(timespec="seconds"),
        "ended": ended.isoformat(timespec="seconds"),
        "exit_code": outcome.exit_code,
        "parameters": safe_params,
        "counts": overall.counts(),
        "notebooks": [n.to_dict() for n in outcome.notebooks],
    }
    write("summary.json", json.dumps(_scrub(summary, redactor, paths), indent=2) + "\n")
    write("summary.md", _summary_md(outcome, safe_params, started, ended))
    write("junit.xml", _junit(outcome))
    manifest = {
        "format": "rtbook-record/1",
        "rtbook_version": _version(),
        "git": _git_info(),
        "python": platform.python_version(),
        "packages": _package_versions(),
        "parameters": safe_params,
        "started": started.isoformat(timespec="seconds"),
        "ended": ended.isoformat(timespec="seconds"),
        "exit_code": outcome.exit_code,
        "target_fingerprint": _fingerprint(params),
    }
    outcome.manifest_sha256 = write_manifest(record, _scrub(manifest, redactor, paths))


def _summary_md(
    outcome: RunOutcome, params: Mapping[str, Any], started: dt.datetime, ended: dt.datetime
) -> str:
    overall = Report([r for n in outcome.notebooks for r in n.report])
    lines = [
        f"# rtbook run {outcome.record_dir.name}",
        "",
        f"- verdict: **{'PASSED' if outcome.exit_code == 0 else 'FAILED'}** ({overall.summary_line()})",
        f"- started {started.isoformat(timespec='seconds')}, ended {ended.isoformat(timespec='seconds')}",
        f"- target: {params.get('target_kind')}"
        + (f", tenant {params['tenant']}" if params.get("tenant") else ""),
        "",
        "| notebook | status | results | time |",
        "|---|---|---|---|",
    ]
    for n in outcome.notebooks:
        lines.append(f"| [{n.name}]({n.name}.ipynb) | {n.status} | {n.report.summary_line()} | {n.duration_s:.1f}s |")
    for n in outcome.notebooks:
        lines += ["", f"## {n.name}: {n.status}", ""]
        if n.error_name and n.status == "error":
            lines += [f"The notebook stopped with {n.error_name}: {n.error}", ""]
        if not len(n.report):
            lines.append("No check results were recorded.")
        for r in n.report:
            lines.append(f"- **{r.status.value.upper()}** `{r.id}`: {r.summary or r.title}")
            if r.status is not Status.PASS and r.remedy:
                lines.append(f"  - remedy: {r.remedy}".replace("\n", " "))
    return "\n".join(lines) + "\n"


def _junit(outcome: RunOutcome) -> str:
    root = ET.Element("testsuites", name="rtbook")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for n in outcome.notebooks:
        parsed = ET.fromstring(n.report.to_junit(suite=n.name).split("?>", 1)[-1])
        suite = parsed.find("testsuite")
        if suite is None:
            continue
        suite.set("name", n.name)
        if n.status == "error":
            case = ET.SubElement(suite, "testcase", classname="rtbook.runbook", name=f"{n.name}.execution")
            ET.SubElement(case, "error", message=f"{n.error_name}: {n.error}"[:500]).text = n.error
            suite.set("tests", str(int(suite.get("tests", "0")) + 1))
            suite.set("errors", str(int(suite.get("errors", "0")) + 1))
        for key in totals:
            totals[key] += int(suite.get(key, "0"))
        root.append(suite)
    for key, value in totals.items():
        root.set(key, str(value))
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _version() -> str:
    from rtbook import __version__

    return __version__


def _git_info() -> dict[str, Any]:
    repo = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=normal", "--", "rtbook", "notebooks"],
            capture_output=True, text=True, timeout=5, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    if commit.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


_PACKAGES = (
    "rtbook", "papermill", "nbformat", "nbclient", "ipykernel", "ipywidgets", "jupyterlab", "sqlalchemy",
    "psycopg", "websocket-client", "aiohttp", "docker", "pyyaml", "pyjwt", "cryptography",
)


def _package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fingerprint(params: Mapping[str, ParamValue]) -> dict[str, Any]:
    """Hashes that identify the target without revealing it: stack files and endpoint URLs."""
    stack_dir = str(params.get("stack_dir") or "")
    if params.get("target_kind") == "sandbox":
        with contextlib.suppress(OSError, ValueError, ImportError):
            from rtbook.target import sandbox_state_path

            stack_dir = str(json.loads(sandbox_state_path().read_text()).get("stack_dir") or "")
    files: dict[str, str] = {}
    if stack_dir and Path(stack_dir).is_dir():
        root = Path(stack_dir)
        for pattern in ("docker-compose*.yml", "docker-compose*.yaml", "compose*.yml", ".env", "volumes/api/*"):
            for path in sorted(root.glob(pattern)):
                if path.is_file():
                    files[path.relative_to(root).as_posix()] = _sha256_bytes(path.read_bytes())
    endpoints = {
        key: _sha256_bytes(str(params[key]).encode())
        for key in ("api_url", "realtime_url", "realtime_host", "db_url", "tenant")
        if params.get(key)
    }
    return {"kind": params.get("target_kind"), "stack_files_sha256": files, "endpoints_sha256": endpoints}


# ================================================================ manifest and verify

MANIFEST = "manifest.json"
_SELF_PLACEHOLDER = "0" * 64
_SELF_FIELD = re.compile(rb'"manifest_sha256": "([0-9a-f]{64})"')


def _file_hashes(record: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for path in sorted(record.rglob("*")):
        rel = path.relative_to(record).as_posix()
        if path.is_file() and rel != MANIFEST:
            out[rel] = _sha256_bytes(path.read_bytes())
    return out


def write_manifest(record: Path, fields: Mapping[str, Any]) -> str:
    """Write ``manifest.json`` with the sha256 of every file in ``record`` and of itself; return the latter.

    The manifest's own hash is computed over its exact bytes with the ``manifest_sha256`` value
    zeroed, so a change to any byte of the manifest (a time, a parameter) is detected too.
    """
    body = {**fields, "files": _file_hashes(record), "manifest_sha256": _SELF_PLACEHOLDER}
    text = json.dumps(body, indent=2) + "\n"
    digest = _sha256_bytes(text.encode())
    (record / MANIFEST).write_text(text.replace(f'"manifest_sha256": "{_SELF_PLACEHOLDER}"',
                                                f'"manifest_sha256": "{digest}"'))
    return digest


@dataclass
class VerifyResult:
    """What ``verify`` found in a record."""

    record: Path
    altered: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    manifest_ok: bool = True
    manifest_sha256: str = ""

    @property
    def intact(self) -> bool:
        """True when every file matches the manifest and the manifest matches itself."""
        return self.manifest_ok and not (self.altered or self.missing or self.extra)

    def __str__(self) -> str:
        if self.intact:
            return f"{self.record}: intact (manifest sha256 {self.manifest_sha256})"
        lines = [f"{self.record}: ALTERED"]
        if not self.manifest_ok:
            lines.append(f"  manifest.json: its content does not match its own hash ({self.manifest_sha256 or 'none'})")
        lines += [f"  altered: {p}" for p in self.altered]
        lines += [f"  missing: {p}" for p in self.missing]
        lines += [f"  extra:   {p}" for p in self.extra]
        return "\n".join(lines)


def verify(record: str | Path) -> VerifyResult:
    """Re-hash every file of an audit record and compare with its manifest.

    Raises:
        InputError: when the folder or its manifest cannot be read at all.
    """
    folder = Path(record)
    path = folder / MANIFEST
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{folder} holds no readable {MANIFEST}: {exc.strerror}; is it an rtbook run folder?") from exc
    result = VerifyResult(folder)
    match = _SELF_FIELD.search(raw)
    if match is None:
        result.manifest_ok = False
    else:
        result.manifest_sha256 = match.group(1).decode()
        zeroed = raw[: match.start(1)] + _SELF_PLACEHOLDER.encode() + raw[match.end(1) :]
        result.manifest_ok = _sha256_bytes(zeroed) == result.manifest_sha256
    text = raw.decode("utf-8", errors="replace")
    try:
        listed = json.loads(text).get("files", {})
    except ValueError:
        listed = {}
        result.manifest_ok = False
    if not isinstance(listed, dict):
        listed, result.manifest_ok = {}, False
    actual = _file_hashes(folder)
    for name, digest in sorted(listed.items()):
        if name not in actual:
            result.missing.append(name)
        elif actual[name] != digest:
            result.altered.append(name)
    result.extra = sorted(set(actual) - set(listed))
    return result


# ================================================================ sandbox


@contextlib.contextmanager
def _sandbox_running(say: Progress, breaks: Sequence[str] = (), timeout_s: float = 60) -> Iterator[None]:
    """Start the embedded sandbox (with ``breaks``) for the run and stop it afterwards.

    A sandbox that is already running is reused as it is (and left running) when no break
    scenario was asked for.
    """
    from rtbook.sandbox import manager

    current = manager.status()
    if current.get("running"):
        if breaks or current.get("breaks"):
            raise ConfigError(
                f"a sandbox is already running (breaks: {current.get('breaks') or 'none'}); stop it with "
                "'rtbook sandbox down', or pass --no-sandbox-start to run against it as it is"
            )
        say("sandbox: reusing the sandbox that is already running (left running afterwards)")
        yield
        return
    say("sandbox: starting" + (f" with break scenario(s) {', '.join(breaks)}" if breaks else "") + " ...")
    t0 = time.monotonic()
    manager.up(breaks=list(breaks), timeout=timeout_s)
    say(f"sandbox: up in {time.monotonic() - t0:.1f}s")
    try:
        yield
    finally:
        say("sandbox: stopping ...")
        manager.down()


# ================================================================ CLI


def add_cli(subparsers: Any) -> None:
    """Add ``rtbook run`` and ``rtbook verify`` to the ``rtbook`` command."""
    p = subparsers.add_parser(
        "run",
        help="run the runbook's notebooks with papermill and write an audit record",
        description="Execute the notebooks in order against a target and write outputs/<UTC time>-<target>/. "
        "Exit 0 when every check passed, 1 when a check failed, 2 for usage errors.",
    )
    g = p.add_argument_group("target")
    g.add_argument("--target", choices=["sandbox"], help="start the embedded sandbox, run against it, stop it")
    g.add_argument("--stack", metavar="DIR", help="a stack directory laid out like supabase/docker")
    g.add_argument("--api-url", help="public gateway URL, e.g. http://localhost:8000")
    g.add_argument("--realtime-url", help="Realtime reached directly, e.g. http://127.0.0.1:4000")
    g.add_argument("--realtime-host", help="Host header for direct Realtime requests")
    g.add_argument("--db-url", help="database URL without password (password from POSTGRES_PASSWORD)")
    g.add_argument("--tenant", help="tenant id")
    g.add_argument("--no-sandbox-start", action="store_true",
                   help="with --target sandbox: use the sandbox already running instead of starting one")
    g.add_argument("--break", dest="breaks", action="append", default=[], metavar="SCENARIO",
                   help="with --target sandbox: start it with this break scenario (repeatable; "
                   "see 'rtbook sandbox scenarios')")
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                   help="set a notebook parameter (repeatable); see 'rtbook run --list-params'")
    p.add_argument("--params-file", metavar="FILE", help="parameters as JSON/YAML (e.g. written by 00_start_here)")
    p.add_argument("--notebooks", metavar="LIST", help="comma-separated numbers or names, e.g. 01,03")
    p.add_argument("--output-dir", default="outputs", metavar="DIR", help="where run folders go (default: outputs)")
    p.add_argument("--label", help="name suffix of the run folder (default: the target kind)")
    p.add_argument("--notebook-dir", metavar="DIR", help="where the notebooks are (default: the repository's)")
    p.add_argument("--kernel", default="python3", help="Jupyter kernel name (default: python3)")
    p.add_argument("--cell-timeout", type=float, default=900.0, metavar="S", help="seconds allowed per cell")
    p.add_argument("--list-params", action="store_true", help="print the parameter schema and exit")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    p.add_argument("-v", "--verbose", action="store_true", help="also show the kernels' own stderr (warnings)")
    p.set_defaults(func=_cmd_run)

    v = subparsers.add_parser("verify", help="check that an audit record was not altered since it was written")
    v.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by 'rtbook run'")
    v.set_defaults(func=_cmd_verify)


def params_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Merge ``--params-file``, the target flags and ``-p`` (in that order of precedence, lowest first)."""
    values: dict[str, Any] = {}
    if args.params_file:
        values.update(load_params_file(args.params_file))
    if args.target and args.stack:
        raise ConfigError("pass either --target sandbox or --stack DIR, not both")
    if args.target:
        values["target_kind"] = "sandbox"
    if args.stack:
        values["target_kind"] = "stack"
        values["stack_dir"] = str(Path(args.stack).resolve())
    for flag in ("api_url", "realtime_url", "realtime_host", "db_url", "tenant"):
        if getattr(args, flag, None):
            values[flag] = getattr(args, flag)
    for item in args.param:
        name, value = parse_assignment(item)
        values[name] = value
    if "run_dir" in values:
        raise ConfigError("run_dir is set by 'rtbook run' itself; use --output-dir to choose where records go")
    if not (args.target or args.stack or args.params_file or any(a.startswith("target_kind=") for a in args.param)):
        raise ConfigError("nothing to run against: pass --target sandbox, or --stack DIR with --api-url/--db-url")
    return values


def _cmd_run(args: argparse.Namespace) -> int:
    if args.list_params:
        for param in PARAMS:
            allowed = " (" + "|".join(c or '""' for c in param.choices) + ")" if param.choices else ""
            sys.stdout.write(f"{param.name}: {param.type_name} = {param.default!r}{allowed}\n    {param.help}\n")
        return 0
    values = params_from_args(args)
    params = validate_params(values)
    progress: list[TextIO] = [sys.stderr]

    def say(msg: str) -> None:
        if not args.quiet:
            progress[0].write(msg + "\n")
            progress[0].flush()

    def execute() -> RunOutcome:
        return run_notebooks(
            params,
            notebooks=args.notebooks,
            output_dir=args.output_dir,
            label=args.label or "",
            source_dir=args.notebook_dir,
            kernel_name=args.kernel,
            cell_timeout_s=args.cell_timeout,
            progress=say,
        )

    select_notebooks(args.notebooks)  # a bad --notebooks is a usage error before the sandbox starts
    if args.breaks and (params["target_kind"] != "sandbox" or args.no_sandbox_start):
        raise ConfigError("--break needs --target sandbox (rtbook starts the sandbox with the scenario)")
    with contextlib.ExitStack() as stack:
        if not args.verbose:
            progress[0] = stack.enter_context(_kernel_stderr_hidden())
        if params["target_kind"] == "sandbox" and not args.no_sandbox_start:
            stack.enter_context(_sandbox_running(say, args.breaks))
        outcome = execute()
    overall = Report([r for n in outcome.notebooks for r in n.report])
    verdict = "PASSED" if outcome.exit_code == 0 else "FAILED"
    failed = [n.name for n in outcome.notebooks if n.status != "passed"]
    sys.stdout.write(
        f"{verdict}: {overall.summary_line()}"
        + (f"; notebooks not passing: {', '.join(failed)}" if failed else "")
        + f"\nrecord: {outcome.record_dir}\nmanifest sha256: {outcome.manifest_sha256}\n"
    )
    return outcome.exit_code


@contextlib.contextmanager
def _kernel_stderr_hidden() -> Iterator[TextIO]:
    """Send file descriptor 2 (inherited by the kernels) to a discarded file; yield the real stderr.

    Kernels print transport warnings and "KeyboardInterrupt caught" lines on shutdown that say
    nothing about the stack; the executed notebooks hold everything that matters.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    fd, path = tempfile.mkstemp(prefix="rtbook-kernels-", suffix=".log")
    real = os.fdopen(os.dup(saved), "w")
    os.dup2(fd, 2)
    try:
        yield real
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(fd)
        real.close()
        os.unlink(path)


def _cmd_verify(args: argparse.Namespace) -> int:
    result = verify(args.run_dir)
    sys.stdout.write(str(result) + "\n")
    return 0 if result.intact else 1
