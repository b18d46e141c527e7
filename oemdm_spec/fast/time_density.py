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


def _log_count(rates: Tensor, valid: Tensor | None) -> Tensor | float:
    return math.log(rates.shape[-1]) if valid is None else valid.sum(-1).clamp_min(1).double().log()


def mixture_inverse_cdf(v: Tensor, rates: Tensor, iters: int = 60, valid: Tensor | None = None) -> Tensor:
    """Solve F(u) = v for F(u) = 1 − mean_i e^{−r_i u}; v (B,), rates (B, L) → u (B,), float64 bisection.
    With ``valid`` (B, L) the mixture runs over the real positions only."""
    v, rates = v.double(), rates.double()
    target = torch.log1p(-v)  # log(1 − v)
    if valid is None:
        r_max, r_min = rates.max(-1).values, rates.min(-1).values
    else:
        r_max = torch.where(valid, rates, -math.inf).max(-1).values
        r_min = torch.where(valid, rates, math.inf).min(-1).values
    lo = -target / r_max  # survival ≥ e^{−r_max u}: u ≥ −log(1−v)/r_max
    hi = -target / r_min
    log_n = _log_count(rates, valid)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        expo = -rates * mid[:, None]
        if valid is not None:
            expo = torch.where(valid, expo, -math.inf)
        log_surv = torch.logsumexp(expo, -1) - log_n
        above = log_surv > target  # survival too large → u must grow
        lo = torch.where(above, mid, lo)
        hi = torch.where(above, hi, mid)
    return 0.5 * (lo + hi)


def mixture_log_density(u: Tensor, rates: Tensor, valid: Tensor | None = None) -> Tensor:
    """log p(u) of the mixture (1/L) Σ_i r_i e^{−r_i u}; u (B,), rates (B, L) → (B,) (real positions only,
    with ``valid``)."""
    rates = rates.double()
    terms = rates.log() - rates * u.double()[:, None]
    if valid is not None:
        terms = torch.where(valid, terms, -math.inf)
    return torch.logsumexp(terms, -1) - _log_count(rates, valid)
