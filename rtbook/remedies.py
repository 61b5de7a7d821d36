"""Realtime's, Kong's and PostgreSQL's error texts mapped to a cause and a remedy.

A live check that fails passes what it saw (an HTTP status and body, a ``phx_join`` error
``reason``, a ``system`` message or a database error) to :func:`diagnose` and gets back a
:class:`Cause`: what is wrong, why, how to fix it, and which static checks would have caught
it before anything ran. Texts come from realtime-facts.md §1.3 (handshake), §5.4 (join
reasons), §5.5 (``system`` messages), §4.2–4.4 (database) and §8.3 (Kong), checked against
the research notes (supabase/realtime v2.129.8 and v2.78.19: ``user_socket.ex``,
``realtime_channel.ex`` and its ``logging.ex``, ``postgres_cdc_rls/subscriptions.ex``).

A remedy names real values where the error text carries them: ``<schema>.<table>`` from a
subscription's parameter list, ``<column>`` and ``<role>`` from the database's exception,
``<topic>`` from an Unauthorized reason. :meth:`Cause.fill` lets a check add what only it knows
(the stack's ``DB_HOST``, the role it joined as); :func:`finish` (which the registry applies to
every result) fills what is left from the target, or with words saying what to put there, so no
reader ever sees a ``<name>`` (rendered markdown and HTML would swallow it as a tag).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

__all__ = ["CAUSES", "PLACEHOLDER", "Cause", "cause", "diagnose", "finish"]

# An unfilled value in a remedy: ``<table>``, ``<ANON_KEY>``. Never shown to a reader (see finish()).
PLACEHOLDER = re.compile(r"<([A-Za-z_][A-Za-z0-9_]*)>")

# What a placeholder nobody could fill becomes: words that say what to put there, or a shell
# reference for a secret (its value never goes into a remedy). Rendered markdown and HTML would
# swallow a bare ``<name>`` as a tag ("http://realtime-dev.:4000"), so none may remain.
_UNFILLED: dict[str, str] = {
    "ANON_KEY": "$ANON_KEY",
    "SERVICE_ROLE_KEY": "$SERVICE_ROLE_KEY",
    "DB_HOST": "the db service's name",
    "DB_PORT": "the db port",
    "tenant": "your tenant id",
    "id": "your tenant id",
    "schema": "public",
    "table": "each table you subscribe to",
    "your_table": "each table you subscribe to",
    "column": "the filtered column",
    "type": "the column's type",
    "role": "the role in the token",
    "topic": "the channel topic",
    "kid": "the token's kid",
    "name": "the slot name",
    "net": "default",
    "token": "$ANON_KEY",
    "healthcheck": "the healthcheck command",
}


def finish(text: str, values: Mapping[str, str | None] | None = None) -> str:
    """``text`` with every ``<name>`` placeholder replaced: by ``values[name]`` when known, else by words.

    Called on every result's remedy before it is shown, so no reader ever sees a placeholder.
    """
    known = {k: str(v) for k, v in (values or {}).items() if v not in (None, "")}

    def sub(m: re.Match[str]) -> str:
        key = m.group(1)
        return known.get(key) or _UNFILLED.get(key) or key.replace("_", " ")

    return PLACEHOLDER.sub(sub, text)


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

    def fill(self, values: Mapping[str, str | None] | None = None, **more: str | None) -> Cause:
        """A copy whose ``<name>`` placeholders (in title, explanation and remedy) carry the given values.

        Empty or None values are ignored, so a placeholder without a known value stays as it is.
        """
        given = {**(values or {}), **more}
        known = {k: str(v) for k, v in given.items() if v not in (None, "")}
        if not known:
            return self

        def sub(text: str) -> str:
            for key, value in known.items():
                text = text.replace(f"<{key}>", value)
            return text

        return dataclasses.replace(self, title=sub(self.title), explanation=sub(self.explanation),
                                   remedy=sub(self.remedy))


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
        "tenant_gone",
        "The tenant disappeared after the socket connected",
        "The handshake found the tenant, but the join did not ('TenantNotFound: Tenant with the given ID does "
        "not exist'): the _realtime.tenants row was deleted or renamed while the socket was open. Newer "
        "Realtime also disconnects the socket.",
        "Restore the tenant row (restart realtime with SEED_SELF_HOST=true, or 'rtbook tenant apply --yes'), "
        "then reconnect; find what deletes it (a second seeding process, a reset script).",
        ("tenant.row", "compose.realtime.seed_self_host"),
    ),
    Cause(
        "join_crashed",
        "The join crashed inside Realtime (v2.78: the tenant vanished)",
        "Phoenix answers {\"reason\":\"join crashed\"} when the channel process raises during join. On Realtime "
        "v2.78 this is what a join gets when its tenant row disappeared after the socket connected (the join "
        "code has no clause for a missing tenant, a WithClauseError); newer images answer 'TenantNotFound: "
        "Tenant with the given ID does not exist' instead. The realtime log shows the crash and its stack.",
        "Check the tenant row exists (tenant.row; restore with SEED_SELF_HOST=true or 'rtbook tenant apply "
        "--yes') and reconnect the socket, whose handshake then names the problem; read docker.realtime.logs "
        "for the crash if the row is there.",
        ("tenant.row", "docker.realtime.logs"),
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
        "The tenant row has private_only=true, so every join without config.private=true is refused with "
        "'PrivateOnly: This project only allows private channels' (the socket itself is accepted). Public "
        "broadcast, presence and postgres_changes channels cannot be used on this tenant.",
        "Either keep it and join with config.private=true (realtime-js: supabase.channel(name, { config: "
        "{ private: true } })) with SELECT/INSERT policies on realtime.messages (see realtime.private), or "
        "allow public channels: UPDATE _realtime.tenants SET private_only = false WHERE external_id = "
        "'<tenant>'; then POST /api/tenants/<tenant>/reload.",
        ("tenant.limits",),
    ),
    # ------------------------------------------------------------ Realtime: tokens
    Cause(
        "missing_api_key",
        "The apikey did not reach Realtime",
        "Realtime reads the socket token from the x-api-key header or the apikey query parameter and "
        "got neither (401 'API key is missing', log 'MissingAPIKey: API key is missing or not a valid "
        "string'); a gateway that strips credentials (key-auth hide_credentials: true) causes this.",
        "In kong.yml set hide_credentials: false on the key-auth plugin of the realtime-v1-ws service "
        "(or, for Envoy, mirror apikey to x-api-key), and send apikey=<ANON_KEY> from the client.",
        ("kong.realtime_auth", "envoy.realtime_auth"),
    ),
    Cause(
        "missing_api_key_legacy",
        "The apikey did not reach Realtime (v2.78: refused 403 and logged as TenantNotFound)",
        "Realtime v2.78 refuses a socket without x-api-key header and apikey parameter with 403 and an empty "
        "body, and logs it as 'TenantNotFound: Tenant not found: <tenant>' even though the tenant exists (its "
        "connect code falls into the not-found branch). A gateway that strips credentials "
        "(key-auth hide_credentials: true) or a client that sends no apikey causes this.",
        "Send apikey=<ANON_KEY> (query) or an x-api-key header, and in kong.yml keep hide_credentials: false on "
        "the key-auth plugin of the realtime-v1-ws service (Envoy: mirror apikey to x-api-key).",
        ("kong.realtime_auth", "envoy.realtime_auth", "tenant.row"),
    ),
    Cause(
        "token_expired",
        "The JWT has expired",
        "Realtime requires exp in the future for the socket token and for every channel token. The channel "
        "token is the join's access_token (or user_token), else the socket's apikey, and it is verified again "
        "at every join, so an expired apikey fails joins ('InvalidJWTToken: Token has expired N seconds ago') "
        "while the socket stays open. Realtime logs this only at warning level and only when the client "
        "connected with log_level=warning or info, so the default log shows nothing.",
        "Mint new ANON_KEY/SERVICE_ROLE_KEY (or user tokens) with a later exp, signed with JWT_SECRET, "
        "and put them in .env (the demo keys of .env.example expire on 2027-01-09); clients refresh user "
        "tokens with supabase.realtime.setAuth(newToken) before they expire.",
        ("env.api_keys",),
    ),
    Cause(
        "missing_claims",
        "The JWT lacks the role or exp claim",
        "Realtime requires both the role and the exp claims in the socket token and every channel token "
        "('Fields `role` and `exp` are required in JWT'); like expiry, this is logged only at warning level "
        "when the client asked for log_level=warning or info.",
        "Mint the token with a role (anon, authenticated, service_role) and an exp claim (seconds since the "
        "epoch), signed with JWT_SECRET.",
        ("env.api_keys",),
    ),
    Cause(
        "token_exp_invalid",
        "The JWT's exp claim is not a valid time",
        "'InvalidJWTToken: Token expiration time is invalid': exp is present but not a number of seconds "
        "(a string, a float in milliseconds, a date).",
        "Mint the token with a numeric exp (integer seconds since the epoch, e.g. now + 3600), not a string or "
        "milliseconds.",
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
        "No usable secret or JWKS key matches the token's algorithm (e.g. an asymmetric key with no "
        "API_JWT_JWKS, or an empty tenant secret).",
        "Set API_JWT_SECRET (HS256) or API_JWT_JWKS for asymmetric keys on the realtime service and reseed the tenant.",
        (*_JWT_STATIC, "compose.realtime.jwt_secret"),
    ),
    Cause(
        "jwt_signer_kid",
        "No JWKS key has the token's key id",
        "The token names key id (kid) <kid> in its header and the tenant's JWKS has no key with that kid "
        "('Failed to generate JWT signer ... for key ID (kid) \"<kid>\"'): tokens from a rotated or another "
        "project's signing key.",
        "Add the public key with kid <kid> to the tenant's JWKS (API_JWT_JWKS on the realtime service, then "
        "reseed), or issue tokens from a key the JWKS holds.",
        (*_JWT_STATIC, "compose.realtime.jwt_secret"),
    ),
    Cause(
        "connect_refused_legacy",
        "Realtime refused the WebSocket (403, no body)",
        "Realtime images before 2.116 answer every socket refusal with 403 and an empty body: unknown "
        "tenant, bad or expired apikey, missing apikey and rate limits look the same (so does an unsupported "
        "vsn on every version).",
        "Run the static checks named here; the most common causes are the tenant id (Host) and the JWT "
        "secret. Realtime's log names the reason (TenantNotFound, MalformedJWT, ErrorConnectingToWebsocket...), "
        "except for expired tokens and missing role/exp, which the default log level hides.",
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
        "Realtime refuses new users beyond max_concurrent_users (default 200): 429 'Too many connected users' "
        "at the handshake, 'ConnectionRateLimitReached' at a join.",
        "Raise max_concurrent_users on the tenant row (or TENANT_MAX_CONCURRENT_USERS before seeding), or close "
        "idle sockets.",
        ("tenant.limits",),
    ),
    Cause(
        "too_many_joins_at_connect",
        "The tenant's joins-per-second limit refused the socket",
        "The handshake checks the tenant's join rate (max_joins_per_second, averaged) before accepting a "
        "socket: 429 'Too many joins per second', log 'JoinsRateLimitReached: Too many joins per second' "
        "(images before 2.116: 403 without a body). Reconnect storms (clients retrying without backoff) "
        "trip it.",
        "Raise max_joins_per_second on the tenant row (or TENANT_MAX_JOINS_PER_SECOND before seeding) and make "
        "clients reconnect with backoff.",
        ("tenant.limits",),
    ),
    Cause(
        "too_many_joins",
        "The tenant's max_joins_per_second is reached",
        "A channel join was refused with 'ClientJoinRateLimitReached: Too many joins per second' and Realtime "
        "disconnected the socket; the rate counter logs one critical line per trip, not one per refusal. "
        "Join rate is averaged over about 60 s, so bursts of rejoins trip it.",
        "Raise max_joins_per_second on the tenant row, or rejoin with backoff (realtime-js rejoinAfterMs).",
        ("tenant.limits",),
    ),
    Cause(
        "too_many_channels",
        "The client's max_channels_per_client is reached",
        "One socket joined more channels than the tenant allows ('ChannelRateLimitReached: Too many channels').",
        "Raise max_channels_per_client on the tenant row, or leave unused channels (removeChannel).",
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
        "Every channel join needs the tenant DB connection (even broadcast-only): Realtime answers "
        "'UnableToConnectToProject: Realtime was unable to connect to the project database' and logs "
        "'UnableToConnectToTenantDatabase: <error>' first. It connects with the postgres_cdc_rls extension "
        "row's db_host/db_port/db_user/db_password (encrypted with DB_ENC_KEY), which the seed copies from "
        "the realtime service's DB_HOST/DB_PORT/DB_USER/DB_PASSWORD; wrong values, a stopped or unreachable "
        "database, or refused logins end here.",
        "Make the tenant's database reachable from the realtime container at DB_HOST=<DB_HOST>, "
        "DB_PORT=<DB_PORT>: the db service runs and is healthy (docker compose ps db), that name resolves on "
        "realtime's network, PostgreSQL listens on that port, and DB_USER/DB_PASSWORD log in. If the extension "
        "row holds other values than these, rewrite it ('rtbook tenant plan', then 'rtbook tenant apply "
        "--yes', or restart realtime with SEED_SELF_HOST=true).",
        ("tenant.db_settings", "tenant.extension", "db.connect", "compose.realtime.db_connection"),
    ),
    Cause(
        "tenant_db_initializing",
        "Realtime is still opening the tenant database connection",
        "'InitializingProjectConnection: Realtime is initializing the project connection' (or '...: "
        "Connecting to the project database'): the join came while Realtime's Connect process was starting. "
        "It lasts seconds; if it persists, Connect keeps failing (tenant database unreachable or slow).",
        "Retry after a few seconds (realtime-js rejoins by itself); if it persists, check the tenant's database "
        "settings and docker.realtime.logs for UnableToConnectToTenantDatabase.",
        ("tenant.db_settings", "docker.realtime.logs"),
    ),
    Cause(
        "tenant_db_full",
        "The tenant database has no free connection for Realtime",
        "'DatabaseLackOfConnections: Database can't accept more connections, Realtime won't connect': "
        "max_connections is used up (superuser_reserved_connections excluded).",
        "Find who holds them: SELECT usename, application_name, count(*) FROM pg_stat_activity GROUP BY 1, 2 "
        "ORDER BY 3 DESC; raise max_connections (restart) or shrink the pools (Supavisor, PostgREST, Realtime's "
        "db_pool on the extension row).",
        ("db.realtime_connections", "tenant.db_settings"),
    ),
    Cause(
        "tenant_db_connect_rate",
        "Realtime throttles its own connection attempts to the tenant database",
        "'DatabaseConnectionRateLimitReached: Too many database connections attempts per second': Realtime "
        "is retrying the tenant connection in a loop, which it only does while connecting keeps failing.",
        "Fix the underlying connection failure (docker.realtime.logs: UnableToConnectToTenantDatabase names it); "
        "the limit clears by itself once a connection holds.",
        ("tenant.db_settings", "docker.realtime.logs"),
    ),
    Cause(
        "tenant_db_pool",
        "Realtime's pool to the tenant database is too small or starved",
        "'IncreaseConnectionPool: Please increase your connection pool size': the authorization queries of "
        "joins timed out waiting for a pooled connection.",
        "Raise db_pool on the tenant's postgres_cdc_rls extension settings (then POST /api/tenants/<tenant>/"
        "reload), and look for slow queries or locks on realtime.messages.",
        ("tenant.db_settings",),
    ),
    Cause(
        "authorization_query_failed",
        "Realtime's authorization query on the tenant database failed",
        "The reason 'Realtime was unable to connect to the project database' without a code prefix comes from "
        "the private-channel policy check (or an access_token refresh) hitting a non-PostgreSQL error, e.g. a "
        "connection dropped mid-query; Realtime logs it as UnableToSetPolicies. With the 'UnableToConnectToProject:' "
        "prefix it is the plain connection failure instead.",
        "Read docker.realtime.logs for UnableToSetPolicies; check the tenant database's health and connection "
        "limits, then rejoin.",
        ("docker.realtime.logs", "tenant.db_settings"),
    ),
    Cause(
        "query_canceled",
        "A Realtime query on the tenant database was cancelled",
        "'QueryCanceled: ...': statement_timeout (or an administrator) cancelled the query Realtime ran for the "
        "join, typically the private-channel policy check against realtime.messages.",
        "Make the realtime.messages SELECT/INSERT policies cheap (index what they filter on, avoid per-row "
        "subqueries on large tables) or raise statement_timeout for the database user Realtime uses.",
        ("tenant.db_settings",),
    ),
    Cause(
        "rpc_error",
        "A Realtime node did not answer another node",
        "'TimeoutOnRpcCall: Node request timeout' / 'ErrorOnRpcCall: RPC call error: ...': in a Realtime "
        "cluster the tenant's connection lives on another node, and the call to it failed.",
        "Check the Realtime nodes see each other (clustering, DNS_NODES, ERL_AFLAGS) and are not overloaded; "
        "a single self-hosted node should never show this — restart it.",
        ("docker.realtime.logs",),
    ),
    Cause(
        "messages_partition_missing",
        "realtime.messages has no partition for today",
        "'MissingPartition: Realtime was unable to find the expected messages partition': the private-channel "
        "check inserts a probe row into realtime.messages, which is partitioned by day; Realtime's janitor "
        "creates the partitions and none covers now.",
        "Keep RUN_JANITOR=\"true\" on the realtime service (it creates the daily partitions), restart realtime, "
        "and check that realtime.messages_<date> tables exist.",
        ("docker.realtime.env",),
    ),
    Cause(
        "replay_invalid",
        "The channel asked for a replay Realtime cannot give",
        "'UnableToReplayMessages: ...': broadcast.replay params are malformed, were used on a public channel "
        "(replay needs private channels) or the read of realtime.messages failed.",
        "Send config.broadcast.replay = { since: <ms epoch>, limit: <1..25> } only on private channels "
        "(config.private = true) and keep a SELECT policy on realtime.messages for the role.",
        (),
    ),
    Cause(
        "unknown_channel_error",
        "Realtime refused the join with an unexpected error",
        "'Unknown Error on Channel' is Realtime's catch-all for a join that failed in a way it has no message "
        "for; the log line UnknownErrorOnChannel carries the real error.",
        "Read docker.realtime.logs (or docker logs <realtime container>) for UnknownErrorOnChannel at the time "
        "of the join.",
        ("docker.realtime.logs",),
    ),
    Cause(
        "not_in_publication",
        "The table is not in the supabase_realtime publication",
        "Realtime stores a postgres_changes subscription only for tables in the publication. For "
        "<schema>.<table> the subscription insert returned no row, so the channel got 'Unable to subscribe to "
        "changes with given parameters. Please check Realtime is enabled for the given connect parameters: "
        "[...]' — also when the publication is missing or empty. Realtime does not retry it, and a channel "
        "whose first subscribe failed is never re-subscribed, even after the table is added.",
        "ALTER PUBLICATION supabase_realtime ADD TABLE <schema>.<table>; (if the publication does not exist: "
        "CREATE PUBLICATION supabase_realtime FOR TABLE <schema>.<table>;) then rejoin the channel.",
        ("db.publication",),
    ),
    Cause(
        "table_missing",
        "The subscribed table does not exist",
        "Realtime answers a postgres_changes subscription on a table that does not exist exactly as one on a "
        "table outside the publication ('Unable to subscribe to changes with given parameters'); the database "
        "shows <schema>.<table> does not exist, so adding it to the publication cannot help.",
        "Fix the table name (the tables parameter, or the client's postgres_changes binding) or create "
        "<schema>.<table>, then add it to the publication: ALTER PUBLICATION supabase_realtime ADD TABLE "
        "<schema>.<table>;",
        ("db.publication",),
    ),
    Cause(
        "subscription_exception",
        "Realtime's subscription insert raised a database error",
        "'Unable to subscribe to changes with given parameters. An exception happened so please check your "
        "connect parameters: [...]. Exception: <error>' means the insert into realtime.subscription failed in "
        "its trigger (realtime.subscription_check_filters), not that the table is unpublished. Causes, told "
        "apart by the text after 'Exception:': (1) the JWT's role does not exist: ERROR 42704 role \"<r>\" "
        "does not exist; (2) a filter column that does not exist, and (3) a filter column the JWT's role may "
        "not SELECT: both ERROR P0001 invalid column for filter <col> (the trigger only sees columns the role "
        "can read); (4) a filter value that does not cast to the column's type: invalid input syntax for type "
        "...; Realtime does not retry.",
        "Read the Exception text. For (2) vs (3) on <schema>.<table>: SELECT column_name, "
        "has_column_privilege('<role>', '<schema>.<table>', column_name, 'SELECT') FROM "
        "information_schema.columns WHERE table_schema = '<schema>' AND table_name = '<table>'; — a missing "
        "column is a client bug, a false privilege needs GRANT SELECT (<col>) ON <schema>.<table> TO <role>.",
        ("db.rls", "db.publication"),
    ),
    Cause(
        "subscription_role_missing",
        "The token's role does not exist in the database",
        "The subscription insert raised 'role \"<role>\" does not exist' (ERROR 42704 undefined_object): "
        "Realtime subscribes as the role claim of the channel's token, and <role> is not a database role.",
        "Mint tokens with an existing role (anon, authenticated or service_role), or create it: CREATE ROLE "
        "<role> NOLOGIN; GRANT <role> TO authenticator; GRANT USAGE ON SCHEMA <schema> TO <role>; GRANT SELECT "
        "ON <schema>.<table> TO <role>;",
        ("env.api_keys",),
    ),
    Cause(
        "subscription_filter_column",
        "The filter names a column the role cannot see",
        "The subscription insert raised 'invalid column for filter <column>' (ERROR P0001). Realtime's trigger "
        "gives the same text for two causes: the column does not exist on <schema>.<table>, or the token's role "
        "(<role>) has no SELECT privilege on it (the trigger only lists columns the role can read).",
        "Tell them apart: SELECT count(*) FROM information_schema.columns WHERE table_schema = '<schema>' AND "
        "table_name = '<table>' AND column_name = '<column>'; — 0: the column does not exist, fix the filter "
        "in the client (filter: '<existing column>=eq.<value>'); 1: SELECT has_column_privilege('<role>', "
        "'<schema>.<table>', '<column>', 'SELECT'); — false: GRANT SELECT (<column>) ON <schema>.<table> TO "
        "<role>;",
        ("db.rls",),
    ),
    Cause(
        "subscription_filter_value",
        "The filter value does not fit the column's type",
        "The subscription insert raised 'invalid input syntax for type <type>': Realtime casts the filter value "
        "to the column's type when it subscribes.",
        "Give the filter a value of type <type> (e.g. id=eq.42 for a bigint, owner=eq.<uuid> for a uuid column); "
        "'in' filters take at most 100 comma-separated values in parentheses.",
        (),
    ),
    Cause(
        "subscription_params_invalid",
        "The postgres_changes binding is malformed",
        "Realtime could not parse the binding ('Error parsing `filter` params: [...]' or 'No subscription "
        "params provided. Please provide at least a `schema` or `table` to subscribe to'); it does not retry.",
        "Send { event: '*', schema: 'public', table: '<table>', filter: '<column>=eq.<value>' }: filter is "
        "column=operator.value with operator eq, neq, lt, lte, gt, gte or in (newer images also like, ilike, "
        "is, match, imatch, isdistinct and not.<op>).",
        (),
    ),
    Cause(
        "subscription_db_timeouts",
        "Realtime's subscription queries time out",
        "The system message is the inspected tuple {:error, \"Too many database timeouts\"}: the subscription "
        "insert timed out (or Realtime's subscription rate counter tripped). Realtime retries every 5–10 s and "
        "pushes the message again on each attempt.",
        "Check the tenant database's load and locks, and the size of realtime.subscription (stale rows are "
        "deleted by Realtime's janitor; a huge table slows every insert).",
        ("db.realtime_connections",),
    ),
    Cause(
        "no_events",
        "Subscribed, but no change arrived",
        "Realtime confirmed the subscription but delivered nothing: logical decoding (wal_level, "
        "wal2json, a free replication slot) or the CDC poller is not working.",
        "Check wal_level=logical, the wal2json plugin and free replication slots; read Realtime's log "
        "for PoolingReplicationPreparationError / ReplicationSlotBeingUsed / ReplicationPollerMaxRetriesReached.",
        ("compose.db.wal_level", "db.wal_level", "db.wal2json", "db.replication_capacity", "db.realtime_slots",
         "db.publication"),
    ),
    Cause(
        "cdc_poller_idle",
        "Realtime's change poller has no replication slot",
        "Realtime reads changes through a temporary wal2json slot (supabase_realtime_replication_slot...). "
        "Since v2.107.1 it creates the slot only while the publication holds tables and re-reads the "
        "publication every 60 s, so after a first table is added the slot appears within about a minute; "
        "it is also absent while the poller retries a failing slot creation, or after it gave up.",
        "If a table was just added, wait a minute and run again. Otherwise read Realtime's log for "
        "PoolingReplicationPreparationError (wal2json missing, no free slot, no REPLICATION privilege) or "
        "ReplicationPollerMaxRetriesReached; a new postgres_changes join restarts the poller.",
        ("db.wal2json", "db.replication_capacity", "db.realtime_slots", "db.publication"),
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
        "No SELECT policy on realtime.messages lets this role read the topic",
        "Private channels (config.private=true) are authorized by RLS on realtime.messages: at join Realtime "
        "inserts a probe row for the topic, sets role=<role> and realtime.topic='<topic>' for the transaction, "
        "and SELECTs it as that role. No row back (no SELECT policy for the role, or one whose USING does not "
        "match the topic, or a policy error) gives 'Unauthorized: You do not have permissions to read from "
        "this Channel topic: <topic>'.",
        "Add a SELECT policy for the role and topic (and an INSERT policy so its broadcasts are delivered):\n"
        "CREATE POLICY \"<role> reads <topic>\" ON realtime.messages FOR SELECT TO <role> "
        "USING (realtime.topic() = '<topic>' AND realtime.messages.extension IN ('broadcast', 'presence'));\n"
        "CREATE POLICY \"<role> writes <topic>\" ON realtime.messages FOR INSERT TO <role> "
        "WITH CHECK (realtime.topic() = '<topic>' AND realtime.messages.extension IN ('broadcast', 'presence'));\n"
        "For your own topics match them instead, e.g. USING (realtime.topic() = 'room:' || auth.uid()::text).",
        ("db.rls",),
    ),
    Cause(
        "private_no_insert_policy",
        "No INSERT policy on realtime.messages: private broadcasts are dropped silently",
        "On a private channel Realtime checks, at the first broadcast, whether the role may INSERT into "
        "realtime.messages for the topic. If not, every broadcast from that client is dropped without a reply "
        "(even with ack: true the client's ack just times out) and without a log line at the default level.",
        "CREATE POLICY \"<role> writes <topic>\" ON realtime.messages FOR INSERT TO <role> "
        "WITH CHECK (realtime.topic() = '<topic>' AND realtime.messages.extension IN ('broadcast', 'presence'));\n"
        "(Presence on a private channel needs the same INSERT policy: without it track is refused.)",
        ("db.rls",),
    ),
    Cause(
        "messages_rls_off",
        "Row level security is off on realtime.messages: private channels are not private",
        "Realtime authorizes private channels by querying realtime.messages as the token's role; with RLS "
        "disabled on the table every role (anon included) may read and write every private topic.",
        "ALTER TABLE realtime.messages ENABLE ROW LEVEL SECURITY; then add SELECT/INSERT policies per role and "
        "topic (see realtime.private's policy SQL).",
        ("db.rls",),
    ),
    Cause(
        "private_not_enforced",
        "The server admitted a private join that no policy allows",
        "Realtime (v2.78.19, v2.129.8) admits a private join only when a SELECT policy on realtime.messages "
        "returns its probe row for the token's role and topic. Here the join was admitted although no "
        "permissive SELECT policy applies to <role>, RLS is on and the role does not bypass it: whatever "
        "answered does not enforce private-channel authorization (a stand-in or a modified server).",
        "Check what serves the Realtime URL and its version; do not rely on private channels there until a "
        "join without a policy is refused with 'Unauthorized: You do not have permissions to read from this "
        "Channel topic'.",
        ("db.rls",),
    ),
    Cause(
        "messages_table_missing",
        "realtime.messages does not exist",
        "Realtime authorizes private channels by querying realtime.messages, which its tenant migrations "
        "create when it first connects to the tenant database. Without the table every private join is "
        "refused as Unauthorized.",
        "Let Realtime migrate the tenant database: it needs DB_USER=supabase_admin (or a user that owns the "
        "realtime schema); restart realtime and read docker.realtime.logs for migration errors.",
        ("compose.realtime.db_connection", "docker.realtime.logs"),
    ),
    Cause(
        "topic_invalid",
        "The channel topic has no name",
        "'TopicNameRequired: You must provide a topic name': the join was for 'realtime:' with nothing after "
        "the colon.",
        "Join 'realtime:<name>' (realtime-js: supabase.channel('<name>') adds the prefix).",
        (),
    ),
    Cause(
        "unmatched_topic",
        "The topic is not a Realtime channel",
        "Phoenix answered 'unmatched topic' at once: Realtime only serves topics starting with 'realtime:'.",
        "Join 'realtime:<name>'; realtime-js adds the prefix itself, so this comes from a hand-made client.",
        (),
    ),
    Cause(
        "realtime_restarting",
        "Realtime is shutting down",
        "'RealtimeRestarting: Realtime is restarting, please standby': the node received SIGTERM and drains; "
        "joins are refused until the new process is up.",
        "Retry after the restart (realtime-js rejoins by itself); if it repeats, look for a restart loop "
        "(docker.realtime.running).",
        ("docker.realtime.running",),
    ),
    # ------------------------------------------------------------ admin / health API
    Cause(
        "health_inconsistent",
        "The health answer says healthy=false with the database connected",
        "Realtime v2.78.19 and v2.129.8 report healthy=true whenever the tenant's database connection exists "
        "(Realtime.Tenants.health_check/1); healthy=false together with db_connected=true is not an answer "
        "they give. Something else answers at this URL (a proxy or a modified image), or a newer version "
        "changed the meaning.",
        "Check what serves realtime_url (curl -si <realtime_url>/api/tenants/<tenant>/health with an admin "
        "token) and the realtime image's version; db_connected=true still shows the database is reachable.",
        ("docker.realtime.health",),
    ),
    Cause(
        "tenant_migrations_pending",
        "Realtime reports the tenant unhealthy before connecting to its database",
        "With no client joined and no database connection, healthy is the migrations' state: newer Realtime "
        "reports healthy=false while the tenant's migrations are due (and starts them in the background); "
        "v2.78 runs them inside the health request and reports false when they fail, e.g. because the "
        "database is unreachable.",
        "Join one channel (or wait for the background migrations), then read the health again; if it stays "
        "false, read docker.realtime.logs for migration or connection errors.",
        ("docker.realtime.logs", "tenant.db_settings"),
    ),
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
    # Values for the cause's placeholders, from the match (named groups are always used).
    values: Callable[[re.Match[str], str], dict[str, str]] | None = None


def _r(cause_id: str, pattern: str, statuses: Iterable[int] | None = None,
       values: Callable[[re.Match[str], str], dict[str, str]] | None = None) -> _Rule:
    return _Rule(cause_id, re.compile(pattern, re.IGNORECASE | re.DOTALL),
                 None if statuses is None else frozenset(statuses), values)


# The parameter list Realtime echoes in its subscription errors, in both spellings seen:
# "[event: *, schema: public, table: todos, filters: []]" and the inspected '[schema: "public", ...]'.
_PARAM = r'{key}: "?(?P<{key}>[^,"\]\s]+)"?'


def _subscription_params(_m: re.Match[str], text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for key in ("schema", "table"):
        found = re.search(_PARAM.format(key=key), text)
        if found:
            out[key] = found.group(key)
    if out.get("table") == "*":
        # A wildcard binding covers every table of the schema; name that instead of a table "*".
        out["table"] = "<each table you subscribe to>"
    return out


# Phoenix/Realtime refusals. First match wins; specific texts before generic ones.
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
    # Realtime tenant (handshake and join). The join-time text first: its code also says TenantNotFound.
    _r("tenant_gone", r"tenant with the given id does not exist"),
    _r("join_crashed", r"^\s*join crashed\s*$"),
    _r("tenant_not_found", r"tenant ?not ?found|tenant `[^`]*` not found"),
    _r(
        "tenant_suspended",
        r"realtime (was )?disabled for (this )?tenant|tenant is suspended"
        r"|realtimedisabledfortenant",
    ),
    _r("private_only", r"only allows private channels|privateonly"),
    # Tokens (handshake bodies and join reasons)
    _r("missing_api_key", r"api key is missing|missing_api_key|missingapikey"),
    _r("token_expired", r"token has expired|expired_token"),
    _r("token_exp_invalid", r"expiration time is invalid"),
    _r("missing_claims", r"fields `?role`? and `?exp`? are required|missing_claims"),
    _r("jwt_signature", r"failed to validate jwt signature|jwtsignatureerror|signature_error|jwsinvalidsignature"),
    _r("jwt_signer_kid", r'failed to generate jwt signer.*?key id \(kid\) "?(?P<kid>[^"\s]+)"?'),
    _r("jwt_signer", r"failed to generate jwt signer|jwtsignererror|error_generating_signer"),
    _r("malformed_jwt", r"not a valid jwt|malformedjwt|token_malformed|invalid_token"),
    # Limits. At the handshake the joins/s refusal is a 429 body; at a join it carries its code.
    _r("too_many_connections", r"too many connected users|\bconnectionratelimitreached"),
    _r("too_many_joins", r"clientjoinratelimitreached"),
    _r("too_many_joins_at_connect", r"joinsratelimitreached"),
    _r("too_many_joins_at_connect", r"too many joins per second", (429,)),
    _r("too_many_joins", r"too many joins per second"),
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
        r"do not have permissions to read from this channel topic:\s*(?:realtime:)?(?P<topic>\S+)"
        r"|do not have permissions to read from this channel"
        r"|no longer have permission to read",
    ),
    _r("messages_partition_missing", r"missingpartition|unable to find the expected messages partition"),
    _r("replay_invalid", r"unabletoreplaymessages|replay params are not valid|replay is not allowed"),
    _r("topic_invalid", r"you must provide a topic name|topicnamerequired"),
    _r("unmatched_topic", r"^\s*unmatched topic\s*$"),
    # postgres_changes subscription (system messages). The exception variant first: it also starts with
    # "Unable to subscribe to changes with given parameters".
    _r("subscription_role_missing", r'an exception happened.*role "(?P<role>[^"]+)" does not exist',
       values=_subscription_params),
    _r("subscription_filter_column", r"an exception happened.*invalid column for filter (?P<column>[^\s.,\]]+)",
       values=_subscription_params),
    _r("subscription_filter_value", r"an exception happened.*invalid input syntax for type (?P<type>[\w ]+?)(?::|$)",
       values=_subscription_params),
    _r("subscription_exception", r"unable to subscribe to changes with given parameters\. an exception happened",
       values=_subscription_params),
    _r(
        "not_in_publication",
        r"unable to subscribe to changes with given parameters"
        r"|subscription insert failed with 0 rows",
        values=_subscription_params,
    ),
    _r("subscription_params_invalid", r"error parsing `filter` params|no subscription params provided"),
    _r("subscription_db_timeouts", r"too many database timeouts"),
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
    _r("messages_table_missing", r'relation "realtime\.messages" does not exist'),
    _r("realtime_schema_permission", r"permission denied for schema (realtime|_realtime)"),
    # Tenant DB connection (join reasons)
    _r("realtime_restarting", r"realtime is restarting|realtimerestarting"),
    _r(
        "tenant_db_initializing",
        r"initializingprojectconnection|initializing the project connection|connecting to the project database",
    ),
    _r("tenant_db_full", r"databaselackofconnections|can't accept more connections"),
    _r("tenant_db_connect_rate", r"databaseconnectionratelimitreached|too many database connections attempts"),
    _r("tenant_db_pool", r"increaseconnectionpool|increase your connection pool size"),
    # Without the code prefix the same words come from the policy check (UnableToSetPolicies).
    _r("authorization_query_failed", r"^\s*realtime was unable to connect to the project database\.?\s*$"),
    _r(
        "tenant_db_unreachable",
        r"unable to connect to the project database|unabletoconnecttoproject|unabletoconnecttotenantdatabase",
    ),
    _r("query_canceled", r"querycanceled|canceling statement due to"),
    _r("rpc_error", r"timeoutonrpccall|erroronrpccall|node request timeout"),
    _r("unknown_channel_error", r"^\s*unknown error on channel\s*$"),
    _r("realtime_connect_error", r"error connecting to realtime", (500,)),
    # Health endpoint: 404 {"message":"not found"}
    _r("tenant_missing_admin", r'^\s*\{\s*"message"\s*:\s*"not found"\s*\}\s*$', (404,)),
)


def diagnose(
    status: int | None = None,
    body: str | None = None,
    reason: str | None = None,
    message: str | None = None,
    *,
    apikey_sent: bool | None = None,
) -> Cause | None:
    """Return the known cause of a failure, with the values its text carries filled in, or None.

    Args:
        status: the HTTP status (handshake or REST), if any.
        body: the HTTP response body, if any.
        reason: a ``phx_join``/push error ``reason`` (``"Code: message"``).
        message: any other text: a ``system`` message, a database error, a log line.
        apikey_sent: whether the refused handshake carried an apikey (False narrows Realtime
            v2.78's 403 without a body to a missing apikey).
    """
    texts = [t for t in (body, reason, message) if t]
    for rule in _RULES:
        if rule.statuses is not None and status not in rule.statuses:
            continue
        for text in texts:
            m = rule.pattern.search(text)
            if m is None:
                continue
            values = rule.values(m, text) if rule.values is not None else {}
            values.update({k: v for k, v in m.groupdict().items() if v})
            return CAUSES[rule.cause].fill(values)
    # Status-only fallbacks, for bodies no rule recognised.
    if status == 403 and not (body or "").strip():
        return CAUSES["missing_api_key_legacy" if apikey_sent is False else "connect_refused_legacy"]
    if status in (502, 503, 504):
        return CAUSES["kong_upstream_unavailable"]
    if status == 429:
        return CAUSES["rate_limited_messages"]
    return None
