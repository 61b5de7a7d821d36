"""The error map: every documented error text leads to the right cause (pure logic)."""

from __future__ import annotations

import pytest

from rtbook.remedies import CAUSES, diagnose


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        # WebSocket handshake, Realtime >= 2.116 (realtime-facts §1.3)
        ({"status": 404, "body": '{"error":"Tenant not found"}'}, "tenant_not_found"),
        ({"status": 403, "body": '{"error":"Realtime was disabled for this tenant"}'}, "tenant_suspended"),
        ({"status": 401, "body": '{"error":"API key is missing"}'}, "missing_api_key"),
        ({"status": 401, "body": '{"error":"Token has expired"}'}, "token_expired"),
        ({"status": 401, "body": '{"error":"Fields `role` and `exp` are required in JWT"}'}, "missing_claims"),
        ({"status": 401, "body": '{"error":"The token provided is not a valid JWT"}'}, "malformed_jwt"),
        ({"status": 401, "body": '{"error":"Failed to validate JWT signature"}'}, "jwt_signature"),
        ({"status": 401, "body": '{"error":"Failed to generate JWT signer, check your JWT secret or JWKS '
                                 'configuration"}'}, "jwt_signer"),
        ({"status": 429, "body": '{"error":"Too many connected users"}'}, "too_many_connections"),
        ({"status": 429, "body": '{"error":"Too many joins per second"}'}, "too_many_joins_at_connect"),
        ({"status": 500, "body": '{"error":"Error connecting to Realtime"}'}, "realtime_connect_error"),
        # Older images: 403 with no body for every refusal
        ({"status": 403, "body": ""}, "connect_refused_legacy"),
        ({"status": 403, "body": None}, "connect_refused_legacy"),
        # HTTP API
        ({"status": 401, "body": '{"message":"Tenant not found in database"}'}, "tenant_not_found"),
        ({"status": 404, "body": '{"message":"not found"}'}, "tenant_missing_admin"),
        ({"status": 403, "body": '{"message":"Tenant is suspended"}'}, "tenant_suspended"),
        ({"status": 422, "body": '{"errors":{"payload":["Payload size exceeds tenant limit"]}}'}, "payload_too_large"),
        # Join reasons (§5.4)
        ({"reason": "InvalidJWTToken: Token has expired 600 seconds ago"}, "token_expired"),
        ({"reason": "InvalidJWTToken: Fields `role` and `exp` are required in JWT"}, "missing_claims"),
        ({"reason": "InvalidJWTToken: Token expiration time is invalid"}, "token_exp_invalid"),
        ({"reason": "MalformedJWT: The token provided is not a valid JWT"}, "malformed_jwt"),
        ({"reason": "JwtSignatureError: Failed to validate JWT signature"}, "jwt_signature"),
        ({"reason": "JwtSignerError: Failed to generate JWT signer, check your JWT secret or JWKS configuration"},
         "jwt_signer"),
        ({"reason": "Unauthorized: You do not have permissions to read from this Channel topic: room1"},
         "private_channel_denied"),
        ({"reason": "TenantNotFound: Tenant with the given ID does not exist"}, "tenant_gone"),
        ({"reason": "RealtimeDisabledForTenant: Realtime disabled for this tenant"}, "tenant_suspended"),
        ({"reason": "PrivateOnly: This project only allows private channels"}, "private_only"),
        ({"reason": "ConnectionRateLimitReached: Too many connected users"}, "too_many_connections"),
        ({"reason": "ClientJoinRateLimitReached: Too many joins per second"}, "too_many_joins"),
        ({"reason": "ChannelRateLimitReached: Too many channels"}, "too_many_channels"),
        ({"reason": "UnableToConnectToProject: Realtime was unable to connect to the project database"},
         "tenant_db_unreachable"),
        ({"reason": "InitializingProjectConnection: Connecting to the project database"}, "tenant_db_initializing"),
        ({"reason": "DatabaseLackOfConnections: Database can't accept more connections, Realtime won't connect"},
         "tenant_db_full"),
        ({"reason": "RealtimeRestarting: Realtime is restarting, please standby"}, "realtime_restarting"),
        ({"reason": "TopicNameRequired: You must provide a topic name"}, "topic_invalid"),
        ({"reason": "unmatched topic"}, "unmatched_topic"),
        # system messages (§4.2, §5.5)
        ({"message": "Unable to subscribe to changes with given parameters. Please check Realtime is enabled for "
                     "the given connect parameters: [event: *, schema: public, table: todos, filters: []]"},
         "not_in_publication"),
        ({"message": "Subscription insert failed with 0 rows. Check that tables are part of publication "
                     "supabase_realtime"}, "not_in_publication"),
        ({"message": "Too many messages per second"}, "rate_limited_messages"),
        ({"message": "Client presence rate limit exceeded"}, "rate_limited_messages"),
        ({"message": "Track message size exceeded"}, "payload_too_large"),
        ({"message": "You no longer have permission to read from this Channel topic: x"}, "private_channel_denied"),
        ({"message": "Error 400: Bad Request, no primary key"}, "no_primary_key"),
        ({"message": "Error 401: Unauthorized"}, "select_denied"),
        # Kong (§8.3)
        ({"status": 401, "body": '{"message":"No API key found in request"}'}, "kong_no_api_key"),
        ({"status": 401, "body": '{"message":"Invalid authentication credentials"}'}, "kong_invalid_key"),
        ({"status": 403, "body": '{"message":"You cannot consume this service"}'}, "kong_acl"),
        ({"status": 403, "body": '{"message":"Access is forbidden."}'}, "kong_forbidden"),
        ({"status": 404, "body": '{"message":"no Route matched with those values"}'}, "kong_no_route"),
        ({"status": 503, "body": '{"message":"name resolution failed"}'}, "kong_upstream_dns"),
        ({"status": 502, "body": '{"message":"An invalid response was received from the upstream server"}'},
         "kong_upstream_unavailable"),
        ({"status": 502, "body": "<html>Bad Gateway</html>"}, "kong_upstream_unavailable"),
        # Database (§4.3, §10)
        ({"message": "ERROR: logical decoding requires wal_level >= logical"}, "wal_level"),
        ({"message": 'could not access file "wal2json": No such file or directory'}, "wal2json_missing"),
        ({"message": 'replication slot "supabase_realtime_replication_slot_" is active for PID 123'},
         "replication_slot_in_use"),
        ({"message": "all replication slots are in use"}, "replication_capacity"),
        ({"message": 'ERROR: relation "tenants" does not exist'}, "realtime_schema_missing"),
        ({"message": 'relation "_realtime.extensions" does not exist'}, "realtime_schema_missing"),
        ({"message": "permission denied for schema realtime"}, "realtime_schema_permission"),
        # Old log wording (supabase-kubernetes#74)
        ({"message": "Auth error: tenant `backend-supabase-realtime` not found"}, "tenant_not_found"),
    ],
)
def test_known_errors_map_to_their_cause(kwargs: dict[str, object], expected: str) -> None:
    found = diagnose(**kwargs)  # type: ignore[arg-type]
    assert found is not None, kwargs
    assert found.id == expected


