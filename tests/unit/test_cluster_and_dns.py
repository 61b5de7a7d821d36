"""cluster.* (Realtime nodes' clustering settings) and kong.dns_* / kong.realtime_region_host on corpus stacks.

Each broken variant is the official stack plus one compose override file (what users write),
loaded through COMPOSE_FILE like any stack.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from rtbook.config.stack import Stack
from rtbook.registry import run_checks
from rtbook.results import CheckResult, Status
from rtbook.target import Target
from tests.conftest import ROOT

OFFICIAL_2026 = "official/2026-09-1f37f2a"
LB = ROOT / "tests" / "fixtures" / "lb"


def stack_with(corpus: Path, tmp_path: Path, override: dict[str, Any] | None = None, *, second_node: dict[str, Any]
               | None = None, env: str = "") -> Path:
    """The official 2026 stack with Kong, plus an override file (and a second Realtime service if asked)."""
    dst = tmp_path / "stack"
    shutil.copytree(corpus / OFFICIAL_2026, dst)
    files = ["docker-compose.yml", "docker-compose.kong.yml"]
    doc: dict[str, Any] = copy.deepcopy(override or {})
    if second_node is not None:
        base = yaml.safe_load((dst / "docker-compose.yml").read_text())["services"]["realtime"]
        node = copy.deepcopy(base)
        node.pop("container_name", None)
        node["environment"] = {**node["environment"], **second_node.pop("environment", {})}
        node.update(second_node)
        doc.setdefault("services", {})["realtime-b"] = node
    if doc:
        (dst / "cluster.yml").write_text(yaml.safe_dump(doc))
        files.append("cluster.yml")
    (dst / ".env").write_text((dst / "env.example").read_text() + f"\nCOMPOSE_FILE={':'.join(files)}\n" + env)
    return dst


def results(stack_dir: Path, prefix: str | tuple[str, ...], **target: Any) -> dict[str, CheckResult]:
    report = run_checks(Target(stack=Stack.load(stack_dir), docker=False, **target), only=prefix)
    return {r.id: r for r in report}


def statuses(found: dict[str, CheckResult]) -> dict[str, Status]:
    return {k: v.status for k, v in found.items()}


# ---------------------------------------------------------------- cluster.*


def test_one_node_is_not_a_cluster(corpus: Path, tmp_path: Path) -> None:
    found = results(stack_with(corpus, tmp_path), "cluster.")
    assert set(statuses(found).values()) == {Status.SKIP}
    assert "one Realtime node" in found["cluster.strategy"].summary


def test_two_nodes_as_the_official_compose_sets_them(corpus: Path, tmp_path: Path) -> None:
    """A copy of the official realtime service: POSTGRES by default, but @127.0.0.1 names and no REGION."""
    found = results(stack_with(corpus, tmp_path, second_node={}), "cluster.")
    assert statuses(found) == {
        "cluster.strategy": Status.PASS,
        "cluster.node_address": Status.FAIL,
        "cluster.cookie": Status.PASS,
        "cluster.erl_aflags": Status.PASS,
        "cluster.region": Status.FAIL,
    }
    assert "realtime@127.0.0.1" in found["cluster.node_address"].summary
    assert "services.realtime.environment.POD_IP" in found["cluster.node_address"].remedy
    region = found["cluster.region"]
    assert "region_nodes(nil)" in region.detail and "v2.80.11" in region.detail
    assert "services.realtime-b.environment.REGION" in region.remedy


def test_a_clustered_pair_passes(corpus: Path, tmp_path: Path) -> None:
    good_env = {"POD_IP": "10.0.1.10", "REGION": "us-east-1", "RELEASE_COOKIE": "canary-cookie-8d1f"}
    override = {"services": {"realtime": {"environment": dict(good_env)}}}
    second = {"environment": {**good_env, "POD_IP": "10.0.1.11"}}
    found = results(stack_with(corpus, tmp_path, override, second_node=second), "cluster.")
    assert set(statuses(found).values()) == {Status.PASS}, {k: v.summary for k, v in found.items()}
    text = " ".join(f"{r.summary} {r.detail} {r.evidence}" for r in found.values())
    assert "canary-cookie-8d1f" not in text  # the cookie value never reaches an output


@pytest.mark.parametrize(("env", "cid", "needle"), [
    ({"CLUSTER_STRATEGIES": "EPMD"}, "cluster.strategy", "orange@127.0.0.1"),
    ({"CLUSTER_STRATEGIES": "DNS"}, "cluster.strategy", "DNS_NODES"),
    ({"CLUSTER_STRATEGIES": "KUBERNETES"}, "cluster.strategy", "KUBERNETES unknown"),
    ({"ERL_AFLAGS": "-proto_dist inet6_tcp"}, "cluster.erl_aflags", "do not enable IPv6"),
    ({"RELEASE_COOKIE": "canary-one"}, "cluster.cookie", "different release cookies"),
    ({"DB_HOST": "other-db"}, "cluster.strategy", "different ones"),
])
def test_each_cluster_defect_by_its_id(corpus: Path, tmp_path: Path, env: dict[str, str], cid: str,
                                       needle: str) -> None:
    base = {"POD_IP": "10.0.1.10", "REGION": "us-east-1"}
    override = {"services": {"realtime": {"environment": dict(base)}}}
    second = {"environment": {**base, "POD_IP": "10.0.1.11", **env}}
    found = results(stack_with(corpus, tmp_path, override, second_node=second), "cluster.")
    assert found[cid].status is Status.FAIL, found[cid].summary
    assert needle in f"{found[cid].summary} {found[cid].detail}"
    assert found[cid].remedy
    others = {k for k, v in found.items() if v.status is not Status.PASS and k != cid}
    assert others == set(), {k: found[k].summary for k in others}


def test_images_from_two_builds_need_a_shared_cookie(corpus: Path, tmp_path: Path) -> None:
    base = {"POD_IP": "10.0.1.10", "REGION": "us-east-1"}
    override = {"services": {"realtime": {"environment": dict(base)}}}
    second = {"image": "supabase/realtime:v2.129.8", "environment": {**base, "POD_IP": "10.0.1.11"}}
    found = results(stack_with(corpus, tmp_path, override, second_node=second), "cluster.cookie")
    assert found["cluster.cookie"].status is Status.FAIL
    assert "random releases/COOKIE" in found["cluster.cookie"].detail


def test_v2_78_needs_no_region(corpus: Path, tmp_path: Path) -> None:
    """v2.78.19 sends broadcasts to every connected node unless REGIONAL_BROADCASTING=true."""
    old = "supabase/realtime:v2.78.19"
    env = {"POD_IP": "10.0.1.10"}
    override = {"services": {"realtime": {"image": old, "environment": dict(env)}}}
    second = {"image": old, "environment": {"POD_IP": "10.0.1.11"}}
    found = results(stack_with(corpus, tmp_path, override, second_node=second), "cluster.region")
    assert found["cluster.region"].status is Status.PASS
    second = {"image": old, "environment": {"POD_IP": "10.0.1.11", "REGIONAL_BROADCASTING": "true"}}
    found = results(stack_with(corpus, tmp_path / "b", override, second_node=second), "cluster.region")
    assert found["cluster.region"].status is Status.FAIL


def test_one_node_per_host_behind_a_load_balancer_is_a_cluster(corpus: Path, tmp_path: Path) -> None:
    """The stack has one Realtime, but --lb spreads clients over two hosts: the cluster checks apply."""
    found = results(stack_with(corpus, tmp_path), "cluster.", lb=(str(LB / "nginx/good.conf"),))
    assert found["cluster.node_address"].status is Status.FAIL
    assert "10.0.1.10:8000, 10.0.2.10:8000" in found["cluster.node_address"].detail
    assert found["cluster.cookie"].status is Status.WARN  # the other host's image is not visible


# ---------------------------------------------------------------- kong.dns_* and the multi-region naming rule


def test_official_kong_dns_settings_pass(corpus: Path, tmp_path: Path) -> None:
    found = results(stack_with(corpus, tmp_path), ("kong.dns_", "kong.realtime_region_host"))
    assert statuses(found) == {"kong.dns_order": Status.PASS, "kong.dns_resolver": Status.PASS,
                               "kong.realtime_region_host": Status.PASS}
    assert "realtime-dev.supabase-realtime → realtime-dev" in found["kong.realtime_region_host"].summary


@pytest.mark.parametrize(("kong", "cid", "status", "remedy"), [
    ({"environment": {"KONG_DNS_ORDER": "LAST,SRV,A,CNAME"}}, "kong.dns_order", Status.WARN,
     "KONG_DNS_ORDER: LAST,A,CNAME"),
    ({"environment": {"KONG_DNS_ORDER": "LAST,CNAME"}}, "kong.dns_order", Status.FAIL, "LAST,A,CNAME"),
    ({"environment": {"KONG_DNS_RESOLVER": "10.0.0.2"}}, "kong.dns_resolver", Status.FAIL,
     "KONG_DNS_RESOLVER: 127.0.0.11:53,10.0.0.2"),
    ({"dns_search": ["eu-west-1.compute.internal"], "dns_opt": ["ndots:2"]}, "kong.dns_resolver", Status.WARN,
     "dns_opt"),
])
def test_each_kong_dns_defect(corpus: Path, tmp_path: Path, kong: dict[str, Any], cid: str, status: Status,
                              remedy: str) -> None:
    found = results(stack_with(corpus, tmp_path, {"services": {"api-gw": kong}}), cid)
    assert found[cid].status is status, found[cid].summary
    assert remedy in found[cid].remedy


def test_region_goes_after_the_first_label(corpus: Path, tmp_path: Path) -> None:
    """realtime-dev.supabase-realtime-east keeps tenant realtime-dev; realtime-east.supabase-realtime does not."""
    dst = stack_with(corpus, tmp_path, env="")
    kong = dst / "volumes/api/kong.yml"
    kong.write_text(kong.read_text().replace("realtime-dev.supabase-realtime:", "realtime-dev.supabase-realtime-east:"))
    found = results(dst, "kong.realtime_region_host", tenant="realtime-dev")
    assert found["kong.realtime_region_host"].status is Status.PASS
    region_first = kong.read_text().replace("realtime-dev.supabase-realtime-east:", "realtime-east.supabase-realtime:")
    kong.write_text(region_first)
    found = results(dst, "kong.realtime_region_host", tenant="realtime-dev")
    r = found["kong.realtime_region_host"]
    assert r.status is Status.FAIL
    assert "tenant 'realtime-east'" in r.summary
    assert "http://realtime-dev.supabase-realtime:4000/socket" in r.remedy


def test_compose_replicas_make_a_cluster(corpus: Path, tmp_path: Path) -> None:
    override = {"services": {"realtime": {"deploy": {"replicas": 3}, "environment": {"REGION": "eu-west-1"}}}}
    found = results(stack_with(corpus, tmp_path, override), "cluster.")
    assert "3 Realtime node(s)" in found["cluster.strategy"].summary + found["cluster.strategy"].detail + str(
        found["cluster.strategy"].evidence)
    assert found["cluster.node_address"].status is Status.FAIL
    assert "POD_IP=$$(hostname -i) exec /app/run.sh /app/bin/server" in found["cluster.node_address"].remedy
    assert found["cluster.region"].status is Status.PASS


def test_swarm_stack_scaled_to_two_replicas(corpus: Path, tmp_path: Path) -> None:
    """tsensei/supabase-swarm (Realtime v2.34.7) with replicas: 2: before v2.46.2 the default strategy is DNS, and
    the official DNS_NODES "''" gives it nothing to look up; before v2.41.23 POD_IP is not read at all."""
    dst = tmp_path / "stack"
    shutil.copytree(corpus / "community/tsensei-supabase-swarm-de31fdd", dst)
    (dst / "scale.yml").write_text(yaml.safe_dump({"services": {"realtime": {"deploy": {"replicas": 2}}}}))
    (dst / ".env").write_text((dst / "environment-variables.txt").read_text()
                              + "\nCOMPOSE_FILE=docker-compose.yml:scale.yml\n")
    found = results(dst, "cluster.")
    assert statuses(found) == {
        "cluster.strategy": Status.FAIL,
        "cluster.node_address": Status.FAIL,
        "cluster.cookie": Status.PASS,
        "cluster.erl_aflags": Status.PASS,
        "cluster.region": Status.PASS,
    }, {k: v.summary for k, v in found.items()}
    assert "defaults to DNS" in found["cluster.strategy"].detail
    assert "CLUSTER_STRATEGIES: POSTGRES" in found["cluster.strategy"].remedy
    assert "Upgrade Realtime to v2.41.23" in found["cluster.node_address"].remedy


def test_health_check_prediction_reads_the_stacks_kong_yml(corpus: Path, tmp_path: Path) -> None:
    """With --stack, lb.health_check asks Kong's router on the stack's own kong.yml what a probe path gets."""
    dst = stack_with(corpus, tmp_path)
    found = results(dst, "lb.health_check", lb=(str(LB / "haproxy/health-root.cfg"),))
    r = found["lb.health_check"]
    assert r.status is Status.FAIL
    assert "gets 401" in r.detail and "the stack's kong.yml" in r.detail and "basic-auth" in r.detail
    # Without the dashboard route, / matches nothing and Kong answers 404: the prediction follows the file.
    kong = dst / "volumes/api/kong.yml"
    text = kong.read_text()
    start = text.index("  - name: dashboard")
    kong.write_text(text[:start])
    found = results(dst, "lb.health_check", lb=(str(LB / "haproxy/health-root.cfg"),))
    assert "gets 404" in found["lb.health_check"].detail
