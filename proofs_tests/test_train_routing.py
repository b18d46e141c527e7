"""LoMDM gradient routing (spec §3): θ from L_main only, φ from L_main + L_velocity + score term, ψ from
L_velocity only; the heads read detached backbone features."""

from __future__ import annotations

import torch

from oemdm_spec.fast.model import ModelConfig, OeMDM
from oemdm_spec.fast.objectives import draw_step_noise, oemdm_loss

V, L, B = 9, 12, 8


def _setup():
    torch.manual_seed(1)
    m = OeMDM(ModelConfig(vocab_size=V, seq_len=L, model_type="lomdm", n_layer=2, n_head=2, d_model=32,
                          cond_dim=16))
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "ada" in name or "out" in name or "head" in name:
                p.add_(0.3 * torch.randn_like(p))
    x = torch.randint(0, V, (B, L), generator=torch.Generator().manual_seed(2))
    noise = draw_step_noise(5, 0, global_batch=B, seq_len=L, K=2, t_min=1e-3)
    return m, x, noise


def _grads(m: OeMDM, params, loss):
    gs = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, gs, strict=True)]


def _parts(m: OeMDM, x, noise, masked):
    """Independent L_main and L_velocity (K, B) on the given masks, with the graph the spec prescribes."""
    t = noise.t
    with torch.no_grad():
        fx = m.backbone.features(x)
    w_phi = m.w_phi(fx)
    mains, vels = [], []
    for k in range(2):
        z = torch.where(masked[k], V, x)
        f = m.backbone.features(z)
        w_psi = m.w_psi(f)
        logp = torch.log_softmax(m.backbone.logits(f), -1).gather(-1, x[..., None]).squeeze(-1)
        A, A_hat = w_phi / t[:, None], w_psi / t[:, None]
        mains.append((-A * logp * masked[k]).sum(-1) / L)
        vels.append(((A * (A.log() - A_hat.log()) - (A - A_hat)) * masked[k]).sum(-1) / L)
    return torch.stack(mains), torch.stack(vels)


def test_gradient_routing():
    m, x, noise = _setup()
    out = oemdm_loss(m, x, noise, K=2)
    theta = list(m.backbone.parameters())
    phi, psi = list(m.phi.parameters()), list(m.psi.parameters())
    g_theta = _grads(m, theta, out.loss)
    g_psi = _grads(m, psi, out.loss)

    main, vel = _parts(m, x, noise, out.masked)
    torch.testing.assert_close((main + vel).detach(), out.per_seq, rtol=1e-5, atol=1e-6)
    # θ: exactly the gradient of mean L_main (nothing from L_velocity, nothing from the surrogate)
    ref_theta = _grads(m, theta, main.mean())
    for g, r in zip(g_theta, ref_theta, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-7)
    assert any(float(g.abs().max()) > 0 for g in g_theta)
    # ...and L_velocity alone gives θ exactly zero
    assert all(float(g.abs().max()) == 0 for g in _grads(m, theta, vel.mean()))
    # ψ: exactly the gradient of mean L_velocity; L_main gives it nothing
    ref_psi = _grads(m, psi, vel.mean())
    for g, r in zip(g_psi, ref_psi, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-7)
    assert all(float(g.abs().max()) == 0 for g in _grads(m, psi, main.mean()))
    assert any(float(g.abs().max()) > 0 for g in g_psi)
    # φ: from L_main, L_velocity *and* the score-function term (the surrogate's gradient differs from the
    # pathwise one by exactly that term)
    g_phi = _grads(m, phi, out.loss)
    path_phi = _grads(m, phi, (main + vel).mean())
    assert any(float((g - p).abs().max()) > 1e-6 for g, p in zip(g_phi, path_phi, strict=True))
    assert any(float(g.abs().max()) > 0 for g in _grads(m, phi, main.mean()))
    assert any(float(g.abs().max()) > 0 for g in _grads(m, phi, vel.mean()))


def test_heads_read_detached_features():
    m, x, _ = _setup()
    f = m.backbone.features(x)
    for w in (m.w_phi(f), m.w_psi(f)):
        gs = torch.autograd.grad(w.sum(), list(m.backbone.parameters()), allow_unused=True)
        assert all(g is None or float(g.abs().max()) == 0 for g in gs)
