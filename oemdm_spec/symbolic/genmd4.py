r"""GenMD4 (Shi et al. 2024) as a special case of OeMDM (issue item 9; spec §2 table).

GenMD4's forward schedule is α_v(t) = 1 − t^{w_v}, one exponent per vocabulary word v, so a position whose
clean token is x has A = w_x/t. Its reverse rate into token v is (w_v/t)·μ_θ[v], with μ_θ its denoiser. Its
published continuous-time loss per masked position is (MD4 paper, generalized masking; the released code
computes the same ``dgamma_times_alpha · ((log μ_x + 1)·δ_x − μ)``):

    Σ_v (α_v'/(1 − α_v)) · [ δ_{v,x}(1 + log μ_θ[v]) − μ_θ[v] ]  =  Σ_v (−w_v/t)·[ δ_{v,x}(1 + log μ_v) − μ_v ].

In OeMDM terms the model's rate r̂_v = Â·x_θ[v] must equal (w_v/t)μ_v, so Â = Σ_v (w_v/t)μ_v and
x_θ[v] = w_v μ_v / Σ_u w_u μ_u. Plugging A = w_x/t and these into Eq. (2) gives GenMD4's loss exactly.
"""

from __future__ import annotations

import sympy as sp

from .kl import eq2_integrand, token_probabilities
from .schedules import t

__all__ = ["genmd4_published_integrand", "genmd4_as_oemdm_difference"]


def genmd4_published_integrand(vocab: int = 3) -> tuple[sp.Expr, tuple[sp.Symbol, ...], tuple[sp.Expr, ...]]:
    """GenMD4's loss at one masked position with clean token x = 0: returns (loss, w, μ)."""
    w = sp.symbols(f"w0:{vocab}", positive=True)
    mu = token_probabilities(vocab)
    weights = [sp.simplify(sp.diff(1 - t**wv, t) / t**wv) for wv in w]  # α_v'/(1 − α_v) = −w_v/t
    loss = sum(
        (weights[v] * ((1 + sp.log(mu[v])) * (1 if v == 0 else 0) - mu[v]) for v in range(vocab)), sp.Integer(0)
    )
    return loss, w, mu


def genmd4_as_oemdm_difference(vocab: int = 3) -> sp.Expr:
    """Eq. (2) with A = w_x/t, Â = Σ_v (w_v/t)μ_v, x_θ ∝ w_v μ_v, minus GenMD4's published loss (0)."""
    loss, w, mu = genmd4_published_integrand(vocab)
    rate = w[0] / t
    rate_hat = sum((w[v] * mu[v] for v in range(vocab)), sp.Integer(0)) / t
    x_theta_x = w[0] * mu[0] / sum((w[v] * mu[v] for v in range(vocab)), sp.Integer(0))
    return eq2_integrand(sp.log(x_theta_x), rate, rate_hat) - loss