def test_unknown_or_empty_gives_none() -> None:
    assert diagnose() is None
    assert diagnose(status=200, body='{"message":"Success"}') is None
    assert diagnose(reason="SomethingNew: never seen") is None
    # "upstream" alone is only Kong's when the status is a gateway error
    assert diagnose(status=200, body="upstream") is None


def test_every_cause_is_complete_and_points_to_real_check_ids() -> None:
    for cid, cause in CAUSES.items():
        assert cid == cause.id
        assert cause.title and cause.explanation and cause.remedy, cid
        for check in cause.static_checks:
            assert check.count(".") >= 1 and check == check.strip(), (cid, check)


def test_tenant_cause_points_back_to_static_checks() -> None:
    cause = diagnose(status=404, body='{"error":"Tenant not found"}')
    assert cause is not None
    assert "compose.realtime.tenant_consistency" in cause.static_checks
    assert "kong.realtime_ws" in cause.static_checks
    jwt = diagnose(reason="JwtSignatureError: Failed to validate JWT signature")
    assert jwt is not None and "tenant.jwt_secret" in jwt.static_checks


def test_cause_ids_used_by_db_and_tenant_checks_exist() -> None:
    from rtbook.clients.db import FINDING_CAUSES

    for finding, cause_id in FINDING_CAUSES.items():
        assert cause_id == "" or cause_id in CAUSES, (finding, cause_id)


