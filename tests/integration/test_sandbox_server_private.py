"""Private channels of the stand-in: RLS policies on ``realtime.messages`` decide (notes §5; v2.129.8
``lib/realtime/tenants/authorization.ex``, ``broadcast_handler.ex``, ``presence_handler.ex``).

Reading (the join) needs a SELECT policy that lets the JWT's role see a row of the topic (``realtime.topic()``),
writing (broadcast, presence track) an INSERT policy. Without it a broadcast is dropped silently — not even an ack
— and a track is answered with an error.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from tests.integration.sandbox_support import cluster_and_server
from tests.integration.test_sandbox_server import API_SECRET, JWT_SECRET, Stack, token
from tests.integration.test_sandbox_server_versions import NO_DELAYS, _config

pytestmark = [pytest.mark.postgres, pytest.mark.sandbox]

POLICIES = (
    # read: two rooms and a per-user room named after the JWT's sub
    "create policy read_rooms on realtime.messages for select to authenticated "
    "using (realtime.topic() in ('room-ok', 'room-read') or realtime.topic() = 'user-' || (auth.jwt() ->> 'sub'))",
    # write: one room only
    "create policy write_room on realtime.messages for insert to authenticated "
    "with check (realtime.topic() = 'room-ok')",
    # a policy that fails when evaluated for topic 'boom' (the subquery keeps the planner from folding it)
    "create policy boom on realtime.messages for select to authenticated "
    "using (case when realtime.topic() = 'boom' then 1 / (select 0) = 1 else false end)",
)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with cluster_and_server(JWT_SECRET, _config, setup_sql=POLICIES, env=NO_DELAYS,
                            kept_out_of_the_log=(JWT_SECRET, API_SECRET)) as (cluster, server):
        yield Stack(cluster, server)


PRIVATE = {"private": True}


def user(sub: str = "u1") -> str:
    return token("authenticated", sub=sub)


def test_join_is_authorized_by_select_policies(stack: Stack) -> None:
    ph = stack.ws(apikey=token())  # anon socket; the channel token decides
    # anon has no policy: the real text names the sub-topic (no `realtime:`)
    assert ph.join("realtime:room-ok", PRIVATE)["response"]["reason"] == (
        "Unauthorized: You do not have permissions to read from this Channel topic: room-ok")
    assert ph.join("realtime:room-ok", PRIVATE, access_token=user())["status"] == "ok"
    assert ph.join("realtime:user-u1", PRIVATE, access_token=user("u1"))["status"] == "ok"
    assert ph.join("realtime:user-u2", PRIVATE, access_token=user("u1"))["response"]["reason"] == (
        "Unauthorized: You do not have permissions to read from this Channel topic: user-u2")
    # a policy that raises: logged as RlsPolicyError, answered Unauthorized
    assert ph.join("realtime:boom", PRIVATE, access_token=user())["response"]["reason"] == (
        "Unauthorized: You do not have permissions to read from this Channel topic: boom")
    # the same topic as a public channel needs no policy
    assert ph.join("realtime:room-read", {}, access_token=token())["status"] == "ok"
    ph.close()
    text = stack.server.log_text()
    assert re.search(r"error_code=RlsPolicyError sub=u1 exp=\d+ \[error\] RlsPolicyError: %Postgrex.Error\{\n"
                     r"  message: nil,\n  postgres: %\{\n    code: :division_by_zero,", text)
    assert re.search(r"error_code=Unauthorized exp=\d+ \[error\] Unauthorized: You do not have permissions to read "
                     r"from this Channel topic: room-ok$", text, flags=re.MULTILINE)


def test_broadcast_and_presence_need_the_insert_policy(stack: Stack) -> None:
    a, b, public = stack.ws(apikey=user()), stack.ws(apikey=user()), stack.ws(apikey=user())
    cfg = {**PRIVATE, "broadcast": {"ack": True}, "presence": {"key": "a", "enabled": True}}
    for room in ("room-ok", "room-read"):
        assert a.join(f"realtime:{room}", cfg)["status"] == "ok"
        assert b.join(f"realtime:{room}", {**PRIVATE, "presence": {"key": "b", "enabled": True}})["status"] == "ok"
        assert public.join(f"realtime:{room}", {"presence": {"key": "p", "enabled": True}})["status"] == "ok"
    # allowed room: ack, delivered to the private reader only (the public channel is another fan-out)
    ref = a.send("realtime:room-ok", "broadcast", {"type": "broadcast", "event": "hi", "payload": {"n": 1}})
    assert a.reply(ref)["payload"] == {"status": "ok", "response": {}}
    assert b.event("broadcast", pred=lambda m: m["topic"] == "realtime:room-ok")["payload"] == {
        "type": "broadcast", "event": "hi", "payload": {"n": 1}}
    public.nothing("broadcast", 0.5)
    # SELECT but no INSERT policy: dropped silently, no ack even with ack: true
    ref = a.send("realtime:room-read", "broadcast", {"type": "broadcast", "event": "no", "payload": {}})
    a.nothing("phx_reply", 1.5)
    b.nothing("broadcast", 0.5)
    # presence: track allowed on room-ok (the private reader sees the diff), refused on room-read
    ref = a.send("realtime:room-ok", "presence", {"type": "presence", "event": "TRACK", "payload": {"m": 1}})
    assert a.reply(ref)["payload"] == {"status": "ok", "response": {}}
    diff = b.event("presence_diff", pred=lambda m: m["topic"] == "realtime:room-ok")["payload"]
    assert list(diff["joins"]) == ["a"]
    ref = a.send("realtime:room-read", "presence", {"type": "presence", "event": "track", "payload": {"m": 1}})
    assert a.reply(ref)["payload"] == {"status": "error", "response": {}}
    assert re.search(r"error_code=UnableToHandlePresence sub=u1 exp=\d+ \[error\] UnableToHandlePresence: "
                     r":unauthorized$", stack.server.log_text(), flags=re.MULTILINE)
    # REST broadcast to a private topic: delivered when the caller's role may INSERT, else 202 and dropped
    body = {"messages": [{"topic": "room-ok", "event": "rest", "payload": {"r": 1}, "private": True}]}
    assert stack.http("POST", "/api/broadcast", headers={"Authorization": f"Bearer {token()}"}, body=body) == (
        202, b"")
    b.nothing("broadcast", 1.0)
    assert stack.http("POST", "/api/broadcast", headers={"Authorization": f"Bearer {user()}"}, body=body) == (
        202, b"")
    assert b.event("broadcast", pred=lambda m: m["payload"].get("event") == "rest")["payload"] == {
        "event": "rest", "payload": {"r": 1}, "type": "broadcast"}
    public.nothing("broadcast", 0.5)
    for ph in (a, b, public):
        ph.close()


def test_private_only_tenant_refuses_public_joins(stack: Stack) -> None:
    with stack.cluster.connect() as conn:
        conn.execute("update _realtime.tenants set private_only = true")
    time.sleep(1.1)
    try:
        ph = stack.ws(apikey=user())
        reason = ph.join("realtime:open")["response"]["reason"]
        assert reason == "PrivateOnly: This project only allows private channels"
        assert ph.join("realtime:room-ok", PRIVATE)["status"] == "ok"
        ph.close()
    finally:
        with stack.cluster.connect() as conn:
            conn.execute("update _realtime.tenants set private_only = false")
        time.sleep(1.1)


def test_access_token_refresh_re_evaluates_the_policies(stack: Stack) -> None:
    ph = stack.ws(apikey=token())
    assert ph.join("realtime:room-ok", PRIVATE, access_token=user())["status"] == "ok"
    ph.send("realtime:room-ok", "access_token", {"access_token": user("u9")})  # still allowed: stays open
    ph.nothing("system", 0.8)
    ph.send("realtime:room-ok", "access_token", {"access_token": token()})  # anon: no read policy any more
    msg = ph.event("system")["payload"]
    assert msg == {"extension": "system", "status": "error", "channel": "room-ok",
                   "message": "You do not have permissions to read from this Channel topic: room-ok"}
    ph.event("phx_close")
    ph.close()
