"""Run a load scenario against a target: processes, merge, limits, thresholds, record.

Processes run whole shares of the scenario (:meth:`Scenario.share`); their raw histograms and
counts are merged exactly (histograms add bucket by bucket, counts add), so the result of N
processes is the same kind of object as the result of one.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from rtbook.exceptions import ConfigError
from rtbook.load.container import container_limits_hit, merge_hits, read_container_limits
from rtbook.load.generator import Endpoint, ProcessResult, hard_bound_s, run_share
from rtbook.load.histograms import Histograms
from rtbook.load.ledger import DeliveryCounts
from rtbook.load.scenario import Mix, Scenario
from rtbook.load.thresholds import Threshold, Verdict, evaluate
from rtbook.target import Target

if TYPE_CHECKING:
    from rtbook.load.container import ContainerLimits
    from rtbook.results import Report

__all__ = ["LIMIT_SIGNS", "LoadResult", "bottlenecks", "configured_limits", "endpoint_for", "limits_hit", "merge",
           "outage_cause", "require_consent", "run_load", "write_record"]

# Realtime's refusal texts and the setting each one names (research notes §2-§4; realtime-facts.md).
LIMIT_SIGNS: tuple[tuple[str, str, str], ...] = (
    ("Too many connected users", "max_concurrent_users", "the tenant's max_concurrent_users"),
    ("Too many joins per second", "max_joins_per_second", "the tenant's max_joins_per_second"),
    ("Too many messages per second", "max_events_per_second", "the tenant's max_events_per_second"),
    ("Too many channels", "max_channels_per_client", "the tenant's max_channels_per_client"),
    ("Too many presence messages per second", "max_presence_events_per_second",
     "the tenant's max_presence_events_per_second"),
    ("Too many database connections", "DB_POOL", "Realtime's database pool (DB_POOL / db_pool)"),
    ("Client presence rate limit exceeded", "CLIENT_PRESENCE_MAX_CALLS",
     "Realtime's per-client presence limit (CLIENT_PRESENCE_MAX_CALLS per CLIENT_PRESENCE_WINDOW_MS, 5 per 30 s)"),
    ("EMFILE", "RLIMIT_NOFILE", "the open-file limit (RLIMIT_NOFILE: ulimits.nofile on the container)"),
)
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class LoadResult:
    """A whole run, merged over processes."""

    scenario: Scenario
    endpoint: str
    counts: DeliveryCounts
    histograms: Histograms
    errors: dict[str, int]
    opened: int
    joined: int
    held: int
    cpu_s: float
    wall_s: float
    processes: int
    sent_per_s: list[int]
    delivered_per_s: list[int]
    expected_per_s: list[int]
    verdicts: list[Verdict] = field(default_factory=list)
    limits_hit: list[dict[str, str]] = field(default_factory=list)
    timeline: Histograms = field(default_factory=Histograms)
    interval_s: int = 1
    # A --scenario-file mix: its parts (``scenario`` is then the first part).
    parts: tuple[Scenario, ...] = ()
    # Which side limited the run, most likely first (see :func:`bottlenecks`).
    bottlenecks: list[str] = field(default_factory=list)
    # The Realtime container read before and after the run (rtbook.load.container); None with the
    # reason in container_note when Docker is off, absent or the container was not found.
    container_before: ContainerLimits | None = None
    container_after: ContainerLimits | None = None
    container_note: str = ""
    # Sockets closed by the other side during the run, and what they lost (see ProcessResult).
    outages: list[dict[str, Any]] = field(default_factory=list)
    lost_by_pair: dict[str, int] = field(default_factory=dict)
    lost_around_outages: int = 0

    @property
    def label(self) -> str:
        """``broadcast``, or ``mixed (broadcast, presence)``."""
        if self.parts:
            return f"mixed ({', '.join(p.kind for p in self.parts)})"
        return self.scenario.kind

    @property
    def kinds(self) -> set[str]:
        return {p.kind for p in self.parts} if self.parts else {self.scenario.kind}

    @property
    def sockets_wanted(self) -> int:
        return sum(p.sockets for p in self.parts) if self.parts else self.scenario.sockets

    def over_time(self, step: str) -> list[tuple[float, float, float, float]]:
        """(interval start s, p50, p99, max) in ms for ``step``, one row per interval with data."""
        rows = []
        for name in self.timeline.names():
            base, _, index = name.partition("#")
            p = self.timeline.percentiles(name) if base == step and index.isdigit() else None
            if p is not None:
                rows.append((int(index) * self.interval_s, p.p50_ms, p.p99_ms, p.max_ms))
        return sorted(rows)

    @property
    def failed(self) -> bool:
        return any(not v.ok for v in self.verdicts)

    def numbers(self) -> dict[str, float]:
        """Flat names that thresholds refer to (``broadcast.p99``, ``lost``, ``errors.join``...)."""
        out: dict[str, float] = {k: float(v) for k, v in self.counts.to_dict().items()}
        for name in self.histograms.names():
            p = self.histograms.percentiles(name)
            if p is None:
                continue
            out.update({
                f"{name}.p50": p.p50_ms, f"{name}.p90": p.p90_ms, f"{name}.p99": p.p99_ms,
                f"{name}.p99.9": p.p999_ms, f"{name}.max": p.max_ms, f"{name}.mean": p.mean_ms,
            })
        out["errors"] = float(sum(self.errors.values()))
        for kind, n in self.errors.items():
            family = kind.split(":", 1)[0].strip().replace(" ", "_")
            out[f"errors.{family}"] = out.get(f"errors.{family}", 0.0) + n
        out["opened"], out["joined"], out["held"] = float(self.opened), float(self.joined), float(self.held)
        return out

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        wall = max(self.wall_s, 1e-9)
        return {
            "scenario": asdict(self.scenario) if not self.parts else {"kind": "mixed"},
            **({"mix": [asdict(p) for p in self.parts]} if self.parts else {}),
            "endpoint": self.endpoint,
            "processes": self.processes,
            "counts": self.counts.to_dict(),
            "latency_ms": {n: p.to_dict() for n in self.histograms.names() if (p := self.histograms.percentiles(n))},
            "errors": dict(sorted(self.errors.items())),
            "sockets": {"opened": self.opened, "joined": self.joined, "held": self.held},
            "generator": {
                "cpu_s": self.cpu_s,
                "wall_s": self.wall_s,
                "cpu_percent_of_one_core": round(100 * self.cpu_s / wall, 1),
                "cpu_s_per_1000_sockets": round(1000 * self.cpu_s / max(self.opened, 1), 3),
            },
            "per_second": {"sent": self.sent_per_s, "expected": self.expected_per_s,
                           "delivered": self.delivered_per_s},
            "over_time": {
                "interval_s": self.interval_s,
                **{step: [dict(zip(("t_s", "p50_ms", "p99_ms", "max_ms"), row, strict=True))
                          for row in self.over_time(step)]
                   for step in ("broadcast", "presence", "postgres_changes") if self.over_time(step)},
            },
            "limits_hit": self.limits_hit,
            "container": {"before": self.container_before.to_dict() if self.container_before else None,
                          "after": self.container_after.to_dict() if self.container_after else None,
                          "note": self.container_note},
            "bottlenecks": self.bottlenecks,
            "outages": self.outages,
            "lost_around_outages": self.lost_around_outages,
            "lost_by_pair": self.lost_by_pair,
            "thresholds": [{"expr": v.threshold.text, "value": v.value, "ok": v.ok} for v in self.verdicts],
        }

    def to_report(self) -> Report:
        """The run as check results: ``load.delivery`` and one ``load.threshold.<n>`` per threshold."""
        from rtbook.results import CheckResult, Report, Status

        c = self.counts
        problems = c.lost + c.duplicated + sum(self.errors.values())
        remedy = "\n".join(h["remedy"] for h in self.limits_hit)
        metrics = {k: v for k, v in self.numbers().items() if "." in k and not k.startswith("errors")}
        delivery = CheckResult(
            id="load.delivery",
            status=Status.PASS if problems == 0 else Status.WARN,
            title=f"{self.label} load: every message accounted for",
            summary=(f"{c.delivered} of {c.expected} deliveries arrived, {c.lost} lost, {c.duplicated} duplicated, "
                     f"{sum(self.errors.values())} errors" if self.kinds != {"connect"} else
                     f"{self.joined} of {self.sockets_wanted} sockets joined, {self.held} held to the end"),
            detail=self.text(),
            remedy=remedy,
            evidence={"counts": c.to_dict(), "errors": dict(self.errors), "limits_hit": self.limits_hit},
            metrics=metrics,
        )
        results = [delivery]
        for i, v in enumerate(self.verdicts, 1):
            results.append(CheckResult(
                id=f"load.threshold.{i}",
                status=Status.PASS if v.ok else Status.FAIL,
                title=f"threshold {v.threshold.text}",
                summary=v.line,
                remedy="" if v.ok else (remedy or "Lower the load, or find the limit with a rising --rate"),
                evidence={"expr": v.threshold.text, "value": v.value},
            ))
        return Report(results, title=f"rtbook load: {self.label}")

    def text(self) -> str:
        c = self.counts
        lines = [
            f"rtbook load: {self.label} against {self.endpoint} "
            f"({self.processes} process{'es' if self.processes > 1 else ''}, {self.wall_s:.1f} s)",
            f"sockets: {self.opened} opened, {self.joined} joined"
            + (f", {self.held} held to the end" if "connect" in self.kinds else ""),
        ]
        if self.kinds != {"connect"}:
            lines.append(
                f"messages: {c.sent} sent, {c.expected} expected deliveries = {c.delivered} delivered + {c.lost} lost"
                f"; {c.duplicated} duplicated, {c.out_of_order} out of order, {c.late} late"
                f" (> {self.scenario.late_ms:g} ms)"
            )
        for name in self.histograms.names():
            p = self.histograms.percentiles(name)
            if p:
                lines.append(
                    f"{name:>14} ms: p50 {p.p50_ms:.3f}  p90 {p.p90_ms:.3f}  p99 {p.p99_ms:.3f}  "
                    f"p99.9 {p.p999_ms:.3f}  max {p.max_ms:.3f}  (n={p.count})"
                )
        for kind, n in sorted(self.errors.items()):
            lines.append(f"error x{n}: {kind}")
        for when, read in (("before", self.container_before), ("after", self.container_after)):
            if read is not None:
                lines.append(f"container {when}: {read.line()}")
        if self.container_note:
            lines.append(f"container: {self.container_note}")
        for hit in self.limits_hit:
            lines.append(f"limit hit: {hit['limit']} — {hit['why']}. Remedy: {hit['remedy']}")
        for line in self.bottlenecks:
            lines.append(f"limited by: {line}")
        g = self.to_dict()["generator"]
        lines.append(f"generator CPU: {self.cpu_s:.2f} s ({g['cpu_percent_of_one_core']}% of one core)")
        for v in self.verdicts:
            lines.append(("ok   " if v.ok else "FAIL ") + v.line)
        return "\n".join(lines)


def merge(scenario: Scenario, endpoint: str, parts: Sequence[ProcessResult]) -> LoadResult:
    """Exact merge of process results: counts and per-second series add, histograms add."""
    counts = DeliveryCounts()
    errors: Counter[str] = Counter()
    hists = Histograms()
    width = max((len(p.sent_per_s) for p in parts), default=0)
    sent = [0] * width
    delivered = [0] * width
    expected = [0] * width
    timeline = Histograms()
    outages: list[dict[str, Any]] = []
    lost_by_pair: dict[str, int] = {}
    for p in parts:
        outages.extend(p.outages)  # socket names carry their process's prefix: no two collide
        lost_by_pair.update(p.lost_by_pair)
        for name, payload in p.timeline.items():
            timeline.merge_encoded(name, payload)
        counts = counts + p.counts
        errors.update(p.errors)
        for name, payload in p.histograms.items():
            hists.merge_encoded(name, payload)
        for i, n in enumerate(p.sent_per_s):
            sent[i] += n
        for i, n in enumerate(p.delivered_per_s):
            delivered[i] += n
        for i, n in enumerate(p.expected_per_s):
            expected[i] += n
    return LoadResult(
        scenario=scenario, endpoint=endpoint, counts=counts, histograms=hists, errors=dict(errors),
        opened=sum(p.opened for p in parts), joined=sum(p.joined for p in parts), held=sum(p.held for p in parts),
        cpu_s=round(sum(p.cpu_s for p in parts), 3), wall_s=max((p.wall_s for p in parts), default=0.0),
        processes=len(parts), sent_per_s=sent, delivered_per_s=delivered, expected_per_s=expected,
        timeline=timeline,
        interval_s=max((p.interval_s for p in parts), default=1),
        outages=outages, lost_by_pair=lost_by_pair, lost_around_outages=sum(p.lost_around_outages for p in parts),
    )


def limits_hit(errors: dict[str, int], tenant: str, configured: dict[str, Any] | None = None) -> list[dict[str, str]]:
    """Which limit the errors name, with the setting to raise and how."""
    out = []
    for sign, setting, what in LIMIT_SIGNS:
        n = sum(v for k, v in errors.items() if sign in k)
        if not n:
            continue
        now = f" (now {configured[setting]})" if configured and setting in configured else ""
        if setting.startswith("max_") and configured and isinstance(configured.get(setting), int):
            remedy = (f"rtbook tenant plan --tenant {tenant} --limit {setting}={2 * int(configured[setting])}, "
                      "then apply it with --yes (or lower the load)")
        elif setting.startswith("max_"):
            remedy = (f"raise {setting} on tenant {tenant} ('rtbook tenant plan --tenant {tenant} --limit "
                      f"{setting}=N' shows the change), or lower the load")
        else:
            remedy = f"raise {setting} for the Realtime container{now}, or lower the load"
        out.append({"limit": setting, "why": f"{n} refusal(s) '{sign}' from {what}{now}", "remedy": remedy})
    return out


def configured_limits(target: Target) -> dict[str, Any] | None:
    """The tenant's limits from ``_realtime.tenants`` when the database answers (read only), else None."""
    if not target.db_url:
        return None
    from rtbook.clients.db import connect
    from rtbook.seeding import read_state

    try:
        with connect(target) as conn:
            state = read_state(conn, target.redactor)
    except Exception:  # the limits are a courtesy for the remedy; the run's numbers stand without them
        return None
    tenant = target.resolved_tenant()
    row = next((t for t in state.tenants if t.external_id == tenant), None)
    return dict(row.limits) if row is not None else None


