"""The hidden chain of :mod:`oemdm_spec.reference.tasks` behind the common task interface: the control task
where every order has the same likelihood and a small model only gains from chain-contiguous orders."""

from __future__ import annotations

import torch
from torch import Tensor

from oemdm_spec.reference.tasks import HiddenChain

from .base import Task, check_int

__all__ = ["HiddenChainTask", "HiddenChain"]


class HiddenChainTask(Task):
    """Wraps :class:`HiddenChain` (``length``, ``vocab_size``, ``noise``, ``seed``); ``chain`` is the wrapped
    object (``chain.perm``, ``chain.g``, ``chain.chain_index``)."""

    name = "chain"

    def __init__(self, length: int = 16, vocab_size: int = 16, noise: float = 0.1, seed: int = 0) -> None:
        check_int("HiddenChainTask", "seed", seed, 0)
        self.chain = HiddenChain(length, vocab_size, noise, seed)
        self.vocab_size, self.seq_len = vocab_size, length

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` sequences (n, L) of the chain."""
        check_int("HiddenChainTask.sample", "n", n, 0)
        return self.chain.sample(n, generator)

    def entropy_nats(self) -> float:
        """log V + (L − 1)·H_step, exactly (:meth:`HiddenChain.entropy`)."""
        return self.chain.entropy()

    def easy_order(self) -> Tensor:
        """Positions in chain order (L,): one contiguous stretch grown from link 0."""
        return self.chain.perm.clone()

    def __repr__(self) -> str:
        return f"HiddenChainTask({self.chain!r})"
