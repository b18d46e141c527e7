r"""LoMDM's scheduler exponents w(v) from head scores v (spec §3 "parametrisation", "How sharp").

- :func:`normsig` — NormSig(v) = σ(v) − mean σ(v) over the real positions.
- :func:`exponent` — w = c1 + c2·NormSig(v) (``order_param="normsig"``, the paper's, the default) or the
  sharper log-space option log w = log c1 + R·tanh(c2·(v − mean v)/R) (``order_param="logspace"``, ours).
- :func:`exponent_range` — the open interval (w_min, w_max) those forms can reach.
- :func:`check_exponent_constants` — the validity conditions on (c1, c2, order_param, log_range).

Padding follows the fast path's convention: ``valid`` (..., L) is True at real (non-padding) positions.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._common import masked_mean, real_positions, require_finite

__all__ = ["ORDER_PARAMS", "normsig", "exponent", "exponent_range", "check_exponent_constants"]

#: the two parametrisations of w (the fast path's ``order_param`` values)
ORDER_PARAMS = ("normsig", "logspace")


def normsig(v: Tensor, valid: Tensor | None = None) -> Tensor:
    r"""NormSig(v)_i = σ(v_i) − mean_j σ(v_j), the mean over real, non-padding positions (spec §3).

    Padding positions (``valid`` False) get 0. The result has zero mean over the real positions and lies in
    (−1, 1); more precisely in (−(1 − 1/n), 1 − 1/n) for n real positions, whatever v is (σ ∈ [0, 1] even
    when it saturates in floating point, and the i-th term enters its own mean with weight 1/n).
    """
    real = real_positions(v, valid)
    s = torch.sigmoid(v)
    out = s - masked_mean(s, real)
    return torch.where(real, out, torch.zeros_like(out))


def check_exponent_constants(c1: float, c2: float, order_param: str, log_range: float) -> None:
    """Raise ValueError unless (c1, c2, order_param, log_range) give exponents w > 0 (spec §3)."""
    if order_param not in ORDER_PARAMS:
        raise ValueError(f"order_param must be one of {ORDER_PARAMS}, got {order_param!r}")
    if not (math.isfinite(c1) and math.isfinite(c2)):
        raise ValueError(f"c1 and c2 must be finite, got c1={c1!r}, c2={c2!r}")
    if c2 < 0:
        raise ValueError(f"c2 must be >= 0 (c2 = 0 is a fixed polynomial schedule), got c2={c2!r}")
    if order_param == "normsig" and c1 <= c2:
        raise ValueError(
            f"c1 must be > c2 so that w = c1 + c2·NormSig stays > 0 (NormSig ∈ (−1, 1)), got c1={c1!r}, c2={c2!r}"
        )
    if order_param == "logspace":
        if c1 <= 0:
            raise ValueError(f"c1 must be > 0 in the log-space parametrisation (it is the centre of w), got c1={c1!r}")
        if not (math.isfinite(log_range) and log_range > 0):
            raise ValueError(f"log_range must be finite and > 0, got log_range={log_range!r}")


def exponent(
    v: Tensor,
    c1: float = 0.7,
    c2: float = 0.65,
    *,
    order_param: str = "normsig",
    log_range: float = math.log(30.0),
    valid: Tensor | None = None,
) -> Tensor:
    r"""The scheduler exponent w(v) ∈ (w_min, w_max)^L from head scores v (..., L).

    - ``"normsig"`` (the paper's, default; spec §3): w = c1 + c2·NormSig(v) ∈ (c1 − c2, c1 + c2). The mean of w
      over the real positions is always c1, so the order law (Plackett–Luce with weights w) can only be a
      soft bias: the largest weight ratio is (c1 + c2)/(c1 − c2) and ≈ 2.7 per step is out of reach.
    - ``"logspace"`` (ours, optional; spec §3 "How sharp can the learned order be?"): with centred scores
      d = v − mean v, log w = log c1 + R·tanh(c2·d/R), so w ∈ (c1 e^{−R}, c1 e^{R}) (R = ``log_range``; the
      tanh is a smooth clamp, ≈ c1·exp(c2·d) while |c2·d| ≪ R). The geometric mean of w is ≈ c1, and weights
      can fall geometrically along an order, so the order can approach a permutation.

    ``c2 = 0`` gives w ≡ c1 in both forms (a fixed polynomial schedule; (1, 0) is MDLM). Padding positions
    (``valid`` False) get w = c1 (they are never masked by the caller; the value only has to be positive).
    A NaN score (or ±inf in the log-space form) would give a NaN exponent: that raises instead.
    """
    check_exponent_constants(float(c1), float(c2), order_param, float(log_range))
    real = real_positions(v, valid)
    if order_param == "normsig":
        w = c1 + c2 * normsig(v, valid)
    else:
        d = v - masked_mean(v, real)
        w = c1 * torch.exp(log_range * torch.tanh(c2 * d / log_range))
    return require_finite("exponent w", torch.where(real, w, torch.full_like(w, c1)))


def exponent_range(
    c1: float, c2: float, order_param: str = "normsig", log_range: float = math.log(30.0)
) -> tuple[float, float]:
    """The open interval (w_min, w_max) that :func:`exponent` can reach, for choosing time densities."""
    check_exponent_constants(float(c1), float(c2), order_param, float(log_range))
    if order_param == "normsig":
        return c1 - c2, c1 + c2
    if c2 == 0:
        return c1, c1
    return c1 * math.exp(-log_range), c1 * math.exp(log_range)
