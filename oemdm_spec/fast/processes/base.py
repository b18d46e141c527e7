"""The process interface: everything that differs between model types lives in one object per type.

The spec's "one loss, many schedules" (§1, Eq. 2): every model type reduces to the same per-masked-row
quantity, the fused kernel's

    −A·log x_θ[x] + A(log A − log Â) − (A − Â),

with the forward rate A and reverse rate Â set by the type's schedule. A ``Process`` says how to

- build the type's extra modules on the model (``attach``), name its scheduler parameters and FSDP units;
- mask a batch from the step noise and score it (``loss``; t-space rates A = −∂_tα/(1−α));
- estimate the bound of one sequence at a time drawn from its evaluation density (``sequence_bound``);
- run the reverse process (``reverse`` for the generic samplers, or its own ``sample``).

The trainer, evaluator, samplers and distributed wrappers call these methods and never ask which type a model
is. Adding a model type is one subclass registered with ``@register``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor, nn

from ..kernels import linear_oemdm_row_loss, oemdm_row_loss
from ..kernels.masking import _log1m_exp
from ..noise import StepNoise

if TYPE_CHECKING:
    from ..model import ModelConfig, OeMDM

SAMPLERS = ("first-hitting", "grid", "topk")
# adaptive inference (P2 / Kim et al. 2025): reveal the masked position the denoiser is surest of, by max
# probability, top-1 − top-2 margin or lowest entropy; any model with a bidirectional denoiser takes them
ADAPTIVE_SAMPLERS = ("confidence", "margin", "entropy")


@dataclass
class LossOutput:
    loss: Tensor  # what backward() is called on (the surrogate for the RLOO types)
    nelbo: Tensor  # detached mean per-token NELBO estimate in nats (includes L_velocity, excludes surrogate)
    per_seq: Tensor  # (K, B) per-sequence NELBO estimates (nats / token)
    stats: dict[str, Tensor] = field(default_factory=dict)
    masked: Tensor | None = None  # (K, B, L) the masks used (None for AR)


class Process:
    """One model type: its forward masking, rates, evaluation density, reverse process and extra modules.

    Subclasses set the class attributes and override what differs; the defaults describe a time-agnostic
    type with one mask per sequence, no scheduler heads and the generic samplers."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    rloo: ClassVar[bool] = False  # K masks per sequence and the RLOO surrogate (learned forward schedules)
    order_stats: ClassVar[bool] = False  # log w statistics (order_stats.csv)
    exact_bound: ClassVar[bool] = False  # the evaluation is an exact NLL (no Monte-Carlo)
    time_conditioning_ok: ClassVar[bool] = True  # a time-conditioned denoiser is meaningful
    samplers: ClassVar[tuple[str, ...]] = SAMPLERS + ADAPTIVE_SAMPLERS
    estimator: ClassVar[str] = (
        "log-time importance sampling: u=-log t ~ mixture of Exp(w_i/2) (proper density on [0,inf), no clamp), "
        "antithetic pairs, MC standard error over sequences")

    def __init__(self, cfg: ModelConfig) -> None:
        self.cfg = cfg

    # --- configuration and modules ------------------------------------------------------------------------
    @classmethod
    def validate(cls, cfg: ModelConfig) -> None:
        """Raise ValueError naming the field for settings this type cannot use."""
        if cfg.time_conditioning and not cls.time_conditioning_ok:
            raise ValueError(f"time_conditioning is not supported for model={cls.name}")

    def attach(self, model: OeMDM) -> None:
        """Register the type's own modules/buffers on ``model`` (called once, after the backbone)."""

    def scheduler_parameters(self, model: OeMDM) -> list[nn.Parameter]:
        """Parameters that may get their own learning rate (the schedule's, not the denoiser's)."""
        return []

    def fsdp_units(self, model: OeMDM) -> list[nn.Module]:
        """Submodules each sharded as one FSDP unit (the root unit holds the rest)."""
        return list(model.backbone.blocks)

    # --- training -----------------------------------------------------------------------------------------
    def n_masks(self, K: int) -> int:
        """Masks drawn per sequence: K for the RLOO types, else 1."""
        return K if self.rloo else 1

    def n_times(self) -> int:
        """Times drawn per sequence by ``draw_step_noise``."""
        return 1

    def time_input(self, model: OeMDM, t: Tensor) -> Tensor | None:
        """What the backbone reads as time: t for a time-conditioned denoiser, else nothing."""
        return t if self.cfg.time_conditioning else None

    def loss(self, model: OeMDM, x: Tensor, noise: StepNoise, K: int, want_stats: bool,
             valid: Tensor | None = None) -> LossOutput:
        """The training loss of clean x (B, L). ``valid`` (B, L), True at real tokens: padding positions are
        never masked and never scored, and the per-sequence NELBO is per real token."""
        raise NotImplementedError

    def check_x(self, x: Tensor) -> None:
        """Shape constraints on clean sequences beyond (B, L)."""

    # --- evaluation ---------------------------------------------------------------------------------------
    def n_eval_uniforms(self, L: int) -> int:
        """Uniforms per sequence that ``sequence_bound`` turns into times."""
        return 1

    def sequence_bound(self, model: OeMDM, x: Tensor, v: Tensor, mask_u: Tensor,
                       valid: Tensor | None = None) -> Tensor:
        """One-sample estimate of the bound per sequence (B,), nats per (real) token (float64)."""
        raise NotImplementedError

    # --- sampling -----------------------------------------------------------------------------------------
    def reverse(self, model: OeMDM, z: Tensor, t: Tensor | None) -> tuple[Tensor, Tensor]:
        """One denoiser pass: token probabilities x_θ (B, L, V) and reverse exponents ŵ (B, L), float64."""
        raise NotImplementedError

    def sample(self, model: OeMDM, z: Tensor, order: Tensor, g: torch.Generator, sampler: str,
               steps: int) -> tuple[Tensor, Tensor]:
        from ..sample import sample_adaptive, sample_first_hitting, sample_grid

        if sampler in ADAPTIVE_SAMPLERS:
            return sample_adaptive(self, model, z, order, g, sampler)
        if sampler == "grid":
            return sample_grid(self, model, z, order, g, steps)
        return sample_first_hitting(self, model, z, order, g, topk=sampler == "topk")


