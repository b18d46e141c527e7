"""The evaluation time density in log-time u = −log t (spec §4): a per-sequence mixture of exponentials.

With per-position exponents w the hazard of a masked position is constant in u (A·dt = w·du) and
P(masked) = e^{−w u}. The bound's estimator draws u from p(u) = (1/L) Σ_i r_i e^{−r_i u} with r_i = w_i / 2 and
weights by 1/p(u): r = w/2 (not w) keeps the estimator's variance finite, because E[(masked_i/p)²] ∝
∫ e^{−w u}/p(u) du < ∞ only if p decays slower than e^{−w u}.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def mixture_inverse_cdf(v: Tensor, rates: Tensor, iters: int = 60) -> Tensor:
    """Solve F(u) = v for F(u) = 1 − mean_i e^{−r_i u}; v (B,), rates (B, L) → u (B,), float64 bisection."""
    v, rates = v.double(), rates.double()
    target = torch.log1p(-v)  # log(1 − v)
    lo = -target / rates.max(-1).values  # survival ≥ e^{−r_max u}: u ≥ −log(1−v)/r_max
    hi = -target / rates.min(-1).values
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        log_surv = torch.logsumexp(-rates * mid[:, None], -1) - math.log(rates.shape[-1])
        above = log_surv > target  # survival too large → u must grow
        lo = torch.where(above, mid, lo)
        hi = torch.where(above, hi, mid)
    return 0.5 * (lo + hi)


def mixture_log_density(u: Tensor, rates: Tensor) -> Tensor:
    """log p(u) of the mixture (1/L) Σ_i r_i e^{−r_i u}; u (B,), rates (B, L) → (B,)."""
    rates = rates.double()
    return torch.logsumexp(rates.log() - rates * u.double()[:, None], -1) - math.log(rates.shape[-1])
