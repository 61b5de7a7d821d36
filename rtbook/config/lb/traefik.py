"""Traefik dynamic configuration: YAML or TOML files (``http.routers/services/middlewares``) or compose labels.

Traefik (v2/v3) proxies WebSockets on its own (HTTP/1.1, ``Upgrade`` forwarded), so the
WebSocket-relevant parts are the router rules and middlewares (``stripPrefix``, ``buffering``)
on the way to ``/realtime/v1/``, the service's sticky cookie, and its health check. Label keys
are case-insensitive in Traefik, so they are matched lower-cased. Static settings
(``entryPoints.*.transport.respondingTimeouts``) are not part of the dynamic configuration and
are not read.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from rtbook.config.lb import Health, LbConfig, LbRoute, Setting, Sticky
from rtbook.exceptions import InputError

__all__ = ["parse"]


def parse(path: Path, text: str) -> LbConfig:
    """Parse a Traefik dynamic config (YAML/TOML) or a compose file with ``traefik.*`` labels."""
    source = str(path)
    if path.suffix == ".toml":
        import tomllib

        try:
            data: Any = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InputError(f"{source}: not valid TOML ({exc}); fix the line named") from None
        parser = "tomllib (Traefik TOML dynamic config)"
    else:
        from rtbook.config.yamlfile import load_yaml

        data = load_yaml(text, source)
        parser = "YAML (Traefik dynamic config)"
    if isinstance(data, dict) and isinstance(data.get("services"), dict) and "http" not in data:
        data = _from_labels(data)
        parser = "compose labels (traefik.*)"
    http = data.get("http") if isinstance(data, dict) else None
    if not isinstance(http, dict):
        raise InputError(f"{source}: no Traefik http routers found (no 'http:' section or traefik.http.* labels); "
                         "pass the dynamic config file or the compose file with the labels")
    routers = _lower_keys(http.get("routers") or {})
    services = _lower_keys(http.get("services") or {})
    middlewares = _lower_keys(http.get("middlewares") or {})
    routes = []
    for name, router in routers.items():
        if not isinstance(router, dict):
            continue
        rule = str(router.get("rule") or "")
        service_name = str(router.get("service") or name).split("@")[0]
        service = services.get(service_name.lower(), {}) or {}
        lb = service.get("loadbalancer") or {}
        servers = tuple(str(s.get("url") or s.get("address") or "") for s in (lb.get("servers") or [])
                        if isinstance(s, dict))
        sticky = None
        sticky_cfg = lb.get("sticky")
        if isinstance(sticky_cfg, dict) and "cookie" in sticky_cfg:
            cookie = sticky_cfg.get("cookie")
            cname = cookie.get("name", "") if isinstance(cookie, dict) else ""
            sticky = Sticky("sticky cookie" + (f" {cname}" if cname else ""), _where(source, text, "sticky"))
        health = None
        hc = lb.get("healthcheck")
        if isinstance(hc, dict) and hc.get("path"):
            health = Health(str(hc["path"]), _where(source, text, "healthcheck", "healthCheck"),
                            expect=str(hc.get("status") or "2xx/3xx (Traefik default)"),
                            port=str(hc.get("port") or ""), host=str(hc.get("hostname") or ""),
                            headers=tuple(str(h).lower() for h in (hc.get("headers") or {})))
        mws = router.get("middlewares") or []
        if isinstance(mws, str):
            mws = [m.strip() for m in mws.split(",")]
        rewrite = None
        buffering = []
        for m in mws:
            mw = middlewares.get(str(m).split("@")[0].lower()) or {}
            strip = mw.get("stripprefix")
            if isinstance(strip, dict):
                prefixes = strip.get("prefixes") or []
                if isinstance(prefixes, str):
                    prefixes = [p.strip() for p in prefixes.split(",")]
                for p in prefixes:
                    if "/realtime/v1/websocket".startswith(str(p)) or rewrite is None:
                        rewrite = (str(p), "")
            if isinstance(mw.get("buffering"), dict):
                buffering.append(Setting(f"middleware {m} buffering", str(mw["buffering"]),
                                         _where(source, text, "buffering")))
        tls = bool(router.get("tls")) or any("secure" in str(e) or "443" in str(e)
                                             for e in _as_list(router.get("entrypoints")))
        scheme = "https" if any(s.startswith("https://") for s in servers) or lb.get("serverstransport") else "http"
        priority = float(router.get("priority") or len(rule))
        routes.append(LbRoute(
            name=f"router {name} → service {service_name}",
            where=_where(source, text, f"routers.{name}.", f"{name}:", name),
            group="traefik",
            priority=priority,
            paths=_rule_paths(rule),
            upstream=service_name,
            servers=servers,
            http11=None,
            upgrade=None,
            timeouts=(),
            sticky=sticky,
            health=health,
            tls_listener=tls,
            backend_scheme=scheme,
            buffering=tuple(buffering),
            rewrite=rewrite,
            notes=(f"rule {rule}",),
        ))
    return LbConfig("traefik", source, (source,), tuple(routes), parser=parser,
                    notes=("entryPoint timeouts live in Traefik's static configuration, which is not read",))


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",")]
    return list(value) if isinstance(value, list) else []


def _lower_keys(value: Any) -> Any:
    """Traefik matches option names case-insensitively (``loadBalancer`` = ``loadbalancer``)."""
    if isinstance(value, dict):
        return {str(k).lower(): _lower_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_lower_keys(v) for v in value]
    return value


def _rule_paths(rule: str) -> tuple[str, ...]:
    paths = []
    for m in re.finditer(r"\b(PathPrefix|Path)\(([^)]*)\)", rule):
        paths.extend(re.findall(r"[`\"']([^`\"']*)[`\"']", m.group(2)))
    for m in re.finditer(r"\bPathRegexp\(\s*[`\"']\^?((?:[\w/.-]|\\.)*)", rule):
        paths.append(m.group(1).replace("\\", ""))
    return tuple(paths) if paths else ("/",)


def _where(source: str, text: str, *needles: str) -> str:
    # Comment lines blanked (same line count) so that a needle in a comment does not count.
    lowered = "\n".join("" if line.lstrip().startswith("#") else line for line in text.lower().split("\n"))
    for needle in needles:
        idx = lowered.find(needle.lower())
        if idx >= 0:
            return f"{source}:{lowered.count(chr(10), 0, idx) + 1}"
    return source


def _set(tree: dict[str, Any], keys: list[str], value: Any) -> None:
    for k in keys[:-1]:
        nxt = tree.get(k)
        if not isinstance(nxt, dict):
            nxt = {}
            tree[k] = nxt
        tree = nxt
    tree[keys[-1]] = value


def _from_labels(compose: dict[str, Any]) -> dict[str, Any]:
    """The dynamic config the Docker provider builds from ``traefik.http.*`` labels (servers: the container)."""
    tree: dict[str, Any] = {}
    for sname, svc in (compose.get("services") or {}).items():
        if not isinstance(svc, dict):
            continue
        labels = svc.get("labels") or {}
        if isinstance(labels, list):
            labels = dict(str(x).split("=", 1) for x in labels if "=" in str(x))
        if str(labels.get("traefik.enable", "true")).lower() == "false":
            continue
        port = ""
        for key, value in labels.items():
            key = str(key).strip().lower()
            if not key.startswith("traefik.http."):
                continue
            parts = key.split(".")[2:]
            if parts[:1] == ["services"] and parts[-3:] == ["loadbalancer", "server", "port"]:
                port = str(value)
            _set(tree, parts, value)
        replicas = ((svc.get("deploy") or {}).get("replicas")) or 1
        for service in (tree.get("services") or {}).values():
            lb = service.setdefault("loadbalancer", {})
            if "servers" not in lb or not isinstance(lb["servers"], list):
                lb["servers"] = [{"url": f"http://{sname}:{port or '80'}"} for _ in range(int(replicas))]
        # The Docker provider gives a router without `service` the container's only service, else one named
        # after the router.
        own_services = [str(k).split(".")[3] for k in labels if str(k).lower().startswith("traefik.http.services.")
                        and len(str(k).split(".")) > 3]
        for rname, router in (tree.get("routers") or {}).items():
            if isinstance(router, dict) and "service" not in router:
                distinct = sorted(set(own_services))
                router["service"] = distinct[0] if len(distinct) == 1 else rname
    return {"http": tree}
