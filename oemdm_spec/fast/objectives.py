"""Training objectives: the OeMDM loss (spec §1 Eq. 2) under each model type's schedule.

Every model type reduces to the same per-masked-row quantity, the fused kernel's
    −A·log x_θ[x] + A(log A − log Â) − (A − Â),
with (A, Â) set by the schedule:

| type   | P(z^i masked | x, t)  | A (forward)   | Â (reverse)                  | samples |
|--------|----------------------|---------------|------------------------------|---------|
| mdlm   | t                    | 1/t           | 1/t                          | K=1     |
| bd3lm  | t_b (t per block)    | 1/t_b         | 1/t_b                        | K=1     |
| ar     | –                    | 1             | 1  (plain causal NLL)        | –       |
| genmd4 | t^{w[x^i]}           | w[x^i]/t      | Σ_v w_v μ_θ[v] / t           | K=2 RLOO|
| lomdm  | t^{w_φ^i(x)}         | w_φ^i(x)/t    | w_ψ^i(z_t)/t                 | K=2 RLOO|

GenMD4 (spec §2, MD4's GenMD4): the reverse rate into token v is (w_v/t)·μ_θ[v], so the total rate is
Â = Σ_v w_v μ_θ[v] / t and the token law is x_θ[v] ∝ w_v μ_θ[v]; plugged into the kernel (logits + log w)
this gives exactly the generalized-KL integrand −(w_x/t) log μ_θ[x] − w_x/t + Σ_v w_v μ_θ[v]/t.

All randomness of a step comes from ``StepNoise``, drawn for the *global* batch from a generator seeded by
(seed, step) and sliced by rank: the same global batch gives the same masks on 1 or N processes, and a resumed
run draws the same noise as an uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .kernels import linear_oemdm_row_loss, oemdm_row_loss
from .kernels.masking import _log1m_exp
from .model import OeMDM

GENMD4_LOG_W_RANGE = (-4.0, 2.0)  # w ∈ [0.018, 7.4]: keeps the GenMD4 schedule away from degenerate


# ----------------------------------------------------------------------------------------------------------
# per-step noise


def step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    """A CPU generator that is a pure function of (seed, step, stream)."""
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + step * 7919 + stream * 104_729) % (2**63 - 1))
    return g


@dataclass
class StepNoise:
    t: Tensor  # (B,) per sequence, or (B, n_blocks) for BD3LM
    u: Tensor  # (K, B, L) uniforms for the masks


def draw_step_noise(seed: int, step: int, *, global_batch: int, seq_len: int, K: int, t_min: float,
                    n_times: int = 1, rank: int = 0, world_size: int = 1,
                    device: torch.device | str = "cpu") -> StepNoise:
    """t stratified over the whole global batch (t ∈ [t_min, 1)), and mask uniforms; this rank's slice.

    Stratification: with N = global_batch·n_times slots, t_j = t_min + (1 − t_min)·((j + o) / N) with one
    offset o ~ U[0,1) and a random assignment of slots to sequences, so each rank still gets a spread of t."""
    if global_batch % world_size:
        raise ValueError(f"draw_step_noise: global_batch {global_batch} not divisible by world_size {world_size}")
    g = step_generator(seed, step)
    n = global_batch * n_times
    offset = torch.rand((), generator=g, dtype=torch.float64)
    perm = torch.randperm(n, generator=g)
    s = (perm.double() + offset) / n
    t = (t_min + (1.0 - t_min) * s).float().view(global_batch, n_times)
    u = torch.rand((K, global_batch, seq_len), generator=g).clamp_min(1e-12)
    local = global_batch // world_size
    sl = slice(rank * local, (rank + 1) * local)
    t = t[sl] if n_times > 1 else t[sl, 0]
    return StepNoise(t=t.to(device), u=u[:, sl].to(device))


# ----------------------------------------------------------------------------------------------------------
# helpers


def kernel_backend(t: Tensor) -> str:
    """Triton on CUDA; the PyTorch fallback on CPU (the Triton interpreter is a test tool, far too slow)."""
    return "auto" if t.is_cuda else "torch"


def genmd4_log_w(model: OeMDM) -> Tensor:
    return model.log_w_vocab.clamp(*GENMD4_LOG_W_RANGE)


def log_one_minus_t_pow(w_log_t: Tensor) -> Tensor:
    """log(1 − t^w) from y = w·log t, in log space (spec §4), with Mächler's two branches (the same as the
    masking kernel's): log(−expm1(y)) for y > −log 2, log1p(−e^y) below, where log(−expm1(y)) would take the
    log of a number within t^w of 1 and lose the relative precision of the small result. y is clamped away
    from 0 so that t → 1 stays finite."""
    return _log1m_exp(w_log_t.clamp(max=-1e-7))


def forward_log_q(masked: Tensor, w: Tensor, log_t: Tensor) -> Tensor:
    """log q(z|x) = Σ_i masked_i·w_i log t + (1 − masked_i)·log(1 − t^{w_i})   (spec §3). → (K, B)."""
    wlt = w * log_t
    return torch.where(masked, wlt.unsqueeze(0), log_one_minus_t_pow(wlt).unsqueeze(0)).sum(-1)


def masked_rows_loss(model: OeMDM, feats: Tensor, target: Tensor, masked: Tensor, A: Tensor, A_hat: Tensor,
                     *, genmd4: bool = False) -> tuple[Tensor, Tensor]:
    """Sum of the OeMDM row loss over masked rows, per sequence.

    ``feats`` (R, L, d), ``target``/``masked``/``A``/``A_hat`` (R, L). Only masked rows are gathered and sent
    through the output layer (fused linear + loss kernel), so no (R, L, V) logits exist.
    Returns (per-sequence sums (R,), row indices)."""
    R, L, d = feats.shape
    rows = masked.reshape(-1).nonzero().squeeze(1)
    h = feats.reshape(R * L, d)[rows]
    tgt, a, ah = target.reshape(-1)[rows], A.reshape(-1)[rows], A_hat.reshape(-1)[rows]
    out = model.backbone.out
    if genmd4:
        # x_θ ∝ w_v μ_θ[v]: logits + log w; Â = Σ_v w_v μ_θ[v] / t needs the masked-row logits once.
        log_w = genmd4_log_w(model)
        logits = out(h).float()
        log_rate = torch.logsumexp(torch.log_softmax(logits, -1) + log_w, -1)  # log Σ_v w_v μ_v
        row = oemdm_row_loss(logits + log_w, tgt, a, torch.exp(log_rate) * ah, backend=kernel_backend(h))
    else:
        row = linear_oemdm_row_loss(h, out.weight, out.bias, tgt, a, ah, backend=kernel_backend(h))
    per_seq = torch.zeros(R, dtype=row.dtype, device=row.device).index_add_(0, rows // L, row)
    return per_seq, rows


def rloo_surrogate(per_seq: Tensor, log_q: Tensor) -> Tensor:
    """mean_k L_k + (1/K)·Σ_k sg(L_k − mean_{j≠k} L_j)·log q(z_k|x)   (spec §3; K=2 is GenMD4's form)."""
    K = per_seq.shape[0]
    mean = per_seq.mean(0)
    if K == 1:
        return mean  # no score-function term: φ then only learns through A (biased)
    baseline = (per_seq.sum(0, keepdim=True) - per_seq) / (K - 1)
    return mean + ((per_seq - baseline).detach() * log_q).sum(0) / K


# ----------------------------------------------------------------------------------------------------------
# the loss


@dataclass
class LossOutput:
    loss: Tensor  # what backward() is called on (the surrogate for LoMDM/GenMD4)
    nelbo: Tensor  # detached mean per-token NELBO estimate in nats (includes L_velocity, excludes surrogate)
    per_seq: Tensor  # (K, B) per-sequence NELBO estimates (nats / token)
    stats: dict[str, Tensor] = field(default_factory=dict)
    masked: Tensor | None = None  # (K, B, L) the masks used (None for AR)


def oemdm_loss(model: OeMDM, x: Tensor, noise: StepNoise, *, K: int = 2, want_stats: bool = False) -> LossOutput:
    """The training loss of ``model`` on clean x (B, L) under ``noise``. Per-token: sums over positions / L."""
    check_tokens(model, x)
    typ = model.cfg.model_type
    B, L = x.shape
    m = model.cfg.mask_id
    t = noise.t
    stats: dict[str, Tensor] = {}

    if typ == "ar":
        feats = model.ar_features(x)
        ones = torch.ones(B, L, device=x.device)
        per_seq, _ = masked_rows_loss(model, feats, x, torch.ones_like(x, dtype=torch.bool), ones, ones)
        per_seq = (per_seq / L)[None]
        return LossOutput(per_seq.mean(), per_seq.detach().mean(), per_seq.detach())

    if typ in ("mdlm", "bd3lm"):
        if typ == "bd3lm":  # one t per block, MDLM schedule inside each block
            t_blk = t if t.dim() == 2 else t[:, None]  # (B, n_blocks); n_times = 1 squeezes a single block
            t_pos = t_blk.repeat_interleave(model.cfg.block_size, dim=1)  # (B, L)
        else:
            t_pos = t[:, None].expand(B, L)
        masked = noise.u[0] < t_pos
        z = torch.where(masked, m, x)
        feats = model.bd3lm_features(z, x) if typ == "bd3lm" else model.backbone.features(z, _t(model, t))
        A = 1.0 / t_pos
        per_seq, _ = masked_rows_loss(model, feats, x, masked, A, A)
        per_seq = (per_seq / L)[None]
        return LossOutput(per_seq.mean(), per_seq.detach().mean(), per_seq.detach(), masked=masked[None])

    # learned forward schedules: genmd4 (w from the vocabulary) and lomdm (w_φ from x)
    log_t = t.log()[:, None]  # (B, 1)
    if typ == "genmd4":
        w_fwd = genmd4_log_w(model).exp()[x]  # (B, L)
    else:
        with torch.no_grad():  # the shared no-grad x pass: θ gets nothing through the schedulers
            fx = model.backbone.features(x, _t(model, t))
        w_fwd = model.w_phi(fx)
    masked = torch.log(noise.u[:K]) < (w_fwd.detach() * log_t)[None]  # P(masked) = t^{w}, w detached
    z = torch.where(masked, m, x[None])  # (K, B, L)
    tk = t.repeat(K)
    feats = model.backbone.features(z.reshape(K * B, L), _t(model, tk))  # one batched pass for all K
    A = (w_fwd / t[:, None])[None].expand(K, B, L)
    if typ == "genmd4":
        A_hat = (1.0 / t)[None, :, None].expand(K, B, L)  # scaled by Σ_v w_v μ_v inside masked_rows_loss
    else:
        w_rev = model.w_psi(feats).view(K, B, L)  # ψ reads sg(f(z_t)) (detached inside w_psi)
        A_hat = w_rev / t[None, :, None]
    per_seq, rows = masked_rows_loss(model, feats.view(K * B, L, -1), x[None].expand(K, B, L), masked, A, A_hat,
                                     genmd4=typ == "genmd4")
    per_seq = per_seq.view(K, B) / L
    log_q = forward_log_q(masked, w_fwd, log_t)
    loss = rloo_surrogate(per_seq, log_q).mean()
    if want_stats:
        stats["w_fwd"] = w_fwd.detach()
        if typ == "lomdm":
            stats["w_rev"] = w_rev.detach()
            with torch.no_grad():
                # the denoiser's confidence max_v x_θ[v] at the masked positions of the first sample (Fig. 4)
                h0 = feats.view(K, B, L, -1)[0][masked[0]]
                conf = torch.softmax(model.backbone.logits(h0).float(), -1).max(-1).values
            stats["conf"] = conf
            stats["w_fwd_masked"] = w_fwd.detach()[masked[0]]
            stats["w_rev_masked"] = w_rev.detach()[0][masked[0]]
    return LossOutput(loss, per_seq.detach().mean(), per_seq.detach(), stats, masked=masked)


def check_tokens(model: OeMDM, x: Tensor) -> None:
    """Reject clean sequences the loss cannot score: x must be (B, L) integer ids in [0, V). The mask id
    V in x would otherwise be trained on as a clean token, and an id beyond it fails deep in the embedding.
    (The min/max read synchronises a GPU, as the masked-row gather below does anyway.)"""
    cfg = model.cfg
    if x.dim() != 2 or (cfg.model_type == "bd3lm" and x.shape[1] != cfg.seq_len):
        want = f"(B, {cfg.seq_len})" if cfg.model_type == "bd3lm" else "(B, L)"
        raise ValueError(f"oemdm_loss: x must have shape {want}, got {tuple(x.shape)}")
    if x.dtype.is_floating_point or x.dtype == torch.bool or x.dtype.is_complex:
        raise ValueError(f"oemdm_loss: x must hold integer token ids, got dtype {x.dtype}")
    if x.numel():
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi >= cfg.vocab_size:
            bad = lo if lo < 0 else hi
            raise ValueError(f"oemdm_loss: x holds token id {bad}, outside [0, {cfg.vocab_size}) (the mask id is "
                             f"{cfg.mask_id} and is never a clean token)")


def _t(model: OeMDM, t: Tensor) -> Tensor | None:
    """Time input for the backbone: None for the (default) time-agnostic denoiser."""
    return t if model.cfg.time_conditioning else None


class LossModule(nn.Module):
    """Wraps model + loss so DistributedDataParallel sees one forward (its gradient hooks need it)."""

    def __init__(self, model: OeMDM, K: int) -> None:
        super().__init__()
        self.model = model
        self.K = K

    def forward(self, x: Tensor, t: Tensor, u: Tensor, want_stats: bool = False) -> LossOutput:
        return oemdm_loss(self.model, x, StepNoise(t, u), K=self.K, want_stats=want_stats)


def n_times_for(model: OeMDM) -> int:
    """How many times per sequence the noise needs: one per block for BD3LM."""
    cfg = model.cfg
    return cfg.seq_len // cfg.block_size if cfg.model_type == "bd3lm" else 1


def samples_for(model: OeMDM, K: int) -> int:
    """Masks per sequence: K for the RLOO types, 1 otherwise."""
    return K if model.cfg.model_type in ("lomdm", "genmd4") else 1


def pearson(a: Tensor, b: Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    if a.numel() < 2:
        return math.nan
    a, b = a - a.mean(), b - b.mean()
    den = (a.square().sum() * b.square().sum()).sqrt()
    return float((a * b).sum() / den) if den > 0 else math.nan
