"""Issue 14: benchmarks/study/rloo_variance.py, the signal-to-noise of LoMDM's order-head gradients.

Its estimator recovers a known SNR from synthetic draws and reads pure noise as ≈ 0; and its split of the RLOO
surrogate is exact: the φ gradient of the trained surrogate is the pathwise part plus the score part, draw by
draw, and the score part never reaches the denoiser."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from oemdm_spec.fast.model import ModelConfig, OeMDM
from oemdm_spec.fast.objectives import draw_step_noise, oemdm_loss

_spec = importlib.util.spec_from_file_location(
    "rloo_variance", Path(__file__).resolve().parents[1] / "benchmarks" / "study" / "rloo_variance.py")
rv = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rv)


def test_snr_estimator_synthetic() -> None:
    g = torch.Generator().manual_seed(0)
    R, P = 400, 200
    mean = torch.full((P,), 0.1, dtype=torch.float64)  # ‖μ‖² = 2, tr Σ = 200: SNR of one draw 0.01
    s = rv.gradient_stats(mean + torch.randn(R, P, generator=g, dtype=torch.float64))
    assert abs(s["snr1"] - 0.01) < 0.004 and s["cos_halves"] > 0.3
    s0 = rv.gradient_stats(torch.randn(R, P, generator=g, dtype=torch.float64))
    assert abs(s0["snr1"]) < 0.004 and abs(s0["cos_halves"]) < 0.3 and s0["frac_t2"] < 0.12


def test_surrogate_split_is_exact() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=2, seq_len=8, model_type="lomdm", n_layer=1, n_head=2, d_model=16, cond_dim=8)
    model = OeMDM(cfg)
    with torch.no_grad():  # leave the zero init behind, so every φ/ψ parameter gets a gradient
        for head in (model.phi, model.psi):
            head.head.weight.normal_()
    x = torch.randint(2, (6, 8), generator=torch.Generator().manual_seed(1))
    noise = draw_step_noise(3, 5, global_batch=6, seq_len=8, K=2, t_min=1e-3)
    grads = {}
    for variant in ("full", "pathwise", "score"):
        rv.polynomial.rloo_surrogate = rv.surrogate(variant)
        try:
            model.zero_grad(set_to_none=True)
            oemdm_loss(model, x, noise, K=2).loss.backward()
        finally:
            rv.polynomial.rloo_surrogate = rv._RLOO
        grads[variant] = {k: torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                                        for p in ps]) for k, ps in rv.groups(model).items()}
    phi = grads["full"]["phi"]
    assert phi.abs().max() > 0
    torch.testing.assert_close(phi, grads["pathwise"]["phi"] + grads["score"]["phi"], rtol=1e-4, atol=1e-6)
    assert grads["score"]["denoiser"].abs().max() == 0 and grads["score"]["psi"].abs().max() == 0
    torch.testing.assert_close(grads["full"]["denoiser"], grads["pathwise"]["denoiser"])
