r"""The discrete-time bound as a right-endpoint Riemann sum (spec §1 "Riemann-sum form", issue item 2).

With α̂ = α the Bernoulli KL vanishes (KL_Bern(a ‖ a) = 0) and the per-step weight is
E[⟨z_{t_k}^i, m⟩]·a_k = (1 − α(t_k))·(α(t_{k−1}) − α(t_k))/(1 − α(t_k)) = α(t_{k−1}) − α(t_k), so

    L_T = Σ_i Σ_k (α^i(t_{k−1}) − α^i(t_k)) · g_i(t_k),     g_i(t) = E[CE_i | z_t^i masked],

a right-endpoint Riemann–Stieltjes sum of Σ_i ∫ −∂_tα^i g_i dt. Consequences, each proven here:

- inserting a point m into a cell (s, t) changes L_T by −(α(s) − α(m))·(g(t) − g(m)): so under nested
  refinement L_T decreases when g is non-decreasing, and increases when g is decreasing;
- for non-decreasing g, L_T is above the integral (each cell overestimates); for decreasing g it is below;
- a non-nested change (T → T + 1) can increase L_T even for non-decreasing g (an explicit example).
"""

from __future__ import annotations

from collections.abc import Sequence

import sympy as sp

from .kl import kl_bernoulli
from .nelbo import CETable, conditional_ce, piece_on
from .schedules import SymbolicSchedule, t

__all__ = [
    "step_weight_difference",
    "matched_bernoulli_kl",
    "riemann_nelbo",
    "refinement_difference",
    "right_sum_linear",
    "non_nested_counterexample",
]


def step_weight_difference() -> sp.Expr:
    """E[masked at t]·a − (α(s) − α(t)) = 0, for generic values α(s) > α(t)."""
    al_s, al_t = sp.symbols("alpha_s alpha_t", positive=True)
    a = (al_s - al_t) / (1 - al_t)
    return sp.simplify((1 - al_t) * a - (al_s - al_t))


def matched_bernoulli_kl() -> sp.Expr:
    """KL_Bern(a ‖ a), which is 0: with α̂ = α the discrete bound has no velocity term."""
    a = sp.Symbol("a", positive=True)
    return sp.simplify(kl_bernoulli(a, a))


def riemann_nelbo(schedule: SymbolicSchedule, ce: CETable, grid: Sequence[sp.Expr]) -> sp.Expr:
    """L_T in its Riemann-sum form Σ_i Σ_k (α^i(t_{k−1}) − α^i(t_k)) g_i(t_k) (α̂ = α, time-agnostic x_θ).

    ``grid`` must contain the schedule's kinks if α is piecewise (each α is evaluated through its pieces).
    """
    total = sp.Integer(0)
    for i in range(schedule.length):
        for s_k, t_k in zip(grid[:-1], grid[1:], strict=True):
            alphas = [piece_on(a, s_k, t_k) for a in schedule.alphas]
            g = conditional_ce(alphas, i, ce).subs(t, t_k)
            total += (alphas[i].subs(t, s_k) - alphas[i].subs(t, t_k)) * g
    return sp.expand(total)


def refinement_difference() -> sp.Expr:
    r"""Nested refinement of one cell (s, t) by a point m ∈ (s, t):

    [coarse] − [fine] = (α_s − α_t) g_t − [(α_s − α_m) g_m + (α_m − α_t) g_t] = (α_s − α_m)(g_t − g_m).

    Returns the difference of both sides (0). With α_s ≥ α_m the sign is the sign of g_t − g_m.
    """
    al_s, al_m, al_t, g_m, g_t = sp.symbols("alpha_s alpha_m alpha_t g_m g_t", real=True)
    coarse = (al_s - al_t) * g_t
    fine = (al_s - al_m) * g_m + (al_m - al_t) * g_t
    return sp.expand(coarse - fine - (al_s - al_m) * (g_t - g_m))


def right_sum_linear(g: sp.Expr) -> tuple[sp.Expr, sp.Expr]:
    r"""For α = 1 − t (weight dt) and a polynomial g(t): (L_T as a closed form in a symbolic T, the integral).

    L_T = Σ_{k=1}^T (1/T) g(k/T) is summed symbolically, so L_T − ∫₀¹ g is an explicit function of T whose sign
    and monotonicity the tests read off.
    """
    T = sp.Symbol("T", positive=True, integer=True)
    k = sp.Symbol("k", positive=True, integer=True)
    l_t = sp.simplify(sp.summation(g.subs(t, k / T) / T, (k, 1, T)))
    return l_t, sp.integrate(g, (t, 0, 1))


def non_nested_counterexample() -> dict[int, sp.Expr]:
    r"""A non-decreasing g for which T = 2 → T = 3 *increases* L_T (uniform grids are not nested).

    g is the continuous ramp 0 on [0, 1/2], 10(t − 1/2) on [1/2, 3/5], 1 after, and α = 1 − t. Returns
    {T: L_T} for T = 2, 3, 4, 6 as exact rationals: L_3 > L_2 while L_6 ≤ L_3 and L_4 ≤ L_2 (nested).
    """
    g = sp.Piecewise((0, t <= sp.Rational(1, 2)), (10 * (t - sp.Rational(1, 2)), t <= sp.Rational(3, 5)), (1, True))
    out = {}
    for T in (2, 3, 4, 6):
        out[T] = sum((sp.Rational(1, T) * g.subs(t, sp.Rational(k, T)) for k in range(1, T + 1)), sp.Integer(0))
    return out
