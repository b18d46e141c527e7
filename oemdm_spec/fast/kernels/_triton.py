"""Triton kernels and their launchers (imported lazily, only when the Triton backend is chosen).

Design, for the H100 target of ``docs/performance.md`` (loss over N×V bf16 logits within 1.3× of the bytes
floor = one read of the logits + one write of the gradient):

* ``_row_loss_tile_kernel`` (next_pow2(V) ≤ MAX_TILE = 65536): a program owns BLOCK_R whole rows. It reads
  each row **once** from HBM, takes max, Σexp, log p[x] and writes A·(softmax − onehot) from the same
  registers: one HBM read + one write per element, the floor's traffic. With ``RELOAD=True`` the gradient
  phase re-reads the (L1/L2-hot) row instead of keeping it live in registers. On sm_90 a whole row fits
  without spilling up to 32768 wide (``benchmarks/ptxas_usage.py``); GPT-2's 65536-wide tile spills in every
  variant, so it is not the default there.
* ``_row_loss_chunked_kernel`` (any V; the GPU default above 16384): one row per program, an online
  max/Σexp pass over BLOCK_V chunks (one exp per element, the max rescale is one scalar exp per chunk), then a
  gradient pass over the same row **in reverse chunk order**: the chunks read last are the most recent in L2,
  so the re-read mostly hits L2 and HBM sees about one read. Pass-1 loads ask L2 to keep lines
  (``evict_last``), pass-2 loads and the gradient stores stream (``evict_first`` / ``.cs``) so they do not
  push the remaining row out.
* ``_forward_mask_kernel``: one program per (sequence, L-block) reads x, w, t once and draws all K masks
  with Philox (``tl.rand``), writing z and a per-block partial Σ log q (summed on the host side in a fixed
  order: deterministic, no atomics).

There is no autotuning: the loss kernel may write its gradient over its own input (the fused linear path
does), and autotune's repeated launches would then read gradients as logits. Launch parameters come from
``loss_launch_config``; ``oemdm bench`` (``fast/bench.py``) sweeps them on a GPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._backend import TRITON_INTERPRETED

__all__ = ["triton_row_loss_forward", "triton_forward_mask", "loss_launch_config", "MAX_TILE"]

MAX_TILE = 65536  # widest row kept whole in one program (elements)
_NEG_BIG = -3.0e38  # finite "−inf" for the running max: keeps exp(m_old − m_new) a number when a chunk is all −inf


@triton.jit
def _velocity(a, ah):
    """A(log A − log Â) − (A − Â), with 0·log 0 = 0 (log of 1 in the discarded branch: no 0·(−inf))."""
    return tl.where(a > 0, a * (tl.log(tl.where(a > 0, a, 1.0)) - tl.log(ah)), 0.0) - (a - ah)


@triton.jit
def _row_loss_tile_kernel(
    x_ptr, x_stride, g_ptr, g_stride, tgt_ptr, a_ptr, ah_ptr, ga_ptr, loss_ptr, logpx_ptr, N, V,
    BLOCK_R: tl.constexpr, BLOCK_V: tl.constexpr, COMPUTE_GRAD: tl.constexpr, RELOAD: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    row_ok = rows < N
    rows64 = rows.to(tl.int64)  # N·V can exceed 2**31
    cols = tl.arange(0, BLOCK_V)
    ok = row_ok[:, None] & (cols < V)[None, :]
    x_ptrs = x_ptr + rows64[:, None] * x_stride + cols[None, :]
    tgt = tl.load(tgt_ptr + rows, mask=row_ok, other=0).to(tl.int64)
    x = tl.load(x_ptrs, mask=ok, other=-float("inf")).to(tl.float32)
    # ORDER MATTERS (in-place gradient): g_ptr may alias x_ptr (the fused linear path), and on a GPU other
    # warps of this program may store their part of the gradient before this warp reads anything more from
    # HBM. So x[tgt] is taken from the registers of the tile loaded above, never re-loaded from memory.
    is_t = cols[None, :] == tgt[:, None]
    x_t = tl.sum(tl.where(is_t & ok, x, 0.0), axis=1)
    m = tl.where(row_ok, tl.max(x, axis=1), 0.0)  # padding rows: keep their arithmetic finite
    e = tl.exp(x - m[:, None])
    s = tl.where(row_ok, tl.sum(e, axis=1), 1.0)  # s ≥ 1: the max itself contributes exp(0)
    log_px = (x_t - m) - tl.log(s)
    a = tl.load(a_ptr + rows, mask=row_ok, other=1.0)
    ah = tl.load(ah_ptr + rows, mask=row_ok, other=1.0)
    tl.store(loss_ptr + rows, -a * log_px + _velocity(a, ah), mask=row_ok)
    tl.store(logpx_ptr + rows, log_px, mask=row_ok)

    if COMPUTE_GRAD:
        if RELOAD:  # re-read the row while it is hot instead of keeping e live in registers
            e = tl.exp(tl.load(x_ptrs, mask=ok, other=-float("inf")).to(tl.float32) - m[:, None])
        ga = tl.load(ga_ptr + rows, mask=row_ok, other=0.0)  # A·row_weight: the gradient's row scale
        g = e * (ga / s)[:, None]
        g = tl.where(is_t, g - ga[:, None], g)
        g_ptrs = g_ptr + rows64[:, None] * g_stride + cols[None, :]
        tl.store(g_ptrs, g.to(g_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _row_loss_chunked_kernel(
    x_ptr, x_stride, g_ptr, g_stride, tgt_ptr, a_ptr, ah_ptr, ga_ptr, loss_ptr, logpx_ptr, V,
    BLOCK_V: tl.constexpr, COMPUTE_GRAD: tl.constexpr, NEG_BIG: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * x_stride
    cols = tl.arange(0, BLOCK_V)
    # ORDER MATTERS (in-place gradient): g_ptr may alias x_ptr (the fused linear path). The target logit is
    # read here, before pass 1, i.e. before the cross-warp reductions that every warp must pass before it can
    # reach the stores of pass 2. Read after pass 1 (as it once was), a fast warp could already have written
    # the gradient over column tgt when a slow warp loads x[tgt]: a data race on a GPU.
    tgt = tl.load(tgt_ptr + row).to(tl.int64)
    x_t = tl.load(x_row + tgt).to(tl.float32)

    # Pass 1: online log-sum-exp with a per-chunk scalar max (one exp per element).
    m = NEG_BIG
    s = 0.0
    for start in range(0, V, BLOCK_V):
        c = start + cols
        x = tl.load(x_row + c, mask=c < V, other=-float("inf"), eviction_policy="evict_last").to(tl.float32)
        m_new = tl.maximum(m, tl.max(x, axis=0))
        s = s * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new), axis=0)
        m = m_new

    log_px = (x_t - m) - tl.log(s)
    a = tl.load(a_ptr + row)
    ah = tl.load(ah_ptr + row)
    tl.store(loss_ptr + row, -a * log_px + _velocity(a, ah))
    tl.store(logpx_ptr + row, log_px)

    if COMPUTE_GRAD:
        # Pass 2, last chunk first: the chunks read last in pass 1 are the likeliest still in L2.
        ga = tl.load(ga_ptr + row)  # A·row_weight: the gradient's row scale
        scale = ga / s
        g_row = g_ptr + row * g_stride
        n_chunks = tl.cdiv(V, BLOCK_V)
        for j in range(0, n_chunks):
            c = (n_chunks - 1 - j) * BLOCK_V + cols
            ok = c < V
            x = tl.load(x_row + c, mask=ok, other=-float("inf"), eviction_policy="evict_first").to(tl.float32)
            g = tl.exp(x - m) * scale
            g = tl.where(c == tgt, g - ga, g)
            tl.store(g_row + c, g.to(g_ptr.dtype.element_ty), mask=ok, cache_modifier=".cs")


def loss_launch_config(n: int, v: int, *, interpreted: bool = TRITON_INTERPRETED) -> dict:
    """Default launch parameters (unmeasured on a GPU so far: ``oemdm bench`` sweeps the alternatives).

    GPU: the tile kernel while a row tile stays ≤ 32 fp32 values per thread (next_pow2(V) ≤ 16384, that one
    at 32 warps), so nothing spills with Triton 3.6 or 3.8; wider rows (GPT-2's 50258) use the chunked kernel,
    BLOCK_V = 8192, 8 warps (16 KiB of bf16 in flight per load and program, 80 registers, no spill on sm_90),
    whose second pass re-reads the row from L2. The whole-row tile of GPT-2 (65536 wide) spills on sm_90 even
    at 32 warps with RELOAD (``benchmarks/ptxas_usage.py``); the sweep still times it.
    Interpreter: each program costs ~1 ms whatever its size, so tiles up to 65536 elements and many rows.
    """
    block_v = triton.next_power_of_2(v)
    max_tile = MAX_TILE if interpreted else 16384
    if block_v <= max_tile:
        budget = MAX_TILE if interpreted else 8192
        block_r = max(1, min(64, budget // block_v))
        # ~32 fp32 values per thread; the widest tile (16384) at 16: there Triton 3.6 caps 16 warps at 64
        # registers and spills 8 bytes (bf16), while 32 warps compile to 47 registers, no spill, on 3.6 and 3.8
        per_thread = 512 if block_v >= 16384 else 1024
        num_warps = max(4, min(32, block_r * block_v // per_thread))
        return {"kind": "tile", "BLOCK_R": block_r, "BLOCK_V": block_v, "num_warps": num_warps, "RELOAD": False}
    block_v = 32768 if interpreted else 8192
    return {"kind": "chunked", "BLOCK_V": block_v, "num_warps": 8}


def triton_row_loss_forward(
    logits: Tensor,
    target: Tensor,
    A: Tensor,
    A_hat: Tensor,
    grad_out: Tensor | None,
    grad_scale: Tensor | None = None,
    **override,
) -> tuple[Tensor, Tensor]:
    """Launch the loss kernel: returns (loss, log_px) fp32 (N,) and fills ``grad_out`` (may alias logits).

    The gradient written is grad_scale·A·(softmax − onehot) (grad_scale ≡ 1 when None); the loss is unscaled.

    ``override`` replaces entries of :func:`loss_launch_config` (used by the GPU benchmark's sweep).
    """
    n, v = logits.shape
    dev = logits.device
    loss = torch.empty(n, dtype=torch.float32, device=dev)
    log_px = torch.empty(n, dtype=torch.float32, device=dev)
    if n == 0:
        return loss, log_px
    # The kernels need unit column stride (any row stride). Other layouts (a transposed or column-major
    # buffer, e.g. from empty_like of such logits) go through a contiguous copy: the logits are copied in, the
    # gradient is computed into a contiguous buffer (in place over the copy when grad_out aliases the logits)
    # and copied back into grad_out at the end.
    final_out = None
    if logits.stride(1) != 1 and v > 1:
        aliased = grad_out is not None and grad_out.data_ptr() == logits.data_ptr()
        logits = logits.contiguous()
        if aliased:
            final_out, grad_out = grad_out, logits
    if grad_out is not None and grad_out.stride(1) != 1 and v > 1:
        final_out, grad_out = grad_out, torch.empty(grad_out.shape, dtype=grad_out.dtype, device=dev)
    target = target.contiguous()
    a = A.to(torch.float32).contiguous()
    ah = A_hat.to(torch.float32).contiguous()
    ga = a if grad_scale is None else (a * grad_scale.to(torch.float32)).contiguous()
    cfg = {**loss_launch_config(n, v), **override}
    compute_grad = grad_out is not None
    g = grad_out if compute_grad else logits  # never written when COMPUTE_GRAD is False
    if cfg["kind"] == "tile":
        grid = (triton.cdiv(n, cfg["BLOCK_R"]),)
        _row_loss_tile_kernel[grid](
            logits, logits.stride(0), g, g.stride(0), target, a, ah, ga, loss, log_px, n, v,
            BLOCK_R=cfg["BLOCK_R"], BLOCK_V=cfg["BLOCK_V"], COMPUTE_GRAD=compute_grad, RELOAD=cfg["RELOAD"],
            num_warps=cfg["num_warps"],
        )  # fmt: skip
    else:
        _row_loss_chunked_kernel[(n,)](
            logits, logits.stride(0), g, g.stride(0), target, a, ah, ga, loss, log_px, v,
            BLOCK_V=cfg["BLOCK_V"], COMPUTE_GRAD=compute_grad, NEG_BIG=_NEG_BIG, num_warps=cfg["num_warps"],
        )  # fmt: skip
    if final_out is not None:
        final_out.copy_(grad_out)
    return loss, log_px


@triton.jit
def _expm1(y):
    """expm1 without libdevice (absent under the interpreter): Kahan's (e^y − 1)·y / log(e^y).

    The rounding errors of e^y − 1 and log(e^y) cancel, leaving a few ulps; e^y == 1 means |y| is below half
    an ulp of 1 and expm1(y) = y to working precision; e^y − 1 == −1 means e^y underflowed.
    """
    u = tl.exp(y)
    um1 = u - 1.0
    log_u = tl.where(u == 1.0, 1.0, tl.log(u))  # dodge 0/0 in the branch that is replaced anyway
    r = tl.where(u == 1.0, y, um1 * y / log_u)
    return tl.where(um1 == -1.0, -1.0, r)


@triton.jit
def _log1p(x):
    """log(1 + x) without libdevice, Kahan's trick again: log(u)·x / (u − 1) with u = 1 + x rounded."""
    u = 1.0 + x
    um1 = u - 1.0
    return tl.where(um1 == 0.0, x, tl.log(u) * x / tl.where(um1 == 0.0, 1.0, um1))


@triton.jit
def _log1mexp(y):
    """log(1 − e^y) for y < 0 (Mächler 2012): log(−expm1(y)) near 0, log1p(−e^y) below −log 2.

    A single log(−expm1(y)) takes the log of a number within p of 1 when p = e^y is small, losing all
    relative precision of the result ≈ −p (an fp32 log near 1 has absolute error ~6e-8).
    """
    return tl.where(y > -0.6931471805599453, tl.log(-_expm1(y)), _log1p(-tl.exp(y)))


@triton.jit
def _forward_mask_kernel(
    x_ptr, t_ptr, w_ptr, z_ptr, part_ptr, seed, B, L, K, n_blk, mask_id, BLOCK_L: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0)
    blk = tl.program_id(1)
    cols = blk * BLOCK_L + tl.arange(0, BLOCK_L)
    ok = cols < L
    x = tl.load(x_ptr + b * L + cols, mask=ok, other=0)
    w = tl.load(w_ptr + b * L + cols, mask=ok, other=0.0)
    y = w * tl.log(tl.load(t_ptr + b))  # log P(masked) = w log t ≤ 0
    p = tl.exp(y)
    y_um = tl.where(y < 0, y, -1.0)  # log(1 − e^0) = −inf is never used (u < 1 = p always masks)
    log_unmasked = _log1mexp(y_um)
    for k in range(0, K):
        base = (k * B + b) * L
        u = tl.rand(seed, base + cols)
        masked = u < p
        tl.store(z_ptr + base + cols, tl.where(masked, mask_id, x), mask=ok)
        contrib = tl.where(ok, tl.where(masked, y, log_unmasked), 0.0)
        tl.store(part_ptr + (k * B + b) * n_blk + blk, tl.sum(contrib, axis=0))


def triton_forward_mask(
    x: Tensor, t: Tensor, w: Tensor, K: int, seed: int, mask_id: int, block_l: int | None = None
) -> tuple[Tensor, Tensor]:
    """Launch the masking kernel: (z (K, B, L) int64, log_q (K, B) fp32). ``block_l``: tests and sweeps."""
    b, L = x.shape
    dev = x.device
    z = torch.empty((K, b, L), dtype=torch.int64, device=dev)
    if b == 0 or L == 0:
        return z, torch.zeros((K, b), dtype=torch.float32, device=dev)
    if block_l is None:
        block_l = min(triton.next_power_of_2(L), 65536 if TRITON_INTERPRETED else 1024)
    n_blk = triton.cdiv(L, block_l)
    part = torch.empty((K, b, n_blk), dtype=torch.float32, device=dev)
    _forward_mask_kernel[(b, n_blk)](
        x.to(torch.int64).contiguous(), t.to(torch.float32).contiguous(), w.to(torch.float32).contiguous(),
        z, part, seed, b, L, K, n_blk, mask_id, BLOCK_L=block_l, num_warps=4,
    )  # fmt: skip
    return z, part.sum(-1)
