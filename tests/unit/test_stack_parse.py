"""The stack reader: .env rules, interpolation, overlays and merge tags, typed services, bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtbook.config.gateway import implied_tenant, realtime_upstream
from rtbook.config.stack import Stack, interpolate, load_compose_file, merge_compose, parse_env_text
from rtbook.exceptions import InputError

OFFICIAL_2026 = "official/2026-09-1f37f2a"
OFFICIAL_2025 = "official/2025-11-f8a85e7"


def stack_copy(corpus: Path, rel: str, tmp_path: Path, extra_env: str = "") -> Path:
    """A tmp copy of a corpus stack with .env made from env.example (plus ``extra_env`` lines)."""
    dst = tmp_path / Path(rel).name
    shutil.copytree(corpus / rel, dst)
    example = dst / "env.example"
    if example.exists():
        (dst / ".env").write_text(example.read_text() + "\n" + extra_env)
    return dst


# ---------------------------------------------------------------- .env


def test_env_rules() -> None:
    text = """
# comment
export A=1
B = spaced
C='single $A #not comment'
D="double $A\\nnext \\"q\\""
E=unquoted # trailing comment
F=
G="multi
line"
H=${A:-x}${MISSING:-dflt}
I=a#b
"""
    env = parse_env_text(text)
    assert env["A"] == "1"
    assert env["B"] == "spaced"
    assert env["C"] == "single $A #not comment"
    assert env["D"] == 'double 1\nnext "q"'
    assert env["E"] == "unquoted"
    assert env["F"] == ""
    assert env["G"] == "multi\nline"
    assert env["H"] == "1dflt"
    assert env["I"] == "a#b"


@pytest.mark.parametrize(
    "text, needle",
    [
        ("=value\n", ":1: expected KEY=VALUE"),
        ("A=1\nB 'x'\n", ":2: expected '='"),
        ("A='open\n", "unterminated single quote"),
        ('A="open\n', "unterminated double quote"),
        ("A=${B:?B must be set}\n", "required variable B"),
        ("A=\x00\n", "binary"),
    ],
)
def test_env_errors_are_one_line(text: str, needle: str) -> None:
    with pytest.raises(InputError) as err:
        parse_env_text(text, source="x.env")
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_env_error_never_echoes_a_whole_secret() -> None:
    secret = "S3cr3t-value-that-is-long-enough-to-matter-0123456789"
    with pytest.raises(InputError) as err:
        parse_env_text(f"{secret} oops\n")
    assert secret not in str(err.value)


# ---------------------------------------------------------------- interpolation


@pytest.mark.parametrize(
    "template, expected",
    [
        ("${A}", "a"),
        ("$A/x", "a/x"),
        ("${UNSET}", ""),
        ("${UNSET:-d}", "d"),
        ("${EMPTY:-d}", "d"),
        ("${EMPTY-d}", ""),
        ("${UNSET-d}", "d"),
        ("${A:+alt}", "alt"),
        ("${EMPTY:+alt}", ""),
        ("${EMPTY+alt}", "alt"),
        ("${UNSET:-${B:-8000}}", "8000"),
        ("${UNSET:-${PORT:-8000}}", "4000"),
        ("${API_GW_HTTP_PORT:-${KONG_HTTP_PORT:-8000}}:8000/tcp", "8000:8000/tcp"),
        ("$$(cat x) $$A", "$(cat x) $A"),
        ("cost $5", "cost $5"),
        ("${A:?need A}", "a"),
        ("${A:-${UNSET:?never evaluated}}", "a"),
        ("${UNSET:+${ALSO_UNSET:?never evaluated}}", ""),
    ],
)
def test_interpolation(template: str, expected: str) -> None:
    env = {"A": "a", "EMPTY": "", "PORT": "4000"}
    assert interpolate(template, env) == expected


@pytest.mark.parametrize(
    "template, needle",
    [
        ("${A:?A is required}", "required variable A is not set: A is required"),
        ("${EMPTY:?}", "required variable EMPTY is empty"),
        ("${A?}", "required variable A is not set"),
        ("${A", "unterminated"),
        ("${A:-${B}", "unterminated"),
        ("${}", "invalid variable reference"),
        ("${A!x}", "unsupported modifier"),
    ],
)
def test_interpolation_errors(template: str, needle: str) -> None:
    with pytest.raises(InputError) as err:
        interpolate(template, {"EMPTY": ""}, source="docker-compose.yml")
    assert needle in str(err.value)
    assert str(err.value).startswith("docker-compose.yml")


# ---------------------------------------------------------------- merge tags


def test_merge_rules_and_tags(tmp_path: Path) -> None:
    base = tmp_path / "base.yml"
    over = tmp_path / "over.yml"
    base.write_text(
        """
