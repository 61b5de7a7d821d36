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

import dataclasses
import difflib
import json
import os
import re
from collections.abc import Iterable, Mapping
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
    "RunParams",
    "check_value",
    "default_params",
    "load_params_file",
    "notebook_params",
    "parameters_cell_source",
    "parse_assignment",
    "saved_params",
    "saved_params_path",
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
        bounds: for a number, ``(low, high)`` with ``low < value <= high``; a value outside is
            refused with the range, never clamped.
    """

    name: str
    type: type
    default: ParamValue
    help: str
    choices: tuple[str, ...] = ()
    required_for: tuple[str, ...] = ()
    bounds: tuple[float, float] | None = None

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
    Param("timeout_s", float, 10.0, "seconds allowed for each network operation", bounds=(0.0, 3600.0)),
    Param("apply_fixes", bool, False, "02 applies the tenant seeding plan (writes to the database)"),
    Param("confirm_apply", bool, False, "second switch that headless runs need before apply_fixes writes anything"),
    Param("strict", bool, False, "the gate cell also fails on warnings"),
    Param("symptom", str, "", "05 only: the symptom to explain; empty means every known symptom", choices=SYMPTOMS),
    Param("run_dir", str, "", "folder where each notebook saves its results (set by rtbook run); 05 reads it"),
    Param("load_scenario", str, "broadcast", "07 only: connect, broadcast, presence or postgres_changes (probe table)",
          choices=("connect", "broadcast", "presence", "postgres_changes")),
    Param("load_rate", float, 20.0, "07 only: messages per second in all (connect: joins per second)",
          bounds=(0.0, 200000.0)),
    Param("load_duration_s", float, 3.0, "07 only: seconds of sending (connect: of holding the sockets)",
          bounds=(0.0, 3600.0)),
    Param("load_sockets", float, 4.0, "07 only: receivers per topic (connect: sockets to hold)",
          bounds=(0.0, 20000.0)),
    Param("load_thresholds", list, ["lost<1"],
          "07 only: e.g. broadcast.p99<50ms or lost<1; a violated one fails the gate"),
    Param("load_own_target", bool, False, "07 only: allow loading a target that is not 127.0.0.1 or the sandbox"),
)

_BY_NAME = {p.name: p for p in PARAMS}

# Names a notebook defines itself after the parameters cell; they are not parameters.
_RUNBOOK_NAMES = frozenset({"run", "target", "params", "report", "plan", "form", "diagnosis", "rtbook"})
_IPYTHON_NAMES = frozenset({"In", "Out", "exit", "quit", "get_ipython", "open"})
_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*\.[A-Za-z_][A-Za-z0-9_$]*$")
_DB_SCHEME = re.compile(r"^postgres(?:ql)?(?:\+[A-Za-z0-9_]+)?://")
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
        "(see 'rtbook run --list-params' or the notebook 00_start_here)"
    )


def _env_secret_values() -> frozenset[str]:
    """Values of the environment's secret-looking variables (long enough to be matched safely)."""
    return frozenset(
        value
        for name, value in os.environ.items()
        if len(value) >= 8 and (is_secret_name(name) or looks_secret(value))
    )


def _check_name(name: str) -> Param:
    """The schema entry for ``name``; ConfigError for an unknown or secret-looking name."""
    if name not in _BY_NAME:
        if is_secret_name(name):
            raise _secret_name_error(name)
        raise _unknown_error(name)
    return _BY_NAME[name]


