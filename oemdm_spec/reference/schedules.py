r"""Per-position noise schedules α: I × [0, 1] → [0, 1]^L  (spec §1 "Schedules", §2 special cases).

Every schedule gives one component per position, with α^i(u, 0) = 1, α^i(u, 1) = 0 (the log-linear MDLM
variant stops at ε), strictly decreasing in t. Three quantities are exposed, each in closed form:

- ``alpha(t, u)``                α^i(u, t)
- ``log_one_minus_alpha(t, u)``  log(1 − α^i(u, t)), computed without forming 1 − α by subtraction
- ``velocity(t, u)``             A^i(u, t) = −∂_t α^i / (1 − α^i), the reverse-time unmasking hazard

and two in log-time, for integrals down to t = 0 (spec §4): with log t given instead of t, nothing
underflows when 1 − α vanishes like t^w with a small w (t itself is then far below the float64 range):

- ``log_one_minus_alpha_log_time(log_t, u)``  log(1 − α^i(u, e^{log t}))
- ``log_time_velocity(log_t, u)``             t·A^i = ∂ log(1 − α^i)/∂ log t, the hazard per unit of −log t

Shapes: ``t`` is ``(...)`` (one time per sequence); the result is ``(..., L)``. When the schedule reads an
input ``u`` (the clean x for a forward scheduler, z_t for a reverse one), ``u`` is ``(..., L)`` and ``t``
broadcasts against ``u.shape[:-1]``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ._common import require_finite

__all__ = [
    "Schedule",
    "MDLMSchedule",
    "PolynomialSchedule",
    "CosineSchedule",
    "WindowSchedule",
    "ARMSchedule",
    "FixedOrderSchedule",
    "BlockSchedule",
    "InputPolynomialSchedule",
    "VocabPolynomialSchedule",
]


def _fail(schedule: str, argument: str, value: object, why: str) -> ValueError:
    return ValueError(f"{schedule}: invalid {argument}={value!r}: {why}")


def _as_time(schedule: str, t: Tensor | float) -> Tensor:
    """Validate t ∈ [0, 1] (finite); return a floating tensor (float64 for Python numbers)."""
    if not isinstance(t, Tensor):
        t = torch.tensor(float(t), dtype=torch.float64)
    if not t.is_floating_point():
        t = t.to(torch.float64)
    if t.numel() and (not bool(torch.isfinite(t).all()) or bool((t < 0).any()) or bool((t > 1).any())):
        bad = t[~(torch.isfinite(t) & (t >= 0) & (t <= 1))].flatten()[0].item()
        raise _fail(schedule, "t", bad, "time must lie in [0, 1]")
    return t


def _as_log_time(schedule: str, log_t: Tensor | float) -> Tensor:
    """Validate log t ∈ (−∞, 0] (finite); return a floating tensor (float64 for Python numbers)."""
    if not isinstance(log_t, Tensor):
        log_t = torch.tensor(float(log_t), dtype=torch.float64)
    if not log_t.is_floating_point():
        log_t = log_t.to(torch.float64)
    if log_t.numel() and (not bool(torch.isfinite(log_t).all()) or bool((log_t > 0).any())):
        bad = log_t[~(torch.isfinite(log_t) & (log_t <= 0))].flatten()[0].item()
        raise _fail(schedule, "log_t", bad, "log-time must be finite and <= 0 (t ∈ (0, 1])")
    return log_t


class Schedule(ABC):
    """A per-position schedule α(u, t) ∈ [0, 1]^L (spec §1). Subclasses implement the three closed forms."""

    name: str = "Schedule"
    #: whether α reads an input u (x for a forward scheduler, z_t for a reverse one)
    depends_on_input: bool = False

    def __init__(self, length: int) -> None:
        if not isinstance(length, int) or isinstance(length, bool) or length < 1:
            raise _fail(self.name, "length", length, "sequence length must be a positive int")
        self.length = length

    # -- the closed forms ------------------------------------------------------------------------------
    @abstractmethod
    def _alpha(self, t: Tensor, u: Tensor | None) -> Tensor: ...

    @abstractmethod
    def _log_one_minus_alpha(self, t: Tensor, u: Tensor | None) -> Tensor: ...

    @abstractmethod
    def _velocity(self, t: Tensor, u: Tensor | None) -> Tensor: ...

    def kinks(self) -> tuple[float, ...]:
        """Interior points of (0, 1) where α is not C¹: quadrature and grids put points there."""
        return ()

    # -- log-time forms: defaults evaluate at t = e^{log t}; exact while t is a normal float64 -----------
    def _log_one_minus_alpha_log_time(self, log_t: Tensor, u: Tensor | None) -> Tensor:
        return self._log_one_minus_alpha(torch.exp(log_t), u)

    def _log_time_velocity(self, log_t: Tensor, u: Tensor | None) -> Tensor:
        t = torch.exp(log_t)
        return self._velocity(t, u) * t.unsqueeze(-1)

    # -- validated public surface ----------------------------------------------------------------------
    def _prepare(self, t: Tensor | float, u: Tensor | None) -> tuple[Tensor, Tensor | None]:
        t = _as_time(self.name, t)
        if self.depends_on_input:
            if u is None:
                raise _fail(self.name, "u", None, "this schedule reads its input u (x or z_t)")
            if u.shape[-1] != self.length:
                raise _fail(self.name, "u", tuple(u.shape), f"last dimension must be L={self.length}")
            try:
                torch.broadcast_shapes(t.shape, u.shape[:-1])
            except RuntimeError as err:
                raise _fail(self.name, "t", tuple(t.shape), f"does not broadcast with u {tuple(u.shape)}") from err
        return t, u

    def alpha(self, t: Tensor | float, u: Tensor | None = None) -> Tensor:
        """α^i(u, t): the probability that position i is still clean at time t."""
        t, u = self._prepare(t, u)
        return require_finite(f"{self.name}.alpha", self._alpha(t, u), allow_inf=True)

    def log_one_minus_alpha(self, t: Tensor | float, u: Tensor | None = None) -> Tensor:
        """log(1 − α^i(u, t)), in log space (spec §4): never 1 − α by subtraction."""
        t, u = self._prepare(t, u)
        return require_finite(f"{self.name}.log_one_minus_alpha", self._log_one_minus_alpha(t, u), allow_inf=True)

    def velocity(self, t: Tensor | float, u: Tensor | None = None) -> Tensor:
        """A^i(u, t) = −∂_t α^i(u, t) / (1 − α^i(u, t))  (spec §1 "Velocity"); +inf where α = 1."""
        t, u = self._prepare(t, u)
        return require_finite(f"{self.name}.velocity", self._velocity(t, u), allow_inf=True)

    def log_one_minus_alpha_log_time(self, log_t: Tensor | float, u: Tensor | None = None) -> Tensor:
        """log(1 − α^i(u, t)) at t = e^{log_t} (spec §4), without forming t where the closed form allows."""
        log_t = _as_log_time(self.name, log_t)
        _, u = self._prepare(torch.exp(log_t), u)
        return require_finite(
            f"{self.name}.log_one_minus_alpha_log_time", self._log_one_minus_alpha_log_time(log_t, u), allow_inf=True
        )

    def log_time_velocity(self, log_t: Tensor | float, u: Tensor | None = None) -> Tensor:
        """t·A^i(u, t) = ∂ log(1 − α^i)/∂ log t at t = e^{log_t}: the hazard per unit log-time (A dt = this · du)."""
        log_t = _as_log_time(self.name, log_t)
        _, u = self._prepare(torch.exp(log_t), u)
        return require_finite(f"{self.name}.log_time_velocity", self._log_time_velocity(log_t, u), allow_inf=True)

    def __repr__(self) -> str:
        return f"{self.name}(L={self.length})"


def _expand(values: Tensor, t: Tensor, length: int) -> Tensor:
    """Broadcast a per-time quantity (...) to (..., L)."""
    return values.unsqueeze(-1).expand(*values.shape, length)


class MDLMSchedule(Schedule):
    r"""MDLM: α(t) = 1 − (1 − ε)t at every position; ε = 0 is the linear schedule 1 − t.

    A = (1 − ε)/((1 − ε)t) = 1/t for every ε: the log-linear variant only stops at α(1) = ε, which MDLM
    uses to keep the last step finite.
    """

    name = "MDLMSchedule"

    def __init__(self, length: int, eps: float = 0.0) -> None:
        super().__init__(length)
        if not (0.0 <= float(eps) < 0.5):
            raise _fail(self.name, "eps", eps, "eps must lie in [0, 1/2)")
        self.eps = float(eps)

    def _alpha(self, t: Tensor, u: Tensor | None) -> Tensor:
        return _expand(1.0 - (1.0 - self.eps) * t, t, self.length)

    def _log_one_minus_alpha(self, t: Tensor, u: Tensor | None) -> Tensor:
        return _expand(math.log1p(-self.eps) + torch.log(t), t, self.length)

    def _velocity(self, t: Tensor, u: Tensor | None) -> Tensor:
        return _expand(1.0 / t, t, self.length)

    def _log_one_minus_alpha_log_time(self, log_t: Tensor, u: Tensor | None) -> Tensor:
        return _expand(math.log1p(-self.eps) + log_t, log_t, self.length)

    def _log_time_velocity(self, log_t: Tensor, u: Tensor | None) -> Tensor:
        return _expand(torch.ones_like(log_t), log_t, self.length)


def _validate_exponent(schedule: str, w: Tensor) -> None:
    if not bool(torch.isfinite(w).all()) or bool((w <= 0).any()):
        bad = w[~(torch.isfinite(w) & (w > 0))].flatten()[0].item()
        raise _fail(schedule, "w", bad, "exponents must be finite and > 0 (α = 1 − t^w decreasing)")


class PolynomialSchedule(Schedule):
    r"""Polynomial: α^i(t) = 1 − t^{w_i}, so log(1 − α) = w_i log t and A^i = w_i / t.

    ``w`` is a positive scalar (then ``length`` is required) or a tensor whose last dimension is L (a
    per-position exponent, possibly with leading batch dimensions that broadcast against t).
    """

    name = "PolynomialSchedule"

    def __init__(self, w: float | Tensor, length: int | None = None) -> None:
        w_t = torch.as_tensor(w, dtype=torch.float64) if not isinstance(w, Tensor) else w
        if w_t.dim() == 0:
            if length is None:
                raise _fail(self.name, "length", None, "a scalar exponent needs the sequence length")
            w_t = w_t.expand(length)
        elif length is not None and w_t.shape[-1] != length:
            raise _fail(self.name, "w", tuple(w_t.shape), f"last dimension must be length={length}")
        _validate_exponent(self.name, w_t)
        super().__init__(int(w_t.shape[-1]))
        self.w = w_t

    def _log_t(self, t: Tensor) -> Tensor:
        return torch.log(t).unsqueeze(-1)

    def _alpha(self, t: Tensor, u: Tensor | None) -> Tensor:
        # 1 − t^w = −expm1(w log t): accurate when t^w is close to 1.
        return -torch.expm1(self.w * self._log_t(t))

    def _log_one_minus_alpha(self, t: Tensor, u: Tensor | None) -> Tensor:
        return self.w * self._log_t(t)

    def _velocity(self, t: Tensor, u: Tensor | None) -> Tensor:
        return self.w / t.unsqueeze(-1)

    def _log_one_minus_alpha_log_time(self, log_t: Tensor, u: Tensor | None) -> Tensor:
        return self.w * log_t.unsqueeze(-1)

    def _log_time_velocity(self, log_t: Tensor, u: Tensor | None) -> Tensor:
        return self.w * torch.ones_like(log_t).unsqueeze(-1)  # t·(w/t) = w: constant in log-time


class CosineSchedule(Schedule):
    r"""Cosine: α(t) = cos(πt/2).

    1 − α = 2 sin²(πt/4), so log(1 − α) = log 2 + 2 log sin(πt/4), and A = (π/2)·cot(πt/4).
    """

    name = "CosineSchedule"

    def _alpha(self, t: Tensor, u: Tensor | None) -> Tensor:
        return _expand(torch.cos(0.5 * math.pi * t), t, self.length)

    def _log_one_minus_alpha(self, t: Tensor, u: Tensor | None) -> Tensor:
        return _expand(math.log(2.0) + 2.0 * torch.log(torch.sin(0.25 * math.pi * t)), t, self.length)

    def _velocity(self, t: Tensor, u: Tensor | None) -> Tensor:
        return _expand(0.5 * math.pi / torch.tan(0.25 * math.pi * t), t, self.length)

    def _log_one_minus_alpha_log_time(self, log_t: Tensor, u: Tensor | None) -> Tensor:
        # sin y = y exactly in float64 for y = πt/4 < 1e-8 (the relative error y²/6 is below 2^-53), so there
        # log sin y = log(π/4) + log t, with no t formed: it may be far below the float64 range.
        t = torch.exp(log_t)
        small = log_t < math.log(1e-8)
        log_sin = torch.where(small, math.log(0.25 * math.pi) + log_t, torch.log(torch.sin(0.25 * math.pi * t)))
        return _expand(math.log(2.0) + 2.0 * log_sin, log_t, self.length)

    def _log_time_velocity(self, log_t: Tensor, u: Tensor | None) -> Tensor:
        # t·A = (π t/2)/tan(π t/4) = 2·y/tan y with y = π t/4; y/tan y = 1 in float64 for y < 1e-8.
        y = 0.25 * math.pi * torch.exp(log_t)
        small = log_t < math.log(1e-8)
        ratio = torch.where(small, torch.ones_like(y), y / torch.tan(torch.where(small, torch.ones_like(y), y)))
        return _expand(2.0 * ratio, log_t, self.length)


class WindowSchedule(Schedule):
    r"""The ε-window schedule shared by α_arm,ε, α_π,ε and α_bd,ε  (spec §2, [reconstructed]).

    Position i belongs to window k_i ∈ {1..n}; window k is active on J_k = [(n−k)/n, (n−k+1)/n] (window 1
    unmasks first in reverse time). Piecewise linear, continuous, strictly decreasing:

    - before J_k:  1 → 1 − ε  on [0, (n−k)/n];
    - on J_k:      α = s0 − (s0 − s1)(n t − (n − k)),  s0 = 1 − ε (1 for k = n), s1 = ε (0 for k = 1);
    - after J_k:   ε → 0  on [(n−k+1)/n, 1].

    1 − α is formed segment by segment from its own closed form, so it is exact (no cancellation) even
    where α is within ε of 1. The velocity on each segment is its slope over 1 − α; at a kink, the
    right-hand derivative is used (a null set for every integral).
    """

    name = "WindowSchedule"

    def __init__(self, window: Sequence[int] | Tensor, n_windows: int, eps: float) -> None:
        window_t = torch.as_tensor(window, dtype=torch.long)
        super().__init__(int(window_t.numel()))
        if not (0.0 < float(eps) < 0.5):
            raise _fail(self.name, "eps", eps, "eps must lie in (0, 1/2)")
        if bool((window_t < 1).any()) or bool((window_t > n_windows).any()):
            raise _fail(self.name, "window", window_t.tolist(), f"window indices must lie in 1..{n_windows}")
        self.eps = float(eps)
        self.n_windows = int(n_windows)
        self.window = window_t

    def kinks(self) -> tuple[float, ...]:
        return tuple(k / self.n_windows for k in range(1, self.n_windows))

    def _pieces(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Return (1 − α, −∂_tα, and the two boolean masks 'before' / 'after'), each (..., L)."""
        eps, n = self.eps, self.n_windows
        k = self.window.to(t.device).double()
        tt = t.double().unsqueeze(-1)
        start, end = (n - k) / n, (n - k + 1) / n
        s0 = torch.where(k == n, torch.ones_like(k), torch.full_like(k, 1 - eps))
        s1 = torch.where(k == 1, torch.zeros_like(k), torch.full_like(k, eps))
        # The last window (k = 1) ends at t = 1: there is no "after" segment for it.
        before, after = tt < start, (tt >= end) & (end < 1)
        # Inside the window: 1 − α = (1 − s0) + (s0 − s1)(n t − (n − k)).
        in_slope = (s0 - s1) * n
        in_1m = (1 - s0) + (s0 - s1) * (n * tt - (n - k))
        # Before the window (start > 0): α = 1 − ε t / start.
        safe_start = torch.where(start > 0, start, torch.ones_like(start))
        before_slope = eps / safe_start
        before_1m = eps * tt / safe_start
        # After the window (end < 1): α = ε (1 − (t − end)/(1 − end)).
        safe_tail = torch.where(end < 1, 1 - end, torch.ones_like(end))
        after_slope = eps / safe_tail
        after_1m = 1 - eps + eps * (tt - end) / safe_tail
        one_minus = torch.where(before, before_1m, torch.where(after, after_1m, in_1m))
        slope = torch.where(before, before_slope, torch.where(after, after_slope, in_slope))
        return one_minus, slope.expand_as(one_minus), before, after

    def _alpha(self, t: Tensor, u: Tensor | None) -> Tensor:
        one_minus, _, _, _ = self._pieces(t)
        return 1.0 - one_minus

    def _log_one_minus_alpha(self, t: Tensor, u: Tensor | None) -> Tensor:
        one_minus, _, _, _ = self._pieces(t)
        return torch.log(one_minus)

    def _velocity(self, t: Tensor, u: Tensor | None) -> Tensor:
        one_minus, slope, _, _ = self._pieces(t)
        return slope / one_minus

    def _first_piece(self, log_t: Tensor) -> tuple[Tensor, Tensor]:
        """On [0, 1/n] every 1 − α^i is linear, a_i·t (before its window, or inside window n): returns the
        mask 'log t inside that piece' (...) and log a_i (L,), read off at the interior point t = 1/(2n)."""
        ref = torch.tensor(0.5 / self.n_windows, dtype=torch.float64)
        one_minus, _, _, _ = self._pieces(ref)
        return log_t < math.log(1.0 / self.n_windows), torch.log(one_minus) - math.log(float(ref))

    def _log_one_minus_alpha_log_time(self, log_t: Tensor, u: Tensor | None) -> Tensor:
        first, log_a = self._first_piece(log_t)
        linear = log_a + log_t.unsqueeze(-1)
        other = self._log_one_minus_alpha(torch.exp(torch.where(first, torch.zeros_like(log_t), log_t)), u)
        return torch.where(first.unsqueeze(-1), linear, other)

    def _log_time_velocity(self, log_t: Tensor, u: Tensor | None) -> Tensor:
        first, _ = self._first_piece(log_t)
        t = torch.exp(torch.where(first, torch.zeros_like(log_t), log_t))
        other = self._velocity(t, u) * t.unsqueeze(-1)
        return torch.where(first.unsqueeze(-1), torch.ones_like(other), other)  # t·(a/(a t)) = 1 on the linear piece

    def __repr__(self) -> str:
        return f"{self.name}(L={self.length}, n_windows={self.n_windows}, eps={self.eps})"


