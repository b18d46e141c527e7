"""Evaluation: an unbiased Monte-Carlo estimate of the OeMDM bound (spec §4), antithetic, with its standard error.

Each model's process draws its own times from its evaluation density and returns a one-sample estimate per
sequence (``Process.sequence_bound``). The polynomial types (MDLM, GenMD4, LoMDM) integrate in log-time
u = −log t, where the hazard of a masked position is constant (A·dt = w·du) and P(masked) = e^{−w u}:

    L = ∫₀^∞ E_{z ~ q_u} Σ_i ⟨z^i, m⟩ [ −w_i log x_θ^i[x^i] + w_i log(w_i/ŵ_i) − (w_i − ŵ_i) ] du,

with u drawn from a mixture of exponentials (``time_density.py``). Why log-time: with exponents w < 1 a
t-clamped estimate is not a bound (a position is still masked at t_min with probability t_min^w, and that mass
would be dropped). BD3LM uses one u per block; AR is exact (no Monte-Carlo); the window schedules draw
t ~ U(0, 1). Every estimate pairs a uniform v with its antithetic partner 1 − v; the standard error is over
per-sequence pair means.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from .model import OeMDM
from .time_density import mixture_inverse_cdf, mixture_log_density

__all__ = ["EvalResult", "NonFiniteBound", "evaluate_bound", "mixture_inverse_cdf", "mixture_log_density",
           "sequence_bound"]


class NonFiniteBound(ValueError):
    """Non-finite weights or a non-finite bound estimate: no bound is reported (the CLI exits with code 2)."""


def nonfinite_parameters(model: torch.nn.Module) -> list[str]:
    return [name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())]


@torch.no_grad()
def sequence_bound(model: OeMDM, x: Tensor, v: Tensor, mask_u: Tensor, valid: Tensor | None = None) -> Tensor:
    """One-sample estimate of the bound per sequence (B,), nats per (real) token, from uniforms v (B,) or
    (B, n) for the times and ``mask_u`` (B, L) for the masks."""
    return model.process.sequence_bound(model, x, v, mask_u, valid)


@dataclass
class EvalResult:
    nelbo: float  # nats per token (mean of the bound estimate)
    se: float  # Monte-Carlo + data standard error of the mean
    n_sequences: int
    n_tokens: int
    estimator: str

    @property
    def bits(self) -> float:
        return self.nelbo / math.log(2)

    @property
    def perplexity(self) -> float:
        try:
            return math.exp(self.nelbo)
        except OverflowError:  # a finite but diverged model: the bound on perplexity is inf, not a crash
            return math.inf

    def describe(self, unit: str = "token") -> str:
        return (f"NELBO <= {self.nelbo:.4f} ± {self.se:.4f} nats/{unit} = {self.bits:.4f} ± "
                f"{self.se / math.log(2):.4f} bits/{unit}; perplexity <= {self.perplexity:.3f} "
                f"({self.n_sequences} sequences, {self.n_tokens} tokens)")


@torch.no_grad()
def evaluate_bound(model: OeMDM, batches: Iterable[Tensor], *, seed: int = 1234, repeats: int = 1,
                   device: torch.device | str = "cpu", max_batches: int | None = None) -> EvalResult:
    """Antithetic estimate of the NELBO over ``batches`` with a fixed seed.

    A batch is ids (B, L), or (ids, valid) for padded data: then padding is never masked nor scored and the
    bound is per real token, Σ_sequences NELBO / Σ real tokens (MDLM's convention for LM1B).

    Raises NonFiniteBound for non-finite weights (naming the first parameters) or a non-finite estimate:
    a NaN weight can make masked kernels report a bound of 0, which would read as a perfect model."""
    bad = nonfinite_parameters(model)
    if bad:
        raise NonFiniteBound(f"the model has non-finite weights ({len(bad)} tensor(s), e.g. {', '.join(bad[:3])}); "
                             "no bound can be computed from them")
    proc = model.process
    was_training = model.training
    model.eval()
    g = torch.Generator().manual_seed(seed)
    per_seq: list[Tensor] = []
    counts: list[Tensor] = []
    padded = False
    n_tok = 0
    for bi, batch in enumerate(batches):
        if max_batches is not None and bi >= max_batches:
            break
        x, valid = batch if isinstance(batch, (tuple, list)) else (batch, None)
        x = x.to(device)
        B, L = x.shape
        if valid is not None:
            padded = True
            valid = valid.to(device)
            counts.append(valid.sum(-1).double().cpu())
        else:
            counts.append(torch.full((B,), float(L), dtype=torch.float64))
        n_tok += int(counts[-1].sum())
        nv = proc.n_eval_uniforms(L)
        est = torch.zeros(B, dtype=torch.float64)
        for _ in range(repeats):
            v = torch.rand((B, nv), generator=g, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
            if nv == 1:
                v = v[:, 0]
            mu = torch.rand((2, B, L), generator=g, dtype=torch.float64)
            if proc.exact_bound:
                pair = sequence_bound(model, x, v.to(device), mu[0].to(device), valid).cpu()
            else:
                a = sequence_bound(model, x, v.to(device), mu[0].to(device), valid).cpu()
                b = sequence_bound(model, x, (1 - v).to(device), mu[1].to(device), valid).cpu()
                pair = 0.5 * (a + b)
            est += pair / repeats
        per_seq.append(est)
    model.train(was_training)
    if not per_seq:
        raise NonFiniteBound("no evaluation batch: the bound of an empty set is undefined")
    allv = torch.cat(per_seq)
    n = allv.numel()
    if not bool(torch.isfinite(allv).all()):
        k = int((~torch.isfinite(allv)).sum())
        raise NonFiniteBound(f"the bound estimate is not finite for {k} of {n} sequences (a diverged model); "
                             "no bound is reported")
    if not padded:
        se = float(allv.std(unbiased=True) / math.sqrt(n)) if n > 1 else math.nan
        return EvalResult(float(allv.mean()), se, n, n_tok, proc.estimator)
    # token-weighted: the ratio estimator Σ n_i e_i / Σ n_i, with its delta-method standard error
    w = torch.cat(counts)
    mean = float((w * allv).sum() / w.sum())
    se = float(((w * (allv - mean)).square().sum() * n / max(n - 1, 1)).sqrt() / w.sum()) if n > 1 else math.nan
    return EvalResult(mean, se, n, n_tok, proc.estimator + "; per real token (padding excluded)")
