"""Load-balancer configs in front of the stack (``rtbook check --lb FILE``), read into one typed model.

One module per kind (nginx, haproxy, caddy, traefik, alb) turns its own file into an
:class:`LbConfig`: the routes clients take, where each one goes, and what each route does to a
WebSocket (HTTP/1.1 and ``Upgrade`` forwarding, the timeouts that close an idle tunnel,
stickiness, health checks). The ``lb.*`` checks judge that model and write every remedy in the
kind's own syntax. Parsers are imported only when a file of their kind is read (crossplane and
python-hcl2 stay out of ``rtbook check --stack``).
"""

from __future__ import annotations

import importlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from rtbook.exceptions import InputError

__all__ = [
    "KINDS",
    "Health",
    "LbConfig",
    "LbRoute",
    "Setting",
    "Sticky",
    "detect_kind",
    "load_lb",
    "parse_duration",
    "split_spec",
]

KINDS = ("nginx", "haproxy", "caddy", "traefik", "alb")


@dataclass(frozen=True)
class Setting:
    """One configured value and where it is written (``file:line`` when the format has lines)."""

    name: str
    value: str
    where: str
    seconds: float | None = None


@dataclass(frozen=True)
class Sticky:
    """How a route keeps a client on one backend: ``method`` is the kind's own word (``ip_hash``, ``cookie``...)."""

    method: str
    where: str
    enabled: bool = True
    duration_s: float | None = None
    detail: str = ""


@dataclass(frozen=True)
class Health:
    """An active health check: the request it sends and what counts as healthy."""

    path: str
    where: str
    expect: str = ""
    port: str = ""
    host: str = ""
    headers: tuple[str, ...] = ()


@dataclass(frozen=True)
class LbRoute:
    """One way through the load balancer to a pool of backends.

    Attributes:
        name: the route in the kind's words (``server :443 location /realtime/v1/``, ``backend kong``...).
        where: ``file:line`` of the route (the location, backend, router...).
        paths: the request path prefixes it matches (``/`` for everything).
        upstream: the pool's name (nginx upstream, HAProxy backend, Traefik service, target group...).
        servers: the backend addresses.
        http11: the proxy speaks HTTP/1.1 to the backends (None: not configurable, always does).
        upgrade: ``Upgrade``/``Connection`` reach the backend (None: handled by the proxy itself).
        timeouts: the timeouts that close an established, quiet WebSocket (with their defaults).
        sticky: how clients are kept on one backend, if at all.
        health: the active health check, if any.
        tls_listener: the client side is TLS (the proxy terminates it).
        backend_scheme: ``http`` or ``https`` towards the backends.
        buffering: buffering settings on the route, by name.
        rewrite: ``(prefix, replacement)`` when the route replaces the matched path prefix before
            proxying (nginx ``proxy_pass`` with a URI, Caddy ``handle_path``, Traefik ``stripPrefix``).
        notes: what the parser assumed (defaults applied, parts it does not read).
        group: the listener the route belongs to (nginx server, HAProxy frontend, Caddy site...):
            within one group a request takes the matching route of highest ``priority``.
        priority: the kind's precedence as a number (nginx: longest prefix; HAProxy: first rule).
    """

    name: str
    where: str
    group: str = ""
    priority: float = 0.0
    paths: tuple[str, ...] = ("/",)
    upstream: str = ""
    servers: tuple[str, ...] = ()
    http11: bool | None = None
    upgrade: bool | None = None
    timeouts: tuple[Setting, ...] = ()
    sticky: Sticky | None = None
    health: Health | None = None
    tls_listener: bool = False
    backend_scheme: str = "http"
    buffering: tuple[Setting, ...] = ()
    rewrite: tuple[str, str] | None = None
    notes: tuple[str, ...] = ()

    def forwarded(self, path: str) -> str:
        """The path the backend receives for a request of ``path``."""
        if self.rewrite and path.startswith(self.rewrite[0]):
            return self.rewrite[1] + path[len(self.rewrite[0]):]
        return path

    def matches(self, path: str) -> bool:
        """Whether a request for ``path`` can take this route (prefix match, as every kind here does)."""
        return any(path.startswith(p) or p in ("", "/") for p in self.paths)


