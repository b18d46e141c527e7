"""The sympy schedules serve the numbers: their lambdified closed forms agree with the torch classes."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
import torch

from oemdm_spec.reference import schedules as R
from oemdm_spec.symbolic import schedules as S
from oemdm_spec.symbolic.rates import masked_mass_difference, velocity_of

EPS = 0.1
W_POLY = [0.5, 1.0, 1.7]  # torch.tensor of Python floats is float32: pass dtype explicitly below
CASES = [
    ("mdlm", S.mdlm(3), {}, R.MDLMSchedule(3)),
    ("mdlm-loglinear", S.mdlm(3, sp.Rational(1, 20)), {}, R.MDLMSchedule(3, eps=0.05)),
    ("polynomial", S.polynomial([0.5, 1, 1.7]), {}, R.PolynomialSchedule(torch.tensor(W_POLY, dtype=torch.float64))),
    ("cosine", S.cosine(2), {}, R.CosineSchedule(2)),
    ("arm", S.arm(4), {S.eps: EPS}, R.ARMSchedule(4, EPS)),
    ("order", S.fixed_order([2, 0, 3, 1]), {S.eps: EPS}, R.FixedOrderSchedule([2, 0, 3, 1], EPS)),
    ("block", S.block(4, 2), {S.eps: EPS}, R.BlockSchedule(4, 2, EPS)),
]


@pytest.mark.parametrize(("name", "sym", "values", "torch_schedule"), CASES, ids=[c[0] for c in CASES])
def test_lambdified_schedule_agrees_with_torch_class(name, sym, values, torch_schedule) -> None:
    # Points strictly inside the smooth pieces (kinks are at multiples of 1/4 and 1/2): both sides are then
    # the same closed form evaluated in float64, so they agree to a few ulps of the velocity (≤ 1/t ≤ 1e3);
    # the tolerance 1e-10 leaves room for the differently arranged arithmetic.
    tt = np.array([1e-3, 0.05, 0.2, 0.3, 0.45, 0.6, 0.7, 0.8, 0.95, 0.999])
    fns = sym.numeric(values)
    t_torch = torch.tensor(tt, dtype=torch.float64)
    for key in ("alpha", "log_one_minus_alpha", "velocity"):
        want = getattr(torch_schedule, key)(t_torch).numpy()
        np.testing.assert_allclose(fns[key](tt), want, rtol=1e-10, atol=1e-12, err_msg=f"{name}.{key}")
    assert tuple(float(k) for k in sym.kinks) == pytest.approx(torch_schedule.kinks())


def test_lambdified_schedule_is_a_reference_schedule() -> None:
    sched = S.LambdifiedSchedule.build(S.arm(3), {S.eps: EPS})
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    torch.testing.assert_close(sched.alpha(t), R.ARMSchedule(3, EPS).alpha(t), rtol=1e-12, atol=1e-14)
    assert sched.kinks() == pytest.approx((1 / 3, 2 / 3))


def test_velocity_examples_and_endpoints() -> None:
    w = sp.Symbol("w", positive=True)
    assert sp.simplify(velocity_of(1 - S.t, S.t) - 1 / S.t) == 0  # MDLM weight
    assert sp.simplify(velocity_of(1 - S.t**w, S.t) - w / S.t) == 0  # A = w/t
    assert masked_mass_difference() == 0  # (1 − α)A = −∂_tα
    for sched in (S.mdlm(2), S.cosine(2), S.polynomial([w, 2 * w]), S.arm(3), S.block(4, 2), S.fixed_order([1, 0])):
        for a in sched.alphas:
            assert sp.simplify(a.subs(S.t, 0)) == 1 and sp.simplify(a.subs(S.t, 1)) == 0, (sched.name, a)


@pytest.mark.parametrize("length", [2, 3, 4])
def test_window_schedules_are_continuous_and_decreasing(length: int) -> None:
    sched = S.arm(length)
    for a in sched.alphas:
        for k in sched.kinks:  # continuity at every kink: left and right limits agree
            assert sp.simplify(sp.limit(a, S.t, k, "-") - sp.limit(a, S.t, k, "+")) == 0
    for rho in sched.rate_density():  # −∂_tα > 0 on every piece for 0 < ε < 1/2
        pieces = rho.args if isinstance(rho, sp.Piecewise) else ((rho, True),)
        for e, _ in pieces:
            assert sp.solveset(e <= 0, S.eps, sp.Interval.open(0, sp.Rational(1, 2))) == sp.S.EmptySet


def test_lambdified_schedule_drives_the_reference_bound() -> None:
    # The same discrete bound with the schedule from sympy and from the torch class: the schedule enters only
    # through α, log(1 − α) at grid points, which agree to ~1e-16, so the bounds agree to ~1e-13.
    from oemdm_spec.reference import denoisers, elbo

    den = denoisers.TabularDenoiser(3, 3, seed=0)
    x = torch.tensor([[2, 1, 0]])
    grid = elbo.kink_aware_grid(7, [R.ARMSchedule(3, EPS)])
    from_sympy = elbo.discrete_nelbo(x, den, S.LambdifiedSchedule.build(S.arm(3), {S.eps: EPS}), None, grid,
                                     vocab_size=3)
    from_torch = elbo.discrete_nelbo(x, den, R.ARMSchedule(3, EPS), None, grid, vocab_size=3)
    torch.testing.assert_close(from_sympy, from_torch, rtol=1e-12, atol=1e-12)
