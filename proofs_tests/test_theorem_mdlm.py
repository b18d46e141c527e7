"""MDLM, shared schedules, polynomial schedules and time re-parametrisation, numerically (spec §1 fact 5, §2).

The reference NELBO (enumeration + quadrature) is compared with closed forms computed from the denoiser's CE
table by :mod:`oemdm_spec.symbolic` (Beta integrals for MDLM; term-by-term power integrals for polynomial
schedules), which share no code with the reference.
"""

from __future__ import annotations

import pytest
import sympy as sp
import torch

from oemdm_spec.reference import denoisers, elbo
from oemdm_spec.reference import schedules as R
from oemdm_spec.symbolic import independent, invariance

V = 3
# Smooth schedules (no kinks): the quadrature runs at epsabs 1e-11 / epsrel 1e-10 on a smooth integrand,
# in log-time near 0; 1e-8 absolute on values of size ~5 allows for the w < 1 singular start.
QUAD_TOL = 1e-8


@pytest.fixture(scope="module")
def problem():
    length = 3
    den = denoisers.TabularDenoiser(length, V, seed=21)
    x = torch.tensor([1, 0, 2])
    return length, den, x, independent.ce_table(x, den, V)


def _nelbo(problem, forward, reverse=None):
    length, den, x, _ = problem
    return elbo.continuous_nelbo_exact(x.unsqueeze(0), den, forward, reverse, vocab_size=V)


def test_mdlm_velocity_is_zero_and_nelbo_is_mdlm_formula(problem) -> None:
    length, _, _, table = problem
    n = _nelbo(problem, R.MDLMSchedule(length))
    assert float(n.velocity) == 0.0  # exactly: l_velocity(A, A) = 0 pointwise
    assert float(n.total) == pytest.approx(independent.mdlm_nelbo_value(table, length), abs=QUAD_TOL)


def test_every_shared_schedule_gives_the_mdlm_nelbo(problem) -> None:
    length, _, _, table = problem
    mdlm = independent.mdlm_nelbo_value(table, length)
    for sched in (R.CosineSchedule(length), R.PolynomialSchedule(2.5, length=length),
                  R.PolynomialSchedule(0.4, length=length)):
        assert float(_nelbo(problem, sched).total) == pytest.approx(mdlm, abs=QUAD_TOL), sched


def test_polynomial_bound_closed_form_and_time_change_invariance(problem) -> None:
    length, _, _, table = problem
    w, w_hat = [0.7, 1.6, 1.1], [1.2, 0.5, 1.0]
    ce = {k: sp.Float(v, 30) for k, v in table.items()}
    closed = float(invariance.polynomial_nelbo([sp.nsimplify(a) for a in w], [sp.nsimplify(a) for a in w_hat], ce))
    fwd = R.PolynomialSchedule(torch.tensor(w, dtype=torch.float64))
    rev = R.PolynomialSchedule(torch.tensor(w_hat, dtype=torch.float64))
    n = _nelbo(problem, fwd, rev)
    assert float(n.velocity) > 0  # α̂ ≠ α
    assert float(n.total) == pytest.approx(closed, abs=QUAD_TOL)
    # τ(t) = t^p for all positions (forward and reverse alike) maps w → p·w: the bound does not move
    p = 1.7
    moved = _nelbo(problem, R.PolynomialSchedule(torch.tensor(w, dtype=torch.float64) * p),
                   R.PolynomialSchedule(torch.tensor(w_hat, dtype=torch.float64) * p))
    assert float(moved.total) == pytest.approx(float(n.total), abs=2 * QUAD_TOL)


def test_mdlm_and_arm_give_different_bounds(problem) -> None:
    length, den, x, table = problem
    mdlm = independent.mdlm_nelbo_value(table, length)
    ar = independent.plain_ar_nll(x, den, V)
    arm_small_eps = float(_nelbo(problem, R.ARMSchedule(length, 1e-3)).total)
    assert abs(arm_small_eps - ar) < 0.05  # the ARM bound sits at the AR NLL (gap ≤ C·ε, ε = 1e-3)
    assert abs(mdlm - ar) > 0.1  # and MDLM's does not: relative shapes matter
