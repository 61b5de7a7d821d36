"""Subscription tests (``realtime.*``): health, join, broadcast, presence, private channels, postgres_changes,
RLS, bad tokens.

Each test opens real Phoenix sockets to the target (through the gateway when ``api_url`` is set,
else directly with the tenant's Host header), does what an application does, and measures it.
Nothing here writes to the database by default: tables the user names in ``target.tables`` (or
the publication's tables) are only subscribed to and their policies read. Delivery of changes is
proven only when the user installed the probe (``rtbook probe install --yes``, see
:mod:`rtbook.probe`); then postgres_changes and RLS write to ``rtbook_probe.events`` only (their
own rows, deleted afterwards).

A failure is passed to :func:`rtbook.remedies.diagnose`, so every result names its cause, the
remedy, and the static checks that would have caught it. Realtime holds its refusals before
answering (2 s at the handshake since v2.81.0, 5 s at a join since v2.83.0), so every socket waits
``--timeout`` plus that hold (:func:`rtbook.checks._live.refusal_waits`) and failures say so. A
tenant that allows only private channels makes the public-channel checks skip with that reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from rtbook import probe_sql
from rtbook.checks._live import (
    RefusalWaits,
    SocketEndpoint,
    _answer_failure,
    _no_key,
    admin_secret,
    failure,
    jwt_secret,
    open_socket,
    realtime_host,
    refusal_grace,
    refusal_waits,
    socket_endpoint,
    socket_failure,
)
from rtbook.clients.db import (
    TableRef,
    _publication_name,
    classify_db_error,
    connect,
    parse_table,
    publication_tables,
    realtime_env,
)
from rtbook.clients.http import HttpAnswer, http_request
from rtbook.clients.phoenix import (
    HandshakeRefused,
    Message,
    PhoenixClient,
    PhoenixClosed,
    PhoenixError,
    PhoenixTimeout,
    Reply,
)
from rtbook.deadline import wait_until
from rtbook.probe import RECHECK_S, ProbeState
from rtbook.probe import read_state as read_probe_state
from rtbook.registry import register
from rtbook.remedies import CAUSES, Cause, diagnose
from rtbook.results import CheckResult, Status
from rtbook.secrets import Secret
from rtbook.target import Target
from rtbook.tokens import mint_jwt, verify_jwt

__all__ = [
    "CdcFacts",
    "Health",
    "HealthProbe",
    "MessagesPolicies",
    "MessagesPolicy",
    "PrivateOutcome",
    "cdc_facts",
    "channel_config",
    "judge_health",
    "judge_private",
    "lifecycle_budget",
    "read_messages_policies",
    "tables_to_watch",
]



# ------------------------------------------------------------------ realtime.health


@dataclass(frozen=True)
class Health:
    """Realtime's tenant health JSON: ``{"data": {"healthy", "db_connected", ...}}`` (notes §1)."""

    healthy: bool | None
    db_connected: bool | None
    replication_connected: bool | None
    connected_cluster: int | None
    region: str | None = None
    node: str | None = None

    @classmethod
    def parse(cls, data: Any) -> Health | None:
        """Parse ``{"data": {...}}``; None when the shape is not the health JSON."""
        if not isinstance(data, dict) or not isinstance(data.get("data"), dict):
            return None
        d = data["data"]

        def b(key: str) -> bool | None:
            v = d.get(key)
            return v if isinstance(v, bool) else None

        def s(key: str) -> str | None:
            v = d.get(key)
            return v if isinstance(v, str) else None

        cc = d.get("connected_cluster")
        return cls(b("healthy"), b("db_connected"), b("replication_connected"),
                   cc if isinstance(cc, int) and not isinstance(cc, bool) else None, s("region"), s("node"))

    def as_dict(self) -> dict[str, Any]:
        """For evidence."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class HealthProbe:
    """What rtbook's one channel join (made so that Realtime connects to the tenant DB) got.

    Attributes:
        attempted: False when there was no ANON_KEY to join with.
        joined: the join was accepted (Realtime had the tenant DB connection at that moment).
        reason: the join's refusal reason, if refused.
        private: the join was made on a private channel (the tenant allows only private ones).
        refused: the handshake's cause when the socket itself was refused.
        error: any other failure (timeout, connection), as text.
    """

    attempted: bool = False
    joined: bool = False
    reason: str = ""
    private: bool = False
    refused: Cause | None = None
    error: str = ""

    @property
    def cause(self) -> Cause | None:
        """The known cause of the refusal, if any."""
        return diagnose(reason=self.reason) if self.reason else self.refused

    @property
    def reached_db(self) -> bool:
        """The join got far enough that Realtime talked to the tenant DB.

        A private join refused as Unauthorized ran its policy query on the tenant DB, which needs
        the connection (the join checks the connection before the policies).
        """
        found = self.cause
        return self.joined or (found is not None and found.id == "private_channel_denied")


# Refusals that say Realtime cannot use the tenant database (join reasons, notes §3).
DB_CAUSES = frozenset({"tenant_db_unreachable", "tenant_db_full", "tenant_db_connect_rate", "tenant_db_pool",
                       "tenant_db_initializing", "authorization_query_failed"})


@dataclass(frozen=True)
class HealthVerdict:
    """The outcome of :func:`judge_health`."""

    status: Status
    summary: str
    detail: str
    cause: Cause | None = None


def _flags(h: Health) -> str:
    return (f"healthy={str(h.healthy).lower()}, db_connected={str(h.db_connected).lower()}, "
            f"connected_cluster={h.connected_cluster}")


def judge_health(tenant: str, first: Health, after: Health | None, probe: HealthProbe,
                 db_values: Mapping[str, str] | None = None) -> HealthVerdict:
    """Decide from ``healthy`` and ``db_connected`` together (research notes §1, Realtime.Tenants.health_check/1).

    ``healthy`` alone is not the database: with no client joined and no connection, Realtime reports
    the state of the tenant's migrations (v2.78 runs them and says true when they are already done,
    without touching the database; v2.129 compares the migration count). Only ``db_connected`` says
    the connection exists; rtbook's probe join makes Realtime open it. ``db_values`` (the stack's
    ``DB_HOST``/``DB_PORT``) fill in the remedy.
    """
    h = after or first
    joined_note = " after rtbook's join" if probe.joined and not first.db_connected else ""
    if h.db_connected:
        if h.healthy is False:
            return HealthVerdict(
                Status.WARN,
                f"Tenant {tenant!r}: the database is connected, but the health answer says healthy=false.",
                f"Realtime reported {_flags(h)}{joined_note}.",
                CAUSES["health_inconsistent"].fill(tenant=tenant),
            )
        pending = (" Before the join it reported healthy=false: the tenant's migrations were due."
                   if first.healthy is False and not first.db_connected else "")
        return HealthVerdict(
            Status.PASS,
            f"Tenant {tenant!r} is healthy with its database connected{joined_note}.",
            f"Realtime reported {_flags(h)}.{pending}",
        )
    found = probe.cause
    told = (f"Realtime first reported {_flags(first)}"
            + (f", then {_flags(after)} after rtbook's join" if after is not None else "") + ".")
    if found is not None and found.id in DB_CAUSES:
        filled = found.fill(db_values or {})
        return HealthVerdict(
            Status.FAIL,
            f"Realtime cannot use tenant {tenant!r}'s database: the probe join was refused with {probe.reason}"
            + (" (although the health said healthy=true)." if first.healthy else "."),
            f"{told} healthy=true alone does not prove the database: with no client joined Realtime reports "
            "its migration state without contacting the database. The join, which needs the connection, "
            "says Realtime cannot reach it.",
            filled,
        )
    if (first.connected_cluster or 0) > 0:
        return HealthVerdict(
            Status.FAIL,
            f"Tenant {tenant!r} has {first.connected_cluster} joined client(s) but no database connection.",
            f"{told} Realtime reports this only when the tenant's database connection is gone while clients "
            "are joined: they stay subscribed and receive nothing from the database.",
            (found if found is not None and found.id in DB_CAUSES else CAUSES["tenant_db_unreachable"]).fill(
                db_values or {}),
        )
    if probe.joined:
        return HealthVerdict(
            Status.FAIL,
            f"Tenant {tenant!r}: a channel join succeeded, but db_connected stayed false.",
            f"{told} A join needs the tenant database connection, so Realtime had it at the join; that it is "
            "not reported means the connection drops right after it is made.",
            CAUSES["tenant_db_unreachable"].fill(db_values or {}),
        )
    migrations = ("" if first.healthy else
                  " healthy=false with no connection and no client means the tenant's migrations are due "
                  "(newer Realtime runs them in the background) or failed (v2.78 runs them in the request).")
    if not probe.attempted:
        return HealthVerdict(
            Status.WARN,
            f"Tenant {tenant!r} reports db_connected=false and rtbook had no ANON_KEY to join with, so the "
            "database connection is unproven.",
            f"{told}{migrations} Realtime connects to the tenant database on the first channel join.",
            None if first.healthy else CAUSES["tenant_migrations_pending"],
        )
    why = (f"the join failed with {probe.reason}" if probe.reason else
           f"the socket was refused ({probe.refused.title})" if probe.refused is not None else
           f"the join did not complete ({probe.error})")
    return HealthVerdict(
        Status.WARN,
        f"Tenant {tenant!r} reports {_flags(first)} and rtbook's probe join did not get through, so the "
        "database connection is unproven.",
        f"{told}{migrations} Realtime connects to the tenant database on the first channel join; {why}.",
        found if found is not None else (None if first.healthy else CAUSES["tenant_migrations_pending"]),
    )


def _health(target: Target, token: str) -> HttpAnswer:
    tenant = urllib.parse.quote(target.resolved_tenant(), safe="")
    return http_request(
        "GET",
        f"{target.realtime_url}/api/tenants/{tenant}/health",
        {"Authorization": f"Bearer {token}"},
        target.timeout,
        host_header=realtime_host(target),
    )


def _probe_join(target: Target, token: str, evidence: dict[str, Any]) -> tuple[HealthProbe, Health | None]:
    """Join one channel directly so that Realtime opens the tenant DB connection; read the health again.

    A tenant that allows only private channels refuses the public join before it touches the
    database, so the join is repeated on a private channel, whose refusal (no policy) still
    proves the connection.
    """
    anon = target.secret("ANON_KEY")
    if anon is None:
        return HealthProbe(), None
    ep = SocketEndpoint(f"{target.realtime_url}/socket", realtime_host(target), "direct")
    probe = HealthProbe(attempted=True)
    after: Health | None = None
    try:
        with open_socket(target, anon, endpoint=ep) as client:
            reply = client.join(f"realtime:rtbook-health-{uuid.uuid4().hex[:8]}", {"private": False},
                                timeout=target.timeout)
            found = diagnose(reason=reply.reason) if not reply.ok else None
            private = found is not None and found.id == "private_only"
            if private:
                evidence["join_public"] = {"status": reply.status, "reason": reply.reason}
                reply = client.join(f"realtime:rtbook-health-{uuid.uuid4().hex[:8]}", {"private": True},
                                    timeout=target.timeout)
            evidence["join"] = {"status": reply.status, "reason": reply.reason, "private": private}
            probe = HealthProbe(True, reply.ok, "" if reply.ok else reply.reason or reply.status, private)
            if probe.reached_db:
                def connected() -> bool:
                    nonlocal after
                    again = _health(target, token)
                    evidence["after_join"] = again.evidence()
                    after = Health.parse(again.json) or after
                    return bool(after is not None and after.db_connected)

                wait_until(connected, target.timeout, interval=0.3)
    except HandshakeRefused as exc:
        evidence["join_error"] = str(exc)
        probe = HealthProbe(True, refused=diagnose(status=exc.status, body=exc.body), error=str(exc))
    except PhoenixError as exc:
        evidence["join_error"] = str(exc)
        probe = HealthProbe(True, error=str(exc))
    return probe, after


def db_values(target: Target) -> dict[str, str]:
    """The stack's ``DB_HOST``/``DB_PORT`` for the realtime service (what the seed copies into the tenant)."""
    env = realtime_env(target)
    return {k: env[k] for k in ("DB_HOST", "DB_PORT") if env.get(k)}


