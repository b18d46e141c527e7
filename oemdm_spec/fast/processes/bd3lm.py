"""BD3LM (Arriola et al., 2025): block diffusion. One t per block, the MDLM schedule inside each block, and
x_θ for block b conditioned on (z_t^b, x^{<b}) through a block-causal mask over [z_t ; x] (spec §2)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..noise import StepNoise
from .base import LossOutput, Process, fused_rows, masked_rows, only_valid, per_sequence, per_token, register

if TYPE_CHECKING:
    from ..model import ModelConfig, OeMDM


def block_causal_mask(seq_len: int, block_size: int) -> Tensor:
    """Boolean (2L, 2L) attention mask over [z_t ; x] (True = may attend), as in BD3LM.

    A query in the noisy block b sees the noisy block b and the clean blocks < b; a query in the clean block
    b sees the clean blocks ≤ b. So x_θ for block b is conditioned on exactly (z_t^b, x^{<b})."""
    blk = torch.arange(seq_len) // block_size
    qb, kb = blk[:, None], blk[None, :]
    noisy_noisy = qb == kb
    noisy_clean = kb < qb
    clean_clean = kb <= qb
    clean_noisy = torch.zeros(seq_len, seq_len, dtype=torch.bool)
    top = torch.cat([noisy_noisy, noisy_clean], dim=1)
    bottom = torch.cat([clean_noisy, clean_clean], dim=1)
    return torch.cat([top, bottom], dim=0)


@register
class BD3LM(Process):
    name = "bd3lm"
    description = "block diffusion: blocks left to right, MDLM inside each block"
    time_conditioning_ok = False

    @classmethod
    def validate(cls, cfg: ModelConfig) -> None:
        super().validate(cfg)
        if cfg.seq_len % cfg.block_size:
            raise ValueError(f"seq_len ({cfg.seq_len}) must be a multiple of block_size ({cfg.block_size})")

    def attach(self, model: OeMDM) -> None:
        model.register_buffer("bd_mask", block_causal_mask(self.cfg.seq_len, self.cfg.block_size), persistent=False)

    def n_times(self) -> int:
        return self.cfg.seq_len // self.cfg.block_size

    def n_eval_uniforms(self, L: int) -> int:
        return L // self.cfg.block_size

    def check_x(self, x: Tensor) -> None:
        if x.shape[1] != self.cfg.seq_len:
            raise ValueError(f"oemdm_loss: x must have shape (B, {self.cfg.seq_len}), got {tuple(x.shape)}")

    def features(self, model: OeMDM, z: Tensor, x: Tensor) -> Tensor:
        """Features of the noisy half of [z_t ; x] (B, L, d) under the block-causal mask."""
        L = z.shape[1]
        if L % self.cfg.block_size:
            raise ValueError(f"bd3lm: the length ({L}) must be a multiple of block_size ({self.cfg.block_size})")
        mask = model.bd_mask if L == self.cfg.seq_len else block_causal_mask(L, self.cfg.block_size).to(z.device)
        pos = torch.arange(L, device=z.device)
        h = model.backbone.features(torch.cat([z, x], dim=1), positions=torch.cat([pos, pos]), attn_mask=mask)
        return h[:, :L]

    def loss(self, model: OeMDM, x: Tensor, noise: StepNoise, K: int, want_stats: bool,
             valid: Tensor | None = None) -> LossOutput:
        B, L = x.shape
        t_blk = noise.t if noise.t.dim() == 2 else noise.t[:, None]  # (B, n_blocks); one block arrives squeezed
        t_pos = t_blk.repeat_interleave(self.cfg.block_size, dim=1)  # (B, L)
        masked = only_valid(noise.u[0] < t_pos, valid)
        z = torch.where(masked, self.cfg.mask_id, x)
        feats = self.features(model, z, x)
        A = 1.0 / t_pos
        rows, h = masked_rows(feats, masked)
        row = fused_rows(model, h, x.reshape(-1)[rows], A.reshape(-1)[rows], A.reshape(-1)[rows])
        per_seq = per_token(per_sequence(row, rows, B, L), valid, L)[None]
        return LossOutput(per_seq.mean(), per_seq.detach().mean(), per_seq.detach(), masked=masked[None])

    def sequence_bound(self, model: OeMDM, x: Tensor, v: Tensor, mask_u: Tensor,
                       valid: Tensor | None = None) -> Tensor:
        """In log-time every position has hazard 1 (MDLM); one u ~ Exp(1/2) per block, weight 1/p(u_b)."""
        B, L = x.shape
        bs = self.cfg.block_size
        v = v if v.dim() == 2 else v[:, None]  # (B, n_blocks); a single block may arrive squeezed
        u = -torch.log1p(-v.double()) / 0.5  # Exp(1/2) per block
        log_p = math.log(0.5) - 0.5 * u  # (B, nb)
        masked = only_valid(mask_u.double() < torch.exp(-u.repeat_interleave(bs, dim=1)), valid)
        z = torch.where(masked, self.cfg.mask_id, x)
        feats = self.features(model, z, x)
        ones = torch.ones(B, L, device=x.device)
        weight = torch.exp(-log_p).repeat_interleave(bs, dim=1)  # 1/p(u_b) per position
        rows, h = masked_rows(feats, masked)
        row = fused_rows(model, h, x.reshape(-1)[rows], ones.reshape(-1)[rows], ones.reshape(-1)[rows])
        row = row.double() * weight.reshape(-1)[rows].double()
        return per_token(per_sequence(row, rows, B, L, torch.float64), valid, L)

    samplers = ("first-hitting",)

    def sample(self, model: OeMDM, z: Tensor, order: Tensor, g: torch.Generator, sampler: str,
               steps: int) -> tuple[Tensor, Tensor]:
        """Block by block; inside a block, first-hitting with the uniform order of MDLM."""
        from ..sample import draw_tokens

        m = self.cfg.mask_id
        bs = self.cfg.block_size
        L = z.shape[1]
        step = 0
        for b0 in range(0, L, bs):
            while bool((z[:, b0:b0 + bs] == m).any()):
                # the clean copy: blocks < b are clean; what it holds for blocks >= b is never attended to
                feats = self.features(model, z, torch.where(z == m, 0, z))
                probs = torch.softmax(model.backbone.logits(feats[:, b0:b0 + bs]).double(), -1)
                masked = (z[:, b0:b0 + bs] == m).cpu()
                active = masked.any(-1)
                weights = torch.where(active[:, None], masked.double(), torch.ones_like(masked, dtype=torch.float64))
                pos = torch.multinomial(weights, 1, generator=g).squeeze(1)
                tok = draw_tokens(probs[torch.arange(z.shape[0]), pos.to(z.device)][:, None], g)[:, 0]
                rows = torch.nonzero(active).squeeze(1).to(z.device)
                z[rows, b0 + pos.to(z.device)[rows]] = tok[rows]
                order[rows, b0 + pos.to(z.device)[rows]] = step
                step += 1
        return z, order
