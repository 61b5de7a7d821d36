"""Kong's declarative config: expansion as the container does it, a typed model, and the ``kong.*`` checks.

The Supabase Kong container never reads ``kong.yml`` as written: its entrypoint first expands
variables from the container environment and writes the result to ``KONG_DECLARATIVE_CONFIG``.
Two entrypoints exist in the wild and they expand differently:

* ``eval`` (official stack up to 2025, Kong 2.8): ``bash -c 'eval "echo \\"$(cat ~/temp.yml)\\""'``.
  The shell expands ``$VAR`` and ``${VAR}``; unset variables become empty; double quotes in the
  file end the echo's quoting, so they disappear and the text between them is word-split.
* ``awk`` (``kong-entrypoint.sh``, Kong 3.9): exports ``LUA_AUTH_EXPR``/``LUA_RT_WS_EXPR``
  (and more), replaces every ``$VAR`` that exists in the environment (quotes kept, unknown names
  left as written), then deletes ``- key:`` lines left empty.

:func:`expand_kong` reproduces both; :func:`parse_kong` turns the result into dataclasses;
:func:`load_kong` does both for a :class:`~rtbook.config.stack.Stack`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from rtbook.config.reader import (
    ConfigReader,
    volume_mounts,
)
from rtbook.config.yamlfile import load_yaml
from rtbook.exceptions import InputError
from rtbook.secrets import Secret

if TYPE_CHECKING:
    from rtbook.config.stack import Service, Stack

__all__ = [
    "KNOWN_FORMAT_VERSIONS",
    "Expansion",
    "KongAcl",
    "KongConfig",
    "KongConsumer",
    "KongLoaded",
    "KongPlugin",
    "KongRoute",
    "KongService",
    "KongStyle",
    "detect_style",
    "display_path",
    "expand_kong",
    "expand_kong_detailed",
    "kong_placeholders",
    "load_kong",
    "load_kong_detailed",
    "parse_kong",
    "realtime_names",
    "upstream_path",
]


KongStyle = Literal["eval", "awk", "none"]
KNOWN_FORMAT_VERSIONS = ("1.1", "2.1", "3.0")

# Kong's bundled plugins (2.8 and 3.x); ``KONG_PLUGINS=bundled`` enables all of them.
BUNDLED_PLUGINS = frozenset(
    [
        "acl",
        "acme",
        "ai-proxy",
        "ai-prompt-decorator",
        "ai-prompt-guard",
        "ai-prompt-template",
        "ai-request-transformer",
        "ai-response-transformer",
        "aws-lambda",
        "azure-functions",
        "basic-auth",
        "bot-detection",
        "correlation-id",
        "cors",
        "datadog",
        "file-log",
        "grpc-gateway",
        "grpc-web",
        "hmac-auth",
        "http-log",
        "ip-restriction",
        "jwt",
        "key-auth",
        "ldap-auth",
        "loggly",
        "oauth2",
        "opentelemetry",
        "post-function",
        "pre-function",
        "prometheus",
        "proxy-cache",
        "rate-limiting",
        "redirect",
        "request-size-limiting",
        "request-termination",
        "request-transformer",
        "response-ratelimiting",
        "response-transformer",
        "session",
        "standard-webhooks",
        "statsd",
        "syslog",
        "tcp-log",
        "udp-log",
        "zipkin",
    ]
)

# Variables the image itself sets; they are in the entrypoint's environment too.
_IMAGE_ENV = {"HOME": "/home/kong", "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}

# Where the kong service usually takes a placeholder from, for the remedy text.
_COMPOSE_SOURCE = {
    "SUPABASE_ANON_KEY": "${ANON_KEY}",
    "SUPABASE_SERVICE_KEY": "${SERVICE_ROLE_KEY}",
    "SUPABASE_PUBLISHABLE_KEY": "${SUPABASE_PUBLISHABLE_KEY:-}",
    "SUPABASE_SECRET_KEY": "${SUPABASE_SECRET_KEY:-}",
    "ANON_KEY_ASYMMETRIC": "${ANON_KEY_ASYMMETRIC:-}",
    "SERVICE_ROLE_KEY_ASYMMETRIC": "${SERVICE_ROLE_KEY_ASYMMETRIC:-}",
    "JWT_ISSUER": "${API_EXTERNAL_URL}",
}


# ====================================================================== expansion


@dataclass(frozen=True)
class Expansion:
    """The result of expanding a kong.yml template.

    Attributes:
        text: the file Kong would read.
        referenced: every variable name the template refers to, in order of first use.
        unresolved: referenced names absent from the environment (eval: expanded to empty;
            awk: left as ``$NAME`` in the output).
        empty: referenced names present in the environment with an empty value.
        deleted_lines: 1-based template lines removed by the awk entrypoint's ``- key:`` cleanup.
    """

    text: str = field(repr=False)  # holds the expanded keys
    referenced: tuple[str, ...] = ()
    unresolved: tuple[str, ...] = ()
    empty: tuple[str, ...] = ()
    deleted_lines: tuple[int, ...] = ()


_AWK_VAR = re.compile(r"\$([A-Za-z_][A-Za-z_0-9]*)")
# sed '/^[[:space:]]*- key:[[:space:]]*$/d' ([[:space:]] without the newline, per line).
_EMPTY_KEY_LINE = re.compile(r"^[ \t\r\v\f]*- key:[ \t\r\v\f]*$")


def _expand_awk(text: str, env: Mapping[str, str]) -> Expansion:
    referenced: dict[str, None] = {}
    out_lines: list[str] = []
    deleted: list[int] = []
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # awk does not see a record after the final newline
    for number, line in enumerate(lines, start=1):

        def sub(m: re.Match[str]) -> str:
            name = m.group(1)
            referenced.setdefault(name, None)
            return env[name] if name in env else m.group(0)

        expanded = _AWK_VAR.sub(sub, line)
        if _EMPTY_KEY_LINE.match(expanded):
            deleted.append(number)
            continue
        out_lines.append(expanded)
    names = tuple(referenced)
    return Expansion(
        text="".join(line + "\n" for line in out_lines),
        referenced=names,
        unresolved=tuple(n for n in names if n not in env),
        empty=tuple(n for n in names if n in env and env[n] == ""),
        deleted_lines=tuple(deleted),
    )


_NAME_START = re.compile(r"[A-Za-z_]")
_NAME = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")
_SPECIAL_PARAMS = {"0": "bash", "#": "0", "?": "0", "-": "hBc", "!": "", "@": "", "*": ""}


class _EvalExpander:
    """Bash's reading of ``echo "<file>"`` under ``eval``: quoting, expansion and word splitting."""

    def __init__(self, text: str, env: Mapping[str, str]) -> None:
        # $(cat file) drops every trailing newline.
        self.s = text.rstrip("\n")
        self.env = env
        self.i = 0
        self.line = 1
        self.referenced: dict[str, None] = {}
        self.words: list[str] = []
        self.cur: list[str] = []
        self.in_word = True  # the opening quote of echo "..." starts a word

    def error(self, problem: str, fix: str) -> InputError:
        return InputError(f"kong.yml line {self.line}: {problem} under the eval entrypoint; {fix}")

    def run(self) -> str:
        dq = True
        s = self.s
        while self.i < len(s):
            c = s[self.i]
            if dq:
                if c == '"':
                    dq = False
                    self.i += 1
                elif c == "\\":
                    nxt = s[self.i + 1] if self.i + 1 < len(s) else ""
                    if nxt == "\n":
                        self.line += 1
                        self.i += 2
                    elif nxt in ("$", "`", '"', "\\"):
                        self.cur.append(nxt)
                        self.i += 2
                    else:
                        self.cur.append("\\")
                        self.i += 1
                elif c == "$":
                    self.cur.append(self.dollar())
                elif c == "`":
                    raise self.error("a backquote runs a command", "remove the backquote or use the awk entrypoint")
                else:
                    if c == "\n":
                        self.line += 1
                    self.cur.append(c)
                    self.i += 1
                continue
            # Outside double quotes: the file's own quotes have closed the echo's quoting.
            if c == '"':
                dq = True
                self.in_word = True
                self.i += 1
            elif c == "'":
                end = s.find("'", self.i + 1)
                if end < 0:
                    raise self.error("an unterminated single quote", "balance the quotes on this line")
                chunk = s[self.i + 1 : end]
                self.line += chunk.count("\n")
                self.cur.append(chunk)
                self.in_word = True
                self.i = end + 1
            elif c == "\\":
                nxt = s[self.i + 1] if self.i + 1 < len(s) else ""
                if nxt == "\n":
                    self.line += 1
                elif nxt:
                    self.cur.append(nxt)
                    self.in_word = True
                self.i += 2
            elif c in " \t":
                self.end_word()
                self.i += 1
            elif c == "\n":
                raise self.error(
                    "an odd number of double quotes ends the echo command at the end of the line",
                    "balance the double quotes or switch to the awk kong-entrypoint.sh",
                )
            elif c in ";&|<>()":
                raise self.error(
                    f"the shell operator {c!r} stands outside quotes (the file's double quotes closed the echo's)",
                    "quote it with single quotes or switch to the awk kong-entrypoint.sh",
                )
            elif c == "#" and not self.cur and not self.in_word:
                raise self.error(
                    "a '#' outside quotes starts a shell comment that swallows the rest of the line",
                    "quote the value",
                )
            elif c == "$" and s.startswith("$'", self.i):
                raise self.error(
                    "$'...' outside double quotes is ANSI-C quoting, which rtbook does not model",
                    "quote the value with single quotes",
                )
            elif c == "$" and s.startswith('$"', self.i):
                dq = True  # $"..." is a locale-translated double-quoted string
                self.in_word = True
                self.i += 2
            elif c == "$":
                self.split_into_words(self.dollar())
            elif c == "*":
                raise self.error(
                    "an unquoted '*' (between the file's double quotes) is expanded against the container's files",
                    "quote it with single quotes",
                )
            elif c == "{" and re.match(r"\{[^\s{}\"']*(,|\.\.)[^\s{}\"']*\}", s[self.i :]):
                raise self.error(
                    "an unquoted {a,b} is brace-expanded into several words",
                    "quote it with single quotes",
                )
            elif c == "`":
                raise self.error("a backquote runs a command", "remove the backquote or use the awk entrypoint")
            elif c == "~" and not self.cur and not self.in_word and (self.i + 1 >= len(s) or s[self.i + 1] in "/ \t"):
                self.cur.append(self.env.get("HOME", _IMAGE_ENV["HOME"]))
                self.in_word = True
                self.i += 1
            else:
                self.cur.append(c)
                self.in_word = True
                self.i += 1
        if not dq:
            raise self.error(
                "an odd number of double quotes leaves the echo's closing quote unmatched",
                "balance the double quotes or switch to the awk kong-entrypoint.sh",
            )
        self.end_word()
        return " ".join(self.words) + "\n"

    def end_word(self) -> None:
        if self.cur or self.in_word:
            self.words.append("".join(self.cur))
        self.cur = []
        self.in_word = False

    def split_into_words(self, value: str) -> None:
        # Unquoted expansion: IFS (space, tab, newline) splitting; empty results vanish.
        if not value:
            return
        parts = re.split(r"[ \t\n]+", value)
        for n, part in enumerate(parts):
            if n > 0:
                self.end_word()
            if part:
                self.cur.append(part)
                self.in_word = True

    def lookup(self, name: str) -> str:
        self.referenced.setdefault(name, None)
        return self.env.get(name, "")

    def dollar(self) -> str:
        s = self.s
        j = self.i + 1
        nxt = s[j] if j < len(s) else ""
        if nxt == "(":
            raise self.error(
                "'$(' runs a command (or arithmetic) when the entrypoint evals the file",
                "escape it as \\$( or switch to the awk kong-entrypoint.sh",
            )
        if nxt == "{":
            end = self._matching_brace(j)
            self.i = end + 1
            return self._braced(s[j + 1 : end])
        m = _NAME.match(s, j)
        if m and m.group(0) == "_":
            raise self.error("'$_' is bash's last-argument variable", "escape it as \\$_ or use ${NAME}")
        if m:
            self.i = m.end()
            return self.lookup(m.group(0))
        if nxt == "$":
            raise self.error("'$$' expands to the shell's process id", "write a single $ for a variable")
        if nxt.isdigit() or nxt in _SPECIAL_PARAMS:
            self.i = j + 1
            return _SPECIAL_PARAMS.get(nxt, "")
        self.i = j
        return "$"

    def _matching_brace(self, start: int) -> int:
        depth = 0
        for k in range(start, len(self.s)):
            if self.s[k] == "{":
                depth += 1
            elif self.s[k] == "}":
                depth -= 1
                if depth == 0:
                    return k
        raise self.error("'${' has no closing '}'", "close the brace")

    def _braced(self, body: str) -> str:
        if body.startswith("#") and _NAME.fullmatch(body[1:]):
            return str(len(self.lookup(body[1:])))
        m = _NAME.match(body)
        if not m:
            raise self.error(f"'${{{body}}}' is a bad substitution", "use ${NAME} or ${NAME:-default}")
        name, rest = m.group(0), body[m.end() :]
        if not rest:
            return self.lookup(name)
        op_match = re.match(r":?[-=+?]", rest)
        if not op_match:
            raise self.error(
                f"'${{{body}}}' is a bad substitution or an expansion rtbook does not model",
                "use ${NAME} or ${NAME:-x}",
            )
        op, word = op_match.group(0), rest[op_match.end() :]
        value = self.lookup(name)
        is_set = name in self.env
        unset_or_empty = (not is_set) or (op.startswith(":") and value == "")
        word_value = _EvalExpander(word, self.env).expand_word() if word else ""
        kind = op[-1]
        if kind in "-=":
            return word_value if unset_or_empty else value
        if kind == "+":
            return "" if unset_or_empty else word_value
        if unset_or_empty:
            raise self.error(
                f"${{{name}{op}...}} aborts the entrypoint because {name} is unset or empty",
                f"set {name} in the kong service's environment",
            )
        return value

    def expand_word(self) -> str:
        # The word of ${NAME:-word}: only $-expansions matter here.
        out: list[str] = []
        while self.i < len(self.s):
            if self.s[self.i] == "$":
                out.append(self.dollar())
            else:
                out.append(self.s[self.i])
                self.i += 1
        return "".join(out)


