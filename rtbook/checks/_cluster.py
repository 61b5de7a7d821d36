"""``realtime.cluster``: several clients through the public URL must all see each other.

Black-box, for any deployment: ``CLIENTS`` sockets connect through the public URL (the gateway or the
load balancer in front of several gateways, which spreads them over the nodes), join one public topic
with presence, stay idle for a while (a proxy whose idle/read timeout is below the clients' heartbeat
cuts them then), track a presence each and send one broadcast each. Every client must receive every
other's broadcast and presence. In Realtime, a broadcast crosses nodes through Phoenix.PubSub and
presence through Phoenix.Tracker, both over distributed Erlang: nodes that never joined one cluster
leave their clients in one group per node, which is what the result reports (who saw whom).

From outside rtbook cannot tell how many nodes served the clients: against one node every client is in
one group and the check passes trivially. Stickiness cannot be seen either (a WebSocket is one TCP
connection and stays on its node whatever the policy); the result notes the affinity cookie the public
URL sets, if any, and what it does and does not change.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rtbook.checks._live import (
    RefusalWaits,
    SocketEndpoint,
    failure,
    open_socket,
    refusal_waits,
    socket_endpoint,
    socket_failure,
)
from rtbook.clients.http import http_request
from rtbook.clients.phoenix import Message, PhoenixClient, PhoenixError
from rtbook.remedies import CAUSES, diagnose
from rtbook.results import CheckResult, Status
from rtbook.secrets import Secret
from rtbook.target import Target

__all__ = ["CLIENTS", "HEARTBEAT_S", "Matrix", "groups", "idle_seconds", "run"]

# Enough sockets that a round-robin or random balancer puts several on each of two or three nodes.
CLIENTS = 6
# The clients' heartbeat interval a proxy timeout must exceed: realtime-js sends one every 25 s
# (HEARTBEAT_INTERVAL 25000), the Python client every 25 s too (realtime-facts §5.3).
HEARTBEAT_S = 25.0
EVENT = "rtbook-cluster"


def idle_seconds(target: Target) -> float:
    """How long the sockets stay silent before the exchange: the timeout, at most one heartbeat interval."""
    return max(1.0, min(target.timeout, HEARTBEAT_S))


@dataclass
class Matrix:
    """Who saw whom: ``broadcast[i]`` and ``presence[i]`` hold the clients whose message client i received."""

    names: list[str]
    broadcast: dict[str, set[str]] = field(default_factory=dict)
    presence: dict[str, set[str]] = field(default_factory=dict)

    def missing(self) -> dict[str, dict[str, list[str]]]:
        """Per client, which others' broadcast/presence it did not receive (only clients with a gap)."""
        out: dict[str, dict[str, list[str]]] = {}
        for name in self.names:
            others = [n for n in self.names if n != name]
            gap = {kind: [o for o in others if o not in seen.get(name, set())]
                   for kind, seen in (("broadcast", self.broadcast), ("presence", self.presence))}
            gap = {k: v for k, v in gap.items() if v}
            if gap:
                out[name] = gap
        return out

    def complete(self) -> bool:
        """Every client saw every other's broadcast and presence."""
        return not self.missing()


def groups(names: list[str], seen: dict[str, set[str]]) -> list[list[str]]:
    """Clients grouped by mutual visibility: a and b are together when each saw the other (transitively)."""
    parent = {n: n for n in names}

    def root(n: str) -> str:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for a in names:
        for b in names:
            if a < b and b in seen.get(a, set()) and a in seen.get(b, set()):
                parent[root(a)] = root(b)
    out: dict[str, list[str]] = {}
    for n in names:
        out.setdefault(root(n), []).append(n)
    return sorted(out.values(), key=lambda g: names.index(g[0]))


def _is_broadcast(run: str) -> Callable[[Message], str | None]:
    def sender(m: Message) -> str | None:
        if m.event != "broadcast" or not isinstance(m.payload, dict):
            return None
        inner = m.payload.get("payload")
        if isinstance(inner, dict) and inner.get("run") == run and isinstance(inner.get("from"), str):
            return str(inner["from"])
        return None

    return sender


def _presence_keys(m: Message) -> list[str]:
    if not isinstance(m.payload, dict):
        return []
    if m.event == "presence_state":
        return [str(k) for k in m.payload]
    if m.event == "presence_diff" and isinstance(m.payload.get("joins"), dict):
        return [str(k) for k in m.payload["joins"]]
    return []