@register("realtime.health", "Realtime's tenant health: the tenant database is connected",
          needs=("realtime_direct",))
def check_health(target: Target, cid: str) -> CheckResult:
    """``GET {realtime_url}/api/tenants/{tenant}/health`` judged on ``healthy`` and ``db_connected`` together.

    When ``db_connected`` is false, one channel is joined (Realtime connects to the tenant DB on the
    first join) and the health read again; the join's refusal names the cause.
    """
    secret = admin_secret(target)
    if secret is None:
        return _no_key(cid, "API_JWT_SECRET (or JWT_SECRET)")
    token = mint_jwt(secret, "service_role", expires_in=120)
    target.redactor.add(token)
    ans = _health(target, token)
    tenant = target.resolved_tenant()
    metrics: dict[str, float] = {"elapsed_ms": ans.elapsed_ms}
    evidence: dict[str, Any] = {"first": ans.evidence()}
    if ans.status is None:
        failed = _answer_failure(cid, "Realtime's health endpoint got no answer", ans, "HTTP 200", target)
        return dataclasses.replace(
            failed, detail=failed.detail + "\nRealtime may hold the health answer up to 15 s while it opens the "
            "tenant's database connection (connect_connection_ready_timeout); a longer --timeout tells a slow "
            "connect from a dead endpoint.")
    if ans.status == 403 and not ans.body.strip():
        return failure(
            cid,
            "Realtime refused the health request's token (HTTP 403, empty body).",
            cause=CAUSES["admin_jwt_mismatch"],
            detail="The token was signed with API_JWT_SECRET (or JWT_SECRET) as rtbook sees it; Realtime's "
            "admin API verifies only against its own API_JWT_SECRET (or API_JWT_SECRET_NEXT) and answers every "
            "failure with 403 and no body, so its API_JWT_SECRET must be a different value.",
            evidence=evidence,
            metrics=metrics,
        )
    if ans.status == 404:
        return failure(
            cid,
            f"Realtime has no tenant {tenant!r} (HTTP 404 on /api/tenants/{tenant}/health).",
            cause=CAUSES["tenant_missing_admin"],
            evidence=evidence,
            metrics=metrics,
        )
    first = Health.parse(ans.json)
    if ans.status != 200 or first is None:
        return _answer_failure(cid, "Unexpected health answer", ans, 'HTTP 200 {"data":{...}}', target)
    probe, after = HealthProbe(), None
    if not first.db_connected:
        probe, after = _probe_join(target, token, evidence)
    evidence["health"] = (after or first).as_dict()
    if after is not None:
        evidence["health_before_join"] = first.as_dict()
    verdict = judge_health(tenant, first, after, probe, db_values(target))
    if probe.attempted:
        evidence["waits"] = refusal_waits(target).evidence()
    if verdict.status is Status.PASS:
        return CheckResult(cid, Status.PASS, summary=verdict.summary, detail=verdict.detail, evidence=evidence,
                           metrics=metrics)
    waits = f" {refusal_waits(target).describe()}" if probe.attempted else ""
    return failure(cid, verdict.summary, cause=verdict.cause, detail=verdict.detail + waits, evidence=evidence,
                   metrics=metrics, status=verdict.status)


log = logging.getLogger("rtbook.checks.realtime")


MAX_TABLES = 20


def tables_to_watch(target: Target) -> tuple[list[TableRef], str]:
    """The user's tables (``target.tables``), else every table in the publication (the probe excluded).

    At most :data:`MAX_TABLES`; the second value says where the list came from. rtbook only
    subscribes to these tables and reads their policies; it never writes to them.

    Raises:
        ConfigError: a named table is not ``schema.table``.
    """
    if target.tables:
        return [parse_table(t) for t in target.tables][:MAX_TABLES], (target.tables_from or "the tables you named")
    with connect(target) as conn:
        pub = _publication_name(target, conn)
        found = publication_tables(conn, pub) or []
    mine = [t for t in found if t.schema != probe_sql.SCHEMA]
    return mine[:MAX_TABLES], f"the tables in the {pub} publication"


def channel_config(
    *,
    broadcast_self: bool = False,
    ack: bool = False,
    presence_key: str = "",
    presence_enabled: bool = False,
    postgres_changes: list[dict[str, str]] | None = None,
    private: bool = False,
) -> dict[str, Any]:
    """The ``config`` of a channel join (realtime-facts §5.4); public unless ``private``.

    ``presence_enabled`` is what realtime-js sends when presence callbacks are registered; without
    it Realtime sends presence events only once the channel itself tracks.
    """
    return {
        "broadcast": {"self": broadcast_self, "ack": ack},
        "presence": {"key": presence_key, "enabled": presence_enabled},
        "postgres_changes": postgres_changes or [],
        "private": private,
    }


def _topic(kind: str) -> str:
    return f"realtime:rtbook-{kind}-{uuid.uuid4().hex[:10]}"


