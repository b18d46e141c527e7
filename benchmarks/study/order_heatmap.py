"""Text order heatmaps of the issue-14 study: for each trained model, the mean reveal step of every position of
the latents task (first-hitting sampler, 256 samples) as a decile of 0..L−1 (0 = revealed first, 9 = last), with the
positions labelled L (latent) or o (observation), then a few single samples of one model.

    PYTHONPATH=. python benchmarks/study/order_heatmap.py [RUNS_DIR]     # default /tmp/study/runs

Reads the seed-0 runs of benchmarks/study (jobs_main.txt) under RUNS_DIR; models whose run is missing are skipped.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from oemdm_spec.fast import sample
from oemdm_spec.fast.checkpoint import load_run
from oemdm_spec.tasks import get_task

TASK = "latents:N=5,P=10,fn=nae,seed=0"
MODELS = ("mdlm", "lomdm", "lomdm-log", "lomdm-hp", "oracle-lf", "oracle-of")


def deciles(x: torch.Tensor, n: int) -> str:
    """Each mean reveal step (in [0, n − 1]) as the decile of that range, one digit (an absolute scale: a
    uniformly random order gives 4–5 everywhere)."""
    d = (x / n * 10).floor().clamp(0, 9).long()
    return " ".join(str(int(v)) for v in d)


def main(runs: str = "/tmp/study/runs") -> None:
    task = get_task(TASK)
    kind = ["o"] * task.seq_len
    for p in task.latent_positions.tolist():
        kind[p] = "L"
    print(f"task:{TASK}; columns = positions 0..{task.seq_len - 1}; digit = decile of the mean reveal step\n")
    print(f"{'position':>10}  " + " ".join(kind))
    keep = None
    for m in MODELS:
        run = Path(runs) / f"{m}-s0-task_{TASK.replace(':', '_').replace(',', '_')}"
        if not run.exists():
            print(f"{m:>10}  (no run at {run})")
            continue
        model, _, _, _ = load_run(run)
        _, order = sample(model, 256, sampler="first-hitting", seed=0)
        mean = order.double().mean(0)
        lat = task.latent_positions
        obs = task.observation_positions
        print(f"{m:>10}  {deciles(mean, task.seq_len)}   mean step: latents {float(mean[lat].mean()):.1f}, "
              f"observations {float(mean[obs].mean()):.1f}")
        if m == "lomdm":
            keep = order[:6]
    if keep is not None:
        print("\nLoMDM, single samples (reveal step as a decile of 0..L-1):")
        for row in keep:
            print(f"{'':>10}  " + " ".join(str(int(v) * 10 // task.seq_len) for v in row))


if __name__ == "__main__":
    main(*sys.argv[1:])
