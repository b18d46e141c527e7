"""Issue items 1–3 and the posterior: sympy reduces each difference to 0 (or a limit to its value)."""

from __future__ import annotations

import pytest
import sympy as sp

from oemdm_spec.symbolic import kl


def test_posterior_is_bayes_rule() -> None:
    marginal, posterior = kl.posterior_difference()
    assert kl.prove_zero(marginal) and kl.prove_zero(posterior)


@pytest.mark.parametrize("vocab", [2, 3, 4])
def test_item1_reverse_step_kl(vocab: int) -> None:
    assert kl.prove_zero(kl.reverse_step_kl_difference(vocab))


def test_item2_first_order_term_is_the_eq2_integrand() -> None:
    assert kl.unmask_probability_first_order() == 0  # a = A·dt + O(dt²)
    limit, integrand = kl.reverse_step_first_order_limit()
    assert kl.prove_zero(limit - integrand)


@pytest.mark.parametrize("vocab", [2, 3, 5])
def test_item3_eq2_integrand_is_generalized_kl_of_rates(vocab: int) -> None:
    assert kl.prove_zero(kl.generalized_kl_difference(vocab))


def test_prove_zero_rejects_a_false_identity() -> None:
    assert not kl.prove_zero(kl.reverse_step_kl_difference(3) + sp.Symbol("a", positive=True) * 1e-3)
