r"""Where the time of each LoMDM training/evaluation sample comes from, in log-time u = −log t (spec §3, §4).

- :func:`stratified` — (j + U_j)/n: stratified uniforms over a batch.
- :class:`ClampedUniformTime` — the paper's recipe t ~ U[t_min, 1]; **not a bound** for w < 1 (spec §4).
- :class:`LogTimeMixture` — u from a proper density on [0, ∞): an unbiased estimate of the whole bound.

Both ``sample(n)`` methods return (u, 1/p(u)), so that 1/p(u) × (u-integrand) estimates the integral.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["stratified", "ClampedUniformTime", "LogTimeMixture"]


def stratified(n: int, generator: torch.Generator | None = None) -> Tensor:
    """(j + U_j)/n, j = 0..n−1, in float64 (stratified uniforms on [0, 1))."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"stratified: n must be a positive int, got n={n!r}")
    return (torch.arange(n, dtype=torch.float64) + torch.rand(n, generator=generator, dtype=torch.float64)) / n


@dataclass(frozen=True)
class ClampedUniformTime:
    r"""t ~ U[t_min, 1], stratified over the batch (the paper's training recipe; spec §3 step 1).

    Returns u = −log t and the weight 1/p(u) = (1 − t_min)/t, so that weight × (u-integrand) estimates
    ∫_{t_min}^1 of the bound. **Not a bound when w < 1** (spec §4): the mass below t_min is dropped.
    """

    t_min: float = 1e-3
    is_bound = False

    def __post_init__(self) -> None:
        if not (0.0 < self.t_min < 1.0):
            raise ValueError(f"ClampedUniformTime: t_min must lie in (0, 1), got t_min={self.t_min!r}")

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        t = self.t_min + (1.0 - self.t_min) * stratified(n, generator)
        return -torch.log(t), (1.0 - self.t_min) / t


@dataclass(frozen=True)
class LogTimeMixture:
    r"""u = −log t from the proper density p(u) = mean_j λ_j e^{−λ_j u} on [0, ∞) (spec §4).

    weight(u) = 1/p(u). The estimate weight × (u-integrand) is unbiased for the *whole* bound. The u-integrand
    decays like e^{−w_min u}, so the variance is finite iff min λ < 2·w_min; :meth:`for_range` takes
    λ log-spaced over [w_min, w_max]. ``rates=(1.0,)`` is exactly t ~ U(0, 1] (u ~ Exp(1)).
    Stratified jointly over the component and its quantile.
    """

    rates: tuple[float, ...] = (1.0,)
    is_bound = True

    def __post_init__(self) -> None:
        if len(self.rates) == 0 or any(not (math.isfinite(r) and r > 0) for r in self.rates):
            raise ValueError(f"LogTimeMixture: rates must be a non-empty tuple of finite positives, got {self.rates!r}")

    @classmethod
    def for_range(cls, w_min: float, w_max: float, n: int = 4) -> LogTimeMixture:
        if not (0 < w_min <= w_max):
            raise ValueError(f"LogTimeMixture.for_range: need 0 < w_min <= w_max, got ({w_min!r}, {w_max!r})")
        if w_min == w_max:
            return cls((float(w_min),))
        return cls(tuple(float(r) for r in torch.logspace(math.log10(w_min), math.log10(w_max), n).tolist()))

    def log_density(self, u: Tensor) -> Tensor:
        lam = torch.tensor(self.rates, dtype=torch.float64)
        return torch.logsumexp(torch.log(lam) - lam * u.unsqueeze(-1), -1) - math.log(len(self.rates))

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        r = stratified(n, generator) * len(self.rates)
        comp = r.floor().long().clamp_max(len(self.rates) - 1)
        # q > 0 keeps u > 0: at u = 0 an unmasked position has log q = −inf and a NaN gradient, even under where
        q = (r - comp).clamp(1e-300, 1.0 - 1e-16)
        lam = torch.tensor(self.rates, dtype=torch.float64)[comp]
        u = -torch.log1p(-q) / lam
        return u, torch.exp(-self.log_density(u))
