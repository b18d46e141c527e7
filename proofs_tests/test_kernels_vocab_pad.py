"""Vocabulary padding of the output layer (issue 13.3): Vp = ceil(V/64)·64 rows for V ≥ 1024.

The padded model, given the unpadded model's weights on its real rows, must give the same loss, the same
gradients on the real rows, the same bound, zero gradients on the pad rows and never sample a pad id.
Tolerance: both models do the same fp32 arithmetic except that the padded log-softmax sums Vp − V extra
exact zeros (exp(−inf)) and the GEMM has more rows, so results agree to a few fp32 ulps: rtol 1e-5.
"""

from __future__ import annotations

import pytest
import torch

from oemdm_spec.fast.model import VOCAB_PAD_MIN, ModelConfig, OeMDM, PaddedLinear
from oemdm_spec.fast.objectives import draw_step_noise, oemdm_loss
from oemdm_spec.fast.sample import sample

V = 1030  # ≥ VOCAB_PAD_MIN, not a multiple of 64: padded to 1088


def _pair(model_type: str):
    kw = dict(vocab_size=V, seq_len=16, model_type=model_type, n_layer=1, n_head=2, d_model=32, cond_dim=16)
    torch.manual_seed(0)
    plain = OeMDM(ModelConfig(**kw, vocab_pad_to=1))
    padded = OeMDM(ModelConfig(**kw))
    with torch.no_grad():
        plain.backbone.out.weight.normal_(0, 0.3)
        plain.backbone.out.bias.normal_(0, 0.3)
        sd = plain.state_dict()
        w, b = sd.pop("backbone.out.weight"), sd.pop("backbone.out.bias")
        missing, unexpected = padded.load_state_dict(sd, strict=False)
        assert sorted(missing) == ["backbone.out.bias_raw", "backbone.out.weight"] and not unexpected
        padded.backbone.out.weight[:V] = w
        padded.backbone.out.bias_raw[:V] = b
    return plain, padded


def test_padded_sizes() -> None:
    assert ModelConfig(vocab_size=50257, seq_len=8, model_type="mdlm").padded_vocab_size == 50304
    assert ModelConfig(vocab_size=50258, seq_len=8, model_type="mdlm").padded_vocab_size == 50304
    assert ModelConfig(vocab_size=30522, seq_len=8, model_type="mdlm").padded_vocab_size == 30528
    assert ModelConfig(vocab_size=65, seq_len=8, model_type="mdlm").padded_vocab_size == 65  # char vocab: exact
    assert ModelConfig(vocab_size=VOCAB_PAD_MIN - 1, seq_len=8, model_type="mdlm").padded_vocab_size == 1023
    assert ModelConfig(vocab_size=50258, seq_len=8, model_type="mdlm", vocab_pad_to=1).padded_vocab_size == 50258
    with pytest.raises(ValueError, match="vocab_pad_to must be an int >= 1, got 0"):
        ModelConfig(vocab_size=50258, seq_len=8, model_type="mdlm", vocab_pad_to=0)
    m = OeMDM(ModelConfig(vocab_size=65, seq_len=8, model_type="mdlm", n_layer=1, d_model=16, n_head=2, cond_dim=8))
    assert isinstance(m.backbone.out, torch.nn.Linear) and "backbone.out.bias" in m.state_dict()


@pytest.mark.parametrize("model_type", ["mdlm", "lomdm", "ar"])
def test_padded_model_matches_unpadded(model_type) -> None:
    plain, padded = _pair(model_type)
    out = padded.backbone.out
    assert isinstance(out, PaddedLinear) and out.weight.shape == (1088, 32)
    x = torch.randint(0, V, (3, 16), generator=torch.Generator().manual_seed(1))
    K = 2 if model_type == "lomdm" else 1
    noise = draw_step_noise(0, 0, global_batch=3, seq_len=16, K=K, t_min=1e-3)
    results = []
    for m in (plain, padded):
        m.zero_grad(set_to_none=True)
        res = oemdm_loss(m, x, noise, K=K)
        res.loss.backward()
        results.append(res)
    torch.testing.assert_close(results[1].loss, results[0].loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(results[1].per_seq, results[0].per_seq, rtol=1e-5, atol=1e-6)
    p_out, q_out = plain.backbone.out, padded.backbone.out
    torch.testing.assert_close(q_out.weight.grad[:V], p_out.weight.grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(q_out.bias_raw.grad[:V], p_out.bias.grad, rtol=1e-5, atol=1e-7)
    assert torch.equal(q_out.weight.grad[V:], torch.zeros_like(q_out.weight.grad[V:]))
    assert torch.equal(q_out.bias_raw.grad[V:], torch.zeros_like(q_out.bias_raw.grad[V:]))
    gp = dict(plain.named_parameters())
    for name, p in padded.named_parameters():
        if name.startswith("backbone.out.") or p.grad is None:
            continue
        torch.testing.assert_close(p.grad, gp[name].grad, rtol=1e-5, atol=1e-7, msg=name)
    # the logits callers see (samplers, GenMD4, stats) are the V real columns, identical
    h = torch.randn(4, 32)
    torch.testing.assert_close(padded.backbone.logits(h), plain.backbone.logits(h))
    assert padded.backbone.logits(h).shape == (4, V)


def test_padded_bound_unchanged() -> None:
    from oemdm_spec.fast.evaluate import sequence_bound

    plain, padded = _pair("mdlm")
    g = torch.Generator().manual_seed(2)
    x = torch.randint(0, V, (3, 16), generator=g)
    v, mask_u = torch.rand(3, generator=g), torch.rand(3, 16, generator=g)
    torch.testing.assert_close(sequence_bound(padded, x, v, mask_u), sequence_bound(plain, x, v, mask_u),
                               rtol=1e-5, atol=1e-8)


def test_sampler_never_emits_pad_ids() -> None:
    _, padded = _pair("mdlm")
    with torch.no_grad():  # make the pad rows as tempting as possible: huge weights and bias_raw
        padded.backbone.out.weight[V:] = 100.0
        padded.backbone.out.bias_raw[V:] = 1e4
    tokens, _ = sample(padded, 3, seed=0)
    assert tokens.shape == (3, 16) and int(tokens.max()) < V and int(tokens.min()) >= 0
