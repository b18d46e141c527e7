"""The Pyro processes and the samplers, each against an independent computation.

- Pyro's ``Trace_ELBO`` on (reverse_model, forward_guide) vs the closed-form L_T;
- forward / reverse ``sample`` vs their ``log_prob`` (chi-square);
- the ancestral sampler's output law vs the exact p_T(x) from the dynamic programme (chi-square);
- the first-hitting sampler's first-position law vs w_i / Σ_j w_j.
"""

from __future__ import annotations

import itertools
import math

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO
from scipy import stats

from oemdm_spec.reference.denoisers import TabularDenoiser
from oemdm_spec.reference.distributions import ForwardMasking, MaskedReverseStep, forward_guide, reverse_model
from oemdm_spec.reference.elbo import discrete_nelbo
from oemdm_spec.reference.exact import exact_nll
from oemdm_spec.reference.sampling import ancestral_sample, first_hitting_sample, power_grid
from oemdm_spec.reference.schedules import InputPolynomialSchedule, MDLMSchedule, PolynomialSchedule

L, V = 3, 2
P_MIN = 1e-4  # chi-square tests fail below this p-value: a false alarm once in 10^4 runs


def chi_square_against(samples: torch.Tensor, log_probs: torch.Tensor, support: torch.Tensor) -> float:
    """p-value of the counts of ``samples`` (rows) over ``support`` (rows) against exp(log_probs)."""
    codes = {tuple(row.tolist()): i for i, row in enumerate(support)}
    counts = torch.zeros(len(codes))
    for row in samples:
        counts[codes[tuple(row.tolist())]] += 1
    expected = log_probs.exp() * samples.shape[0]
    keep = expected > 0
    assert counts[~keep].sum() == 0, "a sample landed on a zero-probability value"
    return float(
        stats.chisquare(
            counts[keep].numpy(), expected[keep].numpy() * counts.sum().item() / expected[keep].sum().item()
        ).pvalue
    )


def all_states(length: int, mask_id: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product(range(mask_id + 1), repeat=length)))


def test_forward_masking_samples_follow_log_prob() -> None:
    x = torch.tensor([1, 0, 1])
    alpha = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    d = ForwardMasking(x, alpha, mask_id=V)
    torch.manual_seed(0)
    samples = d.sample((20000,))
    support = all_states(L, V)
    log_probs = d.log_prob(support)
    torch.testing.assert_close(log_probs.exp().sum(), torch.tensor(1.0, dtype=torch.float64))
    assert chi_square_against(samples, log_probs, support) > P_MIN


def test_reverse_step_samples_follow_log_prob() -> None:
    z_t = torch.tensor([V, 1, V])
    probs = torch.tensor([[0.3, 0.7], [0.5, 0.5], [0.9, 0.1]], dtype=torch.float64)
    d = MaskedReverseStep(z_t, probs, torch.tensor([0.6, 0.2, 0.3], dtype=torch.float64), mask_id=V)
    torch.manual_seed(1)
    samples = d.sample((20000,))
    support = all_states(L, V)
    log_probs = d.log_prob(support)
    torch.testing.assert_close(log_probs.exp().sum(), torch.tensor(1.0, dtype=torch.float64))
    assert chi_square_against(samples, log_probs, support) > P_MIN
    # The unmasked position is carried over: changing it is impossible.
    assert d.log_prob(torch.tensor([0, 0, V])) == -math.inf


def test_pyro_trace_elbo_equals_closed_form_discrete_bound() -> None:
    den = TabularDenoiser(L, V, seed=2)
    x = torch.tensor([[0, 1, 1], [1, 1, 0]])
    forward = InputPolynomialSchedule(lambda u: 0.8 + 0.5 * u.double(), L)
    reverse = InputPolynomialSchedule(lambda z: 1.0 + 0.25 * z.double(), L)
    T = 5
    closed = discrete_nelbo(x, den, forward, reverse, grid=T, vocab_size=V).sum()
    pyro.set_rng_seed(0)
    elbo = Trace_ELBO(num_particles=400, vectorize_particles=True, max_plate_nesting=1)
    losses = torch.tensor([elbo.loss(reverse_model, forward_guide, x, den, forward, reverse, T, V) for _ in range(12)])
    mean, se = losses.mean(), losses.std() / math.sqrt(len(losses))
    # Trace_ELBO's loss is an unbiased estimate of L_T (the sum over the batch): within 4.5 standard errors.
    assert abs(mean.item() - closed.item()) < 4.5 * se.item(), (mean, closed, se)
    assert se < 0.05  # the comparison is sharp: the standard error is a few hundredths of a nat


