"""Kong's router pieces, as rtbook/config/kong_router.py and the stand-in gateway read them.

Test vectors for path normalisation are the cases of Kong 3.9.3 ``spec/01-unit/18-tools_uri_spec.lua``
(``normalize(uri, true)``, the form the router uses); the v0 joins are the worked cases of
``get_upstream_uri_v0`` (3.9.3 ``kong/router/utils.lua``, 2.8.1 ``kong/router.lua``) in notes/kong.md §10.
Both implementations are fed the same vectors: they share no code, so each checks the other.
"""

from __future__ import annotations

import pytest

from rtbook.config.kong import parse_kong
from rtbook.config.kong_router import ExpressionError, Request, join_v0, normalize_path, parse_expression, path_matchers
from rtbook.sandbox import gateway as gw

NORMALIZE = [
    ("", ""),
    ("/", "/"),
    ("/a/b/c/", "/a/b/c/"),
    ("/a%2Fb%2Fc/", "/a%2Fb%2Fc/"),  # reserved characters stay encoded
    ("/a%2fb%2fc/", "/a%2Fb%2Fc/"),  # ... upper-cased
    ("/f%6f%6f", "/foo"),  # unreserved ones are decoded
    ("/%6B%6f%6e%67", "/kong"),
    ("/%2E", "/"),
    ("/%20%21%23%24%25%26%27%28%29%2A%2B%2C%2F%3A%3B%3D%3F%40%5B%5D",
     "/ %21%23%24%25%26%27%28%29%2A%2B%2C%2F%3A%3B%3D%3F%40%5B%5D"),
    ("/./", "/"),
    ("/.", "/"),
    ("/..", "/"),
    ("/../", "/"),
    ("/./.././../", "/"),
    ("/a/b/c/./../../g", "/a/g"),
    ("mid/content=5/../6", "mid/6"),
    ("//", "/"),
    ("/////", "/"),
    ("/a//b//", "/a/b/"),
    ("/realtime/v1/api//tenants", "/realtime/v1/api/tenants"),
    ("/realtime/v1/x/../api/tenants", "/realtime/v1/api/tenants"),
]


@pytest.mark.parametrize(("raw", "want"), NORMALIZE)
def test_normalize_like_kong(raw: str, want: str) -> None:
    assert normalize_path(raw) == want
    assert gw.normalize(raw) == want


def test_normalize_works_byte_for_byte() -> None:
    # Kong works on bytes: %C3%B8 becomes the two UTF-8 bytes of 'ø'.
    for normalize in (normalize_path, gw.normalize):
        assert normalize("/endel%C3%B8st").encode("latin-1") == "/endeløst".encode()
        got = normalize("/%C3%A4/a/%2e./a%2E//a/%2e/./a/../a/%2e%2E/%5f%99%af%2f%2F")
        assert got.encode("latin-1") == "/ä/a./a/_".encode() + b"\x99\xaf%2F%2F"


def test_stand_in_escapes_the_upstream_path_like_kong() -> None:
    keep = "/!#$%&'()*+,/:;=?@[]ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~"
    assert gw._escape(keep) == keep
    assert gw._escape("/a b/c d") == "/a%20b/c%20d"
    assert gw._escape("/endeløst".encode().decode("latin-1")) == "/endel%C3%B8st"


# (service path, strip_path, matched prefix, request path) -> upstream path
V0 = [
    ("/socket", True, "/realtime/v1/", "/realtime/v1/websocket", "/socket/websocket"),
    ("/socket", True, "/realtime/v1/", "/realtime/v1/", "/socket/"),
    ("/api", True, "/realtime/v1/api", "/realtime/v1/api/broadcast", "/api/broadcast"),
    ("/api", True, "/realtime/v1/api", "/realtime/v1/api", "/api"),
    ("/", True, "/auth/v1/", "/auth/v1/token", "/token"),
    ("/", True, "/rest/v1/", "/rest/v1/", "/"),
    ("/dash/", True, "/", "/x", "/dash/x"),
    ("/dash/", True, "/x", "/x", "/dash"),
    ("/dash/", True, "/x/", "/x/", "/dash/"),
    ("/dash/", True, "/x", "/x/y", "/dash/y"),
    ("/socket", False, "/realtime/v1/", "/realtime/v1/websocket", "/socket/realtime/v1/websocket"),
    ("/socket", False, "/", "/", "/socket"),
    ("/dash/", False, "/", "/a", "/dash/a"),
    (None, True, "/x", "/x./y", "/y"),  # a leading ./ of the rest is dropped
    (None, True, "/x/", "/x/..", "/"),
]


@pytest.mark.parametrize(("base", "strip", "prefix", "path", "want"), V0)
def test_v0_join_like_kong(base: str | None, strip: bool, prefix: str, path: str, want: str) -> None:
    assert join_v0(base, strip, prefix, path) == want
    route = gw.Route(name="r", service=gw.Service("s", "http", "h", 80, base, "http"), strip_path=strip)
    assert gw.upstream_path(base, route, prefix, path) == want


