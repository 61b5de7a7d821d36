"""Read a self-hosted Supabase stack the way ``docker compose`` does.

:class:`Stack` loads the compose file(s) and the ``.env`` next to them, interpolates
``${VAR}``-style references, merges overlays with the compose merge rules (including the
``!override`` and ``!reset`` tags) and exposes the services as typed :class:`Service` records.

Variable lookup: by default only the ``.env`` file is consulted. Docker compose also lets the
process environment override the ``.env``; pass ``environ=os.environ`` (or any mapping) to get
that behaviour. Keeping it explicit makes a check run reproducible from the files alone.

Every parser here raises :class:`~rtbook.exceptions.InputError` with one line naming the file
and the problem; none of them lets a traceback escape on junk input.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from rtbook.bounded import check_file, describe_mode, read_bytes, read_text
from rtbook.config.images import image_repository
from rtbook.config.yamlfile import SafeLoader, load_yaml
from rtbook.exceptions import InputError
from rtbook.secrets import Redactor

__all__ = [
    "COMPOSE_FILE_NAMES",
    "DEFAULT_TENANT",
    "Healthcheck",
    "Override",
    "Reset",
    "Service",
    "Stack",
    "Volume",
    "interpolate",
    "load_compose_file",
    "merge_compose",
    "parse_env_file",
    "parse_env_text",
]


DEFAULT_TENANT = "realtime-dev"
COMPOSE_FILE_NAMES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
GatewayKind = Literal["kong", "envoy"]
_T = TypeVar("_T")

# ====================================================================== .env


_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")


def parse_env_file(path: Path, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Parse a ``.env`` file with compose's rules.

    Raises:
        InputError: the file is missing, binary, empty or has a line compose would reject.
    """
    text = _read_text(path, "env file")
    values = parse_env_text(text, source=str(path), environ=environ)
    if not values:
        raise InputError(
            f"{path}: the env file defines no variables; copy env.example to .env and fill in the secrets"
        )
    return values


