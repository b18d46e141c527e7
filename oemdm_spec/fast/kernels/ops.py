"""The fused losses as opaque ``torch.library`` custom ops, so that ``torch.compile`` traces a whole training step
in one graph.

Why: the eager wrappers (:func:`~.loss.oemdm_row_loss`, :func:`~.linear.linear_oemdm_row_loss`) do things a
graph cannot hold: value checks that read the device (``.tolist()``), a Python loop over row chunks, gradients
computed in the forward and kept on the autograd context, and a backward that branches on whether
grad_output is uniform. Under ``torch.compile`` the wrappers route here instead (``torch.compiler.is_compiling``),
and the compiler sees each fused loss as one call with a shape rule (its "fake" implementation):

- ``oemdm::linear_row_loss`` → (loss, log p[x], grad_hidden, grad_weight, grad_bias), the gradients of the
  forward pass exactly as the eager path computes them (the same ``_chunk_grads``);
- ``oemdm::linear_row_loss_param_grads`` → the weight/bias gradients for a given grad_output (the uniform case
  rescales the stored sums, a per-row grad_output reruns the chunked pass: the eager backward's branch);
- ``oemdm::row_loss`` → (loss, log p[x], grad_logits) for explicit logits;
- ``oemdm::checked_tokens`` → a copy of clean ids after checking they lie in [0, V).

Every op body runs eagerly at run time, so the value checks (target in [0, V), A ≥ 0, finite row weights,
token ids) still raise the same ValueError inside a compiled step. Outputs never alias inputs (a custom op
may not return an input): where the eager path returns a stored gradient as is, these return a copy.
The cheap per-row parts of the backward (rescaling grad_hidden / grad_logits rows, dA, dÂ) are ordinary
traced ops, so the compiler fuses them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .loss import check_row_values, rate_grads

__all__ = ["checked_tokens", "linear_row_loss_compiled", "row_loss_compiled"]

_EMPTY = (0,)


def _or_empty(t: Tensor | None, like: Tensor) -> Tensor:
    return t if t is not None else like.new_empty(_EMPTY)


# --------------------------------------------------------------------------------------------------------------
# fused linear + loss


@torch.library.custom_op("oemdm::linear_row_loss", mutates_args=())
def _linear_row_loss(hidden: Tensor, weight: Tensor, bias: Tensor | None, target: Tensor, A: Tensor,
                     A_hat: Tensor, row_weight: Tensor | None, chunk: int, backend: str, need_h: bool,
                     need_w: bool, need_b: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    from .linear import _chunk_grads

    check_row_values("linear_oemdm_row_loss", weight.shape[0], target, A, A_hat, row_weight)
    with torch.autocast(hidden.device.type, enabled=False):
        loss, log_px, g_h, g_w, g_b = _chunk_grads(hidden, weight, bias, target, A, A_hat, chunk, backend,
                                                   (need_h, need_w, need_b), row_weight)
    if row_weight is not None:
        loss = loss * row_weight
    return loss, log_px, _or_empty(g_h, hidden), _or_empty(g_w, weight), _or_empty(g_b, loss)


@_linear_row_loss.register_fake
def _(hidden, weight, bias, target, A, A_hat, row_weight, chunk, backend, need_h, need_w, need_b):
    n, v = hidden.shape[0], weight.shape[0]
    f32 = torch.float32
    return (hidden.new_empty((n,), dtype=f32), hidden.new_empty((n,), dtype=f32),
            torch.empty_like(hidden) if need_h else hidden.new_empty(_EMPTY),
            torch.empty_like(weight) if need_w else weight.new_empty(_EMPTY),
            hidden.new_empty((v,), dtype=f32) if need_b else hidden.new_empty(_EMPTY, dtype=f32))


@torch.library.custom_op("oemdm::linear_row_loss_param_grads", mutates_args=())
def _linear_param_grads(grad_output: Tensor, g_w: Tensor, g_b: Tensor, hidden: Tensor, weight: Tensor,
                        bias: Tensor | None, target: Tensor, A: Tensor, A_hat: Tensor, row_weight: Tensor | None,
                        chunk: int, backend: str, need_w: bool, need_b: bool) -> tuple[Tensor, Tensor]:
    """d weight, d bias of Σ_r grad_output_r·loss_r (the eager backward's branch, with copies, not aliases)."""
    from .linear import _chunk_grads

    g = grad_output.float()
    if g.numel() == 0:
        d_w, d_b = g_w.clone(), g_b.clone()  # no rows: the forward's zero sums
    else:
        lo, hi = torch.stack([g.min(), g.max()]).tolist()
        if lo == hi:  # uniform grad_output: the stored sums times a scalar
            d_w, d_b = g_w * lo, g_b * lo
        else:
            scale = g if row_weight is None else g * row_weight
            with torch.autocast(hidden.device.type, enabled=False):
                _, _, _, w_, b_ = _chunk_grads(hidden, weight, bias, target, A, A_hat, chunk, backend,
                                               (False, need_w, need_b), grad_scale=scale)
            d_w, d_b = _or_empty(w_, weight), _or_empty(b_, g)
    return d_w, d_b


@_linear_param_grads.register_fake
def _(grad_output, g_w, g_b, hidden, weight, bias, target, A, A_hat, row_weight, chunk, backend, need_w, need_b):
    return torch.empty_like(g_w), torch.empty_like(g_b)


def _linear_setup(ctx, inputs, output) -> None:
    hidden, weight, bias, target, A, A_hat, row_weight, chunk, backend, need_h, need_w, need_b = inputs
    _, log_px, g_h, g_w, g_b = output
    ctx.save_for_backward(hidden, weight, bias, target, A, A_hat, row_weight, log_px, g_h, g_w, g_b)
    ctx.chunk, ctx.backend, ctx.need = chunk, backend, (need_h, need_w, need_b)
    ctx.bias_dtype = None if bias is None else bias.dtype


def _linear_backward(ctx, grad_loss, _g_logpx, _g_gh, _g_gw, _g_gb):
    hidden, weight, bias, target, A, A_hat, row_weight, log_px, g_h, g_w, g_b = ctx.saved_tensors
    need_h, need_w, need_b = ctx.need
    g = grad_loss.float()
    d_h = d_w = d_b = None
    if need_h:  # grad_hidden rows were computed for grad_output ≡ 1 (row_weight already in them)
        d_h = (g_h * g.unsqueeze(1)).to(g_h.dtype)
    if need_w or need_b:
        d_w, d_b = _linear_param_grads(grad_loss, g_w, g_b, hidden, weight, bias, target, A, A_hat, row_weight,
                                       ctx.chunk, ctx.backend, need_w, need_b)
        d_w = d_w if need_w else None
        d_b = d_b.to(ctx.bias_dtype) if need_b else None
    if row_weight is not None:
        g = g * row_weight
    d_A, d_Ah = rate_grads(g, A, A_hat, log_px, ctx.needs_input_grad[4], ctx.needs_input_grad[5])
    return d_h, d_w, d_b, None, d_A, d_Ah, None, None, None, None, None, None


_linear_row_loss.register_autograd(_linear_backward, setup_context=_linear_setup)


def linear_row_loss_compiled(hidden: Tensor, weight: Tensor, bias: Tensor | None, target: Tensor, A: Tensor,
                             A_hat: Tensor, row_weight: Tensor | None, chunk: int, backend: str,
                             need: tuple[bool, bool, bool]) -> Tensor:
    """What :func:`~.linear.linear_oemdm_row_loss` runs under ``torch.compile`` (arguments already checked for
    shape and dtype, cast for autocast; the value checks run inside the op)."""
    return _linear_row_loss(hidden, weight, bias, target, A, A_hat, row_weight, chunk, backend, *need)[0]


# --------------------------------------------------------------------------------------------------------------
# loss over explicit logits


@torch.library.custom_op("oemdm::row_loss", mutates_args=())
def _row_loss(logits: Tensor, target: Tensor, A: Tensor, A_hat: Tensor, row_weight: Tensor | None, backend: str,
              need_logit_grad: bool) -> tuple[Tensor, Tensor, Tensor]:
    from .loss import row_loss_forward

    check_row_values("oemdm_row_loss", logits.shape[1], target, A, A_hat, row_weight)
    grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device) if need_logit_grad else None
    loss, log_px = row_loss_forward(logits, target, A, A_hat, grad, backend, row_weight)
    if row_weight is not None:
        loss = loss * row_weight
    return loss, log_px, _or_empty(grad, logits)


