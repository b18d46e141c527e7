r"""Synthetic tasks where the generation order matters for a small model (the LoMDM demonstration).

:class:`HiddenChain` — a fixed permutation π of the L positions and a fixed bijection g of the vocabulary.
Each sequence has x_{π(1)} uniform and x_{π(k+1)} = g(x_{π(k)}), except that with probability ``noise`` the
next token is redrawn uniformly from the whole vocabulary instead. A perfect model has the same likelihood in
every order (the chain rule), so any order advantage is about *learnability*: an order that grows a
contiguous stretch of the chain only needs one-step look-ups of g or g⁻¹, a random order needs g composed
many times.

The sequence is a stationary Markov chain along π with uniform marginals, so its entropy is exact:
H(x) = log V + (L − 1)·H_step, H_step the entropy of one transition row (:meth:`HiddenChain.entropy`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["HiddenChain", "neighbour_fraction", "random_order_neighbour_fraction", "spearman"]


class HiddenChain:
    """The hidden-chain task. ``perm[k]`` = π(k+1) (0-indexed position holding chain link k); ``g[v]`` the map.

    ``chain_index[i]`` is the link k of position i (the inverse permutation).
    """

    def __init__(self, length: int, vocab_size: int, noise: float = 0.1, seed: int = 0) -> None:
        if not isinstance(length, int) or length < 2:
            raise ValueError(f"HiddenChain: length must be an int >= 2, got length={length!r}")
        if not isinstance(vocab_size, int) or vocab_size < 2:
            raise ValueError(f"HiddenChain: vocab_size must be an int >= 2, got vocab_size={vocab_size!r}")
        if not (0.0 <= noise <= 1.0):
            raise ValueError(f"HiddenChain: noise must lie in [0, 1], got noise={noise!r}")
        gen = torch.Generator().manual_seed(seed)
        self.length, self.vocab_size, self.noise, self.seed = length, vocab_size, float(noise), seed
        self.perm = torch.randperm(length, generator=gen)
        self.g = torch.randperm(vocab_size, generator=gen)
        self.chain_index = torch.empty_like(self.perm)
        self.chain_index[self.perm] = torch.arange(length)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n sequences (n, L) of token ids."""
        links = torch.empty(n, self.length, dtype=torch.long)
        links[:, 0] = torch.randint(self.vocab_size, (n,), generator=generator)
        for k in range(1, self.length):
            redraw = torch.rand(n, generator=generator) < self.noise
            fresh = torch.randint(self.vocab_size, (n,), generator=generator)
            links[:, k] = torch.where(redraw, fresh, self.g[links[:, k - 1]])
        x = torch.empty_like(links)
        x[:, self.perm] = links
        return x

    def step_entropy(self) -> float:
        """H of one transition: g(x) w.p. 1 − p + p/V, each other token w.p. p/V (nats)."""
        v, p = self.vocab_size, self.noise
        stay = 1.0 - p + p / v
        other = p / v
        h = -stay * math.log(stay)
        if other > 0:
            h -= (v - 1) * other * math.log(other)
        return h

    def entropy(self) -> float:
        """H(x) in nats per sequence: the floor any valid NELBO must stay above."""
        return math.log(self.vocab_size) + (self.length - 1) * self.step_entropy()

    def __repr__(self) -> str:
        return f"HiddenChain(L={self.length}, V={self.vocab_size}, noise={self.noise}, seed={self.seed})"


def neighbour_fraction(order: Tensor, chain_index: Tensor) -> float:
    """Fraction of unmask events (after the first of each sample) that reveal a chain neighbour of an
    already revealed position. ``order`` (B, L): distinct steps per row (one reveal per step)."""
    b, length = order.shape
    link_of_step = chain_index[order.argsort(-1)]  # (B, L): chain link revealed at step s
    revealed = torch.zeros(b, length + 2, dtype=torch.bool)  # padded by one link on each side
    hits = 0
    rows = torch.arange(b)
    for s in range(length):
        k = link_of_step[:, s] + 1
        if s > 0:
            hits += int((revealed[rows, k - 1] | revealed[rows, k + 1]).sum())
        revealed[rows, k] = True
    return hits / (b * (length - 1))


def random_order_neighbour_fraction(length: int) -> float:
    r"""The same fraction for a uniformly random order, exactly.

    At step s (s = 1..L−1 revealed positions before it), a uniformly random new link k has each of its (one or
    two) chain neighbours revealed with probability s/(L−1) each, jointly s(s−1)/((L−1)(L−2)); averaging
    over the L−s candidate links (two endpoints with one neighbour) gives P(hit at step s).
    """
    total = 0.0
    n = length
    for s in range(1, n):
        p1 = s / (n - 1)
        p2 = s * (s - 1) / ((n - 1) * (n - 2)) if n > 2 else 0.0
        interior = (n - 2) / n * (2 * p1 - p2)  # P(at least one of two revealed)
        ends = 2 / n * p1
        total += interior + ends
    return total / (n - 1)


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman ρ between rows of a (B, L) and a reference b (L,) or (B, L); ties get arbitrary ranks."""
    ra = a.argsort(-1).argsort(-1).double()
    rb = (b.expand_as(a) if b.dim() == 1 else b).argsort(-1).argsort(-1).double()
    ra = ra - ra.mean(-1, keepdim=True)
    rb = rb - rb.mean(-1, keepdim=True)
    return (ra * rb).sum(-1) / (ra.norm(dim=-1) * rb.norm(dim=-1))