def _db_keywords(target: Target) -> dict[str, Any]:
    """libpq keywords for the postgres_changes writer; refuses unless the probe table is installed."""
    from rtbook import probe
    from rtbook.clients.db import _password, sql_url

    url = sql_url(target)
    state = probe.status(target)
    if not state.installed:
        raise ConfigError(
            "the postgres_changes scenario writes only to the probe table rtbook_probe.events, which is not "
            "installed; run 'rtbook probe install' (a dry run), then with --yes"
        )
    keywords: dict[str, Any] = {"host": url.host, "port": url.port or 5432, "user": url.username,
                                "dbname": url.database or "postgres"}
    password = _password(target)
    if password:
        keywords["password"] = password
    return keywords


GENERATOR_BUSY = 0.85  # share of its cores above which the generator itself may be what limits


def bottlenecks(result: LoadResult) -> list[str]:
    """Which side limited the run, from the numbers alone (empty: nothing was limited)."""
    out = []
    if result.limits_hit:
        out.append("a tenant or server limit: " + ", ".join(h["limit"] for h in result.limits_hit))
    busy = result.cpu_s / max(result.wall_s * result.processes, 1e-9)
    if busy >= GENERATOR_BUSY:
        out.append(f"the load generator: it used {100 * busy:.0f}% of its {result.processes} core(s); add "
                   f"--processes (up to one per core) or machines (Locust) before reading the server's figures")
    proxy = {k: v for k, v in result.errors.items() if k.startswith("handshake: HTTP 5")}
    if proxy:
        kinds = ", ".join(f"{k.removeprefix('handshake: ')} x{v}" for k, v in sorted(proxy.items()))
        out.append(f"the gateway or proxy in front of Realtime: upgrades refused with {kinds}")
    gone = outage_cause(result)
    if gone:
        out.append(gone)
    c = result.counts
    if not out and (c.lost or c.late):
        steps = [s for s in ("broadcast", "presence", "postgres_changes") if result.over_time(s)]
        trend = ""
        if steps:
            rows = result.over_time(steps[0])
            trend = f"; {steps[0]} p99 went from {rows[0][2]:.1f} ms to {rows[-1][2]:.1f} ms over the run"
        out.append(f"the server or the path to it: {c.lost} lost and {c.late} late deliveries with no limit "
                   f"refusal and a generator at {100 * busy:.0f}% of its cores{trend}")
    return out