def _expand_eval(text: str, env: Mapping[str, str]) -> Expansion:
    expander = _EvalExpander(text, env)
    out = expander.run()
    names = tuple(expander.referenced)
    return Expansion(
        text=out,
        referenced=names,
        unresolved=tuple(n for n in names if n not in env),
        empty=tuple(n for n in names if n in env and env[n] == ""),
    )


def expand_kong_detailed(text: str, env: Mapping[str, str], style: KongStyle) -> Expansion:
    """Expand ``text`` like the Kong entrypoint of ``style`` and report which variables it used.

    Raises:
        InputError: the eval entrypoint would fail on this text (unbalanced quotes, ``$(``...).
    """
    if not isinstance(text, str):
        raise InputError(f"kong.yml must be text, got {type(text).__name__}")
    if style == "awk":
        return _expand_awk(text, env)
    if style == "eval":
        return _expand_eval(text, env)
    if style == "none":
        names = tuple(dict.fromkeys(m.group(1) for m in _AWK_VAR.finditer(text)))
        return Expansion(text=text, referenced=names, unresolved=names)
    raise InputError(f"unknown kong.yml expansion style {style!r}; use 'eval', 'awk' or 'none'")


def expand_kong(text: str, env: Mapping[str, str], style: KongStyle) -> str:
    """Return ``text`` expanded the way the Kong entrypoint of ``style`` does it."""
    return expand_kong_detailed(text, env, style).text


