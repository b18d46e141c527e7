"""Per-position terms of the OeMDM bounds (spec §1), one equation per function.

These are the building blocks of both NELBOs in :mod:`oemdm_spec.reference.elbo` and the float64 twins of
the fused kernels in :mod:`oemdm_spec.fast.kernels`. Everything is elementwise and broadcasts. ±inf is a
legitimate value of these terms (an infinite KL, a vanishing probability); a NaN never is, so every function
but :func:`unmask_probability` (whose 0/0 at t = 0 is legitimately undefined) raises on one.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._common import require_finite

__all__ = [
    "unmask_probability",
    "kl_bernoulli",
    "reverse_step_kl",
    "l_main",
    "l_velocity",
    "row_loss",
]


def _xlogy_ratio(p: Tensor, q: Tensor) -> Tensor:
    """p·log(p/q) with the convention 0·log(0/q) = 0 (and p·log(p/0) = +inf for p > 0)."""
    return torch.xlogy(p, p) - torch.xlogy(p, q)


def unmask_probability(log1m_alpha_s: Tensor, log1m_alpha_t: Tensor) -> Tensor:
    r"""Posterior unmasking probability a = (α(s) − α(t)) / (1 − α(t))  (spec §1, "Posterior").

    Written as a = 1 − (1 − α(s))/(1 − α(t)) = −expm1(log(1−α(s)) − log(1−α(t))), so that it never forms
    1 − α by subtraction: near t → 0 both 1 − α values are tiny and the subtraction would cancel.
    """
    # Not checked for NaN: at 1 − α(t) = 0 (t = 0) a is 0/0, undefined, and no position can be masked there;
    # callers discard it, and the NaN check of the quantity they return catches any that leaks.
    return -torch.expm1(log1m_alpha_s - log1m_alpha_t)


def kl_bernoulli(a: Tensor, a_hat: Tensor) -> Tensor:
    r"""KL_Bern(a ‖ â) = a log(a/â) + (1−a) log((1−a)/(1−â))  (spec §1, discrete-time NELBO)."""
    return require_finite("kl_bernoulli", _xlogy_ratio(a, a_hat) + _xlogy_ratio(1.0 - a, 1.0 - a_hat), allow_inf=True)


def reverse_step_kl(log_px: Tensor, a: Tensor, a_hat: Tensor) -> Tensor:
    r"""KL of one reverse step at a masked position: −a·log x_θ[x] + KL_Bern(a ‖ â)  (spec §1).

    ``log_px`` is log x_θ^i[x^i], the denoiser's log-probability of the clean token. The term ``a·log x_θ``
    is taken as 0 when a = 0, whatever log_px is (the step reveals nothing then).
    """
    main = torch.where(a > 0, -a * log_px, torch.zeros_like(a))
    return require_finite("reverse_step_kl", main + kl_bernoulli(a, a_hat), allow_inf=True)


def l_main(log_px: Tensor, A: Tensor) -> Tensor:
    r"""L_main integrand at a masked position: −A·log⟨x_θ, x⟩  (Eq. 2, first term)."""
    return require_finite("l_main", -A * log_px, allow_inf=True)


def l_velocity(A: Tensor, A_hat: Tensor) -> Tensor:
    r"""L_velocity integrand at a masked position: A(log A − log Â) − (A − Â)  (Eq. 2, second term).

    A generalized KL between two rates: non-negative and zero iff Â = A. A = 0 gives Â (0·log 0 = 0).
    """
    return require_finite("l_velocity", _xlogy_ratio(A, A_hat) - (A - A_hat), allow_inf=True)


def row_loss(logits: Tensor, target: Tensor, A: Tensor, A_hat: Tensor) -> Tensor:
    r"""Per-row OeMDM loss over logits at masked rows: the reference twin of the fused loss kernel.

    ``logits`` is (N, V) over the real tokens only (SUBS: the mask id has no logit and so no mass),
    ``target`` (N,) the clean tokens, ``A`` and ``A_hat`` (N,) the forward and reverse velocities.
    Returns (N,): l_main(log_softmax(logits)[target], A) + l_velocity(A, A_hat), computed in float64.
    """
    if logits.dim() != 2:
        raise ValueError(f"row_loss: logits must be (N, V), got shape {tuple(logits.shape)}")
    n, v = logits.shape
    for name, value in (("target", target), ("A", A), ("A_hat", A_hat)):
        if value.shape != (n,):
            raise ValueError(f"row_loss: {name} must have shape ({n},), got {tuple(value.shape)}")
    if n and (int(target.min()) < 0 or int(target.max()) >= v):
        raise ValueError(
            f"row_loss: target must lie in [0, {v}), got values in [{int(target.min())}, {int(target.max())}]"
        )
    log_probs = torch.log_softmax(logits.double(), dim=-1)
    log_px = log_probs.gather(-1, target.long().unsqueeze(-1)).squeeze(-1)
    loss = l_main(log_px, A.double()) + l_velocity(A.double(), A_hat.double())
    return require_finite("row_loss", loss, allow_inf=True)
