"""The DiT-style denoiser shared by every model type, and the LoMDM / GenMD4 scheduler heads.

One readable file, nanoGPT style. The backbone is a bidirectional transformer with
- adaLN-Zero conditioning (DiT): every block's shift/scale/gate comes from a conditioning vector c and
  starts at zero, so each block is the identity at initialisation;
- rotary position embeddings on queries and keys;
- attention through ``torch.nn.functional.scaled_dot_product_attention`` (any backend, no flash-attn pin);
- an untied, zero-initialised output layer over the V real tokens only (SUBS: the mask id m = V has an
  input embedding but never receives output mass).

It is *time-agnostic* by default: c is a learned constant vector, so x_θ(z_t) does not depend on t and a
sampler may reuse a forward pass while nothing changes. ``time_conditioning=True`` feeds a sinusoidal
embedding of t instead.

Model types (``ModelConfig.model_type``) share this backbone and the OeMDM loss; what differs between them
is one process object each (``processes/``), which may attach modules to the model (LoMDM's φ/ψ heads,
GenMD4's per-vocabulary exponent, BD3LM's block-causal mask).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

VOCAB_PAD_MIN = 1024  # smaller vocabularies are never padded (ModelConfig.vocab_pad_to)
ORDER_PARAMS = ("normsig", "logspace")


@dataclass
class ModelConfig:
    vocab_size: int  # V real tokens; the mask id is V
    seq_len: int
    model_type: str = "lomdm"
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 128
    cond_dim: int = 64
    mlp_ratio: int = 4
    time_conditioning: bool = False
    c1: float = 0.7  # LoMDM: w = c1 + c2·NormSig(·)
    c2: float = 0.65
    order_param: str = "normsig"  # LoMDM: "normsig" (the paper's) or "logspace" (sharper; spec §3)
    log_range: float = math.log(30.0)  # logspace: w ∈ (c1·e^{−R}, c1·e^{R})
    block_size: int = 4  # BD3LM / oemdm-block block length L'
    eps: float = 0.01  # oemdm-arm / oemdm-block: the ε of the window schedules (spec §2)
    order_w: tuple[float, ...] = ()  # oemdm-fixed: one exponent per position (larger: generated earlier)
    # LoMDM: add a learned absolute position embedding (small init) to the φ/ψ heads' input. Without it
    # (rotary only) the heads are permutation-equivariant on the all-masked state: every ŵ ties (issue 14).
    head_positions: bool = False
    # Output-layer rows are padded to a multiple of this (50258 → 50304, as nanoGPT does) so that the LM-head
    # GEMMs see aligned shapes; pad rows have a −inf logit (exactly zero probability and gradient). Only
    # vocabularies of at least VOCAB_PAD_MIN tokens are padded: alignment matters for large-V GEMMs, while
    # small (character) vocabularies stay unpadded, exact and tiny. 1 disables padding.
    vocab_pad_to: int = 64

    def __post_init__(self) -> None:
        """All validation of model sizes and schedule constants lives here (TrainConfig.validate calls it)."""
        from .processes import process_class

        proc = process_class(self.model_type)  # raises for an unknown type, naming the valid ones
        for key in ("vocab_size", "seq_len", "n_layer", "n_head", "d_model", "cond_dim", "mlp_ratio", "block_size"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be an int >= 1, got {value!r}")
        if self.d_model % self.n_head or (self.d_model // self.n_head) % 2:
            raise ValueError(f"d_model ({self.d_model}) must split into n_head ({self.n_head}) even-sized heads")
        if self.order_param not in ORDER_PARAMS:
            raise ValueError(f"order_param must be one of {', '.join(ORDER_PARAMS)}, got {self.order_param!r}")
        for key in ("c1", "c2", "log_range", "eps"):
            if not math.isfinite(getattr(self, key)):
                raise ValueError(f"{key} must be finite, got {getattr(self, key)}")
        # documented ranges (docs/reliability.md): |c1|, |c2| <= 100 keep w and its exponentials finite in
        # float32; w within c1*exp(+-log_range) needs log_range <= 20; each process checks the signs
        for key, bound in (("c1", 100.0), ("c2", 100.0), ("log_range", 20.0)):
            if abs(getattr(self, key)) > bound:
                raise ValueError(f"{key} must lie in [-{bound:g}, {bound:g}], got {getattr(self, key)}")
        proc.validate(self)
        if isinstance(self.vocab_pad_to, bool) or not isinstance(self.vocab_pad_to, int) or self.vocab_pad_to < 1:
            raise ValueError(f"ModelConfig: vocab_pad_to must be an int >= 1, got {self.vocab_pad_to!r}")

    @property
    def mask_id(self) -> int:
        return self.vocab_size

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the output layer: ceil(V / vocab_pad_to)·vocab_pad_to when V ≥ VOCAB_PAD_MIN, else V."""
        p, v = self.vocab_pad_to, self.vocab_size
        return -(-v // p) * p if v >= VOCAB_PAD_MIN else v


# ----------------------------------------------------------------------------------------------------------
# building blocks


def rotary_tables(positions: Tensor, head_dim: int, base: float = 10000.0) -> tuple[Tensor, Tensor]:
    """cos/sin tables (len(positions), head_dim) for rotate-half RoPE."""
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, device=positions.device).float() / head_dim)
    angles = positions.float()[:, None] * inv_freq[None, :]
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos.to(x.dtype) + torch.cat([-x2, x1], dim=-1) * sin.to(x.dtype)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale) + shift


