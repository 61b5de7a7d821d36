"""Plausible edits of the official kong.yml files, judged by the kong.* checks AND served by the stand-in gateway.

For each edit both readings must say what Kong 2.8.1 (official 2025-11, ``kong:2.8.1``, eval
entrypoint) or 3.9.3 (official 2026-09 with the ``docker-compose.kong.yml`` overlay, awk
entrypoint, ``KONG_ROUTER_FLAVOR: expressions``) does, as /work/notes/kong.md records from their
source: the static checks (rtbook/checks/kong.py over rtbook/config/kong.py) and the stand-in
(rtbook/sandbox/gateway.py, a separate reading sharing no code) started on 127.0.0.1 with the same
edited file and the stack's own kong environment, in front of an echo upstream that shows what
Kong would forward.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket

from rtbook.config.gateway import realtime_upstream
from rtbook.config.kong import KongConfig, load_kong_detailed, upstream_path
from rtbook.registry import run_checks
from rtbook.results import Report, Status
from rtbook.target import Target
from tests.conftest import CORPUS, require
from tests.integration.gateway_support import Upstream, start_gateway, stop

pytestmark = pytest.mark.sandbox

PROTOCOLS = "in 'protocol': expected one of: grpc, grpcs, http, https, tcp, tls, tls_passthrough, udp"
UPSTREAM_HOSTS = ("realtime-dev.supabase-realtime", "auth", "rest", "storage", "functions", "studio", "meta")


@dataclass(frozen=True)
class Edition:
    """One official stack and the Kong its compose runs."""

    name: str
    src: Path
    overlay: bool
    kong: str

    @property
    def v3(self) -> bool:
        return self.kong.startswith("3.")


E2025 = Edition("2025-11", CORPUS / "official/2025-11-f8a85e7", False, "2.8.1")
E2026 = Edition("2026-09", CORPUS / "official/2026-09-1f37f2a", True, "3.9.3")
BOTH = pytest.mark.parametrize("ed", [E2025, E2026], ids=["kong-2.8.1", "kong-3.9.3"])


def make_stack(ed: Edition, tmp: Path) -> Path:
    """A copy of the official stack with a .env from its env.example (and the Kong overlay for 2026)."""
    require(ed.src.is_dir(), f"corpus stack missing: {ed.src}")
    dest = tmp / ed.name
    shutil.copytree(ed.src, dest)
    for p in dest.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    env = (ed.src / "env.example").read_text()
    if ed.overlay:
        env += "\nCOMPOSE_FILE=docker-compose.yml:docker-compose.kong.yml\n"
    (dest / ".env").write_text(env)
    return dest


def service_block(text: str, name: str) -> tuple[int, int]:
    start = text.index(f"  - name: {name}\n")
    end = text.find("\n  - name:", start + 5)
    return start, (end if end >= 0 else len(text))


def in_service(name: str, old: str, new: str) -> Callable[[str], str]:
    """An edit of the service ``name``'s block of kong.yml: its first ``old`` becomes ``new``."""

    def change(text: str) -> str:
        start, end = service_block(text, name)
        block = text[start:end]
        assert old in block, f"{old!r} not in service {name}"
        return text[:start] + block.replace(old, new, 1) + text[end:]

    return change


@dataclass
class Both:
    """The checks' report on the edited stack and the stand-in serving the same files."""

    stack: Path
    report: Report
    config: KongConfig | None
    url: str  # http://127.0.0.1:port, "" when the stand-in refused to start
    log: str
    keys: dict[str, str]

    def status(self, check_id: str) -> Status:
        return self.report.by_id(check_id).status

    def describe(self) -> str:
        return "\n".join(str(r) for r in self.report)


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    up = Upstream().start()
    yield up
    up.stop()