class _Sockets:
    """Opens sockets for one check and closes them all, whatever happens."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.endpoint: SocketEndpoint = socket_endpoint(target)
        self.waits: RefusalWaits = refusal_waits(target)
        self.clients: list[PhoenixClient] = []

    def open(self, apikey: Secret | str | None) -> PhoenixClient:
        client = open_socket(self.target, apikey, endpoint=self.endpoint)
        self.clients.append(client)
        return client

    def transcripts(self) -> dict[str, Any]:
        return {f"socket{i + 1}": c.transcript.to_list() for i, c in enumerate(self.clients)}

    def close(self) -> None:
        for client in self.clients:
            client.close()


@contextlib.contextmanager
def _sockets(target: Target) -> Iterator[_Sockets]:
    s = _Sockets(target)
    try:
        yield s
    finally:
        s.close()


def _anon(target: Target, cid: str) -> Secret | CheckResult:
    anon = target.secret("ANON_KEY")
    if anon is None:
        return CheckResult(
            cid,
            Status.SKIP,
            summary="Skipped: ANON_KEY is not set.",
            remedy="Export ANON_KEY or put it in the stack's .env.",
        )
    return anon


def _join_failure(cid: str, reply: Reply, what: str, socks: _Sockets, metrics: dict[str, float]) -> CheckResult:
    found = diagnose(reason=reply.reason)
    evidence = {"transcripts": socks.transcripts(), "waits": socks.waits.evidence()}
    if found is not None and found.id == "private_only":
        # Not a fault of the stack: the tenant is set to refuse every public channel (notes §5).
        return CheckResult(
            cid,
            Status.SKIP,
            summary="Skipped: the tenant allows only private channels (private_only), so this public-channel "
            f"check cannot run; Realtime answered {reply.reason!r}. realtime.private tests private channels.",
            detail=f"{found.explanation}\nIf the tenant should accept public channels: {found.remedy}",
            evidence=evidence,
            metrics=metrics,
            cause=found.id,
            see_also=("realtime.private", *found.static_checks),
        )
    return failure(
        cid,
        f"{what}: the join was refused: {reply.reason or reply.status}.",
        cause=found,
        detail=f"phx_join through {socks.endpoint.label} answered status {reply.status!r} "
        f"with {reply.response!r} after {reply.latency_ms / 1000:.1f} s. {socks.waits.describe()}",
        evidence=evidence,
        metrics=metrics,
    )


def _phoenix_failure(cid: str, exc: PhoenixError, what: str, socks: _Sockets,
                     metrics: dict[str, float], cause: Cause | None = None) -> CheckResult:
    if not isinstance(exc, PhoenixTimeout | PhoenixClosed):
        return socket_failure(cid, exc, what, socks.endpoint, {"transcripts": socks.transcripts()},
                              waits=socks.waits)
    closed = isinstance(exc, PhoenixClosed)
    return failure(
        cid,
        f"{what}: {exc}.",
        cause=cause or CAUSES["timeout"],
        detail=("The server closed the socket. " if closed else "")
        + f"Connected through {socks.endpoint.label}; the transcript in the evidence shows every frame. "
        + socks.waits.describe(),
        evidence={"transcripts": socks.transcripts(), "waits": socks.waits.evidence()},
        metrics=metrics,
    )


def _is_reply_ok(reply: Reply | None) -> bool:
    return reply is not None and reply.ok


def _ms_since(client: PhoenixClient, msg: Message, t0: float) -> float:
    """Milliseconds from ``t0`` (monotonic) to when ``client`` received ``msg``."""
    return ((client.received_at(msg) or time.monotonic()) - t0) * 1000


def _join_all(cid: str, topic: str, joins: list[tuple[str, PhoenixClient, dict[str, Any]]], socks: _Sockets,
              metrics: dict[str, float], timeout: float) -> CheckResult | None:
    """Join each ``(name, client, config)`` to ``topic`` in order; the first refusal as a result, else None."""
    for name, client, cfg in joins:
        reply = client.join(topic, cfg, timeout=timeout)
        metrics[f"join_{name}_ms"] = reply.latency_ms
        if not reply.ok:
            return _join_failure(cid, reply, f"The {name} could not join", socks, metrics)
    return None


def _push_refused(cid: str, summary: str, cause: Cause | None, socks: _Sockets,
                  metrics: dict[str, float]) -> CheckResult:
    return failure(cid, summary, cause=cause, evidence={"transcripts": socks.transcripts()}, metrics=metrics)


def _jwt_secret_or_skip(target: Target, cid: str) -> Secret | CheckResult:
    secret = jwt_secret(target)
    if secret is not None:
        return secret
    return CheckResult(cid, Status.SKIP, summary="Skipped: JWT_SECRET is not set.",
                       remedy="Export JWT_SECRET or put it in the stack's .env.")


# ------------------------------------------------------------------ realtime.join


@register("realtime.join", "A public channel can be joined with the anon key", needs=("realtime",), using=_anon,
          steps=4, grace=refusal_grace(connects=1, joins=1))
def check_join(target: Target, cid: str, anon: Secret) -> CheckResult:
    """Connect with ``ANON_KEY`` and join a public channel; record connect and join latency."""
    metrics: dict[str, float] = {}
    with _sockets(target) as socks:
        try:
            client = socks.open(anon)
            metrics["connect_ms"] = client.connect_ms
            topic = _topic("join")
            reply = client.join(topic, channel_config(), timeout=target.timeout)
            metrics["join_ms"] = reply.latency_ms
            if not reply.ok:
                return _join_failure(cid, reply, "Joining a public channel failed", socks, metrics)
            left = client.leave(topic, timeout=target.timeout)
            metrics["leave_ms"] = left.latency_ms
        except PhoenixError as exc:
            return _phoenix_failure(cid, exc, "Joining a public channel failed", socks, metrics)
        return CheckResult(
            cid,
            Status.PASS,
            summary=f"Joined {topic} through {socks.endpoint.via}: connect {metrics['connect_ms']:.0f} ms, "
            f"join {metrics['join_ms']:.0f} ms.",
            evidence={"endpoint": socks.endpoint.label, "transcripts": socks.transcripts()},
            metrics=metrics,
        )


# ------------------------------------------------------------------ realtime.broadcast


def _broadcast_of(nonce: str) -> Callable[[Message], bool]:
    def match(m: Message) -> bool:
        return (
            m.event == "broadcast"
            and isinstance(m.payload, dict)
            and isinstance(m.payload.get("payload"), dict)
            and m.payload["payload"].get("nonce") == nonce
        )

    return match


@register("realtime.broadcast", "Broadcast reaches the sender (self) and a second client, with ack",
          needs=("realtime",), using=_anon,
          steps=8, grace=refusal_grace(connects=2, joins=2))
def check_broadcast(target: Target, cid: str, anon: Secret) -> CheckResult:
    """Two sockets join one topic; the first sends with ``self`` and ``ack``; both receive it."""
    metrics: dict[str, float] = {}
    topic = _topic("broadcast")
    nonce = uuid.uuid4().hex
    with _sockets(target) as socks:
        try:
            a = socks.open(anon)
            b = socks.open(anon)
            refused = _join_all(cid, topic, [("sender", a, channel_config(broadcast_self=True, ack=True)),
                                             ("receiver", b, channel_config())], socks, metrics, target.timeout)
            if refused is not None:
                return refused
            sent = time.monotonic()
            ack = a.push(topic, "broadcast", {"type": "broadcast", "event": "rtbook-probe",
                                              "payload": {"nonce": nonce}}, wait_reply=True,
                         timeout=target.timeout)
            assert ack is not None
            metrics["ack_ms"] = ack.latency_ms
            if not ack.ok:
                return _push_refused(cid, f"The broadcast was not acknowledged: {ack.reason or ack.status}.",
                                     diagnose(reason=ack.reason or str(ack.response)), socks, metrics)
            own = a.wait_for(_broadcast_of(nonce), target.timeout, "the sender's own broadcast (self: true)")
            metrics["self_ms"] = _ms_since(a, own, sent)
            peer = b.wait_for(_broadcast_of(nonce), target.timeout, "the broadcast at the second client")
            metrics["peer_ms"] = _ms_since(b, peer, sent)
        except PhoenixError as exc:
            return _phoenix_failure(cid, exc, "Broadcast failed", socks, metrics)
        return CheckResult(
            cid,
            Status.PASS,
            summary=f"Broadcast acknowledged in {metrics['ack_ms']:.0f} ms, echoed to the sender in "
            f"{metrics['self_ms']:.0f} ms and delivered to a second client in {metrics['peer_ms']:.0f} ms.",
            evidence={"topic": topic, "payload": peer.payload, "transcripts": socks.transcripts()},
            metrics=metrics,
        )


# ------------------------------------------------------------------ realtime.presence


def _presence_has(key: str, section: str | None) -> Callable[[Message], bool]:
    def match(m: Message) -> bool:
        if not isinstance(m.payload, dict):
            return False
        if section is None:
            return m.event in ("presence_state", "presence_diff") and (
                key in m.payload or key in (m.payload.get("joins") or {})
            )
        return m.event == "presence_diff" and key in (m.payload.get(section) or {})

    return match


@register("realtime.presence", "Presence track is seen by a second client, and so is the leave",
          needs=("realtime",), using=_anon,
          steps=9, grace=refusal_grace(connects=2, joins=2))
def check_presence(target: Target, cid: str, anon: Secret) -> CheckResult:
    """Client A tracks a state; client B sees it (presence_state/diff) and then sees A leave."""
    metrics: dict[str, float] = {}
    topic = _topic("presence")
    key_a = f"rtbook-a-{uuid.uuid4().hex[:6]}"
    with _sockets(target) as socks:
        try:
            a = socks.open(anon)
            b = socks.open(anon)
            refused = _join_all(
                cid, topic,
                [(name, client, channel_config(presence_key=key, presence_enabled=True))
                 for name, client, key in (("observer", b, "rtbook-b"), ("tracker", a, key_a))],
                socks, metrics, target.timeout)
            if refused is not None:
                return refused
            sent = time.monotonic()
            tracked = a.push(topic, "presence", {"type": "presence", "event": "track",
                                                 "payload": {"probe": "rtbook", "at": int(time.time())}},
                             wait_reply=True, timeout=target.timeout)
            assert tracked is not None
            metrics["track_reply_ms"] = tracked.latency_ms
            if not tracked.ok:
                return _push_refused(cid, f"The presence track was refused: {tracked.reason or tracked.response}.",
                                     diagnose(reason=tracked.reason), socks, metrics)
            seen = b.wait_for(_presence_has(key_a, None), target.timeout, f"presence of {key_a} at the observer")
            metrics["join_seen_ms"] = _ms_since(b, seen, sent)
            left_at = time.monotonic()
            a.leave(topic, timeout=target.timeout)
            gone = b.wait_for(_presence_has(key_a, "leaves"), target.timeout, f"the leave of {key_a}")
            metrics["leave_seen_ms"] = _ms_since(b, gone, left_at)
        except PhoenixError as exc:
            return _phoenix_failure(cid, exc, "Presence failed", socks, metrics)
        return CheckResult(
            cid,
            Status.PASS,
            summary=f"A second client saw the track in {metrics['join_seen_ms']:.0f} ms and the leave in "
            f"{metrics['leave_seen_ms']:.0f} ms.",
            evidence={"topic": topic, "state": seen.payload, "transcripts": socks.transcripts()},
            metrics=metrics,
        )


# ------------------------------------------------------------------ realtime.private

# A fixed sub-topic, so that a policy written from the remedy makes this check pass on the next run.
PRIVATE_TOPIC = "rtbook-private-probe"


@dataclass(frozen=True)
class MessagesPolicy:
    """One row of ``pg_policies`` for ``realtime.messages``."""

    name: str
    cmd: str  # SELECT, INSERT, UPDATE, DELETE or ALL
    roles: tuple[str, ...]
    permissive: bool
    using: str | None
    check: str | None

    def applies(self, role: str, cmds: tuple[str, ...]) -> bool:
        """Whether the policy can grant ``role`` one of ``cmds`` (restrictive policies only narrow)."""
        return self.permissive and self.cmd in (*cmds, "ALL") and (role in self.roles or "public" in self.roles)

    def show(self) -> str:
        """``name (cmd to roles: USING ... / WITH CHECK ...)`` for a detail."""
        parts = [f"USING ({self.using})" if self.using else "", f"WITH CHECK ({self.check})" if self.check else ""]
        clause = " ".join(p for p in parts if p)
        return f"{self.name} ({self.cmd} TO {', '.join(self.roles)}{': ' + clause if clause else ''})"


@dataclass(frozen=True)
class MessagesPolicies:
    """What the database says about ``realtime.messages``: does it exist, is RLS on, its policies."""

    exists: bool
    rls_enabled: bool
    policies: tuple[MessagesPolicy, ...] = ()
    role_bypasses_rls: bool = False

    def for_role(self, role: str, cmds: tuple[str, ...]) -> list[MessagesPolicy]:
        """The permissive policies that can grant ``role`` one of ``cmds``."""
        return [p for p in self.policies if p.applies(role, cmds)]


def read_messages_policies(target: Target, role: str) -> MessagesPolicies:
    """Read-only: does ``realtime.messages`` exist, its RLS flag, its ``pg_policies`` rows, does ``role`` bypass RLS.

    Raises:
        SQLAlchemyError, OSError: the database could not be read.
    """
    with connect(target) as conn:
        rls = conn.execute(sa.text(
            "SELECT c.relrowsecurity FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'realtime' AND c.relname = 'messages'")).first()
        bypass = conn.execute(sa.text(
            "SELECT rolbypassrls OR rolsuper FROM pg_roles WHERE rolname = :r"), {"r": role}).scalar()
        if rls is None:
            return MessagesPolicies(False, False, (), bool(bypass))
        rows = conn.execute(sa.text(
            "SELECT policyname, cmd, CAST(roles AS text[]), permissive = 'PERMISSIVE', qual, with_check "
            "FROM pg_policies WHERE schemaname = 'realtime' AND tablename = 'messages' ORDER BY policyname"
        )).all()
    policies = tuple(MessagesPolicy(str(r[0]), str(r[1]), tuple(str(x) for x in (r[2] or ())), bool(r[3]),
                                    r[4], r[5]) for r in rows)
    return MessagesPolicies(True, bool(rls[0]), policies, bool(bypass))


@dataclass(frozen=True)
class PrivateOutcome:
    """What the private-channel probe saw (the input of :func:`judge_private`).

    Attributes:
        role: the role of the token the join used.
        topic: the sub-topic (what ``realtime.topic()`` returns), without ``realtime:``.
        join_reason: the refusal reason ("" when the join was accepted).
        ack: ``ok``, ``error`` (a refusing reply) or ``none`` (no reply within the wait); "" when not sent.
        ack_reason: the refusing reply's reason or response.
        echoed: the sender received its own broadcast back (``self: true``).
        waited_s: how long the ack was awaited.
    """

    role: str
    topic: str
    join_reason: str = ""
    ack: str = ""
    ack_reason: str = ""
    echoed: bool = False
    waited_s: float = 0.0


@dataclass(frozen=True)
class PrivateVerdict:
    """The outcome of :func:`judge_private`."""

    status: Status
    summary: str
    detail: str
    cause: Cause | None = None


def _listing(policies: list[MessagesPolicy]) -> str:
    return "; ".join(p.show() for p in policies)


def judge_private(seen: PrivateOutcome, db: MessagesPolicies | None, db_note: str = "") -> PrivateVerdict:
    """The verdict of realtime.private from the probe's replies, explained by the policies when they are known.

    Real semantics (research notes §5): the join runs the role's SELECT policies on
    ``realtime.messages`` with ``realtime.topic()`` = the sub-topic, and is refused as
    ``Unauthorized`` when none returns the probe row; the first broadcast runs the INSERT policies,
    and without one the broadcast is dropped with no reply at all, even with ``ack: true``.
    """
    role, topic = seen.role, seen.topic
    known = db_note or ("" if db is None else (
        f"realtime.messages {'exists' if db.exists else 'does not exist'}"
        + (f", RLS {'on' if db.rls_enabled else 'off'}, {len(db.policies)} polic"
           f"{'y' if len(db.policies) == 1 else 'ies'}" if db.exists else "")
        + (f"; {role} bypasses RLS" if db.role_bypasses_rls else "") + "."))
    reads = db.for_role(role, ("SELECT",)) if db is not None else []
    writes = db.for_role(role, ("INSERT",)) if db is not None else []
    if seen.join_reason:
        found = diagnose(reason=seen.join_reason)
        if found is None or found.id != "private_channel_denied":
            return PrivateVerdict(Status.FAIL, f"Joining a private channel as {role} was refused: {seen.join_reason}.",
                                  known, found)
        denied = found.fill(role=role, topic=topic)
        if db is None:
            return PrivateVerdict(
                Status.FAIL,
                f"A private channel refused {role}: no SELECT policy on realtime.messages for this role/topic "
                f"({topic!r}).",
                f"Realtime answered {seen.join_reason!r}. "
                + (known or "The database was not given, so the policies could not be read."),
                denied)
        if not db.exists:
            return PrivateVerdict(
                Status.WARN,
                "Private channels cannot work: realtime.messages does not exist, so every private join is "
                "refused as Unauthorized.",
                f"Realtime answered {seen.join_reason!r}. {known}",
                CAUSES["messages_table_missing"])
        if not db.policies:
            return PrivateVerdict(
                Status.WARN,
                "Private channels are not set up: realtime.messages has no policy, so every private join is "
                f"refused (as {role} on {topic!r} now). Fine if the app uses only public channels.",
                f"Realtime answered {seen.join_reason!r}. {known}",
                denied)
        if not reads:
            return PrivateVerdict(
                Status.FAIL,
                f"A private channel refused {role}: no SELECT policy on realtime.messages for this role/topic "
                f"(policies exist for other roles or commands: {', '.join(p.name for p in db.policies)}).",
                f"Realtime answered {seen.join_reason!r}. {known} Policies: {_listing(list(db.policies))}.",
                denied)
        return PrivateVerdict(
            Status.WARN,
            f"{role} has SELECT policies on realtime.messages, but none allowed rtbook's topic {topic!r}.",
            f"Realtime answered {seen.join_reason!r}. {known} SELECT policies for {role}: {_listing(reads)}. "
            "They most likely match your application's own topics; to let this check pass add the policy "
            "in the remedy for its topic (or judge your topics with the same USING expression).",
            denied)
    if db is not None and db.exists and not db.role_bypasses_rls:
        # Admitted: a real Realtime ran the role's SELECT policies, so they must allow it.
        if not db.rls_enabled:
            return PrivateVerdict(
                Status.WARN,
                f"{role} joined private channel {topic!r}, but RLS is off on realtime.messages: every role may "
                "read and write every private topic.",
                known, CAUSES["messages_rls_off"])
        if not reads:
            return PrivateVerdict(
                Status.WARN,
                f"{role} joined private channel {topic!r} although no SELECT policy on realtime.messages lets it "
                "read: the server does not enforce private channels.",
                f"{known} Policies: {_listing(list(db.policies)) or 'none'}.",
                CAUSES["private_not_enforced"].fill(role=role, topic=topic))
    if seen.ack == "ok":
        if not seen.echoed:
            return PrivateVerdict(
                Status.WARN,
                f"{role} joined the private channel and its broadcast was acknowledged, but it did not come back "
                "to the sender (self: true).",
                f"Realtime skips receivers whose read policy is false. {known}"
                + (f" SELECT policies for {role}: {_listing(reads)}." if reads else ""))
        return PrivateVerdict(
            Status.PASS,
            f"{role} joined private channel {topic!r}; its broadcast was acknowledged and delivered back.",
            known + (f" SELECT policies for {role}: {_listing(reads)}; INSERT: {_listing(writes) or 'none found'}."
                     if reads or writes else ""))
    if seen.ack == "error":
        found = diagnose(reason=seen.ack_reason)
        return PrivateVerdict(Status.FAIL, f"The private broadcast was refused: {seen.ack_reason}.", known, found)
    no_insert = CAUSES["private_no_insert_policy"].fill(role=role, topic=topic)
    explain = (f"INSERT policies for {role}: {_listing(writes)} — none allowed topic {topic!r}." if writes else
               f"No INSERT (or ALL) policy on realtime.messages applies to {role}." if db is not None else "")
    return PrivateVerdict(
        Status.WARN,
        f"{role} joined private channel {topic!r}, but its broadcast got no ack within {seen.waited_s:g} s: no "
        "INSERT policy: private broadcasts are dropped silently.",
        f"Realtime sends no reply at all for a private broadcast the role may not INSERT, even with ack: true. "
        f"{known} {explain}".strip(),
        no_insert)


def _private_token(target: Target, anon: Secret) -> tuple[str, str]:
    """The private join's token and role: an authenticated user minted with the JWT secret, else the anon key."""
    secret = jwt_secret(target)
    if secret is not None:
        token = mint_jwt(secret, "authenticated", sub=str(uuid.uuid4()))
        target.redactor.add(token)
        return token, "authenticated"
    claims, _verdict = verify_jwt(anon.reveal(), None)
    role = claims.get("role") if isinstance(claims, dict) else None
    return anon.reveal(), str(role or "anon")


