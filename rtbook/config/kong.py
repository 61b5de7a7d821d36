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

import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from rtbook.bounded import read_bytes, read_text
from rtbook.config.kong_router import (
    Expression,
    ExpressionError,
    PathMatcher,
    Request,
    join_v0,
    normalize_path,
    parse_expression,
    path_matchers,
)
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
    "OSS_PROTOCOLS",
    "Expansion",
    "HostSeen",
    "KongAcl",
    "KongConfig",
    "KongConsumer",
    "KongLoaded",
    "KongPlugin",
    "KongRoute",
    "KongService",
    "KongStyle",
    "RouteMatch",
    "detect_style",
    "display_path",
    "expand_kong",
    "expand_kong_detailed",
    "kong_major",
    "kong_placeholders",
    "kong_version_of",
    "load_kong",
    "load_kong_detailed",
    "normalize_path",
    "parse_kong",
    "realtime_names",
    "upstream_path",
]


KongStyle = Literal["eval", "awk", "none"]
KNOWN_FORMAT_VERSIONS = ("1.1", "2.1", "3.0")

# Kong 3.9.3's bundled plugins (kong/constants.lua); ``KONG_PLUGINS=bundled`` enables all of them.
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

# Bundled in 3.x only (absent from 2.8.1 kong/constants.lua).
BUNDLED_PLUGINS_3_ONLY = frozenset(
    ["ai-prompt-decorator", "ai-prompt-guard", "ai-prompt-template", "ai-proxy", "ai-request-transformer",
     "ai-response-transformer", "opentelemetry", "redirect", "standard-webhooks"]
)


def bundled_plugins(kong_version: str | None) -> frozenset[str]:
    """What ``bundled`` loads in this Kong version (unknown: the 3.x list)."""
    return BUNDLED_PLUGINS - BUNDLED_PLUGINS_3_ONLY if kong_major(kong_version) == 2 else BUNDLED_PLUGINS


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

# The service/route protocols of Kong OSS (2.8.1 and 3.9.3 kong/constants.lua, sorted as the
# schema's one_of message lists them); ws/wss exist only in Kong Enterprise.
OSS_PROTOCOLS = ("grpc", "grpcs", "http", "https", "tcp", "tls", "tls_passthrough", "udp")
_ONE_OF_PROTOCOLS = "expected one of: " + ", ".join(OSS_PROTOCOLS)
_HEADER_NAME = re.compile(r"[A-Za-z0-9_-]+")


def kong_version_of(image: str | None) -> str | None:
    """The Kong version an image reference names (``kong:2.8.1``, ``kong/kong:3.9.3-ubuntu``), or None."""
    if not image:
        return None
    ref = image.split("@", 1)[0]
    last = ref.rsplit("/", 1)[-1]
    if ":" not in last:
        return None
    m = re.match(r"(\d+\.\d+(?:\.\d+)?)", last.split(":", 1)[1])
    return m.group(1) if m else None


def kong_major(version: str | None) -> int | None:
    """2 or 3 (the major version), or None when the version is unknown."""
    if not version:
        return None
    head = version.split(".", 1)[0]
    return int(head) if head.isdigit() else None


@dataclass(frozen=True)
class KongPlugin:
    """A plugin instance; ``scope`` is ``global``, ``service:<name>``, ``route:<name>`` or ``consumer:<name>``."""

    name: str
    config: Mapping[str, Any] = field(default_factory=dict)
    enabled: bool = True
    scope: str = "global"


@dataclass(frozen=True)
class KongRoute:
    """A route with Kong's defaults filled in (``strip_path`` true, ``preserve_host`` false).

    ``matchers`` say how the Kong version at hand reads ``paths`` (prefix or regex);
    ``parsed_expression`` is the readable ``expression`` (``expression_error`` says why not).
    """

    name: str
    paths: tuple[str, ...] = ()
    strip_path: bool = True
    preserve_host: bool = False
    protocols: tuple[str, ...] = ("http", "https")
    methods: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    headers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    expression: str | None = None
    priority: int = 0
    regex_priority: int = 0
    plugins: tuple[KongPlugin, ...] = ()
    service: str | None = None
    matchers: tuple[PathMatcher, ...] = field(default=(), compare=False)
    parsed_expression: Expression | None = field(default=None, compare=False, repr=False)
    expression_error: str | None = None


