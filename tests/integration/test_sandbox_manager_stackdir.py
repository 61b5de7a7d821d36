"""The sandbox's stack directory and scenario edits, file-level (no processes)."""

from __future__ import annotations

import filecmp
import time
from pathlib import Path

import jwt
import pytest

from rtbook.exceptions import ConfigError, SandboxError
from rtbook.sandbox.scenarios import SCENARIOS, apply_stack, resolve, wal_level_for
from rtbook.sandbox.stackdir import (
    BUNDLED_FILES,
    bundled_dir,
    compose_hosts,
    generate_secrets,
    interpolate,
    kong_environment,
    read_env,
    realtime_image_version,
    write_stack_dir,
)
from tests.conftest import CORPUS, require

OFFICIAL = CORPUS / "official" / "2026-09-1f37f2a"


def test_bundled_files_are_unedited_copies_of_the_official_ones() -> None:
    require(OFFICIAL.is_dir(), f"corpus not found at {OFFICIAL}")
    for name in BUNDLED_FILES:
        assert filecmp.cmp(bundled_dir() / name, OFFICIAL / name, shallow=False), name


def test_generated_secrets_have_the_shapes_realtime_needs() -> None:
    a, b = generate_secrets(), generate_secrets()
    assert all(a[k] != b[k] for k in a if k != "DASHBOARD_USERNAME")  # fresh every time
    assert len(a["JWT_SECRET"]) >= 40 and len(a["SECRET_KEY_BASE"]) == 64
    assert len(a["REALTIME_DB_ENC_KEY"].encode()) == 16
    for key, role in (("ANON_KEY", "anon"), ("SERVICE_ROLE_KEY", "service_role")):
        claims = jwt.decode(a[key], a["JWT_SECRET"], algorithms=["HS256"])
        assert claims["role"] == role and claims["iss"] and claims["exp"] > time.time() + 86400 * 365


def test_stack_dir_is_laid_out_like_the_official_one(tmp_path: Path) -> None:
    values = generate_secrets()
    stack = write_stack_dir(tmp_path / "s", values, gateway_port=41000, db_port=41001)
    for name in BUNDLED_FILES:
        assert (stack / name).is_file(), name
    assert filecmp.cmp(stack / "volumes/api/kong.yml", bundled_dir() / "volumes/api/kong.yml", shallow=False)
    env = read_env(stack / ".env")
    assert env["COMPOSE_FILE"] == "docker-compose.yml:docker-compose.kong.yml"
    assert env["KONG_HTTP_PORT"] == "41000" and env["POSTGRES_PORT"] == "41001"
    assert env["POSTGRES_HOST"] == "127.0.0.1" and env["API_EXTERNAL_URL"] == "http://localhost:41000"
    for key, value in values.items():
        assert env[key] == value, key
    assert (stack / ".env").stat().st_mode & 0o077 == 0
    # Every other .env.example key is still there, in order.
    example_keys = [ln.split("=", 1)[0] for ln in (bundled_dir() / "env.example").read_text().splitlines()
                    if "=" in ln and not ln.startswith("#")]
    assert [k for k in env if k in example_keys] == [k for k in dict.fromkeys(example_keys)]
    with pytest.raises(SandboxError, match="not empty"):
        write_stack_dir(stack, values, gateway_port=1, db_port=2)


def test_kong_environment_and_hosts_come_from_the_compose_files(tmp_path: Path) -> None:
    values = generate_secrets()
    stack = write_stack_dir(tmp_path / "s", values, gateway_port=41000, db_port=41001)
    env = kong_environment(stack)
    assert env["SUPABASE_ANON_KEY"] == values["ANON_KEY"]
    assert env["SUPABASE_SERVICE_KEY"] == values["SERVICE_ROLE_KEY"]
    assert env["SUPABASE_PUBLISHABLE_KEY"] == "" and env["SUPABASE_SECRET_KEY"] == ""
    assert env["DASHBOARD_PASSWORD"] == values["DASHBOARD_PASSWORD"]
    assert env["JWT_ISSUER"] == "http://localhost:41000"
    assert env["KONG_DATABASE"] == "off"  # the overlay's !override environment, not the Envoy one
    hosts = compose_hosts(stack)
    assert hosts["realtime-dev.supabase-realtime"] == "realtime" and hosts["realtime"] == "realtime"
    assert hosts["supabase-kong"] == "api-gw" and hosts["auth"] == "auth"
    assert realtime_image_version(stack) == "2.134.10"


