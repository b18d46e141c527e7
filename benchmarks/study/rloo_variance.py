"""Is the RLOO gradient of LoMDM's order heads informative? (issue 14, docs/lomdm.md)

For one LoMDM model (freshly initialised, or the training weights of a finished run), evaluate the training loss
on R independent draws (a fresh batch of task sequences, times and masks each) and keep the gradient of every
parameter group: φ (forward-order head), ψ (reverse-order head), the denoiser (backbone). Per group it reports

- ``snr1``: the signal-to-noise energy ratio of ONE draw (one training step's gradient),
  (‖ḡ‖² − tr Σ̂/R) / tr Σ̂, i.e. ‖E g‖² / E‖g − E g‖² with the bias of ‖ḡ‖² removed. Below 1/R it is not
  distinguishable from 0; 1/snr1 is roughly how many steps' gradients must be averaged before the mean
  direction is as large as the noise.
- ``cos_halves``: the cosine between the mean gradients of two disjoint halves of the draws (≈ 1: a
  consistent direction; ≈ 0: noise).
- ``frac_t2``: the fraction of coordinates whose mean is more than 2 standard errors from 0 (≈ 0.05 for pure
  noise), and ``median_t`` the median |mean| / SE.

The φ gradient has two parts: the pathwise one (w_φ enters the rates A = w/t of the loss) and the score-function
one (the RLOO term sg(L_k − baseline)·∇ log q(z_k|x)). ``--variants`` also measures each alone by swapping the
process's surrogate (``pathwise``: mean_k L_k only; ``score``: the RLOO term only; ``full``: both, as trained).

    python benchmarks/study/rloo_variance.py --draws 256 --out rloo.jsonl \
        --run /tmp/study/runs/lomdm-s0-task_latents_N=5_P=10_fn=nae_seed=0
"""

from __future__ import annotations

import argparse
import json
import math

import torch

from oemdm_spec.fast.processes import polynomial

BACKBONE = {"n_layer": 2, "d_model": 64, "n_head": 4, "cond_dim": 32}
_RLOO = polynomial.rloo_surrogate


def surrogate(variant: str):
    def pathwise(per_seq, log_q):
        return per_seq.mean(0)

    def score(per_seq, log_q):
        return _RLOO(per_seq.detach(), log_q) - per_seq.mean(0).detach()  # no pathwise gradient left

    return {"full": _RLOO, "pathwise": pathwise, "score": score}[variant]


def groups(model) -> dict[str, list[torch.nn.Parameter]]:
    return {"phi": list(model.phi.parameters()), "psi": list(model.psi.parameters()),
            "denoiser": list(model.backbone.parameters())}


def gradient_stats(G: torch.Tensor) -> dict:
    """G (R, P) float64: R independent gradients of P coordinates."""
    R = G.shape[0]
    mean = G.mean(0)
    var = G.var(0, unbiased=True)
    tr = float(var.sum())
    live = var > 0
    out = {"n_params": G.shape[1], "n_zero_grad": int((~live).sum()), "mean_norm": float(mean.norm()),
           "noise_norm": math.sqrt(tr)}
    if tr == 0:
        return {**out, "snr1": float("nan"), "cos_halves": float("nan"), "frac_t2": float("nan"),
                "median_t": float("nan")}
    out["snr1"] = (float(mean.pow(2).sum()) - tr / R) / tr
    a, b = G[: R // 2].mean(0), G[R // 2:].mean(0)
    out["cos_halves"] = float(torch.nn.functional.cosine_similarity(a, b, dim=0))
    t = mean[live].abs() / (var[live] / R).sqrt()
    out["frac_t2"] = float((t > 2).double().mean())
    out["median_t"] = float(t.median())
    return out


def measure(model, cfg, train_ds, draws: int, variant: str, seed: int) -> dict[str, dict]:
    from oemdm_spec.fast.objectives import draw_step_noise, oemdm_loss

    model.train()
    grp = groups(model)
    grads: dict[str, list[torch.Tensor]] = {k: [] for k in grp}
    K = model.process.n_masks(cfg.K)
    polynomial.rloo_surrogate = surrogate(variant)
    try:
        for r in range(draws):
            step = 10 ** 6 + r  # steps the run never trained on: fresh batches and noise
            x = train_ds.get_batch(step, cfg.batch_size, seed, 0, 1)
            noise = draw_step_noise(seed, step, global_batch=cfg.batch_size, seq_len=cfg.seq_len, K=K,
                                    t_min=cfg.t_min)
            model.zero_grad(set_to_none=True)
            oemdm_loss(model, x, noise, K=cfg.K).loss.backward()
            for k, ps in grp.items():
                grads[k].append(torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                                           for p in ps]).double())
    finally:
        polynomial.rloo_surrogate = _RLOO
    return {k: gradient_stats(torch.stack(v)) for k, v in grads.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="task:latents:N=5,P=10,fn=nae,seed=0")
    ap.add_argument("--run", action="append", default=[], help="run directory of a trained LoMDM (repeatable)")
    ap.add_argument("--fresh_seed", type=int, default=0, help="also a freshly initialised model (-1: no)")
    ap.add_argument("--draws", type=int, default=256)
    ap.add_argument("--variants", default="full,pathwise,score")
    ap.add_argument("--out", default="")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from oemdm_spec.data.loading import build_datasets
    from oemdm_spec.fast import build_config
    from oemdm_spec.fast.checkpoint import load_run
    from oemdm_spec.fast.model import OeMDM

    models = []
    if a.fresh_seed >= 0:
        cfg = build_config({**BACKBONE, "data": a.data, "model": "lomdm", "seed": a.fresh_seed, "threads": 1})
        tok, train_ds, _ = build_datasets(cfg)
        torch.manual_seed(cfg.seed)
        models.append(("fresh", OeMDM(cfg.model_config(tok.vocab_size)), cfg, train_ds))
    for run in a.run:
        model, cfg, _, _ = load_run(run, use_ema=False)  # the weights the optimiser was stepping
        _, train_ds, _ = build_datasets(cfg)
        models.append((run.rstrip("/").split("/")[-1], model, cfg, train_ds))
    rows = []
    print(f"{'model':<48} {'variant':<9} {'group':<9} {'params':>7} {'|mean|':>9} {'noise':>9} {'snr1':>9} "
          f"{'cos':>6} {'|t|>2':>6} {'med|t|':>6}")
    for name, model, cfg, train_ds in models:
        for variant in a.variants.split(","):
            stats = measure(model, cfg, train_ds, a.draws, variant, seed=cfg.seed + 7)
            for g, s in stats.items():
                if variant == "score" and g == "denoiser":
                    continue  # the score term does not reach the denoiser (its features are detached)
                rows.append({"model": name, "variant": variant, "group": g, "draws": a.draws, **s})
                print(f"{name[:48]:<48} {variant:<9} {g:<9} {s['n_params'] - s['n_zero_grad']:>7} "
                      f"{s['mean_norm']:9.2e} {s['noise_norm']:9.2e} {s['snr1']:9.2e} {s['cos_halves']:6.2f} "
                      f"{s['frac_t2']:6.3f} {s['median_t']:6.2f}", flush=True)
    if a.out:
        with open(a.out, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
