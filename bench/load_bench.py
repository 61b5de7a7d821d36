"""Which side limits a load run: rtbook's generator, a usual Locust user, a bare asyncio client, the sandbox.

Starts its own sandbox (temporary ``RTBOOK_HOME``) with the tenant's limits raised, then in one run,
side by side against the same broadcast scenario (one sender, R receivers, one topic, a fixed rate):

* ``rtbook load`` (open model, HDR histograms, per-message accounting);
* a Locust WebSocket user written the usual way (bench/load/locust_usual.py: websocket-client on gevent);
* a bare asyncio client (bench/load/bare_asyncio.py: aiohttp, counting arrivals only).

For each it prints deliveries per second, the client's CPU seconds during the run and deliveries
per client CPU-second (messages per second per core), and the sandbox's CPU over the same run.
Then the client CPU per 1,000 held connections (rtbook vs bare), and the sandbox's ceiling: rtbook
load at rising rates until fewer than 99 % of deliveries arrive or p99 passes 1 s, with the
client's and the server's share of a core at each step, so a reader sees which side limits.

    python bench/load_bench.py [--rate 400] [--receivers 10] [--duration 6] [--connections 300]

Not a test: the numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rtbook.sandbox.manager import Sandbox, SandboxState  # noqa: E402
from rtbook.sandbox.stackdir import read_env  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def proc_cpu(pids: list[int]) -> float:
    """CPU seconds used so far by these processes (utime + stime from /proc)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def measured(cmd: list[str], env: dict[str, str], server: list[int],
             timeout: float) -> tuple[dict[str, Any], float, float]:
    """Run one generator; its JSON result, the wall time and the server's CPU seconds meanwhile."""
    s0, t0 = proc_cpu(server), time.monotonic()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    wall, server_cpu = time.monotonic() - t0, proc_cpu(server) - s0
    if out.returncode not in (0, 1):
        raise SystemExit(f"{cmd[2:4]} failed ({out.returncode}): {out.stderr[-800:]}")
    text = out.stdout.strip()
    return (json.loads(text) if text.startswith("{") else {}), wall, server_cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=400.0, help="broadcasts per second (default 400)")
    parser.add_argument("--receivers", type=int, default=10, help="receivers on the topic (default 10)")
    parser.add_argument("--duration", type=float, default=6.0, help="seconds of sending per generator (default 6)")
    parser.add_argument("--connections", type=int, default=300, help="sockets held for the CPU/connection figure")
    args = parser.parse_args()
    if not (1 <= args.rate <= 20000 and 1 <= args.receivers <= 200 and 1 <= args.duration <= 60
            and 1 <= args.connections <= 5000):
        parser.error("--rate 1..20000, --receivers 1..200, --duration 1..60, --connections 1..5000")
    locust = shutil.which("locust")
    if locust is None:
        parser.error("locust is not installed (pip install -e .[dev])")
    with tempfile.TemporaryDirectory(prefix="rtbook-loadbench-") as home, Sandbox(home=home, probe=False) as state:
        return _bench(state, home, locust, args)


