"""envoy.* checks on the official 2026-09 stack (Envoy as shipped) and on broken copies of it."""

from __future__ import annotations

from pathlib import Path

import pytest

from rtbook.results import Status
from tests.unit.test_kong_checks import (
    KONG_IDS,
    OFFICIAL_2025,
    OFFICIAL_2026,
    copy_stack,
    describe,
    edit,
    run,
    status,
)

ENVOY_IDS = (
    "envoy.parse",
    "envoy.placeholders",
    "envoy.realtime_ws",
    "envoy.realtime_rest",
    "envoy.realtime_host_rewrite",
    "envoy.realtime_auth",
    "envoy.tenants_api_blocked",
)


def lds(stack: Path) -> Path:
    return stack / "volumes/api/envoy/lds.template.yaml"


def route_block(text: str, name: str) -> tuple[int, int]:
    start = text.index(f"                      - name: {name}\n")
    end = text.index("\n                      - name:", start + 10)
    return start, end


def change_route(text: str, name: str, old: str, new: str) -> str:
    start, end = route_block(text, name)
    block = text[start:end]
    assert old in block, old
    return text[:start] + block.replace(old, new, 1) + text[end:]


@pytest.fixture
def envoy_stack(tmp_path: Path) -> Path:
    return copy_stack(OFFICIAL_2026, tmp_path)


def test_official_envoy_passes(envoy_stack: Path) -> None:
    report = run(envoy_stack, "envoy.")
    for check_id in ENVOY_IDS:
        assert status(report, check_id) is Status.PASS, describe(report)
    assert "'realtime-dev'" in report.by_id("envoy.realtime_host_rewrite").summary


def test_kong_stacks_skip_every_envoy_check(tmp_path: Path) -> None:
    for stack in (
        copy_stack(OFFICIAL_2025, tmp_path / "a"),
        copy_stack(OFFICIAL_2026, tmp_path / "b", kong_overlay=True),
    ):
        report = run(stack, "envoy.")
        for check_id in ENVOY_IDS:
            result = report.by_id(check_id)
            assert result.status is Status.SKIP and "Kong" in result.summary


def test_missing_upgrade_configs(envoy_stack: Path) -> None:
    edit(
        lds(envoy_stack),
        lambda t: t.replace("              upgrade_configs:\n                - upgrade_type: websocket\n", ""),
    )
    result = run(envoy_stack, "envoy.").by_id("envoy.realtime_ws")
    assert result.status is Status.FAIL
    assert "upgrade_configs" in result.remedy and "websocket" in result.remedy


def test_wrong_prefix_rewrite(envoy_stack: Path) -> None:
    edit(
        lds(envoy_stack),
        lambda t: change_route(t, "realtime-v1-ws-protected", "prefix_rewrite: /socket/", "prefix_rewrite: /"),
    )
    result = run(envoy_stack, "envoy.").by_id("envoy.realtime_ws")
    assert result.status is Status.FAIL
    assert "/websocket" in result.detail
    assert "prefix_rewrite: /socket/" in result.remedy


def test_missing_host_rewrite(envoy_stack: Path) -> None:
    edit(
        lds(envoy_stack),
        lambda t: change_route(
            t,
            "realtime-v1-ws-protected",
            "                          host_rewrite_literal: realtime-dev.supabase-realtime\n",
            "",
        ),
    )
    report = run(envoy_stack, "envoy.")
    result = report.by_id("envoy.realtime_host_rewrite")
    assert result.status is Status.FAIL
    assert "'localhost'" in result.detail
    assert "host_rewrite_literal: realtime-dev.supabase-realtime" in result.remedy
    # The route itself still reaches Realtime: only the tenant is wrong.
    assert status(report, "envoy.realtime_ws") is Status.PASS


def test_tenants_api_not_blocked(envoy_stack: Path) -> None:
    edit(
        lds(envoy_stack),
        lambda t: change_route(
            t,
            "realtime-v1-api-tenants-blocked",
            "prefix: /realtime/v1/api/tenants\n",
            "prefix: /realtime/v1/api/tenants-unused\n",
        ),
    )
    result = run(envoy_stack, "envoy.").by_id("envoy.tenants_api_blocked")
    assert result.status is Status.WARN
    assert "realtime-v1-api-tenants-blocked" in result.remedy


