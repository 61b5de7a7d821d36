"""compose.* and env.* checks on the corpus stacks and on broken variants built in tmp copies."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import jwt
import pytest
import yaml

from rtbook.checks.compose import evaluate_realtime_env, postgres_settings
from rtbook.config.images import parse_version as parse_realtime_version
from rtbook.config.stack import Stack
from rtbook.exceptions import InputError
from rtbook.registry import run_checks
from rtbook.results import Report, Status
from rtbook.target import Target

OFFICIAL_2026 = "official/2026-09-1f37f2a"
OFFICIAL_2025 = "official/2025-11-f8a85e7"
KONG_OVERLAY = "COMPOSE_FILE=docker-compose.yml:docker-compose.kong.yml\n"
IDS = ("compose.", "env.")


# The corpus env.example files carry the demo keys, which expire on 2027-01-09 23:00 UTC: pin the
# clock for the corpus verdicts so they do not change with the calendar.
CORPUS_NOW = 1795000000.0  # 2026-11-18


@pytest.fixture
def pinned_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rtbook.checks._common.now", lambda: CORPUS_NOW)


def copy_stack(corpus: Path, rel: str, tmp_path: Path, extra_env: str = "", env_from: str = "env.example") -> Path:
    dst = tmp_path / "stack"
    shutil.copytree(corpus / rel, dst)
    src = dst / env_from
    if src.exists():
        (dst / ".env").write_text(src.read_text() + "\n" + extra_env)
    return dst


def check(stack_dir: Path, path: Path | None = None) -> Report:
    stack = Stack.load(path or stack_dir)
    return run_checks(Target(stack=stack, docker=False), only=IDS)


def failures(report: Report) -> dict[str, str]:
    return {r.id: r.summary for r in report if r.status in (Status.FAIL, Status.ERROR)}


def edit_service(compose: Path, service: str, old: str, new: str) -> None:
    """Replace ``old`` by ``new`` inside one service block of a compose file."""
    text = compose.read_text()
    m = re.search(rf"^  {re.escape(service)}:\n(?:(?:    .*|\s*)\n)+", text, re.M)
    assert m, f"service {service} not found in {compose}"
    block = m.group(0)
    assert old in block, f"{old!r} not in service {service}"
    compose.write_text(text[: m.start()] + block.replace(old, new, 1) + text[m.end() :])


def replace_in(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


def set_env(stack_dir: Path, **values: str) -> None:
    env = stack_dir / ".env"
    env.write_text(env.read_text() + "".join(f"\n{k}={v}" for k, v in values.items()) + "\n")


def token(secret: str, role: str, exp_days: float) -> str:
    return jwt.encode({"role": role, "iss": "test", "exp": int(time.time() + exp_days * 86400)}, secret)


# ====================================================================== consistent stacks


@pytest.mark.parametrize(
    "rel, extra",
    [
        (OFFICIAL_2025, ""),
        (OFFICIAL_2026, ""),
        (OFFICIAL_2026, KONG_OVERLAY),
        ("community/singh-inder-supabase-automated-self-host-5f050b6/docker", ""),
        ("community/BenIsenstein-pgonrails-f799e9a", ""),
        ("community/BenIsenstein-pgonrails-f799e9a", "COMPOSE_FILE=docker-compose.yml:docker-compose.envoy.yml\n"),
    ],
    ids=["official-2025", "official-2026-envoy", "official-2026-kong", "singh-inder", "pgonrails-kong",
         "pgonrails-envoy"],
)
@pytest.mark.usefixtures("pinned_clock")
def test_consistent_stacks_do_not_fail(corpus: Path, tmp_path: Path, rel: str, extra: str) -> None:
    report = check(copy_stack(corpus, rel, tmp_path, extra))
    assert failures(report) == {}
    ids = {r.id for r in report}
    assert {"compose.realtime.tenant_consistency", "env.api_keys", "env.default_secrets"} <= ids
    tenant = report.by_id("compose.realtime.tenant_consistency")
    assert tenant.status is Status.PASS
    # The public demo defaults are flagged, as they should be.
    assert report.by_id("env.default_secrets").status is Status.WARN
    assert report.by_id("compose.realtime.db_enc_key").status is Status.WARN


def test_official_2026_tenant_sources_named(corpus: Path, tmp_path: Path) -> None:
    envoy = check(copy_stack(corpus, OFFICIAL_2026, tmp_path / "e")).by_id("compose.realtime.tenant_consistency")
    assert "Envoy host rewrite (host_rewrite_literal): realtime-dev.supabase-realtime -> tenant realtime-dev" in (
        envoy.detail
    )
    assert "Envoy realtime cluster address: realtime-dev.supabase-realtime" in envoy.detail
    assert "container_name of service 'realtime'" in envoy.detail
    assert "healthcheck URL: /api/tenants/realtime-dev/health" in envoy.detail
    assert "seeded tenant: realtime-dev" in envoy.detail
    kong = check(copy_stack(corpus, OFFICIAL_2026, tmp_path / "k", KONG_OVERLAY)).by_id(
        "compose.realtime.tenant_consistency"
    )
    assert "Kong upstream host" in kong.detail and "-> tenant realtime-dev" in kong.detail


@pytest.mark.usefixtures("pinned_clock")
def test_official_2025_expected_warnings(corpus: Path, tmp_path: Path) -> None:
    report = check(copy_stack(corpus, OFFICIAL_2025, tmp_path))
    assert report.by_id("compose.realtime.seed_self_host").status is Status.WARN  # unquoted true
    assert report.by_id("compose.realtime.healthcheck").status is Status.WARN  # exec form
    metrics = report.by_id("compose.realtime.metrics_jwt_secret")
    assert metrics.status is Status.PASS and "v2.65.2" in metrics.summary  # not needed before v2.78.5


def test_coolify_consistent_with_its_variables(corpus: Path, tmp_path: Path) -> None:
    """Coolify's template: service name realtime-dev is the Kong upstream; keys come from its magic variables."""
    src = corpus / "community/coollabsio-coolify-a652517/templates/compose/supabase.yaml"
    shutil.copy(src, tmp_path / "supabase.yaml")
    secret = "k" * 40
    (tmp_path / ".env").write_text(
        f"SERVICE_PASSWORD_JWT={secret}\n"
        f"SERVICE_SUPABASEANON_KEY={token(secret, 'anon', 365)}\n"
        f"SERVICE_SUPABASESERVICE_KEY={token(secret, 'service_role', 365)}\n"
        "SERVICE_PASSWORD_POSTGRES=pg-password-123456\n"
        f"SECRET_PASSWORD_REALTIME={'r' * 64}\n"
    )
    report = check(tmp_path, tmp_path / "supabase.yaml")
    assert failures(report) == {}
    tenant = report.by_id("compose.realtime.tenant_consistency")
    assert tenant.status is Status.PASS and "service name 'realtime-dev'" in tenant.detail
    assert report.by_id("compose.realtime.healthcheck").status is Status.WARN  # exec form