@register("realtime.private", "A private channel admits the user's token and delivers its broadcast",
          needs=("realtime",), using=_anon,
          steps=8, grace=refusal_grace(connects=1, joins=1))
def check_private(target: Target, cid: str, anon: Secret) -> CheckResult:
    """Join ``realtime:rtbook-private-probe`` with ``config.private = true``, broadcast with ack, judge by the replies.

    The token is an ``authenticated`` user minted with JWT_SECRET when it is known, else ANON_KEY.
    With a database, ``realtime.messages``'s policies are read (read-only) to explain the verdict.
    """
    token, role = _private_token(target, anon)
    topic = f"realtime:{PRIVATE_TOPIC}"
    nonce = uuid.uuid4().hex
    metrics: dict[str, float] = {}
    db: MessagesPolicies | None = None
    db_note = ""
    if target.has("db"):
        try:
            db = read_messages_policies(target, role)
        except (SQLAlchemyError, OSError) as exc:
            db_note = f"The policies of realtime.messages could not be read: {classify_db_error(exc, target).summary}"
    evidence: dict[str, Any] = {"role": role, "topic": topic}
    if db is not None:
        evidence["messages_table"] = {"exists": db.exists, "rls_enabled": db.rls_enabled,
                                      "role_bypasses_rls": db.role_bypasses_rls,
                                      "policies": [dataclasses.asdict(p) for p in db.policies]}
    with _sockets(target) as socks:
        evidence["waits"] = socks.waits.evidence()
        try:
            client = socks.open(anon)
            metrics["connect_ms"] = client.connect_ms
            reply = client.join(topic, channel_config(broadcast_self=True, ack=True, private=True),
                                access_token=token, timeout=target.timeout)
            metrics["join_ms"] = reply.latency_ms
            seen = PrivateOutcome(role, PRIVATE_TOPIC, "" if reply.ok else (reply.reason or reply.status))
            if reply.ok:
                sent = time.monotonic()
                try:
                    ack = client.push(topic, "broadcast", {"type": "broadcast", "event": "rtbook-private",
                                                          "payload": {"nonce": nonce}},
                                      wait_reply=True, timeout=target.timeout)
                    assert ack is not None
                    metrics["ack_ms"] = ack.latency_ms
                    seen = dataclasses.replace(seen, ack="ok" if ack.ok else "error",
                                               ack_reason=ack.reason or repr(ack.response), waited_s=target.timeout)
                except PhoenixTimeout:
                    seen = dataclasses.replace(seen, ack="none", waited_s=target.timeout)
                if seen.ack == "ok":
                    try:
                        own = client.wait_for(_broadcast_of(nonce), target.timeout, "the private broadcast's echo")
                        metrics["self_ms"] = _ms_since(client, own, sent)
                        seen = dataclasses.replace(seen, echoed=True)
                    except PhoenixTimeout:
                        pass
        except PhoenixError as exc:
            return _phoenix_failure(cid, exc, "The private channel test failed", socks, metrics)
        evidence["transcripts"] = socks.transcripts()
        waits = socks.waits.describe()
    verdict = judge_private(seen, db, db_note)
    evidence["outcome"] = dataclasses.asdict(seen)
    if verdict.status is Status.PASS:
        return CheckResult(cid, Status.PASS, summary=verdict.summary, detail=verdict.detail, evidence=evidence,
                           metrics=metrics)
    return failure(cid, verdict.summary, cause=verdict.cause, detail=f"{verdict.detail}\n{waits}",
                   evidence=evidence, metrics=metrics, status=verdict.status, see_also=("db.rls",))


