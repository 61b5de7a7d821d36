"""From a wall of verdicts to the cause(s) that explain them.

Checks depend on each other: a channel join needs the WebSocket through the gateway, which needs
the gateway's Realtime route, the Host it sends naming a seeded tenant, and a tenant row whose
secret signed the key. When the route is wrong, every check downstream fails too. This module
groups a run's failures under the deepest failing check they depend on (the root cause), so a
reader sees "1 cause explains 9 symptoms" with one remedy instead of ten rows with ten remedies.

Where a check depends on another comes from three places, all declared, none guessed from text:

- :data:`DEPENDS_ON`, the path itself (this module's table);
- a failing result's ``see_also`` (the static checks that would have caught it, set by the check);
- its ``cause``'s ``static_checks`` in :mod:`rtbook.remedies`.

Edges only ever point to a check that runs earlier on the path (a lower :data:`RANK`), or are
listed in :data:`DEPENDS_ON`, whose same-rank edges form no cycle (a unit test checks it); so
every failure has at least one root and the grouping terminates.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from rtbook.remedies import CAUSES, PLACEHOLDER
from rtbook.results import CheckResult, Status, printable

__all__ = ["DEPENDS_ON", "RANK", "RootCause", "closing_lines", "dependencies", "offerable_remedy", "root_causes"]

# How far along the path a check area is: a check can only be explained by one of a lower rank
# (or by an explicit same-rank edge of DEPENDS_ON). Files first, then containers, the database
# and the tenant row, the gateway probes, the live Realtime clients, and 05's symptom verdicts.
RANK: Mapping[str, int] = {
    "compose": 0, "env": 0, "kong": 0, "envoy": 0, "lb": 0,
    "docker": 1,
    "db": 2, "tenant": 2,
    "gateway": 3,
    "realtime": 4,
    "troubleshoot": 5,
}

_TENANT_ROW = ("tenant.row", "tenant.jwt_secret", "tenant.extension", "tenant.db_settings")
_HOST = ("compose.realtime.tenant_consistency", "kong.realtime_preserve_host", "envoy.realtime_host_rewrite",
         "docker.realtime.tenant_host")
_ROUTE_WS = ("kong.realtime_ws", "envoy.realtime_ws", "kong.realtime_auth", "envoy.realtime_auth")

# check id (exact) or area prefix ending in "." -> the checks it cannot pass without.
DEPENDS_ON: Mapping[str, tuple[str, ...]] = {
    "compose.realtime.": ("compose.realtime.present",),
    "kong.": ("kong.parse",),
    "kong.realtime_auth": ("kong.parse", "kong.realtime_ws", "kong.plugins_enabled"),
    # A route whose upstream name does not resolve fails for the reason the tenant-consistency check names
    # (the container's name): one cause, judged from the compose file.
    "kong.realtime_ws": ("kong.parse", "kong.placeholders", "compose.realtime.tenant_consistency"),
    "kong.realtime_rest": ("kong.parse", "kong.placeholders", "compose.realtime.tenant_consistency"),
    # The upstream host's first label names the wrong tenant: the same disagreement the tenant-consistency
    # check reads from the compose file, the gateway file and the seed together; that check is the cause.
    "kong.realtime_region_host": ("kong.parse", "compose.realtime.tenant_consistency"),
    "envoy.": ("envoy.parse",),
    "envoy.realtime_ws": ("envoy.parse", "envoy.placeholders", "compose.realtime.tenant_consistency"),
    "envoy.realtime_rest": ("envoy.parse", "envoy.placeholders", "compose.realtime.tenant_consistency"),
    "docker.": ("docker.engine",),
    "docker.realtime.health": ("docker.engine", "docker.realtime.running"),
    "docker.realtime.logs": ("docker.engine", "docker.realtime.running"),
    "db.": ("db.connect",),
    # The database's wal_level comes from the compose file's command: the file is the place to fix it.
    "db.wal_level": ("db.connect", "compose.db.wal_level"),
    "db.wal2json": ("db.connect", "db.wal_level"),
    "db.realtime_slots": ("db.connect", "db.wal_level", "db.wal2json", "db.publication"),
    "db.replication_capacity": ("db.connect", "db.wal_level"),
    "tenant.": ("db.connect", "tenant.schema", "tenant.row"),
    "tenant.schema": ("db.connect",),
    # Not on compose.realtime.seed_self_host: the missing row is the cause to fix (its plan creates it);
    # a seed switched off only explains why nothing repaired it, and is reported as a cause of its own.
    "tenant.row": ("db.connect", "tenant.schema"),
    "gateway.": ("kong.parse", "envoy.parse"),
    "gateway.rest": ("kong.parse", "envoy.parse", "kong.realtime_rest", "envoy.realtime_rest", *_HOST,
                     "tenant.row", "tenant.jwt_secret", "docker.realtime.running"),
    "gateway.websocket": ("kong.parse", "envoy.parse", *_ROUTE_WS, *_HOST, *_TENANT_ROW, "env.api_keys",
                          "docker.realtime.running"),
    "gateway.key_auth": ("kong.realtime_auth", "envoy.realtime_auth"),
    "realtime.health": ("tenant.row", "tenant.jwt_secret", "tenant.db_settings", "docker.realtime.running"),
    "realtime.": ("realtime.join",),
    "realtime.join": ("gateway.websocket", *_TENANT_ROW, "realtime.health"),
    "realtime.postgres_changes": ("realtime.join", "db.wal_level", "db.wal2json", "db.publication",
                                  "db.replication_capacity", "db.realtime_slots", "db.primary_key",
                                  "tenant.extension", "tenant.db_settings", "compose.db.wal_level"),
    "realtime.rls": ("realtime.join", "realtime.postgres_changes", "db.rls"),
    # Through a load balancer: nodes that are not one cluster fail the two-client checks when their clients
    # land on different nodes, and a proxy timeout below the heartbeat cuts the checks that wait longest
    # (a refused join is held CHANNEL_ERROR_BACKOFF_MS); realtime.cluster names either cause.
    "realtime.cluster": ("realtime.join",),
    "realtime.broadcast": ("realtime.join", "realtime.cluster"),
    "realtime.presence": ("realtime.join", "realtime.cluster"),
    "realtime.private": ("realtime.join", "realtime.cluster"),
    "realtime.bad_token": ("realtime.join", "realtime.cluster"),
}


def _area(check_id: str) -> str:
    return check_id.split(".", 1)[0]


def _rank(check_id: str) -> int:
    return RANK.get(_area(check_id), 3)


def _declared(check_id: str) -> tuple[str, ...]:
    if check_id in DEPENDS_ON:
        return DEPENDS_ON[check_id]
    prefixes = [k for k in DEPENDS_ON if k.endswith(".") and check_id.startswith(k)]
    return DEPENDS_ON[max(prefixes, key=len)] if prefixes else ()


def dependencies(result: CheckResult) -> tuple[str, ...]:
    """The check ids ``result`` depends on: declared, its ``see_also`` and its cause's static checks.

    Only edges to an earlier rank are kept from ``see_also`` and the cause (they may point back up,
    e.g. a static check naming the live check that would show it); declared edges are kept as they are.
    """
    declared = _declared(result.id)
    extra = [*result.see_also]
    if result.cause in CAUSES:
        extra += CAUSES[result.cause].static_checks
    own = _rank(result.id)
    out = [d for d in declared if d != result.id]
    out += [d for d in extra if d != result.id and d not in out and _rank(d) < own]
    return tuple(out)


@dataclass(frozen=True)
class RootCause:
    """One cause: the deepest failing check, its one remedy, and the failures it explains.

    Attributes:
        result: the failing check nothing else failing explains.
        remedy: what to do, with real values (no ``<name>`` placeholder), or empty when none applies.
        symptoms: the other failing results that depend on it (folded under it, not repeated).
    """

    result: CheckResult
    remedy: str
    symptoms: tuple[CheckResult, ...] = ()

    @property
    def check_id(self) -> str:
        """The id of the root check."""
        return self.result.id

    @property
    def title(self) -> str:
        """The root check's finding, in one sentence."""
        return self.result.summary or self.result.title

    def headline(self) -> str:
        """``1 cause explains 3 symptoms``-style line naming the check."""
        n = len(self.symptoms)
        explains = f"explains {n} other failing check{'s' if n != 1 else ''}" if n else "explains no other failure"
        return f"{self.check_id} ({explains}): {self.title}"

    def text(self) -> str:
        """Plain text: the headline, the remedy, and the symptoms it explains, one line each."""
        lines = [f"ROOT CAUSE {self.headline()}"]
        if self.remedy:
            lines.append(f"  remedy: {self.remedy}")
        if self.symptoms:
            # Their findings repeat the cause's; the ids say where it showed.
            lines.append(f"  explains: {', '.join(s.id for s in self.symptoms)}")
        return "\n".join(lines)


