"""lb.* checks on real load-balancer configs (tests/fixtures/lb): each defect by its id, remedy in that LB's syntax.

The fixtures are proven real first: nginx -t, haproxy -c and caddy validate accept every one of
them (the Debian binaries; with CI=true a missing binary fails the test instead of skipping it).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from rtbook.config.lb import LbConfig, load_lb, parse_duration
from rtbook.exceptions import InputError
from rtbook.registry import run_checks
from rtbook.results import CheckResult, Status
from rtbook.target import Target
from tests.conftest import ROOT, require, which

LB = ROOT / "tests" / "fixtures" / "lb"
_BINARY_TIMEOUT_S = 60


def lb_results(*files: str | Path) -> dict[str, CheckResult]:
    report = run_checks(Target(lb=tuple(str(f) for f in files)), only="lb.")
    out = {r.id: r for r in report}
    assert len(out) == len(list(report)), "one result per check for one file"
    return out


def not_passing(results: dict[str, CheckResult]) -> dict[str, Status]:
    return {cid: r.status for cid, r in results.items() if r.status is not Status.PASS}


# ---------------------------------------------------------------- the fixtures are real configs


@pytest.mark.parametrize("conf", sorted((LB / "nginx").glob("*.conf")), ids=lambda p: p.name)
def test_nginx_accepts_the_fixture(conf: Path) -> None:
    nginx = which("nginx")
    require(nginx is not None, "nginx is not installed (apt-get install nginx-light)")
    assert nginx is not None
    done = subprocess.run([nginx, "-t", "-q", "-c", str(conf), "-g", "error_log stderr;"], capture_output=True,
                          text=True, timeout=_BINARY_TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("cfg", sorted((LB / "haproxy").glob("*.cfg")), ids=lambda p: p.name)
def test_haproxy_accepts_the_fixture(cfg: Path) -> None:
    haproxy = which("haproxy")
    require(haproxy is not None, "haproxy is not installed (apt-get install haproxy)")
    assert haproxy is not None
    done = subprocess.run([haproxy, "-c", "-q", "-f", str(cfg)], cwd=cfg.parent, capture_output=True, text=True,
                          timeout=_BINARY_TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("caddyfile", sorted((LB / "caddy").glob("*.Caddyfile")), ids=lambda p: p.name)
def test_caddy_validates_the_fixture(caddyfile: Path) -> None:
    caddy = which("caddy")
    require(caddy is not None, "caddy is not installed (apt-get install caddy)")
    assert caddy is not None
    done = subprocess.run([caddy, "validate", "--config", str(caddyfile), "--adapter", "caddyfile"],
                          cwd=caddyfile.parent, capture_output=True, text=True, timeout=_BINARY_TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_broken_fixture_is_refused_by_nginx_and_by_rtbook(tmp_path: Path) -> None:
    """The proof above can fail: nginx -t rejects an unclosed block, and so does the crossplane parser."""
    nginx = which("nginx")
    require(nginx is not None, "nginx is not installed")
    assert nginx is not None
    bad = tmp_path / "nginx.conf"
    bad.write_text("events {}\nhttp {\n  server { location / { proxy_pass http://kong:8000; }\n}\n")
    done = subprocess.run([nginx, "-t", "-q", "-c", str(bad), "-g", "error_log stderr;"], capture_output=True,
                          text=True, timeout=_BINARY_TIMEOUT_S, check=False)
    assert done.returncode != 0
    results = lb_results(bad)
    assert results["lb.parse"].status is Status.FAIL
    assert "nginx.conf:" in results["lb.parse"].detail


# ---------------------------------------------------------------- correct configs raise no failure


@pytest.mark.parametrize("name", ["nginx/good.conf", "haproxy/good.cfg", "caddy/good.Caddyfile",
                                  "caddy/named-matcher.Caddyfile", "caddy/direct-realtime.Caddyfile",
                                  "traefik/dynamic.good.yml", "alb/main.good.tf", "alb/tg-attributes.good.json",
                                  "alb/lb-attributes.good.json"])
def test_good_configs_pass_every_rule(name: str) -> None:
    results = lb_results(LB / name)
    assert set(results) == {"lb.parse", "lb.realtime_route", "lb.websocket_upgrade", "lb.idle_timeout",
                            "lb.buffering", "lb.health_check", "lb.sticky", "lb.tls"}
    assert not_passing(results) == {}, {k: results[k].summary for k in not_passing(results)}


def test_nginx_includes_are_followed() -> None:
    config = load_lb(str(LB / "nginx/good.conf"))
    assert str(LB / "nginx/conf.d/kong-upstream.conf") in config.files
    (route,) = config.realtime_routes()
    assert route.servers == ("10.0.1.10:8000", "10.0.2.10:8000")
    assert route.sticky is not None and route.sticky.method == "ip_hash"
    assert route.sticky.where == f"{LB / 'nginx/conf.d/kong-upstream.conf'}:3"


# ---------------------------------------------------------------- each defect by its id, remedy in the LB's syntax


CASES = [
    # file, the id that must catch it, its status, text the remedy must contain
    ("nginx/no-upgrade.conf", "lb.websocket_upgrade", Status.FAIL, "proxy_set_header Upgrade $http_upgrade;"),
    ("nginx/headers-dropped.conf", "lb.websocket_upgrade", Status.FAIL, "proxy_set_header Connection \"upgrade\";"),
    ("nginx/read-timeout-10s.conf", "lb.idle_timeout", Status.FAIL, "proxy_read_timeout 3600s;"),
    ("nginx/no-sticky.conf", "lb.sticky", Status.WARN, "add `ip_hash;` to `upstream kong_pool`"),
    ("nginx/strip-prefix.conf", "lb.realtime_route", Status.FAIL, "`proxy_pass http://supabase_kong;`"),
    ("nginx/buffering-on.conf", "lb.buffering", Status.FAIL, "remove `tcp_nodelay off;`"),
    ("nginx/direct-realtime.conf", "lb.realtime_route", Status.FAIL, "`proxy_pass http://10.0.1.10:4000/socket/;`"),
    ("haproxy/tunnel-10s.cfg", "lb.idle_timeout", Status.FAIL, "`timeout tunnel 1h` to backend kong"),
    ("haproxy/no-sticky.cfg", "lb.sticky", Status.WARN, "`balance source`"),
    ("haproxy/health-root.cfg", "lb.health_check", Status.FAIL, "http-check send meth GET uri /realtime/v1/api/ping"),
    ("caddy/read-timeout-10s.Caddyfile", "lb.idle_timeout", Status.FAIL, "remove `read_timeout`"),
    ("caddy/handle-path.Caddyfile", "lb.realtime_route", Status.FAIL, "`handle /realtime/v1/* {"),
    ("caddy/no-sticky.Caddyfile", "lb.sticky", Status.WARN, "`lb_policy ip_hash`"),
    ("caddy/plain-http.Caddyfile", "lb.tls", Status.WARN, "use the site's host name as its address"),
    ("traefik/dynamic.no-sticky.toml", "lb.sticky", Status.WARN, "sticky: {cookie:"),
    ("traefik/dynamic.no-sticky.toml", "lb.realtime_route", Status.FAIL, "no stripPrefix middleware"),
    ("traefik/compose-labels.yml", "lb.health_check", Status.FAIL, "healthCheck: {path: /realtime/v1/api/ping"),
    ("traefik/compose-labels.yml", "lb.sticky", Status.WARN, "traefik.http.services.supabase.loadbalancer.sticky"),
    ("alb/tg-attributes.sticky-disabled.json", "lb.sticky", Status.WARN, "stickiness.enabled=true"),
    ("alb/lb-attributes.idle-20.json", "lb.idle_timeout", Status.FAIL,
     "Key=idle_timeout.timeout_seconds,Value=3600"),
    ("alb/main.broken.tf", "lb.idle_timeout", Status.FAIL, "`idle_timeout = 3600` on aws_lb"),
    ("alb/main.broken.tf", "lb.sticky", Status.WARN, "stickiness { type = \"lb_cookie\""),
    ("alb/main.broken.tf", "lb.health_check", Status.FAIL, "Matcher HttpCode \"401\""),
    ("alb/cloudformation.yaml", "lb.websocket_upgrade", Status.FAIL, "ProtocolVersion to HTTP1"),
    ("alb/cloudformation.yaml", "lb.idle_timeout", Status.WARN, "idle_timeout.timeout_seconds"),
    ("alb/cloudformation.yaml", "lb.sticky", Status.WARN, "duration_seconds=86400"),
]


@pytest.mark.parametrize(("name", "cid", "status", "remedy"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_each_defect_is_caught_by_its_id(name: str, cid: str, status: Status, remedy: str) -> None:
    results = lb_results(LB / name)
    r = results[cid]
    assert r.status is status, (r.summary, r.detail)
    assert remedy in r.remedy, r.remedy
    # The remedy names where to change it: the fixture's own file (and a line when the format has lines).
    assert name.split("/")[-1] in r.remedy


def test_each_broken_fixture_fails_only_where_it_is_broken() -> None:
    """No collateral findings: a fixture's other rules pass (its defects are the ones in CASES)."""
    expected: dict[str, set[str]] = {}
    for name, cid, _, _ in CASES:
        expected.setdefault(name, set()).add(cid)
    for name, ids in expected.items():
        assert set(not_passing(lb_results(LB / name))) == ids, name