@contextmanager
def served(ed: Edition, tmp: Path, upstream: Upstream, *edits: Callable[[str], str],
           env_extra: str = "", compose_edit: Callable[[str], str] | None = None) -> Iterator[Both]:
    stack = make_stack(ed, tmp)
    kong_yml = stack / "volumes/api/kong.yml"
    for change in edits:
        before = kong_yml.read_text()
        kong_yml.write_text(change(before))
        assert kong_yml.read_text() != before, "the edit changed nothing"
    if env_extra:
        (stack / ".env").write_text((stack / ".env").read_text() + "\n" + env_extra)
    if compose_edit is not None:
        compose = stack / ("docker-compose.kong.yml" if ed.overlay else "docker-compose.yml")
        compose.write_text(compose_edit(compose.read_text()))
    target = Target.from_stack_dir(stack, docker=False)
    report = run_checks(target, only=("kong.",))
    assert target.stack is not None
    gw = target.stack.gateway_service()
    assert gw is not None
    env = dict(gw.environment)
    loaded = load_kong_detailed(target.stack)
    hosts = {h: f"127.0.0.1:{upstream.port}" for h in UPSTREAM_HOSTS}
    proc, port, log = start_gateway(tmp, kong_yml.read_text(), hosts, env=env, kong_version=ed.kong)
    keys = {"anon": env["SUPABASE_ANON_KEY"], "service": env["SUPABASE_SERVICE_KEY"]}
    try:
        yield Both(stack, report, loaded.config if loaded else None, f"http://127.0.0.1:{port}" if port else "",
                   log.read_text(), keys)
    finally:
        stop(proc)


def message(r: requests.Response, ed: Edition) -> str:
    """kong.response.error's message; 3.x bodies carry a request_id, 2.8 bodies do not."""
    data = r.json()
    assert ("request_id" in data) is ed.v3, r.text
    return str(data["message"])


def ws_hello(url: str, path: str, host: str | None = None) -> dict[str, Any]:
    """Open a WebSocket through the stand-in; the echo upstream's first frame says what it received."""
    extra: dict[str, Any] = {"host": host} if host else {}
    ws = websocket.create_connection(url.replace("http://", "ws://") + path, timeout=5, **extra)
    try:
        return dict(json.loads(ws.recv()))
    finally:
        ws.close()