# ------------------------------------------------------------------ postgres_changes: shared helpers


def _db_write(target: Target, stmt: str, params: dict[str, Any] | None = None) -> tuple[float, Any]:
    """Run one statement in its own transaction; return the monotonic commit time and the first value."""
    with connect(target) as conn:
        result = conn.execute(sa.text(stmt), params or {})
        value = result.scalar() if result.returns_rows else None
        conn.commit()
        return time.monotonic(), value


def _db_failure(cid: str, exc: BaseException, target: Target, doing: str,
                metrics: dict[str, float] | None = None) -> CheckResult:
    problem = classify_db_error(exc, target)
    found = diagnose(message=problem.message)
    return failure(
        cid,
        f"Could not {doing}: {problem.summary}",
        cause=found,
        detail=f"Database said: {problem.message}",
        remedy="" if found else problem.remedy,
        evidence={"db_error": problem.kind},
        metrics=metrics,
        see_also=("db.connect",),
    )


def _system_for(topic: str) -> Callable[[Message], bool]:
    def match(m: Message) -> bool:
        return (
            m.event == "system"
            and m.topic == topic
            and isinstance(m.payload, dict)
            and m.payload.get("extension") == "postgres_changes"
        )

    return match


def _change(kind: str, table: str, row_id: Any) -> Callable[[Message], bool]:
    def match(m: Message) -> bool:
        if m.event != "postgres_changes" or not isinstance(m.payload, dict):
            return False
        data = m.payload.get("data") or {}
        if data.get("type") != kind or data.get("table") != table:
            return False
        rec = data.get("old_record") if kind == "DELETE" else data.get("record")
        return isinstance(rec, dict) and str(rec.get("id")) == str(row_id)

    return match


def _subscribe(client: PhoenixClient, topic: str, schema: str, table: str, timeout: float,
               access_token: Secret | str | None = None) -> tuple[Reply, Message | None, float]:
    """Join with one postgres_changes binding and wait for the ``system`` answer.

    Returns the join reply, the system message (None when the join failed) and the ms from the
    join to the system message.
    """
    started = time.monotonic()
    reply = client.join(
        topic,
        channel_config(postgres_changes=[{"event": "*", "schema": schema, "table": table}]),
        access_token=access_token,
        timeout=timeout,
    )
    if not reply.ok:
        return reply, None, 0.0
    try:
        # On a tenant whose CDC workers are not running, Realtime starts them and subscribes again after a
        # random 1-3 s, and again every 1-3 s while they are still starting (supabase/realtime v2.129.8
        # lib/realtime_web/channels/realtime_channel.ex handle_info(:postgres_subscribe, ...) on a nil from
        # PostgresCdcRls.handle_connect/1), so the first "Subscribed" may come two retries after the join.
        system = client.wait_for(_system_for(topic), timeout + COLD_SUBSCRIBE_RETRY_S,
                                 f"the system message for {schema}.{table}")
    except PhoenixTimeout as exc:
        raise _NoSubscription(str(exc)) from None
    return reply, system, (time.monotonic() - started) * 1000


# Two of Realtime's 1-3 s re-subscribe delays on a cold tenant (a slow tenant database may keep the
# workers starting past the first), with a second of margin.
COLD_SUBSCRIBE_RETRY_S = 7.0


class _NoSubscription(PhoenixTimeout):
    """Joined, but Realtime never answered whether the postgres_changes subscription worked."""


def _missing_table_cause(target: Target, where: str) -> Cause | None:
    """``table_missing`` when the database says ``where`` (schema.table) does not exist, else None.

    Realtime's refusal is the same for a missing table and a table outside the publication; only the
    catalogue tells them apart, and "add it to the publication" is wrong advice for a table that is not there.
    """
    try:
        ref = parse_table(where)
        with connect(target) as conn:
            found = conn.execute(
                sa.text("SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "WHERE n.nspname = :s AND c.relname = :t"),
                {"s": ref.schema, "t": ref.name},
            ).first()
    except Exception:  # the database is judged by the db.* checks; here it only refines the diagnosis
        return None
    return None if found is not None else CAUSES["table_missing"].fill(schema=ref.schema, table=ref.name)


def _system_failure(cid: str, system: Message, where: str, socks: _Sockets,
                    metrics: dict[str, float], target: Target | None = None) -> CheckResult | None:
    payload = system.payload if isinstance(system.payload, dict) else {}
    if payload.get("status") == "ok":
        return None
    text = str(payload.get("message", ""))
    found = diagnose(message=text)
    if found is not None and found.id == "not_in_publication" and target is not None and target.has("db"):
        found = _missing_table_cause(target, where) or found
    return failure(
        cid,
        f"Realtime refused the postgres_changes subscription on {where}: {text[:160]}",
        cause=found,
        detail=f"system message: {payload!r}",
        evidence={"transcripts": socks.transcripts()},
        metrics=metrics,
    )


def _subscribe_named(cid: str, target: Target, socks: _Sockets, anon: Secret, named: list[TableRef],
                     metrics: dict[str, float], evidence: dict[str, Any]) -> CheckResult | None:
    """Subscribe (read-only) to each table, one channel each; the first refusal as a result, else None."""
    if not named:
        return None
    watcher = socks.open(anon)
    for ref in named:
        reply, system, ms = _subscribe(watcher, _topic("pgc"), ref.schema, ref.name, target.timeout)
        if system is None:
            return _join_failure(cid, reply, f"Subscribing to {ref}", socks, metrics)
        metrics[f"subscribed_{ref}_ms"] = ms
        bad = _system_failure(cid, system, str(ref), socks, metrics, target)
        if bad is not None:
            return bad
        evidence.setdefault("named_tables", {})[str(ref)] = "Subscribed to PostgreSQL"
    return None


# ------------------------------------------------------------------ the probe and Realtime's change capture

_REALTIME_CDC_SESSIONS = ("realtime_rls", "realtime_subscription_manager", "realtime_subscription_manager_pub")
# After the re-check interval, a margin for the timer's phase and the work it triggers.
_RECHECK_MARGIN_S = 5.0


def lifecycle_budget(target: Target) -> float:
    """How long a check may wait for Realtime's change capture to catch up: min(75 s, 8 x --timeout).

    75 s covers Realtime's 60 s publication re-check (notes/realtime.md §4.1, §4.4) with a margin.
    """
    return min(RECHECK_S + 15.0, 8 * target.timeout)


@dataclass(frozen=True)
class CdcFacts:
    """What the database says about Realtime's change capture (read-only)."""

    wal_level: str
    slots: tuple[dict[str, Any], ...]
    probe_age_s: float | None
    stale_sessions: int

    @property
    def has_slot(self) -> bool:
        """Realtime's wal2json slot exists (its poller is reading changes)."""
        return bool(self.slots)

    @property
    def recheck_pending(self) -> bool:
        """A Realtime that was running before the probe's install may not have re-read the publication yet."""
        return (self.stale_sessions > 0 and self.probe_age_s is not None
                and self.probe_age_s < RECHECK_S + _RECHECK_MARGIN_S)

    def to_dict(self) -> dict[str, Any]:
        """For the evidence."""
        return {"wal_level": self.wal_level, "realtime_wal2json_slots": list(self.slots),
                "probe_installed_s_ago": None if self.probe_age_s is None else round(self.probe_age_s, 1),
                "realtime_cdc_sessions_older_than_probe": self.stale_sessions}


def cdc_facts(target: Target, state: ProbeState | None) -> CdcFacts:
    """wal_level, Realtime's wal2json slots, the probe's age, and Realtime CDC sessions older than the probe."""
    installed = state.installed_at if state is not None else None
    with connect(target) as conn:
        level = str(conn.execute(sa.text("SHOW wal_level")).scalar())
        rows = conn.execute(sa.text(
            r"SELECT slot_name, temporary, active, database FROM pg_replication_slots "
            r"WHERE plugin = 'wal2json' AND slot_name LIKE 'supabase\_realtime%' "
            r"AND database = current_database() ORDER BY slot_name")).all()
        age: float | None = None
        stale = 0
        if installed is not None:
            age = float(conn.execute(sa.text("SELECT extract(epoch FROM now() - CAST(:t AS timestamptz))"),
                                     {"t": installed}).scalar() or 0.0)
            stale = int(conn.execute(sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = ANY(:names) "
                "AND backend_start < CAST(:t AS timestamptz)"),
                {"names": list(_REALTIME_CDC_SESSIONS), "t": installed}).scalar() or 0)
    slots = tuple({"slot_name": r[0], "temporary": bool(r[1]), "active": bool(r[2]), "database": r[3]} for r in rows)
    return CdcFacts(level, slots, age, stale)


def _wal_level_failure(cid: str, facts: CdcFacts, evidence: dict[str, Any]) -> CheckResult:
    return failure(
        cid,
        f"wal_level is {facts.wal_level}: Realtime cannot create its replication slot, so no change can be "
        "delivered (nothing was written to test it).",
        cause=CAUSES["wal_level"],
        evidence={**evidence, "cdc": facts.to_dict()},
    )


@dataclass
class _Waited:
    seconds: float = 0.0
    resubscribed: bool = False
    reasons: list[str] = dataclasses.field(default_factory=list)

    def describe(self, budget: float) -> str:
        if not self.reasons or (self.seconds < 1.0 and not self.resubscribed):
            return ""  # a poller that made its slot within a second is not worth a sentence
        return (f" Waited {self.seconds:.0f} s (budget {budget:.0f} s) for Realtime: {'; '.join(self.reasons)}"
                + ("; Realtime re-subscribed the channel meanwhile." if self.resubscribed else "."))


