"""nginx configs, parsed with crossplane (nginx's own grammar), ``include`` files followed.

Directives inherit down ``http`` → ``server`` → ``location`` as nginx applies them, with nginx's
rule for ``proxy_set_header``: a level that sets any header drops every header inherited from
above. Defaults are nginx 1.22's (``proxy_http_version 1.0``, ``proxy_read_timeout 60s``,
``proxy_buffering on``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rtbook.config.lb import Health, LbConfig, LbRoute, Setting, Sticky, parse_duration
from rtbook.exceptions import InputError

__all__ = ["parse"]

_INHERITED = ("proxy_http_version", "proxy_read_timeout", "proxy_send_timeout", "proxy_buffering", "tcp_nodelay")
# Hashing methods of the open-source upstream module that keep one client on one server.
_STICKY = ("ip_hash", "hash", "sticky")


@dataclass
class _Scope:
    values: dict[str, Setting] = field(default_factory=dict)
    headers: dict[str, Setting] = field(default_factory=dict)

    def child(self, block: list[dict[str, Any]], file: str) -> _Scope:
        values = dict(self.values)
        own_headers: dict[str, Setting] = {}
        for d in block:
            name = d["directive"]
            where = f"{d['_file']}:{d['line']}"
            if name in _INHERITED and d["args"]:
                values[name] = Setting(name, " ".join(d["args"]), where)
            elif name == "proxy_set_header" and len(d["args"]) >= 2:
                own_headers[d["args"][0].lower()] = Setting(d["args"][0], d["args"][1], where)
        return _Scope(values, own_headers if own_headers else dict(self.headers))


def _expand(parsed: list[dict[str, Any]], configs: list[dict[str, Any]], file: str, depth: int = 0) -> list[Any]:
    """The directives with every ``include`` replaced by the included files' directives (each tagged with its file)."""
    out: list[dict[str, Any]] = []
    for d in parsed:
        d = dict(d, _file=file)
        if d["directive"] == "include" and "includes" in d and depth < 20:
            for index in d["includes"]:
                inc = configs[index]
                out.extend(_expand(inc["parsed"], configs, inc["file"], depth + 1))
            continue
        if "block" in d:
            d["block"] = _expand(d["block"], configs, file, depth)
        out.append(d)
    return out


def _walk(block: list[dict[str, Any]], name: str) -> Iterator[dict[str, Any]]:
    for d in block:
        if d["directive"] == name:
            yield d
        elif "block" in d and d["directive"] in ("http", "stream"):
            yield from _walk(d["block"], name)


def parse(path: Path, text: str) -> LbConfig:
    """Parse an nginx config (``nginx.conf`` or a ``conf.d`` snippet) into an :class:`LbConfig`.

    Raises:
        InputError: when crossplane reports a syntax error (with its file and line).
    """
    import crossplane  # imported here: only an nginx --lb needs it

    payload = crossplane.parse(str(path), catch_errors=True, check_ctx=False, check_args=False, comments=False)
    errors = [e for c in payload["config"] for e in c.get("errors", [])] + list(payload.get("errors", []))
    if errors:
        first = errors[0]
        raise InputError(f"{first.get('file', path)}:{first.get('line', '?')}: {first.get('error')}; fix the nginx "
                         "syntax there (nginx -t shows the same)")
    configs = payload["config"]
    root = _expand(configs[0]["parsed"], configs, configs[0]["file"])
    files = tuple(c["file"] for c in configs)

    upstreams: dict[str, dict[str, Any]] = {}
    for up in _walk(root, "upstream"):
        upstreams[up["args"][0]] = up
    http_blocks = [d for d in root if d["directive"] == "http"]
    top = _Scope().child(http_blocks[0]["block"] if http_blocks else root, "")
    servers = [s for h in http_blocks for s in h["block"] if s["directive"] == "server"]
    servers += [d for d in root if d["directive"] == "server"]  # a conf.d snippet read on its own
    routes: list[LbRoute] = []
    for server in servers:
        if "block" not in server:
            continue  # an upstream's "server host:port" line, not a server block
        listens = [d for d in server["block"] if d["directive"] == "listen"]
        tls = any("ssl" in d["args"] for d in listens) or any(
            d["directive"] == "ssl_certificate" for d in server["block"])
        names = [a for d in server["block"] if d["directive"] == "server_name" for a in d["args"]]
        label = "server " + (names[0] if names else (listens[0]["args"][0] if listens else "(default)"))
        label += f" ({server.get('_file', path)}:{server['line']})"
        sscope = top.child(server["block"], "")
        for loc, lscope in _locations(server["block"], sscope):
            route = _route(loc, lscope, label, tls, upstreams)
            if route is not None:
                routes.append(route)
    return LbConfig("nginx", str(path), files, tuple(routes), parser=f"crossplane {crossplane.__version__}")