def test_static_check_ids_are_registered_checks() -> None:
    from rtbook.registry import all_checks

    registered = {spec.id for spec in all_checks()}
    named = {check for cause in CAUSES.values() for check in cause.static_checks}
    assert named - registered == set()


# ---------------------------------------------------------------- every text in the research notes
# Exact texts from the notes (/work/notes/realtime.md §2 handshake table, §3 join table, §3.1 system
# messages), i.e. supabase/realtime v2.129.8 and v2.78.19 user_socket.ex, realtime_channel.ex +
# logging.ex, postgres_cdc_rls/subscriptions.ex.

HANDSHAKE_NEW = [
    (404, '{"error":"Tenant not found"}', "tenant_not_found"),
    (403, '{"error":"Realtime was disabled for this tenant"}', "tenant_suspended"),
    (401, '{"error":"API key is missing"}', "missing_api_key"),
    (401, '{"error":"Token has expired"}', "token_expired"),
    (401, '{"error":"Fields `role` and `exp` are required in JWT"}', "missing_claims"),
    (401, '{"error":"The token provided is not a valid JWT"}', "malformed_jwt"),
    (401, '{"error":"Failed to validate JWT signature"}', "jwt_signature"),
    (401, '{"error":"Failed to generate JWT signer, check your JWT secret or JWKS configuration"}', "jwt_signer"),
    (401, '{"error":"Failed to generate JWT signer, check your JWT secret or JWKS configuration for key ID (kid) '
          '\\"key-2024\\""}', "jwt_signer_kid"),
    (429, '{"error":"Too many connected users"}', "too_many_connections"),
    (429, '{"error":"Too many joins per second"}', "too_many_joins_at_connect"),
    (500, '{"error":"Error connecting to Realtime"}', "realtime_connect_error"),
]


@pytest.mark.parametrize(("status", "body", "expected"), HANDSHAKE_NEW)
def test_every_handshake_refusal_of_the_notes_has_its_cause(status: int, body: str, expected: str) -> None:
    found = diagnose(status=status, body=body)
    assert found is not None and found.id == expected


JOIN_REASONS = [
    ("TopicNameRequired: You must provide a topic name", "topic_invalid"),
    ("RealtimeRestarting: Realtime is restarting, please standby", "realtime_restarting"),
    ("TenantNotFound: Tenant with the given ID does not exist", "tenant_gone"),
    ("join crashed", "join_crashed"),
    ("RealtimeDisabledForTenant: Realtime disabled for this tenant", "tenant_suspended"),
    ("PrivateOnly: This project only allows private channels", "private_only"),
    ("ConnectionRateLimitReached: Too many connected users", "too_many_connections"),
    ("ClientJoinRateLimitReached: Too many joins per second", "too_many_joins"),
    ("ChannelRateLimitReached: Too many channels", "too_many_channels"),
    ("InvalidJWTToken: Token has expired 42 seconds ago", "token_expired"),
    ("InvalidJWTToken: Fields `role` and `exp` are required in JWT", "missing_claims"),
    ("InvalidJWTToken: Token expiration time is invalid", "token_exp_invalid"),
    ("MalformedJWT: The token provided is not a valid JWT", "malformed_jwt"),
    ("JwtSignatureError: Failed to validate JWT signature", "jwt_signature"),
    ("JwtSignerError: Failed to generate JWT signer, check your JWT secret or JWKS configuration", "jwt_signer"),
    ('JwtSignerError: Failed to generate JWT signer, check your JWT secret or JWKS configuration for key ID (kid) '
     '"abc123"', "jwt_signer_kid"),
    ("UnableToConnectToProject: Realtime was unable to connect to the project database", "tenant_db_unreachable"),
    ("InitializingProjectConnection: Realtime is initializing the project connection", "tenant_db_initializing"),
    ("InitializingProjectConnection: Connecting to the project database", "tenant_db_initializing"),
    ("DatabaseLackOfConnections: Database can't accept more connections, Realtime won't connect", "tenant_db_full"),
    ("DatabaseConnectionRateLimitReached: Too many database connections attempts per second",
     "tenant_db_connect_rate"),
    ("IncreaseConnectionPool: Please increase your connection pool size", "tenant_db_pool"),
    ("Realtime was unable to connect to the project database", "authorization_query_failed"),
    ("Unauthorized: You do not have permissions to read from this Channel topic: room1", "private_channel_denied"),
    ("MissingPartition: Realtime was unable to find the expected messages partition", "messages_partition_missing"),
    ("QueryCanceled: canceling statement due to statement timeout", "query_canceled"),
    ("TimeoutOnRpcCall: Node request timeout", "rpc_error"),
    ("ErrorOnRpcCall: RPC call error: :noconnection", "rpc_error"),
    ("UnableToReplayMessages: Replay params are not valid", "replay_invalid"),
    ("UnableToReplayMessages: Replay is not allowed for public channels", "replay_invalid"),
    ("UnableToReplayMessages: Realtime was unable to replay messages", "replay_invalid"),
    ("Unknown Error on Channel", "unknown_channel_error"),
    ("unmatched topic", "unmatched_topic"),
]


