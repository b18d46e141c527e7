"""The fused OeMDM row loss over logits (spec §1, Eq. 2 at masked rows) and its autograd wrapper.

Per masked row r with clean token x_r, forward velocity A_r and reverse velocity Â_r:

    loss_r = -A_r · log_softmax(logits_r)[x_r]  +  A_r (log A_r - log Â_r) - (A_r - Â_r)
           =        L_main                      +          L_velocity

Gradients (all exact, in closed form):

    ∂loss_r/∂logits_r = A_r · (softmax(logits_r) - onehot(x_r))
    ∂loss_r/∂A_r      = -log p_r[x_r] + log A_r - log Â_r
    ∂loss_r/∂Â_r      = 1 - A_r / Â_r

The forward pass computes the logit gradient while each row is being read (Triton: the row is re-read from
L2 right after its statistics, see ``_triton.py``), stores it in the logits' dtype, and the backward only
rescales it by ``grad_output``. So the one N×V tensor besides the logits is the gradient itself, in bf16 for
bf16 logits: never an fp32 N×V copy. With ``torch.no_grad()`` (or when nothing requires grad) no gradient is
computed or stored at all.

``row_weight`` (constant per-row weights c_r, e.g. 1/(B·L·K) of a mean, or per-sequence weights) returns
c_r·loss_r and writes the gradient already scaled by c_r. Then ``.sum().backward()`` has grad_output ≡ 1 and
the backward does nothing N×V at all: forward + backward move exactly the floor's bytes (one read of the
logits, one write of the gradient). Without it, a mean (grad_output ≡ c ≠ 1) costs one more pass.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._backend import TRITON_INTERPRETED, resolve_backend
from ._checks import check_float, check_int, check_same_device, check_shape, check_values

__all__ = ["oemdm_row_loss", "row_loss_forward", "torch_row_loss_forward", "velocity_terms"]

# Elements per row chunk of the PyTorch fallback: bounds its fp32 temporaries. On a GPU large chunks amortise
# launches (2**24 elements, 64 MiB); on a CPU a chunk that stays in cache is faster (2**17 measured ≈2× eager).
_TORCH_CHUNK_ELEMS = {"cuda": 1 << 24, "cpu": 1 << 17}


def velocity_terms(A: Tensor, A_hat: Tensor) -> Tensor:
    """L_velocity = A(log A - log Â) - (A - Â), with 0·log 0 = 0 at A = 0 (then it equals Â)."""
    safe_A = torch.where(A > 0, A, torch.ones_like(A))  # the discarded branch stays finite
    return torch.where(A > 0, A * (torch.log(safe_A) - torch.log(A_hat)), torch.zeros_like(A)) - (A - A_hat)


def torch_row_loss_forward(
    logits: Tensor,
    target: Tensor,
    A: Tensor,
    A_hat: Tensor,
    grad_out: Tensor | None,
    grad_scale: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """PyTorch twin of the Triton forward: returns (loss, log_px), both (N,) fp32 (the loss unscaled).

    When ``grad_out`` (N, V) is given, grad_scale·A·(softmax - onehot) is written into it in its dtype
    (grad_scale ≡ 1 when None). ``grad_out`` may
    be ``logits`` itself (in-place: each row chunk is read completely before it is overwritten).
    Works in row chunks so that the fp32 temporaries stay bounded whatever N is.
    """
    n, v = logits.shape
    A32, Ah32 = A.float(), A_hat.float()
    log_px = torch.empty(n, dtype=torch.float32, device=logits.device)
    rows = max(1, _TORCH_CHUNK_ELEMS.get(logits.device.type, 1 << 24) // max(v, 1))
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        tgt = target[r0:r1].long().unsqueeze(1)
        # log_softmax is one fused ATen kernel and returns a fresh fp32 buffer, ours to overwrite.
        lsm = torch.log_softmax(logits[r0:r1], dim=1, dtype=torch.float32)
        log_px[r0:r1] = lsm.gather(1, tgt).squeeze(1)
        if grad_out is not None:
            a = A32[r0:r1] if grad_scale is None else A32[r0:r1] * grad_scale[r0:r1].float()
            a = a.unsqueeze(1)
            g = lsm.exp_().mul_(a)  # A · softmax
            g.scatter_add_(1, tgt, -a)  # − A · onehot(target)
            grad_out[r0:r1].copy_(g)
    loss = -A32 * log_px + velocity_terms(A32, Ah32)
    return loss, log_px


def row_loss_forward(
    logits: Tensor,
    target: Tensor,
    A: Tensor,
    A_hat: Tensor,
    grad_out: Tensor | None,
    backend: str,
    grad_scale: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Dispatch the forward (loss, log_px[, grad_scale·gradient into grad_out]) to the resolved backend."""
    if backend == "triton":
        from ._triton import triton_row_loss_forward

        if TRITON_INTERPRETED and logits.dtype != torch.float32:
            # The interpreter's bf16/fp16 arithmetic is wrong (environment.md): compute in fp32, store back.
            g32 = None if grad_out is None else torch.empty(logits.shape, dtype=torch.float32)
            loss, log_px = triton_row_loss_forward(logits.float(), target, A, A_hat, g32, grad_scale)
            if grad_out is not None:
                grad_out.copy_(g32)
            return loss, log_px
        return triton_row_loss_forward(logits, target, A, A_hat, grad_out, grad_scale)
    return torch_row_loss_forward(logits, target, A, A_hat, grad_out, grad_scale)


