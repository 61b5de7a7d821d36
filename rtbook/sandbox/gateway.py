"""A Kong-compatible gateway for the sandbox (``python -m rtbook.sandbox.gateway CONFIG.json``).

It serves a stack's ``kong.yml`` the way Kong 2.8.1 or 3.9.3 does (the Kong image tag of the
stack picks the version; ``kong_version`` in the config JSON): the ``kong-entrypoint.sh`` steps are
replayed (``LUA_*`` expressions, ``WELL_KNOWN_OAUTH_PATH``, awk ``$VAR`` substitution from the kong
service's environment, empty ``- key:`` lines deleted); the request path is normalised as Kong's
router does (``%XX`` of unreserved characters decoded, dot segments removed, ``//`` merged); routes
are ranked like Kong's router (expression routes of the ``expressions`` flavor first, then more
match criteria, regex before prefix, longest prefix); ``strip_path`` is applied with ``path_handling
v0``; the service ``url`` overrides any explicit protocol/host/port/path (Kong's shorthand).

Plugins: ``cors``, ``key-auth``, ``basic-auth``, ``acl``, ``request-transformer`` (headers and
query string, Lua ``$(...)`` templates of the entrypoint), ``request-termination`` and the one
``post-function`` idiom of the official file (clear a header when blank), with the options,
defaults, texts and headers of the Kong version served. Kong-generated answers use Kong's body
formats: ``kong.response.exit`` (compact JSON), ``kong.response.error`` (a template chosen by
``Accept``; 3.x adds ``request_id``) and nginx's error pages for 502/504 (``Accept``, else
``Content-Type``, else text/plain). A config Kong refuses (``protocol: ws``, ``url: ws://``, an
acl with both or neither of allow/deny, an expression route outside the expressions flavor, two
consumers with one key...) is a startup error with Kong's message. Anything this gateway does not
implement is a startup error naming it. Upstream host names resolve through the config's
``hosts`` map only.

The gateway deliberately shares no code with :mod:`rtbook.config.kong`: it is an independent reading of
the same files, so the product's parser is checked against it rather than against itself.

Config JSON (written 0600 by the manager; it holds the kong environment's keys)::

    {"kong_yml": "DIR/volumes/api/kong.yml", "env": {"SUPABASE_ANON_KEY": "...", ...},
     "hosts": {"realtime-dev.supabase-realtime": "127.0.0.1:40001", "auth": null},
     "host": "127.0.0.1", "port": 0, "kong_version": "3.9.3"}

A host mapped to ``null`` is a compose service the sandbox does not run (502 like a refused
connection); a host missing from the map fails name resolution (503, as Kong answers).
``KONG_ROUTER_FLAVOR`` and ``KONG_UNTRUSTED_LUA`` are read from ``env`` like Kong reads them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import contextvars
import dataclasses
import json
import logging
import re
import signal
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode

import aiohttp
import yaml
from aiohttp import WSMsgType, web
from multidict import CIMultiDict
from yarl import URL

from rtbook.bounded import check_yaml_shape, read_text
from rtbook.exceptions import ConfigError, InputError
from rtbook.sandbox._child import config_argument
from rtbook.secrets import Redactor

__all__ = [
    "DEFAULT_KONG_VERSION",
    "Consumer",
    "GatewayConfig",
    "KongConfig",
    "Plugin",
    "Route",
    "Service",
    "Template",
    "build_app",
    "entrypoint_env",
    "expand_kong_yml",
    "main",
    "match_route",
    "normalize",
    "parse_kong",
    "upstream_path",
]

log = logging.getLogger("rtbook.sandbox.gateway")

DEFAULT_KONG_VERSION = "3.9.3"  # the official 2026 Kong overlay (docker-compose.kong.yml)

# Kong's plugin priorities, higher first in the access phase (<v>/kong/plugins/*/handler.lua).
_PRIORITY = {
    2: {"cors": 2000, "key-auth": 1003, "basic-auth": 1001, "acl": 950, "request-transformer": 801,
        "request-termination": 2, "post-function": -1000},
    3: {"cors": 2000, "key-auth": 1250, "basic-auth": 1100, "acl": 950, "request-transformer": 801,
        "request-termination": 2, "post-function": -1000},
}

_HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
    "transfer-encoding", "upgrade", "host", "content-length",
}
_WS_HANDSHAKE = {"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions", "sec-websocket-protocol"}
# Kong OSS service/route protocols (kong/constants.lua), in the order the schema's message lists them.
_KONG_PROTOCOLS = ("grpc", "grpcs", "http", "https", "tcp", "tls", "tls_passthrough", "udp")


class GatewayConfigError(ConfigError):
    """The kong.yml or the gateway config uses something this gateway does not implement, or is invalid."""


@dataclass(frozen=True)
class Version:
    """The Kong version served and the settings that change behaviour."""

    text: str = DEFAULT_KONG_VERSION
    router_flavor: str = "traditional_compatible"
    untrusted_lua: str = "sandbox"

    @property
    def major(self) -> int:
        """2 or 3."""
        return int(self.text.split(".", 1)[0])

    @property
    def server(self) -> str:
        """The ``Server`` header of Kong-generated answers."""
        return f"kong/{self.text}"

    @property
    def via(self) -> str:
        """The ``Via`` header of proxied answers (2.8: ``kong/2.8.1``; 3.x: ``1.1 kong/3.9.3``)."""
        return self.server if self.major == 2 else f"1.1 {self.server}"

    @classmethod
    def of(cls, text: str, env: Mapping[str, str]) -> Version:
        """The version ``text`` with ``KONG_ROUTER_FLAVOR``/``KONG_UNTRUSTED_LUA`` from the kong environment."""
        m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", text or "")
        if not m or m.group(1) not in ("2", "3"):
            raise GatewayConfigError(f"kong_version {text!r} is not served; the gateway knows Kong 2.x and 3.x")
        flavor = env.get("KONG_ROUTER_FLAVOR") or ("traditional" if m.group(1) == "2" else "traditional_compatible")
        return cls(text=m.group(0), router_flavor=flavor, untrusted_lua=env.get("KONG_UNTRUSTED_LUA") or "sandbox")


# ============================================================ entrypoint replay


def entrypoint_env(env: Mapping[str, str]) -> dict[str, str]:
    """The environment after ``kong-entrypoint.sh`` exported its ``LUA_*`` and oauth path variables."""
    out = dict(env)
    secret, publishable = env.get("SUPABASE_SECRET_KEY", ""), env.get("SUPABASE_PUBLISHABLE_KEY", "")
    srk, ak = env.get("SERVICE_ROLE_KEY_ASYMMETRIC", ""), env.get("ANON_KEY_ASYMMETRIC", "")
    if secret and publishable:
        out["LUA_AUTH_EXPR"] = (
            "$((headers.authorization ~= nil and headers.authorization:sub(1, 10) ~= 'Bearer sb_' and "
            f"headers.authorization) or (headers.apikey == '{secret}' and 'Bearer {srk}') or "
            f"(headers.apikey == '{publishable}' and 'Bearer {ak}') or headers.apikey)"
        )
        out["LUA_RT_WS_EXPR"] = (
            f"$((query_params.apikey == '{secret}' and '{srk}') or "
            f"(query_params.apikey == '{publishable}' and '{ak}') or query_params.apikey)"
        )
        out["LUA_FUNCTIONS_EXPR"] = (
            f"$((headers.apikey == '{secret}' and '{srk}') or (headers.apikey == '{publishable}' and '{ak}') or "
            f"(headers.authorization == 'Bearer {secret}' and '{srk}') or "
            f"(headers.authorization == 'Bearer {publishable}' and '{ak}') or nil)"
        )
    else:
        out["LUA_AUTH_EXPR"] = (
            "$((headers.authorization ~= nil and headers.authorization:sub(1, 10) ~= 'Bearer sb_' and "
            "headers.authorization) or headers.apikey)"
        )
        out["LUA_RT_WS_EXPR"] = "$(query_params.apikey)"
        out["LUA_FUNCTIONS_EXPR"] = "$(nil)"
    path = "/.well-known/oauth-authorization-server"
    issuer = env.get("JWT_ISSUER", "")
    if issuer:
        issuer = issuer.rstrip("/")
        if not issuer.startswith(("http://", "https://")):
            raise GatewayConfigError(
                f"JWT_ISSUER must start with http:// or https:// (got: {issuer}); "
                "kong-entrypoint.sh exits with this error too; fix API_EXTERNAL_URL in .env"
            )
        rest = issuer.split("://", 1)[1]
        if "/" in rest:
            path = "/.well-known/oauth-authorization-server/" + rest.split("/", 1)[1]
    out["WELL_KNOWN_OAUTH_PATH"] = path
    return out


_VAR = re.compile(r"\$[A-Za-z_][A-Za-z_0-9]*")
_EMPTY_KEY = re.compile(r"^[ \t]*- key:[ \t]*$")


def expand_kong_yml(text: str, env: Mapping[str, str]) -> str:
    """The awk substitution of ``kong-entrypoint.sh``: ``$VAR`` present in ``env`` replaced, others kept.

    Substituted text is not rescanned (awk appends it to the result), then lines that are an empty
    ``- key:`` are removed (the script's ``sed``).
    """
    out_lines = []
    for line in text.split("\n"):
        expanded = _VAR.sub(lambda m: env.get(m.group(0)[1:], m.group(0)), line)
        if not _EMPTY_KEY.match(expanded):
            out_lines.append(expanded)
    return "\n".join(out_lines)


# ============================================================ Lua templates (request-transformer)

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'[^']*'|\"[^\"]*\")|(?P<num>-?\d+)|(?P<op>==|~=|\(|\)|,|:)|(?P<name>[A-Za-z_][A-Za-z_0-9.]*))"
)


class LuaTable(tuple[str, ...]):
    """A repeated header or query argument: Kong's ``get_headers()``/``get_query()`` give a Lua table."""

    def __str__(self) -> str:
        return "table: 0x00000000"  # what tostring() prints for a table (its address)


class _LuaError(Exception):
    """A Lua runtime error inside a template: Kong fails the request with 500."""


Env = Mapping[str, Mapping[str, Any]]
Expr = Callable[[Env], Any]


def _lua_sub(value: str, i: int, j: int = -1) -> str:
    # string.sub: 1-based, inclusive, negative indices count from the end.
    n = len(value)
    i = max(n + i + 1, 1) if i < 0 else max(i, 1)
    j = n + j + 1 if j < 0 else min(j, n)
    return value[i - 1 : j] if i <= j else ""


def _truthy(value: Any) -> bool:
    return value is not None and value is not False


def _lua_eq(a: Any, b: Any) -> bool:
    if isinstance(a, LuaTable) or isinstance(b, LuaTable):
        return a is b  # tables compare by identity
    return type(a) is type(b) and a == b


def _lua_tostring(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


class _LuaParser:
    """A recursive-descent reader for the Lua expression subset the entrypoint's templates use."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            m = _TOKEN.match(text, pos)
            if not m:
                raise GatewayConfigError(f"unsupported Lua expression in request-transformer: {text!r} (at {pos})")
            kind = m.lastgroup or ""
            self.tokens.append((kind, m.group(kind)))
            pos = m.end()
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None or (value is not None and tok[1] != value):
            raise GatewayConfigError(f"unsupported Lua expression in request-transformer: {self.text!r}")
        self.i += 1
        return tok

    def parse(self) -> Expr:
        expr = self.or_expr()
        if self.peek() is not None:
            raise GatewayConfigError(f"unsupported Lua expression in request-transformer: {self.text!r}")
        return expr

    def or_expr(self) -> Expr:
        left = self.and_expr()
        while self.peek() == ("name", "or"):
            self.take()
            right = self.and_expr()
            left = (lambda a, b: lambda e: a(e) if _truthy(a(e)) else b(e))(left, right)
        return left

    def and_expr(self) -> Expr:
        left = self.cmp_expr()
        while self.peek() == ("name", "and"):
            self.take()
            right = self.cmp_expr()
            left = (lambda a, b: lambda e: b(e) if _truthy(a(e)) else a(e))(left, right)
        return left

    def cmp_expr(self) -> Expr:
        left = self.postfix()
        tok = self.peek()
        if tok is not None and tok[1] in ("==", "~="):
            self.take()
            right = self.postfix()
            if tok[1] == "==":
                return lambda e: _lua_eq(left(e), right(e))
            return lambda e: not _lua_eq(left(e), right(e))
        return left

    def postfix(self) -> Expr:
        expr = self.primary()
        while self.peek() == ("op", ":"):
            self.take()
            method = self.take()[1]
            if method != "sub":
                raise GatewayConfigError(f"unsupported Lua method :{method} in request-transformer: {self.text!r}")
            self.take("(")
            start = int(self.take()[1])
            end = -1
            if self.peek() == ("op", ","):
                self.take()
                end = int(self.take()[1])
            self.take(")")

            def sub(e: Env, inner: Expr = expr, s: int = start, t: int = end) -> Any:
                value = inner(e)
                if value is None:
                    raise _LuaError("attempt to index a nil value")
                if not isinstance(value, str) or isinstance(value, LuaTable):
                    raise _LuaError("attempt to call method 'sub' (a nil value)")
                return _lua_sub(value, s, t)

            expr = sub
        return expr

    def primary(self) -> Expr:
        kind, value = self.take()
        if value == "(":
            inner = self.or_expr()
            self.take(")")
            return inner
        if kind == "str":
            lit = value[1:-1]
            return lambda e: lit
        if kind == "num":
            number = int(value)
            return lambda e: number
        if kind == "name":
            if value == "nil":
                return lambda e: None
            if value in ("true", "false"):
                flag = value == "true"
                return lambda e: flag
            root, _, key = value.partition(".")
            if root in ("headers", "query_params") and key and "." not in key:
                # get_headers()'s __index: case-insensitive, '_' read as '-'; query names are exact.
                norm = key.lower().replace("_", "-") if root == "headers" else key
                return lambda e: e[root].get(norm)
        raise GatewayConfigError(f"unsupported Lua term {value!r} in request-transformer: {self.text!r}")


@dataclass(frozen=True)
class Template:
    """A request-transformer value: literal text with ``$(lua)`` parts compiled at startup."""

    source: str
    parts: tuple[str | Expr, ...]

    @property
    def has_code(self) -> bool:
        """Whether the value holds a ``$(...)`` expression (what ``untrusted_lua = off`` refuses)."""
        return any(not isinstance(p, str) for p in self.parts)

    @classmethod
    def compile(cls, source: str) -> Template:
        """Split ``source`` into literal text and compiled ``$(...)`` expressions."""
        parts: list[str | Expr] = []
        i = 0
        while True:
            j = source.find("$(", i)
            if j < 0:
                parts.append(source[i:])
                break
            parts.append(source[i:j])
            depth, k = 0, j + 1
            while k < len(source):
                if source[k] == "(":
                    depth += 1
                elif source[k] == ")":
                    depth -= 1
                    if depth == 0:
                        break
                k += 1
            if depth != 0:
                raise GatewayConfigError(f"unbalanced $( in request-transformer value {source!r}")
            parts.append(_LuaParser(source[j + 2 : k]).parse())
            i = k + 1
        return cls(source, tuple(p for p in parts if p != ""))

    def render(self, env: Env) -> str:
        """Evaluate as Penlight does (``tostring(expr or '')``): nil and false render as ``""``.

        Raises:
            _LuaError: the expression fails at run time (``nil:sub``, a repeated header's table);
                Kong answers such a request with 500.
        """
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
            else:
                value = part(env)
                out.append(_lua_tostring(value) if _truthy(value) else "")
        return "".join(out)


# ============================================================ paths (kong/tools/uri.lua)

_RESERVED_CHARS = frozenset("!*'();:@&=+$,/?%#[]")
_UNSAFE = re.compile(r"[^!#$&'()*+,/:;=?@\[\]A-Za-z0-9\-_.~%]")


def normalize(raw_path: str) -> str:
    """The path Kong's router matches and forwards: ``normalize(uri, true)`` of ``kong/tools/uri.lua``.

    ``%XX`` of a character outside RFC 3986's reserved set is decoded (reserved ones stay encoded,
    upper-cased), dot segments are resolved and ``//`` is merged. Works on latin-1 text, byte for byte.
    """
    if raw_path in ("", "/"):
        return raw_path

    def decode(m: re.Match[str]) -> str:
        char = chr(int(m.group(1), 16))
        return m.group(0).upper() if char in _RESERVED_CHARS else char

    path = re.sub(r"%([0-9A-Fa-f]{2})", decode, raw_path)
    if "." not in path and "//" not in path:
        return path
    segments: list[str] = []
    rest = path
    while rest:
        if rest == "/.":
            rest = "/"
        elif rest == "/..":
            rest = "/"
            if segments:
                segments.pop()
        elif rest in (".", ".."):
            rest = ""
        elif rest[:3] == "../":
            rest = rest[3:]
        elif rest[:2] == "./" or rest[:3] == "/./":
            rest = rest[2:]
        elif rest[:4] == "/../":
            rest = rest[3:]
            if segments:
                segments.pop()
        elif rest[:2] == "//":
            rest = rest[1:]
        else:
            cut = rest.find("/", 1)
            segments.append(rest if cut < 0 else rest[:cut])
            rest = "" if cut < 0 else rest[cut:]
    return "".join(segments)


def _escape(path: str) -> str:
    """kong/tools/uri.lua ``escape``: percent-encode what may not travel raw in a request line."""
    return _UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group(0).encode("latin-1", "replace")), path)


@dataclass(frozen=True)
class PathRule:
    """One ``paths`` entry: a prefix, or a regex anchored at the start of the path."""

    value: str
    pattern: re.Pattern[str] | None = None

    def matched(self, path: str) -> str | None:
        if self.pattern is not None:
            m = self.pattern.match(path)
            return m.group(0) if m else None
        return self.value if path.startswith(self.value) else None


def _compile_regex(text: str, where: str) -> re.Pattern[str]:
    # PCRE/Rust named groups (?<name>...) are Python's (?P<name>...).
    py = re.sub(r"\(\?<(?![=!])", "(?P<", text)
    try:
        return re.compile(py)
    except re.error as exc:
        raise GatewayConfigError(f"{where}: invalid regex: '{text}' ({exc})") from None


def _path_rules(paths: Sequence[str], version: Version, format_version: str, where: str) -> tuple[PathRule, ...]:
    """2.8: a path with characters outside ``[A-Za-z0-9.-_~/%]`` is a regex. 3.x: ``~`` marks a regex,
    and a ``_format_version`` 1.1/2.1 file is migrated first (its 2.8 regexes get the ``~``)."""
    plain = re.compile(r"[a-zA-Z0-9.\-_~/%]*")
    rules = []
    for p in paths:
        if not isinstance(p, str):
            raise GatewayConfigError(f"{where}: a path must be a string, got {p!r}")
        if version.major == 2:
            rules.append(PathRule(normalize(p)) if plain.fullmatch(p) else PathRule(p, _compile_regex(p, where)))
            continue
        if format_version in ("1.1", "2.1") and not plain.fullmatch(p):
            decoded = re.sub(r"%([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), p)
            rules.append(PathRule("~" + decoded, _compile_regex(decoded, where)))
        elif p.startswith("~"):
            rules.append(PathRule(p, _compile_regex(p[1:], where)))
        elif format_version in ("1.1", "2.1"):
            rules.append(PathRule(normalize(p)))
        elif normalize(p) != p:
            raise GatewayConfigError(f"{where}: in 'paths': non-normalized path, consider use '{normalize(p)}' instead")
        else:
            rules.append(PathRule(p))
    return tuple(rules)


# ============================================================ expressions (3.x router_flavor = expressions)


@dataclass(frozen=True)
class _Req:
    path: str
    method: str
    host: str
    headers: Mapping[str, str]


# A compiled expression: request -> (matched?, the part of http.path it matched)
Matcher = Callable[[_Req], tuple[bool, str | None]]

_EXPR_LEX = re.compile(
    r"""\s*(?:
      (?P<raw>r\#"(?:[^"]|"(?!\#))*"\#)
    | (?P<str>"(?:\\.|[^"\\])*")
    | (?P<op>&&|\|\||==|!=|\^=|=\^|~|!|\(|\))
    | (?P<ident>[A-Za-z_][\w.\-]*)
    )""",
    re.X,
)


def _compile_expression(text: str, where: str) -> Matcher:
    """``http.path``/``http.method``/``http.host``/``http.headers.*`` with ``== != ^= =^ ~ contains``,
    joined by ``&&``, ``||``, ``!`` and parentheses; anything else is a startup error."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    while text[pos:].strip():
        m = _EXPR_LEX.match(text, pos)
        if not m:
            raise GatewayConfigError(f"{where}: expression {text!r} is not supported by the sandbox gateway")
        tokens.append((m.lastgroup or "", m.group(m.lastgroup or 0)))
        pos = m.end()
    i = 0

    def peek() -> tuple[str, str]:
        return tokens[i] if i < len(tokens) else ("", "")

    def take() -> tuple[str, str]:
        nonlocal i
        if i >= len(tokens):
            raise GatewayConfigError(f"{where}: expression {text!r} ends too early")
        i += 1
        return tokens[i - 1]

    def disjunction() -> Matcher:
        parts = [conjunction()]
        while peek() == ("op", "||"):
            take()
            parts.append(conjunction())
        if len(parts) == 1:
            return parts[0]

        def any_of(r: _Req) -> tuple[bool, str | None]:
            for part in parts:
                ok, got = part(r)
                if ok:
                    return ok, got
            return False, None

        return any_of

    def conjunction() -> Matcher:
        parts = [negation()]
        while peek() == ("op", "&&"):
            take()
            parts.append(negation())
        if len(parts) == 1:
            return parts[0]

        def all_of(r: _Req) -> tuple[bool, str | None]:
            first: str | None = None
            for part in parts:
                ok, got = part(r)
                if not ok:
                    return False, None
                first = first if first is not None else got
            return True, first

        return all_of

    def negation() -> Matcher:
        if peek() == ("op", "!"):
            take()
            inner = negation()
            return lambda r: (not inner(r)[0], None)
        if peek() == ("op", "("):
            take()
            inner = disjunction()
            if take() != ("op", ")"):
                raise GatewayConfigError(f"{where}: unbalanced parentheses in expression {text!r}")
            return inner
        return predicate()

    def predicate() -> Matcher:
        kind, name = take()
        lowered = False
        if (kind, name) == ("ident", "lower"):
            take()
            name = take()[1]
            take()
            lowered = True
        elif kind != "ident":
            raise GatewayConfigError(f"{where}: expression {text!r}: a field was expected, got {name!r}")
        op = take()[1]
        if op not in ("==", "!=", "^=", "=^", "~", "contains"):
            raise GatewayConfigError(f"{where}: expression operator {op!r} is not supported by the sandbox gateway")
        vkind, raw = take()
        if vkind == "raw":
            value = raw[3:-2]
        elif vkind == "str":
            value = re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), raw[1:-1])
        else:
            raise GatewayConfigError(f"{where}: expression {text!r}: a string was expected after {name} {op}")
        if name == "http.path":
            def get(r: _Req) -> str | None:
                return r.path
        elif name == "http.method":
            def get(r: _Req) -> str | None:
                return r.method
        elif name == "http.host":
            def get(r: _Req) -> str | None:
                return r.host
        elif name.startswith("http.headers."):
            header = name[len("http.headers."):].replace("_", "-").lower()

            def get(r: _Req) -> str | None:
                return r.headers.get(header)
        else:
            raise GatewayConfigError(f"{where}: expression field {name!r} is not supported by the sandbox gateway")
        rx = _compile_regex(value, where) if op == "~" else None
        on_path = name == "http.path"

        def check(r: _Req) -> tuple[bool, str | None]:
            got = get(r)
            if got is None:
                return False, None
            if lowered:
                got = got.lower()
            part: str | None = None
            if op == "==":
                ok, part = got == value, got
            elif op == "!=":
                ok = got != value
            elif op == "^=":
                ok, part = got.startswith(value), value
            elif op == "=^":
                ok, part = got.endswith(value), value
            elif op == "contains":
                ok = value in got
            else:
                assert rx is not None
                found = rx.search(got)
                ok, part = found is not None, (found.group(0) if found else None)
            return ok, (part if ok and on_path else None)

        return check

    matcher = disjunction()
    if i != len(tokens):
        raise GatewayConfigError(f"{where}: unexpected {tokens[i][1]!r} in expression {text!r}")
    return matcher


