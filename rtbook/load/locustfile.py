"""rtbook's load scenarios under Locust's distributed mode (master and workers).

Run the master and the workers with this file (``rtbook load --locustfile`` prints its path)::

    RTBOOK_LOAD_SCENARIO=scenario.json RTBOOK_LOAD_URL=http://127.0.0.1:8000/realtime/v1 ANON_KEY=... \\
    RTBOOK_LOAD_OUTPUT=result.json locust -f "$(rtbook load --locustfile)" --headless --master \\
        --expect-workers 2 -u <topics> -r <topics>
    RTBOOK_LOAD_URL=... ANON_KEY=... locust -f "$(rtbook load --locustfile)" --worker --master-host <master>

Each Locust user drives one topic of the scenario (its senders and receivers) in a generator
process of its own (:mod:`rtbook.load.share`), so ``-u`` is the number of topics. Workers send
each finished share (raw HDR histograms and delivery counts) to the master with their regular
reports; the master merges them exactly (:func:`rtbook.load.runner.merge`), writes the result to
``RTBOOK_LOAD_OUTPUT`` and stops the test once every topic has reported. ``RTBOOK_LOAD_PARTS``
(a directory, optional) makes each worker also write the shares it ran, for checking the merge.
Configuration comes from the environment, never from arguments: the key must not reach a
process listing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from locust import User, events, task
from locust.exception import StopUser

from rtbook.load.generator import Endpoint, ProcessResult, hard_bound_s
from rtbook.load.runner import merge
from rtbook.load.scenario import Scenario
from rtbook.load.share import request

_FINISHED: list[dict[str, Any]] = []  # worker: shares not yet sent to the master
_MERGED: list[ProcessResult] = []  # master: shares received


def _scenario() -> Scenario:
    path = os.environ.get("RTBOOK_LOAD_SCENARIO")
    data = json.loads(Path(path).read_text(encoding="utf-8")) if path else {}
    return Scenario(**data)


def _endpoint() -> Endpoint:
    base = os.environ.get("RTBOOK_LOAD_URL", "")
    key = os.environ.get("ANON_KEY", "")
    if not base or not key:
        raise RuntimeError("set RTBOOK_LOAD_URL (the gateway's /realtime/v1 URL) and ANON_KEY in the environment")
    host = os.environ.get("RTBOOK_LOAD_HOST") or None
    return Endpoint(base, host, base + (f" (Host {host})" if host else ""), apikey=key, token=key)


class RealtimeTopicUser(User):
    """One topic of the scenario: its senders and receivers, run to the scenario's end, once."""

    @task
    def run_topic(self) -> None:
        scenario = _scenario()
        one = replace(scenario, topics=1, rate=max(scenario.rate / scenario.topics, 0.1), processes=1)
        runner = self.environment.runner
        worker = getattr(runner, "client_id", "local")
        prefix = f"{worker}-{id(self)}"
        step = float(os.environ.get("RTBOOK_LOAD_STEP_TIMEOUT", "10"))
        proc = subprocess.run(
            [sys.executable, "-m", "rtbook.load.share"], input=request(one, _endpoint(), prefix, step),
            capture_output=True, text=True, timeout=hard_bound_s(one, step) + 30, check=False,
        )
        if proc.returncode != 0:
            raise StopUser()
        part = json.loads(proc.stdout)
        parts_dir = os.environ.get("RTBOOK_LOAD_PARTS")
        if parts_dir:
            Path(parts_dir, f"{prefix}.json").write_text(json.dumps(part), encoding="utf-8")
        _FINISHED.append(part)
        raise StopUser()


def _send_parts(client_id: str, data: dict[str, Any], **_: Any) -> None:
    """Worker: attach the shares finished since the last report."""
    if _FINISHED:
        data["rtbook_parts"] = list(_FINISHED)
        _FINISHED.clear()


def _receive_parts(client_id: str, data: dict[str, Any], **_: Any) -> None:
    """Master: collect shares; once every topic has reported, write the merged result and stop."""
    _MERGED.extend(ProcessResult.from_dict(part) for part in data.get("rtbook_parts", ()))
    scenario = _scenario()
    if len(_MERGED) >= scenario.topics and not _STATE.get("written"):
        _STATE["written"] = True
        _write_result(scenario)
        env = _STATE.get("environment")
        if env is not None and env.runner is not None:
            env.runner.quit()


def _remember(environment: Any, **_: Any) -> None:
    _STATE["environment"] = environment


_STATE: dict[str, Any] = {}
# Locust's EventHook.add_listener carries no annotations.
events.report_to_master.add_listener(_send_parts)  # type: ignore[no-untyped-call]
events.worker_report.add_listener(_receive_parts)  # type: ignore[no-untyped-call]
events.init.add_listener(_remember)  # type: ignore[no-untyped-call]


def _write_result(scenario: Scenario) -> None:
    out = os.environ.get("RTBOOK_LOAD_OUTPUT")
    if not out:
        return
    result = merge(scenario, os.environ.get("RTBOOK_LOAD_URL", ""), _MERGED)
    Path(out).write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    result.histograms.write_log(Path(out).with_suffix(".hlog"))
