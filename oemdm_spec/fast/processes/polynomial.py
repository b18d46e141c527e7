"""Polynomial schedules α^i = 1 − t^{w_i}: MDLM (w ≡ 1), GenMD4 (w per vocabulary word), LoMDM (w_φ(x)).

| type   | P(z^i masked | x, t) | A (forward) | Â (reverse)            | masks per sequence |
|--------|---------------------|-------------|------------------------|--------------------|
| mdlm   | t                   | 1/t         | 1/t                    | 1                  |
| genmd4 | t^{w[x^i]}          | w[x^i]/t    | Σ_v w_v μ_θ[v] / t     | K (RLOO)           |
| lomdm  | t^{w_φ^i(x)}        | w_φ^i(x)/t  | w_ψ^i(z_t)/t           | K (RLOO)           |

In log-time u = −log t the same schedules have constant hazards: A dt = w du and Â dt = ŵ du, so training
(t-space, A = w/t) and evaluation (u-space, A = w) share one pair of functions per type: the forward exponent
w and the reverse exponent ŵ.

GenMD4 (spec §2, MD4's GenMD4): the reverse rate into token v is (w_v/t)·μ_θ[v], so the total rate is
Â = Σ_v w_v μ_θ[v] / t and the token law is x_θ[v] ∝ w_v μ_θ[v]; plugged into the kernel (logits + log w)
this gives exactly the generalized-KL integrand −(w_x/t) log μ_θ[x] − w_x/t + Σ_v w_v μ_θ[v]/t.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ..kernels import forward_mask
from ..noise import StepNoise
from ..time_density import mixture_inverse_cdf, mixture_log_density
from .base import (
    LossOutput,
    Process,
    fused_rows,
    logits_rows,
    masked_rows,
    only_valid,
    per_sequence,
    per_token,
    register,
    rloo_surrogate,
)
from .base import forward_log_q as forward_log_q

if TYPE_CHECKING:
    from ..model import ModelConfig, OeMDM

GENMD4_LOG_W_RANGE = (-4.0, 2.0)  # w ∈ [0.018, 7.4]: keeps the GenMD4 schedule away from degenerate
PHI_TIME = 0.5  # the time a time-conditioned backbone is given when it reads clean x for φ (see LoMDM)


class PolynomialProcess(Process):
    """α^i = 1 − t^{w_i} with a forward exponent w (from x) and a reverse exponent ŵ (from z_t)."""

    def forward_exponent(self, model: OeMDM, x: Tensor, valid: Tensor | None = None) -> Tensor:
        """w (B, L), float32; A = w/t in t-space, w in u-space."""
        return torch.ones(x.shape, device=x.device)

    def reverse_exponent(self, model: OeMDM, feats: Tensor, w_fwd: Tensor, valid: Tensor | None = None) -> Tensor:
        """ŵ (B, L), float32, from the denoiser's features of z_t; ŵ = w (no L_velocity) by default."""
        return w_fwd

    def row_loss(self, model: OeMDM, h: Tensor, tgt: Tensor, a: Tensor, ah: Tensor) -> Tensor:
        """The OeMDM row loss of masked rows with hidden states ``h``, forward rate a and reverse rate ah."""
        return fused_rows(model, h, tgt, a, ah)

    # evaluation in u = −log t: one shared estimator for every polynomial type
    def sequence_bound(self, model: OeMDM, x: Tensor, v: Tensor, mask_u: Tensor,
                       valid: Tensor | None = None) -> Tensor:
        B, L = x.shape
        w_fwd = self.forward_exponent(model, x, valid)
        rates = w_fwd / 2
        u = mixture_inverse_cdf(v, rates, valid=valid)  # (B,)
        log_p = mixture_log_density(u, rates, valid)
        masked = only_valid(mask_u.double() < torch.exp(-w_fwd.double() * u[:, None]), valid)
        z = torch.where(masked, self.cfg.mask_id, x)
        feats = model.backbone.features(z, self.time_input(model, torch.exp(-u).float()), valid=valid)
        w_rev = self.reverse_exponent(model, feats, w_fwd, valid)
        weight = torch.exp(-log_p)[:, None].expand(B, L)
        rows, h = masked_rows(feats, masked)
        row = self.row_loss(model, h, x.reshape(-1)[rows], w_fwd.reshape(-1)[rows].float(),
                            w_rev.reshape(-1)[rows].float())
        row = row.double() * weight.reshape(-1)[rows].double()
        return per_token(per_sequence(row, rows, B, L, torch.float64), valid, L)

    def reverse(self, model: OeMDM, z: Tensor, t: Tensor | None) -> tuple[Tensor, Tensor]:
        feats = model.backbone.features(z, t)
        probs = torch.softmax(model.backbone.logits(feats).double(), -1)
        w = self.reverse_exponent(model, feats, torch.ones(z.shape, device=z.device))
        return probs, w.double()


