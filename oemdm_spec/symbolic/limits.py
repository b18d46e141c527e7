r"""The ε → 0 limits: the ARM window bounds with an explicit O(ε) constant (issue item 7) and the block
change of variables (issue item 8). Spec §2.

**ARM constant.** Fix a time-agnostic denoiser and write CE_i(M) for the cross-entropy at position i when
the set M ∋ i is masked, y_i for the AR configuration (positions before i clean, i and after masked) and
D_i = max_M |CE_i(M) − CE_i(y_i)|. With α̂ = α,

    gap_i = ∫₀¹ −∂_tα^i (g_i(t) − CE_i(y_i)) dt       (−∂_tα^i has total mass 1),

and on the window I_i every other position is in its AR state with probability ≥ 1 − ε, so
P(config ≠ y_i | t) ≤ 1 − (1 − ε)^{L−1} ≤ (L − 1)ε, while the mass of −∂_tα^i outside I_i is n_i·ε, with
n_i ∈ {0, 1, 2} the number of ε-segments of position i (n_i = [i > 1] + [i < L]). Hence

    |L_OeMDM(α_arm,ε) − AR-NLL| ≤ ε · Σ_i (L − 1 + n_i) · D_i ≤ ε·(L + 1)·Σ_i D_i.

The exact gap weights (:func:`arm_gap_weights`) also satisfy the spec's sharper total constant
2L + L(L − 1)/2 (:func:`spec_arm_constant`) for the L the tests reach.

:func:`arm_window_inequalities`, :func:`arm_window_mass_differences`, :func:`bernoulli_inequality` and
:func:`arm_gap_weights` are the sympy steps of this argument; :func:`arm_constant` is the constant.
"""

from __future__ import annotations

import sympy as sp

from .nelbo import CETable, exact_nelbo, masked_sets, piece_on
from .schedules import SymbolicSchedule, arm, eps, mdlm, t, window_bounds

__all__ = [
    "nonnegative_on",
    "segment_count",
    "arm_window_inequalities",
    "arm_window_mass_differences",
    "bernoulli_inequality",
    "arm_gap_weights",
    "arm_constant",
    "spec_arm_constant",
    "block_window_limit",
    "block_extremes_differences",
]


def nonnegative_on(expr: sp.Expr, lo: sp.Expr = 0, hi: sp.Expr = sp.Rational(1, 2)) -> bool:
    """True iff the polynomial ``expr`` in ε is ≥ 0 on the open interval (lo, hi), decided exactly.

    The square-free part of the polynomial has no root strictly inside (Sturm counting via ``count_roots``
    at the endpoints is exact for rational endpoints), so the sign is constant there; the sign at the midpoint
    then decides. A polynomial with roots inside is reported False even if they were all of even multiplicity.
    """
    poly = sp.Poly(sp.nsimplify(sp.expand(expr), rational=True), eps)
    if poly.is_zero:
        return True
    square_free = sp.Poly(sp.quo(poly, sp.gcd(poly, poly.diff(eps))), eps)
    inside = square_free.count_roots(lo, hi) - sum(1 for x in (lo, hi) if square_free.eval(x) == 0)
    return bool(inside == 0 and poly.eval((sp.nsimplify(lo) + sp.nsimplify(hi)) / 2) > 0)


def segment_count(i: int, length: int) -> int:
    """n_i: how many ε-segments (before/after its window) position i (1-indexed) has."""
    return int(i > 1) + int(i < length)


def arm_window_inequalities(length: int) -> list[sp.Expr]:
    r"""Expressions that must be ≥ 0 for 0 < ε < 1/2, one per (window I_i, other position j, endpoint):
    α^j − (1 − ε) for j < i (earlier positions are clean with probability ≥ 1 − ε) and ε − α^j for j > i
    (later ones are masked with probability ≥ 1 − ε). Each α^j is linear on I_i, so the endpoints suffice."""
    schedule = arm(length)
    out = []
    for i in range(1, length + 1):
        lo, hi = window_bounds(i, length)
        for j in range(1, length + 1):
            if j == i:
                continue
            a_j = piece_on(schedule.alphas[j - 1], lo, hi)
            for point in (lo, hi):
                value = a_j.subs(t, point)
                out.append(sp.simplify(value - (1 - eps) if j < i else eps - value))
    return out


def arm_window_mass_differences(length: int) -> list[sp.Expr]:
    """∫_{I_i} −∂_tα^i dt − (1 − n_i ε) for every i (all 0)."""
    schedule = arm(length)
    out = []
    for i in range(1, length + 1):
        lo, hi = window_bounds(i, length)
        out.append(sp.simplify(schedule.mass(i - 1, lo, hi) - (1 - segment_count(i, length) * eps)))
    return out


