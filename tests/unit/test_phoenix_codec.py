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
    encode_user_broadcast,
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


# Binary frames below are written out byte by byte from the layout in the research notes (§8, from
# supabase/realtime v2.129.8 lib/realtime_web/socket/v2_serializer.ex and supabase-js v2.112.2
# packages/core/realtime-js/src/lib/serializer.ts), never produced by our own encoder.


def test_decode_binary_kind0_push_has_a_4_byte_header() -> None:
    # [kind=0, join_ref_len=1, topic_len=3, event_len=2] "1" "abc" "ev" <payload 0x01 0x02>
    push = b"\x00\x01\x03\x02" + b"1" + b"abc" + b"ev" + b"\x01\x02"
    assert decode(push, VSN2) == Message("abc", "ev", {"binary": "0102"}, None, "1")


def test_decode_binary_kind1_reply_has_a_5_byte_header() -> None:
    # [kind=1, join_ref_len=1, ref_len=2, topic_len=1, status_len=2] "1" "10" "t" "ok" <payload "{}">
    reply = b"\x01\x01\x02\x01\x02" + b"1" + b"10" + b"t" + b"ok" + b"{}"
    got = decode(reply, VSN2)
    assert got == Message("t", "phx_reply", {"status": "ok", "response": {"binary": b"{}".hex()}}, "10", "1")
    assert got.is_reply


def test_decode_binary_kind2_broadcast_has_a_3_byte_header() -> None:
    # [kind=2, topic_len=1, event_len=1] "t" "e" <payload "xy">
    bcast = b"\x02\x01\x01" + b"t" + b"e" + b"xy"
    assert decode(bcast, VSN2) == Message("t", "e", {"binary": b"xy".hex()})


def test_decode_binary_kind4_user_broadcast_json_like_supabase_js() -> None:
    topic, event, body = b"realtime:room1", b"cursor", b'{"x":1,"y":[2,3]}'
    # [kind=4, topic_len, user_event_len, metadata_len=0, encoding=1 (JSON)] topic event <no metadata> payload
    frame = bytes([4, len(topic), len(event), 0, 1]) + topic + event + body
    got = decode(frame, VSN2)
    # The SDK's shape: Phoenix event "broadcast", the user event inside, the payload JSON-parsed, no meta.
    assert got == Message("realtime:room1", "broadcast",
                          {"type": "broadcast", "event": "cursor", "payload": {"x": 1, "y": [2, 3]}})
    assert got.ref is None and got.join_ref is None


def test_decode_binary_kind4_with_metadata_and_binary_encoding() -> None:
    topic, event, meta, body = b"realtime:r", b"blob", b'{"id":"abc"}', b"\x00\xff\x10"
    # encoding=0: the payload is raw bytes; the metadata sits between the event and the payload.
    frame = bytes([4, len(topic), len(event), len(meta), 0]) + topic + event + meta + body
    got = decode(frame, VSN2)
    assert got.topic == "realtime:r" and got.event == "broadcast"
    assert got.payload == {"type": "broadcast", "event": "blob", "payload": {"binary": "00ff10"},
                           "meta": {"id": "abc"}}


def test_decode_binary_kind4_payload_starts_after_five_plus_the_lengths() -> None:
    # A 1-byte-off reading (the old 4-byte header) would take "\x01r" as the topic start; the right
    # one finds the topic "ab", the event "c" and the payload exactly at 5 + 2 + 1 + 0.
    frame = bytes([4, 2, 1, 0, 1]) + b"ab" + b"c" + b"[1]"
    got = decode(frame, VSN2)
    assert (got.topic, got.payload["event"], got.payload["payload"]) == ("ab", "c", [1])


@pytest.mark.parametrize(
    "frame",
    [
        bytes([9, 0]),  # unknown kind
        bytes([1, 5]),  # header cut short
        bytes([2, 5, 1]) + b"ab",  # topic longer than the frame
        bytes([4, 1, 1, 0, 1]) + b"t" + b"e" + b"not json",  # encoding 1 but no JSON
        bytes([4, 1, 1, 0, 7]) + b"t" + b"e" + b"{}",  # unknown encoding byte
        b"",
    ],
)
def test_decode_rejects_malformed_binary(frame: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode(frame, VSN2)


def test_encode_kind3_user_broadcast_json_matches_the_layout() -> None:
    frame = encode_user_broadcast("realtime:room1", "cursor", {"x": 1}, join_ref="1", ref="12")
    # [kind=3, join_ref_len=1, ref_len=2, topic_len=14, user_event_len=6, metadata_len=0, encoding=1]
    expected = (b"\x03\x01\x02\x0e\x06\x00\x01" + b"1" + b"12" + b"realtime:room1" + b"cursor" + b""
                + b'{"x":1}')
    assert frame == expected


def test_encode_kind3_binary_payload_and_metadata() -> None:
    frame = encode_user_broadcast("t", "e", b"\x00\x01", join_ref=None, ref="3", metadata={"k": "v"})
    # No join_ref (length 0), metadata JSON between the event and the payload, encoding 0 (binary).
    assert frame == b"\x03\x00\x01\x01\x01\x09\x00" + b"3" + b"t" + b"e" + b'{"k":"v"}' + b"\x00\x01"


def test_encode_kind3_refuses_strings_over_255_bytes() -> None:
    with pytest.raises(ConfigError, match="topic is 256 bytes"):
        encode_user_broadcast("x" * 256, "e", {}, join_ref="1", ref="2")
    # The limit is in bytes, not characters: 128 two-byte characters are 256 bytes.
    with pytest.raises(ConfigError, match="event is 256 bytes"):
        encode_user_broadcast("t", "é" * 128, {}, join_ref="1", ref="2")


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