@register
class MDLM(PolynomialProcess):
    """MDLM: α = 1 − t at every position (Sahoo et al., 2024); A = Â = 1/t, so L_velocity = 0."""

    name = "mdlm"
    description = "masked diffusion, one linear schedule for all positions"

    def loss(self, model: OeMDM, x: Tensor, noise: StepNoise, K: int, want_stats: bool,
             valid: Tensor | None = None) -> LossOutput:
        B, L = x.shape
        t_pos = noise.t[:, None].expand(B, L)
        masked = only_valid(noise.u[0] < t_pos, valid)  # P(masked) = t
        z = torch.where(masked, self.cfg.mask_id, x)
        feats = model.backbone.features(z, self.time_input(model, noise.t), valid=valid)
        A = 1.0 / t_pos
        rows, h = masked_rows(feats, masked)
        row = fused_rows(model, h, x.reshape(-1)[rows], A.reshape(-1)[rows], A.reshape(-1)[rows])
        per_seq = per_token(per_sequence(row, rows, B, L), valid, L)[None]
        return LossOutput(per_seq.mean(), per_seq.detach().mean(), per_seq.detach(), masked=masked[None])


class RLOOProcess(PolynomialProcess):
    """A learned forward schedule: K masks per sequence and the RLOO surrogate for ∇ log q (spec §3)."""

    rloo = True
    order_stats = True

    def training_forward_exponent(self, model: OeMDM, x: Tensor, valid: Tensor | None = None) -> Tensor:
        return self.forward_exponent(model, x, valid)

    def mask(self, x: Tensor, w_fwd: Tensor, noise: StepNoise, K: int,
             valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """K masks with P(masked) = t^w (w detached: the masks are samples) and log q(z|x) (K, B), which
        carries ∇_w for the score-function term. On CUDA one fused kernel does both, with its own Philox
        uniforms seeded per (seed, step, rank); on the CPU, and in a compiled step, the step noise's uniforms."""
        t = noise.t
        if x.is_cuda and valid is None and not torch.compiler.is_compiling():
            z, log_q = forward_mask(x, t, w_fwd, K=K, seed=noise.seed, mask_id=self.cfg.mask_id)
            return z == self.cfg.mask_id, log_q
        log_t = t.log()[:, None]  # (B, 1)
        masked = torch.log(noise.u[:K]) < (w_fwd.detach() * log_t)[None]
        if valid is None:
            return masked, forward_log_q(masked, w_fwd, log_t)
        masked = masked & valid  # padding is never masked and is not part of q(z|x)
        return masked, forward_log_q(masked, w_fwd, log_t, valid)

    def loss(self, model: OeMDM, x: Tensor, noise: StepNoise, K: int, want_stats: bool,
             valid: Tensor | None = None) -> LossOutput:
        B, L = x.shape
        t = noise.t
        w_fwd = self.training_forward_exponent(model, x, valid)
        masked, log_q = self.mask(x, w_fwd, noise, K, valid)
        z = torch.where(masked, self.cfg.mask_id, x[None])  # (K, B, L)
        valid_k = None if valid is None else valid[None].expand(K, B, L).reshape(K * B, L)
        feats = model.backbone.features(z.reshape(K * B, L), self.time_input(model, t.repeat(K)), valid=valid_k)
        A = (w_fwd / t[:, None])[None].expand(K, B, L)
        w_rev = self.reverse_exponent(model, feats, w_fwd[None].expand(K, B, L).reshape(K * B, L),
                                      valid_k).view(K, B, L)
        A_hat = w_rev / t[None, :, None]
        rows, h = masked_rows(feats.view(K * B, L, -1), masked)
        row = self.row_loss(model, h, x[None].expand(K, B, L).reshape(-1)[rows], A.reshape(-1)[rows],
                            A_hat.reshape(-1)[rows])
        per_seq = per_token(per_sequence(row, rows, K * B, L).view(K, B), valid, L)
        loss = rloo_surrogate(per_seq, log_q).mean()
        stats = self.stats(model, feats, w_fwd, w_rev, masked, K, B, L) if want_stats else {}
        return LossOutput(loss, per_seq.detach().mean(), per_seq.detach(), stats, masked=masked)

    def stats(self, model: OeMDM, feats: Tensor, w_fwd: Tensor, w_rev: Tensor, masked: Tensor, K: int,
              B: int, L: int) -> dict[str, Tensor]:
        return {"w_fwd": w_fwd.detach()}


def logsumexp_rows(a: Tensor) -> Tensor:
    """log Σ_v exp(a[..., v]) over the last dim, written out because ``torch.logsumexp`` guards on numel() == 0,
    which a compiled graph cannot decide for the data-dependent number of masked rows. Max-shifted (the max is
    a constant for autograd, so the gradient is exactly the softmax)."""
    m = a.detach().amax(-1, keepdim=True)
    return (a - m).exp().sum(-1).log() + m.squeeze(-1)


@register
class GenMD4(RLOOProcess):
    """GenMD4 (Shi et al., 2024): w per vocabulary word, α^i = 1 − t^{w[x^i]}; reverse rate (w_v/t)·μ_θ[v]."""

    name = "genmd4"
    description = "learned per-token-type polynomial schedule (MD4's GenMD4)"

    def attach(self, model: OeMDM) -> None:
        model.log_w_vocab = nn.Parameter(torch.zeros(self.cfg.vocab_size))  # log w; 0 is MDLM

    def scheduler_parameters(self, model: OeMDM) -> list[nn.Parameter]:
        return [model.log_w_vocab]

    def log_w(self, model: OeMDM) -> Tensor:
        return model.log_w_vocab.clamp(*GENMD4_LOG_W_RANGE)

    def forward_exponent(self, model: OeMDM, x: Tensor, valid: Tensor | None = None) -> Tensor:
        return self.log_w(model).exp()[x]

    def reverse_exponent(self, model: OeMDM, feats: Tensor, w_fwd: Tensor, valid: Tensor | None = None) -> Tensor:
        # the factor Σ_v w_v μ_θ[v] needs the logits, so row_loss applies it; this is the rest (1 in u-space)
        return torch.ones_like(w_fwd)

    def row_loss(self, model: OeMDM, h: Tensor, tgt: Tensor, a: Tensor, ah: Tensor) -> Tensor:
        # x_θ ∝ w_v μ_θ[v]: logits + log w; Â = Σ_v w_v μ_θ[v] (· 1/t in t-space) from the masked-row logits
        log_w = self.log_w(model)
        logits = model.backbone.out(h).float()
        log_rate = logsumexp_rows(torch.log_softmax(logits, -1) + log_w)  # log Σ_v w_v μ_v
        return logits_rows(logits + log_w, tgt, a, torch.exp(log_rate) * ah)

    def reverse(self, model: OeMDM, z: Tensor, t: Tensor | None) -> tuple[Tensor, Tensor]:
        feats = model.backbone.features(z, t)
        logits = model.backbone.logits(feats).double()
        log_w = self.log_w(model).double()
        logp = torch.log_softmax(logits, -1)
        rate = torch.exp(torch.logsumexp(logp + log_w, -1))
        return torch.softmax(logp + log_w, -1), rate  # x_θ ∝ w_v μ_θ[v]


@register
class LoMDM(RLOOProcess):
    """LoMDM (spec §3): w_φ(x) = c1 + c2·NormSig(g_φ(sg f(x))), ŵ = w_ψ(z_t) from g_ψ(sg f(z_t)).

    φ reads the backbone's features of the clean sequence. With a time-conditioned backbone those features
    are taken at the fixed time PHI_TIME, in training, evaluation and sampling alike: the forward exponent is
    then a function of x only, α^i = 1 − t^{w_φ^i(x)} is exactly polynomial in t, and A = w_φ/t is its exact
    rate. (Reading f(x) at the step's t would make w depend on t, adding (∂_t w)·log t to the rate.)"""

    name = "lomdm"
    description = "learned, context-dependent generation order (φ/ψ scheduler heads)"

    @classmethod
    def validate(cls, cfg: ModelConfig) -> None:
        super().validate(cfg)
        if cfg.order_param == "normsig" and not (cfg.c2 >= 0 and cfg.c1 > cfg.c2):
            # w = c1 + c2·NormSig ∈ (c1 − c2, c1 + c2); c1 ≤ c2 would allow w ≤ 0 (no schedule).
            raise ValueError(f"LoMDM needs c1 > c2 >= 0 (w = c1 + c2*NormSig stays > 0), got c1={cfg.c1}, "
                             f"c2={cfg.c2}")
        if cfg.order_param == "logspace" and not (
                cfg.c1 > 0 and cfg.c2 >= 0 and math.isfinite(cfg.log_range) and cfg.log_range > 0):
            raise ValueError(f"order_param=logspace needs c1 > 0, c2 >= 0 and a finite log_range > 0, got "
                             f"c1={cfg.c1}, c2={cfg.c2}, log_range={cfg.log_range}")

    def attach(self, model: OeMDM) -> None:
        from ..model import OrderHead

        model.phi = OrderHead(self.cfg)
        model.psi = OrderHead(self.cfg)

    def scheduler_parameters(self, model: OeMDM) -> list[nn.Parameter]:
        return [*model.phi.parameters(), *model.psi.parameters()]

    def fsdp_units(self, model: OeMDM) -> list[nn.Module]:
        return [*model.backbone.blocks, model.phi, model.psi]

    def clean_features(self, model: OeMDM, x: Tensor, valid: Tensor | None = None) -> Tensor:
        """f(x): the backbone's features of the clean sequence, the input of φ."""
        t = torch.full((x.shape[0],), PHI_TIME, device=x.device) if self.cfg.time_conditioning else None
        return model.backbone.features(x, t, valid=valid)

    def forward_exponent(self, model: OeMDM, x: Tensor, valid: Tensor | None = None) -> Tensor:
        return model.w_phi(self.clean_features(model, x, valid), valid).float()

    def training_forward_exponent(self, model: OeMDM, x: Tensor, valid: Tensor | None = None) -> Tensor:
        with torch.no_grad():  # the shared no-grad x pass: θ gets nothing through the schedulers
            fx = self.clean_features(model, x, valid)
        return model.w_phi(fx, valid)

    def reverse_exponent(self, model: OeMDM, feats: Tensor, w_fwd: Tensor, valid: Tensor | None = None) -> Tensor:
        return model.w_psi(feats, valid).float()  # ψ reads sg(f(z_t)) (detached inside w_psi)

    def stats(self, model: OeMDM, feats: Tensor, w_fwd: Tensor, w_rev: Tensor, masked: Tensor, K: int,
              B: int, L: int) -> dict[str, Tensor]:
        with torch.no_grad():
            # the denoiser's confidence max_v x_θ[v] at the masked positions of the first sample (Fig. 4)
            h0 = feats.view(K, B, L, -1)[0][masked[0]]
            conf = torch.softmax(model.backbone.logits(h0).float(), -1).max(-1).values
        return {"w_fwd": w_fwd.detach(), "w_rev": w_rev.detach(), "conf": conf,
                "w_fwd_masked": w_fwd.detach()[masked[0]], "w_rev_masked": w_rev.detach()[0][masked[0]]}


@register
class FixedOrder(PolynomialProcess):
    """OeMDM with exponents fixed by hand per position, α^i = 1 − t^{w_i} (``order_w``): forward = reverse,
    so L_velocity = 0 and only the denoiser trains. Position i is revealed before j with probability
    w_i/(w_i + w_j) (spec §3 "Order semantics"): larger w is generated earlier. With w from a task's known
    easy order this is the oracle a learned position order is judged against (docs/lomdm.md)."""

    name = "oemdm-fixed"
    description = "OeMDM with per-position exponents fixed by hand (--order_w): oracle orders"

    @classmethod
    def validate(cls, cfg: ModelConfig) -> None:
        super().validate(cfg)
        w = cfg.order_w
        if not w or len(w) != cfg.seq_len or not all(math.isfinite(v) and v > 0 for v in w):
            raise ValueError(f"oemdm-fixed needs order_w: {cfg.seq_len} finite exponents > 0 (one per position), "
                             f"got {w!r}")

    def exponents(self, shape: torch.Size, device: torch.device) -> Tensor:
        """The fixed w (B, L), float32; sequences must have the length of ``order_w``."""
        if shape[1] != len(self.cfg.order_w):
            raise ValueError(f"oemdm-fixed: sequences must have the length of order_w ({len(self.cfg.order_w)}), "
                             f"got {shape[1]}")
        return torch.tensor(self.cfg.order_w, dtype=torch.float32, device=device)[None].expand(shape[0], -1)

    def forward_exponent(self, model: OeMDM, x: Tensor, valid: Tensor | None = None) -> Tensor:
        return self.exponents(x.shape, x.device)

    def reverse_exponent(self, model: OeMDM, feats: Tensor, w_fwd: Tensor, valid: Tensor | None = None) -> Tensor:
        return self.exponents(w_fwd.shape, w_fwd.device)  # forward = reverse: the fixed exponents

    def loss(self, model: OeMDM, x: Tensor, noise: StepNoise, K: int, want_stats: bool,
             valid: Tensor | None = None) -> LossOutput:
        B, L = x.shape
        w = self.forward_exponent(model, x)
        log_t = noise.t.log()[:, None]
        masked = only_valid(torch.log(noise.u[0]) < w * log_t, valid)  # P(masked) = t^w
        z = torch.where(masked, self.cfg.mask_id, x)
        feats = model.backbone.features(z, self.time_input(model, noise.t), valid=valid)
        A = w / noise.t[:, None]
        rows, h = masked_rows(feats, masked)
        row = fused_rows(model, h, x.reshape(-1)[rows], A.reshape(-1)[rows], A.reshape(-1)[rows])
        per_seq = per_token(per_sequence(row, rows, B, L), valid, L)[None]
        return LossOutput(per_seq.mean(), per_seq.detach().mean(), per_seq.detach(), masked=masked[None])