def kong_placeholders(text: str) -> tuple[str, ...]:
    """Every ``$NAME`` / ``${NAME}`` referenced in a kong.yml template, in order of first use."""
    names = [m.group(1) for m in re.finditer(r"\$\{?([A-Za-z_][A-Za-z_0-9]*)", text)]
    return tuple(dict.fromkeys(names))


# ====================================================================== model


@dataclass(frozen=True)
class KongPlugin:
    """A plugin instance; ``scope`` is ``global``, ``service:<name>``, ``route:<name>`` or ``consumer:<name>``."""

    name: str
    config: Mapping[str, Any] = field(default_factory=dict)
    enabled: bool = True
    scope: str = "global"


@dataclass(frozen=True)
class KongRoute:
    """A route with Kong's defaults filled in (``strip_path`` true, ``preserve_host`` false)."""

    name: str
    paths: tuple[str, ...] = ()
    strip_path: bool = True
    preserve_host: bool = False
    protocols: tuple[str, ...] = ("http", "https")
    methods: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    expression: str | None = None
    regex_priority: int = 0
    plugins: tuple[KongPlugin, ...] = ()
    service: str | None = None


@dataclass(frozen=True)
class KongService:
    """An upstream service; ``url`` is split into protocol/host/port/path, explicit fields win."""

    name: str
    url: str | None = None
    protocol: str = "http"
    host: str = ""
    port: int = 80
    path: str | None = None
    routes: tuple[KongRoute, ...] = ()
    plugins: tuple[KongPlugin, ...] = ()

    @property
    def upstream(self) -> str:
        """``protocol://host:port/path`` as Kong dials it."""
        return f"{self.protocol}://{self.host}:{self.port}{self.path or ''}"