@pytest.mark.usefixtures("pinned_clock")
def test_easypanel_upstream_not_resolvable(corpus: Path, tmp_path: Path) -> None:
    """easypanel removed every container_name; kong.yml still targets realtime-dev.supabase-realtime."""
    report = check(copy_stack(corpus, "community/easypanel-io-compose-405fd49/supabase/code", tmp_path))
    assert set(failures(report)) == {"compose.realtime.tenant_consistency"}
    result = report.by_id("compose.realtime.tenant_consistency")
    assert "realtime-dev.supabase-realtime is not the name, container_name or network alias" in result.summary
    assert "container_name: realtime-dev.supabase-realtime on services.realtime" in result.remedy


@pytest.mark.usefixtures("pinned_clock")
def test_swarm_stack(corpus: Path, tmp_path: Path) -> None:
    """tsensei/supabase-swarm read as plain compose: container_name resolves, so the tenant is consistent;
    rtbook warns that `docker stack deploy` ignores container_name. Its env template ships placeholder
    keys ("your-anon-key"), which env.api_keys rightly fails."""
    d = copy_stack(corpus, "community/tsensei-supabase-swarm-de31fdd", tmp_path, env_from="environment-variables.txt")
    report = check(d)
    assert set(failures(report)) == {"env.api_keys"}
    assert "not a JWT" in report.by_id("env.api_keys").summary
    tenant = report.by_id("compose.realtime.tenant_consistency")
    assert tenant.status is Status.WARN and "docker stack deploy" in tenant.summary
    assert "aliases" in tenant.remedy