@dataclass(frozen=True)
class KongService:
    """An upstream service as Kong loads it: a ``url`` overwrites protocol, host, port and path.

    ``declared_protocol`` keeps an explicit ``protocol:`` field (the official files say ``ws``),
    which Kong discards when ``url`` is set (the shorthand is applied last).
    """

    name: str
    url: str | None = None
    protocol: str = "http"
    host: str = ""
    port: int = 80
    path: str | None = None
    routes: tuple[KongRoute, ...] = ()
    plugins: tuple[KongPlugin, ...] = ()
    declared_protocol: str | None = None

    @property
    def upstream(self) -> str:
        """``protocol://host:port/path`` as Kong dials it."""
        return f"{self.protocol}://{self.host}:{self.port}{self.path or ''}"

    @property
    def host_header(self) -> str:
        """The Host Kong sends (``preserve_host`` off): the host, plus the port unless it is the default."""
        default = (self.port == 80 and self.protocol in ("http", "grpc")) or (
            self.port == 443 and self.protocol in ("https", "grpcs")
        )
        return self.host if default else f"{self.host}:{self.port}"


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
    id: str | None = None
    generated_keys: int = 0  # `- key:` left empty: Kong generates a random key nobody knows


@dataclass(frozen=True)
class RouteMatch:
    """The route Kong picks for a request, and what it matched.

    Attributes:
        route: the route.
        service: its service (None for a route without one).
        path: the normalised request path the router saw.
        prefix: the part of ``path`` the route matched (what ``strip_path`` removes); None when
            the route matched on something else than the path.
    """

    route: KongRoute
    service: KongService | None
    path: str
    prefix: str | None


@dataclass(frozen=True)
class HostSeen:
    """The Host header Realtime receives through one Realtime route.

    Attributes:
        route: the route's name.
        host: the Host value, or None when it is the client's own Host (``preserve_host``) or a
            template rtbook cannot evaluate.
        how: where the value comes from, in words.
        replaced: True when a plugin (request-transformer) sets it rather than the service.
    """

    route: str
    host: str | None
    how: str
    replaced: bool = False


