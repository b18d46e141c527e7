"""PackedDataset / PaddedSentenceDataset: purity of get_batch, DDP slicing, epochs, eval, validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from oemdm_spec.data import PackedDataset, PaddedSentenceDataset
from oemdm_spec.data.sampling import derive_key, global_sample_indices, permute_indices


def _stream(n: int = 10_007, vocab: int = 50) -> np.ndarray:
    return (np.arange(n, dtype=np.int64) * 7919) % vocab


@pytest.mark.parametrize("n", [1, 2, 3, 5, 16, 17, 1000, 4097])
def test_permutation_is_bijection(n: int) -> None:
    p = permute_indices(np.arange(n), n, key=derive_key(3, 1))
    assert sorted(p.tolist()) == list(range(n))
    if n >= 16:
        assert not np.array_equal(p, np.arange(n))  # it actually shuffles
        q = permute_indices(np.arange(n), n, key=derive_key(4, 1))
        assert not np.array_equal(p, q)  # and the key matters


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 3000), seed=st.integers(-(2**70), 2**70), epoch=st.integers(0, 10**6))
def test_permutation_is_bijection_property(n: int, seed: int, epoch: int) -> None:
    p = permute_indices(np.arange(n), n, key=derive_key(seed, epoch))
    assert np.array_equal(np.sort(p), np.arange(n))


@settings(max_examples=40, deadline=None)
@given(
    step=st.integers(0, 10**9),
    batch=st.integers(1, 9),
    world=st.integers(1, 5),
    seed=st.integers(0, 2**64),
    n=st.integers(1, 500),
)
def test_ddp_slicing_property(step: int, batch: int, world: int, seed: int, n: int) -> None:
    full = global_sample_indices(step, batch * world, seed, n)
    parts = [global_sample_indices(step, batch, seed, n, rank=r, world_size=world) for r in range(world)]
    assert np.array_equal(np.concatenate(parts), full)
    assert full.min() >= 0 and full.max() < n


def test_permutation_pinned_values() -> None:
    # Pinned output: a change here would silently change every training run's data order.
    assert permute_indices(np.arange(10), 10, key=derive_key(0, 0)).tolist() == [9, 4, 6, 8, 3, 1, 2, 5, 0, 7]


def test_get_batch_pure_and_shape() -> None:
    ds = PackedDataset(_stream(), seq_len=32, vocab_size=50)
    assert len(ds) == 10_007 // 32
    a = ds.get_batch(step=7, batch_size=8, seed=123)
    b = PackedDataset(_stream(), seq_len=32, vocab_size=50).get_batch(7, 8, 123)
    assert a.dtype == torch.long and a.shape == (8, 32)
    assert torch.equal(a, b)
    assert not torch.equal(a, ds.get_batch(8, 8, 123))
    assert not torch.equal(a, ds.get_batch(7, 8, 124))
    # Each row is one of the aligned sequences of the stream.
    rows = global_sample_indices(7, 8, 123, len(ds))
    for r, i in zip(a, rows, strict=True):
        assert torch.equal(r, torch.from_numpy(_stream()[i * 32 : (i + 1) * 32]))


@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_ddp_ranks_slice_the_global_batch(world_size: int) -> None:
    ds = PackedDataset(_stream(), seq_len=16)
    for step in (0, 1, 29, 1000):
        full = ds.get_batch(step, 5 * world_size, seed=9)
        parts = [ds.get_batch(step, 5, seed=9, rank=r, world_size=world_size) for r in range(world_size)]
        assert torch.equal(torch.cat(parts), full)


def test_epoch_covers_every_sequence_once() -> None:
    ds = PackedDataset(np.arange(100 * 4) % 50, seq_len=4)  # 100 sequences; row i starts with (4i) % 50
    n = len(ds)
    rows = np.concatenate([global_sample_indices(s, 10, 5, n) for s in range(10)])
    assert sorted(rows.tolist()) == list(range(n))
    nxt = np.concatenate([global_sample_indices(s, 10, 5, n) for s in range(10, 20)])
    assert sorted(nxt.tolist()) == list(range(n)) and not np.array_equal(rows, nxt)
    # A batch straddling the epoch boundary (steps of 7 do not divide 100).
    straddle = np.concatenate([global_sample_indices(s, 7, 5, n) for s in range(15)])[:100]
    assert sorted(straddle.tolist()) == list(range(n))


def test_resume_gets_same_batches_from_memmap(tmp_path) -> None:
    arr = _stream().astype(np.uint16)
    path = tmp_path / "ids.bin"
    arr.tofile(path)
    mm = np.memmap(path, dtype=np.uint16, mode="r")
    ds_mem, ds_ram = PackedDataset(mm, 64, vocab_size=50), PackedDataset(arr, 64)
    for step in range(3):
        assert torch.equal(ds_mem.get_batch(step, 4, 1), ds_ram.get_batch(step, 4, 1))


def test_iter_eval_batches_covers_split_in_order() -> None:
    ds = PackedDataset(_stream(), seq_len=10)
    batches = list(ds.iter_eval_batches(batch_size=64))
    cat = torch.cat(batches)
    assert cat.shape == (1000, 10) and batches[-1].shape[0] == 1000 - 15 * 64
    assert torch.equal(cat.reshape(-1), torch.from_numpy(_stream()[:10_000]))
    ddp = [list(ds.iter_eval_batches(64, rank=r, world_size=3)) for r in range(3)]
    assert sum(len(b) for b in ddp) == len(batches)
    assert torch.equal(ddp[1][0], batches[1]) and torch.equal(ddp[0][1], batches[3])


def test_packed_validation_errors() -> None:
    with pytest.raises(ValueError, match=r"ids: token id 50 at index 3 is outside \[0, vocab_size=50\)"):
        PackedDataset([1, 2, 3, 50, 4], seq_len=2, vocab_size=50)
    with pytest.raises(ValueError, match=r"ids: token id -1 at index 1"):
        PackedDataset(np.array([1, -1, 3, 4]), seq_len=2)
    with pytest.raises(ValueError, match=r"ids is empty"):
        PackedDataset([], seq_len=4)
    with pytest.raises(ValueError, match=r"ids has 3 tokens, fewer than one sequence of seq_len=4"):
        PackedDataset([1, 2, 3], seq_len=4)
    with pytest.raises(ValueError, match=r"seq_len must be a positive int, got seq_len=0"):
        PackedDataset([1, 2, 3], seq_len=0)
    with pytest.raises(ValueError, match=r"ids must hold integer token ids"):
        PackedDataset(np.array([0.5, 1.0]), seq_len=1)
    ds = PackedDataset([1, 2, 3, 4], seq_len=2)
    with pytest.raises(ValueError, match=r"rank must be an int in \[0, world_size=2\), got rank=2"):
        ds.get_batch(0, 1, 0, rank=2, world_size=2)
    with pytest.raises(ValueError, match=r"step must be an int >= 0, got step=-1"):
        ds.get_batch(-1, 1, 0)
    with pytest.raises(ValueError, match=r"batch_size must be an int >= 1, got batch_size=0"):
        ds.get_batch(0, 0, 0)


def test_padded_sentences() -> None:
    sents = [[5, 6, 7], [1], list(range(1, 12)), [2, 3]]
    ds = PaddedSentenceDataset(sents, seq_len=6, pad_id=0, vocab_size=20)
    x, pad = next(ds.iter_eval_batches(4))
    assert x.tolist() == [[5, 6, 7, 0, 0, 0], [1, 0, 0, 0, 0, 0], [1, 2, 3, 4, 5, 6], [2, 3, 0, 0, 0, 0]]
    assert pad.dtype == torch.bool
    assert pad.sum(1).tolist() == [3, 5, 0, 4] and not pad[:, 0].any()
    # Same purity and DDP contract as the packed dataset.
    xa, pa = ds.get_batch(3, 4, seed=1)
    x0, p0 = ds.get_batch(3, 2, seed=1, rank=0, world_size=2)
    x1, p1 = ds.get_batch(3, 2, seed=1, rank=1, world_size=2)
    assert torch.equal(torch.cat([x0, x1]), xa) and torch.equal(torch.cat([p0, p1]), pa)
    assert sorted(map(tuple, xa.tolist())) == sorted(map(tuple, x.tolist()))  # one epoch = all sentences
    # A pre-padded array with lengths (the cache format) gives the same batches.
    ds2 = PaddedSentenceDataset(ds.x.astype(np.uint16), 6, pad_id=0, lengths=ds.lengths)
    assert all(torch.equal(a, b) for a, b in zip(ds2.get_batch(3, 4, 1), (xa, pa), strict=True))
    with pytest.raises(ValueError, match=r"sentences: token id 20 at index"):
        PaddedSentenceDataset([[1, 20]], seq_len=4, pad_id=0, vocab_size=20)
    with pytest.raises(ValueError, match=r"sentences is empty"):
        PaddedSentenceDataset([], seq_len=4, pad_id=0)
    with pytest.raises(ValueError, match=r"pad_id must be an id in \[0, vocab_size=20\), got pad_id=20"):
        PaddedSentenceDataset([[1]], seq_len=4, pad_id=20, vocab_size=20)