def test_ancestral_sampler_law_equals_exact_likelihood() -> None:
    den = TabularDenoiser(L, V, seed=3)
    reverse = InputPolynomialSchedule(lambda z: 0.7 + 0.6 * (z == V).double().mean(-1, keepdim=True).expand(z.shape), L)
    grid = power_grid(6, 1.5)
    gen = torch.Generator().manual_seed(0)
    result = ancestral_sample(den, reverse, vocab_size=V, n_samples=20000, grid=grid, generator=gen)
    support = torch.tensor(list(itertools.product(range(V), repeat=L)))
    log_probs = -exact_nll(support, den, reverse, grid=grid, vocab_size=V)
    assert chi_square_against(result.tokens, log_probs, support) > P_MIN
    assert (result.order >= 0).all() and (result.order < 6).all()


def test_cache_skips_calls_without_changing_the_law() -> None:
    den = TabularDenoiser(L, V, seed=4)
    schedule = MDLMSchedule(L)
    gen = torch.Generator().manual_seed(1)
    cached = ancestral_sample(den, schedule, vocab_size=V, n_samples=1, grid=64, generator=gen)
    gen = torch.Generator().manual_seed(1)
    uncached = ancestral_sample(den, schedule, vocab_size=V, n_samples=1, grid=64, generator=gen, time_agnostic=False)
    # Same random stream, same denoiser outputs: identical samples; far fewer calls with the cache.
    assert torch.equal(cached.tokens, uncached.tokens)
    # Without the cache: one call per step until the last reveal (the loop stops once nothing is masked).
    assert uncached.denoiser_calls == int(uncached.order.max()) + 1 > L + 1
    # With it: one call at the start and one after each step that revealed something.
    assert cached.denoiser_calls == len(torch.unique(cached.order)) <= L


def test_infilling_keeps_fixed_positions_and_samples_the_conditional() -> None:
    den = TabularDenoiser(L, V, seed=5)
    gen = torch.Generator().manual_seed(2)
    result = ancestral_sample(den, MDLMSchedule(L), vocab_size=V, n_samples=2000, grid=16, generator=gen, fixed={1: 1})
    assert (result.tokens[:, 1] == 1).all() and (result.order[:, 1] == -1).all()
    with pytest.raises(ValueError, match=r"fixed: position 7 is out of range \[0, 3\)"):
        ancestral_sample(den, MDLMSchedule(L), vocab_size=V, fixed={7: 0})
    with pytest.raises(ValueError, match=r"fixed: token 5 at position 0 is out of range \[0, 2\)"):
        ancestral_sample(den, MDLMSchedule(L), vocab_size=V, fixed={0: 5})


def test_top_k_is_deterministic_and_reveals_large_exponents_first() -> None:
    den = TabularDenoiser(L, V, seed=6)
    schedule = PolynomialSchedule(torch.tensor([0.3, 3.0, 1.0], dtype=torch.float64))
    a = ancestral_sample(den, schedule, vocab_size=V, n_samples=4, grid=12, top_k=True, greedy_tokens=True)
    b = ancestral_sample(den, schedule, vocab_size=V, n_samples=4, grid=12, top_k=True, greedy_tokens=True)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.order, b.order)
    # Larger w = generated earlier (spec §3 Order semantics): position 1, then 2, then 0.
    assert (a.order[:, 1] <= a.order[:, 2]).all() and (a.order[:, 2] <= a.order[:, 0]).all()


def test_first_hitting_next_position_law() -> None:
    den = TabularDenoiser(L, V, seed=7)
    w = torch.tensor([0.5, 1.0, 2.5], dtype=torch.float64)
    gen = torch.Generator().manual_seed(3)
    result = first_hitting_sample(
        den, lambda z: w.expand(z.shape), vocab_size=V, length=L, n_samples=20000, generator=gen
    )
    first = (result.order == 0).double().argmax(-1)
    counts = torch.bincount(first, minlength=L).numpy()
    assert stats.chisquare(counts, (w / w.sum()).numpy() * counts.sum()).pvalue > P_MIN
    assert result.denoiser_calls == L