@dataclass(frozen=True)
class KongConfig:
    """A parsed declarative config, read as the Kong version ``kong_version`` reads it.

    ``refusals`` are the reasons Kong refuses to load the file (it does not start); the model is
    still built so the other checks can judge what the file means. ``unmodelled`` lists parts
    rtbook cannot evaluate (an expression outside the modelled subset).
    """

    source: str
    format_version: str | None
    services: tuple[KongService, ...] = ()
    routes: tuple[KongRoute, ...] = ()
    consumers: tuple[KongConsumer, ...] = ()
    acls: tuple[KongAcl, ...] = ()
    plugins: tuple[KongPlugin, ...] = ()
    kong_version: str | None = None
    router_flavor: str | None = None
    refusals: tuple[str, ...] = ()
    unmodelled: tuple[str, ...] = ()

    @property
    def major(self) -> int | None:
        """The Kong major version (2 or 3), None when unknown."""
        return kong_major(self.kong_version)

    def service(self, name: str | None) -> KongService | None:
        """The service called ``name``."""
        return next((s for s in self.services if s.name == name), None)

    def consumer(self, username: str) -> KongConsumer | None:
        """The consumer called ``username`` (or with that id, as ``anonymous`` may name it)."""
        return next((c for c in self.consumers if username in (c.username, c.id)), None)

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

    def match(
        self, path: str, method: str = "GET", host: str | None = None, headers: Mapping[str, str] | None = None
    ) -> RouteMatch | None:
        """The route Kong picks for a request (``host`` None: any host a route lists is assumed)."""
        norm = normalize_path(path.split("?", 1)[0])
        hdrs = {k.lower(): v for k, v in (headers or {}).items()}
        best: tuple[tuple[int, ...], int, KongRoute, str | None] | None = None
        for index, route in enumerate(self.routes):
            for rank, prefix in _route_ranks(route, norm, method, host, hdrs, self.major, self.router_flavor):
                if best is None or (rank, -index) > (best[0], -best[1]):
                    best = (rank, index, route, prefix)
        if best is None:
            return None
        route = best[2]
        return RouteMatch(route, self.service(route.service), norm, best[3])

    def route_for(
        self, path: str, method: str = "GET", host: str | None = None
    ) -> tuple[KongRoute, KongService | None] | None:
        """The route Kong picks for ``path`` (sent to ``host``), with its service."""
        found = self.match(path, method, host)
        return None if found is None else (found.route, found.service)

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

    def host_seen(self, route: KongRoute) -> HostSeen:
        """The Host header the upstream of ``route`` receives.

        request-transformer ``replace`` (or ``append``) of ``host`` sets the upstream Host, whatever
        ``preserve_host`` says (PDK ``set_header('host')`` writes ``upstream_host``); ``add``
        never touches ``host``. Otherwise ``preserve_host`` forwards the client's Host, and by
        default Kong sends the service host (``:port`` unless the protocol's default).
        """
        transformer = self.effective_plugin(route, "request-transformer")
        if transformer is not None:
            for action in ("replace", "append"):
                section = transformer.config.get(action)
                entries = section.get("headers") if isinstance(section, Mapping) else None
                for entry in entries if isinstance(entries, list) else ():
                    name, value = _transformer_entry(entry)
                    if name.lower() != "host" or value == "":
                        continue
                    if "$(" in value:
                        return HostSeen(route.name, None, f"request-transformer {action} of Host with the template "
                                        f"{value.strip()!r}", replaced=True)
                    return HostSeen(route.name, value.strip(), f"request-transformer {action}s the Host header",
                                    replaced=True)
        if route.preserve_host:
            return HostSeen(route.name, None, "preserve_host: true forwards the client's Host")
        service = self.service(route.service)
        if service is None or not service.host:
            return HostSeen(route.name, None, "the route has no service")
        return HostSeen(route.name, service.host_header, f"the upstream host of service {service.name!r}")

    def realtime_hosts_seen(self) -> list[HostSeen]:
        """:meth:`host_seen` of every Realtime route that is not blocked by request-termination."""
        return [
            self.host_seen(r)
            for r in self.realtime_routes()
            if self.effective_plugin(r, "request-termination") is None
        ]


def _transformer_entry(entry: Any) -> tuple[str, str]:
    # request-transformer's "^([^:]+):*(.-)$": name up to the first colon, all colons skipped, the
    # rest (leading blanks included) is the value.
    m = re.match(r"^([^:]+):*(.*)$", str(entry), re.S)
    return (m.group(1), m.group(2)) if m else (str(entry), "")


def _host_matches(patterns: Sequence[str], host: str | None) -> bool:
    if host is None:
        return True  # the caller does not know the client's Host: assume one the route lists
    bare = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    for pattern in patterns:
        if "*" in pattern:
            regex = "^" + re.escape(pattern).replace(r"\*", ".+") + "$"
            if re.match(regex, host, re.I) or re.match(regex, bare, re.I):
                return True
        elif pattern.lower() in (host.lower(), bare.lower()):
            return True
    return False


