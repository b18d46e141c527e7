"""Issue item 4: L_velocity ≥ 0 with equality iff Â = A; Bregman form; posterior-mean minimiser."""

from __future__ import annotations

import pytest
import sympy as sp

from oemdm_spec.symbolic import kl, rates


def test_velocity_term_is_a_times_convex_penalty() -> None:
    assert kl.prove_zero(rates.velocity_ratio_form_difference())
    phi, r = rates.ratio_penalty(), rates.r
    assert sp.solve(sp.diff(phi, r), r) == [1]  # the only critical point
    assert sp.diff(phi, r, 2).is_positive  # strictly convex on r > 0
    assert phi.subs(r, 1) == 0  # so φ ≥ 0, = 0 only at r = Â/A = 1
    assert rates.l_velocity(kl.A, kl.A) == 0  # α̂ = α ⇒ L_velocity ≡ 0 (spec fact 3)


def test_velocity_term_is_bregman() -> None:
    assert kl.prove_zero(rates.bregman_difference())


@pytest.mark.parametrize("k", [2, 3])
def test_minimiser_is_posterior_mean(k: int) -> None:
    solution, mean = rates.posterior_mean_stationarity(k)
    assert sp.simplify(solution - mean) == 0
    assert kl.prove_zero(rates.bregman_pythagoras_difference(k))
