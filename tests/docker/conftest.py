"""Fixtures for the docker.* tests: a real engine, one imported image, one project network.

Containers are created per test and removed after it (even when it fails); the image and the
networks are removed at the end of the session, and the session fails if anything with the
lab's prefix is left on the engine.
"""

from __future__ import annotations

import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import jwt
import pytest

from tests.conftest import CORPUS, have_docker, require
from tests.docker.harness import Lab

OFFICIAL = CORPUS / "official" / "2026-09-1f37f2a"


def _stack_dir(tmp: Path, project: str, gateway: str = "kong") -> Path:
    """A writable copy of the official stack with a .env selecting the gateway and naming the project."""
    dest = tmp / "stack"
    shutil.copytree(OFFICIAL, dest)
    for path in [dest, *dest.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    jwt_secret = secrets.token_urlsafe(40)
    now = int(time.time())
    values = {
        "COMPOSE_FILE": "docker-compose.yml:docker-compose.kong.yml" if gateway == "kong" else "docker-compose.yml",
        "COMPOSE_PROJECT_NAME": project,
        # Fresh secrets, as a careful self-hoster would have: the demo values are public and
        # the redaction assertions must be about values nobody else knows.
        "POSTGRES_PASSWORD": secrets.token_urlsafe(24),
        "JWT_SECRET": jwt_secret,
        "ANON_KEY": jwt.encode({"role": "anon", "iss": "supabase", "iat": now, "exp": now + 86400},
                               jwt_secret, algorithm="HS256"),
        "SERVICE_ROLE_KEY": jwt.encode({"role": "service_role", "iss": "supabase", "iat": now,
                                        "exp": now + 86400}, jwt_secret, algorithm="HS256"),
        "SECRET_KEY_BASE": secrets.token_urlsafe(48),
        "DASHBOARD_PASSWORD": secrets.token_urlsafe(16),
        "REALTIME_DB_ENC_KEY": secrets.token_hex(8),  # 16 characters, as Realtime's AES-128 needs
    }
    lines = []
    for line in (OFFICIAL / "env.example").read_text().splitlines():
        key = line.split("=", 1)[0].strip()
        lines.append(f"{key}={values.pop(key)}" if key in values and "=" in line else line)
    lines += [f"{k}={v}" for k, v in values.items()]
    (dest / ".env").write_text("\n".join(lines) + "\n")
    return dest


@pytest.fixture(scope="session")
def docker_client() -> Iterator[Any]:
    """A client of the engine the tests run against."""
    require(have_docker(), "no Docker engine answers on DOCKER_HOST or /var/run/docker.sock "
            "(scripts/start-docker.sh starts one)")
    require(Path("/usr/bin/python3").exists(), "/usr/bin/python3 (Debian python3) runs the Realtime stand-in")
    require(Path("/usr/bin/busybox").exists(), "busybox (busybox-static) gives the stand-ins wget and nslookup")
    import docker

    client = docker.from_env(timeout=60)
    yield client
    client.close()


@pytest.fixture(scope="session")
def lab_session(docker_client: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The session's lab: image, project network and the official stack copied to a tmp dir."""
    require(OFFICIAL.is_dir(), f"official corpus stack not found at {OFFICIAL}")
    from rtbook.config.stack import Stack

    Lab.sweep_stale(docker_client)
    lab = Lab.create(docker_client)
    try:
        stack_dir = _stack_dir(tmp_path_factory.mktemp("dockerstack"), lab.prefix)
        stack = Stack.load(stack_dir)
        lab.stack_dir = stack_dir
        lab.stack_env = {k: str(v) for k, v in stack.env.items()}
        realtime = stack.realtime_service()
        assert realtime is not None, "the official stack has a realtime service"
        lab.realtime_env = {k: "" if v is None else str(v) for k, v in realtime.environment.items()}
        yield lab
    finally:
        lab.close()
        left = lab.leftovers()
        assert not left, f"docker objects left behind: {left}"


@pytest.fixture
def lab(lab_session: Lab) -> Iterator[Lab]:
    """The lab, with this test's containers and extra networks removed afterwards."""
    networks_before = len(lab_session.networks)
    try:
        yield lab_session
    finally:
        lab_session.remove_containers()
        left: list[str] = []
        while len(lab_session.networks) > networks_before:
            net = lab_session.networks.pop()
            try:
                net.remove()
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:  # reported after the others are removed, never hidden
                left.append(f"network {net.name}: {exc}")
        if left:
            raise RuntimeError("docker test cleanup left networks behind: " + "; ".join(left))


@pytest.fixture
def target(lab: Lab) -> Any:
    """A fresh target on the lab's stack copy, with the Docker checks required."""
    from rtbook.target import Target

    assert lab.stack_dir is not None
    return Target.from_stack_dir(lab.stack_dir, docker=True, name="dockertest")


@pytest.fixture
def envoy_stack_dir(lab: Lab, tmp_path: Path) -> Path:
    """A copy of the official stack with its default gateway, Envoy, in the lab's project."""
    return _stack_dir(tmp_path, lab.prefix, gateway="envoy")