def _route_ranks(
    route: KongRoute,
    path: str,
    method: str,
    host: str | None,
    headers: Mapping[str, str],
    major: int | None,
    flavor: str | None,
) -> Iterator[tuple[tuple[int, ...], str | None]]:
    """(priority, matched prefix) for each way ``route`` matches the request; Kong picks the highest."""
    if route.expression is not None:
        if route.parsed_expression is None or major == 2 or flavor not in (None, "expressions"):
            return
        ok, matched = route.parsed_expression.match(Request(path, method, host, headers))
        if ok:
            # transform.lua get_priority: EXPRESSION_ONLY_BIT puts every expression route first.
            yield (1, route.priority, 0, 0, 0, 0, 0), matched
        return
    if route.methods and method.upper() not in route.methods:
        return
    if route.hosts and not _host_matches(route.hosts, host):
        return
    for name, values in route.headers.items():
        got = headers.get(name.lower())
        if got is None or got.lower() not in {v.lower() for v in values}:
            return
    criteria = sum(bool(x) for x in (route.methods, route.hosts, route.headers, route.matchers))
    plain_hosts = int(bool(route.hosts) and not any("*" in h for h in route.hosts))
    if not route.matchers:
        if criteria:
            yield (0, criteria, plain_hosts, 0, len(route.headers), 0, 0), None
        return
    for matcher in route.matchers:
        prefix = matcher.match(path)
        if prefix is None:
            continue
        if matcher.regex:
            yield (0, criteria, plain_hosts, 1, len(route.headers), route.regex_priority, 0), prefix
        else:
            yield (0, criteria, plain_hosts, 0, len(route.headers), 0, len(matcher.value)), prefix


def upstream_path(route: KongRoute, service: KongService | None, request_path: str) -> str:
    """The path Kong sends upstream for ``request_path`` on ``route`` (``path_handling: v0``, the default).

    The request path is normalised first (Kong builds the upstream path from the normalised one);
    the matched prefix is the route's regex match or its longest matching prefix, or for an
    expression route the part ``http.path`` matched.
    """
    path = normalize_path(request_path.split("?", 1)[0])
    prefix: str | None = None
    if route.expression is not None and route.parsed_expression is not None:
        prefix = route.parsed_expression.match(Request(path))[1]
    else:
        regex = [p for m in route.matchers if m.regex and (p := m.match(path)) is not None]
        plain = sorted((p for m in route.matchers if not m.regex and (p := m.match(path)) is not None),
                       key=len, reverse=True)
        found = regex + plain
        prefix = found[0] if found else None
    return join_v0(service.path if service else None, route.strip_path, prefix, path)


# ---------------------------------------------------------------------- parsing


class _Ctx(ConfigReader):
    def __init__(self, source: str, major: int | None = None, flavor: str | None = None,
                 format_version: str | None = None) -> None:
        super().__init__(source)
        self.major = major
        self.flavor = flavor
        self.format_version = format_version
        self.refusals: list[str] = []
        self.unmodelled: list[str] = []

    def refuse(self, where: str, message: str) -> None:
        # Kong's declarative loader reports "in 'services': - in entry 3 of 'services': in 'protocol': ...".
        self.refusals.append(f"{where}: {message}")

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


def _kong_where(where: str) -> str:
    """``services[3].routes[0]`` in the words of Kong's loader."""
    parts = []
    for m in re.finditer(r"([A-Za-z_]+)(?:\[(\d+)\])?", where):
        name, index = m.group(1), m.group(2)
        parts.append(f"in '{name}'")
        if index is not None:
            parts.append(f"- in entry {int(index) + 1} of '{name}'")
    return ": ".join(parts)


