"""The fast training objectives against independent float64 computations (spec §1 Eq. 2, §2, §3)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from oemdm_spec.fast.model import ModelConfig, OeMDM, block_causal_mask
from oemdm_spec.fast.objectives import (
    draw_step_noise,
    n_times_for,
    oemdm_loss,
    samples_for,
)
from oemdm_spec.reference import terms

V, L, B = 11, 16, 6


def _model(typ: str, seed: int = 0, **kw) -> OeMDM:
    torch.manual_seed(seed)
    m = OeMDM(ModelConfig(vocab_size=V, seq_len=L, model_type=typ, n_layer=2, n_head=2, d_model=32, cond_dim=16,
                          **kw))
    # move every zero-initialised output (adaLN gates, output layer, scheduler heads) off zero, so the test
    # exercises a non-trivial denoiser and non-constant w_φ, w_ψ
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "ada" in name or "out" in name or "head" in name or "log_w" in name:
                p.add_(0.3 * torch.randn_like(p))
    return m


def _data(step: int = 0):
    g = torch.Generator().manual_seed(100 + step)
    return torch.randint(0, V, (B, L), generator=g)


def _noise(m: OeMDM, step: int = 0, K: int = 2):
    return draw_step_noise(7, step, global_batch=B, seq_len=L, K=samples_for(m, K), t_min=1e-3,
                           n_times=n_times_for(m))


def _full_logits64(m64: OeMDM, z: torch.Tensor) -> torch.Tensor:
    return m64.backbone.logits(m64.backbone.features(z)).double()


def test_lomdm_loss_matches_float64_terms():
    m = _model("lomdm")
    x, noise = _data(), _noise(m)
    out = oemdm_loss(m, x, noise, K=2)
    masked = out.masked
    assert masked is not None and masked.any() and (~masked).any()

    # independent float64 recomputation from reference.terms, on the same masks
    m64 = copy.deepcopy(m).double()
    t = noise.t.double()
    with torch.no_grad():
        w_phi = m64.w_phi(m64.backbone.features(x))
        assert float(w_phi.std()) > 1e-3  # the test would be vacuous with a constant w
        per_seq = torch.zeros(2, B, dtype=torch.float64)
        log_q = torch.zeros(2, B, dtype=torch.float64)
        for k in range(2):
            z = torch.where(masked[k], V, x)
            feats = m64.backbone.features(z)
            w_psi = m64.w_psi(feats)
            logits = m64.backbone.logits(feats)
            A, A_hat = w_phi / t[:, None], w_psi / t[:, None]
            log_px = torch.log_softmax(logits, -1).gather(-1, x[..., None]).squeeze(-1)
            pos = terms.l_main(log_px, A) + terms.l_velocity(A, A_hat)
            per_seq[k] = (pos * masked[k]).sum(-1) / L
            wlt = w_phi * t.log()[:, None]
            log_q[k] = torch.where(masked[k], wlt, torch.log(-torch.expm1(wlt))).sum(-1)
            # the row_loss twin agrees on the masked rows too
            rows = masked[k]
            twin = terms.row_loss(logits[rows], x[rows], A[rows], A_hat[rows])
            torch.testing.assert_close(twin, pos[rows])
    torch.testing.assert_close(out.per_seq.double(), per_seq, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.nelbo.double(), per_seq.mean(), rtol=1e-5, atol=1e-6)
    # RLOO surrogate, K = 2 (GenMD4's form): ½(L1+L2) + ½ sg(L1−L2)(log q1 − log q2)
    surrogate = 0.5 * (per_seq[0] + per_seq[1]) + 0.5 * (per_seq[0] - per_seq[1]) * (log_q[0] - log_q[1])
    torch.testing.assert_close(out.loss.double(), surrogate.mean(), rtol=1e-5, atol=1e-5)


def test_mdlm_loss_is_weighted_cross_entropy():
    m = _model("mdlm")
    x, noise = _data(1), _noise(m, 1)
    out = oemdm_loss(m, x, noise)
    m64 = copy.deepcopy(m).double()
    with torch.no_grad():
        z = torch.where(out.masked[0], V, x)
        log_px = torch.log_softmax(_full_logits64(m64, z), -1).gather(-1, x[..., None]).squeeze(-1)
        A = (1 / noise.t.double())[:, None].expand(B, L)
        ref = (terms.l_main(log_px, A) * out.masked[0]).sum(-1) / L
    torch.testing.assert_close(out.per_seq[0].double(), ref, rtol=1e-5, atol=1e-6)
    # MDLM masks with P = t: the mask rate tracks t
    assert torch.equal(out.masked[0], noise.u[0] < noise.t[:, None])


def test_compare_variant_mdlm_k2_is_mdlm_on_each_of_its_masks():
    """``oemdm compare --models mdlm-k2`` (LoMDM's code at c1 = 1, c2 = 0: w ≡ ŵ ≡ 1) is MDLM trained on K masks
    per sequence: for each k, its per-sequence loss equals MDLM's on that mask (same backbone weights, same
    uniforms). Masks agree exactly (log u < log t ⇔ u < t); the losses to fp32 rounding of the two paths."""
    from oemdm_spec.fast.compare import VARIANTS
    from oemdm_spec.fast.objectives import StepNoise

    over = VARIANTS["mdlm-k2"]
    k2 = _model(over["model"], c1=over["c1"], c2=over["c2"])
    mdlm = _model("mdlm")
    mdlm.load_state_dict({k: v for k, v in k2.state_dict().items() if k in mdlm.state_dict()})
    x, noise = _data(2), _noise(k2, 2, K=2)
    out = oemdm_loss(k2, x, noise, K=2)
    assert out.per_seq.shape[0] == 2
    for k in range(2):
        ref = oemdm_loss(mdlm, x, StepNoise(noise.t, noise.u[k:k + 1]))
        assert torch.equal(out.masked[k], ref.masked[0])
        torch.testing.assert_close(out.per_seq[k], ref.per_seq[0], rtol=1e-5, atol=1e-6)


def test_genmd4_loss_is_generalized_kl_of_rates():
    """Integrand = Σ_v r_v log(r_v/r̂_v) − r_v + r̂_v with r = (w_x/t)δ_x and r̂_v = (w_v/t) μ_θ[v] (spec §1 Fact 1)."""
    m = _model("genmd4")
    x, noise = _data(2), _noise(m, 2)
    out = oemdm_loss(m, x, noise, K=2)
    m64 = copy.deepcopy(m).double()
    with torch.no_grad():
        w = m64.log_w_vocab.clamp(-4, 2).exp()
        t = noise.t.double()[:, None]
        for k in range(2):
            z = torch.where(out.masked[k], V, x)
            mu = torch.softmax(_full_logits64(m64, z), -1)  # (B, L, V)
            rate_hat = w * mu / t[..., None]  # r̂_v
            rate_x = w[x] / t  # r at v = x
            gkl = rate_x * torch.log(rate_x / rate_hat.gather(-1, x[..., None]).squeeze(-1)) - rate_x \
                + rate_hat.sum(-1)
            ref = (gkl * out.masked[k]).sum(-1) / L
            torch.testing.assert_close(out.per_seq[k].double(), ref, rtol=1e-5, atol=1e-5)
        # the forward process masks token i with probability t^{w[x^i]}
        assert torch.equal(out.masked[0], noise.u[0].log() < (w[x].float() * noise.t.log()[:, None]))


def test_bd3lm_loss_and_block_causal_conditioning():
    m = _model("bd3lm", block_size=4)
    x, noise = _data(3), _noise(m, 3)
    assert noise.t.shape == (B, L // 4)  # one t per block
    out = oemdm_loss(m, x, noise)
    t_pos = noise.t.repeat_interleave(4, dim=1).double()
    m64 = copy.deepcopy(m).double()
    with torch.no_grad():
        z = torch.where(out.masked[0], V, x)
        logits = m64.backbone.logits(m64.process.features(m64, z, x))
        log_px = torch.log_softmax(logits, -1).gather(-1, x[..., None]).squeeze(-1)
        ref = (terms.l_main(log_px, 1 / t_pos) * out.masked[0]).sum(-1) / L
        torch.testing.assert_close(out.per_seq[0].double(), ref, rtol=1e-5, atol=1e-6)
        # x_θ for block b sees (z^b, x^{<b}) only: change clean blocks >= b and noisy blocks != b
        b = 1
        sl = slice(4 * b, 4 * b + 4)
        base = m64.process.features(m64, z, x)[:, sl]
        x2, z2 = x.clone(), z.clone()
        x2[:, 4 * b:] = (x2[:, 4 * b:] + 1) % V
        z2[:, :4 * b] = (z2[:, :4 * b] + 1) % V
        z2[:, 4 * b + 4:] = V
        torch.testing.assert_close(m64.process.features(m64, z2, x2)[:, sl], base)
        x3 = x.clone()
        x3[:, 0] = (x3[:, 0] + 1) % V  # a clean token of an earlier block does matter
        assert not torch.allclose(m64.process.features(m64, z, x3)[:, sl], base)
    mask = block_causal_mask(8, 4)
    assert mask[:4, :4].all() and not mask[:4, 4:8].any() and not mask[:4, 8:].any()
    assert mask[4:8, 8:12].all() and not mask[4:8, 12:].any() and not mask[8:, :8].any()


def test_ar_loss_equals_causal_cross_entropy():
    m = _model("ar")
    x = _data(4)
    out = oemdm_loss(m, x, _noise(m, 4))
    logits = m.backbone.logits(m.process.features(m, x))
    ce = F.cross_entropy(logits.reshape(-1, V), x.reshape(-1))
    torch.testing.assert_close(out.loss, ce, rtol=1e-5, atol=1e-6)
    # causal: the prediction at i does not depend on x^j for j >= i
    x2 = x.clone()
    x2[:, 9:] = (x2[:, 9:] + 3) % V
    logits2 = m.backbone.logits(m.process.features(m, x2))
    torch.testing.assert_close(logits2[:, :10], logits[:, :10])
    assert not torch.allclose(logits2[:, 10:], logits[:, 10:])


def test_lomdm_exponents_respect_bounds_and_zero_mean():
    m = _model("lomdm")
    f = torch.randn(4, L, 32)
    w = m.w_phi(f).detach()
    c1, c2 = m.cfg.c1, m.cfg.c2
    assert float(w.min()) > c1 - c2 and float(w.max()) < c1 + c2
    torch.testing.assert_close(w.mean(-1), torch.full((4,), c1))  # NormSig has zero mean
    valid = torch.ones(4, L, dtype=torch.bool)
    valid[:, -3:] = False  # padding is excluded from the mean
    wv = m.exponent(m.phi, f, valid).detach()
    torch.testing.assert_close(wv[valid].view(4, -1).mean(-1), torch.full((4,), c1))


@pytest.mark.parametrize("c1,c2", [(0.5, 0.5), (0.5, 0.6), (0.7, -0.1)])
def test_bad_c1_c2_rejected(c1, c2):
    with pytest.raises(ValueError, match="c1"):
        ModelConfig(vocab_size=V, seq_len=L, c1=c1, c2=c2)


def test_stratified_times_cover_global_batch():
    n = draw_step_noise(3, 5, global_batch=64, seq_len=4, K=1, t_min=1e-3)
    s = torch.sort((n.t - 1e-3) / (1 - 1e-3)).values * 64
    # exactly one time per stratum [j/N, (j+1)/N)
    assert torch.equal(s.floor().long(), torch.arange(64))
    assert float(n.t.min()) >= 1e-3
    # rank slices of the global draw are the single-process draw
    parts = [draw_step_noise(3, 5, global_batch=64, seq_len=4, K=1, t_min=1e-3, rank=r, world_size=2)
             for r in range(2)]
    assert torch.equal(torch.cat([p.t for p in parts]), n.t)
    assert torch.equal(torch.cat([p.u for p in parts], dim=1), n.u)
    assert not torch.equal(draw_step_noise(3, 6, global_batch=64, seq_len=4, K=1, t_min=1e-3).t, n.t)


def test_initial_loss_is_log_vocab_in_expectation():
    """Zero-initialised output layer: x_θ uniform, and every OeMDM bound of a uniform denoiser is log V."""
    torch.manual_seed(0)
    m = OeMDM(ModelConfig(vocab_size=V, seq_len=L, model_type="lomdm", n_layer=1, n_head=2, d_model=16,
                          cond_dim=8))
    from oemdm_spec.fast.evaluate import evaluate_bound

    x = torch.randint(0, V, (256, L))
    ev = evaluate_bound(m, [x], seed=0)
    assert abs(ev.nelbo - math.log(V)) < 4 * ev.se + 1e-9, (ev.nelbo, ev.se, math.log(V))