# ====================================================================== broken variants


def test_renamed_container(corpus: Path, tmp_path: Path) -> None:
    d = copy_stack(corpus, OFFICIAL_2025, tmp_path)
    edit_service(d / "docker-compose.yml", "realtime", "container_name: realtime-dev.supabase-realtime",
                 "container_name: supabase-realtime")
    result = check(d).by_id("compose.realtime.tenant_consistency")
    assert result.status is Status.FAIL
    assert "container_name: realtime-dev.supabase-realtime" in result.remedy


def test_kong_upstream_other_first_label(corpus: Path, tmp_path: Path) -> None:
    d = copy_stack(corpus, OFFICIAL_2025, tmp_path)
    replace_in(d / "volumes/api/kong.yml", "realtime-dev.supabase-realtime", "acme.supabase-realtime")
    edit_service(d / "docker-compose.yml", "realtime", "container_name: realtime-dev.supabase-realtime",
                 "container_name: acme.supabase-realtime")
    result = check(d).by_id("compose.realtime.tenant_consistency")
    assert result.status is Status.FAIL
    assert "tenant 'acme'" in result.summary and "'realtime-dev'" in result.summary
    assert "SELF_HOST_TENANT_NAME: acme" in result.remedy
    # The fix the remedy names makes it pass (the healthcheck must follow the tenant too).
    edit_service(d / "docker-compose.yml", "realtime", "APP_NAME: realtime",
                 "APP_NAME: realtime\n      SELF_HOST_TENANT_NAME: acme")
    edit_service(d / "docker-compose.yml", "realtime", "/api/tenants/realtime-dev/health", "/api/tenants/acme/health")
    assert check(d).by_id("compose.realtime.tenant_consistency").status is Status.PASS


def test_envoy_host_rewrite_other_tenant(corpus: Path, tmp_path: Path) -> None:
    d = copy_stack(corpus, OFFICIAL_2026, tmp_path)
    replace_in(d / "volumes/api/envoy/lds.template.yaml", "host_rewrite_literal: realtime-dev.supabase-realtime",
               "host_rewrite_literal: other.supabase-realtime")
    result = check(d).by_id("compose.realtime.tenant_consistency")
    assert result.status is Status.FAIL
    assert "host_rewrite_literal: realtime-dev.supabase-realtime" in result.remedy


def test_healthcheck_other_tenant(corpus: Path, tmp_path: Path) -> None:
    d = copy_stack(corpus, OFFICIAL_2026, tmp_path)
    edit_service(d / "docker-compose.yml", "realtime", "/api/tenants/realtime-dev/health", "/api/tenants/x/health")
    result = check(d).by_id("compose.realtime.tenant_consistency")
    assert result.status is Status.FAIL and "/api/tenants/realtime-dev/health" in result.remedy


@pytest.mark.parametrize(
    "old, new, status",
    [
        ('      SEED_SELF_HOST: "true"\n', "", Status.FAIL),
        ('SEED_SELF_HOST: "true"', 'SEED_SELF_HOST: "false"', Status.FAIL),
        ('SEED_SELF_HOST: "true"', "SEED_SELF_HOST: True", Status.WARN),
        ('SEED_SELF_HOST: "true"', 'SEED_SELF_HOST: "True"', Status.FAIL),
    ],
    ids=["missing", "false", "unquoted-bool", "capital-True-string"],
)
def test_seed_self_host(corpus: Path, tmp_path: Path, old: str, new: str, status: Status) -> None:
    d = copy_stack(corpus, OFFICIAL_2026, tmp_path)
    edit_service(d / "docker-compose.yml", "realtime", old, new)
    result = check(d).by_id("compose.realtime.seed_self_host")
    assert result.status is status
    assert 'SEED_SELF_HOST: "true"' in result.remedy


