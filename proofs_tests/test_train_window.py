"""The window processes of the fast path (``oemdm-arm``, ``oemdm-block``; spec §2) against independent
float64 computations.

Each test compares two computations that share no code:

- the schedule: ``fast.processes.window.WindowSchedule`` against ``reference.schedules.BlockSchedule`` /
  ``ARMSchedule`` (written separately, with its own piece selection);
- the reveal times: their inverse-CDF property checked through the *reference* 1 − α;
- the training loss and ``evaluate_bound``: Monte Carlo over many noise draws of the fast (float32, fused
  kernel) code against ``reference.elbo.continuous_nelbo_exact`` (enumeration of all masks, adaptive
  quadrature split at the kinks) with the fast model's denoiser in float64;
- the ARM limit: the bound against a plain left-to-right loop over the same denoiser (x^{<i} + masks → x_θ^i);
- the sampler: the order law of first-hitting against P(τ_a > τ_b > τ_c) by quadrature of the reference
  densities, chi-square.

Monte-Carlo tolerances are 4 standard errors with fixed seeds (so the tests are deterministic); the
estimators have a log-divergent second moment at t → 0 (a position masked before its window has A = 1/t
with probability ∝ εt), a tail that is rare at these sample sizes and ε. Every test was checked to fail
under a mutation of ``window.py`` (see the commit message / docs/results.md).
"""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch
from scipy import integrate, stats

from oemdm_spec import fast
from oemdm_spec.fast.model import ModelConfig, OeMDM
from oemdm_spec.fast.noise import StepNoise
from oemdm_spec.fast.processes.window import WindowSchedule
from oemdm_spec.reference import elbo
from oemdm_spec.reference import schedules as R

V = 3


def _model(typ: str, L: int, seed: int = 0, **kw) -> OeMDM:
    torch.manual_seed(seed)
    m = OeMDM(ModelConfig(vocab_size=V, seq_len=L, model_type=typ, n_layer=1, n_head=2, d_model=16, cond_dim=8,
                          **kw))
    # move the zero-initialised outputs (adaLN gates, output layer) off zero: a non-uniform, context-dependent x_θ
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "ada" in name or "out" in name:
                p.add_(0.8 * torch.randn_like(p))
    return m.eval()


