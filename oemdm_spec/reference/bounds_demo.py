"""Print every bound of the reference for one tiny random model: ``python -m oemdm_spec.reference.bounds_demo``.

A quick look at the specification at work: the exact −log p_T(x), the discrete bounds L_T on refining grids,
the continuous bound by quadrature and by Monte Carlo, and the ARM limit as ε → 0 against a plain
left-to-right NLL.
"""

from __future__ import annotations

import torch

from .denoisers import TabularDenoiser
from .elbo import continuous_nelbo_exact, continuous_nelbo_mc, discrete_nelbo, kink_aware_grid
from .exact import exact_nll
from .schedules import ARMSchedule, InputPolynomialSchedule, MDLMSchedule


def main() -> None:
    L, V = 4, 3
    den = TabularDenoiser(L, V, seed=0)
    x = torch.tensor([[0, 2, 1, 1]])
    print(f"tiny tabular denoiser, L={L}, V={V}, x={x.tolist()[0]}  (nats per sequence)\n")
    mdlm = MDLMSchedule(L)
    forward = InputPolynomialSchedule(lambda u: 0.7 + 0.3 * u.double(), L)
    reverse = InputPolynomialSchedule(lambda z: 0.9 + 0.1 * (z == V).double().cumsum(-1), L)
    for name, f, r in [("MDLM (α = 1 − t)", mdlm, None), ("input-dependent α_φ(x), α̂_ψ(z_t)", forward, reverse)]:
        exact = continuous_nelbo_exact(x, den, f, r, vocab_size=V)
        mc = continuous_nelbo_mc(x, den, f, r, vocab_size=V, n_t=4096, generator=torch.Generator().manual_seed(0))
        print(name)
        print(
            f"  L_OeMDM exact  = {exact.total.item():.6f}  (L_main {exact.main.item():.6f} + "
            f"L_velocity {exact.velocity.item():.6f})"
        )
        print(f"  L_OeMDM MC     = {mc.total.item():.6f}  (4096 stratified t)")
        for T in (4, 16, 64, 256):
            bound = discrete_nelbo(x, den, f, r, grid=T, vocab_size=V).item()
            nll = exact_nll(x, den, r or f, grid=T, vocab_size=V).item()
            print(f"  T={T:4d}: L_T = {bound:.6f} ≥ −log p_T(x) = {nll:.6f}")
        print()
    z = torch.full((1, L), V)
    ar_nll = 0.0
    for i in range(L):
        ar_nll -= torch.log_softmax(den(z, torch.zeros(1)), -1)[0, i, x[0, i]].item()
        z[0, i] = x[0, i]
    print(f"ARM limit: plain left-to-right NLL = {ar_nll:.6f}")
    for eps in (0.1, 0.01, 0.001):
        arm = ARMSchedule(L, eps)
        value = continuous_nelbo_exact(x, den, arm, vocab_size=V).total.item()
        grid_value = discrete_nelbo(x, den, arm, grid=kink_aware_grid(64, [arm]), vocab_size=V).item()
        print(f"  ε={eps:<6}: L_OeMDM = {value:.6f}  gap = {value - ar_nll:+.6f}   (L_T, T≈64: {grid_value:.6f})")


if __name__ == "__main__":
    main()