class SelfAttention(nn.Module):
    def __init__(self, d_model: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor], attn_mask: Tensor | None, causal: bool) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.n_head, d // self.n_head).permute(2, 0, 3, 1, 4)
        q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=causal and attn_mask is None)
        return self.proj(y.transpose(1, 2).reshape(b, n, d))


class MLP(nn.Sequential):
    def __init__(self, d_model: int, ratio: int) -> None:
        super().__init__(
            nn.Linear(d_model, ratio * d_model), nn.GELU(approximate="tanh"), nn.Linear(ratio * d_model, d_model)
        )


class DiTBlock(nn.Module):
    """Pre-norm transformer block with adaLN-Zero modulation from the conditioning vector c."""

    def __init__(self, d_model: int, n_head: int, cond_dim: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model, elementwise_affine=False)
        self.attn = SelfAttention(d_model, n_head)
        self.norm2 = nn.LayerNorm(d_model, elementwise_affine=False)
        self.mlp = MLP(d_model, mlp_ratio)
        self.ada = nn.Linear(cond_dim, 6 * d_model)
        nn.init.zeros_(self.ada.weight)  # adaLN-Zero: gates start at 0, the block is the identity
        nn.init.zeros_(self.ada.bias)

    def forward(self, x: Tensor, c: Tensor, rope: tuple[Tensor, Tensor], attn_mask: Tensor | None,
                causal: bool) -> Tensor:
        sh1, sc1, g1, sh2, sc2, g2 = self.ada(F.silu(c))[:, None, :].chunk(6, dim=-1)
        x = x + g1 * self.attn(modulate(self.norm1(x), sh1, sc1), rope, attn_mask, causal)
        return x + g2 * self.mlp(modulate(self.norm2(x), sh2, sc2))


class TimeEmbedding(nn.Module):
    """Sinusoidal embedding of t followed by an MLP (only with ``time_conditioning=True``)."""

    def __init__(self, cond_dim: int, freq_dim: int = 256) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim))

    def forward(self, t: Tensor) -> Tensor:
        # in the model's own dtype (float32 in training, float64 for reference checks after model.double())
        dtype = self.mlp[0].weight.dtype
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device).to(dtype) / half)
        args = 1000.0 * t.to(dtype)[:, None] * freqs[None]
        return self.mlp(torch.cat([args.cos(), args.sin()], dim=-1))


class PaddedLinear(nn.Module):
    """Output layer with Vp ≥ V rows for aligned GEMMs: ``weight`` (Vp, d) and ``bias`` (Vp,) feed the fused
    linear+loss kernel directly; calling the module returns the V real columns only.

    ``bias`` is ``bias_raw + pad_logit``, where the non-trainable buffer ``pad_logit`` is 0 on real rows and
    −inf on pad rows: pad logits are −inf, so their probability and every gradient through them (weight and
    bias_raw rows ≥ V) are exactly 0. The parameters themselves stay finite (zero pad rows), so weight decay,
    EMA and clipping never meet an infinity. State dict: ``weight`` (Vp, d), ``bias_raw`` (Vp,)."""

    def __init__(self, d: int, v: int, vp: int) -> None:
        super().__init__()
        self.in_features, self.out_features, self.vocab_size = d, vp, v
        self.weight = nn.Parameter(torch.zeros(vp, d))
        self.bias_raw = nn.Parameter(torch.zeros(vp))
        pad = torch.zeros(vp)
        pad[v:] = -math.inf
        self.register_buffer("pad_logit", pad, persistent=False)

    @property
    def bias(self) -> Tensor:
        return self.bias_raw + self.pad_logit.to(self.bias_raw.dtype)

    def forward(self, h: Tensor) -> Tensor:
        v = self.vocab_size
        return F.linear(h, self.weight[:v], self.bias_raw[:v])


# ----------------------------------------------------------------------------------------------------------
# the backbone