def _check_value(param: Param, value: Any, env_secrets: frozenset[str], label: str = "") -> ParamValue:
    name = param.name
    label = label or f"parameter {name!r}"
    if param.type is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{label} must be true or false, got {value!r} ({type(value).__name__})")
        return value
    if param.type is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{label} must be a number, got {value!r} ({type(value).__name__})")
        if param.bounds is not None:
            low, high = param.bounds
            if not low < float(value) <= high:
                raise ConfigError(
                    f"{label} must be between {low:g} and {high:g} seconds ({low:g} < t <= {high:g}), got {value!r}"
                )
        return float(value)
    items: list[str]
    if param.type is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{label} must be a list of strings, e.g. [\"public.messages\"], got {value!r}")
        items = [v.strip() for v in value if v.strip()]
    else:
        if not isinstance(value, str):
            raise ConfigError(f"{label} must be a string, got {value!r} ({type(value).__name__})")
        items = [value]
    for item in items:
        if name == "db_url" and item:
            netloc = item.split("://", 1)[-1].split("/", 1)[0]
            if "@" in netloc and ":" in netloc.rsplit("@", 1)[0]:
                raise ConfigError(
                    f"{label} must not contain a password (it would be copied into the record); "
                    "remove it from the URL and set POSTGRES_PASSWORD in the environment or the stack's .env"
                )
        if looks_secret(item) or Redactor().text(item) != item:
            raise ConfigError(
                f"{label} holds a value that looks like a token, key or password ({REDACTED}); "
                "secrets are never parameters: put it in the environment or the stack's .env instead"
            )
        if any(secret in item for secret in env_secrets):
            raise ConfigError(
                f"{label} holds the value of a secret found in the environment ({REDACTED}); "
                "secrets are never parameters, remove it"
            )
    if param.type is list and name == "load_thresholds":
        from rtbook.load.thresholds import parse_threshold

        for item in items:
            parse_threshold(item)  # refused here with the accepted forms, before any run
        return items
    if param.type is list:
        for item in items:
            if not _TABLE.match(item):
                raise ConfigError(f"{label}: {item!r} is not schema.table, e.g. public.messages")
        return items
    text = items[0]
    if param.choices and text not in param.choices:
        allowed = ", ".join(repr(c) for c in param.choices)
        raise ConfigError(f"{label} must be one of {allowed}, got {text!r}")
    if name in ("api_url", "realtime_url") and text and not text.startswith(("http://", "https://")):
        raise ConfigError(f"{label} must start with http:// or https://, got {text!r}; e.g. http://localhost:8000")
    if name == "db_url" and text and not _DB_SCHEME.match(text):
        raise ConfigError(
            f"{label} must be a PostgreSQL URL, got {text!r}; e.g. postgresql://supabase_admin@localhost:5432/postgres"
        )
    if text and name in _ADDRESS_EXAMPLES:
        problem = _address_problem(name, text)
        if problem:
            raise ConfigError(f"{label} {text!r} {problem}; e.g. {_ADDRESS_EXAMPLES[name]}")
    return text


# Values that end up in a URL, a Host header or a connection string (the exit-code contract: a
# malformed one is a usage error up front, not a page of failed checks).
_ADDRESS_EXAMPLES = {
    "api_url": "http://localhost:8000",
    "realtime_url": "http://127.0.0.1:4000",
    "db_url": "postgresql://supabase_admin@localhost:5432/postgres",
    "realtime_host": "realtime-dev.supabase-realtime:4000",
    "tenant": "realtime-dev",
}


def _address_problem(name: str, text: str) -> str:
    """Why ``text`` cannot be the address ``name`` ("" when it can)."""
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in text):
        return "contains a space or a control character"
    if name == "tenant":
        return ""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(text if name != "realtime_host" else f"//{text}")
        port = parts.port  # ValueError: not a number, or outside 0-65535
    except ValueError as exc:
        return f"is not a valid {'host' if name == 'realtime_host' else 'URL'} ({exc})"
    if port == 0:
        return "has port 0; give the port the service listens on (1-65535)"
    # A database URL without a host is libpq's local socket; every other address needs a host.
    if not parts.hostname and name != "db_url":
        return "has no host name"
    return ""


def check_value(name: str, value: Any, *, label: str = "") -> ParamValue:
    """Check one value against the schema entry ``name`` and return it typed.

    The CLI uses this for its flags that carry a parameter (``--api-url``, ``--timeout``...),
    so a flag and the parameter refuse the same values with the same reason.

    Args:
        name: a parameter name from :data:`PARAMS`.
        value: the value, already of the parameter's type (a list for ``tables``).
        label: how the message names the value (default ``parameter 'name'``), e.g. ``--api-url``.

    Raises:
        ConfigError: naming the value and the fix.
    """
    return _check_value(_check_name(name), value, _env_secret_values(), label)


