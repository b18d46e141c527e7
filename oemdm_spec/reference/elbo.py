r"""The OeMDM negative ELBOs of whole sequences (spec §1), in float64.

- :func:`discrete_nelbo` — L_T on a time grid, in closed form per step; the expectation over z_t either
  exactly (enumerating every mask pattern) or by Monte Carlo.
- :func:`continuous_nelbo_mc` — L_OeMDM of Eq. (2) by Monte Carlo with stratified t; returns L_main and
  L_velocity separately.
- :func:`continuous_nelbo_exact` — L_OeMDM with the expectation over z_t by enumeration and the t-integral
  by adaptive quadrature, split at every schedule kink.

All three return one value per sequence: the sum over positions (nats), not a per-token average.
The forward schedule reads x, the reverse schedule reads z_t (``reverse=None`` means α̂ = α, which needs an
input-free forward schedule). The denoiser is any ``(z (B, L), t (B,)) -> logits (B, L, V)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import integrate
from torch import Tensor

from ._common import Denoiser, check_grid, check_x, enumerate_masks, require_finite, uniform_grid
from .schedules import Schedule
from .terms import l_main, l_velocity, reverse_step_kl, unmask_probability

__all__ = [
    "NELBO",
    "Denoiser",
    "enumerate_masks",
    "mask_log_prob",
    "log_px",
    "discrete_nelbo",
    "continuous_integrand",
    "continuous_integrand_log_time",
    "continuous_nelbo_mc",
    "continuous_nelbo_exact",
    "uniform_grid",
    "kink_aware_grid",
]


@dataclass(frozen=True)
class NELBO:
    """A continuous-time bound split into its two terms (per sequence, nats). ``total`` is the bound."""

    main: Tensor
    velocity: Tensor

    @property
    def total(self) -> Tensor:
        return self.main + self.velocity


# ---------------------------------------------------------------------------------------------------------
# small pieces
# ---------------------------------------------------------------------------------------------------------
def _reverse_of(forward: Schedule, reverse: Schedule | None) -> Schedule:
    if reverse is None:
        if forward.depends_on_input:
            raise ValueError(f"reverse=None (α̂ = α) needs an input-free forward schedule, got {forward!r}")
        return forward
    if reverse.length != forward.length:
        raise ValueError(f"reverse schedule has L={reverse.length}, forward has L={forward.length}")
    return reverse


def mask_log_prob(masked: Tensor, log_alpha: Tensor, log1m_alpha: Tensor) -> Tensor:
    """log q(mask pattern | x, t) = Σ_i [masked_i log(1 − α^i) + (1 − masked_i) log α^i]."""
    zero = torch.zeros((), dtype=log_alpha.dtype)
    return torch.where(masked, log1m_alpha, zero).sum(-1) + torch.where(masked, zero, log_alpha).sum(-1)


def log_px(denoiser: Denoiser, z: Tensor, t: Tensor, x: Tensor) -> Tensor:
    """log x_θ^i(z, t)[x^i] in float64, (B, L); log-softmax over the real tokens only (SUBS)."""
    logits = denoiser(z, t)
    if logits.shape[:-1] != z.shape:
        raise ValueError(f"denoiser returned logits {tuple(logits.shape)} for z {tuple(z.shape)}; want (B, L, V)")
    log_probs = torch.log_softmax(logits.double(), dim=-1)
    return log_probs.gather(-1, x.unsqueeze(-1)).squeeze(-1)


def kink_aware_grid(T: int, schedules: Sequence[Schedule]) -> Tensor:
    """A uniform grid with every schedule kink added (the ε-schedules have kinks; spec §1 Convergence)."""
    points = set(uniform_grid(T).tolist())
    for s in schedules:
        points.update(s.kinks())
    return torch.tensor(sorted(points), dtype=torch.float64)


# ---------------------------------------------------------------------------------------------------------
# discrete time
# ---------------------------------------------------------------------------------------------------------
def _step_loss(
    x: Tensor,
    z: Tensor,
    masked: Tensor,
    s: float,
    t: float,
    denoiser: Denoiser,
    forward: Schedule,
    reverse: Schedule,
) -> Tensor:
    """Σ_i ⟨z_t^i, m⟩ [−a^i log x_θ^i[x^i] + KL_Bern(a^i ‖ â^i)] for a batch of (x, z_t): one reverse step."""
    b = x.shape[0]
    s_t = torch.full((b,), s, dtype=torch.float64)
    t_t = torch.full((b,), t, dtype=torch.float64)
    a = unmask_probability(forward.log_one_minus_alpha(s_t, x), forward.log_one_minus_alpha(t_t, x))
    a_hat = unmask_probability(reverse.log_one_minus_alpha(s_t, z), reverse.log_one_minus_alpha(t_t, z))
    kl = reverse_step_kl(log_px(denoiser, z, t_t, x), a, a_hat)
    return torch.where(masked, kl, torch.zeros_like(kl)).sum(-1)


def discrete_nelbo(
    x: Tensor,
    denoiser: Denoiser,
    forward: Schedule,
    reverse: Schedule | None = None,
    grid: Tensor | int = 100,
    *,
    vocab_size: int,
    exact: bool = True,
    n_samples: int = 64,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""L_T = Σ_k E_{q(z_{t_k}|x)} Σ_i ⟨z^i, m⟩ [−a^i log x_θ^i[x^i] + KL_Bern(a^i ‖ â^i)]  (spec §1).

    ``grid`` is 0 = t_0 < … < t_T = 1 (or an int T for a uniform grid). The prior term is zero: both chains
    end fully masked. ``exact=True`` enumerates all 2^L mask patterns; otherwise ``n_samples`` draws of
    z_t per step. Returns (B,).
    """
    reverse = _reverse_of(forward, reverse)
    x = check_x(x, forward.length, vocab_size)
    grid = check_grid(grid)
    b, length = x.shape
    total = torch.zeros(b, dtype=torch.float64)
    patterns = enumerate_masks(length) if exact else None
    for k in range(1, grid.numel()):
        s, t = float(grid[k - 1]), float(grid[k])
        t_b = torch.full((b,), t, dtype=torch.float64)
        log_alpha = torch.log(forward.alpha(t_b, x))
        log1m = forward.log_one_minus_alpha(t_b, x)
        if exact:
            n = patterns.shape[0]
            masked = patterns.unsqueeze(0).expand(b, n, length)
            weight = mask_log_prob(masked, log_alpha.unsqueeze(1), log1m.unsqueeze(1)).exp()
        else:
            n = n_samples
            u = torch.rand(b, n, length, generator=generator, dtype=torch.float64)
            masked = u < log1m.exp().unsqueeze(1)
            weight = torch.full((b, n), 1.0 / n, dtype=torch.float64)
        xx = x.unsqueeze(1).expand(b, n, length)
        z = torch.where(masked, torch.full_like(xx, vocab_size), xx)
        step = _step_loss(
            xx.reshape(-1, length), z.reshape(-1, length), masked.reshape(-1, length), s, t, denoiser, forward, reverse
        ).reshape(b, n)
        # 0·(anything) = 0 for impossible patterns (weight 0, possibly an infinite loss).
        total += torch.where(weight > 0, weight * step, torch.zeros_like(step)).sum(-1)
    # +inf is a correct bound when the reverse step gives zero probability to a possible forward step
    return require_finite("discrete_nelbo", total, allow_inf=True)


