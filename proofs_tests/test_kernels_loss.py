"""The fused OeMDM row loss (``oemdm_row_loss``) against its float64 twin ``reference.terms.row_loss``.

Values and all three gradients (logits, A, Â) are compared with autograd through the float64 reference, for
both backends (Triton under the interpreter on CPU, compiled on a GPU; and the PyTorch fallback), and for each
kernel variant through its launcher. Tolerances: see test_kernels_common.py.
"""

from __future__ import annotations

import math

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
    loss_magnitude,
    make_rows,
    reference_with_grads,
    tol,
)

from oemdm_spec.fast.kernels import loss as loss_mod
from oemdm_spec.fast.kernels import oemdm_row_loss

# Odd, prime, tiny, just past a power of two; all smaller than one tile (65536), so the tile kernel runs.
SMALL_V = [1, 2, 3, 7, 31, 101, 257, 1000, 4097]
FTZ = 2e-38  # fp32 underflow: probabilities below the smallest normal are flushed on a GPU, subnormal on CPU


def _weights(kind: str, n: int, seed: int) -> torch.Tensor:
    """Per-row weights of the summed loss: via grad_output ("ones", "uniform", "random") or via the
    ``row_weight`` argument with grad_output ≡ 1 ("row_weight", "row_weight_scalar")."""
    if kind == "ones":
        return torch.ones(n, dtype=torch.float64)
    if kind in ("uniform", "row_weight_scalar"):
        return torch.full((n,), 0.37, dtype=torch.float64)
    return torch.rand(n, generator=gen(seed + 1), dtype=torch.float64) * 2 - 0.5


def check_against_reference(n, v, seed, scale, extreme, backend, dtype, weight_kind) -> None:
    logits64, target, A64, A_hat64 = make_rows(n, v, seed, scale, extreme)
    logits = logits64.to(dtype).to(DEVICE)
    logits64 = logits.double().cpu()  # the reference sees exactly the (rounded) values the kernel sees
    w64 = _weights(weight_kind, n, seed)

    leaves = [logits.clone().requires_grad_(True), A64.float().to(DEVICE), A_hat64.float().to(DEVICE)]
    leaves[1].requires_grad_(True)
    leaves[2].requires_grad_(True)
    if weight_kind.startswith("row_weight"):
        rw = 0.37 if weight_kind == "row_weight_scalar" else w64.float().to(DEVICE)
        out = oemdm_row_loss(leaves[0], target.to(DEVICE), leaves[1], leaves[2], row_weight=rw, backend=backend)
        out.sum().backward()
        out = out.double().cpu() / w64.float().double()  # compare the unweighted loss below
    else:
        out = oemdm_row_loss(leaves[0], target.to(DEVICE), leaves[1], leaves[2], backend=backend)
        (out * w64.float().to(DEVICE)).sum().backward()
    assert out.shape == (n,)
    assert leaves[0].grad.dtype == dtype

    ref, (g_logits, g_A, g_Ah) = reference_with_grads(
        logits64, target, A64.float().double(), A_hat64.float().double(), w64
    )
    A32, Ah32 = A64.float().double(), A_hat64.float().double()
    assert_close_scaled(out, ref, loss_magnitude(logits64, target, A32, Ah32), tol("loss", dtype), "loss")

    p = torch.softmax(logits64, -1)
    onehot = torch.nn.functional.one_hot(target, v).double()
    row = (w64.abs() * A32).unsqueeze(1)
    assert_close_scaled(
        leaves[0].grad, g_logits, row * (p + onehot), tol("grad", dtype), "d loss / d logits", atol=row * FTZ
    )
    log_px = torch.log_softmax(logits64, -1).gather(1, target.unsqueeze(1)).squeeze(1)
    mag_A = w64.abs() * (log_px.abs() + A32.log().abs() + Ah32.log().abs() + 1.0)
    assert_close_scaled(leaves[1].grad, g_A, mag_A, tol("loss", dtype), "d loss / d A")
    assert_close_scaled(leaves[2].grad, g_Ah, w64.abs() * (1.0 + A32 / Ah32), tol("loss", dtype), "d loss / d A_hat")


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(1, 70),
    v=st.sampled_from(SMALL_V),
    seed=st.integers(0, 2**20),
    scale=st.sampled_from([0.1, 3.0, 30.0]),
    extreme=st.booleans(),
    backend=st.sampled_from(BACKENDS),
    dtype=st.sampled_from(DTYPES),
    weight_kind=st.sampled_from(["ones", "uniform", "random", "row_weight", "row_weight_scalar"]),
)
def test_row_loss_values_and_gradients_match_float64_reference(
    n, v, seed, scale, extreme, backend, dtype, weight_kind
) -> None:
    check_against_reference(n, v, seed, scale, extreme, backend, dtype, weight_kind)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("n", "v", "extreme"),
    [
        (1, 50258, True),  # GPT-2 vocabulary, one row with ±1e4 logits (interpreter cost: one or two rows)
        (2, 50258, False),
        (1, 70001, False),  # wider than one tile: the chunked kernel (odd V, not a multiple of its block)
    ],
)
def test_row_loss_large_vocabulary(backend, n, v, extreme) -> None:
    for dtype in DTYPES:
        check_against_reference(n, v, 7, 3.0, extreme, backend, dtype, "random")