def rate_grads(g: Tensor, A: Tensor, A_hat: Tensor, log_px: Tensor, need_A: bool,
               need_A_hat: bool) -> tuple[Tensor | None, Tensor | None]:
    """g·∂loss/∂A = g·(−log p[x] + log A − log Â) and g·∂loss/∂Â = g·(1 − A/Â) (module docstring), in fp32,
    cast to the rates' dtypes; one place for every backward (eager, fused linear, compiled ops)."""
    A32, Ah32 = A.float(), A_hat.float()
    d_A = (g * (-log_px + torch.log(A32) - torch.log(Ah32))).to(A.dtype) if need_A else None
    d_Ah = (g * (1.0 - A32 / Ah32)).to(A_hat.dtype) if need_A_hat else None
    return d_A, d_Ah


def rescale_rows_(grad: Tensor, grad_output: Tensor) -> Tensor:
    """grad[r, :] *= grad_output[r] in place (the common grad_output ≡ 1 costs one tiny host read)."""
    lo, hi = torch.stack([grad_output.min(), grad_output.max()]).tolist() if grad_output.numel() else (1, 1)
    if lo == hi == 1.0:
        return grad
    if lo == hi:
        return grad.mul_(lo)  # a scalar multiply: no broadcast index arithmetic
    # In-place with type promotion: computed in fp32 per element and rounded once into grad's dtype.
    return grad.mul_(grad_output.unsqueeze(1))


class _RowLossFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target, A, A_hat, row_weight, backend, need_logit_grad):  # type: ignore[override]
        # A fresh row-major buffer whatever the logits' layout (empty_like would copy a column-major layout,
        # which the kernel then has to route through a copy).
        grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device) if need_logit_grad else None
        loss, log_px = row_loss_forward(logits, target, A, A_hat, grad, backend, row_weight)
        ctx.save_for_backward(log_px, A, A_hat, row_weight)
        ctx.grad = grad  # not saved_tensors: backward consumes (rescales) it in place
        return loss if row_weight is None else loss * row_weight

    @staticmethod
    def backward(ctx, grad_output):  # type: ignore[override]
        log_px, A, A_hat, row_weight = ctx.saved_tensors
        g = grad_output.float()
        d_logits = None
        if ctx.needs_input_grad[0]:
            if ctx.grad is None:
                raise RuntimeError(
                    "oemdm_row_loss: backward called twice (retain_graph=True); the logit gradient is "
                    "rescaled in place by the first backward and is gone. Recompute the loss instead."
                )
            d_logits, ctx.grad = rescale_rows_(ctx.grad, g), None  # row_weight is already in it
        if row_weight is not None:
            g = g * row_weight
        d_A, d_Ah = rate_grads(g, A, A_hat, log_px, ctx.needs_input_grad[2], ctx.needs_input_grad[3])
        return d_logits, None, d_A, d_Ah, None, None, None


def resolve_row_weight(fn: str, row_weight: Tensor | float | None, n: int, device: torch.device,
                       check: bool = True) -> Tensor | None:
    """None, a number or an (N,) / () tensor → None or a contiguous (N,) fp32 constant; finite, no grad.
    ``check=False`` leaves the finiteness check to the caller (the compiled ops run it inside)."""
    if row_weight is None:
        return None
    if isinstance(row_weight, bool) or not isinstance(row_weight, (int, float, Tensor)):
        raise ValueError(f"{fn}: row_weight must be None, a number or a tensor, got {type(row_weight).__name__}")
    if isinstance(row_weight, Tensor):
        if row_weight.requires_grad:
            raise ValueError(f"{fn}: row_weight is a constant (no gradient flows to it); pass row_weight.detach()")
        if row_weight.shape not in ((n,), ()):
            raise ValueError(f"{fn}: row_weight must have shape ({n},) or (), got {tuple(row_weight.shape)}")
        if row_weight.device != device:
            raise ValueError(f"{fn}: row_weight must be on {device}, got {row_weight.device}")
        w = row_weight.to(torch.float32).expand(n).contiguous()
    else:
        w = torch.full((n,), float(row_weight), dtype=torch.float32, device=device)
    if check:
        check_values(fn, [("row_weight", w, -3.4e38, 3.4e38, "finite")])
    return w