@dataclass(frozen=True)
class KongAcl:
    """One ACL group membership."""

    consumer: str
    group: str


@dataclass(frozen=True)
class KongConsumer:
    """A consumer with its key-auth keys (as :class:`Secret`) and ACL groups."""

    username: str
    keyauth_credentials: tuple[Secret, ...] = ()
    groups: tuple[str, ...] = ()
    basicauth_username: str | None = None
    basicauth_password: Secret | None = None


@dataclass(frozen=True)
class KongConfig:
    """A parsed declarative config."""

    source: str
    format_version: str | None
    services: tuple[KongService, ...] = ()
    routes: tuple[KongRoute, ...] = ()
    consumers: tuple[KongConsumer, ...] = ()
    acls: tuple[KongAcl, ...] = ()
    plugins: tuple[KongPlugin, ...] = ()

    def service(self, name: str | None) -> KongService | None:
        """The service called ``name``."""
        return next((s for s in self.services if s.name == name), None)

    def consumer(self, username: str) -> KongConsumer | None:
        """The consumer called ``username``."""
        return next((c for c in self.consumers if c.username == username), None)

    def all_plugins(self) -> Iterator[KongPlugin]:
        """Every plugin instance at any scope."""
        yield from self.plugins
        for s in self.services:
            yield from s.plugins
        for r in self.routes:
            yield from r.plugins

    def effective_plugin(self, route: KongRoute, name: str) -> KongPlugin | None:
        """The enabled instance of plugin ``name`` that applies to ``route`` (route > service > global)."""
        service = self.service(route.service)
        layers: list[Iterable[KongPlugin]] = [route.plugins, service.plugins if service else (), self.plugins]
        for layer in layers:
            for plugin in layer:
                if plugin.name == name:
                    return plugin if plugin.enabled else None
        return None

    def route_for(self, path: str) -> tuple[KongRoute, KongService | None] | None:
        """The route Kong picks for ``path``: exact expressions, then regex paths, then the longest prefix."""
        best: tuple[tuple[int, int, int], KongRoute] | None = None
        for route in self.routes:
            for rank in _route_ranks(route, path):
                if best is None or rank > best[0]:
                    best = (rank, route)
        if best is None:
            return None
        route = best[1]
        return route, self.service(route.service)

    def realtime_routes(self) -> list[KongRoute]:
        """Routes whose paths are under ``/realtime/v1``."""
        return [
            r
            for r in self.routes
            if any(p.startswith(("/realtime/v1", "~/realtime/v1")) for p in r.paths)
            or (r.expression and "/realtime/v1" in r.expression)
        ]

    def realtime_upstream_hosts(self) -> list[str]:
        """Host names of the services that serve the ``/realtime/v1/`` routes (blocked routes excluded)."""
        hosts: list[str] = []
        for route in self.realtime_routes():
            if self.effective_plugin(route, "request-termination") is not None:
                continue
            service = self.service(route.service)
            if service and service.host and service.host not in hosts:
                hosts.append(service.host)
        return hosts


def _route_ranks(route: KongRoute, path: str) -> Iterator[tuple[int, int, int]]:
    for p in route.paths:
        if p.startswith("~"):
            try:
                if re.match(p[1:], path):
                    yield (2, route.regex_priority, len(p))
            except re.error:
                continue
        elif path.startswith(p):
            yield (1, 0, len(p))
    if route.expression:
        for op, value in re.findall(r'http\.path\s*(==|\^=)\s*"([^"]*)"', route.expression):
            if (op == "==" and path == value) or (op == "^=" and path.startswith(value)):
                yield (3 if op == "==" else 1, 0, len(value))


