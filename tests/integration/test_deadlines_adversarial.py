"""Deadlines hold against misbehaving endpoints on 127.0.0.1 (HTTP, WebSocket and the PostgreSQL port).

Each server (tests/adversarial_servers.py) is a real listener: a black hole that accepts and never
answers, one that answers with garbage, one that drips one byte a second, a WebSocket that
upgrades and then stays silent, a PostgreSQL that logs in and then never answers. The checks run
as the registry runs them; every one must end by its documented deadline (README "Deadlines":
LOCAL_S + steps x --timeout + grace) with a ``fail`` that names the endpoint, and ``rtbook check
--live`` must end by the command's deadline (the sum) with exit code 1.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from rtbook.clients.http import http_request
from rtbook.clients.phoenix import PhoenixClient, PhoenixError
from rtbook.registry import WATCHDOG_S, check_deadline, command_deadline, get_check, run_one
from rtbook.results import CheckResult, Status
from rtbook.target import Target
from tests import adversarial_servers as adv

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 2.0
# Scheduling slack on a loaded machine, on top of the documented deadline and the watchdog's grace.
SLACK_S = 3.0
ANON = "anon-canary-4f1d2c"
SECRET = "jwt-canary-" + "s" * 40
PASSWORD = "pw-canary-9b7e"
ENV = {"POSTGRES_PASSWORD": PASSWORD, "ANON_KEY": ANON, "JWT_SECRET": SECRET}

Factory = Callable[[], contextlib.AbstractContextManager[adv.Server]]

WEB: dict[str, Factory] = {
    "black_hole": adv.black_hole,
    "garbage": adv.garbage,
    "drip": adv.drip,
    "silent_websocket": adv.silent_websocket,
}
PG: dict[str, Factory] = {
    "black_hole": adv.black_hole,
    "garbage": adv.garbage,
    "drip": lambda: adv.drip(adv.PG_DRIP),
    "stall": adv.pg_stall,
}

pytestmark = pytest.mark.timeout(300)


def _target(**urls: str) -> Target:
    return Target(name="adversary", timeout=TIMEOUT, docker=False, env=ENV, **urls)  # type: ignore[arg-type]


def _text(r: CheckResult) -> str:
    return " ".join((r.summary, r.detail, json.dumps(r.evidence, default=str)))


def _run_bounded(check_id: str, target: Target, server: adv.Server) -> CheckResult:
    spec = get_check(check_id)
    limit = check_deadline(spec, target)
    started = time.monotonic()
    [result] = run_one(spec, target)
    took = time.monotonic() - started
    assert took <= limit + WATCHDOG_S + SLACK_S, (check_id, took, limit)
    assert server.accepted >= 1, "the check never reached the misbehaving server"
    assert result.status is Status.FAIL, (check_id, result.status, result.summary)
    assert f"127.0.0.1:{server.port}" in _text(result), (check_id, result.summary)
    for canary in (ANON, SECRET, PASSWORD):
        assert canary not in _text(result)
    return result


# ------------------------------------------------------------------ HTTP


@pytest.mark.parametrize("kind", sorted(WEB))
def test_one_http_request_ends_within_twice_its_timeout(kind: str) -> None:
    with WEB[kind]() as server:
        started = time.monotonic()
        answer = http_request("GET", server.url() + "/realtime/v1/api/ping", timeout=TIMEOUT)
        took = time.monotonic() - started
    assert took <= 2 * TIMEOUT + SLACK_S, took
    assert answer.status is None or answer.status == 101, answer
    assert answer.error_kind or answer.status == 101


def test_a_dripping_http_server_is_cut_off_and_named() -> None:
    with adv.drip(interval=0.2) as server:
        answer = http_request("GET", server.url() + "/x", timeout=1.0)
    # Each byte arrives well within the 1 s read timeout: only the request's own limit ends it.
    assert answer.error_kind == "timeout"
    assert f"http://127.0.0.1:{server.port}" in answer.error and "GET /x" in answer.error


@pytest.mark.parametrize("kind", sorted(WEB))
@pytest.mark.parametrize("check_id", ["gateway.rest", "gateway.cors"])
def test_gateway_checks_fail_within_their_deadline(kind: str, check_id: str) -> None:
    with WEB[kind]() as server:
        _run_bounded(check_id, _target(api_url=server.url()), server)


# ------------------------------------------------------------------ WebSocket


@pytest.mark.parametrize("kind", sorted(WEB))
def test_a_websocket_upgrade_ends_within_its_timeout(kind: str) -> None:
    with WEB[kind]() as server:
        started = time.monotonic()
        with contextlib.suppress(PhoenixError):
            client = PhoenixClient.connect(server.url() + "/socket", ANON, timeout=TIMEOUT)
            try:
                client.join("realtime:x", {}, timeout=TIMEOUT)
            finally:
                client.close()
        took = time.monotonic() - started
    # The silent server upgrades at once and the join waits its own timeout; the others fail the upgrade.
    assert took <= 2 * TIMEOUT + SLACK_S, took


@pytest.mark.parametrize("kind", sorted(WEB))
@pytest.mark.parametrize("check_id", ["realtime.join", "realtime.bad_token", "gateway.websocket"])
def test_websocket_checks_fail_within_their_deadline(kind: str, check_id: str) -> None:
    with WEB[kind]() as server:
        urls = {"api_url": server.url()} if check_id.startswith("gateway.") else {"realtime_url": server.url()}
        _run_bounded(check_id, _target(**urls), server)


def test_a_silent_websocket_no_longer_costs_bad_token_three_timeouts() -> None:
    # Before deadlines: the upgrade, then a join wait per case, then a handshake per case (3x the timeout).
    with adv.silent_websocket() as server:
        target = _target(realtime_url=server.url())
        started = time.monotonic()
        result = _run_bounded("realtime.bad_token", target, server)
        took = time.monotonic() - started
    assert "phx_join" in result.summary
    assert took < 3 * (TIMEOUT + 5.0)  # one join wait (timeout + Realtime's 5 s hold) ends it


# ------------------------------------------------------------------ PostgreSQL


@pytest.mark.parametrize("kind", sorted(PG))
def test_database_checks_fail_within_their_deadline(kind: str) -> None:
    with PG[kind]() as server:
        target = _target(db_url=f"postgresql://postgres@127.0.0.1:{server.port}/postgres")
        _run_bounded("db.connect", target, server)
        # The run's next database check does not wait the same deadline out again.
        started = time.monotonic()
        [again] = run_one(get_check("tenant.row"), target)
        assert again.status is Status.FAIL
        assert time.monotonic() - started < TIMEOUT + SLACK_S


def test_a_stalled_database_is_cut_off_by_the_deadline_and_named() -> None:
    with adv.pg_stall() as server:
        target = _target(db_url=f"postgresql://postgres@127.0.0.1:{server.port}/postgres")
        result = _run_bounded("db.connect", target, server)
    # The login succeeds; only the deadline's abort ends the first statement.
    assert "deadline of db.connect" in result.detail, result.detail


# ------------------------------------------------------------------ the command


LIVE_CHECKS = ("gateway.rest", "gateway.websocket", "realtime.health", "realtime.join", "realtime.bad_token",
               "db.connect", "tenant.row")


@pytest.mark.slow
@pytest.mark.parametrize(("web_kind", "pg_kind"), [("drip", "drip"), ("black_hole", "black_hole"),
                                                  ("silent_websocket", "stall"), ("garbage", "garbage")])
def test_rtbook_check_live_ends_by_the_command_deadline(web_kind: str, pg_kind: str, tmp_path: Path) -> None:
    with WEB[web_kind]() as gateway, WEB[web_kind]() as realtime, PG[pg_kind]() as db:
        args = ["--live", "--timeout", str(TIMEOUT), "--api-url", gateway.url(), "--realtime-url", realtime.url(),
                "--db-url", f"postgresql://postgres@127.0.0.1:{db.port}/postgres", "--format", "json"]
        for check_id in LIVE_CHECKS:
            args += ["--only", check_id]
        target = _target(api_url=gateway.url(), realtime_url=realtime.url(),
                         db_url=f"postgresql://postgres@127.0.0.1:{db.port}/postgres")
        limit = command_deadline([get_check(c) for c in LIVE_CHECKS], target) + WATCHDOG_S
        env = {**os.environ, **ENV, "PYTHONPATH": str(ROOT), "RTBOOK_HOME": str(tmp_path)}
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "rtbook", "check", *args], capture_output=True, text=True,
                              env=env, timeout=limit + 60, cwd=tmp_path)
        took = time.monotonic() - started
    # Interpreter start and imports on a loaded machine come on top of the checks' deadline.
    assert took <= limit + 20, (took, limit)
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    results = {r["id"]: r for r in report["results"]}
    assert set(results) == set(LIVE_CHECKS)
    ports = {"gateway.": gateway.port, "realtime.": realtime.port, "db.": db.port, "tenant.": db.port}
    for check_id, r in results.items():
        assert r["status"] == "fail", (check_id, r["status"], r["summary"])
        port = next(p for prefix, p in ports.items() if check_id.startswith(prefix))
        if check_id in ("realtime.join", "realtime.bad_token"):
            port = gateway.port  # the sockets go through the gateway when there is one
        assert f"127.0.0.1:{port}" in json.dumps(r), (check_id, r["summary"])
    for canary in (ANON, SECRET, PASSWORD):
        assert canary not in proc.stdout and canary not in proc.stderr


@pytest.mark.parametrize("check_id", ["gateway.rest", "realtime.join"])
def test_check_functions_called_directly_still_end(check_id: str) -> None:
    # Without the registry (no check deadline), each request and upgrade still has its own limit.
    with adv.drip() as server:
        target = _target(api_url=server.url())
        spec = get_check(check_id)
        started = time.monotonic()
        if spec.using is None:
            produced = spec.func(target, check_id)
        else:
            context = spec.using(target, check_id)
            produced = context if isinstance(context, CheckResult) else spec.func(target, check_id, context)
        took = time.monotonic() - started
    [result] = [produced] if isinstance(produced, CheckResult) else list(produced)
    assert result.status is Status.FAIL, result.summary
    assert f"127.0.0.1:{server.port}" in _text(result)
    assert took <= check_deadline(spec, target), took
