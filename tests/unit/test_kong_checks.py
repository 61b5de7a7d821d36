"""kong.* checks on the real corpus stacks and on broken copies of them."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from rtbook.registry import run_checks
from rtbook.results import Report, Status
from rtbook.target import Target
from tests.conftest import CORPUS, require

OFFICIAL_2025 = CORPUS / "official/2025-11-f8a85e7"
OFFICIAL_2026 = CORPUS / "official/2026-09-1f37f2a"
SINGH = CORPUS / "community/singh-inder-supabase-automated-self-host-5f050b6/docker"
KONG_IDS = (
    "kong.parse",
    "kong.placeholders",
    "kong.plugins_enabled",
    "kong.realtime_ws",
    "kong.realtime_rest",
    "kong.realtime_auth",
    "kong.tenants_api_blocked",
    "kong.realtime_preserve_host",
    "kong.dns_order",
    "kong.dns_resolver",
    "kong.realtime_region_host",
)


def copy_stack(src: Path, tmp: Path, *, kong_overlay: bool = False, env_extra: str = "") -> Path:
    """Copy a corpus stack into ``tmp`` with a ``.env`` made from its env.example."""
    require(src.is_dir(), f"corpus stack missing: {src}")
    dest = tmp / src.name
    shutil.copytree(src, dest)
    for p in dest.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    env = (src / "env.example").read_text() if (src / "env.example").exists() else ""
    if kong_overlay:
        env += "\nCOMPOSE_FILE=docker-compose.yml:docker-compose.kong.yml\n"
    overrides = {line.split("=", 1)[0] for line in env_extra.splitlines() if "=" in line}
    kept = [line for line in env.splitlines() if line.split("=", 1)[0].strip() not in overrides]
    (dest / ".env").write_text("\n".join(kept) + "\n" + env_extra)
    return dest


def kong_yml(stack: Path) -> Path:
    return stack / "volumes/api/kong.yml"


def edit(path: Path, change: Callable[[str], str]) -> None:
    before = path.read_text()
    after = change(before)
    assert after != before, f"the edit changed nothing in {path}"
    path.write_text(after)


def run(stack: Path, prefix: str = "kong.") -> Report:
    return run_checks(Target.from_stack_dir(stack, docker=False), only=(prefix,))


def status(report: Report, check_id: str) -> Status:
    return report.by_id(check_id).status


def describe(report: Report) -> str:
    return "\n".join(str(r) for r in report)


# ------------------------------------------------------------------ sound stacks


@pytest.mark.parametrize(
    ("src", "overlay", "expected"),
    [
        # 2025-11: the tenant API is not blocked yet, which is worth a warning.
        (OFFICIAL_2025, False, {"kong.tenants_api_blocked": Status.WARN}),
        (OFFICIAL_2026, True, {}),
        (SINGH, False, {}),
    ],
    ids=["official-2025-11", "official-2026-09+kong", "singh-inder"],
)
def test_sound_stacks_pass(src: Path, overlay: bool, expected: dict[str, Status], tmp_path: Path) -> None:
    report = run(copy_stack(src, tmp_path, kong_overlay=overlay))
    for check_id in KONG_IDS:
        want = expected.get(check_id, Status.PASS)
        assert status(report, check_id) is want, describe(report)


def test_envoy_stack_skips_every_kong_check(tmp_path: Path) -> None:
    report = run(copy_stack(OFFICIAL_2026, tmp_path))
    for check_id in KONG_IDS:
        result = report.by_id(check_id)
        assert result.status is Status.SKIP
        assert "Envoy" in result.summary


def test_kong_overlay_uses_awk_and_old_stack_uses_eval(tmp_path: Path) -> None:
    new = run(copy_stack(OFFICIAL_2026, tmp_path / "a", kong_overlay=True)).by_id("kong.parse")
    old = run(copy_stack(OFFICIAL_2025, tmp_path / "b")).by_id("kong.parse")
    assert new.evidence["expansion"] == "awk"
    assert old.evidence["expansion"] == "eval"


# ------------------------------------------------------------------ broken variants


def _ws_block(text: str) -> tuple[int, int]:
    start = text.index("  - name: realtime-v1-ws")
    end = text.index("\n  - name:", start + 5)
    return start, end


def change_ws(text: str, old: str, new: str) -> str:
    start, end = _ws_block(text)
    block = text[start:end]
    assert old in block, old
    return text[:start] + block.replace(old, new, 1) + text[end:]


@pytest.mark.parametrize("src", [OFFICIAL_2025, OFFICIAL_2026], ids=["eval", "awk"])
def test_ws_route_without_protocol_ws_works_as_in_kong(src: Path, tmp_path: Path) -> None:
    """Kong OSS has no ws protocol: the url's http is what Kong uses, and the Upgrade is proxied on it.

    (rtbook used to fail this edit, believing `protocol: ws` was needed; notes/kong.md §10, §13b.1-2.)
    """
    stack = copy_stack(src, tmp_path, kong_overlay=src == OFFICIAL_2026)
    edit(kong_yml(stack), lambda t: change_ws(t, "    protocol: ws\n", ""))
    report = run(stack)
    for check_id in ("kong.parse", "kong.realtime_ws", "kong.realtime_auth"):
        assert status(report, check_id) is Status.PASS, describe(report)
    assert "http://realtime-dev.supabase-realtime:4000/socket/websocket" in report.by_id("kong.realtime_ws").summary


@pytest.mark.parametrize("src", [OFFICIAL_2025, OFFICIAL_2026], ids=["eval", "awk"])
def test_official_protocol_ws_is_overwritten_by_the_url(src: Path, tmp_path: Path) -> None:
    result = run(copy_stack(src, tmp_path, kong_overlay=src == OFFICIAL_2026)).by_id("kong.realtime_ws")
    assert result.status is Status.PASS
    assert result.evidence["protocol_field_ignored"] == "protocol: ws is overwritten by the url (http)"


@pytest.mark.parametrize("src", [OFFICIAL_2025, OFFICIAL_2026], ids=["eval", "awk"])
@pytest.mark.parametrize(
    "change",
    [
        ("url: http://realtime-dev.supabase-realtime:4000/socket", "url: ws://realtime-dev.supabase-realtime:4000/socket"),
        (
            "url: http://realtime-dev.supabase-realtime:4000/socket\n    protocol: ws\n",
            "host: realtime-dev.supabase-realtime\n    port: 4000\n    path: /socket\n    protocol: ws\n",
        ),
    ],
    ids=["ws-url", "protocol-ws-without-url"],
)
def test_ws_protocol_that_kong_uses_is_refused_at_start(src: Path, change: tuple[str, str], tmp_path: Path) -> None:
    stack = copy_stack(src, tmp_path, kong_overlay=src == OFFICIAL_2026)
    edit(kong_yml(stack), lambda t: change_ws(t, *change))
    report = run(stack)
    parse = report.by_id("kong.parse")
    assert parse.status is Status.FAIL
    assert "in 'protocol': expected one of: grpc, grpcs, http, https, tcp, tls, tls_passthrough, udp" in parse.summary
    assert "- in entry " in parse.summary and "in 'services'" in parse.summary
    assert "url: http://" in parse.remedy
    ws = report.by_id("kong.realtime_ws")
    assert ws.status is Status.FAIL and "refuses the file at start-up" in ws.detail


@pytest.mark.parametrize("src", [OFFICIAL_2025, OFFICIAL_2026], ids=["eval", "awk"])
def test_ws_route_without_strip_path(src: Path, tmp_path: Path) -> None:
    stack = copy_stack(src, tmp_path, kong_overlay=src == OFFICIAL_2026)
    edit(kong_yml(stack), lambda t: change_ws(t, "strip_path: true", "strip_path: false"))
    result = run(stack).by_id("kong.realtime_ws")
    assert result.status is Status.FAIL
    assert "strip_path: true" in result.remedy
    assert "/socket/realtime/v1/websocket" in result.detail


def test_plugin_missing_from_kong_plugins(tmp_path: Path) -> None:
    stack = copy_stack(OFFICIAL_2026, tmp_path, kong_overlay=True)
    edit(stack / "docker-compose.kong.yml", lambda t: t.replace("request-termination,", ""))
    result = run(stack).by_id("kong.plugins_enabled")
    assert result.status is Status.FAIL
    assert "request-termination" in result.summary
    assert re.search(r"KONG_PLUGINS: \S*request-termination", result.remedy)


def test_unresolvable_variable_awk(tmp_path: Path) -> None:
    stack = copy_stack(OFFICIAL_2026, tmp_path, kong_overlay=True)
    edit(kong_yml(stack), lambda t: t.replace("  - username: DASHBOARD\n", "  - username: $DASHBOARD_CONSUMER\n", 1))
    result = run(stack).by_id("kong.placeholders")
    assert result.status is Status.FAIL
    assert "$DASHBOARD_CONSUMER" in result.summary
    assert (
        "services.api-gw.environment" in result.remedy and "DASHBOARD_CONSUMER: ${DASHBOARD_CONSUMER}" in result.remedy
    )


def test_unresolvable_variable_eval(tmp_path: Path) -> None:
    stack = copy_stack(OFFICIAL_2025, tmp_path)
    edit(
        stack / "docker-compose.yml",
        lambda t: t.replace(
            "      SUPABASE_ANON_KEY: ${ANON_KEY}\n"
            "      SUPABASE_SERVICE_KEY: ${SERVICE_ROLE_KEY}\n      DASHBOARD_USERNAME",
            "      SUPABASE_SERVICE_KEY: ${SERVICE_ROLE_KEY}\n      DASHBOARD_USERNAME",
        ),
    )
    report = run(stack)
    result = report.by_id("kong.placeholders")
    assert result.status is Status.FAIL
    assert "$SUPABASE_ANON_KEY" in result.summary
    assert "SUPABASE_ANON_KEY: ${ANON_KEY}" in result.remedy and "services.kong.environment" in result.remedy
    # Without the key the anon consumer has no credential either.
    assert status(report, "kong.realtime_auth") is Status.FAIL


def test_hide_credentials_true_on_ws_route(tmp_path: Path) -> None:
    stack = copy_stack(OFFICIAL_2025, tmp_path)
    edit(kong_yml(stack), lambda t: change_ws(t, "hide_credentials: false", "hide_credentials: true"))
    result = run(stack).by_id("kong.realtime_auth")
    assert result.status is Status.FAIL
    assert "hide_credentials: false" in result.remedy


def test_acl_without_anon(tmp_path: Path) -> None:
    stack = copy_stack(OFFICIAL_2026, tmp_path, kong_overlay=True)
    edit(kong_yml(stack), lambda t: change_ws(t, "            - anon\n", ""))
    result = run(stack).by_id("kong.realtime_auth")
    assert result.status is Status.FAIL
    assert "'anon'" in result.remedy and "realtime-v1-ws" in result.remedy


def test_tenants_api_not_blocked(tmp_path: Path) -> None:
    stack = copy_stack(OFFICIAL_2026, tmp_path, kong_overlay=True)

    def drop_block(text: str) -> str:
        start = text.index("  # Block access to /realtime/v1/api/tenants")
        end = text.index("  - name: realtime-v1-rest\n", start)
        return text[:start] + text[end:]

    edit(kong_yml(stack), drop_block)
    result = run(stack).by_id("kong.tenants_api_blocked")
    assert result.status is Status.WARN
    assert "request-termination" in result.remedy and "/realtime/v1/api/tenants" in result.remedy


def test_preserve_host_true(tmp_path: Path) -> None:
    stack = copy_stack(OFFICIAL_2025, tmp_path)
    edit(kong_yml(stack), lambda t: change_ws(t, "strip_path: true", "strip_path: true\n        preserve_host: true"))
    result = run(stack).by_id("kong.realtime_preserve_host")
    assert result.status is Status.FAIL
    assert "'localhost'" in result.detail
    assert "preserve_host" in result.remedy and "realtime-v1-ws" in result.remedy


def test_yaml_error_names_file_and_line(tmp_path: Path) -> None:
    stack = copy_stack(OFFICIAL_2026, tmp_path, kong_overlay=True)
    edit(kong_yml(stack), lambda t: t.replace("  - name: realtime-v1-ws\n", "  - name: [realtime-v1-ws\n", 1))
    report = run(stack)
    result = report.by_id("kong.parse")
    assert result.status is Status.FAIL
    assert "kong.yml" in result.detail and re.search(r"line \d+", result.detail)
    assert status(report, "kong.realtime_ws") is Status.SKIP


def test_eval_entrypoint_breaks_on_unbalanced_quote(tmp_path: Path) -> None:
    stack = copy_stack(OFFICIAL_2025, tmp_path)
    edit(kong_yml(stack), lambda t: t.replace("  - username: anon\n", '  - username: "anon\n', 1))
    result = run(stack).by_id("kong.parse")
    assert result.status is Status.FAIL
    assert "double quote" in result.detail and "line 9" in result.detail


def test_secrets_never_reach_outputs(tmp_path: Path) -> None:
    canary_key = "canary-anon-key-7c1e9f2b5d"
    canary_password = "canary-dashboard-pw-41a8"
    stack = copy_stack(
        OFFICIAL_2025, tmp_path, env_extra=f"ANON_KEY={canary_key}\nDASHBOARD_PASSWORD={canary_password}\n"
    )
    # Break auth too so that failing results (with details) are rendered.
    edit(kong_yml(stack), lambda t: change_ws(t, "hide_credentials: false", "hide_credentials: true"))
    report = run(stack)
    assert status(report, "kong.realtime_auth") is Status.FAIL
    outputs = [
        str(report),
        report.to_json(),
        report.to_junit(),
        report._repr_html_(),
        json.dumps([dict(r.evidence) for r in report], default=str),
    ]
    for text in outputs:
        assert canary_key not in text
        assert canary_password not in text


# ------------------------------------------------------------------ community stacks

COMMUNITY = CORPUS / "community"


def test_easypanel_upstream_host_does_not_resolve(tmp_path: Path) -> None:
    """easypanel's generator removed every container_name, but kong.yml still dials realtime-dev.supabase-realtime.

    That is a real break: Docker DNS only knows the service name ``realtime``. Everything else in its
    kong.yml is sound, and (like the 2025 official file) the tenant API is not blocked.
    """
    report = run(copy_stack(COMMUNITY / "easypanel-io-compose-405fd49/supabase/code", tmp_path))
    ws = report.by_id("kong.realtime_ws")
    assert ws.status is Status.FAIL
    assert (
        "'realtime-dev.supabase-realtime'" in ws.detail
        and "container_name: realtime-dev.supabase-realtime" in ws.remedy
    )
    assert status(report, "kong.tenants_api_blocked") is Status.WARN
    for check_id in set(KONG_IDS) - {"kong.realtime_ws", "kong.tenants_api_blocked"}:
        assert status(report, check_id) is Status.PASS, describe(report)


def test_tsensei_under_plain_compose(tmp_path: Path) -> None:
    """tsensei keeps container_name (fine under plain compose; swarm is the docker.* checks' business)."""
    stack = copy_stack(COMMUNITY / "tsensei-supabase-swarm-de31fdd", tmp_path)
    shutil.copy(stack / "environment-variables.txt", stack / ".env")
    report = run(stack)
    assert status(report, "kong.tenants_api_blocked") is Status.WARN
    for check_id in set(KONG_IDS) - {"kong.tenants_api_blocked"}:
        assert status(report, check_id) is Status.PASS, describe(report)


def test_pgonrails_kong_built_from_its_folder(tmp_path: Path) -> None:
    """pgonrails bakes kong.yml and kong-entrypoint.sh into its image; the tenant is renamed consistently."""
    report = run(copy_stack(COMMUNITY / "BenIsenstein-pgonrails-f799e9a", tmp_path))
    assert report.by_id("kong.parse").evidence["expansion"] == "awk"
    assert "'default-tenant'" in report.by_id("kong.realtime_ws").summary
    blocked = report.by_id("kong.tenants_api_blocked")
    assert blocked.status is Status.WARN and "default-tenant.pgonrails-realtime:4000/api/tenants" in blocked.remedy
    for check_id in set(KONG_IDS) - {"kong.tenants_api_blocked"}:
        assert status(report, check_id) is Status.PASS, describe(report)


def test_kong_without_substituting_entrypoint(tmp_path: Path) -> None:
    """Mounting kong.yml straight at KONG_DECLARATIVE_CONFIG leaves '$SUPABASE_ANON_KEY' as a literal key."""
    stack = copy_stack(OFFICIAL_2025, tmp_path)

    def drop_entrypoint(text: str) -> str:
        start = text.index("    entrypoint: bash -c 'eval")
        end = text.index("\n", start)
        return text[:start] + text[end + 1 :]

    edit(stack / "docker-compose.yml", drop_entrypoint)
    report = run(stack)
    result = report.by_id("kong.placeholders")
    assert result.status is Status.FAIL
    assert "nothing substitutes them" in result.summary
    assert "kong-entrypoint.sh" in result.remedy
    assert report.by_id("kong.parse").evidence["expansion"] == "none"


def test_variables_in_comments_do_not_count(tmp_path: Path) -> None:
    stack = copy_stack(OFFICIAL_2026, tmp_path, kong_overlay=True)
    edit(
        kong_yml(stack),
        lambda t: t.replace("###\n### Consumers / Users\n", "###\n### Consumers / Users ($NOT_SET_ANYWHERE)\n", 1),
    )
    assert run(stack).by_id("kong.placeholders").status is Status.PASS


def test_unknown_format_version_warns(tmp_path: Path) -> None:
    stack = copy_stack(OFFICIAL_2025, tmp_path)
    edit(kong_yml(stack), lambda t: t.replace("_format_version: '2.1'", "_format_version: '9.9'", 1))
    result = run(stack).by_id("kong.parse")
    assert result.status is Status.WARN
    assert "'9.9'" in result.summary and "_format_version: '2.1'" in result.remedy


def test_key_auth_without_apikey_key_name(tmp_path: Path) -> None:
    stack = copy_stack(OFFICIAL_2025, tmp_path)
    edit(
        kong_yml(stack),
        lambda t: change_ws(t, "hide_credentials: false", "hide_credentials: false\n          key_names: [x-token]"),
    )
    result = run(stack).by_id("kong.realtime_auth")
    assert result.status is Status.FAIL
    assert "key_names" in result.remedy and "'apikey'" in result.remedy


# ------------------------------------------------------------------ Kong version and start-up refusals


def test_kong_version_comes_from_the_image_tag(tmp_path: Path) -> None:
    old = run(copy_stack(OFFICIAL_2025, tmp_path / "a")).by_id("kong.parse")
    new = run(copy_stack(OFFICIAL_2026, tmp_path / "b", kong_overlay=True)).by_id("kong.parse")
    assert (old.evidence["kong_version"], old.evidence["router_flavor"]) == ("2.8.1", None)
    assert (new.evidence["kong_version"], new.evidence["router_flavor"]) == ("3.9.3", "expressions")


def test_eval_entrypoint_turns_a_double_quoted_transformer_entry_into_a_mapping(tmp_path: Path) -> None:
    """The 2025 entrypoint evals the file inside double quotes, so `- "Host: x"` reaches Kong as `- Host: x`."""
    stack = copy_stack(OFFICIAL_2025, tmp_path)
    edit(kong_yml(stack), lambda t: change_ws(t, "      - name: acl\n",
                                              "      - name: request-transformer\n        config:\n          add:\n"
                                              "            headers:\n              - \"X-Tenant: a\"\n"
                                              "      - name: acl\n"))
    parse = run(stack).by_id("kong.parse")
    assert parse.status is Status.FAIL
    assert "in 'add': in 'headers': - in entry 1 of 'headers': expected a string" in parse.summary
    assert "quotes around it were lost" in parse.summary


def test_acl_without_any_authentication_plugin_fails(tmp_path: Path) -> None:
    stack = copy_stack(OFFICIAL_2026, tmp_path, kong_overlay=True)
    edit(kong_yml(stack), lambda t: change_ws(t, "      - name: key-auth\n        config:\n"
                                                 "          hide_credentials: false\n", ""))
    result = run(stack).by_id("kong.realtime_auth")
    assert result.status is Status.FAIL
    assert "no authentication plugin" in result.detail and '401 "Unauthorized"' in result.detail


def test_no_key_auth_and_no_acl_is_only_a_warning(tmp_path: Path) -> None:
    stack = copy_stack(OFFICIAL_2025, tmp_path)
    edit(kong_yml(stack), lambda t: change_ws(t, "      - name: key-auth\n        config:\n"
                                                 "          hide_credentials: false\n", ""))
    acl = "\n      - name: acl\n        config:\n          hide_groups_header: true\n"
    edit(kong_yml(stack), lambda t: change_ws(t, acl + "          allow:\n            - admin\n            - anon", ""))
    result = run(stack).by_id("kong.realtime_auth")
    assert result.status is Status.WARN and "without an API key" in result.detail


@pytest.mark.parametrize(("src", "text"), [(OFFICIAL_2025, '"Invalid authentication credentials"'),
                                           (OFFICIAL_2026, '"Unauthorized" (with WWW-Authenticate: Key)')])
def test_missing_key_holder_names_the_versions_401_text(src: Path, text: str, tmp_path: Path) -> None:
    stack = copy_stack(src, tmp_path, kong_overlay=src == OFFICIAL_2026)
    edit(kong_yml(stack), lambda t: t.replace("      - key: $SUPABASE_ANON_KEY\n", "", 1))
    result = run(stack).by_id("kong.realtime_auth")
    assert result.status is Status.FAIL and text in result.detail


def test_host_replacement_reaches_the_compose_tenant_check(tmp_path: Path) -> None:
    """config/gateway.realtime_upstream is the one place for the Host Realtime sees; compose.* follow it."""
    stack = copy_stack(OFFICIAL_2026, tmp_path, kong_overlay=True)
    edit(kong_yml(stack), lambda t: change_ws(t, "          replace:\n            querystring:\n",
                                              "          replace:\n            headers:\n"
                                              "              - 'Host: tenant-b.supabase-realtime'\n"
                                              "            querystring:\n"))
    report = run_checks(Target.from_stack_dir(stack, docker=False), only=("compose.realtime.tenant_consistency",
                                                                           "kong.realtime_preserve_host"))
    assert report.by_id("kong.realtime_preserve_host").status is Status.FAIL
    compose = report.by_id("compose.realtime.tenant_consistency")
    assert compose.status is Status.FAIL, str(compose)
    assert "tenant-b.supabase-realtime" in compose.detail and "request-transformer" in compose.detail


def test_bundled_on_kong_2_8_lacks_the_3_x_only_plugins(tmp_path: Path) -> None:
    stack = copy_stack(OFFICIAL_2025, tmp_path)
    edit(stack / "docker-compose.yml", lambda t: t.replace(
        "KONG_PLUGINS: request-transformer,cors,key-auth,acl,basic-auth,request-termination,ip-restriction",
        "KONG_PLUGINS: bundled"))
    assert run(stack).by_id("kong.plugins_enabled").status is Status.PASS
    edit(kong_yml(stack), lambda t: change_ws(t, "      - name: cors\n", "      - name: cors\n      - name: redirect\n"
                                              "        config:\n          location: http://x\n"))
    result = run(stack).by_id("kong.plugins_enabled")
    assert result.status is Status.FAIL and "redirect" in result.summary  # a 3.x plugin