def outage_cause(result: LoadResult) -> str:
    """Sockets the server side closed during the run, when no limit refusal explains it ('' if none)."""
    if not result.outages or result.limits_hit:
        return ""
    sockets = {o["socket"] for o in result.outages}
    from statistics import median

    down = [float(o["down_s"]) for o in result.outages]
    back = [o for o in result.outages if o["up_s"] is not None]
    gaps = [float(o["up_s"]) - float(o["down_s"]) for o in back]
    failed = {k.removeprefix("reconnect failed: "): v for k, v in result.errors.items()
              if k.startswith("reconnect failed: ")}
    text = (f"sockets going away: {len(sockets)} socket(s) were disconnected at ~{median(down):.1f} s into "
            f"the run with no limit refusal (a Realtime node or the proxy in front of it went away); "
            f"{result.lost_around_outages} deliveries to or from them were lost")
    if back:
        text += (f"; {len({o['socket'] for o in back})} reconnected and rejoined after ~{median(gaps):.1f} s "
                 f"(realtime-js's backoff: 1, 2, 5, 10 s)")
    if len(back) < len(result.outages):
        text += f"; {len(result.outages) - len(back)} did not come back before the run ended"
    if failed:
        text += "; failed reconnect attempts: " + ", ".join(f"{k} x{v}" for k, v in sorted(failed.items()))
    return text + (". Remedy: check the Realtime nodes' health and logs at that time, and that the load balancer "
                   "takes a dead node out of its upstreams (health checks; nginx proxy_next_upstream); clients "
                   "reconnect by themselves, so what users lose is what was sent while they were away")


