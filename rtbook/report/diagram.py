"""The message path, drawn from a run's results: client → load balancer → gateway route → Host → tenant →
Realtime → database (WAL level, publication, RLS).

Each hop is coloured by the verdicts of the checks that judge it and labelled with the latency
measured there. A failure that a root cause on another hop explains colours its own hop as
*affected*, not failed, so the one red hop is where the fix goes (``hop-fail``). Renderings: SVG
(hand-built, every text escaped; the root element has class ``rtbook-path``) for notebooks and
``summary.html``, and plain text for the CLI.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rtbook.report.rootcause import RootCause, root_causes
from rtbook.results import CheckResult, Status, printable

__all__ = ["HOPS", "Hop", "PathDiagram", "hop_of", "path_hops"]


@dataclass(frozen=True)
class _HopSpec:
    key: str
    label: str
    # Check ids (exact) or prefixes ending in "."; a check belongs to the hop with its longest match.
    patterns: tuple[str, ...]
    # (check id, metric, label) pairs, first found wins: the latency shown on the hop.
    latency: tuple[tuple[str, str, str], ...] = ()
    optional: bool = False  # drawn only when one of its checks ran (the load balancer)


HOPS: tuple[_HopSpec, ...] = (
    _HopSpec("client", "Client", ("env.",)),
    _HopSpec("lb", "Load balancer", ("lb.",), optional=True),
    _HopSpec("gateway", "Gateway route", ("kong.", "envoy.", "gateway.", "docker.gateway."),
             (("gateway.websocket", "connect_ms", "upgrade"), ("gateway.rest", "elapsed_ms", "ping"))),
    _HopSpec("host", "Host header", ("compose.realtime.tenant_consistency", "kong.realtime_preserve_host",
                                     "envoy.realtime_host_rewrite", "docker.realtime.tenant_host",
                                     "compose.realtime.network")),
    _HopSpec("tenant", "Tenant", ("tenant.", "compose.realtime.seed_self_host", "compose.realtime.jwt_secret",
                                  "compose.realtime.db_enc_key")),
    _HopSpec("realtime", "Realtime", ("compose.realtime.", "docker.", "realtime."),
             (("realtime.join", "join_ms", "join"), ("realtime.health", "elapsed_ms", "health"))),
    _HopSpec("database", "Database", ("db.", "compose.db.", "realtime.postgres_changes", "realtime.rls"),
             (("realtime.postgres_changes", "insert_ms", "change"), ("db.connect", "connect_ms", "connect"))),
)

# The database's three parts a reader asks about first, each with the check that judges it.
_DB_PARTS = (("WAL level", "db.wal_level", "compose.db.wal_level"), ("publication", "db.publication", ""),
             ("RLS", "db.rls", "realtime.rls"))

_FILL = {  # background, border, text
    "pass": ("#e6f4ea", "#137333", "#0d5323"),
    "warn": ("#fef7e0", "#b06000", "#7a4300"),
    "fail": ("#fce8e6", "#c5221f", "#8c1d18"),
    "affected": ("#fff4e5", "#e37400", "#8a4500"),
    "skip": ("#f1f3f4", "#80868b", "#3c4043"),
    "unknown": ("#ffffff", "#bdc1c6", "#5f6368"),
}
_WORD = {"pass": "ok", "warn": "warning", "fail": "FAILS HERE", "affected": "affected", "skip": "skipped",
         "unknown": "not checked"}


def hop_of(check_id: str) -> str:
    """The key of the hop that ``check_id`` judges (``realtime`` when no pattern matches)."""
    best, length = "realtime", -1
    for spec in HOPS:
        for p in spec.patterns:
            hit = check_id == p or (p.endswith(".") and check_id.startswith(p))
            if hit and len(p) > length:
                best, length = spec.key, len(p)
    return best


@dataclass(frozen=True)
class Hop:
    """One hop of the path as this run saw it."""

    key: str
    label: str
    detail: str
    status: str  # pass | warn | fail | affected | skip | unknown
    latency: str = ""  # e.g. "join 2 ms"
    checks: tuple[tuple[str, str], ...] = ()  # (check id, status) of the checks that ran on it
    parts: tuple[tuple[str, str], ...] = ()  # (name, status): the database's WAL level, publication, RLS
    root: bool = False  # a root cause sits on this hop

    @property
    def css(self) -> str:
        """``hop hop-<status>`` (and ``hop-root`` where a root cause is)."""
        return f"hop hop-{self.status}" + (" hop-root" if self.root else "")


def _latest(results: Iterable[CheckResult]) -> dict[str, CheckResult]:
    out: dict[str, CheckResult] = {}
    for r in results:
        out.pop(r.id, None)
        out[r.id] = r
    return out


def _status_of(results: Sequence[CheckResult], root_hop: Mapping[str, str], key: str) -> str:
    if not results:
        return "unknown"
    ran = [r for r in results if r.status is not Status.SKIP]
    if not ran:
        return "skip"
    fails = [r for r in ran if r.failed]
    if any(root_hop.get(r.id, key) == key for r in fails):
        return "fail"
    if fails:
        return "affected"  # every failure here is explained by a root cause on another hop
    if any(r.status is Status.WARN for r in ran):
        return "warn"
    return "pass"


def _ms(value: Any) -> str:
    try:
        ms = float(value)
    except (TypeError, ValueError):
        return ""
    return f"{ms:.0f} ms" if ms >= 1 else f"{ms:.1f} ms"


def _detail(key: str, by_id: Mapping[str, CheckResult], tenant: str) -> str:
    def ev(cid: str, name: str) -> Any:
        r = by_id.get(cid)
        return r.evidence.get(name) if r is not None else None

    if key == "client":
        return "apikey from .env (ANON_KEY)"
    if key == "gateway":
        for cid, kind in (("kong.realtime_ws", "Kong"), ("envoy.realtime_ws", "Envoy")):
            r = by_id.get(cid)
            if r is not None and r.status is not Status.SKIP:
                route, upstream = ev(cid, "route"), ev(cid, "upstream")
                if route and upstream:
                    return f"{kind} route {route} → {upstream}"
                return f"{kind}: {r.summary[:60]}"
        return "gateway"
    if key == "host":
        hosts = ev("compose.realtime.tenant_consistency", "gateway_hosts")
        if isinstance(hosts, list) and hosts:
            host = str(hosts[0])
            return f"Host {host} → tenant {host.split(':', 1)[0].split('.', 1)[0]}"
        return "Host header sent to Realtime"
    if key == "tenant":
        seeded = ev("compose.realtime.tenant_consistency", "seeded_tenant")
        return f"tenant {tenant or seeded or '?'}" + (f" (seeded: {seeded})" if seeded and tenant and
                                                     seeded != tenant else "")
    if key == "realtime":
        image = ev("compose.realtime.present", "image")
        tag = str(image).rpartition(":")[2] if image and ":" in str(image) else ""
        return f"Realtime {tag}".strip() if tag else "Realtime (Phoenix channels)"
    if key == "database":
        version = ev("db.connect", "server_version")
        wal = ev("db.wal_level", "wal_level")
        parts = [f"PostgreSQL {str(version).split(' ', 1)[0]}" if version else "PostgreSQL"]
        if wal:
            parts.append(f"wal_level={wal}")
        return ", ".join(parts)
    return ""


def path_hops(results: Iterable[CheckResult], roots: Sequence[RootCause] | None = None,
              tenant: str = "") -> list[Hop]:
    """The hops of the message path with their verdicts, latencies and details, from ``results``."""
    listed = list(results)
    by_id = _latest(listed)
    roots = root_causes(listed) if roots is None else roots
    # Which hop each failing check's root cause sits on: the root's own hop counts as failing, others as affected.
    root_hop: dict[str, str] = {}
    root_keys: set[str] = set()
    for rc in roots:
        if not (rc.result.failed or rc.symptoms):
            continue  # a lone warning is shown as a warning, not as a cause
        where = hop_of(rc.check_id)
        root_keys.add(where)
        root_hop[rc.check_id] = where
        for s in rc.symptoms:
            root_hop[s.id] = where
    grouped: dict[str, list[CheckResult]] = {spec.key: [] for spec in HOPS}
    for r in by_id.values():
        if r.id.startswith("troubleshoot."):
            continue
        grouped[hop_of(r.id)].append(r)
    if not tenant:
        tenant = next((str(r.evidence.get("tenant")) for r in by_id.values()
                       if isinstance(r.evidence.get("tenant"), str)), "")
    hops = []
    for spec in HOPS:
        mine = grouped[spec.key]
        if spec.optional and not any(r.status is not Status.SKIP for r in mine):
            continue
        latency = ""
        for cid, metric, word in spec.latency:
            got = by_id.get(cid)
            if got is not None and metric in got.metrics and got.status is Status.PASS:
                latency = f"{word} {_ms(got.metrics[metric])}"
                break
        parts: tuple[tuple[str, str], ...] = ()
        if spec.key == "database":
            found = []
            for name, cid, alt in _DB_PARTS:
                part = by_id.get(cid) or (by_id.get(alt) if alt else None)
                found.append((name, "unknown" if part is None else
                              ("fail" if part.failed else part.status.value)))
            parts = tuple(found)
        hops.append(Hop(
            spec.key, spec.label, _detail(spec.key, by_id, tenant), _status_of(mine, root_hop, spec.key),
            latency, tuple((r.id, r.status.value) for r in mine if r.status is not Status.SKIP), parts,
            root=spec.key in root_keys,
        ))
    return hops


# ---------------------------------------------------------------- renderings

_BOX_W, _BOX_H, _GAP, _PAD = 150, 114, 34, 10


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _wrap(text: str, n: int) -> tuple[str, str]:
    """Split ``text`` in two at the last space (or "/", "→") before ``n`` characters."""
    if len(text) <= n:
        return text, ""
    cut = max(text.rfind(c, 0, n) for c in (" ", "/", "→"))
    cut = cut if cut > n // 3 else n
    return text[:cut].rstrip(), text[cut:].lstrip()


def _svg(hops: Sequence[Hop]) -> str:
    e = html.escape
    width = _PAD * 2 + len(hops) * _BOX_W + (len(hops) - 1) * _GAP
    height = _BOX_H + 2 * _PAD + 22
    out = [
        f'<svg class="rtbook-path" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="100%" style="max-width:{width}px;font-family:sans-serif" role="img" '
        f'aria-label="{e(_aria(hops))}">',
        '<defs><marker id="rtbook-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#5f6368"/></marker></defs>',
    ]
    for i, hop in enumerate(hops):
        x = _PAD + i * (_BOX_W + _GAP)
        y = _PAD
        bg, border, ink = _FILL[hop.status]
        stroke = 4 if hop.status == "fail" else 1.5
        dash = ' stroke-dasharray="6 3"' if hop.status in ("affected", "unknown") else ""
        checks = "; ".join(f"{cid}={st}" for cid, st in hop.checks) or "no check ran"
        out.append(f'<g class="{e(hop.css)}" data-hop="{e(hop.key)}" data-status="{e(hop.status)}">')
        out.append(f"<title>{e(hop.label)}: {e(_WORD[hop.status])} — {e(hop.detail)} ({e(checks)})</title>")
        out.append(f'<rect x="{x}" y="{y}" width="{_BOX_W}" height="{_BOX_H}" rx="8" fill="{bg}" '
                   f'stroke="{border}" stroke-width="{stroke}"{dash}/>')
        out.append(f'<text x="{x + 10}" y="{y + 20}" font-size="13" font-weight="bold" fill="{ink}">'
                   f"{e(hop.label)}</text>")
        out.append(f'<text x="{x + 10}" y="{y + 37}" font-size="11" fill="{ink}">{e(_WORD[hop.status])}</text>')
        first, rest = _wrap(hop.detail, 25)
        out.append(f'<text x="{x + 10}" y="{y + 52}" font-size="10" fill="#3c4043">{e(first)}</text>')
        if rest:
            out.append(f'<text x="{x + 10}" y="{y + 64}" font-size="10" fill="#3c4043">{e(_clip(rest, 25))}</text>')
        if hop.parts:
            for j, (name, st) in enumerate(hop.parts):
                colour = _FILL["fail" if st == "error" else st if st in _FILL else "unknown"][1]
                yy = y + 78 + j * 11
                out.append(f'<circle cx="{x + 14}" cy="{yy - 3}" r="4" fill="{colour}"/>')
                out.append(f'<text x="{x + 22}" y="{yy}" font-size="10" fill="#3c4043">{e(name)}: {e(st)}</text>')
        elif hop.checks:
            out.append(f'<text x="{x + 10}" y="{y + 84}" font-size="10" fill="#5f6368">'
                       f"{len(hop.checks)} check{'s' if len(hop.checks) != 1 else ''}</text>")
        if hop.latency:
            out.append(f'<text x="{x + _BOX_W / 2}" y="{y + _BOX_H + 16}" font-size="11" text-anchor="middle" '
                       f'fill="#1a73e8">{e(hop.latency)}</text>')
        out.append("</g>")
        if i < len(hops) - 1:
            ax = x + _BOX_W + 2
            out.append(f'<line x1="{ax}" y1="{y + _BOX_H / 2}" x2="{ax + _GAP - 4}" y2="{y + _BOX_H / 2}" '
                       'stroke="#5f6368" stroke-width="1.5" marker-end="url(#rtbook-arrow)"/>')
    out.append("</svg>")
    return "".join(out)


def _aria(hops: Sequence[Hop]) -> str:
    return "Message path: " + " → ".join(f"{h.label} ({_WORD[h.status]})" for h in hops)


def _text(hops: Sequence[Hop]) -> str:
    lines = ["path: " + " → ".join(h.label for h in hops)]
    width = max((len(h.label) for h in hops), default=8)
    for h in hops:
        tag = {"pass": "ok  ", "warn": "WARN", "fail": "FAIL", "affected": "aff.", "skip": "skip",
               "unknown": "  - "}[h.status]
        extra = f"  {h.latency}" if h.latency else ""
        parts = ("  [" + ", ".join(f"{n}: {s}" for n, s in h.parts) + "]") if h.parts else ""
        mark = "  <- root cause" if h.root and h.status == "fail" else ""
        lines.append(printable(f"  [{tag}] {h.label:<{width}}  {h.detail}{parts}{extra}{mark}"))
    return "\n".join(lines)


@dataclass
class PathDiagram:
    """The path diagram of a run; shows itself as SVG in JupyterLab and as text elsewhere."""

    hops: list[Hop] = field(default_factory=list)

    @classmethod
    def from_results(cls, results: Iterable[CheckResult], roots: Sequence[RootCause] | None = None,
                     tenant: str = "") -> PathDiagram:
        """Build the diagram of ``results`` (the root causes are computed when not given)."""
        return cls(path_hops(results, roots, tenant))

    def svg(self) -> str:
        """The diagram as one ``<svg class="rtbook-path">`` element (no external resource)."""
        return _svg(self.hops)

    def text(self) -> str:
        """The diagram as plain text, one line per hop."""
        return _text(self.hops)

    @property
    def failing(self) -> list[Hop]:
        """The hops where a root cause fails."""
        return [h for h in self.hops if h.status == "fail"]

    def __str__(self) -> str:
        return self.text()

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(self.text())

    def _repr_html_(self) -> str:
        return f'<div class="rtbook-path-box" style="max-width:100%;overflow-x:auto">{self.svg()}</div>'
