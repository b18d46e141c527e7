"""Fused linear head + OeMDM row loss: the loss of ``hidden @ weight.T + bias`` without ever holding N×V.

Rows are processed in large chunks (default: about 2**28 logits per chunk, i.e. ~5k rows at V = 50258, so
each GEMM is chunk×V×d ≈ 0.4 TFLOP at d = 768: large enough to fill an H100). Per chunk:

1. ``logits = hidden_c @ weight.T + bias``                         (GEMM 1, in the compute dtype)
2. the fused loss kernel writes A·(softmax − onehot) **over the logits buffer** (no second N×V buffer)
3. ``grad_hidden_c = G @ weight``; ``grad_weight += G.T @ hidden_c``  (GEMMs 2 and 3, accumulated at once)

so the peak extra memory is one chunk of logits plus grad_weight, whatever N is. The gradients are computed
in the forward for grad_output ≡ 1 (the idea of Liger-Kernel's fused linear cross-entropy), or for the
constant per-row ``row_weight`` when one is given (folded into the kernel's gradient scale, no extra pass).
The backward then only rescales: grad_hidden row by row (exact for any grad_output), grad_weight and grad_bias
by a scalar when grad_output is uniform across rows (free when it is 1). For a non-uniform grad_output the
weight/bias gradients are recomputed exactly in a second chunked pass; pass per-row weights as ``row_weight``
instead to avoid it.

Precision: GEMMs accumulate in fp32 inside cuBLAS; grad_weight is accumulated across chunks in the weight's
dtype through ``addmm_`` (bf16 under autocast: relative error ≈ 2**-9 per chunk, a handful of chunks), and
grad_bias in fp32.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._backend import resolve_backend
from ._checks import check_float, check_same_device
from .loss import _validate_row_args, rate_grads, resolve_row_weight, row_loss_forward

__all__ = ["linear_oemdm_row_loss", "default_chunk_size"]

# Logits per chunk by default: 2**28 on a GPU (512 MiB in bf16: GEMMs that fill an H100), 2**24 on a CPU (where
# a chunk is only a memory bound, and 1 GiB of fp32 logits would be a lot of RAM for nothing).
_CHUNK_LOGITS = {"cuda": 1 << 28, "cpu": 1 << 24}


def default_chunk_size(n: int, v: int, device_type: str = "cuda") -> int:
    """Rows per chunk: ~2**28 logits on a GPU (2**24 on a CPU), a multiple of 256 rows, at least 256."""
    budget = _CHUNK_LOGITS.get(device_type, 1 << 28)
    rows = max(256, (budget // max(v, 1)) // 256 * 256)
    return max(1, min(n, rows))


def _chunk_grads(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    target: Tensor,
    A: Tensor,
    A_hat: Tensor,
    chunk: int,
    backend: str,
    need: tuple[bool, bool, bool],
    grad_scale: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """One chunked pass: (loss, log_px, grad_hidden, grad_weight, grad_bias), the loss unscaled and the gradients
    those of Σ_r grad_scale_r·loss_r (of the sum when grad_scale is None). The kernel writes the scaled logit
    gradient directly: no extra pass over the chunk."""
    n = hidden.shape[0]
    v = weight.shape[0]
    need_h, need_w, need_b = need
    any_grad = need_h or need_w or need_b
    dev = hidden.device
    loss = torch.empty(n, dtype=torch.float32, device=dev)
    log_px = torch.empty(n, dtype=torch.float32, device=dev)
    g_h = torch.empty_like(hidden) if need_h else None
    g_w = torch.zeros_like(weight) if need_w else None
    g_b = torch.zeros(v, dtype=torch.float32, device=dev) if need_b else None
    wt = weight.t()
    for r0 in range(0, n, chunk):
        r1 = min(n, r0 + chunk)
        h = hidden[r0:r1]
        logits = torch.addmm(bias, h, wt) if bias is not None else h @ wt
        gs = None if grad_scale is None else grad_scale[r0:r1]
        lc, pc = row_loss_forward(
            logits, target[r0:r1], A[r0:r1], A_hat[r0:r1], logits if any_grad else None, backend, gs
        )
        loss[r0:r1], log_px[r0:r1] = lc, pc
        if not any_grad:
            continue
        grad = logits  # now holds grad_scale·A·(softmax − onehot)
        if g_h is not None:
            torch.mm(grad, weight, out=g_h[r0:r1])
        if g_w is not None:
            g_w.addmm_(grad.t(), h)
        if g_b is not None:
            g_b += grad.sum(dim=0, dtype=torch.float32)
        del logits, grad
    return loss, log_px, g_h, g_w, g_b


class _LinearRowLossFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, target, A, A_hat, row_weight, chunk, backend, need):  # type: ignore[override]
        loss, log_px, g_h, g_w, g_b = _chunk_grads(
            hidden, weight, bias, target, A, A_hat, chunk, backend, need, row_weight
        )
        ctx.save_for_backward(hidden, weight, bias, target, A, A_hat, log_px, row_weight)
        ctx.grads = (g_h, g_w, g_b)
        ctx.chunk, ctx.backend, ctx.need = chunk, backend, need
        return loss if row_weight is None else loss * row_weight

    @staticmethod
    def backward(ctx, grad_output):  # type: ignore[override]
        hidden, weight, bias, target, A, A_hat, log_px, row_weight = ctx.saved_tensors
        g_h, g_w, g_b = ctx.grads
        g = grad_output.float()
        d_h = d_w = d_b = None
        if g_h is not None:
            d_h = _scale_rows(g_h, g)
        if (g_w is not None or g_b is not None) and g.numel() == 0:
            d_w, d_b = g_w, g_b  # no rows: the forward's zero sums are the gradients (min/max of nothing fails)
        elif g_w is not None or g_b is not None:
            lo, hi = torch.stack([g.min(), g.max()]).tolist()
            if lo == hi:  # uniform grad_output: the stored sums are exact up to the scalar (free when 1)
                d_w = None if g_w is None else (g_w if lo == 1.0 else g_w * lo)
                d_b = None if g_b is None else (g_b if lo == 1.0 else g_b * lo)
            else:  # per-row grad_output: recompute Σ_r c_r g_r G_rᵀ h_r exactly in a second chunked pass
                scale = g if row_weight is None else g * row_weight
                _, _, _, d_w, d_b = _chunk_grads(
                    hidden, weight, bias, target, A, A_hat, ctx.chunk, ctx.backend,
                    (False, g_w is not None, g_b is not None), grad_scale=scale,
                )  # fmt: skip
        if d_b is not None:
            d_b = d_b.to(bias.dtype)
        if row_weight is not None:
            g = g * row_weight
        d_A, d_Ah = rate_grads(g, A, A_hat, log_px, ctx.needs_input_grad[4], ctx.needs_input_grad[5])
        return d_h, d_w, d_b, None, d_A, d_Ah, None, None, None, None


def _scale_rows(x: Tensor, g: Tensor) -> Tensor:
    """x[r] * g[r] computed in fp32 and rounded once to x's dtype (out of place: retain_graph stays valid)."""
    return x.clone().mul_(g.unsqueeze(1))