def endpoint_for(target: Target, *, with_db: bool = False) -> Endpoint:
    """The socket endpoint and keys for ``target`` (the anon key's role; a token is the same key)."""
    key = target.secret("ANON_KEY") or target.secret("SUPABASE_ANON_KEY")
    if key is None:
        raise ConfigError("no ANON_KEY in the environment or the stack's .env; the load generator connects as anon")
    db = _db_keywords(target) if with_db else None
    if target.api_url:
        return Endpoint(f"{target.api_url}/realtime/v1", None, f"{target.api_url}/realtime/v1 (gateway)",
                        apikey=key.reveal(), token=key.reveal(), db=db)
    if target.realtime_url:
        host = target.realtime_host or f"{target.resolved_tenant()}.supabase-realtime"
        return Endpoint(f"{target.realtime_url}/socket", host, f"{target.realtime_url}/socket (direct, Host {host})",
                        apikey=key.reveal(), token=key.reveal(), db=db)
    raise ConfigError("the target has no api_url or realtime_url; give --api-url or --realtime-url")


def require_consent(target: Target, confirmed: bool) -> None:
    """Load on anything but this machine needs ``--i-own-this-target`` (refuse in one line otherwise)."""
    url = target.api_url or target.realtime_url or ""
    host = urlsplit(url).hostname or ""
    if host in LOOPBACK or target.name == "sandbox" or confirmed:
        return
    raise ConfigError(
        f"{host} is not this machine; a load run is an experiment on that server. "
        "Add --i-own-this-target to confirm you may load it"
    )


