"""ARM and fixed-order theorems (spec §2), numerically, in exact mode with random tabular denoisers.

Two independent computations are compared: L_OeMDM from the reference (``continuous_nelbo_exact``:
enumeration over masks and adaptive quadrature split at the kinks) and the AR NLL from a plain
left-to-right loop over the denoiser (:func:`oemdm_spec.symbolic.independent.plain_ar_nll`). A third,
the closed-form polynomial in ε from the CE table (:mod:`oemdm_spec.symbolic.nelbo`), gives the exact slope.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
import torch

from oemdm_spec.reference import denoisers, elbo
from oemdm_spec.reference import schedules as R
from oemdm_spec.symbolic import independent, limits
from oemdm_spec.symbolic import schedules as S

EPS = (0.1, 0.03, 0.01, 0.003)
V = 3
# Quadrature tolerance: quad_vec runs with epsabs = 1e-11, epsrel = 1e-10 on each of ≤ L + 1 smooth pieces,
# where the integrand is a polynomial in t (α piecewise linear, x_θ time-agnostic) that Gauss–Kronrod
# integrates exactly; the remaining error is float64 rounding of sums of ~2^L·L terms of size ≤ 10: ≲ 1e-12.
# 1e-9 is a safe margin that still resolves the gap at ε = 0.003 (≥ 1e-3) to six digits.
QUAD_TOL = 1e-9


def _gaps(length: int, seed: int, x: list[int], order: list[int] | None):
    den = denoisers.TabularDenoiser(length, V, seed=seed)
    xt = torch.tensor(x)
    sched = (lambda e: R.ARMSchedule(length, e)) if order is None else (lambda e: R.FixedOrderSchedule(order, e))
    nelbos = [elbo.continuous_nelbo_exact(xt.unsqueeze(0), den, sched(e), vocab_size=V) for e in EPS]
    ar = independent.plain_ar_nll(xt, den, V, order)
    table = independent.ce_table(xt, den, V)
    return nelbos, ar, table


@pytest.mark.parametrize(
    ("length", "seed", "x", "order"),
    [(4, 1, [0, 2, 1, 1], None), (3, 7, [0, 1, 1], [1, 2, 0])],
    ids=["arm-L4", "order-L3"],
)
def test_oemdm_with_window_schedule_tends_to_ar_nll_linearly(length, seed, x, order) -> None:
    nelbos, ar, table = _gaps(length, seed, x, order)
    assert all(float(n.velocity) == 0.0 for n in nelbos)  # α̂ = α: no velocity term
    gaps = np.array([float(n.total) - ar for n in nelbos])
    eps = np.array(EPS)

    # (1) the explicit bound of item 7: |gap| ≤ ε·Σ_i C_i·D_i, C_i = L − 1 + n_i, D_i the CE spread
    ranks = list(range(length)) if order is None else [order.index(i) for i in range(length)]
    constants = limits.arm_constant(length)
    spread = independent.max_ce_spread(table, length, order)
    bound = sum(constants[ranks[i]] * spread[i] for i in range(length))
    assert np.all(np.abs(gaps) <= bound * eps + QUAD_TOL), (gaps, bound)
    # and the spec's total constant (2L + L(L − 1)/2)·max_i D_i (verified symbolically for L ≤ 4)
    spec_bound = float(limits.spec_arm_constant(length)) * max(spread)
    assert np.all(np.abs(gaps) <= spec_bound * eps + QUAD_TOL), (gaps, spec_bound)

    # (2) linear convergence: the log-log slope of |gap| against ε is 1 (a fit over 1.5 decades)
    rate = np.polyfit(np.log(eps), np.log(np.abs(gaps)), 1)[0]
    assert 0.9 < rate < 1.1, rate

    # (3) the fitted slope (gap ≈ s·ε + q·ε²) against the exact one, d/dε of the closed-form polynomial at 0.
    sym = S.arm(length) if order is None else S.fixed_order(order)
    poly = independent.window_nelbo_polynomial(sym, table)
    exact_slope = float(sp.diff(poly, S.eps).subs(S.eps, 0))
    fitted_slope = np.linalg.lstsq(np.stack([eps, eps**2], 1), gaps, rcond=None)[0][0]
    # the ε³.. terms left out of the fit are ≤ (L choose 3)·max D·ε³ ≈ 1e-2 at ε = 0.1, a 2% effect on s
    assert fitted_slope == pytest.approx(exact_slope, rel=0.03)
    assert abs(exact_slope) <= bound
    # the polynomial and the quadrature agree at every ε (independent routes to the same number)
    for e, n in zip(EPS, nelbos, strict=True):
        assert float(n.total) == pytest.approx(float(poly.subs(S.eps, e)), abs=QUAD_TOL)
    # and at ε = 0 the polynomial is the AR NLL exactly (the theorem without the O(ε))
    assert float(poly.subs(S.eps, 0)) == pytest.approx(ar, abs=1e-12)