def _await_capture(target: Target, state: ProbeState, channels: list[tuple[PhoenixClient, str]],
                   deadline: float, waited: _Waited) -> CdcFacts:
    """Wait, bounded by ``deadline``, until Realtime reads changes of the probe table.

    That is: its wal2json slot exists (since v2.107.1 it is created only while the publication has
    tables, at the poller's 60 s re-check after a first table arrived), and a Realtime that ran
    before the probe's install has re-read the publication (its 60 s re-check re-creates every
    subscription; a second "Subscribed to PostgreSQL" on our channel shows it did).
    """
    started = time.monotonic()
    last_beat = started
    facts = cdc_facts(target, state)  # after the subscriptions: a poller they started may have made its slot
    while True:
        if not facts.has_slot and "its replication slot did not exist yet" not in waited.reasons:
            waited.reasons.append("its replication slot did not exist yet")
        if facts.recheck_pending and not waited.resubscribed and not any(
                r.startswith("the probe was installed") for r in waited.reasons):
            waited.reasons.append(f"the probe was installed {facts.probe_age_s:.0f} s ago and Realtime re-reads "
                                  f"the publication every {RECHECK_S:.0f} s")
        if (facts.has_slot and (not facts.recheck_pending or waited.resubscribed)) or time.monotonic() >= deadline:
            break
        for client, topic in channels:
            if client.collect(_system_for(topic), 0):
                waited.resubscribed = True
        time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        if time.monotonic() - last_beat >= 20:
            # Phoenix closes a socket that sends nothing for 60 s.
            for client, _topic_name in channels:
                client.heartbeat(timeout=target.timeout)
            last_beat = time.monotonic()
        facts = cdc_facts(target, state)
    waited.seconds += time.monotonic() - started
    return facts


def _capture_failure(cid: str, facts: CdcFacts, waited: _Waited, budget: float, what: str,
                     evidence: dict[str, Any], metrics: dict[str, float]) -> CheckResult:
    """Why subscribed changes did not arrive, from the database's facts (wal_level was checked before)."""
    evidence = {**evidence, "cdc": facts.to_dict()}
    if facts.recheck_pending and not waited.resubscribed:
        # Realtime ran before the probe existed and has not re-read the publication yet: not a failure yet.
        state = "has no replication slot yet" if not facts.has_slot else "may still be re-creating subscriptions"
        return failure(
            cid,
            f"{what}: not proven yet. The probe was installed {facts.probe_age_s:.0f} s ago and Realtime {state}; "
            f"it re-reads the publication every {RECHECK_S:.0f} s.",
            cause=CAUSES["cdc_poller_idle"] if not facts.has_slot else CAUSES["no_events"],
            detail=f"Waited {waited.seconds:.0f} s of a {budget:.0f} s budget (min(75 s, 8 x --timeout)).",
            remedy="Run the check again in a minute, or with a larger --timeout.",
            evidence=evidence, metrics=metrics, status=Status.WARN,
        )
    if not facts.has_slot:
        return failure(
            cid,
            f"{what}: Realtime has no replication slot: its change poller is idle or failing "
            f"(wal_level is logical; waited {waited.seconds:.0f} s).",
            cause=CAUSES["cdc_poller_idle"],
            detail="No slot named supabase_realtime_replication_slot... with the wal2json plugin exists while a "
            "channel is subscribed to a table of the publication.",
            evidence=evidence, metrics=metrics,
        )
    return failure(
        cid,
        f"{what}: Realtime's replication slot exists and the channel is subscribed, but the change never arrived.",
        cause=CAUSES["no_events"],
        detail="wal_level is logical and the slot " + ", ".join(str(s["slot_name"]) for s in facts.slots)
        + " exists, so the poller runs; look at Realtime's log for PoolingReplicationError, "
        "MessagePerSecondRateLimitReached, or RLS errors." + waited.describe(budget),
        evidence=evidence, metrics=metrics,
    )


def _retry_after_recheck(facts: CdcFacts, waited: _Waited, deadline: float) -> bool:
    """A missed change deserves one more try when Realtime may have been re-creating subscriptions."""
    recent = (facts.stale_sessions > 0 and facts.probe_age_s is not None
              and facts.probe_age_s < RECHECK_S + 15.0)
    return (recent or waited.resubscribed) and time.monotonic() < deadline


def _cleanup_probe_rows(target: Target, run: str) -> None:
    """Delete what this run wrote to the probe (normally nothing is left: the check deletes its rows)."""
    try:
        _db_write(target, f"DELETE FROM {probe_sql.qualified()} WHERE payload ->> 'rtbook_run' = :run", {"run": run})
    except (SQLAlchemyError, OSError) as exc:
        # Not raised: it would hide the check's own outcome; logged so leftover rows are not a mystery.
        log.warning("could not delete this run's probe rows (%s); they are marked rtbook_run=%s",
                    classify_db_error(exc, target).summary, run)


_PROBE_HOWTO = ("rtbook writes nothing by default; to prove delivery, install the probe once: "
                "rtbook probe install --yes (a table rtbook_probe.events in the publication; the checks then write "
                "only to it)")


def _probe_state(target: Target) -> ProbeState:
    with connect(target) as conn:
        return read_probe_state(conn, _publication_name(target, conn))


# ------------------------------------------------------------------ realtime.postgres_changes


@register("realtime.postgres_changes", "postgres_changes: subscriptions are accepted; with the probe, changes arrive",
          needs=("realtime", "db"), using=_anon,
          steps=20, grace=refusal_grace(connects=2, joins=2, extra_s=2 * COLD_SUBSCRIBE_RETRY_S, table_steps=2))
def check_postgres_changes(target: Target, cid: str, anon: Secret) -> CheckResult:
    """Subscribe to the named (or published) tables, read-only; with the probe, write to it and time each change.

    Without the probe nothing is written: the result proves the subscriptions ("Subscribed to
    PostgreSQL") and says that delivery was not proven. With the probe, one public row of
    ``rtbook_probe.events`` is inserted, updated and deleted after Realtime's change capture is
    ready (see :func:`_await_capture`).
    """
    metrics: dict[str, float] = {}
    evidence: dict[str, Any] = {}
    try:
        named, source = tables_to_watch(target)
        state = _probe_state(target)
    except (SQLAlchemyError, OSError) as exc:
        return _db_failure(cid, exc, target, "read the publication and the probe's state")
    evidence["named_tables_source"] = source
    evidence["probe"] = state.describe()
    with _sockets(target) as socks:
        try:
            refused = _subscribe_named(cid, target, socks, anon, named, metrics, evidence)
            if refused is not None:
                return refused
            if not state.installed:
                evidence["delivery"] = "not proven: the probe is not installed"
                evidence["transcripts"] = socks.transcripts()
                incomplete = (" The probe exists but is incomplete (" + state.describe() + "); "
                              "rtbook probe install --yes completes it.") if state.table_exists else ""
                if not named:
                    return CheckResult(
                        cid, Status.SKIP,
                        summary="Nothing to subscribe to: no table was named and the publication holds none; "
                        "delivery NOT proven." + incomplete,
                        detail=_PROBE_HOWTO + ".", evidence=evidence, see_also=("db.publication",),
                    )
                return _subscribed_only(cid, target, state, named, source, incomplete, metrics, evidence)
            return _probe_delivery(cid, target, socks, anon, state, named, metrics, evidence)
        except _NoSubscription as exc:
            return _phoenix_failure(cid, exc, "postgres_changes failed", socks, metrics,
                                    _no_subscription_cause(target, state, evidence))
        except PhoenixError as exc:
            return _phoenix_failure(cid, exc, "postgres_changes failed", socks, metrics)
        except (SQLAlchemyError, OSError) as exc:
            return _db_failure(cid, exc, target, "write to the probe table", metrics)


def _no_subscription_cause(target: Target, state: ProbeState, evidence: dict[str, Any]) -> Cause:
    """Why Realtime never confirmed a subscription, from what the database says (read-only).

    No slot of Realtime's means its CDC poller is not running (cdc_poller_idle: e.g. no free
    replication slot, or the workers failing to start); with a slot, the cause stays open (no_events).
    """
    try:
        facts = cdc_facts(target, state)
    except (SQLAlchemyError, OSError):
        return CAUSES["no_events"]
    evidence["cdc"] = facts.to_dict()
    if facts.wal_level != "logical":
        return CAUSES["wal_level"]
    return CAUSES["cdc_poller_idle"] if not facts.has_slot else CAUSES["no_events"]


def _subscribed_only(cid: str, target: Target, state: ProbeState, named: list[TableRef], source: str,
                     incomplete: str, metrics: dict[str, float], evidence: dict[str, Any]) -> CheckResult:
    """Without the probe: the subscriptions were accepted; what the database says about delivery, read-only."""
    facts = cdc_facts(target, state)
    if facts.wal_level != "logical":
        return _wal_level_failure(cid, facts, evidence)
    # The subscriptions started Realtime's poller if it was not running; give it --timeout to make its slot.
    if not facts.has_slot:
        def with_slot() -> CdcFacts | None:
            nonlocal facts
            facts = cdc_facts(target, state)
            return facts if facts.has_slot else None

        wait_until(with_slot, target.timeout, interval=0.3)
    evidence["cdc"] = facts.to_dict()
    listing = ", ".join(map(str, named))
    if not facts.has_slot:
        return failure(
            cid,
            f"Subscribed to PostgreSQL for {len(named)} table(s) ({source}), but Realtime has no replication slot "
            f"after {target.timeout:g} s: its change poller may be idle or failing, so changes may not arrive "
            "(delivery NOT proven: rtbook wrote nothing).",
            cause=CAUSES["cdc_poller_idle"],
            detail=f"wal_level is logical. Subscribed: {listing}. " + _PROBE_HOWTO + "." + incomplete,
            evidence=evidence, metrics=metrics, status=Status.WARN,
        )
    return CheckResult(
        cid, Status.PASS,
        summary=f"Subscribed to PostgreSQL for {len(named)} table(s) ({source}) and Realtime's slot "
        f"{facts.slots[0]['slot_name']} exists; delivery NOT proven: rtbook wrote nothing. Prove it with: "
        "rtbook probe install --yes." + incomplete,
        detail=_PROBE_HOWTO + f". Subscribed: {listing}.",
        evidence=evidence, metrics=metrics,
    )