def bernoulli_inequality(n: int) -> sp.Expr:
    """(1 − ε)^n − (1 − nε), which is ≥ 0 for 0 < ε < 1: the AR configuration has weight ≥ 1 − nε."""
    return sp.expand((1 - eps) ** n - (1 - n * eps))


def arm_gap_weights(length: int, ce: CETable, order: list[int] | None = None,
                    schedule: SymbolicSchedule | None = None) -> list[dict[frozenset[int], sp.Expr]]:
    r"""The exact gap as weights: gap_i = Σ_{M ≠ y_i} κ_{i,M}(ε)·(CE_i(M) − CE_i(y_i)).

    Computed from the closed-form NELBO with a generic denoiser (``ce`` of symbols); returns, per position i
    (in position order), {M: κ_{i,M}(ε)} — polynomials in ε that the tests show vanish at ε = 0, are
    non-negative, and sum to at most (L − 1 + n_i)·ε.
    """
    order = list(range(length)) if order is None else list(order)
    schedule = arm(length) if schedule is None else schedule
    per_pos = exact_nelbo(schedule, ce, per_position=True)
    out = []
    for i in range(length):
        k = order.index(i)
        y = frozenset(order[k:])
        gap = sp.expand(per_pos[i] - ce[(i, y)])
        weights = {m: sp.expand(gap.coeff(ce[(i, m)])) for m in masked_sets(length, i) if m != y}
        # the coefficients of the other CE values sum to minus that of CE_i(y_i): gap is a sum of differences
        rebuilt = sum((kappa * (ce[(i, m)] - ce[(i, y)]) for m, kappa in weights.items()), sp.Integer(0))
        if sp.expand(rebuilt - gap) != 0:
            raise AssertionError("arm_gap_weights: the gap is not a combination of CE differences")
        out.append(weights)
    return out


def arm_constant(length: int) -> list[int]:
    """The explicit constants C_i = L − 1 + n_i with |gap_i| ≤ C_i·ε·D_i (1-indexed i in order)."""
    return [length - 1 + segment_count(i, length) for i in range(1, length + 1)]


def spec_arm_constant(length: int) -> sp.Rational:
    """The spec's total constant 2L + L(L − 1)/2: |gap| ≤ (2L + L(L − 1)/2)·ε·max_i D_i.

    Sharper than Σ_i C_i for L ≥ 3 (it uses that a neighbour's wrong-state probability grows linearly across
    the window instead of sitting at ε); the tests verify it on the exact gap weights for small L.
    """
    return sp.Integer(2 * length) + sp.Rational(length * (length - 1), 2)


def block_window_limit(n_blocks: int, b: int) -> tuple[sp.Expr, sp.Expr, sp.Expr]:
    r"""Issue item 8: on J_b, t' = Bt − (B − b) ∈ [0, 1] turns block b's integral into BD3LM's.

    Returns three expressions, each 0 at ε = 0 (the tests take the limit):
    (1 − α_bd(t(t'))) − t'            (the masking probability is MDLM's at time t'),
    A_bd(t(t'))·dt/dt' − (−α'/(1 − α))(t') for α = 1 − t'   (the weight becomes BD3LM's α'/(1 − α)),
    and the mass of −∂_tα_bd on J_b minus 1.
    """
    tp = sp.Symbol("tprime", positive=True)
    lo, hi = window_bounds(b, n_blocks)
    alpha = piece_on(arm(n_blocks).alphas[b - 1], lo, hi)  # any position of block b has its window's α
    t_of = (tp + n_blocks - b) / n_blocks
    one_minus = sp.simplify(1 - alpha.subs(t, t_of))
    rate = sp.simplify((-sp.diff(alpha, t) / (1 - alpha)).subs(t, t_of) * sp.diff(t_of, tp))
    a_mdlm = mdlm(1).alphas[0].subs(t, tp)
    weight = sp.simplify(-sp.diff(a_mdlm, tp) / (1 - a_mdlm))
    mass = sp.simplify(alpha.subs(t, lo) - alpha.subs(t, hi))
    return one_minus - tp, rate - weight, mass - 1


def block_extremes_differences(length: int) -> list[sp.Expr]:
    """Block size L gives α = 1 − t (MDLM) and block size 1 gives α_arm,ε: α differences, all 0."""
    from .schedules import block

    out = [sp.simplify(a - b) for a, b in zip(block(length, length).alphas, mdlm(length).alphas, strict=True)]
    out += [sp.simplify(a - b) for a, b in zip(block(length, 1).alphas, arm(length).alphas, strict=True)]
    return out

