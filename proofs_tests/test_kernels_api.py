"""The kernels' public contract: validation errors, backend choice, evaluation mode, autograd edge cases."""

from __future__ import annotations

import pytest
import torch
from test_kernels_common import BACKENDS, DEVICE, ON_GPU

from oemdm_spec.fast.kernels import (
    ENV_VAR,
    _backend,
    forward_mask,
    linear_oemdm_row_loss,
    oemdm_row_loss,
    resolve_backend,
)
from oemdm_spec.fast.kernels import loss as loss_mod


def _rows(n=4, v=6):
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn(n, v, generator=g).to(DEVICE),
        torch.randint(0, v, (n,), generator=g).to(DEVICE),
        torch.rand(n, generator=g).to(DEVICE) + 0.1,
        torch.rand(n, generator=g).to(DEVICE) + 0.1,
    )


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda a: {**a, "logits": a["logits"][0]}, "logits must be \\(N, V\\)"),
        (lambda a: {**a, "target": a["target"][:-1]}, "target must have shape \\(4,\\), got \\(3,\\)"),
        (lambda a: {**a, "target": a["target"] + 100}, "target must be in \\[0, 6\\)"),
        (lambda a: {**a, "target": a["target"] - 100}, "target must be in \\[0, 6\\)"),
        (lambda a: {**a, "target": a["target"].float()}, "target must be an integer tensor"),
        (lambda a: {**a, "A": -a["A"]}, "A must be non-negative and finite, got values in \\[-"),
        (lambda a: {**a, "A_hat": a["A_hat"] * float("nan")}, "A_hat contains NaN"),
        (lambda a: {**a, "A": a["A"][:2]}, "A must have shape \\(4,\\)"),
        (lambda a: {**a, "logits": a["logits"].long()}, "logits must be float32, bfloat16 or float16"),
    ],
)
def test_row_loss_rejects_bad_input(change, match) -> None:
    logits, target, A, A_hat = _rows()
    args = change({"logits": logits, "target": target, "A": A, "A_hat": A_hat})
    with pytest.raises(ValueError, match=match):
        oemdm_row_loss(args["logits"], args["target"], args["A"], args["A_hat"])


def test_row_weight_is_validated() -> None:
    logits, target, A, A_hat = _rows()
    with pytest.raises(ValueError, match="row_weight must have shape \\(4,\\) or \\(\\)"):
        oemdm_row_loss(logits, target, A, A_hat, row_weight=torch.ones(3, device=DEVICE))
    with pytest.raises(ValueError, match="row_weight is a constant"):
        oemdm_row_loss(logits, target, A, A_hat, row_weight=torch.ones(4, device=DEVICE, requires_grad=True))
    with pytest.raises(ValueError, match="row_weight must be finite"):
        oemdm_row_loss(logits, target, A, A_hat, row_weight=float("inf"))
    with pytest.raises(ValueError, match="row_weight contains NaN"):
        oemdm_row_loss(logits, target, A, A_hat, row_weight=float("nan"))


def test_linear_rejects_bad_input() -> None:
    _, target, A, A_hat = _rows()
    h, W, b = torch.randn(4, 3), torch.randn(6, 3), torch.randn(6)
    with pytest.raises(ValueError, match="weight must be \\(V, 3\\)"):
        linear_oemdm_row_loss(h, torch.randn(6, 2), b, target.cpu(), A.cpu(), A_hat.cpu())
    with pytest.raises(ValueError, match="bias must be None or \\(6,\\)"):
        linear_oemdm_row_loss(h, W, torch.randn(5), target.cpu(), A.cpu(), A_hat.cpu())
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        linear_oemdm_row_loss(h, W, b, target.cpu(), A.cpu(), A_hat.cpu(), chunk_size=0)
    with pytest.raises(ValueError, match="share a dtype"):
        linear_oemdm_row_loss(h.bfloat16(), W, b, target.cpu(), A.cpu(), A_hat.cpu())
    with pytest.raises(ValueError, match="target must be in \\[0, 6\\)"):
        linear_oemdm_row_loss(h, W, b, target.cpu() + 6, A.cpu(), A_hat.cpu())


def test_forward_mask_rejects_bad_input() -> None:
    x = torch.randint(0, 5, (2, 7))
    t, w = torch.rand(2) + 0.01, torch.rand(2, 7)
    with pytest.raises(ValueError, match="w must have shape \\(2, 7\\)"):
        forward_mask(x, t, w[:, :3], K=2, seed=0, mask_id=5)
    with pytest.raises(ValueError, match="t must be in \\(0, 1\\]"):
        forward_mask(x, t * 0, w, K=2, seed=0, mask_id=5)
    with pytest.raises(ValueError, match="t must be in \\(0, 1\\]"):
        forward_mask(x, t + 1, w, K=2, seed=0, mask_id=5)
    with pytest.raises(ValueError, match="w must be non-negative"):
        forward_mask(x, t, -w - 1, K=2, seed=0, mask_id=5)
    with pytest.raises(ValueError, match="x must be token ids in \\[0, mask_id\\)"):
        forward_mask(x + 5, t, w, K=2, seed=0, mask_id=5)
    with pytest.raises(ValueError, match="K must be ≥ 1, got 0"):
        forward_mask(x, t, w, K=0, seed=0, mask_id=5)
    with pytest.raises(ValueError, match="seed must lie in"):
        forward_mask(x, t, w, K=1, seed=-1, mask_id=5)