def _observe(clients: dict[str, PhoenixClient], keys: dict[str, str], run: str) -> Matrix:
    matrix = Matrix(list(clients))
    by_key = {key: name for name, key in keys.items()}
    sender = _is_broadcast(run)
    for name, client in clients.items():
        b: set[str] = set()
        p: set[str] = set()
        for _t, msg in list(client.history):
            who = sender(msg)
            if who is not None and who != name:
                b.add(who)
            for key in _presence_keys(msg):
                if key in by_key and by_key[key] != name:
                    p.add(by_key[key])
        matrix.broadcast[name] = b
        matrix.presence[name] = p
    return matrix


def _affinity(target: Target, anon: Secret) -> dict[str, Any]:
    """The cookies the public URL sets on a plain request (a load balancer's affinity cookie shows here)."""
    if not target.api_url:
        return {"checked": False, "why": "no public URL (Realtime reached directly)"}
    ans = http_request("GET", f"{target.api_url}/realtime/v1/api/ping", headers={"apikey": anon.reveal()},
                       timeout=target.timeout)
    raw = ans.headers.get("set-cookie", "")
    names = sorted({part.split("=", 1)[0].strip() for part in raw.split(",") if "=" in part})
    return {"checked": True, "status": ans.status, "cookies": names}


def _affinity_note(aff: dict[str, Any]) -> str:
    if not aff.get("checked"):
        return ""
    if aff.get("cookies"):
        return (f" The public URL sets the cookie(s) {', '.join(aff['cookies'])} (an affinity cookie keeps a "
                "client that sends it back on one node: it matters for long-poll and reconnects, not for an open "
                "WebSocket, and it never joins unclustered nodes).")
    return (" The public URL set no affinity cookie: reconnects and long-poll requests may land on any node. "
            "An open WebSocket is one TCP connection and stays on its node whatever the policy, so this is "
            "harmless while the nodes are clustered; IP-based stickiness (nginx ip_hash) cannot be seen from here.")


def _describe_groups(found: list[list[str]]) -> str:
    return "; ".join("{" + ", ".join(g) + "}" for g in found)


