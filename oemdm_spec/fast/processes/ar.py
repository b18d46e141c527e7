"""The autoregressive model: a causal transformer over [m, x¹..x^{L−1}] (the mask id doubles as
beginning-of-sequence). Its loss is the exact NLL; OeMDM reaches it as the ε → 0 limit of α_arm,ε (spec §2,
see ``window.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..noise import StepNoise
from .base import LossOutput, Process, fused_rows, masked_rows, per_sequence, per_token, register

if TYPE_CHECKING:
    from ..model import OeMDM


@register
class AR(Process):
    name = "ar"
    description = "autoregressive, left to right (exact NLL)"
    exact_bound = True
    time_conditioning_ok = False
    samplers = ("first-hitting",)
    estimator = "exact causal NLL (no Monte-Carlo; SE over sequences)"

    def features(self, model: OeMDM, x: Tensor, valid: Tensor | None = None) -> Tensor:
        """Features predicting x^i from x^{<i} (B, L, d): the input is x shifted right behind the mask id.
        Causal attention already hides trailing padding from every real position."""
        inp = torch.cat([torch.full_like(x[:, :1], self.cfg.mask_id), x[:, :-1]], dim=1)
        return model.backbone.features(inp, causal=True)

    def nll_rows(self, model: OeMDM, x: Tensor) -> Tensor:
        """−log p(x^i | x^{<i}) for every position, flattened (B·L,)."""
        B, L = x.shape
        h = self.features(model, x).reshape(B * L, -1)
        ones = torch.ones(B * L, device=x.device)
        return fused_rows(model, h, x.reshape(-1), ones, ones)

    def loss(self, model: OeMDM, x: Tensor, noise: StepNoise, K: int, want_stats: bool,
             valid: Tensor | None = None) -> LossOutput:
        B, L = x.shape
        scored = torch.ones_like(x, dtype=torch.bool) if valid is None else valid  # padding is not scored
        rows, h = masked_rows(self.features(model, x, valid), scored)
        ones = torch.ones(rows.shape[0], device=x.device)
        row = fused_rows(model, h, x.reshape(-1)[rows], ones, ones)
        per_seq = per_token(per_sequence(row, rows, B, L), valid, L)[None]
        return LossOutput(per_seq.mean(), per_seq.detach().mean(), per_seq.detach())

    def sequence_bound(self, model: OeMDM, x: Tensor, v: Tensor, mask_u: Tensor,
                       valid: Tensor | None = None) -> Tensor:
        B, L = x.shape
        if valid is None:
            return self.nll_rows(model, x).view(B, L).sum(-1).double() / L
        nll = torch.where(valid, self.nll_rows(model, x).view(B, L), 0.0)
        return per_token(nll.sum(-1).double(), valid, L)

    def sample(self, model: OeMDM, z: Tensor, order: Tensor, g: torch.Generator, sampler: str,
               steps: int) -> tuple[Tensor, Tensor]:
        from ..sample import draw_tokens

        m = self.cfg.mask_id
        for i in range(z.shape[1]):
            if not bool((z[:, i] == m).any()):
                continue
            x_in = torch.where(z == m, 0, z)  # future positions are invisible to a causal model anyway
            feats = self.features(model, x_in)
            probs = torch.softmax(model.backbone.logits(feats[:, i]).double(), -1)
            tok = draw_tokens(probs[:, None], g)[:, 0]
            need = z[:, i] == m
            z[:, i] = torch.where(need, tok, z[:, i])
            order[:, i] = torch.where(need, i, order[:, i])
        return z, order