def ws_refusal(url: str, path: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    with pytest.raises(websocket.WebSocketBadStatusException) as err:
        websocket.create_connection(url.replace("http://", "ws://") + path, timeout=5)
    heads = {k.lower(): v for k, v in (err.value.resp_headers or {}).items()}
    return err.value.status_code, json.loads(err.value.resp_body), heads


def raw_get(url: str, raw_path: str, headers: dict[str, str]) -> tuple[int, str]:
    """A GET whose request line carries ``raw_path`` byte for byte (requests would normalise it)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.putrequest("GET", raw_path, skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def agree_on_route(both: Both, path: str, method: str, echo_path: str) -> None:
    """rtbook's route choice and upstream path equal what the stand-in forwarded."""
    assert both.config is not None
    found = both.config.match(path, method)
    assert found is not None
    assert upstream_path(found.route, found.service, path) == echo_path, (path, method, found.route.name)


# ---------------------------------------------------------------- the official files


@BOTH
def test_official_files_route_realtime_alike(ed: Edition, tmp_path: Path, upstream: Upstream) -> None:
    with served(ed, tmp_path, upstream) as both:
        assert both.url, both.log
        for cid in ("kong.parse", "kong.realtime_ws", "kong.realtime_rest", "kong.realtime_auth",
                    "kong.realtime_preserve_host"):
            assert both.status(cid) is Status.PASS, both.describe()
        anon, service = both.keys["anon"], both.keys["service"]
        hello = ws_hello(both.url, f"/realtime/v1/websocket?apikey={anon}&vsn=1.0.0")
        assert hello["path"] == "/socket/websocket"
        agree_on_route(both, "/realtime/v1/websocket", "GET", hello["path"])
        assert both.config is not None
        seen = both.config.host_seen(both.config.match("/realtime/v1/websocket").route)  # type: ignore[union-attr]
        assert hello["headers"]["Host"] == seen.host == "realtime-dev.supabase-realtime:4000"
        assert hello["headers"]["X-Consumer-Username"] == "anon"
        assert hello["headers"]["X-Forwarded-Prefix"] == "/realtime/v1/"
        r = requests.post(f"{both.url}/realtime/v1/api/broadcast", headers={"apikey": service}, json={}, timeout=5)
        assert r.status_code == 200 and r.json()["path"] == "/api/broadcast"
        agree_on_route(both, "/realtime/v1/api/broadcast", "POST", r.json()["path"])
        r = requests.get(f"{both.url}/realtime/v1/api/tenants", headers={"apikey": service}, timeout=5)
        if ed.v3:  # the 2026 file blocks the tenant API (request-termination runs after key-auth)
            assert (r.status_code, r.text) == (403, '{"message":"Access is forbidden."}')
            assert both.status("kong.tenants_api_blocked") is Status.PASS
        else:  # the 2025 file does not: it reaches Realtime's admin API
            assert r.status_code == 200 and r.json()["path"] == "/api/tenants"
            assert both.status("kong.tenants_api_blocked") is Status.WARN
        # The WebSocket service says `protocol: ws`, but its url's http is what Kong uses.
        ws_check = both.report.by_id("kong.realtime_ws")
        assert ws_check.evidence["protocol_field_ignored"] == "protocol: ws is overwritten by the url (http)"


# ---------------------------------------------------------------- service protocol and url


@BOTH
def test_without_protocol_ws_websockets_still_work(ed: Edition, tmp_path: Path, upstream: Upstream) -> None:
    with served(ed, tmp_path, upstream, in_service("realtime-v1-ws", "    protocol: ws\n", "")) as both:
        assert both.status("kong.realtime_ws") is Status.PASS, both.describe()
        hello = ws_hello(both.url, f"/realtime/v1/websocket?apikey={both.keys['anon']}")
        assert hello["path"] == "/socket/websocket"


@BOTH
@pytest.mark.parametrize(
    "edit",
    [
        in_service("realtime-v1-ws", "url: http://realtime-dev", "url: ws://realtime-dev"),
        in_service("realtime-v1-ws", "url: http://realtime-dev.supabase-realtime:4000/socket\n",
                   "host: realtime-dev.supabase-realtime\n    port: 4000\n    path: /socket\n"),
    ],
    ids=["url-ws-scheme", "protocol-ws-without-url"],
)
def test_ws_protocol_is_refused_at_start_by_both(ed: Edition, edit: Callable[[str], str], tmp_path: Path,
                                                 upstream: Upstream) -> None:
    with served(ed, tmp_path, upstream, edit) as both:
        parse = both.report.by_id("kong.parse")
        assert parse.status is Status.FAIL and PROTOCOLS in parse.summary
        assert both.status("kong.realtime_ws") is Status.FAIL
        assert not both.url and PROTOCOLS in both.log


# ---------------------------------------------------------------- key-auth and acl


@BOTH
def test_acl_without_key_auth_answers_401_to_everyone(ed: Edition, tmp_path: Path, upstream: Upstream) -> None:
    key_auth = "      - name: key-auth\n        config:\n          hide_credentials: false\n"
    edit = in_service("realtime-v1-ws", key_auth, "")
    with served(ed, tmp_path, upstream, edit) as both:
        auth = both.report.by_id("kong.realtime_auth")
        assert auth.status is Status.FAIL and '401 "Unauthorized"' in auth.detail, both.describe()
        status, body, heads = ws_refusal(both.url, f"/realtime/v1/websocket?apikey={both.keys['anon']}")
        assert (status, body["message"]) == (401, "Unauthorized")
        assert "www-authenticate" not in heads  # acl's 401, not key-auth's


@BOTH
def test_key_in_query_false_refuses_websockets(ed: Edition, tmp_path: Path, upstream: Upstream) -> None:
    edit = in_service("realtime-v1-ws", "          hide_credentials: false\n",
                      "          hide_credentials: false\n          key_in_query: false\n")
    with served(ed, tmp_path, upstream, edit) as both:
        auth = both.report.by_id("kong.realtime_auth")
        assert auth.status is Status.FAIL and "key_in_query is false" in auth.detail
        status, body, _ = ws_refusal(both.url, f"/realtime/v1/websocket?apikey={both.keys['anon']}")
        assert (status, body["message"]) == (401, "No API key found in request")


@BOTH
def test_key_names_match_headers_case_insensitively_but_not_the_query(ed: Edition, tmp_path: Path,
                                                                       upstream: Upstream) -> None:
    edit = in_service("realtime-v1-rest", "          hide_credentials: false\n",
                      "          hide_credentials: false\n          key_names: [APIKEY]\n")
    with served(ed, tmp_path, upstream, edit) as both:
        assert both.status("kong.realtime_auth") is Status.PASS, both.describe()
        service = both.keys["service"]
        r = requests.post(f"{both.url}/realtime/v1/api/broadcast", headers={"apikey": service}, json={}, timeout=5)
        assert r.status_code == 200
        r = requests.post(f"{both.url}/realtime/v1/api/broadcast", params={"apikey": service}, json={}, timeout=5)
        assert (r.status_code, message(r, ed)) == (401, "No API key found in request")


@BOTH
def test_anonymous_consumer_lets_keyless_sockets_in(ed: Edition, tmp_path: Path, upstream: Upstream) -> None:
    edit = in_service("realtime-v1-ws", "          hide_credentials: false\n",
                      "          hide_credentials: false\n          anonymous: anon\n")
    with served(ed, tmp_path, upstream, edit) as both:
        auth = both.report.by_id("kong.realtime_auth")
        assert auth.status is Status.WARN and "without a valid key in as consumer 'anon'" in auth.detail
        hello = ws_hello(both.url, "/realtime/v1/websocket?apikey=not-a-key")
        assert hello["headers"]["X-Anonymous-Consumer"] == "true"
        assert hello["headers"]["X-Consumer-Username"] == "anon"
        assert "X-Credential-Identifier" not in hello["headers"]


@BOTH
def test_anonymous_consumer_that_does_not_exist_fails_with_500(ed: Edition, tmp_path: Path,
                                                                upstream: Upstream) -> None:
    edit = in_service("realtime-v1-ws", "          hide_credentials: false\n",
                      "          hide_credentials: false\n          anonymous: nobody\n")
    with served(ed, tmp_path, upstream, edit) as both:
        auth = both.report.by_id("kong.realtime_auth")
        assert auth.status is Status.WARN and "500" in auth.detail
        r = requests.get(f"{both.url}/realtime/v1/websocket", headers={"Accept": "text/plain"}, timeout=5)
        assert r.status_code == 500 and r.text.startswith("An unexpected error occurred\n")
        r = requests.get(f"{both.url}/realtime/v1/websocket", params={"apikey": both.keys["anon"]}, timeout=5)
        assert r.status_code == 200  # a valid key never needs the anonymous consumer


def test_hide_credentials_on_the_2026_rest_route_blanks_authorization(tmp_path: Path, upstream: Upstream) -> None:
    edit = in_service("realtime-v1-rest", "hide_credentials: false", "hide_credentials: true")
    with served(E2026, tmp_path, upstream, edit) as both:
        auth = both.report.by_id("kong.realtime_auth")
        # Legacy JWT keys (env.example has no opaque keys): clients that also send Authorization still work.
        assert auth.status is Status.WARN and "blank Authorization" in auth.detail, both.describe()
        r = requests.post(f"{both.url}/realtime/v1/api/broadcast", headers={"apikey": both.keys["anon"]}, json={},
                          timeout=5)
        echo = r.json()
        assert "apikey" not in {k.lower() for k in echo["headers"]}
        assert echo["headers"]["Authorization"].strip() == ""  # Kong sends the rendered "" as one blank


def test_hide_credentials_on_the_2026_rest_route_fails_with_opaque_keys(tmp_path: Path, upstream: Upstream) -> None:
    edit = in_service("realtime-v1-rest", "hide_credentials: false", "hide_credentials: true")
    opaque = "SUPABASE_PUBLISHABLE_KEY=sb_publishable_test_1\nSUPABASE_SECRET_KEY=sb_secret_test_2\n"
    with served(E2026, tmp_path, upstream, edit, env_extra=opaque) as both:
        assert both.status("kong.realtime_auth") is Status.FAIL, both.describe()
        r = requests.post(f"{both.url}/realtime/v1/api/broadcast",
                          headers={"apikey": "sb_publishable_test_1", "Authorization": "Bearer sb_publishable_test_1"},
                          json={}, timeout=5)
        assert r.status_code == 200 and r.json()["headers"]["Authorization"].strip() == ""


@BOTH
def test_acl_with_allow_and_deny_is_refused_by_both(ed: Edition, tmp_path: Path, upstream: Upstream) -> None:
    edit = in_service("realtime-v1-ws", "          allow:\n", "          deny: [nobody]\n          allow:\n")
    with served(ed, tmp_path, upstream, edit) as both:
        parse = both.report.by_id("kong.parse")
        text = "exactly one of these fields must be non-empty: 'config.allow', 'config.deny'"
        assert parse.status is Status.FAIL and text in parse.summary
        assert not both.url and text in both.log


def test_one_key_for_two_credentials_is_refused_by_both(tmp_path: Path, upstream: Upstream) -> None:
    anon = re.search(r"^ANON_KEY=(.*)$", (E2026.src / "env.example").read_text(), re.M)
    assert anon is not None
    with served(E2026, tmp_path, upstream, env_extra=f"SUPABASE_PUBLISHABLE_KEY={anon.group(1)}\n"
                "SUPABASE_SECRET_KEY=sb_secret_test_2\n") as both:
        parse = both.report.by_id("kong.parse")
        assert parse.status is Status.FAIL and "uniqueness violation: 'keyauth_credentials'" in parse.summary
        assert anon.group(1) not in str(parse)  # the key itself is not printed
        assert not both.url and "uniqueness violation: 'keyauth_credentials'" in both.log


# ---------------------------------------------------------------- the Host Realtime sees (the tenant)


@BOTH
def test_preserve_host_forwards_the_clients_host(ed: Edition, tmp_path: Path, upstream: Upstream) -> None:
    edit = in_service("realtime-v1-ws", "        strip_path: true\n",
                      "        strip_path: true\n        preserve_host: true\n")
    with served(ed, tmp_path, upstream, edit) as both:
        assert both.status("kong.realtime_preserve_host") is Status.FAIL
        up = realtime_upstream(Target.from_stack_dir(both.stack, docker=False).stack)  # type: ignore[arg-type]
        assert up.keeps_client_host
        hello = ws_hello(both.url, f"/realtime/v1/websocket?apikey={both.keys['anon']}", host="api.example.com")
        assert hello["headers"]["Host"] == "api.example.com"  # Realtime would look up tenant 'api'


@BOTH
def test_request_transformer_host_replacement_changes_the_tenant(ed: Edition, tmp_path: Path,
                                                                  upstream: Upstream) -> None:
    # Single quotes: the 2025 eval entrypoint would strip double quotes and leave a YAML mapping.
    entry = "              - 'Host: tenant-b.supabase-realtime'\n"
    if ed.v3:
        edit = in_service("realtime-v1-ws", "          replace:\n            querystring:\n",
                          "          replace:\n            headers:\n" + entry + "            querystring:\n")
    else:
        edit = in_service("realtime-v1-ws", "      - name: acl\n",
                          "      - name: request-transformer\n        config:\n          replace:\n"
                          "            headers:\n" + entry + "      - name: acl\n")
    with served(ed, tmp_path, upstream, edit) as both:
        check = both.report.by_id("kong.realtime_preserve_host")
        assert check.status is Status.FAIL and "tenant 'tenant-b'" in check.detail, both.describe()
        up = realtime_upstream(Target.from_stack_dir(both.stack, docker=False).stack)  # type: ignore[arg-type]
        assert "tenant-b.supabase-realtime" in up.host_headers and "tenant-b" in up.tenants
        hello = ws_hello(both.url, f"/realtime/v1/websocket?apikey={both.keys['anon']}")
        assert hello["headers"]["Host"] == "tenant-b.supabase-realtime"


# ---------------------------------------------------------------- routing


def test_path_tricks_do_not_bypass_the_tenants_block(tmp_path: Path, upstream: Upstream) -> None:
    with served(E2026, tmp_path, upstream) as both:
        assert both.config is not None
        for raw in ("/realtime/v1/api//tenants", "/realtime/v1/x/../api/tenants", "/realtime/v1/api/%74enants",
                    "/realtime/v1/./api/tenants/realtime-dev/health"):
            status, body = raw_get(both.url, raw, {"apikey": both.keys["service"]})
            assert (status, body) == (403, '{"message":"Access is forbidden."}'), raw
            found = both.config.match(raw)
            assert found is not None and found.route.name == "realtime-v1-rest-tenants", raw


def test_expression_route_outranks_the_longer_prefix_and_forwards_root(tmp_path: Path, upstream: Upstream) -> None:
    with served(E2026, tmp_path, upstream) as both:
        r = requests.get(f"{both.url}/rest/v1/", headers={"apikey": both.keys["service"]}, timeout=5)
        assert r.status_code == 200 and r.json()["path"] == "/"
        agree_on_route(both, "/rest/v1/", "GET", "/")
        r = requests.get(f"{both.url}/rest/v1/todos", headers={"apikey": both.keys["anon"]}, timeout=5)
        assert r.json()["path"] == "/todos"
        agree_on_route(both, "/rest/v1/todos", "GET", "/todos")
        r = requests.get(f"{both.url}/rest/v1/", headers={"apikey": both.keys["anon"]}, timeout=5)
        assert (r.status_code, message(r, E2026)) == (403, "You cannot consume this service")  # admin only


def test_expression_route_without_the_expressions_flavor_is_refused(tmp_path: Path, upstream: Upstream) -> None:
    def drop_flavor(text: str) -> str:
        assert "      KONG_ROUTER_FLAVOR: expressions\n" in text
        return text.replace("      KONG_ROUTER_FLAVOR: expressions\n", "")

    with served(E2026, tmp_path, upstream, compose_edit=drop_flavor) as both:
        parse = both.report.by_id("kong.parse")
        assert parse.status is Status.FAIL and "in 'expression': unknown field" in parse.summary
        assert not both.url and "in 'expression': unknown field" in both.log


@BOTH
def test_methods_route_outranks_a_longer_path_only_route(ed: Edition, tmp_path: Path, upstream: Upstream) -> None:
    edit = in_service("realtime-v1-ws", "        paths:\n", "        methods: [GET]\n        paths:\n")
    with served(ed, tmp_path, upstream, edit) as both:
        rest = both.report.by_id("kong.realtime_rest")
        assert rest.status is Status.FAIL and "GET /realtime/v1/api/ping takes route 'realtime-v1-ws'" in rest.detail
        key = {"apikey": both.keys["service"]}
        r = requests.get(f"{both.url}/realtime/v1/api/ping", headers=key, timeout=5)
        assert r.json()["path"] == "/socket/api/ping"
        agree_on_route(both, "/realtime/v1/api/ping", "GET", "/socket/api/ping")
        r = requests.post(f"{both.url}/realtime/v1/api/broadcast", headers=key, json={}, timeout=5)
        assert r.json()["path"] == "/api/broadcast"


@BOTH
def test_regex_path_of_a_2_1_file_strips_what_it_matched(ed: Edition, tmp_path: Path, upstream: Upstream) -> None:
    # `$` makes the path a regex in 2.8 and, through the 2.1 -> 3.0 migration, in 3.9 too.
    edit = in_service("realtime-v1-ws", "          - /realtime/v1/\n", "          - /realtime/v1/websocket$\n")
    with served(ed, tmp_path, upstream, edit) as both:
        ws = both.report.by_id("kong.realtime_ws")
        assert ws.status is Status.FAIL and "arrives at Realtime as /socket," in ws.detail, both.describe()
        hello = ws_hello(both.url, f"/realtime/v1/websocket?apikey={both.keys['anon']}")
        assert hello["path"] == "/socket"
        agree_on_route(both, "/realtime/v1/websocket", "GET", "/socket")


# ---------------------------------------------------------------- cors


@BOTH
def test_cors_preflight_is_answered_before_key_auth(ed: Edition, tmp_path: Path, upstream: Upstream) -> None:
    with served(ed, tmp_path, upstream) as both:
        pre = {"Origin": "http://app.localhost:3000", "Access-Control-Request-Method": "POST",
               "Access-Control-Request-Headers": "apikey,content-type"}
        r = requests.options(f"{both.url}/realtime/v1/api/broadcast", headers=pre, timeout=5)
        assert (r.status_code, r.content) == (200, b"")
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        assert r.headers["Access-Control-Allow-Methods"] == "GET,HEAD,PUT,PATCH,POST,DELETE,OPTIONS,TRACE,CONNECT"
        assert r.headers["Access-Control-Allow-Headers"] == "apikey,content-type"
        # Without Origin it is no preflight: key-auth answers, and cors still decorates that 401.
        r = requests.options(f"{both.url}/realtime/v1/api/broadcast",
                             headers={"Access-Control-Request-Method": "POST"}, timeout=5)
        assert (r.status_code, message(r, ed)) == (401, "No API key found in request")
        assert r.headers["Access-Control-Allow-Origin"] == "*"


@BOTH
def test_cors_credentials_with_any_origin_echo_the_origin(ed: Edition, tmp_path: Path, upstream: Upstream) -> None:
    edit = in_service("realtime-v1-rest", "      - name: cors\n",
                      "      - name: cors\n        config:\n          credentials: true\n")
    with served(ed, tmp_path, upstream, edit) as both:
        origin = "http://app.localhost:3000"
        r = requests.options(f"{both.url}/realtime/v1/api/broadcast",
                             headers={"Origin": origin, "Access-Control-Request-Method": "POST"}, timeout=5)
        assert r.status_code == 200
        assert (r.headers["Access-Control-Allow-Origin"], r.headers["Access-Control-Allow-Credentials"]) == (
            origin, "true")
        assert r.headers["Vary"] == "Origin"


# ---------------------------------------------------------------- request-termination


def test_request_termination_without_message_sends_an_empty_403(tmp_path: Path, upstream: Upstream) -> None:
    edit = in_service("realtime-v1-rest-tenants", '          message: "Access is forbidden."\n', "")
    with served(E2026, tmp_path, upstream, edit) as both:
        assert both.status("kong.tenants_api_blocked") is Status.PASS
        r = requests.get(f"{both.url}/realtime/v1/api/tenants", headers={"apikey": both.keys["service"]}, timeout=5)
        assert (r.status_code, r.content) == (403, b"")  # no per-status default text for 403


def test_request_termination_503_default_text(tmp_path: Path, upstream: Upstream) -> None:
    block = '          status_code: 403\n          message: "Access is forbidden."\n'
    edit = in_service("realtime-v1-rest-tenants", block, "          status_code: 503\n")
    with served(E2026, tmp_path, upstream, edit) as both:
        r = requests.get(f"{both.url}/realtime/v1/api/tenants", headers={"apikey": both.keys["service"]}, timeout=5)
        assert (r.status_code, r.text) == (503, '{"message":"Service unavailable"}')


def test_request_termination_trigger_only_blocks_marked_requests(tmp_path: Path, upstream: Upstream) -> None:
    edit = in_service("realtime-v1-rest-tenants", '          message: "Access is forbidden."\n',
                      '          message: "Access is forbidden."\n          trigger: x-block\n')
    with served(E2026, tmp_path, upstream, edit) as both:
        blocked = both.report.by_id("kong.tenants_api_blocked")
        assert blocked.status is Status.WARN and "trigger: x-block" in blocked.detail
        key = {"apikey": both.keys["service"]}
        r = requests.get(f"{both.url}/realtime/v1/api/tenants", headers=key, timeout=5)
        assert r.status_code == 200 and r.json()["path"] == "/api/tenants"  # reaches the admin API
        r = requests.get(f"{both.url}/realtime/v1/api/tenants", headers={**key, "X-Block": "1"}, timeout=5)
        assert r.status_code == 403


# ---------------------------------------------------------------- Kong's own errors


@BOTH
def test_no_route_answer_per_version(ed: Edition, tmp_path: Path, upstream: Upstream) -> None:
    def drop_dashboard(text: str) -> str:
        start, end = service_block(text, "dashboard")
        return text[:start] + text[end:]

    with served(ed, tmp_path, upstream, drop_dashboard) as both:
        assert both.config is not None and both.config.match("/project/default") is None
        r = requests.get(f"{both.url}/project/default", timeout=5)
        assert r.status_code == 404 and r.headers["Server"] == f"kong/{ed.kong}"
        if ed.v3:  # kong.response.error: the template, with request_id
            assert message(r, ed) == "no Route matched with those values"
        else:  # kong.response.exit: compact JSON
            assert r.text == '{"message":"no Route matched with those values"}'


@BOTH
def test_a_route_for_another_host_does_not_take_the_clients_requests(ed: Edition, tmp_path: Path,
                                                                      upstream: Upstream) -> None:
    staging = ("  - name: staging\n    url: http://studio:3000/staging\n    routes:\n      - name: staging\n"
               "        hosts: [staging.example.com]\n        paths: [/realtime/v1/]\n")

    def add_staging(text: str) -> str:
        return text.replace("\nservices:\n", "\nservices:\n" + staging, 1)

    with served(ed, tmp_path, upstream, add_staging) as both:
        # The clients use the public URL's host (localhost here): hosts+paths outranks paths, but only for its host.
        assert both.status("kong.realtime_ws") is Status.PASS, both.describe()
        assert both.config is not None
        found = both.config.match("/realtime/v1/websocket", "GET", "staging.example.com")
        assert found is not None and found.route.name == "staging"
        hello = ws_hello(both.url, f"/realtime/v1/websocket?apikey={both.keys['anon']}")
        assert hello["path"] == "/socket/websocket"
        r = requests.get(f"{both.url}/realtime/v1/websocket", headers={"Host": "staging.example.com"}, timeout=5)
        assert r.json()["path"] == "/staging/websocket"