@dataclass(frozen=True)
class RunParams:
    """The runbook's parameters as one typed, validated value: a field per entry of :data:`PARAMS`.

    Every way of setting parameters builds one of these (``rtbook run -p`` and ``--params-file``,
    the guided form, a notebook's ``parameters`` cell), so all of them accept and refuse the same
    values with the same messages. Construction validates: a wrong type, a value outside the
    allowed ones or range (refused with the range, never clamped), a secret-looking value or a
    broken cross-field rule raises :class:`~rtbook.exceptions.ConfigError`.
    """

    target_kind: str = "sandbox"
    stack_dir: str = ""
    api_url: str = ""
    realtime_url: str = ""
    realtime_host: str = ""
    db_url: str = ""
    tenant: str = ""
    tables: tuple[str, ...] = ()
    docker: str = "auto"
    timeout_s: float = 10.0
    apply_fixes: bool = False
    confirm_apply: bool = False
    strict: bool = False
    symptom: str = ""
    run_dir: str = ""
    load_scenario: str = "broadcast"
    load_rate: float = 20.0
    load_duration_s: float = 3.0
    load_sockets: float = 4.0
    load_thresholds: tuple[str, ...] = ("lost<1",)
    load_own_target: bool = False

    def __post_init__(self) -> None:
        env_secrets = _env_secret_values()
        for field in dataclasses.fields(self):
            value = _check_value(_BY_NAME[field.name], getattr(self, field.name), env_secrets)
            object.__setattr__(self, field.name, tuple(value) if isinstance(value, list) else value)
        for param in PARAMS:
            if self.target_kind in param.required_for and not getattr(self, param.name):
                raise ConfigError(
                    f"parameter {param.name!r} is required when target_kind is {self.target_kind!r}: {param.help}"
                )
        if self.apply_fixes and not self.confirm_apply:
            raise ConfigError(
                "apply_fixes is true but confirm_apply is false: writing to the database needs both "
                "(pass -p confirm_apply=true, or press the confirm button in 00_start_here)"
            )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> RunParams:
        """Build from ``{name: value}`` (a params file, the form, a notebook's names); unset names keep defaults.

        Raises:
            ConfigError: for an unknown or secret-looking name, or any value :class:`RunParams` refuses.
        """
        for name in values:
            _check_name(name)
        return cls(**values)

    @classmethod
    def from_assignments(cls, assignments: Iterable[str], base: Mapping[str, Any] | None = None) -> RunParams:
        """Build from ``name=value`` texts (``rtbook run -p``) applied over ``base``."""
        values = dict(base or {})
        for text in assignments:
            name, value = parse_assignment(text)
            values[name] = value
        return cls.from_mapping(values)

    def as_dict(self) -> dict[str, ParamValue]:
        """Every parameter as a plain value, in schema order (``tables`` as a list), for papermill and JSON."""
        return {p.name: (list(v) if isinstance(v := getattr(self, p.name), tuple) else v) for p in PARAMS}

    def replace(self, **changes: Any) -> RunParams:
        """A copy with ``changes`` applied (and validated again)."""
        return dataclasses.replace(self, **changes)

    def target(self) -> Target:
        """The :class:`~rtbook.target.Target` these parameters describe.

        Raises:
            ConfigError: when ``stack_dir`` is not a directory.
            InputError: when the stack's files cannot be read.
        """
        from rtbook.target import Target

        common: dict[str, Any] = {
            key: getattr(self, key)
            for key in ("api_url", "realtime_url", "realtime_host", "db_url", "tenant")
            if getattr(self, key)
        }
        if self.tables:
            common["tables"] = self.tables
        common["timeout"] = self.timeout_s
        docker = {"auto": None, "on": True, "off": False}[self.docker]
        if self.target_kind == "sandbox":
            if self.docker != "auto":
                common["docker"] = docker
            return Target.from_sandbox(**common)
        stack_dir = Path(self.stack_dir).expanduser()
        if not stack_dir.is_dir():
            raise ConfigError(
                f"stack_dir {str(stack_dir)!r} is not a directory; pass the folder holding docker-compose.yml"
            )
        target = Target.from_stack_dir(stack_dir, name="stack", docker=docker, **common)
        if target.stack is not None:
            target.stack.check_gateway_files()  # a FIFO or huge kong.yml: refused before anything runs
        return target