class ARMSchedule(WindowSchedule):
    r"""α_arm,ε: left-to-right. Position i (1-indexed) is active on I_i = [(L−i)/L, (L−i+1)/L]."""

    name = "ARMSchedule"

    def __init__(self, length: int, eps: float) -> None:
        if not isinstance(length, int) or length < 1:
            raise _fail(self.name, "length", length, "sequence length must be a positive int")
        super().__init__(range(1, length + 1), length, eps)


class FixedOrderSchedule(WindowSchedule):
    r"""α_arm,ε permuted by π: ``order[k]`` is the (0-indexed) position generated k-th, so position
    ``order[k]`` takes the ARM window of rank k + 1."""

    name = "FixedOrderSchedule"

    def __init__(self, order: Sequence[int] | Tensor, eps: float) -> None:
        order_t = torch.as_tensor(order, dtype=torch.long).flatten()
        n = int(order_t.numel())
        if n == 0 or sorted(order_t.tolist()) != list(range(n)):
            raise _fail(self.name, "order", order_t.tolist(), f"must be a permutation of 0..{n - 1}")
        rank = torch.empty_like(order_t)
        rank[order_t] = torch.arange(1, n + 1)
        super().__init__(rank, n, eps)
        self.order = order_t


class BlockSchedule(WindowSchedule):
    r"""α_bd,ε: blocks b = 1..B of size L'; block b is active on J_b = [(B−b)/B, (B−b+1)/B] and follows
    the MDLM schedule re-parametrised to its window. B = 1 is MDLM (1 − t); L' = 1 is α_arm,ε."""

    name = "BlockSchedule"

    def __init__(self, length: int, block_size: int, eps: float) -> None:
        if not isinstance(length, int) or length < 1:
            raise _fail(self.name, "length", length, "sequence length must be a positive int")
        if not isinstance(block_size, int) or block_size < 1 or length % block_size:
            raise _fail(self.name, "block_size", block_size, f"must be a positive divisor of length={length}")
        n_blocks = length // block_size
        super().__init__([i // block_size + 1 for i in range(length)], n_blocks, eps)
        self.block_size = block_size


class InputPolynomialSchedule(Schedule):
    r"""Input-dependent polynomial: α^i(u, t) = 1 − t^{w_i(u)}, A^i = w_i(u)/t.

    ``exponent_fn(u) -> (..., L)`` gives positive exponents. This is LoMDM's α_φ(x, ·) (u = x) and
    α̂_ψ(z_t, ·) (u = z_t), and GenMD4's forward schedule (w indexed by the clean token).
    """

    name = "InputPolynomialSchedule"
    depends_on_input = True

    def __init__(self, exponent_fn: Callable[[Tensor], Tensor], length: int) -> None:
        super().__init__(length)
        self.exponent_fn = exponent_fn

    def exponent(self, u: Tensor) -> Tensor:
        w = self.exponent_fn(u)
        if w.shape != u.shape:
            raise _fail(self.name, "exponent_fn(u)", tuple(w.shape), f"must have the shape of u {tuple(u.shape)}")
        _validate_exponent(self.name, w)
        return w

    def _alpha(self, t: Tensor, u: Tensor | None) -> Tensor:
        assert u is not None
        return -torch.expm1(self.exponent(u) * torch.log(t).unsqueeze(-1))

    def _log_one_minus_alpha(self, t: Tensor, u: Tensor | None) -> Tensor:
        assert u is not None
        return self.exponent(u) * torch.log(t).unsqueeze(-1)

    def _velocity(self, t: Tensor, u: Tensor | None) -> Tensor:
        assert u is not None
        return self.exponent(u) / t.unsqueeze(-1)

    def _log_one_minus_alpha_log_time(self, log_t: Tensor, u: Tensor | None) -> Tensor:
        assert u is not None
        return self.exponent(u) * log_t.unsqueeze(-1)

    def _log_time_velocity(self, log_t: Tensor, u: Tensor | None) -> Tensor:
        assert u is not None
        w = self.exponent(u)
        return w * torch.ones_like(log_t).unsqueeze(-1)  # t·(w/t) = w, broadcast against log t's shape


class VocabPolynomialSchedule(InputPolynomialSchedule):
    r"""GenMD4's forward schedule: α^i(x, t) = 1 − t^{w[x^i]}, one exponent per vocabulary word.

    ``u`` must be a clean sequence (tokens in [0, V)); the mask id has no exponent.
    """

    name = "VocabPolynomialSchedule"

    def __init__(self, w_vocab: Tensor, length: int) -> None:
        w_vocab = torch.as_tensor(w_vocab, dtype=torch.float64) if not isinstance(w_vocab, Tensor) else w_vocab
        if w_vocab.dim() != 1 or w_vocab.numel() == 0:
            raise _fail(self.name, "w_vocab", tuple(w_vocab.shape), "must be a non-empty vector (V,)")
        _validate_exponent(self.name, w_vocab)
        self.w_vocab = w_vocab
        super().__init__(self._lookup, length)

    def _lookup(self, u: Tensor) -> Tensor:
        v = self.w_vocab.numel()
        if bool((u < 0).any()) or bool((u >= v).any()):
            raise _fail(self.name, "u", u.tolist(), f"tokens must lie in [0, {v}) (a clean sequence x)")
        return self.w_vocab[u.long()]
