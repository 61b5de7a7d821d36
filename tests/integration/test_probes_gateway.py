"""gateway.* probes against a small Kong-like stand-in (aiohttp, real sockets) in front of the
sandbox's Realtime-compatible server, and against closed and silent ports.

The stand-in does what the official kong.yml asks of Kong for Realtime: key-auth on apikey
(header or query), CORS preflight, request-termination of /realtime/v1/api/tenants, longest-prefix
routing with strip_path, the upstream host as Host header (the tenant), and WebSocket proxying.
Each switch reproduces one misconfiguration.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from rtbook.checks._live import refusal_waits
from rtbook.registry import run_checks
from rtbook.results import Status
from tests.conftest import have_postgres, require
from tests.integration.sandbox_support import PRIVATE_CHANNELS_SQL
from tests.integration.test_phoenix_support import Lab, Silent, assert_no_canary, closed_port, lab_fixture

pytestmark = [pytest.mark.postgres, pytest.mark.sandbox]

GATEWAY = ("gateway.",)


@dataclass
class Switches:
    upstream_host: str = "realtime-dev.supabase-realtime"
    key_auth: bool = True
    hide_credentials: bool = False
    block_tenants: bool = True
    cors: bool = True
    ws_route: bool = True
    keys: set[str] = field(default_factory=set)


class KongLike:
    """A threaded aiohttp app proxying /realtime/v1/* to the Realtime-compatible server."""

    def __init__(self, upstream: str, keys: set[str]) -> None:
        self.upstream = upstream
        self.sw = Switches(keys=keys)
        self.loop = asyncio.new_event_loop()
        self.port = 0
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        assert ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        ready.set()
        self.loop.run_forever()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)

    def _json(self, status: int, message: str) -> web.Response:
        return web.json_response({"message": message}, status=status, headers={"Server": "kong/2.8.1"})

    async def handle(self, request: web.Request) -> web.StreamResponse:
        sw = self.sw
        path = request.path
        cors = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Credentials": "true"} if sw.cors else {}
        # Kong's cors: a preflight is OPTIONS with Origin and Access-Control-Request-Method (notes/kong.md §5).
        if (request.method == "OPTIONS" and sw.cors and request.headers.get("Origin")
                and request.headers.get("Access-Control-Request-Method")):
            return web.Response(status=200, headers={
                **cors, "Access-Control-Allow-Methods": "GET,HEAD,PUT,PATCH,POST,DELETE,OPTIONS,TRACE,CONNECT",
                "Access-Control-Allow-Headers": request.headers.get("Access-Control-Request-Headers", ""),
                "Server": "kong/2.8.1"})
        if path.startswith("/realtime/v1/api/tenants") and sw.block_tenants:
            return self._json(403, "Access is forbidden.")
        if path.startswith("/realtime/v1/api"):
            upstream_path = "/api" + path[len("/realtime/v1/api"):]
        elif path.startswith("/realtime/v1/") and sw.ws_route:
            upstream_path = "/socket/" + path[len("/realtime/v1/"):]
        else:
            return self._json(404, "no Route matched with those values")
        key = request.headers.get("apikey") or request.query.get("apikey")
        if sw.key_auth:
            if not key:
                return self._json(401, "No API key found in request")
            if key not in sw.keys:
                return self._json(401, "Invalid authentication credentials")
        query = dict(request.query)
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in ("host", "upgrade", "connection", "sec-websocket-key",
                                        "sec-websocket-version", "sec-websocket-extensions")}
        if sw.hide_credentials:
            query.pop("apikey", None)
            headers.pop("apikey", None)
        headers["Host"] = sw.upstream_host
        url = self.upstream + upstream_path
        async with aiohttp.ClientSession() as session:
            if request.headers.get("Upgrade", "").lower() == "websocket":
                try:
                    up = await session.ws_connect(url, params=query, headers=headers)
                except aiohttp.WSServerHandshakeError:
                    # Replay the upgrade as a plain request to pass the refusal's status and body on.
                    raw = {**headers, "Upgrade": "websocket", "Connection": "Upgrade",
                           "Sec-WebSocket-Key": request.headers.get("Sec-WebSocket-Key", ""),
                           "Sec-WebSocket-Version": "13"}
                    async with session.get(url, params=query, headers=raw) as resp:
                        return web.Response(status=resp.status, body=await resp.read(), headers={
                            **cors, "Content-Type": resp.headers.get("Content-Type", "application/json")})
                down = web.WebSocketResponse()
                await down.prepare(request)

                async def pump(src: Any, dst: Any) -> None:
                    async for msg in src:
                        if msg.type == aiohttp.WSMsgType.TEXT:
                            await dst.send_str(msg.data)
                        elif msg.type == aiohttp.WSMsgType.BINARY:
                            await dst.send_bytes(msg.data)
                        else:
                            break
                    await dst.close()

                await asyncio.gather(pump(up, down), pump(down, up), return_exceptions=True)
                return down
            async with session.request(request.method, url, params=query, headers=headers,
                                       data=await request.read()) as resp:
                body = await resp.read()
                return web.Response(status=resp.status, body=body, headers={
                    **cors, "Content-Type": resp.headers.get("Content-Type", "application/json"),
                    "Via": "kong/2.8.1"})


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    require(have_postgres(), "PostgreSQL 15 binaries with wal2json are not installed")
    yield from lab_fixture()


@pytest.fixture
def kong(lab: Lab) -> Iterator[KongLike]:
    gw = KongLike(lab.realtime_url, {lab.anon_key, lab.service_key})
    try:
        yield gw
    finally:
        gw.stop()


def results(lab: Lab, kong: KongLike, only: Any = GATEWAY, **kwargs: Any) -> dict[str, Any]:
    target = lab.target(api_url=kong.url, realtime_url=None, **kwargs)
    report = run_checks(target, only=only)
    assert_no_canary(report, lab.canaries)
    return {r.id: r for r in report}


def test_healthy_gateway_all_pass(lab: Lab, kong: KongLike) -> None:
    # realtime.messages and the probe topic's policies, as Realtime's tenant migrations and an app using
    # private channels would have them (the stand-in runs no tenant migrations).
    lab.sql(PRIVATE_CHANNELS_SQL)
    got = results(lab, kong, only=("gateway.", "realtime."))
    assert "realtime.private" in got
    for r in got.values():
        if r.id == "realtime.health":
            assert r.status is Status.SKIP  # no direct URL given
            continue
        assert r.status is Status.PASS, str(r)
    ws = got["gateway.websocket"]
    assert ws.metrics["heartbeat_ms"] >= 0 and ws.metrics["connect_ms"] > 0
    assert got["realtime.join"].evidence["endpoint"].endswith("(gateway)")


def test_tenant_mismatch_through_the_gateway(lab: Lab, kong: KongLike) -> None:
    kong.sw.upstream_host = "supabase-realtime.internal"
    got = results(lab, kong, only=("gateway.rest", "gateway.websocket", "realtime.join"))
    for cid in ("gateway.rest", "gateway.websocket", "realtime.join"):
        assert (got[cid].status, got[cid].cause) == (Status.FAIL, "tenant_not_found"), str(got[cid])
        assert "compose.realtime.tenant_consistency" in got[cid].see_also
    assert got["gateway.websocket"].evidence["handshake"]["status"] == 404


def test_ws_route_missing(lab: Lab, kong: KongLike) -> None:
    kong.sw.ws_route = False
    got = results(lab, kong, only=("gateway.websocket", "gateway.rest"))
    assert (got["gateway.websocket"].status, got["gateway.websocket"].cause) == (Status.FAIL, "kong_no_route")
    assert "kong.realtime_ws" in got["gateway.websocket"].see_also
    assert got["gateway.rest"].status is Status.PASS


def test_no_apikey_forwarding(lab: Lab, kong: KongLike) -> None:
    kong.sw.hide_credentials = True
    got = results(lab, kong, only=("gateway.websocket",))
    r = got["gateway.websocket"]
    assert (r.status, r.cause) == (Status.FAIL, "missing_api_key"), str(r)
    assert "kong.realtime_auth" in r.see_also


def test_key_auth_missing(lab: Lab, kong: KongLike) -> None:
    kong.sw.key_auth = False
    r = results(lab, kong, only=("gateway.key_auth",))["gateway.key_auth"]
    assert (r.status, r.cause) == (Status.FAIL, "gateway_no_key_auth") and "kong.realtime_auth" in r.see_also
    assert "reached Realtime" in r.summary


def test_tenants_api_exposed(lab: Lab, kong: KongLike) -> None:
    kong.sw.block_tenants = False
    r = results(lab, kong, only=("gateway.tenants_api_blocked",))["gateway.tenants_api_blocked"]
    # The stand-in server has no admin list route: Realtime's router answers, not Kong.
    assert r.status in (Status.WARN, Status.FAIL), str(r)
    assert r.cause == "tenants_api_exposed" and "kong.tenants_api_blocked" in r.see_also


def test_cors_missing(lab: Lab, kong: KongLike) -> None:
    kong.sw.cors = False
    r = results(lab, kong, only=("gateway.cors",))["gateway.cors"]
    assert (r.status, r.cause) == (Status.FAIL, "cors_missing") and "Access-Control-Allow-Origin" in r.summary


def test_wrong_anon_key_at_kong(lab: Lab, kong: KongLike) -> None:
    kong.sw.keys = {lab.service_key}
    got = results(lab, kong, only=("gateway.rest", "gateway.websocket"))
    for r in got.values():
        assert (r.status, r.cause) == (Status.FAIL, "kong_invalid_key"), str(r)


@pytest.mark.parametrize("kind", ["closed", "silent"])
def test_unreachable_gateway_fails_within_the_timeout(lab: Lab, kind: str) -> None:
    timeout = 1.0
    with Silent() as silent:
        url = silent.url if kind == "silent" else f"http://127.0.0.1:{closed_port()}"
        target = lab.target(api_url=url, realtime_url=None, timeout=timeout)
        started = time.monotonic()
        report = run_checks(target, only=("gateway.", "realtime.join", "realtime.presence"))
        elapsed = time.monotonic() - started
    expected = "timeout" if kind == "silent" else "unreachable"
    for r in report:
        assert r.status is Status.FAIL and r.cause == expected, str(r)
    # HTTP probes wait the timeout; a WebSocket upgrade waits it plus Realtime's CONNECT_ERROR_BACKOFF,
    # since a refusal may be held that long.
    waits = refusal_waits(target)
    sockets = {"gateway.websocket", "realtime.join", "realtime.presence"}
    assert elapsed < sum((waits.connect if r.id in sockets else timeout) + 0.5 for r in report), elapsed
