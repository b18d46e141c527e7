r"""Oracle generation orders as fixed per-position exponents of an OeMDM schedule.

Order semantics (spec ``shared/spec/oemdm-math.md`` §3 "Order semantics"): position i is masked with
probability t^{w_i} at time t, i.e. α_i(t) = 1 − t^{w_i} is its probability of being clean, and generation runs
from t = 1 (all masked) to t = 0. In log-time u = −log t each masked position has the constant hazard w_i, so the
next reveal is i with probability w_i / Σ_{masked j} w_j: **larger w_i = revealed earlier in generation**
(and masked later in the forward process: t^{w} is smaller for larger w at every t ∈ (0, 1)).

A two-group oracle gives the group to generate first w_hi and the other w_lo. With the paper's NormSig
parametrisation w = c1 + c2·NormSig(v), the largest split it can express for a first group of size m out of L
is w_hi = c1 + c2·(1 − m/L), w_lo = c1 − c2·m/L (σ = 1 on the group, 0 elsewhere; the mean of w stays c1):
:func:`normsig_two_level`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import Task
from .latents import LatentsObservations

__all__ = ["oracle_exponents", "normsig_two_level", "ORDERS", "prob_group_first"]

ORDERS = ("latents-first", "observations-first")


def normsig_two_level(n_first: int, length: int, c1: float = 0.7, c2: float = 0.65) -> tuple[float, float]:
    """(w_lo, w_hi): the extreme two-level NormSig exponents when ``n_first`` of ``length`` positions go first."""
    if not isinstance(length, int) or length < 1 or not isinstance(n_first, int) or not 0 <= n_first <= length:
        raise ValueError(f"normsig_two_level: need ints 0 <= n_first <= length, got n_first={n_first!r}, "
                         f"length={length!r}")
    if not (c1 > c2 >= 0):
        raise ValueError(f"normsig_two_level: need c1 > c2 >= 0, got c1={c1!r}, c2={c2!r}")
    f = n_first / length
    return c1 - c2 * f, c1 + c2 * (1 - f)


def oracle_exponents(task: Task, order: str = "latents-first", w_lo: float = 0.375, w_hi: float = 1.025) -> Tensor:
    """Fixed exponents w (L,) float64 for ``task``: ``w_hi`` on the group generated first, ``w_lo`` elsewhere.

    ``order="latents-first"``: latents get w_hi (the easy order of Kim et al.); ``"observations-first"``: the
    hard order. The defaults 0.375 / 1.025 are NormSig's (c1, c2) = (0.7, 0.65) with half the positions high
    (spec §3 "How sharp"); :func:`normsig_two_level` gives the extreme values for other group sizes.
    """
    if not isinstance(task, LatentsObservations):
        raise ValueError(f"oracle_exponents: task must be a LatentsObservations task, got task={task!r}")
    if order not in ORDERS:
        raise ValueError(f"oracle_exponents: order must be one of {ORDERS}, got order={order!r}")
    if not (math.isfinite(w_lo) and math.isfinite(w_hi) and 0 < w_lo < w_hi):
        raise ValueError(f"oracle_exponents: need finite 0 < w_lo < w_hi, got w_lo={w_lo!r}, w_hi={w_hi!r}")
    first = task.latent_positions if order == "latents-first" else task.observation_positions
    w = torch.full((task.seq_len,), float(w_lo), dtype=torch.float64)
    w[first] = float(w_hi)
    return w


def prob_group_first(n_first: int, n_second: int, w_first: float, w_second: float) -> float:
    r"""P(every position of the first group is revealed before any of the second) under independent
    exponential clocks (log-time hazards w_first, w_second):
    ∫_0^∞ d/du[(1 − e^{−w_f u})^{m}] e^{−n w_s u} du, substituting s = e^{−w_f u}:
    m·∫_0^1 (1 − s)^{m−1} s^{n w_s / w_f} ds = m·B(m, 1 + n w_s/w_f) (a Beta function, exact)."""
    if n_first < 1 or n_second < 0 or not (w_first > 0 and w_second > 0):
        raise ValueError(f"prob_group_first: need n_first >= 1, n_second >= 0, positive rates, got "
                         f"{n_first}, {n_second}, {w_first}, {w_second}")
    a = n_second * w_second / w_first
    return math.exp(math.log(n_first) + math.lgamma(n_first) + math.lgamma(1 + a) - math.lgamma(n_first + 1 + a))