def _latest(results: Iterable[CheckResult]) -> dict[str, CheckResult]:
    # A run may hold the same id twice (02 re-runs the tenant checks after applying a plan): the later wins.
    out: dict[str, CheckResult] = {}
    for r in results:
        out.pop(r.id, None)
        out[r.id] = r
    return out


def _plans_nothing(results: Mapping[str, CheckResult]) -> bool:
    """True when every tenant check the seeding plan acts on passed: 'rtbook tenant apply' would change nothing."""
    return all(cid in results and results[cid].status is Status.PASS for cid in _TENANT_ROW)


_APPLY = "rtbook tenant apply"
_PAREN = re.compile(r"\s*\([^()]*" + re.escape(_APPLY) + r"[^()]*\)")
_OR_CLAUSE = re.compile(r",?\s*(?:or|and)\s+(?:run\s+)?'?" + re.escape(_APPLY) + r"[^',;.)]*'?")
_SENTENCE = re.compile(r"[^.;]*" + re.escape(_APPLY) + r"[^.;]*[.;]?\s*")


def offerable_remedy(remedy: str, results: Mapping[str, CheckResult] | Sequence[CheckResult]) -> str:
    """``remedy`` without the steps that would do nothing on this stack.

    ``rtbook tenant apply --yes`` is dropped when the tenant row, its secret, extension and
    database settings all passed: its plan would be "Nothing to change".
    """
    by_id = results if isinstance(results, Mapping) else _latest(results)
    if _APPLY not in remedy or not _plans_nothing(by_id):
        return remedy
    text = _PAREN.sub("", remedy)
    text = _OR_CLAUSE.sub("", text)
    if _APPLY in text:
        text = _SENTENCE.sub("", text)
    return re.sub(r"\s+([.,;])", r"\1", text).strip()