def _locations(block: list[dict[str, Any]], scope: _Scope) -> Iterator[tuple[dict[str, Any], _Scope]]:
    for d in block:
        if d["directive"] == "location" and "block" in d:
            inner = scope.child(d["block"], "")
            yield d, inner
            yield from _locations(d["block"], inner)


def _route(loc: dict[str, Any], scope: _Scope, server: str, tls: bool, upstreams: dict[str, Any]) -> LbRoute | None:
    passes = [d for d in loc["block"] if d["directive"] == "proxy_pass"]
    if not passes:
        return None
    target = passes[0]["args"][0]
    m = re.match(r"(https?)://([^/]+)(/.*)?$", target)
    scheme, host, uri = (m.group(1), m.group(2), m.group(3) or "") if m else ("http", target, "")
    args = loc["args"]
    modifier = args[0] if len(args) > 1 else ""
    prefix = args[-1]
    paths = (prefix,) if modifier in ("", "^~") else (prefix,) if modifier == "=" else (_regex_prefix(prefix),)
    where = f"{loc['_file']}:{loc['line']}"
    v = scope.values
    http11 = v.get("proxy_http_version", Setting("proxy_http_version", "1.0", "nginx default")).value == "1.1"
    upgrade_h = scope.headers.get("upgrade")
    conn_h = scope.headers.get("connection")
    upgrade = bool(
        upgrade_h and "$http_upgrade" in upgrade_h.value
        and conn_h and (conn_h.value.lower() == "upgrade" or conn_h.value.startswith("$"))
    )
    # An upgraded connection idles out on proxy_read_timeout (nothing read from the upstream for that long);
    # proxy_send_timeout only runs while a write to the upstream is blocked (ngx_http_upstream_process_upgraded).
    timeouts = (_timeout(v.get("proxy_read_timeout"), "proxy_read_timeout"),)
    buffering = tuple(s for s in (v.get("proxy_buffering"), v.get("tcp_nodelay")) if s is not None)
    upstream_name = host.split(":")[0]
    up = upstreams.get(upstream_name)
    servers: tuple[str, ...] = (host,)
    sticky = None
    notes: list[str] = []
    if up is not None:
        servers = tuple(d["args"][0] for d in up["block"] if d["directive"] == "server" and d["args"])
        for d in up["block"]:
            if d["directive"] in _STICKY:
                sticky = Sticky(" ".join([d["directive"], *d["args"]]), f"{up['_file']}:{d['line']}")
        up_where = f"{up['_file']}:{up['line']}"
    else:
        up_where = where
    health = None
    checks = [d for d in loc["block"] if d["directive"] == "health_check"]
    if checks:  # NGINX Plus only
        uri_arg = next((a.split("=", 1)[1] for a in checks[0]["args"] if a.startswith("uri=")), "/")
        health = Health(uri_arg, f"{loc['_file']}:{checks[0]['line']}")
    # proxy_pass with a URI replaces the matched location prefix by it (nginx docs, proxy_pass).
    rewrite = (prefix, uri) if uri and modifier in ("", "^~") else None
    # nginx: an exact match wins, then regex locations (in order) unless a ^~ prefix matched, then the longest prefix.
    priority = 10000.0 if modifier == "=" else 5000.0 - loc["line"] / 1000 if modifier in ("~", "~*") else (
        6000.0 + len(prefix) if modifier == "^~" else float(len(prefix)))
    return LbRoute(
        name=f"{server} location {' '.join(args)}",
        where=where,
        group=server,
        priority=priority,
        paths=paths,
        upstream=upstream_name,
        servers=servers,
        http11=http11,
        upgrade=upgrade,
        timeouts=timeouts,
        sticky=sticky,
        health=health,
        tls_listener=tls,
        backend_scheme=scheme,
        buffering=buffering,
        rewrite=rewrite,
        notes=(*notes, f"upstream at {up_where}"),
    )


def _timeout(setting: Setting | None, name: str) -> Setting:
    if setting is None:
        return Setting(name, "60s", "nginx default", 60.0)
    return replace(setting, seconds=parse_duration(setting.value, "s"))


def _regex_prefix(pattern: str) -> str:
    """The literal start of a regex location (``^/realtime/v1/`` → ``/realtime/v1/``), for prefix matching."""
    literal = re.match(r"\^?((?:[\w/.-]|\\.)*)", pattern)
    return literal.group(1).replace("\\", "") if literal else ""