# ============================================================ declarative config model


@dataclass(frozen=True)
class Plugin:
    """One plugin instance with its validated config."""

    name: str
    config: Mapping[str, Any]
    priority: int = 0


@dataclass(frozen=True)
class Service:
    """An upstream service (the ``url`` shorthand already applied, as Kong applies it last)."""

    name: str
    scheme: str
    host: str
    port: int
    path: str | None
    protocol: str
    connect_timeout_ms: int = 60000
    read_timeout_ms: int = 60000
    write_timeout_ms: int = 60000
    plugins: tuple[Plugin, ...] = ()

    @property
    def host_header(self) -> str:
        """What Kong sends as Host with preserve_host off: the host, ``:port`` unless 80/http or 443/https."""
        default = (self.port == 80 and self.protocol == "http") or (self.port == 443 and self.protocol == "https")
        return self.host if default else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Route:
    """A route: ``paths`` (prefix or regex) with optional methods/hosts/headers, or an ``expression``."""

    name: str
    service: Service
    paths: tuple[PathRule, ...] = ()
    methods: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    headers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    expression: Matcher | None = None
    priority: int = 0
    regex_priority: int = 0
    strip_path: bool = True
    preserve_host: bool = False
    plugins: tuple[Plugin, ...] = ()


@dataclass(frozen=True)
class Consumer:
    """A consumer with its credentials (key, credential id) and ACL groups."""

    username: str
    id: str
    custom_id: str | None = None
    keys: tuple[tuple[str, str], ...] = ()
    groups: tuple[str, ...] = ()
    basic: tuple[tuple[str, str], ...] = ()


