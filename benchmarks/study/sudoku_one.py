"""Sudoku 4x4 (box=2) for the issue-14 study: train one model, then the solve accuracy of several samplers on
held-out unique-solution puzzles (same puzzles for every model and seed). Appends one JSON line to --out.

    python benchmarks/study/sudoku_one.py --out sudoku.jsonl --label lomdm --seed 0 --steps 600 -- --model lomdm

(4x4 Sudoku has only 288 solved grids, so training sees every grid; the puzzles are held out only in the sense
that the model never sees the clue pattern: it must infill a partially observed grid.)
"""

from __future__ import annotations

import argparse
import json
import time

import torch

SAMPLERS = ("first-hitting", "topk", "confidence", "margin")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--label", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--puzzles", type=int, default=256)
    ap.add_argument("--run_dir", default="/tmp/study/runs")
    ap.add_argument("rest", nargs="*")
    a = ap.parse_args()
    from oemdm_spec.fast import build_config, sample, train
    from oemdm_spec.fast.config import parse_overrides
    from oemdm_spec.tasks import get_task, solve_accuracy

    data = "task:sudoku:box=2"
    over = {"n_layer": 2, "d_model": 64, "n_head": 4, "cond_dim": 32, "data": data, "steps": a.steps,
            "seed": a.seed, "threads": 1, "eval_every": 0, "final_eval_batches": 8, "ckpt_every": 10 ** 9,
            "num_samples": 1, "max_minutes": 0.0, "out_dir": a.run_dir, "name": f"sudoku-{a.label}-s{a.seed}"}
    over.update(parse_overrides(a.rest))
    t0 = time.time()
    res = train(build_config(over), progress=False, overwrite=True)
    task = get_task(data[len("task:"):])
    puzzles = task.make_puzzles(a.puzzles, torch.Generator().manual_seed(2024))
    model = res.ema if res.ema is not None else res.model
    model.eval()
    mask_id = model.cfg.mask_id
    rec = {"label": a.label, "seed": a.seed, "steps": a.steps, "overrides": a.rest, "nelbo": res.eval.nelbo,
           "nelbo_se": res.eval.se, "n_puzzles": a.puzzles,
           "mean_clues": float((~puzzles.init(mask_id).eq(mask_id)).sum(-1).float().mean())}
    for s in SAMPLERS:
        acc, se = solve_accuracy(lambda init, s=s: sample(model, init.shape[0], sampler=s, init=init, seed=a.seed),
                                 puzzles, mask_id=mask_id)
        rec[f"acc_{s}"], rec[f"se_{s}"] = acc, se
    rec["wall_s"] = time.time() - t0
    with open(a.out, "a") as f:
        f.write(json.dumps(rec) + "\n")
    print(json.dumps(rec))


if __name__ == "__main__":
    main()
