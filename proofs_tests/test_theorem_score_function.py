"""The LoMDM gradient (spec §3 [paper, App. E.1]) and its RLOO estimator, checked by enumeration.

∇_φ E_{q_φ(z|x)}[L_φ(z)] = E_q[∇_φ log q_φ(z|x)·L_φ(z)] + E_q[∇_φ L_φ(z)], and the K-sample RLOO surrogate
is unbiased for it. Left side: autograd through the exact expectation Σ_z q_φ(z) L_φ(z) over all 2^L masks.
Right side: the expected gradient of the surrogate over all K-tuples of masks, each weighted by its
(detached) probability. The two share nothing but the toy problem.
"""

from __future__ import annotations

import itertools

import pytest
import torch

L = 3


def _problem():
    gen = torch.Generator().manual_seed(0)
    phi = torch.randn(L, generator=gen, dtype=torch.float64).requires_grad_(True)
    ce = torch.rand(2**L, L, generator=gen, dtype=torch.float64) * 3  # a CE per (mask pattern, position)
    w_hat = torch.rand(L, generator=gen, dtype=torch.float64) + 0.5
    return phi, ce, w_hat


def _masks() -> torch.Tensor:
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=L)), dtype=torch.float64)


def _loss(phi: torch.Tensor, ce: torch.Tensor, w_hat: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
    """log q_φ(z|x) and L_φ(z) = Σ_i masked_i·[(w_i/t)·CE_i + (1/t)(w_i log(w_i/ŵ_i) − w_i + ŵ_i)] per mask."""
    w = torch.nn.functional.softplus(phi) + 0.1
    m = _masks()
    log_t = torch.log(torch.tensor(t, dtype=torch.float64))
    log_q = (m * w * log_t + (1 - m) * torch.log(-torch.expm1(w * log_t))).sum(-1)
    per_pos = (w * ce + w * torch.log(w / w_hat) - w + w_hat) / t
    return log_q, (m * per_pos).sum(-1)


@pytest.mark.parametrize("k", [2, 3])
def test_rloo_surrogate_is_unbiased_for_the_true_gradient(k: int) -> None:
    phi, ce, w_hat = _problem()
    t = 0.55
    log_q, losses = _loss(phi, ce, w_hat, t)
    assert float(log_q.detach().exp().sum()) == pytest.approx(1.0, abs=1e-12)  # q_φ is a distribution over masks
    (true_grad,) = torch.autograd.grad((log_q.exp() * losses).sum(), phi, retain_graph=True)

    probs = log_q.exp().detach()
    surrogate_mean = torch.zeros((), dtype=torch.float64)
    for combo in itertools.product(range(2**L), repeat=k):
        idx = torch.tensor(combo)
        lk, lq = losses[idx], log_q[idx]
        baseline = (lk.sum() - lk) / (k - 1)  # mean of the others
        surrogate = lk.mean() + ((lk - baseline).detach() * lq).sum() / k
        surrogate_mean = surrogate_mean + probs[idx].prod() * surrogate
    (rloo_grad,) = torch.autograd.grad(surrogate_mean, phi)
    # both are exact finite sums in float64 (≤ 8^3 terms): agreement to rounding
    torch.testing.assert_close(rloo_grad, true_grad, rtol=1e-10, atol=1e-12)
