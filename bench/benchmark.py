#!/usr/bin/env python3
"""Measure stackproof's speed targets (figures for the closing notes, not a test).

    bench/benchmark.py                warm: static runs, full run with the stack up
    bench/benchmark.py --static-only  only the static runs (no engine needed)
    bench/benchmark.py --cold         also: remove the stack and all its images, then time `bin/stackproof validate`

Targets: static run of the reference stack <= 2.5 s wall, median of 5 (issue 10 §5: start-up is
imports, so bytecode is written and reused as in a user's install: PYTHONDONTWRITEBYTECODE is
unset); with images built and the stack up, `pytest suites/` (static + live, load check
included) < 60 s; cold end-to-end with no images < 5 min.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv/bin/python") if (ROOT / ".venv/bin/python").exists() else sys.executable


def timed(name: str, cmd: list[str], limit: float) -> dict:
    print(f"== {name}: {' '.join(cmd)}", flush=True)
    start = time.monotonic()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=limit)
    seconds = round(time.monotonic() - start, 1)
    verdict = next((line for line in done.stdout.splitlines()[::-1] if line.startswith(("GO", "NO-GO"))), "")
    print(f"   {seconds} s, exit {done.returncode} {verdict}", flush=True)
    return {"name": name, "seconds": seconds, "exit": done.returncode, "verdict": verdict}


def median_wall(name: str, cmd: list[str], runs: int = 5, cwd: Path = ROOT) -> dict:
    """Wall time of `runs` runs (after one unmeasured warm-up that writes the bytecode), and their median."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    print(f"== {name}: {' '.join(cmd)} (median of {runs})", flush=True)
    times, done = [], None
    for attempt in range(runs + 1):
        start = time.monotonic()
        done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
        if attempt:
            times.append(round(time.monotonic() - start, 2))
    seconds = statistics.median(times)
    print(f"   {seconds} s median {times}, exit {done.returncode}", flush=True)
    return {"name": name, "seconds": seconds, "runs": times, "exit": done.returncode}


def static_runs(report_dir: Path) -> list[dict]:
    """The static run of the reference stack, as a developer runs it in the checkout and as a user
    runs the installed command (its own ini: no test-only plugins), from another directory."""
    stack = str(ROOT / "stack")
    stackproof = str(Path(PYTHON).parent / "stackproof")
    with tempfile.TemporaryDirectory() as elsewhere:
        return [
            median_wall("static run, checkout (pytest suites -m static)",
                        [PYTHON, "-m", "pytest", "-q", "suites", "-m", "static", "--report-dir", str(report_dir)]),
            median_wall("static run, user command (stackproof validate --static)",
                        [stackproof, "validate", "--static", "-q", "--stack-dir", stack, "--report-dir", str(report_dir)],
                        cwd=Path(elsewhere)),
        ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cold", action="store_true", help="also measure a cold end-to-end run (removes images)")
    parser.add_argument("--static-only", action="store_true", help="only the static runs (no engine needed)")
    args = parser.parse_args()
    report_dir = ROOT / "reports" / "bench"
    pytest = [PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--report-dir", str(report_dir)]
    results = static_runs(report_dir)
    if not args.static_only:
        results.append(timed("full run, stack up (pytest suites --live)", [*pytest, "suites", "--live"], 300))
    if args.cold and not args.static_only:
        subprocess.run([str(ROOT / "stack/scripts/down.sh")], cwd=ROOT, timeout=300)
        images = subprocess.run(["docker", "images", "-q", "--filter", "reference=ai-stack*"], capture_output=True,
                                text=True, timeout=60).stdout.split()
        subprocess.run(["docker", "rmi", "-f", *images], capture_output=True, timeout=300) if images else None
        subprocess.run(["docker", "builder", "prune", "-af"], capture_output=True, timeout=300)
        results.append(timed("cold end-to-end, no images (bin/stackproof validate)",
                             [str(ROOT / "bin/stackproof"), "validate"], 1200))
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    summary = {"results": results, "peak_child_rss_mb": round(peak_mb, 1), "cpus": os.cpu_count()}
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "benchmark.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
