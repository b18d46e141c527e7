"""Table of the longer Sudoku 4x4 runs (benchmarks/study/sudoku_long.jsonl): solve accuracy per model x sampler,
mean ± SE over training seeds, and paired differences (same seed) against MDLM, the constant-w control and
MDLM's schedule on K = 2 masks per sequence.

    python benchmarks/study/sudoku_table.py [benchmarks/study/sudoku_long.jsonl]
"""

from __future__ import annotations

import json
import math
import sys
from collections import defaultdict
from pathlib import Path

SAMPLERS = ("first-hitting", "topk", "confidence", "margin")
FLOOR = math.log(288) / 16  # nats per cell: 4x4 Sudoku grids are uniform over all 288


def mean_se(xs: list[float]) -> str:
    n = len(xs)
    m = sum(xs) / n
    if n == 1:
        return f"{m:.3f}"
    se = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1) / n)
    return f"{m:.3f} ± {se:.3f}"


def main(path: str = "benchmarks/study/sudoku_long.jsonl") -> None:
    runs: dict[str, dict[int, dict]] = defaultdict(dict)
    for line in Path(path).read_text().splitlines():
        r = json.loads(line)
        runs[r["label"]][r["seed"]] = r  # a rerun of (label, seed) replaces the earlier line
    print(f"Sudoku 4x4 (box=2), 256 held-out puzzles (mean {next(iter(runs.values()))[0]['mean_clues']:.1f} "
          f"clues); NELBO floor {FLOOR:.3f} nats/cell\n")
    print("| model | steps | seeds | NELBO nats/cell | " + " | ".join(f"solved ({s})" for s in SAMPLERS) + " |")
    print("|---|---|---|---|" + "---|" * len(SAMPLERS))
    for label, by_seed in runs.items():
        seeds = sorted(by_seed)
        cells = [mean_se([by_seed[s][f"acc_{k}"] for s in seeds]) for k in SAMPLERS]
        steps = by_seed[seeds[0]]["steps"]
        print(f"| {label} | {steps} | {','.join(map(str, seeds))} | "
              f"{mean_se([by_seed[s]['nelbo'] for s in seeds])} | " + " | ".join(cells) + " |")
    print("\n| paired difference (same seed) | seeds | Δ NELBO | " + " | ".join(f"Δ {s}" for s in SAMPLERS) + " |")
    print("|---|---|---|" + "---|" * len(SAMPLERS))
    # mdlm-K2: LoMDM's code with w ≡ 1 (c1 = 1, c2 = 0), i.e. MDLM's schedule trained on K = 2 masks per
    # sequence, as LoMDM is: the control for the doubled denoiser passes per step
    pairs = (("lomdm-3k", "mdlm-3k"), ("lomdm-const-3k", "mdlm-3k"), ("lomdm-3k", "lomdm-const-3k"),
             ("mdlm-K2-3k", "mdlm-3k"), ("lomdm-const-3k", "mdlm-K2-3k"), ("lomdm-3k", "mdlm-K2-3k"))
    for a, b in pairs:
        if a not in runs or b not in runs:
            continue
        seeds = sorted(set(runs[a]) & set(runs[b]))
        if not seeds:
            continue
        d = [mean_se([runs[a][s][f"acc_{k}"] - runs[b][s][f"acc_{k}"] for s in seeds]) for k in SAMPLERS]
        dn = mean_se([runs[a][s]["nelbo"] - runs[b][s]["nelbo"] for s in seeds])
        print(f"| {a} − {b} | {','.join(map(str, seeds))} | {dn} | " + " | ".join(d) + " |")
    adaptive = [(r["acc_confidence"] - r["acc_first-hitting"]) for by in runs.values() for r in by.values()]
    print(f"\nconfidence − first-hitting over all {len(adaptive)} runs: {mean_se(adaptive)}")


if __name__ == "__main__":
    main(*sys.argv[1:])
