r"""Which schedules change the bound (issue item 6; spec §1 fact 5).

- A *shared* input-free schedule (the same α at every position, α̂ = α) with α(0) = 1, α(1) = 0 gives the same
  NELBO for a time-agnostic denoiser: g_i depends on t only through α(t), so u = α(t) turns
  ∫ −α'(t) g_i(α(t)) dt into ∫₀¹ g_i(u) du. Checked by computing the closed-form NELBO of several shared
  schedules with a generic denoiser (:mod:`oemdm_spec.symbolic.nelbo`) and comparing.
- A *common* monotone re-parametrisation t ↦ τ(t) of every α and α̂ leaves any OeMDM NELBO unchanged: the
  velocity of α∘τ is τ'·(A∘τ) (chain rule), the Eq. (2) integrand is positively homogeneous of degree 1 in
  (A, Â), so the integrand picks up exactly the Jacobian τ' and ∫ f(τ(t)) τ'(t) dt = ∫ f(τ) dτ. For the
  polynomial family τ(t) = t^p maps w to p·w, and :func:`polynomial_nelbo` checks it in closed form,
  L_velocity included (α̂ ≠ α).
- Per-position schedules with different *relative* shapes trace different paths: MDLM against ARM differ
  for a generic denoiser (:func:`mdlm_vs_arm`).
"""

from __future__ import annotations

from collections.abc import Sequence

import sympy as sp

from .kl import A, A_hat, eq2_integrand
from .nelbo import CETable, ar_nll, exact_nelbo, masked_sets
from .schedules import SymbolicSchedule, mdlm, t

__all__ = [
    "shared_schedule_differences",
    "reparametrised_velocity_difference",
    "integrand_homogeneity_difference",
    "polynomial_nelbo",
    "mdlm_vs_arm",
]


def shared_schedule_differences(schedules: Sequence[SymbolicSchedule], ce: CETable) -> list[sp.Expr]:
    """NELBO(schedule) − NELBO(MDLM) for each shared schedule, generic time-agnostic denoiser (all 0)."""
    length = schedules[0].length
    ref = exact_nelbo(mdlm(length), ce)
    return [sp.simplify(exact_nelbo(sch, ce) - ref) for sch in schedules]


def reparametrised_velocity_difference() -> sp.Expr:
    """Velocity of α(τ(t)) minus τ'(t)·A(τ(t)), for generic α and τ (0: the chain rule)."""
    alpha, tau = sp.Function("alpha"), sp.Function("tau")
    y = sp.Symbol("y")
    composed = alpha(tau(t))
    vel_composed = -sp.diff(composed, t) / (1 - composed)
    vel = (-sp.diff(alpha(y), y) / (1 - alpha(y))).subs(y, tau(t))
    return sp.simplify(vel_composed - sp.diff(tau(t), t) * vel)


def integrand_homogeneity_difference() -> sp.Expr:
    """Eq. (2) integrand at (λA, λÂ) minus λ times it at (A, Â): 0 (positively 1-homogeneous)."""
    lam, px = sp.symbols("lambda p_x", positive=True)
    diff = eq2_integrand(sp.log(px), lam * A, lam * A_hat) - lam * eq2_integrand(sp.log(px), A, A_hat)
    return sp.simplify(sp.expand_log(diff, force=True))


def polynomial_nelbo(w: Sequence[sp.Expr], w_hat: Sequence[sp.Expr], ce: CETable) -> sp.Expr:
    r"""L_OeMDM in closed form for forward α^i = 1 − t^{w_i}, reverse α̂^i = 1 − t^{ŵ_i} (input-free).

    Σ_i ∫₀¹ Σ_{M∋i} P(M | t) [ (w_i/t)·CE_i(M) + (1/t)(w_i log(w_i/ŵ_i) − w_i + ŵ_i) ] dt, with
    P(M | t) = Π_{j∈M} t^{w_j} Π_{j∉M} (1 − t^{w_j}). Every term expands into powers t^{c−1}, c > 0, whose
    integral is 1/c.
    """
    length = len(w)
    total = sp.Integer(0)
    for i in range(length):
        vel = w[i] * sp.log(w[i] / w_hat[i]) - w[i] + w_hat[i]
        for m in masked_sets(length, i):
            weight = sp.Integer(1)
            for j in range(length):
                weight *= t ** w[j] if j in m else (1 - t ** w[j])
            integrand = sp.expand(sp.powsimp(weight * (w[i] * ce[(i, m)] + vel) / t))
            for term in sp.Add.make_args(integrand):
                coeff, power = term.as_independent(t)
                exponent = sp.powsimp(power).as_base_exp()[1] + 1 if power != 1 else sp.Integer(1)
                total += coeff / exponent
    return total


def mdlm_vs_arm(ce: CETable, length: int) -> sp.Expr:
    """NELBO(MDLM) − NELBO(ARM at ε = 0): a nonzero linear form in the CE table."""
    return sp.expand(exact_nelbo(mdlm(length), ce) - ar_nll(ce, length))
