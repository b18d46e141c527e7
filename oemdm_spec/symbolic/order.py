r"""Order semantics of polynomial schedules (issue item 5; spec §3 "Order semantics", "Sampler", sharpness).

With α^i = 1 − t^{w_i} the reverse-time unmasking time τ_i of position i has P(τ_i ≤ t) = P(masked at t)
= t^{w_i}: density w_i t^{w_i − 1}. Reverse time runs from 1 down to 0, so the next position to unmask is the
one with the largest τ. In log-time u = −log t every hazard is constant (A dt = (w/t) dt = w du): competing
exponential clocks.
"""

from __future__ import annotations

import sympy as sp

from .schedules import t

__all__ = [
    "rate_symbols",
    "next_unmask_probability",
    "next_unmask_probability_logtime",
    "next_unmask_time_independence",
    "coarse_step_unmask_difference",
    "normsig_weights",
]

u, s = sp.symbols("u s", positive=True)


def rate_symbols(n: int) -> tuple[sp.Symbol, ...]:
    """Positive exponents w_1..w_n."""
    return sp.symbols(f"w1:{n + 1}", positive=True)


def next_unmask_probability(n: int = 3, i: int = 0) -> tuple[sp.Expr, sp.Expr]:
    r"""P(position i unmasks first) = ∫₀¹ w_i t^{w_i−1} Π_{j≠i} t^{w_j} dt, done by sympy, against w_i/Σ_j w_j.

    (τ_i has density w_i t^{w_i−1}; every other τ_j must be below it: probability t^{w_j} each.)
    Returns (the integral, w_i / Σ w).
    """
    w = rate_symbols(n)
    integrand = w[i] * t ** (w[i] - 1)
    for j in range(n):
        if j != i:
            integrand *= t ** w[j]
    integral = sp.integrate(sp.powsimp(integrand), (t, 0, 1), conds="none")
    return sp.simplify(integral), w[i] / sum(w)


def next_unmask_probability_logtime(n: int = 3, i: int = 0) -> tuple[sp.Expr, sp.Expr]:
    """The same in log-time u = −log t: ∫₀^∞ w_i e^{−w_i u} Π_{j≠i} e^{−w_j u} du = w_i/Σ w."""
    w = rate_symbols(n)
    integrand = w[i] * sp.exp(-sum(w) * u)
    return sp.simplify(sp.integrate(integrand, (u, 0, sp.oo), conds="none")), w[i] / sum(w)


def next_unmask_time_independence(n: int = 3, i: int = 0) -> sp.Expr:
    r"""P(i is first and the first event is after t) = P(i first)·P(first event after t): which position
    comes next is independent of when. Returns joint − product (0); first-event time has CDF t^{Σw}."""
    w = rate_symbols(n)
    total = sum(w)
    tau = sp.Symbol("tau", positive=True)
    joint = sp.integrate(w[i] * tau ** (total - 1), (tau, t, 1), conds="none")
    return sp.simplify(joint - (w[i] / total) * (1 - t**total))


def coarse_step_unmask_difference() -> sp.Expr:
    r"""Spec §3 "Sampler" [derived]: from t to s < t a masked position with α = 1 − t^w unmasks with
    probability a = (α(s) − α(t))/(1 − α(t)) = 1 − (s/t)^w. Returns the difference (0)."""
    w = sp.Symbol("w", positive=True)
    alpha = lambda x: 1 - x**w  # noqa: E731
    a = (alpha(s) - alpha(t)) / (1 - alpha(t))
    return sp.simplify(sp.powsimp(a - (1 - (s / t) ** w), force=True))


def normsig_weights(sigmas: list[sp.Expr], c1: sp.Expr, c2: sp.Expr) -> list[sp.Expr]:
    """LoMDM's w_i = c1 + c2·(σ_i − mean_j σ_j) from given sigmoid outputs σ_i (spec §3)."""
    mean = sum(sigmas, sp.Integer(0)) / len(sigmas)
    return [c1 + c2 * (x - mean) for x in sigmas]
