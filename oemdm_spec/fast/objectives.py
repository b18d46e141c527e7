"""The training objective: one loss (spec §1 Eq. 2), many schedules.

``oemdm_loss`` checks the clean batch and hands it to the model's process (``processes/``), which masks it
from the step noise and scores the masked rows with the fused row loss
    −A·log x_θ[x] + A(log A − log Â) − (A − Â)
under its own rates (A, Â). The table of what each type uses is in ``processes/polynomial.py`` (MDLM,
GenMD4, LoMDM), ``processes/bd3lm.py``, ``processes/ar.py`` and ``processes/window.py`` (oemdm-arm/-block).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .model import OeMDM
from .noise import StepNoise, draw_step_noise, step_generator
from .processes import LossOutput, pearson

__all__ = ["LossModule", "LossOutput", "StepNoise", "check_tokens", "compile_step", "draw_step_noise", "n_times_for",
           "oemdm_loss", "pearson", "samples_for", "step_generator"]


def oemdm_loss(model: OeMDM, x: Tensor, noise: StepNoise, *, K: int = 2, want_stats: bool = False,
               valid: Tensor | None = None) -> LossOutput:
    """The training loss of ``model`` on clean x (B, L) under ``noise``. Per token: sums over positions / L, or
    over the real positions when ``valid`` (B, L) marks padding (False): padding is never masked nor scored."""
    x = check_tokens(model, x)
    if valid is not None and (valid.shape != x.shape or valid.dtype != torch.bool):
        raise ValueError(f"oemdm_loss: valid must be a bool tensor of x's shape {tuple(x.shape)}, got "
                         f"{tuple(valid.shape)} {valid.dtype}")
    return model.process.loss(model, x, noise, model.process.n_masks(K), want_stats, valid)


def check_tokens(model: OeMDM, x: Tensor) -> Tensor:
    """Reject clean sequences the loss cannot score: x must be (B, L) integer ids in [0, V). The mask id
    V in x would otherwise be trained on as a clean token, and an id beyond it fails deep in the embedding.
    Returns x (under ``torch.compile`` a checked copy: the check is an op of the graph, see ``kernels/ops.py``).
    (The min/max read synchronises a GPU, as the masked-row gather does anyway.)"""
    cfg = model.cfg
    if x.dim() != 2:
        raise ValueError(f"oemdm_loss: x must have shape (B, L), got {tuple(x.shape)}")
    model.process.check_x(x)
    if x.dtype.is_floating_point or x.dtype == torch.bool or x.dtype.is_complex:
        raise ValueError(f"oemdm_loss: x must hold integer token ids, got dtype {x.dtype}")
    if torch.compiler.is_compiling():
        from .kernels.ops import checked_tokens

        return checked_tokens(x, cfg.vocab_size, cfg.mask_id)
    if x.numel():
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi >= cfg.vocab_size:
            bad = lo if lo < 0 else hi
            raise ValueError(f"oemdm_loss: x holds token id {bad}, outside [0, {cfg.vocab_size}) (the mask id is "
                             f"{cfg.mask_id} and is never a clean token)")
    return x


class LossModule(nn.Module):
    """Wraps model + loss so DistributedDataParallel (and FSDP's root unit) sees one forward."""

    def __init__(self, model: OeMDM, K: int) -> None:
        super().__init__()
        self.model = model
        self.K = K

    def forward(self, x: Tensor, t: Tensor, u: Tensor, want_stats: bool = False, seed: int = 0,
                valid: Tensor | None = None) -> LossOutput:
        if torch.compiler.is_compiling():
            seed = 0  # unused in a compiled step (no masking kernel), and reading it would recompile every step
        return oemdm_loss(self.model, x, StepNoise(t, u, seed), K=self.K, want_stats=want_stats, valid=valid)


def compile_step(loss_mod: nn.Module) -> nn.Module:
    """Compile the whole loss of ``loss_mod`` (a :class:`LossModule`) in place: the forward in one graph, and
    AOTAutograd's backward with it. ``fullgraph=True``: a graph break is an error, not a silent fallback.

    What makes one graph possible: the fused losses and the token check are custom ops (``kernels/ops.py``), and
    the masked-row gather (``nonzero``) is captured with a data-dependent row count
    (``capture_dynamic_output_shape_ops``), so a new number of masked rows at each step is not a recompile.
    The masking then uses the step noise's uniforms on every device (the CUDA masking kernel stays eager)."""
    torch._dynamo.config.capture_dynamic_output_shape_ops = True
    loss_mod.compile(fullgraph=True)
    return loss_mod


def n_times_for(model: OeMDM) -> int:
    """How many times per sequence the step noise needs (one per block for BD3LM)."""
    return model.process.n_times()


def samples_for(model: OeMDM, K: int) -> int:
    """Masks per sequence: K for the RLOO types, 1 otherwise."""
    return model.process.n_masks(K)