class DiT(nn.Module):
    """The denoiser backbone. ``features`` returns the final hidden states f (B, N, d) — the input of the
    output layer — and ``logits`` applies the output layer; the trainer calls the output layer only at masked
    rows, through the fused linear+loss kernel, so the full (B, L, V) logits are never formed in training."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.embed = nn.Embedding(cfg.vocab_size + 1, d)  # + the mask id
        nn.init.normal_(self.embed.weight, std=0.02)
        if cfg.time_conditioning:
            self.time_embed: TimeEmbedding | None = TimeEmbedding(cfg.cond_dim)
        else:
            self.time_embed = None
            self.cond = nn.Parameter(torch.randn(cfg.cond_dim) * 0.02)  # a constant c: time-agnostic
        self.blocks = nn.ModuleList(DiTBlock(d, cfg.n_head, cfg.cond_dim, cfg.mlp_ratio) for _ in range(cfg.n_layer))
        self.norm_out = nn.LayerNorm(d, elementwise_affine=False)
        self.ada_out = nn.Linear(cfg.cond_dim, 2 * d)
        vp = cfg.padded_vocab_size
        # untied from the embedding; Vp ≥ V rows, see PaddedLinear
        self.out = nn.Linear(d, vp) if vp == cfg.vocab_size else PaddedLinear(d, cfg.vocab_size, vp)
        for lin in (self.ada_out, self.out):  # zero init: x_θ starts uniform, training starts at log V
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias_raw if isinstance(lin, PaddedLinear) else lin.bias)

    def conditioning(self, batch: int, t: Tensor | None, device: torch.device) -> Tensor:
        if self.time_embed is None:
            return self.cond.expand(batch, -1)
        if t is None:
            raise ValueError("DiT: this model is time-conditioned; pass t")
        return self.time_embed(t)

    def features(self, z: Tensor, t: Tensor | None = None, *, positions: Tensor | None = None,
                 attn_mask: Tensor | None = None, causal: bool = False, valid: Tensor | None = None) -> Tensor:
        """Final hidden states (B, N, d) of token ids z (B, N); ``positions`` (N,) default to 0..N−1.
        ``valid`` (B, N), True at real tokens: padding keys are hidden from every query, so the real tokens'
        features are those of the unpadded sequence."""
        b, n = z.shape
        if valid is not None and attn_mask is None:
            attn_mask = padding_mask(valid, causal)
            causal = False
        if positions is None:
            positions = torch.arange(n, device=z.device)
        rope = rotary_tables(positions, self.cfg.d_model // self.cfg.n_head)
        c = self.conditioning(b, t, z.device)
        h = self.embed(z)
        for block in self.blocks:
            h = block(h, c, rope, attn_mask, causal)
        shift, scale = self.ada_out(F.silu(c))[:, None, :].chunk(2, dim=-1)
        return modulate(self.norm_out(h), shift, scale)

    def logits(self, h: Tensor) -> Tensor:
        """Logits over the V real tokens only (pad rows of a padded output layer are dropped)."""
        return self.out(h)

    def forward(self, z: Tensor, t: Tensor | None = None) -> Tensor:
        """The architecture contract's denoiser: (B, L) ids → (B, L, V) logits over the real tokens."""
        return self.logits(self.features(z, t))


