r"""LoMDM's per-position formulas and its RLOO surrogate (spec §3 [derived] / [paper, App. E.1]).

With α_φ = 1 − t^{w_φ} (forward, reads x) and α̂_ψ = 1 − t^{w_ψ} (reverse, reads z_t):
A_φ = w_φ/t, Â_ψ = w_ψ/t, P(z_t^i = m | x) = t^{w_φ^i}, and per masked position
L_main = −(w_φ/t) log x_θ[x^i], L_velocity = (1/t)[w_φ log(w_φ/w_ψ) − w_φ + w_ψ].
"""

from __future__ import annotations

import sympy as sp

from .rates import l_velocity, velocity_of
from .schedules import t

__all__ = [
    "per_position_differences",
    "log_q_difference",
    "rloo_k2_difference",
]

w_phi, w_psi = sp.symbols("w_phi w_psi", positive=True)


def per_position_differences() -> list[sp.Expr]:
    """[A_φ − w_φ/t, P(masked) − t^{w_φ}, L_velocity − (1/t)(w_φ log(w_φ/w_ψ) − w_φ + w_ψ)]: all 0."""
    a_phi = velocity_of(1 - t**w_phi, t)
    a_psi = velocity_of(1 - t**w_psi, t)
    masked = 1 - (1 - t**w_phi)
    vel = l_velocity(a_phi, a_psi)
    want = (w_phi * sp.log(w_phi / w_psi) - w_phi + w_psi) / t
    return [
        sp.simplify(a_phi - w_phi / t),
        sp.simplify(masked - t**w_phi),
        sp.simplify(sp.expand_log(vel - want, force=True)),
    ]


def log_q_difference(length: int = 3) -> sp.Expr:
    r"""log q_φ(z | x) = Σ_i [m_i·w_i log t + (1 − m_i) log(1 − t^{w_i})] for m_i ∈ {0, 1} (a generic mask,
    symbols m_i, with the Bernoulli likelihood written as a product of powers). Returns the difference (0)."""
    w = sp.symbols(f"w1:{length + 1}", positive=True)
    m = sp.symbols(f"m1:{length + 1}", nonnegative=True)
    q = sp.Integer(1)
    for wi, mi in zip(w, m, strict=True):
        q *= (t**wi) ** mi * (1 - t**wi) ** (1 - mi)
    formula = sum((mi * wi * sp.log(t) + (1 - mi) * sp.log(1 - t**wi) for wi, mi in zip(w, m, strict=True)),
                  sp.Integer(0))
    return sp.simplify(sp.expand_log(sp.log(q), force=True) - formula)


def rloo_k2_difference() -> sp.Expr:
    r"""The RLOO surrogate mean_k L_k + (1/K) Σ_k (L_k − mean_{j≠k} L_j)·log q_k at K = 2 equals
    ½(L₁ + L₂) + ½(L₁ − L₂)(log q₁ − log q₂), the GenMD4 form (stop-gradients are values here). Returns 0."""
    l1, l2, q1, q2 = sp.symbols("L1 L2 logq1 logq2", real=True)
    losses, logq = [l1, l2], [q1, q2]
    k = 2
    general = sum(losses, sp.Integer(0)) / k + sum(
        ((losses[i] - sum((losses[j] for j in range(k) if j != i), sp.Integer(0)) / (k - 1)) * logq[i]
         for i in range(k)), sp.Integer(0)) / k
    genmd4 = (l1 + l2) / 2 + (l1 - l2) * (q1 - q2) / 2
    return sp.expand(general - genmd4)
