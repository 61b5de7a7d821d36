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
        ({"status": 429, "body": '{"error":"Too many joins per second"}'}, "too_many_joins"),
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
        ({"reason": "InvalidJWTToken: Token expiration time is invalid"}, "missing_claims"),
        ({"reason": "MalformedJWT: The token provided is not a valid JWT"}, "malformed_jwt"),
        ({"reason": "JwtSignatureError: Failed to validate JWT signature"}, "jwt_signature"),
        ({"reason": "JwtSignerError: Failed to generate JWT signer, check your JWT secret or JWKS configuration"},
         "jwt_signer"),
        ({"reason": "Unauthorized: You do not have permissions to read from this Channel topic: room1"},
         "private_channel_denied"),
        ({"reason": "TenantNotFound: Tenant with the given ID does not exist"}, "tenant_not_found"),
        ({"reason": "RealtimeDisabledForTenant: Realtime disabled for this tenant"}, "tenant_suspended"),
        ({"reason": "PrivateOnly: This project only allows private channels"}, "private_only"),
        ({"reason": "ConnectionRateLimitReached: Too many connected users"}, "too_many_connections"),
        ({"reason": "ClientJoinRateLimitReached: Too many joins per second"}, "too_many_joins"),
        ({"reason": "ChannelRateLimitReached: Too many channels"}, "too_many_channels"),
        ({"reason": "UnableToConnectToProject: Realtime was unable to connect to the project database"},
         "tenant_db_unreachable"),
        ({"reason": "InitializingProjectConnection: Connecting to the project database"}, "realtime_restarting"),
        ({"reason": "DatabaseLackOfConnections: Database can't accept more connections, Realtime won't connect"},
         "tenant_db_unreachable"),
        ({"reason": "RealtimeRestarting: Realtime is restarting, please standby"}, "realtime_restarting"),
        ({"reason": "TopicNameRequired: You must provide a topic name"}, "topic_invalid"),
        ({"reason": "unmatched topic"}, "topic_invalid"),
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
