"""Forward masking z_t ~ q(z_t | x) with P(z_t^i = m) = t^{w_i}, K samples at once, and log q(z_t | x).

Per sequence b and sample k (spec §3, "log q_φ(z|x)"):

    log q(z_k | x) = Σ_i [ masked_i · w_i log t  +  (1 − masked_i) · log(1 − t^{w_i}) ],
    log(1 − t^{w}) = log(−expm1(w log t)), or log1p(−t^w) when t^w < ½  (never 1 − t^w by subtraction, spec §4).

``log_q`` is differentiable w.r.t. ``w`` and ``t`` (the score-function term of the LoMDM gradient needs
∇_φ log q_φ); the masks themselves are samples and carry no gradient. With y = w·log t:

    ∂ log q / ∂y_i = 1 if masked_i else −1 / expm1(−y_i);    ∂y/∂w = log t,  ∂y/∂t = w / t.

The Triton path draws its uniforms with Philox (``tl.rand(seed, offset)``), offset = (k·B + b)·L + i: a
counter-based stream, so a (seed, shape) pair always gives the same masks and the K samples are drawn in the
same pass that reads x, w and t once. The PyTorch fallback uses ``torch.Generator(seed)``: a different
stream with the same law (tested statistically).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._backend import resolve_backend
from ._checks import check_int, check_same_device, check_shape, check_values

__all__ = ["forward_mask", "log_q_grad_y"]


_LOG2 = 0.6931471805599453


def _log1m_exp(y: Tensor) -> Tensor:
    """log(1 − e^y) for y ≤ 0 (−inf at 0), Mächler's two branches: log(−expm1(y)) above −log 2, else
    log1p(−e^y) (the log of a number near 1 would lose the relative precision of the small result)."""
    near = y > -_LOG2
    return torch.where(
        near,
        torch.log(-torch.expm1(torch.clamp(y, min=-_LOG2))),
        torch.log1p(-torch.exp(torch.clamp(y, max=-_LOG2))),
    )


def log_q_grad_y(masked: Tensor, y: Tensor) -> Tensor:
    """∂ log q / ∂y per position: 1 where masked, −1/expm1(−y) where not (finite there: y < 0 then)."""
    y_safe = torch.where(masked, torch.full_like(y, -1.0), y)  # keep the unused branch finite (no 0·inf)
    return torch.where(masked, torch.ones_like(y), -1.0 / torch.expm1(-y_safe))


def _torch_forward_mask(x: Tensor, t: Tensor, w: Tensor, K: int, seed: int, mask_id: int) -> tuple[Tensor, Tensor]:
    """PyTorch fallback: (z, log_q) without autograd (the caller attaches the analytic gradient)."""
    gen = torch.Generator(device=x.device)
    gen.manual_seed(seed)
    b, L = x.shape
    u = torch.rand((K, b, L), generator=gen, device=x.device, dtype=torch.float32)
    y = w.float() * torch.log(t.float()).unsqueeze(1)  # (B, L): log P(masked)
    masked = u < torch.exp(y)
    z = torch.where(masked, torch.full_like(x, mask_id), x.unsqueeze(0).expand(K, b, L))
    y_safe = torch.where(masked, torch.full_like(u, -1.0), y)  # log1m_exp(0) = −inf stays unused
    log_q = torch.where(masked, y.expand(K, b, L), _log1m_exp(y_safe)).sum(-1)
    return z, log_q


def _masked_and_y(z: Tensor, t: Tensor, w: Tensor, mask_id: int) -> tuple[Tensor, Tensor]:
    return z == mask_id, w.float() * torch.log(t.float()).unsqueeze(1)


class _LogQFn(torch.autograd.Function):
    """Attach ∂ log q / ∂(w, t) to a log_q computed by either backend."""

    @staticmethod
    def forward(ctx, log_q, z, t, w, mask_id):  # type: ignore[override]
        ctx.save_for_backward(z, t, w)
        ctx.mask_id = mask_id
        return log_q.clone()

    @staticmethod
    def backward(ctx, grad_log_q):  # type: ignore[override]
        z, t, w = ctx.saved_tensors
        masked, y = _masked_and_y(z, t, w, ctx.mask_id)
        dy = (grad_log_q.float().unsqueeze(-1) * log_q_grad_y(masked, y)).sum(0)  # (B, L)
        d_w = d_t = None
        if ctx.needs_input_grad[3]:
            d_w = (dy * torch.log(t.float()).unsqueeze(1)).to(w.dtype)
        if ctx.needs_input_grad[2]:
            d_t = ((dy * w.float()).sum(1) / t.float()).to(t.dtype)
        return None, None, d_t, d_w, None


def forward_mask(
    x: Tensor, t: Tensor, w: Tensor, *, K: int, seed: int, mask_id: int, backend: str = "auto"
) -> tuple[Tensor, Tensor]:
    r"""Draw K masks per sequence with P(z^i = mask_id) = t^{w_i} and return (z, log q(z | x)).

    Args:
        x: (B, L) clean tokens, integers in [0, mask_id).
        t: (B,) times in (0, 1] (clamp to t_min first; t = 0 would make log t = −inf).
        w: (B, L) non-negative finite exponents (α = 1 − t^w; w ≡ 1 is MDLM's linear schedule).
        K: samples per sequence (≥ 1). seed: non-negative int; the same seed and shapes give the same masks.
        mask_id: the mask token (V by the project's convention).
        backend: "auto" | "triton" | "torch".

    Returns:
        z: (K, B, L) int64, x with the masked positions set to ``mask_id``.
        log_q: (K, B) float32, Σ_i log q(z_k^i | x^i); differentiable w.r.t. ``w`` and ``t``.
    """
    fn = "forward_mask"
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{fn}: x must be (B, L), got {shape}")
    check_int(fn, "x", x)
    b, L = x.shape
    check_shape(fn, "t", t, (b,))
    check_shape(fn, "w", w, (b, L))
    for name, v in (("t", t), ("w", w)):
        if not v.is_floating_point():
            raise ValueError(f"{fn}: {name} must be a floating tensor, got {v.dtype}")
    for name, v in (("K", K), ("seed", seed), ("mask_id", mask_id)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"{fn}: {name} must be an int, got {v!r}")
    if K < 1:
        raise ValueError(f"{fn}: K must be ≥ 1, got {K}")
    if not 0 <= seed < 2**63:
        raise ValueError(f"{fn}: seed must lie in [0, 2**63), got {seed}")
    if mask_id < 1:
        raise ValueError(f"{fn}: mask_id must be ≥ 1 (it is V, past the real tokens), got {mask_id}")
    if K * b * L >= 2**31:
        raise ValueError(f"{fn}: K·B·L must be < 2**31 (32-bit Philox offsets), got K·B·L = {K * b * L}")
    check_same_device(fn, x=x, t=t, w=w)
    check_values(
        fn,
        [
            ("x", x, 0, mask_id - 1, f"token ids in [0, mask_id) = [0, {mask_id})"),
            ("t", t, float.fromhex("0x1p-149"), 1.0, "in (0, 1]"),
            ("w", w, 0.0, float("inf"), "non-negative and finite"),
        ],
    )
    chosen = resolve_backend(backend, x.device, fn=fn)
    with torch.no_grad():
        if chosen == "triton":
            from ._triton import triton_forward_mask

            z, log_q = triton_forward_mask(x, t, w, K, seed, mask_id)
        else:
            z, log_q = _torch_forward_mask(x, t, w, K, seed, mask_id)
    if torch.is_grad_enabled() and (t.requires_grad or w.requires_grad):
        log_q = _LogQFn.apply(log_q, z, t, w, mask_id)
    return z, log_q