@pytest.mark.parametrize(("reason", "expected"), JOIN_REASONS)
def test_every_join_reason_of_the_notes_has_its_cause(reason: str, expected: str) -> None:
    found = diagnose(reason=reason)
    assert found is not None and found.id == expected, (reason, found)


def test_join_and_handshake_causes_are_distinct_where_the_meaning_differs() -> None:
    # Same words, different place: the handshake's 429 refuses the socket, the join's code drops the socket.
    at_connect = diagnose(status=429, body='{"error":"Too many joins per second"}')
    at_join = diagnose(reason="ClientJoinRateLimitReached: Too many joins per second")
    assert at_connect is not None and at_join is not None and at_connect.id != at_join.id
    # The log code of the handshake refusal (JoinsRateLimitReached) names the handshake cause.
    logged = diagnose(message="JoinsRateLimitReached: Too many joins per second")
    assert logged is not None and logged.id == "too_many_joins_at_connect"
    # The prefixed reason is the connection failure; without the prefix it is the policy check's error.
    prefixed = diagnose(reason="UnableToConnectToProject: Realtime was unable to connect to the project database")
    bare = diagnose(reason="Realtime was unable to connect to the project database")
    assert prefixed is not None and bare is not None and prefixed.id != bare.id


def test_v278_refusals_without_a_body() -> None:
    # Realtime v2.78 answers every handshake refusal 403 with no body; without an apikey it is still
    # 403 empty (logged as TenantNotFound), which only the caller who left the apikey out can tell.
    legacy = diagnose(status=403, body="")
    assert legacy is not None and legacy.id == "connect_refused_legacy"
    no_key = diagnose(status=403, body="", apikey_sent=False)
    assert no_key is not None and no_key.id == "missing_api_key_legacy"
    assert "TenantNotFound" in no_key.explanation and "hide_credentials: false" in no_key.remedy
    # The join of v2.78 whose tenant vanished crashes: Phoenix's own reply.
    crashed = diagnose(reason="join crashed")
    assert crashed is not None and crashed.id == "join_crashed" and "v2.78" in crashed.title


def test_unauthorized_names_the_topic_and_shows_both_policies() -> None:
    found = diagnose(reason="Unauthorized: You do not have permissions to read from this Channel topic: room-7")
    assert found is not None and found.id == "private_channel_denied"
    assert "realtime.topic() = 'room-7'" in found.remedy
    assert "FOR SELECT TO <role>" in found.remedy and "FOR INSERT TO <role>" in found.remedy
    # The stand-in says the full topic; the prefix is not part of realtime.topic().
    full = diagnose(reason="Unauthorized: You do not have permissions to read from this Channel topic: realtime:r1")
    assert full is not None and "realtime.topic() = 'r1'" in full.remedy
    # A check that knows the role fills it in.
    assert "FOR SELECT TO authenticated" in found.fill(role="authenticated").remedy


# ---------------------------------------------------------------- the two "Unable to subscribe" variants

ZERO_ROWS_NEW = ("Unable to subscribe to changes with given parameters. Please check Realtime is enabled for the "
                 "given connect parameters: [event: *, schema: public, table: todos, filters: [], select: nil]")
