"""Samplers (spec §3 "Sampler", "Order semantics"): tokens are always drawn in float64.

- ``first-hitting`` (default): reveals one position per step, position i with probability
  ŵ_i / Σ_{masked j} ŵ_j, its token from x_θ^i. With a time-agnostic denoiser this is *exact* for the
  continuous-time reverse process (in log-time every masked position has a constant hazard ŵ_i).
  ŵ = w_ψ(z) for LoMDM, Σ_v w_v μ_θ[v] for GenMD4, 1 for MDLM (uniform order).
- ``grid``: T steps on the power grid t_k = (k/T)^p, p = 1/min ŵ; each masked i unmasks from t to s with
  probability 1 − (s/t)^{ŵ_i}; everything left is revealed at t_0 = 0. The pass is reused when nothing changed.
- ``confidence`` / ``margin`` / ``entropy``: adaptive inference, the masked position x_θ is surest of first.
- ``topk``: deterministic order: reveal the masked position with the largest ŵ (ties, within a relative
  1e-5, go to the lowest index).
BD3LM samples block by block (first-hitting, uniform inside the block); AR samples left to right.
Fixed positions (infilling / prefixes) are given as a partially masked start state.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .model import OeMDM
from .processes import SAMPLERS, Process
from .processes.base import ADAPTIVE_SAMPLERS

__all__ = ["SAMPLERS", "draw_tokens", "render_with_order", "sample", "sample_entropy", "sample_first_hitting",
           "sample_grid"]


def _time_input(model: OeMDM, z: Tensor, t: Tensor | None) -> Tensor | None:
    """The time a time-conditioned denoiser reads ((B,) float32); None for a time-agnostic one."""
    if not model.cfg.time_conditioning:
        return None
    if t is None:
        raise ValueError("sample: a time-conditioned model needs the current time t")
    return t.to(device=z.device, dtype=torch.float32).expand(z.shape[0])


def draw_tokens(probs: Tensor, g: torch.Generator) -> Tensor:
    flat = probs.reshape(-1, probs.shape[-1]).cpu()
    return torch.multinomial(flat, 1, generator=g).view(probs.shape[:-1]).to(probs.device)


@torch.no_grad()
def sample(model: OeMDM, num: int, *, length: int | None = None, sampler: str = "first-hitting",
           steps: int = 0, seed: int = 0, init: Tensor | None = None,
           device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Draw ``num`` sequences. Returns (tokens (num, L), order (num, L)): the step at which each position was
    revealed (−1 for fixed positions given in ``init``, where the mask id marks positions to generate)."""
    if sampler not in SAMPLERS + ADAPTIVE_SAMPLERS:
        raise ValueError(f"sample: sampler must be one of {SAMPLERS + ADAPTIVE_SAMPLERS}, got {sampler!r}")
    if not isinstance(num, int) or num < 0:
        raise ValueError(f"sample: num must be an int >= 0, got num={num!r}")
    if length is not None and (not isinstance(length, int) or length < 0):
        raise ValueError(f"sample: length must be an int >= 0 (0: the model's seq_len), got length={length!r}")
    if init is not None:
        # tokens in [0, V) stay fixed, the mask id V marks positions to generate; anything else is an error
        # here rather than an IndexError deep in the embedding
        if init.dim() != 2 or init.shape[0] != num or init.dtype.is_floating_point:
            raise ValueError(f"sample: init must be an integer tensor (num={num}, L), got {tuple(init.shape)} "
                             f"{init.dtype}")
        if init.numel() and (int(init.min()) < 0 or int(init.max()) > model.cfg.mask_id):
            raise ValueError(f"sample: init ids must lie in [0, {model.cfg.mask_id}] (mask id = "
                             f"{model.cfg.mask_id}), got values in [{int(init.min())}, {int(init.max())}]")
    was_training = model.training
    model.eval()
    L = length or model.cfg.seq_len
    m = model.cfg.mask_id
    g = torch.Generator().manual_seed(seed)
    z = torch.full((num, L), m, dtype=torch.long, device=device) if init is None else init.clone().to(device)
    order = torch.where(z == m, -2, -1)  # −2: not yet revealed
    proc = model.process
    if sampler not in proc.samplers:
        raise ValueError(f"sample: sampler {sampler!r} is not defined for model {model.cfg.model_type}; "
                         f"use one of {', '.join(proc.samplers)}")
    z, order = proc.sample(model, z, order, g, sampler, steps or L)
    model.train(was_training)
    return z, order


TIE_RTOL = 1e-5  # rates within this relative distance of the largest tie (float32 noise is ~1e-7)


def top_rate_position(weights: Tensor, masked: Tensor) -> Tensor:
    """The masked position with the largest reverse rate, per row; ties go to the lowest index.

    Ties are explicit: rates computed from identical inputs can differ in their last float32 bits between
    positions (e.g. in the all-masked state, where every position has the same input), so every rate within
    TIE_RTOL of the row's largest counts as tied, and the first of them is chosen."""
    cand = torch.where(masked, weights, torch.full_like(weights, -math.inf))
    best = cand.max(-1, keepdim=True).values
    tied = cand >= best - TIE_RTOL * best.abs()
    return tied.to(torch.uint8).argmax(-1)  # the first True


