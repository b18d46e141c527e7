r"""Velocities and the L_velocity term: examples, positivity, Bregman form, posterior-mean minimiser (spec §1).

Every ``*_difference`` returns an expression that is identically 0 when the claim holds.
"""

from __future__ import annotations

import sympy as sp

from .kl import A, A_hat

__all__ = [
    "l_velocity",
    "velocity_of",
    "masked_mass_difference",
    "velocity_ratio_form_difference",
    "ratio_penalty",
    "bregman_difference",
    "posterior_mean_stationarity",
    "bregman_pythagoras_difference",
]

r = sp.Symbol("r", positive=True)


def l_velocity(rate: sp.Expr = A, rate_hat: sp.Expr = A_hat) -> sp.Expr:
    """L_velocity integrand: A(log A − log Â) − (A − Â)  (Eq. 2, second term)."""
    return rate * (sp.log(rate) - sp.log(rate_hat)) - (rate - rate_hat)


def velocity_of(alpha: sp.Expr, t: sp.Symbol) -> sp.Expr:
    """A = −∂_tα/(1 − α), simplified."""
    return sp.simplify(-sp.diff(alpha, t) / (1 - alpha))


def masked_mass_difference() -> sp.Expr:
    r"""Spec §1 fact 5 [derived]: E[⟨z_t^i, m⟩]·A^i = (1 − α)·A = −∂_tα, for a generic α(t). Returns the difference."""
    tt = sp.Symbol("t", positive=True)
    alpha = sp.Function("alpha")(tt)
    return sp.simplify((1 - alpha) * (-sp.diff(alpha, tt) / (1 - alpha)) + sp.diff(alpha, tt))


def ratio_penalty(x: sp.Expr = r) -> sp.Expr:
    """φ(r) = r − 1 − log r, the function with L_velocity = A·φ(Â/A)."""
    return x - 1 - sp.log(x)


def velocity_ratio_form_difference() -> sp.Expr:
    r"""Issue item 4: L_velocity(A, Â) = A·φ(Â/A) with φ(r) = r − 1 − log r. Returns the difference (0).

    φ is strictly convex (φ'' = 1/r² > 0) with its only critical point at r = 1, where φ = 0: hence
    L_velocity ≥ 0 with equality iff Â = A. The tests check those three facts about φ with sympy.
    """
    return l_velocity() - A * ratio_penalty(A_hat / A)


def bregman_difference() -> sp.Expr:
    r"""Spec §1 fact 4 [derived]: L_velocity is the Bregman divergence D_F(A, Â) of F(a) = a log a − a.

    D_F(A, Â) = F(A) − F(Â) − F'(Â)(A − Â). Returns D_F − L_velocity (0).
    """
    y = sp.Symbol("y", positive=True)
    f = y * sp.log(y) - y
    fprime = sp.diff(f, y)
    bregman = f.subs(y, A) - f.subs(y, A_hat) - fprime.subs(y, A_hat) * (A - A_hat)
    return bregman - l_velocity()


def _discrete_law(k: int) -> tuple[tuple[sp.Expr, ...], tuple[sp.Symbol, ...]]:
    """Weights p_1..p_k (p_k = 1 − the others) and values A_1..A_k of a generic k-point law of A given z_t."""
    free = sp.symbols(f"q1:{k}", positive=True)
    weights = (*free, 1 - sum(free))
    values = sp.symbols(f"A1:{k + 1}", positive=True)
    return weights, values


def posterior_mean_stationarity(k: int = 3) -> tuple[sp.Expr, sp.Expr]:
    r"""Issue item 4 / spec §1 fact 4: argmin_Â E[L_velocity(A, Â) | z_t] = E[A | z_t].

    A given z_t takes k values A_j with posterior weights p_j. The expected loss is strictly convex in Â
    (second derivative Σ p_j A_j / Â² > 0); its unique stationary point is returned together with the
    posterior mean Σ p_j A_j: their difference is 0.
    """
    weights, values = _discrete_law(k)
    loss = sum((p * l_velocity(a_j, A_hat) for p, a_j in zip(weights, values, strict=True)), sp.Integer(0))
    (solution,) = sp.solve(sp.diff(loss, A_hat), A_hat)
    return solution, sp.expand(sum((p * a_j for p, a_j in zip(weights, values, strict=True)), sp.Integer(0)))


def bregman_pythagoras_difference(k: int = 3) -> sp.Expr:
    r"""E[D(A, Â)] = E[D(A, Ā)] + D(Ā, Â) with Ā = E[A | z_t]: the excess loss of any Â over the posterior
    mean is D(Ā, Â) ≥ 0 (the Bregman "bias–variance" split). Returns the difference (0)."""
    weights, values = _discrete_law(k)
    mean = sum((p * a_j for p, a_j in zip(weights, values, strict=True)), sp.Integer(0))
    lhs = sum((p * l_velocity(a_j, A_hat) for p, a_j in zip(weights, values, strict=True)), sp.Integer(0))
    rhs = sum((p * l_velocity(a_j, mean) for p, a_j in zip(weights, values, strict=True)), sp.Integer(0))
    return lhs - rhs - l_velocity(mean, A_hat)