def _check_plugin(ctx: _Ctx, name: str, config: Mapping[str, Any], where: str) -> None:
    """Kong's schema checks for the plugins the Supabase files use (the ones a plausible edit trips)."""
    kw = _kong_where(where)

    def nonempty(value: Any) -> bool:
        return value not in (None, [], "", {})

    if name == "acl":
        allow = config.get("allow")
        deny = config.get("deny")
        if ctx.major == 2:
            allow = allow if nonempty(allow) else config.get("whitelist")
            deny = deny if nonempty(deny) else config.get("blacklist")
        else:
            for old in ("whitelist", "blacklist"):
                if old in config:
                    ctx.refuse(f"{kw}: in 'config': in '{old}'", "unknown field")
        if nonempty(allow) and nonempty(deny):
            ctx.refuse(kw, "exactly one of these fields must be non-empty: 'config.allow', 'config.deny'")
        elif not nonempty(allow) and not nonempty(deny):
            ctx.refuse(kw, "at least one of these fields must be non-empty: 'config.allow', 'config.deny'")
        if ctx.major == 2 and "always_use_authenticated_groups" in config:
            ctx.refuse(f"{kw}: in 'config': in 'always_use_authenticated_groups'", "unknown field")
    elif name == "key-auth":
        if ctx.major == 2 and "realm" in config:
            ctx.refuse(f"{kw}: in 'config': in 'realm'", "unknown field")
        names = config.get("key_names")
        if isinstance(names, list):
            for n, key_name in enumerate(names):
                if not isinstance(key_name, str) or not _HEADER_NAME.fullmatch(key_name):
                    ctx.refuse(f"{kw}: in 'config': in 'key_names': - in entry {n + 1} of 'key_names'",
                               "bad header name, allowed characters are A-Z, a-z, 0-9, '_', and '-'")
    elif name == "cors":
        if ctx.major == 2 and "private_network" in config:
            ctx.refuse(f"{kw}: in 'config': in 'private_network'", "unknown field")
    elif name == "basic-auth":
        if ctx.major == 2 and "realm" in config:
            ctx.refuse(f"{kw}: in 'config': in 'realm'", "unknown field")
    elif name == "request-transformer":
        for action in ("remove", "rename", "replace", "add", "append"):
            section = config.get(action)
            if not isinstance(section, Mapping):
                continue
            for target in ("headers", "querystring", "body"):
                entries = section.get(target)
                for n, entry in enumerate(entries if isinstance(entries, list) else ()):
                    # The eval entrypoint strips double quotes, so "Name: value" can arrive as a YAML mapping.
                    if not isinstance(entry, str) or (action != "remove" and ":" not in entry):
                        ctx.refuse(f"{kw}: in 'config': in '{action}': in '{target}': - in entry {n + 1} of "
                                   f"'{target}'", "expected a string like 'name:value'"
                                   + (" (a YAML mapping: quotes around it were lost)" if isinstance(entry, Mapping)
                                      else ""))
    elif name == "request-termination":
        status = config.get("status_code", 503)
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            ctx.refuse(f"{kw}: in 'config': in 'status_code'", "value should be between 100 and 599")
        if config.get("message") is not None and (config.get("body") is not None
                                                  or config.get("content_type") is not None):
            ctx.refuse(f"{kw}: in 'config'", "message cannot be used with content_type or body")
        elif config.get("content_type") is not None and config.get("body") is None:
            ctx.refuse(f"{kw}: in 'config'", "content_type requires a body")
        if config.get("echo") and (config.get("body") is not None or config.get("content_type") is not None):
            ctx.refuse(f"{kw}: in 'config'", "echo cannot be used with content_type and body")