def test_timeouts_name_the_clients_and_their_heartbeats() -> None:
    r = lb_results(LB / "nginx/read-timeout-10s.conf")["lb.idle_timeout"]
    assert "realtime-js (supabase-js v2.112.2) every 25 s" in r.detail
    assert "realtime-py 2.7.0 every 25 s" in r.detail
    assert "read-timeout-10s.conf:21" in r.remedy  # the proxy_read_timeout line


def test_stickiness_result_says_it_does_not_share_broadcasts() -> None:
    r = lb_results(LB / "nginx/no-sticky.conf")["lb.sticky"]
    assert "does not do: make Realtime nodes share broadcasts or presence" in r.detail
    good = lb_results(LB / "nginx/good.conf")["lb.sticky"]
    assert "does not do: make Realtime nodes share broadcasts" in good.detail


def test_proxy_buffering_alone_is_not_a_websocket_defect(tmp_path: Path) -> None:
    """nginx relays upgraded connections as a tunnel: proxy_buffering on is reported, not failed."""
    text = (LB / "nginx/buffering-on.conf").read_text().replace("    tcp_nodelay off;\n", "")
    conf = LB / "nginx" / "buffering-on.conf"
    copy = tmp_path / "nginx.conf"
    copy.write_text(text.replace("include conf.d/", f"include {conf.parent}/conf.d/").replace(
        "../certs/", f"{LB}/certs/"))
    r = lb_results(copy)["lb.buffering"]
    assert r.status is Status.PASS
    assert "proxy_buffering on" in r.detail and "after the 101 nginx relays" in r.detail