@pytest.mark.parametrize(
    ("major", "fmt", "path", "regex"),
    [
        (2, "2.1", "/realtime/v1/", False),
        (2, "2.1", "/realtime/v1/websocket$", True),  # 2.8: any character outside the plain set makes a regex
        (2, "2.1", "~/x", False),  # 2.8 has no ~ marker: a literal prefix
        (3, "2.1", "/realtime/v1/websocket$", True),  # the 2.1 -> 3.0 migration prepends ~
        (3, "2.1", "~/x", True),
        (3, "3.0", "/realtime/v1/websocket$", False),  # a 3.0 file: only ~ marks a regex
        (3, "3.0", "~/realtime/v1/(ws|websocket)$", True),
    ],
)
def test_regex_paths_per_version(major: int, fmt: str, path: str, regex: bool) -> None:
    assert path_matchers([path], major, fmt)[0].regex is regex
    version = gw.Version("2.8.1" if major == 2 else "3.9.3")
    assert (gw._path_rules([path], version, fmt, "route 'r'")[0].pattern is not None) is regex


def test_a_3_0_file_refuses_a_prefix_that_is_not_normalised() -> None:
    assert path_matchers(["/a//b"], 3, "3.0")[0].error == "non-normalized path, consider use '/a/b' instead"
    with pytest.raises(gw.GatewayConfigError, match="non-normalized path"):
        gw._path_rules(["/a//b"], gw.Version("3.9.3"), "3.0", "route 'r'")


@pytest.mark.parametrize(
    ("expression", "path", "method", "matched", "part"),
    [
        ('http.path == "/rest/v1/"', "/rest/v1/", "GET", True, "/rest/v1/"),
        ('http.path == "/rest/v1/"', "/rest/v1/x", "GET", False, None),
        ('http.path ^= "/realtime/v1/" && http.method == "GET"', "/realtime/v1/ws", "GET", True, "/realtime/v1/"),
        ('http.path ^= "/realtime/v1/" && http.method == "GET"', "/realtime/v1/ws", "POST", False, None),
        ('http.path ~ r#"^/api/v[0-9]+/"#', "/api/v12/x", "GET", True, "/api/v12/"),
        ('(http.method == "GET" || http.method == "HEAD") && http.path ^= "/x"', "/x/y", "HEAD", True, "/x"),
        ('!(http.path ^= "/x")', "/y", "GET", True, None),
    ],
)
def test_expressions_read_alike(expression: str, path: str, method: str, matched: bool, part: str | None) -> None:
    assert parse_expression(expression).match(Request(path, method)) == (matched, part)
    stand_in = gw._compile_expression(expression, "route 'r'")
    assert stand_in(gw._Req(path, method, "", {})) == (matched, part)


def test_unmodelled_expressions_are_said_so() -> None:
    with pytest.raises(ExpressionError):
        parse_expression('net.src.ip in 10.0.0.0/8')
    with pytest.raises(gw.GatewayConfigError):
        gw._compile_expression('net.src.ip in 10.0.0.0/8', "route 'r'")


ROUTES = """
_format_version: '2.1'
services:
  - name: long
    url: http://long:1/long
    routes: [{name: long, paths: [/realtime/v1/api]}]
  - name: short-get
    url: http://short:1/short
    routes: [{name: short-get, paths: [/realtime/v1/], methods: [GET]}]
  - name: host-only
    url: http://host:1/
    routes: [{name: host-only, hosts: [api.example.com]}]
  - name: exact
    url: http://exact:1/
    routes: [{name: exact, expression: 'http.path == "/realtime/v1/api/x"'}]
"""


@pytest.mark.parametrize(
    ("path", "method", "host", "route"),
    [
        ("/realtime/v1/api/broadcast", "POST", "localhost", "long"),
        ("/realtime/v1/api/ping", "GET", "localhost", "short-get"),  # methods+paths beat a longer path-only route
        ("/realtime/v1/api/ping", "GET", "api.example.com", "short-get"),  # two criteria beat hosts alone
        ("/realtime/v1/api/x", "POST", "localhost", "exact"),  # expression routes first
        ("/other", "GET", "api.example.com", "host-only"),
        ("/other", "GET", "localhost", None),
    ],
)
def test_route_priority_alike(path: str, method: str, host: str, route: str | None) -> None:
    config = parse_kong(ROUTES, source="kong.yml", kong_version="3.9.3", router_flavor="expressions")
    found = config.match(path, method, host)
    assert (found.route.name if found else None) == route
    stand_in = gw.parse_kong(ROUTES, gw.Version("3.9.3", router_flavor="expressions"))
    hit = gw.match_route(stand_in, path, method, host)
    assert (hit.route.name if hit else None) == route