def _plugin(ctx: _Ctx, raw: Any, where: str, scope: str) -> KongPlugin:
    data = ctx.mapping(raw, where)
    name = ctx.text(data.get("name"), f"{where}.name")
    if not name:
        raise ctx.err(where, "a plugin without a name")
    config = dict(ctx.mapping(data.get("config"), f"{where}.config"))
    _check_plugin(ctx, name, config, where)
    return KongPlugin(
        name=name,
        config=config,
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
    regex_priority = data.get("regex_priority", 0)
    if isinstance(regex_priority, bool) or not isinstance(regex_priority, int):
        raise ctx.err(f"{where}.regex_priority", f"expected an integer, got {regex_priority!r}")
    priority = data.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ctx.err(f"{where}.priority", f"expected an integer, got {priority!r}")
    kw = _kong_where(where)
    protocols = ctx.strings(data.get("protocols"), f"{where}.protocols") or ("http", "https")
    for n, proto in enumerate(protocols):
        if proto not in OSS_PROTOCOLS:
            ctx.refuse(f"{kw}: in 'protocols': - in entry {n + 1} of 'protocols'", _ONE_OF_PROTOCOLS)
    paths = ctx.strings(data.get("paths"), f"{where}.paths")
    matchers = path_matchers(paths, ctx.major, ctx.format_version)
    for n, matcher in enumerate(matchers):
        if matcher.error:
            ctx.refuse(f"{kw}: in 'paths': - in entry {n + 1} of 'paths'", matcher.error)
    headers_raw = ctx.mapping(data.get("headers"), f"{where}.headers")
    headers = {str(k): ctx.strings(v if isinstance(v, list) else [v], f"{where}.headers.{k}")
               for k, v in headers_raw.items()}
    expression = data.get("expression")
    parsed: Expression | None = None
    expression_error: str | None = None
    if expression is not None:
        expression = ctx.text(expression, f"{where}.expression")
        if ctx.major == 2 or (ctx.major is not None and ctx.flavor != "expressions"):
            why = "Kong 2.x" if ctx.major == 2 else f"router_flavor {ctx.flavor!r}"
            ctx.refuse(f"{kw}: in 'expression'", f"unknown field ({why} has no expression routes; set "
                       "KONG_ROUTER_FLAVOR: expressions on Kong 3.x)")
        elif paths or data.get("methods") or data.get("hosts") or headers:
            ctx.refuse(kw, "'expression' cannot be combined with 'paths', 'methods', 'hosts' or 'headers'")
        try:
            parsed = parse_expression(expression)
        except ExpressionError as exc:
            expression_error = str(exc)
            ctx.unmodelled.append(f"route {name!r}: expression {expression!r}: {exc}; rtbook treats it as "
                                  "matching nothing")
    return KongRoute(
        name=name,
        paths=paths,
        strip_path=ctx.flag(data.get("strip_path"), f"{where}.strip_path", True),
        preserve_host=ctx.flag(data.get("preserve_host"), f"{where}.preserve_host", False),
        protocols=protocols,
        methods=tuple(m.upper() for m in ctx.strings(data.get("methods"), f"{where}.methods")),
        hosts=ctx.strings(data.get("hosts"), f"{where}.hosts"),
        headers=headers,
        expression=expression,
        priority=priority,
        regex_priority=regex_priority,
        plugins=plugins,
        service=service if service is not None else ctx.ref(data.get("service"), f"{where}.service"),
        matchers=matchers,
        parsed_expression=parsed,
        expression_error=expression_error,
    )


_DEFAULT_PORTS = {"http": 80, "https": 443, "grpc": 80, "grpcs": 443}


def _service(
    ctx: _Ctx,
    raw: Any,
    where: str,
    route_plugins: Mapping[str, list[KongPlugin]],
    service_plugins: Mapping[str, list[KongPlugin]],
) -> KongService:
    data = ctx.mapping(raw, where)
    name = ctx.text(data.get("name"), f"{where}.name") or where
    kw = _kong_where(where)
    declared = data.get("protocol")
    declared_protocol = ctx.text(declared, f"{where}.protocol").lower() if declared is not None else None
    protocol = declared_protocol or "http"
    host = ctx.text(data.get("host"), f"{where}.host")
    port: int | None = None
    if data.get("port") is not None:
        raw_port = data.get("port")
        if isinstance(raw_port, bool) or not isinstance(raw_port, int | str) or not str(raw_port).isdigit():
            raise ctx.err(f"{where}.port", f"expected a port number, got {raw_port!r}")
        port = int(raw_port)
    path = ctx.text(data.get("path"), f"{where}.path") if data.get("path") is not None else None
    url = data.get("url")
    if url is not None:
        # Kong's url shorthand (entities/services.lua) is applied after the entity is read and
        # overwrites protocol, host, port and path, even those written explicitly.
        url_text = ctx.text(url, f"{where}.url")
        m = re.fullmatch(
            r"(?:([A-Za-z][A-Za-z0-9+.-]*):)?//(\[[^\]]*\]|[^/:?#]*)(?::([^/?#]*))?([^?#]*)(?:\?[^#]*)?(?:#.*)?",
            url_text.strip(),
        )
        if not m:
            raise ctx.err(f"{where}.url", f"{url_text!r} is not a URL like http://host:port/path")
        url_port = int(m.group(3)) if m.group(3) and m.group(3).isdigit() else None
        if m.group(3) and url_port is None:
            raise ctx.err(f"{where}.url", f"the port {m.group(3)!r} in {url_text!r} is not a number")
        by_port = "http" if url_port == 80 else "https" if url_port == 443 else None
        protocol = (m.group(1) or "").lower() or by_port or "http"
        host = m.group(2)
        port = url_port if url_port is not None else _DEFAULT_PORTS.get(protocol if protocol in ("http", "https")
                                                                          else "", 80)
        path = m.group(4) or None
    if protocol not in OSS_PROTOCOLS:
        ctx.refuse(f"{kw}: in 'protocol'", _ONE_OF_PROTOCOLS)
    if not host:
        ctx.refuse(f"{kw}: in 'host'", "required field missing")
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
        declared_protocol=declared_protocol,
    )