def test_jwt_secret_mismatch(corpus: Path, tmp_path: Path) -> None:
    d = copy_stack(corpus, OFFICIAL_2026, tmp_path)
    edit_service(d / "docker-compose.yml", "realtime", "API_JWT_SECRET: ${JWT_SECRET}",
                 "API_JWT_SECRET: some-other-secret-that-is-long-enough-1234")
    result = check(d).by_id("compose.realtime.jwt_secret")
    assert result.status is Status.FAIL
    assert "services.auth.environment.GOTRUE_JWT_SECRET" in result.summary
    assert "API_JWT_SECRET: ${JWT_SECRET}" in result.remedy
    assert "some-other-secret" not in result.detail + result.summary + result.remedy


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_short_jwt_secret(corpus: Path, tmp_path: Path) -> None:
    d = copy_stack(corpus, OFFICIAL_2026, tmp_path)
    short = "short-secret-20chars"
    set_env(d, JWT_SECRET=short, ANON_KEY=token(short, "anon", 100), SERVICE_ROLE_KEY=token(short, "service_role", 100))
    report = check(d)
    assert report.by_id("compose.realtime.jwt_secret").status is Status.FAIL
    assert "at least 32" in report.by_id("compose.realtime.jwt_secret").summary


def test_db_enc_key_15_bytes(corpus: Path, tmp_path: Path) -> None:
    d = copy_stack(corpus, OFFICIAL_2026, tmp_path)
    set_env(d, REALTIME_DB_ENC_KEY="fifteen-bytes!!")
    result = check(d).by_id("compose.realtime.db_enc_key")
    assert result.status is Status.FAIL and "15 bytes" in result.summary
    assert "exactly 16 characters" in result.remedy
    set_env(d, REALTIME_DB_ENC_KEY="sixteen-bytes-ok")
    assert check(d).by_id("compose.realtime.db_enc_key").status is Status.PASS


def test_missing_metrics_secret_on_new_image(corpus: Path, tmp_path: Path) -> None:
    d = copy_stack(corpus, OFFICIAL_2026, tmp_path)
    edit_service(d / "docker-compose.yml", "realtime", "      METRICS_JWT_SECRET: ${JWT_SECRET}\n", "")
    result = check(d).by_id("compose.realtime.metrics_jwt_secret")
    assert result.status is Status.FAIL and "v2.134.10" in result.summary
    assert "METRICS_JWT_SECRET: ${JWT_SECRET}" in result.remedy


def test_unknown_tag_assumed_newest(corpus: Path, tmp_path: Path) -> None:
    d = copy_stack(corpus, OFFICIAL_2025, tmp_path)
    edit_service(d / "docker-compose.yml", "realtime", "supabase/realtime:v2.65.2", "supabase/realtime:latest")
    result = check(d).by_id("compose.realtime.metrics_jwt_secret")
    assert result.status is Status.FAIL and "assumed to be the newest" in result.summary


def test_search_path_secret_key_base_db(corpus: Path, tmp_path: Path) -> None:
    d = copy_stack(corpus, OFFICIAL_2026, tmp_path)
    compose = d / "docker-compose.yml"
    edit_service(compose, "realtime", "DB_AFTER_CONNECT_QUERY: 'SET search_path TO _realtime'",
                 "DB_AFTER_CONNECT_QUERY: 'SELECT 1'")
    edit_service(compose, "realtime", "DB_HOST: ${POSTGRES_HOST}", "DB_HOST: database")
    set_env(d, SECRET_KEY_BASE="too-short")
    report = check(d)
    assert report.by_id("compose.realtime.search_path").status is Status.FAIL
    assert "SET search_path TO _realtime" in report.by_id("compose.realtime.search_path").remedy
    assert report.by_id("compose.realtime.secret_key_base").status is Status.FAIL
    db = report.by_id("compose.realtime.db_connection")
    assert db.status is Status.FAIL and "DB_HOST='database'" in db.summary and "Set DB_HOST to db" in db.remedy