def _bench(state: SandboxState, home: str, locust: str, args: argparse.Namespace) -> int:
    envfile = read_env(Path(state.stack_dir) / ".env")
    dsn = state.db_url.replace("supabase_admin@", f"supabase_admin:{envfile['POSTGRES_PASSWORD']}@")
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as db:
        db.execute("UPDATE _realtime.tenants SET max_events_per_second = 10000000, max_joins_per_second = 100000, "
                   "max_concurrent_users = 100000, max_channels_per_client = 1000")
    time.sleep(1.5)  # the stand-in's tenant cache
    server = [pid for name, pid in state.pids.items() if name in ("realtime", "gateway")]
    ws_url = state.gateway_url.replace("http", "ws") + f"/realtime/v1/websocket?apikey={envfile['ANON_KEY']}&vsn=1.0.0"
    base = {**os.environ, "RTBOOK_HOME": home, "PYTHONPATH": str(ROOT), "BENCH_URL": ws_url}
    n = int(args.rate * args.duration)
    expected = n * args.receivers
    rows: list[tuple[str, float, float, float, float]] = []

    rtb, wall, srv = measured(
        [sys.executable, "-m", "rtbook", "load", "--target", "sandbox", "--format", "json", "--rate", str(args.rate),
         "--receivers", str(args.receivers), "--duration", str(args.duration)], base, server, 300)
    rows.append(("rtbook load", rtb["counts"]["delivered"], rtb["generator"]["cpu_s"], srv, wall))

    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "locust.json"
        env = {**base, "BENCH_RATE": str(args.rate), "BENCH_RESULT": str(result)}
        _, wall, srv = measured(
            [locust, "-f", str(ROOT / "bench/load/locust_usual.py"), "--headless", "-u", str(args.receivers + 1),
             "-r", str(args.receivers + 1), "-t", f"{args.duration + 2:.0f}s", "--only-summary"], env, server, 300)
        lc = json.loads(result.read_text())
    rows.append(("Locust user (usual way)", lc["delivered"], lc["cpu_s"], srv, wall))

    env = {**base, "BENCH_RATE": str(args.rate), "BENCH_RECEIVERS": str(args.receivers),
           "BENCH_DURATION": str(args.duration)}
    bare, wall, srv = measured([sys.executable, str(ROOT / "bench/load/bare_asyncio.py")], env, server, 300)
    rows.append(("bare asyncio client", bare["delivered"], bare["cpu_s"], srv, wall))

    print(f"broadcast: 1 sender, {args.receivers} receivers, {args.rate:g} msg/s for {args.duration:g} s "
          f"= {expected} expected deliveries (same sandbox, one run)")
    print(f"{'generator':<26}{'delivered':>10}{'deliv/s':>10}{'client CPU s':>14}{'deliv per CPU-s':>17}"
          f"{'server CPU s':>14}")
    for name, delivered, cpu, srv, _wall in rows:
        per_cpu = delivered / cpu if cpu else float("inf")
        print(f"{name:<26}{delivered:>10.0f}{delivered / args.duration:>10.0f}{cpu:>14.2f}{per_cpu:>17.0f}{srv:>14.2f}")
    per = {name: 1000 * cpu / max(delivered, 1) for name, delivered, cpu, _s, _w in rows}
    rt = per["rtbook load"]
    print(f"client CPU per 1,000 deliveries: rtbook {rt:.3f} s, Locust {per['Locust user (usual way)']:.3f} s, "
          f"bare {per['bare asyncio client']:.3f} s (rtbook/bare {rt / per['bare asyncio client']:.2f}x, "
          f"rtbook/Locust {rt / per['Locust user (usual way)']:.2f}x)")

    held = []
    for name, cmd, env in (
        ("rtbook load", [sys.executable, "-m", "rtbook", "load", "--target", "sandbox", "--format", "json",
                         "--scenario", "connect", "--connections", str(args.connections), "--join-rate", "500",
                         "--duration", "3"], base),
        ("bare asyncio client", [sys.executable, str(ROOT / "bench/load/bare_asyncio.py")],
         {**base, "BENCH_CONNECTIONS": str(args.connections), "BENCH_DURATION": "3"}),
    ):
        out, _wall, _srv = measured(cmd, env, server, 300)
        cpu = out["generator"]["cpu_s"] if "generator" in out else out["cpu_s"]
        count = out["sockets"]["held"] if "sockets" in out else out["held"]
        held.append((name, count, 1000 * cpu / max(count, 1)))
    figures = "; ".join(f"{n}: {c} held, {cpu:.2f} client CPU-s per 1,000" for n, c, cpu in held)
    print(f"\nconnections held 3 s: {figures}")

    print("\nsandbox ceiling (rtbook load, rising rate; stops when < 99 % delivered or p99 > 1 s):")
    print(f"{'rate':>8}{'delivered %':>13}{'p99 ms':>10}{'client core %':>15}{'server core %':>15}")
    rate = args.rate
    for _ in range(8):
        out, wall, srv = measured(
            [sys.executable, "-m", "rtbook", "load", "--target", "sandbox", "--format", "json", "--rate", str(rate),
             "--receivers", str(args.receivers), "--duration", "4"], base, server, 300)
        c = out["counts"]
        share = 100 * c["delivered"] / max(c["expected"], 1)
        p99 = out["latency_ms"].get("broadcast", {}).get("p99_ms", float("nan"))
        client = out["generator"]["cpu_percent_of_one_core"]
        print(f"{rate:>8.0f}{share:>13.1f}{p99:>10.1f}{client:>15.1f}{100 * srv / wall:>15.1f}")
        if share < 99 or p99 > 1000:
            break
        rate *= 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
