"""One training run of the issue-14 study (docs/lomdm.md): train, then measure NELBO vs the exact floor and
the learned order. Writes one JSON line to --out (appends).

    python benchmarks/study/run_one.py --out results.jsonl --label mdlm --seed 0 \
        --data task:latents:N=5,P=10,fn=parity,seed=0 --steps 1000 -- --model mdlm

Everything after ``--`` is passed as ``--key value`` overrides of oemdm train. AR in a fixed order uses the
task ``latents-perm`` registered here: the same latents task with its L positions re-ordered so that the
chosen generation order is left to right (``order=easy``: latents then observations; ``order=hard``:
observations then latents; ``order=random``: a fixed random permutation), trained with the exact AR model.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

from oemdm_spec import tasks as tasks_mod
from oemdm_spec.tasks import LatentsObservations

BACKBONE = {"n_layer": 2, "d_model": 64, "n_head": 4, "cond_dim": 32}


class PermutedLatents(LatentsObservations):
    """The latents task with positions re-ordered so that ``order`` is left to right (for exact AR)."""

    name = "latents-perm"

    def __init__(self, n_latents: int = 8, n_observations: int = 16, fn: str = "nae", seed: int = 0,
                 order: str = "easy") -> None:
        super().__init__(n_latents, n_observations, fn, seed)
        easy = self.easy_order()
        if order == "easy":
            self.read = easy
        elif order == "hard":
            self.read = torch.cat([self.observation_positions, self.latent_positions])
        elif order == "random":
            self.read = torch.randperm(self.seq_len, generator=torch.Generator().manual_seed(12345 + seed))
        else:
            raise ValueError(f"latents-perm: order must be easy, hard or random, got {order!r}")
        self.order = order

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return super().sample(n, generator)[:, self.read]


tasks_mod._REGISTRY["latents-perm"] = (PermutedLatents, {
    "N": ("n_latents", int, 8), "P": ("n_observations", int, 16), "fn": ("fn", str, "nae"),
    "seed": ("seed", int, 0), "order": ("order", str, "easy")})


def order_stats(model, task: LatentsObservations, num: int = 256, seed: int = 0) -> dict:
    """First-hitting samples: validity and the fraction of observations revealed after all their latents;
    w_φ on validation sequences (latent vs observation positions); ψ's spread on the all-masked state."""
    from oemdm_spec.fast import sample

    out: dict = {}
    toks, order = sample(model, num, sampler="first-hitting", seed=seed)
    out["valid_frac"] = float(task.valid(toks).float().mean())
    lat, obs = task.latent_positions, task.observation_positions
    if len(obs):
        last_latent = order[:, lat[task.triples]].amax(-1)  # (num, P)
        out["obs_after_latents"] = float((order[:, obs] > last_latent).float().mean())
        # chance level under a uniformly random order: each observation after its 3 latents w.p. 1/4
        out["latents_before_all_obs"] = float((order[:, lat].amax(-1) < order[:, obs].amin(-1)).float().mean())
    proc = model.process
    if hasattr(proc, "forward_exponent") and model.cfg.model_type in ("lomdm", "oemdm-fixed"):
        x = task.sample(512, torch.Generator().manual_seed(777))
        with torch.no_grad():
            w = proc.forward_exponent(model, x)
        out["w_latents"] = float(w[:, lat].mean())
        out["w_obs"] = float(w[:, obs].mean())
    if model.cfg.model_type == "lomdm":
        z = torch.full((2, task.seq_len), model.cfg.mask_id)
        with torch.no_grad():
            w0 = model.w_psi(model.backbone.features(z, None if not model.cfg.time_conditioning
                                                       else torch.full((2,), 0.5)))
        out["psi_allmasked_std"] = float(w0[0].std())
        out["psi_allmasked_lat_minus_obs"] = float(w0[0, lat].mean() - w0[0, obs].mean())
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--label", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", required=True)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--run_dir", default="/tmp/study/runs")
    ap.add_argument("rest", nargs="*")
    a = ap.parse_args()
    from oemdm_spec.fast import build_config, train
    from oemdm_spec.fast.config import parse_overrides
    from oemdm_spec.tasks import get_task

    over = {**BACKBONE, "data": a.data, "steps": a.steps, "seed": a.seed, "threads": 1, "eval_every": 0,
            "final_eval_batches": 16, "ckpt_every": 10 ** 9, "num_samples": 1, "max_minutes": 0.0,
            "out_dir": a.run_dir, "name": f"{a.label}-s{a.seed}-{a.steps}-{a.data.replace(':', '_').replace(',', '_')}"}
    over.update(parse_overrides(a.rest))
    cfg = build_config(over)
    t0 = time.time()
    res = train(cfg, progress=False, overwrite=True)  # reruns reuse the run directory
    task = get_task(a.data[len("task:"):])
    L = task.seq_len
    rec = {"label": a.label, "seed": a.seed, "data": a.data, "steps": a.steps, "overrides": a.rest,
           "nelbo": res.eval.nelbo, "nelbo_se": res.eval.se if hasattr(res.eval, "se") else None,
           "L": L, "floor_bits": task.entropy_nats() / math.log(2), "wall_s": time.time() - t0}
    rec["bits_seq"] = rec["nelbo"] * L / math.log(2)
    if rec["nelbo_se"] is not None:
        rec["bits_seq_se"] = rec["nelbo_se"] * L / math.log(2)
    model = res.ema if res.ema is not None else res.model
    model.eval()
    if cfg.model != "ar" and isinstance(task, LatentsObservations) and not isinstance(task, PermutedLatents):
        rec.update(order_stats(model, task, seed=a.seed))
    elif isinstance(task, PermutedLatents):
        from oemdm_spec.fast import sample

        toks, _ = sample(model, 256, seed=a.seed)
        x = torch.empty_like(toks)
        x[:, task.read] = toks
        rec["valid_frac"] = float(LatentsObservations.valid(task, x).float().mean())
    with open(a.out, "a") as f:
        f.write(json.dumps(rec) + "\n")
    print(json.dumps(rec))


if __name__ == "__main__":
    main()
