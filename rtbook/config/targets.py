"""The targets file (``rtbook check|run --targets FILE``): several stacks, regions or tenants, checked at the boundary.

A YAML file, read through :func:`rtbook.bounded.read_text` (kind ``"targets file"``, 64 KiB) and
turned into :class:`TargetsFile` here, so nothing downstream sees a raw mapping::

    parallel: 2                     # check: targets checked at once (1-8, default 2)
    targets:
      - name: east                  # 1-40 letters, digits, '-' or '_' (a folder name in records)
        region: us-east-1           # a label for the summary
        sandbox: east               # a named sandbox ('rtbook sandbox up --name east'), or:
      - name: west
        region: eu-west-1
        stack: ../west              # the stack directory, relative to this file
        api_url: https://west.example.com
        db_url: postgresql://postgres@db.west.example.com:5432/postgres   # never a password
        tenants: [realtime-dev, realtime-eu]   # or tenant: realtime-dev
        env:                        # rtbook's variable -> the variable of YOUR environment that holds it
          ANON_KEY: WEST_ANON_KEY
          POSTGRES_PASSWORD: WEST_PG_PASSWORD

Every key is checked (an unknown one is refused with the closest known key), and so is every value:
secrets are never in the file, only the NAMES of the variables that hold them; a value that looks
like a token or key, a database URL with a password, or a value equal to a secret found in the
environment is refused without being echoed. Every refusal is one line naming the file, the target
and the key, with the fix (exit 2).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rtbook.exceptions import ConfigError
from rtbook.secrets import REDACTED, Redactor, is_secret_name, looks_secret

__all__ = ["MAX_PARALLEL", "MAX_TARGETS", "SECRET_VARIABLES", "TargetSpec", "TargetsFile", "load_targets"]

KIND = "targets file"
# A few dozen regions or tenants is already a large fleet; a run over more is a loop in a script.
MAX_TARGETS = 32
# Two cores are common on the machines this runs on: more threads would only queue on them.
MAX_PARALLEL = 8
DEFAULT_PARALLEL = 2
_MAX_TEXT = 512  # a URL, a path or a label longer than this is not one

# The variables rtbook reads as secrets (rtbook.target keeps the same set, and a unit test keeps
# them equal; this room may not import rtbook.target). An ``env:`` key outside it would be a typo
# that silently leaves the real secret unset.
SECRET_VARIABLES = frozenset({
    "ANON_KEY", "SERVICE_ROLE_KEY", "JWT_SECRET", "API_JWT_SECRET", "POSTGRES_PASSWORD", "DB_PASSWORD",
    "DB_ENC_KEY", "SECRET_KEY_BASE", "METRICS_JWT_SECRET", "DASHBOARD_PASSWORD", "SUPABASE_SECRET_KEY",
    "SUPABASE_PUBLISHABLE_KEY", "VAULT_ENC_KEY", "PG_META_CRYPTO_KEY",
})

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}")
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}(:\d{1,5})?")
_TOP_KEYS = ("targets", "parallel")
_TARGET_KEYS = ("name", "region", "sandbox", "stack", "api_url", "realtime_url", "realtime_host", "db_url",
                "tenant", "tenants", "env")
_ENDPOINTS = ("stack", "api_url", "realtime_url", "realtime_host", "db_url")


@dataclass(frozen=True)
class TargetSpec:
    """One target of the file: a named sandbox, or a stack directory and/or URLs.

    Attributes:
        name: unique in the file; labels the target's report, record folder and matrix row.
        region: a free label (``us-east-1``) shown in the summary; empty when not given.
        sandbox: the name of a running sandbox instance, or None.
        stack: the stack directory (absolute, resolved against the file's folder), or None.
        tenants: the tenants to check, in order (empty: what the stack implies).
        env: (rtbook's variable, the environment variable holding its value) pairs.
    """

    name: str
    region: str = ""
    sandbox: str | None = None
    stack: Path | None = None
    api_url: str | None = None
    realtime_url: str | None = None
    realtime_host: str | None = None
    db_url: str | None = None
    tenants: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()

    def resolve_env(self, environ: Mapping[str, str] | None = None) -> dict[str, str]:
        """The secrets this target names, read from ``environ`` (default: the process environment).

        Raises:
            ConfigError: a named variable is not set (one line naming the target and the variable).
        """
        source = os.environ if environ is None else environ
        values: dict[str, str] = {}
        for key, variable in self.env:
            value = source.get(variable, "")
            if not value:
                raise ConfigError(f"target {self.name!r}: env {key} names the variable {variable}, which is not "
                                  f"set; export {variable} before running, or remove {key} from its env")
            values[key] = value
        return values


@dataclass(frozen=True)
class TargetsFile:
    """The parsed targets file: its targets in file order and how many ``check`` runs at once."""

    path: Path
    targets: tuple[TargetSpec, ...]
    parallel: int = DEFAULT_PARALLEL


def load_targets(path: str | Path) -> TargetsFile:
    """Read and check a targets file.

    Raises:
        InputFileError: the file is missing, not a regular file, larger than 64 KiB or not UTF-8.
        InputError: not YAML (line and column), or a hostile document (alias bomb, nesting).
        ConfigError: a key or value is wrong; the message names it and the fix.
    """
    from rtbook.bounded import read_text
    from rtbook.config.yamlfile import load_yaml

    p = Path(path)
    return parse_targets(load_yaml(read_text(p, KIND), p), p)


def parse_targets(data: object, path: Path, environ: Mapping[str, str] | None = None) -> TargetsFile:
    """Turn the loaded YAML ``data`` of the file ``path`` into a :class:`TargetsFile` (see :func:`load_targets`)."""
    env_secrets = _env_secret_values(os.environ if environ is None else environ)
    where = str(path)
    # Every string (keys too) is checked for secrets first, so no later message can echo one.
    _scan(data, where, "", env_secrets)
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: a targets file is a mapping with 'targets:', a list of targets, "
                          f"got {_type(data)}; see README 'Many targets'")
    _known_keys(data, _TOP_KEYS, where)
    parallel = data.get("parallel", DEFAULT_PARALLEL)
    if isinstance(parallel, bool) or not isinstance(parallel, int) or not 1 <= parallel <= MAX_PARALLEL:
        raise ConfigError(f"{where}: parallel is {_show(parallel)}; give a whole number from 1 to {MAX_PARALLEL}")
    raw = data.get("targets")
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}: 'targets:' must be a non-empty list of targets, got {_type(raw)}; "
                          "see README 'Many targets'")
    if len(raw) > MAX_TARGETS:
        raise ConfigError(f"{where}: {len(raw)} targets, over the limit of {MAX_TARGETS}; split the file")
    specs: list[TargetSpec] = []
    for i, item in enumerate(raw, 1):
        spec = _target(item, f"{where}: target {i}", path.parent)
        if any(s.name == spec.name for s in specs):
            raise ConfigError(f"{where}: target {i}: name {spec.name!r} is used twice; give each target its own name")
        specs.append(spec)
    return TargetsFile(path=path, targets=tuple(specs), parallel=parallel)


def _target(item: object, where: str, base: Path) -> TargetSpec:
    if not isinstance(item, dict):
        raise ConfigError(f"{where}: a target is a mapping (name:, sandbox: or stack:/api_url:...), got {_type(item)}")
    name = item.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"{where}: name is {_show(name)}; give 1-40 letters, digits, '-' or '_' "
                          "(it names the target's record folder)")
    where = f"{where} ({name!r})"
    _known_keys(item, _TARGET_KEYS, where)
    text = {k: _text(item, k, where) for k in ("region", "sandbox", "stack", "api_url", "realtime_url",
                                               "realtime_host", "db_url")}
    sandbox = text["sandbox"]
    if sandbox is not None:
        if not _NAME.fullmatch(sandbox):
            raise ConfigError(f"{where}: sandbox is {sandbox!r}; give the name of a sandbox instance "
                              "(1-40 letters, digits, '-' or '_', as 'rtbook sandbox up --name NAME' took it)")
        both = [k for k in _ENDPOINTS if text[k] is not None]
        if both:
            raise ConfigError(f"{where}: sandbox and {', '.join(both)} exclude each other (the sandbox gives its own "
                              f"stack and URLs); remove {' and '.join(both)}, or sandbox")
    elif not any(text[k] is not None for k in _ENDPOINTS):
        raise ConfigError(f"{where}: nothing to check; give sandbox: NAME, or stack: DIR and/or api_url:, "
                          "realtime_url:, db_url:")
    for key in ("api_url", "realtime_url"):
        url = text[key]
        if url is not None and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", url):
            raise ConfigError(f"{where}: {key} is {url!r}; give an http:// or https:// base URL, "
                              "e.g. http://localhost:8000")
    host = text["realtime_host"]
    if host is not None and not _HOST.fullmatch(host):
        raise ConfigError(f"{where}: realtime_host is {host!r}; give a host name such as "
                          "realtime-dev.supabase-realtime (its first label is the tenant)")
    db_url = text["db_url"]
    if db_url is not None:
        if not re.fullmatch(r"postgres(ql)?(\+\w+)?://\S+", db_url):
            raise ConfigError(f"{where}: db_url is {db_url!r}; give a postgresql:// URL, "
                              "e.g. postgresql://postgres@db.example.com:5432/postgres")
        netloc = db_url.split("://", 1)[1].split("/", 1)[0]
        if "@" in netloc and ":" in netloc.rsplit("@", 1)[0]:
            raise ConfigError(f"{where}: db_url holds a password; remove it from the URL and name the variable "
                              "that holds it instead: env: {POSTGRES_PASSWORD: YOUR_VARIABLE}")
    stack = text["stack"]
    return TargetSpec(
        name=name,
        region=text["region"] or "",
        sandbox=sandbox,
        stack=(base / stack).resolve() if stack is not None else None,
        api_url=text["api_url"],
        realtime_url=text["realtime_url"],
        realtime_host=host,
        db_url=db_url,
        tenants=_tenants(item, where),
        env=_env(item.get("env"), where),
    )


def _tenants(item: Mapping[str, Any], where: str) -> tuple[str, ...]:
    if "tenant" in item and "tenants" in item:
        raise ConfigError(f"{where}: tenant and tenants exclude each other; list every tenant under tenants:")
    if "tenant" in item:
        raw: Any = [item["tenant"]]
        key = "tenant"
    else:
        raw, key = item.get("tenants", []), "tenants"
        if not isinstance(raw, list):
            raise ConfigError(f"{where}: tenants is {_show(raw)}; give a list, e.g. tenants: [realtime-dev]")
    if len(raw) > MAX_TARGETS:
        raise ConfigError(f"{where}: {len(raw)} tenants, over the limit of {MAX_TARGETS}")
    for tenant in raw:
        if not isinstance(tenant, str) or not _TENANT.fullmatch(tenant):
            raise ConfigError(f"{where}: {key} {_show(tenant)} is not a tenant id; give the external_id of a "
                              "row of _realtime.tenants, e.g. realtime-dev")
    if len(set(raw)) != len(raw):
        raise ConfigError(f"{where}: {key} lists a tenant twice; list each once")
    return tuple(raw)


def _env(raw: object, where: str) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: env is {_type(raw)}; give a mapping of rtbook's variable to the NAME of "
                          "the variable that holds it, e.g. env: {ANON_KEY: EAST_ANON_KEY}")
    pairs: list[tuple[str, str]] = []
    for key, variable in raw.items():
        if not isinstance(key, str) or key not in SECRET_VARIABLES:
            close = difflib.get_close_matches(str(key), sorted(SECRET_VARIABLES), n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise ConfigError(f"{where}: env key {_show(key)} is not a secret rtbook reads; {hint}"
                              f"the keys are {', '.join(sorted(SECRET_VARIABLES))}")
        if not isinstance(variable, str) or not _VARIABLE.fullmatch(variable):
            raise ConfigError(f"{where}: env {key} must be the NAME of an environment variable (letters, digits, "
                              f"'_'), got {_show(variable)}; the secret itself never goes in the file")
        pairs.append((key, variable))
    return tuple(pairs)


def _no_secret(text: str, label: str, env_secrets: frozenset[str]) -> None:
    if looks_secret(text) or Redactor().text(text) != text:
        raise ConfigError(f"{label} holds a value that looks like a token, key or password ({REDACTED}); secrets "
                          "never go in a targets file: name the variable that holds it under env:")
    if any(secret in text for secret in env_secrets):
        raise ConfigError(f"{label} holds the value of a secret found in the environment ({REDACTED}); "
                          "name the variable under env: instead of copying its value")


def _env_secret_values(environ: Mapping[str, str]) -> frozenset[str]:
    # Long enough to be matched safely, as the runbook's parameters do (rtbook.runbook.params).
    return frozenset(v for k, v in environ.items() if len(v) >= 8 and (is_secret_name(k) or looks_secret(v)))


def _scan(value: object, where: str, at: str, env_secrets: frozenset[str]) -> None:
    """Refuse a secret anywhere in ``value``; ``at`` (``targets[2].env``) is built from keys already checked."""
    if isinstance(value, str):
        _no_secret(value, f"{where}: {at or 'the document'}", env_secrets)
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str):
                _no_secret(key, f"{where}: a key under {at or 'the top level'}", env_secrets)
            _scan(item, where, f"{at}.{key}" if at else str(key), env_secrets)
    elif isinstance(value, list):
        for i, item in enumerate(value, 1):
            _scan(item, where, f"{at}[{i}]", env_secrets)


def _text(item: Mapping[str, Any], key: str, where: str) -> str | None:
    value = item.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: {key} is {_show(value)}; give a non-empty string (quote it in YAML)")
    if len(value) > _MAX_TEXT or not value.isprintable():
        raise ConfigError(f"{where}: {key} is longer than {_MAX_TEXT} characters or holds control characters; "
                          f"give the real {key}")
    return value.strip()


def _known_keys(data: Mapping[Any, Any], known: tuple[str, ...], where: str) -> None:
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"{where}: unknown key {_show(key)}; {hint}the keys are {', '.join(known)}")


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _type(value: object) -> str:
    return "nothing" if value is None else f"{_show(value)} ({type(value).__name__})"
