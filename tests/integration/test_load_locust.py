"""rtbook's scenarios under real Locust in distributed mode: a master and two workers on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rtbook.load.generator import ProcessResult
from rtbook.load.histograms import Histograms
from rtbook.load.ledger import DeliveryCounts
from tests.conftest import ROOT, require
from tests.integration.sandbox_support import Running, start

pytestmark = [pytest.mark.sandbox, pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def box() -> Iterator[Running]:
    with start(probe=False) as running:
        yield running


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_master_and_two_workers_merge_exactly(box: Running, tmp_path: Path) -> None:
    locust = shutil.which("locust")
    require(locust is not None, "locust is not installed (pip install -e .[dev])")
    assert locust is not None
    scenario = {"kind": "broadcast", "topics": 2, "senders": 1, "receivers": 2, "rate": 20, "duration_s": 2}
    (tmp_path / "sc.json").write_text(json.dumps(scenario))
    (tmp_path / "parts").mkdir()
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "RTBOOK_LOAD_SCENARIO": str(tmp_path / "sc.json"),
        "RTBOOK_LOAD_URL": f"{box.state.gateway_url}/realtime/v1",
        "ANON_KEY": box.env()["ANON_KEY"],
        "RTBOOK_LOAD_PARTS": str(tmp_path / "parts"),
        "RTBOOK_LOAD_OUTPUT": str(tmp_path / "result.json"),
    }
    path = subprocess.run([sys.executable, "-m", "rtbook", "load", "--locustfile"], env=env, text=True,
                          capture_output=True, timeout=60, check=True).stdout.strip()
    master = subprocess.Popen(
        [locust, "-f", path, "--headless", "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port",
         str(port), "--expect-workers", "2", "-u", "2", "-r", "2", "-t", "90"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    workers = [
        subprocess.Popen([locust, "-f", path, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        for _ in range(2)
    ]
    try:
        out, _ = master.communicate(timeout=150)
        for w in workers:
            w.wait(timeout=30)
    finally:
        for p in (master, *workers):
            if p.poll() is None:
                os.killpg(p.pid, 9)
                p.wait(timeout=10)
    assert (tmp_path / "result.json").exists(), out[-2000:]
    result = json.loads((tmp_path / "result.json").read_text())
    parts = [ProcessResult.from_dict(json.loads(p.read_text())) for p in sorted((tmp_path / "parts").iterdir())]
    assert len(parts) == 2
    # Each worker ran one topic; the master's totals are exactly their sum.
    total = sum((p.counts for p in parts), DeliveryCounts())
    assert result["counts"] == total.to_dict()
    assert total.sent == 40 and total.expected == 80 and total.lost == 0
    # ...and its percentiles those of the merge of their raw histograms.
    merged = Histograms.merged(Histograms.decode(p.histograms) for p in parts)
    p = merged.percentiles("broadcast")
    assert p is not None and result["latency_ms"]["broadcast"] == p.to_dict()
    assert Histograms.read_log(tmp_path / "result.hlog").percentiles("broadcast") == p
    assert box.env()["ANON_KEY"] not in (tmp_path / "result.json").read_text() + out