# ---------------------------------------------------------------- kinds, CLI and parsing


@pytest.mark.parametrize(("name", "kind"), [("nginx/good.conf", "nginx"), ("haproxy/no-sticky.cfg", "haproxy"),
                                           ("caddy/good.Caddyfile", "caddy"), ("traefik/dynamic.no-sticky.toml",
                                                                               "traefik"),
                                           ("traefik/compose-labels.yml", "traefik"), ("alb/main.good.tf", "alb"),
                                           ("alb/cloudformation.yaml", "alb"), ("alb/tg-attributes.good.json", "alb")])
def test_kind_is_recognised_from_the_content(name: str, kind: str) -> None:
    assert load_lb(str(LB / name)).kind == kind


def test_kind_prefix_and_unknown_kind(tmp_path: Path) -> None:
    odd = tmp_path / "front.txt"
    odd.write_text((LB / "haproxy/good.cfg").read_text())
    assert load_lb(f"haproxy:{odd}").kind == "haproxy"
    with pytest.raises(InputError, match="unknown kind 'envoy'"):
        load_lb(f"envoy:{odd}")
    blank = tmp_path / "blank.conf"
    blank.write_text("# nothing here\n")
    with pytest.raises(InputError, match=r"name the kind, e\.g\. --lb nginx:"):
        load_lb(str(blank))