def _denoiser64(m: OeMDM):
    """The fast model's denoiser as the reference's ``(z, t) -> logits`` callable, in float64 (time-agnostic)."""
    m64 = copy.deepcopy(m).double()

    def den(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return m64.backbone(z.long())

    return den


def _ar_nll(den, x: torch.Tensor) -> float:
    """Σ_i −log x_θ^i(x^{<i}, m, …, m)[x^i]: the denoiser used left to right, one position at a time."""
    L = x.numel()
    total = 0.0
    for i in range(L):
        z = torch.cat([x[:i], torch.full((L - i,), V)])[None]
        total -= float(torch.log_softmax(den(z, torch.zeros(1)).double(), -1)[0, i, x[i]])
    return total


def _exact(den, x: torch.Tensor, block_size: int, eps: float) -> float:
    """L_OeMDM of one sequence, nats (sum over positions), by the reference (enumeration + quadrature)."""
    sched = R.BlockSchedule(x.numel(), block_size, eps)
    out = elbo.continuous_nelbo_exact(x[None], den, sched, vocab_size=V, epsabs=1e-10, epsrel=1e-9)
    assert float(out.velocity) == 0.0  # α̂ = α
    return float(out.total)


# --------------------------------------------------------------------------------------------------------
# the schedule and its inverse


CASES = [(1, 1, 0.2), (4, 1, 0.1), (4, 1, 0.01), (6, 2, 0.3), (6, 3, 0.05), (8, 4, 0.001), (8, 8, 0.1),
         (5, 1, 0.49)]


def _grid(n_blocks: int) -> torch.Tensor:
    """A uniform grid plus both sides of every kink k/B (at distances 1e-9 and 1e-4) and t = 1."""
    kinks = [k / n_blocks for k in range(1, n_blocks)]
    near = [k + d for k in kinks for d in (-1e-4, -1e-9, 1e-9, 1e-4)]
    return torch.tensor(sorted({*torch.linspace(1e-6, 1, 397).tolist(), *near, 1.0}), dtype=torch.float64)


@pytest.mark.parametrize(("L", "bs", "eps"), CASES)
def test_schedule_matches_reference(L: int, bs: int, eps: float) -> None:
    fast_s, ref = WindowSchedule(L, bs, eps), R.BlockSchedule(L, bs, eps)
    t = _grid(L // bs)
    oma, A = fast_s.one_minus_alpha_and_rate(t[:, None])
    # the reference's 1 − α from its log form, its velocity from its own piece selection
    oma_ref, A_ref = ref.log_one_minus_alpha(t).exp(), ref.velocity(t)
    # both are float64 closed forms of the same linear pieces, arranged differently: a few ulps (rel 1e-12)
    torch.testing.assert_close(oma, oma_ref, rtol=1e-12, atol=0.0)
    torch.testing.assert_close(A, A_ref, rtol=1e-12, atol=0.0)
    if bs == 1:  # ARMSchedule is the same object as BlockSchedule(L, 1, ε)
        torch.testing.assert_close(oma, R.ARMSchedule(L, eps).log_one_minus_alpha(t).exp(), rtol=1e-12, atol=0.0)


@pytest.mark.parametrize("bs", [1, 3])
def test_padded_schedule_is_the_reference_schedule_of_each_rows_real_length(bs: int) -> None:
    """With ``valid`` (any padding pattern, partial last blocks), the k-th real token of a row of real length ℓ
    gets exactly what the reference BlockSchedule(⌈ℓ/L'⌉·L', L', ε) gives its position k, at every t."""
    eps, L = 0.05, 11
    g = torch.Generator().manual_seed(4)
    valid = torch.rand(5, L, generator=g) < 0.7
    valid[0] = True  # no padding
    valid[1] = torch.arange(L) < 4  # right padding, a partial block for bs = 3
    valid[2] = torch.arange(L) >= 6  # left padding
    valid[3] = torch.arange(L) == 0  # one real token
    t = _grid(L)[1:]  # (T,), t > 0
    oma, A = WindowSchedule(L, bs, eps, valid).one_minus_alpha_and_rate(t[:, None, None])  # (T, 5, L)
    for r in range(valid.shape[0]):
        real = valid[r].nonzero().squeeze(1)
        n = len(real)
        ref = R.BlockSchedule(-(-n // bs) * bs, bs, eps)
        oma_ref, A_ref = ref.log_one_minus_alpha(t).exp()[:, :n], ref.velocity(t)[:, :n]
        torch.testing.assert_close(oma[:, r, real], oma_ref, rtol=1e-12, atol=0.0)  # float64, as above
        torch.testing.assert_close(A[:, r, real], A_ref, rtol=1e-12, atol=0.0)
        assert bool(torch.isfinite(oma[:, r]).all() and torch.isfinite(A[:, r]).all())  # padding: finite


@pytest.mark.parametrize(("L", "bs", "eps"), CASES)
def test_reveal_times_invert_one_minus_alpha(L: int, bs: int, eps: float) -> None:
    sched, ref = WindowSchedule(L, bs, eps), R.BlockSchedule(L, bs, eps)
    U = torch.linspace(1e-9, 1 - 1e-9, 2001, dtype=torch.float64)[:, None].expand(-1, L)
    tau = sched.reveal_times(U)
    assert bool(((tau > 0) & (tau <= 1)).all())
    assert bool((tau.diff(dim=0) > 0).all())  # strictly increasing in U
    # 1 − α(τ(U)) = U, with the reference's 1 − α at each position's own τ (float64: rel 1e-12, abs 1e-15)
    oma = torch.stack([ref.log_one_minus_alpha(tau[:, i]).exp()[:, i] for i in range(L)], -1)
    torch.testing.assert_close(oma, U, rtol=1e-12, atol=1e-15)


def test_reveal_time_ecdf_is_one_minus_alpha() -> None:
    """KS: the empirical CDF of τ(U) for random U against 1 − α of the reference, per position."""
    L, bs, eps, n = 6, 2, 0.1, 20000
    g = torch.Generator().manual_seed(5)
    tau = WindowSchedule(L, bs, eps).reveal_times(torch.rand(n, L, generator=g, dtype=torch.float64))
    ref = R.BlockSchedule(L, bs, eps)
    for i in range(L):
        cdf = lambda t, i=i: ref.log_one_minus_alpha(torch.as_tensor(t, dtype=torch.float64)).exp()[..., i].numpy()
        assert stats.kstest(tau[:, i].numpy(), cdf).pvalue > 1e-3


# --------------------------------------------------------------------------------------------------------
# the training loss and the evaluation bound against the exact bound


def _repeat(xs: list[list[int]], n: int) -> torch.Tensor:
    return torch.tensor(xs).repeat_interleave(n, 0)


def test_training_loss_is_unbiased_for_the_exact_bound() -> None:
    L, eps, n = 4, 0.1, 6000
    xs = [[0, 2, 1, 1], [2, 2, 0, 1]]
    m = _model("oemdm-arm", L, eps=eps)
    den = _denoiser64(m)
    g = torch.Generator().manual_seed(11)
    X = _repeat(xs, n)
    # t ~ U(0, 1) here (the trainer's t_min clamp is a separate, documented truncation)
    noise = StepNoise(t=torch.rand(X.shape[0], generator=g), u=torch.rand(1, *X.shape, generator=g))
    with torch.no_grad():
        out = fast.get_process(m.cfg).loss(m, X, noise, 1, False)
    per = out.per_seq[0].double().view(len(xs), n)
    for k, x in enumerate(xs):
        exact = _exact(den, torch.tensor(x), 1, eps) / L
        mean, se = float(per[k].mean()), float(per[k].std() / math.sqrt(n))
        # 4 SE (Monte Carlo) + 1e-4 (float32 model and kernel vs the float64 copy)
        assert abs(mean - exact) < 4 * se + 1e-4, (x, mean, exact, se)
        assert se < 0.05 * exact  # the comparison has teeth: an O(ε) error (≈ ε·log V) is several SE


def test_evaluate_bound_matches_exact_and_tends_to_the_ar_nll() -> None:
    L, n = 4, 4000
    x = torch.tensor([1, 0, 2, 2])
    X = x[None].repeat(n, 1)
    ar = None
    for eps in (0.1, 0.003):
        m = _model("oemdm-arm", L, seed=3, eps=eps)
        den = _denoiser64(m)
        ar = _ar_nll(den, x) if ar is None else ar
        exact = _exact(den, x, 1, eps)
        res = fast.evaluate_bound(m, [X], seed=2)
        assert abs(res.nelbo - exact / L) < 4 * res.se + 1e-4, (eps, res.nelbo, exact / L, res.se)
        # the ARM theorem, |L_OeMDM − AR-NLL| ≤ (2L + L(L−1)/2)·max_i D_i·ε (spec §2; D_i ≤ max CE, crude)
        max_ce = max(-float(torch.log_softmax(den(z[None], torch.zeros(1)), -1)[0, i, x[i]])
                     for i in range(L) for z in _all_states(L))
        assert abs(exact - ar) <= (2 * L + L * (L - 1) / 2) * max_ce * eps
        if eps < 0.01:
            # the fast estimate itself is within MC error of the AR NLL, which is far from the ε = 0.1 bound
            assert abs(res.nelbo - ar / L) < 4 * res.se + (2 * L + L * (L - 1) / 2) * max_ce * eps / L
    assert ar is not None


def _all_states(L: int) -> list[torch.Tensor]:
    return [torch.tensor(s) for s in itertools.product(range(V + 1), repeat=L)]


def test_ar_limit_is_not_trivial() -> None:
    """The AR NLL of the test denoiser differs from the ε = 0.1 bound and from MDLM's bound by much more than
    the tolerances above: the ε → 0 check could not pass for the wrong limit."""
    L = 4
    x = torch.tensor([1, 0, 2, 2])
    m = _model("oemdm-arm", L, seed=3, eps=0.1)
    den = _denoiser64(m)
    ar = _ar_nll(den, x)
    assert abs(_exact(den, x, 1, 0.1) - ar) > 0.05
    assert abs(_exact(den, x, L, 0.1) - ar) > 0.05  # block size L: MDLM


# --------------------------------------------------------------------------------------------------------
# the sampler


def test_topk_reveals_left_to_right() -> None:
    m = _model("oemdm-arm", 8, eps=0.05)
    _, order = fast.sample(m, 5, sampler="topk", seed=1)
    assert torch.equal(order, torch.arange(8).expand(5, -1))
    mb = _model("oemdm-block", 8, block_size=4, eps=0.05)
    _, order = fast.sample(mb, 3, sampler="topk", seed=1)
    assert torch.equal(order, torch.arange(8).expand(3, -1))  # blocks in order, ties to the lowest index


def _order_law(L: int, bs: int, eps: float) -> dict[tuple[int, ...], float]:
    """P(reveal order = π) = P(τ_π1 > τ_π2 > … ) for independent τ_i with density −∂_tα^i (reference schedule),
    by quadrature: for L = 3, P(τ_a > τ_b > τ_c) = ∫ f_b(t) α_a(t) (1 − α_c(t)) dt."""
    assert L == 3
    ref = R.BlockSchedule(L, bs, eps)
    cuts = [0.0, *ref.kinks(), 1.0]

    def pieces(t: float):
        tt = torch.tensor(t, dtype=torch.float64)
        oma = ref.log_one_minus_alpha(tt).exp()
        return oma, ref.velocity(tt) * oma

    law = {}
    for a, b, c in itertools.permutations(range(L)):
        def f(t: float, a=a, b=b, c=c) -> float:
            oma, dens = pieces(t)
            return float(dens[b] * (1 - oma[a]) * oma[c])
        law[(a, b, c)] = sum(integrate.quad(f, lo, hi, epsabs=1e-12)[0] for lo, hi in itertools.pairwise(cuts))
    return law


@pytest.mark.parametrize(("typ", "bs"), [("oemdm-arm", 1), ("oemdm-block", 3)])
def test_first_hitting_order_law(typ: str, bs: int) -> None:
    L, eps, n = 3, 0.3, 3000
    law = _order_law(L, bs, eps)
    assert sum(law.values()) == pytest.approx(1.0, abs=1e-9)
    m = _model(typ, L, eps=eps, **({"block_size": bs} if typ == "oemdm-block" else {}))
    _, order = fast.sample(m, n, sampler="first-hitting", seed=4)
    counts = {p: 0 for p in law}
    for row in order.tolist():
        counts[tuple(sorted(range(L), key=lambda i: row[i]))] += 1
    obs = [counts[p] for p in law]
    exp = [n * law[p] for p in law]
    assert min(exp) > 20  # every cell is populated enough for the chi-square approximation
    assert stats.chisquare(obs, exp).pvalue > 1e-3, (obs, exp)


# --------------------------------------------------------------------------------------------------------
# oemdm-block at its two ends


def _same_weights(typ: str, src: OeMDM, **kw) -> OeMDM:
    dst = OeMDM(ModelConfig(vocab_size=V, seq_len=src.cfg.seq_len, model_type=typ, n_layer=1, n_head=2, d_model=16,
                            cond_dim=8, **kw))
    dst.load_state_dict(src.state_dict())
    return dst.eval()


def test_block_size_one_is_oemdm_arm_bitwise() -> None:
    L, B = 8, 64
    arm = _model("oemdm-arm", L, eps=0.03)
    blk = _same_weights("oemdm-block", arm, block_size=1, eps=0.03)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, V, (B, L), generator=g)
    noise = fast.draw_step_noise(3, 0, global_batch=B, seq_len=L, K=1, t_min=1e-3)
    a = arm.process.loss(arm, x, noise, 1, False)
    b = blk.process.loss(blk, x, noise, 1, False)
    assert torch.equal(a.per_seq, b.per_seq) and torch.equal(a.masked, b.masked)
    mu = torch.rand(B, L, generator=g, dtype=torch.float64)
    v = torch.rand(B, generator=g, dtype=torch.float64)
    assert torch.equal(arm.process.sequence_bound(arm, x, v, mu), blk.process.sequence_bound(blk, x, v, mu))


def test_block_size_seq_len_is_mdlm() -> None:
    """One block: s0 = 1, s1 = 0, so α = 1 − t exactly (no ε left): the same masks as MDLM and the same loss."""
    L, B = 8, 64
    mdlm = _model("mdlm", L)
    blk = _same_weights("oemdm-block", mdlm, block_size=L, eps=0.2)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, V, (B, L), generator=g)
    noise = fast.draw_step_noise(3, 1, global_batch=B, seq_len=L, K=1, t_min=1e-3)
    a = mdlm.process.loss(mdlm, x, noise, 1, False)
    b = blk.process.loss(blk, x, noise, 1, False)
    assert bool(torch.isfinite(b.per_seq).all())
    assert torch.equal(a.masked, b.masked)
    # A = 1/t in float64 then rounded vs 1/t in float32: at most an ulp per row
    torch.testing.assert_close(b.per_seq, a.per_seq, rtol=1e-6, atol=1e-7)
