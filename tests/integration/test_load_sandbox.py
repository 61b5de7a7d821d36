"""rtbook load against the real sandbox: counts that add up, an exact merge over processes, the limit named."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rtbook.exceptions import ConfigError
from rtbook.load.runner import run_load
from rtbook.load.scenario import Mix, Scenario
from rtbook.load.thresholds import parse_threshold
from tests.conftest import ROOT
from tests.integration.sandbox_support import Running, start

pytestmark = [pytest.mark.sandbox, pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def box() -> Iterator[Running]:
    with start() as running:  # with the probe table, as after 'rtbook probe install --yes'
        yield running


def test_broadcast_counts_add_up_and_percentiles_are_recorded(box: Running) -> None:
    sc = Scenario(kind="broadcast", senders=2, receivers=3, topics=1, rate=40.0, duration_s=2.0)
    result = run_load(box.target(), sc, [parse_threshold("lost==0"), parse_threshold("broadcast.p99<2000ms")])
    c = result.counts
    assert c.sent == 80  # rate x duration, exactly
    assert c.expected == c.sent * 4 == c.delivered + c.lost  # 3 receivers and the other sender
    assert c.lost == 0 and c.duplicated == 0 and c.unexpected == 0
    p = result.histograms.percentiles("broadcast")
    assert p is not None and p.count == c.delivered and 0 < p.p50_ms <= p.p99_ms <= p.max_ms
    assert result.opened == result.joined == 5 and not result.errors
    assert not result.failed
    assert sum(result.sent_per_s) == c.sent and sum(result.delivered_per_s) == c.delivered


def test_processes_merge_exactly(box: Running) -> None:
    sc = Scenario(kind="broadcast", senders=1, receivers=2, topics=2, rate=20.0, duration_s=2.0, processes=2, ack=True)
    result = run_load(box.target(), sc)
    assert result.processes == 2
    assert result.counts.sent == 40 and result.counts.expected == 80 == result.counts.delivered + result.counts.lost
    assert result.counts.lost == 0
    ack = result.histograms.percentiles("broadcast_ack")
    assert ack is not None and ack.count == 40


def test_presence_diffs_reach_every_member_the_tracker_too(box: Running) -> None:
    sc = Scenario(kind="presence", senders=2, receivers=2, rate=4.0, duration_s=2.0)
    result = run_load(box.target(), sc)
    c = result.counts
    assert c.sent == 8 and c.expected == 8 * 4 == c.delivered and c.lost == 0 and c.unexpected == 0
    p = result.histograms.percentiles("presence")
    assert p is not None and p.count == c.delivered


def test_postgres_changes_rows_reach_every_subscriber_and_are_removed_after(box: Running) -> None:
    before = box.sql("SELECT count(*) FROM rtbook_probe.events")[0][0]
    todos = box.sql("SELECT count(*), max(xmin::text) FROM public.todos")
    sc = Scenario(kind="postgres_changes", receivers=2, topics=2, rate=10.0, duration_s=2.0)
    result = run_load(box.target(), sc)
    c = result.counts
    assert c.sent == 20 and c.expected == 20 * 4 == c.delivered + c.lost
    assert c.lost == 0, result.text()
    p = result.histograms.percentiles("postgres_changes")
    assert p is not None and p.count == c.delivered
    assert box.sql("SELECT count(*) FROM rtbook_probe.events")[0][0] == before
    # Nothing but the probe table was written: the demo table is untouched.
    assert box.sql("SELECT count(*), max(xmin::text) FROM public.todos") == todos


def test_a_mix_runs_its_parts_at_once_and_merges_them(box: Running) -> None:
    mix = Mix.from_mapping({"duration_s": 2, "rate": 20, "parts": [
        {"kind": "broadcast", "weight": 1, "receivers": 2}, {"kind": "presence", "weight": 1, "senders": 1,
                                                              "receivers": 1}, {"kind": "connect", "connections": 5},
    ]}, "mix")
    result = run_load(box.target(), mix)
    assert result.processes == 3 and result.label == "mixed (broadcast, presence, connect)"
    c = result.counts
    assert c.sent == 20 + 20 and c.expected == 20 * 2 + 20 * 2 == c.delivered + c.lost and c.lost == 0
    assert result.histograms.count("broadcast") == 40 and result.histograms.count("presence") == 40
    assert result.held == 5 and result.opened == 3 + 2 + 5


def test_the_cli_writes_a_record_without_secrets_and_exits_by_thresholds(box: Running, tmp_path: Path) -> None:
    env = {"RTBOOK_HOME": str(box.home), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    base = [sys.executable, "-m", "rtbook", "load", "--target", "sandbox", "--rate", "10", "--duration", "1",
            "--receivers", "2"]
    ok = subprocess.run([*base, "--threshold", "lost==0", "--output", str(tmp_path / "rec")], env=env, text=True,
                        capture_output=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    data = json.loads((tmp_path / "rec" / "load.json").read_text())
    assert data["counts"]["sent"] == 10 and data["counts"]["lost"] == 0
    hlog = (tmp_path / "rec" / "latency.hlog").read_text()
    assert hlog.count("Tag=broadcast-interval,") >= 1 and "Tag=connect," in hlog and "Tag=join," in hlog
    assert data["over_time"]["broadcast"] and data["per_second"]["expected"][0] > 0
    for name in ("latency_over_time", "throughput", "sockets", "losses_and_errors"):
        assert (tmp_path / "rec" / f"load_{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = subprocess.run([*base, "--threshold", "broadcast.p50<0.001ms", "--format", "json"], env=env, text=True,
                         capture_output=True, timeout=120)
    assert bad.returncode == 1, bad.stderr
    assert json.loads(bad.stdout)["thresholds"][0]["ok"] is False
    texts = [p.read_text() for p in (tmp_path / "rec").glob("*.[jt]*")]  # load.json, load.txt
    written = "".join(texts) + hlog + ok.stdout + ok.stderr + bad.stdout
    for secret in box.secrets():
        assert secret not in written


def test_the_tenant_events_limit_shuts_the_receivers_at_a_tick_and_is_named(tmp_path: Path) -> None:
    # A sandbox of its own: the tenant's events counter must hold nothing but this run.
    with start(probe=False) as box:
        box.sql("UPDATE _realtime.tenants SET max_events_per_second = 2 WHERE external_id = 'realtime-dev'")
        time.sleep(1.5)  # the stand-in's tenant cache (1 s), as Realtime's own cache would also expire
        # Realtime v2.129.8 counts each send and each delivery (1 sender, 2 receivers at 50/s: 150 events/s)
        # and judges the average at 5 s ticks: the first tick trips the limit, and each receiving channel is
        # shut at its next delivery. Sending goes on to the end (the sender is not shut by its sends).
        sc = Scenario(kind="broadcast", senders=1, receivers=2, rate=50.0, duration_s=7.0)
        result = run_load(box.target(), sc)
        # Without the probe table, postgres_changes refuses to write anything.
        with pytest.raises(ConfigError, match="probe install"):
            run_load(box.target(), Scenario(kind="postgres_changes", duration_s=1.0))
        log = Path(box.state.logs["realtime"]).read_text()
    c = result.counts
    assert c.sent == 350
    assert result.errors.get("system: Too many messages per second") == 2, result.errors
    assert log.count("MessagePerSecondRateLimitReached") == 1  # logged once per trip
    # Receivers got everything before the trip; after it they were no longer members and owed nothing.
    assert 2 * 150 <= c.delivered < 2 * 350 and c.expected == c.delivered + c.lost
    assert c.lost <= 4  # at most what was in flight while each receiver's shutdown travelled to it
    assert [h["limit"] for h in result.limits_hit] == ["max_events_per_second"]
    assert "now 2" in result.limits_hit[0]["why"]
    assert "--limit max_events_per_second=4" in result.limits_hit[0]["remedy"]


@pytest.mark.notebooks
def test_notebook_07_runs_headless_and_its_record_holds_figures_and_histograms(box: Running, tmp_path: Path) -> None:
    env = {"RTBOOK_HOME": str(box.home), "PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)}
    base = [sys.executable, "-m", "rtbook", "run", "--target", "sandbox", "--no-sandbox-start", "--notebooks", "07",
            "--output-dir", str(tmp_path / "out"), "-p", "load_duration_s=2"]
    ok = subprocess.run(base, env=env, text=True, capture_output=True, timeout=300, cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    record = next(p for p in (tmp_path / "out").iterdir() if p.is_dir())
    folder = record / "07_load"
    data = json.loads((folder / "load.json").read_text())
    assert data["counts"]["sent"] == 40 and data["counts"]["lost"] == 0
    assert "Tag=broadcast," in (folder / "latency.hlog").read_text()
    for name in ("latency_over_time", "throughput", "sockets", "losses_and_errors"):
        assert (folder / f"load_{name}.png").read_bytes()[:4] == b"\x89PNG"
    verify = subprocess.run([sys.executable, "-m", "rtbook", "verify", str(record)], env=env, text=True,
                            capture_output=True, timeout=60)
    assert verify.returncode == 0, verify.stdout
    texts = "".join(p.read_text(errors="replace") for p in record.rglob("*") if p.suffix in (".json", ".ipynb", ".md"))
    for secret in box.secrets():
        assert secret not in texts
    # A violated threshold fails the notebook's gate and the run.
    bad = subprocess.run([*base, "-p", "load_thresholds=broadcast.p50<0.001ms"], env=env, text=True,
                         capture_output=True, timeout=300, cwd=tmp_path)
    assert bad.returncode == 1, bad.stdout + bad.stderr
