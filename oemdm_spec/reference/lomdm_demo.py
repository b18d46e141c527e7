r"""Does order learning work? MDLM vs LoMDM on the hidden chain (spec §3, "How sharp can the learned order be?").

Run ``python -m oemdm_spec.reference.lomdm_demo --help``. Every method uses the same backbone, steps, batch,
learning rate and seed; only the scheduler configuration differs (same code, :mod:`oemdm_spec.reference.networks`):

- ``mdlm``        (c1, c2) = (1, 0): MDLM;
- ``const``       (c1, c2) = (0.7, 0): the constant-w ≡ c1 control — MDLM's objective under another time change
  (spec §4), so a gap between it and MDLM is about time weighting, not order;
- ``lomdm``       (0.7, 0.65), NormSig: the paper's LoMDM;
- ``lomdm_sharp`` log-space exponents w = c1·exp(R·tanh(c2·(v − v̄)/R)): our sharper option.

Training samples u = −log t from the proper log-time density
:class:`~oemdm_spec.reference.time_densities.LogTimeMixture`
over the method's w range (for MDLM that is exactly t ~ U(0, 1]); ``--time shared`` gives every method the
density of LoMDM's default range (0.05, 1.35) — the control that separates the order from the time sampling;
``--time clamped`` uses the paper's t ∈ [1e-3, 1] instead (not a bound for w < 1).
Validation NELBOs always use the log-time estimator (a proper density on [0, ∞): an
unbiased estimate of the whole bound), reported in nats per token with their Monte-Carlo standard error.

Order measurements: |Spearman ρ| between w_φ(x) and the hidden chain index (mean over validation sequences),
and the fraction of unmask events of the first-hitting sampler (driven by w_ψ) that reveal a chain neighbour of
an already revealed position, next to the exact value for a uniformly random order (MDLM's).
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import asdict, dataclass, replace

import torch

from .networks import LoMDM, LoMDMConfig
from .objective import lomdm_loss
from .order_viz import order_heatmap, order_text
from .sampling import lomdm_sample
from .tasks import HiddenChain, neighbour_fraction, random_order_neighbour_fraction, spearman
from .time_densities import ClampedUniformTime, LogTimeMixture

__all__ = ["DemoConfig", "METHODS", "make_model", "train", "evaluate", "run", "show_orders", "main"]

METHODS: dict[str, dict[str, object]] = {
    "mdlm": {"c1": 1.0, "c2": 0.0},
    "const": {"c1": 0.7, "c2": 0.0},
    "lomdm": {"c1": 0.7, "c2": 0.65},
    "lomdm_sharp": {"c1": 1.0, "c2": 1.0, "order_param": "logspace", "log_range": math.log(30.0)},
}


@dataclass(frozen=True)
class DemoConfig:
    """The task, the backbone and the optimisation shared by every method of a comparison."""

    length: int = 16
    vocab_size: int = 16
    noise: float = 0.1
    task_seed: int = 0
    d_model: int = 32
    n_layer: int = 2
    n_head: int = 4
    batch: int = 64
    steps: int = 1000
    lr: float = 3e-3
    head_lr: float | None = None
    K: int = 2
    time: str = "logtime"
    n_val: int = 256
    n_u: int = 8
    n_order_samples: int = 128


def make_model(method: str, cfg: DemoConfig, seed: int, **overrides: object) -> LoMDM:
    """A LoMDM model for ``method`` (a key of :data:`METHODS`), with ``overrides`` of its scheduler constants."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got method={method!r}")
    consts = {**METHODS[method], **overrides}
    config = LoMDMConfig(
        vocab_size=cfg.vocab_size,
        length=cfg.length,
        d_model=cfg.d_model,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        dtype=torch.float32,
        **consts,  # type: ignore[arg-type]
    )
    return LoMDM(config, seed=seed)


def _time_density(model: LoMDM, kind: str) -> LogTimeMixture | ClampedUniformTime:
    if kind == "clamped":
        return ClampedUniformTime(1e-3)
    if kind == "shared":  # every method uses the density LoMDM's defaults train with (w ∈ (0.05, 1.35))
        return LogTimeMixture.for_range(0.05, 1.35)
    if kind != "logtime":
        raise ValueError(f"time must be 'logtime', 'shared' or 'clamped', got time={kind!r}")
    lo, hi = model.config.w_range
    return LogTimeMixture.for_range(lo, hi)