def test_interpolation_like_compose() -> None:
    env = {"A": "1", "E": ""}
    assert interpolate("${A}-$A-$$A", env) == "1-1-$A"
    assert interpolate("${E:-d}|${E-d}|${U:-d}|${U-d}", env) == "d||d|d"
    assert interpolate("${X:-${Y:-${A}}}", env) == "1"
    assert interpolate("${A:+alt}|${E:+alt}|${U+alt}", env) == "alt||"
    with pytest.raises(SandboxError, match="required variable U"):
        interpolate("${U:?set U}", env)


def test_scenario_stack_edits(tmp_path: Path) -> None:
    values = generate_secrets()

    def fresh(name: str) -> Path:
        stack = write_stack_dir(tmp_path / name, values, gateway_port=41000, db_port=41001)
        apply_stack(stack, resolve([name]))
        return stack

    s = fresh("tenant-mismatch")
    assert "realtime-dev.supabase-realtime" not in (s / "volumes/api/kong.yml").read_text()
    assert compose_hosts(s)["supabase-realtime"] == "realtime"
    s = fresh("ws-route-missing")
    kong = (s / "volumes/api/kong.yml").read_text()
    assert "name: realtime-v1-ws" not in kong and "name: realtime-v1-rest" in kong
    s = fresh("no-apikey-forwarding")
    kong = (s / "volumes/api/kong.yml").read_text()
    ws_block = kong[kong.index("- name: realtime-v1-ws"):kong.index("- name: realtime-v1-rest-openapi")]
    assert "hide_credentials: true" in ws_block
    official = (bundled_dir() / "volumes/api/kong.yml").read_text()
    assert kong.count("hide_credentials: true") == official.count("hide_credentials: true") + 1  # only one edit
    s = fresh("wal-level-replica")
    assert '"wal_level=replica"' in (s / "docker-compose.yml").read_text()
    assert wal_level_for(resolve(["wal-level-replica"])) == "replica" and wal_level_for([]) == "logical"
    for name in ("tenant-missing", "jwt-mismatch"):
        assert 'SEED_SELF_HOST: "false"' in (fresh(name) / "docker-compose.yml").read_text()
    for name in ("not-in-publication", "rls-denies", "replica-identity-default"):
        stack = fresh(name)
        assert filecmp.cmp(stack / "volumes/api/kong.yml", bundled_dir() / "volumes/api/kong.yml", shallow=False)


def test_scenario_names_are_checked_and_conflicts_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown break scenario 'nope'.*tenant-mismatch"):
        resolve(["nope"])
    assert [s.name for s in resolve(["rls-denies", "rls-denies"])] == ["rls-denies"]
    assert all(s.symptom and s.cause for s in SCENARIOS.values())
    stack = write_stack_dir(tmp_path / "s", generate_secrets(), gateway_port=1, db_port=2)
    with pytest.raises(ConfigError, match="realtime-v1-ws"):
        apply_stack(stack, resolve(["ws-route-missing", "no-apikey-forwarding"]))


def test_static_checks_see_wal_level_replica(tmp_path: Path) -> None:
    """wal-level-replica only edits the db command; compose.db.wal_level is the static check that notices it."""
    from rtbook.registry import run_checks
    from rtbook.results import Status
    from rtbook.target import Target

    values = generate_secrets()
    healthy, broken = tmp_path / "healthy", tmp_path / "broken"
    for dest in (healthy, broken):
        write_stack_dir(dest, values, gateway_port=54321, db_port=54322)
    apply_stack(broken, resolve(["wal-level-replica"]))

    def not_passing(stack: Path) -> dict[str, str]:
        report = run_checks(Target.from_stack_dir(stack, docker=False), only=("compose.", "env.", "kong."))
        return {r.id: r.remedy for r in report if r.status not in (Status.PASS, Status.SKIP)}

    assert not_passing(healthy) == {}
    found = not_passing(broken)
    assert set(found) == {"compose.db.wal_level"}
    assert "- wal_level=logical" in found["compose.db.wal_level"]
    assert "wal_level=replica" not in found["compose.db.wal_level"]