def test_missing_db_password(corpus: Path, tmp_path: Path) -> None:
    d = copy_stack(corpus, OFFICIAL_2026, tmp_path)
    replace_in(d / ".env", "POSTGRES_PASSWORD=", "OLD_POSTGRES_PASSWORD=")
    db = check(d).by_id("compose.realtime.db_connection")
    assert db.status is Status.FAIL and "DB_PASSWORD" in db.summary


def test_network_not_shared(corpus: Path, tmp_path: Path) -> None:
    d = copy_stack(corpus, OFFICIAL_2026, tmp_path)
    edit_service(d / "docker-compose.yml", "realtime", "restart: unless-stopped",
                 "restart: unless-stopped\n    networks: [isolated]")
    text = (d / "docker-compose.yml").read_text()
    (d / "docker-compose.yml").write_text(text.replace("\nvolumes:\n", "\nnetworks:\n  isolated: {}\n\nvolumes:\n"))
    result = check(d).by_id("compose.realtime.network")
    assert result.status is Status.FAIL and "Add network default to services.realtime.networks" in result.remedy


def test_expired_and_expiring_keys(corpus: Path, tmp_path: Path) -> None:
    d = copy_stack(corpus, OFFICIAL_2026, tmp_path)
    secret = "a-fresh-jwt-secret-with-more-than-32-characters"
    set_env(d, JWT_SECRET=secret, ANON_KEY=token(secret, "anon", -1),
            SERVICE_ROLE_KEY=token(secret, "service_role", 90))
    result = check(d).by_id("env.api_keys")
    assert result.status is Status.FAIL and "ANON_KEY expired" in result.summary
    assert "generate a new ANON_KEY" in result.remedy
    set_env(d, ANON_KEY=token(secret, "anon", 10))
    result = check(d).by_id("env.api_keys")
    assert result.status is Status.WARN and "ANON_KEY expires" in result.summary
    set_env(d, ANON_KEY=token(secret, "anon", 100))
    assert check(d).by_id("env.api_keys").status is Status.PASS


def test_keys_signed_with_another_secret(corpus: Path, tmp_path: Path) -> None:
    d = copy_stack(corpus, OFFICIAL_2026, tmp_path)
    other = "not-the-jwt-secret-but-also-long-enough-000"
    set_env(d, ANON_KEY=token(other, "anon", 100), SERVICE_ROLE_KEY=token(other, "service_role", 100))
    result = check(d).by_id("env.api_keys")
    assert result.status is Status.FAIL and "not signed with the JWT secret" in result.summary
    assert "re-sign ANON_KEY" in result.remedy


def test_wrong_role_and_missing_exp(corpus: Path, tmp_path: Path) -> None:
    d = copy_stack(corpus, OFFICIAL_2026, tmp_path)
    secret = "a-fresh-jwt-secret-with-more-than-32-characters"
    set_env(d, JWT_SECRET=secret, ANON_KEY=token(secret, "service_role", 100),
            SERVICE_ROLE_KEY=jwt.encode({"role": "service_role"}, secret))
    result = check(d).by_id("env.api_keys")
    assert result.status is Status.FAIL
    assert "ANON_KEY has role 'service_role'" in result.summary and "no numeric exp" in result.summary


def test_no_env_file(corpus: Path, tmp_path: Path) -> None:
    d = tmp_path / "s"
    shutil.copytree(corpus / OFFICIAL_2026, d)
    report = check(d)
    assert report.by_id("env.api_keys").status is Status.FAIL
    assert "env.example" in report.by_id("env.api_keys").remedy


def test_unresolvable_required_variable(corpus: Path, tmp_path: Path) -> None:
    d = copy_stack(corpus, OFFICIAL_2026, tmp_path)
    edit_service(d / "docker-compose.yml", "realtime", "DB_HOST: ${POSTGRES_HOST}",
                 "DB_HOST: ${REALTIME_DB:?set REALTIME_DB in .env}")
    with pytest.raises(InputError, match=r"required variable REALTIME_DB is not set: set REALTIME_DB in \.env"):
        Stack.load(d)


def test_no_realtime_service(tmp_path: Path) -> None:
    (tmp_path / "docker-compose.yml").write_text("services:\n  db:\n    image: postgres:15\n")
    report = check(tmp_path)
    assert report.by_id("compose.realtime.present").status is Status.FAIL
    assert report.by_id("compose.realtime.jwt_secret").status is Status.SKIP