def train(
    method: str, cfg: DemoConfig, seed: int, task: HiddenChain | None = None, **overrides: object
) -> tuple[LoMDM, list[float]]:
    """Train one method for ``cfg.steps`` Adam steps on fresh task samples; returns the model and the per-step
    training NELBO estimates (nats per token; the surrogate term excluded)."""
    task = task or HiddenChain(cfg.length, cfg.vocab_size, cfg.noise, cfg.task_seed)
    model = make_model(method, cfg, seed, **overrides)
    head_params = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
    groups = [{"params": list(model.backbone.parameters()), "lr": cfg.lr}]
    if model.config.c2 != 0:
        groups.append({"params": head_params, "lr": cfg.head_lr or cfg.lr})
    opt = torch.optim.Adam(groups)
    density = _time_density(model, cfg.time)
    gen = torch.Generator().manual_seed(10_000 + seed)
    history = []
    for _ in range(cfg.steps):
        x = task.sample(cfg.batch, gen)
        loss = lomdm_loss(model, x, K=cfg.K, time=density, generator=gen)
        opt.zero_grad(set_to_none=True)
        loss.surrogate.backward()
        opt.step()
        history.append(float(loss.nelbo.mean()) / cfg.length)
    return model, history


@torch.no_grad()
def evaluate(model: LoMDM, task: HiddenChain, cfg: DemoConfig, seed: int = 0) -> dict[str, float]:
    """Validation NELBO (log-time estimator, nats/token, with its standard error) and the order measurements."""
    gen = torch.Generator().manual_seed(777 + seed)
    x = task.sample(cfg.n_val, torch.Generator().manual_seed(123_456))  # one validation set for every model
    w = model.w_phi(x).double()
    lo = float(w.min()) * 0.9
    hi = max(float(w.max()), lo)
    density = LogTimeMixture.for_range(lo, hi)  # proper on [0, ∞); λ_min < 2 w_min keeps the variance finite
    per_seq = torch.zeros(cfg.n_val, dtype=torch.float64)
    main = torch.zeros_like(per_seq)
    sq = torch.zeros_like(per_seq)
    reps = max(1, cfg.n_u // 2)
    for _ in range(reps):  # K = 2 samples per (x, u): each is an unbiased draw
        out = lomdm_loss(model, x, K=2, time=density, generator=gen)
        draws = out.per_sample.double()
        per_seq += draws.sum(-1)
        sq += (draws**2).sum(-1)
        main += out.main.double()
    n = 2 * reps
    mean_seq = per_seq / n
    var_seq = (sq / n - mean_seq**2).clamp_min(0) / max(1, n - 1)
    nelbo = float(mean_seq.mean()) / cfg.length
    # SE of the mean over sequences: data variance + within-sequence MC variance, both in the spread of mean_seq
    se = float(mean_seq.std() / math.sqrt(cfg.n_val)) / cfg.length
    rho = spearman(w, task.chain_index.double()) if model.config.c2 != 0 else torch.zeros(cfg.n_val)
    res = lomdm_sample(model, cfg.n_order_samples, generator=gen)
    return {
        "per_sequence": mean_seq / cfg.length,
        "nelbo": nelbo,
        "nelbo_se": se,
        "mc_se_within": float(var_seq.mean().sqrt()) / cfg.length / math.sqrt(cfg.n_val),
        "main": float(main.mean() / reps) / cfg.length,
        "entropy": task.entropy() / cfg.length,
        "abs_spearman": float(rho.abs().nan_to_num(0.0).mean()),
        "mean_spearman": float(rho.nan_to_num(0.0).mean()),
        "w_min": float(w.min()),
        "w_max": float(w.max()),
        "neighbour": neighbour_fraction(res.order, task.chain_index),
        "neighbour_random": random_order_neighbour_fraction(cfg.length),
    }


def run(
    cfg: DemoConfig, methods: list[str], seeds: list[int], verbose: bool = True, **overrides: object
) -> list[dict[str, object]]:
    """Train and evaluate every (method, seed); one row per run. ``overrides`` (e.g. c2=3.0) apply to every
    method except ``mdlm`` and ``const``, whose constants define them."""
    task = HiddenChain(cfg.length, cfg.vocab_size, cfg.noise, cfg.task_seed)
    rows = []
    for seed in seeds:
        for method in methods:
            t0 = time.perf_counter()
            extra = overrides if method not in ("mdlm", "const") else {}
            model, history = train(method, cfg, seed, task, **extra)
            metrics = evaluate(model, task, cfg, seed)
            row = {"method": method, "seed": seed, "train_s": time.perf_counter() - t0, "model": model, **metrics}
            base = [r for r in rows if r["method"] == methods[0] and r["seed"] == seed]
            if base and method != methods[0]:
                diff = metrics["per_sequence"] - base[0]["per_sequence"]
                row["diff"] = float(diff.mean())
                row["diff_se"] = float(diff.std() / math.sqrt(diff.numel()))
            rows.append(row)
            if verbose:
                print(
                    f"{method:12s} seed={seed} nelbo={metrics['nelbo']:.4f}±{metrics['nelbo_se']:.4f} "
                    f"(floor {metrics['entropy']:.4f}) |rho|={metrics['abs_spearman']:.3f} "
                    f"rho={metrics['mean_spearman']:+.3f} neigh={metrics['neighbour']:.3f} "
                    f"(random {metrics['neighbour_random']:.3f}) w∈[{metrics['w_min']:.3f},{metrics['w_max']:.3f}] "
                    f"{row['train_s']:.0f}s"
                    + (f" Δ vs {methods[0]} = {row['diff']:+.4f}±{row['diff_se']:.4f}" if "diff" in row else ""),
                    flush=True,
                )
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = DemoConfig()
    for name, value in asdict(defaults).items():
        kind = type(value) if value is not None else float
        p.add_argument(f"--{name.replace('_', '-')}", type=kind, default=value)
    p.add_argument("--methods", default="mdlm,const,lomdm,lomdm_sharp")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--override", default="", help="scheduler constants for the LoMDM methods, e.g. c1=1.0,c2=3.0")
    p.add_argument(
        "--png", default="", help="write the order heatmap of each method's last-seed model to PNG_<method>.png"
    )
    args = vars(p.parse_args(argv))
    torch.set_num_threads(args.pop("threads"))
    methods = args.pop("methods").split(",")
    seeds = [int(s) for s in args.pop("seeds").split(",")]
    png = args.pop("png")
    overrides = {k: float(v) for k, v in (kv.split("=") for kv in args.pop("override").split(",") if kv)}
    cfg = replace(defaults, **args)
    print(cfg, flush=True)
    rows = run(cfg, methods, seeds, **overrides)
    print(
        f"\n| method | seeds | NELBO (nats/token, log-time est.; mean ± sd over seeds) | Δ vs {methods[0]} "
        "(same seed) | |ρ| | neighbour frac. |"
    )
    print("|---|---|---|---|---|---|")
    for method in methods:
        sel = [r for r in rows if r["method"] == method]
        vals = torch.tensor([r["nelbo"] for r in sel])
        rho = torch.tensor([r["abs_spearman"] for r in sel])
        nb = torch.tensor([r["neighbour"] for r in sel])
        diffs = torch.tensor([r.get("diff", 0.0) for r in sel])
        print(
            f"| {method} | {len(sel)} | {vals.mean():.4f} ± {vals.std() if len(sel) > 1 else 0:.4f} "
            f"| {diffs.mean():+.4f} ± {diffs.std() if len(sel) > 1 else 0:.4f} | {rho.mean():.3f} | {nb.mean():.3f} |"
        )
    last = [r for r in rows if r["seed"] == seeds[-1]]
    show_orders(last, HiddenChain(cfg.length, cfg.vocab_size, cfg.noise, cfg.task_seed), png)


def show_orders(rows: list[dict[str, object]], task: HiddenChain, png: str, n: int = 24) -> None:
    """Print the text rendering and write a PNG heatmap (columns laid out along the hidden chain) per method."""
    for row in rows:
        model = row["model"]
        assert isinstance(model, LoMDM)
        res = lomdm_sample(model, n, generator=torch.Generator().manual_seed(0))
        method = row["method"]
        print(f"\n{method} (seed {row['seed']}), tokens along the chain, shade = unmask step (█ early, ░ late):")
        print(order_text(res.tokens[:6, task.perm], res.order[:6, task.perm]))
        if png:
            path = order_heatmap(
                res.order,
                f"{png}_{method}.png",
                columns=task.perm,
                column_label="hidden chain link",
                title=f"{method}: unmask step by chain link",
            )
            print(f"wrote {path}")


if __name__ == "__main__":  # pragma: no cover
    main()