def run_load(
    target: Target,
    scenario: Scenario | Mix,
    thresholds: Sequence[Threshold] = (),
    *,
    on_progress: Callable[[str], None] | None = None,
) -> LoadResult:
    """Run ``scenario`` (or a mix) against ``target`` and judge ``thresholds``.

    A scenario runs in ``scenario.processes`` processes (its shares); a mix runs each part in a
    process of its own, all at once. Either way the processes' results are merged exactly.
    """
    parts = scenario.parts if isinstance(scenario, Mix) else ()
    kinds = {p.kind for p in scenario.parts} if isinstance(scenario, Mix) else {scenario.kind}
    endpoint = endpoint_for(target, with_db="postgres_changes" in kinds)
    target.redactor.add(endpoint.apikey)
    prefix = f"{os.getpid()}-{int(time.time())}"
    step = min(target.timeout, 30.0)
    if isinstance(scenario, Mix):
        shares = list(scenario.parts)
        first = scenario.parts[0]
    else:
        shares = [scenario.share(i, scenario.processes) for i in range(scenario.processes)]
        first = scenario
    bound = max(hard_bound_s(s, step) for s in shares)
    before, note = read_container_limits(target)
    if on_progress:
        on_progress(f"{' + '.join(s.kind for s in shares)}: {sum(s.sockets for s in shares)} sockets, "
                    f"bound {bound:.0f} s")
    if len(shares) == 1:
        results = [ProcessResult.from_dict(run_share(shares[0], endpoint, prefix, step, on_progress))]
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=len(shares), mp_context=ctx) as pool:
            futures = [pool.submit(run_share, s, endpoint, f"{prefix}-p{i}", step) for i, s in enumerate(shares)]
            results = [ProcessResult.from_dict(f.result(timeout=bound + 30)) for f in futures]
    result = merge(first, endpoint.label, results)
    result.parts = tuple(parts)
    if any(sign in kind for kind in result.errors for sign, _, _ in LIMIT_SIGNS):
        result.limits_hit = limits_hit(result.errors, target.resolved_tenant(), configured_limits(target))
    after, after_note = read_container_limits(target, before) if before is not None else (None, "")
    result.container_before, result.container_after = before, after
    result.container_note = note or (f"after the run: {after_note}" if after_note else "")
    result.limits_hit = merge_hits(result.limits_hit, container_limits_hit(
        before, after, sockets_wanted=result.sockets_wanted, joined=result.joined, errors=result.errors))
    result.verdicts = evaluate(list(thresholds), result.numbers())
    result.bottlenecks = bottlenecks(result)
    return result


def write_record(result: LoadResult, folder: Path) -> list[Path]:
    """``load.json``, ``load.txt`` and the raw histograms (``latency.hlog``) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "load.json", folder / "load.txt", folder / "latency.hlog"]
    paths[0].write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    paths[1].write_text(result.text() + "\n", encoding="utf-8")
    result.histograms.write_log(paths[2], timeline=result.timeline, interval_s=result.interval_s)
    return paths