def _probe_delivery(cid: str, target: Target, socks: _Sockets, anon: Secret, state: ProbeState,
                    named: list[TableRef], metrics: dict[str, float], evidence: dict[str, Any]) -> CheckResult:
    table = probe_sql.TABLE
    facts = cdc_facts(target, state)
    if facts.wal_level != "logical":
        return _wal_level_failure(cid, facts, evidence)
    budget = lifecycle_budget(target)
    deadline = time.monotonic() + budget
    client = socks.open(anon)
    metrics["connect_ms"] = client.connect_ms
    topic = _topic("pgc")
    reply, system, ms = _subscribe(client, topic, probe_sql.SCHEMA, table, target.timeout)
    if system is None:
        return _join_failure(cid, reply, f"Subscribing to {state.table}", socks, metrics)
    metrics["join_ms"] = reply.latency_ms
    metrics["subscribed_ms"] = ms
    bad = _system_failure(cid, system, state.table, socks, metrics)
    if bad is not None:
        return bad
    waited = _Waited()
    run = uuid.uuid4().hex
    payloads: dict[str, Any] = {}
    try:
        for attempt in (1, 2):
            facts = _await_capture(target, state, [(client, topic)], deadline, waited)
            if not facts.has_slot:
                return _capture_failure(cid, facts, waited, budget, "postgres_changes on the probe",
                                        {**evidence, "transcripts": socks.transcripts()}, metrics)
            missed = _write_and_watch(target, client, table, run, payloads, metrics)
            if missed is None:
                break
            if attempt == 1 and _retry_after_recheck(facts, waited, deadline):
                waited.reasons.append(f"the {missed} was missed while Realtime may have been re-creating "
                                      "subscriptions; tried again")
                payloads.clear()
                continue
            got = [k for k in ("INSERT", "UPDATE", "DELETE") if k in payloads]
            return _capture_failure(
                cid, cdc_facts(target, state), waited, budget,
                f"Subscribed, but the {missed} on {state.table} never arrived (waited {target.timeout:g} s; "
                f"received before: {', '.join(got) or 'none'})",
                {**evidence, "payloads": payloads, "transcripts": socks.transcripts()}, metrics)
    finally:
        _cleanup_probe_rows(target, run)
    metrics["waited_for_realtime_s"] = round(waited.seconds, 1)
    evidence.update({"table": state.table, "payloads": payloads, "cdc": facts.to_dict(),
                     "delivery": "proven on the probe", "transcripts": socks.transcripts()})
    return CheckResult(
        cid,
        Status.PASS,
        summary=f"INSERT/UPDATE/DELETE on {state.table} arrived in {metrics['insert_ms']:.0f}/"
        f"{metrics['update_ms']:.0f}/{metrics['delete_ms']:.0f} ms after commit"
        + (f"; subscribed to {len(named)} other table(s) without writing to them." if named else ".")
        + waited.describe(lifecycle_budget(target)),
        evidence=evidence,
        metrics=metrics,
    )


def _write_and_watch(target: Target, client: PhoenixClient, table: str, run: str, payloads: dict[str, Any],
                     metrics: dict[str, float]) -> str | None:
    """Insert, update and delete one public probe row; each change must arrive. The missed kind, else None."""
    t = probe_sql.qualified()
    t_ins, row_id = _db_write(
        target, f"INSERT INTO {t} (owner, is_public, payload) VALUES (CAST(:o AS uuid), true, CAST(:p AS jsonb)) "
        "RETURNING id", {"o": str(uuid.uuid4()), "p": json.dumps({"rtbook_run": run, "step": "insert"})})
    for kind, stmt in (
        ("INSERT", None),
        ("UPDATE", f"UPDATE {t} SET payload = payload || CAST(:patch AS jsonb) WHERE id = :id"),
        ("DELETE", f"DELETE FROM {t} WHERE id = :id"),
    ):
        t0 = t_ins if stmt is None else _db_write(target, stmt, {"id": row_id, "patch": '{"step": "update"}'})[0]
        try:
            msg = client.wait_for(_change(kind, table, row_id), target.timeout, f"the {kind} event")
        except PhoenixTimeout:
            return kind  # a row left behind is deleted by _cleanup_probe_rows
        metrics[f"{kind.lower()}_ms"] = _ms_since(client, msg, t0)
        payloads[kind] = msg.payload
    return None


# ------------------------------------------------------------------ realtime.rls


def _named_rls_gaps(target: Target) -> tuple[list[TableRef], list[tuple[str, str]]]:
    """The tables judged, and the (table, role) pairs where RLS is on and the role has no SELECT policy."""
    gaps: list[tuple[str, str]] = []
    refs, _source = tables_to_watch(target)
    with connect(target) as conn:
        for ref in refs:
            row = conn.execute(sa.text(
                "SELECT c.relrowsecurity FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = :s AND c.relname = :t"), {"s": ref.schema, "t": ref.name}).first()
            if row is None or not row[0]:
                continue
            for role in ("anon", "authenticated"):
                has = conn.execute(sa.text(
                    "SELECT EXISTS (SELECT 1 FROM pg_policies WHERE schemaname = :s AND tablename = :t "
                    "AND cmd IN ('SELECT', 'ALL') AND (roles @> ARRAY[CAST(:r AS name)] "
                    "OR roles @> ARRAY[CAST('public' AS name)]))"),
                    {"s": ref.schema, "t": ref.name, "r": role}).scalar()
                if not has:
                    gaps.append((str(ref), role))
    return refs, gaps


def _gaps_result(cid: str, gaps: list[tuple[str, str]], lead: str, evidence: dict[str, Any],
                 metrics: dict[str, float]) -> CheckResult:
    critical = [g for g in gaps if g[1] == "authenticated"]
    listing = ", ".join(f"{t} ({r})" for t, r in gaps)
    return failure(
        cid,
        f"{lead}named tables have no SELECT policy for some roles: {listing}.",
        cause=CAUSES["rls_denies"],
        detail="With RLS on and no SELECT policy, Realtime delivers no change on that table to that role. "
        "This is right only if the role must never see the table.",
        remedy="; ".join(f"CREATE POLICY ... ON {t} FOR SELECT TO {r} USING (...)" for t, r in gaps),
        evidence={**evidence, "policy_gaps": [list(g) for g in gaps]},
        metrics=metrics,
        status=Status.FAIL if critical else Status.WARN,
    )


# Who must receive which probe row: a private row of the owner, then a public row.
_RLS_EXPECTED: dict[str, dict[str, bool]] = {
    "private": {"anon": False, "authenticated": True, "other_user": False, "service_role": True},
    "public": {"anon": True, "authenticated": True, "other_user": True, "service_role": True},
}


@register("realtime.rls", "RLS decides who receives a change: anon, authenticated (owner) and service_role",
          needs=("realtime", "db"), using=_anon,
          steps=14, grace=refusal_grace(connects=3, joins=3, extra_s=3 * COLD_SUBSCRIBE_RETRY_S))
def check_rls(target: Target, cid: str, anon: Secret) -> CheckResult:
    """With the probe, per-role delivery of a private and a public row; always the named tables' policies."""
    secret = _jwt_secret_or_skip(target, cid)
    if isinstance(secret, CheckResult):
        return secret
    metrics: dict[str, float] = {}
    evidence: dict[str, Any] = {}
    try:
        judged, gaps = _named_rls_gaps(target)
        state = _probe_state(target)
    except (SQLAlchemyError, OSError) as exc:
        return _db_failure(cid, exc, target, "read the named tables' policies and the probe's state")
    evidence["probe"] = state.describe()
    evidence["tables_judged"] = [str(t) for t in judged]
    if not state.installed:
        evidence["delivery"] = "not proven: the probe is not installed"
        if gaps:
            return _gaps_result(cid, gaps, "Per-role delivery was not tested (no probe); ", evidence, metrics)
        if not judged:
            return CheckResult(cid, Status.SKIP,
                               summary="No table to judge (none named, none in the publication); per-role delivery "
                               "NOT proven.", detail=_PROBE_HOWTO + ".", evidence=evidence)
        return CheckResult(
            cid, Status.PASS,
            summary=f"{len(judged)} table(s) have SELECT policies for anon and authenticated where RLS is on "
            "(read from pg_policies); per-role delivery NOT proven: rtbook wrote nothing. Prove it with: "
            "rtbook probe install --yes.",
            detail=_PROBE_HOWTO + ". Judged: " + ", ".join(map(str, judged)) + ".",
            evidence=evidence,
        )
    owner = str(uuid.uuid4())
    service_key = target.secret("SERVICE_ROLE_KEY")
    tokens: dict[str, str | None] = {
        "anon": None,
        "authenticated": mint_jwt(secret, "authenticated", sub=owner),
        "other_user": mint_jwt(secret, "authenticated", sub=str(uuid.uuid4())),
        "service_role": service_key.reveal() if service_key else mint_jwt(secret, "service_role"),
    }
    for tok in tokens.values():
        target.redactor.add(tok)
    with _sockets(target) as socks:
        try:
            seen = _rls_delivery(cid, target, socks, anon, state, owner, tokens, metrics, evidence)
        except _NoSubscription as exc:
            return _phoenix_failure(cid, exc, "The RLS test failed", socks, metrics,
                                    _no_subscription_cause(target, state, evidence))
        except PhoenixError as exc:
            return _phoenix_failure(cid, exc, "The RLS test failed", socks, metrics)
        except (SQLAlchemyError, OSError) as exc:
            return _db_failure(cid, exc, target, "write to the probe table", metrics)
        if isinstance(seen, CheckResult):
            return seen
        evidence.update({"table": state.table, "expected": _RLS_EXPECTED, "seen": seen,
                         "transcripts": socks.transcripts()})
    wrong = [(row, role) for row, roles in _RLS_EXPECTED.items() for role, want in roles.items()
             if seen[row][role] != want]
    if wrong:
        leaks = sorted({role for row, role in wrong if seen[row][role]})
        denied = sorted({role for row, role in wrong if not seen[row][role]})
        return failure(
            cid,
            "Realtime did not apply the probe table's RLS policies: "
            + "; ".join(p for p in (f"{', '.join(leaks)} received a row its policy hides" if leaks else "",
                                    f"{', '.join(denied)} missed a row its policy allows" if denied else "") if p)
            + ".",
            cause=CAUSES["rls_leaks"] if leaks else CAUSES["rls_denies"],
            detail=f"Probe policies ({state.table}): anon may SELECT rows with is_public; authenticated may SELECT "
            "public rows and rows whose owner equals its JWT sub; service_role bypasses RLS. Expected "
            f"{_RLS_EXPECTED!r}, saw {seen!r}.",
            evidence=evidence,
            metrics=metrics,
        )
    if gaps:
        return _gaps_result(cid, gaps, "RLS works on the probe, but ", evidence, metrics)
    return CheckResult(
        cid,
        Status.PASS,
        summary=f"RLS applied per role on {state.table}: the owner and service_role received the private row, anon "
        "and another user did not; every role received the public row"
        + (f"; {len(judged)} named table(s) have SELECT policies." if judged else "."),
        evidence=evidence,
        metrics=metrics,
    )