def upstream_path(route: KongRoute, service: KongService | None, request_path: str) -> str:
    """The path Kong sends upstream for ``request_path`` (``path_handling: v0``, Kong's default)."""
    matched = ""
    for p in sorted(route.paths, key=len, reverse=True):
        if not p.startswith("~") and request_path.startswith(p):
            matched = p
            break
    remainder = request_path
    if route.strip_path and matched:
        # v0 keeps the slash that ends a prefix such as /realtime/v1/ (/realtime/v1/websocket -> /websocket).
        remainder = request_path[len(matched.rstrip("/")) if matched.endswith("/") else len(matched) :]
    base = (service.path if service else None) or ""
    if not base:
        return remainder if remainder.startswith("/") else "/" + remainder
    if base.endswith("/") and remainder.startswith("/"):
        return base + remainder[1:]
    return base + remainder


# ---------------------------------------------------------------------- parsing


class _Ctx(ConfigReader):
    def text(self, value: Any, where: str, default: str = "") -> str:
        found = super().text(value, where)
        return default if found is None else found

    def flag(self, value: Any, where: str, default: bool) -> bool:
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.err(where, f"expected true or false, got {value!r}")
        return value

    def strings(self, value: Any, where: str) -> tuple[str, ...]:
        return tuple(self.text(v, f"{where}[{n}]") for n, v in enumerate(self.seq(value, where)))

    def ref(self, value: Any, where: str) -> str | None:
        # An entity reference: a name, or {name: ...} / {id: ...}.
        if value is None:
            return None
        if isinstance(value, Mapping):
            return self.text(value.get("name") or value.get("id") or value.get("username"), where) or None
        return self.text(value, where) or None


def _plugin(ctx: _Ctx, raw: Any, where: str, scope: str) -> KongPlugin:
    data = ctx.mapping(raw, where)
    name = ctx.text(data.get("name"), f"{where}.name")
    if not name:
        raise ctx.err(where, "a plugin without a name")
    return KongPlugin(
        name=name,
        config=dict(ctx.mapping(data.get("config"), f"{where}.config")),
        enabled=ctx.flag(data.get("enabled"), f"{where}.enabled", True),
        scope=scope,
    )


def _route(ctx: _Ctx, raw: Any, where: str, service: str | None, extra: Sequence[KongPlugin]) -> KongRoute:
    data = ctx.mapping(raw, where)
    name = ctx.text(data.get("name"), f"{where}.name") or where
    plugins = tuple(
        _plugin(ctx, p, f"{where}.plugins[{n}]", f"route:{name}")
        for n, p in enumerate(ctx.seq(data.get("plugins"), f"{where}.plugins"))
    ) + tuple(extra)
    priority = data.get("regex_priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ctx.err(f"{where}.regex_priority", f"expected an integer, got {priority!r}")
    expression = data.get("expression")
    return KongRoute(
        name=name,
        paths=ctx.strings(data.get("paths"), f"{where}.paths"),
        strip_path=ctx.flag(data.get("strip_path"), f"{where}.strip_path", True),
        preserve_host=ctx.flag(data.get("preserve_host"), f"{where}.preserve_host", False),
        protocols=ctx.strings(data.get("protocols"), f"{where}.protocols") or ("http", "https"),
        methods=ctx.strings(data.get("methods"), f"{where}.methods"),
        hosts=ctx.strings(data.get("hosts"), f"{where}.hosts"),
        expression=ctx.text(expression, f"{where}.expression") if expression is not None else None,
        regex_priority=priority,
        plugins=plugins,
        service=service if service is not None else ctx.ref(data.get("service"), f"{where}.service"),
    )


_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443, "grpc": 80, "grpcs": 443}


def _service(
    ctx: _Ctx,
    raw: Any,
    where: str,
    route_plugins: Mapping[str, list[KongPlugin]],
    service_plugins: Mapping[str, list[KongPlugin]],
) -> KongService:
    data = ctx.mapping(raw, where)
    name = ctx.text(data.get("name"), f"{where}.name") or where
    url = data.get("url")
    protocol, host, port, path = "http", "", None, None
    if url is not None:
        url_text = ctx.text(url, f"{where}.url")
        m = re.fullmatch(r"([A-Za-z][A-Za-z0-9+.-]*)://(\[[^\]]*\]|[^/:?#]*)(?::([^/?#]*))?([^?#]*)", url_text.strip())
        if not m:
            raise ctx.err(f"{where}.url", f"{url_text!r} is not a URL like http://host:port/path")
        protocol, host = m.group(1).lower(), m.group(2)
        if m.group(3):
            if not m.group(3).isdigit():
                raise ctx.err(f"{where}.url", f"the port {m.group(3)!r} in {url_text!r} is not a number")
            port = int(m.group(3))
        path = m.group(4) or None
    protocol = ctx.text(data.get("protocol"), f"{where}.protocol", protocol).lower()
    host = ctx.text(data.get("host"), f"{where}.host", host)
    if data.get("port") is not None:
        raw_port = data.get("port")
        if isinstance(raw_port, bool) or not isinstance(raw_port, int | str) or not str(raw_port).isdigit():
            raise ctx.err(f"{where}.port", f"expected a port number, got {raw_port!r}")
        port = int(raw_port)
    if data.get("path") is not None:
        path = ctx.text(data.get("path"), f"{where}.path")
    plugins = tuple(
        _plugin(ctx, p, f"{where}.plugins[{n}]", f"service:{name}")
        for n, p in enumerate(ctx.seq(data.get("plugins"), f"{where}.plugins"))
    ) + tuple(service_plugins.get(name, ()))
    routes = tuple(
        _route(ctx, r, f"{where}.routes[{n}]", name, route_plugins.get(_route_name(r), ()))
        for n, r in enumerate(ctx.seq(data.get("routes"), f"{where}.routes"))
    )
    return KongService(
        name=name,
        url=str(url) if url is not None else None,
        protocol=protocol,
        host=host,
        port=port if port is not None else _DEFAULT_PORTS.get(protocol, 80),
        path=path,
        routes=routes,
        plugins=plugins,
    )


