r"""Ancestral samplers of the reverse process (spec §1 "Reverse process", §3 "Sampler"), in float64.

:func:`ancestral_sample` runs the reverse chain on a grid 1 = t_T > … > t_0 = 0 with any reverse
schedule α̂(z_t, ·): each masked position unmasks from t to s with probability
â = (α̂(z_t, s) − α̂(z_t, t))/(1 − α̂(z_t, t)) — for a polynomial schedule 1 − t^w that is 1 − (s/t)^w — and
its token is drawn from x_θ^i(z_t) in float64. At t_0 = 0 every position is revealed (â = 1).

:func:`first_hitting_sample` is exact in continuous time for reverse schedules with polynomial hazards
Â^i = w^i(z)/t and a time-agnostic denoiser: in log-time every masked position has a constant hazard w^i,
so the next position to unmask is i with probability w^i/Σ_j w^j (spec §3, "Order semantics").

:func:`lomdm_sample` drives either sampler with a LoMDM model's reverse exponents w_ψ(z_t) (spec §3 "Sampler").

All return the generation order: the step at which each position was revealed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ._common import Denoiser, check_grid, no_grad64
from .schedules import Schedule
from .terms import unmask_probability

if TYPE_CHECKING:  # only for the annotation: the generic samplers do not need the networks
    from .networks import LoMDM

__all__ = ["SampleResult", "power_grid", "ancestral_sample", "first_hitting_sample", "lomdm_sample"]


@dataclass(frozen=True)
class SampleResult:
    """Samples (B, L), the step at which each position was revealed (B, L; −1 = fixed by the caller), and
    the number of denoiser calls made (the cache skips calls when nothing changed)."""

    tokens: Tensor
    order: Tensor
    denoiser_calls: int


def power_grid(T: int, power: float = 1.0) -> Tensor:
    r"""t_k = (k/T)^p, k = 0..T (float64). p ≥ 1/min w keeps the last step from revealing a mass of
    positions at once when some exponents are small (spec §3 "Grid warning")."""
    if not isinstance(T, int) or T < 1:
        raise ValueError(f"power_grid: T must be a positive int, got {T!r}")
    if not power > 0:
        raise ValueError(f"power_grid: power must be > 0, got {power!r}")
    return (torch.arange(T + 1, dtype=torch.float64) / T) ** power


def _initial_state(
    n_samples: int, length: int, vocab_size: int, fixed: dict[int, int] | None
) -> tuple[Tensor, Tensor]:
    z = torch.full((n_samples, length), vocab_size, dtype=torch.long)
    order = torch.full((n_samples, length), -2, dtype=torch.long)  # −2: not yet revealed
    for pos, tok in (fixed or {}).items():
        if not 0 <= int(pos) < length:
            raise ValueError(f"fixed: position {pos} is out of range [0, {length})")
        if not 0 <= int(tok) < vocab_size:
            raise ValueError(f"fixed: token {tok} at position {pos} is out of range [0, {vocab_size})")
        z[:, int(pos)] = int(tok)
        order[:, int(pos)] = -1
    return z, order


def _token_probs(denoiser: Denoiser, z: Tensor, t: float, vocab_size: int) -> Tensor:
    logits = denoiser(z, torch.full(z.shape[:1], t, dtype=torch.float64))
    if logits.shape != (*z.shape, vocab_size):
        raise ValueError(f"denoiser returned {tuple(logits.shape)}, want {(*z.shape, vocab_size)}")
    return torch.softmax(logits.double(), dim=-1)  # float64 draws (spec §4)


def _draw_tokens(probs: Tensor, greedy: bool, generator: torch.Generator | None) -> Tensor:
    if greedy:
        return probs.argmax(-1)
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat, 1, generator=generator).reshape(probs.shape[:-1])


def ancestral_sample(
    denoiser: Denoiser,
    reverse: Schedule,
    *,
    vocab_size: int,
    n_samples: int = 1,
    grid: Tensor | int = 128,
    generator: torch.Generator | None = None,
    fixed: dict[int, int] | None = None,
    top_k: bool = False,
    greedy_tokens: bool = False,
    time_agnostic: bool = True,
) -> SampleResult:
    r"""Ancestral sampling of p_T on ``grid`` (ascending 0 = t_0 < … < t_T = 1, or an int T for uniform).

    - ``fixed``: {position: token} for infilling; those positions start revealed and stay.
    - ``top_k=True``: the deterministic variant. At each step it reveals the k masked positions with the
      largest â, where k is the expected count Σ â rounded stochastically-free (nearest integer, at least
      one on the last step for everything left); no unmasking coin is flipped.
    - ``greedy_tokens``: argmax tokens instead of draws.
    - ``time_agnostic``: the denoiser ignores t, so when no position changed the previous pass is reused
      (the cache; spec §3 "Sampler").
    """
    grid = check_grid(grid)
    if not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive int, got {n_samples!r}")
    length = reverse.length
    z, order = _initial_state(n_samples, length, vocab_size, fixed)
    calls, probs, cached_z = 0, None, None
    n_steps = grid.numel() - 1
    for k in range(n_steps, 0, -1):
        masked = z == vocab_size
        if not bool(masked.any()):
            break
        s, t = float(grid[k - 1]), float(grid[k])
        if probs is None or not time_agnostic or not torch.equal(z, cached_z):
            probs, cached_z = _token_probs(denoiser, z, t, vocab_size), z.clone()
            calls += 1
        s_b = torch.full((n_samples,), s, dtype=torch.float64)
        t_b = torch.full((n_samples,), t, dtype=torch.float64)
        a_hat = unmask_probability(reverse.log_one_minus_alpha(s_b, z), reverse.log_one_minus_alpha(t_b, z))
        if top_k:
            score = torch.where(masked, a_hat, torch.full_like(a_hat, -1.0))
            n_reveal = torch.where(masked, a_hat, torch.zeros_like(a_hat)).sum(-1).round().long()
            if k == 1:
                n_reveal = masked.sum(-1)
            rank = score.argsort(-1, descending=True).argsort(-1)
            reveal = masked & (rank < n_reveal.unsqueeze(-1))
        else:
            u = torch.rand(z.shape, generator=generator, dtype=torch.float64)
            reveal = masked & (u < a_hat)
        tokens = _draw_tokens(probs, greedy_tokens, generator)
        z = torch.where(reveal, tokens, z)
        order = torch.where(reveal, torch.full_like(order, n_steps - k), order)
    return SampleResult(z, order, calls)


def first_hitting_sample(
    denoiser: Denoiser,
    rates: Callable[[Tensor], Tensor],
    *,
    vocab_size: int,
    length: int,
    n_samples: int = 1,
    generator: torch.Generator | None = None,
    fixed: dict[int, int] | None = None,
    top_k: bool = False,
    greedy_tokens: bool = False,
) -> SampleResult:
    r"""Reveal one position per step: i with probability w^i(z)/Σ_{masked j} w^j(z), token from x_θ^i(z).

    ``rates(z) -> (B, L)`` gives the positive log-time hazards w^i(z) (for α̂ = 1 − t^{w(z)}, the exponent).
    Exact for the continuous-time reverse process when the denoiser is time-agnostic (spec §3); it makes
    L − |fixed| denoiser calls. ``top_k=True`` reveals the masked position of largest w deterministically.
    The denoiser is called with t = 1 (it must ignore t for this sampler to be exact).
    """
    z, order = _initial_state(n_samples, length, vocab_size, fixed)
    calls, step = 0, 0
    rows = torch.arange(n_samples)
    while bool((z == vocab_size).any()):
        masked = z == vocab_size
        probs = _token_probs(denoiser, z, 1.0, vocab_size)
        calls += 1
        w = rates(z).double()
        # `not (w > 0)` also catches NaN, which `w <= 0` would let through into multinomial
        if w.shape != z.shape or not bool((w[masked] > 0).all() and torch.isfinite(w[masked]).all()):
            raise ValueError(f"rates(z) must be finite and positive with shape {tuple(z.shape)}")
        weight = torch.where(masked, w, torch.zeros_like(w))
        active = masked.any(-1)
        safe = torch.where(active.unsqueeze(-1), weight, torch.ones_like(weight))
        pos = safe.argmax(-1) if top_k else torch.multinomial(safe, 1, generator=generator).squeeze(-1)
        tokens = _draw_tokens(probs[rows, pos], greedy_tokens, generator)
        z[rows[active], pos[active]] = tokens[active]
        order[rows[active], pos[active]] = step
        step += 1
    return SampleResult(z, order, calls)


def lomdm_sample(
    model: LoMDM,
    n_samples: int,
    *,
    method: str = "first_hitting",
    top_k: bool = False,
    grid: Tensor | int | None = None,
    generator: torch.Generator | None = None,
    fixed: dict[int, int] | None = None,
    greedy_tokens: bool = False,
) -> SampleResult:
    r"""Generate with the reverse process driven by w_ψ(z_t) (spec §3 "Sampler"); returns tokens and the order.

    - ``method="first_hitting"`` (default): one position per step, i with probability w_ψ^i/Σ_{masked} w_ψ^j,
      exact in continuous time for this time-agnostic denoiser. ``top_k=True``: the masked position of
      largest w_ψ, deterministically.
    - ``method="ancestral"``: the grid sampler; each masked i unmasks from t to s with probability
      1 − (s/t)^{w_ψ^i(z_t)}. ``grid`` defaults to the power grid T = max(128, 8L), p = 1/w_min
      (spec §3 "Grid warning").
      ``top_k=True`` reveals, per step, the positions of largest â (hence of largest w_ψ).

    ``result.order[b, i]`` is the step at which position i was revealed (−1 for ``fixed`` positions).
    """
    c = model.config
    if method not in ("first_hitting", "ancestral"):
        raise ValueError(f"lomdm_sample: method must be 'first_hitting' or 'ancestral', got method={method!r}")
    if not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"lomdm_sample: n_samples must be a positive int, got n_samples={n_samples!r}")
    denoiser = _no_grad64_denoiser(model)
    if method == "first_hitting":
        return first_hitting_sample(
            denoiser,
            no_grad64(model.w_psi),
            vocab_size=c.vocab_size,
            length=c.length,
            n_samples=n_samples,
            generator=generator,
            fixed=fixed,
            top_k=top_k,
            greedy_tokens=greedy_tokens,
        )
    if grid is None:
        grid = power_grid(max(128, 8 * c.length), max(1.0, 1.0 / c.w_range[0]))
    return ancestral_sample(
        denoiser,
        model.reverse_schedule(),
        vocab_size=c.vocab_size,
        n_samples=n_samples,
        grid=grid,
        generator=generator,
        fixed=fixed,
        top_k=top_k,
        greedy_tokens=greedy_tokens,
    )


def _no_grad64_denoiser(model: LoMDM) -> Callable[[Tensor, Tensor], Tensor]:
    def denoiser(z: Tensor, t: Tensor) -> Tensor:
        with torch.no_grad():
            return model(z.long(), t).double()

    return denoiser
