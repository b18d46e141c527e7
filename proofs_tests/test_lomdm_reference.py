"""LoMDM reference (spec §3): exponents, validation, special cases, gradient routing, estimators.

Each numeric claim is checked against a second, independent computation: the generic reference NELBO code
(:mod:`oemdm_spec.reference.elbo` with :mod:`~oemdm_spec.reference.schedules`), Pyro's ForwardMasking, or a
hand-written formula.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from oemdm_spec.reference.distributions import ForwardMasking
from oemdm_spec.reference.elbo import continuous_integrand, continuous_nelbo_exact
from oemdm_spec.reference.exponents import exponent, exponent_range, normsig
from oemdm_spec.reference.networks import LoMDM, LoMDMConfig
from oemdm_spec.reference.objective import exact_objective_at_t, forward_log_prob, lomdm_loss, rloo_surrogate
from oemdm_spec.reference.schedules import MDLMSchedule, PolynomialSchedule
from oemdm_spec.reference.time_densities import ClampedUniformTime, LogTimeMixture

F64 = torch.float64
L, V = 3, 2


def tiny(c1: float = 0.7, c2: float = 0.65, seed: int = 0, **kw: object) -> LoMDM:
    cfg = LoMDMConfig(vocab_size=V, length=L, d_model=4, n_layer=1, n_head=1, c1=c1, c2=c2, dtype=F64, **kw)
    model = LoMDM(cfg, seed=seed)
    with torch.no_grad():  # spread the head scores so that w actually varies across positions
        for head in (model.phi, model.psi):
            head.head.weight.mul_(6.0)
    return model


def denoiser64(model: LoMDM):
    def run(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(z, t)

    return run


# ---------------------------------------------------------------------------------------------------------
# NormSig and the exponent
# ---------------------------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 9),
    st.integers(0, 2**31 - 1),
    st.floats(0.0, 1e4),
    st.sampled_from([(0.7, 0.65), (1.0, 0.0), (2.0, 1.9), (0.3, 0.1)]),
)
def test_normsig_zero_mean_and_w_range(n: int, seed: int, scale: float, consts: tuple[float, float]) -> None:
    gen = torch.Generator().manual_seed(seed)
    v = scale * torch.randn(4, n + 2, generator=gen, dtype=F64)
    pad = torch.zeros(4, n + 2, dtype=torch.bool)
    pad[:, n:] = torch.rand(4, 2, generator=gen) < 0.5  # some rows padded at the end
    ns = normsig(v, ~pad)  # valid = True at real positions
    real = ~pad
    # zero mean over real positions (float64 rounding of a mean of O(1) numbers: 1e-15·n)
    mean = torch.where(real, ns, torch.zeros_like(ns)).sum(-1) / real.sum(-1)
    assert mean.abs().max() < 1e-14
    assert bool((ns[pad] == 0).all())
    # strict bound |NormSig| ≤ 1 − 1/n_real, even when σ saturates to exactly 0/1 (scale up to 1e4)
    n_real = real.sum(-1, keepdim=True).to(F64)
    assert bool((ns.abs() <= 1 - 1 / n_real + 1e-15).all())
    c1, c2 = consts
    w = exponent(v, c1, c2, valid=~pad)
    lo, hi = exponent_range(c1, c2)
    if c2 == 0:
        assert bool((w == c1).all())
    else:
        assert bool((w[real] > lo).all()) and bool((w[real] < hi).all())
    # the mean of w over real positions is c1 (spec §3: "the mean of w is always c1")
    w_mean = torch.where(real, w, torch.zeros_like(w)).sum(-1) / real.sum(-1)
    assert torch.allclose(w_mean, torch.full_like(w_mean, c1), atol=1e-14)


def test_normsig_matches_hand_formula() -> None:
    v = torch.tensor([[0.3, -1.2, 2.0, 0.0]], dtype=F64)
    s = [1 / (1 + math.exp(-a)) for a in v[0].tolist()]
    want = [si - sum(s) / 4 for si in s]
    assert torch.allclose(normsig(v), torch.tensor([want], dtype=F64), atol=1e-15)
    w = exponent(v, 0.7, 0.65)
    assert torch.allclose(w, 0.7 + 0.65 * torch.tensor([want], dtype=F64), atol=1e-15)


def test_logspace_exponent_is_sharper_and_bounded() -> None:
    v = torch.linspace(-20, 20, 8, dtype=F64).unsqueeze(0)
    w = exponent(v, 1.0, 1.0, order_param="logspace", log_range=math.log(30.0))
    lo, hi = exponent_range(1.0, 1.0, "logspace", math.log(30.0))
    assert bool((w > lo).all()) and bool((w < hi).all())
    d = v - v.mean()
    # tanh clamp ≈ identity for |c2 d| ≪ R: |c2 d| ≤ 0.2, R = 3.4, so log w is off by ≤ 0.2·(0.2/3.4)²/3 ≈ 2e-4
    small = exponent(0.01 * v, 1.0, 1.0, order_param="logspace")
    assert torch.allclose(small, torch.exp(0.01 * d), rtol=1e-3)
    assert float(w.max() / w.min()) > 100  # NormSig with (0.7, 0.65) cannot exceed 1.35/0.05 = 27


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"c1": 0.5, "c2": 0.5}, "c1=0.5"),
        ({"c1": 0.4, "c2": 0.65}, "c2=0.65"),
        ({"c1": 0.7, "c2": -0.1}, "c2=-0.1"),
        ({"c1": 0.7, "c2": 0.1, "order_param": "softmax"}, "'softmax'"),
        ({"c1": -1.0, "c2": 0.1, "order_param": "logspace"}, "c1=-1.0"),
        ({"c1": 1.0, "c2": 0.1, "order_param": "logspace", "log_range": 0.0}, "log_range=0.0"),
    ],
)
def test_bad_constants_rejected(kwargs: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        exponent(torch.zeros(1, 3), **kwargs)
    with pytest.raises(ValueError, match=needle):
        LoMDMConfig(vocab_size=2, length=3, **kwargs)


def test_other_bad_input() -> None:
    model = tiny()
    with pytest.raises(ValueError, match="K=1"):
        lomdm_loss(model, torch.zeros(2, L, dtype=torch.long), K=1)
    with pytest.raises(ValueError, match="K=1"):
        rloo_surrogate(torch.zeros(2, 1), torch.zeros(2, 1))
    with pytest.raises(ValueError, match="t_min=0.0"):
        ClampedUniformTime(0.0)
    with pytest.raises(ValueError, match="valid"):  # no real position at all
        normsig(torch.zeros(1, 3), torch.zeros(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="d_model=6"):
        LoMDMConfig(vocab_size=2, length=3, d_model=6, n_head=4)


# ---------------------------------------------------------------------------------------------------------
# special cases by configuration, same code
# ---------------------------------------------------------------------------------------------------------
X = torch.tensor([[1, 0, 1], [0, 0, 1]])


@pytest.mark.parametrize("t", [0.05, 0.4, 0.93])
def test_c1_1_c2_0_is_mdlm_exactly(t: float) -> None:
    """(1, 0): the LoMDM integrand equals the generic reference MDLM integrand, and L_velocity ≡ 0."""
    model = tiny(1.0, 0.0)
    u = -math.log(t)
    main_u, vel_u = exact_objective_at_t(model, X, u)
    ref = continuous_integrand(X, denoiser64(model), MDLMSchedule(L), None, t, vocab_size=V)
    # u-integrand = t · (t-integrand) (A dt = w du); both enumerate the same 2^L masks in float64
    assert torch.allclose(main_u.detach() / t, ref.main, rtol=1e-12, atol=0)
    assert bool((vel_u == 0).all()) and bool((ref.velocity == 0).all())


def test_c2_0_is_a_fixed_polynomial_schedule() -> None:
    model = tiny(0.7, 0.0)
    t = 0.3
    main_u, vel_u = exact_objective_at_t(model, X, -math.log(t))
    ref = continuous_integrand(X, denoiser64(model), PolynomialSchedule(0.7, L), None, t, vocab_size=V)
    assert torch.allclose(main_u.detach() / t, ref.main, rtol=1e-12, atol=0)
    assert bool((vel_u == 0).all())


def test_sampled_loss_is_mdlm_loss_for_1_0() -> None:
    """The MC loss with given masks and t equals the hand-written MDLM loss Σ_masked (1/t)(−log x_θ)·(1 − t_min)·t."""
    model = tiny(1.0, 0.0)
    gen = torch.Generator().manual_seed(3)
    x = torch.randint(0, V, (5, L), generator=gen)
    masks = torch.rand(5, 2, L, generator=gen) < 0.5
    t = torch.tensor([0.11, 0.5, 0.9, 0.02, 0.7], dtype=F64)
    weight = (1 - 1e-3) / t  # what ClampedUniformTime returns for these t
    out = lomdm_loss(model, x, K=2, u=-torch.log(t), weight=weight, masks=masks)
    xk = x.unsqueeze(1).expand(5, 2, L)
    z = torch.where(masks, torch.full_like(xk, V), xk)
    logp = torch.log_softmax(model(z.reshape(10, L)), -1).gather(-1, xk.reshape(10, L, 1)).reshape(5, 2, L)
    hand = ((1 - 1e-3) / t).unsqueeze(-1) * torch.where(masks, -logp, torch.zeros_like(logp)).sum(-1)
    assert torch.allclose(out.per_sample, hand, rtol=1e-12, atol=0)
    assert bool((out.velocity == 0).all())


def test_log_q_matches_pyro_forward_masking() -> None:
    model = tiny()
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, V, (6, L), generator=gen)
    masks = torch.rand(6, L, generator=gen) < 0.5
    t = torch.tensor([1e-6, 1e-3, 0.2, 0.5, 0.9, 1 - 1e-9], dtype=F64)
    w = model.w_phi(x).detach()
    mine = forward_log_prob(masks, w, -torch.log(t))
    sched = model.forward_schedule()
    z = torch.where(masks, torch.full_like(x, V), x)
    ref = ForwardMasking(x, sched.alpha(t, x), V, sched.log_one_minus_alpha(t, x)).log_prob(z)
    # alpha is 1 − t^w formed by expm1 in both; rtol 1e-12 covers log of expm1 at t → 1
    assert torch.allclose(mine, ref, rtol=1e-12, atol=1e-12)


def test_k2_is_the_genmd4_form() -> None:
    """K = 2: RLOO = ½(L1 + L2) + ½·sg(L1 − L2)(log q1 − log q2), value and gradient (φ, ψ, θ) to 1e-12."""
    model = tiny()
    gen = torch.Generator().manual_seed(2)
    x = torch.randint(0, V, (8, L), generator=gen)
    t = torch.rand(8, generator=gen, dtype=F64) * 0.9 + 0.05
    masks = torch.rand(8, 2, L, generator=gen) < 0.6
    out = lomdm_loss(model, x, K=2, u=-torch.log(t), masks=masks)
    l1, l2 = out.per_sample.unbind(-1)
    q1, q2 = out.log_q.unbind(-1)
    genmd4 = (0.5 * (l1 + l2) + 0.5 * (l1 - l2).detach() * (q1 - q2)).mean()
    assert torch.allclose(out.surrogate, genmd4, rtol=1e-12, atol=0)
    params = list(model.parameters())
    g_rloo = torch.autograd.grad(out.surrogate, params, retain_graph=True, allow_unused=True)
    g_md4 = torch.autograd.grad(genmd4, params, allow_unused=True)
    for a, b in zip(g_rloo, g_md4, strict=True):
        if a is None or b is None:
            assert a is None and b is None
            continue
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)


def test_rloo_general_k_formula() -> None:
    gen = torch.Generator().manual_seed(4)
    losses = torch.randn(5, 4, generator=gen, dtype=F64, requires_grad=True)
    log_q = torch.randn(5, 4, generator=gen, dtype=F64, requires_grad=True)
    s = rloo_surrogate(losses, log_q).sum()
    (g_q,) = torch.autograd.grad(s, [log_q])
    lo = losses.detach()
    want = torch.stack([(lo[:, k] - (lo.sum(-1) - lo[:, k]) / 3) / 4 for k in range(4)], -1)
    assert torch.allclose(g_q, want, rtol=1e-13, atol=1e-15)


def test_gradient_routing() -> None:
    """θ ← L_main only; ψ ← L_velocity only; φ ← L_main, L_velocity and the score term (each non-zero)."""
    model = tiny()
    gen = torch.Generator().manual_seed(5)
    x = torch.randint(0, V, (16, L), generator=gen)
    out = lomdm_loss(model, x, K=3, time=LogTimeMixture.for_range(0.05, 1.35), generator=gen)
    groups = {
        "theta": list(model.backbone.parameters()),
        "phi": list(model.phi.parameters()),
        "psi": list(model.psi.parameters()),
    }

    def grads(scalar: torch.Tensor, name: str) -> torch.Tensor:
        gs = torch.autograd.grad(scalar, groups[name], retain_graph=True, allow_unused=True)
        return torch.cat(
            [(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(gs, groups[name], strict=True)]
        )

    main = out.per_sample_main.mean()
    vel = out.per_sample_velocity.mean()
    score = out.surrogate - out.per_sample.mean()  # the score-function term alone
    for name in groups:
        total = grads(out.surrogate, name)
        parts = grads(main, name) + grads(vel, name) + grads(score, name)
        assert torch.allclose(total, parts, rtol=1e-10, atol=1e-13)
    assert torch.allclose(grads(out.surrogate, "theta"), grads(main, "theta"), rtol=1e-12, atol=0)
    assert grads(vel, "theta").abs().max() == 0 and grads(score, "theta").abs().max() == 0
    assert torch.allclose(grads(out.surrogate, "psi"), grads(vel, "psi"), rtol=1e-12, atol=0)
    assert grads(main, "psi").abs().max() == 0 and grads(score, "psi").abs().max() == 0
    for part in (main, vel, score):
        assert grads(part, "phi").abs().max() > 1e-6


# ---------------------------------------------------------------------------------------------------------
# estimators of the whole bound
# ---------------------------------------------------------------------------------------------------------
def test_logtime_estimator_is_unbiased_and_clamped_is_not() -> None:
    """The log-time estimate matches the quadrature of the reference (elbo.continuous_nelbo_exact with the model's
    own schedules); the clamped t ∈ [t_min, 1] estimate drops the mass below t_min and falls short when w ≪ 1."""
    model = tiny(1.0, 3.0, seed=1, order_param="logspace", log_range=math.log(30.0))
    x = torch.tensor([[1, 0, 1]])
    w = model.w_phi(x).detach()
    assert float(w.min()) < 0.3  # a slow position, so that t_min = 1e-3 drops visible mass (t_min^w ≥ 12%)
    exact = continuous_nelbo_exact(
        x,
        denoiser64(model),
        model.forward_schedule(),
        model.reverse_schedule(),
        vocab_size=V,
        epsabs=1e-9,
        epsrel=1e-8,
    )
    n = 40_000
    xs = x.expand(n, L)
    gen = torch.Generator().manual_seed(6)
    with torch.no_grad():
        logt = lomdm_loss(model, xs, K=2, time=LogTimeMixture.for_range(0.9 * float(w.min()), 30.0), generator=gen)
        clamp = lomdm_loss(model, xs, K=2, time=ClampedUniformTime(1e-3), generator=gen)
    for out, is_bound in ((logt, True), (clamp, False)):
        assert out.is_bound is is_bound
    est, se = logt.nelbo.mean(), logt.nelbo.std() / math.sqrt(n)
    assert abs(float(est - exact.total)) < 4 * float(se), (float(est), float(exact.total), float(se))
    assert abs(float(logt.velocity.mean() - exact.velocity)) < 4 * float(logt.velocity.std() / math.sqrt(n))
    c_est, c_se = clamp.nelbo.mean(), clamp.nelbo.std() / math.sqrt(n)
    assert float(exact.total - c_est) > 6 * float(c_se)  # the clamped number is biased low: not a bound


def test_constant_w_control_is_mdlm_under_a_time_change() -> None:
    """w ≡ c1 with u ~ Exp(c1) is MDLM with u' = c1·u ~ Exp(1): identical losses and gradients (float64)."""
    x = torch.tensor([[1, 0, 1], [0, 1, 1], [1, 1, 0]])
    outs = []
    for c1 in (1.0, 0.7):
        model = tiny(c1, 0.0, seed=9)
        gen = torch.Generator().manual_seed(10)
        out = lomdm_loss(model, x, K=2, time=LogTimeMixture((c1,)), generator=gen)
        grads = torch.autograd.grad(out.surrogate, list(model.backbone.parameters()))
        outs.append((out.per_sample.detach(), torch.cat([g.flatten() for g in grads])))
    assert torch.allclose(outs[0][0], outs[1][0], rtol=1e-12, atol=0)
    assert torch.allclose(outs[0][1], outs[1][1], rtol=1e-10, atol=1e-14)