# ====================================================================== plain-mapping rules


def test_evaluate_realtime_env_on_a_mapping() -> None:
    env = {
        "API_JWT_SECRET": "s" * 40,
        "DB_ENC_KEY": "0123456789abcdef",
        "SECRET_KEY_BASE": "b" * 64,
        "DB_AFTER_CONNECT_QUERY": "SET search_path TO _realtime",
        "SEED_SELF_HOST": "true",
        "DB_HOST": "db",
        "DB_PORT": "5432",
        "DB_USER": "supabase_admin",
        "DB_PASSWORD": "pw",
        "DB_NAME": "postgres",
    }
    results = {r.id: r for r in evaluate_realtime_env(env, image="supabase/realtime:v2.78.4",
                                                       auth_env={"JWT_SECRET": "s" * 40})}
    assert set(results) == {
        "compose.realtime.jwt_secret", "compose.realtime.metrics_jwt_secret", "compose.realtime.db_enc_key",
        "compose.realtime.secret_key_base", "compose.realtime.search_path", "compose.realtime.seed_self_host",
        "compose.realtime.db_connection",
    }
    assert all(r.status is Status.PASS for r in results.values()), {k: r.summary for k, r in results.items()}
    newer = {r.id: r for r in evaluate_realtime_env(env, image="supabase/realtime:v2.78.5",
                                                     auth_env={"JWT_SECRET": "x" * 40}, source="container rt")}
    assert newer["compose.realtime.metrics_jwt_secret"].status is Status.FAIL
    assert newer["compose.realtime.jwt_secret"].status is Status.FAIL
    assert "container rt" in newer["compose.realtime.metrics_jwt_secret"].remedy


def test_parse_realtime_version() -> None:
    assert parse_realtime_version("supabase/realtime:v2.78.15").version == (2, 78, 15)
    assert parse_realtime_version("public.ecr.aws/supabase/realtime:2.34.7@sha256:ab").version == (2, 34, 7)
    unknown = parse_realtime_version("supabase/realtime:latest")
    assert unknown.version is None and unknown.at_least((9, 9, 9)) and "assumed" in unknown.describe()


@pytest.mark.parametrize(
    "now, status, needle",
    [
        (1795000000.0, Status.PASS, "future exp"),  # 2026-11-18: 52 days left
        (1798000000.0, Status.WARN, "expires on 2027-01-09 23:00 UTC"),  # 2026-12-23
        (1800000000.0, Status.FAIL, "expired on 2027-01-09 23:00 UTC"),  # 2027-01-15
    ],
)
def test_demo_keys_expiry(corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, now: float,
                          status: Status, needle: str) -> None:
    monkeypatch.setattr("rtbook.checks._common.now", lambda: now)
    result = check(copy_stack(corpus, OFFICIAL_2026, tmp_path)).by_id("env.api_keys")
    assert result.status is status and needle in result.summary


def test_pgonrails_variables_disagree(corpus: Path, tmp_path: Path) -> None:
    """pgonrails is consistent only while DEFAULT_TENANT and REALTIME_HOST agree."""
    d = copy_stack(corpus, "community/BenIsenstein-pgonrails-f799e9a", tmp_path)
    set_env(d, DEFAULT_TENANT="acme")
    result = check(d).by_id("compose.realtime.tenant_consistency")
    assert result.status is Status.FAIL
    # Kong still sends default-tenant.pgonrails-realtime, which no longer names the container.
    assert "default-tenant.pgonrails-realtime" in result.summary
    assert "tenant 'default-tenant'" in result.summary and "'acme'" in result.summary


