"""Token datasets for training: packed (wrapped) sequences and padded sentences.

Both expose ``get_batch(step, batch_size, seed, rank=0, world_size=1)``, a pure function of its arguments
(see :func:`oemdm_spec.data.sampling.global_sample_indices`): a resumed run gets bitwise the same batches, and
rank ``r`` of ``W`` gets rows ``[r*B, (r+1)*B)`` of the global batch that one process with ``B*W`` would get.
Both also expose ``iter_eval_batches(batch_size)``, every sequence of the split exactly once, in order.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from oemdm_spec.data.sampling import global_sample_indices

_CHECK_CHUNK = 1 << 24  # elements per chunk when scanning huge memmaps for out-of-range ids


def as_token_array(ids: Any, name: str = "ids") -> np.ndarray:
    """Turn a list / numpy array / memmap / tensor of token ids into an integer numpy array (no copy if possible)."""
    if isinstance(ids, torch.Tensor):
        ids = ids.detach().cpu().numpy()
    arr = ids if isinstance(ids, np.ndarray) else np.asarray(ids)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        if arr.size == 0:
            arr = arr.astype(np.int64)
        else:
            raise ValueError(f"{name} must hold integer token ids, got dtype {arr.dtype}")
    return arr


def check_token_range(arr: np.ndarray, vocab_size: int | None, name: str = "ids") -> None:
    """Raise ``ValueError`` naming ``name`` and the offending value if any id is < 0 or >= vocab_size."""
    if vocab_size is not None and (not isinstance(vocab_size, (int, np.integer)) or vocab_size < 1):
        raise ValueError(f"vocab_size must be a positive int, got vocab_size={vocab_size!r}")
    flat = arr.reshape(-1)
    signed = np.issubdtype(arr.dtype, np.signedinteger)
    if not signed and vocab_size is None:
        return
    for lo in range(0, flat.size, _CHECK_CHUNK):
        chunk = np.asarray(flat[lo : lo + _CHECK_CHUNK])
        bad = np.zeros(chunk.shape, dtype=bool)
        if signed:
            bad |= chunk < 0
        if vocab_size is not None:
            bad |= chunk >= vocab_size
        if bad.any():
            j = int(np.argmax(bad))
            rng = f"[0, vocab_size={vocab_size})" if vocab_size is not None else "[0, inf)"
            raise ValueError(f"{name}: token id {int(chunk[j])} at index {lo + j} is outside {rng}")
    _release_pages(arr)


def _release_pages(arr: np.ndarray) -> None:
    """Drop the pages a full scan of a read-only memmap mapped into this process. They are clean file pages
    (the kernel's page cache keeps them), but they count in the process's RSS: a 1 GB cache scanned once
    would otherwise look like 600 MB of resident memory for the rest of the run."""
    base = arr
    while base is not None and not isinstance(base, np.memmap):
        base = getattr(base, "base", None)
    mm = getattr(base, "_mmap", None)
    if mm is not None and hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        try:
            mm.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError):  # not supported here: only memory accounting is affected
            pass


def _check_pos_int(name: str, value: Any) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {name}={value!r}")
    return int(value)


def _eval_batches(n: int, batch_size: int, rank: int, world_size: int) -> Iterator[np.ndarray]:
    batch_size = _check_pos_int("batch_size", batch_size)
    world_size = _check_pos_int("world_size", world_size)
    if not isinstance(rank, (int, np.integer)) or not 0 <= rank < world_size:
        raise ValueError(f"rank must be an int in [0, world_size={world_size}), got rank={rank!r}")
    for b, lo in enumerate(range(0, n, batch_size)):
        if b % world_size == rank:
            yield np.arange(lo, min(lo + batch_size, n), dtype=np.int64)


class PackedDataset:
    """A 1-D token stream cut into ``len(ids) // seq_len`` non-overlapping sequences of ``seq_len`` tokens.

    ``ids`` may be a list, numpy array, ``np.memmap`` (kept on disk; only sampled rows are read) or tensor. The
    trailing ``len(ids) % seq_len`` tokens are not used. With ``vocab_size`` given, every id is checked to lie
    in ``[0, vocab_size)`` (negative ids are always rejected).
    """

    def __init__(self, ids: Any, seq_len: int, vocab_size: int | None = None) -> None:
        self.seq_len = _check_pos_int("seq_len", seq_len)
        arr = as_token_array(ids, "ids")
        if arr.ndim != 1:
            raise ValueError(f"ids must be 1-D, got shape {tuple(arr.shape)}")
        if arr.size == 0:
            raise ValueError("ids is empty (0 tokens); need at least one sequence of seq_len tokens")
        if arr.size < self.seq_len:
            raise ValueError(f"ids has {arr.size} tokens, fewer than one sequence of seq_len={self.seq_len}")
        check_token_range(arr, vocab_size, "ids")
        self.vocab_size = vocab_size
        self.ids = arr
        self.num_sequences = arr.size // self.seq_len
        self._rows = arr[: self.num_sequences * self.seq_len].reshape(self.num_sequences, self.seq_len)

    def __len__(self) -> int:
        return self.num_sequences

    def _gather(self, rows: np.ndarray) -> torch.Tensor:
        # Fancy indexing copies just these rows out of a memmap; int64 is what embeddings want.
        return torch.from_numpy(np.asarray(self._rows[rows]).astype(np.int64, copy=False))

    def __getitem__(self, i: int) -> torch.Tensor:
        if not -self.num_sequences <= i < self.num_sequences:
            raise IndexError(f"sequence index {i} out of range for {self.num_sequences} sequences")
        return self._gather(np.array([i % self.num_sequences]))[0]

    def get_batch(self, step: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> torch.Tensor:
        """LongTensor ``(batch_size, seq_len)`` for ``step``: a pure function of the arguments.

        Sequences are drawn without replacement within an epoch (a keyed permutation per epoch). Rank ``r`` of
        ``world_size`` gets rows ``[r*batch_size, (r+1)*batch_size)`` of the global batch of size
        ``batch_size * world_size``.
        """
        rows = global_sample_indices(step, batch_size, seed, self.num_sequences, rank, world_size)
        return self._gather(rows)

    def iter_eval_batches(self, batch_size: int, rank: int = 0, world_size: int = 1) -> Iterator[torch.Tensor]:
        """Every sequence once, in order, as LongTensors ``(<=batch_size, seq_len)`` (the last may be short).

        With ``world_size > 1``, batch ``b`` goes to rank ``b % world_size``.
        """
        for rows in _eval_batches(self.num_sequences, batch_size, rank, world_size):
            yield self._gather(rows)


class PaddedSentenceDataset:
    """Sentences each padded (or truncated) to ``seq_len`` with ``pad_id`` — the LM1B "sentence-padded" protocol.

    ``sentences`` is either a sequence of token-id lists (padded/truncated here: a sentence longer than
    ``seq_len`` keeps its first ``seq_len`` ids) or an already padded 2-D array ``(N, seq_len)`` together with
    ``lengths`` (e.g. a memmap from the cache). Batches are ``(x, pad_mask)``: ``x`` LongTensor
    ``(B, seq_len)`` and ``pad_mask`` BoolTensor ``(B, seq_len)`` that is **True at padding positions** (so a
    loss is summed over ``~pad_mask``).
    """

    def __init__(
        self,
        sentences: Sequence[Sequence[int]] | np.ndarray,
        seq_len: int,
        pad_id: int,
        vocab_size: int | None = None,
        lengths: Sequence[int] | np.ndarray | None = None,
    ) -> None:
        self.seq_len = _check_pos_int("seq_len", seq_len)
        if not isinstance(pad_id, (int, np.integer)) or pad_id < 0 or (vocab_size is not None and pad_id >= vocab_size):
            raise ValueError(f"pad_id must be an id in [0, vocab_size={vocab_size}), got pad_id={pad_id!r}")
        self.pad_id = int(pad_id)
        self.vocab_size = vocab_size
        if lengths is not None:
            arr = as_token_array(sentences, "sentences")
            if arr.ndim != 2 or arr.shape[1] != self.seq_len:
                raise ValueError(
                    f"sentences must have shape (N, seq_len={self.seq_len}) when lengths is given, "
                    f"got {tuple(arr.shape)}"
                )
            lens = np.asarray(lengths, dtype=np.int64)
            if lens.shape != (arr.shape[0],) or (lens.size and (lens.min() < 0 or lens.max() > self.seq_len)):
                raise ValueError(f"lengths must be N={arr.shape[0]} ints in [0, seq_len], got {lens!r}")
            self.x, self.lengths = arr, lens
        else:
            self.x, self.lengths = self._pad(sentences)
        if self.x.shape[0] == 0:
            raise ValueError("sentences is empty (0 sentences)")
        check_token_range(self.x, vocab_size, "sentences")
        self.num_sequences = int(self.x.shape[0])

    def _pad(self, sentences: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        n = len(sentences)
        dtype = np.int64
        x = np.full((n, self.seq_len), self.pad_id, dtype=dtype)
        lens = np.zeros(n, dtype=np.int64)
        for i, s in enumerate(sentences):
            a = as_token_array(list(s), f"sentences[{i}]")[: self.seq_len]
            x[i, : a.size] = a
            lens[i] = a.size
        return x, lens

    def __len__(self) -> int:
        return self.num_sequences

    def _gather(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(np.asarray(self.x[rows]).astype(np.int64, copy=False))
        lens = torch.from_numpy(self.lengths[rows])
        pad_mask = torch.arange(self.seq_len)[None, :] >= lens[:, None]
        return x, pad_mask

    def get_batch(
        self, step: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, pad_mask)`` for ``step``; same purity and DDP-slicing contract as :meth:`PackedDataset.get_batch`."""
        rows = global_sample_indices(step, batch_size, seed, self.num_sequences, rank, world_size)
        return self._gather(rows)

    def iter_eval_batches(
        self, batch_size: int, rank: int = 0, world_size: int = 1
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Every sentence once, in order, as ``(x, pad_mask)`` batches (the last may be short)."""
        for rows in _eval_batches(self.num_sequences, batch_size, rank, world_size):
            yield self._gather(rows)
