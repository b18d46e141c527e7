r"""Independent numeric baselines for the theorem checks: no code path of :mod:`oemdm_spec.reference`.

A time-agnostic denoiser on a tiny problem is a finite table of cross-entropies CE_i(M) (position i, masked
set M ∋ i). :func:`ce_table` reads that table by calling the denoiser directly, and the closed forms of
:mod:`oemdm_spec.symbolic.nelbo` turn it into numbers. :func:`plain_ar_nll` is the plainest possible
left-to-right likelihood: reveal the positions one by one in order π and add −log x_θ^{π_k}(y_k)[x^{π_k}].
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import sympy as sp
import torch
from torch import Tensor

from .nelbo import bd3lm_nelbo, exact_nelbo, masked_sets, mdlm_nelbo
from .schedules import SymbolicSchedule, eps

__all__ = ["ce_table", "plain_ar_nll", "mdlm_nelbo_value", "bd3lm_nelbo_value", "window_nelbo_polynomial",
           "max_ce_spread"]

Denoiser = Callable[[Tensor, Tensor], Tensor]


def _neg_log_prob(denoiser: Denoiser, z: Tensor, x: Tensor, vocab_size: int) -> Tensor:
    """−log softmax(denoiser(z))[i, x^i] for every position i, float64, (L,). The time input is a dummy 0.5:
    the theorem checks use time-agnostic denoisers."""
    logits = denoiser(z.unsqueeze(0), torch.full((1,), 0.5, dtype=torch.float64))[0].double()
    if logits.shape != (x.numel(), vocab_size):
        raise ValueError(f"denoiser returned {tuple(logits.shape)}, want ({x.numel()}, {vocab_size})")
    return -torch.log_softmax(logits, dim=-1).gather(-1, x.unsqueeze(-1)).squeeze(-1)


def ce_table(x: Tensor, denoiser: Denoiser, vocab_size: int) -> dict[tuple[int, frozenset[int]], float]:
    """CE_i(M) = −log x_θ^i(x masked on M)[x^i] for every i and M ∋ i (x is one clean sequence (L,))."""
    x = x.long().flatten()
    length = x.numel()
    table = {}
    cache: dict[frozenset[int], Tensor] = {}
    for i in range(length):
        for m in masked_sets(length, i):
            if m not in cache:
                z = x.clone()
                z[list(m)] = vocab_size
                cache[m] = _neg_log_prob(denoiser, z, x, vocab_size)
            table[(i, m)] = float(cache[m][i])
    return table


def plain_ar_nll(x: Tensor, denoiser: Denoiser, vocab_size: int, order: Sequence[int] | None = None) -> float:
    r"""−Σ_k log x_θ^{π_k}(y_k)[x^{π_k}], y_k = x with π_1..π_{k−1} revealed and the rest masked."""
    x = x.long().flatten()
    order = list(range(x.numel())) if order is None else list(order)
    z = torch.full_like(x, vocab_size)
    total = 0.0
    for pos in order:
        total += float(_neg_log_prob(denoiser, z, x, vocab_size)[pos])
        z[pos] = x[pos]
    return total


def mdlm_nelbo_value(table: dict[tuple[int, frozenset[int]], float], length: int) -> float:
    """MDLM's NELBO Σ E_t[(1/t)·CE at masked positions], exact (Beta integrals), from the CE table."""
    return float(mdlm_nelbo({k: sp.Float(v, 30) for k, v in table.items()}, length))


def bd3lm_nelbo_value(table: dict[tuple[int, frozenset[int]], float], length: int, block_size: int) -> float:
    """BD3LM's NELBO with block-causal conditioning, exact, from the CE table."""
    return float(bd3lm_nelbo({k: sp.Float(v, 30) for k, v in table.items()}, length, block_size))


def window_nelbo_polynomial(schedule: SymbolicSchedule, table: dict[tuple[int, frozenset[int]], float]) -> sp.Expr:
    """L_OeMDM(schedule) with α̂ = α as an exact polynomial in ε (ε-window schedules), from the CE table."""
    return sp.expand(exact_nelbo(schedule, {k: sp.Float(v, 30) for k, v in table.items()}))


def max_ce_spread(table: dict[tuple[int, frozenset[int]], float], length: int,
                  order: Sequence[int] | None = None) -> list[float]:
    """D_i = max_M |CE_i(M) − CE_i(y_i)| per position i (position order), y_i the AR state in order π."""
    order = list(range(length)) if order is None else list(order)
    out = []
    for i in range(length):
        y = frozenset(order[order.index(i):])
        out.append(max(abs(table[(i, m)] - table[(i, y)]) for m in masked_sets(length, i)))
    return out


__all__ += ["eps"]