ZERO_ROWS_OLD = ("Unable to subscribe to changes with given parameters. Please check Realtime is enabled for the "
                 'given connect parameters: [event: *, schema: public, table: todos, filters: [{"id", "eq", "1"}]]')
EXC_PREFIX = ("Unable to subscribe to changes with given parameters. An exception happened so please check your "
              'connect parameters: [event: *, schema: public, table: todos, filters: [{"subject", "eq", "x", false}], '
              "select: nil]. Exception: ")


@pytest.mark.parametrize("text", [ZERO_ROWS_NEW, ZERO_ROWS_OLD])
def test_not_in_publication_names_the_real_table(text: str) -> None:
    found = diagnose(message=text)
    assert found is not None and found.id == "not_in_publication"
    assert "ALTER PUBLICATION supabase_realtime ADD TABLE public.todos;" in found.remedy
    assert "<schema>" not in found.remedy and "<table>" not in found.remedy


def test_not_in_publication_with_a_wildcard_table_does_not_say_table_star() -> None:
    text = ZERO_ROWS_NEW.replace("table: todos", "table: *")
    found = diagnose(message=text)
    assert found is not None and found.id == "not_in_publication"
    assert "public.*" not in found.remedy and "ADD TABLE public.<each table you subscribe to>" in found.remedy


def test_exception_variant_role_missing() -> None:
    found = diagnose(message=EXC_PREFIX + 'ERROR 42704 (undefined_object) role "editor" does not exist')
    assert found is not None and found.id == "subscription_role_missing"
    assert "CREATE ROLE editor NOLOGIN" in found.remedy and "GRANT SELECT ON public.todos TO editor" in found.remedy


def test_exception_variant_filter_column_tells_missing_from_unprivileged() -> None:
    found = diagnose(message=EXC_PREFIX + "ERROR P0001 (raise_exception) invalid column for filter subject")
    assert found is not None and found.id == "subscription_filter_column"
    # Both causes are named, with the SQL that separates them, on the real table and column.
    assert "does not exist" in found.explanation and "SELECT privilege" in found.explanation
    assert ("FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'todos' AND "
            "column_name = 'subject'") in found.remedy
    assert "GRANT SELECT (subject) ON public.todos TO <role>" in found.remedy
    assert "GRANT SELECT (subject) ON public.todos TO anon" in found.fill(role="anon").remedy


def test_exception_variant_value_and_generic() -> None:
    value = diagnose(message=EXC_PREFIX + 'ERROR 22P02 (invalid_text_representation) invalid input syntax for type '
                                          'bigint: "abc"')
    assert value is not None and value.id == "subscription_filter_value" and "type bigint" in value.remedy
    other = diagnose(message=EXC_PREFIX + "ERROR 42P01 (undefined_table) something unexpected")
    assert other is not None and other.id == "subscription_exception"
    # The generic explanation lists every cause and how to tell them apart.
    for words in ("does not exist", "invalid column for filter", "may not SELECT", "invalid input syntax"):
        assert words in other.explanation, words
    assert "has_column_privilege('<role>', 'public.todos', column_name, 'SELECT')" in other.remedy


def test_other_postgres_changes_system_texts() -> None:
    parse = diagnose(message='Error parsing `filter` params: ["foo", "hey"]')
    assert parse is not None and parse.id == "subscription_params_invalid"
    none = diagnose(message="No subscription params provided. Please provide at least a `schema` or `table` to "
                            "subscribe to: %{}")
    assert none is not None and none.id == "subscription_params_invalid"
    timeouts = diagnose(message='{:error, "Too many database timeouts"}')
    assert timeouts is not None and timeouts.id == "subscription_db_timeouts"


def test_fill_replaces_only_known_values() -> None:
    base = CAUSES["tenant_db_unreachable"]
    filled = base.fill(DB_HOST="db", DB_PORT="5432")
    assert "DB_HOST=db, DB_PORT=5432" in filled.remedy and "<DB_HOST>" in base.remedy
    assert base.fill(DB_HOST=None, DB_PORT="") is base
    assert filled.id == base.id and filled.static_checks == base.static_checks
