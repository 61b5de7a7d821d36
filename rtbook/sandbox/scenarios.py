"""Break scenarios: each reproduces one recurring self-hosted failure (realtime-facts §10).

A scenario edits the stack directory (what the static checks read), the database (what the
live checks see), or both, so the runbook can find it from either side. The manager applies
stack edits before starting the gateway and DB edits after the bootstrap, before the server.

Sandbox default chosen here: the demo table ``public.todos`` gets ``REPLICA IDENTITY FULL`` (so
UPDATE/DELETE carry the whole old row, what most apps set up for Realtime); the
``replica-identity-default`` scenario leaves PostgreSQL's default (primary key only).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rtbook.crypto import encrypt
from rtbook.exceptions import ConfigError

__all__ = [
    "SCENARIOS",
    "DbContext",
    "Scenario",
    "apply_db",
    "apply_stack",
    "healthy_db_defaults",
    "resolve",
    "wal_level_for",
]

OTHER_HOST = "supabase-realtime"


@dataclass(frozen=True)
class DbContext:
    """What a DB edit needs: the tenant and the key its secrets are encrypted with."""

    tenant: str
    db_enc_key: str


StackEdit = Callable[[Path], None]
DbEdit = Callable[[Any, DbContext], None]


@dataclass(frozen=True)
class Scenario:
    """One break: its name, the symptom a user sees, the real-world cause and the edits."""

    name: str
    symptom: str
    cause: str
    edit_stack: StackEdit | None = None
    edit_db: DbEdit | None = None
    wal_level: str | None = None
    keeps_full_replica_identity: bool = True
    # False: the sandbox does not install the rtbook probe (it would put a table in the publication).
    probe: bool = True
    # Cluster scenarios (``--nodes``/``--lb``, rtbook.sandbox.cluster): the proxy configuration to run
    # (rtbook.sandbox.lb.VARIANTS) and whether the nodes relay broadcast and presence to each other.
    lb_variant: str | None = None
    clustered: bool = True

    @property
    def needs_cluster(self) -> bool:
        """True when the scenario only exists with several nodes or a load balancer."""
        return self.lb_variant is not None or not self.clustered


# ------------------------------------------------------------------ text edits


def _replace(path: Path, old: str, new: str, count: int = 0) -> None:
    text = path.read_text()
    if old not in text:
        raise ConfigError(f"cannot apply the scenario: {old!r} not found in {path}")
    path.write_text(text.replace(old, new) if count == 0 else text.replace(old, new, count))


def _service_block(text: str, name: str) -> tuple[int, int]:
    """Start and end offsets of the ``services:`` item ``- name: NAME`` in a kong.yml."""
    m = re.search(rf"^  - name: {re.escape(name)}[ \t]*\n", text, re.M)
    if not m:
        raise ConfigError(f"cannot apply the scenario: service {name!r} not found in kong.yml")
    nxt = re.compile(r"^  (?:- |#)", re.M).search(text, m.end())
    return m.start(), (nxt.start() if nxt else len(text))


def _kong(stack: Path) -> Path:
    return stack / "volumes" / "api" / "kong.yml"


def _tenant_mismatch_stack(stack: Path) -> None:
    # The container is renamed (k8s/Coolify style) and the gateway follows it, so the name resolves
    # but its first label is no longer the tenant id.
    _replace(_kong(stack), "realtime-dev.supabase-realtime", OTHER_HOST)
    _replace(stack / "docker-compose.yml", "container_name: realtime-dev.supabase-realtime",
             f"container_name: {OTHER_HOST}")


def _seed_off(stack: Path) -> None:
    # A persisting tenant-row problem means the seed no longer repairs it at boot.
    _replace(stack / "docker-compose.yml", 'SEED_SELF_HOST: "true"', 'SEED_SELF_HOST: "false"')


def _wal_replica_stack(stack: Path) -> None:
    _replace(stack / "docker-compose.yml", '"log_min_messages=fatal"',
             '"log_min_messages=fatal",\n        "-c",\n        "wal_level=replica"', count=1)


def _ws_route_missing(stack: Path) -> None:
    path = _kong(stack)
    text = path.read_text()
    start, end = _service_block(text, "realtime-v1-ws")
    path.write_text(text[:start] + text[end:])


def _no_apikey_forwarding(stack: Path) -> None:
    path = _kong(stack)
    text = path.read_text()
    start, end = _service_block(text, "realtime-v1-ws")
    block = text[start:end]
    if "hide_credentials: false" not in block:
        raise ConfigError("cannot apply the scenario: realtime-v1-ws has no 'hide_credentials: false' in kong.yml")
    path.write_text(text[:start] + block.replace("hide_credentials: false", "hide_credentials: true", 1) + text[end:])


# ------------------------------------------------------------------ DB edits


def _delete_tenant(conn: Any, ctx: DbContext) -> None:
    conn.execute("DELETE FROM _realtime.extensions WHERE tenant_external_id = %s", (ctx.tenant,))
    conn.execute("DELETE FROM _realtime.tenants WHERE external_id = %s", (ctx.tenant,))


def _stale_jwt_secret(conn: Any, ctx: DbContext) -> None:
    stale = encrypt(secrets.token_urlsafe(48), ctx.db_enc_key)
    conn.execute("UPDATE _realtime.tenants SET jwt_secret = %s WHERE external_id = %s", (stale, ctx.tenant))


def _drop_from_publication(conn: Any, ctx: DbContext) -> None:
    conn.execute("ALTER PUBLICATION supabase_realtime DROP TABLE public.todos")


def _rls_denies(conn: Any, ctx: DbContext) -> None:
    # Writes stay allowed; only reading own rows (what Realtime's RLS check runs) is gone.
    conn.execute(
        b"DROP POLICY IF EXISTS todos_select_own ON public.todos; "
        b"DROP POLICY IF EXISTS todos_write_own ON public.todos; "
        b"CREATE POLICY todos_insert_own ON public.todos FOR INSERT TO authenticated "
        b"WITH CHECK (owner = auth.uid())"
    )


def healthy_db_defaults(conn: Any, scenarios: Sequence[Scenario]) -> None:
    """The sandbox's own healthy defaults (REPLICA IDENTITY FULL on the demo table) unless a scenario opts out."""
    if all(s.keeps_full_replica_identity for s in scenarios):
        conn.execute("ALTER TABLE public.todos REPLICA IDENTITY FULL")


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "tenant-mismatch",
            "WebSocket handshake through the gateway answers 404 {\"error\":\"Tenant not found\"} "
            "(Realtime logs TenantNotFound: supabase-realtime); direct connections with Host "
            "realtime-dev.* still work",
            "the realtime container was renamed to supabase-realtime and kong.yml's upstream followed it; "
            "the Host first label is no longer the tenant id (§10.1)",
            edit_stack=_tenant_mismatch_stack,
        ),
        Scenario(
            "tenant-missing",
            "every WebSocket handshake answers 404 {\"error\":\"Tenant not found\"}; /api/ping 401 "
            "{\"message\":\"Tenant not found in database\"}; /api/tenants/realtime-dev/health 404",
            "the realtime-dev row is missing from _realtime.tenants and SEED_SELF_HOST is \"false\" (§10.5)",
            edit_stack=_seed_off,
            edit_db=_delete_tenant,
        ),
        Scenario(
            "jwt-mismatch",
            "WebSocket handshake answers 401 {\"error\":\"Failed to validate JWT signature\"} although Kong "
            "accepts the apikey",
            "the tenant's stored jwt_secret is stale: it differs from JWT_SECRET that signed ANON_KEY/"
            "SERVICE_ROLE_KEY, and SEED_SELF_HOST is \"false\" so nothing rewrites it (§10.10)",
            edit_stack=_seed_off,
            edit_db=_stale_jwt_secret,
        ),
        Scenario(
            "wal-level-replica",
            "channels join but postgres_changes never deliver (no logical replication slot can be made: "
            "wal_level is replica); health reports replication_connected false",
            "PostgreSQL runs with wal_level=replica (the db command sets -c wal_level=replica) (§10.7)",
            edit_stack=_wal_replica_stack,
            wal_level="replica",
        ),
        Scenario(
            "not-in-publication",
            "joining with postgres_changes on public.todos gets a system message with status error "
            "\"Unable to subscribe to changes with given parameters...\"; no changes arrive",
            "public.todos is not in the supabase_realtime publication (§10.7)",
            edit_db=_drop_from_publication,
        ),
        Scenario(
            "publication-empty",
            "every postgres_changes join gets the system error \"Unable to subscribe to changes with given "
            "parameters...\"; Realtime v2.107.1 and newer keeps no replication slot (its poller idles)",
            "the supabase_realtime publication holds no table, as the supabase/postgres image creates it, and the "
            "rtbook probe is not installed (§10.7)",
            edit_db=_drop_from_publication,
            probe=False,
        ),
        Scenario(
            "rls-denies",
            "subscribers with an authenticated user token get \"Subscribed to PostgreSQL\" but never receive "
            "changes of their own rows (anon still receives owner IS NULL rows)",
            "no SELECT policy for the authenticated role on public.todos (§10.7)",
            edit_db=_rls_denies,
        ),
        Scenario(
            "replica-identity-default",
            "UPDATE and DELETE events carry old_record with the primary key (id) only",
            "public.todos has REPLICA IDENTITY DEFAULT, the sandbox's healthy default is FULL (§10.8)",
            keeps_full_replica_identity=False,
        ),
        Scenario(
            "ws-route-missing",
            "/realtime/v1/websocket falls through to the dashboard catch-all route: 401 {\"message\":\"Unauthorized\"} "
            "with WWW-Authenticate: Basic; clients never upgrade",
            "kong.yml has no realtime-v1-ws service (§10.2)",
            edit_stack=_ws_route_missing,
        ),
        Scenario(
            "no-apikey-forwarding",
            "Kong accepts the apikey but strips it, and the request-transformer still adds a blank x-api-key, "
            "which Realtime takes as the token: the handshake answers 401 "
            "{\"error\":\"The token provided is not a valid JWT\"}",
            "key-auth on realtime-v1-ws has hide_credentials: true, so Realtime gets no apikey (§8.3)",
            edit_stack=_no_apikey_forwarding,
        ),
        # The scale-out scenarios (rtbook sandbox up --nodes 2 --lb nginx|haproxy|caddy --break ...).
        Scenario(
            "nodes-not-clustered",
            "clients that the load balancer sends to different nodes do not see each other's broadcasts or "
            "presence: they split into one group per node, while clients on the same node still do; every "
            "single-client check passes",
            "the Realtime nodes never joined one cluster (in Realtime: libcluster found no peer - "
            "CLUSTER_STRATEGIES/DNS_NODES, the release cookie, ERL_AFLAGS - or REGION unset, so broadcasts go to "
            "no other node; here: the nodes' relay is off), so "
            "Phoenix.PubSub and presence stay node-local; stickiness does not fix this",
            clustered=False,
        ),
        Scenario(
            "lb-no-upgrade",
            "every WebSocket handshake through the load balancer fails: the gateway and Realtime receive a "
            "plain GET (no Upgrade header) and answer it with an HTTP error instead of 101 Switching Protocols",
            "the load balancer does not forward Upgrade/Connection (nginx without proxy_http_version 1.1 and "
            "proxy_set_header Upgrade/Connection; HAProxy/Caddy rules that delete the headers)",
            lb_variant="no-upgrade",
        ),
        Scenario(
            "lb-short-timeout",
            "sockets are cut by the load balancer after a few seconds: an idle client is disconnected before "
            "its next heartbeat (realtime-js sends one every 25 s) and reconnects in a loop",
            "the proxy's read/idle timeout is 3 s, below the client heartbeat interval (nginx proxy_read_timeout, "
            "HAProxy timeout tunnel/client/server, Caddy's reverse_proxy transport read_timeout)",
            lb_variant="short-timeout",
        ),
        Scenario(
            "lb-no-sticky",
            "nothing breaks for WebSocket clients of clustered nodes: a WebSocket is one TCP connection, kept on "
            "one node for its life whatever the policy; the load balancer sets no affinity cookie, so each new "
            "request and each reconnect may land on another node (long-poll fallback needs stickiness, and "
            "with unclustered nodes a reconnect can move a client into the other group)",
            "the load balancer balances every request round robin with no stickiness (no cookie, no ip_hash); "
            "stickiness never makes unclustered nodes share broadcasts or presence",
            lb_variant="no-sticky",
        ),
    )
}


