"""Pure parts of the docker checks: inspect parsing, resolver/probe output, log signatures, engine errors."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml

from rtbook.checks.docker import LOG_SIGNATURES, override_yaml, parse_resolver_output, probe_http_status, scan_logs
from rtbook.clients.docker import ContainerInfo, classify_engine_error, connect_engine, parse_env_list
from rtbook.config.images import image_repository

# Trimmed from a real `docker inspect` of a compose-created container (engine 20.10), plus keys
# a newer engine adds, which must be ignored.
ATTRS = {
    "Id": "e7d1021f16c0443103bf6482cf0e920acdfbcc1411dd302b677ac271b7b92c2e",
    "Name": "/realtime-dev.supabase-realtime",
    "Image": "sha256:290f6c0a3c73",
    "RestartCount": 3,
    "SomeFutureKey": {"x": 1},
    "State": {
        "Status": "running",
        "Running": True,
        "Restarting": False,
        "OOMKilled": False,
        "Pid": 4242,
        "ExitCode": 0,
        "Error": "",
        "StartedAt": "2026-11-25T21:00:00Z",
        "FinishedAt": "0001-01-01T00:00:00Z",
        "Health": {
            "Status": "unhealthy",
            "FailingStreak": 4,
            "Log": [
                {
                    "Start": "a",
                    "End": "b",
                    "ExitCode": 22,
                    "Output": "curl: (22) The requested URL returned error: 403\n",
                },
            ],
        },
    },
    "Config": {
        "Hostname": "e7d1021f16c0",
        "Image": "supabase/realtime:v2.134.10",
        "Env": ["PORT=4000", "DNS_NODES=''", "EMPTY=", "BARE", "A=b=c"],
        "Labels": {"com.docker.compose.project": "supabase", "com.docker.compose.service": "realtime"},
        "Healthcheck": {
            "Test": ["CMD-SHELL", "curl -sSfL http://localhost:4000/api/tenants/realtime-dev/health"],
            "Interval": 30_000_000_000,
            "Retries": 3,
        },
    },
    "HostConfig": {
        "Memory": 0,
        "RestartPolicy": {"Name": "unless-stopped"},
        "Ulimits": [{"Name": "nofile", "Soft": 10000, "Hard": 10000}],
        "NetworkMode": "supabase_default",
    },
    "NetworkSettings": {
        "Networks": {
            "supabase_default": {
                "Aliases": ["realtime-dev.supabase-realtime", "realtime", "e7d1021f16c0"],
                "IPAddress": "172.18.0.5",
                "NetworkID": "n1",
                "DNSNames": None,
            }
        }
    },
}


def test_container_info_from_attrs() -> None:
    info = ContainerInfo.from_attrs(ATTRS)
    assert info.name == "realtime-dev.supabase-realtime"
    assert info.compose_project == "supabase" and info.compose_service == "realtime"
    assert info.repository == "supabase/realtime"
    assert info.env == {"PORT": "4000", "DNS_NODES": "''", "EMPTY": "", "BARE": "", "A": "b=c"}
    assert info.restart_count == 3 and info.restart_policy == "unless-stopped"
    assert info.state.health is not None and info.state.health.status == "unhealthy"
    assert info.state.health.log[-1].exit_code == 22
    assert info.healthcheck is not None and info.healthcheck.command.startswith("curl")
    assert info.ulimits[0].soft == 10000
    assert info.dns_names("supabase_default") == {"realtime-dev.supabase-realtime", "realtime", "e7d1021f16c0"}
    assert info.dns_names("other") == set()


def test_container_info_tolerates_missing_and_odd_values() -> None:
    info = ContainerInfo.from_attrs(
        {"Id": "x", "Config": None, "State": {"ExitCode": "137"}, "NetworkSettings": {"Networks": None}}
    )
    assert info.name == "" and info.env == {} and info.state.exit_code == 137
    assert info.state.health is None and info.networks == {}


@pytest.mark.parametrize(
    ("image", "repo"),
    [
        ("supabase/realtime:v2.34.47", "supabase/realtime"),
        ("public.ecr.aws/supabase/realtime:v2.34.47", "supabase/realtime"),
        ("kong:2.8.1", "kong"),
        ("docker.io/library/kong", "kong"),
        ("kong/kong:3.9.3", "kong/kong"),
        ("localhost:5000/envoyproxy/envoy:v1.39.1", "envoyproxy/envoy"),
        ("supabase/realtime@sha256:abc", "supabase/realtime"),
    ],
)
def test_image_repository(image: str, repo: str) -> None:
    assert image_repository(image) == repo


def test_parse_env_list_ignores_non_strings() -> None:
    assert parse_env_list(["A=1", None, 3, ""]) == {"A": "1"}  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("tool", "output", "addrs"),
    [
        ("getent", "172.18.0.2      realtime-dev.supabase-realtime\n", ["172.18.0.2"]),
        ("getent", "", []),
        (
            "nslookup",
            "Server:\t\t127.0.0.11\nAddress:\t127.0.0.11:53\n\nNon-authoritative answer:\n"
            "Name:\trealtime-dev.supabase-realtime\nAddress: 172.18.0.2\n\n",
            ["172.18.0.2"],
        ),
        ("nslookup", "Server:\t\t127.0.0.11\nAddress:\t127.0.0.11:53\n\n** server can't find x: NXDOMAIN\n", []),
        # bind's nslookup
        (
            "nslookup",
            "Server:         127.0.0.11\nAddress:        127.0.0.11#53\n\nNon-authoritative answer:\n"
            "Name:   realtime\nAddress: 10.0.0.7\nName:   realtime\nAddress: fd00::7\n",
            ["10.0.0.7", "fd00::7"],
        ),
    ],
)
def test_parse_resolver_output(tool: str, output: str, addrs: list[str]) -> None:
    assert parse_resolver_output(tool, output) == addrs


@pytest.mark.parametrize(
    ("output", "code"),
    [
        ("curl: (22) The requested URL returned error: 403\n", 403),
        ("curl: (22) The requested URL returned error: 404 Not Found", 404),
        ("wget: server returned error: HTTP/1.1 403 Forbidden", 403),
        ("curl: (7) Failed to connect to localhost port 4000: Connection refused", None),
    ],
)
def test_probe_http_status(output: str, code: int | None) -> None:
    assert probe_http_status(output) == code


def test_scan_logs_maps_each_signature_once_with_counts() -> None:
    text = "\n".join(
        [
            "[error] TenantNotFound: Tenant not found: acme error_code=TenantNotFound",
            "[error] TenantNotFound: Tenant not found: 192",
            "Auth error: tenant `backend-supabase-realtime` not found",
            "[info] all good",
            "** (RuntimeError) Failed to detect IP version for DB_HOST: nxdomain",
        ]
    )
    findings = {f.signature.code: f for f in scan_logs(text)}
    assert set(findings) == {"TenantNotFound", "DbHostUnresolvable"}
    assert findings["TenantNotFound"].count == 3
    assert findings["TenantNotFound"].captured == ("acme", "192", "backend-supabase-realtime")
    assert scan_logs("[info] Running RealtimeWeb.Endpoint") == []


def test_every_signature_has_cause_and_remedy() -> None:
    codes = [s.code for s in LOG_SIGNATURES]
    assert len(codes) == len(set(codes))
    assert all(s.cause and s.remedy for s in LOG_SIGNATURES)


def test_override_yaml_round_trips() -> None:
    text = override_yaml("realtime", {"environment": {"SEED_SELF_HOST": "true", "API_JWT_SECRET": "${JWT_SECRET}"}})
    assert text.startswith("# docker-compose.override.yml\n")
    assert yaml.safe_load(text) == {
        "services": {"realtime": {"environment": {"SEED_SELF_HOST": "true", "API_JWT_SECRET": "${JWT_SECRET}"}}}
    }


def test_classify_permission_error() -> None:
    try:
        try:
            raise PermissionError(13, "Permission denied")
        except PermissionError as inner:
            raise docker.errors.DockerException("Error while fetching server API version") from inner
    except docker.errors.DockerException as exc:
        problem = classify_engine_error(exc, "unix:///var/run/docker.sock", host_from_env=False)
    assert problem.kind == "permission"
    assert "docker group" in problem.remedy and "/var/run/docker.sock" in problem.summary


def test_missing_socket_is_no_engine(tmp_path: Path) -> None:
    # A real connection attempt to a socket path that does not exist, without DOCKER_HOST.
    session = connect_engine({"DOCKER_HOST": f"unix://{tmp_path}/none.sock"}, timeout=2)
    assert session.client is None and session.problem is not None
    assert session.problem.kind == "docker_host"  # DOCKER_HOST was set: it is the suspect
    exc = FileNotFoundError(2, "No such file or directory")
    problem = classify_engine_error(exc, "unix:///var/run/docker.sock", host_from_env=False)
    assert problem.kind == "no_engine" and "systemctl start docker" in problem.remedy


def test_swarm_task_labels_count_as_project_and_service() -> None:
    attrs = {
        "Id": "y",
        "Name": "/supa_realtime.1.abc",
        "Config": {"Labels": {"com.docker.stack.namespace": "supa", "com.docker.swarm.service.name": "supa_realtime"}},
    }
    info = ContainerInfo.from_attrs(attrs)
    assert (info.compose_project, info.compose_service) == ("supa", "realtime")


def test_log_signature_causes_exist_in_remedies() -> None:
    from rtbook.remedies import cause

    for sig in LOG_SIGNATURES:
        if sig.cause_id:
            assert cause(sig.cause_id).id == sig.cause_id
    for cause_id in ("admin_jwt_mismatch", "tenant_missing_admin", "tenant_not_found", "kong_upstream_dns"):
        assert cause(cause_id).id == cause_id


def test_token_verdict() -> None:
    import time

    import jwt

    from rtbook.checks.docker import token_verdict

    secret = "a-secret-that-is-long-enough-for-hs256-0123"
    good = jwt.encode({"role": "anon", "exp": int(time.time()) + 60}, secret, algorithm="HS256")
    expired = jwt.encode({"role": "anon", "exp": int(time.time()) - 60}, secret, algorithm="HS256")
    cmd = 'curl -sSfL -H "Authorization: Bearer {}" http://localhost:4000/api/tenants/realtime-dev/health'
    assert token_verdict(cmd.format(good), secret).endswith("verifies with the container's API_JWT_SECRET")
    assert "NOT signed" in token_verdict(cmd.format(good), secret + "x")
    assert "expired" in token_verdict(cmd.format(expired), secret)
    assert "unexpanded" in token_verdict(cmd.format("${ANON_KEY}"), secret)
    assert token_verdict("curl http://localhost:4000/healthcheck", secret) == ""


def test_container_info_repr_hides_env_and_healthcheck_token() -> None:
    token = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoiYW5vbiJ9.c2lnbmF0dXJl"
    attrs: dict[str, Any] = copy.deepcopy(ATTRS)
    attrs["Config"]["Env"] = [f"API_JWT_SECRET={'s' * 40}"]
    attrs["Config"]["Healthcheck"] = {
        "Test": ["CMD-SHELL", f'curl -sSfL -H "Authorization: Bearer {token}" http://localhost:4000/api/ping'],
    }
    info = ContainerInfo.from_attrs(attrs)
    assert info.healthcheck is not None and token in info.healthcheck.command
    shown = repr(info)
    assert token not in shown and "s" * 40 not in shown
    assert "realtime-dev.supabase-realtime" in shown
