"""Optimisation: AdamW with its parameter groups, the learning-rate schedule, the EMA, and gradient checks."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .model import OeMDM

GROUP_NAMES = ("decay", "no_decay", "heads")  # make_optimizer's parameter groups, in order


def make_optimizer(model: OeMDM, cfg: Any, fused: bool) -> torch.optim.AdamW:
    """AdamW with three groups: decayed matrices, non-decayed vectors, and the scheduler heads (own lr)."""
    head_ids = {id(p) for p in model.scheduler_parameters()}
    decay, no_decay, heads = [], [], []
    for p in model.parameters():
        if id(p) in head_ids:
            heads.append(p)
        elif p.dim() >= 2:
            decay.append(p)
        else:
            no_decay.append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay, "lr_scale": 1.0},
        {"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0},
    ]
    if heads:
        scale = (cfg.head_lr / cfg.lr) if cfg.head_lr else 1.0
        groups.append({"params": heads, "weight_decay": 0.0, "lr_scale": scale})
    kw: dict[str, Any] = {"fused": True} if fused else {}
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, cfg.beta2), eps=1e-8, **kw)


def lr_at(step: int, cfg: Any) -> float:
    """Linear warm-up, then constant or cosine decay to 10% of the peak."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if cfg.lr_decay == "constant":
        return cfg.lr
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float, step: int) -> None:
    """EMA with a warm start: the effective decay is min(decay, (1 + step)/(10 + step))."""
    d = min(decay, (1 + step) / (10 + step))
    for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
        pe.lerp_(pm.detach(), 1 - d)


def grad_norm_then_clip(model: nn.Module, grad_clip: float) -> tuple[torch.Tensor, bool]:
    """The total gradient norm, and whether it is finite; the gradients are clipped to ``grad_clip`` (0: off)
    only when it is. ``clip_grad_norm_`` would multiply every gradient by NaN when one is NaN, and the
    error message could then no longer say which parameter group went bad."""
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    finite = math.isfinite(float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm))
    if finite and grad_clip > 0:
        torch.nn.utils.clip_grads_with_norm_(params, grad_clip, norm)
    return norm, finite


def nonfinite_groups(opt: torch.optim.Optimizer) -> list[str]:
    """Names of the parameter groups holding a non-finite gradient (for the error message)."""
    bad = []
    for i, group in enumerate(opt.param_groups):
        # under FSDP each rank checks its own shard (the decision to skip uses the all-reduced norm instead)
        grads = [p.grad.to_local() if hasattr(p.grad, "to_local") else p.grad for p in group["params"]
                 if p.grad is not None]
        if any(not bool(torch.isfinite(g).all()) for g in grads):
            bad.append(GROUP_NAMES[i] if i < len(GROUP_NAMES) else f"group {i}")
    return bad
