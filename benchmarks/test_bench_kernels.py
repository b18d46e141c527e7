"""CPU benchmarks of the kernels' PyTorch fallbacks (pytest-benchmark; tiny sizes).

Not run by default: ``--benchmark-disable`` is in the project's addopts, so under plain ``pytest`` each
function runs once as a smoke test. Measure with::

    PYTHONPATH=. pytest benchmarks --benchmark-enable --benchmark-columns=median,iqr,rounds

TRITON_INTERPRET is not set here, so ``backend="auto"`` is the PyTorch fallback on CPU; the interpreter is a
correctness tool, not something to time. GPU timings: ``benchmarks/gpu.py``.
"""

from __future__ import annotations

import pytest
import torch

from oemdm_spec.fast.kernels import forward_mask, linear_oemdm_row_loss, oemdm_row_loss

# One intra-op thread: the CI/dev machines have two shared cores; threads would mostly measure contention.
torch.set_num_threads(1)

N, V, D = 512, 2048, 64
B, L, K = 8, 512, 2


def _rows(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(N, V, generator=g)
    target = torch.randint(0, V, (N,), generator=g)
    A = torch.rand(N, generator=g) + 0.1
    A_hat = torch.rand(N, generator=g) + 0.1
    return logits, target, A, A_hat


def eager_formula(logits, target, A, A_hat):
    """The unfused PyTorch formula: fp32 log-softmax (N×V fp32), gather, weight, velocity."""
    log_px = torch.log_softmax(logits.float(), -1).gather(1, target.unsqueeze(1)).squeeze(1)
    return -A * log_px + A * (A.log() - A_hat.log()) - (A - A_hat)


@pytest.mark.parametrize("impl", ["eager", "fused-fallback"])
def test_bench_row_loss_fwd_bwd(benchmark, impl) -> None:
    logits, target, A, A_hat = _rows()
    logits.requires_grad_(True)

    def step():
        logits.grad = None
        f = eager_formula if impl == "eager" else oemdm_row_loss
        f(logits, target, A, A_hat).sum().backward()

    benchmark(step)


@pytest.mark.parametrize("impl", ["eager", "fused-fallback"])
def test_bench_row_loss_eval(benchmark, impl) -> None:
    logits, target, A, A_hat = _rows()
    f = eager_formula if impl == "eager" else oemdm_row_loss

    def step():
        with torch.no_grad():
            return f(logits, target, A, A_hat)

    benchmark(step)


@pytest.mark.parametrize("impl", ["unfused", "fused-fallback"])
def test_bench_linear_loss_fwd_bwd(benchmark, impl) -> None:
    g = torch.Generator().manual_seed(1)
    h = torch.randn(N, D, generator=g, requires_grad=True)
    W = (torch.randn(V, D, generator=g) / D**0.5).requires_grad_(True)
    _, target, A, A_hat = _rows()

    def step():
        h.grad = W.grad = None
        if impl == "unfused":
            out = eager_formula(h @ W.T, target, A, A_hat)
        else:
            out = linear_oemdm_row_loss(h, W, None, target, A, A_hat, chunk_size=128)
        out.sum().backward()

    benchmark(step)


def test_bench_forward_mask(benchmark) -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randint(0, 100, (B, L), generator=g)
    t = torch.rand(B, generator=g) * 0.99 + 0.01
    w = torch.rand(B, L, generator=g) + 0.05
    benchmark(lambda: forward_mask(x, t, w, K=K, seed=0, mask_id=100))
