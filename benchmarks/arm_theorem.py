"""The ARM theorem on trained models: the table of docs/results.md ("The ARM theorem in the trainer").

    benchmarks/arm_theorem.sh [OUT]       # train the runs (tiny preset, 300 steps, seed 0)
    python benchmarks/arm_theorem.py [OUT] [--batches 16] [--repeats 4]

For every run in OUT: the final validation bound of its summary.json (bits/char ± SE) and the training time per
step. For every oemdm-arm run, on the first ``--batches`` validation batches (64 sequences of 64 chars each):

- its own bound, ``repeats`` antithetic pairs per sequence (``fast.evaluate.sequence_bound``, as ``oemdm eval``);
- its bidirectional denoiser used left to right, computed here independently of the process code: for
  i = 0..L−1 one forward pass on (x^{<i}, m, …, m) and −log x_θ^i[x^i];
- the per-sequence difference bound − AR-NLL with its standard error (paired over sequences).

The theorem: bound = AR-NLL + O(ε) for the *same* denoiser.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from oemdm_spec.data import PackedDataset
from oemdm_spec.data.loading import load_text
from oemdm_spec.fast import load_run
from oemdm_spec.fast.evaluate import sequence_bound

LN2 = math.log(2)


@torch.no_grad()
def left_to_right_nll(model, x: torch.Tensor) -> torch.Tensor:
    """Σ_i −log x_θ^i(x^{<i}, m, …, m)[x^i] / L per sequence (nats/char), one pass per position."""
    B, L = x.shape
    m = model.cfg.mask_id
    total = torch.zeros(B, dtype=torch.float64)
    for i in range(L):
        z = x.clone()
        z[:, i:] = m
        logp = torch.log_softmax(model.backbone(z)[:, i].double(), -1)
        total -= logp.gather(-1, x[:, i:i + 1]).squeeze(-1)
    return total / L


@torch.no_grad()
def own_bound(model, x: torch.Tensor, g: torch.Generator, repeats: int) -> torch.Tensor:
    B, L = x.shape
    est = torch.zeros(B, dtype=torch.float64)
    for _ in range(repeats):
        v = torch.rand(B, generator=g, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
        mu = torch.rand((2, B, L), generator=g, dtype=torch.float64)
        est += 0.5 * (sequence_bound(model, x, v, mu[0]) + sequence_bound(model, x, 1 - v, mu[1])) / repeats
    return est


def mean_se(v: torch.Tensor) -> tuple[float, float]:
    return float(v.mean()), float(v.std() / math.sqrt(v.numel()))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", nargs="?", default="runs/arm_theorem")
    ap.add_argument("--batches", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--only", default="", help="comma-separated run names for the second table (default: all)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    runs = sorted(p.parent for p in Path(args.out).glob("*/summary.json"))
    print("| run | model | eps | val bound (bits/char) | s/step |")
    print("|---|---|---|---|---|")
    for run in runs:
        s = json.loads((run / "summary.json").read_text())
        c = json.loads((run / "config.json").read_text())
        eps = c["eps"] if c["model"].startswith("oemdm") else "–"
        print(f"| {run.name} | {c['model']} | {eps} | {s['val_bits']:.3f} ± {s['val_se'] / LN2:.3f} | "
              f"{s['train_s'] / s['final_step']:.3f} |")
    print()
    print("| run | own bound (bits/char) | left-to-right NLL of its denoiser | bound − L2R (paired) |")
    print("|---|---|---|---|")
    for run in runs:
        if args.only and run.name not in args.only.split(","):
            continue
        model, cfg, tok, _ = load_run(run)
        if cfg.model != "oemdm-arm":
            continue
        ds = PackedDataset(tok.encode(load_text(cfg)["validation"]), cfg.seq_len)
        g = torch.Generator().manual_seed(1234)
        bound, l2r = [], []
        for bi, x in enumerate(ds.iter_eval_batches(64)):
            if bi >= args.batches:
                break
            bound.append(own_bound(model, x, g, args.repeats))
            l2r.append(left_to_right_nll(model, x))
        b, a = torch.cat(bound) / LN2, torch.cat(l2r) / LN2
        (mb, sb), (ma, sa), (md, sd) = mean_se(b), mean_se(a), mean_se(b - a)
        print(f"| {run.name} (ε = {cfg.eps}) | {mb:.3f} ± {sb:.3f} | {ma:.3f} ± {sa:.3f} | {md:+.3f} ± {sd:.3f} |",
              flush=True)


if __name__ == "__main__":
    main()
