"""Fuzzing ``oemdm_spec.fast`` (kernels, config) and ``oemdm_spec.data``: random valid inputs give finite results
that agree with the float64 reference; random invalid inputs raise ValueError (ConfigError is one) naming the
argument.

- ``oemdm_row_loss`` (PyTorch fallback) = ``reference.terms.row_loss`` in float64 on random (logits, target, A, Â);
- ``linear_oemdm_row_loss`` = ``oemdm_row_loss`` of ``hidden @ W.T + b`` (values and gradients);
- ``forward_mask``'s log q(z | x) = ``reference.distributions.ForwardMasking`` log-prob with α = 1 − t^w;
- packed datasets: batches deterministic in (step, seed), ids in range; tokenizers total on any text;
- config: any ``--key value`` list either parses to a validated config or raises ConfigError.
Reproduce: ``python -m pytest proofs_tests/test_fuzz_fast.py -q``.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oemdm_spec.fast.kernels import forward_mask, linear_oemdm_row_loss, oemdm_row_loss
from oemdm_spec.reference.distributions import ForwardMasking
from oemdm_spec.reference.terms import row_loss

FUZZ = settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
BACKEND = "torch"  # the Triton interpreter path has its own tests (test_kernels_*); fuzz the fallback broadly


@st.composite
def row_inputs(draw, max_n: int = 12, max_v: int = 40):
    n = draw(st.integers(0, max_n))
    v = draw(st.integers(1, max_v))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.sampled_from([1e-3, 1.0, 10.0, 80.0]))
    g = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(n, v, generator=g)
    target = torch.randint(0, v, (n,), generator=g)
    # velocities span the range the trainer feeds (w/t with t ≥ 1e-3, w ∈ [0.05, 1.35]) and exact zeros
    A = torch.exp(torch.empty(n).uniform_(-4, 7, generator=g))
    A_hat = torch.exp(torch.empty(n).uniform_(-4, 7, generator=g))
    if n and draw(st.booleans()):
        A[0] = 0.0
    return logits, target, A, A_hat


@FUZZ
@given(inp=row_inputs())
def test_row_loss_matches_the_float64_reference(inp):
    logits, target, A, A_hat = inp
    fast = oemdm_row_loss(logits, target, A, A_hat, backend=BACKEND)
    ref = row_loss(logits.double(), target, A.double(), A_hat.double())
    assert fast.shape == (logits.shape[0],) and bool(torch.isfinite(fast).all())
    torch.testing.assert_close(fast.double(), ref, rtol=2e-5, atol=1e-4 * (1 + (float(A.max()) if A.numel() else 0.0)))


@FUZZ
@given(inp=row_inputs(max_n=10, max_v=24), d=st.integers(1, 12), bias=st.booleans(), chunk=st.integers(1, 8))
def test_linear_row_loss_matches_the_unfused_loss(inp, d, bias, chunk):
    _, target, A, A_hat = inp
    n, v = target.shape[0], (int(target.max()) if target.numel() else 0) + 1 + d % 3
    g = torch.Generator().manual_seed(n * 1000 + v * 10 + d)
    h = torch.randn(n, d, generator=g, dtype=torch.float64).float().requires_grad_()
    w = torch.randn(v, d, generator=g).requires_grad_()
    b = torch.randn(v, generator=g).requires_grad_() if bias else None
    fused = linear_oemdm_row_loss(h, w, b, target, A, A_hat, chunk_size=chunk, backend=BACKEND)
    assert bool(torch.isfinite(fused).all())
    h2, w2 = h.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    b2 = b.detach().clone().requires_grad_() if b is not None else None
    logits = h2 @ w2.T + (b2 if b2 is not None else 0)
    plain = oemdm_row_loss(logits, target, A, A_hat, backend=BACKEND)
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-4)
    if n:
        fused.sum().backward()
        plain.sum().backward()
        torch.testing.assert_close(h.grad, h2.grad, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(w.grad, w2.grad, rtol=1e-4, atol=1e-4)


@FUZZ
@given(b=st.integers(1, 4), L=st.integers(1, 8), V=st.integers(1, 9), K=st.integers(1, 3),
       seed=st.integers(0, 2**62), data=st.data())
def test_forward_mask_log_q_matches_the_reference_law(b, L, V, K, seed, data):
    g = torch.Generator().manual_seed(seed % 2**31)
    x = torch.randint(0, V, (b, L), generator=g)
    t = torch.tensor(data.draw(st.lists(st.floats(1e-3, 1.0), min_size=b, max_size=b)))
    w = torch.tensor(data.draw(st.lists(st.floats(0.0, 3.0), min_size=b * L, max_size=b * L))).view(b, L)
    z, log_q = forward_mask(x, t, w, K=K, seed=seed, mask_id=V, backend=BACKEND)
    assert z.shape == (K, b, L) and log_q.shape == (K, b)
    assert bool(((z == x) | (z == V)).all())
    assert bool(torch.isfinite(log_q).all()) and bool((log_q <= 1e-6).all())
    z2, _ = forward_mask(x, t, w, K=K, seed=seed, mask_id=V, backend=BACKEND)
    assert torch.equal(z, z2)  # same seed and shapes: same masks
    # P(masked) = t^w, so α = 1 − t^w and log(1 − α) = w log t; w = 0 gives α = 0 (always masked)
    log1m = w.double() * torch.log(t.double()).unsqueeze(-1)
    alpha = -torch.expm1(log1m)
    ref = ForwardMasking(x, alpha, mask_id=V, log_one_minus_alpha=log1m).log_prob(z)
    torch.testing.assert_close(log_q.double(), ref, rtol=1e-4, atol=1e-4 * L)


ROW_BAD = [
    (lambda l, t, a, h: (l, t, a * math.nan, h), "A"),
    (lambda l, t, a, h: (l, t, a, h * -1 - 1), "A_hat"),
    (lambda l, t, a, h: (l, t + l.shape[1], a, h), "target"),
    (lambda l, t, a, h: (l, t - 5, a, h), "target"),
    (lambda l, t, a, h: (l, t.float(), a, h), "target"),
    (lambda l, t, a, h: (l, t[:-1], a, h), "target"),
    (lambda l, t, a, h: (l.double(), t, a, h), "logits"),
    (lambda l, t, a, h: (l[0], t, a, h), "logits"),
    (lambda l, t, a, h: (l[:, :0], t, a, h), "logits"),
    (lambda l, t, a, h: (l, t, a.long(), h), "A"),
]


@pytest.mark.parametrize("mutate,arg", ROW_BAD, ids=[f"{a}-{i}" for i, (_, a) in enumerate(ROW_BAD)])
def test_row_loss_rejects_bad_inputs(mutate, arg):
    logits, target = torch.randn(4, 5), torch.tensor([0, 1, 2, 4])
    A, A_hat = torch.ones(4), torch.ones(4)
    args = mutate(logits, target, A, A_hat)
    with pytest.raises(ValueError, match=arg):
        oemdm_row_loss(*args, backend=BACKEND)
    if args[0].dim() == 2 and args[0].shape[1] > 0 and args[0].dtype == torch.float32:
        with pytest.raises(ValueError, match=arg):  # the fused twin validates the same way
            linear_oemdm_row_loss(args[0], torch.eye(args[0].shape[1]), None, *args[1:], backend=BACKEND)


@pytest.mark.parametrize("name", ["A", "A_hat"])
def test_row_loss_rejects_infinite_velocities(name):
    args = dict(logits=torch.randn(2, 3), target=torch.tensor([0, 1]), A=torch.ones(2), A_hat=torch.ones(2))
    args[name] = torch.tensor([math.inf, 1.0])
    with pytest.raises(ValueError, match=name):
        oemdm_row_loss(**args, backend=BACKEND)


MASK_BAD = [
    (dict(t=torch.tensor([0.5, math.nan])), "t"),
    (dict(t=torch.tensor([0.5, 1.5])), "t"),
    (dict(t=torch.tensor([0.5, -0.1])), "t"),
    (dict(w=-torch.ones(2, 3)), "w"),
    (dict(w=torch.ones(3, 2)), "w"),
    (dict(K=0), "K"),
    (dict(K=1.5), "K"),
    (dict(seed=-1), "seed"),
    (dict(mask_id=2), "mask_id"),
    (dict(mask_id=0), "mask_id"),
    (dict(x=torch.tensor([[0, 1, 2], [2, 1, -1]])), "x"),
    (dict(x=torch.zeros(2, 3)), "x"),
]


@pytest.mark.parametrize("kw,arg", MASK_BAD, ids=[f"{a}-{i}" for i, (_, a) in enumerate(MASK_BAD)])
def test_forward_mask_rejects_bad_inputs(kw, arg):
    args = dict(x=torch.tensor([[0, 1, 2], [2, 1, 0]]), t=torch.tensor([0.5, 0.9]), w=torch.ones(2, 3), K=2,
                seed=0, mask_id=3)
    args.update(kw)
    x, t, w = args.pop("x"), args.pop("t"), args.pop("w")
    with pytest.raises(ValueError, match=arg):
        forward_mask(x, t, w, backend=BACKEND, **args)


# ----------------------------------------------------------------------------------------------------------
# data


@FUZZ
@given(n=st.integers(1, 400), seq_len=st.integers(1, 32), vocab=st.integers(1, 300), batch=st.integers(1, 9),
       step=st.integers(0, 10**9), seed=st.integers(0, 2**31 - 1), world=st.sampled_from([1, 2, 3]))
def test_packed_dataset_batches_in_range_and_deterministic(n, seq_len, vocab, batch, step, seed, world):
    from oemdm_spec.data import PackedDataset

    ids = torch.randint(0, vocab, (max(n, seq_len),), generator=torch.Generator().manual_seed(seed)).tolist()
    ds = PackedDataset(ids, seq_len, vocab_size=vocab)
    gb = batch * world
    full = ds.get_batch(step, gb, seed)
    assert full.shape == (gb, seq_len) and full.dtype == torch.long
    assert int(full.min()) >= 0 and int(full.max()) < vocab
    assert torch.equal(full, ds.get_batch(step, gb, seed))
    # the ranks' slices tile the global batch (DDP sees the single-process batch)
    parts = [ds.get_batch(step, batch, seed, rank=r, world_size=world) for r in range(world)]
    assert torch.equal(torch.cat(parts), full)


@FUZZ
@given(text=st.text(max_size=200))
def test_tokenizers_accept_any_text(text):
    from oemdm_spec.data import get_tokenizer

    for name in ("char", "bert-base-uncased"):
        tok = get_tokenizer(name)
        ids = tok.encode(text)
        assert all(0 <= i < tok.vocab_size for i in ids), name
        tok.decode(ids)
    char = get_tokenizer("char")
    known = "".join(c for c in text if c in char.chars)
    assert char.decode(char.encode(known)) == known


@pytest.mark.parametrize("ids", [[[1, 2], [3, 4]], [0.5, 1.5], ["a", "b"], [2**40, 1]], ids=str)
def test_packed_dataset_rejects_bad_ids(ids):
    from oemdm_spec.data import PackedDataset

    with pytest.raises(ValueError, match="ids"):
        PackedDataset(ids, 1, vocab_size=10)


@pytest.mark.parametrize("call", [
    lambda ds: ds.get_batch(0, 0, 0),
    lambda ds: ds.get_batch(0, 4, 0, rank=2, world_size=2),
    lambda ds: ds.get_batch(0, 3, 0, rank=0, world_size=0),
    lambda ds: PackedDataset_(list(range(8)), 0),
    lambda ds: PackedDataset_(list(range(8)), 2, vocab_size=0),
    lambda ds: ds.iter_eval_batches(0).__next__(),
])
def test_packed_dataset_rejects_bad_arguments(call):
    from oemdm_spec.data import PackedDataset

    with pytest.raises(ValueError):
        call(PackedDataset(list(range(8)) * 4, 4, vocab_size=8))


def PackedDataset_(*a, **kw):  # noqa: N802 - a deferred import for the parametrised lambdas above
    from oemdm_spec.data import PackedDataset

    return PackedDataset(*a, **kw)


def test_tokenizer_rejects_bad_names_and_ids():
    from oemdm_spec.data import get_tokenizer

    with pytest.raises(ValueError, match="gpt5.*char"):
        get_tokenizer("gpt5")
    tok = get_tokenizer("char")
    for bad in ([tok.vocab_size], [-1]):
        with pytest.raises(ValueError, match="outside"):
            tok.decode(bad)


# ----------------------------------------------------------------------------------------------------------
# config (the CLI's --key value layer)


def _keys() -> list[str]:
    from dataclasses import fields

    from oemdm_spec.fast.config import TrainConfig

    return [f.name for f in fields(TrainConfig)]


tokens = st.one_of(
    st.sampled_from(_keys()).map(lambda k: f"--{k}"),
    st.sampled_from(_keys()).map(lambda k: f"--{k.replace('_', '-')}="),
    st.text(min_size=0, max_size=8),
    st.sampled_from(["-1", "0", "1", "nan", "inf", "-inf", "1e9", "0.5", "true", "yes", "abc", "--", "-", "=",
                     "--=3", "--steps=3=4", "lomdm", "bd3lm", "tiny", "gpt2-small", "cpu", "cuda"]),
)


@settings(deadline=None, max_examples=300, derandomize=True)
@given(argv=st.lists(tokens, max_size=8))
def test_config_overrides_parse_or_raise_config_error(argv):
    from oemdm_spec.fast.config import ConfigError, TrainConfig, build_config, parse_overrides

    try:
        cfg = build_config(parse_overrides(argv))
    except ConfigError as e:
        assert str(e) and "\n" not in str(e)  # one readable line for the CLI
        return
    assert isinstance(cfg, TrainConfig)
    assert cfg.c1 > cfg.c2 >= 0 and 0 < cfg.t_min < 1 and cfg.steps >= 1 and cfg.batch_size >= 1


@settings(deadline=None, max_examples=40, derandomize=True)
@given(key=st.sampled_from(["lr", "head_lr", "ema", "weight_decay", "beta2"]),
       value=st.sampled_from(["-1", "nan", "inf", "-inf"]))
def test_config_rejects_negative_or_non_finite_optimiser_settings(key, value):
    from oemdm_spec.fast.config import ConfigError, build_config, parse_overrides

    with pytest.raises(ConfigError, match=key):
        build_config(parse_overrides([f"--{key}", value]))


@settings(deadline=None, max_examples=20, derandomize=True, suppress_health_check=list(HealthCheck))
@given(docs=st.lists(st.text(max_size=60), min_size=1, max_size=6),
       protocol=st.sampled_from(["stream", "wrap", "padded"]), seq_len=st.integers(3, 12))
def test_token_datasets_from_random_documents(tmp_path_factory, docs, protocol, seq_len):
    """Any documents: a dataset with ids in range and a cache hit that returns the same ids, or a ValueError
    (too little text for one sequence)."""
    from oemdm_spec.data import build_token_dataset, get_tokenizer

    tok = get_tokenizer("char" if protocol == "stream" else "bert-base-uncased")
    cache = tmp_path_factory.mktemp("cache")
    try:
        ds = build_token_dataset(docs, tok, protocol, seq_len, "fuzz:" + repr(docs), cache_dir=cache)
    except ValueError as e:
        assert str(e)
        return
    again = build_token_dataset(docs, tok, protocol, seq_len, "fuzz:" + repr(docs), cache_dir=cache)
    batch = [ds.get_batch(s, 3, 0) for s in range(2)]
    for b, b2 in zip(batch, [again.get_batch(s, 3, 0) for s in range(2)], strict=True):
        x = b[0] if isinstance(b, tuple) else b
        x2 = b2[0] if isinstance(b2, tuple) else b2
        assert torch.equal(x, x2)
        assert int(x.min()) >= 0 and int(x.max()) < tok.vocab_size
