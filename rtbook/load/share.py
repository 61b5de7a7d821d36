"""Run one share of a load scenario in this process: JSON in on stdin, the process result out on stdout.

The Locust user (:mod:`rtbook.load.locustfile`) starts one of these per topic share: Locust's
workers run on gevent, the generator on asyncio, and a process of its own keeps the two apart
(and gives the share a core of its own). stdin, not argv, carries the key, so it never shows in
a process listing.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import Any

from rtbook.load.generator import Endpoint, run_share
from rtbook.load.scenario import Scenario

__all__ = ["request", "serve"]

MAX_REQUEST_BYTES = 64 * 1024


def request(scenario: Scenario, endpoint: Endpoint, prefix: str, step_timeout: float) -> str:
    """The stdin document for one share."""
    return json.dumps({
        "scenario": asdict(scenario),
        "endpoint": {"base": endpoint.base, "host_header": endpoint.host_header, "label": endpoint.label,
                     "apikey": endpoint.apikey, "token": endpoint.token},
        "prefix": prefix,
        "step_timeout": step_timeout,
    })


def serve(text: str) -> dict[str, Any]:
    """Run the share ``text`` describes and return its result."""
    doc = json.loads(text)
    scenario = Scenario(**doc["scenario"])
    endpoint = Endpoint(**doc["endpoint"])
    return run_share(scenario, endpoint, str(doc["prefix"]), float(doc["step_timeout"]))


if __name__ == "__main__":
    data = sys.stdin.read(MAX_REQUEST_BYTES + 1)
    if len(data) > MAX_REQUEST_BYTES:
        sys.stderr.write("rtbook.load.share: request larger than 64 KiB\n")
        sys.exit(2)
    sys.stdout.write(json.dumps(serve(data)) + "\n")