def run(target: Target, cid: str, anon: Secret, clients: int = CLIENTS) -> CheckResult:
    """The body of ``realtime.cluster`` (registered in :mod:`rtbook.checks.realtime`)."""
    ep: SocketEndpoint = socket_endpoint(target)
    waits: RefusalWaits = refusal_waits(target)
    run_id = uuid.uuid4().hex[:10]
    topic = f"realtime:rtbook-cluster-{run_id}"
    names = [f"c{i + 1}" for i in range(clients)]
    keys = {name: f"rtbook-{run_id}-{name}" for name in names}
    opened: dict[str, PhoenixClient] = {}
    metrics: dict[str, float] = {}
    idle = idle_seconds(target)

    def transcripts() -> dict[str, Any]:
        return {name: c.transcript.to_list() for name, c in opened.items()}

    try:
        for name in names:
            opened[name] = open_socket(target, anon, endpoint=ep)
        for name, client in opened.items():
            cfg = {"broadcast": {"self": False, "ack": False}, "presence": {"key": keys[name], "enabled": True},
                   "postgres_changes": [], "private": False}
            reply = client.join(topic, cfg, timeout=target.timeout)
            if not reply.ok:
                return failure(cid, f"Client {name} could not join {topic}: {reply.reason or reply.status}.",
                               cause=diagnose(reason=reply.reason),
                               detail=f"phx_join through {ep.label} answered {reply.response!r}. {waits.describe()}",
                               evidence={"transcripts": transcripts()})
        # Idle phase: no frame in either direction, as between two heartbeats of a quiet client.
        started = time.monotonic()
        cut: dict[str, float] = {}
        while time.monotonic() - started < idle:
            for name, client in opened.items():
                if client.closed and name not in cut:
                    cut[name] = time.monotonic() - started
            time.sleep(0.2)
        for name, client in opened.items():
            if name not in cut:
                try:
                    client.heartbeat(timeout=target.timeout)
                except PhoenixError:
                    cut[name] = time.monotonic() - started
        metrics["idle_s"] = idle
        if cut:
            first = min(cut.values())
            return failure(
                cid,
                f"{len(cut)} of {clients} idle sockets through {ep.base} were closed after {first:.1f} s without "
                f"traffic, before the clients' next heartbeat ({HEARTBEAT_S:g} s).",
                cause=None,
                detail=f"Clients {', '.join(sorted(cut))} joined {topic} and sent nothing for up to {idle:g} s; "
                f"their sockets were closed ({', '.join(f'{n} at {t:.1f} s' for n, t in sorted(cut.items()))}). "
                "Realtime itself keeps an idle socket open for 60 s without a heartbeat; a proxy in front with a "
                "shorter read/idle/tunnel timeout cuts it, and the client reconnects in a loop.",
                remedy="Raise the load balancer's idle timeouts well above the client heartbeat (25 s for "
                "realtime-js and realtime-py): nginx `proxy_read_timeout 3600s; proxy_send_timeout 3600s;`, "
                "HAProxy `timeout tunnel 1h` (and timeout client/server >= 60s), Caddy: no reverse_proxy "
                "`transport http { read_timeout }` below 60s, AWS ALB idle_timeout.timeout_seconds >= 60. "
                "`rtbook check --lb FILE` reads the value from the config.",
                evidence={"closed_after_s": cut, "idle_s": idle, "topic": topic, "transcripts": transcripts()},
                metrics={**metrics, "closed_after_s": first},
            )
        t0 = time.monotonic()
        for name, client in opened.items():
            tracked = client.push(topic, "presence", {"type": "presence", "event": "track",
                                                      "payload": {"client": name, "run": run_id}},
                                  wait_reply=True, timeout=target.timeout)
            if tracked is None or not tracked.ok:
                return failure(cid, f"Client {name}'s presence track was refused.", cause=None,
                               evidence={"transcripts": transcripts()})
        for name, client in opened.items():
            client.push(topic, "broadcast", {"type": "broadcast", "event": EVENT,
                                             "payload": {"run": run_id, "from": name}}, wait_reply=False)
        deadline = t0 + target.timeout
        matrix = _observe(opened, keys, run_id)
        while not matrix.complete() and time.monotonic() < deadline:
            time.sleep(0.2)
            matrix = _observe(opened, keys, run_id)
        metrics["exchange_ms"] = (time.monotonic() - t0) * 1000
    except PhoenixError as exc:
        return socket_failure(cid, exc, "The cluster check could not run", ep, {"transcripts": transcripts()},
                              waits=waits, apikey_sent=True)
    finally:
        for client in opened.values():
            client.close()
    aff = _affinity(target, anon)
    note = _affinity_note(aff)
    found = groups(names, {n: matrix.broadcast[n] & matrix.presence[n] for n in names})
    evidence: dict[str, Any] = {
        "topic": topic, "endpoint": ep.label, "clients": clients, "idle_s": idle,
        "saw_broadcast_of": {n: sorted(v) for n, v in matrix.broadcast.items()},
        "saw_presence_of": {n: sorted(v) for n, v in matrix.presence.items()},
        "groups": found, "affinity": aff,
    }
    if matrix.complete():
        return CheckResult(
            cid, Status.PASS,
            summary=f"All {clients} clients through {ep.base} saw each other's broadcast and presence "
            f"(one group) in {metrics['exchange_ms']:.0f} ms, after {idle:g} s idle with no socket cut.",
            detail="rtbook cannot tell from outside how many nodes served the clients: against one node this "
            "passes trivially; behind a load balancer it shows the nodes share broadcast and presence." + note,
            evidence=evidence, metrics=metrics)
    missing = matrix.missing()
    lines = [f"{n} did not receive " + "; ".join(f"{kind} of {', '.join(who)}" for kind, who in gap.items())
             for n, gap in missing.items()]
    split = len(found) > 1
    summary = (f"The {clients} clients split into {len(found)} groups that do not see each other: "
               f"{_describe_groups(found)}." if split else
               f"{len(missing)} of {clients} clients missed others' messages within {target.timeout:g} s.")
    return failure(
        cid, summary, cause=None if split else CAUSES["timeout"],
        detail=("Clients in one group see each other, so each group is one node; the nodes do not relay "
                "broadcast (Phoenix.PubSub) and presence (Phoenix.Tracker) to each other: they are not one "
                "Erlang cluster. " if split else "") + "\n".join(lines) + note,
        remedy=("Make the Realtime nodes one cluster: give them the same release cookie (RELEASE_COOKIE), a "
                "clustering strategy that finds the others (CLUSTER_STRATEGIES=POSTGRES with all nodes on the same "
                "metadata DB, or DNS with DNS_NODES naming a DNS name that resolves to every node), ERL_AFLAGS "
                "\"-proto_dist inet_tcp\" (IPv4) or \"-proto_dist inet6_tcp\" (IPv6) matching the network, "
                "open ports between them (EPMD 4369 and the distribution ports), and the same REGION on the "
                "nodes of one region: since v2.80.11 Realtime relays a broadcast only to the nodes of its own "
                "REGION, and a node without REGION to none. Sticky sessions do not fix this: they keep a "
                "client on one node, they do not make the nodes share messages."
                if split else "Read the matrix in the evidence: which client missed whom."),
        evidence=evidence, metrics=metrics,
    )
