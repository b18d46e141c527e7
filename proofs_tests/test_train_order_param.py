"""The fast model's LoMDM exponents against the reference (spec §3): the paper's NormSig form and the sharper
log-space option, with and without padding, and the log-space option end to end in the trainer.

The reference (:func:`oemdm_spec.reference.exponents.exponent`, float64) and the fast path
(:mod:`oemdm_spec.fast.model`, float32) are separate implementations. Tolerance: the fast path computes in
float32, with scores of O(1) and exponents in (c1 e^{−R}, c1 e^{R}), so a relative 1e-5 is a few ulps of the
exp/tanh/sigmoid chain. A wrong centring (over padding too), a missing c2 or R, or a swapped form is off by
far more.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from oemdm_spec.fast.model import ModelConfig, OeMDM, log_space_exponent, norm_sig
from oemdm_spec.reference.exponents import exponent as reference_exponent


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**16), L=st.integers(1, 12), c1=st.floats(0.2, 2.0), frac=st.floats(0.0, 0.95),
       R=st.floats(0.5, 5.0), form=st.sampled_from(["normsig", "logspace"]), padded=st.booleans())
def test_fast_exponent_equals_the_reference(seed, L, c1, frac, R, form, padded):
    g = torch.Generator().manual_seed(seed)
    v = 3.0 * torch.randn(3, L, generator=g, dtype=torch.float64)
    c2 = frac * c1  # c1 > c2 >= 0, valid for both forms
    pad = None
    if padded:
        pad = torch.rand(3, L, generator=g) < 0.4
        pad[:, 0] = False  # at least one real position per row
    valid = None if pad is None else ~pad  # both sides take valid = True at real positions
    ref = reference_exponent(v, c1, c2, order_param=form, log_range=R, valid=valid)
    if form == "logspace":
        fast = log_space_exponent(v.float(), c1, c2, R, valid)
    else:
        fast = c1 + c2 * norm_sig(v.float(), valid)
    torch.testing.assert_close(fast.double(), ref, rtol=1e-5, atol=1e-6)


def test_log_space_form_reaches_beyond_the_normsig_range():
    """The point of the option: NormSig keeps w in (c1 − c2, c1 + c2); the log-space form spans
    (c1 e^{−R}, c1 e^{R}), so very different scores give weight ratios far above (c1 + c2)/(c1 − c2)."""
    v = torch.tensor([[-20.0, 0.0, 20.0]])
    c1, c2, R = 0.7, 0.65, math.log(30.0)
    w = log_space_exponent(v, c1, c2, R)
    assert float(w.max() / w.min()) > 100 > (c1 + c2) / (c1 - c2)
    assert float(w.max()) < c1 * math.exp(R) and float(w.min()) > c1 * math.exp(-R)


def test_model_uses_the_configured_form():
    torch.manual_seed(0)
    cfg = dict(vocab_size=5, seq_len=6, model_type="lomdm", n_layer=1, n_head=2, d_model=8, cond_dim=8)
    a = OeMDM(ModelConfig(**cfg, order_param="normsig"))
    b = OeMDM(ModelConfig(**cfg, order_param="logspace"))
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        for p in (a.phi.head.weight, b.phi.head.weight):
            p.copy_(torch.linspace(-3, 3, p.numel()).view_as(p))
    f = torch.randn(2, 6, 8)
    v = a.phi(f)
    torch.testing.assert_close(a.w_phi(f), 0.7 + 0.65 * norm_sig(v))
    torch.testing.assert_close(b.w_phi(f), log_space_exponent(v, 0.7, 0.65, math.log(30.0)))
    assert not torch.allclose(a.w_phi(f), b.w_phi(f))


@pytest.mark.parametrize("kw,needle", [({"order_param": "softmax"}, "order_param"),
                                        ({"order_param": "logspace", "c1": 0.0}, "c1"),
                                        ({"order_param": "logspace", "log_range": -1.0}, "log_range")])
def test_bad_order_param_settings_are_rejected(kw, needle):
    from oemdm_spec.fast.config import ConfigError, build_config

    with pytest.raises(ConfigError, match=needle):
        build_config({"model": "lomdm", **kw})
    base = dict(vocab_size=5, seq_len=6, model_type="lomdm", n_layer=1, n_head=2, d_model=8, cond_dim=8)
    with pytest.raises(ValueError, match=needle):
        ModelConfig(**base, **kw)


def test_trainer_runs_the_log_space_option(tmp_path):
    """A few steps of `oemdm train --order_param logspace` (with c2 > c1, which NormSig would reject): finite
    losses and bound, and exponents inside the log-space range (c1 e^{−R}, c1 e^{R})."""
    from oemdm_spec.fast.config import build_config
    from oemdm_spec.fast.trainer import train

    data = tmp_path / "corpus.txt"
    data.write_text("to be or not to be that is the question " * 200)
    cfg = build_config(dict(model="lomdm", order_param="logspace", c1=0.7, c2=2.0, data=str(data), seq_len=16,
                            n_layer=1, n_head=2, d_model=16, cond_dim=8, batch_size=4, steps=6, warmup=1,
                            eval_every=0, ckpt_every=0, log_every=1, order_stats_every=0, final_eval_batches=1,
                            eval_batch_size=8, name="ls", out_dir=str(tmp_path / "runs"), max_minutes=0,
                            threads=1, ema=0.0))
    res = train(cfg, progress=False)
    assert res.losses is not None and all(math.isfinite(x) for x in res.losses)
    assert res.eval is not None and math.isfinite(res.eval.nelbo) and res.eval.nelbo > 0
    x = torch.randint(0, res.model.cfg.vocab_size, (2, 16))
    with torch.no_grad():
        w = res.model.w_phi(res.model.backbone.features(x))
    assert float(w.min()) > 0.7 / 30 and float(w.max()) < 0.7 * 30
