"""Run a list of study jobs (benchmarks/study/run_one.py), at most --jobs at a time, each with 1 thread under
nice. A job is one line "label seed data steps -- overrides..." (data "sudoku": a
Sudoku 4x4 job of sudoku_one.py). Results append to --out (JSONL)."""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("jobs_file")
    ap.add_argument("--out", required=True)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--also_count", default="", help="comma-separated pids of runs already going: they hold slots")
    a = ap.parse_args()
    lines = [ln.strip() for ln in open(a.jobs_file) if ln.strip() and not ln.startswith("#")]
    pending = list(lines)
    running: list[tuple[subprocess.Popen, str, float]] = []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    while pending or running:
        external = [int(p) for p in a.also_count.split(",") if p and os.path.exists(f"/proc/{p}")]
        while pending and len(running) + len(external) < a.jobs:
            line = pending.pop(0)
            label, seed, data, steps, *rest = shlex.split(line)
            rest = [r for r in rest if r != "--"]
            if data == "sudoku":  # Sudoku 4x4 solve-accuracy jobs (sudoku_one.py)
                cmd = ["nice", "-n", "5", sys.executable, os.path.join(HERE, "sudoku_one.py"), "--out", a.out,
                       "--label", label, "--seed", seed, "--steps", steps, "--", *rest]
            else:
                cmd = ["nice", "-n", "5", sys.executable, os.path.join(HERE, "run_one.py"), "--out", a.out,
                       "--label", label, "--seed", seed, "--data", data, "--steps", steps, "--", *rest]
            log = open(os.path.join("/tmp/study", f"{label}-{seed}-{abs(hash(line)) % 10**6}.log"), "w")
            running.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), line, time.time()))
        time.sleep(1)
        for p, line, t0 in list(running):
            if p.poll() is not None:
                running.remove((p, line, t0))
                print(f"[{p.returncode}] {time.time() - t0:6.1f}s {line}", flush=True)


if __name__ == "__main__":
    main()
