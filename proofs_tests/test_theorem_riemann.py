"""The discrete-time bound (spec §1 "Riemann-sum form", "Convergence"), numerically.

The reference L_T (``discrete_nelbo``: per-step −a log x_θ + KL_Bern over enumerated masks) is compared with
the Riemann-sum form Σ_i Σ_k (α^i(t_{k−1}) − α^i(t_k)) g_i(t_k) built from the denoiser's CE table
(:func:`oemdm_spec.symbolic.riemann.riemann_nelbo`), and with the continuous bound.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
import torch

from oemdm_spec.reference import denoisers, elbo
from oemdm_spec.reference import schedules as R
from oemdm_spec.symbolic import independent, riemann
from oemdm_spec.symbolic import schedules as S

V = 3


def _table(length: int, seed: int, x: list[int]):
    den = denoisers.TabularDenoiser(length, V, seed=seed)
    xt = torch.tensor(x)
    table = independent.ce_table(xt, den, V)
    return den, xt, {k: sp.Float(v, 30) for k, v in table.items()}


@pytest.mark.parametrize(
    ("sym", "ref", "T"),
    [(S.mdlm(3), R.MDLMSchedule(3), 5), (S.arm(3, sp.Rational(1, 10)), R.ARMSchedule(3, 0.1), 6),
     (S.cosine(3), R.CosineSchedule(3), 4)],
    ids=["mdlm", "arm", "cosine"],
)
def test_discrete_bound_is_the_right_endpoint_riemann_sum(sym, ref, T) -> None:
    den, x, ce = _table(3, 2, [2, 0, 1])
    grid = [sp.Rational(k, T) for k in range(T + 1)]  # contains the ARM kinks 1/3, 2/3 for T = 6
    riemann_form = float(riemann.riemann_nelbo(sym, ce, grid))
    reference = float(elbo.discrete_nelbo(x.unsqueeze(0), den, ref, None, T, vocab_size=V))
    # two float64 evaluations of the same finite sum by different formulas: rounding only (~1e-15 · 10 terms)
    assert reference == pytest.approx(riemann_form, abs=1e-11)


def test_a_random_denoiser_can_make_the_discrete_bound_increase() -> None:
    # Seed 3: both positions predict *worse* with the other token revealed (CE_i({i}) > CE_i({0, 1})), so
    # g_i(t) = CE_i({i}) + t·(CE_i({0,1}) − CE_i({i})) decreases in t: L_T is below the limit and grows.
    den, x, ce = _table(2, 3, [0, 1])
    for i in range(2):
        assert ce[(i, frozenset({0, 1}))] < ce[(i, frozenset({i}))]
    sched = R.MDLMSchedule(2)
    values = [float(elbo.discrete_nelbo(x.unsqueeze(0), den, sched, None, T, vocab_size=V)) for T in (1, 2, 4, 8)]
    limit = float(elbo.continuous_nelbo_exact(x.unsqueeze(0), den, sched, vocab_size=V).total)
    assert values == sorted(values) and values[-1] < limit  # increasing under nested refinement, below
    # and for a denoiser that uses context (seed 2: g non-decreasing) it is the other way round
    den, x, ce = _table(2, 2, [0, 1])
    values = [float(elbo.discrete_nelbo(x.unsqueeze(0), den, sched, None, T, vocab_size=V)) for T in (1, 2, 4, 8)]
    limit = float(elbo.continuous_nelbo_exact(x.unsqueeze(0), den, sched, vocab_size=V).total)
    assert values == sorted(values, reverse=True) and values[-1] > limit


@pytest.mark.parametrize(
    ("w", "w_hat", "rate", "tol"),
    [((0.3, 0.3), None, 0.6, 0.05), ((0.5,), (1.0,), 0.5, 0.02)],
    ids=["matched-w0.3", "mismatched-w0.5"],
)
def test_convergence_rate_for_exponents_below_one(w, w_hat, rate, tol) -> None:
    # spec §1 Convergence: Θ(T^−min(1, w_i + w_j)) when α̂ = α, Θ(T^−min w) when α̂ ≠ α. The mismatched case
    # uses L = 1, where g is constant and the whole error is the KL_Bern steps near t = 0 (a pure T^−w);
    # with L = 2 the extra T^−(w_i+w_j) and T^−1 terms bend the fit over this range of T.
    den, x, _ = _table(len(w), 3, [1, 2][: len(w)])
    fwd = R.PolynomialSchedule(torch.tensor(w, dtype=torch.float64))
    rev = None if w_hat is None else R.PolynomialSchedule(torch.tensor(w_hat, dtype=torch.float64))
    limit = float(elbo.continuous_nelbo_exact(x.unsqueeze(0), den, fwd, rev, vocab_size=V).total)
    Ts = np.array([16, 64, 256])
    errors = [float(elbo.discrete_nelbo(x.unsqueeze(0), den, fwd, rev, int(T), vocab_size=V)) - limit for T in Ts]
    fitted = -np.polyfit(np.log(Ts), np.log(np.abs(errors)), 1)[0]
    # matched: the O(1/T) term bends the log-log line a little at T = 16 (measured 0.585 against 0.6);
    # mismatched L = 1: measured 0.4999
    assert abs(fitted - rate) < tol, (errors, fitted)


def test_power_grid_restores_first_order_convergence() -> None:
    # spec §1 Convergence: t_k = (k/T)^p with p ≥ 1/min w restores O(1/T). L = 1, w = 0.5, ŵ = 1 (rate 0.5 on
    # a uniform grid, see above); p = 2 = 1/w.
    den, x, _ = _table(1, 3, [1])
    fwd = R.PolynomialSchedule(torch.tensor([0.5], dtype=torch.float64))
    rev = R.PolynomialSchedule(torch.tensor([1.0], dtype=torch.float64))
    limit = float(elbo.continuous_nelbo_exact(x.unsqueeze(0), den, fwd, rev, vocab_size=V).total)
    Ts = np.array([16, 64, 256])
    grids = [torch.linspace(0, 1, int(T) + 1, dtype=torch.float64) ** 2 for T in Ts]
    errors = [float(elbo.discrete_nelbo(x.unsqueeze(0), den, fwd, rev, g, vocab_size=V)) - limit for g in grids]
    fitted = -np.polyfit(np.log(Ts), np.log(np.abs(errors)), 1)[0]
    assert abs(fitted - 1.0) < 0.05, (errors, fitted)