services:
  a:
    image: x:1
    environment: [K1=v1, K2=v2]
    ports: ["1:1"]
    volumes: ["./a:/a", "./b:/b"]
    command: ["one"]
    healthcheck: {test: ["CMD", "x"], interval: 5s}
    labels: {l1: "1"}
"""
    )
    over.write_text(
        """
services:
  a:
    environment: {K2: over, K3: v3}
    ports: ["2:2", "1:1"]
    volumes: ["./c:/b"]
    command: ["two"]
    healthcheck: {test: !override ["CMD-SHELL", "y"]}
    labels: !reset {}
  b:
    image: y
"""
    )
    merged = merge_compose([load_compose_file(base), load_compose_file(over)])
    a = merged["services"]["a"]
    assert a["environment"] == {"K1": "v1", "K2": "over", "K3": "v3"}
    assert a["ports"] == ["1:1", "2:2"]
    assert a["volumes"] == ["./a:/a", "./c:/b"]
    assert a["command"] == ["two"]
    assert a["healthcheck"] == {"test": ["CMD-SHELL", "y"], "interval": "5s"}
    assert "labels" not in a
    assert merged["services"]["b"]["image"] == "y"


def test_override_replaces_whole_mapping(tmp_path: Path) -> None:
    base = tmp_path / "base.yml"
    over = tmp_path / "over.yml"
    base.write_text("services:\n  a:\n    environment: {A: '1', B: '2'}\n")
    over.write_text("services:\n  a:\n    environment: !override {C: '3'}\n")
    stack = Stack.from_files([base, over])
    assert stack.services["a"].environment == {"C": "3"}


# ---------------------------------------------------------------- corpus stacks


def test_official_2026_envoy_and_kong_overlay(corpus: Path, tmp_path: Path) -> None:
    envoy_dir = stack_copy(corpus, OFFICIAL_2026, tmp_path / "e")
    stack = Stack.load(envoy_dir)
    assert stack.gateway_kind() == "envoy"
    gw = stack.gateway_service()
    assert gw is not None and gw.name == "api-gw" and gw.networks["default"] == ("envoy", "kong")
    files = stack.envoy_files()
    assert files["/etc/envoy/lds.template.yaml"] == envoy_dir / "volumes/api/envoy/lds.template.yaml"
    assert stack.kong_file() is None
    rt = stack.realtime_service()
    assert rt is not None and rt.container_name == "realtime-dev.supabase-realtime"
    assert rt.environment["SEED_SELF_HOST"] == "true" and rt.environment_raw["SEED_SELF_HOST"] == "true"
    assert rt.environment["DB_ENC_KEY"] == "your16charkey123"  # ${REALTIME_DB_ENC_KEY:-supabaserealtime}
    assert rt.healthcheck is not None and rt.healthcheck.form == "CMD-SHELL"
    assert gw.ports == ("8000:8000/tcp",)
    assert implied_tenant(stack) == "realtime-dev"

    kong_dir = stack_copy(
        corpus, OFFICIAL_2026, tmp_path / "k", "COMPOSE_FILE=docker-compose.yml:docker-compose.kong.yml\n"
    )
    stack = Stack.load(kong_dir)
    assert [p.name for p in stack.compose_files] == ["docker-compose.yml", "docker-compose.kong.yml"]
    assert stack.gateway_kind() == "kong"
    gw = stack.gateway_service()
    assert gw is not None and gw.image == "kong/kong:3.9.3"
    # !override replaced the Envoy environment, volumes, ports and entrypoint entirely.
    assert "ANON_KEY" not in gw.environment and gw.environment["KONG_DATABASE"] == "off"
    assert [v.target for v in gw.volumes] == ["/home/kong/temp.yml", "/home/kong/kong-entrypoint.sh"]
    assert gw.entrypoint == ["/bin/sh", "/home/kong/kong-entrypoint.sh"]
    assert gw.healthcheck is not None and gw.healthcheck.test == ["CMD", "kong", "health"]
    assert gw.healthcheck.interval == "5s"
    assert stack.kong_file() == kong_dir / "volumes/api/kong.yml"
    assert implied_tenant(stack) == "realtime-dev"


def test_unreadable_gateway_config_leaves_the_default_tenant(corpus: Path, tmp_path: Path) -> None:
    kong_dir = stack_copy(
        corpus, OFFICIAL_2026, tmp_path, "COMPOSE_FILE=docker-compose.yml:docker-compose.kong.yml\n"
    )
    (kong_dir / "volumes/api/kong.yml").write_text("services: [unclosed\n")
    stack = Stack.load(kong_dir)
    up = realtime_upstream(stack)
    assert (up.host_headers, up.source) == ((), "gateway config unreadable") and up.error
    assert implied_tenant(stack) == "realtime-dev"


def test_official_2025_unquoted_bool_kept_raw(corpus: Path, tmp_path: Path) -> None:
    stack = Stack.load(stack_copy(corpus, OFFICIAL_2025, tmp_path))
    rt = stack.realtime_service()
    assert rt is not None
    assert rt.environment_raw["SEED_SELF_HOST"] is True
    assert rt.environment["SEED_SELF_HOST"] == "true"
    assert rt.healthcheck is not None and rt.healthcheck.form == "CMD"
    assert stack.gateway_kind() == "kong"


def test_pgonrails_build_folders_and_profiles(corpus: Path, tmp_path: Path) -> None:
    rel = "community/BenIsenstein-pgonrails-f799e9a"
    stack = Stack.load(stack_copy(corpus, rel, tmp_path / "k"))
    rt = stack.realtime_service()
    assert rt is not None and rt.image == "supabase/realtime:v2.102.3"  # from realtime/Dockerfile
    assert rt.container_name == "default-tenant.pgonrails-realtime"
    assert stack.gateway_kind() == "kong"
    kong = stack.kong_file()
    assert kong is not None and kong.parts[-2:] == ("kong", "kong.yml")
    assert implied_tenant(stack) == "default-tenant"

    stack = Stack.load(
        stack_copy(corpus, rel, tmp_path / "e", "COMPOSE_FILE=docker-compose.yml:docker-compose.envoy.yml\n")
    )
    assert "kong" in stack.inactive_services and "kong" not in stack.services  # profiles: [disabled]
    assert stack.gateway_kind() == "envoy"
    assert {p.name for p in stack.envoy_files().values()} >= {"lds.template.yaml", "cds.template.yaml"}


def test_coolify_single_file_inline_kong(corpus: Path, tmp_path: Path) -> None:
    src = corpus / "community/coollabsio-coolify-a652517/templates/compose/supabase.yaml"
    dst = tmp_path / "supabase.yaml"
    shutil.copy(src, dst)
    (tmp_path / ".env").write_text("LOGFLARE_PUBLIC_ACCESS_TOKEN=tok-public-123456\n")
    stack = Stack.load(dst)
    rt = stack.realtime_service()
    assert rt is not None and rt.name == "realtime-dev"
    assert rt.environment["SEED_SELF_HOST"] == "true"  # list form: a string
    kong = stack.kong_file()
    assert kong is not None and "$SUPABASE_ANON_KEY" in kong.read_text()  # inline content, not interpolated
    # The ${LOGFLARE_PUBLIC_ACCESS_TOKEN?...} references live in inline vector config, which Coolify
    # writes as-is: loading without them must work.
    (tmp_path / ".env").write_text("OTHER=1\n")
    assert Stack.load(dst).realtime_service() is not None


def test_swarm_stack_loads(corpus: Path, tmp_path: Path) -> None:
    dst = tmp_path / "swarm"
    shutil.copytree(corpus / "community/tsensei-supabase-swarm-de31fdd", dst)
    shutil.copy(dst / "environment-variables.txt", dst / ".env")
    stack = Stack.load(dst)
    rt = stack.realtime_service()
    assert rt is not None and rt.deploy and rt.networks == {"supabase_overlay": ()}


def test_environ_only_when_asked(corpus: Path, tmp_path: Path) -> None:
    d = stack_copy(corpus, OFFICIAL_2026, tmp_path)
    plain = Stack.load(d)
    rt = plain.realtime_service()
    assert rt is not None and rt.environment["DB_HOST"] == "db"
    overridden = Stack.load(d, environ={"POSTGRES_HOST": "elsewhere.example.com"})
    rt2 = overridden.realtime_service()
    assert rt2 is not None and rt2.environment["DB_HOST"] == "elsewhere.example.com"


def test_missing_env_is_fine(corpus: Path, tmp_path: Path) -> None:
    d = tmp_path / "s"
    shutil.copytree(corpus / OFFICIAL_2026, d)
    stack = Stack.load(d)
    assert stack.env_file is None and stack.env == {}
    rt = stack.realtime_service()
    assert rt is not None and rt.environment["API_JWT_SECRET"] == ""


def test_repr_never_shows_values(corpus: Path, tmp_path: Path) -> None:
    canary = "canary-jwt-secret-0123456789-abcdefghijklmnop"
    d = stack_copy(corpus, OFFICIAL_2026, tmp_path, f"JWT_SECRET={canary}\n")
    stack = Stack.load(d)
    rt = stack.realtime_service()
    assert rt is not None and rt.environment["API_JWT_SECRET"] == canary
    for text in (repr(stack), str(stack), repr(rt), str(rt), repr(rt.healthcheck), repr(stack.services)):
        assert canary not in text
    assert canary in stack.env.values()
    assert stack.redactor().text(f"x {canary} y") == "x [redacted] y"


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "content, needle",
    [
        (b"services:\n  a: [unclosed\n", "YAML syntax error at line"),
        (b"- a\n- b\n", "top level is a list"),
        (b"\x7fELF\x00\x01\x02binary", "binary data"),
        (b"\xff\xfe\xfa junk", "not UTF-8"),
        (b"", "empty"),
        (b"services: [a, b]\n", "'services' is a list"),
        (b"services:\n  a: 3\n", "service 'a' is a number"),
        (b"services:\n  a:\n    image: ${X:?set X}\n", "required variable X"),
        (b"services:\n  a: !unknown x\n", "YAML syntax error"),
    ],
)
def test_bad_compose_files(tmp_path: Path, content: bytes, needle: str) -> None:
    f = tmp_path / "docker-compose.yml"
    f.write_bytes(content)
    with pytest.raises(InputError) as err:
        Stack.load(tmp_path)
    message = str(err.value)
    assert needle in message
    assert str(f) in message
    assert "\n" not in message


def test_missing_inputs(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="stack directory not found"):
        Stack.load(tmp_path / "nope")
    with pytest.raises(InputError, match="no compose file"):
        Stack.load(tmp_path)
    with pytest.raises(InputError, match="compose file not found"):
        Stack.from_files([tmp_path / "nope.yml"])
    (tmp_path / "docker-compose.yml").write_text("services: {}\n")
    (tmp_path / ".env").write_text("")
    with pytest.raises(InputError, match="defines no variables"):
        Stack.load(tmp_path)
    (tmp_path / ".env").write_text("COMPOSE_FILE=docker-compose.yml:missing.yml\n")
    with pytest.raises(InputError, match=r"missing\.yml: compose file not found"):
        Stack.load(tmp_path)


# ---------------------------------------------------------------- junk never gives a traceback

_junk = st.one_of(
    st.text(max_size=300),
    st.text(alphabet="${}:-?+=#'\"\\\n AZaz09_.", max_size=200),
    st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
)


@settings(max_examples=300, deadline=None)
@given(_junk)
def test_env_parser_junk(text: str) -> None:
    try:
        parse_env_text(text)
    except InputError:
        pass  # the one exception type allowed; anything else propagates and fails the test


@settings(max_examples=300, deadline=None)
@given(_junk, st.dictionaries(st.from_regex(r"[A-Z_][A-Z0-9_]{0,5}", fullmatch=True), st.text(max_size=10)))
def test_interpolate_junk(text: str, env: dict[str, str]) -> None:
    try:
        out = interpolate(text, env)
    except InputError:
        return
    assert isinstance(out, str)


_yaml_junk = st.one_of(
    st.binary(max_size=300),
    st.text(alphabet="services:\n -[]{}!&*|>'\"#$%@`\t abc123override reset", max_size=300).map(str.encode),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_yaml_junk)
def test_compose_loader_junk(tmp_path: Path, data: bytes) -> None:
    f = tmp_path / "docker-compose.yml"
    f.write_bytes(data)
    try:
        stack = Stack.load(tmp_path)
    except InputError:
        return
    stack.realtime_service()
    stack.gateway_kind()
    implied_tenant(stack)
    repr(stack)


def test_explicit_env_file(corpus: Path, tmp_path: Path) -> None:
    d = tmp_path / "s"
    shutil.copytree(corpus / OFFICIAL_2026, d)
    stack = Stack.load(d, env_file=d / "env.example")
    assert stack.env_file == d / "env.example" and stack.env["POSTGRES_HOST"] == "db"
    with pytest.raises(InputError, match="env file not found"):
        Stack.load(d, env_file=d / "nope.env")


def test_service_env_file(tmp_path: Path) -> None:
    (tmp_path / "rt.env").write_text("SEED_SELF_HOST=true\nAPI_JWT_SECRET=from-file\n")
    (tmp_path / "docker-compose.yml").write_text(
        "services:\n  realtime:\n    image: supabase/realtime:v2.78.15\n"
        "    env_file: [rt.env, {path: absent.env, required: false}]\n"
        "    environment: {API_JWT_SECRET: from-environment}\n"
    )
    rt = Stack.load(tmp_path).realtime_service()
    assert rt is not None
    assert rt.environment["SEED_SELF_HOST"] == "true"
    assert rt.environment["API_JWT_SECRET"] == "from-environment"
    (tmp_path / "docker-compose.yml").write_text("services:\n  realtime:\n    image: x\n    env_file: missing.env\n")
    with pytest.raises(InputError, match="env_file of service 'realtime' not found"):
        Stack.load(tmp_path)


def test_deep_nesting_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "docker-compose.yml").write_text("services:\n  a:\n    x: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(InputError):
        Stack.load(tmp_path)