@dataclass(frozen=True)
class LbConfig:
    """A load balancer's config: its kind, the files read, and its routes.

    Attributes:
        kind: one of :data:`KINDS`.
        source: the file named on the command line.
        files: every file read (includes followed).
        routes: the routes found.
        parser: which parser read it, in words (e.g. ``caddy adapt (caddy v2.6.2)``).
        notes: what the parser could not read or assumed.
        settings: kind-wide settings the checks look at (e.g. ALB ``idle_timeout.timeout_seconds``).
    """

    kind: str
    source: str
    files: tuple[str, ...] = ()
    routes: tuple[LbRoute, ...] = ()
    parser: str = ""
    notes: tuple[str, ...] = ()
    settings: dict[str, Setting] = field(default_factory=dict)

    def realtime_routes(self) -> list[LbRoute]:
        """The routes a Realtime WebSocket (``/realtime/v1/websocket``) takes: per listener, the one that wins."""
        best: dict[str, LbRoute] = {}
        for r in self.routes:
            if r.matches("/realtime/v1/websocket") and (r.group not in best or r.priority > best[r.group].priority):
                best[r.group] = r
        return list(best.values())


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|us|µs|ns|s|m|h|d|w|M|y)?")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0,
          "w": 604800.0, "M": 2592000.0, "y": 31536000.0}


def parse_duration(text: str, default_unit: str = "s") -> float | None:
    """Seconds in a duration as nginx (``1m30s``), HAProxy (``30s``, bare = ms), Caddy/Go (``1m30s``) write it.

    Returns None for text that is not a duration.
    """
    text = str(text).strip().strip('"')
    if not text:
        return None
    total = 0.0
    pos = 0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * _UNITS[m.group(2) or default_unit]
        pos = m.end()
    return total if pos == len(text) else None


def detect_kind(path: Path, text: str) -> str:
    """The kind of a load-balancer file, from its content (and, for Caddyfiles, its name).

    Raises:
        InputError: when nothing in the file says which kind it is.
    """
    stripped = text.lstrip()
    if stripped.startswith("{") or path.suffix == ".json":
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            if "Attributes" in data or "TargetGroups" in data or "LoadBalancers" in data:
                return "alb"
            if "Resources" in data or "AWSTemplateFormatVersion" in data:
                return "alb"
            if "apps" in data:
                return "caddy"
            if "http" in data and isinstance(data["http"], dict) and "routers" in data["http"]:
                return "traefik"
    if re.search(r'^\s*resource\s+"aws_lb(_target_group)?"', text, re.MULTILINE):
        return "alb"
    if re.search(r"AWS::ElasticLoadBalancingV2::", text):
        return "alb"
    if re.search(r"traefik\.http\.|^\s*\[http\.(routers|services|middlewares)", text, re.MULTILINE) or re.search(
        r"^http:\s*\n(\s+.*\n)*?\s+routers:", text, re.MULTILINE
    ):
        return "traefik"
    if path.name.lower().startswith("caddyfile") or path.name.lower().endswith("caddyfile"):
        return "caddy"
    if re.search(r"^(frontend|backend|listen|defaults)(\s|$)", text, re.MULTILINE) and not re.search(
        r";\s*$", re.sub(r"#.*", "", text), re.MULTILINE
    ):
        return "haproxy"
    if re.search(r"\bproxy_pass\s|^\s*(http|server|events)\s*\{|^\s*upstream\s+[\w.-]+\s*\{", text, re.MULTILINE):
        return "nginx"
    if re.search(r"^\s*reverse_proxy\b", text, re.MULTILINE):
        return "caddy"
    raise InputError(
        f"{path}: cannot tell which load balancer this file is for; name the kind, e.g. --lb nginx:{path} "
        f"(kinds: {', '.join(KINDS)})"
    )


def split_spec(spec: str) -> tuple[str, Path]:
    """``KIND:FILE`` or ``FILE`` as ``--lb`` takes it: the kind (``""`` to recognise it) and an existing file.

    Raises:
        InputError: for an unknown kind or a file that does not exist (one line naming the value and the fix).
    """
    kind = ""
    raw = spec
    head, sep, rest = spec.partition(":")
    if sep and head in KINDS:
        kind, raw = head, rest
    elif sep and re.fullmatch(r"[a-z]+", head) and not Path(spec).exists():
        raise InputError(f"--lb {spec}: unknown kind {head!r}; use one of {', '.join(KINDS)}, e.g. --lb nginx:{rest}")
    path = Path(raw)
    if not path.is_file():
        raise InputError(f"--lb {spec}: {path} is not a file; pass the load balancer's config file")
    return kind, path


def load_lb(spec: str) -> LbConfig:
    """Read ``FILE`` or ``KIND:FILE`` (as ``--lb`` takes it) into an :class:`LbConfig`.

    Raises:
        InputError: when the file cannot be read or parsed, or the kind is unknown.
    """
    from rtbook.bounded import read_text

    kind, path = split_spec(spec)
    # Regular files only, bounded in size (a FIFO or /dev/zero is a usage error, not a hang).
    text = read_text(path, "load-balancer config")
    if not kind:
        kind = detect_kind(path, text)
    module = importlib.import_module(f"rtbook.config.lb.{kind}")
    config: LbConfig = module.parse(path, text)
    return config
