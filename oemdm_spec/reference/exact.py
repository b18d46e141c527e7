r"""Exact likelihood −log p_T(x) of the discrete-time reverse model, by enumeration (spec §1).

The reverse chain on a grid 0 = t_0 < … < t_T = 1 starts fully masked and carries unmasked positions
over. A path can end at x only if every revealed token equals its x^i, so the only states that matter are
"x with a set S of positions masked": 2^L of them. p_T(x) is then a forward recursion over those sets:

    P_T(S) = [S = all],     P_{k−1}(S') = Σ_{S ⊇ S'} P_k(S) · Π_{i ∈ S∖S'} â^i x_θ^i[x^i] · Π_{i ∈ S'} (1 − â^i),

with x_θ and â = (α̂(z, s) − α̂(z, t))/(1 − α̂(z, t)) evaluated at the state z = x masked on S, and
p_T(x) = P_0(∅). This is the ground truth the bounds are tested against; it costs T·2^L denoiser rows and
(2^L)² transitions per step, so it is for L ≲ 8.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._common import Denoiser, check_grid, check_x, enumerate_masks, require_finite
from .elbo import log_px
from .schedules import Schedule

__all__ = ["exact_nll"]


def exact_nll(
    x: Tensor,
    denoiser: Denoiser,
    reverse: Schedule,
    grid: Tensor | int = 100,
    *,
    vocab_size: int,
) -> Tensor:
    """−log p_T(x) for each sequence of x (B, L) under the reverse model on ``grid``. Returns (B,)."""
    x = check_x(x, reverse.length, vocab_size)
    grid = check_grid(grid)
    b, length = x.shape
    sets = enumerate_masks(length)  # (S, L): row r is the masked set
    n = sets.shape[0]
    # subset[r, r'] = set r' ⊆ set r; revealed[r, r', i] = i ∈ r ∖ r'.
    subset = ~(sets.unsqueeze(0) & ~sets.unsqueeze(1)).any(-1)
    revealed = sets.unsqueeze(1) & ~sets.unsqueeze(0)
    stays = sets.unsqueeze(0).expand(n, n, length)
    out = torch.empty(b, dtype=torch.float64)
    for j in range(b):
        xj = x[j].expand(n, length)
        z = torch.where(sets, torch.full_like(xj, vocab_size), xj)
        log_p = torch.full((n,), -torch.inf, dtype=torch.float64)
        log_p[-1] = 0.0  # the all-masked set is the last row
        for k in range(grid.numel() - 1, 0, -1):
            s = torch.full((n,), float(grid[k - 1]), dtype=torch.float64)
            t = torch.full((n,), float(grid[k]), dtype=torch.float64)
            # log(1 − â) = log(1 − α̂(s)) − log(1 − α̂(t)) exactly; log â = log(−expm1(·)).
            log_stay = reverse.log_one_minus_alpha(s, z) - reverse.log_one_minus_alpha(t, z)
            log_unmask = torch.log(-torch.expm1(log_stay))
            lp = log_px(denoiser, z, t, xj)  # (S, L), from each source state
            zero = torch.zeros((), dtype=torch.float64)
            reveal_term = torch.where(revealed, (log_unmask + lp).unsqueeze(1), zero).sum(-1)
            stay_term = torch.where(stays, log_stay.unsqueeze(1), zero).sum(-1)
            trans = torch.where(subset, reveal_term + stay_term, torch.full_like(reveal_term, -torch.inf))
            log_p = torch.logsumexp(log_p.unsqueeze(1) + trans, dim=0)
        out[j] = -log_p[0]  # the empty set is the first row
    # +inf is correct when the reverse model cannot produce x; NaN never is
    return require_finite("exact_nll", out, allow_inf=True)