@pytest.mark.parametrize("name", sorted(p.name for p in (LB / "caddy").glob("*.Caddyfile")))
def test_caddy_evidence_names_the_parser_used(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    require(which("caddy") is not None, "caddy is not installed")
    real = load_lb(str(LB / "caddy" / name))
    assert real.parser.startswith("caddy adapt (caddy ")
    monkeypatch.setattr("rtbook.config.lb.caddy.shutil.which", lambda name: None)
    fallback = load_lb(str(LB / "caddy" / name))
    assert fallback.parser.startswith("rtbook minimal Caddyfile reader")

    def seen(config: LbConfig) -> list[Any]:
        return [(r.paths, r.servers, r.forwarded("/realtime/v1/websocket"), r.sticky and r.sticky.method,
                 r.health and r.health.path, [(t.name, t.seconds) for t in r.timeouts], r.tls_listener)
                for r in config.realtime_routes()]

    # The fallback reads the same routes, for Realtime, that Caddy's own adapter gives.
    assert seen(fallback) == seen(real)
    results = run_checks(Target(lb=(str(LB / "caddy/read-timeout-10s.Caddyfile"),)), only="lb.idle_timeout")
    assert [r.status for r in results] == [Status.FAIL]


def test_cli_check_lb_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    from rtbook.cli import main

    assert main(["check", "--lb", str(LB / "nginx/good.conf"), "--only", "lb."]) == 0
    assert main(["check", "--lb", str(LB / "nginx/good.conf"), "--lb", f"haproxy:{LB / 'haproxy/tunnel-10s.cfg'}",
                 "--only", "lb."]) == 1
    out = capsys.readouterr().out
    assert "[FAIL] lb.idle_timeout" in out and "tunnel-10s.cfg" in out


def test_durations() -> None:
    assert parse_duration("1m30s") == 90.0
    assert parse_duration("3600") == 3600.0
    assert parse_duration("50000", "ms") == 50.0
    assert parse_duration("1h") == 3600.0
    assert parse_duration("soon") is None


def test_cli_bad_lb_argument_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rtbook.cli import main

    missing = tmp_path / "nope.conf"
    assert main(["check", "--lb", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(missing) in err and "is not a file" in err
    assert main(["check", "--lb", f"envoy:{LB / 'nginx/good.conf'}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown kind 'envoy'" in err and "nginx, haproxy, caddy, traefik, alb" in err


def test_secrets_in_lb_configs_never_reach_outputs(tmp_path: Path) -> None:
    """A real anon key in a health-check header stays out of every result (rtbook reports header names only)."""
    canary = "eyJhbGciOiJIUzI1NiJ9.canary-4f1c9e.sig"
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text((LB / "haproxy/good.cfg").read_text().replace(
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.anon-demo", canary).replace("../certs/", f"{LB}/certs/"))
    assert canary in cfg.read_text()
    report = run_checks(Target(lb=(str(cfg),)), only="lb.")
    assert canary not in report.to_json()
    assert "apikey" in report.to_json()  # the header's name is evidence; its value is not


def test_only_the_read_side_timeouts_count(tmp_path: Path) -> None:
    """nginx proxy_send_timeout and Caddy write_timeout bound a blocked write, not a quiet socket: not judged."""
    conf = tmp_path / "nginx.conf"
    conf.write_text((LB / "nginx/good.conf").read_text().replace("proxy_send_timeout 3600s;", "proxy_send_timeout 5s;")
                    .replace("include conf.d/", f"include {LB}/nginx/conf.d/").replace("../certs/", f"{LB}/certs/"))
    assert "proxy_send_timeout 5s;" in conf.read_text()
    assert lb_results(conf)["lb.idle_timeout"].status is Status.PASS
    caddyfile = tmp_path / "Caddyfile"
    caddyfile.write_text((LB / "caddy/read-timeout-10s.Caddyfile").read_text().replace("read_timeout", "write_timeout")
                         .replace("../certs/", f"{LB}/certs/"))
    assert lb_results(caddyfile)["lb.idle_timeout"].status is Status.PASS


def test_cloudformation_json_reads_like_the_yaml(tmp_path: Path) -> None:
    """The same template as JSON (what `aws cloudformation get-template` prints) gives the same findings."""
    import yaml

    class _Tags(yaml.SafeLoader):
        pass

    _Tags.add_multi_constructor("!", lambda loader, suffix, node: {suffix: loader.construct_scalar(node)})
    data = yaml.load((LB / "alb/cloudformation.yaml").read_text(), Loader=_Tags)
    as_json = tmp_path / "template.json"
    as_json.write_text(json.dumps(data, indent=2))
    from_yaml = {k: r.status for k, r in lb_results(LB / "alb/cloudformation.yaml").items()}
    from_json = {k: r.status for k, r in lb_results(as_json).items()}
    assert from_json == from_yaml
    assert from_json["lb.websocket_upgrade"] is Status.FAIL