def test_tenant_name_ignored_by_old_image(corpus: Path, tmp_path: Path) -> None:
    d = copy_stack(corpus, OFFICIAL_2025, tmp_path)
    compose = d / "docker-compose.yml"
    edit_service(compose, "realtime", "APP_NAME: realtime", "APP_NAME: realtime\n      SELF_HOST_TENANT_NAME: acme")
    edit_service(compose, "realtime", "/api/tenants/realtime-dev/health", "/api/tenants/acme/health")
    edit_service(compose, "realtime", "supabase/realtime:v2.65.2", "supabase/realtime:v2.30.0")
    result = check(d).by_id("compose.realtime.tenant_consistency")
    assert result.status is Status.FAIL
    assert "ignored by supabase/realtime:v2.30.0" in result.detail


def test_hostname_does_not_resolve_but_alias_does(corpus: Path, tmp_path: Path) -> None:
    d = copy_stack(corpus, OFFICIAL_2025, tmp_path)
    compose = d / "docker-compose.yml"
    edit_service(compose, "realtime", "container_name: realtime-dev.supabase-realtime",
                 "hostname: realtime-dev.supabase-realtime")
    result = check(d).by_id("compose.realtime.tenant_consistency")
    assert result.status is Status.FAIL and "only the hostname: of service 'realtime'" in result.detail
    edit_service(compose, "realtime", "hostname: realtime-dev.supabase-realtime",
                 "networks:\n      default:\n        aliases: [realtime-dev.supabase-realtime]")
    result = check(d).by_id("compose.realtime.tenant_consistency")
    assert result.status is Status.PASS and "network alias on default of service 'realtime'" in result.detail


def test_healthcheck_token_not_signed_with_api_jwt_secret(corpus: Path, tmp_path: Path) -> None:
    d = copy_stack(corpus, OFFICIAL_2026, tmp_path)
    other = "a-different-secret-for-the-keys-only-0000000"
    set_env(d, ANON_KEY=token(other, "anon", 100))
    result = check(d).by_id("compose.realtime.healthcheck")
    assert result.status is Status.FAIL and "not signed with Realtime's API_JWT_SECRET" in result.summary
    set_env(d, ANON_KEY="")
    result = check(d).by_id("compose.realtime.healthcheck")
    assert result.status is Status.FAIL and "Bearer token is empty" in result.summary


# ====================================================================== compose.db.wal_level


@pytest.mark.parametrize(
    "rel, status",
    [
        (OFFICIAL_2025, Status.PASS),
        (OFFICIAL_2026, Status.PASS),
        ("community/singh-inder-supabase-automated-self-host-5f050b6/docker", Status.PASS),
        ("community/easypanel-io-compose-405fd49/supabase/code", Status.PASS),
        # Its db is built from ./db, whose Dockerfile the corpus lacks: the image decides, rtbook cannot tell.
        ("community/BenIsenstein-pgonrails-f799e9a", Status.SKIP),
    ],
    ids=["official-2025", "official-2026", "singh-inder", "easypanel", "pgonrails"],
)
def test_db_wal_level_on_corpus(corpus: Path, tmp_path: Path, rel: str, status: Status) -> None:
    result = check(copy_stack(corpus, rel, tmp_path)).by_id("compose.db.wal_level")
    assert result.status is status, result.summary
    assert result.evidence["service"] == "db"
    assert result.evidence["command_settings"] == {}


DB_LAST_ARG = '"log_min_messages=fatal"'


@pytest.mark.parametrize(
    "extra, shown",
    [
        (',\n        "-c",\n        "wal_level=replica"', "wal_level=replica"),
        (',\n        "-c",\n        "wal_level=minimal"', "wal_level=minimal"),
        (',\n        "--wal-level=replica"', "wal_level=replica"),
        (',\n        "-c",\n        "max_replication_slots=0"', "max_replication_slots=0"),
        (',\n        "-c",\n        "max_wal_senders=0"', "max_wal_senders=0"),
    ],
    ids=["replica", "minimal", "long-option", "no-slots", "no-wal-senders"],
)
def test_db_wal_level_broken_command(corpus: Path, tmp_path: Path, extra: str, shown: str) -> None:
    d = copy_stack(corpus, OFFICIAL_2026, tmp_path)
    edit_service(d / "docker-compose.yml", "db", DB_LAST_ARG, DB_LAST_ARG + extra)
    report = check(d)
    result = report.by_id("compose.db.wal_level")
    assert result.status is Status.FAIL
    assert shown in result.summary
    name, _, _ = shown.partition("=")
    fixed = {"wal_level": "logical", "max_replication_slots": "5", "max_wal_senders": "10"}[name]
    # The remedy is the whole command, with the setting fixed and nothing else lost.
    patch = yaml.safe_load(result.remedy.split(":\n", 1)[1])
    command = patch["services"]["db"]["command"]
    assert command[:5] == ["postgres", "-c", "config_file=/etc/postgresql/postgresql.conf", "-c",
                           "log_min_messages=fatal"]
    assert command[5:] == ["-c", f"{name}={fixed}"]
    assert "docker compose up -d --force-recreate db" in result.remedy
    # Applying the remedy makes the check pass.
    text = (d / "docker-compose.yml").read_text()
    (d / "docker-compose.yml").write_text(text.replace(extra, extra.replace(shown.partition("=")[2], fixed)
                                                       .replace("--wal-level", "--wal_level"), 1))
    assert check(d).by_id("compose.db.wal_level").status is Status.PASS