# Every kernel variant through its launcher (the public API only picks the default one per V).
TRITON_CONFIGS = [
    {"kind": "tile", "BLOCK_R": 1, "RELOAD": False},
    {"kind": "tile", "BLOCK_R": 4, "RELOAD": True},
    {"kind": "chunked", "BLOCK_V": 16},
    {"kind": "chunked", "BLOCK_V": 128},
]


@pytest.mark.parametrize("cfg", TRITON_CONFIGS, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 9), v=st.sampled_from([1, 5, 100, 257]), seed=st.integers(0, 2**20), extreme=st.booleans())
def test_each_kernel_variant_matches_reference_and_fallback(cfg, n, v, seed, extreme) -> None:
    from oemdm_spec.fast.kernels._triton import loss_launch_config, triton_row_loss_forward

    logits64, target, A64, A_hat64 = make_rows(n, v, seed, 5.0, extreme)
    logits = logits64.float().to(DEVICE)
    logits64 = logits.double().cpu()
    A32, Ah32 = A64.float(), A_hat64.float()
    full = {**loss_launch_config(n, v), **cfg}
    if full["kind"] == "tile":
        full["BLOCK_V"] = max(full["BLOCK_V"], 1)
    grad = torch.empty_like(logits)
    loss, log_px = triton_row_loss_forward(logits, target.to(DEVICE), A32.to(DEVICE), Ah32.to(DEVICE), grad, **full)
    grad_t = torch.empty_like(logits)
    loss_t, log_px_t = loss_mod.torch_row_loss_forward(
        logits, target.to(DEVICE), A32.to(DEVICE), Ah32.to(DEVICE), grad_t
    )

    from oemdm_spec.reference.terms import row_loss

    ref = row_loss(logits64, target, A32.double(), Ah32.double())
    mag = loss_magnitude(logits64, target, A32.double(), Ah32.double())
    rtol = tol("loss", torch.float32)
    p = torch.softmax(logits64, -1)
    onehot = torch.nn.functional.one_hot(target, v).double()
    ref_grad = A32.double().unsqueeze(1) * (p - onehot)
    gmag = A32.double().unsqueeze(1) * (p + onehot)
    for name, (lo, lp, gr) in {"triton": (loss, log_px, grad), "torch": (loss_t, log_px_t, grad_t)}.items():
        assert_close_scaled(lo, ref, mag, rtol, f"{name} loss")
        ref_lp = torch.log_softmax(logits64, -1).gather(1, target.unsqueeze(1)).squeeze(1)
        assert_close_scaled(lp, ref_lp, ref_lp.abs() + 1.0, rtol, f"{name} log p[x]")
        assert_close_scaled(
            gr, ref_grad, gmag, tol("grad", torch.float32), f"{name} grad", atol=A32.double()[:, None] * FTZ
        )
    # The two backends agree with each other to twice the reference tolerance (both are within it).
    assert_close_scaled(loss, loss_t.double(), mag, 2 * rtol, "triton vs torch loss")


@pytest.mark.skipif(ON_GPU, reason="exercises the interpreter's bf16 work-around")
@pytest.mark.parametrize("backend", BACKENDS)
def test_bf16_logits_on_cpu(backend) -> None:
    """bf16 arithmetic is wrong in the interpreter, so the wrapper computes in fp32 and stores bf16; the
    fallback's log_softmax reads bf16 and computes in fp32."""
    logits64, target, A64, A_hat64 = make_rows(6, 33, 3, 3.0, False)
    logits = logits64.bfloat16().requires_grad_(True)
    out = oemdm_row_loss(logits, target, A64.float(), A_hat64.float(), backend=backend)
    out.sum().backward()
    ref, (g, _, _) = reference_with_grads(
        logits.detach().double(),
        target,
        A64.float().double(),
        A_hat64.float().double(),
        torch.ones(6, dtype=torch.float64),
    )
    assert logits.grad.dtype == torch.bfloat16
    assert_close_scaled(out, ref, loss_magnitude(logits.detach().double(), target, A64, A_hat64), 2e-5, "bf16 loss")
    # bf16 storage of the gradient: 8 mantissa bits, rounding ≤ 2**-9 relative.
    assert_close_scaled(logits.grad, g, g.abs() + A64.unsqueeze(1) * 1e-6, 4e-3, "bf16 grad")


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_velocity_row_and_extremes_are_finite(backend) -> None:
    """A = 0 leaves L_velocity = Â (0·log 0 = 0) and no NaN; all-equal logits give log p = −log V."""
    logits = torch.zeros(3, 10, device=DEVICE)
    logits[2] = torch.tensor([1e4, -1e4] * 5)
    A = torch.tensor([0.0, 2.0, 1e3], device=DEVICE)
    A_hat = torch.tensor([0.5, 2.0, 1e-3], device=DEVICE)
    target = torch.tensor([3, 4, 1], device=DEVICE)
    out = oemdm_row_loss(logits, target, A, A_hat, backend=backend).cpu().double()
    assert not out.isnan().any()
    assert out[0].item() == pytest.approx(0.5, rel=1e-6)
    assert out[1].item() == pytest.approx(2.0 * torch.log(torch.tensor(10.0)).item(), rel=1e-6)
    # Row 2: five logits at 1e4, so log p[x] = −2e4 − log 5; velocity 1e3·log(1e6) − (1e3 − 1e-3).
    want = 1e3 * (2e4 + math.log(5.0)) + 1e3 * math.log(1e6) - (1e3 - 1e-3)
    assert out[2].item() == pytest.approx(want, rel=1e-6)
