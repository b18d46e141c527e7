r"""The per-position KL of one reverse step, its continuous-time limit and its rate form (spec §1).

Each ``*_difference`` function returns a sympy expression that is identically zero exactly when the spec's
claim holds; the tests (and ``docs/theory/``) reduce it with :func:`prove_zero`. Functions named ``*_limit``
return a pair (expression, expected value) of a limit.

Symbols: one masked position whose clean token is x = 0 (without loss of generality), a vocabulary of
``V`` real tokens with denoiser probabilities p_0..p_{V−1} (p_{V−1} = 1 − Σ the others), the posterior
unmasking probability a, the model's â, and the rates A, Â.
"""

from __future__ import annotations

import sympy as sp

__all__ = [
    "prove_zero",
    "token_probabilities",
    "kl_bernoulli",
    "posterior_difference",
    "reverse_step_kl_difference",
    "unmask_probability_first_order",
    "reverse_step_first_order_limit",
    "generalized_kl_difference",
    "eq2_integrand",
]

a, a_hat = sp.symbols("a ahat", positive=True)
A, A_hat = sp.symbols("A Ahat", positive=True)
h = sp.Symbol("h", positive=True)


def prove_zero(expr: sp.Expr) -> bool:
    """True iff sympy reduces ``expr`` to 0 (expanding logs of positive quantities first)."""
    e = sp.expand_log(sp.sympify(expr), force=True)
    return sp.simplify(e) == 0 or sp.simplify(sp.expand(e)) == 0


def token_probabilities(vocab: int) -> tuple[sp.Expr, ...]:
    """A generic point of the simplex Δ^V: p_0..p_{V−2} free and positive, p_{V−1} = 1 − Σ the others."""
    free = sp.symbols(f"p0:{vocab - 1}", positive=True)
    return (*free, 1 - sum(free))


def kl_bernoulli(p: sp.Expr, q: sp.Expr) -> sp.Expr:
    """KL_Bern(p ‖ q) = p log(p/q) + (1 − p) log((1 − p)/(1 − q))."""
    return p * sp.log(p / q) + (1 - p) * sp.log((1 - p) / (1 - q))


def _kl_categorical(q: list[sp.Expr], p: list[sp.Expr]) -> sp.Expr:
    """Σ_v q_v log(q_v / p_v), skipping the v where q_v is structurally 0 (0 · log 0 = 0)."""
    return sum((qv * sp.log(qv / pv) for qv, pv in zip(q, p, strict=True) if qv != 0), sp.Integer(0))


def posterior_difference() -> tuple[sp.Expr, sp.Expr]:
    r"""Spec §1 "Posterior" [derived]: q(z_s = x | z_t = m, x) = (α(s) − α(t)) / (1 − α(t)).

    The forward chain from s to t keeps a clean token with probability α(t)/α(s) (so that the marginal at t is
    α(s)·α(t)/α(s) = α(t)) and masks it otherwise; m is absorbing. Bayes' rule then gives the posterior.
    Returns (marginal consistency difference, posterior difference), both identically 0.
    """
    al_s, al_t = sp.symbols("alpha_s alpha_t", positive=True)
    keep = al_t / al_s  # P(z_t = x | z_s = x)
    marginal = al_s * keep - al_t
    # P(z_s = x | z_t = m) = P(z_t = m | z_s = x) P(z_s = x) / P(z_t = m); from z_s = m, z_t = m surely.
    posterior = (1 - keep) * al_s / (1 - al_t)
    return marginal, posterior - (al_s - al_t) / (1 - al_t)


def reverse_step_kl_difference(vocab: int = 3) -> sp.Expr:
    r"""Issue item 1 / spec §1 "Discrete-time NELBO" [derived]: the per-position KL of one reverse step.

    KL( Cat(a·δ_x + (1−a)·δ_m) ‖ Cat(â·x_θ + (1−â)·δ_m) ) = −a log x_θ[x] + KL_Bern(a ‖ â).
    The categoricals are built over all V + 1 states (V real tokens and m) from a generic x_θ ∈ Δ^V.
    Returns KL − (right-hand side), identically 0.
    """
    p = token_probabilities(vocab)
    q_post = [a] + [sp.Integer(0)] * (vocab - 1) + [1 - a]  # clean token x = 0, last state is m
    p_model = [a_hat * pv for pv in p] + [1 - a_hat]
    kl = _kl_categorical(q_post, p_model)
    return kl - (-a * sp.log(p[0]) + kl_bernoulli(a, a_hat))


def unmask_probability_first_order() -> sp.Expr:
    r"""Issue item 2 [derived]: a = (α(t − h) − α(t))/(1 − α(t)) = A(t)·h + O(h²), A = −∂_tα/(1 − α).

    α is a generic (undefined) smooth function. Returns (first-order coefficient of a in h) − A(t), 0.
    """
    tt = sp.Symbol("t", positive=True)
    alpha = sp.Function("alpha")
    a_h = (alpha(tt - h) - alpha(tt)) / (1 - alpha(tt))
    coeff = sp.diff(a_h, h).subs(h, 0).doit()
    velocity = -sp.diff(alpha(tt), tt) / (1 - alpha(tt))
    return sp.simplify(coeff - velocity)


def eq2_integrand(log_px: sp.Expr, rate: sp.Expr = A, rate_hat: sp.Expr = A_hat) -> sp.Expr:
    """The Eq. (2) integrand at one masked position: −A log x_θ[x] + A(log A − log Â) − (A − Â)."""
    return -rate * log_px + rate * (sp.log(rate) - sp.log(rate_hat)) - (rate - rate_hat)


def reverse_step_first_order_limit() -> tuple[sp.Expr, sp.Expr]:
    r"""Issue item 2 [derived]: the reverse-step KL over dt tends to the Eq. (2) integrand.

    With a = A h + a₂h² and â = Â h + b₂h² (any second-order terms), as h → 0
    (−a log x_θ[x] + KL_Bern(a ‖ â)) / h → −A log x_θ[x] + A log(A/Â) − A + Â.
    Returns (the limit computed by sympy, the Eq. (2) integrand).
    """
    a2, b2 = sp.symbols("a2 b2", real=True)
    px = sp.Symbol("p_x", positive=True)
    a_h = A * h + a2 * h**2
    ah_h = A_hat * h + b2 * h**2
    step = -a_h * sp.log(px) + kl_bernoulli(a_h, ah_h)
    lim = sp.limit(sp.expand_log(step / h, force=True), h, 0, "+")
    return lim, eq2_integrand(sp.log(px))


def generalized_kl_difference(vocab: int = 3) -> sp.Expr:
    r"""Issue item 3 / spec §1 fact 1 [derived]: the Eq. (2) integrand is a generalized KL of jump rates.

    True reverse rates r_v = A·δ_{v,x}; model rates r̂_v = Â·x_θ[v] (v over the real tokens). The generalized
    KL Σ_v r_v log(r_v / r̂_v) − r_v + r̂_v (with 0 log 0 = 0) equals the Eq. (2) integrand because Σ_v x_θ[v] = 1.
    Returns the difference, identically 0.
    """
    p = token_probabilities(vocab)
    r = [A] + [sp.Integer(0)] * (vocab - 1)
    r_hat = [A_hat * pv for pv in p]
    gen_kl = _kl_categorical(r, r_hat) + sum((rh - rv for rv, rh in zip(r, r_hat, strict=True)), sp.Integer(0))
    return gen_kl - eq2_integrand(sp.log(p[0]))
