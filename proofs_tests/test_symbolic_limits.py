"""Issue items 7 and 8, and the ARM / block theorems at ε = 0 for a generic time-agnostic denoiser."""

from __future__ import annotations

import pytest
import sympy as sp

from oemdm_spec.symbolic import limits, nelbo
from oemdm_spec.symbolic import schedules as S

HALF_OPEN = sp.Interval.open(0, sp.Rational(1, 2))


def _nonnegative_on_eps_range(expr: sp.Expr) -> bool:
    """expr(ε) ≥ 0 on 0 < ε < 1/2, decided exactly by root counting (see limits.nonnegative_on)."""
    return limits.nonnegative_on(expr)


def test_nonnegative_on_decides_correctly() -> None:
    e = S.eps
    cases = [(e, True), (-e, False), (e - sp.Rational(1, 4), False), (1 - 2 * e, True), (sp.Integer(0), True),
             (e * (1 - 2 * e), True), (-e**4 / 27 - 4 * e**3 / 27 + 25 * e**2 / 108 + e / 6, True),
             ((e - sp.Rational(1, 4)) ** 2 - sp.Rational(1, 10**6), False), (e - 0.6, False)]
    for expr, want in cases:
        assert limits.nonnegative_on(expr) is want, expr
        # cross-check on a dense grid of (0, 1/2) (every case above that fails does so on an interval ≫ 1e-4)
        grid = [k / 20000 for k in range(1, 10000)]
        f = sp.lambdify(S.eps, expr)
        assert (min(float(f(x)) for x in grid) >= 0) is want, expr


@pytest.mark.parametrize("length", [2, 3, 4])
def test_item7_window_weights_and_mass(length: int) -> None:
    assert all(_nonnegative_on_eps_range(e) for e in limits.arm_window_inequalities(length))
    assert limits.arm_window_mass_differences(length) == [0] * length
    assert _nonnegative_on_eps_range(limits.bernoulli_inequality(length - 1))


@pytest.mark.parametrize(("length", "order"), [(2, None), (3, None), (3, [2, 0, 1]), (4, None)])
def test_item7_explicit_constant(length: int, order) -> None:
    ce = nelbo.ce_symbols(length)
    sched = S.arm(length) if order is None else S.fixed_order(order)
    weights = limits.arm_gap_weights(length, ce, order, sched)
    ranks = list(range(length)) if order is None else [order.index(i) for i in range(length)]
    constants = limits.arm_constant(length)
    for i, per_set in enumerate(weights):
        for kappa in per_set.values():
            assert kappa.subs(S.eps, 0) == 0 and _nonnegative_on_eps_range(kappa)
        total = sp.expand(sum(per_set.values()))
        assert _nonnegative_on_eps_range(constants[ranks[i]] * S.eps - total)
    # the spec's sharper total: Σ_i Σ_M κ_{i,M} ≤ (2L + L(L − 1)/2)·ε, so |gap| ≤ that·ε·max_i D_i
    grand_total = sp.expand(sum(sum(per_set.values()) for per_set in weights))
    assert _nonnegative_on_eps_range(limits.spec_arm_constant(length) * S.eps - grand_total)


@pytest.mark.parametrize(("length", "order"), [(3, None), (4, None), (3, [1, 2, 0])])
def test_arm_theorem_exact_at_eps_zero(length: int, order) -> None:
    ce = nelbo.ce_symbols(length)
    sched = S.arm(length) if order is None else S.fixed_order(order)
    gap = sp.expand(nelbo.exact_nelbo(sched, ce) - nelbo.ar_nll(ce, length, order))
    assert gap.subs(S.eps, 0) == 0


@pytest.mark.parametrize(("n_blocks", "b"), [(1, 1), (2, 1), (2, 2), (3, 2)])
def test_item8_block_change_of_variables(n_blocks: int, b: int) -> None:
    for expr in limits.block_window_limit(n_blocks, b):
        assert sp.limit(expr, S.eps, 0) == 0


@pytest.mark.parametrize(("length", "block_size"), [(2, 1), (2, 2), (4, 2)])
def test_block_theorem_exact_at_eps_zero(length: int, block_size: int) -> None:
    ce = nelbo.ce_symbols(length)
    gap = sp.expand(nelbo.exact_nelbo(S.block(length, block_size), ce) - nelbo.bd3lm_nelbo(ce, length, block_size))
    assert gap.subs(S.eps, 0) == 0


def test_block_extremes() -> None:
    assert limits.block_extremes_differences(3) == [0] * 6
    ce = nelbo.ce_symbols(3)
    assert sp.expand(nelbo.bd3lm_nelbo(ce, 3, 3) - nelbo.mdlm_nelbo(ce, 3)) == 0  # B = 1: MDLM
    assert sp.expand(nelbo.bd3lm_nelbo(ce, 3, 1) - nelbo.ar_nll(ce, 3)) == 0  # B = L: ARM
