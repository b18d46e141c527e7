"""Block-diffusion theorem (spec §2), numerically: L_OeMDM(α_bd,ε) − L_BD3LM → 0, linearly in ε.

L_BD3LM is computed independently from its own formula (block-causal conditioning, Beta integrals over the
MDLM time inside each block) from the denoiser's CE table; L_OeMDM by the reference's exact quadrature.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
import torch

from oemdm_spec.reference import denoisers, elbo
from oemdm_spec.reference import schedules as R
from oemdm_spec.symbolic import independent
from oemdm_spec.symbolic import schedules as S

V = 3
EPS = (0.1, 0.03, 0.01)
QUAD_TOL = 1e-9  # see test_theorem_arm: polynomial integrand on each piece, quad_vec at epsabs 1e-11


def test_block_diffusion_tends_to_bd3lm() -> None:
    length, block_size = 4, 2
    den = denoisers.TabularDenoiser(length, V, seed=11)
    x = torch.tensor([1, 2, 0, 2])
    table = independent.ce_table(x, den, V)
    bd3lm = independent.bd3lm_nelbo_value(table, length, block_size)
    gaps = []
    for e in EPS:
        n = elbo.continuous_nelbo_exact(x.unsqueeze(0), den, R.BlockSchedule(length, block_size, e), vocab_size=V)
        assert float(n.velocity) == 0.0
        gaps.append(float(n.total) - bd3lm)
    gaps = np.array(gaps)
    rate = np.polyfit(np.log(EPS), np.log(np.abs(gaps)), 1)[0]
    assert 0.85 < rate < 1.15, (gaps, rate)  # linear in ε
    poly = independent.window_nelbo_polynomial(S.block(length, block_size), table)
    assert float(poly.subs(S.eps, 0)) == pytest.approx(bd3lm, abs=1e-12)  # exact at ε = 0
    slope = float(sp.diff(poly, S.eps).subs(S.eps, 0))
    # gap/ε at the smallest ε is the slope up to O(ε): the quadratic coefficient is ≤ ~10 here, so 1e-2·10
    assert gaps[-1] / EPS[-1] == pytest.approx(slope, abs=0.15 + abs(slope) * 0.05)


def test_one_block_is_mdlm_and_block_size_one_is_arm() -> None:
    length = 3
    den = denoisers.TabularDenoiser(length, V, seed=4)
    x = torch.tensor([2, 0, 1])
    table = independent.ce_table(x, den, V)
    # B = 1: the block schedule is α = 1 − t for every ε, and BD3LM with one block is MDLM's NELBO
    n = elbo.continuous_nelbo_exact(x.unsqueeze(0), den, R.BlockSchedule(length, length, 0.2), vocab_size=V)
    assert float(n.total) == pytest.approx(independent.mdlm_nelbo_value(table, length), abs=QUAD_TOL)
    assert independent.bd3lm_nelbo_value(table, length, length) == pytest.approx(
        independent.mdlm_nelbo_value(table, length), abs=1e-12)
    # B = L: the block schedule is α_arm,ε and BD3LM with blocks of one token is the AR NLL
    t = torch.linspace(0.0, 1.0, 61, dtype=torch.float64)
    torch.testing.assert_close(R.BlockSchedule(length, 1, 0.1).alpha(t), R.ARMSchedule(length, 0.1).alpha(t))
    assert independent.bd3lm_nelbo_value(table, length, 1) == pytest.approx(
        independent.plain_ar_nll(x, den, V), abs=1e-12)