def resolve(names: Iterable[str]) -> list[Scenario]:
    """The scenarios for ``names`` (duplicates removed, order kept); unknown names raise ConfigError."""
    out: list[Scenario] = []
    for name in names:
        if name not in SCENARIOS:
            raise ConfigError(
                f"unknown break scenario {name!r}; choose from: {', '.join(SCENARIOS)} (see 'rtbook sandbox scenarios')"
            )
        if SCENARIOS[name] not in out:
            out.append(SCENARIOS[name])
    return out


def wal_level_for(scenarios: Sequence[Scenario]) -> str:
    """The cluster's wal_level: ``logical`` unless a scenario asks otherwise."""
    for s in scenarios:
        if s.wal_level:
            return s.wal_level
    return "logical"


def apply_stack(stack_dir: Path, scenarios: Sequence[Scenario]) -> None:
    """Apply each scenario's stack-directory edit (idempotence is not needed: the dir is fresh)."""
    seen: set[StackEdit] = set()
    for s in scenarios:
        if s.edit_stack is not None and s.edit_stack not in seen:
            s.edit_stack(stack_dir)
            seen.add(s.edit_stack)


def apply_db(conn: Any, ctx: DbContext, scenarios: Sequence[Scenario]) -> None:
    """Apply the healthy defaults and each scenario's database edit on an autocommit connection."""
    healthy_db_defaults(conn, scenarios)
    for s in scenarios:
        if s.edit_db is not None:
            s.edit_db(conn, ctx)
