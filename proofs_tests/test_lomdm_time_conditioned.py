"""Issue 16: a time-conditioned LoMDM trains the NELBO of the schedule it samples masks from, reports the
bound of that same schedule, runs in float64, and the top-ŵ sampler breaks ties to the lowest index.

The forward exponent reads the backbone's features of the clean x at the fixed time PHI_TIME, so
α^i = 1 − t^{w_φ^i(x)} is exactly polynomial and A = w_φ/t is its rate; the denoiser and ψ still read t.
Reference value: the exact NELBO by enumeration of all 2^L masks and Gauss–Legendre quadrature in
u = −log t (A dt = w du, P(masked) = e^{−w u}), computed in float64 from the model's own forward passes.
The training loss (t ~ U[t_min, 1), stratified) and the evaluation estimator (u from a mixture of
exponentials) are Monte-Carlo estimates of that integral (truncated at t_min for training) and must agree
with it within their standard errors.
"""

from __future__ import annotations

import copy
import itertools
import math

import numpy as np
import torch

from oemdm_spec.fast.evaluate import evaluate_bound
from oemdm_spec.fast.model import ModelConfig, OeMDM
from oemdm_spec.fast.noise import draw_step_noise
from oemdm_spec.fast.objectives import oemdm_loss
from oemdm_spec.fast.sample import sample, top_rate_position

V, L = 3, 3


def _model() -> OeMDM:
    torch.manual_seed(3)
    m = OeMDM(ModelConfig(vocab_size=V, seq_len=L, model_type="lomdm", n_layer=1, n_head=2, d_model=8,
                          cond_dim=8, time_conditioning=True, c1=1.0, c2=0.5))
    with torch.no_grad():  # large enough that t visibly changes the denoiser, ψ and (if read at t) φ
        for p in m.parameters():
            p.add_(0.5 * torch.randn_like(p))
    return m.eval()  # float32, as trained (the fused kernels take float32/bf16); exact_nelbo copies to float64


@torch.no_grad()
def exact_nelbo(m: OeMDM, x: torch.Tensor, u_max: float) -> float:
    """∫_0^{u_max} Σ_z q_u(z|x) Σ_{i masked} [w_i(−log x_θ^i[x^i]) + w_i log(w_i/ŵ_i) − (w_i − ŵ_i)] du / L."""
    m = copy.deepcopy(m).double()
    proc = m.process
    w = proc.forward_exponent(m, x[None]).double()[0]  # (L,)
    nodes, weights = np.polynomial.legendre.leggauss(64)
    edges = np.linspace(0.0, u_max, 41)  # composite rule: 40 pieces x 64 nodes (the integrand is smooth)
    total = 0.0
    for a, b in itertools.pairwise(edges):
        us = torch.tensor(0.5 * (b - a) * nodes + 0.5 * (b + a), dtype=torch.float64)
        ws = torch.tensor(0.5 * (b - a) * weights, dtype=torch.float64)
        for pattern in itertools.product([False, True], repeat=L):
            mk = torch.tensor(pattern)
            if not mk.any():
                continue
            z = torch.where(mk, m.cfg.mask_id, x)[None].expand(len(us), L)
            p_mask = torch.exp(-w[None] * us[:, None])
            q = torch.where(mk[None], p_mask, 1 - p_mask).prod(-1)  # (n,)
            feats = m.backbone.features(z, torch.exp(-us))
            logp = torch.log_softmax(m.backbone.logits(feats).double(), -1)
            logp = logp.gather(-1, x.expand(len(us), L)[..., None])[..., 0]
            wr = m.w_psi(feats).double()
            term = w * (-logp) + w * torch.log(w / wr) - (w - wr)
            total += float((ws * q * (term * mk).sum(-1)).sum())
    return total / L


