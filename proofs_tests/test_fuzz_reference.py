"""Fuzzing ``oemdm_spec.reference``: random valid inputs give finite, mutually consistent results; random
invalid inputs raise ValueError naming the argument (never another exception, a crash or a hang).

Consistency checks, each between two independent computations:
- schedules: exp(log(1 − α)) = 1 − α, 0 ≤ α ≤ 1, velocity ≥ 0 and finite inside (0, 1);
- exact_nll defines a distribution: Σ_x p_T(x) = 1 over all V^L sequences;
- discrete NELBO ≥ exact NLL on the same grid, with equality at T = 1 (spec §1);
- ForwardMasking's law sums to 1 over the 2^L masks and its samples lie in its support;
- samplers return tokens in [0, V) and keep infilled positions.
Reproduce: ``python -m pytest proofs_tests/test_fuzz_reference.py -q`` (seeded by hypothesis' database;
``--hypothesis-seed=0`` pins it).
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oemdm_spec.reference import schedules as S
from oemdm_spec.reference.denoisers import TabularDenoiser
from oemdm_spec.reference.distributions import ForwardMasking, MaskedReverseStep
from oemdm_spec.reference.elbo import discrete_nelbo
from oemdm_spec.reference.exact import exact_nll
from oemdm_spec.reference.sampling import ancestral_sample, first_hitting_sample, power_grid
from oemdm_spec.reference.terms import kl_bernoulli, l_velocity, reverse_step_kl, unmask_probability

FUZZ = settings(deadline=None, max_examples=100, suppress_health_check=[HealthCheck.too_slow],
                derandomize=True)


@st.composite
def schedules(draw) -> S.Schedule:
    """Every input-free schedule class with random valid parameters."""
    kind = draw(st.sampled_from(["mdlm", "poly", "poly-vec", "cosine", "arm", "order", "block"]))
    length = draw(st.integers(1, 6))
    eps = draw(st.floats(0.01, 0.49))
    if kind == "mdlm":
        return S.MDLMSchedule(length, eps=draw(st.floats(0.0, 0.49)))
    if kind == "poly":
        return S.PolynomialSchedule(draw(st.floats(0.05, 8.0)), length=length)
    if kind == "poly-vec":
        w = draw(st.lists(st.floats(0.05, 8.0), min_size=length, max_size=length))
        return S.PolynomialSchedule(torch.tensor(w, dtype=torch.float64))
    if kind == "cosine":
        return S.CosineSchedule(length)
    if kind == "arm":
        return S.ARMSchedule(length, eps)
    if kind == "order":
        return S.FixedOrderSchedule(draw(st.permutations(list(range(length)))), eps)
    divisors = [b for b in range(1, length + 1) if length % b == 0]
    return S.BlockSchedule(length, draw(st.sampled_from(divisors)), eps)


times = st.lists(st.floats(0.0, 1.0), min_size=1, max_size=6)


@FUZZ
@given(sched=schedules(), ts=times)
def test_schedules_finite_and_consistent(sched, ts):
    t = torch.tensor(ts, dtype=torch.float64)
    a = sched.alpha(t)
    l1m = sched.log_one_minus_alpha(t)
    assert a.shape == (len(ts), sched.length)
    assert bool(((a >= 0) & (a <= 1)).all()), a
    assert not bool(torch.isnan(l1m).any()) and bool((l1m <= 0).all())
    torch.testing.assert_close(l1m.exp(), 1 - a, atol=1e-12, rtol=0)
    inner = t[(t > 1e-6) & (t < 1 - 1e-6)]
    if inner.numel():
        v = sched.velocity(inner)
        assert bool(torch.isfinite(v).all()) and bool((v >= 0).all()), (sched, inner, v)


@FUZZ
@given(sched=schedules(), bad=st.one_of(st.floats(-1e6, -1e-9), st.floats(1 + 1e-9, 1e6), st.just(math.nan)))
def test_schedules_reject_times_outside_unit_interval(sched, bad):
    for fn in (sched.alpha, sched.log_one_minus_alpha, sched.velocity):
        with pytest.raises(ValueError, match=r"\bt\b"):
            fn(torch.tensor([0.5, bad], dtype=torch.float64))


@pytest.mark.parametrize("make,arg", [
    (lambda: S.MDLMSchedule(0), "length"),
    (lambda: S.MDLMSchedule(-3), "length"),
    (lambda: S.MDLMSchedule(4, eps=0.5), "eps"),
    (lambda: S.MDLMSchedule(4, eps=-0.1), "eps"),
    (lambda: S.PolynomialSchedule(0.0, length=3), "w"),
    (lambda: S.PolynomialSchedule(-1.0, length=3), "w"),
    (lambda: S.PolynomialSchedule(math.nan, length=3), "w"),
    (lambda: S.PolynomialSchedule(math.inf, length=3), "w"),
    (lambda: S.PolynomialSchedule(1.0), "length"),
    (lambda: S.PolynomialSchedule(torch.ones(3), length=4), "w"),
    (lambda: S.ARMSchedule(3, 0.0), "eps"),
    (lambda: S.ARMSchedule(3, 0.5), "eps"),
    (lambda: S.ARMSchedule(0, 0.1), "length"),
    (lambda: S.FixedOrderSchedule([0, 0, 1], 0.1), "order"),
    (lambda: S.FixedOrderSchedule([0, 1, 3], 0.1), "order"),
    (lambda: S.BlockSchedule(6, 4, 0.1), "block_size"),
    (lambda: S.BlockSchedule(6, 0, 0.1), "block_size"),
    (lambda: S.VocabPolynomialSchedule(torch.ones(0), 3), "w_vocab"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_schedule_constructors_reject_bad_arguments(make, arg):
    with pytest.raises(ValueError, match=arg):
        make()


def test_input_schedules_reject_bad_inputs():
    vs = S.VocabPolynomialSchedule(torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64), 3)
    with pytest.raises(ValueError, match="u"):
        vs.alpha(torch.tensor([0.5]))  # the schedule reads u: it must be given
    with pytest.raises(ValueError, match="u"):
        vs.alpha(torch.tensor([0.5]), torch.tensor([[0, 1, 3]]))  # 3 is not a token of V = 3
    with pytest.raises(ValueError, match="u"):
        vs.alpha(torch.tensor([0.5]), torch.tensor([[0, 1]]))  # wrong L


# ----------------------------------------------------------------------------------------------------------
# per-position terms


probs = st.floats(0.0, 1.0)
rates = st.floats(1e-6, 1e6)


@FUZZ
@given(sched=schedules(), s=st.floats(0.0, 1.0), t=st.floats(0.0, 1.0))
def test_unmask_probability_is_a_probability(sched, s, t):
    s, t = min(s, t), max(s, t)
    lo = sched.log_one_minus_alpha(torch.tensor([s], dtype=torch.float64))
    hi = sched.log_one_minus_alpha(torch.tensor([t], dtype=torch.float64))
    a = unmask_probability(lo, hi)
    ok = torch.isfinite(hi)  # 1 − α(t) = 0 (t in a window's past) leaves a undefined: no masked position
    assert bool(((a[ok] >= -1e-12) & (a[ok] <= 1 + 1e-12)).all()), (s, t, a)


@FUZZ
@given(a=probs, a_hat=st.floats(1e-9, 1 - 1e-9), p=st.floats(1e-9, 1.0))
def test_step_kl_terms_are_non_negative_and_vanish_on_the_diagonal(a, a_hat, p):
    A, Ah = torch.tensor([a], dtype=torch.float64), torch.tensor([a_hat], dtype=torch.float64)
    kl = kl_bernoulli(A, Ah)
    assert bool(torch.isfinite(kl).all()) and float(kl) >= -1e-12
    assert abs(float(kl_bernoulli(Ah, Ah))) < 1e-12
    step = reverse_step_kl(torch.log(torch.tensor([p], dtype=torch.float64)), A, Ah)
    assert float(step) >= float(kl) - 1e-12  # −a·log x_θ[x] ≥ 0


@FUZZ
@given(A=rates, A_hat=rates)
def test_velocity_term_is_a_non_negative_bregman_divergence(A, A_hat):
    v = l_velocity(torch.tensor([A], dtype=torch.float64), torch.tensor([A_hat], dtype=torch.float64))
    assert bool(torch.isfinite(v).all()) and float(v) >= -1e-9 * max(A, A_hat)
    assert abs(float(l_velocity(torch.tensor([A], dtype=torch.float64), torch.tensor([A], dtype=torch.float64)))) \
        < 1e-9 * A


# ----------------------------------------------------------------------------------------------------------
# likelihoods


@st.composite
def tiny_problems(draw):
    length = draw(st.integers(1, 3))
    vocab = draw(st.integers(1, 3))
    den = TabularDenoiser(length, vocab, seed=draw(st.integers(0, 2**16)), scale=draw(st.floats(0.1, 4.0)))
    kind = draw(st.sampled_from(["mdlm", "poly", "arm", "cosine"]))
    if kind == "mdlm":
        sched = S.MDLMSchedule(length)
    elif kind == "poly":
        sched = S.PolynomialSchedule(torch.tensor(draw(st.lists(st.floats(0.2, 4.0), min_size=length,
                                                                max_size=length)), dtype=torch.float64))
    elif kind == "arm":
        sched = S.ARMSchedule(length, draw(st.floats(0.05, 0.45)))
    else:
        sched = S.CosineSchedule(length)
    return length, vocab, den, sched


@FUZZ
@given(prob=tiny_problems(), T=st.integers(1, 4))
def test_exact_nll_is_a_distribution_and_the_discrete_nelbo_bounds_it(prob, T):
    length, vocab, den, sched = prob
    xs = torch.tensor(list(itertools.product(range(vocab), repeat=length)), dtype=torch.long)
    nll = exact_nll(xs, den, sched, T, vocab_size=vocab)
    assert bool(torch.isfinite(nll).all()) and bool((nll >= -1e-12).all()), nll
    torch.testing.assert_close(torch.logsumexp(-nll, 0), torch.zeros((), dtype=torch.float64), atol=1e-9, rtol=0)
    bound = discrete_nelbo(xs, den, sched, grid=T, vocab_size=vocab)
    assert bool(torch.isfinite(bound).all())
    assert bool((bound >= nll - 1e-9).all()), (bound, nll)
    if T == 1:  # one step: the reverse step is the whole model and the bound is tight
        torch.testing.assert_close(bound, nll, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("bad,needle", [
    (torch.tensor([[0, 3]]), "x must lie in"),
    (torch.tensor([[0, -1]]), "x must lie in"),
    (torch.tensor([[0.0, 1.0]]), "integer"),
    (torch.tensor([[0, 1, 1]]), "L=2"),
])
def test_likelihoods_reject_bad_sequences(bad, needle):
    den = TabularDenoiser(2, 3)
    for fn in (lambda x: exact_nll(x, den, S.MDLMSchedule(2), 2, vocab_size=3),
               lambda x: discrete_nelbo(x, den, S.MDLMSchedule(2), grid=2, vocab_size=3)):
        with pytest.raises(ValueError, match=needle):
            fn(bad)


@pytest.mark.parametrize("grid", [torch.tensor([0.0, 0.7, 0.5, 1.0]), torch.tensor([0.1, 1.0]),
                                  torch.tensor([0.0, 0.5]), 0, -2])
def test_likelihoods_reject_bad_grids(grid):
    den = TabularDenoiser(2, 2)
    with pytest.raises(ValueError, match="grid|T must"):
        exact_nll(torch.tensor([[0, 1]]), den, S.MDLMSchedule(2), grid, vocab_size=2)


# ----------------------------------------------------------------------------------------------------------
# distributions


@FUZZ
@given(length=st.integers(1, 4), vocab=st.integers(1, 4), seed=st.integers(0, 2**16),
       alpha=st.lists(st.floats(0.0, 1.0), min_size=4, max_size=4))
def test_forward_masking_is_a_distribution(length, vocab, seed, alpha):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, vocab, (length,), generator=g)
    a = torch.tensor(alpha[:length], dtype=torch.float64)
    d = ForwardMasking(x, a, mask_id=vocab)
    patterns = torch.tensor(list(itertools.product([False, True], repeat=length)))
    zs = torch.where(patterns, torch.full_like(patterns, vocab, dtype=torch.long), x)
    lp = d.log_prob(zs)
    assert not bool(torch.isnan(lp).any())
    torch.testing.assert_close(torch.logsumexp(lp, 0), torch.zeros((), dtype=torch.float64), atol=1e-12, rtol=0)
    torch.manual_seed(seed)
    z = d.sample(torch.Size([8]))
    assert bool(((z == x) | (z == vocab)).all())
    assert bool(torch.isfinite(d.log_prob(z)).all())  # a drawn value has positive probability


@FUZZ
@given(length=st.integers(1, 4), vocab=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_masked_reverse_step_is_a_distribution(length, vocab, seed):
    g = torch.Generator().manual_seed(seed)
    z_t = torch.randint(0, vocab + 1, (length,), generator=g)
    probs = torch.softmax(torch.randn(length, vocab, generator=g, dtype=torch.float64), -1)
    unmask = torch.rand(length, generator=g, dtype=torch.float64)
    d = MaskedReverseStep(z_t, probs, unmask, mask_id=vocab)
    # every z_s reachable from z_t: masked positions take a token or stay masked, others are copied
    choices = [list(range(vocab + 1)) if int(z) == vocab else [int(z)] for z in z_t]
    zs = torch.tensor(list(itertools.product(*choices)), dtype=torch.long)
    torch.testing.assert_close(torch.logsumexp(d.log_prob(zs), 0), torch.zeros((), dtype=torch.float64),
                               atol=1e-12, rtol=0)


@pytest.mark.parametrize("make,needle", [
    (lambda: ForwardMasking(torch.tensor([0, 4]), torch.tensor([0.5, 0.5]), mask_id=3), "x must lie in"),
    (lambda: ForwardMasking(torch.tensor([0.0, 1.0]), torch.tensor([0.5, 0.5]), mask_id=3), "integer"),
    (lambda: MaskedReverseStep(torch.tensor([0, 5]), torch.full((2, 3), 1 / 3), torch.ones(2), mask_id=3),
     "z_t"),
    (lambda: MaskedReverseStep(torch.tensor([0, 3]), torch.full((2, 4), 1 / 4), torch.ones(2), mask_id=3),
     "token_probs"),
    (lambda: MaskedReverseStep(torch.tensor([0, 3]), torch.full((2, 3), 1 / 3), torch.ones(3), mask_id=3),
     "unmask_prob"),
])
def test_distributions_reject_bad_arguments(make, needle):
    with pytest.raises(ValueError, match=needle):
        make()


def test_forward_masking_rejects_alpha_of_the_wrong_shape():
    with pytest.raises(ValueError, match="alpha"):
        ForwardMasking(torch.tensor([0, 1]), torch.tensor([0.5, 0.5, 0.5]), mask_id=3)


# ----------------------------------------------------------------------------------------------------------
# samplers


@FUZZ
@given(prob=tiny_problems(), T=st.integers(1, 6), seed=st.integers(0, 2**16), top_k=st.booleans(),
       data=st.data())
def test_samplers_give_valid_sequences_and_keep_fixed_positions(prob, T, seed, top_k, data):
    length, vocab, den, sched = prob
    fixed = data.draw(st.dictionaries(st.integers(0, length - 1), st.integers(0, vocab - 1), max_size=length))
    g = torch.Generator().manual_seed(seed)
    res = ancestral_sample(den, sched, vocab_size=vocab, n_samples=3, grid=T, generator=g, fixed=fixed,
                           top_k=top_k)
    assert res.tokens.shape == (3, length)
    assert bool(((res.tokens >= 0) & (res.tokens < vocab)).all()), "a position was left masked or invalid"
    for pos, tok in fixed.items():
        assert bool((res.tokens[:, pos] == tok).all())
    fh = first_hitting_sample(den, lambda z: torch.ones(z.shape, dtype=torch.float64), vocab_size=vocab,
                              length=length, n_samples=3, generator=g, fixed=fixed, top_k=top_k)
    assert bool(((fh.tokens >= 0) & (fh.tokens < vocab)).all())
    assert fh.denoiser_calls == length - len(fixed)


@pytest.mark.parametrize("call,needle", [
    (lambda d, s: ancestral_sample(d, s, vocab_size=2, n_samples=0), "n_samples"),
    (lambda d, s: ancestral_sample(d, s, vocab_size=2, grid=0), "T must"),
    (lambda d, s: ancestral_sample(d, s, vocab_size=2, fixed={5: 0}), "position 5"),
    (lambda d, s: ancestral_sample(d, s, vocab_size=2, fixed={0: 2}), "token 2"),
    (lambda d, s: first_hitting_sample(d, lambda z: torch.zeros(z.shape), vocab_size=2, length=3), "rates"),
    (lambda d, s: first_hitting_sample(d, lambda z: torch.ones(2), vocab_size=2, length=3), "rates"),
    (lambda d, s: power_grid(4, 0.0), "power"),
    (lambda d, s: power_grid(0), "T must"),
])
def test_samplers_reject_bad_arguments(call, needle):
    with pytest.raises(ValueError, match=needle):
        call(TabularDenoiser(3, 2), S.MDLMSchedule(3))