def test_db_wal_level_string_command_and_last_setting_wins(corpus: Path, tmp_path: Path) -> None:
    d = copy_stack(corpus, OFFICIAL_2026, tmp_path)
    compose = d / "docker-compose.yml"
    text = compose.read_text()
    start = text.index("    command:\n      [\n        \"postgres\"")
    end = text.index("]\n", start) + 2
    compose.write_text(text[:start] + "    command: postgres -c config_file=/etc/postgresql/postgresql.conf "
                       "-c wal_level=logical -c 'wal_level=replica'\n" + text[end:])
    result = check(d).by_id("compose.db.wal_level")
    assert result.status is Status.FAIL and "wal_level=replica" in result.summary
    patch = yaml.safe_load(result.remedy.split(":\n", 1)[1])
    assert patch["services"]["db"]["command"] == [
        "postgres", "-c", "config_file=/etc/postgresql/postgresql.conf", "-c", "wal_level=logical", "-c",
        "wal_level=logical",
    ]


def test_db_wal_level_plain_postgres_image(corpus: Path, tmp_path: Path) -> None:
    d = copy_stack(corpus, OFFICIAL_2026, tmp_path)
    edit_service(d / "docker-compose.yml", "db", "image: supabase/postgres:17.6.1.136", "image: postgres:17")
    result = check(d).by_id("compose.db.wal_level")
    assert result.status is Status.WARN
    assert "wal_level=replica" in result.summary and "wal2json" in result.detail
    patch = yaml.safe_load(result.remedy.split(":\n", 1)[1])
    assert patch["services"]["db"]["command"][-2:] == ["-c", "wal_level=logical"]
    # With the setting on its command line the plain image passes.
    edit_service(d / "docker-compose.yml", "db", DB_LAST_ARG,
                 DB_LAST_ARG + ',\n        "-c",\n        "wal_level=logical"')
    assert check(d).by_id("compose.db.wal_level").status is Status.PASS


def test_db_wal_level_external_database(corpus: Path, tmp_path: Path) -> None:
    d = copy_stack(corpus, OFFICIAL_2026, tmp_path)
    compose = d / "docker-compose.yml"
    text = compose.read_text()
    start = text.index("\n  db:\n") + 1
    end = text.index("\n  # Update the DATABASE_URL", start) + 1
    compose.write_text(text[:start] + text[end:])
    result = check(d).by_id("compose.db.wal_level")
    assert result.status is Status.SKIP and "external database" in result.summary


def test_postgres_settings_forms() -> None:
    command = ["postgres", "-c", "wal_level=replica", "-cmax_wal_senders=0", "--Max-Replication-Slots=1"]
    assert postgres_settings(command) == {"wal_level": "replica", "max_wal_senders": "0", "max_replication_slots": "1"}
    assert postgres_settings("postgres -c 'wal_level=minimal'") == {"wal_level": "minimal"}
    assert postgres_settings(["sh", "-c", "exec docker-entrypoint.sh postgres -c wal_level=replica"]) == {
        "wal_level": "replica"}
    assert postgres_settings(["postgres", "-c"]) == {} and postgres_settings(None) == {}
