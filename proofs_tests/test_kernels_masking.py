"""Forward masking (``forward_mask``): mask frequencies against t^w, and log q(z | x) against the reference.

log q is compared with the Pyro reference ``ForwardMasking.log_prob`` (keep probability α = 1 − t^w given
with its exact log(1 − α) = w log t) when pyro is importable, and always with an independent float64 formula
written here; its gradients w.r.t. w and t against float64 autograd. The two backends draw from different
streams (Philox vs torch.Generator), so they are compared statistically.

Statistical checks use fixed seeds (deterministic, never flaky) and a two-sided z-bound of 5: a correct
sampler fails one such check with probability 5.7e-7, while a wrong probability by 1% of p(1−p) over the
~2·10^4 draws here moves z by ≈ 1.5 per percent; the bins below catch errors of a few percent.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_kernels_common import BACKENDS, DEVICE, ON_GPU, assert_close_scaled, gen

from oemdm_spec.fast.kernels import forward_mask

Z_BOUND = 5.0
# CPU: fp32 sums over L terms, expm1/log1p by Kahan's formulas (a few ulps). GPU: tl.exp/tl.log may lower to
# the approximate ex2/lg2 (absolute error ~2**-22 near 1), which Kahan's log1p turns into a relative error up
# to ~2e-4 of the small log(1 − t^w) terms: 1e-3.
RTOL = 1e-3 if ON_GPU else 2e-5

try:  # the reference lives with pyro; the GPU machine has no pyro, then only the independent formula is used
    from oemdm_spec.reference.distributions import ForwardMasking
except ImportError:  # pragma: no cover - depends on the machine
    ForwardMasking = None


def independent_log_q(z: torch.Tensor, x: torch.Tensor, t64: torch.Tensor, w64: torch.Tensor, mask_id: int):
    """float64 Σ_i [masked·w log t + (1 − masked)·log(1 − t^w)], written independently of the package."""
    y = w64 * torch.log(t64).unsqueeze(-1)
    masked = z == mask_id
    y_safe = torch.where(masked, torch.full_like(y.expand_as(z.double()), -1.0), y)
    # log(1 − e^y) by Mächler's (2012) two-branch log1mexp: each branch has a well-conditioned derivative under
    # autograd (log(−expm1(y)) alone differentiates through expm1's (result + 1), which cancels for y ≪ 0).
    log1mexp = torch.where(
        y_safe > -math.log(2.0),
        torch.log(-torch.expm1(torch.clamp(y_safe, min=-math.log(2.0)))),
        torch.log1p(-torch.exp(torch.clamp(y_safe, max=-math.log(2.0)))),
    )
    terms = torch.where(masked, y, log1mexp)
    return terms.sum(-1), terms


def reference_log_q(z, x, t64, w64, mask_id):
    y = w64 * torch.log(t64).unsqueeze(-1)
    q = ForwardMasking(x, -torch.expm1(y), mask_id, log_one_minus_alpha=y)
    return q.log_prob(z)


def _draw(b, L, seed, t_kind, w_kind, v=50):
    g = gen(seed)
    x = torch.randint(0, v, (b, L), generator=g)
    if t_kind == "one":
        t = torch.ones(b, dtype=torch.float64)
    elif t_kind == "tiny":
        t = torch.full((b,), 1e-3, dtype=torch.float64)
    else:
        t = 1e-3 + (1 - 1e-3) * torch.rand(b, generator=g, dtype=torch.float64)
    if w_kind == "zero":
        w = torch.zeros(b, L, dtype=torch.float64)
    elif w_kind == "large":
        w = torch.full((b, L), 5.0, dtype=torch.float64)
    else:  # LoMDM's range c1 ± c2 = (0.05, 1.35)
        w = 0.05 + 1.3 * torch.rand(b, L, generator=g, dtype=torch.float64)
    return x, t.float().double(), w.float().double(), v


@settings(max_examples=60, deadline=None)
@given(
    b=st.integers(1, 5),
    L=st.integers(1, 300),
    K=st.integers(1, 3),
    seed=st.integers(0, 2**40),
    t_kind=st.sampled_from(["one", "tiny", "uniform", "uniform"]),
    w_kind=st.sampled_from(["zero", "large", "lomdm", "lomdm"]),
    backend=st.sampled_from(BACKENDS),
)
def test_log_q_and_its_gradient_match_float64(b, L, K, seed, t_kind, w_kind, backend) -> None:
    x, t64, w64, v = _draw(b, L, seed % 2**20, t_kind, w_kind)
    t = t64.float().to(DEVICE).requires_grad_(True)
    w = w64.float().to(DEVICE).requires_grad_(True)
    z, log_q = forward_mask(x.to(DEVICE), t, w, K=K, seed=seed, mask_id=v, backend=backend)
    assert z.shape == (K, b, L) and z.dtype == torch.int64 and log_q.shape == (K, b) and log_q.dtype == torch.float32
    z_cpu = z.cpu()
    masked = z_cpu == v
    assert torch.equal(torch.where(masked, x.expand_as(z_cpu), z_cpu), x.expand_as(z_cpu)), "unmasked z ≠ x"
    if t_kind == "one" or w_kind == "zero":
        assert bool(masked.all()), "P(masked) = t^w = 1 must mask everything"
    if t_kind == "tiny" and w_kind == "large":
        assert not bool(masked.any()), "P(masked) = 1e-15 must mask nothing here"

    t_ref = t64.clone().requires_grad_(True)
    w_ref = w64.clone().requires_grad_(True)
    want, terms = independent_log_q(z_cpu, x, t_ref, w_ref, v)
    mag = terms.detach().abs().sum(-1) + 1e-6
    assert_close_scaled(log_q, want, mag, RTOL, "log q vs independent formula")
    if ForwardMasking is not None:
        assert_close_scaled(log_q, reference_log_q(z_cpu, x, t64, w64, v), mag, RTOL, "log q vs ForwardMasking")

    c = torch.linspace(-1.0, 2.0, K * b, dtype=torch.float64).reshape(K, b)
    (log_q * c.float().to(DEVICE)).sum().backward()
    (want * c).sum().backward()
    # ∂/∂y per position: 1 (masked) or −1/expm1(−y): magnitudes to scale the gradients' errors.
    y = (w64 * torch.log(t64).unsqueeze(-1)).expand(K, b, L)
    dy = torch.where(masked, torch.ones_like(y), 1.0 / torch.expm1(-torch.where(masked, -1.0, y)).abs())
    dy = (c.abs().unsqueeze(-1) * dy).sum(0)
    assert_close_scaled(w.grad, w_ref.grad, dy * torch.log(t64).abs().unsqueeze(-1) + 1e-12, RTOL, "d log q / d w")
    assert_close_scaled(t.grad, t_ref.grad, (dy * w64).sum(-1) / t64 + 1e-12, RTOL, "d log q / d t")


def _z_score(count: float, mean: float, var: float) -> float:
    return (count - mean) / math.sqrt(max(var, 1e-300))


@pytest.mark.parametrize("backend", BACKENDS)
def test_mask_frequencies_follow_t_to_the_w(backend) -> None:
    """Binomial z-tests: overall, per probability bin, K-sample independence, neighbour independence."""
    b, L, K = 8, 512, 4
    x, t64, w64, v = _draw(b, L, 123, "uniform", "lomdm")
    z, _ = forward_mask(
        x.to(DEVICE), t64.float().to(DEVICE), w64.float().to(DEVICE), K=K, seed=99, mask_id=v, backend=backend
    )
    m = (z.cpu() == v).double()  # (K, B, L)
    p = (t64.float().double().unsqueeze(-1) ** w64.float().double()).expand(K, b, L)

    assert abs(_z_score(m.sum().item(), p.sum().item(), (p * (1 - p)).sum().item())) < Z_BOUND
    edges = torch.tensor([0.0, 0.2, 0.4, 0.6, 0.8, 1.0001], dtype=torch.float64)
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (p >= lo) & (p < hi)
        if sel.sum() > 100:
            ps = p[sel]
            zs = _z_score(m[sel].sum().item(), ps.sum().item(), (ps * (1 - ps)).sum().item())
            assert abs(zs) < Z_BOUND, f"bin [{lo:.1f}, {hi:.1f}): z = {zs:.2f}"
    # Samples k = 0, 1 independent: P(both masked) = p².
    both = m[0] * m[1]
    p0 = p[0]
    assert abs(_z_score(both.sum().item(), (p0**2).sum().item(), (p0**2 * (1 - p0**2)).sum().item())) < Z_BOUND
    # Neighbouring positions independent (distinct Philox counters).
    nb = m[:, :, 1:] * m[:, :, :-1]
    pn = p[:, :, 1:] * p[:, :, :-1]
    assert abs(_z_score(nb.sum().item(), pn.sum().item(), (pn * (1 - pn)).sum().item())) < Z_BOUND


def test_backends_agree_in_law() -> None:
    """Triton (Philox) and the PyTorch fallback (torch.Generator): same mask frequency, two-sample z-test."""
    b, L, K = 4, 1000, 3
    x, t64, w64, v = _draw(b, L, 5, "uniform", "lomdm")
    counts = []
    for backend in BACKENDS:
        z, _ = forward_mask(
            x.to(DEVICE), t64.float().to(DEVICE), w64.float().to(DEVICE), K=K, seed=3, mask_id=v, backend=backend
        )
        counts.append((z.cpu() == v).double().sum().item())
    p = t64.float().double().unsqueeze(-1) ** w64.float().double()
    var = 2 * K * (p * (1 - p)).sum().item()
    assert abs(counts[0] - counts[1]) / math.sqrt(var) < Z_BOUND


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_seed_same_masks_other_seed_other_masks(backend) -> None:
    x, t64, w64, v = _draw(3, 200, 8, "uniform", "lomdm")
    args = (x.to(DEVICE), t64.float().to(DEVICE), w64.float().to(DEVICE))
    z1, q1 = forward_mask(*args, K=2, seed=17, mask_id=v, backend=backend)
    z2, q2 = forward_mask(*args, K=2, seed=17, mask_id=v, backend=backend)
    z3, _ = forward_mask(*args, K=2, seed=18, mask_id=v, backend=backend)
    assert torch.equal(z1, z2) and torch.equal(q1, q2)
    assert not torch.equal(z1, z3)
    assert not torch.equal(z1[0], z1[1])


@settings(max_examples=6, deadline=None)
@given(L=st.integers(1, 80), block_l=st.sampled_from([4, 16, 64]), K=st.integers(1, 3), seed=st.integers(0, 2**31))
def test_triton_multi_block_partial_sums(L, block_l, K, seed) -> None:
    """Several L-blocks per sequence: partial Σ log q per block, summed on the host, equals the formula."""
    from oemdm_spec.fast.kernels._triton import triton_forward_mask

    x, t64, w64, v = _draw(3, L, seed % 1000, "uniform", "lomdm")
    z, log_q = triton_forward_mask(
        x.to(DEVICE), t64.float().to(DEVICE), w64.float().to(DEVICE), K, seed, v, block_l=block_l
    )
    want, terms = independent_log_q(z.cpu(), x, t64, w64, v)
    assert_close_scaled(log_q, want, terms.abs().sum(-1) + 1e-6, RTOL, "multi-block log q")