# ---------------------------------------------------------------------------------------------------------
# continuous time
# ---------------------------------------------------------------------------------------------------------
def _eq2_terms(
    x: Tensor, z: Tensor, masked: Tensor, t: Tensor, denoiser: Denoiser, A: Tensor, A_hat: Tensor
) -> tuple[Tensor, Tensor]:
    """Σ_i ⟨z_t^i, m⟩ of the two Eq. (2) integrands, for a batch of (x, z_t, t) and the velocities A, Â there.

    Both terms are homogeneous of degree 1 in (A, Â), so passing t·A and t·Â gives the integrands per unit
    log-time (dt = t·du) instead: that is how :func:`continuous_integrand_log_time` uses it.
    """
    main = l_main(log_px(denoiser, z, t, x), A)
    vel = l_velocity(A, A_hat)
    zero = torch.zeros_like(main)
    return torch.where(masked, main, zero).sum(-1), torch.where(masked, vel, zero).sum(-1)


def _expected_eq2(
    x: Tensor,
    denoiser: Denoiser,
    t: Tensor,
    log1m: Tensor,
    rates: Callable[[Tensor], tuple[Tensor, Tensor]],
    vocab_size: int,
) -> NELBO:
    """E_{q(z_t|x)} of the Eq. (2) integrand by enumerating every mask pattern.

    ``log1m`` (B, L) is log(1 − α(x, t)) (the masked probability, in log space); ``rates(xx, z)`` gives the
    forward and reverse velocities (or log-time velocities) for the flattened (x, z_t) pairs.
    """
    b, length = x.shape
    patterns = enumerate_masks(length)
    n = patterns.shape[0]
    log_alpha = torch.log(-torch.expm1(log1m))  # log α = log(1 − e^{log(1−α)}): no 1 − α by subtraction
    masked = patterns.unsqueeze(0).expand(b, n, length)
    weight = mask_log_prob(masked, log_alpha.unsqueeze(1), log1m.unsqueeze(1)).exp()
    xx = x.unsqueeze(1).expand(b, n, length).reshape(-1, length)
    z = torch.where(masked.reshape(-1, length), torch.full_like(xx, vocab_size), xx)
    A, A_hat = rates(xx, z)
    t_rows = t.unsqueeze(-1).expand(b, n).reshape(-1)
    main, vel = _eq2_terms(xx, z, masked.reshape(-1, length), t_rows, denoiser, A, A_hat)
    main, vel = main.reshape(b, n), vel.reshape(b, n)
    # 0·(anything) = 0 for impossible patterns (weight 0, where the velocity may be infinite).
    keep = weight > 0
    zero = torch.zeros_like(main)
    return NELBO(torch.where(keep, weight * main, zero).sum(-1), torch.where(keep, weight * vel, zero).sum(-1))


