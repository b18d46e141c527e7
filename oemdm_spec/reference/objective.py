r"""The LoMDM objective and its RLOO gradient estimator (spec §3 "One training step", "gradient").

- :func:`forward_log_prob` — log q_φ(z_t | x) in log space.
- :func:`sample_masks` — K masks per (x, t) with P(masked) = t^{w_φ}.
- :func:`position_terms` — Σ over masked positions of L_main and L_velocity (u-integrands).
- :func:`rloo_surrogate` — the REINFORCE leave-one-out surrogate (Kool et al. 2019) for any K ≥ 2.
- :func:`lomdm_loss` — one batch: the surrogate to backpropagate and the reported NELBO split into
  L_main and L_velocity (the score term excluded), as a :class:`LoMDMLoss`.
- :func:`exact_objective_at_t` — E_{q_φ(z_t|x)}[L] at one t by enumerating all masks (differentiable in φ):
  the ground truth of the estimator tests.

Time is carried as log-time u = −log t: in u every masked position has the constant hazard w (A dt = w du),
P(z^i masked | x) = e^{−w u}, and log(1 − α) = −w u exactly, so nothing is formed by subtraction (spec §4).
Per masked position, in u-units,

    L_main = −w_φ · log x_θ[x^i],     L_velocity = w_φ log(w_φ/w_ψ) − w_φ + w_ψ

which are :func:`~oemdm_spec.reference.terms.l_main` and :func:`~oemdm_spec.reference.terms.l_velocity`
with A = w_φ, Â = w_ψ (the t-form of spec §3 times dt/du = t).

Padding follows the fast path's convention: ``valid`` (B, L) is True at real (non-padding) positions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ._common import enumerate_masks, require_finite
from .networks import LoMDM
from .terms import l_main, l_velocity
from .time_densities import ClampedUniformTime, LogTimeMixture

__all__ = [
    "forward_log_prob",
    "sample_masks",
    "position_terms",
    "rloo_surrogate",
    "LoMDMLoss",
    "lomdm_loss",
    "exact_objective_at_t",
]


def forward_log_prob(masked: Tensor, w: Tensor, u: Tensor, valid: Tensor | None = None) -> Tensor:
    r"""log q_φ(z_t | x) = Σ_i [masked_i · w^i log t + (1 − masked_i) · log(1 − t^{w^i})]  (spec §3), in log space.

    With log t = −u: masked contributes −w u, unmasked log(−expm1(−w u)). ``masked`` and ``w`` are (..., L),
    ``u`` broadcasts against ``w.shape[:-1]``. Padding positions (``valid`` False) contribute nothing.
    """
    wu = w * u.to(w.dtype).unsqueeze(-1)
    per_pos = torch.where(masked, -wu, torch.log(-torch.expm1(-wu)))
    if valid is not None:
        per_pos = torch.where(valid.bool(), per_pos, torch.zeros_like(per_pos))
    return per_pos.sum(-1)


def sample_masks(
    w: Tensor, u: Tensor, n: int, generator: torch.Generator | None = None, valid: Tensor | None = None
) -> Tensor:
    """n masks per row: (B, n, L) bool, P(masked_i) = t^{w_i} = e^{−w_i u}, drawn with w detached."""
    p = torch.exp(-w.detach().double() * u.double().unsqueeze(-1))
    draws = torch.rand(w.shape[0], n, w.shape[-1], generator=generator, dtype=torch.float64)
    masked = draws < p.unsqueeze(1)
    if valid is not None:
        masked = masked & valid.bool().unsqueeze(1)  # padding is never masked
    return masked


def position_terms(log_px: Tensor, w_phi: Tensor, w_psi: Tensor, masked: Tensor) -> tuple[Tensor, Tensor]:
    r"""Per-sequence Σ_i masked_i of L_main = −w_φ log x_θ[x^i] and L_velocity = w_φ log(w_φ/w_ψ) − w_φ + w_ψ.

    These are the u-integrands (nats per unit log-time); multiply by 1/p(u) for an estimate of the bound.
    """
    main = l_main(log_px, w_phi)
    vel = l_velocity(w_phi, w_psi)
    zero = torch.zeros((), dtype=main.dtype, device=main.device)
    return torch.where(masked, main, zero).sum(-1), torch.where(masked, vel, zero).sum(-1)


def rloo_surrogate(losses: Tensor, log_q: Tensor, *, score_term: bool = True) -> Tensor:
    r"""REINFORCE leave-one-out surrogate per (x, t): (..., K) → (...)   (spec §3, Kool et al. 2019).

        surrogate = mean_k L_k + (1/K) Σ_k sg(L_k − mean_{j≠k} L_j) · log q_φ(z_k | x)

    Its gradient is an unbiased estimate of ∇ E_q[L]. Its *value* includes the score term, so it is not the
    NELBO; report mean_k L_k (``LoMDMLoss.nelbo``). K = 2 gives ½(L1 + L2) + ½·sg(L1 − L2)(log q1 − log q2) (GenMD4).
    ``score_term=False`` keeps only the pathwise part mean_k L_k: the naive, biased gradient.
    """
    k = losses.shape[-1]
    if k < 2:
        raise ValueError(f"rloo_surrogate: the leave-one-out baseline needs K >= 2 samples, got K={k}")
    if log_q.shape != losses.shape:
        raise ValueError(f"rloo_surrogate: log_q {tuple(log_q.shape)} must match losses {tuple(losses.shape)}")
    mean = losses.mean(-1)
    if not score_term:
        return mean
    detached = losses.detach()
    baseline = (detached.sum(-1, keepdim=True) - detached) / (k - 1)
    return mean + ((detached - baseline) * log_q).mean(-1)


@dataclass
class LoMDMLoss:
    """One training batch. ``surrogate`` is the scalar to backpropagate; ``main``/``velocity`` are per sequence (B,).

    ``per_sample`` (B, K) = weight·(L_main + L_velocity) of each z_k and its two parts ``per_sample_main`` /
    ``per_sample_velocity``, with their autograd graphs; ``log_q`` (B, K) = log q_φ(z_k | x) (graph to φ).

    ``main`` / ``velocity`` / ``nelbo`` are the weighted estimates of the bound (mean over the K samples),
    detached; ``nelbo`` = main + velocity excludes the surrogate term. ``is_bound`` says whether the time
    density was proper on [0, ∞) (else the numbers drop the mass below t_min and are not a bound).
    """

    surrogate: Tensor
    main: Tensor
    velocity: Tensor
    is_bound: bool
    per_sample: Tensor = field(repr=False)
    per_sample_main: Tensor = field(repr=False)
    per_sample_velocity: Tensor = field(repr=False)
    log_q: Tensor = field(repr=False)

    @property
    def nelbo(self) -> Tensor:
        return self.main + self.velocity


def lomdm_loss(
    model: LoMDM,
    x: Tensor,
    *,
    K: int = 2,
    time: ClampedUniformTime | LogTimeMixture | None = None,
    u: Tensor | None = None,
    weight: Tensor | None = None,
    masks: Tensor | None = None,
    score_term: bool = True,
    generator: torch.Generator | None = None,
    valid: Tensor | None = None,
) -> LoMDMLoss:
    r"""The LoMDM objective of one batch (spec §3 "One training step").

    1. u = −log t per sequence from ``time`` (default: the paper's ``ClampedUniformTime(1e-3)``), or given
       (``u`` with its ``weight`` 1/p(u), default weight 1, i.e. the integrand at that time).
    2. w_φ(x) from stop-grad features of x.
    3. K masks per (x, t) with P(masked) = t^{w_φ} (w_φ detached), or the given ``masks`` (B, K, L).
    4. One batched backbone pass on the K·B noisy sequences → log x_θ[x] (θ's gradient) and features; w_ψ from
       the detached features (ψ's gradient only through L_velocity).
    5. L_k = weight · Σ_masked (L_main + L_velocity), log q_φ(z_k|x) in log space, the RLOO surrogate
       averaged over the batch.

    Gradient routing (autograd does it given the detaching): θ ← L_main; φ ← L_main (through w_φ),
    L_velocity and the score term; ψ ← L_velocity.
    """
    c = model.config
    if x.dim() != 2 or x.shape[-1] != c.length:
        raise ValueError(f"lomdm_loss: x must be (B, L={c.length}), got shape {tuple(x.shape)}")
    if not isinstance(K, int) or K < 2:
        raise ValueError(f"lomdm_loss: K must be an int >= 2 (leave-one-out baseline), got K={K!r}")
    b, length = x.shape
    if u is None:
        time = time if time is not None else ClampedUniformTime()
        u, weight = time.sample(b, generator)
        is_bound = time.is_bound
    else:
        u = torch.as_tensor(u, dtype=torch.float64).expand(b)
        weight = torch.ones(b, dtype=torch.float64) if weight is None else torch.as_tensor(weight).expand(b)
        is_bound = False
    w_phi = model.w_phi(x, valid)  # (B, L), grad → φ
    if masks is None:
        masks = sample_masks(w_phi, u, K, generator, valid)
    elif masks.shape != (b, K, length):
        raise ValueError(f"lomdm_loss: masks must be (B, K, L) = {(b, K, length)}, got {tuple(masks.shape)}")
    xk = x.unsqueeze(1).expand(b, K, length)
    z = torch.where(masks, torch.full_like(xk, c.vocab_size), xk)
    valid_k = _valid_k(valid, K)
    valid_flat = None if valid_k is None else valid_k.reshape(b * K, length)
    logits, feats = model.backbone(z.reshape(b * K, length), valid_flat)
    log_px = torch.log_softmax(logits.float() if logits.dtype != torch.float64 else logits, -1)
    log_px = log_px.gather(-1, xk.reshape(b * K, length, 1)).squeeze(-1).reshape(b, K, length)
    w_psi = model.w_psi_from_features(feats, valid_flat).reshape(b, K, length)
    dtype = log_px.dtype
    w_phi_k = w_phi.to(dtype).unsqueeze(1).expand(b, K, length)
    main, vel = position_terms(log_px, w_phi_k, w_psi.to(dtype), masks)
    wt = weight.to(dtype).unsqueeze(-1)
    losses = wt * (main + vel)  # (B, K)
    log_q = forward_log_prob(masks, w_phi_k, u.unsqueeze(-1).expand(b, K), valid_k)
    surrogate = rloo_surrogate(losses, log_q.to(dtype), score_term=score_term).mean()
    require_finite("lomdm_loss: surrogate", surrogate)
    return LoMDMLoss(
        surrogate=surrogate,
        main=require_finite("lomdm_loss: L_main", (wt * main).mean(-1).detach()),
        velocity=require_finite("lomdm_loss: L_velocity", (wt * vel).mean(-1).detach()),
        is_bound=is_bound,
        per_sample=losses,
        per_sample_main=wt * main,
        per_sample_velocity=wt * vel,
        log_q=log_q,
    )


def _valid_k(valid: Tensor | None, K: int) -> Tensor | None:
    """(B, L) real-position mask → (B, K, L) for the K samples (None stays None)."""
    return None if valid is None else valid.unsqueeze(1).expand(valid.shape[0], K, valid.shape[1])


def exact_objective_at_t(model: LoMDM, x: Tensor, u: float | Tensor) -> tuple[Tensor, Tensor]:
    r"""E_{q_φ(z_t|x)} of the u-integrand at one log-time u, by enumerating all 2^L masks: (L_main, L_velocity).

    Differentiable in θ, φ and ψ: the autograd gradient of (main + velocity) w.r.t. φ is the exact
    ∇_φ E_q[L] = E_q[∇ log q_φ · L] + E_q[∇_φ L] that the RLOO surrogate estimates. For tiny L only.
    """
    c = model.config
    if x.dim() != 2 or x.shape[-1] != c.length:
        raise ValueError(f"exact_objective_at_t: x must be (B, L={c.length}), got shape {tuple(x.shape)}")
    patterns = enumerate_masks(c.length)  # (2^L, L)
    n = patterns.shape[0]
    b = x.shape[0]
    masks = patterns.unsqueeze(0).expand(b, n, c.length)
    u_t = torch.as_tensor(u, dtype=torch.float64).expand(b)
    w_phi = model.w_phi(x)
    xk = x.unsqueeze(1).expand(b, n, c.length)
    z = torch.where(masks, torch.full_like(xk, c.vocab_size), xk).reshape(b * n, c.length)
    logits, feats = model.backbone(z)
    log_px = torch.log_softmax(logits, -1).gather(-1, xk.reshape(b * n, c.length, 1)).squeeze(-1)
    w_psi = model.w_psi_from_features(feats).reshape(b, n, c.length)
    w_phi_k = w_phi.unsqueeze(1).expand(b, n, c.length)
    main, vel = position_terms(log_px.reshape(b, n, c.length), w_phi_k, w_psi, masks)
    q = forward_log_prob(masks, w_phi_k, u_t.unsqueeze(-1).expand(b, n)).exp().to(main.dtype)
    return require_finite("exact_objective_at_t: L_main", (q * main).sum(-1)), require_finite(
        "exact_objective_at_t: L_velocity", (q * vel).sum(-1)
    )
