r"""The exact continuous NELBO for polynomial schedules with small exponents (issue 15 item 5).

LoMDM's exponents range over (0.05, 1.35). With w_min ≤ 0.05 (and 0.07 with a z-dependent reverse schedule)
``continuous_nelbo_exact`` used to return NaN: its first quadrature piece was mapped to log-time but the
integrand was still evaluated at t, which underflows (for w = 0.01, e^{−w u} is still 1e-3 at u = 700, i.e.
t ≈ 1e-304), so A = w/t was inf while t^w was still positive. These tests compare it against a closed form
obtained independently (by hand, below), and check that non-finite values raise instead of being returned.

Closed form (forward α^i = 1 − t^{w_i}, reverse α̂^i(z) = 1 − t^{ŵ_i(z)}, a time-agnostic denoiser p_i(z)).
Given x, z_t is x masked on a set S with probability P(S | t) = Π_{j∈S} t^{w_j} Π_{j∉S} (1 − t^{w_j}), and
A^i = w_i/t, Â^i = ŵ_i(z)/t. L_velocity(A, Â) = A log(A/Â) − A + Â is homogeneous of degree 1, so the
integrand of Eq. (2) on S is (1/t)·c(S) with

    c(S) = Σ_{i∈S} [−w_i log p_i(x_S)[x^i] + w_i log(w_i/ŵ_i(x_S)) − w_i + ŵ_i(x_S)],

and L = Σ_{S≠∅} c(S) · I(S), I(S) = ∫_0^1 t^{−1} P(S | t) dt. Expanding Π_{j∉S}(1 − t^{w_j}) =
Σ_{T⊆S^c} (−1)^{|T|} t^{W(T)} (W(T) = Σ_{j∈T} w_j) and using ∫_0^1 t^{a−1} dt = ∫_0^∞ e^{−a u} du = 1/a
for a > 0 (in log-time u = −log t: nothing underflows, the integral is elementary),

    I(S) = Σ_{T ⊆ S^c} (−1)^{|T|} / (W(S) + W(T)).

No quadrature and no schedule object is involved: only the exponents, the denoiser's table and this sum.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from oemdm_spec.reference.denoisers import TabularDenoiser
from oemdm_spec.reference.distributions import ForwardMasking
from oemdm_spec.reference.elbo import (
    continuous_integrand_log_time,
    continuous_nelbo_exact,
    continuous_nelbo_mc,
    discrete_nelbo,
)
from oemdm_spec.reference.exact import exact_nll
from oemdm_spec.reference.exponents import exponent
from oemdm_spec.reference.schedules import CosineSchedule, InputPolynomialSchedule, PolynomialSchedule
from oemdm_spec.reference.terms import l_main, l_velocity, row_loss

L, V = 3, 2


def w_hat_of(z: torch.Tensor, w_min: float) -> torch.Tensor:
    """A z-dependent reverse exponent ≥ w_min: grows with the position and with the number of revealed tokens."""
    revealed = (z < V).double().sum(-1, keepdim=True)
    pos = torch.arange(z.shape[-1], dtype=torch.float64)
    return w_min + 0.2 * pos + 0.15 * revealed + 0.05 * (z == 1).double()


def closed_form(x: torch.Tensor, w: list[float], denoiser: TabularDenoiser, w_hat_fn) -> tuple[float, float]:
    """(L_main, L_velocity) of one sequence x (L,) by the sum over S of c(S)·I(S) in the module docstring."""
    main = vel = 0.0
    for mask in itertools.product([False, True], repeat=L):
        S = [i for i in range(L) if mask[i]]
        if not S:
            continue
        rest = [j for j in range(L) if not mask[j]]
        W_S = sum(w[i] for i in S)
        I_S = sum(
            (-1) ** len(T) / (W_S + sum(w[j] for j in T))
            for r in range(len(rest) + 1)
            for T in itertools.combinations(rest, r)
        )
        z = x.clone()
        z[S] = V
        log_p = torch.log_softmax(denoiser(z.unsqueeze(0), torch.ones(1, dtype=torch.float64))[0], -1)
        w_hat = w_hat_fn(z.unsqueeze(0))[0].tolist() if w_hat_fn is not None else w
        for i in S:
            main += -w[i] * float(log_p[i, x[i]]) * I_S
            vel += (w[i] * math.log(w[i] / w_hat[i]) - w[i] + w_hat[i]) * I_S
    return main, vel


@pytest.mark.parametrize("w_min", [0.01, 0.05, 0.07])
@pytest.mark.parametrize("z_dependent", [False, True])
def test_exact_nelbo_matches_the_closed_form_for_small_exponents(w_min: float, z_dependent: bool) -> None:
    w = [w_min, 0.4, 1.3]
    forward = PolynomialSchedule(torch.tensor(w, dtype=torch.float64))
    reverse = InputPolynomialSchedule(lambda z: w_hat_of(z, w_min), L) if z_dependent else None
    denoiser = TabularDenoiser(L, V, seed=4)
    x = torch.tensor([[0, 1, 1], [1, 0, 1]])
    got = continuous_nelbo_exact(x, denoiser, forward, reverse, vocab_size=V, epsabs=1e-13, epsrel=1e-13)
    for b in range(x.shape[0]):
        want_main, want_vel = closed_form(x[b], w, denoiser, (lambda z: w_hat_of(z, w_min)) if z_dependent else None)
        # Tolerance: both sides are float64 sums of O(8) terms of size ≤ 1/w_min = 100 (the alternating sum I(S)
        # loses ≈ 1e-16·100·8 ≈ 1e-13 absolute), and the quadrature is asked for 1e-13 on a smooth,
        # exponentially decaying u-integrand; 1e-12·max(1, |value|) leaves a factor ~10 of slack.
        # The old code returned NaN here, which fails both comparisons.
        assert abs(float(got.main[b]) - want_main) <= 1e-12 * max(1.0, abs(want_main)), (float(got.main[b]), want_main)
        assert abs(float(got.velocity[b]) - want_vel) <= 1e-12 * max(1.0, abs(want_vel)), (
            float(got.velocity[b]),
            want_vel,
        )
        if not z_dependent:
            assert want_vel == 0.0 and float(got.velocity[b]) == 0.0  # α̂ = α: no velocity term at all


def test_log_time_integrand_is_finite_where_t_underflows() -> None:
    """At log t = −800 (t = 0 in float64) a w = 0.01 position is still masked with probability e^{−8} ≈ 3e-4:
    the log-time integrand must see it, finite, with tA = w exactly."""
    w = torch.tensor([0.01, 0.4, 1.3], dtype=torch.float64)
    forward = PolynomialSchedule(w)
    assert float(torch.exp(torch.tensor(-800.0, dtype=torch.float64))) == 0.0
    assert torch.equal(forward.log_time_velocity(-800.0), w)
    assert torch.allclose(forward.log_one_minus_alpha_log_time(-800.0), -800.0 * w, rtol=0, atol=0)
    terms = continuous_integrand_log_time(
        torch.tensor([[0, 1, 1]]), TabularDenoiser(L, V, seed=4), forward, None, -800.0, vocab_size=V
    )
    assert math.isfinite(float(terms.main)) and float(terms.main) > 0


def test_cosine_log_time_forms_match_the_t_forms() -> None:
    """The cosine schedule's log-time closed forms agree with the t-forms where t is an ordinary float, and stay
    finite (log(1 − α) = log 2 + 2 log(πt/4), tA = 2) where t underflows."""
    s = CosineSchedule(2)
    for log_t in (-0.5, -5.0, -18.0, -30.0):
        t = torch.tensor(math.exp(log_t), dtype=torch.float64)
        # rtol 1e-13: log sin and y/tan y evaluated two ways, each within a few ulps
        assert torch.allclose(s.log_one_minus_alpha_log_time(log_t), s.log_one_minus_alpha(t), rtol=1e-13)
        assert torch.allclose(s.log_time_velocity(log_t), s.velocity(t) * t, rtol=1e-13)
    assert torch.allclose(s.log_time_velocity(-900.0), torch.full((2,), 2.0, dtype=torch.float64), rtol=0, atol=0)
    assert bool(torch.isfinite(s.log_one_minus_alpha_log_time(-900.0)).all())


class NaNDenoiser(TabularDenoiser):
    """A denoiser that breaks: NaN logits for every state."""

    def __call__(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.full((*z.shape, self.vocab_size), math.nan, dtype=torch.float64)


def test_non_finite_values_raise_instead_of_being_returned() -> None:
    x = torch.tensor([[0, 1, 1]])
    forward = PolynomialSchedule(torch.tensor([0.3, 0.6, 1.0], dtype=torch.float64))
    bad = NaNDenoiser(L, V)
    with pytest.raises(ValueError, match="not finite"):
        continuous_nelbo_exact(x, bad, forward, vocab_size=V)
    with pytest.raises(ValueError, match="not finite"):
        continuous_nelbo_mc(x, bad, forward, vocab_size=V, n_t=4)
    with pytest.raises(ValueError, match="not finite"):
        discrete_nelbo(x, bad, forward, grid=4, vocab_size=V)
    with pytest.raises(ValueError, match="not finite"):
        exact_nll(x, bad, forward, grid=4, vocab_size=V)
    nan = torch.tensor([math.nan], dtype=torch.float64)
    one = torch.ones(1, dtype=torch.float64)
    with pytest.raises(ValueError, match="l_velocity"):
        l_velocity(nan, one)
    with pytest.raises(ValueError, match="l_main"):
        l_main(nan, one)
    with pytest.raises(ValueError, match="not finite"):
        row_loss(torch.tensor([[math.nan, 0.0]]), torch.tensor([0]), one, one)
    with pytest.raises(ValueError, match="exponent w"):
        exponent(torch.tensor([[math.nan, 0.0, 1.0]]), 0.7, 0.65)
    with pytest.raises(ValueError, match="log_t"):
        forward.log_time_velocity(math.nan)
    with pytest.raises(ValueError, match="log_prob"):
        ForwardMasking(x, torch.full((1, L), 0.5, dtype=torch.float64), V).log_prob(x)  # fine
        ForwardMasking(x, torch.full((1, L), math.nan, dtype=torch.float64), V, validate_args=False).log_prob(x)
    # an infinite value that is correct is still returned: log q of an impossible pattern is −inf
    lp = ForwardMasking(x, torch.ones(1, L, dtype=torch.float64), V).log_prob(torch.tensor([[2, 1, 1]]))
    assert float(lp) == -math.inf