def continuous_integrand(
    x: Tensor,
    denoiser: Denoiser,
    forward: Schedule,
    reverse: Schedule | None,
    t: float,
    *,
    vocab_size: int,
) -> NELBO:
    """E_{q(z_t|x)} of the Eq. (2) integrand at one time t, by enumerating all mask patterns. Per sequence."""
    reverse = _reverse_of(forward, reverse)
    x = check_x(x, forward.length, vocab_size)
    t_b = torch.full((x.shape[0],), float(t), dtype=torch.float64)

    def rates(xx: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        t_rows = torch.full((xx.shape[0],), float(t), dtype=torch.float64)
        return forward.velocity(t_rows, xx), reverse.velocity(t_rows, z)

    out = _expected_eq2(x, denoiser, t_b, forward.log_one_minus_alpha(t_b, x), rates, vocab_size)
    # +inf is a correct value at t = 0 or where Â = 0 < A; NaN never is
    return NELBO(
        require_finite("continuous_integrand: L_main", out.main, allow_inf=True),
        require_finite("continuous_integrand: L_velocity", out.velocity, allow_inf=True),
    )


def continuous_integrand_log_time(
    x: Tensor,
    denoiser: Denoiser,
    forward: Schedule,
    reverse: Schedule | None,
    log_t: float,
    *,
    vocab_size: int,
) -> NELBO:
    r"""t × the Eq. (2) integrand at t = e^{log_t}: the integrand per unit log-time u = −log t (dt = t du).

    Per masked position it is −(tA) log x_θ[x] + L_velocity(tA, tÂ), with tA = ∂ log(1 − α)/∂ log t and
    P(masked) = exp(log(1 − α)) both taken from the schedule's log-time forms, so t itself is never needed
    for the weights or rates: for α = 1 − t^w these are w and e^{w log t}, finite for any log t even where
    t underflows (spec §4). The denoiser still receives t = e^{log_t} (0 when it underflows).
    """
    reverse = _reverse_of(forward, reverse)
    x = check_x(x, forward.length, vocab_size)
    b = x.shape[0]
    log_t_b = torch.full((b,), float(log_t), dtype=torch.float64)

    def rates(xx: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        rows = torch.full((xx.shape[0],), float(log_t), dtype=torch.float64)
        return forward.log_time_velocity(rows, xx), reverse.log_time_velocity(rows, z)

    log1m = forward.log_one_minus_alpha_log_time(log_t_b, x)
    out = _expected_eq2(x, denoiser, torch.exp(log_t_b), log1m, rates, vocab_size)
    return NELBO(
        require_finite("continuous_integrand_log_time: L_main", out.main, allow_inf=True),
        require_finite("continuous_integrand_log_time: L_velocity", out.velocity, allow_inf=True),
    )


def continuous_nelbo_mc(
    x: Tensor,
    denoiser: Denoiser,
    forward: Schedule,
    reverse: Schedule | None = None,
    *,
    vocab_size: int,
    n_t: int = 64,
    generator: torch.Generator | None = None,
) -> NELBO:
    r"""L_OeMDM (Eq. 2) by Monte Carlo: n_t stratified times t_j = (j + U_j)/n_t, one z_t ~ q(·|x) each.

    Unbiased for the bound; returns L_main and L_velocity (per sequence) separately.
    """
    reverse = _reverse_of(forward, reverse)
    x = check_x(x, forward.length, vocab_size)
    if not isinstance(n_t, int) or n_t < 1:
        raise ValueError(f"n_t must be a positive int, got {n_t!r}")
    b, length = x.shape
    u = torch.rand(b, n_t, generator=generator, dtype=torch.float64)
    t = (torch.arange(n_t, dtype=torch.float64) + u) / n_t
    t = t.clamp_min(torch.finfo(torch.float64).tiny)  # U = 0 exactly would put t at 0, where A is infinite
    xx = x.unsqueeze(1).expand(b, n_t, length).reshape(-1, length)
    t_flat = t.reshape(-1)
    p_masked = forward.log_one_minus_alpha(t_flat, xx).exp()
    masked = torch.rand(b * n_t, length, generator=generator, dtype=torch.float64) < p_masked
    z = torch.where(masked, torch.full_like(xx, vocab_size), xx)
    A, A_hat = forward.velocity(t_flat, xx), reverse.velocity(t_flat, z)
    main, vel = _eq2_terms(xx, z, masked, t_flat, denoiser, A, A_hat)
    return NELBO(
        require_finite("continuous_nelbo_mc: L_main", main.reshape(b, n_t).mean(-1)),
        require_finite("continuous_nelbo_mc: L_velocity", vel.reshape(b, n_t).mean(-1)),
    )


def continuous_nelbo_exact(
    x: Tensor,
    denoiser: Denoiser,
    forward: Schedule,
    reverse: Schedule | None = None,
    *,
    vocab_size: int,
    epsabs: float = 1e-11,
    epsrel: float = 1e-10,
) -> NELBO:
    r"""L_OeMDM (Eq. 2) for tiny problems: enumeration over z_t, adaptive quadrature over t.

    The interval is split at every kink of both schedules, and each piece is integrated by adaptive
    Gauss–Kronrod (``scipy.integrate.quad_vec``). The first piece [0, c] is integrated in log-time,
    u = log c − log t ∈ [0, ∞), with :func:`continuous_integrand_log_time`: the velocity A ~ w/t blows up at 0
    while q(masked) ~ t^w vanishes, so the t-integrand ~ w t^{w−1} is integrable but singular for w < 1; in u
    it is ~ w e^{−w u}, smooth and finite. The log-time integrand never forms t for the rates and weights:
    for small w the mass sits at t far below the float64 range (e^{−w u} is still 1e-3 at u = 700 for
    w = 0.01), where A = w/t would be inf and t^w still positive, giving NaN.

    Raises ValueError if the result is not finite (a schedule whose log-time forms cannot be evaluated).
    """
    reverse = _reverse_of(forward, reverse)
    x = check_x(x, forward.length, vocab_size)
    cuts = sorted({0.0, 1.0, *forward.kinks(), *reverse.kinks()})

    def f(t: float) -> np.ndarray:
        with torch.no_grad():  # the quadrature needs numbers only (a grad-requiring denoiser would refuse .numpy())
            terms = continuous_integrand(x, denoiser, forward, reverse, t, vocab_size=vocab_size)
        return torch.cat([terms.main, terms.velocity]).numpy()

    log_c0 = math.log(cuts[1])

    def f_log_time(u: float) -> np.ndarray:
        with torch.no_grad():
            terms = continuous_integrand_log_time(x, denoiser, forward, reverse, log_c0 - u, vocab_size=vocab_size)
        return torch.cat([terms.main, terms.velocity]).numpy()

    first, _ = integrate.quad_vec(f_log_time, 0.0, math.inf, epsabs=epsabs, epsrel=epsrel, limit=4000)
    total = np.asarray(first, dtype=np.float64)
    for lo, hi in zip(cuts[1:-1], cuts[2:], strict=True):
        piece, _ = integrate.quad_vec(f, lo, hi, epsabs=epsabs, epsrel=epsrel, limit=4000)
        total = total + piece
    b = x.shape[0]
    out = torch.from_numpy(total)
    return NELBO(
        require_finite("continuous_nelbo_exact: L_main", out[:b]),
        require_finite("continuous_nelbo_exact: L_velocity", out[b:]),
    )