def _route_name(raw: Any) -> str:
    return str(raw.get("name")) if isinstance(raw, Mapping) and raw.get("name") is not None else ""


def parse_kong(text: str, *, source: str) -> KongConfig:
    """Parse an (already expanded) declarative config.

    Raises:
        InputError: the text is not YAML, or not a declarative config; the message names
            ``source`` and the line or key.
    """
    if not isinstance(text, str):
        raise InputError(f"{source}: expected text, got {type(text).__name__}")
    data = load_yaml(text, source)
    if data is None:
        raise InputError(
            f"{source}: the file is empty; it must hold Kong's declarative config (_format_version, services...)"
        )
    ctx = _Ctx(source)
    if not isinstance(data, Mapping):
        raise InputError(
            f"{source}: the top level is a {type(data).__name__}; "
            "Kong needs a mapping with _format_version and services"
        )
    fmt = data.get("_format_version")
    format_version = None if fmt is None else str(fmt)

    # Top-level plugins/routes that point at a route or service by reference.
    global_plugins: list[KongPlugin] = []
    route_plugins: dict[str, list[KongPlugin]] = {}
    service_plugins: dict[str, list[KongPlugin]] = {}
    for n, raw in enumerate(ctx.seq(data.get("plugins"), "plugins")):
        pdata = ctx.mapping(raw, f"plugins[{n}]")
        route_ref = ctx.ref(pdata.get("route"), f"plugins[{n}].route")
        service_ref = ctx.ref(pdata.get("service"), f"plugins[{n}].service")
        consumer_ref = ctx.ref(pdata.get("consumer"), f"plugins[{n}].consumer")
        if route_ref:
            route_plugins.setdefault(route_ref, []).append(_plugin(ctx, raw, f"plugins[{n}]", f"route:{route_ref}"))
        elif service_ref:
            service_plugins.setdefault(service_ref, []).append(
                _plugin(ctx, raw, f"plugins[{n}]", f"service:{service_ref}")
            )
        else:
            scope = f"consumer:{consumer_ref}" if consumer_ref else "global"
            global_plugins.append(_plugin(ctx, raw, f"plugins[{n}]", scope))

    services = tuple(
        _service(ctx, raw, f"services[{n}]", route_plugins, service_plugins)
        for n, raw in enumerate(ctx.seq(data.get("services"), "services"))
    )
    routes = [r for s in services for r in s.routes]
    for n, raw in enumerate(ctx.seq(data.get("routes"), "routes")):
        routes.append(_route(ctx, raw, f"routes[{n}]", None, route_plugins.get(_route_name(raw), ())))

    # Consumers, their key-auth keys and ACL groups (nested or top-level).
    keys: dict[str, list[Secret]] = {}
    groups: dict[str, list[str]] = {}
    basic: dict[str, tuple[str, Secret]] = {}
    names: list[str] = []
    for n, raw in enumerate(ctx.seq(data.get("consumers"), "consumers")):
        cdata = ctx.mapping(raw, f"consumers[{n}]")
        username = ctx.text(cdata.get("username") or cdata.get("custom_id"), f"consumers[{n}].username")
        names.append(username)
        for k, cred in enumerate(ctx.seq(cdata.get("keyauth_credentials"), f"consumers[{n}].keyauth_credentials")):
            key = ctx.mapping(cred, f"consumers[{n}].keyauth_credentials[{k}]").get("key")
            if key is not None:
                keys.setdefault(username, []).append(
                    Secret(ctx.text(key, f"consumers[{n}].keyauth_credentials[{k}].key"), f"{username} key")
                )
        for k, acl in enumerate(ctx.seq(cdata.get("acls"), f"consumers[{n}].acls")):
            group = ctx.text(
                ctx.mapping(acl, f"consumers[{n}].acls[{k}]").get("group"), f"consumers[{n}].acls[{k}].group"
            )
            groups.setdefault(username, []).append(group)
    acls: list[KongAcl] = [KongAcl(c, g) for c, gs in groups.items() for g in gs]
    for n, raw in enumerate(ctx.seq(data.get("acls"), "acls")):
        adata = ctx.mapping(raw, f"acls[{n}]")
        consumer = ctx.ref(adata.get("consumer"), f"acls[{n}].consumer") or ""
        group = ctx.text(adata.get("group"), f"acls[{n}].group")
        acls.append(KongAcl(consumer, group))
        groups.setdefault(consumer, []).append(group)
    for n, raw in enumerate(ctx.seq(data.get("keyauth_credentials"), "keyauth_credentials")):
        kdata = ctx.mapping(raw, f"keyauth_credentials[{n}]")
        consumer = ctx.ref(kdata.get("consumer"), f"keyauth_credentials[{n}].consumer") or ""
        if kdata.get("key") is not None:
            keys.setdefault(consumer, []).append(
                Secret(ctx.text(kdata.get("key"), f"keyauth_credentials[{n}].key"), f"{consumer} key")
            )
    for n, raw in enumerate(ctx.seq(data.get("basicauth_credentials"), "basicauth_credentials")):
        bdata = ctx.mapping(raw, f"basicauth_credentials[{n}]")
        consumer = ctx.ref(bdata.get("consumer"), f"basicauth_credentials[{n}].consumer") or ""
        basic[consumer] = (
            ctx.text(bdata.get("username"), f"basicauth_credentials[{n}].username"),
            Secret(ctx.text(bdata.get("password"), f"basicauth_credentials[{n}].password"), "DASHBOARD_PASSWORD"),
        )
    consumers = tuple(
        KongConsumer(
            username=name,
            keyauth_credentials=tuple(keys.get(name, ())),
            groups=tuple(groups.get(name, ())),
            basicauth_username=basic[name][0] if name in basic else None,
            basicauth_password=basic[name][1] if name in basic else None,
        )
        for name in dict.fromkeys([*names, *keys, *groups])
    )
    return KongConfig(
        source=source,
        format_version=format_version,
        services=services,
        routes=tuple(routes),
        consumers=consumers,
        acls=tuple(acls),
        plugins=tuple(global_plugins),
    )


