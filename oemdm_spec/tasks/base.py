"""The common interface of the synthetic tasks and the dataset object the trainer reads them through.

A task is a distribution over token sequences of a fixed length ``seq_len`` with ids in ``[0, vocab_size)``
(no mask id: the mask id is the model's own, ``vocab_size``). :class:`TaskDataset` turns a task into a dataset
with the interface of :class:`oemdm_spec.data.sequences.PackedDataset`:

- ``get_batch(step, batch_size, seed, rank=0, world_size=1)``: fresh samples, a pure function of
  (seed, step) — the global batch of ``batch_size * world_size`` sequences is drawn from a generator seeded by
  :func:`step_seed` (seed, step), and rank ``r`` gets rows ``[r*batch_size, (r+1)*batch_size)``;
- ``iter_eval_batches(batch_size, rank=0, world_size=1)``: a fixed validation set drawn once from a fixed seed;
- ``__len__``: the size of the validation set, or the nominal epoch size of the (infinite) training stream.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

__all__ = ["Task", "TaskDataset", "step_seed", "check_int"]

_MASK64 = (1 << 64) - 1


def check_int(owner: str, name: str, value: Any, low: int, high: int | None = None) -> int:
    """``value`` as an int in [low, high] (high=None: unbounded), else a ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        rng = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{owner}: {name} must be an int {rng}, got {name}={value!r}")
    return value


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def step_seed(seed: int, step: int) -> int:
    """A 63-bit generator seed from (seed, step): splitmix64 of each, chained, so nearby pairs do not collide
    the way ``seed * K + step`` would."""
    check_int("step_seed", "seed", seed, 0)
    check_int("step_seed", "step", step, 0)
    return _splitmix64(_splitmix64(seed) ^ step) >> 1


class Task:
    """Base class: subclasses set ``name``, ``vocab_size``, ``seq_len`` and implement :meth:`sample`."""

    name: str = "task"
    vocab_size: int
    seq_len: int

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` clean sequences, LongTensor (n, seq_len) with ids in [0, vocab_size)."""
        raise NotImplementedError

    def entropy_nats(self) -> float | None:
        """The exact entropy H(x) of one sequence in nats, or None where no exact value is known."""
        return None

    def alphabet(self) -> list[str]:
        """A printable name for each token id (no characters are implied: ids are ids)."""
        return [str(v) for v in range(self.vocab_size)]

    def dataset(self, split: str = "train", *, val_size: int = 2048, val_seed: int = 1_000_003,
                nominal_len: int = 1 << 20) -> TaskDataset:
        """The task as a dataset; see :class:`TaskDataset`."""
        return TaskDataset(self, split, val_size=val_size, val_seed=val_seed, nominal_len=nominal_len)


class TaskDataset:
    """A task read as a token dataset (``split`` = ``"train"`` or ``"validation"``).

    ``train``: an infinite stream of fresh samples; ``get_batch`` is a pure function of (seed, step, rank,
    world_size) and ``len()`` is ``nominal_len`` (only reported, never used to index). ``validation``: ``val_size``
    sequences drawn once from ``val_seed``; ``iter_eval_batches`` yields them in order and ``get_batch`` samples
    rows of it with replacement, again as a pure function of (seed, step). The validation seed differs from
    every training generator's seed with overwhelming probability (training seeds go through :func:`step_seed`).
    """

    SPLITS = ("train", "validation")

    def __init__(self, task: Task, split: str = "train", *, val_size: int = 2048, val_seed: int = 1_000_003,
                 nominal_len: int = 1 << 20) -> None:
        if split not in self.SPLITS:
            raise ValueError(f"TaskDataset: split must be one of {self.SPLITS}, got split={split!r}")
        self.task, self.split = task, split
        self.seq_len, self.vocab_size = task.seq_len, task.vocab_size
        self.val_size = check_int("TaskDataset", "val_size", val_size, 1)
        self.val_seed = check_int("TaskDataset", "val_seed", val_seed, 0)
        self.nominal_len = check_int("TaskDataset", "nominal_len", nominal_len, 1)
        self._val: Tensor | None = None

    def __len__(self) -> int:
        return self.val_size if self.split == "validation" else self.nominal_len

    def validation_set(self) -> Tensor:
        """The fixed validation sequences (val_size, seq_len), drawn once from ``val_seed`` and cached."""
        if self._val is None:
            self._val = self.task.sample(self.val_size, torch.Generator().manual_seed(self.val_seed))
        return self._val

    def get_batch(self, step: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> Tensor:
        """LongTensor (batch_size, seq_len) for ``step``, a pure function of the arguments; rank ``r`` of
        ``world_size`` gets rows [r*batch_size, (r+1)*batch_size) of the global batch."""
        check_int("get_batch", "step", step, 0)
        check_int("get_batch", "batch_size", batch_size, 1)
        check_int("get_batch", "seed", seed, 0)
        check_int("get_batch", "world_size", world_size, 1)
        check_int("get_batch", "rank", rank, 0, world_size - 1)
        gen = torch.Generator().manual_seed(step_seed(seed, step))
        total = batch_size * world_size
        if self.split == "validation":
            rows = torch.randint(self.val_size, (total,), generator=gen)
            full = self.validation_set()[rows]
        else:
            full = self.task.sample(total, gen)
        return full[rank * batch_size:(rank + 1) * batch_size].clone()

    def iter_eval_batches(self, batch_size: int, rank: int = 0, world_size: int = 1) -> Iterator[Tensor]:
        """The validation set once, in order, in batches of ``batch_size`` (the last may be short); batch b goes
        to rank b % world_size. For the ``train`` split this still iterates the validation set."""
        check_int("iter_eval_batches", "batch_size", batch_size, 1)
        check_int("iter_eval_batches", "world_size", world_size, 1)
        check_int("iter_eval_batches", "rank", rank, 0, world_size - 1)
        val = self.validation_set()
        for b, lo in enumerate(range(0, self.val_size, batch_size)):
            if b % world_size == rank:
                yield val[lo:lo + batch_size]