def _route_name(raw: Any) -> str:
    return str(raw.get("name")) if isinstance(raw, Mapping) and raw.get("name") is not None else ""


def parse_kong(
    text: str, *, source: str, kong_version: str | None = None, router_flavor: str | None = None
) -> KongConfig:
    """Parse an (already expanded) declarative config as Kong ``kong_version`` reads it.

    ``kong_version`` None means "unknown" (3.x path semantics, no version-only refusals);
    ``router_flavor`` is ``KONG_ROUTER_FLAVOR`` (3.x default ``traditional_compatible``).
    What Kong refuses at start-up is collected in :attr:`KongConfig.refusals`.

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
    major = kong_major(kong_version)
    flavor = router_flavor
    if major is not None and major >= 3 and not flavor:
        flavor = "traditional_compatible"
    if not isinstance(data, Mapping):
        raise InputError(
            f"{source}: the top level is a {type(data).__name__}; "
            "Kong needs a mapping with _format_version and services"
        )
    fmt = data.get("_format_version")
    format_version = None if fmt is None else str(fmt)
    ctx = _Ctx(source, major, flavor if major is not None else router_flavor, format_version)

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
    generated: dict[str, int] = {}
    groups: dict[str, list[str]] = {}
    basic: dict[str, tuple[str, Secret]] = {}
    ids: dict[str, str] = {}
    names: list[str] = []

    def add_basic(consumer: str, bdata: Mapping[str, Any], where: str) -> None:
        basic[consumer] = (
            ctx.text(bdata.get("username"), f"{where}.username"),
            Secret(ctx.text(bdata.get("password"), f"{where}.password"), "DASHBOARD_PASSWORD"),
        )

    for n, raw in enumerate(ctx.seq(data.get("consumers"), "consumers")):
        cdata = ctx.mapping(raw, f"consumers[{n}]")
        username = ctx.text(cdata.get("username") or cdata.get("custom_id"), f"consumers[{n}].username")
        names.append(username)
        if cdata.get("id") is not None:
            ids[username] = ctx.text(cdata.get("id"), f"consumers[{n}].id")
        for k, cred in enumerate(ctx.seq(cdata.get("keyauth_credentials"), f"consumers[{n}].keyauth_credentials")):
            key = ctx.mapping(cred, f"consumers[{n}].keyauth_credentials[{k}]").get("key")
            if key is not None and key != "":
                keys.setdefault(username, []).append(
                    Secret(ctx.text(key, f"consumers[{n}].keyauth_credentials[{k}].key"), f"{username} key")
                )
            else:
                # keyauth_credentials.key is `auto`: an empty key gets a random one.
                generated[username] = generated.get(username, 0) + 1
        for k, acl in enumerate(ctx.seq(cdata.get("acls"), f"consumers[{n}].acls")):
            group = ctx.text(
                ctx.mapping(acl, f"consumers[{n}].acls[{k}]").get("group"), f"consumers[{n}].acls[{k}].group"
            )
            groups.setdefault(username, []).append(group)
        for k, cred in enumerate(ctx.seq(cdata.get("basicauth_credentials"),
                                         f"consumers[{n}].basicauth_credentials")):
            add_basic(username, ctx.mapping(cred, f"consumers[{n}].basicauth_credentials[{k}]"),
                      f"consumers[{n}].basicauth_credentials[{k}]")
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
        if kdata.get("key") not in (None, ""):
            keys.setdefault(consumer, []).append(
                Secret(ctx.text(kdata.get("key"), f"keyauth_credentials[{n}].key"), f"{consumer} key")
            )
        else:
            generated[consumer] = generated.get(consumer, 0) + 1
    for n, raw in enumerate(ctx.seq(data.get("basicauth_credentials"), "basicauth_credentials")):
        bdata = ctx.mapping(raw, f"basicauth_credentials[{n}]")
        consumer = ctx.ref(bdata.get("consumer"), f"basicauth_credentials[{n}].consumer") or ""
        add_basic(consumer, bdata, f"basicauth_credentials[{n}]")
    # keyauth_credentials.key is unique: the same key on two credentials stops Kong.
    owners: dict[str, str] = {}
    for consumer, secrets in keys.items():
        for secret in secrets:
            value = secret.reveal()
            if value in owners:
                ctx.refuse(
                    "in 'keyauth_credentials'",
                    f"uniqueness violation: 'keyauth_credentials' entity with key set to '<the {owners[value]} key>' "
                    f"already declared (consumer {consumer!r} has the same key as {owners[value]!r})",
                )
            else:
                owners[value] = consumer
    consumers = tuple(
        KongConsumer(
            username=name,
            keyauth_credentials=tuple(keys.get(name, ())),
            groups=tuple(groups.get(name, ())),
            basicauth_username=basic[name][0] if name in basic else None,
            basicauth_password=basic[name][1] if name in basic else None,
            id=ids.get(name),
            generated_keys=generated.get(name, 0),
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
        kong_version=kong_version,
        router_flavor=flavor,
        refusals=tuple(ctx.refusals),
        unmodelled=tuple(ctx.unmodelled),
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
    kong_version: str | None = None
    router_flavor: str | None = None

    @property
    def kong_major(self) -> int | None:
        """2 or 3 from the Kong image tag; None when the tag says no version."""
        return kong_major(self.kong_version)


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
    # Docker's DNS answers for the service name, container_name and network aliases; `hostname:` only
    # names the container to itself.
    for attr in ("container_name",):
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
        if not os.path.lexists(path):
            raise InputError(
                f"{path}: kong.yml not found (mounted by service {service.name!r}); create it or fix the volume"
            )
        template = read_text(path, "kong.yml")  # bounded: regular file, 1 MiB, never blocks
    script_path = _mount_source(stack, service, "kong-entrypoint.sh")
    if script_path is None:
        sibling = Path(path).with_name("kong-entrypoint.sh")
        script_path = sibling if sibling.is_file() else None
    script: str | None = None
    if script_path is not None and os.path.lexists(script_path):
        script = read_bytes(script_path, "entrypoint script").decode("utf-8", errors="replace")
    if script is None:
        script = _mount_content(service, "kong-entrypoint.sh")
    entry = _words(getattr(service, "entrypoint", None)) + " " + _words(getattr(service, "command", None))
    style, reason = detect_style(entry, script)
    compose_env = {str(k): "" if v is None else str(v) for k, v in dict(service.environment).items()}
    script_env = _script_env(script, compose_env) if style == "awk" else {}
    env = {**_IMAGE_ENV, **compose_env, **script_env}
    kong_version = kong_version_of(getattr(service, "image", None))
    flavor = compose_env.get("KONG_ROUTER_FLAVOR") or None
    if flavor is None and kong_major(kong_version) == 3:
        flavor = "traditional_compatible"  # 3.x kong_defaults.lua
    loaded_args: dict[str, Any] = dict(
        kong_version=kong_version,
        router_flavor=flavor,
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
        config = parse_kong(expansion.text, source=display_path(stack, Path(path)), kong_version=kong_version,
                            router_flavor=flavor)
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