# ----------------------------------------------------------------------------------------------------------
# the registry

PROCESSES: dict[str, type[Process]] = {}


def register(cls: type[Process]) -> type[Process]:
    if cls.name in PROCESSES:
        raise ValueError(f"register: a process named {cls.name!r} exists already")
    PROCESSES[cls.name] = cls
    return cls


def process_class(name: str) -> type[Process]:
    try:
        return PROCESSES[name]
    except KeyError:
        raise ValueError(f"model type must be one of {', '.join(PROCESSES)}, got {name!r}") from None


# ----------------------------------------------------------------------------------------------------------
# shared pieces of the objective


def kernel_backend(t: Tensor) -> str:
    """Triton on CUDA; the PyTorch fallback on CPU (the Triton interpreter is a test tool, far too slow)."""
    return "auto" if t.is_cuda else "torch"


def log_one_minus_t_pow(w_log_t: Tensor) -> Tensor:
    """log(1 − t^w) from y = w·log t, in log space (spec §4), with Mächler's two branches (the same as the
    masking kernel's): log(−expm1(y)) for y > −log 2, log1p(−e^y) below, where log(−expm1(y)) would take the
    log of a number within t^w of 1 and lose the relative precision of the small result. y is clamped away
    from 0 so that t → 1 stays finite."""
    return _log1m_exp(w_log_t.clamp(max=-1e-7))


def forward_log_q(masked: Tensor, w: Tensor, log_t: Tensor, valid: Tensor | None = None) -> Tensor:
    """log q(z|x) = Σ_i masked_i·w_i log t + (1 − masked_i)·log(1 − t^{w_i})   (spec §3). → (K, B).
    With ``valid``, the sum runs over real positions only (padding is not part of the forward process)."""
    wlt = w * log_t
    terms = torch.where(masked, wlt.unsqueeze(0), log_one_minus_t_pow(wlt).unsqueeze(0))
    if valid is not None:
        terms = torch.where(valid, terms, torch.zeros_like(terms))
    return terms.sum(-1)


def rloo_surrogate(per_seq: Tensor, log_q: Tensor) -> Tensor:
    """mean_k L_k + (1/K)·Σ_k sg(L_k − mean_{j≠k} L_j)·log q(z_k|x)   (spec §3; K=2 is GenMD4's form)."""
    K = per_seq.shape[0]
    mean = per_seq.mean(0)
    if K == 1:
        return mean  # no score-function term: φ then only learns through A (biased)
    baseline = (per_seq.sum(0, keepdim=True) - per_seq) / (K - 1)
    return mean + ((per_seq - baseline).detach() * log_q).sum(0) / K


def fused_rows(model: OeMDM, h: Tensor, tgt: Tensor, a: Tensor, ah: Tensor) -> Tensor:
    """The row loss of hidden rows ``h`` through the output layer (fused linear + loss, no (N, V) logits)."""
    out = model.backbone.out
    return linear_oemdm_row_loss(h, out.weight, out.bias, tgt, a, ah, backend=kernel_backend(h))


def logits_rows(logits: Tensor, tgt: Tensor, a: Tensor, ah: Tensor) -> Tensor:
    """The row loss from explicit logits (types whose x_θ is not the plain softmax of the output layer)."""
    return oemdm_row_loss(logits, tgt, a, ah, backend=kernel_backend(logits))


def masked_rows(feats: Tensor, masked: Tensor) -> tuple[Tensor, Tensor]:
    """(flat indices of the masked rows, their features): only these go through the output layer."""
    R, L, d = feats.shape
    rows = masked.reshape(-1).nonzero().squeeze(1)
    return rows, feats.reshape(R * L, d)[rows]


def per_sequence(row: Tensor, rows: Tensor, R: int, L: int, dtype: torch.dtype | None = None) -> Tensor:
    """Sum row losses into their sequences: (R,)."""
    dtype = dtype or row.dtype
    return torch.zeros(R, dtype=dtype, device=row.device).index_add_(0, rows // L, row.to(dtype))


def per_token(per_seq: Tensor, valid: Tensor | None, L: int) -> Tensor:
    """Per-sequence sums → per token: / L, or / the number of real tokens when there is padding."""
    if valid is None:
        return per_seq / L
    return per_seq / valid.sum(-1).clamp_min(1).to(per_seq.dtype)


def only_valid(masked: Tensor, valid: Tensor | None) -> Tensor:
    """Padding is never masked."""
    return masked if valid is None else masked & valid


def pearson(a: Tensor, b: Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    if a.numel() < 2:
        return math.nan
    a, b = a - a.mean(), b - b.mean()
    den = (a.square().sum() * b.square().sum()).sqrt()
    return float((a * b).sum() / den) if den > 0 else math.nan