def test_training_loss_and_reported_bound_are_the_same_schedules_nelbo() -> None:
    m = _model()
    x = torch.tensor([0, 2, 1])
    t_min, n, steps = 1e-3, 256, 12
    # training: mean of the per-sequence NELBO estimate over stratified t in [t_min, 1)
    vals = []
    for s in range(steps):
        noise = draw_step_noise(7, s, global_batch=n, seq_len=L, K=2, t_min=t_min)
        out = oemdm_loss(m, x[None].expand(n, L), noise, K=2)
        vals.append(out.per_seq.double().flatten())
    est = torch.cat(vals)
    train_mean, train_se = float(est.mean()), float(est.std() / math.sqrt(est.numel()))
    want_trunc = exact_nelbo(m, x, -math.log(t_min)) / (1 - t_min)
    # 4.5 standard errors: a false alarm has probability < 1e-5; the t-dependent exponent of the old code
    # moved the mean by many standard errors on this model
    assert abs(train_mean - want_trunc) < 4.5 * train_se, (train_mean, want_trunc, train_se)
    # evaluation: the log-time estimator of the whole bound (u up to 80: e^{-0.5*80} of the mass is left)
    ev = evaluate_bound(m, [x[None].expand(2048, L)], seed=11)
    want = exact_nelbo(m, x, 80.0)
    assert abs(ev.nelbo - want) < 4.5 * ev.se, (ev.nelbo, want, ev.se)


def test_training_reads_the_forward_exponent_at_no_step_time() -> None:
    """The exponent the masks are drawn with is w_φ(x) of the evaluation and the samplers, whatever the
    step's t (reading f(x) at t would make w depend on t and add (∂_t w)·log t to the true rate)."""
    m = _model()
    x = torch.tensor([[0, 2, 1], [1, 1, 0]])
    want = m.process.forward_exponent(m, x)
    for t in (0.01, 0.3, 0.99):
        noise = draw_step_noise(0, 0, global_batch=2, seq_len=L, K=2, t_min=1e-3)
        noise.t = torch.full((2,), t)
        out = oemdm_loss(m, x, noise, K=2, want_stats=True)
        torch.testing.assert_close(out.stats["w_fwd"], want, rtol=0, atol=0)


def test_time_conditioned_model_runs_in_float64() -> None:
    m = _model().double()
    assert m.backbone.time_embed is not None
    f = m.backbone.features(torch.zeros(2, L, dtype=torch.long), torch.tensor([0.3, 0.7], dtype=torch.float64))
    assert f.dtype == torch.float64


def test_top_rate_ties_go_to_the_lowest_index() -> None:
    # rates equal but for float32 noise in the last bits: the first of them wins, not the noisiest
    w = torch.tensor([[1.0, 1.0 + 3e-7, 1.0 - 2e-7, 0.5], [0.2, 0.9, 0.9 * (1 + 1e-7), 0.1]], dtype=torch.float64)
    masked = torch.tensor([[True, True, True, True], [True, True, True, True]])
    assert top_rate_position(w, masked).tolist() == [0, 1]
    masked[0, 0] = False
    assert top_rate_position(w, masked).tolist() == [1, 1]
    # a clear maximum still wins
    assert top_rate_position(torch.tensor([[0.5, 0.6, 0.4]]), torch.ones(1, 3, dtype=torch.bool)).tolist() == [1]


def test_topk_sampler_from_the_all_masked_state_starts_at_position_zero() -> None:
    """All positions masked: every position has the same input, so with rotary embeddings alone every ŵ ties
    (up to rounding) and the documented rule reveals position 0 first."""
    torch.manual_seed(0)
    m = OeMDM(ModelConfig(vocab_size=5, seq_len=12, model_type="lomdm", n_layer=2, n_head=2, d_model=32,
                          cond_dim=8))  # on this model plain argmax picks position 1 (rates differ by 6e-8)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.3 * torch.randn_like(p))
    _, order = sample(m, 1, sampler="topk", seed=0)
    assert (order[:, 0] == 0).all(), order
