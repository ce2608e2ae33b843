#!/usr/bin/env python3
"""Measure stackproof's speed targets (figures for the closing notes, not a test).

    bench/benchmark.py            warm: static run, full run with the stack up
    bench/benchmark.py --cold     also: remove the stack and all its images, then time `bin/stackproof validate`

Targets: `pytest suites -m static` < 10 s; with images built and the stack up, `pytest suites/`
(static + live, load check included) < 60 s; cold end-to-end with no images < 5 min.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cold", action="store_true", help="also measure a cold end-to-end run (removes images)")
    args = parser.parse_args()
    report_dir = ROOT / "reports" / "bench"
    pytest = [PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--report-dir", str(report_dir)]
    results = [
        timed("static run (pytest suites -m static)", [*pytest, "suites", "-m", "static"], 120),
        timed("full run, stack up (pytest suites --live)", [*pytest, "suites", "--live"], 300),
    ]
    if args.cold:
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