def parse_env_text(text: str, source: str = ".env", environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Parse ``.env`` text: ``KEY=VALUE`` lines, ``export`` prefixes, comments and quotes.

    Single-quoted values are literal; double-quoted values understand ``\\n``, ``\\t``, ``\\"``
    and ``\\\\`` and may span lines; unquoted values end at `` #``. Double-quoted and unquoted
    values interpolate ``${VAR}`` from the variables defined above them (then ``environ``).

    Raises:
        InputError: a line is not an assignment or a quote is not closed.
    """
    if "\x00" in text:
        raise InputError(f"{source}: binary data (NUL bytes), not an env file")
    out: dict[str, str] = {}
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    i = 0
    while i < len(lines):
        lineno = i + 1
        line = lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        if line.startswith("export ") or line.startswith("export\t"):
            line = line[7:].lstrip()
        key_match = _ENV_KEY.match(line)
        if key_match is None:
            raise InputError(f"{source}:{lineno}: expected KEY=VALUE, got {_preview(line, 12)}")
        key = key_match.group(0)
        rest = line[key_match.end() :].lstrip(" \t")
        if not rest:
            # A bare name takes its value from the environment in compose; without one it is unset.
            if environ is not None and key in environ:
                out[key] = environ[key]
            continue
        if rest[0] not in "=":
            raise InputError(
                f"{source}:{lineno}: expected '=' after the name {_preview(key, 24)}, got {_preview(rest, 12)}"
            )
        raw = rest[1:].lstrip(" \t")
        if raw.startswith("'") or raw.startswith('"'):
            # A quoted value may span lines. Each line is scanned once (a value that never closes
            # used to be re-scanned from its start on every added line: quadratic).
            scan = _single_quoted if raw[0] == "'" else _double_quoted
            parts: list[str] = []
            value = scan(raw, 1, parts)
            while value is None and i < len(lines):
                parts.append("\n")
                value = scan(lines[i], 0, parts)
                i += 1
            if value is None:
                which = "single" if raw[0] == "'" else "double"
                raise InputError(f"{source}:{lineno}: unterminated {which} quote in the value of {key}")
            out[key] = value if raw[0] == "'" else interpolate(value, _chain(out, environ), source=f"{source}:{lineno}")
            continue
        hash_at = re.search(r"\s#", raw)
        if hash_at:
            raw = raw[: hash_at.start()]
        out[key] = interpolate(raw.rstrip(), _chain(out, environ), source=f"{source}:{lineno}")
    return out


def _single_quoted(text: str, start: int, parts: list[str]) -> str | None:
    """Add ``text[start:]`` up to a closing ``'`` to ``parts``; the whole value once it closes, else None.

    Single-quoted values are literal: no escapes. What follows the closing quote is ignored.
    """
    end = text.find("'", start)
    if end < 0:
        parts.append(text[start:])
        return None
    parts.append(text[start:end])
    return "".join(parts)


_DQ_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$$"}
_DQ_SPECIAL = re.compile(r'["\\]')


def _double_quoted(text: str, start: int, parts: list[str]) -> str | None:
    """Add ``text[start:]`` up to a closing ``"`` to ``parts`` (escapes applied); the value once it closes.

    ``\\n``, ``\\t``, ``\\r``, ``\\"`` and ``\\\\`` are escapes, ``\\$`` keeps a literal ``$``, any other
    backslash stays as written (a backslash at the end of a line stays, followed by the newline).
    """
    j = start
    n = len(text)
    while True:
        m = _DQ_SPECIAL.search(text, j)
        if m is None:
            parts.append(text[j:])
            return None
        k = m.start()
        parts.append(text[j:k])
        if text[k] == '"':
            return "".join(parts)
        if k + 1 < n:
            nxt = text[k + 1]
            parts.append(_DQ_ESCAPES.get(nxt, "\\" + nxt))
            j = k + 2
        else:
            parts.append("\\")  # the line's end: the newline the caller adds follows it
            return None


def _preview(text: str, limit: int = 40) -> str:
    text = text.replace("\n", " ")
    # Never echo what may be a secret value: show only the start of the offending text.
    return repr(text[:limit] + ("..." if len(text) > limit else ""))


def _chain(first: Mapping[str, str], second: Mapping[str, str] | None) -> Callable[[str], str | None]:
    def lookup(name: str) -> str | None:
        if second is not None and name in second:
            return second[name]
        return first.get(name)

    return lookup


# ====================================================================== interpolation


def interpolate(text: str, lookup: Callable[[str], str | None] | Mapping[str, str], source: str = "") -> str:
    """Expand ``$VAR``, ``${VAR}``, ``${VAR:-d}``, ``${VAR-d}``, ``${VAR:?e}``, ``${VAR?e}``,
    ``${VAR:+a}``, ``${VAR+a}`` and ``$$`` the way compose does; defaults may nest.

    An unset variable without a default becomes the empty string (compose warns).

    Raises:
        InputError: a required variable (``?``) is unset/empty, or a ``${`` is not closed.
    """
    get: Callable[[str], str | None]
    if isinstance(lookup, Mapping):
        mapping = lookup
        get = mapping.get
    else:
        get = lookup
    out, _ = _expand(text, 0, get, source, depth=0, stop=None)
    return out


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _at(source: str) -> str:
    return f"{source}: " if source else ""
_MAX_DEPTH = 20


def _expand(
    text: str,
    pos: int,
    get: Callable[[str], str | None],
    source: str,
    depth: int,
    stop: str | None,
    dry: bool = False,
) -> tuple[str, int]:
    """Expand from ``pos`` until the end (or an unnested ``stop`` character); return text and end index."""
    if depth > _MAX_DEPTH:
        raise InputError(f"{_at(source)}variables nested more than {_MAX_DEPTH} levels deep")
    buf: list[str] = []
    i = pos
    n = len(text)
    while i < n:
        ch = text[i]
        if stop is not None and ch == stop:
            return "".join(buf), i
        if ch != "$":
            buf.append(ch)
            i += 1
            continue
        nxt = text[i + 1] if i + 1 < n else ""
        if nxt == "$":
            buf.append("$")
            i += 2
            continue
        if nxt == "{":
            value, i = _braced(text, i + 2, get, source, depth, dry)
            buf.append(value)
            continue
        m = _NAME.match(text, i + 1)
        if m:
            buf.append(get(m.group(0)) or "")
            i = m.end()
            continue
        # A lone "$" (e.g. before a digit or at the end) stays as written.
        buf.append("$")
        i += 1
    if stop is not None:
        raise InputError(f"{_at(source)}unterminated '${{' in a value; close it with '}}' or write '$$' for a '$'")
    return "".join(buf), i


def _braced(
    text: str, pos: int, get: Callable[[str], str | None], source: str, depth: int, dry: bool
) -> tuple[str, int]:
    m = _NAME.match(text, pos)
    if m is None:
        end = text.find("}", pos)
        shown = text[pos:end] if end >= 0 else text[pos:]
        raise InputError(f"{_at(source)}invalid variable reference '${{{shown[:30]}' ; names are letters, digits and _")
    name = m.group(0)
    i = m.end()
    if i >= len(text):
        raise InputError(f"{_at(source)}unterminated '${{{name}'; close it with '}}'")
    value = get(name)
    if text[i] == "}":
        return value or "", i + 1
    op = text[i]
    colon = False
    if op == ":":
        colon = True
        i += 1
        op = text[i] if i < len(text) else ""
    if op not in ("-", "?", "+"):
        raise InputError(
            f"{_at(source)}unsupported modifier after '${{{name}' (use :-, -, :?, ?, :+ or +)"
        )
    unset = value is None or (colon and value == "")
    # The word is only evaluated when used (compose is lazy): ${A:-${B:?}} with A set is fine.
    used = (op == "-" and unset) or (op == "+" and not unset) or (op == "?" and unset)
    word, end = _expand(text, i + 1, get, source, depth + 1, stop="}", dry=dry or not used)
    if op == "-":
        result = word if unset else (value or "")
    elif op == "+":
        result = "" if unset else word
    else:  # "?"
        if unset and not dry:
            reason = word or f"{name} is required"
            raise InputError(
                f"{_at(source)}required variable {name} is {'empty' if value == '' else 'not set'}: {reason}; "
                f"set {name} in the .env file"
            )
        result = value or ""
    return result, end + 1


# ====================================================================== YAML with compose tags


@dataclass(frozen=True)
class Override:
    """A value tagged ``!override``: it replaces the base value instead of merging."""

    value: Any


@dataclass(frozen=True)
class Reset:
    """A value tagged ``!reset``: the key is removed from the merged result."""

    value: Any = None


class _ComposeLoader(SafeLoader):  # type: ignore[misc]  # SafeLoader is libyaml's when PyYAML has it
    """SafeLoader that understands compose's ``!override`` and ``!reset`` tags."""


def _plain(loader: _ComposeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        tag = loader.resolve(yaml.ScalarNode, node.value, (True, False))  # type: ignore[no-untyped-call]
        return loader.construct_object(yaml.ScalarNode(tag, node.value, node.start_mark, node.end_mark), deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        return loader.construct_mapping(node, deep=True)
    return None


def _construct_override(loader: _ComposeLoader, node: yaml.Node) -> Override:
    return Override(_plain(loader, node))


def _construct_reset(loader: _ComposeLoader, node: yaml.Node) -> Reset:
    return Reset(_plain(loader, node))


_ComposeLoader.add_constructor("!override", _construct_override)
_ComposeLoader.add_constructor("!reset", _construct_reset)


def _read_text(path: Path, what: str) -> str:
    # The one bounded reader: regular files only, never blocks, at most the kind's limit (rtbook/bounded.py).
    return read_text(path, what)


def load_compose_file(path: Path) -> dict[str, Any]:
    """Load one compose file (tags kept as :class:`Override`/:class:`Reset`), not yet interpolated.

    Raises:
        InputError: missing, unreadable, not YAML (with the line number) or not a mapping.
    """
    text = _read_text(path, "compose file")
    data = load_yaml(text, path, loader=_ComposeLoader)
    if data is None:
        raise InputError(f"{path}: the compose file is empty; it needs a top-level 'services:' mapping")
    if not isinstance(data, dict):
        raise InputError(
            f"{path}: the compose file's top level is a {_kind(data)}, expected a mapping with 'services:'"
        )
    services = data.get("services")
    if services is not None and not isinstance(services, dict | Override):
        raise InputError(f"{path}: 'services' is a {_kind(services)}, expected a mapping of service names")
    if isinstance(services, dict):
        for name, svc in services.items():
            if not isinstance(svc, dict | Override | Reset) and svc is not None:
                raise InputError(f"{path}: service {name!r} is a {_kind(svc)}, expected a mapping")
    return data


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "list"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def _interpolate_tree(value: Any, get: Callable[[str], str | None], source: str) -> Any:
    if isinstance(value, str):
        return interpolate(value, get, source)
    if isinstance(value, Override):
        return Override(_interpolate_tree(value.value, get, source))
    if isinstance(value, Reset):
        return value
    if isinstance(value, dict):
        # A bind volume's inline ``content`` is a Coolify extension that Coolify writes to disk as
        # written; the container's own entrypoint expands its $VARs, so compose must not.
        return {
            k: v if k == "content" and isinstance(v, str) else _interpolate_tree(v, get, f"{source}.{k}")
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_interpolate_tree(v, get, source) for v in value]
    return value


# ====================================================================== merge

# Keys whose sequences are merged as mappings (compose turns list form into KEY=VALUE pairs).
_MAPPING_LIKE = frozenset({"environment", "labels", "extra_hosts", "annotations", "sysctls", "build_args"})
# Keys whose value an overlay replaces rather than merges.
_REPLACED = frozenset({"command", "entrypoint", "test", "image", "container_name", "hostname"})
# Sequences of unique values.
_UNIQUE = frozenset({"ports", "expose", "dns", "dns_search", "env_file", "tmpfs", "profiles", "cap_add", "cap_drop"})


def _as_mapping(key: str, value: Any) -> Any:
    """Convert list-form environment/labels/networks/depends_on into a mapping."""
    if isinstance(value, list):
        if key in ("networks", "depends_on"):
            return {str(v): None for v in value}
        out: dict[str, Any] = {}
        for item in value:
            text = str(item)
            sep = "=" if key != "extra_hosts" or "=" in text else ":"
            name, has, val = text.partition(sep)
            out[name] = val if has else None
        return out
    return value


def _strip(value: Any) -> Any:
    """Remove tag wrappers (an un-merged ``!override`` is just its value; ``!reset`` drops the key)."""
    if isinstance(value, Override):
        return _strip(value.value)
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if not isinstance(v, Reset)}
    if isinstance(value, list):
        return [_strip(v) for v in value if not isinstance(v, Reset)]
    return value


def _merge(key: str, base: Any, over: Any) -> Any:
    if isinstance(over, Reset):
        return Reset()
    if isinstance(over, Override):
        return _strip(over.value)
    if base is None:
        return _strip(over)
    if key in _MAPPING_LIKE or key in ("networks", "depends_on"):
        base = _as_mapping(key, base)
        over = _as_mapping(key, over)
    if isinstance(base, dict) and isinstance(over, dict) and key not in _REPLACED:
        out = dict(base)
        for k, v in over.items():
            merged = _merge(str(k), out.get(k), v)
            if isinstance(merged, Reset):
                out.pop(k, None)
            else:
                out[k] = merged
        return out
    if isinstance(base, list) and isinstance(over, list) and key not in _REPLACED:
        if key in ("volumes", "secrets", "configs"):
            by_target: dict[str, Any] = {}
            for item in [*base, *_strip(over)]:
                by_target[_mount_key(item)] = item
            return list(by_target.values())
        if key in _UNIQUE:
            out_list = list(base)
            for item in _strip(over):
                if item not in out_list:
                    out_list.append(item)
            return out_list
        return [*base, *_strip(over)]
    return _strip(over)


def _mount_key(item: Any) -> str:
    if isinstance(item, dict):
        return str(item.get("target") or item.get("source") or item)
    parts = str(item).split(":")
    return parts[1] if len(parts) >= 2 else parts[0]


def merge_compose(documents: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Merge compose documents, base first, with the compose merge rules."""
    result: Any = None
    for doc in documents:
        result = _merge("", result, dict(doc))
    merged = _strip(result) if result is not None else {}
    return merged if isinstance(merged, dict) else {}


# ====================================================================== typed services


@dataclass(frozen=True)
class Healthcheck:
    """A service healthcheck.

    Attributes:
        test: the ``test`` value as written (a list or a string).
        form: ``CMD`` (exec form), ``CMD-SHELL``, ``NONE`` or ``string`` (a plain string: shell form).
        command: the command text (exec args joined with spaces, or the shell string).
        disabled: ``disable: true`` or ``test: ["NONE"]``.
    """

    test: list[str] | str | None
    form: str
    command: str
    disabled: bool = False
    interval: str | None = None
    timeout: str | None = None
    retries: int | None = None
    start_period: str | None = None

    def __repr__(self) -> str:
        return f"Healthcheck(form={self.form!r}, disabled={self.disabled})"

    @classmethod
    def parse(cls, raw: Any) -> Healthcheck | None:
        """Build from a compose ``healthcheck`` mapping; None when absent."""
        if not isinstance(raw, dict):
            return None
        test = raw.get("test")
        disabled = bool(raw.get("disable"))
        if isinstance(test, list):
            items = [str(t) for t in test]
            head = items[0] if items else ""
            if head == "NONE":
                return cls(items, "NONE", "", True)
            if head == "CMD-SHELL":
                form, command = "CMD-SHELL", " ".join(items[1:])
            elif head == "CMD":
                form, command = "CMD", " ".join(items[1:])
            else:
                form, command = "CMD", " ".join(items)
            test_value: list[str] | str | None = items
        elif isinstance(test, str):
            form, command, test_value = "string", test, test
        else:
            form, command, test_value = "none", "", None
        retries = raw.get("retries")
        return cls(
            test_value,
            form,
            command,
            disabled,
            _opt_str(raw.get("interval")),
            _opt_str(raw.get("timeout")),
            retries if isinstance(retries, int) else None,
            _opt_str(raw.get("start_period")),
        )


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class Volume:
    """One entry of a service's ``volumes``: ``source`` on the host (absolute path for binds)."""

    source: str
    target: str
    type: str = "bind"
    read_only: bool = False
    content: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Service:
    """One compose service, interpolated and merged.

    ``environment`` holds the strings the container receives (YAML booleans become
    ``true``/``false``, numbers their text, a bare name its value or the empty string);
    ``environment_raw`` keeps the YAML types, so an unquoted ``true`` can be told apart.
    ``image`` is the ``image`` key, or the ``FROM`` image of the build's Dockerfile.
    """

    name: str
    image: str = ""
    container_name: str | None = None
    hostname: str | None = None
    environment: dict[str, str] = field(default_factory=dict, repr=False)
    environment_raw: dict[str, Any] = field(default_factory=dict, repr=False)
    networks: dict[str, tuple[str, ...]] = field(default_factory=dict)
    network_mode: str | None = None
    healthcheck: Healthcheck | None = field(default=None, repr=False)
    volumes: tuple[Volume, ...] = field(default=(), repr=False)
    entrypoint: list[str] | str | None = field(default=None, repr=False)
    command: list[str] | str | None = field(default=None, repr=False)
    depends_on: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    ports: tuple[str, ...] = field(default=(), repr=False)
    build_context: Path | None = None
    profiles: tuple[str, ...] = ()
    deploy: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def dns_names(self) -> list[str]:
        """Names other containers on a shared network resolve to this service."""
        names = [self.name]
        if self.container_name:
            names.append(self.container_name)
        for aliases in self.networks.values():
            names.extend(aliases)
        return list(dict.fromkeys(names))

    def image_repo(self) -> str:
        """The image's repository without registry, tag or digest, e.g. ``supabase/realtime``."""
        return image_repository(self.image)


def _env_str(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _parse_environment(raw: Any, environ: Mapping[str, str] | None) -> tuple[dict[str, str], dict[str, Any]]:
    env_raw: dict[str, Any] = {}
    if isinstance(raw, dict):
        env_raw = {str(k): v for k, v in raw.items()}
    elif isinstance(raw, list):
        for item in raw:
            name, has, val = str(item).partition("=")
            env_raw[name] = val if has else None
    env: dict[str, str] = {}
    for k, v in env_raw.items():
        if v is None and environ is not None and k in environ:
            env[k] = environ[k]
        else:
            env[k] = _env_str(v)
    return env, env_raw


def _parse_volumes(raw: Any, root: Path | None) -> tuple[Volume, ...]:
    out: list[Volume] = []
    if not isinstance(raw, list):
        return ()
    for item in raw:
        if isinstance(item, dict):
            source = str(item.get("source") or "")
            target = str(item.get("target") or "")
            vtype = str(item.get("type") or ("bind" if source.startswith((".", "/", "~")) else "volume"))
            ro = bool(item.get("read_only"))
            content = item.get("content")
            content_s = str(content) if isinstance(content, str) else None
        else:
            parts = str(item).split(":")
            if len(parts) == 1:
                out.append(Volume("", parts[0], "volume"))
                continue
            source, target = parts[0], parts[1]
            mode = parts[2] if len(parts) > 2 else ""
            ro = "ro" in mode.split(",")
            vtype = "bind" if source.startswith((".", "/", "~")) else "volume"
            content_s = None
        if vtype == "bind" and source:
            path = Path(os.path.expanduser(source))
            if not path.is_absolute() and root is not None:
                path = root / path
            source = os.path.normpath(str(path))
        out.append(Volume(source, target, vtype, ro, content_s))
    return tuple(out)


def _parse_networks(raw: Any, network_mode: str | None) -> dict[str, tuple[str, ...]]:
    if network_mode:
        return {}
    if raw is None:
        return {"default": ()}
    out: dict[str, tuple[str, ...]] = {}
    if isinstance(raw, list):
        return {str(n): () for n in raw}
    if isinstance(raw, dict):
        for name, cfg in raw.items():
            aliases = cfg.get("aliases") if isinstance(cfg, dict) else None
            out[str(name)] = tuple(str(a) for a in aliases) if isinstance(aliases, list) else ()
    return out


def _parse_depends(raw: Any) -> dict[str, dict[str, Any]]:
    if isinstance(raw, list):
        return {str(n): {"condition": "service_started"} for n in raw}
    if isinstance(raw, dict):
        return {str(k): (dict(v) if isinstance(v, dict) else {}) for k, v in raw.items()}
    return {}


_FROM = re.compile(r"^\s*FROM\s+(?:--platform=\S+\s+)?(\S+)", re.I | re.M)


def _build_context(raw: Any, root: Path | None) -> Path | None:
    ctx: Any = raw.get("context") if isinstance(raw, dict) else raw
    if not isinstance(ctx, str) or not ctx or "://" in ctx:
        return None
    path = Path(ctx)
    if not path.is_absolute() and root is not None:
        path = root / path
    return Path(os.path.normpath(str(path)))


def _dockerfile_image(raw: Any, context: Path | None) -> str:
    if context is None:
        return ""
    name = raw.get("dockerfile") if isinstance(raw, dict) else None
    path = context / (str(name) if isinstance(name, str) else "Dockerfile")
    text = _dockerfile_text(path)
    found = _FROM.findall(text)
    return str(found[-1]) if found else ""


def _dockerfile_text(path: Path) -> str:
    """The start of a build's Dockerfile ("" when there is none); a FIFO or a huge file is refused."""
    if not os.path.lexists(path):
        return ""
    return read_bytes(path, "Dockerfile")[:20000].decode("utf-8", errors="replace")


def _cmd(value: Any) -> list[str] | str | None:
    if isinstance(value, list):
        return [str(v) for v in value]
    if value is None:
        return None
    return str(value)


def _service_env_files(name: str, raw: Any, root: Path | None, environ: Mapping[str, str] | None) -> dict[str, str]:
    """Variables from a service's ``env_file`` entries (lower precedence than ``environment``)."""
    entries = raw if isinstance(raw, list) else [raw] if raw is not None else []
    out: dict[str, str] = {}
    for entry in entries:
        required = True
        path_s: Any = entry
        if isinstance(entry, dict):
            path_s = entry.get("path")
            required = entry.get("required", True) is not False
        if not isinstance(path_s, str) or not path_s:
            continue
        path = Path(path_s)
        if not path.is_absolute() and root is not None:
            path = root / path
        if not os.path.lexists(path):
            if required:
                raise InputError(f"{path}: env_file of service {name!r} not found (or mark it required: false)")
            continue
        out.update(parse_env_text(_read_text(path, "env file"), source=str(path), environ=environ))
    return out


def _service(name: str, raw: Any, root: Path | None, environ: Mapping[str, str] | None) -> Service:
    data: dict[str, Any] = raw if isinstance(raw, dict) else {}
    env, env_raw = _parse_environment(data.get("environment"), environ)
    from_files = _service_env_files(name, data.get("env_file"), root, environ)
    if from_files:
        env = {**from_files, **env}
        env_raw = {**from_files, **env_raw}
    ctx = _build_context(data.get("build"), root)
    image = data.get("image")
    image_s = str(image) if image else _dockerfile_image(data.get("build"), ctx)
    network_mode = data.get("network_mode")
    ports = data.get("ports")
    profiles = data.get("profiles")
    cname = data.get("container_name")
    hostname = data.get("hostname")
    return Service(
        name=name,
        image=image_s,
        container_name=str(cname) if cname else None,
        hostname=str(hostname) if hostname else None,
        environment=env,
        environment_raw=env_raw,
        networks=_parse_networks(data.get("networks"), str(network_mode) if network_mode else None),
        network_mode=str(network_mode) if network_mode else None,
        healthcheck=Healthcheck.parse(data.get("healthcheck")),
        volumes=_parse_volumes(data.get("volumes"), root),
        entrypoint=_cmd(data.get("entrypoint")),
        command=_cmd(data.get("command")),
        depends_on=_parse_depends(data.get("depends_on")),
        ports=tuple(str(p) if not isinstance(p, dict) else str(p.get("published", "")) for p in ports)
        if isinstance(ports, list)
        else (),
        build_context=ctx,
        profiles=tuple(str(p) for p in profiles) if isinstance(profiles, list) else (),
        deploy="deploy" in data,
        raw=data,
    )


# ====================================================================== Stack


_COPY = re.compile(r"^\s*(?:COPY|ADD)\s+(?:--\S+\s+)*(\S+)\s+(\S+)\s*$", re.I | re.M)


class Stack:
    """A compose stack: merged services, the ``.env`` values and the gateway files.

    Attributes:
        root: the project directory (the first compose file's folder; relative paths start there).
        compose_files: the files merged, base first.
        env_file: the ``.env`` read, or None.
        env: the ``.env`` values (empty when there is no ``.env``).
        services: the active services by name (services whose profiles are not enabled are
            in ``inactive_services``).
    """

    def __init__(
        self,
        root: Path,
        compose_files: list[Path],
        env_file: Path | None,
        env: dict[str, str],
        services: dict[str, Service],
        *,
        inactive_services: dict[str, Service] | None = None,
        explicit_kong_file: Path | None = None,
        environ: Mapping[str, str] | None = None,
        model: dict[str, Any] | None = None,
    ) -> None:
        self.root = root
        self.compose_files = compose_files
        self.env_file = env_file
        self.env = env
        self.services = services
        self.inactive_services = inactive_services or {}
        self.explicit_kong_file = explicit_kong_file
        self._environ = environ
        self._model = model or {}
        # What memo() computed from this stack's files: (value, error message) by key.
        self._memo: dict[str, tuple[Any, str | None]] = {}

    def __repr__(self) -> str:
        files = ", ".join(p.name for p in self.compose_files)
        env_name = self.env_file.name if self.env_file else None
        return (
            f"<Stack root={str(self.root)!r} files=[{files}] env_file={env_name!r} "
            f"services={sorted(self.services)}>"
        )

    __str__ = __repr__

    # ------------------------------------------------------------ loading
    @classmethod
    def load(
        cls, stack_dir: str | Path, environ: Mapping[str, str] | None = None, env_file: str | Path | None = None
    ) -> Stack:
        """Load the stack in ``stack_dir``: its compose file (plus ``COMPOSE_FILE`` overlays) and ``.env``.

        Only ``.env`` (or the explicit ``env_file``) is read, never ``env.example``: a stack without
        ``.env`` loads with empty values and the ``env.*`` checks report it. A path to a compose file
        is accepted too. ``environ`` (e.g. ``os.environ``) overrides the ``.env`` as in compose.

        Raises:
            InputError: the directory or compose file is missing or does not parse.
        """
        path = Path(stack_dir)
        if path.is_file():
            env = Path(env_file) if env_file is not None else path.parent / ".env"
            given = env if env_file is not None or os.path.lexists(env) else None
            return cls.from_files([path], env_file=given, environ=environ)
        if not path.is_dir():
            if os.path.lexists(path):
                # A FIFO, device or dangling/looping symlink: name what it is, never "not found".
                try:
                    what = describe_mode(os.stat(path).st_mode)
                except OSError as exc:
                    what = "a symlink loop" if exc.errno == errno.ELOOP else "a symlink to nothing"
                raise InputError(f"{path}: is {what}, not a stack directory; pass the folder that holds "
                                 "docker-compose.yml (or the compose file itself)")
            raise InputError(f"{path}: stack directory not found")
        env_path = Path(env_file) if env_file is not None else path / ".env"
        env_values: dict[str, str] = {}
        used_env: Path | None = None
        # lexists, not exists: a .env that is there but cannot be read (a dangling or looping
        # symlink, a FIFO, a directory) is an error from the reader, never an empty file.
        if env_file is not None or os.path.lexists(env_path):
            used_env = env_path
            env_values = parse_env_file(env_path, environ)
        spec = (environ or {}).get("COMPOSE_FILE") or env_values.get("COMPOSE_FILE")
        if spec:
            sep = (environ or {}).get("COMPOSE_PATH_SEPARATOR") or env_values.get("COMPOSE_PATH_SEPARATOR") or ":"
            files = [path / f.strip() for f in spec.split(sep) if f.strip()]
            if not files:
                raise InputError(
                    f"{used_env or path}: COMPOSE_FILE={spec!r} names no compose file; list the files separated "
                    f"by {sep!r} (e.g. COMPOSE_FILE=docker-compose.yml) or remove the line"
                )
        else:
            found = [path / n for n in COMPOSE_FILE_NAMES if os.path.lexists(path / n)]
            if not found:
                raise InputError(
                    f"{path}: no compose file ({' or '.join(COMPOSE_FILE_NAMES[2:])}); pass --compose FILE"
                )
            files = [found[0]]
            override = path / (found[0].stem + ".override" + found[0].suffix)
            if os.path.lexists(override):
                files.append(override)
        return cls._build(files, used_env, env_values, None, environ)

    @classmethod
    def from_files(
        cls,
        compose_files: list[Path],
        env_file: Path | None = None,
        kong_file: Path | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Stack:
        """Load explicit compose files (base first), an optional env file and an optional kong.yml.

        Raises:
            InputError: a file is missing or does not parse.
        """
        if not compose_files:
            raise InputError("no compose file given; pass at least one --compose FILE")
        env_values: dict[str, str] = {}
        if env_file is not None:
            env_values = parse_env_file(Path(env_file), environ)
        if kong_file is not None:
            # Read now (bounded, type-checked) so a bad --kong is a usage error before any check runs.
            read_bytes(kong_file, "kong.yml")
        return cls._build([Path(f) for f in compose_files], Path(env_file) if env_file else None, env_values,
                          Path(kong_file) if kong_file else None, environ)

    @classmethod
    def _build(
        cls,
        files: list[Path],
        env_file: Path | None,
        env_values: dict[str, str],
        kong_file: Path | None,
        environ: Mapping[str, str] | None,
    ) -> Stack:
        # Relative mounts are resolved against the stack folder later, so the folder must not
        # depend on the caller's working directory.
        files = [f.absolute() for f in files]
        env_file = env_file.absolute() if env_file is not None else None
        kong_file = kong_file.absolute() if kong_file is not None else None
        get = _chain(env_values, environ)
        docs = []
        try:
            for f in files:
                doc = load_compose_file(f)
                docs.append(_interpolate_tree(doc, get, str(f)))
            model = merge_compose(docs)
        except RecursionError:
            raise InputError(f"{files[len(docs)] if len(docs) < len(files) else files[-1]}: nested too deeply "
                             "to be a compose file") from None
        root = files[0].parent
        raw_services = model.get("services") or {}
        if not isinstance(raw_services, dict):
            raise InputError(f"{files[0]}: 'services' is not a mapping after merging the overlays")
        profiles_on = {
            p.strip()
            for p in ((environ or {}).get("COMPOSE_PROFILES") or env_values.get("COMPOSE_PROFILES") or "").split(",")
            if p.strip()
        }
        active: dict[str, Service] = {}
        inactive: dict[str, Service] = {}
        for name, raw in raw_services.items():
            svc = _service(str(name), raw, root, environ)
            if svc.profiles and not (set(svc.profiles) & profiles_on or "*" in profiles_on):
                inactive[svc.name] = svc
            else:
                active[svc.name] = svc
        return cls(root, files, env_file, env_values, active, inactive_services=inactive,
                   explicit_kong_file=kong_file, environ=environ, model=model)

    def memo(self, key: str, make: Callable[[], _T]) -> _T:
        """``make()``, computed once per Stack: the gateway files are read and parsed once.

        A Stack is a snapshot of the files taken when it was loaded; everything derived from it
        (``kong.yml`` expanded and parsed, Envoy's LDS/CDS) is too, so every check and the one
        gateway interface see the same parse. An :class:`InputError` is remembered and raised
        again (as a new exception with the same message).
        """
        if key not in self._memo:
            try:
                self._memo[key] = (make(), None)
            except InputError as exc:
                self._memo[key] = (None, str(exc))
        value, error = self._memo[key]
        if error is not None:
            raise InputError(error)
        return value  # type: ignore[no-any-return]

    # ------------------------------------------------------------ lookups
    def lookup(self, name: str) -> str | None:
        """A variable as compose sees it: ``environ`` (when given) first, then the ``.env``."""
        if self._environ is not None and name in self._environ:
            return self._environ[name]
        return self.env.get(name)

    def networks(self) -> dict[str, Any]:
        """The top-level ``networks`` mapping."""
        nets = self._model.get("networks")
        return dict(nets) if isinstance(nets, dict) else {}

    def realtime_service(self) -> Service | None:
        """The Realtime service: image ``supabase/realtime`` (any registry), else a service named ``realtime``."""
        for svc in self.services.values():
            if svc.image_repo().endswith("supabase/realtime"):
                return svc
        for svc in self.services.values():
            if svc.name == "realtime" or svc.name.startswith("realtime"):
                return svc
        return None

    def _gateway_candidates(self) -> list[tuple[Service, GatewayKind]]:
        out: list[tuple[Service, GatewayKind]] = []
        for svc in self.services.values():
            repo = svc.image_repo().lower()
            base = repo.rsplit("/", 1)[-1]
            if base == "kong" or base == "kong-gateway":
                out.append((svc, "kong"))
            elif base == "envoy" or repo.startswith("envoyproxy/"):
                out.append((svc, "envoy"))
        if out:
            return out
        for svc in self.services.values():
            hints = " ".join(
                filter(None, [svc.name, svc.container_name or "", svc.build_context.name if svc.build_context else ""])
            ).lower()
            if "kong" in hints:
                out.append((svc, "kong"))
            elif "envoy" in hints:
                out.append((svc, "envoy"))
        return out

    def gateway_service(self) -> Service | None:
        """The API gateway in use (a Kong or Envoy service), or None."""
        found = self._gateway_candidates()
        return found[0][0] if found else None

    def gateway_kind(self) -> GatewayKind | None:
        """``kong`` or ``envoy`` for the gateway in use, or None without a gateway."""
        found = self._gateway_candidates()
        return found[0][1] if found else None

    def kong_file(self) -> Path | None:
        """The host path of the kong.yml the Kong container reads (mounted, baked by a build, or explicit)."""
        if self.explicit_kong_file is not None:
            return self.explicit_kong_file
        gw = self.gateway_service()
        if gw is None or self.gateway_kind() != "kong":
            return None
        for suffix in ("temp.yml", "kong.yml", "kong.yaml"):
            for vol in gw.volumes:
                if vol.type == "bind" and vol.target.endswith(suffix):
                    return self._materialise(vol)
        if gw.build_context is not None:
            copied = self._dockerfile_copies(gw)
            for target, source in copied.items():
                if target.endswith(("temp.yml", "kong.yml")):
                    return source
            for n in ("kong.yml", "kong.yaml"):
                if (gw.build_context / n).is_file():
                    return gw.build_context / n
        if self.root is not None and (self.root / "volumes" / "api" / "kong.yml").is_file():
            return self.root / "volumes" / "api" / "kong.yml"
        return None

    def check_gateway_files(self) -> None:
        """Refuse up front a gateway file that exists but cannot be read (a FIFO, a device, a loop, too big).

        What such a file holds is judged by the gateway checks; this only makes sure reading it
        later cannot block or run away, and that the user hears about it as a usage error.

        Raises:
            InputFileError: naming the file, what it is and the fix.
        """
        kong = self.kong_file()
        if kong is not None:
            check_file(kong, "kong.yml")
        for path in self.envoy_files().values():
            check_file(path, "Envoy file")

    def envoy_files(self) -> dict[str, Path]:
        """Host paths of the files the Envoy container reads, keyed by container path (or file name)."""
        gw = self.gateway_service()
        if gw is None or self.gateway_kind() != "envoy":
            return {}
        out: dict[str, Path] = {}
        for vol in gw.volumes:
            if vol.type == "bind" and vol.source:
                out[vol.target] = self._materialise(vol)
        if gw.build_context is not None:
            out.update(self._dockerfile_copies(gw))
            if not out and gw.build_context.is_dir():
                for p in sorted(gw.build_context.iterdir()):
                    if p.suffix in (".yaml", ".yml", ".sh") and p.is_file():
                        out[p.name] = p
        return out

    def _dockerfile_copies(self, svc: Service) -> dict[str, Path]:
        ctx = svc.build_context
        if ctx is None:
            return {}
        text = _dockerfile_text(ctx / "Dockerfile")
        out: dict[str, Path] = {}
        for src, dst in _COPY.findall(text):
            path = Path(os.path.normpath(str(ctx / src)))
            if path.is_file():
                out[dst] = path
        return out

    def _materialise(self, vol: Volume) -> Path:
        """The bind source; inline ``content:`` (Coolify) is written to a temp file when the source is absent."""
        path = Path(vol.source)
        if vol.content is not None and not path.exists():
            digest = hashlib.sha256(vol.content.encode()).hexdigest()[:16]
            folder = Path(tempfile.gettempdir()) / f"rtbook-inline-{os.getuid() if hasattr(os, 'getuid') else 0}"
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            out = folder / f"{digest}-{path.name or 'content'}"
            if not out.exists():
                out.write_text(vol.content, encoding="utf-8")
            return out
        return path

    def redactor(self) -> Redactor:
        """A redactor that knows every secret-looking value of the ``.env`` and of every service's environment."""
        red = Redactor()
        red.add_env(self.env)
        for svc in [*self.services.values(), *self.inactive_services.values()]:
            # Healthchecks carry bearer tokens too (${ANON_KEY}); the redactor's token patterns cover them.
            red.add_env(svc.environment)
        return red