def _rls_delivery(cid: str, target: Target, socks: _Sockets, anon: Secret, state: ProbeState, owner: str,
                  tokens: dict[str, str | None], metrics: dict[str, float],
                  evidence: dict[str, Any]) -> dict[str, dict[str, bool]] | CheckResult:
    """Subscribe once per role, insert a private then a public row of ``owner``; who received which."""
    table = probe_sql.TABLE
    facts = cdc_facts(target, state)
    if facts.wal_level != "logical":
        return _wal_level_failure(cid, facts, evidence)
    budget = lifecycle_budget(target)
    deadline = time.monotonic() + budget
    clients: dict[str, tuple[PhoenixClient, str]] = {}
    for role, token in tokens.items():
        client = socks.open(anon)
        topic = _topic(f"rls-{role}")
        reply, system, ms = _subscribe(client, topic, probe_sql.SCHEMA, table, target.timeout, access_token=token)
        if system is None:
            return _join_failure(cid, reply, f"Subscribing as {role}", socks, metrics)
        bad = _system_failure(cid, system, f"{state.table} as {role}", socks, metrics)
        if bad is not None:
            return bad
        metrics[f"subscribed_{role}_ms"] = ms
        clients[role] = (client, topic)
    waited = _Waited()
    run = uuid.uuid4().hex
    t = probe_sql.qualified()
    insert = (f"INSERT INTO {t} (owner, is_public, payload) VALUES (CAST(:o AS uuid), CAST(:pub AS boolean), "
              "CAST(:p AS jsonb)) RETURNING id")
    try:
        for attempt in (1, 2):
            facts = _await_capture(target, state, list(clients.values()), deadline, waited)
            if not facts.has_slot:
                return _capture_failure(cid, facts, waited, budget, "The RLS test",
                                        {**evidence, "transcripts": socks.transcripts()}, metrics)
            ids: dict[str, Any] = {}
            t0 = 0.0
            for row, public in (("private", False), ("public", True)):
                t0, ids[row] = _db_write(target, insert, {"o": owner, "pub": public,
                                                          "p": json.dumps({"rtbook_run": run, "row": row})})
            seen: dict[str, dict[str, bool]] = {"private": {}, "public": {}}
            # Everyone must receive the public row. Realtime delivers a subscriber's changes in commit order, so
            # once the public row is there, the private row (committed first) has arrived if it ever will.
            for role, (client, _topic_name) in clients.items():
                try:
                    msg = client.wait_for(_change("INSERT", table, ids["public"]), target.timeout,
                                          f"the public row as {role}")
                    seen["public"][role] = True
                    metrics[f"{role}_ms"] = _ms_since(client, msg, t0)
                except PhoenixTimeout:
                    seen["public"][role] = False
            time.sleep(min(0.3, target.timeout))  # a margin for a private row arriving out of order
            for role, (client, _topic_name) in clients.items():
                seen["private"][role] = bool(client.collect(_change("INSERT", table, ids["private"]), 0))
            if seen["public"]["service_role"]:
                break
            if attempt == 1 and _retry_after_recheck(facts, waited, deadline):
                waited.reasons.append("no change reached service_role while Realtime may have been re-creating "
                                      "subscriptions; tried again")
                continue
            return _capture_failure(
                cid, cdc_facts(target, state), waited, budget,
                "Not even service_role received the probe's change, so RLS cannot be judged",
                {**evidence, "seen": seen, "transcripts": socks.transcripts()}, metrics)
    finally:
        _cleanup_probe_rows(target, run)
    metrics["waited_for_realtime_s"] = round(waited.seconds, 1)
    evidence["cdc"] = facts.to_dict()
    if waited.reasons:
        evidence["waited"] = waited.describe(budget).strip()
    return seen


# ------------------------------------------------------------------ realtime.bad_token


@dataclass(frozen=True)
class _BadCase:
    name: str
    token: str
    causes: tuple[str, ...]


@register("realtime.bad_token", "Invalid-signature and expired tokens are refused with the documented errors",
          needs=("realtime",), using=_anon,
          steps=8, grace=refusal_grace(connects=5, joins=2))
def check_bad_token(target: Target, cid: str, anon: Secret) -> CheckResult:
    """Join with a token signed by another secret and with an expired one; both must be refused."""
    secret = _jwt_secret_or_skip(target, cid)
    if isinstance(secret, CheckResult):
        return secret
    cases = (
        _BadCase("invalid_signature",
                 mint_jwt("rtbook-wrong-secret-" + uuid.uuid4().hex, "authenticated", sub=str(uuid.uuid4())),
                 ("jwt_signature",)),
        _BadCase("expired", mint_jwt(secret, "authenticated", expires_in=-600, sub=str(uuid.uuid4())),
                 ("token_expired",)),
    )
    for case in cases:
        target.redactor.add(case.token)
    metrics: dict[str, float] = {}
    outcomes: dict[str, Any] = {}
    problems: list[str] = []
    accepted: list[str] = []
    with _sockets(target) as socks:
        for case in cases:
            try:
                client = socks.open(anon)
                # The client waits the timeout plus Realtime's hold on join refusals (socks.waits).
                reply = client.join(_topic("badtoken"), channel_config(), access_token=case.token,
                                    timeout=target.timeout)
            except PhoenixError as exc:
                return _phoenix_failure(cid, exc, f"The {case.name} token test failed", socks, metrics)
            metrics[f"{case.name}_reply_ms"] = reply.latency_ms
            found = diagnose(reason=reply.reason)
            outcomes[case.name] = {"status": reply.status, "reason": reply.reason,
                                   "cause": found.id if found else None}
            if reply.ok:
                accepted.append(case.name)
            elif found is None or found.id not in case.causes:
                problems.append(f"{case.name}: refused with {reply.reason or reply.response!r}, "
                                f"expected {' or '.join(case.causes)}")
        # Directly, the socket's own apikey is verified at the handshake (>= 2.116: 401 + reason; v2.78:
        # 403 without a body). A socket without any apikey must be refused too.
        if target.realtime_url:
            ep = SocketEndpoint(f"{target.realtime_url}/socket", realtime_host(target), "direct")
            handshakes: list[tuple[str, str | None, tuple[str, ...]]] = [
                (c.name, c.token, (*c.causes, "connect_refused_legacy")) for c in cases]
            handshakes.append(("no_apikey", None, ("missing_api_key", "missing_api_key_legacy")))
            for name, token, ok_ids in handshakes:
                try:
                    client = open_socket(target, token, endpoint=ep)
                    client.close()
                    accepted.append(f"{name} (handshake)")
                except PhoenixError as exc:
                    status = getattr(exc, "status", None)
                    body = getattr(exc, "body", "")
                    found = (diagnose(status=status, body=body, apikey_sent=token is not None)
                             if status is not None else None)
                    outcomes[f"{name}_handshake"] = {"status": status, "body": body[:200],
                                                     "cause": found.id if found else None,
                                                     "ms": round(getattr(exc, "elapsed_ms", 0.0))}
                    if status is None:
                        problems.append(f"{name} handshake: {exc}")
                    elif found is None or found.id not in ok_ids:
                        problems.append(f"{name} handshake: HTTP {status} {body[:80]!r}, "
                                        f"expected {' or '.join(ok_ids)}")
        evidence = {"outcomes": outcomes, "transcripts": socks.transcripts(), "waits": socks.waits.evidence()}
    if accepted:
        return CheckResult(
            cid,
            Status.FAIL,
            summary=f"Realtime accepted bad tokens: {', '.join(accepted)}.",
            detail="A token signed with another secret or already expired must be refused; Realtime accepted it, "
            "so channel authorization (and RLS claims) can be forged.",
            remedy="Check that the tenant row's jwt_secret is set (rtbook tenant plan) and that JWT_CLAIM_VALIDATORS "
            "is not disabling checks; upgrade Realtime if it is very old.",
            evidence=evidence,
            metrics=metrics,
            see_also=("tenant.jwt_secret",),
        )
    if problems:
        return CheckResult(
            cid,
            Status.WARN,
            summary="Bad tokens were refused, but not with the documented errors: " + "; ".join(problems) + ".",
            detail="The refusal reasons come from Realtime's error catalogue (realtime-facts §1.3, §5.4); a "
            "different reason means another check failed first (e.g. the tenant or its database). "
            + socks.waits.describe(),
            remedy="Read the outcomes in the evidence; fix the failure they name first.",
            evidence=evidence,
            metrics=metrics,
        )
    return CheckResult(
        cid,
        Status.PASS,
        summary="Invalid-signature and expired tokens were refused with "
        + ", ".join(f"{k}: {v.get('reason') or v.get('status')}" for k, v in outcomes.items()) + ".",
        detail=socks.waits.describe(),
        evidence=evidence,
        metrics=metrics,
    )


# ------------------------------------------------------------------ realtime.cluster


@register("realtime.cluster", "Clients spread by the load balancer see each other's broadcast and presence",
          needs=("realtime",), using=_anon)
def check_cluster(target: Target, cid: str, anon: Secret) -> CheckResult:
    """Several sockets through the public URL join one topic; each must see every other (rtbook.checks._cluster)."""
    from rtbook.checks import _cluster

    return _cluster.run(target, cid, anon)
