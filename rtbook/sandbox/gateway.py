"""A Kong-compatible gateway for the sandbox (``python -m rtbook.sandbox.gateway CONFIG.json``).

It serves a stack's ``kong.yml`` the way the Kong overlay of the official stack does: the
``kong-entrypoint.sh`` steps are replayed (``LUA_*`` expressions, ``WELL_KNOWN_OAUTH_PATH``, awk
``$VAR`` substitution from the kong service's environment, empty ``- key:`` lines deleted), then
routes are matched by longest prefix (plus exact ``http.path ==`` expressions), ``strip_path`` is
applied with Kong's v0 path handling, and the upstream ``Host`` is the service's host name and port
(Kong's ``preserve_host: false``), which is what carries Realtime's tenant id.

Plugins: ``cors``, ``key-auth``, ``basic-auth``, ``acl``, ``request-transformer`` (headers and
query string, Lua ``$(...)`` templates of the entrypoint), ``request-termination`` and the one
``post-function`` idiom of the official file (clear a header when empty). Anything else is a
startup error naming it. Upstream host names resolve through the config's ``hosts`` map only.

The gateway deliberately shares no code with :mod:`rtbook.config.kong`: it is an independent reading of
the same files, so the product's parser is checked against it rather than against itself.

Config JSON (written 0600 by the manager; it holds the kong environment's keys)::

    {"kong_yml": "DIR/volumes/api/kong.yml", "env": {"SUPABASE_ANON_KEY": "...", ...},
     "hosts": {"realtime-dev.supabase-realtime": "127.0.0.1:40001", "auth": null},
     "host": "127.0.0.1", "port": 0}

A host mapped to ``null`` is a compose service the sandbox does not run (502 like a refused
connection); a host missing from the map fails name resolution (503, as Kong answers).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
import dataclasses
import json
import logging
import re
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import yaml
from aiohttp import WSMsgType, web
from multidict import CIMultiDict, MultiDict

from rtbook.exceptions import ConfigError
from rtbook.sandbox._child import config_argument
from rtbook.secrets import Redactor

__all__ = [
    "Consumer",
    "GatewayConfig",
    "KongConfig",
    "Plugin",
    "Route",
    "Service",
    "build_app",
    "entrypoint_env",
    "expand_kong_yml",
    "main",
    "match_route",
    "parse_kong",
    "upstream_path",
]

log = logging.getLogger("rtbook.sandbox.gateway")

KONG_VERSION = "3.9.3"

# Kong's plugin priorities (higher runs first in the access phase).
_PRIORITY = {
    "cors": 2000,
    "key-auth": 1250,
    "basic-auth": 1100,
    "acl": 950,
    "request-transformer": 801,
    "request-termination": 2,
    "post-function": -1000,
}

_HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
    "transfer-encoding", "upgrade", "host", "content-length",
}
_WS_HANDSHAKE = {"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions", "sec-websocket-protocol"}


class GatewayConfigError(ConfigError):
    """The kong.yml or the gateway config uses something this gateway does not implement, or is invalid."""


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
    r"\s*(?:(?P<str>'[^']*'|\"[^\"]*\")|(?P<num>\d+)|(?P<op>==|~=|\(|\)|,|:)|(?P<name>[A-Za-z_][A-Za-z_0-9.]*))"
)

Env = Mapping[str, Mapping[str, str]]
Expr = Callable[[Env], Any]


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
                return lambda e: left(e) == right(e)
            return lambda e: left(e) != right(e)
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
            end: int | None = None
            if self.peek() == ("op", ","):
                self.take()
                end = int(self.take()[1])
            self.take(")")

            def sub(e: Env, inner: Expr = expr, s: int = start, t: int | None = end) -> Any:
                value = inner(e)
                if not isinstance(value, str):
                    raise ValueError("attempt to index a nil value")
                return value[s - 1 : t]

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
        if kind == "name":
            if value == "nil":
                return lambda e: None
            if value in ("true", "false"):
                flag = value == "true"
                return lambda e: flag
            root, _, key = value.partition(".")
            if root in ("headers", "query_params") and key and "." not in key:
                norm = key.lower().replace("_", "-") if root == "headers" else key
                return lambda e: e[root].get(norm)
        raise GatewayConfigError(f"unsupported Lua term {value!r} in request-transformer: {self.text!r}")


def _truthy(value: Any) -> bool:
    return value is not None and value is not False


@dataclass(frozen=True)
class Template:
    """A request-transformer value: literal text with ``$(lua)`` parts compiled at startup."""

    source: str
    parts: tuple[str | Expr, ...]

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
        """Evaluate; ``nil``/``false`` render as an empty string (as the official file's comments say)."""
        out = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
            else:
                try:
                    value = part(env)
                except ValueError:
                    value = None
                out.append("" if not _truthy(value) else str(value))
        return "".join(out)


# ============================================================ declarative config model


@dataclass(frozen=True)
class Plugin:
    """One plugin instance with its validated config."""

    name: str
    config: Mapping[str, Any]

    @property
    def priority(self) -> int:
        """Kong's execution priority (higher first)."""
        return _PRIORITY[self.name]


@dataclass(frozen=True)
class Service:
    """An upstream service."""

    name: str
    scheme: str
    host: str
    port: int
    path: str
    protocol: str
    connect_timeout_ms: int = 60000
    read_timeout_ms: int = 60000
    write_timeout_ms: int = 60000
    plugins: tuple[Plugin, ...] = ()


@dataclass(frozen=True)
class Route:
    """A route: prefix ``paths`` or exact paths from an ``http.path ==`` expression."""

    name: str
    service: Service
    paths: tuple[str, ...] = ()
    exact: tuple[str, ...] = ()
    prefixes_from_expression: tuple[str, ...] = ()
    strip_path: bool = True
    preserve_host: bool = False
    methods: tuple[str, ...] = ()
    plugins: tuple[Plugin, ...] = ()


@dataclass(frozen=True)
class Consumer:
    """A consumer with its credentials and ACL groups."""

    username: str
    keys: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    basic: tuple[tuple[str, str], ...] = ()


@dataclass
class KongConfig:
    """The parsed declarative config."""

    routes: list[Route]
    consumers: dict[str, Consumer]
    plugins: tuple[Plugin, ...] = ()
    key_index: dict[str, Consumer] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for consumer in self.consumers.values():
            for key in consumer.keys:
                self.key_index[key] = consumer


_TOP_KEYS = {"_format_version", "_transform", "_comment", "consumers", "acls", "basicauth_credentials",
             "keyauth_credentials", "services", "plugins"}
_SERVICE_KEYS = {"name", "_comment", "url", "protocol", "host", "port", "path", "routes", "plugins", "tags",
                 "connect_timeout", "read_timeout", "write_timeout", "retries", "enabled"}
_ROUTE_KEYS = {"name", "_comment", "paths", "strip_path", "preserve_host", "expression", "methods", "protocols",
               "tags", "priority", "path_handling", "request_buffering", "response_buffering",
               "https_redirect_status_code", "regex_priority"}
_PLUGIN_OPTIONS: dict[str, set[str]] = {
    "cors": {"origins", "methods", "headers", "exposed_headers", "credentials", "max_age", "preflight_continue",
             "private_network"},
    "key-auth": {"key_names", "hide_credentials", "key_in_header", "key_in_query", "key_in_body",
                 "run_on_preflight"},
    "basic-auth": {"hide_credentials", "realm"},
    "acl": {"allow", "deny", "hide_groups_header"},
    "request-transformer": {"add", "append", "remove", "replace", "rename", "http_method"},
    "request-termination": {"status_code", "message", "body", "content_type"},
    "post-function": {"access"},
}
_EXPR_EQ = re.compile(r'^\s*http\.path\s*==\s*"([^"]*)"\s*$')
_EXPR_PREFIX = re.compile(r'^\s*http\.path\s*\^=\s*"([^"]*)"\s*$')
_CLEAR_IF_EMPTY = re.compile(
    r'^\s*local (\w+) = kong\.request\.get_header\("([\w-]+)"\)\s*'
    r'if \1 == nil or \1 == "" or \1:find\("\^%s\*\$"\) then\s*'
    r'kong\.service\.request\.clear_header\("\2"\)\s*end\s*$'
)


def _where(kind: str, name: str) -> str:
    return f"{kind} {name!r}"


def _parse_plugin(raw: Any, where: str) -> Plugin:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise GatewayConfigError(f"{where}: a plugin entry needs a name, got {raw!r}")
    name = raw["name"]
    if name not in _PLUGIN_OPTIONS:
        raise GatewayConfigError(
            f"{where}: plugin {name!r} is not supported by the sandbox gateway "
            f"(supported: {', '.join(sorted(_PLUGIN_OPTIONS))})"
        )
    extra = set(raw) - {"name", "config", "enabled", "tags", "_comment", "instance_name", "protocols"}
    if extra:
        raise GatewayConfigError(f"{where}: plugin {name!r} option(s) {sorted(extra)} are not supported")
    config = raw.get("config") or {}
    if not isinstance(config, dict):
        raise GatewayConfigError(f"{where}: plugin {name!r} config must be a mapping")
    unknown = set(config) - _PLUGIN_OPTIONS[name]
    if unknown:
        raise GatewayConfigError(f"{where}: plugin {name!r} config option(s) {sorted(unknown)} are not supported")
    config = dict(config)
    if name == "key-auth" and config.get("key_in_body"):
        raise GatewayConfigError(f"{where}: key-auth key_in_body is not supported by the sandbox gateway")
    if name == "request-transformer":
        config = _compile_transformer(config, where)
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
        if not isinstance(status, int) or not 100 <= status <= 599:
            raise GatewayConfigError(f"{where}: request-termination status_code must be 100..599, got {status!r}")
    if name == "acl" and config.get("allow") and config.get("deny"):
        raise GatewayConfigError(f"{where}: acl allows either allow or deny, not both")
    return Plugin(name, config)


def _compile_transformer(config: dict[str, Any], where: str) -> dict[str, Any]:
    if config.get("http_method"):
        raise GatewayConfigError(f"{where}: request-transformer http_method is not supported")
    out: dict[str, Any] = {}
    for action in ("remove", "replace", "add", "append", "rename"):
        section = config.get(action) or {}
        if not isinstance(section, dict):
            raise GatewayConfigError(f"{where}: request-transformer {action} must be a mapping")
        bad = {k for k, v in section.items() if v} - {"headers", "querystring"}
        if bad:
            raise GatewayConfigError(f"{where}: request-transformer {action}.{sorted(bad)[0]} is not supported")
        if action == "rename" and any(section.values()):
            raise GatewayConfigError(f"{where}: request-transformer rename is not supported")
        compiled: dict[str, list[Any]] = {}
        for target in ("headers", "querystring"):
            items = section.get(target) or []
            entries: list[Any] = []
            for item in items:
                if action == "remove":
                    entries.append(str(item))
                    continue
                name, sep, value = str(item).partition(":")
                if not sep:
                    raise GatewayConfigError(f"{where}: request-transformer {action} entry {item!r} needs name:value")
                entries.append((name.strip(), Template.compile(value.lstrip())))
            compiled[target] = entries
        out[action] = compiled
    return out


def _plugins(raw: Any, where: str) -> tuple[Plugin, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise GatewayConfigError(f"{where}: plugins must be a list")
    # A plugin with enabled: false does not run in Kong either (it is still validated).
    return tuple(plugin for p in raw if (plugin := _parse_plugin(p, where)) and p.get("enabled", True) is not False)


def _parse_service(raw: Any) -> tuple[Service, list[Any]]:
    if not isinstance(raw, dict):
        raise GatewayConfigError(f"a service must be a mapping, got {raw!r}")
    name = str(raw.get("name", "?"))
    where = _where("service", name)
    unknown = set(raw) - _SERVICE_KEYS
    if unknown:
        raise GatewayConfigError(f"{where}: option(s) {sorted(unknown)} are not supported by the sandbox gateway")
    if "url" in raw:
        parts = urlsplit(str(raw["url"]))
        scheme, host, path = parts.scheme, parts.hostname or "", parts.path or "/"
        port = parts.port or (443 if scheme in ("https", "wss") else 80)
    else:
        scheme = str(raw.get("protocol", "http"))
        host, port, path = str(raw.get("host", "")), int(raw.get("port", 80)), str(raw.get("path") or "/")
    protocol = str(raw.get("protocol", scheme))
    if protocol not in ("http", "ws") or scheme not in ("http", "ws"):
        raise GatewayConfigError(f"{where}: protocol {protocol!r} (url scheme {scheme!r}) is not supported; "
                                 "the sandbox gateway proxies http and ws")
    if not host:
        raise GatewayConfigError(f"{where}: no upstream host (url or host)")
    service = Service(
        name=name, scheme=scheme, host=host, port=port, path=path, protocol=protocol,
        connect_timeout_ms=int(raw.get("connect_timeout", 60000)),
        read_timeout_ms=int(raw.get("read_timeout", 60000)),
        write_timeout_ms=int(raw.get("write_timeout", 60000)),
        plugins=_plugins(raw.get("plugins"), where),
    )
    routes = raw.get("routes") or []
    if not isinstance(routes, list):
        raise GatewayConfigError(f"{where}: routes must be a list")
    return service, routes


def _parse_route(raw: Any, service: Service) -> Route:
    if not isinstance(raw, dict):
        raise GatewayConfigError(f"service {service.name!r}: a route must be a mapping")
    name = str(raw.get("name", "?"))
    where = _where("route", name)
    unknown = set(raw) - _ROUTE_KEYS
    if unknown:
        raise GatewayConfigError(f"{where}: option(s) {sorted(unknown)} are not supported by the sandbox gateway")
    protocols = set(raw.get("protocols") or ("http", "https"))
    if not protocols & {"http", "ws"}:
        raise GatewayConfigError(f"{where}: protocols {sorted(protocols)} are not served by the sandbox gateway "
                                 "(it listens on plain HTTP)")
    if raw.get("path_handling", "v0") != "v0":
        raise GatewayConfigError(f"{where}: path_handling {raw['path_handling']!r} is not supported (only v0)")
    paths = tuple(str(p) for p in raw.get("paths") or ())
    for p in paths:
        if p.startswith("~") or not p.startswith("/"):
            raise GatewayConfigError(f"{where}: path {p!r} is not a plain prefix (regex paths are not supported)")
    exact: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()
    if "expression" in raw:
        text = str(raw["expression"])
        m, mp = _EXPR_EQ.match(text), _EXPR_PREFIX.match(text)
        if m:
            exact = (m.group(1),)
        elif mp:
            prefixes = (mp.group(1),)
        else:
            raise GatewayConfigError(
                f"{where}: expression {text!r} is not supported (only http.path == \"...\" and ^=)"
            )
    if not paths and not exact and not prefixes:
        raise GatewayConfigError(f"{where}: no paths; host/header matching is not supported by the sandbox gateway")
    return Route(
        name=name, service=service, paths=paths, exact=exact, prefixes_from_expression=prefixes,
        strip_path=bool(raw.get("strip_path", True)), preserve_host=bool(raw.get("preserve_host", False)),
        methods=tuple(str(m).upper() for m in raw.get("methods") or ()),
    )


def parse_kong(text: str) -> KongConfig:
    """Parse an expanded ``kong.yml``; an unsupported plugin, option or form raises GatewayConfigError."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise GatewayConfigError(f"kong.yml is not valid YAML after expansion: {exc}") from None
    if not isinstance(data, dict):
        raise GatewayConfigError("kong.yml must be a mapping with services, consumers, ...")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise GatewayConfigError(
            f"kong.yml top-level key(s) {sorted(unknown)} are not supported by the sandbox gateway"
        )
    consumers: dict[str, dict[str, Any]] = {}
    for raw in data.get("consumers") or []:
        if not isinstance(raw, dict) or "username" not in raw:
            raise GatewayConfigError(f"a consumer needs a username, got {raw!r}")
        extra = set(raw) - {"username", "keyauth_credentials", "basicauth_credentials", "acls", "custom_id", "tags",
                            "_comment"}
        if extra:
            raise GatewayConfigError(f"consumer {raw['username']!r}: option(s) {sorted(extra)} are not supported")
        c = consumers.setdefault(str(raw["username"]), {"keys": [], "groups": [], "basic": []})
        for cred in raw.get("keyauth_credentials") or []:
            if cred.get("key") not in (None, ""):
                c["keys"].append(str(cred["key"]))
        for acl in raw.get("acls") or []:
            c["groups"].append(str(acl["group"]))
        for cred in raw.get("basicauth_credentials") or []:
            c["basic"].append((str(cred["username"]), str(cred["password"])))
    for raw in data.get("keyauth_credentials") or []:
        _consumer_of(consumers, raw, "keyauth_credentials")["keys"].append(str(raw["key"]))
    for raw in data.get("acls") or []:
        _consumer_of(consumers, raw, "acls")["groups"].append(str(raw["group"]))
    for raw in data.get("basicauth_credentials") or []:
        _consumer_of(consumers, raw, "basicauth_credentials")["basic"].append(
            (str(raw["username"]), str(raw["password"]))
        )
    routes: list[Route] = []
    for raw in data.get("services") or []:
        service, raw_routes = _parse_service(raw)
        if raw.get("enabled", True) is False:
            continue  # Kong matches no route of a disabled service
        for raw_route in raw_routes:
            route = _parse_route(raw_route, service)
            route = dataclasses.replace(route, plugins=_plugins(raw_route.get("plugins"), _where("route", route.name)))
            routes.append(route)
    seen: dict[str, Consumer] = {}
    built = {
        name: Consumer(name, tuple(v["keys"]), tuple(v["groups"]), tuple(v["basic"])) for name, v in consumers.items()
    }
    for consumer in built.values():
        for key in consumer.keys:
            if key in seen and seen[key] is not consumer:
                raise GatewayConfigError(
                    f"the same key-auth key is set for consumers {seen[key].username!r} and {consumer.username!r}"
                )
            seen[key] = consumer
    return KongConfig(routes, built, _plugins(data.get("plugins"), "global plugins"))


def _consumer_of(consumers: dict[str, dict[str, Any]], raw: Any, kind: str) -> dict[str, Any]:
    if not isinstance(raw, dict) or "consumer" not in raw:
        raise GatewayConfigError(f"{kind} entries need a consumer, got {raw!r}")
    name = str(raw["consumer"])
    if name not in consumers:
        raise GatewayConfigError(f"{kind}: unknown consumer {name!r}")
    return consumers[name]


# ============================================================ routing


def match_route(config: KongConfig, path: str, method: str = "GET") -> tuple[Route, str] | None:
    """The route Kong picks for ``path``: exact expressions first, then the longest prefix.

    Returns the route and the matched prefix (what ``strip_path`` removes).
    """
    best: tuple[Route, str] | None = None
    for route in config.routes:
        if route.methods and method.upper() not in route.methods:
            continue
        if path in route.exact:
            return route, path
        for prefix in route.paths + route.prefixes_from_expression:
            if path.startswith(prefix) and (best is None or len(prefix) > len(best[1])):
                best = (route, prefix)
    return best


def upstream_path(service_path: str, route: Route, prefix: str, path: str) -> str:
    """Kong's ``path_handling: v0`` join of the service path and the (stripped) request path."""
    rest = path[len(prefix):] if route.strip_path else path
    if rest == "":
        return service_path or "/"
    base = service_path or "/"
    if base.endswith("/") and rest.startswith("/"):
        return base + rest[1:]
    if base.endswith("/") or rest.startswith("/"):
        return base + rest
    return base + "/" + rest


# ============================================================ server


@dataclass
class GatewayConfig:
    """The gateway process settings."""

    kong_yml: Path
    env: dict[str, str]
    hosts: dict[str, str | None]
    host: str = "127.0.0.1"
    port: int = 0

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> GatewayConfig:
        """Validate the config JSON."""
        unknown = set(data) - {"kong_yml", "env", "hosts", "host", "port"}
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
        )

    def load_kong(self) -> KongConfig:
        """Read, expand and parse the kong.yml."""
        try:
            text = self.kong_yml.read_text()
        except OSError as exc:
            raise GatewayConfigError(f"cannot read kong.yml {self.kong_yml}: {exc.strerror}") from None
        return parse_kong(expand_kong_yml(text, entrypoint_env(self.env)))


def _kong_json(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    body = json.dumps({"message": message}, separators=(",", ":"))
    resp = web.Response(status=status, text=body, content_type="application/json", charset="utf-8")
    resp.headers["Server"] = f"kong/{KONG_VERSION}"
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


# Upstream handshake failures: aiohttp's ws_connect drops the body; capture it while the response is open.
_CAPTURE: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("rtbook_gw_capture", default=None)


async def _on_request_end(session: aiohttp.ClientSession, ctx: Any, params: aiohttp.TraceRequestEndParams) -> None:
    box = _CAPTURE.get()
    if box is not None and params.response.status != 101:
        with contextlib.suppress(Exception):
            box["body"] = await asyncio.wait_for(params.response.read(), 10)


@dataclass
class _Ctx:
    headers: CIMultiDict[str]
    query: MultiDict[str]
    consumer: Consumer | None = None
    cors: dict[str, str] = field(default_factory=dict)
    clear_if_empty: tuple[str, ...] = ()


class Gateway:
    """The aiohttp application: routing, plugins and proxying."""

    def __init__(self, kong: KongConfig, hosts: Mapping[str, str | None]) -> None:
        self.kong = kong
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
        """Route plugins override service plugins, which override global ones (by name)."""
        chosen: dict[str, Plugin] = {}
        for source in (self.kong.plugins, route.service.plugins, route.plugins):
            for plugin in source:
                chosen[plugin.name] = plugin
        return sorted(chosen.values(), key=lambda p: -p.priority)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        path = request.path
        found = match_route(self.kong, path, request.method)
        if found is None:
            return _kong_json(404, "no Route matched with those values")
        route, prefix = found
        ctx = _Ctx(CIMultiDict(request.headers), MultiDict(request.query))
        for plugin in self.plugins_for(route):
            early = self.run_plugin(plugin, request, ctx)
            if early is not None:
                self.add_cors(early, ctx)
                return early
        service = route.service
        up_path = upstream_path(service.path, route, prefix, path)
        default_port = 443 if service.scheme in ("https", "wss") else 80
        host_header = service.host if service.port == default_port else f"{service.host}:{service.port}"
        if route.preserve_host and "Host" in request.headers:
            host_header = request.headers["Host"]
        target = self.hosts.get(service.host.lower(), "missing")
        if target == "missing":
            log.info("%s %s -> %s: name resolution failed", request.method, path, service.host)
            return self.add_cors(_kong_json(503, "name resolution failed"), ctx)
        if target is None:
            log.info("%s %s -> %s: service not run by the sandbox", request.method, path, service.host)
            return self.add_cors(_kong_json(502, "An invalid response was received from the upstream server"), ctx)
        for name in ctx.clear_if_empty:
            if not ctx.headers.get(name, "").strip():
                ctx.headers.popall(name, None)
        fwd = CIMultiDict((k, v) for k, v in ctx.headers.items() if k.lower() not in _HOP_BY_HOP)
        peer = request.remote or ""
        prior = request.headers.get("X-Forwarded-For")
        fwd["X-Forwarded-For"] = f"{prior}, {peer}" if prior else peer
        fwd["X-Forwarded-Proto"] = request.scheme
        fwd["X-Forwarded-Host"] = request.host.split(":")[0]
        fwd["X-Forwarded-Port"] = str(request.url.port or "")
        fwd["X-Forwarded-Path"] = path
        fwd["X-Real-IP"] = peer
        fwd["Host"] = host_header
        upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
        url = f"http://{target}{up_path}"
        if upgrade:
            return await self.proxy_ws(request, url, fwd, ctx, route)
        return await self.proxy_http(request, url, fwd, ctx, service, started)

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
            return self.acl(conf, ctx)
        if plugin.name == "request-transformer":
            self.transform(conf, ctx)
            return None
        if plugin.name == "request-termination":
            status = int(conf.get("status_code", 503))
            if conf.get("body") is not None:
                return web.Response(status=status, text=str(conf["body"]),
                                    headers={"Content-Type": str(conf.get("content_type") or "application/json"),
                                             "Server": f"kong/{KONG_VERSION}"})
            return _kong_json(status, str(conf.get("message") or "Service unavailable"))
        if plugin.name == "post-function":
            ctx.clear_if_empty += tuple(conf["clear_if_empty"])
            return None
        raise GatewayConfigError(f"plugin {plugin.name!r} is not supported")  # unreachable: checked at startup

    def cors(self, conf: Mapping[str, Any], request: web.Request, ctx: _Ctx) -> web.Response | None:
        origins = conf.get("origins") or ["*"]
        origin = request.headers.get("Origin")
        if "*" in origins:
            ctx.cors["Access-Control-Allow-Origin"] = "*"
        elif origin and origin in origins:
            ctx.cors["Access-Control-Allow-Origin"] = origin
            ctx.cors["Vary"] = "Origin"
        if conf.get("credentials"):
            ctx.cors["Access-Control-Allow-Credentials"] = "true"
        if conf.get("exposed_headers"):
            ctx.cors["Access-Control-Expose-Headers"] = ",".join(conf["exposed_headers"])
        if request.method == "OPTIONS" and request.headers.get("Access-Control-Request-Method"):
            if conf.get("preflight_continue"):
                return None
            headers = dict(ctx.cors)
            methods = conf.get("methods") or ["GET", "HEAD", "PUT", "PATCH", "POST", "DELETE", "OPTIONS", "TRACE",
                                              "CONNECT"]
            headers["Access-Control-Allow-Methods"] = ",".join(methods)
            allow_headers = conf.get("headers")
            if allow_headers:
                headers["Access-Control-Allow-Headers"] = ",".join(allow_headers)
            elif request.headers.get("Access-Control-Request-Headers"):
                headers["Access-Control-Allow-Headers"] = request.headers["Access-Control-Request-Headers"]
            if conf.get("max_age") is not None:
                headers["Access-Control-Max-Age"] = str(conf["max_age"])
            headers["Server"] = f"kong/{KONG_VERSION}"
            ctx.cors.clear()
            return web.Response(status=200, headers=headers)
        return None

    def add_cors(self, resp: web.StreamResponse, ctx: _Ctx) -> web.StreamResponse:
        for k, v in ctx.cors.items():
            resp.headers[k] = v
        return resp

    def key_auth(self, conf: Mapping[str, Any], request: web.Request, ctx: _Ctx) -> web.Response | None:
        if request.method == "OPTIONS" and conf.get("run_on_preflight") is False:
            return None
        names = [str(n) for n in conf.get("key_names") or ["apikey"]]
        key: str | None = None
        for name in names:
            if conf.get("key_in_header", True) and name in ctx.headers:
                key = ctx.headers[name]
                if conf.get("hide_credentials"):
                    ctx.headers.popall(name, None)
                break
            if conf.get("key_in_query", True) and name in ctx.query:
                key = ctx.query[name]
                if conf.get("hide_credentials"):
                    ctx.query.popall(name, None)
                break
        if not key:
            return _kong_json(401, "No API key found in request", {"WWW-Authenticate": 'Key realm="kong"'})
        consumer = self.kong.key_index.get(key)
        if consumer is None:
            return _kong_json(401, "Invalid authentication credentials", {"WWW-Authenticate": 'Key realm="kong"'})
        self.set_consumer(ctx, consumer)
        ctx.headers.popall("X-Anonymous-Consumer", None)
        return None

    def basic_auth(self, conf: Mapping[str, Any], request: web.Request, ctx: _Ctx) -> web.Response | None:
        realm = str(conf.get("realm") or "service")
        challenge = {"WWW-Authenticate": f'Basic realm="{realm}"'}
        header = ctx.headers.get("Authorization") or ctx.headers.get("Proxy-Authorization")
        if not header:
            return _kong_json(401, "Unauthorized", challenge)
        scheme, _, value = header.partition(" ")
        try:
            user, sep, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            sep, user, password = "", "", ""
        if scheme.lower() != "basic" or not sep:
            return _kong_json(401, "Invalid authentication credentials", challenge)
        for consumer in self.kong.consumers.values():
            if (user, password) in consumer.basic:
                self.set_consumer(ctx, consumer)
                if conf.get("hide_credentials"):
                    ctx.headers.popall("Authorization", None)
                    ctx.headers.popall("Proxy-Authorization", None)
                return None
        return _kong_json(401, "Invalid authentication credentials", challenge)

    @staticmethod
    def set_consumer(ctx: _Ctx, consumer: Consumer) -> None:
        ctx.consumer = consumer
        ctx.headers["X-Consumer-Username"] = consumer.username
        ctx.headers["X-Credential-Identifier"] = consumer.username

    def acl(self, conf: Mapping[str, Any], ctx: _Ctx) -> web.Response | None:
        if ctx.consumer is None:
            return _kong_json(401, "Unauthorized")
        groups = set(ctx.consumer.groups)
        allow, deny = set(conf.get("allow") or ()), set(conf.get("deny") or ())
        if (allow and not groups & allow) or (deny and groups & deny):
            return _kong_json(403, "You cannot consume this service")
        if conf.get("hide_groups_header"):
            ctx.headers.popall("X-Consumer-Groups", None)
        else:
            ctx.headers["X-Consumer-Groups"] = ", ".join(ctx.consumer.groups)
        return None

    def transform(self, conf: Mapping[str, Any], ctx: _Ctx) -> None:
        # One template environment for all actions, read before any change (as Kong builds it once).
        env: dict[str, dict[str, str]] = {
            "headers": {k.lower(): v for k, v in reversed(list(ctx.headers.items()))},
            "query_params": {k: v for k, v in reversed(list(ctx.query.items()))},
        }
        for name in conf["remove"]["headers"]:
            ctx.headers.popall(name, None)
        for name in conf["remove"]["querystring"]:
            ctx.query.popall(name, None)
        for target, store in (("headers", ctx.headers), ("querystring", ctx.query)):
            for name, tmpl in conf["replace"][target]:
                if name in store:
                    store[name] = tmpl.render(env)
            for name, tmpl in conf["add"][target]:
                if name not in store:
                    store[name] = tmpl.render(env)
            for name, tmpl in conf["append"][target]:
                store.add(name, tmpl.render(env))

    # ---------------------------------------------------------------- proxying

    async def proxy_http(
        self, request: web.Request, url: str, fwd: CIMultiDict[str], ctx: _Ctx, service: Service, started: float
    ) -> web.StreamResponse:
        assert self.session is not None
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=service.connect_timeout_ms / 1000, sock_read=service.read_timeout_ms / 1000
        )
        body = await request.read()
        t_up = time.monotonic()
        try:
            async with self.session.request(
                request.method, url, params=ctx.query, headers=fwd, data=body if body else None,
                timeout=timeout, allow_redirects=False,
            ) as up:
                data = await up.read()
                headers = CIMultiDict((k, v) for k, v in up.headers.items() if k.lower() not in _HOP_BY_HOP)
                status = up.status
        except TimeoutError:
            return self.add_cors(_kong_json(504, "The upstream server is timing out"), ctx)
        except (aiohttp.ClientError, OSError) as exc:
            log.info("%s %s: upstream error %s", request.method, request.path, type(exc).__name__)
            return self.add_cors(_kong_json(502, "An invalid response was received from the upstream server"), ctx)
        now = time.monotonic()
        headers["X-Kong-Upstream-Latency"] = str(int((now - t_up) * 1000))
        headers["X-Kong-Proxy-Latency"] = str(int((t_up - started) * 1000))
        headers["Via"] = f"1.1 kong/{KONG_VERSION}"
        resp = web.Response(status=status, body=data, headers=headers)
        log.info("%s %s -> %s %s", request.method, request.path, service.name, status)
        return self.add_cors(resp, ctx)

    async def proxy_ws(
        self, request: web.Request, url: str, fwd: CIMultiDict[str], ctx: _Ctx, route: Route
    ) -> web.StreamResponse:
        assert self.session is not None
        headers = CIMultiDict((k, v) for k, v in fwd.items() if k.lower() not in _WS_HANDSHAKE)
        protocols = tuple(
            p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
        )
        box: dict[str, Any] = {}
        token = _CAPTURE.set(box)
        try:
            upstream = await self.session.ws_connect(
                url, params=ctx.query, headers=headers, protocols=protocols, autoping=False, autoclose=True,
                max_msg_size=0, compress=0,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0),
            )
        except aiohttp.WSServerHandshakeError as exc:
            out = CIMultiDict((k, v) for k, v in (exc.headers or {}).items() if k.lower() not in _HOP_BY_HOP)
            out["Via"] = f"1.1 kong/{KONG_VERSION}"
            log.info("WS %s -> %s: upstream answered %s", request.path, route.service.name, exc.status)
            return self.add_cors(web.Response(status=exc.status, body=box.get("body", b""), headers=out), ctx)
        except TimeoutError:
            return self.add_cors(_kong_json(504, "The upstream server is timing out"), ctx)
        except (aiohttp.ClientError, OSError) as exc:
            log.info("WS %s: upstream error %s", request.path, type(exc).__name__)
            return self.add_cors(_kong_json(502, "An invalid response was received from the upstream server"), ctx)
        finally:
            _CAPTURE.reset(token)
        client = web.WebSocketResponse(
            protocols=(upstream.protocol,) if upstream.protocol else (), autoping=False, autoclose=True,
            max_msg_size=0, compress=False,
        )
        for k, v in ctx.cors.items():
            client.headers[k] = v
        try:
            await client.prepare(request)
        except Exception:
            await upstream.close()
            raise
        log.info("WS %s -> %s open", request.path, route.service.name)
        self.sockets.update((client, upstream))

        async def pump(src: Any, dst: Any) -> None:
            async for msg in src:
                if msg.type == WSMsgType.TEXT:
                    await dst.send_str(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await dst.send_bytes(msg.data)
                elif msg.type == WSMsgType.PING:
                    await dst.ping(msg.data)
                elif msg.type == WSMsgType.PONG:
                    await dst.pong(msg.data)
                elif msg.type == WSMsgType.ERROR:
                    break
            # The source closed (its close frame was answered by autoclose): pass the code on.
            code = src.close_code if src.close_code is not None else 1000
            with contextlib.suppress(Exception):
                await dst.close(code=code)

        tasks = [asyncio.ensure_future(pump(client, upstream)), asyncio.ensure_future(pump(upstream, client))]
        try:
            _done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), 6)
        finally:
            for task in tasks:
                task.cancel()
            self.sockets.difference_update((client, upstream))
            await upstream.close()
            await client.close()
        log.info("WS %s closed (client %s, upstream %s)", request.path, client.close_code, upstream.close_code)
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
    log.info("gateway listening on %s:%s with %d routes", config.host, port, len(kong.routes))
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
        data = json.loads(config_path.read_text())
        config = GatewayConfig.from_mapping(data)
        # Error texts quote kong.yml fragments, which hold the keys after expansion.
        redactor.add_env(config.env)
        for value in config.env.values():
            if len(value) >= 6:
                redactor.add(value)
        config.load_kong()  # fail before binding: a config error is a startup error
        asyncio.run(serve(config))
    except (ConfigError, OSError, ValueError) as exc:
        sys.stderr.write(f"gateway: {redactor.text(str(exc))}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