@dataclass
class KongConfig:
    """The parsed declarative config, read as ``version`` reads it."""

    routes: list[Route]
    consumers: dict[str, Consumer]
    plugins: tuple[Plugin, ...] = ()
    version: Version = field(default_factory=Version)
    key_index: dict[str, tuple[Consumer, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for consumer in self.consumers.values():
            for key, credential_id in consumer.keys:
                self.key_index[key] = (consumer, credential_id)

    def consumer(self, ref: str) -> Consumer | None:
        """The consumer with this id, else this username (key-auth ``anonymous``)."""
        return next((c for c in self.consumers.values() if c.id == ref), None) or self.consumers.get(ref)


# ============================================================ parsing

_TOP_KEYS = {"_format_version", "_transform", "_comment", "_workspace", "consumers", "acls",
             "basicauth_credentials", "keyauth_credentials", "services", "routes", "plugins"}
_SERVICE_KEYS = {"name", "_comment", "url", "protocol", "host", "port", "path", "routes", "plugins", "tags",
                 "connect_timeout", "read_timeout", "write_timeout", "retries", "enabled", "id"}
_ROUTE_KEYS = {"name", "_comment", "paths", "strip_path", "preserve_host", "expression", "methods", "protocols",
               "hosts", "headers", "tags", "priority", "path_handling", "request_buffering", "response_buffering",
               "https_redirect_status_code", "regex_priority", "service", "plugins", "id"}
_PLUGIN_OPTIONS: dict[str, set[str]] = {
    "cors": {"origins", "methods", "headers", "exposed_headers", "credentials", "max_age", "preflight_continue",
             "private_network"},
    "key-auth": {"key_names", "hide_credentials", "key_in_header", "key_in_query", "key_in_body",
                 "run_on_preflight", "anonymous", "realm"},
    "basic-auth": {"hide_credentials", "anonymous", "realm"},
    "acl": {"allow", "deny", "hide_groups_header", "always_use_authenticated_groups", "whitelist", "blacklist"},
    "request-transformer": {"add", "append", "remove", "replace", "rename", "http_method"},
    "request-termination": {"status_code", "message", "body", "content_type", "trigger", "echo"},
    "post-function": {"access"},
}
# Options a version does not know: Kong's schema says "unknown field".
_NOT_IN = {
    2: {"key-auth": {"realm"}, "basic-auth": {"realm"}, "cors": {"private_network"},
        "acl": {"always_use_authenticated_groups"}},
    3: {"acl": {"whitelist", "blacklist"}},
}
_CORS_METHODS = ("GET", "HEAD", "PUT", "PATCH", "POST", "DELETE", "OPTIONS", "TRACE", "CONNECT")
_EXPR_EQ_HINT = "only http.path/http.method/http.host/http.headers.* predicates"
_CLEAR_IF_EMPTY = re.compile(
    r'^\s*local (\w+) = kong\.request\.get_header\("([\w-]+)"\)\s*'
    r'if \1 == nil or \1 == "" or \1:find\("\^%s\*\$"\) then\s*'
    r'kong\.service\.request\.clear_header\("\2"\)\s*end\s*$'
)
_ID_SPACE = uuid.UUID("6f2b8c1e-4d2a-4f6e-9b1a-0c5e7d3a2b19")


def _where(kind: str, name: str) -> str:
    return f"{kind} {name!r}"


def _nonempty(value: Any) -> bool:
    return value not in (None, "", [], {})


def _parse_plugin(raw: Any, where: str, version: Version) -> Plugin:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise GatewayConfigError(f"{where}: a plugin entry needs a name, got {raw!r}")
    name = raw["name"]
    if name not in _PLUGIN_OPTIONS:
        raise GatewayConfigError(
            f"{where}: plugin {name!r} is not supported by the sandbox gateway "
            f"(supported: {', '.join(sorted(_PLUGIN_OPTIONS))})"
        )
    extra = set(raw) - {"name", "config", "enabled", "tags", "_comment", "instance_name", "protocols", "id",
                        "service", "route"}
    if "consumer" in raw:
        raise GatewayConfigError(f"{where}: consumer-scoped plugins are not supported by the sandbox gateway")
    if extra:
        raise GatewayConfigError(f"{where}: plugin {name!r} option(s) {sorted(extra)} are not supported")
    config = raw.get("config") or {}
    if not isinstance(config, dict):
        raise GatewayConfigError(f"{where}: plugin {name!r} config must be a mapping")
    unknown = set(config) - _PLUGIN_OPTIONS[name]
    if unknown:
        raise GatewayConfigError(f"{where}: plugin {name!r} config option(s) {sorted(unknown)} are not supported")
    too_new = set(config) & _NOT_IN[version.major].get(name, set())
    if too_new:
        # Kong's schema: "in 'config': in '<option>': unknown field" (the option is from another major version).
        raise GatewayConfigError(f"{where}: plugin {name!r}: in 'config': in '{sorted(too_new)[0]}': unknown field "
                                 f"(Kong {version.text})")
    config = dict(config)
    if name == "key-auth":
        names = config.get("key_names", ["apikey"])
        if not isinstance(names, list) or not names or not all(
                isinstance(n, str) and re.fullmatch(r"[A-Za-z0-9_-]+", n) for n in names):
            raise GatewayConfigError(f"{where}: key-auth key_names {names!r}: bad header name, allowed characters "
                                     "are A-Z, a-z, 0-9, '_', and '-'")
    if name == "acl":
        allow = config.get("allow") if _nonempty(config.get("allow")) else config.get("whitelist")
        deny = config.get("deny") if _nonempty(config.get("deny")) else config.get("blacklist")
        if _nonempty(allow) and _nonempty(deny):
            raise GatewayConfigError(f"{where}: acl: exactly one of these fields must be non-empty: "
                                     "'config.allow', 'config.deny'")
        if not _nonempty(allow) and not _nonempty(deny):
            raise GatewayConfigError(f"{where}: acl: at least one of these fields must be non-empty: "
                                     "'config.allow', 'config.deny'")
        config["allow"], config["deny"] = list(allow or []), list(deny or [])
    if name == "cors":
        for origin in config.get("origins") or []:
            if origin != "*":
                _compile_regex(str(origin), f"{where}: cors origins")
        for method in config.get("methods") or []:
            if method not in _CORS_METHODS:
                raise GatewayConfigError(f"{where}: cors methods: expected one of: {', '.join(_CORS_METHODS)}")
    if name == "request-transformer":
        config = _compile_transformer(config, where, version)
    if name == "post-function":
        clears = []
        for chunk in config.get("access") or []:
            m = _CLEAR_IF_EMPTY.match(str(chunk))
            if not m:
                raise GatewayConfigError(
                    f"{where}: post-function Lua code is not supported by the sandbox gateway, "
                    f"only the 'clear header when empty' idiom of the official file: {str(chunk)[:80]!r}"
                )
            clears.append(m.group(2).lower())
        config = {"clear_if_empty": tuple(clears)}
    if name == "request-termination":
        status = config.get("status_code", 503)
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise GatewayConfigError(f"{where}: request-termination status_code: value should be between 100 and "
                                     f"599, got {status!r}")
        if config.get("message") is not None and (config.get("body") is not None
                                                  or config.get("content_type") is not None):
            raise GatewayConfigError(f"{where}: request-termination: message cannot be used with content_type or "
                                     "body")
        if config.get("content_type") is not None and config.get("body") is None:
            raise GatewayConfigError(f"{where}: request-termination: content_type requires a body")
        if config.get("echo"):
            raise GatewayConfigError(f"{where}: request-termination echo is not supported by the sandbox gateway")
    return Plugin(name, config, _PRIORITY[version.major][name])


def _compile_transformer(config: dict[str, Any], where: str, version: Version) -> dict[str, Any]:
    if config.get("http_method"):
        raise GatewayConfigError(f"{where}: request-transformer http_method is not supported")
    out: dict[str, Any] = {}
    for action in ("remove", "rename", "replace", "add", "append"):
        section = config.get(action) or {}
        if not isinstance(section, dict):
            raise GatewayConfigError(f"{where}: request-transformer {action} must be a mapping")
        bad = {k for k, v in section.items() if v} - {"headers", "querystring"}
        if bad:
            raise GatewayConfigError(f"{where}: request-transformer {action}.{sorted(bad)[0]} is not supported")
        compiled: dict[str, list[Any]] = {}
        for target in ("headers", "querystring"):
            entries: list[Any] = []
            for item in section.get(target) or []:
                if action == "remove":
                    entries.append(str(item))
                    continue
                # "^([^:]+):*(.-)$": the name stops at the first colon, every following colon is
                # skipped and the rest, leading blanks included, is the value.
                m = re.match(r"^([^:]+):*(.*)$", str(item), re.S)
                if not m or ":" not in str(item):
                    raise GatewayConfigError(f"{where}: request-transformer {action} entry {item!r} needs name:value")
                name, value = m.group(1), m.group(2)
                if target == "headers" and not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", name):
                    raise GatewayConfigError(f"{where}: request-transformer {action}.headers: invalid header name "
                                             f"{name!r}")
                if target == "querystring" and value == "" and action != "rename":
                    raise GatewayConfigError(f"{where}: request-transformer {action}.querystring: value must not be "
                                             f"empty in {item!r}")
                if action == "rename":
                    entries.append((name, value))
                    continue
                tmpl = Template.compile(value)
                if tmpl.has_code and version.major >= 3 and version.untrusted_lua == "off":
                    tmpl = _lua_off(tmpl)
                entries.append((name, tmpl))
            compiled[target] = entries
        out[action] = compiled
    return out


def _lua_off(tmpl: Template) -> Template:
    """``untrusted_lua = off``: every ``$(...)`` value fails at request time (500), as Kong's param_value does."""

    def refuse(env: Env) -> Any:
        raise _LuaError("loading of untrusted Lua code disabled because 'untrusted_lua' config option is set to 'off'")

    return Template(tmpl.source, (refuse,))


def _plugins(raw: Any, where: str, version: Version) -> tuple[Plugin, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise GatewayConfigError(f"{where}: plugins must be a list")
    # A plugin with enabled: false does not run in Kong either (it is still validated).
    return tuple(plugin for p in raw
                 if (plugin := _parse_plugin(p, where, version)) and p.get("enabled", True) is not False)


def _kong_refusal(index: int, field_name: str, message: str) -> GatewayConfigError:
    # kong/db/declarative/init.lua pretty_print_error, on one line.
    return GatewayConfigError(
        f"failed parsing declarative configuration: in 'services': - in entry {index + 1} of 'services': "
        f"in '{field_name}': {message}"
    )


def _parse_service(raw: Any, index: int, version: Version) -> tuple[Service, list[Any]]:
    if not isinstance(raw, dict):
        raise GatewayConfigError(f"a service must be a mapping, got {raw!r}")
    name = str(raw.get("name", "?"))
    where = _where("service", name)
    unknown = set(raw) - _SERVICE_KEYS
    if unknown:
        raise GatewayConfigError(f"{where}: option(s) {sorted(unknown)} are not supported by the sandbox gateway")
    protocol = str(raw.get("protocol") or "http").lower()
    host = str(raw.get("host") or "")
    port: int | None = int(raw["port"]) if raw.get("port") is not None else None
    path: str | None = str(raw["path"]) if raw.get("path") is not None else None
    if "url" in raw:
        # The url shorthand (entities/services.lua) runs after the fields are read and overwrites all four.
        m = re.fullmatch(r"(?:([A-Za-z][\w+.-]*):)?//([^/:?#]*)(?::(\d+))?([^?#]*)\S*", str(raw["url"]).strip())
        if not m:
            raise GatewayConfigError(f"{where}: url {raw['url']!r} is not a URL")
        url_port = int(m.group(3)) if m.group(3) else None
        protocol = (m.group(1) or ("http" if url_port == 80 else "https" if url_port == 443 else "http")).lower()
        host = m.group(2)
        port = url_port if url_port is not None else (443 if protocol == "https" else 80)
        path = m.group(4) or None
    if protocol not in _KONG_PROTOCOLS:
        raise _kong_refusal(index, "protocol", "expected one of: " + ", ".join(_KONG_PROTOCOLS))
    if protocol != "http":
        raise GatewayConfigError(f"{where}: protocol {protocol!r} is not supported; the sandbox gateway proxies "
                                 "plain http (WebSockets included)")
    if not host:
        raise _kong_refusal(index, "host", "required field missing")
    service = Service(
        name=name, scheme=protocol, host=host, port=port or 80, path=path, protocol=protocol,
        connect_timeout_ms=int(raw.get("connect_timeout", 60000)),
        read_timeout_ms=int(raw.get("read_timeout", 60000)),
        write_timeout_ms=int(raw.get("write_timeout", 60000)),
        plugins=_plugins(raw.get("plugins"), where, version),
    )
    routes = raw.get("routes") or []
    if not isinstance(routes, list):
        raise GatewayConfigError(f"{where}: routes must be a list")
    return service, routes


def _parse_route(raw: Any, service: Service, version: Version, format_version: str) -> Route:
    if not isinstance(raw, dict):
        raise GatewayConfigError(f"service {service.name!r}: a route must be a mapping")
    name = str(raw.get("name", "?"))
    where = _where("route", name)
    unknown = set(raw) - _ROUTE_KEYS
    if unknown:
        raise GatewayConfigError(f"{where}: option(s) {sorted(unknown)} are not supported by the sandbox gateway")
    protocols = [str(p) for p in raw.get("protocols") or ("http", "https")]
    for p in protocols:
        if p not in _KONG_PROTOCOLS:
            raise GatewayConfigError(f"failed parsing declarative configuration: {where}: in 'protocols': "
                                     f"expected one of: {', '.join(_KONG_PROTOCOLS)}")
    if "http" not in protocols:
        raise GatewayConfigError(f"{where}: protocols {sorted(protocols)} are not served by the sandbox gateway "
                                 "(it listens on plain HTTP)")
    if raw.get("path_handling", "v0") != "v0":
        raise GatewayConfigError(f"{where}: path_handling {raw['path_handling']!r} is not supported (only v0)")
    expression: Matcher | None = None
    if "expression" in raw:
        if version.major == 2 or version.router_flavor != "expressions":
            flavor = f"Kong {version.text}" if version.major == 2 else f"router_flavor {version.router_flavor}"
            raise GatewayConfigError(f"failed parsing declarative configuration: {where}: in 'expression': "
                                     f"unknown field ({flavor}; set KONG_ROUTER_FLAVOR=expressions on Kong 3.x)")
        if any(raw.get(k) for k in ("paths", "methods", "hosts", "headers")):
            raise GatewayConfigError(f"{where}: an expression route cannot also have paths, methods, hosts or headers")
        expression = _compile_expression(str(raw["expression"]), where)
    paths = _path_rules(list(raw.get("paths") or ()), version, format_version, where)
    headers_raw = raw.get("headers") or {}
    if not isinstance(headers_raw, dict):
        raise GatewayConfigError(f"{where}: headers must be a mapping of name to values")
    headers = {str(k).lower(): tuple(str(v) for v in (vals if isinstance(vals, list) else [vals]))
               for k, vals in headers_raw.items()}
    methods = tuple(str(m).upper() for m in raw.get("methods") or ())
    hosts = tuple(str(h) for h in raw.get("hosts") or ())
    if expression is None and not (paths or methods or hosts or headers):
        raise GatewayConfigError(f"{where}: must set one of 'methods', 'hosts', 'headers', 'paths' when "
                                 "'protocols' is 'http'")
    return Route(
        name=name, service=service, paths=paths, methods=methods, hosts=hosts, headers=headers,
        expression=expression, priority=int(raw.get("priority", 0) or 0),
        regex_priority=int(raw.get("regex_priority", 0) or 0),
        strip_path=bool(raw.get("strip_path", True)), preserve_host=bool(raw.get("preserve_host", False)),
        plugins=_plugins(raw.get("plugins"), where, version),
    )


def parse_kong(text: str, version: Version | None = None) -> KongConfig:
    """Parse an expanded ``kong.yml`` as Kong ``version`` does.

    Raises:
        GatewayConfigError: Kong refuses the file, or it uses something this gateway does not implement.
    """
    version = version or Version()
    try:
        check_yaml_shape(text, "kong.yml")  # no alias bomb, no nesting that exhausts the stack
        data = yaml.safe_load(text)
    except InputError as exc:
        raise GatewayConfigError(str(exc)) from None
    except yaml.YAMLError as exc:
        raise GatewayConfigError(f"kong.yml is not valid YAML after expansion: {exc}") from None
    if not isinstance(data, dict):
        raise GatewayConfigError("kong.yml must be a mapping with services, consumers, ...")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise GatewayConfigError(
            f"kong.yml top-level key(s) {sorted(unknown)} are not supported by the sandbox gateway"
        )
    format_version = str(data.get("_format_version", ""))
    if format_version not in ("1.1", "2.1", "3.0"):
        raise GatewayConfigError(f"failed parsing declarative configuration: in '_format_version': expected one of "
                                 f"1.1, 2.1, 3.0, got {data.get('_format_version')!r}")
    consumers: dict[str, dict[str, Any]] = {}
    for raw in data.get("consumers") or []:
        if not isinstance(raw, dict) or not (raw.get("username") or raw.get("custom_id")):
            raise GatewayConfigError(f"a consumer needs a username, got {raw!r}")
        extra = set(raw) - {"username", "keyauth_credentials", "basicauth_credentials", "acls", "custom_id", "tags",
                            "_comment", "id"}
        if extra:
            raise GatewayConfigError(f"consumer {raw.get('username')!r}: option(s) {sorted(extra)} are not supported")
        username = str(raw.get("username") or raw.get("custom_id"))
        c = consumers.setdefault(username, {"keys": [], "groups": [], "basic": [], "id": raw.get("id"),
                                            "custom_id": raw.get("custom_id")})
        for cred in raw.get("keyauth_credentials") or []:
            c["keys"].append(cred.get("key"))
        for acl in raw.get("acls") or []:
            c["groups"].append(str(acl["group"]))
        for cred in raw.get("basicauth_credentials") or []:
            c["basic"].append((str(cred["username"]), str(cred["password"])))
    for raw in data.get("keyauth_credentials") or []:
        _consumer_of(consumers, raw, "keyauth_credentials")["keys"].append(raw.get("key"))
    for raw in data.get("acls") or []:
        _consumer_of(consumers, raw, "acls")["groups"].append(str(raw["group"]))
    for raw in data.get("basicauth_credentials") or []:
        _consumer_of(consumers, raw, "basicauth_credentials")["basic"].append(
            (str(raw["username"]), str(raw["password"]))
        )
    services: dict[str, Service] = {}
    routes: list[Route] = []
    top_plugins: list[Any] = []
    by_route: dict[str, list[Any]] = {}
    by_service: dict[str, list[Any]] = {}
    for raw in data.get("plugins") or []:
        ref_route = raw.get("route") if isinstance(raw, dict) else None
        ref_service = raw.get("service") if isinstance(raw, dict) else None
        if ref_route:
            by_route.setdefault(str(ref_route), []).append(raw)
        elif ref_service:
            by_service.setdefault(str(ref_service), []).append(raw)
        else:
            top_plugins.append(raw)
    for index, raw in enumerate(data.get("services") or []):
        service, raw_routes = _parse_service(raw, index, version)
        extra_plugins = _plugins(by_service.get(service.name), _where("service", service.name), version)
        if extra_plugins:
            service = dataclasses.replace(service, plugins=service.plugins + extra_plugins)
        services[service.name] = service
        if raw.get("enabled", True) is False:
            continue  # Kong matches no route of a disabled service
        for raw_route in raw_routes:
            routes.append(_parse_route(raw_route, service, version, format_version))
    for raw_route in data.get("routes") or []:
        ref = raw_route.get("service") if isinstance(raw_route, dict) else None
        ref_name = str(ref.get("name") if isinstance(ref, dict) else ref)
        if ref_name not in services:
            raise GatewayConfigError(f"route {raw_route.get('name')!r}: unknown service {ref!r}")
        routes.append(_parse_route(raw_route, services[ref_name], version, format_version))
    routes = [
        dataclasses.replace(r, plugins=r.plugins + _plugins(by_route[r.name], _where("route", r.name), version))
        if r.name in by_route else r
        for r in routes
    ]
    built: dict[str, Consumer] = {}
    seen: dict[str, str] = {}
    for name, v in consumers.items():
        cid = str(v["id"]) if v["id"] else str(uuid.uuid5(_ID_SPACE, "consumer:" + name))
        keys: list[tuple[str, str]] = []
        for n, key in enumerate(v["keys"]):
            if key in (None, ""):
                continue  # key is `auto`: Kong generates a random key nobody can send
            key = str(key)
            if key in seen:
                raise GatewayConfigError(
                    "failed parsing declarative configuration: in 'keyauth_credentials': uniqueness violation: "
                    f"'keyauth_credentials' entity with key set to '{key}' already declared "
                    f"(consumers {seen[key]!r} and {name!r})"
                )
            seen[key] = name
            keys.append((key, str(uuid.uuid5(_ID_SPACE, f"keyauth:{name}:{n}"))))
        built[name] = Consumer(name, cid, str(v["custom_id"]) if v["custom_id"] else None, tuple(keys),
                               tuple(v["groups"]), tuple(v["basic"]))
    return KongConfig(routes, built, _plugins(top_plugins, "global plugins", version), version)


def _consumer_of(consumers: dict[str, dict[str, Any]], raw: Any, kind: str) -> dict[str, Any]:
    if not isinstance(raw, dict) or "consumer" not in raw:
        raise GatewayConfigError(f"{kind} entries need a consumer, got {raw!r}")
    ref = raw["consumer"]
    name = str(ref.get("username") or ref.get("id") if isinstance(ref, dict) else ref)
    if name not in consumers:
        raise GatewayConfigError(f"{kind}: unknown consumer {name!r}")
    return consumers[name]


# ============================================================ routing


@dataclass(frozen=True)
class Match:
    """The route picked for a request and the part of the (normalised) path it matched."""

    route: Route
    prefix: str | None
    path: str


def _split_port(host: str) -> tuple[str, int | None]:
    if host.startswith("["):
        inner, _, rest = host.partition("]")
        return inner + "]", int(rest[1:]) if rest[1:].isdigit() else None
    if host.count(":") == 1:
        name, _, port = host.partition(":")
        return name, int(port) if port.isdigit() else None
    return host, None


def _host_ok(route: Route, host: str, major: int = 3, listen_port: int | None = None) -> bool:
    """Whether the request's Host matches one of the route's ``hosts``, as the Kong version does.

    2.8.1 (``kong/router.lua`` MATCH_RULES.HOST): a plain entry equals the Host as sent, or the
    Host without its port, or the Host with its port (80 added when absent: ``split_port``); a
    wildcard entry becomes ``.+`` and is matched, anchored, against the Host with port, any port
    when the entry names none. 3.9.3 (``kong/router/transform.lua``, hosts to ``http.host``): the
    entry's name is compared with the Host without its port (``==``, or ``=^``/``^=`` for a
    leading/trailing ``*``), and an entry's port with the port Kong listens on (``net.dst.port``).
    Host names compare case-insensitively here (DNS names; clients send lowercase).
    """
    raw = host.lower()
    bare, port = _split_port(raw)
    with_port = raw if port is not None else f"{bare}:80"
    for entry in (h.lower() for h in route.hosts):
        name, entry_port = _split_port(entry)
        if major == 2:
            if "*" in entry:
                rx = re.escape(entry).replace(r"\*", ".+")
                rx = "^" + rx + ("" if entry_port is not None else r"(?::\d+)?") + "$"
                if re.match(rx, with_port):
                    return True
            elif entry in (raw, bare, with_port):
                return True
            continue
        if entry_port is not None and entry_port != listen_port:
            continue
        if name.startswith("*"):
            if bare.endswith(name[1:]):
                return True
        elif name.endswith("*"):
            if bare.startswith(name[:-1]):
                return True
        elif bare == name:
            return True
    return False


def match_route(
    config: KongConfig, path: str, method: str = "GET", host: str = "", headers: Mapping[str, str] | None = None,
    listen_port: int | None = None,
) -> Match | None:
    """The route Kong picks: expression routes (``priority``) above all others; then the number of
    criteria, plain hosts, regex over prefix, header count, regex_priority, the matched prefix's
    length, and the order in the file (3.x ``get_priority``; 2.8 sorts its categories alike).

    ``path`` is the raw request path (without query); it is normalised here, as Kong does.
    """
    norm = normalize(path)
    hdrs = {k.lower(): v for k, v in (headers or {}).items()}
    request = _Req(norm, method.upper(), host, hdrs)
    best: tuple[tuple[int, ...], Match] | None = None
    for order, route in enumerate(config.routes):
        candidates: list[tuple[tuple[int, ...], str | None]] = []
        if route.expression is not None:
            ok, part = route.expression(request)
            if ok:
                candidates.append(((1, route.priority, 0, 0, 0, 0, 0, -order), part))
        else:
            if route.methods and request.method not in route.methods:
                continue
            if route.hosts and not _host_ok(route, host, config.version.major, listen_port):
                continue
            if any(hdrs.get(name, "").lower() not in {v.lower() for v in values}
                   for name, values in route.headers.items()):
                continue
            weight = sum(1 for criterion in (route.methods, route.hosts, route.headers, route.paths) if criterion)
            plain_hosts = int(bool(route.hosts) and all("*" not in h for h in route.hosts))
            if not route.paths:
                candidates.append(((0, weight, plain_hosts, 0, len(route.headers), 0, 0, -order), None))
            for rule in route.paths:
                part = rule.matched(norm)
                if part is None:
                    continue
                if rule.pattern is not None:
                    rank: tuple[int, ...] = (0, weight, plain_hosts, 1, len(route.headers), route.regex_priority, 0,
                                             -order)
                else:
                    rank = (0, weight, plain_hosts, 0, len(route.headers), 0, len(rule.value), -order)
                candidates.append((rank, part))
        for rank, part in candidates:
            if best is None or rank > best[0]:
                best = (rank, Match(route, part, norm))
    return None if best is None else best[1]


def upstream_path(service_path: str | None, route: Route, prefix: str | None, path: str) -> str:
    """Kong's ``path_handling: v0`` join (``get_upstream_uri_v0``) for the normalised request ``path``."""
    base = service_path or "/"
    postfix = ""
    if route.strip_path:
        postfix = path[len(prefix) :] if prefix is not None else path[1:]
        if postfix in (".", ".."):
            postfix = ""
        elif postfix[:2] == "./":
            postfix = postfix[2:]
        elif postfix[:3] == "../":
            postfix = postfix[3:]
    if base[-1] == "/":
        if not route.strip_path:
            return base + path[1:]
        if not postfix:
            if base == "/":
                return "/"
            return base if path.endswith("/") else base[:-1]
        return base[:-1] + postfix if postfix[0] == "/" else base + postfix
    if not route.strip_path:
        return base if path == "/" else base + path
    if not postfix:
        return base + "/" if len(path) > 1 and path.endswith("/") else base
    return base + postfix if postfix[0] == "/" else base + "/" + postfix


# ============================================================ Kong-generated answers

_MIME = {
    "json": "application/json; charset=utf-8",
    "html": "text/html; charset=utf-8",
    "xml": "application/xml; charset=utf-8",
    "plain": "text/plain; charset=utf-8",
}
_BY_TYPE = {"application/json": "json", "text/html": "html", "application/xml": "xml", "text/plain": "plain"}


def _mime_of(media: str) -> str:
    """``get_mime_type``: ``type/subtype`` (parameters dropped) to a template name; unknown is JSON."""
    media = media.strip().split(";", 1)[0].strip().lower()
    kind, _, sub = media.partition("/")
    if not sub:
        return "json"
    if sub == "*":
        return "plain" if kind == "text" else "json"
    return _BY_TYPE.get(media, "json")


def _negotiate(accept: str | None) -> str:
    """``get_response_type``: the Accept entry with the highest q (first on ties); none is JSON."""
    best, best_q = "json", 0.0
    for entry in (accept or "").split(","):
        parts = [p.strip() for p in entry.split(";")]
        if not re.fullmatch(r"(?:[a-z0-9][\w!#$&^+.-]*|\*)/(?:[a-z0-9][\w!#$&^+.-]*|\*)", parts[0], re.I):
            continue
        q = 1.0
        for param in parts[1:]:
            m = re.fullmatch(r"q\s*=\s*([01](?:\.\d{0,3})?)", param, re.I)
            if m:
                q = float(m.group(1))
        if q > best_q:
            best, best_q = _mime_of(parts[0]), q
    return best


def _template(kind: str, message: str, request_id: str | None) -> str:
    """kong.response.error's templates (2.8.1 ``kong/tools/utils.lua``; 3.9.3 ``kong/tools/http.lua``, request_id)."""
    if request_id is None:
        return {
            "json": "{\n" f'  "message":"{message}"' "\n}",
            "plain": f"{message}\n",
            "html": "<!doctype html>\n<html>\n  <head>\n    <meta charset=\"utf-8\">\n    <title>Kong Error</title>\n"
                    f"  </head>\n  <body>\n    <h1>Kong Error</h1>\n    <p>{message}.</p>\n  </body>\n</html>\n",
            "xml": f"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<error>\n  <message>{message}</message>\n</error>\n",
        }[kind]
    return {
        "json": "{\n" f'  "message":"{message}",\n  "request_id":"{request_id}"' "\n}",
        "plain": f"{message}\nrequest_id: {request_id}\n",
        "html": "<!doctype html>\n<html>\n  <head>\n    <meta charset=\"utf-8\">\n    <title>Error</title>\n"
                f"  </head>\n  <body>\n    <h1>Error</h1>\n    <p>{message}.</p>\n    <p>request_id: {request_id}</p>\n"
                "  </body>\n</html>\n",
        "xml": f"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<error>\n  <message>{message}</message>\n"
               f"  <requestid>{request_id}</requestid>\n</error>\n",
    }[kind]


def _cjson(value: Any) -> str:
    # lua-cjson: compact, non-ASCII kept, and '/' escaped as '\/'.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).replace("/", "\\/")


# nginx error pages (kong/error_handlers.lua) and request-termination's per-status defaults.
_NGINX_BODIES = {400: "Bad request", 404: "Not found", 405: "Method not allowed", 408: "Request timeout",
                 411: "Length required", 412: "Precondition failed", 413: "Payload too large", 414: "URI too long",
                 417: "Expectation failed", 494: "Request header or cookie too large",
                 500: "An unexpected error occurred", 502: "An invalid response was received from the upstream server",
                 503: "The upstream server is currently unavailable", 504: "The upstream server is timing out"}
_TERMINATION_DEFAULTS = {401: "Unauthorized", 404: "Not found", 405: "Method not allowed",
                         500: "An unexpected error occurred", 502: "Bad Gateway", 503: "Service unavailable"}
# kong.response.error(status) without a message (get_http_error_message).
_ERROR_DEFAULTS = {400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found",
                   405: "Method not allowed", 429: "Too many requests", 500: "An unexpected error occurred",
                   502: "An invalid response was received from the upstream server",
                   503: "The upstream server is currently unavailable", 504: "The upstream server is timing out"}


# ============================================================ server


@dataclass
class GatewayConfig:
    """The gateway process settings."""

    kong_yml: Path
    env: dict[str, str]
    hosts: dict[str, str | None]
    host: str = "127.0.0.1"
    port: int = 0
    kong_version: str = DEFAULT_KONG_VERSION

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> GatewayConfig:
        """Validate the config JSON."""
        unknown = set(data) - {"kong_yml", "env", "hosts", "host", "port", "kong_version"}
        if unknown:
            raise GatewayConfigError(f"unknown gateway config keys: {', '.join(sorted(unknown))}")
        if not isinstance(data.get("kong_yml"), str):
            raise GatewayConfigError('gateway config needs "kong_yml": the path of the stack\'s kong.yml')
        env = data.get("env") or {}
        hosts = data.get("hosts") or {}
        if not isinstance(env, dict) or not isinstance(hosts, dict):
            raise GatewayConfigError('gateway config "env" and "hosts" must be objects')
        for name, target in hosts.items():
            if target is not None and not re.fullmatch(r"[\w.\-]+:\d+", str(target)):
                raise GatewayConfigError(f'gateway config hosts[{name!r}] must be "HOST:PORT" or null, got {target!r}')
        return cls(
            kong_yml=Path(data["kong_yml"]),
            env={str(k): "" if v is None else str(v) for k, v in env.items()},
            hosts={str(k).lower(): (None if v is None else str(v)) for k, v in hosts.items()},
            host=str(data.get("host", "127.0.0.1")),
            port=int(data.get("port", 0)),
            kong_version=str(data.get("kong_version") or DEFAULT_KONG_VERSION),
        )

    @property
    def version(self) -> Version:
        """The Kong version served, with the router flavor and untrusted_lua of the kong environment."""
        return Version.of(self.kong_version, self.env)

    def load_kong(self) -> KongConfig:
        """Read, expand and parse the kong.yml."""
        try:
            text = read_text(self.kong_yml, "kong.yml")  # bounded: regular file, 1 MiB, never blocks
        except InputError as exc:
            raise GatewayConfigError(f"cannot read kong.yml: {exc}") from None
        return parse_kong(expand_kong_yml(text, entrypoint_env(self.env)), self.version)


# Upstream handshake failures: aiohttp's ws_connect drops the body; capture it while the response is open.
_CAPTURE: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("rtbook_gw_capture", default=None)


async def _on_request_end(session: aiohttp.ClientSession, ctx: Any, params: aiohttp.TraceRequestEndParams) -> None:
    box = _CAPTURE.get()
    if box is not None and params.response.status != 101:
        with contextlib.suppress(Exception):
            box["body"] = await asyncio.wait_for(params.response.read(), 10)


def _parse_query(raw: str) -> list[tuple[str, str | None]]:
    """ngx.decode_args: ``a=b`` pairs, ``+`` as space; a bare ``a`` has no value (Lua ``true``)."""
    out: list[tuple[str, str | None]] = []
    for part in raw.split("&") if raw else ():
        if not part:
            continue
        name, eq, value = part.partition("=")
        out.append((unquote(name.replace("+", " ")), unquote(value.replace("+", " ")) if eq else None))
    return out


def _encode_query(args: Mapping[str, Any]) -> str:
    """PDK set_query: keys sorted, ngx.encode_args escaping; a table repeats the key, ``true`` is a bare key."""
    parts: list[str] = []
    for name in sorted(args):
        value = args[name]
        values = list(value) if isinstance(value, list | tuple) else [value]
        for v in values:
            if v is True:
                parts.append(quote(name, safe=""))
            elif v is not None and v is not False:
                parts.append(f"{quote(name, safe='')}={quote(str(v), safe='')}")
    return "&".join(parts)


@dataclass
class _Ctx:
    """One request's state as the plugins change it (Kong's service request plus ngx.ctx)."""

    headers: CIMultiDict[str]
    raw_query: str
    body: bytes = b""
    request_id: str = ""
    consumer: Consumer | None = None
    credential: str | None = None  # the credential's identifier when a credential authenticated
    upstream_host: str | None = None  # a plugin set the Host header
    response_headers: CIMultiDict[str] = field(default_factory=CIMultiDict)
    cors: list[Mapping[str, Any]] = field(default_factory=list)  # cors confs whose header_filter runs

    def query(self) -> dict[str, Any]:
        """kong.request.get_query(): repeated names are a table, a bare name is ``true``."""
        out: dict[str, Any] = {}
        for name, value in _parse_query(self.raw_query):
            got: Any = True if value is None else value
            if name in out:
                prev = out[name]
                out[name] = LuaTable([*(prev if isinstance(prev, LuaTable) else (prev,)), got])
            else:
                out[name] = got
        return out

    def header(self, name: str) -> Any:
        """kong.request.get_headers()[name]: case-insensitive, ``_`` read as ``-``; repeated ones are a table."""
        values = self.headers.getall(name.replace("_", "-"), [])
        if not values:
            return None
        return values[0] if len(values) == 1 else LuaTable(values)

    def header_table(self) -> dict[str, Any]:
        return {name.lower(): self.header(name) for name in dict.fromkeys(k.lower() for k in self.headers)}


class Gateway:
    """The aiohttp application: routing, plugins and proxying, as Kong ``kong.version`` does them."""

    def __init__(self, kong: KongConfig, hosts: Mapping[str, str | None]) -> None:
        self.kong = kong
        self.version = kong.version
        self.hosts = dict(hosts)
        self.session: aiohttp.ClientSession | None = None
        self.sockets: set[Any] = set()

    async def shutdown(self, app: web.Application) -> None:
        # Close open WebSockets first (1001 going away), so SIGTERM does not wait on idle clients.
        for ws in list(self.sockets):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(code=1001, message=b"server shutdown"), 2)

    async def startup(self, app: web.Application) -> None:
        trace = aiohttp.TraceConfig()
        trace.on_request_end.append(_on_request_end)
        self.session = aiohttp.ClientSession(
            auto_decompress=False, trace_configs=[trace], connector=aiohttp.TCPConnector(limit=0),
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def cleanup(self, app: web.Application) -> None:
        if self.session is not None:
            await self.session.close()

    def plugins_for(self, route: Route) -> list[Plugin]:
        """Route plugins override service plugins, which override global ones (by name); Kong's priority order."""
        chosen: dict[str, Plugin] = {}
        for source in (self.kong.plugins, route.service.plugins, route.plugins):
            for plugin in source:
                chosen[plugin.name] = plugin
        return sorted(chosen.values(), key=lambda p: -p.priority)

    # ---------------------------------------------------------------- Kong-generated answers

    def _stamp(self, resp: web.Response, ctx: _Ctx | None, started: float) -> web.Response:
        resp.headers["Server"] = self.version.server
        resp.headers["X-Kong-Response-Latency"] = str(int((time.monotonic() - started) * 1000))
        if self.version.major >= 3 and ctx is not None:
            resp.headers["X-Kong-Request-Id"] = ctx.request_id
        return resp

    def exit(self, status: int, body: Any = None, headers: Mapping[str, str] | None = None) -> web.Response:
        """kong.response.exit: a table body is compact JSON (lua-cjson); a string is sent as is."""
        out = CIMultiDict(headers or {})
        if isinstance(body, dict):
            out.setdefault("Content-Type", "application/json; charset=utf-8")
            return web.Response(status=status, body=_cjson(body).encode(), headers=out)
        if body is None:
            return web.Response(status=status, headers=out)
        return web.Response(status=status, body=str(body).encode(), headers=out)

    def error(self, request: web.Request, ctx: _Ctx, status: int, message: str | None = None,
              headers: Mapping[str, str] | None = None) -> web.Response:
        """kong.response.error: the body template follows the Accept header (no Accept: JSON)."""
        kind = _negotiate(request.headers.get("Accept"))
        text = _template(kind, message or _ERROR_DEFAULTS.get(status, f"The upstream server responded with {status}"),
                         ctx.request_id if self.version.major >= 3 else None)
        out = CIMultiDict(headers or {})
        out["Content-Type"] = _MIME[kind]
        return web.Response(status=status, body=text.encode(), headers=out)

    def nginx_error(self, request: web.Request, ctx: _Ctx, status: int) -> web.Response:
        """kong/error_handlers.lua (502, 504, 500): type from Accept, else Content-Type, else text/plain."""
        accept = request.headers.get("Accept") or request.headers.get("Content-Type") or "text/plain"
        # 2.8.1 reads the header with get_mime_type (no q-values), 3.x with get_response_type.
        kind = _mime_of(accept) if self.version.major == 2 else _negotiate(accept)
        message = _NGINX_BODIES.get(status, f"The upstream server responded with {status}")
        text = _template(kind, message, ctx.request_id if self.version.major >= 3 else None)
        return web.Response(status=status, body=text.encode(), headers={"Content-Type": _MIME[kind]})

    # ---------------------------------------------------------------- request handling

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        raw_path = request.raw_path.split("?", 1)[0]
        raw_query = request.raw_path.split("?", 1)[1] if "?" in request.raw_path else ""
        ctx = _Ctx(CIMultiDict(request.headers), raw_query, request_id=uuid.uuid4().hex)
        sock = request.transport.get_extra_info("sockname") if request.transport else None
        found = match_route(self.kong, raw_path, request.method, request.headers.get("Host", ""),
                            request.headers, listen_port=sock[1] if sock else None)
        if found is None:
            # 2.8.1 exit() (compact JSON), 3.9.3 error() (template with request_id) [runloop/handler.lua].
            if self.version.major == 2:
                resp = self.exit(404, {"message": "no Route matched with those values"})
            else:
                resp = self.error(request, ctx, 404, "no Route matched with those values")
            return self._stamp(resp, ctx, started)
        route, path = found.route, found.path
        upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
        if not upgrade and request.can_read_body:
            ctx.body = await request.read()
        for plugin in self.plugins_for(route):
            try:
                early = self.run_plugin(plugin, request, ctx)
            except _LuaError as exc:
                log.info("%s %s: plugin %s failed: %s", request.method, raw_path, plugin.name, exc)
                early = self.nginx_error(request, ctx, 500)
            if early is not None:
                return self.finish(request, self._stamp(early, ctx, started), ctx)
        service = route.service
        up_path = upstream_path(service.path, route, found.prefix, path)
        host_header = service.host_header
        if route.preserve_host and "Host" in request.headers:
            host_header = request.headers["Host"]
        if ctx.upstream_host is not None:
            host_header = ctx.upstream_host  # a plugin's Host wins over preserve_host (PDK upstream_host)
        target = self.hosts.get(service.host.lower(), "missing")
        if target == "missing":
            log.info("%s %s -> %s: name resolution failed", request.method, raw_path, service.host)
            if self.version.major == 2:
                resp = self.exit(503, {"message": "name resolution failed"})
            else:
                resp = self.error(request, ctx, 503, "name resolution failed")
            return self.finish(request, self._stamp(resp, ctx, started), ctx)
        if target is None:
            log.info("%s %s -> %s: service not run by the sandbox", request.method, raw_path, service.host)
            return self.finish(request, self._stamp(self.nginx_error(request, ctx, 502), ctx, started), ctx)
        fwd = self.upstream_headers(request, ctx, route, found.prefix, raw_path, host_header)
        query = f"?{ctx.raw_query}" if ctx.raw_query else ""
        url = URL(f"http://{target}{_escape(up_path)}{query}", encoded=True)
        if upgrade:
            return await self.proxy_ws(request, url, fwd, ctx, route, started)
        return await self.proxy_http(request, url, fwd, ctx, service, started)

    def upstream_headers(self, request: web.Request, ctx: _Ctx, route: Route, prefix: str | None, raw_path: str,
                         host_header: str) -> CIMultiDict[str]:
        """What Kong's proxy_set_header block sends: the plugins' headers plus Host and X-Forwarded-*."""
        listed = {v.strip().lower() for v in request.headers.get("Connection", "").split(",") if v.strip()}
        if self.version.major >= 3 and listed <= {"keep-alive", "close", "upgrade"}:
            listed = set()
        fwd = CIMultiDict((k, v) for k, v in ctx.headers.items()
                          if k.lower() not in _HOP_BY_HOP and k.lower() not in listed)
        for name in ("X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Port",
                     "X-Forwarded-Path", "X-Forwarded-Prefix", "X-Real-IP", "Via"):
            fwd.popall(name, None)
        peer = request.remote or ""
        prior = request.headers.get("X-Forwarded-For")
        fwd["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
        fwd["X-Forwarded-Proto"] = request.scheme
        fwd["X-Forwarded-Host"] = request.headers.get("Host", "").rsplit(":", 1)[0].lower()
        sock = request.transport.get_extra_info("sockname") if request.transport else None
        fwd["X-Forwarded-Port"] = str(sock[1]) if sock else ""
        fwd["X-Forwarded-Path"] = raw_path
        if route.strip_path and prefix is not None and prefix != "/":
            fwd["X-Forwarded-Prefix"] = prefix
        fwd["X-Real-IP"] = peer
        if self.version.major >= 3:
            client_via = request.headers.get("Via")
            fwd["Via"] = f"{client_via}, 1.1 {self.version.server}" if client_via else f"1.1 {self.version.server}"
            fwd["X-Kong-Request-Id"] = ctx.request_id
        fwd["Host"] = host_header
        return fwd

    def finish(self, request: web.Request, resp: web.StreamResponse, ctx: _Ctx) -> web.StreamResponse:
        """The header_filter phase: headers plugins left for the response, then cors."""
        for name, value in ctx.response_headers.items():
            resp.headers[name] = value
        for conf in ctx.cors:
            self.cors_headers(conf, request, resp.headers, header_filter=True)
        return resp

    # ---------------------------------------------------------------- plugins

    def run_plugin(self, plugin: Plugin, request: web.Request, ctx: _Ctx) -> web.Response | None:
        conf = plugin.config
        if plugin.name == "cors":
            return self.cors(conf, request, ctx)
        if plugin.name == "key-auth":
            return self.key_auth(conf, request, ctx)
        if plugin.name == "basic-auth":
            return self.basic_auth(conf, request, ctx)
        if plugin.name == "acl":
            return self.acl(conf, request, ctx)
        if plugin.name == "request-transformer":
            self.transform(conf, ctx)
            return None
        if plugin.name == "request-termination":
            return self.terminate(conf, ctx)
        if plugin.name == "post-function":
            # The official idiom: clear the header when it is nil, empty or blank (it runs last).
            for name in conf["clear_if_empty"]:
                value = ctx.headers.get(name)
                if value is None or not value.strip():
                    ctx.headers.popall(name, None)
            return None
        raise GatewayConfigError(f"plugin {plugin.name!r} is not supported")  # unreachable: checked at startup

    def terminate(self, conf: Mapping[str, Any], ctx: _Ctx) -> web.Response | None:
        """request-termination: the trigger gates it; body as configured, else message or the per-status default."""
        status = int(conf.get("status_code", 503))
        trigger = conf.get("trigger")
        if trigger and ctx.header(str(trigger)) is None and str(trigger) not in ctx.query():
            return None
        if conf.get("body") is not None:
            headers = {"Content-Type": str(conf["content_type"])} if conf.get("content_type") else {}
            return self.exit(status, str(conf["body"]), headers)
        message = conf.get("message") or _TERMINATION_DEFAULTS.get(status)
        return self.exit(status, {"message": str(message)} if message else None)

    # cors ------------------------------------------------------------

    @staticmethod
    def _origin_parts(origin: str) -> tuple[str, str]:
        """cors normalize_origin: (``scheme://host[:port]`` without a default port, host)."""
        m = re.fullmatch(r"(?:([A-Za-z][\w+.-]*):)?//([^/:?#]*)(?::(\d*))?.*", origin)
        if not m:
            return origin, origin
        scheme, host, port = m.group(1), m.group(2), m.group(3)
        if (scheme == "http" and port == "80") or (scheme == "https" and port == "443"):
            port = None
        return (f"{scheme}://" if scheme else "") + host + (f":{port}" if port else ""), host

    def cors_headers(self, conf: Mapping[str, Any], request: web.Request, out: CIMultiDict[str],
                     header_filter: bool) -> bool:
        """configure_origin + configure_credentials; returns whether every origin is allowed."""
        origins = [str(o) for o in conf.get("origins") or []]
        req_origin = request.headers.get("Origin")

        def vary() -> None:
            if header_filter:
                out.add("Vary", "Origin")
            else:
                out["Vary"] = "Origin"

        allow_all = False
        if not origins or origins == ["*"]:
            out["Access-Control-Allow-Origin"] = "*"
            allow_all = True
        else:
            vary()
            decided = False
            if len(origins) == 1 and re.fullmatch(r"[A-Za-z0-9.:/-]+", origins[0]):
                out["Access-Control-Allow-Origin"] = origins[0]
                decided = True
            elif req_origin:
                req_domain, req_host = self._origin_parts(req_origin)
                for entry in origins:
                    if entry == "*" and self.version.major >= 3:
                        out["Access-Control-Allow-Origin"] = "*"
                        allow_all = decided = True
                        break
                    if re.search(r"[^A-Za-z0-9.:/-]", entry):
                        rx = entry if entry.endswith("$") else entry + "$"
                        rx = rx[1:] if rx.startswith("^") else rx
                        subject = req_host if ":" not in rx else req_domain
                        try:
                            hit = re.match(rx, subject) is not None
                        except re.error:
                            hit = False  # 2.8: '*' among others is not a valid PCRE: no match
                    else:
                        hit = self._origin_parts(entry)[0] == req_domain
                    if hit:
                        out["Access-Control-Allow-Origin"] = req_domain
                        decided = True
                        break
            if not decided:
                out.popall("Access-Control-Allow-Origin", None)
        if conf.get("credentials"):
            if not allow_all:
                out["Access-Control-Allow-Credentials"] = "true"
            elif req_origin:
                # credentials with '*': browsers refuse '*', so Kong echoes the request's Origin.
                vary()
                out["Access-Control-Allow-Origin"] = req_origin
                out["Access-Control-Allow-Credentials"] = "true"
        if header_filter and conf.get("exposed_headers"):
            out["Access-Control-Expose-Headers"] = ",".join(str(h) for h in conf["exposed_headers"])
        return allow_all

    def cors(self, conf: Mapping[str, Any], request: web.Request, ctx: _Ctx) -> web.Response | None:
        """A preflight is OPTIONS with Origin and Access-Control-Request-Method; it is answered 200, empty."""
        preflight = (request.method == "OPTIONS" and request.headers.get("Origin")
                     and request.headers.get("Access-Control-Request-Method"))
        if not preflight:
            ctx.cors.append(conf)  # header_filter adds the headers to whatever answers
            return None
        if conf.get("preflight_continue"):
            return None  # proxied, and the plugin's header_filter is skipped
        headers: CIMultiDict[str] = CIMultiDict()
        self.cors_headers(conf, request, headers, header_filter=False)
        if conf.get("headers"):
            headers["Access-Control-Allow-Headers"] = ",".join(str(h) for h in conf["headers"])
        elif request.headers.get("Access-Control-Request-Headers"):
            headers["Access-Control-Allow-Headers"] = request.headers["Access-Control-Request-Headers"]
        headers["Access-Control-Allow-Methods"] = ",".join(conf.get("methods") or _CORS_METHODS)
        if conf.get("max_age") is not None:
            headers["Access-Control-Max-Age"] = str(conf["max_age"])
        if (self.version.major >= 3 and conf.get("private_network")
                and request.headers.get("Access-Control-Request-Private-Network") == "true"):
            headers["Access-Control-Allow-Private-Network"] = "true"
        return self.exit(200, None, headers)

    # authentication --------------------------------------------------

    def set_consumer(self, ctx: _Ctx, consumer: Consumer, credential: str | None, basic: bool = False) -> None:
        """kong.client.authenticate plus the X-Consumer-* / X-Credential-Identifier / X-Anonymous-Consumer headers."""
        ctx.consumer, ctx.credential = consumer, credential
        h = ctx.headers
        h["X-Consumer-ID"] = consumer.id
        if consumer.custom_id:
            h["X-Consumer-Custom-ID"] = consumer.custom_id
        else:
            h.popall("X-Consumer-Custom-ID", None)
        h["X-Consumer-Username"] = consumer.username
        if credential:
            h["X-Credential-Identifier"] = credential
        else:
            h.popall("X-Credential-Identifier", None)
        if self.version.major == 2:
            if basic and credential:
                h["X-Credential-Username"] = credential
            else:
                h.popall("X-Credential-Username", None)
        if credential:
            h.popall("X-Anonymous-Consumer", None)
        else:
            h["X-Anonymous-Consumer"] = "true"

    def anonymous(self, conf: Mapping[str, Any], ctx: _Ctx) -> None:
        """``anonymous``: any failure lets the request in as that consumer; a missing one is a Lua error (500)."""
        consumer = self.kong.consumer(str(conf["anonymous"]))
        if consumer is None:
            raise _LuaError("either credential or consumer must be provided")
        self.set_consumer(ctx, consumer, None)

    def _body_args(self, request: web.Request, ctx: _Ctx) -> dict[str, Any]:
        """kong.request.get_body() for urlencoded and JSON bodies (multipart is not modelled: empty)."""
        kind = request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if kind == "application/x-www-form-urlencoded":
            out: dict[str, Any] = {}
            for k, v in parse_qsl(ctx.body.decode("latin-1"), keep_blank_values=True):
                out[k] = LuaTable([*(out[k] if isinstance(out[k], LuaTable) else (out[k],)), v]) if k in out else v
            return out
        if kind == "application/json":
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                data = json.loads(ctx.body or b"null")
                if isinstance(data, dict):
                    return {k: (LuaTable(map(str, v)) if isinstance(v, list) else v) for k, v in data.items()}
        return {}

    def _drop_body_arg(self, request: web.Request, ctx: _Ctx, name: str) -> None:
        kind = request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if kind == "application/x-www-form-urlencoded":
            pairs = [(k, v) for k, v in parse_qsl(ctx.body.decode("latin-1"), keep_blank_values=True) if k != name]
            ctx.body = urlencode(sorted(pairs)).encode("latin-1")
        elif kind == "application/json":
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                data = json.loads(ctx.body or b"null")
                if isinstance(data, dict):
                    data.pop(name, None)
                    ctx.body = json.dumps(data, separators=(",", ":")).encode()

    def key_auth(self, conf: Mapping[str, Any], request: web.Request, ctx: _Ctx) -> web.Response | None:
        if request.method == "OPTIONS" and conf.get("run_on_preflight") is False:
            return None  # every OPTIONS, not only CORS preflights
        if conf.get("anonymous") and ctx.credential:
            return None  # an earlier auth plugin already authenticated
        failure = self._key_auth(conf, request, ctx)
        if failure is None:
            return None
        if conf.get("anonymous"):
            self.anonymous(conf, ctx)
            return None
        status, message, headers = failure
        return self.error(request, ctx, status, message, headers)

    def _key_auth(self, conf: Mapping[str, Any], request: web.Request,
                  ctx: _Ctx) -> tuple[int, str, dict[str, str]] | None:
        v3 = self.version.major >= 3
        realm = conf.get("realm")
        challenge = {"WWW-Authenticate": f'Key realm="{realm}"' if realm else "Key"} if v3 else {}
        query = ctx.query()
        body: dict[str, Any] | None = None
        key: str | None = None
        for name in [str(n) for n in conf.get("key_names") or ["apikey"]]:
            value: Any = None
            if conf.get("key_in_header", True):
                value = ctx.header(name)
            if value is None and conf.get("key_in_query", True):
                value = query.get(name)
            if value is None and conf.get("key_in_body", False):
                body = self._body_args(request, ctx) if body is None else body
                value = body.get(name)
            if isinstance(value, LuaTable):
                return 401, "Duplicate API key found", challenge
            if isinstance(value, str):
                key = value
                if conf.get("hide_credentials"):
                    ctx.headers.popall(name.replace("_", "-"), None)
                    if v3:  # clear_query_arg: the other arguments travel as they came
                        kept = [p for p in ctx.raw_query.split("&")
                                if unquote(p.partition("=")[0].replace("+", " ")) != name]
                        ctx.raw_query = "&".join(kept)
                    else:  # set_query(query without it): every argument re-encoded, sorted by name
                        rest = {k: v for k, v in query.items() if k != name}
                        ctx.raw_query = _encode_query(rest)
                    if conf.get("key_in_body"):
                        self._drop_body_arg(request, ctx, name)
                break
            # anything else (a bare ?apikey is Lua true) is no key: try the next name
        if not key:
            if not v3:
                # 2.8.1 sets the challenge on the response itself, so it stays even when anonymous lets it in.
                ctx.response_headers["WWW-Authenticate"] = 'Key realm="kong"'
            return 401, "No API key found in request", challenge
        found = self.kong.key_index.get(key)
        if found is None:
            return 401, ("Unauthorized" if v3 else "Invalid authentication credentials"), challenge
        self.set_consumer(ctx, found[0], found[1])
        return None

    def basic_auth(self, conf: Mapping[str, Any], request: web.Request, ctx: _Ctx) -> web.Response | None:
        if conf.get("anonymous") and ctx.credential:
            return None
        failure = self._basic_auth(conf, ctx)
        if failure is None:
            return None
        if conf.get("anonymous"):
            self.anonymous(conf, ctx)
            return None
        return self.error(request, ctx, 401, failure[0], failure[1])

    def _basic_auth(self, conf: Mapping[str, Any], ctx: _Ctx) -> tuple[str, dict[str, str]] | None:
        v3 = self.version.major >= 3
        challenge = {"WWW-Authenticate": f'Basic realm="{conf.get("realm") or "service"}"' if v3
                     else 'Basic realm="kong"'}
        # 2.8.1 answers bad credentials with its older text and no challenge; 3.x with "Unauthorized" + challenge.
        bad = ("Unauthorized", challenge) if v3 else ("Invalid authentication credentials", {})
        if not (ctx.headers.get("Authorization") or ctx.headers.get("Proxy-Authorization")):
            return "Unauthorized", challenge

        def retrieve(header: str) -> tuple[str | None, str | None]:
            found = self._basic_creds(ctx.headers.get(header))
            if conf.get("hide_credentials"):
                ctx.headers.popall(header, None)
            return found

        def lookup(user: str) -> tuple[Consumer, str] | None:
            for consumer in self.kong.consumers.values():
                for name, password in consumer.basic:
                    if name == user:
                        return consumer, password
            return None

        user, given = retrieve("Proxy-Authorization")
        credential = lookup(user) if user is not None and given is not None else None
        if credential is None:
            user, given = retrieve("Authorization")
            if user is None or given is None:
                return bad
            credential = lookup(user)
        if credential is None or credential[1] != given:
            return bad
        assert user is not None
        self.set_consumer(ctx, credential[0], user, basic=True)
        return None

    @staticmethod
    def _basic_creds(header: str | None) -> tuple[str | None, str | None]:
        """``\\s*[Bb]asic\\s*(.+)``, base64, then ``([^:]+):(.*)``."""
        if not header:
            return None, None
        m = re.search(r"\s*[Bb]asic\s*(.+)", header)
        if not m:
            return None, None
        try:
            decoded = base64.b64decode(m.group(1).strip(), validate=True).decode("latin-1")
        except (binascii.Error, ValueError):
            return None, None
        parts = re.match(r"([^:]+):(.*)", decoded, re.S)
        return (parts.group(1), parts.group(2)) if parts else (None, None)

    def acl(self, conf: Mapping[str, Any], request: web.Request, ctx: _Ctx) -> web.Response | None:
        deny_mode = bool(conf.get("deny"))
        listed = {str(g) for g in (conf.get("deny") if deny_mode else conf.get("allow")) or ()}
        if ctx.consumer is None:
            if ctx.credential:
                return self.error(request, ctx, 403, "You cannot consume this service")
            return self.error(request, ctx, 401)  # no authentication plugin identified anyone
        groups = list(ctx.consumer.groups)
        if not groups and not deny_mode:
            if ctx.credential:
                return self.error(request, ctx, 403, "You cannot consume this service")
            return self.error(request, ctx, 401)
        in_group = bool(set(groups) & listed)
        if in_group == deny_mode:
            return self.error(request, ctx, 403, "You cannot consume this service")
        if not conf.get("hide_groups_header") and groups:
            ctx.headers["X-Consumer-Groups"] = ", ".join(groups)
        # hide_groups_header: true does nothing at all (a client's X-Consumer-Groups stays).
        return None

    # request-transformer ------------------------------------------------

    def transform(self, conf: Mapping[str, Any], ctx: _Ctx) -> None:
        # One template environment for all actions, read lazily from the request as earlier plugins left it.
        env: dict[str, Mapping[str, Any]] = {"headers": ctx.header_table(), "query_params": ctx.query()}

        def render(tmpl: Template) -> str:
            return tmpl.render(env)

        h = ctx.headers
        for name in conf["remove"]["headers"]:
            h.popall(name, None)
        for old, new in conf["rename"]["headers"]:
            values = h.getall(old, [])
            if values:
                h.popall(old, None)
                for v in values:
                    h.add(new, v)
        # iter() renders every entry's template before the action looks at the request, so a failing
        # template fails the request even when the action would change nothing.
        for name, tmpl in conf["replace"]["headers"]:
            if tmpl.source == "":
                continue  # an entry without a value changes nothing
            value = render(tmpl) or " "  # PDK normalize_header sends "" as one space
            if name.lower() == "host":
                ctx.upstream_host = value
            elif name in h:
                h[name] = value
        for name, tmpl in conf["add"]["headers"]:
            if tmpl.source == "":
                continue
            value = render(tmpl) or " "
            if name.lower() != "host" and name not in h:
                h[name] = value
        for name, tmpl in conf["append"]["headers"]:
            if tmpl.source == "":
                continue
            value = render(tmpl) or " "
            if name.lower() == "host":
                ctx.upstream_host = value
            else:
                h.add(name, value)
        qs = conf
        if not any(qs[action]["querystring"] for action in ("remove", "rename", "replace", "add", "append")):
            return
        query: dict[str, Any] = dict(env["query_params"])
        for name in qs["remove"]["querystring"]:
            query.pop(name, None)
        for old, new in qs["rename"]["querystring"]:
            if old in query:
                query[new] = query.pop(old)
        for name, tmpl in qs["replace"]["querystring"]:
            value = render(tmpl)
            if name in query:
                query[name] = value
        for name, tmpl in qs["add"]["querystring"]:
            value = render(tmpl)
            if name not in query:
                query[name] = value
        for name, tmpl in qs["append"]["querystring"]:
            prev = query.get(name)
            value = render(tmpl)
            if prev is None:
                query[name] = value
            else:
                query[name] = LuaTable([*(prev if isinstance(prev, LuaTable) else (str(prev),)), value])
        ctx.raw_query = _encode_query(query)  # set_query: re-encoded, sorted by name

    # ---------------------------------------------------------------- proxying

    def _proxied(self, resp: web.StreamResponse, ctx: _Ctx, t_up: float, started: float) -> None:
        now = time.monotonic()
        resp.headers["X-Kong-Upstream-Latency"] = str(int((now - t_up) * 1000))
        resp.headers["X-Kong-Proxy-Latency"] = str(int((t_up - started) * 1000))
        resp.headers["Via"] = self.version.via
        if self.version.major >= 3:
            resp.headers["X-Kong-Request-Id"] = ctx.request_id

    async def proxy_http(
        self, request: web.Request, url: URL, fwd: CIMultiDict[str], ctx: _Ctx, service: Service, started: float
    ) -> web.StreamResponse:
        assert self.session is not None
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=service.connect_timeout_ms / 1000, sock_read=service.read_timeout_ms / 1000
        )
        # Kong adds none of aiohttp's default request headers.
        skip = [h for h in ("User-Agent", "Accept", "Accept-Encoding") if h not in fwd]
        t_up = time.monotonic()
        try:
            async with self.session.request(
                request.method, url, headers=fwd, data=ctx.body if ctx.body else None,
                timeout=timeout, allow_redirects=False, skip_auto_headers=skip,
            ) as up:
                data = await up.read()
                headers = CIMultiDict((k, v) for k, v in up.headers.items() if k.lower() not in _HOP_BY_HOP)
                status = up.status
        except TimeoutError:
            return self.finish(request, self._stamp(self.nginx_error(request, ctx, 504), ctx, started), ctx)
        except (aiohttp.ClientError, OSError) as exc:
            log.info("%s %s: upstream error %s", request.method, request.path, type(exc).__name__)
            return self.finish(request, self._stamp(self.nginx_error(request, ctx, 502), ctx, started), ctx)
        resp = web.Response(status=status, body=data, headers=headers)
        self._proxied(resp, ctx, t_up, started)
        log.info("%s %s -> %s %s", request.method, request.path, service.name, status)
        return self.finish(request, resp, ctx)

    async def proxy_ws(
        self, request: web.Request, url: URL, fwd: CIMultiDict[str], ctx: _Ctx, route: Route, started: float
    ) -> web.StreamResponse:
        assert self.session is not None
        headers = CIMultiDict((k, v) for k, v in fwd.items() if k.lower() not in _WS_HANDSHAKE)
        protocols = tuple(
            p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
        )
        box: dict[str, Any] = {}
        token = _CAPTURE.set(box)
        t_up = time.monotonic()
        try:
            upstream = await self.session.ws_connect(
                url, headers=headers, protocols=protocols, autoping=False, autoclose=True,
                max_msg_size=0, compress=0,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0),
            )
        except aiohttp.WSServerHandshakeError as exc:
            out = CIMultiDict((k, v) for k, v in (exc.headers or {}).items() if k.lower() not in _HOP_BY_HOP)
            resp = web.Response(status=exc.status, body=box.get("body", b""), headers=out)
            self._proxied(resp, ctx, t_up, started)
            log.info("WS %s -> %s: upstream answered %s", request.path, route.service.name, exc.status)
            return self.finish(request, resp, ctx)
        except TimeoutError:
            return self.finish(request, self._stamp(self.nginx_error(request, ctx, 504), ctx, started), ctx)
        except (aiohttp.ClientError, OSError) as exc:
            log.info("WS %s: upstream error %s", request.path, type(exc).__name__)
            return self.finish(request, self._stamp(self.nginx_error(request, ctx, 502), ctx, started), ctx)
        finally:
            _CAPTURE.reset(token)
        client = web.WebSocketResponse(
            protocols=(upstream.protocol,) if upstream.protocol else (), autoping=False, autoclose=True,
            max_msg_size=0, compress=False,
        )
        for name, value in ctx.response_headers.items():
            client.headers[name] = value
        for conf in ctx.cors:
            self.cors_headers(conf, request, client.headers, header_filter=True)
        try:
            await client.prepare(request)
        except Exception:
            await upstream.close()
            raise
        log.info("WS %s -> %s open", request.path, route.service.name)
        self.sockets.update((client, upstream))
        idle = route.service.read_timeout_ms / 1000
        timed_out = asyncio.Event()

        async def pump(src: Any, dst: Any, limit: float | None) -> None:
            while True:
                try:
                    msg = await (src.receive(timeout=limit) if limit else src.receive())
                except TimeoutError:
                    # nginx proxy_read_timeout: the upstream sent nothing for read_timeout; the connection is cut.
                    timed_out.set()
                    return
                if msg.type == WSMsgType.TEXT:
                    await dst.send_str(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await dst.send_bytes(msg.data)
                elif msg.type == WSMsgType.PING:
                    await dst.ping(msg.data)
                elif msg.type == WSMsgType.PONG:
                    await dst.pong(msg.data)
                else:
                    break
            # The source closed (its close frame was answered by autoclose): pass the code on.
            code = src.close_code if src.close_code is not None else 1000
            with contextlib.suppress(Exception):
                await dst.close(code=code)

        tasks = [asyncio.ensure_future(pump(client, upstream, None)),
                 asyncio.ensure_future(pump(upstream, client, idle))]
        try:
            _done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if timed_out.is_set():
                if request.transport is not None:
                    request.transport.abort()  # no close frame: the client sees the connection drop
            else:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), 6)
        finally:
            for task in tasks:
                task.cancel()
            self.sockets.difference_update((client, upstream))
            await upstream.close()
            if not timed_out.is_set():
                await client.close()
        log.info("WS %s closed (client %s, upstream %s%s)", request.path, client.close_code, upstream.close_code,
                 ", upstream idle past read_timeout" if timed_out.is_set() else "")
        return client


def build_app(kong: KongConfig, hosts: Mapping[str, str | None]) -> web.Application:
    """The aiohttp application serving ``kong`` with upstream names resolved through ``hosts``."""
    gateway = Gateway(kong, hosts)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.on_startup.append(gateway.startup)
    app.on_shutdown.append(gateway.shutdown)
    app.on_cleanup.append(gateway.cleanup)
    app.router.add_route("*", "/{tail:.*}", gateway.handle)
    return app


async def serve(config: GatewayConfig) -> None:
    """Listen until SIGTERM/SIGINT; print ``READY <port>`` once listening."""
    kong = config.load_kong()
    app = build_app(kong, config.hosts)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=3)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    port = config.port
    sockets = getattr(site._server, "sockets", None)  # aiohttp exposes the bound port only here
    if sockets:
        port = int(sockets[0].getsockname()[1])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sys.stdout.write(f"READY {port}\n")
    sys.stdout.flush()
    log.info("gateway (Kong %s, router %s) listening on %s:%s with %d routes", kong.version.text,
             kong.version.router_flavor, config.host, port, len(kong.routes))
    await stop.wait()
    log.info("stopping")
    await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m rtbook.sandbox.gateway CONFIG.json`` (the config JSON, mode 0600)."""
    config_path = config_argument(argv, "rtbook.sandbox.gateway")
    if config_path is None:
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s gateway %(levelname)s %(message)s",
                        stream=sys.stderr)
    redactor = Redactor()
    try:
        data = json.loads(read_text(config_path, "gateway config"))
        config = GatewayConfig.from_mapping(data)
        # Error texts quote kong.yml fragments, which hold the keys after expansion.
        redactor.add_env(config.env)
        for value in config.env.values():
            if len(value) >= 6:
                redactor.add(value)
        config.load_kong()  # fail before binding: a config error is a startup error
        asyncio.run(serve(config))
    except (ConfigError, InputError, OSError, ValueError) as exc:
        sys.stderr.write(f"gateway: {redactor.text(str(exc))}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