def validate_params(values: Mapping[str, Any], *, fill_defaults: bool = True) -> dict[str, ParamValue]:
    """Check ``values`` against :data:`PARAMS` and return the complete, typed parameter set.

    This is ``RunParams.from_mapping(values).as_dict()``; with ``fill_defaults=False`` only the
    given names are checked and returned (no defaults, no cross-field rules).

    Raises:
        ConfigError: naming the parameter, the value and the fix, for an unknown name, a
            secret-looking name or value, a wrong type, a value outside the allowed ones, or a
            missing required value.
    """
    if fill_defaults:
        return RunParams.from_mapping(values).as_dict()
    env_secrets = _env_secret_values()
    return {name: _check_value(_check_name(name), value, env_secrets) for name, value in values.items()}


def parse_assignment(text: str) -> tuple[str, ParamValue]:
    """Parse one ``name=value`` from the command line into a typed value for that parameter."""
    if "=" not in text:
        raise ConfigError(f"-p expects name=value, got {text!r}; e.g. -p tenant=realtime-dev")
    name, raw = (part.strip() for part in text.split("=", 1))
    param = _check_name(name)
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
    from rtbook.bounded import read_text
    from rtbook.exceptions import InputFileError

    p = Path(path)
    try:
        text = read_text(p, "parameters file")  # bounded: regular file, 256 KiB, never blocks
    except InputFileError as exc:
        raise InputError(f"cannot read the parameters file: {exc}") from None
    if p.suffix in (".yml", ".yaml"):
        from rtbook.config.yamlfile import load_yaml

        data = load_yaml(text, p)
    else:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise InputError(f"{p} is not valid JSON: {exc}") from exc
        except RecursionError:
            raise InputError(f"{p} nests too deeply to be a parameters file") from None
    if not isinstance(data, dict):
        raise InputError(f"{p} must hold a mapping of parameter names to values, got {type(data).__name__}")
    return dict(data)


def parameters_cell_source() -> str:
    """The source of every notebook's ``parameters`` cell, generated from :data:`PARAMS`."""
    lines = [
        "# Parameters. Values saved by the form in 00_start_here (outputs/params.json beside this notebook) are used",
        "# when that file exists, for every name left at its default below; a value changed here, papermill's and",
        "# 'rtbook run -p name=value' override them (rtbook run reads only --params-file). Never put a secret here.",
    ]
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
    """Validate ``params`` and build the :class:`~rtbook.target.Target` they describe (see :meth:`RunParams.target`)."""
    return RunParams.from_mapping(params).target()


# ================================================================ parameters saved by the form


SAVED_PARAMS_ENV = "RTBOOK_PARAMS_FILE"
# Never saved, never read from the saved file: the runner sets run_dir, and the apply confirmation
# must be given where the write happens (the form's button, the notebook's cell, -p), not remembered.
NOT_SAVED = frozenset({"run_dir", "confirm_apply"})


def saved_params_path() -> Path:
    """Where the form saves the parameters: ``$RTBOOK_PARAMS_FILE``, else ``outputs/params.json`` in the working folder.

    The kernel's working folder is the notebook's (in JupyterLab, the copy made by ``rtbook notebooks
    copy DIR``), so the file sits beside the copies, where ``rtbook run --params-file`` finds it too.
    """
    return Path(os.environ.get(SAVED_PARAMS_ENV) or Path.cwd() / "outputs" / "params.json")


def saved_params(path: str | Path | None = None) -> dict[str, ParamValue] | None:
    """The parameters the form saved (validated, without ``run_dir`` and ``confirm_apply``), or None if none were.

    Raises:
        ConfigError: when the file holds a name or value the schema refuses, naming the file and the fix.
        InputError: when the file cannot be read or is not a mapping.
    """
    file = Path(path) if path else saved_params_path()
    if not file.is_file():
        return None
    values = {k: v for k, v in load_params_file(file).items() if k not in NOT_SAVED}
    try:
        return validate_params(values, fill_defaults=False)
    except ConfigError as exc:
        raise ConfigError(f"{file}: {exc}; correct it with the form in 00_start_here or delete the file") from None
