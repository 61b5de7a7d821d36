"""The Kong-compatible gateway as a real process in front of a real aiohttp upstream.

The upstream echoes what it received (path, query, headers) and runs a WebSocket echo, so each
Kong behaviour is observed on the wire: key-auth, acl, cors, strip_path, Host rewriting, the
request-transformer templates of the official entrypoint, request-termination, basic-auth, host
map resolution and WebSocket proxying (frames both ways, close codes, handshake error bodies).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import websocket

from rtbook.sandbox.gateway import (
    Version,
    entrypoint_env,
    expand_kong_yml,
    match_route,
    parse_kong,
    upstream_path,
)
from tests.conftest import CORPUS, require
from tests.integration.gateway_support import ANON, SERVICE, Upstream, start_gateway, stop

pytestmark = pytest.mark.sandbox

OFFICIAL = CORPUS / "official" / "2026-09-1f37f2a"

KONG_YML = """
_format_version: '2.1'
consumers:
  - username: DASHBOARD
  - username: anon
    keyauth_credentials:
      - key: $SUPABASE_ANON_KEY
      - key: $SUPABASE_PUBLISHABLE_KEY
  - username: service_role
    keyauth_credentials:
      - key: $SUPABASE_SERVICE_KEY
acls:
  - consumer: anon
    group: anon
  - consumer: service_role
    group: admin
basicauth_credentials:
  - consumer: DASHBOARD
    username: '$DASHBOARD_USERNAME'
    password: '$DASHBOARD_PASSWORD'
services:
  - name: realtime-v1-ws
    url: http://realtime-dev.supabase-realtime:4000/socket
    protocol: ws
    routes:
      - name: realtime-v1-ws
        strip_path: true
        paths:
          - /realtime/v1/
    plugins:
      - name: cors
      - name: key-auth
        config:
          hide_credentials: false
      - name: request-transformer
        config:
          add:
            headers:
              - "x-api-key:$LUA_RT_WS_EXPR"
          replace:
            querystring:
              - "apikey:$LUA_RT_WS_EXPR"
      - name: acl
        config:
          hide_groups_header: true
          allow:
            - admin
            - anon
  - name: realtime-v1-rest-tenants
    url: http://realtime-dev.supabase-realtime:4000/api/tenants
    routes:
      - name: realtime-v1-rest-tenants
        strip_path: true
        paths:
          - /realtime/v1/api/tenants
    plugins:
      - name: request-termination
        config:
          status_code: 403
          message: "Access is forbidden."
  - name: realtime-v1-rest
    url: http://realtime-dev.supabase-realtime:4000/api
    routes:
      - name: realtime-v1-rest
        strip_path: true
        paths:
          - /realtime/v1/api
    plugins:
      - name: cors
      - name: key-auth
        config:
          hide_credentials: true
      - name: request-transformer
        config:
          add:
            headers:
              - "Authorization: $LUA_AUTH_EXPR"
      - name: acl
        config:
          hide_groups_header: true
          allow:
            - admin
  - name: hidden-ws
    url: http://realtime-dev.supabase-realtime:4000/socket
    routes:
      - name: hidden-ws
        paths:
          - /hidden/
    plugins:
      - name: key-auth
        config:
          hide_credentials: true
      - name: request-transformer
        config:
          add:
            headers:
              - "x-api-key:$LUA_RT_WS_EXPR"
  - name: rest-v1
    url: http://rest:3000/
    routes:
      - name: rest-v1-all
        paths:
          - /rest/v1/
  - name: nowhere
    url: http://no-such-service:1234/
    routes:
      - name: nowhere
        paths:
          - /nowhere/
  - name: dashboard
    url: http://realtime-dev.supabase-realtime:4000/dash
    routes:
      - name: dashboard-all
        strip_path: true
        paths:
          - /
    plugins:
      - name: cors
      - name: basic-auth
        config:
          hide_credentials: true
"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    up = Upstream().start()
    yield up
    up.stop()


@pytest.fixture(scope="module", params=["3.9.3", "2.8.1"])
def version(request: pytest.FixtureRequest) -> str:
    """The Kong version the gateway answers as (the official 2026 and 2025 stacks)."""
    return str(request.param)