def linear_oemdm_row_loss(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    target: Tensor,
    A: Tensor,
    A_hat: Tensor,
    *,
    chunk_size: int | None = None,
    row_weight: Tensor | float | None = None,
    backend: str = "auto",
) -> Tensor:
    r"""OeMDM row loss of the logits ``hidden @ weight.T + bias``, never materialising all N×V logits.

    Args:
        hidden: (N, d) features of the masked rows.
        weight: (V, d) output projection (the LM head); bias: (V,) or None.
        target, A, A_hat: as in :func:`oemdm_row_loss`.
        chunk_size: rows per chunk (default :func:`default_chunk_size`, ~2**28 logits per chunk).
        row_weight: optional constant weights c (number, () or (N,)): returns c·loss with every gradient
            accumulated for it directly; with ``.sum().backward()`` the backward is then free and exact.
        backend: "auto" | "triton" | "torch" for the loss part (the GEMMs are cuBLAS/ATen either way).

    Returns:
        (N,) float32 losses, differentiable w.r.t. hidden, weight, bias, A and A_hat. Under autocast the
        GEMMs run in the autocast dtype (the inputs are cast once); otherwise hidden, weight and bias must
        share one dtype.
    """
    fn = "linear_oemdm_row_loss"
    for name, t in (("hidden", hidden), ("weight", weight)):
        if not isinstance(t, Tensor) or t.dim() != 2:
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{fn}: {name} must be 2-D, got {shape}")
        check_float(fn, name, t)
    n, d = hidden.shape
    v = weight.shape[0]
    if weight.shape[1] != d:
        raise ValueError(f"{fn}: weight must be (V, {d}) to match hidden (N, {d}), got {tuple(weight.shape)}")
    if v == 0:
        raise ValueError(f"{fn}: weight must have V ≥ 1 rows, got V = 0")
    if bias is not None:
        if not isinstance(bias, Tensor) or tuple(bias.shape) != (v,):
            shape = tuple(bias.shape) if isinstance(bias, Tensor) else type(bias).__name__
            raise ValueError(f"{fn}: bias must be None or ({v},), got {shape}")
        check_float(fn, "bias", bias)
    compiling = torch.compiler.is_compiling()  # value checks then run inside the custom op (ops.py)
    _validate_row_args(fn, n, v, target, A, A_hat, values=not compiling)
    check_same_device(fn, hidden=hidden, weight=weight, bias=bias, target=target, A=A, A_hat=A_hat)
    if chunk_size is None:
        chunk = default_chunk_size(n, v, hidden.device.type)
    elif isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"{fn}: chunk_size must be a positive int or None, got {chunk_size!r}")
    else:
        chunk = chunk_size
    rw = resolve_row_weight(fn, row_weight, n, hidden.device, check=not compiling)
    chosen = resolve_backend(backend, hidden.device, fn=fn)

    dev_type = hidden.device.type
    if torch.is_autocast_enabled(dev_type):
        cdt = torch.get_autocast_dtype(dev_type)
        hidden, weight = hidden.to(cdt), weight.to(cdt)  # differentiable casts: autograd casts grads back
        bias = None if bias is None else bias.to(cdt)
    elif hidden.dtype != weight.dtype or (bias is not None and bias.dtype != weight.dtype):
        raise ValueError(
            f"{fn}: hidden, weight and bias must share a dtype outside autocast, got {hidden.dtype}, "
            f"{weight.dtype}, {None if bias is None else bias.dtype}"
        )
    grad_on = torch.is_grad_enabled()
    need = (
        grad_on and hidden.requires_grad,
        grad_on and weight.requires_grad,
        grad_on and bias is not None and bias.requires_grad,
    )
    if compiling:
        from .ops import linear_row_loss_compiled

        return linear_row_loss_compiled(hidden, weight, bias, target, A, A_hat, rw, chunk, chosen, need)
    with torch.autocast(dev_type, enabled=False):
        if not (any(need) or (grad_on and (A.requires_grad or A_hat.requires_grad))):
            loss = _chunk_grads(hidden, weight, bias, target, A, A_hat, chunk, chosen, (False, False, False))[0]
            return loss if rw is None else loss * rw
        return _LinearRowLossFn.apply(hidden, weight, bias, target, A, A_hat, rw, chunk, chosen, need)
