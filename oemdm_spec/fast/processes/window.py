"""OeMDM with the ε-window schedules of spec §2: the ARM and block-diffusion theorems inside the trainer.

Blocks b = 1..B of size L' (L' = 1: ``oemdm-arm``; any L': ``oemdm-block``). Block b is active in the window
J_b = [(B−b)/B, (B−b+1)/B] of forward time, so block 1 is revealed first in reverse time. Every position of
block b follows the same continuous, strictly decreasing, piecewise-linear α (0 < ε < ½):

    before J_b:  α = 1 − ε·t/s                           (1 → 1−ε on [0, s]),   s = (B−b)/B
    on J_b:      α = s0 − (s0 − s1)(B t − (B − b))       (s0 → s1),             s0 = 1−ε (1 if b = B),
                                                                                 s1 = ε   (0 if b = 1)
    after J_b:   α = ε·(1 − (t − e)/(1 − e))             (ε → 0 on [e, 1]),     e = (B−b+1)/B

Forward = reverse schedule, so L_velocity = 0, with the rate A = −∂_tα/(1−α) of each piece. On a
bidirectional, time-agnostic denoiser, L_OeMDM = AR-NLL + O(ε) for L' = 1 and L_BD3LM + O(ε) for blocks
(spec §2). The float64 twin is ``reference.schedules.BlockSchedule``; ``proofs_tests/test_train_window.py``
compares the two.

Evaluation: the integrand E[masked]·A = −∂_tα is bounded (≤ B per position), so t ~ U(0, 1) with weight 1
is an unbiased estimator. Its second moment is only log-divergent at t → 0: a position masked before its
window (probability εt/s) is scored with A = 1/t, so E[(A·CE)²] ∝ ε∫dt/t; the evaluator's clamp v ≥ 1e-12
keeps it finite, and the per-sequence standard error measures it (``proofs_tests/test_train_window.py``).
Sampling: with z-independent reverse rates the reveal times are
independent, with P(τ_i ≤ t) = 1 − α^i(t); drawing them by inverting the piecewise-linear α and revealing in
decreasing τ, each token from x_θ of the current state, is exact for a time-agnostic denoiser.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..noise import StepNoise
from .base import (
    ADAPTIVE_SAMPLERS,
    LossOutput,
    Process,
    fused_rows,
    masked_rows,
    only_valid,
    per_sequence,
    per_token,
    register,
)

if TYPE_CHECKING:
    from ..model import ModelConfig, OeMDM


class WindowSchedule:
    """α_bd,ε of spec §2 for L positions in blocks of ``block_size``; tensors of shape (..., L), float64.

    With ``valid`` (B, L), True at real tokens, each sequence gets its own windows over its real positions only:
    the k-th real token is in block ⌊k / L'⌋ + 1 of ⌈ℓ / L'⌉ blocks (ℓ its real length; a last partial block is
    allowed), so a padded sequence has exactly the schedule of the same sentence unpadded. Padding positions
    get the last block's (finite) values; they are never masked and never scored."""

    def __init__(self, seq_len: int, block_size: int, eps: float, valid: Tensor | None = None) -> None:
        if not 0 < eps < 0.5:
            raise ValueError(f"WindowSchedule: eps must lie in (0, 1/2), got {eps}")
        if block_size < 1 or (valid is None and seq_len % block_size):
            raise ValueError(f"WindowSchedule: seq_len ({seq_len}) must be a multiple of block_size ({block_size})")
        self.eps = eps
        if valid is None:
            n_blocks: Tensor | float = float(seq_len // block_size)
            b = (torch.arange(seq_len) // block_size + 1).double()  # 1-indexed block of each position
        else:
            real_index = (valid.long().cumsum(-1) - 1).clamp_min(0)  # k of the k-th real token (0-based)
            n_blocks = torch.div(valid.sum(-1, keepdim=True) + block_size - 1, block_size,
                                 rounding_mode="floor").clamp_min(1).double()  # (B, 1)
            b = torch.minimum((real_index // block_size + 1).double(), n_blocks)
        self.B = n_blocks
        self.b = b
        self.start = (n_blocks - b) / n_blocks
        self.end = (n_blocks - b + 1) / n_blocks
        # float64 constants: torch.where with Python scalars would round 1 − ε and ε to float32 (the default
        # dtype), breaking the continuity of 1 − α at the window edges by ~1e-8
        one, zero = torch.ones_like(b), torch.zeros_like(b)
        self.s0 = torch.where(b == n_blocks, one, one - eps)
        self.s1 = torch.where(b == 1, zero, zero + eps)

    def one_minus_alpha_and_rate(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(1 − α, A = −∂_tα/(1 − α)) at times t (..., 1) or (..., L), float64, for t in (0, 1]."""
        t = t.double()
        eps = self.eps
        B = self.B.to(t.device) if isinstance(self.B, Tensor) else self.B
        start, end = self.start.to(t.device), self.end.to(t.device)
        s0, s1, b = self.s0.to(t.device), self.s1.to(t.device), self.b.to(t.device)
        before, after = t < start, t > end
        # 1 − α and −∂_tα on each piece (the unused pieces are evaluated at safe values and discarded)
        oma_before = eps * t / start.clamp_min(1e-300)
        dal_before = eps / start.clamp_min(1e-300)
        oma_in = 1 - s0 + (s0 - s1) * (B * t - (B - b))
        dal_in = (s0 - s1) * B
        oma_after = 1 - eps + eps * (t - end) / (1 - end).clamp_min(1e-300)
        dal_after = eps / (1 - end).clamp_min(1e-300)
        oma = torch.where(before, oma_before, torch.where(after, oma_after, oma_in))
        dal = torch.where(before, dal_before, torch.where(after, dal_after, dal_in))
        return oma, dal / oma

    def reveal_times(self, U: Tensor) -> Tensor:
        """τ with P(τ ≤ t) = 1 − α(t), from uniforms U (..., L): the inverse of the piecewise-linear 1 − α."""
        U = U.double()
        eps = self.eps
        B = self.B.to(U.device) if isinstance(self.B, Tensor) else self.B
        start, end = self.start.to(U.device), self.end.to(U.device)
        s0, s1, b = self.s0.to(U.device), self.s1.to(U.device), self.b.to(U.device)
        lo, hi = 1 - s0, 1 - s1  # the range of 1 − α on the window
        tau_before = U * start / eps
        tau_in = ((U - lo) / (s0 - s1) + (B - b)) / B
        tau_after = end + (U - hi) * (1 - end) / eps
        return torch.where(U < lo, tau_before, torch.where(U > hi, tau_after, tau_in))


class WindowProcess(Process):
    """OeMDM under α_bd,ε on a bidirectional, time-agnostic denoiser."""

    time_conditioning_ok = False  # the theorem needs a time-agnostic denoiser (spec §2)
    samplers = ("first-hitting", "topk", *ADAPTIVE_SAMPLERS)
    estimator = "t ~ U(0,1) with weight 1 (bounded integrand), antithetic pairs, MC standard error over sequences"

    def block_size(self) -> int:
        return self.cfg.block_size

    @classmethod
    def validate(cls, cfg: ModelConfig) -> None:
        super().validate(cfg)
        if not 0 < cfg.eps < 0.5:
            raise ValueError(f"eps must lie in (0, 1/2) for model={cls.name}, got {cfg.eps}")

    def schedule(self, L: int, valid: Tensor | None = None) -> WindowSchedule:
        return WindowSchedule(L, self.block_size(), self.cfg.eps, valid)

    def loss(self, model: OeMDM, x: Tensor, noise: StepNoise, K: int, want_stats: bool,
             valid: Tensor | None = None) -> LossOutput:
        B, L = x.shape
        oma, A = self.schedule(L, valid).one_minus_alpha_and_rate(noise.t[:, None])
        masked = only_valid(noise.u[0] < oma.float(), valid)
        z = torch.where(masked, self.cfg.mask_id, x)
        feats = model.backbone.features(z, valid=valid)
        rows, h = masked_rows(feats, masked)
        a = A.float().reshape(-1)[rows]
        row = fused_rows(model, h, x.reshape(-1)[rows], a, a)
        per_seq = per_token(per_sequence(row, rows, B, L), valid, L)[None]
        return LossOutput(per_seq.mean(), per_seq.detach().mean(), per_seq.detach(), masked=masked[None])

    def sequence_bound(self, model: OeMDM, x: Tensor, v: Tensor, mask_u: Tensor,
                       valid: Tensor | None = None) -> Tensor:
        B, L = x.shape
        oma, A = self.schedule(L, valid).one_minus_alpha_and_rate(v.double()[:, None])
        masked = only_valid(mask_u.double() < oma, valid)
        z = torch.where(masked, self.cfg.mask_id, x)
        feats = model.backbone.features(z, valid=valid)
        rows, h = masked_rows(feats, masked)
        a = A.float().reshape(-1)[rows]
        row = fused_rows(model, h, x.reshape(-1)[rows], a, a)
        return per_token(per_sequence(row.double(), rows, B, L, torch.float64), valid, L)

    def reverse(self, model: OeMDM, z: Tensor, t: Tensor | None) -> tuple[Tensor, Tensor]:
        feats = model.backbone.features(z)
        return torch.softmax(model.backbone.logits(feats).double(), -1), torch.ones(z.shape, dtype=torch.float64)

    def sample(self, model: OeMDM, z: Tensor, order: Tensor, g: torch.Generator, sampler: str,
               steps: int) -> tuple[Tensor, Tensor]:
        """Reveal in decreasing reveal time τ (exact, see the module docstring); ``topk`` uses the median
        τ of each position (left to right by blocks, ties to the lowest index)."""
        from ..sample import draw_tokens, sample_adaptive

        if sampler in ADAPTIVE_SAMPLERS:
            return sample_adaptive(self, model, z, order, g, sampler)
        m = self.cfg.mask_id
        n, L = z.shape
        sched = self.schedule(L)
        if sampler == "topk":
            tau = sched.reveal_times(torch.full((n, L), 0.5, dtype=torch.float64))
        else:
            tau = sched.reveal_times(torch.rand((n, L), generator=g, dtype=torch.float64))
        step = 0
        while bool((z == m).any()):
            masked = (z == m).cpu()
            active = masked.any(-1)
            # the largest τ among masked positions; ties to the lowest index (argmax returns the first)
            pos = torch.where(masked, tau, torch.full_like(tau, -1.0)).argmax(-1)
            feats = model.backbone.features(z)
            probs = torch.softmax(model.backbone.logits(feats).double(), -1)
            tok = draw_tokens(probs[torch.arange(n), pos.to(z.device)][:, None], g)[:, 0]
            rows = torch.nonzero(active).squeeze(1).to(z.device)
            z[rows, pos.to(z.device)[rows]] = tok[rows]
            order[rows, pos.to(z.device)[rows]] = step
            step += 1
        return z, order


@register
class OeMDMARM(WindowProcess):
    name = "oemdm-arm"
    description = "OeMDM with alpha_arm,eps (one position per window): the ARM theorem, bidirectional denoiser"

    def block_size(self) -> int:
        return 1


@register
class OeMDMBlock(WindowProcess):
    name = "oemdm-block"
    description = "OeMDM with alpha_bd,eps (block_size positions per window): the block theorem"

    @classmethod
    def validate(cls, cfg: ModelConfig) -> None:
        super().validate(cfg)
        if cfg.seq_len % cfg.block_size:
            raise ValueError(f"seq_len ({cfg.seq_len}) must be a multiple of block_size ({cfg.block_size})")
