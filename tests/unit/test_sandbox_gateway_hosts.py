"""The stand-in gateway's ``hosts`` matching and its priority, per Kong version.

Vectors follow Kong 2.8.1 ``kong/router.lua`` (MATCH_RULES.HOST: plain host with or without the request's port,
wildcards as ``.+`` against the Host with port, 80 added when absent) and Kong 3.9.3
``kong/router/transform.lua`` (hosts become ``http.host ==`` / ``=^`` / ``^=`` on the Host without port, an entry's
port must equal ``net.dst.port``, the listening port), and both versions' priority: a route with ``hosts`` and
``paths`` outranks a ``paths``-only route whatever the path lengths (2.8.1 ``sort_routes`` by match-rule count,
3.9.3 ``get_priority`` match weight). The multi-tenant layout rtbook's ``tenant add`` writes is the last case.
"""

from __future__ import annotations

import pytest

from rtbook.sandbox import gateway as gw

ROUTES = """
_format_version: '2.1'
services:
  - name: plain
    url: http://plain:1/
    routes: [{name: plain, hosts: [a.example.com], paths: [/x]}]
  - name: with-port
    url: http://port:1/
    routes: [{name: with-port, hosts: ['p.example.com:8000'], paths: [/x]}]
  - name: leading
    url: http://lead:1/
    routes: [{name: leading, hosts: ['*.wild.com'], paths: [/x]}]
  - name: trailing
    url: http://trail:1/
    routes: [{name: trailing, hosts: ['trail.*'], paths: [/x]}]
"""

MULTI = """
_format_version: '2.1'
services:
  - name: realtime-v1-ws
    url: http://my-tenant.supabase-realtime:4000/socket
    routes: [{name: realtime-v1-ws, paths: [/realtime/v1/]}]
  - name: realtime-v1-rest
    url: http://my-tenant.supabase-realtime:4000/api
    routes: [{name: realtime-v1-rest, paths: [/realtime/v1/api]}]
  - name: realtime-v1-ws-tenant-b
    url: http://tenant-b.supabase-realtime:4000/socket
    routes: [{name: realtime-v1-ws-tenant-b, hosts: [b.example.com], paths: [/realtime/v1/]}]
"""


def _route(text: str, version: str, path: str, host: str, listen: int | None = 8000) -> str | None:
    config = gw.parse_kong(text, gw.Version(version))
    hit = gw.match_route(config, path, "GET", host, listen_port=listen)
    return hit.route.name if hit else None


@pytest.mark.parametrize("version", ["2.8.1", "3.9.3"])
@pytest.mark.parametrize(("host", "route"), [
    ("a.example.com", "plain"),
    ("a.example.com:8443", "plain"),  # a port-less entry matches any port
    ("A.Example.com", "plain"),
    ("b.example.com", None),
    ("x.wild.com", "leading"),
    ("x.y.wild.com:1234", "leading"),
    ("wild.com", None),  # the wildcard needs at least one character
    ("trail.org", "trailing"),
    ("", None),
])
def test_hosts_match_like_kong(version: str, host: str, route: str | None) -> None:
    assert _route(ROUTES, version, "/x", host) == route


def test_an_entry_with_a_port_follows_each_version() -> None:
    # 2.8.1 compares the Host header's port (80 when absent); 3.9.3 the port Kong listens on (net.dst.port).
    assert _route(ROUTES, "2.8.1", "/x", "p.example.com:8000", listen=9999) == "with-port"
    assert _route(ROUTES, "2.8.1", "/x", "p.example.com", listen=8000) is None  # no port = 80
    assert _route(ROUTES, "3.9.3", "/x", "p.example.com", listen=8000) == "with-port"
    assert _route(ROUTES, "3.9.3", "/x", "p.example.com:8000", listen=9999) is None


@pytest.mark.parametrize("version", ["2.8.1", "3.9.3"])
@pytest.mark.parametrize(("path", "host", "route"), [
    ("/realtime/v1/websocket", "b.example.com", "realtime-v1-ws-tenant-b"),
    ("/realtime/v1/websocket", "b.example.com:8000", "realtime-v1-ws-tenant-b"),
    ("/realtime/v1/websocket", "localhost:8000", "realtime-v1-ws"),
    # hosts+paths beats the longer paths-only /realtime/v1/api: two criteria outrank one.
    ("/realtime/v1/api/broadcast", "b.example.com", "realtime-v1-ws-tenant-b"),
    ("/realtime/v1/api/broadcast", "localhost", "realtime-v1-rest"),
])
def test_one_gateway_routes_two_tenants_by_host(version: str, path: str, host: str, route: str) -> None:
    assert _route(MULTI, version, path, host) == route