def validate_row_loss_inputs(fn: str, logits: Tensor, target: Tensor, A: Tensor, A_hat: Tensor,
                             values: bool = True) -> None:
    """Shapes, dtypes, one device, target in [0, V), A ≥ 0 and Â ≥ 0 (ValueError otherwise). ``values=False``
    skips the checks that read the tensors' values (the compiled ops run them inside, see ``ops.py``)."""
    if not isinstance(logits, Tensor) or logits.dim() != 2:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"{fn}: logits must be (N, V), got {shape}")
    n, v = logits.shape
    check_float(fn, "logits", logits)
    if v == 0:
        raise ValueError(f"{fn}: logits must have V ≥ 1 columns, got V = 0")
    _validate_row_args(fn, n, v, target, A, A_hat, values)
    check_same_device(fn, logits=logits, target=target, A=A, A_hat=A_hat)


def _validate_row_args(fn: str, n: int, v: int, target: Tensor, A: Tensor, A_hat: Tensor,
                       values: bool = True) -> None:
    check_shape(fn, "target", target, (n,))
    check_int(fn, "target", target)
    check_shape(fn, "A", A, (n,))
    check_shape(fn, "A_hat", A_hat, (n,))
    for name, t in (("A", A), ("A_hat", A_hat)):
        if not t.is_floating_point():
            raise ValueError(f"{fn}: {name} must be a floating tensor, got {t.dtype}")
    if values:
        check_row_values(fn, v, target, A, A_hat)


def check_row_values(fn: str, v: int, target: Tensor, A: Tensor, A_hat: Tensor,
                     row_weight: Tensor | None = None) -> None:
    """The checks that read the values: target in [0, V), A and Â non-negative and finite, finite row weights
    (one host read for all of them; the compiled ops call this at run time, see ``ops.py``)."""
    checks = [
        ("target", target, 0, v - 1, f"in [0, {v}) (V = {v})"),
        # the largest finite float as the bound: inf is rejected too (inf·log gives a NaN loss)
        ("A", A, 0.0, torch.finfo(torch.float64).max, "non-negative and finite"),
        ("A_hat", A_hat, 0.0, torch.finfo(torch.float64).max, "non-negative and finite"),
    ]
    if row_weight is not None:
        checks.append(("row_weight", row_weight, -3.4e38, 3.4e38, "finite"))
    check_values(fn, checks)


def oemdm_row_loss(
    logits: Tensor,
    target: Tensor,
    A: Tensor,
    A_hat: Tensor,
    *,
    row_weight: Tensor | float | None = None,
    backend: str = "auto",
) -> Tensor:
    r"""Per-row OeMDM loss at masked rows: -A·log_softmax(logits)[target] + A(log A − log Â) − (A − Â).

    Args:
        logits: (N, V) float32 / bfloat16 / float16 logits over the real tokens (SUBS: no mask column).
        target: (N,) integer clean tokens in [0, V).
        A, A_hat: (N,) forward and reverse velocities, ≥ 0 (A = 0 gives the loss Â).
        row_weight: optional constant weights c (a number, () or (N,)): returns c·loss with the gradient
            pre-scaled in the same pass, so that ``.sum().backward()`` costs nothing N×V (see module doc).
        backend: "auto" | "triton" | "torch" (see :mod:`._backend`; env var ``OEMDM_KERNEL_BACKEND``).

    Returns:
        (N,) float32 losses, differentiable w.r.t. ``logits``, ``A`` and ``A_hat``. The log-softmax is always
        computed in fp32; the logit gradient is stored in the logits' dtype. Under ``torch.no_grad()`` (or
        when no input requires grad) nothing but the loss is computed.

    The logit gradient is rescaled *in place* in the backward, so a second backward through the same call
    (``retain_graph=True``) raises RuntimeError.
    """
    fn = "oemdm_row_loss"
    compiling = torch.compiler.is_compiling()  # value checks then run inside the custom op (ops.py)
    validate_row_loss_inputs(fn, logits, target, A, A_hat, values=not compiling)
    rw = resolve_row_weight(fn, row_weight, logits.shape[0], logits.device, check=not compiling)
    chosen = resolve_backend(backend, logits.device, fn=fn)
    grad_on = torch.is_grad_enabled()
    need_logit_grad = grad_on and logits.requires_grad
    if compiling:
        from .ops import row_loss_compiled

        return row_loss_compiled(logits, target, A, A_hat, rw, chosen, need_logit_grad)
    if not (grad_on and (logits.requires_grad or A.requires_grad or A_hat.requires_grad)):
        loss = row_loss_forward(logits, target, A, A_hat, None, chosen)[0]
        return loss if rw is None else loss * rw
    return _RowLossFn.apply(logits, target, A, A_hat, rw, chosen, need_logit_grad)
