"""The Phoenix frame codec, the socket URL builder and transcript redaction (pure logic)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtbook.clients.phoenix import (
    VSN1,
    VSN2,
    HandshakeRefused,
    Message,
    ProtocolError,
    Transcript,
    decode,
    encode,
    socket_url,
)
from rtbook.exceptions import ConfigError, RtbookError
from rtbook.secrets import REDACTED, Redactor


def test_vsn1_encodes_an_object_with_join_ref() -> None:
    msg = Message("realtime:room1", "phx_join", {"config": {}}, "1", "1")
    assert json.loads(encode(msg, VSN1)) == {
        "topic": "realtime:room1", "event": "phx_join", "payload": {"config": {}}, "ref": "1", "join_ref": "1",
    }
    # Heartbeats carry no join_ref key at all.
    beat = json.loads(encode(Message("phoenix", "heartbeat", {}, "7"), VSN1))
    assert "join_ref" not in beat and beat["ref"] == "7"


def test_vsn2_encodes_an_array_in_phoenix_order() -> None:
    msg = Message("realtime:room1", "broadcast", {"type": "broadcast"}, "3", "1")
    assert json.loads(encode(msg, VSN2)) == ["1", "3", "realtime:room1", "broadcast", {"type": "broadcast"}]


def test_decode_server_frames_of_both_versions() -> None:
    reply = decode('{"topic":"phoenix","event":"phx_reply","payload":{"status":"ok","response":{}},"ref":"5"}')
    assert reply == Message("phoenix", "phx_reply", {"status": "ok", "response": {}}, "5", None)
    assert reply.is_reply
    push = decode('[null,null,"realtime:r","postgres_changes",{"ids":[1]}]', VSN2)
    assert push == Message("realtime:r", "postgres_changes", {"ids": [1]}, None, None)
    # Integer refs (some servers) become strings so they compare with ours.
    assert decode('{"topic":"t","event":"e","payload":{},"ref":12}').ref == "12"


@pytest.mark.parametrize(
    "frame",
    ["not json", "[1,2,3]", '{"topic":1,"event":"x"}', '{"event":"x"}', "42", '[null,null,5,"e",{}]'],
)
def test_decode_rejects_non_phoenix_frames(frame: str) -> None:
    with pytest.raises(ProtocolError):
        decode(frame)


def test_decode_binary_v2_push_reply_broadcast() -> None:
    push = bytes([0, 1, 3, 2]) + b"1" + b"abc" + b"ev" + b"\x01\x02"
    assert decode(push, VSN2) == Message("abc", "ev", {"binary": "0102"}, None, "1")
    reply = bytes([1, 1, 2, 1, 2]) + b"1" + b"10" + b"t" + b"ok" + b"{}"
    got = decode(reply, VSN2)
    assert (got.event, got.ref, got.topic, got.payload["status"]) == ("phx_reply", "10", "t", "ok")
    bcast = bytes([2, 1, 1]) + b"t" + b"e" + b"xy"
    assert decode(bcast, VSN2) == Message("t", "e", {"binary": b"xy".hex()})
    with pytest.raises(ProtocolError):
        decode(bytes([9, 0]), VSN2)
    with pytest.raises(ProtocolError):
        decode(bytes([1, 5]), VSN2)


def test_unknown_vsn_is_a_config_error_naming_the_value() -> None:
    with pytest.raises(ConfigError, match=r"'3\.0\.0'"):
        encode(Message("t", "e"), "3.0.0")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@given(
    topic=st.text(min_size=1, max_size=30),
    event=st.text(min_size=1, max_size=20),
    payload=json_values,
    ref=st.none() | st.integers(0, 10**6).map(str),
    join_ref=st.none() | st.integers(0, 10**6).map(str),
    vsn=st.sampled_from([VSN1, VSN2]),
)
def test_roundtrip(topic: str, event: str, payload: object, ref: str | None, join_ref: str | None, vsn: str) -> None:
    msg = Message(topic, event, payload, ref, join_ref)
    assert decode(encode(msg, vsn), vsn) == msg


def test_socket_url_shapes() -> None:
    assert socket_url("http://localhost:8000/realtime/v1", "KEY", VSN1) == (
        "ws://localhost:8000/realtime/v1/websocket?apikey=KEY&vsn=1.0.0"
    )
    assert socket_url("https://x.example/socket/", None, VSN2) == "wss://x.example/socket/websocket?vsn=2.0.0"
    assert socket_url("ws://h:4000/socket/websocket?log_level=info", "k").startswith(
        "ws://h:4000/socket/websocket?log_level=info&apikey=k"
    )
    with pytest.raises(ConfigError, match="ftp://x"):
        socket_url("ftp://x")


def test_transcript_redacts_apikey_and_access_tokens() -> None:
    canary_key = "canary-apikey-value-123456"
    canary_token = "not-a-jwt-canary-access-token"
    red = Redactor([canary_key])
    t = Transcript(red)
    t.record("note", f"connect ws://h/socket/websocket?apikey={canary_key}&vsn=1.0.0")
    t.record("sent", json.dumps({"topic": "realtime:x", "event": "phx_join",
                                 "payload": {"access_token": canary_token, "config": {}}, "ref": "1"}))
    t.record("sent", json.dumps({"topic": "realtime:x", "event": "access_token",
                                 "payload": {"access_token": "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoiYW5vbiJ9.sig"}}))
    text = json.dumps(t.to_list()) + str(t)
    assert canary_key not in text and canary_token not in text and "eyJhbGci" not in text
    assert text.count(REDACTED) >= 3
    assert [e.direction for e in t.entries] == ["note", "sent", "sent"]
    assert all(e.t_ms >= 0 for e in t.entries)


def test_transcript_is_bounded() -> None:
    t = Transcript(Redactor(), limit=3)
    for i in range(10):
        t.record("recv", f"frame {i}")
    out = t.to_list()
    assert len(out) == 4 and out[-1]["frame"] == "7 more frames not kept"


def test_handshake_refused_carries_status_and_error_text() -> None:
    exc = HandshakeRefused(404, '{"error":"Tenant not found"}', {"content-type": "application/json"}, "ws://h")
    assert isinstance(exc, RtbookError)
    assert (exc.status, exc.error_text, exc.kind) == (404, "Tenant not found", "handshake")
    assert "404" in str(exc) and "Tenant not found" in str(exc)
    legacy = HandshakeRefused(403, "", {}, "ws://h")
    assert legacy.error_text == "" and "(empty body)" in str(legacy)
