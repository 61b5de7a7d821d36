"""docker.* checks against a real engine: a healthy lab stack passes, each broken variant fails
with the right remedy, and applying the remedy makes the check pass again."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from docker.types import Ulimit

from rtbook.clients.docker import connect_engine, discover
from rtbook.registry import run_checks
from rtbook.results import Report, Status
from rtbook.target import Target
from tests.docker.harness import Lab

pytestmark = pytest.mark.docker

DOCKER_IDS = (
    "docker.engine",
    "docker.realtime.running",
    "docker.realtime.health",
    "docker.realtime.env",
    "docker.realtime.tenant_host",
    "docker.gateway.resolves_realtime",
    "docker.realtime.logs",
    "docker.realtime.limits",
)
UPSTREAM = "realtime-dev.supabase-realtime"
CANARY = "rtbook-canary-jwt-secret-0f1e2d3c4b5a69788796a5b4c3d2e1f0"


def run(target: Target) -> Report:
    return run_checks(target, only="docker.")


def status(report: Report, check_id: str) -> Status:
    return report.by_id(check_id).status


def override(result: Any, key: str = "override_yaml") -> dict[str, Any]:
    text = result.evidence[key]
    assert text in result.remedy or key != "override_yaml", "the override YAML is part of the remedy"
    data = yaml.safe_load(text)
    assert isinstance(data, dict) and "services" in data
    return dict(data["services"])


def test_healthy_stack_passes_every_docker_check(lab: Lab, target: Target) -> None:
    rt = lab.realtime()
    lab.gateway()
    assert lab.wait_health(rt) == "healthy"

    report = run(target)

    assert [r.id for r in report] == list(DOCKER_IDS), str(report)
    assert all(r.status is Status.PASS for r in report), str(report)
    engine = report.by_id("docker.engine")
    assert engine.evidence["realtime"] == rt.name
    assert "compose labels" in engine.evidence["realtime_found_by"]
    assert engine.evidence["gateway"] == f"{lab.prefix}-kong"
    resolves = report.by_id("docker.gateway.resolves_realtime")
    assert resolves.evidence["resolution"][UPSTREAM]["addresses"], resolves.evidence
    # The healthcheck carries the ANON_KEY: it must not reach the report.
    assert lab.stack_env["ANON_KEY"] not in report.to_json()


def test_renamed_container_fails_until_the_alias_is_added(
    lab: Lab, target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = lab.realtime(name=f"{lab.prefix}-renamed-realtime", aliases=())
    lab.gateway()
    lab.wait_health(rt)

    report = run(target)

    host = report.by_id("docker.realtime.tenant_host")
    assert host.status is Status.FAIL, str(host)
    assert UPSTREAM in host.detail and rt.name in host.detail
    services = override(host)
    assert services == {"realtime": {"networks": {"default": {"aliases": [UPSTREAM]}}}}
    assert yaml.safe_load(host.evidence["override_yaml_container_name"]) == {
        "services": {"realtime": {"container_name": UPSTREAM}}
    }
    resolves = report.by_id("docker.gateway.resolves_realtime")
    assert resolves.status is Status.FAIL, str(resolves)
    assert "does not resolve" in resolves.detail
    # Discovery still found it, by its compose labels.
    assert report.by_id("docker.engine").evidence["realtime"] == rt.name

    # Apply the remedy the way `docker compose up -d` would: a new container, with the alias.
    rt.remove(force=True)
    rt = lab.realtime(name=f"{lab.prefix}-renamed-realtime", aliases=(UPSTREAM,))
    lab.wait_health(rt)
    # The same target, as in a notebook cell run again: the engine is asked afresh.
    monkeypatch.setattr("rtbook.clients.docker.SESSION_TTL_S", 0.0)
    again = run(target)
    assert status(again, "docker.realtime.tenant_host") is Status.PASS, str(again)
    assert status(again, "docker.gateway.resolves_realtime") is Status.PASS, str(again)


def test_overridden_api_jwt_secret_is_reported_without_leaking_it(lab: Lab, target: Target) -> None:
    rt = lab.realtime(env={"API_JWT_SECRET": CANARY, "RTBOOK_EXTRA_FLAG": "1"})
    lab.gateway()
    assert lab.wait_health(rt) == "unhealthy"

    report = run(target)

    health = report.by_id("docker.realtime.health")
    assert health.status is Status.FAIL
    assert health.evidence["http_status"] == 403
    assert health.cause == "admin_jwt_mismatch"
    assert "NOT signed" in health.detail
    assert "API_JWT_SECRET" in health.remedy

    env = report.by_id("docker.realtime.env")
    assert env.status is Status.FAIL, str(env)
    assert "API_JWT_SECRET" in env.summary
    assert env.evidence["different"] == ["API_JWT_SECRET"]
    assert env.evidence["only_in_container"] == ["RTBOOK_EXTRA_FLAG"]
    # The pinned value is a reference to the .env entry, never the secret itself.
    assert override(env) == {"realtime": {"environment": {"API_JWT_SECRET": "${JWT_SECRET}"}}}

    rendered = report.to_json() + str(report) + report._repr_html_()
    assert CANARY not in rendered
    assert lab.stack_env["JWT_SECRET"] not in rendered


@pytest.mark.parametrize("variant", ["tenant_missing", "healthcheck_names_other_tenant"])
def test_failing_healthcheck_404(lab: Lab, target: Target, variant: str) -> None:
    if variant == "tenant_missing":
        rt = lab.realtime(args=["--no-tenant"])
    else:
        rt = lab.realtime(health_path="/api/tenants/acme/health")
    lab.gateway()
    assert lab.wait_health(rt) == "unhealthy"

    result = run(target).by_id("docker.realtime.health")

    assert result.status is Status.FAIL
    assert result.evidence["http_status"] == 404
    assert result.cause == "tenant_missing_admin"
    if variant == "tenant_missing":
        assert "SEED_SELF_HOST" in result.remedy
    else:
        assert result.evidence["healthcheck_tenant"] == "acme"
        test = override(result)["realtime"]["healthcheck"]["test"]
        assert test[0] == "CMD-SHELL" and "/api/tenants/realtime-dev/health" in test[1]


def test_restart_loop_and_its_boot_error(lab: Lab, target: Target) -> None:
    line = "21:03:11.203 [error] Failed to detect IP version for DB_HOST: nxdomain"
    rt = lab.realtime(args=["--exit-code", "1", "--log", line], restart="always", healthcheck=False)
    lab.gateway()
    lab.wait_restarts(rt, 2)

    report = run(target)

    running = report.by_id("docker.realtime.running")
    assert running.status is Status.FAIL, str(running)
    assert running.evidence["restart_count"] >= 2
    assert "restart loop" in running.summary
    logs = report.by_id("docker.realtime.logs")
    assert logs.status is Status.FAIL
    assert [f["code"] for f in logs.evidence["findings"]] == ["DbHostUnresolvable"]
    assert "DB_IP_VERSION" in logs.remedy


def test_known_log_signatures_are_mapped_and_redacted(lab: Lab, target: Target) -> None:
    anon = lab.stack_env["ANON_KEY"]
    lines = [
        "22:10:01.123 [error] TenantNotFound: Tenant not found: 192 error_code=TenantNotFound external_id=192",
        "** (ArgumentError) errors were found at the given arguments: not an already existing atom "
        ':erlang.binary_to_existing_atom("True", :utf8)',
        f"22:10:02.000 [error] Failed to validate JWT signature token={anon}",
        '22:10:03.000 [error] ** (Postgrex.Error) ERROR 42P01 (undefined_table) relation "tenants" does not exist',
        "22:10:04.000 [error] ReplicationSlotBeingUsed: replication slot supabase_realtime_replication_slot_ is "
        "active for PID 4242",
    ]
    args = [a for line in lines for a in ("--log", line)]
    rt = lab.realtime(args=args)
    lab.gateway()
    lab.wait_health(rt)

    result = run(target).by_id("docker.realtime.logs")

    assert result.status is Status.FAIL
    codes = {f["code"]: f for f in result.evidence["findings"]}
    assert set(codes) == {"TenantNotFound", "BooleanAtom", "JwtError", "TenantsRelationMissing",
                          "ReplicationSlotBeingUsed"}
    assert codes["TenantNotFound"]["captured"] == ["192"]
    assert "SELF_HOST_TENANT_NAME" in result.remedy and "realtime.sql" in result.remedy
    assert anon not in str(result.to_dict())
    # A token symptom: the detail says what the default log level never writes.
    assert "log_level=warning or info" in result.detail


def test_real_format_replication_and_db_lines(lab: Lab, target: Target) -> None:
    # Realtime's own format: "$time $metadata[$level] $message" (supabase/realtime config/config.exs).
    meta = "project=realtime-dev external_id=realtime-dev"
    lines = [
        f"10:00:01.000 {meta} error_code=PoolingReplicationPreparationError [error] "
        'PoolingReplicationPreparationError: %Postgrex.Error{postgres: %{message: "logical decoding requires '
        'wal_level >= logical"}}',
        f"10:00:02.000 {meta} error_code=UnableToConnectToProject [error] UnableToConnectToProject: Realtime was "
        "unable to connect to the project database",
        f"10:00:03.000 {meta} [critical] ClientJoinRateLimitReached: Too many joins per second",
        f"10:00:04.000 {meta} error_code=TenantNotFound [error] TenantNotFound: Tenant not found: realtime-dev",
    ]
    rt = lab.realtime(args=[a for line in lines for a in ("--log", line)])
    lab.gateway()
    lab.wait_health(rt)

    result = run(target).by_id("docker.realtime.logs")

    assert result.status is Status.FAIL, str(result)
    codes = {f["code"]: f for f in result.evidence["findings"]}
    assert set(codes) == {"PoolingReplicationPreparationError", "UnableToConnectToProject",
                          "ClientJoinRateLimitReached", "TenantNotFound"}
    assert codes["PoolingReplicationPreparationError"]["cause"] == "wal_level"
    assert codes["ClientJoinRateLimitReached"]["levels_seen"] == {"critical": 1}
    assert codes["UnableToConnectToProject"]["tenants"] == ["realtime-dev"]
    # TenantNotFound for the stack's own tenant: the v2.78 missing-apikey reading is offered.
    assert "WITHOUT an apikey" in result.detail


def test_containers_on_different_networks(lab: Lab, target: Target) -> None:
    other = lab.extra_network("isolated")
    rt = lab.realtime(network=other)
    lab.gateway()
    lab.wait_health(rt)

    report = run(target)

    resolves = report.by_id("docker.gateway.resolves_realtime")
    assert resolves.status is Status.FAIL, str(resolves)
    assert "share no network" in resolves.detail
    assert override(resolves) == {"realtime": {"networks": ["default"]}}
    assert status(report, "docker.realtime.tenant_host") is Status.FAIL

    lab.client.networks.get(lab.network).connect(rt, aliases=[UPSTREAM])
    again = run(Target.from_stack_dir(lab.stack_dir, docker=True))
    assert status(again, "docker.gateway.resolves_realtime") is Status.PASS, str(again)
    assert status(again, "docker.realtime.tenant_host") is Status.PASS, str(again)


def test_low_open_files_and_memory_limits(lab: Lab, target: Target) -> None:
    rt = lab.realtime(ulimits=[Ulimit(name="nofile", soft=256, hard=256)], mem_limit="96m")
    lab.gateway()
    lab.wait_health(rt)

    result = run(target).by_id("docker.realtime.limits")

    assert result.status is Status.FAIL, str(result)
    assert result.evidence["open_files_soft"] == 256
    assert result.evidence["memory_limit"] == 96 << 20
    spec = override(result)["realtime"]
    assert spec["ulimits"]["nofile"]["soft"] >= 10000
    assert spec["environment"] == {"RLIMIT_NOFILE": str(spec["ulimits"]["nofile"]["soft"])}
    assert int(spec["mem_limit"].rstrip("m")) >= 300


def test_stack_not_running(lab: Lab) -> None:
    assert lab.stack_dir is not None
    auto = run(Target.from_stack_dir(lab.stack_dir, docker=None))
    assert status(auto, "docker.engine") is Status.SKIP, str(auto)
    assert [r.id for r in auto] == list(DOCKER_IDS), str(auto)
    assert all(r.status is Status.SKIP for r in auto), str(auto)
    required = run(Target.from_stack_dir(lab.stack_dir, docker=True))
    engine = required.by_id("docker.engine")
    assert engine.status is Status.FAIL
    assert "docker compose up -d" in engine.remedy


@pytest.mark.parametrize("docker_host", ["unix:///nonexistent/rtbook-docker.sock", "tcp://127.0.0.1:1"])
def test_unreachable_engine_is_a_result_not_an_exception(lab: Lab, docker_host: str) -> None:
    assert lab.stack_dir is not None
    env = {"DOCKER_HOST": docker_host}
    auto = run(Target.from_stack_dir(lab.stack_dir, docker=None, env=env))
    assert [r.id for r in auto] == list(DOCKER_IDS), str(auto)
    assert all(r.status is Status.SKIP for r in auto), str(auto)
    required = run(Target.from_stack_dir(lab.stack_dir, docker=True, env=env))
    engine = required.by_id("docker.engine")
    assert engine.status is Status.FAIL
    assert engine.evidence["problem"] == "docker_host"
    assert docker_host in engine.remedy and "DOCKER_HOST" in engine.remedy
    # One failure carries the cause; the other checks point to it instead of repeating it.
    others = [r for r in required if r is not engine]
    assert len(others) == len(DOCKER_IDS) - 1, str(required)
    assert all(r.status is Status.SKIP and "docker.engine" in r.summary for r in others)


def test_discovery_by_image_without_compose_labels(lab: Lab) -> None:
    image = lab.tag_image(f"{lab.prefix}.local/supabase/realtime", "v2.134.10")
    rt = lab.realtime(name=f"{lab.prefix}-by-image", service=None, image=image, healthcheck=False)
    session = connect_engine()
    assert session.client is not None, session.problem
    try:
        found = discover(session.client)
    finally:
        session.client.close()
    assert found.realtime is not None
    assert found.realtime.repository == "supabase/realtime"
    assert "image" in found.realtime_how
    # Another lab's stand-in could run at the same time; ours must at least be a candidate.
    assert rt.name == found.realtime.name or found.realtime.name.startswith("rtbooktest-")


def test_gateway_without_getent_falls_back_to_nslookup(lab: Lab, target: Target) -> None:
    rt = lab.realtime()
    lab.gateway(busybox_only=True)
    lab.wait_health(rt)

    result = run(target).by_id("docker.gateway.resolves_realtime")

    assert result.status is Status.PASS, str(result)
    assert result.evidence["resolution"][UPSTREAM]["tool"] == "nslookup"

    lab.client.networks.get(lab.network).disconnect(rt)
    lab.client.networks.get(lab.network).connect(rt)  # no alias any more
    again = run(Target.from_stack_dir(lab.stack_dir, docker=True)).by_id("docker.gateway.resolves_realtime")
    assert again.status is Status.FAIL, str(again)
    assert again.evidence["resolution"][UPSTREAM]["tool"] == "nslookup"
    assert again.evidence["resolution"][UPSTREAM]["addresses"] == []


def test_oom_killed_realtime(lab: Lab, target: Target) -> None:
    rt = lab.realtime(args=["--alloc-mb", "256"], mem_limit="48m", healthcheck=False)
    lab.gateway()
    rt.wait(timeout=30)
    # The engine records OOMKilled from the kernel's event, which can land just after the exit.
    deadline = time.monotonic() + 10
    while not rt.attrs["State"].get("OOMKilled") and time.monotonic() < deadline:
        time.sleep(0.2)
        rt.reload()
    assert rt.attrs["State"]["OOMKilled"], rt.attrs["State"]

    result = run(target).by_id("docker.realtime.running")

    assert result.status is Status.FAIL, str(result)
    assert result.evidence["oom_killed"] is True
    assert "mem_limit" in override(result)["realtime"]


def test_envoy_gateway_host_rewrite_names_the_tenant(lab: Lab, envoy_stack_dir: Path) -> None:
    rt = lab.realtime()
    lab.gateway()  # the api-gw service, as the Envoy stack names it
    lab.wait_health(rt)

    report = run(Target.from_stack_dir(envoy_stack_dir, docker=True))
    host = report.by_id("docker.realtime.tenant_host")
    assert host.status is Status.PASS, str(report)
    assert host.evidence["host_headers"] == [UPSTREAM]
    assert status(report, "docker.gateway.resolves_realtime") is Status.PASS, str(report)

    # Envoy keeps connecting to realtime-dev.supabase-realtime but now sends Host realtime.supabase-realtime.
    lds = envoy_stack_dir / "volumes" / "api" / "envoy" / "lds.template.yaml"
    lds.write_text(lds.read_text().replace(f"host_rewrite_literal: {UPSTREAM}",
                                           "host_rewrite_literal: realtime.supabase-realtime"))
    broken = run(Target.from_stack_dir(envoy_stack_dir, docker=True)).by_id("docker.realtime.tenant_host")
    assert broken.status is Status.FAIL, str(broken)
    assert broken.cause == "tenant_not_found"
    assert "'realtime'" in broken.detail and "'realtime-dev'" in broken.detail
    assert override(broken) == {"realtime": {"environment": {"SELF_HOST_TENANT_NAME": "realtime"}}}


def test_without_stack_files_the_official_names_are_used(lab: Lab) -> None:
    rt = lab.realtime()
    gw = lab.gateway()
    lab.wait_health(rt)

    report = run(Target(docker=True))

    engine = report.by_id("docker.engine")
    assert (engine.evidence["realtime"], engine.evidence["gateway"]) == (rt.name, gw.name), str(report)
    assert "service=api-gw" in engine.evidence["gateway_found_by"]
    for check_id in ("docker.realtime.running", "docker.realtime.health", "docker.realtime.env",
                     "docker.gateway.resolves_realtime", "docker.realtime.logs", "docker.realtime.limits"):
        assert status(report, check_id) is Status.PASS, str(report)
    # Which host the gateway uses is in its config, which only the stack files give.
    host = report.by_id("docker.realtime.tenant_host")
    assert host.status is Status.WARN and "--stack" in host.remedy


def test_running_image_differs_from_the_compose_file(lab: Lab, target: Target) -> None:
    image = lab.tag_image(f"{lab.prefix}.local/rtbooktest/realtime", "v2.65.2")
    rt = lab.realtime(image=image)
    lab.gateway()
    lab.wait_health(rt)

    result = run(target).by_id("docker.realtime.running")

    assert result.status is Status.WARN, str(result)
    assert "v2.65.2" in result.summary and "v2.134.10" in result.summary
    assert "docker compose pull realtime" in result.remedy
