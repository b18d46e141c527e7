r"""Small checks and helpers shared by the reference modules (private to :mod:`oemdm_spec.reference`).

Every name here is used by more than one reference module; keeping them in one place means no module imports
a private name from another. The public concepts among them (:func:`enumerate_masks`, :func:`uniform_grid`,
``Denoiser``) are re-exported where users look for them (:mod:`.elbo`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import Tensor

#: A denoiser: ``(z (B, L), t (B,)) -> logits (B, L, V)`` over the real tokens.
Denoiser = Callable[[Tensor, Tensor], Tensor]

_INT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.uint8)
_V = TypeVar("_V", Tensor, float)


def require_finite(name: str, value: _V, *, allow_inf: bool = False) -> _V:
    """Return ``value`` unchanged if every entry is finite; otherwise raise a ValueError naming ``name``.

    The reference returns numbers that are finite by construction (bounds, exponents, integrands); a NaN or
    inf there is a numerical failure, and a silent one would poison every comparison built on it, so it is
    reported where it first appears. ``allow_inf=True`` is for quantities where ±inf is a correct answer
    (log 0 of an impossible event, an infinite KL): only NaN raises then.
    """
    if isinstance(value, Tensor):
        bad_entries = torch.isnan(value) if allow_inf else ~torch.isfinite(value)
        if value.numel() and bool(bad_entries.any()):
            bad = value[bad_entries].flatten()[0].item()
            raise ValueError(f"{name} is not finite (first bad entry {bad!r}, shape {tuple(value.shape)})")
        return value
    x = float(value)
    if math.isnan(x) or (not allow_inf and math.isinf(x)):
        raise ValueError(f"{name} is not finite, got {value!r}")
    return value


def check_x(x: Tensor, length: int, vocab_size: int | None = None) -> Tensor:
    """Validate clean sequences x: (B, L) (or (L,), made (1, L)) integer ids in [0, V). Returns int64."""
    if x.dim() == 1:
        x = x.unsqueeze(0)
    if x.dim() != 2 or x.shape[-1] != length:
        raise ValueError(f"x must be (B, L) with L={length}, got shape {tuple(x.shape)}")
    if x.dtype not in _INT_DTYPES:
        raise ValueError(f"x must hold integer token ids, got dtype {x.dtype}")
    if bool((x < 0).any()) or (vocab_size is not None and bool((x >= vocab_size).any())):
        raise ValueError(f"x must lie in [0, V={vocab_size}), got values in [{int(x.min())}, {int(x.max())}]")
    return x.long()


def uniform_grid(T: int) -> Tensor:
    """0 = t_0 < t_1 < … < t_T = 1 evenly spaced (float64)."""
    if not isinstance(T, int) or isinstance(T, bool) or T < 1:
        raise ValueError(f"grid size T must be a positive int, got {T!r}")
    return torch.linspace(0.0, 1.0, T + 1, dtype=torch.float64)


def check_grid(grid: Tensor | int) -> Tensor:
    """A time grid 0 = t_0 < … < t_T = 1 as float64 (an int T means :func:`uniform_grid` (T))."""
    if isinstance(grid, int) and not isinstance(grid, bool):
        return uniform_grid(grid)
    grid = torch.as_tensor(grid, dtype=torch.float64)
    if grid.dim() != 1 or grid.numel() < 2 or grid[0] != 0 or grid[-1] != 1 or bool((grid.diff() <= 0).any()):
        raise ValueError(f"grid must increase strictly from 0 to 1, got {grid.tolist()}")
    return grid


def enumerate_masks(length: int) -> Tensor:
    """All 2^L mask patterns as a bool tensor (2^L, L); row r masks the positions of the set bits of r."""
    if not isinstance(length, int) or isinstance(length, bool) or length < 1:
        raise ValueError(f"enumerate_masks: length must be a positive int, got length={length!r}")
    if length > 16:
        raise ValueError(f"enumerate_masks: 2^L patterns for L={length} is too many to enumerate")
    bits = torch.arange(2**length).unsqueeze(-1) >> torch.arange(length)
    return (bits & 1).bool()


def real_positions(v: Tensor, valid: Tensor | None) -> Tensor:
    """Bool (..., L): True at real (non-padding) positions. ``valid`` is True at real positions (None: all)."""
    if valid is None:
        return torch.ones_like(v, dtype=torch.bool)
    if valid.shape != v.shape:
        raise ValueError(f"valid must have the shape of the scores {tuple(v.shape)}, got {tuple(valid.shape)}")
    real = valid.bool()
    if bool((real.sum(-1) == 0).any()):
        raise ValueError("valid: every sequence needs at least one real (non-padding) position")
    return real


def masked_mean(v: Tensor, real: Tensor) -> Tensor:
    """Mean of v over the positions where ``real`` is True, (..., 1)."""
    zero = torch.zeros((), dtype=v.dtype, device=v.device)
    return torch.where(real, v, zero).sum(-1, keepdim=True) / real.sum(-1, keepdim=True).to(v.dtype)


def no_grad64(fn: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """Wrap a token → exponent map for the float64 reference code: no autograd graph, int64 in, float64 out."""

    def wrapped(u: Tensor) -> Tensor:
        with torch.no_grad():
            return fn(u.long()).double()

    return wrapped
