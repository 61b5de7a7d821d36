"""How long rtbook's two everyday commands take, measured the way a user runs them.

Two comparisons, side by side in one run, each command started as a fresh process N times:

(a) ``rtbook check --stack DIR`` on the newest official stack (the corpus copy
    tests/fixtures/corpus/official/2026-09-1f37f2a and rtbook/data/official, each copied to a
    temporary folder with its env.example as .env), with and without ``--no-docker`` (when a
    Docker engine answers, the docker.* checks ask it about the stack's containers);
(b) ``rtbook run --target sandbox --no-sandbox-start`` (all six notebooks, record written) against
    ``rtbook check --target sandbox --live`` (the same checks, no notebooks) on one sandbox, started once
    under a private RTBOOK_HOME; the two commands alternate, so machine load hits both alike, and
    the ratio is given both as the ratio of the medians and as the median of the per-pair ratios.

    python bench/speed_bench.py [--repeat 7] [--assert] [--fresh-kernels] [--json FILE]

Each child runs with this checkout first on PYTHONPATH and with bytecode caching on (under a
private PYTHONPYCACHEPREFIX, after one warm-up run per command), as an installed rtbook has its
.pyc files: a development shell with PYTHONDONTWRITEBYTECODE=1 would measure recompiling rtbook.

Targets: (a) median under 0.5 s; (b) run at most 1.5x check. They are printed with the figures;
``--assert`` makes a missed target an exit status of 1. Not a test: wall times depend on the
machine and on what else runs on it, so the load average and the children's CPU time are printed
too. ``--fresh-kernels`` adds the runner with one kernel per notebook (papermill's default), for
comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OFFICIAL_CORPUS = ROOT / "tests/fixtures/corpus/official/2026-09-1f37f2a"
OFFICIAL_PACKAGED = ROOT / "rtbook/data/official"
STACK_TARGET_S = 0.5
RATIO_TARGET = 1.5

# One kernel per notebook: run_notebooks(warm_kernel=False), which the CLI does not expose.
_FRESH_RUN = """
import sys
from rtbook.runbook.params import validate_params
from rtbook.runbook.runner import run_notebooks
outcome = run_notebooks(validate_params({"target_kind": "sandbox"}), output_dir=sys.argv[1], warm_kernel=False)
sys.exit(outcome.exit_code)
"""


@dataclass
class Series:
    """The repeated timings of one command."""

    name: str
    argv: list[str]
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    codes: list[int] = field(default_factory=list)

    def median(self) -> float:
        return statistics.median(self.wall)

    def row(self) -> list[str]:
        w = sorted(self.wall)
        q1, q3 = (statistics.quantiles(w, n=4)[0], statistics.quantiles(w, n=4)[2]) if len(w) >= 2 else (w[0], w[0])
        return [self.name, str(len(w)), f"{self.median():.2f}", f"{w[0]:.2f}", f"{w[-1]:.2f}", f"{q3 - q1:.2f}",
                f"{statistics.median(self.cpu):.2f}", ",".join(sorted({str(c) for c in self.codes}))]


def child_env(home: Path, pycache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    env["RTBOOK_HOME"] = str(home)
    return env


def timed(argv: Sequence[str], env: dict[str, str], timeout: float = 600) -> tuple[float, float, int, str]:
    """Run ``argv``; its wall time, the CPU time it and its children used, exit code and output tail."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(list(argv), env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.returncode, (proc.stdout + proc.stderr)[-600:]


def measure(series: Sequence[Series], env: dict[str, str], repeat: int, ok_codes: Sequence[int]) -> None:
    """Warm each command up once, then run them round-robin ``repeat`` times."""
    for s in series:
        _w, _c, code, tail = timed(s.argv, env)
        if code not in ok_codes:
            raise SystemExit(f"{s.name}: exit {code} on the warm-up run:\n{tail}")
    for _ in range(repeat):
        for s in series:
            wall, cpu, code, tail = timed(s.argv, env)
            if code not in ok_codes:
                raise SystemExit(f"{s.name}: exit {code}:\n{tail}")
            s.wall.append(wall)
            s.cpu.append(cpu)
            s.codes.append(code)


