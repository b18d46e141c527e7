"""The fused linear head + loss (``linear_oemdm_row_loss``) against the float64 twin of the unfused loss.

Reference: ``row_loss(hidden @ weight.T + bias, …)`` in float64 with autograd, so every gradient (hidden,
weight, bias, A, Â) is checked, for a uniform and a per-row grad_output (the two backward paths), with chunk
sizes that do and do not divide N. Tolerances: test_kernels_common.py; the GEMM error is budgeted through
the magnitude |h|·|W|ᵀ + |b| of the logits.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_kernels_common import (
    BACKENDS,
    DEVICE,
    DTYPES,
    ON_GPU,
    assert_close_scaled,
    gen,
    log_uniform,
    loss_magnitude,
    tol,
)

from oemdm_spec.fast.kernels import linear as linear_mod
from oemdm_spec.fast.kernels import linear_oemdm_row_loss
from oemdm_spec.reference.terms import row_loss


def _problem(n, d, v, seed, with_bias, scale):
    g = gen(seed)
    h = torch.randn(n, d, generator=g, dtype=torch.float64)
    W = torch.randn(v, d, generator=g, dtype=torch.float64) * (scale / d**0.5)
    b = torch.randn(v, generator=g, dtype=torch.float64) if with_bias else None
    target = torch.randint(0, v, (n,), generator=g)
    A = log_uniform(n, 1e-3, 1e3, g)
    A_hat = log_uniform(n, 1e-3, 1e3, g)
    return h, W, b, target, A, A_hat


def check_linear(n, d, v, seed, with_bias, scale, chunk_size, backend, dtype, weight_kind, frozen_weight=False):
    h64, W64, b64, target, A64, Ah64 = _problem(n, d, v, seed, with_bias, scale)
    # The reference sees the values the kernel sees (rounded to dtype).
    h64, W64 = h64.to(dtype).double(), W64.to(dtype).double()
    b64 = None if b64 is None else b64.to(dtype).double()
    A64, Ah64 = A64.float().double(), Ah64.float().double()
    w64 = (
        torch.full((n,), 0.25, dtype=torch.float64)
        if weight_kind == "uniform"
        else torch.rand(n, generator=gen(seed + 5), dtype=torch.float64) * 2 - 0.5
    )

    leaves = [h64.to(dtype).to(DEVICE), W64.to(dtype).to(DEVICE), None if b64 is None else b64.to(dtype).to(DEVICE)]
    leaves += [A64.float().to(DEVICE), Ah64.float().to(DEVICE)]
    for i, t in enumerate(leaves):
        if t is not None and not (frozen_weight and i == 1):
            t.requires_grad_(True)
    args = (leaves[0], leaves[1], leaves[2], target.to(DEVICE), leaves[3], leaves[4])
    if weight_kind == "row_weight":  # the weights folded into the kernel, grad_output ≡ 1
        out = linear_oemdm_row_loss(*args, chunk_size=chunk_size, row_weight=w64.float().to(DEVICE), backend=backend)
        out.sum().backward()
        out = out.double().cpu() / w64.float().double()
    else:
        out = linear_oemdm_row_loss(*args, chunk_size=chunk_size, backend=backend)
        (out * w64.float().to(DEVICE)).sum().backward()
    assert out.shape == (n,)

    refs = [h64, W64, b64, A64, Ah64]
    refs = [None if t is None else t.clone().requires_grad_(True) for t in refs]
    logits = refs[0] @ refs[1].T + (refs[2] if refs[2] is not None else 0.0)
    ref = row_loss(logits, target, refs[3], refs[4])
    (ref * w64).sum().backward()

    # Magnitudes (see the module docstring of test_kernels_common): logits size, probabilities, |G|.
    lmag = h64.abs() @ W64.abs().T + (b64.abs() if b64 is not None else 0.0)
    big = lmag.amax(1)  # worst logit size per row
    p = torch.softmax(logits.detach(), -1)
    onehot = torch.nn.functional.one_hot(target, v).double()
    gabs = (w64.abs() * A64 * (1.0 + big)).unsqueeze(1) * (p + onehot)
    rtol = tol("linear", dtype)
    lm = loss_magnitude(logits.detach(), target, A64, Ah64) + A64 * big
    assert_close_scaled(out, ref, lm, rtol, "loss")
    assert_close_scaled(leaves[0].grad, refs[0].grad, gabs @ W64.abs() + 1e-30, rtol, "d/d hidden")
    if frozen_weight:
        assert leaves[1].grad is None
    else:
        assert leaves[1].grad.dtype == dtype
        assert_close_scaled(leaves[1].grad, refs[1].grad, gabs.T @ h64.abs() + 1e-30, rtol, "d/d weight")
    if b64 is not None:
        assert_close_scaled(leaves[2].grad, refs[2].grad, gabs.sum(0) + 1e-30, rtol, "d/d bias")
    log_px = torch.log_softmax(logits.detach(), -1).gather(1, target.unsqueeze(1)).squeeze(1)
    mag_A = w64.abs() * (log_px.abs() + A64.log().abs() + Ah64.log().abs() + 1.0 + big)
    assert_close_scaled(leaves[3].grad, refs[3].grad, mag_A, rtol, "d/d A")
    assert_close_scaled(leaves[4].grad, refs[4].grad, w64.abs() * (1.0 + A64 / Ah64), rtol, "d/d A_hat")


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 40),
    d=st.sampled_from([1, 3, 16]),
    v=st.sampled_from([1, 7, 101, 300]),
    seed=st.integers(0, 2**20),
    with_bias=st.booleans(),
    scale=st.sampled_from([0.5, 5.0]),
    chunk_size=st.sampled_from([None, 1, 7, 16]),
    backend=st.sampled_from(BACKENDS),
    dtype=st.sampled_from(DTYPES),
    weight_kind=st.sampled_from(["uniform", "per-row", "row_weight"]),
    frozen_weight=st.booleans(),
)
def test_linear_loss_values_and_gradients_match_float64_reference(
    n, d, v, seed, with_bias, scale, chunk_size, backend, dtype, weight_kind, frozen_weight
) -> None:
    check_linear(n, d, v, seed, with_bias, scale, chunk_size, backend, dtype, weight_kind, frozen_weight)


@pytest.mark.parametrize("backend", BACKENDS)
def test_linear_gpt2_vocabulary_one_chunk_of_two_rows(backend) -> None:
    for dtype in DTYPES:
        check_linear(2, 8, 50258, 11, True, 2.0, 1, backend, dtype, "per-row")


def test_never_more_than_one_chunk_of_logits(monkeypatch) -> None:
    """The loss kernel only ever sees chunk_size rows of logits: all N×V is never held."""
    seen = []
    real = linear_mod.row_loss_forward

    def spy(logits, *args):
        seen.append(tuple(logits.shape))
        return real(logits, *args)

    monkeypatch.setattr(linear_mod, "row_loss_forward", spy)
    h, W, b, target, A, A_hat = (
        t if not t.is_floating_point() else t.float() for t in _problem(23, 4, 50, 0, True, 1.0)
    )
    h.requires_grad_(True)
    W.requires_grad_(True)
    out = linear_oemdm_row_loss(h, W, b, target, A, A_hat, chunk_size=5, backend="torch")
    (out * torch.linspace(0.1, 1.0, 23)).sum().backward()  # per-row weights: the recompute pass runs too
    assert seen and max(s[0] for s in seen) <= 5 and sum(s[0] for s in seen) == 2 * 23


def test_default_chunk_is_large_and_bounded() -> None:
    assert linear_mod.default_chunk_size(32768, 50258) in range(4096, 8193)
    assert linear_mod.default_chunk_size(10, 50258) == 10
    assert linear_mod.default_chunk_size(10**6, 10**7) == 256
    assert linear_mod.default_chunk_size(32768, 50258, "cpu") == 256


@pytest.mark.skipif(ON_GPU, reason="CPU autocast smoke test")
def test_autocast_bf16_casts_once_and_returns_fp32_grads() -> None:
    h, W, b, target, A, A_hat = (
        t if not t.is_floating_point() else t.float() for t in _problem(6, 8, 40, 2, True, 1.0)
    )
    h.requires_grad_(True)
    W.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = linear_oemdm_row_loss(h, W, b, target, A, A_hat, backend="torch")
    out.sum().backward()
    assert h.grad.dtype == torch.float32 and W.grad.dtype == torch.float32
    ref = row_loss(h.detach().double() @ W.detach().double().T + b.double(), target, A.double(), A_hat.double())
    # bf16 GEMM inputs (8 mantissa bits): the loss moves by ≈ A·2**-8·|logit|; 5% of the loss bounds it here.
    assert torch.allclose(out.double(), ref, rtol=5e-2, atol=5e-2 * A.double().max().item())


@pytest.mark.parametrize("backend", BACKENDS)
def test_row_weight_and_per_row_grad_output_compose(backend) -> None:
    """row_weight c and a non-uniform grad_output g: the recompute pass must use c·g for grad_weight."""
    h64, W64, b64, target, A64, Ah64 = _problem(13, 5, 37, 4, True, 2.0)
    c = torch.linspace(-0.5, 1.5, 13, dtype=torch.float64)
    g = torch.linspace(2.0, 0.1, 13, dtype=torch.float64)
    leaves = [t.float().to(DEVICE).requires_grad_(True) for t in (h64, W64, b64)]
    out = linear_oemdm_row_loss(
        *leaves, target.to(DEVICE), A64.float().to(DEVICE), Ah64.float().to(DEVICE),
        chunk_size=4, row_weight=c.float().to(DEVICE), backend=backend,
    )  # fmt: skip
    (out * g.float().to(DEVICE)).sum().backward()
    refs = [t.float().double().requires_grad_(True) for t in (h64, W64, b64)]
    ref = row_loss(refs[0] @ refs[1].T + refs[2], target, A64.float().double(), Ah64.float().double())
    (ref * c * g).sum().backward()
    for got, want, name in zip(leaves, refs, ("hidden", "weight", "bias"), strict=True):
        torch.testing.assert_close(
            got.grad.double().cpu(), want.grad, rtol=1e-4, atol=1e-4 * want.grad.abs().max().item(), msg=name
        )