def root_causes(results: Iterable[CheckResult], *, warnings: bool = True) -> list[RootCause]:
    """Group the failing results (fail or error) under the failing checks they depend on.

    A failing result none of whose dependencies failed is a root. Every other failing result is
    folded under the root that explains the most failures among those it (transitively) depends
    on. Roots come most-explaining first, then earliest on the path, then in run order. With
    ``warnings``, each warning whose own dependencies did not fail follows as a cause of its own
    (after every failure: a warning never outranks a failure), earliest on the path first.
    """
    latest = _latest(results)
    out = _failing_roots(latest)
    if warnings:
        failing = {cid for cid, r in latest.items() if r.failed}
        shown = {rc.check_id for rc in out} | {s.id for rc in out for s in rc.symptoms}
        warned_ids = {cid for cid, r in latest.items() if r.status is Status.WARN}
        # A warning that points at other warnings (05's symptom verdicts) only restates them: not a cause of its own.
        warned = [r for r in latest.values() if r.status is Status.WARN and r.id not in shown
                  and not any(d in failing for d in dependencies(r))
                  and not any(d in warned_ids for d in r.see_also)]
        order = {r.id: i for i, r in enumerate(warned)}
        warned.sort(key=lambda r: (_rank(r.id), order[r.id]))
        out += [RootCause(r, offerable_remedy(r.remedy, latest)) for r in warned]
    return out


def _failing_roots(latest: dict[str, CheckResult]) -> list[RootCause]:
    failing = {cid: r for cid, r in latest.items() if r.failed}
    # A failure no other failure explains can be explained by a warning it declares it needs: db.rls warns "no
    # SELECT policy for authenticated", and realtime.rls fails for that role because of it. Only then: a benign
    # warning must not take a failure away from the failing cause that explains it.
    for r in list(failing.values()):
        if any(d in failing for d in dependencies(r)):
            continue
        for d in _declared(r.id):
            if d in latest and latest[d].status is Status.WARN:
                failing.setdefault(d, latest[d])
    order = {cid: i for i, cid in enumerate(failing)}
    direct = {cid: [d for d in dependencies(r) if d in failing] for cid, r in failing.items()}

    reach_cache: dict[str, frozenset[str]] = {}

    def roots_of(cid: str, seen: frozenset[str] = frozenset()) -> frozenset[str]:
        if cid in reach_cache:
            return reach_cache[cid]
        deps = [d for d in direct[cid] if d not in seen]
        found = frozenset().union(*(roots_of(d, seen | {cid}) for d in deps)) if deps else frozenset({cid})
        reach_cache[cid] = found
        return found

    reaches = {cid: roots_of(cid) for cid in failing}
    roots = [cid for cid, rs in reaches.items() if rs == {cid}]
    explained = {root: sum(1 for cid, rs in reaches.items() if cid != root and root in rs) for root in roots}
    roots.sort(key=lambda c: (-explained[c], _rank(c), order[c]))
    position = {c: i for i, c in enumerate(roots)}
    folded: dict[str, list[CheckResult]] = {c: [] for c in roots}
    for cid, rs in reaches.items():
        if cid in folded and rs == {cid}:
            continue
        best = min(rs, key=position.__getitem__)
        folded[best].append(failing[cid])
    out = []
    for root in roots:
        result = failing[root]
        remedy = offerable_remedy(result.remedy, latest)
        if not remedy:
            # A root without a remedy of its own borrows the first concrete one among what it explains.
            remedy = next((offerable_remedy(s.remedy, latest) for s in folded[root] if s.remedy), "")
        out.append(RootCause(result, remedy, tuple(folded[root])))
    return out


def has_placeholder(text: str) -> bool:
    """True when ``text`` still holds an unfilled ``<name>`` placeholder."""
    return PLACEHOLDER.search(text) is not None


def closing_lines(results: Iterable[CheckResult]) -> list[str]:
    """The CLI's last lines for a run with failures: each root cause with its remedy, then one line naming it.

    Empty when nothing failed (the counts line stays last then).
    """
    roots = root_causes(results, warnings=False)
    if not roots:
        return []
    lines = [printable(rc.text()) for rc in roots]
    top = roots[0]
    more = f" (+{len(roots) - 1} more cause{'s' if len(roots) > 2 else ''} above)" if len(roots) > 1 else ""
    n = len(top.symptoms)
    explains = f", explains {n} other failing check{'s' if n != 1 else ''}" if n else ""
    lines.append(printable(f"root cause: {top.check_id}{explains}: {top.title}{more}"))
    return lines
