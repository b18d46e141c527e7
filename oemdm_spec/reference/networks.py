r"""LoMDM's networks (spec §3): a time-agnostic backbone, two scheduler heads and the model that owns them.

- :class:`LoMDMConfig` — everything that defines a model; sizes named as in the fast path
  (``d_model``, ``n_layer``, ``n_head``, ``order_param``).
- :class:`TransformerLayer` — one pre-norm bidirectional layer, written out.
- :class:`Backbone` — logits over the real tokens (SUBS) and final hidden states f(z).
- :class:`SchedulerHead` — g_φ / g_ψ: one transformer layer plus a scalar head, reading *detached* features.
- :class:`LoMDM` — backbone + heads; ``w_phi(x)``, ``w_psi(z)``, and the forward/reverse schedules as
  :class:`~oemdm_spec.reference.schedules.InputPolynomialSchedule` objects.

Padding follows the fast path's convention: ``valid`` (B, L) is True at real (non-padding) positions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ._common import no_grad64
from .exponents import check_exponent_constants, exponent, exponent_range
from .schedules import InputPolynomialSchedule

__all__ = ["LoMDMConfig", "TransformerLayer", "Backbone", "SchedulerHead", "LoMDM"]


@dataclass(frozen=True)
class LoMDMConfig:
    """Everything that defines a LoMDM model. (c1, c2) = (1, 0) is MDLM; c2 = 0 a fixed polynomial schedule."""

    vocab_size: int
    length: int
    d_model: int = 32
    n_layer: int = 2
    n_head: int = 4
    c1: float = 0.7
    c2: float = 0.65
    order_param: str = "normsig"
    log_range: float = math.log(30.0)
    dtype: torch.dtype = torch.float32

    def __post_init__(self) -> None:
        for name in ("vocab_size", "length", "d_model", "n_head"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"LoMDMConfig: {name} must be a positive int, got {name}={value!r}")
        if not isinstance(self.n_layer, int) or isinstance(self.n_layer, bool) or self.n_layer < 0:
            raise ValueError(f"LoMDMConfig: n_layer must be an int >= 0, got n_layer={self.n_layer!r}")
        if self.d_model % self.n_head:
            raise ValueError(f"LoMDMConfig: d_model={self.d_model} must be divisible by n_head={self.n_head}")
        check_exponent_constants(float(self.c1), float(self.c2), self.order_param, float(self.log_range))

    @property
    def w_range(self) -> tuple[float, float]:
        return exponent_range(self.c1, self.c2, self.order_param, self.log_range)


class TransformerLayer(nn.Module):
    """One pre-norm bidirectional transformer layer (attention + GELU MLP), no dropout, written out for clarity.

    ``valid`` (B, L), True at real positions, removes padding keys from every attention row.
    """

    def __init__(self, d_model: int, n_head: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.n_head = n_head
        self.norm1 = nn.LayerNorm(d_model, dtype=dtype)
        self.qkv = nn.Linear(d_model, 3 * d_model, dtype=dtype)
        self.proj = nn.Linear(d_model, d_model, dtype=dtype)
        self.norm2 = nn.LayerNorm(d_model, dtype=dtype)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model, dtype=dtype), nn.GELU(), nn.Linear(4 * d_model, d_model, dtype=dtype)
        )

    def forward(self, h: Tensor, valid: Tensor | None = None) -> Tensor:
        b, length, d_model = h.shape
        q, k, v = self.qkv(self.norm1(h)).view(b, length, 3, self.n_head, d_model // self.n_head).unbind(2)
        q, k, v = (a.transpose(1, 2) for a in (q, k, v))  # (B, heads, L, d)
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        if valid is not None:
            scores = scores.masked_fill(~valid.bool()[:, None, None, :], float("-inf"))
        att = torch.softmax(scores, -1) @ v
        h = h + self.proj(att.transpose(1, 2).reshape(b, length, d_model))
        return h + self.mlp(self.norm2(h))


class Backbone(nn.Module):
    """Bidirectional, time-agnostic transformer over z ∈ {0..V}^L (V = mask id).

    ``forward(z) -> (logits (B, L, V), features (B, L, d_model))``: logits over the real tokens only (SUBS: the
    mask id receives no mass) and the final hidden states f(z) that the scheduler heads read.
    """

    def __init__(self, config: LoMDMConfig) -> None:
        super().__init__()
        c = config
        self.vocab_size = c.vocab_size
        self.embed = nn.Embedding(c.vocab_size + 1, c.d_model, dtype=c.dtype)
        self.pos = nn.Parameter(0.02 * torch.randn(c.length, c.d_model, dtype=c.dtype))
        self.layers = nn.ModuleList([TransformerLayer(c.d_model, c.n_head, c.dtype) for _ in range(c.n_layer)])
        self.norm = nn.LayerNorm(c.d_model, dtype=c.dtype)
        self.out = nn.Linear(c.d_model, c.vocab_size, dtype=c.dtype)

    def forward(self, z: Tensor, valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
        h = self.embed(z.long()) + self.pos
        for layer in self.layers:
            h = layer(h, valid)
        h = self.norm(h)
        return self.out(h), h


class SchedulerHead(nn.Module):
    """g_φ or g_ψ: one transformer layer of the backbone's width plus a scalar head → scores v (B, L).

    It is fed *detached* features; the detaching is done by :class:`LoMDM`, which owns the routing.
    """

    def __init__(self, config: LoMDMConfig) -> None:
        super().__init__()
        self.layer = TransformerLayer(config.d_model, config.n_head, config.dtype)
        self.norm = nn.LayerNorm(config.d_model, dtype=config.dtype)
        self.head = nn.Linear(config.d_model, 1, dtype=config.dtype)

    def forward(self, features: Tensor, valid: Tensor | None = None) -> Tensor:
        return self.head(self.norm(self.layer(features, valid))).squeeze(-1)


class LoMDM(nn.Module):
    r"""The LoMDM model of spec §3: a shared backbone (θ) and two scheduler heads (φ forward, ψ reverse).

    - ``model(z, t)`` is the denoiser (any ``t``; it is ignored — time-agnostic).
    - ``w_phi(x)``: w_φ(x) from a *no-grad* backbone pass on x (θ gets nothing from φ's losses).
    - ``w_psi_from_features(f)``: w_ψ from features that the caller detached; ``w_psi(z)`` runs the pass.
    - ``forward_schedule()`` / ``reverse_schedule()``: α_φ(x, t) = 1 − t^{w_φ(x)}, α̂_ψ(z_t, t) = 1 − t^{w_ψ(z_t)}
      as reference :class:`InputPolynomialSchedule` objects (float64, no grad), for the generic NELBO code.
    """

    def __init__(self, config: LoMDMConfig, seed: int | None = None) -> None:
        super().__init__()
        if seed is not None:
            torch.manual_seed(seed)
        self.config = config
        self.backbone = Backbone(config)
        self.phi = SchedulerHead(config)
        self.psi = SchedulerHead(config)

    # -- the denoiser -------------------------------------------------------------------------------------
    def forward(self, z: Tensor, t: Tensor | None = None) -> Tensor:
        return self.backbone(z)[0]

    # -- exponents ----------------------------------------------------------------------------------------
    def _w(self, head: SchedulerHead, features: Tensor, valid: Tensor | None) -> Tensor:
        c = self.config
        if c.c2 == 0:  # w ≡ c1: the heads cannot move it, so they are not evaluated (same value, no cost)
            return torch.full(features.shape[:-1], float(c.c1), dtype=features.dtype, device=features.device)
        v = head(features, valid)
        return exponent(v, c.c1, c.c2, order_param=c.order_param, log_range=c.log_range, valid=valid)

    def w_phi(self, x: Tensor, valid: Tensor | None = None) -> Tensor:
        """w_φ(x) (B, L): g_φ on stop-grad backbone features of the clean x."""
        with torch.no_grad():
            _, h = self.backbone(x, valid)
        return self._w(self.phi, h, valid)

    def w_psi_from_features(self, features: Tensor, valid: Tensor | None = None) -> Tensor:
        """w_ψ from backbone features of z_t; they are detached here so that θ learns nothing from L_velocity."""
        return self._w(self.psi, features.detach(), valid)

    def w_psi(self, z: Tensor, valid: Tensor | None = None) -> Tensor:
        """w_ψ(z_t) (B, L) with its own backbone pass."""
        with torch.no_grad():
            _, h = self.backbone(z, valid)
        return self.w_psi_from_features(h, valid)

    def forward_schedule(self) -> InputPolynomialSchedule:
        """α_φ(x, t) = 1 − t^{w_φ(x)} as a reference schedule (float64, no grad)."""
        return InputPolynomialSchedule(no_grad64(self.w_phi), self.config.length)

    def reverse_schedule(self) -> InputPolynomialSchedule:
        """α̂_ψ(z_t, t) = 1 − t^{w_ψ(z_t)} as a reference schedule (float64, no grad, cached on the last z)."""
        return InputPolynomialSchedule(_cached(no_grad64(self.w_psi)), self.config.length)


def _cached(fn: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """Reuse the previous result when called again on an equal z (the ancestral sampler asks twice per step)."""
    last: dict[str, Tensor] = {}

    def wrapped(u: Tensor) -> Tensor:
        if "z" in last and last["z"].shape == u.shape and torch.equal(last["z"], u):
            return last["w"]
        w = fn(u)
        last["z"], last["w"] = u.clone(), w
        return w

    return wrapped