def test_backend_choice_argument_env_and_auto(monkeypatch) -> None:
    cpu = torch.device("cpu")
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend("cuda", cpu, fn="f")
    assert resolve_backend("torch", cpu, fn="f") == "torch"
    monkeypatch.setenv(ENV_VAR, "torch")
    assert resolve_backend("auto", cpu, fn="f") == "torch"
    monkeypatch.setenv(ENV_VAR, "bogus")
    with pytest.raises(ValueError, match=ENV_VAR):
        resolve_backend("auto", cpu, fn="f")
    monkeypatch.delenv(ENV_VAR)
    # Interpreter off (as for a user on a CPU): auto falls back to torch, explicit triton is refused.
    monkeypatch.setattr(_backend, "TRITON_INTERPRETED", False)
    assert resolve_backend("auto", cpu, fn="f") == "torch"
    with pytest.raises(ValueError, match="backend='triton' cannot run here"):
        resolve_backend("triton", cpu, fn="f")
    monkeypatch.setattr(_backend, "TRITON_AVAILABLE", False)
    with pytest.raises(ValueError, match="triton is not installed"):
        resolve_backend("triton", cpu, fn="f")


@pytest.mark.skipif(ON_GPU, reason="the interpreter case")
def test_auto_is_triton_under_the_interpreter() -> None:
    assert _backend.TRITON_INTERPRETED
    assert resolve_backend("auto", torch.device("cpu"), fn="f") == "triton"


@pytest.mark.parametrize("backend", BACKENDS)
def test_evaluation_mode_computes_no_gradient(monkeypatch, backend) -> None:
    """Under no_grad, or when nothing requires grad, the kernel runs without a gradient buffer."""
    grad_args = []
    real = loss_mod.row_loss_forward

    def spy(logits, target, A, A_hat, grad_out, *rest):
        grad_args.append(grad_out)
        return real(logits, target, A, A_hat, grad_out, *rest)

    monkeypatch.setattr(loss_mod, "row_loss_forward", spy)
    logits, target, A, A_hat = _rows()
    logits.requires_grad_(True)
    with torch.no_grad():
        out = oemdm_row_loss(logits, target, A, A_hat, backend=backend)
    assert out.grad_fn is None and grad_args == [None]
    out = oemdm_row_loss(logits.detach(), target, A, A_hat, backend=backend)
    assert out.grad_fn is None and grad_args == [None, None]
    # Only A requires grad: still no logit gradient buffer.
    out = oemdm_row_loss(logits.detach(), target, A.clone().requires_grad_(True), A_hat, backend=backend)
    assert out.grad_fn is not None and grad_args[-1] is None
    out.sum().backward()


@pytest.mark.parametrize("backend", BACKENDS)
def test_second_backward_is_refused(backend) -> None:
    logits, target, A, A_hat = _rows()
    logits.requires_grad_(True)
    out = oemdm_row_loss(logits, target, A, A_hat, backend=backend)
    out.sum().backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward called twice"):
        out.sum().backward()


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch(backend) -> None:
    logits = torch.zeros(0, 9, device=DEVICE, requires_grad=True)
    e = torch.zeros(0, device=DEVICE)
    out = oemdm_row_loss(logits, torch.zeros(0, dtype=torch.long, device=DEVICE), e, e, backend=backend)
    assert out.shape == (0,)
    out.sum().backward()
    z, log_q = forward_mask(
        torch.zeros(0, 4, dtype=torch.long, device=DEVICE),
        torch.zeros(0, device=DEVICE),
        torch.zeros(0, 4, device=DEVICE),
        K=2,
        seed=0,
        mask_id=3,
        backend=backend,
    )
    assert z.shape == (2, 0, 4) and log_q.shape == (2, 0)


def test_non_contiguous_logits() -> None:
    big = torch.randn(5, 20, device=DEVICE)
    logits = big[:, 3:14]  # row stride 20, unit column stride
    _, target, A, A_hat = _rows(5, 11)
    outs = [oemdm_row_loss(logits, target, A, A_hat, backend=b) for b in BACKENDS]
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)
    outs_t = [oemdm_row_loss(logits.t().contiguous().t(), target, A, A_hat, backend=b) for b in BACKENDS]
    torch.testing.assert_close(outs_t[0], outs[1], rtol=1e-5, atol=1e-5)
