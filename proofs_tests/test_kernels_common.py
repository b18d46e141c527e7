"""Shared set-up of the kernel property tests (no tests here; imported by the other test_kernels_* modules).

Where the tests run:

* CPU (default, CI): the Triton kernels run under ``TRITON_INTERPRET=1`` (conftest.py) in float32 only,
  because the interpreter's bf16 arithmetic is wrong (environment.md); a bf16 input is still exercised
  through the wrapper's fp32 upcast.
* GPU (``python benchmarks/gpu.py --check``): ``OEMDM_TEST_DEVICE=cuda`` and
  ``OEMDM_TEST_DTYPES=float32,bfloat16``, with the GPU tolerances below.

Tolerances (relative to a per-element *magnitude* M of the computation, so that cancellation between terms
does not turn a tiny absolute error into a huge relative one):

* float32 on CPU: 2e-5·M. fp32 ε = 1.2e-7; the log-sum-exp over V ≤ 70001 terms in tree order loses about
  log2(V)·ε ≈ 2e-6, exp/log a few ulps more; 2e-5 leaves ×10 margin and still catches any real bug
  (a wrong term is off by O(1)).
* float32 on GPU: 1e-4·M. ``tl.exp``/``tl.log`` are the approximate MUFU ops (≈2 ulp, scaled by |x − m| up
  to 2e4 for the extreme logits); the GEMMs of the fused linear path run in TF32 (10-bit mantissa), so there
  the loss and gradients get 5e-3·M.
* bfloat16 (GPU only): the gradient is stored in bf16 (8-bit mantissa, rounding 2**-9 ≈ 2e-3), loss and
  log-softmax are computed in fp32 from the same bf16 logits the reference sees: 1e-2·M for gradients
  (the spec's bf16 ≈ 1e-2), 1e-4·M for the loss; the linear path's bf16 GEMMs round logits at 2**-9: 2e-2·M.
"""

from __future__ import annotations

import math
import os

import torch

DEVICE = torch.device(os.environ.get("OEMDM_TEST_DEVICE", "cpu"))
ON_GPU = DEVICE.type == "cuda"
DTYPES = tuple(
    getattr(torch, name) for name in os.environ.get("OEMDM_TEST_DTYPES", "float32").split(",") if name.strip()
)
# Triton on the test device: the interpreter on CPU (set by conftest), the compiler on CUDA.
BACKENDS = ("triton", "torch")

# (what, dtype) -> relative tolerance against the magnitude M, see the module docstring.
_TOL_CPU = {"loss": 2e-5, "grad": 2e-5, "linear": 2e-5}
_TOL_GPU = {
    torch.float32: {"loss": 1e-4, "grad": 1e-4, "linear": 5e-3},
    torch.bfloat16: {"loss": 1e-4, "grad": 1e-2, "linear": 2e-2},
}


def tol(kind: str, dtype: torch.dtype) -> float:
    return _TOL_GPU[dtype][kind] if ON_GPU else _TOL_CPU[kind]


def gen(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def log_uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    """float64 values spread evenly in log space over [lo, hi] (A and Â span 1e-3..1e3)."""
    return torch.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * torch.rand(n, generator=g, dtype=torch.float64))


def make_rows(n: int, v: int, seed: int, scale: float, extreme: bool):
    """float64 (logits, target, A, A_hat) on the CPU; logits ~ scale·N(0,1), some ±1e4 when ``extreme``."""
    g = gen(seed)
    logits = scale * torch.randn(n, v, generator=g, dtype=torch.float64)
    if extreme and v > 1:
        hit = torch.rand(n, v, generator=g) < 0.05
        sign = torch.where(torch.rand(n, v, generator=g) < 0.5, -1.0, 1.0).double()
        logits = torch.where(hit, 1e4 * sign, logits)
        logits[0, 0] = 1e4  # at least one dominant logit; the target then often has log p ≈ −2e4
    target = torch.randint(0, v, (n,), generator=g)
    A = log_uniform(n, 1e-3, 1e3, g)
    A_hat = log_uniform(n, 1e-3, 1e3, g)
    return logits, target, A, A_hat


def assert_close_scaled(
    got: torch.Tensor, want: torch.Tensor, mag: torch.Tensor, rtol: float, what: str, atol: torch.Tensor | float = 0.0
) -> None:
    """|got − want| ≤ rtol·mag + atol elementwise (+1e-30), no NaN anywhere in ``got``."""
    got64 = got.detach().double().cpu()
    assert not torch.isnan(got64).any(), f"{what}: NaN in the result"
    err = (got64 - want.detach().double()).abs()
    bound = rtol * mag.double() + atol + 1e-30
    bad = err > bound
    if bad.any():
        i = int(torch.argmax((err / bound).flatten()))
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {err.numel()} elements off; worst flat index {i}: got "
            f"{got64.flatten()[i].item():.9g}, want {want.flatten()[i].item():.9g}, "
            f"|err| {err.flatten()[i].item():.3g} "
            f"> bound {bound.flatten()[i].item():.3g} (rtol {rtol:g})"
        )


def reference_with_grads(logits64, target, A64, A_hat64, row_weight64):
    """float64 reference loss and its gradients by autograd through ``row_loss`` (the kernels' twin)."""
    from oemdm_spec.reference.terms import row_loss

    leaves = [t.detach().clone().requires_grad_(True) for t in (logits64, A64, A_hat64)]
    loss = row_loss(leaves[0], target, leaves[1], leaves[2])
    (loss * row_weight64).sum().backward()
    return loss.detach(), [t.grad for t in leaves]


def loss_magnitude(logits64, target, A64, A_hat64):
    """M for the loss: Σ of the absolute sizes of its terms (A·(|log p| + 1), |A log A|, |A log Â|, A, Â)."""
    log_px = torch.log_softmax(logits64, -1).gather(1, target.unsqueeze(1)).squeeze(1)
    return A64 * (log_px.abs() + 1.0) + (A64 * A64.log()).abs() + (A64 * A_hat64.log()).abs() + A64 + A_hat64