def stack_copy(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    shutil.copy(dest / "env.example", dest / ".env")
    return dest


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(r: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=7, help="timed runs per command (default 7)")
    ap.add_argument("--assert", dest="check", action="store_true", help="exit 1 when a target is missed")
    ap.add_argument("--fresh-kernels", action="store_true", help="also time the runner with one kernel per notebook")
    ap.add_argument("--skip-stack", action="store_true", help="only (b)")
    ap.add_argument("--skip-run", action="store_true", help="only (a)")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = ap.parse_args(argv)

    py = sys.executable
    rtbook = [py, "-m", "rtbook"]
    work = Path(tempfile.mkdtemp(prefix="rtbook-speed-bench-"))
    env = child_env(work / "home", work / "pycache")
    load_before = os.getloadavg()
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                           "platform": platform.platform()}, "series": {}}
    stack_series: list[Series] = []
    run_series: list[Series] = []
    try:
        if not args.skip_stack:
            corpus = stack_copy(OFFICIAL_CORPUS, work / "official-2026-09")
            packaged = stack_copy(OFFICIAL_PACKAGED, work / "rtbook-data-official")
            stack_series = [
                Series("check --stack official/2026-09", [*rtbook, "check", "--stack", str(corpus)]),
                Series("check --stack official/2026-09 --no-docker",
                       [*rtbook, "check", "--stack", str(corpus), "--no-docker"]),
                Series("check --stack rtbook/data/official", [*rtbook, "check", "--stack", str(packaged)]),
                Series("check --stack rtbook/data/official --no-docker",
                       [*rtbook, "check", "--stack", str(packaged), "--no-docker"]),
            ]
            # 1: the demo secrets of env.example fail env.default_secrets, as they should.
            measure(stack_series, env, args.repeat, ok_codes=(0, 1))
        if not args.skip_run:
            up = subprocess.run([*rtbook, "sandbox", "up"], env=env, cwd=ROOT, capture_output=True, text=True,
                                timeout=300, check=False)
            if up.returncode != 0:
                raise SystemExit(f"rtbook sandbox up failed:\n{up.stdout}{up.stderr}")
            records = work / "records"
            run_series = [
                Series("check --target sandbox --live", [*rtbook, "check", "--target", "sandbox", "--live"]),
                Series("run --target sandbox --no-sandbox-start",
                       [*rtbook, "run", "--target", "sandbox", "--no-sandbox-start", "-q",
                        "--output-dir", str(records)]),
            ]
            if args.fresh_kernels:
                run_series.append(Series("run, one kernel per notebook", [py, "-c", _FRESH_RUN, str(records)]))
            measure(run_series, env, args.repeat, ok_codes=(0,))
            last = sorted(p for p in records.iterdir() if p.is_dir())[-1]  # beside them: history.sqlite
            verified = subprocess.run([*rtbook, "verify", str(last)], env=env, cwd=ROOT, capture_output=True,
                                      text=True, timeout=60, check=False)
            results["verify"] = {"record": last.name, "exit": verified.returncode}
    finally:
        if not args.skip_run:
            subprocess.run([*rtbook, "sandbox", "down"], env=env, cwd=ROOT, capture_output=True, timeout=120,
                           check=False)
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()

    header = ["command", "n", "median s", "min", "max", "IQR", "cpu s", "exit"]
    missed: list[str] = []
    print(f"rtbook speed, {os.cpu_count()} CPUs, Python {platform.python_version()}; load average "
          f"{load_before[0]:.1f} before, {load_after[0]:.1f} after (1 min)")
    if stack_series:
        print(f"\n(a) rtbook check --stack DIR (target: median < {STACK_TARGET_S} s)\n")
        print(table([s.row() for s in stack_series], header))
        for s in stack_series:
            if s.median() >= STACK_TARGET_S:
                missed.append(f"{s.name}: median {s.median():.2f} s >= {STACK_TARGET_S} s")
    if run_series:
        check, run = run_series[0], run_series[1]
        ratio = run.median() / check.median()
        paired = statistics.median(r / c for r, c in zip(run.wall, check.wall, strict=True))
        print(f"\n(b) rtbook run vs rtbook check on the sandbox (target: ratio <= {RATIO_TARGET})\n")
        print(table([s.row() for s in run_series], header))
        print(f"\nratio run/check: {ratio:.2f} (medians), {paired:.2f} (median of the {len(run.wall)} pairs)")
        if len(run_series) > 2:
            print(f"one kernel per notebook / check: {run_series[2].median() / check.median():.2f}")
        if "verify" in results:
            print(f"rtbook verify on the last record: exit {results['verify']['exit']}")
        results["ratio"] = {"medians": ratio, "paired": paired}
        if ratio > RATIO_TARGET:
            missed.append(f"run/check ratio {ratio:.2f} > {RATIO_TARGET}")
        if results.get("verify", {}).get("exit", 0) != 0:
            missed.append("rtbook verify failed on the last record")
    for s in [*stack_series, *run_series]:
        results["series"][s.name] = {"argv": s.argv[1:], "wall": s.wall, "cpu": s.cpu, "median": s.median()}
    results["load"] = {"before": load_before, "after": load_after}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    if missed:
        print("\ntargets missed:\n  " + "\n  ".join(missed))
    else:
        print("\nevery target met")
    return 1 if (missed and args.check) else 0


if __name__ == "__main__":
    sys.exit(main())