# ====================================================================== stack loading


@dataclass(frozen=True)
class KongLoaded:
    """Everything the checks need: the template, how it was expanded and what it became."""

    source: str
    style: KongStyle
    style_reason: str
    service_name: str
    env: Mapping[str, str] = field(repr=False)
    compose_env: Mapping[str, str] = field(repr=False)
    script_vars: tuple[str, ...]
    template: str = field(repr=False)
    expansion: Expansion | None = field(default=None, repr=False)
    config: KongConfig | None = None
    error: str | None = None
    entrypoint_script: str | None = None


def _words(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return " ".join(str(v) for v in value)
    return str(value)


def _mount_source(stack: Stack, service: Service, target_suffix: str) -> Path | None:
    """The host path mounted at a container path ending with ``target_suffix``."""
    return next((p for t, p in volume_mounts(stack, service).items() if t.endswith(target_suffix)), None)


def _mount_content(service: Service, target_suffix: str) -> str | None:
    """Inline ``content:`` of a long-form volume whose target ends with ``target_suffix`` (Coolify templates)."""
    for vol in getattr(service, "volumes", None) or ():
        content = getattr(vol, "content", None)
        if isinstance(content, str) and str(getattr(vol, "target", "")).endswith(target_suffix):
            return content
    raw = getattr(service, "raw", None)
    volumes = raw.get("volumes") if isinstance(raw, Mapping) else None
    for vol in volumes if isinstance(volumes, list) else ():
        if isinstance(vol, Mapping) and str(vol.get("target", "")).endswith(target_suffix):
            content = vol.get("content")
            if isinstance(content, str):
                return content
    return None


def detect_style(entrypoint: str, script_text: str | None) -> tuple[KongStyle, str]:
    """Pick the expansion style from the entrypoint/command and the entrypoint script, with the reason."""
    if "eval" in entrypoint and "echo" in entrypoint:
        return "eval", "the kong service's entrypoint evals an echo of temp.yml"
    if script_text is not None:
        if "awk" in script_text and "ENVIRON" in script_text:
            return "awk", "kong-entrypoint.sh substitutes variables with awk"
        if "eval" in script_text and "echo" in script_text:
            return "eval", "kong-entrypoint.sh evals an echo of temp.yml"
    if "kong-entrypoint.sh" in entrypoint:
        return "awk", "the entrypoint is kong-entrypoint.sh (awk substitution)"
    return "none", "no substituting entrypoint found: Kong reads kong.yml as written"


_EXPORT = re.compile(r"^\s*(?:export\s+)([A-Za-z_][A-Za-z_0-9]*)=", re.M)


def _script_env(script: str | None, env: Mapping[str, str]) -> dict[str, str]:
    """The variables kong-entrypoint.sh exports before substituting, with the values it computes."""
    if not script:
        return {}
    names = list(dict.fromkeys(_EXPORT.findall(script)))
    if re.search(r"^\s*export\s+WELL_KNOWN_OAUTH_PATH\s*$", script, re.M):
        names.append("WELL_KNOWN_OAUTH_PATH")
    out: dict[str, str] = {}
    opaque = bool(env.get("SUPABASE_SECRET_KEY")) and bool(env.get("SUPABASE_PUBLISHABLE_KEY"))
    for name in names:
        if name == "LUA_AUTH_EXPR":
            out[name] = (
                "$((headers.authorization ~= nil and headers.authorization:sub(1, 10) ~= 'Bearer sb_' and "
                "headers.authorization) or headers.apikey)"
                if not opaque
                else "$((headers.authorization ~= nil and headers.authorization:sub(1, 10) ~= 'Bearer sb_' and "
                "headers.authorization) or (headers.apikey == '<secret>' and 'Bearer <jwt>') or headers.apikey)"
            )
        elif name == "LUA_RT_WS_EXPR":
            out[name] = (
                "$(query_params.apikey)"
                if not opaque
                else ("$((query_params.apikey == '<secret>' and '<jwt>') or query_params.apikey)")
            )
        elif name == "LUA_FUNCTIONS_EXPR":
            out[name] = "$(nil)"
        elif name == "WELL_KNOWN_OAUTH_PATH":
            out[name] = _well_known_path(env.get("JWT_ISSUER", ""))
        else:
            out[name] = f"<set by kong-entrypoint.sh: {name}>"
    return out


def _well_known_path(issuer: str) -> str:
    path = "/.well-known/oauth-authorization-server"
    issuer = issuer.rstrip("/")
    if issuer.startswith(("http://", "https://")):
        rest = issuer.split("://", 1)[1]
        if "/" in rest:
            path += "/" + rest.split("/", 1)[1]
    return path


def display_path(stack: Stack, path: Path) -> str:
    """``path`` relative to the stack root when it lies inside it (shorter remedies), else as given."""
    try:
        if stack.root is None:
            return str(path)
        return str(path.resolve().relative_to(Path(stack.root).resolve()))
    except (ValueError, OSError):
        return str(path)


def realtime_names(stack: Stack | None) -> set[str]:
    """Names under which the Realtime container resolves on the compose network (service, container, aliases)."""
    service = stack.realtime_service() if stack is not None else None
    if service is None:
        return set()
    names = {service.name, *(getattr(service, "dns_names", None) or ())}
    for attr in ("container_name", "hostname"):
        value = getattr(service, attr, None)
        if value:
            names.add(str(value))
    networks = getattr(service, "networks", None)
    if isinstance(networks, Mapping):
        for net in networks.values():
            aliases = net.get("aliases") if isinstance(net, Mapping) else net
            if isinstance(aliases, list | tuple):
                names.update(str(a) for a in aliases)
    return names


def load_kong_detailed(stack: Stack) -> KongLoaded | None:
    """Find, expand and parse the stack's kong.yml; None when the stack does not run Kong.

    Parse and expansion problems are recorded in ``error`` rather than raised, so the checks can
    report them; a missing file raises :class:`InputError`. Done once per Stack (:meth:`Stack.memo`).
    """
    return stack.memo("kong.loaded", lambda: _load_kong_detailed(stack))


def _load_kong_detailed(stack: Stack) -> KongLoaded | None:
    if stack.gateway_kind() != "kong":
        return None
    service = stack.gateway_service()
    if service is None:
        return None
    path = stack.kong_file()
    if path is None and _mount_content(service, "temp.yml") is not None:
        path = Path(stack.root or ".") / "kong.yml (inline in the compose file)"
    if path is None:
        raise InputError(
            f"the stack runs Kong (service {service.name!r}) but no kong.yml was found: mount it at "
            "/home/kong/temp.yml in the service's volumes or pass --kong FILE"
        )
    inline = _mount_content(service, "temp.yml")
    if inline is not None and not Path(path).is_file():
        # Coolify-style templates carry the file inline (volumes[].content) and write it at deploy time.
        template = inline
    else:
        try:
            template = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise InputError(
                f"{path}: kong.yml not found (mounted by service {service.name!r}); create it or fix the volume"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: cannot read kong.yml: {exc}") from None
    script_path = _mount_source(stack, service, "kong-entrypoint.sh")
    if script_path is None:
        sibling = Path(path).with_name("kong-entrypoint.sh")
        script_path = sibling if sibling.is_file() else None
    script: str | None = None
    if script_path is not None:
        try:
            script = script_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            script = None
    if script is None:
        script = _mount_content(service, "kong-entrypoint.sh")
    entry = _words(getattr(service, "entrypoint", None)) + " " + _words(getattr(service, "command", None))
    style, reason = detect_style(entry, script)
    compose_env = {str(k): "" if v is None else str(v) for k, v in dict(service.environment).items()}
    script_env = _script_env(script, compose_env) if style == "awk" else {}
    env = {**_IMAGE_ENV, **compose_env, **script_env}
    loaded_args: dict[str, Any] = dict(
        source=display_path(stack, Path(path)),
        style=style,
        style_reason=reason,
        service_name=service.name,
        env=env,
        compose_env=compose_env,
        script_vars=tuple(script_env),
        template=template,
        entrypoint_script=str(script_path) if script_path else None,
    )
    try:
        expansion = expand_kong_detailed(template, env, style)
    except InputError as exc:
        return KongLoaded(**loaded_args, error=str(exc))
    try:
        config = parse_kong(expansion.text, source=display_path(stack, Path(path)))
    except InputError as exc:
        return KongLoaded(**loaded_args, expansion=expansion, error=str(exc))
    return KongLoaded(**loaded_args, expansion=expansion, config=config)


def load_kong(stack: Stack) -> KongConfig | None:
    """The stack's Kong config as Kong would load it; None when the stack has no Kong.

    Raises:
        InputError: kong.yml is missing, cannot be expanded or does not parse.
    """
    loaded = load_kong_detailed(stack)
    if loaded is None:
        return None
    if loaded.config is None:
        raise InputError(loaded.error or f"{loaded.source}: cannot load")
    return loaded.config
