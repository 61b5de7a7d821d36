"""Caddy configs: a Caddyfile adapted to JSON by Caddy itself (``caddy adapt``), or Caddy's JSON config.

Caddy's own adapter is the parser of record: when the ``caddy`` binary is on PATH the Caddyfile
is adapted with ``caddy adapt --config FILE --adapter caddyfile`` and the JSON is read. Without
the binary, a minimal reader handles the subset Supabase fronts use (site blocks, ``handle``,
``handle_path``, ``route``, ``reverse_proxy`` with ``lb_policy``, ``health_uri``, ``transport
http { read_timeout write_timeout }``, ``flush_interval``); :attr:`LbConfig.parser` says which
was used. Caddy proxies WebSockets on its own (HTTP/1.1 to the backend, ``Upgrade`` forwarded)
and sets no read timeout unless one is configured.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from rtbook.config.lb import Health, LbConfig, LbRoute, Setting, Sticky
from rtbook.exceptions import InputError

__all__ = ["adapt", "parse"]

_ADAPT_TIMEOUT_S = 20.0
_PATH_PLACEHOLDER = "{http.request.uri.path}"


def adapt(path: Path) -> tuple[dict[str, Any], str]:
    """Caddy's own JSON for a Caddyfile (``caddy adapt``) and the parser's name.

    Raises:
        InputError: when Caddy rejects the file (its message, which names the line).
    """
    caddy = shutil.which("caddy")
    assert caddy is not None
    try:
        done = subprocess.run([caddy, "adapt", "--config", str(path), "--adapter", "caddyfile"],
                              capture_output=True, text=True, timeout=_ADAPT_TIMEOUT_S, check=False)
        version = subprocess.run([caddy, "version"], capture_output=True, text=True, timeout=_ADAPT_TIMEOUT_S,
                                 check=False).stdout.split()
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InputError(f"{path}: caddy adapt did not finish ({exc}); run it by hand to see why") from None
    if done.returncode != 0:
        message = " ".join(done.stderr.split())[-400:]
        raise InputError(f"{path}: Caddy rejects this Caddyfile: {message}; fix it at the line named")
    return json.loads(done.stdout), f"caddy adapt (caddy {version[0] if version else '?'})"


def parse(path: Path, text: str) -> LbConfig:
    """Parse a Caddyfile (through ``caddy adapt`` when Caddy is installed) or a Caddy JSON config."""
    if text.lstrip().startswith("{") and path.suffix == ".json":
        config, parser = json.loads(text), "Caddy JSON config"
    elif shutil.which("caddy"):
        config, parser = adapt(path)
    else:
        config, parser = _minimal_caddyfile(text, str(path)), "rtbook minimal Caddyfile reader (caddy not installed)"
    routes: list[LbRoute] = []
    servers = (config.get("apps", {}).get("http", {}).get("servers") or {})
    for sname, server in servers.items():
        listen = server.get("listen") or []
        tls = any(str(a).endswith(":443") for a in listen) and not server.get("automatic_https", {}).get("disable")
        flat: list[tuple[tuple[str, ...], tuple[str, str] | None, dict[str, Any], tuple[str, ...]]] = []
        _flatten(server.get("routes") or [], ("/",), None, (), flat)
        for index, (paths, rewrite, handler, hosts) in enumerate(flat):
            group = f"server {sname} ({', '.join(listen)})" + (f" host {hosts[0]}" if hosts else "")
            routes.append(_route(handler, paths, rewrite, group, -index, tls, str(path), text))
    return LbConfig("caddy", str(path), (str(path),), tuple(routes), parser=parser)


def _prefix(pattern: str) -> str:
    return pattern.split("*", 1)[0]


def _flatten(routes: list[dict[str, Any]], paths: tuple[str, ...], rewrite: tuple[str, str] | None,
             hosts: tuple[str, ...], out: list[Any]) -> None:
    """Every reverse_proxy handler in evaluation order with the paths that reach it and the rewrite before it."""
    for route in routes:
        rpaths, rhosts = paths, hosts
        for m in route.get("match") or []:
            if m.get("path"):
                rpaths = tuple(_prefix(p) for p in m["path"])
            if m.get("host"):
                rhosts = tuple(m["host"])
        for handler in route.get("handle") or []:
            kind = handler.get("handler")
            if kind == "rewrite" and handler.get("strip_path_prefix"):
                # A rewrite route without a matcher applies to the sibling routes after it (Caddy's handle_path).
                rewrite = (handler["strip_path_prefix"], "")
            elif kind == "rewrite" and str(handler.get("uri", "")).split("?", 1)[0].endswith(_PATH_PLACEHOLDER):
                # `rewrite * /socket{path}`: a prefix put in front of the (possibly stripped) path.
                before = str(handler["uri"]).split("?", 1)[0][: -len(_PATH_PLACEHOLDER)]
                rewrite = (rewrite[0], before + rewrite[1]) if rewrite else ("", before)
            elif kind == "subroute":
                _flatten(handler.get("routes") or [], rpaths, rewrite, rhosts, out)
            elif kind == "reverse_proxy":
                out.append((rpaths, rewrite, handler, rhosts))


def _ns(value: Any) -> float | None:
    if isinstance(value, (int, float)):
        return float(value) / 1e9
    if isinstance(value, str):
        from rtbook.config.lb import parse_duration

        return parse_duration(value)
    return None


def _line(text: str, needle: str) -> int | None:
    for n, line in enumerate(text.splitlines(), start=1):
        if needle in line and not line.lstrip().startswith("#"):
            return n
    return None


def _where(source: str, text: str, *needles: str) -> str:
    for needle in needles:
        n = _line(text, needle)
        if n is not None:
            return f"{source}:{n}"
    return source


def _route(handler: dict[str, Any], paths: tuple[str, ...], rewrite: tuple[str, str] | None, group: str,
           priority: float, tls: bool, source: str, text: str) -> LbRoute:
    upstreams = tuple(str(u.get("dial", "")) for u in handler.get("upstreams") or [])
    where = _where(source, text, *(f"reverse_proxy {u}" for u in upstreams[:1]), "reverse_proxy")
    transport = handler.get("transport") or {}
    timeouts: list[Setting] = []
    # read_timeout is a deadline on each read from the backend, so a quiet socket hits it; write_timeout only
    # bounds a write in progress.
    for key in ("read_timeout",):
        seconds = _ns(transport.get(key))
        if seconds is not None:
            timeouts.append(Setting(key, f"{seconds:g}s", _where(source, text, key), seconds))
    if not timeouts:
        timeouts.append(Setting("read_timeout", "unset", "Caddy default: no timeout", None))
    policy = ((handler.get("load_balancing") or {}).get("selection_policy") or {})
    sticky = None
    if policy.get("policy") in ("ip_hash", "client_ip_hash", "cookie", "header", "uri_hash"):
        name = policy["policy"] + (f" {policy['name']}" if policy.get("name") else "")
        sticky = Sticky(name, _where(source, text, "lb_policy"))
    active = ((handler.get("health_checks") or {}).get("active") or {})
    health = None
    if active.get("uri") or active.get("path"):
        health = Health(str(active.get("uri") or active.get("path")), _where(source, text, "health_uri", "uri"),
                        expect=str(active.get("expect_status") or "2xx (Caddy default)"),
                        port=str(active.get("port") or ""),
                        host=str((active.get("headers") or {}).get("Host", [""])[0]),
                        headers=tuple(str(h).lower() for h in (active.get("headers") or {})))
    buffering = []
    flush = handler.get("flush_interval")
    if flush is not None:
        buffering.append(Setting("flush_interval", str(flush), _where(source, text, "flush_interval"), _ns(flush)))
    for key in ("request_buffers", "response_buffers", "buffer_requests", "buffer_responses"):
        if handler.get(key):
            buffering.append(Setting(key, str(handler[key]), _where(source, text, key)))
    scheme = "https" if transport.get("tls") is not None else "http"
    return LbRoute(
        name=f"{group} reverse_proxy {' '.join(upstreams)}",
        where=where,
        group=group,
        priority=priority,
        paths=paths,
        upstream=" ".join(upstreams),
        servers=upstreams,
        http11=None,
        upgrade=None,
        timeouts=tuple(timeouts),
        sticky=sticky,
        health=health,
        tls_listener=tls,
        backend_scheme=scheme,
        buffering=tuple(buffering),
        rewrite=rewrite,
    )


# ---------------------------------------------------------------- minimal Caddyfile reader (no caddy binary)


def _tokens(text: str) -> list[tuple[int, list[str]]]:
    out = []
    for n, raw in enumerate(text.splitlines(), start=1):
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if line:
            out.append((n, line.split()))
    return out


def _block(lines: list[tuple[int, list[str]]], i: int) -> tuple[list[tuple[int, list[str]]], int]:
    """The lines inside the ``{`` that ends line ``i`` and the index after its ``}``."""
    depth = 1
    body = []
    i += 1
    while i < len(lines) and depth:
        words = lines[i][1]
        if words == ["}"]:
            depth -= 1
            if depth == 0:
                break
        elif words[-1] == "{":
            depth += 1
        body.append(lines[i])
        i += 1
    return body, i + 1


def _minimal_caddyfile(text: str, source: str) -> dict[str, Any]:
    lines = _tokens(text)
    servers: dict[str, Any] = {}
    i = 0
    while i < len(lines):
        n, words = lines[i]
        if words == ["{"]:  # global options block
            _, i = _block(lines, i)
            continue
        if words[-1] != "{":
            raise InputError(f"{source}:{n}: expected a site address followed by '{{'; install caddy for its full "
                             "Caddyfile parser")
        body, i = _block(lines, i)
        addresses = [w.rstrip(",") for w in words[:-1]]
        listen = ":80" if all(a.startswith("http://") or a.startswith(":80") for a in addresses) else ":443"
        server = servers.setdefault(f"srv{len(servers)}", {"listen": [listen], "routes": []})
        hosts = [re.sub(r"^\w+://", "", a).split(":")[0] for a in addresses if not a.startswith(":")]
        routes = _site_routes(body)
        server["routes"].append({"match": [{"host": hosts}] if hosts else [], "handle": [
            {"handler": "subroute", "routes": routes}]})
    return {"apps": {"http": {"servers": servers}}}


def _site_routes(body: list[tuple[int, list[str]]], named: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
    routes: list[dict[str, Any]] = []
    # Named matchers (`@api path /a/* /b/*`): only their path part matters here.
    named = dict(named or {})
    for _, w in body:
        if w[0].startswith("@") and len(w) > 2 and w[1] == "path":
            named[w[0]] = w[2:]
    i = 0
    while i < len(body):
        words = body[i][1]
        name = words[0]
        if name in ("handle", "handle_path", "route") and words[-1] == "{":
            inner, i = _block(body, i)
            match = [{"path": named.get(words[1], [words[1]])}] if len(words) > 2 else []
            handles: list[dict[str, Any]] = []
            if name == "handle_path" and len(words) > 2:
                handles.append({"handler": "rewrite", "strip_path_prefix": words[1].rstrip("*").rstrip("/")})
            handles.append({"handler": "subroute", "routes": _site_routes(inner, named)})
            routes.append({"match": match, "handle": handles})
            continue
        if name == "rewrite" and len(words) >= 3:
            uri = words[2].replace("{path}", _PATH_PLACEHOLDER)
            routes.append({"match": [], "handle": [{"handler": "rewrite", "uri": uri}]})
            i += 1
            continue
        if name == "reverse_proxy":
            args = [w for w in words[1:] if w != "{"]
            match = []
            if args and args[0].startswith("/"):
                match = [{"path": [args.pop(0)]}]
            elif args and args[0] in named:
                match = [{"path": named[args.pop(0)]}]
            handler: dict[str, Any] = {"handler": "reverse_proxy",
                                       "upstreams": [{"dial": re.sub(r"^\w+://", "", a)} for a in args]}
            if words[-1] == "{":
                inner, i = _block(body, i)
                _proxy_options(inner, handler)
            else:
                i += 1
            routes.append({"match": match, "handle": [handler]})
            continue
        i = _block(body, i)[1] if words[-1] == "{" else i + 1  # other directives (header, encode, @matchers...)
    return routes


def _proxy_options(inner: list[tuple[int, list[str]]], handler: dict[str, Any]) -> None:
    for _, w in inner:
        if w[0] == "to":
            handler["upstreams"] += [{"dial": re.sub(r"^\w+://", "", a)} for a in w[1:]]
        elif w[0] == "lb_policy" and len(w) > 1:
            handler["load_balancing"] = {"selection_policy": {"policy": w[1], **({"name": w[2]} if len(w) > 2 else {})}}
        elif w[0] == "health_uri" and len(w) > 1:
            handler.setdefault("health_checks", {}).setdefault("active", {})["uri"] = w[1]
        elif w[0] == "health_headers":
            handler.setdefault("health_checks", {}).setdefault("active", {}).setdefault("headers", {})
        elif w[0] == "apikey" and "health_checks" in handler:
            handler["health_checks"]["active"].setdefault("headers", {})["apikey"] = [w[1] if len(w) > 1 else ""]
        elif w[0] == "health_port" and len(w) > 1:
            handler.setdefault("health_checks", {}).setdefault("active", {})["port"] = w[1]
        elif w[0] in ("read_timeout", "write_timeout") and len(w) > 1:
            handler.setdefault("transport", {"protocol": "http"})[w[0]] = w[1]
        elif w[0] == "tls":
            handler.setdefault("transport", {"protocol": "http"})["tls"] = {}
        elif w[0] in ("flush_interval", "request_buffers", "response_buffers") and len(w) > 1:
            handler[w[0]] = w[1]