@pytest.fixture(scope="module")
def gw(upstream: Upstream, version: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("gw")
    hosts = {"realtime-dev.supabase-realtime": f"127.0.0.1:{upstream.port}", "rest": None}
    proc, port, log = start_gateway(tmp, KONG_YML, hosts, kong_version=version)
    assert port, log.read_text()
    yield f"127.0.0.1:{port}"
    assert stop(proc) == 0, log.read_text()
    text = log.read_text()
    for canary in (ANON, SERVICE, "dash-pw-canary"):
        assert canary not in text, "a key reached the gateway log"


# ---------------------------------------------------------------- pure parsing of the official file


def test_official_kong_yml_loads_and_routes_realtime_like_kong() -> None:
    require(OFFICIAL.is_dir(), f"corpus not found at {OFFICIAL}")
    env = {"SUPABASE_ANON_KEY": "a.b.c", "SUPABASE_SERVICE_KEY": "d.e.f", "SUPABASE_PUBLISHABLE_KEY": "",
           "SUPABASE_SECRET_KEY": "", "DASHBOARD_USERNAME": "u", "DASHBOARD_PASSWORD": "p",
           "JWT_ISSUER": "http://localhost:8000/auth/v1"}
    text = expand_kong_yml((OFFICIAL / "volumes/api/kong.yml").read_text(), entrypoint_env(env))
    assert "- key: $SUPABASE_PUBLISHABLE_KEY" not in text and "key: \n" not in text  # empty keys deleted
    assert "/.well-known/oauth-authorization-server/auth/v1" in text  # from JWT_ISSUER, as the script does
    kong = parse_kong(text, Version("3.9.3", router_flavor="expressions"))
    assert [k for k, _ in kong.consumers["anon"].keys] == ["a.b.c"]
    cases = {
        "/realtime/v1/websocket": ("realtime-v1-ws", "/socket/websocket"),
        "/realtime/v1/api/ping": ("realtime-v1-rest", "/api/ping"),
        "/realtime/v1/api/tenants/realtime-dev/health": (
            "realtime-v1-rest-tenants", "/api/tenants/realtime-dev/health"
        ),
        "/rest/v1/": ("rest-v1-openapi-root", "/"),
        "/rest/v1/todos": ("rest-v1-all", "/todos"),
        "/anything": ("dashboard-all", "/anything"),
    }
    for path, (name, up) in cases.items():
        found = match_route(kong, path)
        assert found is not None, path
        assert (found.route.name, upstream_path(found.route.service.path, found.route, found.prefix, found.path)) == (
            name, up), path
    ws = match_route(kong, "/realtime/v1/websocket")
    assert ws is not None and ws.route.service.host == "realtime-dev.supabase-realtime"
    assert ws.route.service.port == 4000 and ws.route.service.protocol == "http"  # url wins over protocol: ws


def test_unsupported_plugin_is_a_startup_error_naming_it(tmp_path: Path) -> None:
    old = "      - name: cors\n      - name: key-auth\n        config:\n          hide_credentials: true"
    text = KONG_YML.replace(old,
                            "      - name: rate-limiting\n      - name: key-auth\n        config:\n"
                            "          hide_credentials: true", 1)
    assert "rate-limiting" in text
    proc, port, log = start_gateway(tmp_path, text, {})
    try:
        assert port == 0 and proc.returncode == 2
        assert "rate-limiting" in log.read_text() and "not supported" in log.read_text()
    finally:
        stop(proc)  # only if it started after all


def test_unsupported_option_is_a_startup_error_naming_it(tmp_path: Path) -> None:
    text = KONG_YML.replace('          message: "Access is forbidden."\n',
                            '          message: "Access is forbidden."\n          echo: true\n', 1)
    assert "echo: true" in text
    proc, port, log = start_gateway(tmp_path, text, {})
    try:
        assert port == 0 and proc.returncode == 2
        assert "echo" in log.read_text() and "not supported" in log.read_text()
    finally:
        stop(proc)  # only if it started after all


@pytest.mark.parametrize(("option", "kong_version"), [("always_use_authenticated_groups: true", "2.8.1"),
                                                      ("whitelist: [anon]", "3.9.3")])
def test_option_of_another_kong_version_is_refused_like_kong(tmp_path: Path, option: str, kong_version: str) -> None:
    text = KONG_YML.replace("          hide_groups_header: true\n", f"          hide_groups_header: true\n"
                            f"          {option}\n", 1)
    proc, port, log = start_gateway(tmp_path, text, {}, kong_version=kong_version)
    try:
        assert port == 0 and proc.returncode == 2
        out = log.read_text()
        assert f"in '{option.split(':')[0]}': unknown field" in out and f"Kong {kong_version}" in out
    finally:
        stop(proc)  # only if it started after all


# ---------------------------------------------------------------- HTTP behaviour


def kong_message(r: requests.Response, version: str) -> str:
    """The message of a kong.response.error body, checking its version's template (3.x adds request_id)."""
    data = r.json()
    if version.startswith("3."):
        assert re.fullmatch(r"[0-9a-f]{32}", data.pop("request_id")), r.text
        assert r.headers["X-Kong-Request-Id"]
    assert r.text.startswith('{\n  "message":'), r.text  # the template, not compact JSON
    assert r.headers["Server"] == f"kong/{version}"
    return str(data.pop("message"))


def test_key_auth_missing_invalid_and_valid(gw: str, version: str) -> None:
    r = requests.get(f"http://{gw}/realtime/v1/api/ping", timeout=5)
    assert (r.status_code, kong_message(r, version)) == (401, "No API key found in request")
    assert r.headers["WWW-Authenticate"] == ("Key" if version.startswith("3.") else 'Key realm="kong"')
    r = requests.get(f"http://{gw}/realtime/v1/api/ping", headers={"apikey": "nope"}, timeout=5)
    invalid = "Unauthorized" if version.startswith("3.") else "Invalid authentication credentials"
    assert (r.status_code, kong_message(r, version)) == (401, invalid)
    assert r.headers.get("WWW-Authenticate") == ("Key" if version.startswith("3.") else None)
    r = requests.get(f"http://{gw}/realtime/v1/api/ping", headers={"apikey": SERVICE}, timeout=5)
    assert r.status_code == 200
    echo = r.json()
    assert echo["path"] == "/api/ping"  # strip_path + service path
    # hide_credentials: true on this route removes the key; the transformer adds Authorization from headers.apikey,
    # which key-auth (priority 1250/1003) already removed, so it renders empty (sent as one blank), as in Kong.
    assert "apikey" not in {k.lower() for k in echo["headers"]}
    assert echo["headers"].get("Authorization", "").strip() == ""
    assert echo["headers"]["X-Consumer-Username"] == "service_role"
    assert re.fullmatch(r"[0-9a-f-]{36}", echo["headers"]["X-Consumer-ID"])
    assert re.fullmatch(r"[0-9a-f-]{36}", echo["headers"]["X-Credential-Identifier"])  # the credential's id
    assert "X-Consumer-Groups" not in echo["headers"]


def test_acl_refuses_a_consumer_outside_the_allow_list(gw: str, version: str) -> None:
    r = requests.get(f"http://{gw}/realtime/v1/api/ping", params={"apikey": ANON}, timeout=5)
    assert (r.status_code, kong_message(r, version)) == (403, "You cannot consume this service")


def test_upstream_host_is_the_service_host_not_the_clients(gw: str, version: str) -> None:
    r = requests.get(f"http://{gw}/realtime/v1/anything?apikey={ANON}&vsn=1.0.0",
                     headers={"Host": "client.example.com"}, timeout=5)
    assert r.status_code == 200
    echo = r.json()
    assert echo["headers"]["Host"] == "realtime-dev.supabase-realtime:4000"  # first label = tenant
    assert echo["path"] == "/socket/anything"
    # Kong's LUA_RT_WS_EXPR without opaque keys passes the query apikey through, to x-api-key too.
    assert echo["query"] == {"apikey": ANON, "vsn": "1.0.0"}
    assert echo["headers"]["x-api-key"] == ANON
    assert r.headers["Via"] == (f"1.1 kong/{version}" if version.startswith("3.") else f"kong/{version}")
    assert echo["headers"]["X-Forwarded-Prefix"] == "/realtime/v1/"
    assert echo["headers"]["X-Forwarded-Port"] == gw.rsplit(":", 1)[1]  # Kong's listening port


def test_cors_preflight_and_simple_response_headers(gw: str) -> None:
    r = requests.options(f"http://{gw}/realtime/v1/api/ping",
                         headers={"Origin": "http://app.localhost:3000", "Access-Control-Request-Method": "POST",
                                  "Access-Control-Request-Headers": "apikey,content-type"}, timeout=5)
    assert r.status_code == 200
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in r.headers["Access-Control-Allow-Methods"]
    assert r.headers["Access-Control-Allow-Headers"] == "apikey,content-type"
    r = requests.get(f"http://{gw}/realtime/v1/api/ping", headers={"Origin": "http://x"}, timeout=5)
    assert r.status_code == 401 and r.headers["Access-Control-Allow-Origin"] == "*"


def test_request_termination(gw: str) -> None:
    r = requests.get(f"http://{gw}/realtime/v1/api/tenants/realtime-dev/health", headers={"apikey": SERVICE},
                     timeout=5)
    assert (r.status_code, r.text) == (403, '{"message":"Access is forbidden."}')  # exit(): compact JSON
    assert r.headers["Content-Type"] == "application/json; charset=utf-8"


def test_basic_auth_on_the_catch_all(gw: str, version: str) -> None:
    v3 = version.startswith("3.")
    r = requests.get(f"http://{gw}/project/default", timeout=5)
    assert (r.status_code, kong_message(r, version)) == (401, "Unauthorized")
    assert r.headers["WWW-Authenticate"] == ('Basic realm="service"' if v3 else 'Basic realm="kong"')
    r = requests.get(f"http://{gw}/project/default", auth=("dash", "wrong"), timeout=5)
    assert (r.status_code, kong_message(r, version)) == (401, "Unauthorized" if v3 else
                                                         "Invalid authentication credentials")
    assert r.headers.get("WWW-Authenticate") == ('Basic realm="service"' if v3 else None)
    r = requests.get(f"http://{gw}/project/default", auth=("dash", "dash-pw-canary"), timeout=5)
    assert r.status_code == 200
    echo = r.json()
    assert echo["path"] == "/dash/project/default"
    assert "Authorization" not in echo["headers"]  # hide_credentials


def test_services_not_run_and_unknown_hosts(gw: str, version: str) -> None:
    v3 = version.startswith("3.")
    r = requests.get(f"http://{gw}/rest/v1/todos", headers={"Accept": None}, timeout=5)  # type: ignore[dict-item]
    # nginx's error page (kong/error_handlers.lua): no Accept, no Content-Type -> error_default_type text/plain.
    assert r.status_code == 502 and r.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert r.text.startswith("An invalid response was received from the upstream server\n")
    assert ("request_id: " in r.text) is v3
    r = requests.get(f"http://{gw}/nowhere/x", timeout=5)
    if v3:
        assert (r.status_code, kong_message(r, version)) == (503, "name resolution failed")
    else:
        assert (r.status_code, r.text) == (503, '{"message":"name resolution failed"}')


# ---------------------------------------------------------------- WebSocket proxying


def test_websocket_frames_both_ways_and_close_code(gw: str, upstream: Upstream) -> None:
    ws = websocket.create_connection(f"ws://{gw}/realtime/v1/websocket?apikey={ANON}&vsn=2.0.0", timeout=5)
    try:
        hello = json.loads(ws.recv())
        assert hello["path"] == "/socket/websocket"
        assert hello["headers"]["Host"] == "realtime-dev.supabase-realtime:4000"
        assert hello["query"]["apikey"] == ANON
        ws.send("ping-1")
        assert ws.recv() == "echo:ping-1"
        ws.send_binary(b"\x00\x01")
        assert ws.recv() == b"echo:\x00\x01"
        ws.send("close-me")
        op, data = ws.recv_data(control_frame=True)
        assert op == websocket.ABNF.OPCODE_CLOSE
        assert int.from_bytes(data[:2], "big") == 4001  # the upstream's close code reaches the client
    finally:
        ws.close()


def test_client_close_reaches_upstream(gw: str, upstream: Upstream) -> None:
    before = len(upstream.closes)
    ws = websocket.create_connection(f"ws://{gw}/realtime/v1/websocket?apikey={ANON}", timeout=5)
    ws.recv()
    ws.close(status=4002)
    deadline = time.monotonic() + 5
    # The echo upstream is shared: a socket of an earlier test may report its own close meanwhile.
    while time.monotonic() < deadline and 4002 not in upstream.closes[before:]:
        time.sleep(0.05)
    assert 4002 in upstream.closes[before:]


def test_websocket_handshake_error_body_passes_through(gw: str) -> None:
    with pytest.raises(websocket.WebSocketBadStatusException) as err:
        websocket.create_connection(f"ws://{gw}/realtime/v1/websocket?apikey={ANON}&fail=1", timeout=5)
    assert err.value.status_code == 404
    assert json.loads(err.value.resp_body) == {"error": "Tenant not found"}


def test_websocket_key_auth_refusal_happens_at_the_gateway(gw: str) -> None:
    with pytest.raises(websocket.WebSocketBadStatusException) as err:
        websocket.create_connection(f"ws://{gw}/realtime/v1/websocket", timeout=5)
    assert err.value.status_code == 401
    assert json.loads(err.value.resp_body)["message"] == "No API key found in request"


def test_hidden_credentials_leave_no_apikey_for_realtime(gw: str) -> None:
    ws = websocket.create_connection(f"ws://{gw}/hidden/websocket?apikey={ANON}", timeout=5)
    try:
        hello = json.loads(ws.recv())
    finally:
        ws.close()
    assert "apikey" not in hello["query"]
    assert hello["headers"].get("x-api-key", "") == ""  # template ran after key-auth removed the key


def test_sigterm_stops_the_gateway_cleanly(upstream: Upstream, tmp_path: Path) -> None:
    hosts = {"realtime-dev.supabase-realtime": f"127.0.0.1:{upstream.port}"}
    proc, port, log = start_gateway(tmp_path, KONG_YML, hosts)
    try:
        assert port, log.read_text()
        ws = websocket.create_connection(f"ws://127.0.0.1:{port}/realtime/v1/websocket?apikey={ANON}", timeout=5)
        ws.recv()
        t0 = time.monotonic()
        assert stop(proc) == 0
        assert time.monotonic() - t0 < 4  # open WebSockets are closed with 1001, not waited for
        ws.close()
    finally:
        stop(proc)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/", timeout=2)
    assert os.path.exists(log)


def test_basic_auth_header_is_decoded_strictly(gw: str) -> None:
    bad = base64.b64encode(b"no-colon").decode()
    r = requests.get(f"http://{gw}/x", headers={"Authorization": f"Basic {bad}"}, timeout=5)
    assert r.status_code == 401


# ---------------------------------------------------------------- the expansion equals the real entrypoint's


@pytest.mark.parametrize("opaque", [False, True], ids=["legacy-keys", "opaque-keys"])
def test_expansion_matches_running_the_official_entrypoint(tmp_path: Path, opaque: bool) -> None:
    """Run kong-entrypoint.sh itself (sh + awk + sed; only its paths and final exec changed) and compare."""
    import shutil as _shutil

    require(OFFICIAL.is_dir(), f"corpus not found at {OFFICIAL}")
    require(all(_shutil.which(b) for b in ("sh", "awk", "sed")), "sh, awk and sed are needed")
    script = (OFFICIAL / "volumes/api/kong-entrypoint.sh").read_text()
    temp_yml, out_yml = tmp_path / "temp.yml", tmp_path / "kong.yml"
    temp_yml.write_text((OFFICIAL / "volumes/api/kong.yml").read_text())
    assert "/home/kong/temp.yml" in script and "exec /entrypoint.sh kong docker-start" in script
    script = script.replace("/home/kong/temp.yml", str(temp_yml)).replace(
        "exec /entrypoint.sh kong docker-start", "exit 0")
    (tmp_path / "entry.sh").write_text(script)
    env = {
        "SUPABASE_ANON_KEY": "eyJ.anon.sig", "SUPABASE_SERVICE_KEY": "eyJ.service.sig",
        "SUPABASE_PUBLISHABLE_KEY": "sb_publishable_abc" if opaque else "",
        "SUPABASE_SECRET_KEY": "sb_secret_xyz" if opaque else "",
        "ANON_KEY_ASYMMETRIC": "eyJ.anon-asym.sig" if opaque else "",
        "SERVICE_ROLE_KEY_ASYMMETRIC": "eyJ.svc-asym.sig" if opaque else "",
        "DASHBOARD_USERNAME": "supabase", "DASHBOARD_PASSWORD": "pw-with-$dollar",
        "JWT_ISSUER": "https://api.example.com/auth/v1/",
    }
    run_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "KONG_DECLARATIVE_CONFIG": str(out_yml), **env}
    done = subprocess.run(["sh", str(tmp_path / "entry.sh")], env=run_env, capture_output=True, text=True,
                          timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    # awk's ENVIRON also holds the process environment (PATH, KONG_DECLARATIVE_CONFIG): give ours the same.
    ours = expand_kong_yml(temp_yml.read_text(), entrypoint_env({**run_env}))
    assert ours.rstrip("\n") == out_yml.read_text().rstrip("\n")
    kong = parse_kong(ours, Version("3.9.3", router_flavor="expressions"))
    keys = set(kong.key_index)
    assert keys == ({"eyJ.anon.sig", "eyJ.service.sig", "sb_publishable_abc", "sb_secret_xyz"} if opaque
                    else {"eyJ.anon.sig", "eyJ.service.sig"})


def test_lua_templates_of_the_entrypoint_evaluate_like_kong() -> None:
    from rtbook.sandbox.gateway import Template

    env = entrypoint_env({"SUPABASE_PUBLISHABLE_KEY": "sb_publishable_abc", "SUPABASE_SECRET_KEY": "sb_secret_xyz",
                          "ANON_KEY_ASYMMETRIC": "eyJ.anon-asym", "SERVICE_ROLE_KEY_ASYMMETRIC": "eyJ.svc-asym"})
    ws = Template.compile(env["LUA_RT_WS_EXPR"])
    assert ws.render({"headers": {}, "query_params": {"apikey": "sb_secret_xyz"}}) == "eyJ.svc-asym"
    assert ws.render({"headers": {}, "query_params": {"apikey": "sb_publishable_abc"}}) == "eyJ.anon-asym"
    assert ws.render({"headers": {}, "query_params": {"apikey": "eyJ.legacy"}}) == "eyJ.legacy"
    auth = Template.compile(env["LUA_AUTH_EXPR"])
    user = {"authorization": "Bearer eyJ.user"}
    assert auth.render({"headers": user, "query_params": {}}) == "Bearer eyJ.user"  # user session passes through
    assert auth.render({"headers": {"apikey": "sb_secret_xyz"}, "query_params": {}}) == "Bearer eyJ.svc-asym"
    assert auth.render({"headers": {"authorization": "Bearer sb_secret_xyz", "apikey": "sb_secret_xyz"},
                        "query_params": {}}) == "Bearer eyJ.svc-asym"
    fn = Template.compile(env["LUA_FUNCTIONS_EXPR"])
    assert fn.render({"headers": {}, "query_params": {}}) == ""  # nil renders empty
    legacy = entrypoint_env({})
    assert Template.compile(legacy["LUA_AUTH_EXPR"]).render({"headers": {"apikey": "k"}, "query_params": {}}) == "k"
    assert Template.compile(legacy["LUA_FUNCTIONS_EXPR"]).render({"headers": {}, "query_params": {}}) == ""


def test_startup_errors_do_not_reveal_keys(tmp_path: Path) -> None:
    text = KONG_YML.replace("  - username: service_role\n", "  - usernme: service_role\n", 1)
    proc, port, log = start_gateway(tmp_path, text, {})
    try:
        assert port == 0 and proc.returncode == 2
        out = log.read_text()
        assert "username" in out and SERVICE not in out
    finally:
        stop(proc)  # only if it started after all


# ---------------------------------------------------------------- less common options, as Kong reads them

OPTIONS_YML = """
_format_version: '2.1'
consumers:
  - username: anon
    keyauth_credentials:
      - key: $SUPABASE_ANON_KEY
    acls:
      - group: anon
services:
  - name: body-key
    url: http://realtime-dev.supabase-realtime:4000/api
    routes:
      - name: body-key
        paths: [/body/]
    plugins:
      - name: key-auth
        config: {key_in_body: true, key_in_header: false, key_in_query: false, hide_credentials: true}
  - name: no-preflight
    url: http://realtime-dev.supabase-realtime:4000/api
    routes:
      - name: no-preflight
        paths: [/nopre/]
    plugins:
      - name: key-auth
        config: {run_on_preflight: false}
      - name: acl
        config: {allow: [anon]}
  - name: idle
    url: http://realtime-dev.supabase-realtime:4000/socket
    read_timeout: 1000
    routes:
      - name: idle
        paths: [/idle/]
  - name: cors-list
    url: http://realtime-dev.supabase-realtime:4000/api
    routes:
      - name: cors-list
        paths: [/cors-list/]
    plugins:
      - name: cors
        config:
          origins: ["http://a.example.com", 'https://.*\\.example\\.org']
          exposed_headers: [X-Total]
  - name: cors-one
    url: http://realtime-dev.supabase-realtime:4000/api
    routes:
      - name: cors-one
        paths: [/cors-one/]
    plugins:
      - name: cors
        config:
          origins: ["http://only.example.com"]
"""


@pytest.fixture(scope="module")
def gw_options(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("gw-options")
    proc, port, log = start_gateway(tmp, OPTIONS_YML, {"realtime-dev.supabase-realtime": f"127.0.0.1:{upstream.port}"})
    assert port, log.read_text()
    yield f"127.0.0.1:{port}"
    assert stop(proc) == 0, log.read_text()


def test_key_in_body_reads_and_hides_a_form_field(gw_options: str) -> None:
    r = requests.post(f"http://{gw_options}/body/x", data={"apikey": ANON, "other": "1"}, timeout=5)
    assert r.status_code == 200
    assert r.json()["body"] == "other=1"  # hide_credentials rewrote the body without the key
    r = requests.post(f"http://{gw_options}/body/x", data={"other": "1"}, params={"apikey": ANON}, timeout=5)
    assert (r.status_code, r.json()["message"]) == (401, "No API key found in request")  # key_in_query: false


def test_run_on_preflight_false_skips_key_auth_for_every_options(gw_options: str) -> None:
    # No cors plugin here: key-auth steps aside for OPTIONS, so acl finds no consumer and answers 401.
    r = requests.options(f"http://{gw_options}/nopre/x", timeout=5)
    assert (r.status_code, r.json()["message"]) == (401, "Unauthorized")
    assert "WWW-Authenticate" not in r.headers
    r = requests.options(f"http://{gw_options}/nopre/x", headers={"apikey": ANON}, timeout=5)
    assert (r.status_code, r.json()["message"]) == (401, "Unauthorized")  # the key is not even read


def test_websocket_idle_past_read_timeout_is_cut(gw_options: str) -> None:
    ws = websocket.create_connection(f"ws://{gw_options}/idle/websocket", timeout=5)
    try:
        assert json.loads(ws.recv())["path"] == "/socket/websocket"
        ws.send("ping-1")
        assert ws.recv() == "echo:ping-1"
        t0 = time.monotonic()
        with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
            ws.recv()  # the upstream stays silent: nginx's proxy_read_timeout (read_timeout 1000 ms) ends it
        assert 0.5 < time.monotonic() - t0 < 4
    finally:
        ws.close()


@pytest.mark.parametrize(
    ("path", "origin", "allowed"),
    [
        ("/cors-list/x", "http://a.example.com:80", "http://a.example.com"),  # default port dropped
        ("/cors-list/x", "https://b.example.org", "https://b.example.org"),  # regex entry, anchored at the end
        ("/cors-list/x", "https://b.example.org.evil.com", None),
        ("/cors-list/x", "http://evil.com", None),
        ("/cors-one/x", "http://evil.com", "http://only.example.com"),  # one literal origin is always sent
    ],
)
def test_cors_origins_as_kong_matches_them(gw_options: str, path: str, origin: str, allowed: str | None) -> None:
    r = requests.get(f"http://{gw_options}{path}", headers={"Origin": origin}, timeout=5)
    assert r.status_code == 200
    assert r.headers.get("Access-Control-Allow-Origin") == allowed
    assert r.headers["Vary"] == "Origin"  # whenever origins is not '*'
    pre = requests.options(f"http://{gw_options}{path}", headers={"Origin": origin,
                                                                  "Access-Control-Request-Method": "GET"}, timeout=5)
    assert pre.status_code == 200 and pre.headers.get("Access-Control-Allow-Origin") == allowed
    assert "Access-Control-Expose-Headers" not in pre.headers  # never on a preflight
    if path.startswith("/cors-list"):
        assert r.headers["Access-Control-Expose-Headers"] == "X-Total"


def test_a_template_on_a_repeated_header_fails_with_500(gw: str) -> None:
    """LUA_AUTH_EXPR calls :sub on headers.authorization; two Authorization headers make it a Lua table."""
    host, port = gw.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.putrequest("GET", "/realtime/v1/api/ping")
        conn.putheader("apikey", SERVICE)
        conn.putheader("Authorization", "Bearer a")
        conn.putheader("Authorization", "Bearer b")
        conn.putheader("Accept", "text/plain")
        conn.endheaders()
        resp = conn.getresponse()
        assert resp.status == 500 and resp.read().decode().startswith("An unexpected error occurred\n")
    finally:
        conn.close()