def sample_first_hitting(proc: Process, model: OeMDM, z: Tensor, order: Tensor, g: torch.Generator,
                         topk: bool) -> tuple[Tensor, Tensor]:
    """One reveal per step. A time-conditioned denoiser also needs the time: in log-time u = −log t every masked
    position i has hazard ŵ_i, so the next reveal comes after Δu ~ Exp(Σ_masked ŵ). Each sequence keeps its
    own t (starting at 1); the pass is made at the current t, so rates and tokens are held at their values at
    the start of each interval (exact when ŵ and x_θ do not depend on t). Time-agnostic models skip the
    exponential draws, so their samples do not change with this bookkeeping."""
    m = model.cfg.mask_id
    timed = model.cfg.time_conditioning
    log_t = torch.zeros(z.shape[0], dtype=torch.float64)  # per sequence, on the CPU like the generator
    step = 0
    while bool((z == m).any()):
        probs, rate = proc.reverse(model, z, _time_input(model, z, torch.exp(log_t)) if timed else None)
        masked = z == m
        weights = torch.where(masked, rate, torch.zeros_like(rate)).cpu()
        active = masked.any(-1).cpu()
        if timed:
            total = weights.sum(-1).clamp_min(1e-300)
            e = -torch.log1p(-torch.rand(z.shape[0], generator=g, dtype=torch.float64))  # Exp(1)
            log_t = torch.where(active, log_t - e / total, log_t)
        if topk:
            pos = top_rate_position(weights, masked.cpu())
        else:
            safe = torch.where(active[:, None], weights, torch.ones_like(weights))
            pos = torch.multinomial(safe, 1, generator=g).squeeze(1)
        tok = draw_tokens(probs[torch.arange(z.shape[0]), pos.to(z.device)][:, None], g)[:, 0]
        rows = torch.nonzero(active).squeeze(1).to(z.device)
        z[rows, pos.to(z.device)[rows]] = tok[rows]
        order[rows, pos.to(z.device)[rows]] = step
        step += 1
    return z, order


def sample_adaptive(proc: Process, model: OeMDM, z: Tensor, order: Tensor, g: torch.Generator,
                    rule: str) -> tuple[Tensor, Tensor]:
    """Adaptive inference (``fast/adaptive.py``): one reveal per step, the masked position with the highest
    confidence / margin or the lowest entropy of x_θ, ties to the lowest index. A time-conditioned denoiser
    reads the fraction of positions still masked as its time (t is the expected masked fraction for MDLM)."""
    from .adaptive import adaptive_sample

    m = model.cfg.mask_id

    def denoise(state: Tensor) -> Tensor:
        t = (state == m).double().mean(-1).clamp_min(1e-3) if model.cfg.time_conditioning else None
        return proc.reverse(model, state, _time_input(model, state, t) if t is not None else None)[0]

    tokens, got = adaptive_sample(denoise, z, m, rule=rule, generator=g)
    return tokens, torch.where(order == -1, order, got)


def sample_grid(proc: Process, model: OeMDM, z: Tensor, order: Tensor, g: torch.Generator,
                steps: int) -> tuple[Tensor, Tensor]:
    """T steps on the power grid t_k = (k/T)^p, p = 1/min ŵ (see the module docstring)."""
    m = model.cfg.mask_id
    cache = None
    p_exp = 1.0  # t_T = 1 for any exponent; later steps use the exponent of the previous pass
    for k in range(steps, 0, -1):
        if model.cfg.time_conditioning:
            # a time-conditioned pass is not reusable across times; it sees t_k on the previous step's grid
            cache = proc.reverse(model, z, _time_input(model, z, torch.tensor((k / steps) ** p_exp)))
        elif cache is None:
            cache = proc.reverse(model, z, None)
        probs, rate = cache
        p_exp = 1.0 / max(float(rate.min()), 1e-3)  # power grid t_k = (k/T)^p with p >= 1/min w
        t, s = (k / steps) ** p_exp, ((k - 1) / steps) ** p_exp
        masked = z == m
        if k == 1:
            reveal = masked
        else:
            prob = 1 - torch.exp(rate * math.log(s / t))  # 1 − (s/t)^ŵ
            coin = torch.rand(z.shape, generator=g, dtype=torch.float64).to(z.device)
            reveal = masked & (coin < prob)
        if bool(reveal.any()):
            tok = draw_tokens(probs, g)
            z = torch.where(reveal, tok, z)
            order = torch.where(reveal, steps - k, order)
            cache = None  # the state changed: a new pass is needed
    return z, order


def sample_entropy(tokens: Tensor) -> float:
    """Mean over samples of the entropy (nats) of each sample's token histogram (as MDLM/ReMDM report)."""
    ents = []
    for row in tokens:
        counts = torch.bincount(row.cpu()).double()
        p = counts[counts > 0] / counts.sum()
        ents.append(float(-(p * p.log()).sum()))
    return sum(ents) / len(ents)


def render_with_order(text_chars: list[str], order: list[int], width: int = 64) -> str:
    """Plain-text rendering: each line of text is followed by a line of digits 0–9, the decile of the step
    at which that character was generated (0 = first tenth of the steps); '·' marks fixed positions."""
    steps = [o for o in order if o >= 0]
    top = max(steps) + 1 if steps else 1
    out = []
    for i in range(0, len(text_chars), width):
        chunk = text_chars[i:i + width]
        shown = "".join(c if c.isprintable() and c not in "\r\n\t" else "⏎" if c == "\n" else "·" for c in chunk)
        dec = "".join(str(min(9, 10 * o // top)) if o >= 0 else "·" for o in order[i:i + width])
        out.append("  " + shown)
        out.append("  " + dec)
    return "\n".join(out)
