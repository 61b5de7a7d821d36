"""kong.yml expansion: compared with real bash (eval style) and awk (awk style), plus junk-input properties."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from rtbook.config.kong import expand_kong, expand_kong_detailed, parse_kong, upstream_path
from rtbook.exceptions import InputError
from tests.conftest import CORPUS, require

OLD_KONG = CORPUS / "official/2025-11-f8a85e7/volumes/api/kong.yml"
NEW_KONG = CORPUS / "official/2026-09-1f37f2a/volumes/api/kong.yml"
NEW_SCRIPT = CORPUS / "official/2026-09-1f37f2a/volumes/api/kong-entrypoint.sh"

ENV = {
    "SUPABASE_ANON_KEY": "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoiYW5vbiJ9.c2lnbmF0dXJl",
    "SUPABASE_SERVICE_KEY": "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoic2VydmljZSJ9.c2lnbmF0dXJl",
    "DASHBOARD_USERNAME": "supabase",
    "DASHBOARD_PASSWORD": "this password has  spaces",
    "HOME": "/home/kong",
}


def bash_eval(text: str, env: dict[str, str], tmp: Path) -> subprocess.CompletedProcess[str]:
    """Run the official eval entrypoint line on ``text`` with real bash, in an empty directory."""
    (tmp / "temp.yml").write_text(text)
    work = tmp / "cwd"
    work.mkdir(exist_ok=True)
    return subprocess.run(
        ["bash", "-c", 'eval "echo \\"$(cat ../temp.yml)\\""'],
        cwd=work,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )


def have_bash() -> bool:
    return shutil.which("bash") is not None


EVAL_FILES = [
    OLD_KONG,
    CORPUS / "community/easypanel-io-compose-405fd49/supabase/code/volumes/api/kong.yml",
    CORPUS / "community/tsensei-supabase-swarm-de31fdd/volumes/api/kong.yml",
]


@pytest.mark.parametrize("path", EVAL_FILES, ids=["official-2025-11", "easypanel", "tsensei"])
def test_eval_matches_bash_on_corpus_files(path: Path, tmp_path: Path) -> None:
    require(have_bash(), "bash is not installed")
    require(path.is_file(), f"corpus file missing: {path}")
    text = path.read_text()
    real = bash_eval(text, ENV, tmp_path)
    assert real.returncode == 0, real.stderr
    assert expand_kong(text, ENV, "eval") == real.stdout


def test_eval_strips_double_quotes_and_splits_words(tmp_path: Path) -> None:
    text = 'a: "Access is  forbidden."\nb: "x: $DASHBOARD_PASSWORD"\nc: $DASHBOARD_PASSWORD\n'
    out = expand_kong(text, ENV, "eval")
    # Quotes vanish; text between the file's quotes is word-split (runs of spaces collapse).
    assert out == "a: Access is forbidden.\nb: x: this password has spaces\nc: this password has  spaces\n"
    if have_bash():
        assert bash_eval(text, ENV, tmp_path).stdout == out


def test_eval_unset_variable_becomes_empty_and_is_reported() -> None:
    exp = expand_kong_detailed("key: $MISSING_VAR\nother: ${DASHBOARD_USERNAME:-x}\n", ENV, "eval")
    assert exp.text == "key: \nother: supabase\n"
    assert exp.referenced == ("MISSING_VAR", "DASHBOARD_USERNAME")
    assert exp.unresolved == ("MISSING_VAR",)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('msg: "unbalanced\nnext: x\n', "line 1"),
        ("run: $(id)\n", "'$('"),
        ("run: `id`\n", "backquote"),
        ("bad: ${not valid}\n", "bad substitution"),
        ('a: "x ; rm"\n', "operator"),
    ],
)
def test_eval_refuses_what_would_break_or_run_commands(text: str, fragment: str) -> None:
    with pytest.raises(InputError, match=None) as info:
        expand_kong(text, ENV, "eval")
    assert fragment in str(info.value)


def test_awk_keeps_quotes_leaves_unknown_names_and_deletes_empty_key_lines() -> None:
    text = (
        "consumers:\n"
        "  - username: anon\n"
        "    keyauth_credentials:\n"
        "      - key: $SUPABASE_ANON_KEY\n"
        "      - key: $SUPABASE_PUBLISHABLE_KEY\n"
        '    h: "Authorization: $LUA_AUTH_EXPR"\n'
        "    u: $NOT_THERE\n"
    )
    env = {**ENV, "SUPABASE_PUBLISHABLE_KEY": "", "LUA_AUTH_EXPR": "$(headers.apikey)"}
    exp = expand_kong_detailed(text, env, "awk")
    assert f"- key: {ENV['SUPABASE_ANON_KEY']}\n" in exp.text
    assert "PUBLISHABLE" not in exp.text and exp.deleted_lines == (5,)
    # The value is inserted as is: quotes kept, no re-expansion of the $( in it.
    assert 'h: "Authorization: $(headers.apikey)"' in exp.text
    assert "u: $NOT_THERE" in exp.text
    assert exp.unresolved == ("NOT_THERE",) and exp.empty == ("SUPABASE_PUBLISHABLE_KEY",)


AWK_PAIRS = [
    (NEW_SCRIPT, NEW_KONG),
    (
        CORPUS / "community/singh-inder-supabase-automated-self-host-5f050b6/docker/volumes/api/kong-entrypoint.sh",
        CORPUS / "community/singh-inder-supabase-automated-self-host-5f050b6/docker/volumes/api/kong.yml",
    ),
    (
        CORPUS / "community/BenIsenstein-pgonrails-f799e9a/kong/kong-entrypoint.sh",
        CORPUS / "community/BenIsenstein-pgonrails-f799e9a/kong/kong.yml",
    ),
]


@pytest.mark.parametrize(("script_path", "kong_path"), AWK_PAIRS, ids=["official-2026-09", "singh-inder", "pgonrails"])
def test_awk_matches_the_real_entrypoint(script_path: Path, kong_path: Path, tmp_path: Path) -> None:
    """Run the real kong-entrypoint.sh's awk+sed (the exec line removed) and compare."""
    require(all(shutil.which(b) for b in ("awk", "sh", "bash", "sed")), "awk/sh/bash/sed not installed")
    require(script_path.is_file() and kong_path.is_file(), f"corpus files missing: {script_path}")
    script_text = script_path.read_text()
    script = script_text.replace("/home/kong/temp.yml", str(tmp_path / "temp.yml"))
    script = script.replace("exec /entrypoint.sh kong docker-start", "")
    (tmp_path / "entry.sh").write_text(script)
    (tmp_path / "temp.yml").write_text(kong_path.read_text())
    env = {
        **ENV,
        "SUPABASE_PUBLISHABLE_KEY": "",
        "SUPABASE_SECRET_KEY": "",
        "JWT_ISSUER": "http://localhost:8000/auth/v1",
        "KONG_DECLARATIVE_CONFIG": str(tmp_path / "kong.yml"),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    }
    shell = "bash" if script_text.startswith("#!/bin/bash") else "sh"
    done = subprocess.run([shell, str(tmp_path / "entry.sh")], env=env, capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stderr
    real = (tmp_path / "kong.yml").read_text()

    from rtbook.config.kong import _script_env

    ours_env = {**env, **_script_env(script_text, env)}
    ours = expand_kong(kong_path.read_text(), ours_env, "awk")
    assert ours == real


def test_route_for_uses_longest_prefix_and_v0_paths() -> None:
    require(NEW_KONG.is_file(), "corpus missing")
    env = {
        **ENV,
        "LUA_AUTH_EXPR": "x",
        "LUA_RT_WS_EXPR": "y",
        "LUA_FUNCTIONS_EXPR": "z",
        "WELL_KNOWN_OAUTH_PATH": "/.well-known/oauth-authorization-server",
    }
    config = parse_kong(expand_kong(NEW_KONG.read_text(), env, "awk"), source="kong.yml")
    cases = {
        "/realtime/v1/websocket": ("realtime-v1-ws", "/socket/websocket"),
        "/realtime/v1/api/broadcast": ("realtime-v1-rest", "/api/broadcast"),
        "/realtime/v1/api/tenants/realtime-dev": ("realtime-v1-rest-tenants", "/api/tenants/realtime-dev"),
        "/rest/v1/": ("rest-v1-openapi-root", None),
        "/rest/v1/todos": ("rest-v1-all", "/todos"),
        "/project/default": ("dashboard-all", "/project/default"),
    }
    for path, (route_name, upstream) in cases.items():
        found = config.route_for(path)
        assert found is not None, path
        route, service = found
        assert route.name == route_name, path
        if upstream:
            assert upstream_path(route, service, path) == upstream
    assert config.realtime_upstream_hosts() == ["realtime-dev.supabase-realtime"]
    # Keys are Secrets: their values never show in reprs.
    anon = config.consumer("anon")
    assert anon is not None and ENV["SUPABASE_ANON_KEY"] not in repr(anon)
    assert ENV["SUPABASE_ANON_KEY"] not in repr(config)
    assert ENV["SUPABASE_ANON_KEY"] not in repr(expand_kong_detailed(NEW_KONG.read_text(), env, "awk"))


# ----------------------------------------------------------------- properties

SAFE = st.text(alphabet=st.sampled_from(list("ab $_{}:-\"'\\\n#.=/AB01")), max_size=60)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=SAFE)
def test_eval_expansion_agrees_with_bash_on_generated_text(text: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Whenever rtbook accepts a text, bash produces the same output (no command chars in the alphabet)."""
    require(have_bash(), "bash is not installed")
    env = {"AB": "x  y", "A": "", "B": "b"}
    try:
        ours = expand_kong(text, env, "eval")
    except InputError:
        return
    real = bash_eval(text, env, tmp_path_factory.mktemp("bash"))
    assume(real.returncode == 0 and not real.stderr)
    assert ours == real.stdout, (text, ours, real.stdout)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=300), style=st.sampled_from(["eval", "awk", "none"]))
def test_junk_text_only_raises_input_error(text: str, style: str) -> None:
    try:
        expanded = expand_kong(text, {"A": "1"}, style)  # type: ignore[arg-type]
    except InputError:
        return
    try:
        parse_kong(expanded, source="junk.yml")
    except InputError:
        pass


@settings(max_examples=200, deadline=None)
@given(
    data=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "services",
                        "routes",
                        "plugins",
                        "consumers",
                        "acls",
                        "url",
                        "name",
                        "paths",
                        "config",
                        "keyauth_credentials",
                        "key",
                        "strip_path",
                        "port",
                        "protocol",
                        "_format_version",
                        "consumer",
                        "group",
                        "route",
                        "service",
                    ]
                ),
                children,
                max_size=5,
            )
        ),
        max_leaves=20,
    )
)
def test_structured_junk_only_raises_input_error(data: object) -> None:
    import yaml

    try:
        parse_kong(yaml.safe_dump(data), source="junk.yml")
    except InputError:
        pass