@_row_loss.register_fake
def _(logits, target, A, A_hat, row_weight, backend, need_logit_grad):
    n = logits.shape[0]
    return (logits.new_empty((n,), dtype=torch.float32), logits.new_empty((n,), dtype=torch.float32),
            torch.empty_like(logits, memory_format=torch.contiguous_format) if need_logit_grad
            else logits.new_empty(_EMPTY))


def _row_setup(ctx, inputs, output) -> None:
    _logits, _target, A, A_hat, row_weight, _backend, need_logit_grad = inputs
    _, log_px, grad = output
    ctx.save_for_backward(A, A_hat, row_weight, log_px, grad)
    ctx.need_logit_grad = need_logit_grad


def _row_backward(ctx, grad_loss, _g_logpx, _g_grad):
    A, A_hat, row_weight, log_px, grad = ctx.saved_tensors
    g = grad_loss.float()
    # grad holds row_weight·A·(softmax − onehot); rescaled out of place (the eager path does it in place)
    d_logits = (grad * g.unsqueeze(1)).to(grad.dtype) if ctx.need_logit_grad else None
    if row_weight is not None:
        g = g * row_weight
    d_A, d_Ah = rate_grads(g, A, A_hat, log_px, ctx.needs_input_grad[2], ctx.needs_input_grad[3])
    return d_logits, None, d_A, d_Ah, None, None, None


_row_loss.register_autograd(_row_backward, setup_context=_row_setup)


def row_loss_compiled(logits: Tensor, target: Tensor, A: Tensor, A_hat: Tensor, row_weight: Tensor | None,
                      backend: str, need_logit_grad: bool) -> Tensor:
    """What :func:`~.loss.oemdm_row_loss` runs under ``torch.compile``."""
    return _row_loss(logits, target, A, A_hat, row_weight, backend, need_logit_grad)[0]


# --------------------------------------------------------------------------------------------------------------
# clean token ids


@torch.library.custom_op("oemdm::checked_tokens", mutates_args=())
def checked_tokens(x: Tensor, vocab_size: int, mask_id: int) -> Tensor:
    """A copy of ``x`` after checking its ids lie in [0, vocab_size) (the eager check of ``oemdm_loss``; the copy
    is what keeps the check in a compiled graph: its output is used, so it cannot be dropped)."""
    if x.numel():
        lo, hi = torch.stack([x.min(), x.max()]).tolist()
        if lo < 0 or hi >= vocab_size:
            bad = lo if lo < 0 else hi
            raise ValueError(f"oemdm_loss: x holds token id {bad}, outside [0, {vocab_size}) (the mask id is "
                             f"{mask_id} and is never a clean token)")
    return x.clone()


@checked_tokens.register_fake
def _(x, vocab_size, mask_id):
    return torch.empty_like(x)