class OrderHead(nn.Module):
    """g_φ or g_ψ: one transformer layer of the backbone's width plus a scalar head (spec §3).

    Positions: the layer has rotary embeddings only, so with bidirectional attention it sees content and
    relative offsets, never absolute positions: permuting the input rows permutes the scores, and on the
    all-masked state (every row equal) all scores tie. ``ModelConfig.head_positions`` adds a learned absolute
    position embedding to the input so that a position-dependent order (e.g. latents first) is representable.

    It reads *detached* backbone features; the caller detaches (see ``OeMDM.w_phi`` / ``OeMDM.w_psi``). The
    scalar head starts at zero, so NormSig = 0 and w ≡ c1 at initialisation: the constant-w control."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.block = DiTBlock(d, cfg.n_head, cfg.cond_dim, cfg.mlp_ratio)
        self.cond = nn.Parameter(torch.randn(cfg.cond_dim) * 0.02)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        # adaLN-Zero would make this block the identity *and* freeze its gates' gradients behind a zero head;
        # a small non-zero init lets the layer contribute from the first step.
        nn.init.normal_(self.block.ada.weight, std=0.02)
        # head_positions: a learned absolute position embedding added to the head's input, small (std 0.02).
        # Not zero: zero embeddings with the zero scalar head are a saddle (on the all-masked state neither
        # gets a gradient). The scalar head is still zero, so w ≡ c1 at initialisation either way.
        self.pos: nn.Parameter | None = None
        if cfg.head_positions:
            self.pos = nn.Parameter(torch.randn(cfg.seq_len, d) * 0.02)

    def forward(self, f: Tensor, valid: Tensor | None = None) -> Tensor:
        b, n, _ = f.shape
        if self.pos is not None:
            if n > self.pos.shape[0]:
                raise ValueError(f"OrderHead: head_positions covers {self.pos.shape[0]} positions, got {n}")
            f = f + self.pos[:n].to(f.dtype)
        rope = rotary_tables(torch.arange(n, device=f.device), f.shape[-1] // self.block.attn.n_head)
        mask = padding_mask(valid, False) if valid is not None else None
        h = self.block(f, self.cond.expand(b, -1), rope, mask, False)
        return self.head(self.norm(h)).squeeze(-1)  # (B, N) scores


def padding_mask(valid: Tensor, causal: bool) -> Tensor:
    """Boolean attention mask (B, 1, N, N), True = may attend: keys at padding are hidden (and, if causal,
    keys after the query). Every query keeps at least itself or an earlier real key when the row has one."""
    n = valid.shape[-1]
    mask = valid[:, None, None, :].expand(-1, 1, n, n)
    if causal:
        mask = mask & torch.ones(n, n, dtype=torch.bool, device=valid.device).tril()
    # a query whose every key is hidden (a fully padded row) would give NaN: let it see itself
    return mask | torch.eye(n, dtype=torch.bool, device=valid.device)


def centred(v: Tensor, valid: Tensor | None = None) -> Tensor:
    """v − mean over real (non-padding) positions; padding positions get 0."""
    v = v.float()
    if valid is None:
        return v - v.mean(dim=-1, keepdim=True)
    validf = valid.to(v.dtype)
    mean = (v * validf).sum(-1, keepdim=True) / validf.sum(-1, keepdim=True).clamp_min(1.0)
    return (v - mean) * validf


def log_space_exponent(v: Tensor, c1: float, c2: float, log_range: float, valid: Tensor | None = None) -> Tensor:
    """The sharper order parametrisation (spec §3 "How sharp can the learned order be?"):
    log w = log c1 + R·tanh(c2·(v − mean v)/R), so w ∈ (c1 e^{−R}, c1 e^{R}) and weights can fall
    geometrically along an order. Padding positions get w = c1."""
    return c1 * torch.exp(log_range * torch.tanh(c2 * centred(v, valid) / log_range))


def norm_sig(v: Tensor, valid: Tensor | None = None) -> Tensor:
    """NormSig(v)_i = σ(v_i) − mean_j σ(v_j), the mean over real (non-padding) positions only."""
    return centred(torch.sigmoid(v.float()), valid)


# ----------------------------------------------------------------------------------------------------------
# the model: backbone + what its process attaches


class OeMDM(nn.Module):
    """The backbone plus whatever the model type's process attaches to it (``model.process``).

    The process (``fast/processes/``) owns everything that differs between types: LoMDM registers ``phi``
    (forward scheduler, reads f(x)) and ``psi`` (reverse scheduler, reads f(z_t)); GenMD4 ``log_w_vocab``
    (V,), the log of its per-vocabulary exponent (init 0: MDLM); BD3LM the block-causal mask over [z_t ; x].
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        from .processes import get_process

        self.cfg = cfg
        self.process = get_process(cfg)
        self.backbone = DiT(cfg)
        self.process.attach(self)

    def scheduler_parameters(self) -> list[nn.Parameter]:
        """Parameters that may get their own learning rate (φ, ψ heads; GenMD4's w)."""
        return self.process.scheduler_parameters(self)

    # --- LoMDM scheduler exponents (spec §3); the heads exist only on LoMDM models --------------------------
    def exponent(self, head: OrderHead, features: Tensor, valid: Tensor | None = None) -> Tensor:
        """w = c1 + c2·NormSig(g(sg(f))) (or the log-space form) — the detach keeps θ out of the scheduler
        losses."""
        v = head(features.detach(), valid)
        if self.cfg.order_param == "logspace":
            return log_space_exponent(v, self.cfg.c1, self.cfg.c2, self.cfg.log_range, valid)
        return self.cfg.c1 + self.cfg.c2 * norm_sig(v, valid)

    def w_phi(self, fx: Tensor, valid: Tensor | None = None) -> Tensor:
        return self.exponent(self.phi, fx, valid)

    def w_psi(self, fz: Tensor, valid: Tensor | None = None) -> Tensor:
        return self.exponent(self.psi, fz, valid)


def block_causal_mask(seq_len: int, block_size: int) -> Tensor:
    """BD3LM's attention mask over [z_t ; x] (see ``processes/bd3lm.py``)."""
    from .processes.bd3lm import block_causal_mask as mask

    return mask(seq_len, block_size)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
