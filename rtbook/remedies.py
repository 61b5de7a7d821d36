"""Realtime's, Kong's and PostgreSQL's error texts mapped to a cause and a remedy.

A live check that fails passes what it saw (an HTTP status and body, a ``phx_join`` error
``reason``, a ``system`` message or a database error) to :func:`diagnose` and gets back a
:class:`Cause`: what is wrong, why, how to fix it, and which static checks would have caught
it before anything ran. Texts come from realtime-facts.md §1.3 (handshake), §5.4 (join
reasons), §5.5 (``system`` messages), §4.2–4.4 (database) and §8.3 (Kong).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["CAUSES", "Cause", "cause", "diagnose"]


@dataclass(frozen=True)
class Cause:
    """A known reason for a live failure.

    Attributes:
        id: stable id, e.g. ``tenant_not_found``; results carry it in ``CheckResult.cause``.
        title: a few words.
        explanation: what the symptom means for Realtime.
        remedy: what to change (file, key, value).
        static_checks: ids of the checks that detect the cause from files or the database.
    """

    id: str
    title: str
    explanation: str
    remedy: str
    static_checks: tuple[str, ...] = ()


_TENANT_STATIC = (
    "compose.realtime.tenant_consistency",
    "kong.realtime_ws",
    "kong.realtime_preserve_host",
    "envoy.realtime_ws",
    "envoy.realtime_host_rewrite",
    "tenant.row",
)
_JWT_STATIC = ("tenant.jwt_secret", "compose.realtime.jwt_secret", "env.api_keys")

_ALL: tuple[Cause, ...] = (
    # ------------------------------------------------------------ Realtime: tenant
    Cause(
        "tenant_not_found",
        "Realtime has no tenant for the request's Host",
        "Realtime takes the tenant id from the first label of the request's Host header (through Kong: "
        "the upstream host, e.g. realtime-dev.supabase-realtime -> realtime-dev) and found no row with "
        "that external_id in _realtime.tenants.",
        "Make the Host's first label equal the seeded tenant: keep the Kong upstream host "
        "realtime-dev.supabase-realtime (container_name/alias of the realtime service), or set "
        "SELF_HOST_TENANT_NAME in the realtime service to the label your proxy sends, and restart "
        "realtime with SEED_SELF_HOST=true so the row exists (or run 'rtbook tenant apply --yes').",
        _TENANT_STATIC,
    ),
    Cause(
        "tenant_suspended",
        "Realtime is disabled for this tenant",
        "The tenant row has suspend=true; every connection is refused.",
        "UPDATE _realtime.tenants SET suspend = false WHERE external_id = '<tenant>'; then "
        "POST /api/tenants/<tenant>/reload or wait 30 s for the tenant cache.",
        ("tenant.limits",),
    ),
    Cause(
        "private_only",
        "The tenant only allows private channels",
        "The tenant row has private_only=true, so public channel joins are refused.",
        "Join with config.private=true and RLS policies on realtime.messages, or set private_only=false "
        "on the tenant row.",
        ("tenant.limits",),
    ),
    # ------------------------------------------------------------ Realtime: tokens
    Cause(
        "missing_api_key",
        "The apikey did not reach Realtime",
        "Realtime reads the socket token from the x-api-key header or the apikey query parameter and "
        "got neither; a gateway that strips credentials (key-auth hide_credentials: true) causes this.",
        "In kong.yml set hide_credentials: false on the key-auth plugin of the realtime-v1-ws service "
        "(or, for Envoy, mirror apikey to x-api-key), and send apikey=<ANON_KEY> from the client.",
        ("kong.realtime_auth", "envoy.realtime_auth"),
    ),
    Cause(
        "token_expired",
        "The JWT has expired",
        "Realtime requires exp in the future for the socket token and every channel token.",
        "Mint new ANON_KEY/SERVICE_ROLE_KEY (or user tokens) with a later exp, signed with JWT_SECRET, "
        "and put them in .env; the demo keys of .env.example expire on 2027-01-09.",
        ("env.api_keys",),
    ),
    Cause(
        "missing_claims",
        "The JWT lacks role or a valid exp",
        "Realtime requires both the role and the exp claims, and exp must be a number (a non-numeric exp "
        "is refused with 'Token expiration time is invalid').",
        "Mint the token with a role (anon, authenticated, service_role) and a numeric exp claim (seconds since "
        "the epoch).",
        ("env.api_keys",),
    ),
    Cause(
        "malformed_jwt",
        "The token is not a JWT",
        "The apikey or access_token could not be parsed as a JWT (truncated, quoted, or an opaque "
        "sb_ key that the gateway did not translate).",
        "Use the full ANON_KEY JWT from .env (three base64url parts); with opaque sb_ keys make sure the "
        "gateway maps them to JWTs before Realtime.",
        ("env.api_keys", "kong.realtime_auth"),
    ),
    Cause(
        "jwt_signature",
        "The JWT is not signed with the tenant's secret",
        "Realtime verifies tokens with the jwt_secret stored (encrypted) in the tenant row, which the "
        "seed copies from API_JWT_SECRET. The token was signed with another secret: ANON_KEY made with a "
        "different JWT_SECRET, or a tenant row seeded with an old secret.",
        "Regenerate ANON_KEY/SERVICE_ROLE_KEY from the current JWT_SECRET, and make the tenant's stored "
        "secret equal API_JWT_SECRET (restart realtime with SEED_SELF_HOST=true, or 'rtbook tenant apply --yes').",
        _JWT_STATIC,
    ),
    Cause(
        "jwt_signer",
        "Realtime cannot build a verifier for the token",
        "No usable secret or JWKS key matches the token's algorithm/kid (e.g. an asymmetric key with no "
        "API_JWT_JWKS, or an empty tenant secret).",
        "Set API_JWT_SECRET (HS256) or API_JWT_JWKS for asymmetric keys on the realtime service and reseed the tenant.",
        (*_JWT_STATIC, "compose.realtime.jwt_secret"),
    ),
    Cause(
        "connect_refused_legacy",
        "Realtime refused the WebSocket (403, no body)",
        "Realtime images before 2.116 answer every socket refusal with 403 and an empty body: unknown "
        "tenant, bad or expired apikey, missing apikey and rate limits look the same.",
        "Run the static checks named here; the most common causes are the tenant id (Host) and the JWT "
        "secret. Realtime's log names the reason (TenantNotFound, JwtSignatureError...).",
        (*_TENANT_STATIC, *_JWT_STATIC),
    ),
    Cause(
        "realtime_connect_error",
        "Realtime failed while accepting the connection",
        "Realtime answered 500 'Error connecting to Realtime': an internal error, often its own metadata "
        "database being unreachable.",
        "Read the realtime container's log around the failure; check DB_HOST/DB_PORT/DB_USER/DB_PASSWORD.",
        ("compose.realtime.db_connection", "docker.realtime.logs"),
    ),
    # ------------------------------------------------------------ Realtime: limits
    Cause(
        "too_many_connections",
        "The tenant's max_concurrent_users is reached",
        "Realtime refuses new users beyond max_concurrent_users (default 200).",
        "Raise max_concurrent_users on the tenant row (or TENANT_MAX_CONCURRENT_USERS before seeding).",
        ("tenant.limits",),
    ),
    Cause(
        "too_many_joins",
        "The tenant's max_joins_per_second is reached",
        "Join rate is averaged over ~60 s; bursts of reconnects trip it.",
        "Raise max_joins_per_second on the tenant row, or reconnect with backoff.",
        ("tenant.limits",),
    ),
    Cause(
        "too_many_channels",
        "The client's max_channels_per_client is reached",
        "One socket joined more channels than the tenant allows.",
        "Raise max_channels_per_client on the tenant row, or leave unused channels.",
        ("tenant.limits",),
    ),
    Cause(
        "rate_limited_messages",
        "A message or presence rate limit closed the channel",
        "Realtime closes channels over max_events_per_second, max_presence_events_per_second or the "
        "per-client presence window.",
        "Raise the limit on the tenant row or send fewer messages.",
        ("tenant.limits",),
    ),
    Cause(
        "payload_too_large",
        "The payload exceeds the tenant's size limit",
        "max_payload_size_in_kb (default 3000) was exceeded.",
        "Send smaller payloads or raise max_payload_size_in_kb on the tenant row.",
        ("tenant.limits",),
    ),
    # ------------------------------------------------------------ Realtime: database
    Cause(
        "tenant_db_unreachable",
        "Realtime cannot connect to the tenant database",
        "Every channel join needs the tenant DB connection (even broadcast-only). The postgres_cdc_rls "
        "extension row's db_host/db_port/db_user/db_password (encrypted with DB_ENC_KEY) are wrong, "
        "or the database refuses or is full.",
        "Fix the tenant's extension settings to match DB_HOST/DB_PORT/DB_USER/DB_PASSWORD/DB_NAME "
        "('rtbook tenant plan'), and check max_connections.",
        ("tenant.db_settings", "tenant.extension", "db.connect", "compose.realtime.db_connection"),
    ),
    Cause(
        "not_in_publication",
        "The table is not in the supabase_realtime publication",
        "Realtime stores a postgres_changes subscription only for tables in the publication; otherwise "
        "the channel gets a system error and no changes.",
        "ALTER PUBLICATION supabase_realtime ADD TABLE <schema>.<table>;",
        ("db.publication",),
    ),
    Cause(
        "no_events",
        "Subscribed, but no change arrived",
        "Realtime confirmed the subscription but delivered nothing: logical decoding (wal_level, "
        "wal2json, a free replication slot) or the CDC poller is not working.",
        "Check wal_level=logical, the wal2json plugin and free replication slots; read Realtime's log "
        "for PoolingReplicationPreparationError / ReplicationSlotBeingUsed.",
        ("compose.db.wal_level", "db.wal_level", "db.wal2json", "db.replication_capacity", "db.realtime_slots",
         "db.publication"),
    ),
    Cause(
        "wal_level",
        "wal_level is not logical",
        "Logical decoding requires wal_level >= logical; Realtime cannot create its wal2json slot.",
        "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL (the supabase/postgres image "
        "defaults to logical).",
        ("compose.db.wal_level", "db.wal_level"),
    ),
    Cause(
        "wal2json_missing",
        "The wal2json output plugin is not installed",
        "Realtime decodes WAL with wal2json; vanilla PostgreSQL images do not ship it.",
        "Use the supabase/postgres image or install wal2json (e.g. postgresql-15-wal2json).",
        ("db.wal2json",),
    ),
    Cause(
        "replication_slot_in_use",
        "Realtime's replication slot is held by another session",
        "Another backend is attached to the slot (a second Realtime node, a stale session).",
        "Find it with SELECT active_pid FROM pg_replication_slots WHERE slot_name LIKE 'supabase_realtime%' "
        "and terminate it, or run one Realtime per SLOT_NAME_SUFFIX.",
        ("db.realtime_slots",),
    ),
    Cause(
        "replication_capacity",
        "No free replication slot or WAL sender",
        "max_replication_slots / max_wal_senders are used up; Realtime needs up to 2 per tenant.",
        "Raise max_replication_slots and max_wal_senders (restart) or drop unused slots.",
        ("db.replication_capacity",),
    ),
    Cause(
        "realtime_schema_missing",
        "Realtime's metadata tables do not exist",
        "_realtime.tenants is missing: Realtime's migrations did not run, the _realtime schema is absent, "
        "or DB_AFTER_CONNECT_QUERY does not set search_path to _realtime.",
        "Create the _realtime schema (volumes/db/realtime.sql), set DB_AFTER_CONNECT_QUERY="
        "'SET search_path TO _realtime' and restart realtime so it migrates and seeds.",
        ("tenant.schema", "compose.realtime.search_path"),
    ),
    Cause(
        "realtime_schema_permission",
        "The database user cannot use the realtime schema",
        "Realtime's tenant migrations need a superuser-like user (supabase_admin).",
        "Set DB_USER=supabase_admin for the realtime service.",
        ("compose.realtime.db_connection",),
    ),
    Cause(
        "no_primary_key",
        "The table has no primary key",
        "Realtime sends 'Error 400: Bad Request, no primary key' instead of the row.",
        "ALTER TABLE <table> ADD PRIMARY KEY (<column>);",
        ("db.primary_key",),
    ),
    Cause(
        "select_denied",
        "The role cannot SELECT the table",
        "Realtime sends 'Error 401: Unauthorized' when the subscriber's role lacks SELECT on the columns.",
        "GRANT SELECT ON <table> TO anon, authenticated;",
        ("db.rls",),
    ),
    Cause(
        "rls_denies",
        "RLS hides the change from a role that should see it",
        "With RLS on, Realtime delivers a change only to subscribers whose role's SELECT policy returns the row.",
        "Add a SELECT policy for the role, e.g. "
        "CREATE POLICY ... FOR SELECT TO authenticated USING (owner = auth.uid());",
        ("db.rls",),
    ),
    Cause(
        "rls_leaks",
        "A role received a change its policies should hide",
        "RLS is off on the table, or a policy is broader than intended.",
        "ALTER TABLE <table> ENABLE ROW LEVEL SECURITY; and review its SELECT policies.",
        ("db.rls",),
    ),
    Cause(
        "private_channel_denied",
        "RLS on realtime.messages denies the private channel",
        "Private channels need a SELECT policy on realtime.messages for the role and topic.",
        "Add an RLS policy on realtime.messages for extension 'broadcast'/'presence', or join public channels.",
        (),
    ),
    Cause(
        "topic_invalid",
        "The channel topic is not accepted",
        "Realtime only serves topics 'realtime:<name>' with a non-empty name.",
        "Join 'realtime:<name>'.",
        (),
    ),
    Cause(
        "realtime_restarting",
        "Realtime is restarting or initializing the tenant",
        "The tenant connection is being (re)established; joins fail for a few seconds.",
        "Retry after a few seconds; if it persists, check the tenant database settings.",
        ("tenant.db_settings",),
    ),
    # ------------------------------------------------------------ admin / health API
    Cause(
        "admin_jwt_mismatch",
        "The admin API refused the token",
        "/api/tenants/... accepts only a Bearer JWT signed with API_JWT_SECRET (or API_JWT_SECRET_NEXT) "
        "and answers 403 with an empty body otherwise.",
        "Sign the health-check token with the realtime service's API_JWT_SECRET (= JWT_SECRET in compose); "
        "a healthcheck using ANON_KEY works only when ANON_KEY is signed with that secret.",
        ("compose.realtime.jwt_secret", "compose.realtime.healthcheck", "env.api_keys"),
    ),
    Cause(
        "tenant_missing_admin",
        "The admin API has no such tenant",
        "GET /api/tenants/<id>/health answered 404: no row with that external_id (the seed did not run or "
        "SELF_HOST_TENANT_NAME differs).",
        "Run realtime with SEED_SELF_HOST=true (quoted \"true\") and check SELF_HOST_TENANT_NAME, or "
        "'rtbook tenant apply --yes'.",
        ("tenant.row", "compose.realtime.seed_self_host", "compose.realtime.tenant_consistency"),
    ),
    # ------------------------------------------------------------ Kong
    Cause(
        "kong_no_api_key",
        "Kong found no apikey",
        "Kong's key-auth rejected the request before Realtime: no apikey header or query parameter.",
        "Send apikey=<ANON_KEY> (query) or an apikey header; realtime-js and the Python client do this.",
        ("kong.realtime_auth",),
    ),
    Cause(
        "kong_invalid_key",
        "Kong does not know this apikey",
        "The apikey matches no consumer credential in kong.yml (the consumers hold $SUPABASE_ANON_KEY "
        "and $SUPABASE_SERVICE_KEY from the Kong service's environment).",
        "Use the ANON_KEY from .env, and make the kong service pass SUPABASE_ANON_KEY=${ANON_KEY}; "
        "restart kong after changing .env.",
        ("kong.realtime_auth", "kong.placeholders"),
    ),
    Cause(
        "kong_acl",
        "Kong's ACL refused the consumer",
        "The consumer's group is not allowed on the Realtime route (allow: admin, anon).",
        "Add the consumer's group to the acl plugin's allow list on the realtime services in kong.yml.",
        ("kong.realtime_auth",),
    ),
    Cause(
        "kong_forbidden",
        "Kong blocks this path",
        "A request-termination plugin answered 403 'Access is forbidden.' (expected for /realtime/v1/api/tenants).",
        "Nothing to do for the tenants admin API; for other paths remove the request-termination route.",
        ("kong.tenants_api_blocked",),
    ),
    Cause(
        "kong_no_route",
        "Kong has no route for the Realtime path",
        "Kong answered 404 'no Route matched with those values' (or a catch-all route such as the "
        "dashboard's basic-auth answered 401): kong.yml lacks the realtime-v1-ws (/realtime/v1/) or "
        "realtime-v1-rest (/realtime/v1/api) route.",
        "Restore the realtime-v1-ws and realtime-v1-rest services of the official kong.yml and restart kong.",
        ("kong.realtime_ws", "kong.realtime_rest"),
    ),
    Cause(
        "kong_upstream_dns",
        "Kong cannot resolve the Realtime host",
        "Kong's upstream host (realtime-dev.supabase-realtime) does not resolve on Kong's network.",
        "Keep container_name: realtime-dev.supabase-realtime (or a network alias) on the realtime service, on "
        "the same network as kong.",
        ("compose.realtime.network", "docker.gateway.resolves_realtime", "compose.realtime.tenant_consistency"),
    ),
    Cause(
        "kong_upstream_unavailable",
        "Kong cannot reach Realtime",
        "Kong answered 502/503/504: Realtime is down, restarting, or not listening on port 4000.",
        "Start realtime and wait for it to be healthy; check its log for a boot crash.",
        ("docker.realtime.running", "docker.realtime.health", "docker.realtime.logs"),
    ),
    Cause(
        "gateway_no_key_auth",
        "The gateway lets requests without an apikey through",
        "Kong's key-auth plugin is missing from the Realtime routes (or not enabled), so anyone reaches Realtime.",
        "In kong.yml add key-auth (hide_credentials: false) and acl (allow: admin, anon) to the realtime-v1-rest "
        "and realtime-v1-ws services, and list key-auth and acl in KONG_PLUGINS.",
        ("kong.realtime_auth", "kong.plugins_enabled", "envoy.realtime_auth"),
    ),
    Cause(
        "tenants_api_exposed",
        "Realtime's tenant admin API is reachable through the gateway",
        "/realtime/v1/api/tenants reaches Realtime; only the API_JWT_SECRET check protects tenant rows and settings.",
        "Add the official block to kong.yml: service realtime-v1-rest-tenants, route /realtime/v1/api/tenants, "
        "plugin request-termination (status_code: 403, message: 'Access is forbidden.'); list "
        "request-termination in KONG_PLUGINS.",
        ("kong.tenants_api_blocked", "envoy.tenants_api_blocked"),
    ),
    Cause(
        "cors_missing",
        "The gateway does not answer CORS preflights for Realtime",
        "Browsers send a preflight before requests with an apikey header; without Access-Control-Allow-* "
        "answers they block realtime-js's REST calls.",
        "Add '- name: cors' to the realtime-v1-rest and realtime-v1-ws services in kong.yml and keep 'cors' in "
        "KONG_PLUGINS.",
        ("kong.realtime_rest", "kong.plugins_enabled"),
    ),
    Cause(
        "ws_not_upgraded",
        "The gateway answered the WebSocket upgrade with plain HTTP",
        "The upgrade reached something that does not proxy WebSockets (a reverse proxy dropping the "
        "Upgrade/Connection headers, or a route that is not a ws service).",
        "Proxy the Upgrade and Connection headers to Kong; Kong upgrades WebSockets on realtime-v1-ws's http "
        "service by itself (`protocol: ws` is ignored by Kong OSS, and `url: ws://` stops it).",
        ("kong.realtime_ws", "envoy.realtime_ws"),
    ),
    # ------------------------------------------------------------ transport
    Cause(
        "unreachable",
        "Nothing answers at the address",
        "The TCP connection was refused or the name does not resolve.",
        "Check the URL and port (Kong listens on KONG_HTTP_PORT, 8000 by default) and that the service runs.",
        ("docker.realtime.running",),
    ),
    Cause(
        "timeout",
        "The endpoint did not answer in time",
        "A connection was accepted (or hung) but no answer came within the timeout.",
        "Check firewalls and proxies between rtbook and the gateway; raise --timeout only if the stack is just slow.",
        (),
    ),
)

CAUSES: dict[str, Cause] = {c.id: c for c in _ALL}


def cause(cause_id: str) -> Cause:
    """Return the cause with ``cause_id``.

    Raises:
        KeyError: unknown id (a programming error in a check).
    """
    return CAUSES[cause_id]


@dataclass(frozen=True)
class _Rule:
    cause: str
    pattern: re.Pattern[str]
    statuses: frozenset[int] | None = None


def _r(cause_id: str, pattern: str, statuses: Iterable[int] | None = None) -> _Rule:
    return _Rule(cause_id, re.compile(pattern, re.IGNORECASE), None if statuses is None else frozenset(statuses))


# First match wins; specific texts before generic ones.
_RULES: tuple[_Rule, ...] = (
    # Kong (§8.3)
    _r("kong_no_api_key", r"no api key found in request"),
    _r("kong_invalid_key", r"invalid authentication credentials|invalid api key"),
    _r("kong_acl", r"you cannot consume this service"),
    _r("kong_forbidden", r"access is forbidden"),
    _r("kong_no_route", r"no route matched with those values"),
    _r("kong_upstream_dns", r"name resolution failed|dns server error|could not resolve host"),
    _r(
        "kong_upstream_unavailable",
        r"failure to get a peer|upstream server|connect\(\) failed|upstream",
        (502, 503, 504),
    ),
    # Realtime tenant (§1.3, §5.4)
    _r("tenant_not_found", r"tenant ?not ?found|tenant with the given id does not exist|tenant `[^`]*` not found"),
    _r(
        "tenant_suspended",
        r"realtime (was )?disabled for (this )?tenant|tenant is suspended"
        r"|realtimedisabledfortenant",
    ),
    _r("private_only", r"only allows private channels|privateonly"),
    # Tokens (§1.3, §5.4, §5.5)
    _r("missing_api_key", r"api key is missing|missing_api_key"),
    _r("token_expired", r"token has expired|expired_token"),
    _r("missing_claims", r"fields `?role`? and `?exp`? are required|missing_claims|expiration time is invalid"),
    _r("jwt_signature", r"failed to validate jwt signature|jwtsignatureerror|signature_error|jwsinvalidsignature"),
    _r("jwt_signer", r"failed to generate jwt signer|jwtsignererror|error_generating_signer"),
    _r("malformed_jwt", r"not a valid jwt|malformedjwt|token_malformed|invalid_token"),
    # Limits (§5.4, §5.5, §9)
    _r("too_many_connections", r"too many connected users|connectionratelimitreached"),
    _r("too_many_joins", r"too many joins per second|clientjoinratelimitreached"),
    _r("too_many_channels", r"too many channels|channelratelimitreached"),
    _r(
        "payload_too_large",
        r"payload size exceeds|payload_size_exceeded|track message size exceeded"
        r"|413: payload too large",
    ),
    _r(
        "rate_limited_messages",
        r"too many (presence )?messages per second|presence rate limit exceeded"
        r"|too many requests|exceeded your rate limit",
    ),
    # Private channels / topics
    _r(
        "private_channel_denied",
        r"do not have permissions to read from this channel"
        r"|no longer have permission to read",
    ),
    _r("topic_invalid", r"you must provide a topic name|topicnamerequired|unmatched topic"),
    # Publication and CDC (§4.2–4.4)
    _r(
        "not_in_publication",
        r"unable to subscribe to changes with given parameters"
        r"|subscription insert failed with 0 rows",
    ),
    _r("no_primary_key", r"no primary key"),
    _r("select_denied", r"error 401: unauthorized"),
    # Database (§4.3, §10)
    _r("wal_level", r"wal_level >= logical|logical decoding requires"),
    _r("wal2json_missing", r'could not access file "?wal2json'),
    _r("replication_slot_in_use", r"replication slot .* is active|replicationslotbeingused|object_in_use"),
    _r(
        "replication_capacity",
        r"all replication slots are in use"
        r"|number of requested standby connections"
        r"|replicationmaxwalsendersreached",
    ),
    _r("realtime_schema_missing", r'relation "(_realtime\.)?(tenants|extensions)" does not exist'),
    _r("realtime_schema_permission", r"permission denied for schema (realtime|_realtime)"),
    # Tenant DB connection (§5.4, §5.5)
    _r(
        "realtime_restarting",
        r"realtime is restarting|initializingprojectconnection"
        r"|initializing the project connection"
        r"|connecting to the project database",
    ),
    _r(
        "tenant_db_unreachable",
        r"unable to connect to the project database|unabletoconnecttoproject"
        r"|databaselackofconnections|can't accept more connections"
        r"|increaseconnectionpool|databaseconnectionratelimitreached",
    ),
    _r("realtime_connect_error", r"error connecting to realtime", (500,)),
    # Health endpoint: 404 {"message":"not found"}
    _r("tenant_missing_admin", r'^\s*\{\s*"message"\s*:\s*"not found"\s*\}\s*$', (404,)),
)


def diagnose(
    status: int | None = None,
    body: str | None = None,
    reason: str | None = None,
    message: str | None = None,
) -> Cause | None:
    """Return the known cause of a failure, or None.

    Args:
        status: the HTTP status (handshake or REST), if any.
        body: the HTTP response body, if any.
        reason: a ``phx_join``/push error ``reason`` (``"Code: message"``).
        message: any other text: a ``system`` message, a database error, a log line.
    """
    texts = [t for t in (body, reason, message) if t]
    for rule in _RULES:
        if rule.statuses is not None and status not in rule.statuses:
            continue
        if any(rule.pattern.search(t) for t in texts):
            return CAUSES[rule.cause]
    # Status-only fallbacks, for bodies no rule recognised.
    if status == 403 and not (body or "").strip():
        return CAUSES["connect_refused_legacy"]
    if status in (502, 503, 504):
        return CAUSES["kong_upstream_unavailable"]
    if status == 429:
        return CAUSES["rate_limited_messages"]
    return None
