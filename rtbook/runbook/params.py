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

import difflib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from rtbook.exceptions import (
    ConfigError,
    InputError,
)
from rtbook.secrets import REDACTED, Redactor, is_secret_name, looks_secret

if TYPE_CHECKING:
    from rtbook.target import Target

__all__ = [
    "PARAMS",
    "Param",
    "default_params",
    "load_params_file",
    "notebook_params",
    "parameters_cell_source",
    "parse_assignment",
    "target_from_params",
    "validate_params",
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
    if p.suffix in (".yml", ".yaml"):
        from rtbook.config.yamlfile import load_yaml

        data = load_yaml(text, p)
    else:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise InputError(f"{p} is not valid JSON: {exc}") from exc
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