def test_apikey_not_validated_on_ws_route(envoy_stack: Path) -> None:
    def unprotect(text: str) -> str:
        text = text.replace('                        ["realtime-v1-ws-protected"] = true,\n', "")
        # Also drop the RBAC permission that covers /realtime/v1/.
        rbac = (
            "                            - url_path:\n"
            "                                path:\n"
            "                                  prefix: /realtime/v1/\n"
        )
        assert rbac in text
        return text.replace(rbac, "")

    edit(lds(envoy_stack), unprotect)
    result = run(envoy_stack, "envoy.").by_id("envoy.realtime_auth")
    assert result.status is Status.FAIL
    assert '["realtime-v1-ws-protected"] = true' in result.remedy


def test_no_x_api_key_mirror(envoy_stack: Path) -> None:
    edit(lds(envoy_stack), lambda t: t.replace('headers:replace("x-api-key", apikey)', "-- removed"))
    result = run(envoy_stack, "envoy.").by_id("envoy.realtime_auth")
    assert result.status is Status.WARN
    assert "x-api-key" in result.remedy


def test_cluster_port_and_address(envoy_stack: Path) -> None:
    cds = envoy_stack / "volumes/api/envoy/cds.yaml"
    edit(
        cds,
        lambda t: t.replace(
            "address: realtime-dev.supabase-realtime\n                    port_value: 4000",
            "address: realtime\n                    port_value: 4001",
        ),
    )
    result = run(envoy_stack, "envoy.").by_id("envoy.realtime_ws")
    assert result.status is Status.FAIL
    assert "port_value: 4000" in result.remedy
    assert "'realtime'" in result.detail


def test_sed_leaves_unknown_placeholder(envoy_stack: Path) -> None:
    edit(
        lds(envoy_stack),
        lambda t: change_route(
            t,
            "realtime-v1-ws-protected",
            "host_rewrite_literal: realtime-dev.supabase-realtime",
            "host_rewrite_literal: ${REALTIME_TENANT_HOST}",
        ),
    )
    result = run(envoy_stack, "envoy.").by_id("envoy.placeholders")
    assert result.status is Status.FAIL
    assert "${REALTIME_TENANT_HOST}" in result.detail
    assert "docker-entrypoint.sh" in result.remedy


def test_pgonrails_envoy_overlay(tmp_path: Path) -> None:
    """pgonrails' Envoy overlay: cds is a template too, REALTIME_HOST decides both address and tenant."""
    stack = copy_stack(
        OFFICIAL_2026.parent.parent / "community/BenIsenstein-pgonrails-f799e9a",
        tmp_path,
        env_extra="COMPOSE_FILE=docker-compose.yml:docker-compose.envoy.yml\n",
    )
    report = run(stack, "envoy.")
    assert "'default-tenant'" in report.by_id("envoy.realtime_host_rewrite").summary
    # pgonrails did not copy the tenants block from the official Envoy config.
    assert status(report, "envoy.tenants_api_blocked") is Status.WARN
    for check_id in set(ENVOY_IDS) - {"envoy.tenants_api_blocked"}:
        assert status(report, check_id) is Status.PASS, describe(report)
    kong = run(stack, "kong.")
    assert {r.id for r in kong} == set(KONG_IDS), describe(kong)
    assert all(r.status is Status.SKIP and "gateway is Envoy" in r.summary for r in kong), describe(kong)


def test_secrets_never_reach_outputs(tmp_path: Path) -> None:
    import json

    canary_key = "canary-envoy-anon-key-5e0d3a"
    canary_password = "canary-envoy-dashboard-pw-9b2"
    stack = copy_stack(
        OFFICIAL_2026, tmp_path, env_extra=f"ANON_KEY={canary_key}\nDASHBOARD_PASSWORD={canary_password}\n"
    )
    edit(lds(stack), lambda t: t.replace('headers:replace("x-api-key", apikey)', "-- removed"))
    edit(
        lds(stack),
        lambda t: change_route(
            t,
            "realtime-v1-ws-protected",
            "                          host_rewrite_literal: realtime-dev.supabase-realtime\n",
            "",
        ),
    )
    report = run(stack, "envoy.")
    assert status(report, "envoy.realtime_host_rewrite") is Status.FAIL
    assert status(report, "envoy.realtime_auth") is Status.WARN
    outputs = [str(report), report.to_json(), report.to_junit(), report._repr_html_()]
    outputs.append(json.dumps([dict(r.evidence) for r in report], default=str))
    for text in outputs:
        assert canary_key not in text and canary_password not in text
