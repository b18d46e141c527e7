"""Issue item 5 and spec §3 order semantics: P(i next) = w_i/Σw by integration; sampler step; sharpness."""

from __future__ import annotations

import pytest
import sympy as sp

from oemdm_spec.symbolic import order


@pytest.mark.parametrize(("n", "i"), [(2, 0), (3, 1), (4, 3)])
def test_next_position_probability(n: int, i: int) -> None:
    integral, want = order.next_unmask_probability(n, i)
    assert sp.simplify(integral - want) == 0
    integral, want = order.next_unmask_probability_logtime(n, i)
    assert sp.simplify(integral - want) == 0
    assert order.next_unmask_time_independence(n, i) == 0


def test_coarse_step_unmask_probability() -> None:
    assert order.coarse_step_unmask_difference() == 0


def test_grid_warning_number() -> None:
    # P(still masked at the last uniform step) = (1/T)^w: 71% for w = 0.05, T = 1000 (spec §3).
    assert float(sp.Rational(1, 1000) ** sp.Rational(1, 20)) == pytest.approx(0.708, abs=1e-3)


def test_normsig_sharpness() -> None:
    c1, c2 = sp.symbols("c1 c2", positive=True)
    sig = list(sp.symbols("s1:7", real=True))
    assert sp.simplify(sum(order.normsig_weights(sig, c1, c2)) / 6 - c1) == 0  # mean w = c1 always
    for length in (4, 16):
        w = order.normsig_weights([sp.Integer(1)] + [sp.Integer(0)] * (length - 1), c1, c2)
        assert sp.simplify(w[0] - (c1 + c2 * (1 - sp.Rational(1, length)))) == 0
        assert sp.simplify(w[1] - (c1 - c2 / length)) == 0
    half = order.normsig_weights([sp.Integer(1)] * 4 + [sp.Integer(0)] * 4, sp.Rational(7, 10), sp.Rational(13, 20))
    assert (half[0], half[-1]) == (sp.Rational(41, 40), sp.Rational(3, 8))  # 1.025 against 0.375
    # with defaults, one high position against the rest: a ratio of about 2 for long sequences
    ratio = sp.limit((sp.Rational(7, 10) + sp.Rational(13, 20)) / sp.Rational(7, 10), c1, 0)
    assert 1.9 < float(ratio) < 2.0


def _plackett_luce_mode(weights: list[sp.Expr]) -> sp.Expr:
    """P(the order that reveals positions by decreasing weight) = Π_k w_(k) / Σ_{j ≥ k} w_(j)."""
    ws = sorted(weights, key=float, reverse=True)
    prob = sp.Integer(1)
    for k in range(len(ws)):
        prob *= ws[k] / sum(ws[k:])
    return prob


def test_default_parametrisation_gives_a_soft_order_bias() -> None:
    # spec §3 "How sharp can the learned order be?": with (c1, c2) = (0.7, 0.65) and the sharpest σ pattern
    # (a full ramp 1 … 0) the most likely of the 8! orders has probability < 1e-3 (uniform: 2.5e-5); weights
    # falling geometrically (ratio 10 per step) make it > 0.4.
    length = 8
    sigmas = [sp.Rational(length - 1 - k, length - 1) for k in range(length)]
    soft = _plackett_luce_mode(order.normsig_weights(sigmas, sp.Rational(7, 10), sp.Rational(13, 20)))
    sharp = _plackett_luce_mode([sp.Integer(10) ** (-k) for k in range(length)])
    uniform = sp.Rational(1, sp.factorial(length))
    assert uniform < soft < sp.Rational(1, 1000) and sharp > sp.Rational(2, 5)
