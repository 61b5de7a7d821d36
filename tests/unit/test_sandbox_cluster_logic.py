"""Pure logic of the scale-out sandbox and realtime.cluster: proxy configs, the cluster plan, the relay's
presence bookkeeping and how clients are grouped. The processes themselves are tested in
tests/integration/test_sandbox_cluster.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rtbook.checks._cluster import Matrix, groups
from rtbook.exceptions import ConfigError
from rtbook.sandbox import lb
from rtbook.sandbox.cluster import process_marker, spec_for
from rtbook.sandbox.scenarios import SCENARIOS, resolve
from rtbook.sandbox.server_cluster import ClusterRelay
from rtbook.sandbox.server_tenants import ServerConfig

WORK = Path("/tmp/rtbook-lb-test")


def _render(kind: str, variant: str) -> str:
    return lb.render(kind, 8000, [9001, 9002], variant, WORK)


def test_nginx_healthy_forwards_upgrades_keeps_idle_sockets_and_sets_affinity() -> None:
    text = _render("nginx", "healthy")
    for line in ("proxy_http_version 1.1;", "proxy_set_header Upgrade $http_upgrade;",
                 "proxy_set_header Connection $connection_upgrade;", "proxy_read_timeout 3600s;",
                 "proxy_buffering off;", "listen 127.0.0.1:8000;", "server 127.0.0.1:9001;", "server 127.0.0.1:9002;",
                 "proxy_pass http://$rtbook_pool;", f'add_header Set-Cookie "{lb.AFFINITY_COOKIE}='):
        assert line in text, line
    # The access log never keeps the query string (the socket URL carries the apikey).
    assert "$request_uri" not in text and "$args" not in text and '"$request_method $uri"' in text


def test_nginx_variants_change_only_what_they_break() -> None:
    healthy = _render("nginx", "healthy")
    no_upgrade = _render("nginx", "no-upgrade")
    assert "proxy_set_header Upgrade" not in no_upgrade and "proxy_http_version 1.1;" not in no_upgrade
    assert "proxy_read_timeout 3600s" in no_upgrade
    short = _render("nginx", "short-timeout")
    assert f"proxy_read_timeout {lb.SHORT_TIMEOUT_S}s;" in short and "proxy_set_header Upgrade" in short
    no_sticky = _render("nginx", "no-sticky")
    assert "Set-Cookie" not in no_sticky and "proxy_pass http://rtbook_any;" in no_sticky
    assert len({healthy, no_upgrade, short, no_sticky}) == 4


def test_haproxy_and_caddy_variants() -> None:
    hap = _render("haproxy", "healthy")
    assert f"cookie {lb.AFFINITY_COOKIE} insert" in hap and "timeout tunnel 3600s" in hap
    assert "server node2 127.0.0.1:9002 cookie node2" in hap and "del-header Upgrade" not in hap
    assert "http-request del-header Upgrade" in _render("haproxy", "no-upgrade")
    assert f"timeout tunnel {lb.SHORT_TIMEOUT_S}s" in _render("haproxy", "short-timeout")
    assert "cookie" not in _render("haproxy", "no-sticky").replace("# Generated", "")
    caddy = _render("caddy", "healthy")
    assert f"lb_policy cookie {lb.AFFINITY_COOKIE}" in caddy and "admin off" in caddy
    assert "reverse_proxy 127.0.0.1:9001 127.0.0.1:9002" in caddy and "read_timeout" not in caddy
    assert "header_up -Upgrade" in _render("caddy", "no-upgrade")
    assert f"read_timeout {lb.SHORT_TIMEOUT_S}s" in _render("caddy", "short-timeout")
    assert "lb_policy round_robin" in _render("caddy", "no-sticky")


@pytest.mark.parametrize(("kind", "variant", "upstreams", "message"), [
    ("traefik", "healthy", [1], "unknown load balancer 'traefik'"),
    ("nginx", "slow", [1], "unknown load balancer variant 'slow'"),
    ("nginx", "healthy", [], "at least one gateway"),
])
def test_render_refuses_bad_input(kind: str, variant: str, upstreams: list[int], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        lb.render(kind, 8000, upstreams, variant)


def test_cluster_plan_follows_options_and_scenarios() -> None:
    spec = spec_for(2, "nginx", [])
    assert (spec.nodes, spec.lb, spec.lb_variant, spec.clustered) == (2, "nginx", "healthy", True)
    assert spec.server_extra(1) == {"node": "realtime-node1@127.0.0.1", "cluster_channel": spec.channel}
    assert spec.server_extra(2)["slot_name_suffix"] == "node2"
    assert spec_for(1, "caddy", []).server_extra(1) == {"node": "realtime@127.0.0.1"}
    split = spec_for(2, "haproxy", resolve(["nodes-not-clustered"]))
    assert not split.clustered and "cluster_channel" not in split.server_extra(1)
    assert spec_for(2, "nginx", resolve(["lb-short-timeout"])).lb_variant == "short-timeout"
    assert spec_for(2, "nginx", []).channel != spec_for(2, "nginx", []).channel, "one relay channel per sandbox"


@pytest.mark.parametrize(("nodes", "lb_kind", "breaks", "message"), [
    (0, "nginx", [], "--nodes 0: choose a number of nodes from 1 to 8"),
    (9, "nginx", [], "--nodes 9"),
    (2, None, [], "--nodes 2 needs a load balancer"),
    (2, "traefik", [], "--lb 'traefik'"),
    (1, None, ["lb-no-upgrade"], "'lb-no-upgrade' changes the load balancer: add --lb"),
    (1, "nginx", ["nodes-not-clustered"], "'nodes-not-clustered' needs two nodes"),
    (2, "nginx", ["lb-no-upgrade", "lb-no-sticky"], "cannot be combined"),
])
def test_cluster_plan_refuses_what_cannot_run(nodes: int, lb_kind: str | None, breaks: list[str],
                                              message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        spec_for(nodes, lb_kind, resolve(breaks))


def test_scenarios_say_the_truth_about_stickiness() -> None:
    sticky = SCENARIOS["lb-no-sticky"]
    assert "one TCP connection" in sticky.symptom and "long-poll" in sticky.symptom
    assert "never makes unclustered nodes share" in sticky.cause
    assert "stickiness does not fix this" in SCENARIOS["nodes-not-clustered"].cause
    assert all(SCENARIOS[n].needs_cluster for n in ("nodes-not-clustered", "lb-no-upgrade", "lb-short-timeout",
                                                     "lb-no-sticky"))
    assert not SCENARIOS["tenant-missing"].needs_cluster


def test_process_marker_names_the_binary_for_the_proxy() -> None:
    assert process_marker("lb-haproxy") == "haproxy"
    assert process_marker("realtime-2") == process_marker("gateway") == "rtbook.sandbox"


def test_server_config_checks_the_relay_channel() -> None:
    base: dict[str, Any] = {"db": "host=127.0.0.1 dbname=postgres", "db_enc_key": "supabaserealtime",
                            "api_jwt_secret": "x" * 32, "metrics_jwt_secret": "x" * 32}
    assert ServerConfig.from_mapping({**base, "cluster_channel": "rtbook_cluster_ab12"}, env={}).cluster_channel \
        == "rtbook_cluster_ab12"
    assert ServerConfig.from_mapping(base, env={}).cluster_channel is None
    with pytest.raises(ConfigError, match="cluster_channel must be a lower-case SQL identifier, got 'x; drop'"):
        ServerConfig.from_mapping({**base, "cluster_channel": "x; drop"}, env={})


def test_relay_keeps_remote_presences_until_they_leave() -> None:
    delivered: list[dict[str, Any]] = []
    relay = ClusterRelay("host=unused", "rtbook_cluster_t", "realtime-node1@127.0.0.1", delivered.append)
    meta = {"client": "c2", "phx_ref": "F1"}
    join = {"t": "presence", "from": "realtime-node2@127.0.0.1", "tenant": "realtime-dev", "topic": "realtime:r",
            "private": False, "joins": {"k2": {"metas": [meta]}}, "leaves": {}}
    relay._handle(join)
    assert relay.remote_state("realtime-dev", "realtime:r", False) == {"k2": {"metas": [meta]}}
    assert relay.remote_state("realtime-dev", "realtime:r", True) == {}, "private and public are apart"
    relay._handle({**join, "joins": {}, "leaves": {"k2": {"metas": [meta]}}})
    assert relay.remote_state("realtime-dev", "realtime:r", False) == {}
    assert [d["t"] for d in delivered] == ["presence", "presence"]
    assert relay.peers == {"realtime-node2@127.0.0.1"}


def test_groups_split_by_mutual_visibility() -> None:
    names = ["c1", "c2", "c3", "c4"]
    split = {"c1": {"c3"}, "c3": {"c1"}, "c2": {"c4"}, "c4": {"c2"}}
    assert groups(names, split) == [["c1", "c3"], ["c2", "c4"]]
    everyone = {n: {m for m in names if m != n} for n in names}
    assert groups(names, everyone) == [names]
    one_way = {"c1": {"c2"}, "c2": set(), "c3": set(), "c4": set()}
    assert groups(names, one_way) == [["c1"], ["c2"], ["c3"], ["c4"]]


def test_matrix_names_what_each_client_missed() -> None:
    m = Matrix(["c1", "c2"], broadcast={"c1": {"c2"}, "c2": set()}, presence={"c1": {"c2"}, "c2": {"c1"}})
    assert m.missing() == {"c2": {"broadcast": ["c1"]}}
    assert not m.complete()
    m.broadcast["c2"] = {"c1"}
    assert m.complete()


def test_cluster_and_lb_failures_point_to_notebook_06() -> None:
    from rtbook.runbook.notebooks import notebook_for

    assert notebook_for("realtime.cluster") == notebook_for("lb.anything") == "06_scale_out"
    assert notebook_for("realtime.broadcast") == "04_subscription_tests"


def test_relay_sends_leaves_for_the_clients_of_a_node_that_stops() -> None:
    delivered: list[dict[str, Any]] = []
    relay = ClusterRelay("host=unused", "rtbook_cluster_t", "realtime-node1@127.0.0.1", delivered.append)
    for node, ref, topic in (("n2", "A", "realtime:r"), ("n3", "B", "realtime:r"), ("n2", "C", "realtime:s")):
        relay._handle({"t": "presence", "from": node, "tenant": "t", "topic": topic, "private": False,
                       "joins": {f"k{ref}": {"metas": [{"phx_ref": ref}]}}, "leaves": {}})
    delivered.clear()
    relay._handle({"t": "bye", "from": "n2"})
    left = sorted((d["topic"], list(d["leaves"])) for d in delivered)
    assert left == [("realtime:r", ["kA"]), ("realtime:s", ["kC"])]
    assert all(d["joins"] == {} for d in delivered)
    assert relay.remote_state("t", "realtime:r", False) == {"kB": {"metas": [{"phx_ref": "B"}]}}
    assert relay.remote_state("t", "realtime:s", False) == {} and relay.peers == {"n3"}

