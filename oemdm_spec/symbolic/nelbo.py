r"""The continuous-time NELBO in closed form, for input-free α̂ = α and a time-agnostic denoiser.

Spec §1 fact 5 [derived]: since E[⟨z_t^i, m⟩]·A^i = −∂_tα^i, with α̂ = α (so L_velocity ≡ 0)

    L_OeMDM = Σ_i ∫₀¹ −∂_tα^i(t) · g_i(t) dt,     g_i(t) = E[CE_i | z_t^i masked] = Σ_M P(M | t) · CE_i(M),

where M runs over the sets of masked positions that contain i, P(M | t) = Π_{j≠i} (1 − α^j)^{[j∈M]} α^j^{[j∉M]}
(positions are independent), and CE_i(M) = −log x_θ^i(x masked on M)[x^i] is a number per (i, M): a
time-agnostic denoiser is a finite table. The CE values are either sympy symbols (a *generic* denoiser: then
an identity proven here holds for every denoiser) or numbers.

The integral is done exactly, interval by interval between the schedule's kinks, where every α^j is one
closed-form piece. For the piecewise-linear ε-window schedules the result is a polynomial in ε.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import sympy as sp

from .schedules import SymbolicSchedule, t

__all__ = [
    "CETable",
    "masked_sets",
    "ce_symbols",
    "piece_on",
    "conditional_ce",
    "exact_nelbo",
    "ar_nll",
    "mdlm_nelbo",
    "bd3lm_nelbo",
]

#: CE_i(M) for position i and masked set M ∋ i (0-indexed positions)
CETable = Mapping[tuple[int, frozenset[int]], sp.Expr]


def masked_sets(length: int, i: int) -> list[frozenset[int]]:
    """Every set M ⊆ {0..L−1} of masked positions that contains position i."""
    others = [j for j in range(length) if j != i]
    return [
        frozenset((i, *combo)) for r in range(len(others) + 1) for combo in itertools.combinations(others, r)
    ]


def ce_symbols(length: int) -> dict[tuple[int, frozenset[int]], sp.Symbol]:
    """A generic time-agnostic denoiser: one positive symbol c_{i,M} per position i and masked set M ∋ i."""
    table = {}
    for i in range(length):
        for m in masked_sets(length, i):
            tag = "".join("m" if j in m else "x" for j in range(length))
            table[(i, m)] = sp.Symbol(f"c{i}_{tag}", positive=True)
    return table


def piece_on(expr: sp.Expr, lo: sp.Expr, hi: sp.Expr) -> sp.Expr:
    """The closed-form piece of ``expr`` (a Piecewise in t, or not) valid on the open interval (lo, hi)."""
    if not isinstance(expr, sp.Piecewise):
        return expr
    mid = (sp.nsimplify(lo) + sp.nsimplify(hi)) / 2
    for e, cond in expr.args:
        if cond is sp.true or bool(cond.subs(t, mid)):
            return e
    raise ValueError(f"piece_on: no piece of {expr} holds on ({lo}, {hi})")


def conditional_ce(alphas: list[sp.Expr], i: int, ce: CETable) -> sp.Expr:
    """g_i(t) = Σ_{M ∋ i} P(M | t) CE_i(M), with the α^j already restricted to one smooth piece."""
    total = sp.Integer(0)
    for m in masked_sets(len(alphas), i):
        weight = sp.Integer(1)
        for j, a in enumerate(alphas):
            if j != i:
                weight *= (1 - a) if j in m else a
        total += weight * ce[(i, m)]
    return total


def _integrate(expr: sp.Expr, lo: sp.Expr, hi: sp.Expr) -> sp.Expr:
    """∫_lo^hi expr dt; a polynomial in t (the window schedules) is integrated term by term, fast."""
    if expr.is_polynomial(t):
        anti = sp.Poly(expr, t).integrate()
        return sp.expand(anti.as_expr().subs(t, hi) - anti.as_expr().subs(t, lo))
    return sp.integrate(expr, (t, lo, hi))


def exact_nelbo(schedule: SymbolicSchedule, ce: CETable, per_position: bool = False) -> sp.Expr | list[sp.Expr]:
    """Σ_i ∫₀¹ −∂_tα^i · g_i dt in closed form (α̂ = α, time-agnostic denoiser); see the module docstring.

    The integral is split at the schedule's kinks. With ``per_position`` the L terms are returned as a list.
    """
    cuts = [sp.Integer(0), *schedule.kinks, sp.Integer(1)]
    terms = []
    for i in range(schedule.length):
        term = sp.Integer(0)
        for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
            alphas = [piece_on(a, lo, hi) for a in schedule.alphas]
            density = -sp.diff(alphas[i], t)
            integrand = sp.expand(density * conditional_ce(alphas, i, ce))
            term += _integrate(integrand, lo, hi)
        terms.append(sp.expand(term))
    return terms if per_position else sp.expand(sum(terms, sp.Integer(0)))


def ar_nll(ce: CETable, length: int, order: list[int] | None = None) -> sp.Expr:
    r"""The autoregressive NLL in order π: Σ_k CE_{π_k}({π_k, …, π_L}) (the prefix π_1..π_{k−1} clean)."""
    order = list(range(length)) if order is None else list(order)
    return sum((ce[(order[k], frozenset(order[k:]))] for k in range(length)), sp.Integer(0))


def mdlm_nelbo(ce: CETable, length: int) -> sp.Expr:
    r"""MDLM's NELBO Σ_i ∫₀¹ (1/t)·P(masked set M | t)·CE_i(M) dt with P = t^{|M|}(1 − t)^{L−|M|}.

    ∫₀¹ t^{k−1}(1 − t)^{L−k} dt = B(k, L − k + 1) = (k − 1)!(L − k)!/L!: MDLM's own formula, integrated.
    """
    total = sp.Integer(0)
    for i in range(length):
        for m in masked_sets(length, i):
            k = len(m)
            total += sp.factorial(k - 1) * sp.factorial(length - k) / sp.factorial(length) * ce[(i, m)]
    return sp.expand(total)


def bd3lm_nelbo(ce: CETable, length: int, block_size: int) -> sp.Expr:
    r"""BD3LM's NELBO Σ_b E_{t∼U[0,1]} E_{z^b_t∼q_mdlm(·|x^b)} [(−α'/(1−α)) (−log p_θ(x^b | z^b_t, x^{<b}))].

    MDLM schedule α = 1 − t inside each block (so −α'/(1 − α) = 1/t); the conditioning is block-causal:
    blocks before b clean, blocks after b absent (for a bidirectional denoiser: fully masked); SUBS makes
    log p_θ a sum over the masked positions of block b. The t-integral is the Beta integral of
    :func:`mdlm_nelbo`, within a block of size L'.
    """
    if block_size < 1 or length % block_size:
        raise ValueError(f"bd3lm_nelbo: block_size={block_size!r} must divide length={length}")
    total = sp.Integer(0)
    for start in range(0, length, block_size):
        block = list(range(start, start + block_size))
        later = set(range(start + block_size, length))
        for r in range(1, block_size + 1):
            weight = sp.factorial(r - 1) * sp.factorial(block_size - r) / sp.factorial(block_size)
            for inner in itertools.combinations(block, r):
                m = frozenset(inner) | later
                total += weight * sum((ce[(i, m)] for i in inner), sp.Integer(0))
    return sp.expand(total)
