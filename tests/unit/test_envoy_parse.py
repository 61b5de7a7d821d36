"""Envoy templates: substitution compared with the real docker-entrypoint.sh, parsing, routing, junk input."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from rtbook.config.envoy import computed_env, parse_envoy, sed_substitutions, substitute
from rtbook.exceptions import InputError
from tests.conftest import CORPUS, require

OFFICIAL = CORPUS / "official/2026-09-1f37f2a/volumes/api/envoy"
PGONRAILS = CORPUS / "community/BenIsenstein-pgonrails-f799e9a/envoy"

ENV = {
    "ANON_KEY": "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoiYW5vbiJ9.YW5vbnNpZ25hdHVyZQ",
    "SERVICE_ROLE_KEY": "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoic2VydmljZSJ9.c3Zjc2lnbmF0dXJl",
    "SUPABASE_PUBLISHABLE_KEY": "",
    "SUPABASE_SECRET_KEY": "",
    "ANON_KEY_ASYMMETRIC": "",
    "SERVICE_ROLE_KEY_ASYMMETRIC": "",
    "SUPABASE_PUBLIC_URL": "http://localhost:8000",
    "DASHBOARD_USERNAME": "supabase",
    "DASHBOARD_PASSWORD": "a&b\\c password",
    "JWT_ISSUER": "http://localhost:8000/auth/v1",
}


def run_entrypoint(folder: Path, tmp: Path, env: dict[str, str]) -> dict[str, str]:
    """Run the real docker-entrypoint.sh with /etc/envoy pointed at ``tmp`` and the exec removed."""
    etc = tmp / "etc"
    etc.mkdir()
    for f in folder.iterdir():
        if f.suffix == ".yaml":
            shutil.copy(f, etc / f.name)
    script = (folder / "docker-entrypoint.sh").read_text().replace("/etc/envoy", str(etc))
    script = script.replace("exec envoy -c", ": envoy -c")
    (tmp / "entry.sh").write_text(script)
    done = subprocess.run(
        ["sh", str(tmp / "entry.sh")],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env},
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return {f.name: f.read_text() for f in etc.iterdir()}


@pytest.mark.parametrize("folder", [OFFICIAL, PGONRAILS], ids=["official-2026-09", "pgonrails"])
def test_substitution_matches_the_real_entrypoint(folder: Path, tmp_path: Path) -> None:
    require(folder.is_dir(), f"corpus folder missing: {folder}")
    require(all(shutil.which(b) for b in ("sh", "sed", "openssl")), "sh/sed/openssl not installed")
    env = {**ENV, "REALTIME_HOST": "default-tenant.pgonrails-realtime", "REALTIME_PORT": "4000"}
    real = run_entrypoint(folder, tmp_path, env)
    plan = sed_substitutions((folder / "docker-entrypoint.sh").read_text())
    ours_env = {**env, **computed_env(env)}
    for template, names in plan.items():
        output = template.replace(".template", "")
        ours = substitute((folder / template).read_text(), names, ours_env)
        assert ours == real[output], template


def test_official_routes_clusters_and_tenant() -> None:
    require(OFFICIAL.is_dir(), "corpus missing")
    plan = sed_substitutions((OFFICIAL / "docker-entrypoint.sh").read_text())
    env = {**ENV, **computed_env(ENV)}
    lds = substitute((OFFICIAL / "lds.template.yaml").read_text(), plan["lds.template.yaml"], env)
    config = parse_envoy(lds, (OFFICIAL / "cds.yaml").read_text(), (OFFICIAL / "envoy.yaml").read_text())
    found = config.route_for("/realtime/v1/websocket")
    assert found is not None
    listener, route = found
    assert route.name == "realtime-v1-ws-protected"
    assert route.rewritten("/realtime/v1/websocket") == "/socket/websocket"
    assert listener.websocket_allowed(route)
    tenants = config.route_for("/realtime/v1/api/tenants/realtime-dev")
    assert tenants is not None and tenants[1].blocked
    rest = config.route_for("/realtime/v1/api/broadcast")
    assert rest is not None and rest[1].rewritten("/realtime/v1/api/broadcast") == "/api/broadcast"
    assert config.realtime_cluster_hosts() == ["realtime-dev.supabase-realtime"]
    assert config.realtime_host_rewrites() == ["realtime-dev.supabase-realtime"]
    # The Lua code and RBAC rules carry the substituted keys; reprs must not.
    assert ENV["ANON_KEY"] in lds
    assert ENV["ANON_KEY"] not in repr(config) and ENV["SERVICE_ROLE_KEY"] not in repr(config)


def test_envoy_matches_in_order_not_by_length() -> None:
    lds = yaml.safe_dump(
        {
            "resources": [
                {
                    "name": "l",
                    "address": {"socket_address": {"address": "0.0.0.0", "port_value": 8000}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": {
                                        "route_config": {
                                            "virtual_hosts": [
                                                {
                                                    "name": "v",
                                                    "routes": [
                                                        {
                                                            "name": "ws",
                                                            "match": {"prefix": "/realtime/v1/"},
                                                            "route": {
                                                                "cluster": "realtime",
                                                                "prefix_rewrite": "/socket/",
                                                            },
                                                        },
                                                        {
                                                            "name": "api",
                                                            "match": {"prefix": "/realtime/v1/api"},
                                                            "route": {"cluster": "realtime", "prefix_rewrite": "/api"},
                                                        },
                                                    ],
                                                }
                                            ]
                                        }
                                    },
                                }
                            ]
                        }
                    ],
                }
            ]
        }
    )
    config = parse_envoy(lds, None)
    found = config.route_for("/realtime/v1/api/broadcast")
    assert found is not None and found[1].name == "ws"
    assert not config.listeners[0].websocket_allowed(found[1])


def test_a_pipe_in_a_value_breaks_sed_and_is_reported() -> None:
    with pytest.raises(InputError, match="ANON_KEY"):
        substitute("k: ${ANON_KEY}", ["ANON_KEY"], {"ANON_KEY": "a|b"})


def test_yaml_errors_name_file_and_line() -> None:
    with pytest.raises(InputError, match=r"lds.yaml: YAML syntax error at line 3, column 1"):
        parse_envoy("resources:\n  - name: [unclosed\n", None, sources=["lds.yaml"])


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=300))
def test_junk_text_only_raises_input_error(text: str) -> None:
    try:
        parse_envoy(text, text)
    except InputError:
        pass


@settings(max_examples=200, deadline=None)
@given(
    data=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "resources",
                        "filter_chains",
                        "filters",
                        "typed_config",
                        "route_config",
                        "virtual_hosts",
                        "routes",
                        "match",
                        "prefix",
                        "route",
                        "cluster",
                        "load_assignment",
                        "endpoints",
                        "lb_endpoints",
                        "endpoint",
                        "address",
                        "socket_address",
                        "port_value",
                        "upgrade_configs",
                        "typed_per_filter_config",
                        "http_filters",
                        "name",
                        "static_resources",
                        "listeners",
                    ]
                ),
                children,
                max_size=4,
            )
        ),
        max_leaves=25,
    )
)
def test_structured_junk_only_raises_input_error(data: object) -> None:
    text = yaml.safe_dump(data)
    try:
        parse_envoy(text, text)
    except InputError:
        pass


def test_rds_listener_is_flagged() -> None:
    hcm = {"name": "envoy.filters.network.http_connection_manager", "typed_config": {"rds": {"route_config_name": "r"}}}
    lds = yaml.safe_dump({"resources": [{"name": "l", "filter_chains": [{"filters": [hcm]}]}]})
    config = parse_envoy(lds, None)
    assert config.listeners[0].uses_rds and config.route_for("/realtime/v1/websocket") is None
