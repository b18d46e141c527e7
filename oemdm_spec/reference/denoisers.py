"""Tiny denoisers for the theorem checks: a callable ``(z (B, L), t (B,)) -> logits (B, L, V)``.

- :class:`TabularDenoiser` is a fixed random table indexed by the *whole* noisy sequence z. It is the most
  general time-agnostic denoiser there is on a tiny problem, so the theorems are checked against an
  arbitrary x_θ rather than a structured one.
- :class:`SmallDenoiser` is a small trainable network (embedding + MLP over the whole sequence), for tests
  that train something.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["TabularDenoiser", "SmallDenoiser", "encode_state"]


def encode_state(z: Tensor, vocab_size: int) -> Tensor:
    """Index of z ∈ {0..V}^L in base V + 1 (the mask id V is the digit V)."""
    base = vocab_size + 1
    powers = base ** torch.arange(z.shape[-1] - 1, -1, -1, device=z.device)
    return (z.long() * powers).sum(-1)


class TabularDenoiser:
    """x_θ^i(z) = softmax(table[z, i]) with a fixed random table over all (V + 1)^L states z.

    ``scale`` sets the spread of the logits (larger = more confident). ``time_dependent=True`` adds
    ``t·table2[z, i]`` to the logits, for the checks that need a denoiser which reads t.
    """

    def __init__(
        self,
        length: int,
        vocab_size: int,
        *,
        seed: int = 0,
        scale: float = 1.5,
        time_dependent: bool = False,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        n_states = (vocab_size + 1) ** length
        if n_states > 2_000_000:
            raise ValueError(f"TabularDenoiser: (V+1)^L = {n_states} states is too many for a table")
        gen = torch.Generator().manual_seed(seed)
        self.length, self.vocab_size = length, vocab_size
        self.table = scale * torch.randn(n_states, length, vocab_size, generator=gen, dtype=dtype)
        self.table_t = torch.randn(n_states, length, vocab_size, generator=gen, dtype=dtype) if time_dependent else None
        self.time_dependent = time_dependent

    def __call__(self, z: Tensor, t: Tensor) -> Tensor:
        if z.shape[-1] != self.length:
            raise ValueError(f"TabularDenoiser: z has length {z.shape[-1]}, expected {self.length}")
        if bool((z < 0).any()) or bool((z > self.vocab_size).any()):
            raise ValueError(f"TabularDenoiser: z must lie in [0, {self.vocab_size}] (mask id = V)")
        index = encode_state(z, self.vocab_size)
        logits = self.table[index]
        if self.table_t is not None:
            logits = logits + t.to(logits.dtype).reshape(*t.shape, 1, 1) * self.table_t[index]
        return logits


class SmallDenoiser(nn.Module):
    """A small trainable denoiser: token + position embeddings, an MLP over the flattened sequence.

    Time-agnostic (it ignores t), as the theorems of spec §2 assume; float64 by default for the reference.
    """

    def __init__(self, length: int, vocab_size: int, hidden: int = 64, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        self.length, self.vocab_size = length, vocab_size
        self.embed = nn.Embedding(vocab_size + 1, 16, dtype=dtype)
        self.pos = nn.Parameter(torch.zeros(length, 16, dtype=dtype))
        self.mlp = nn.Sequential(
            nn.Linear(16 * length, hidden, dtype=dtype),
            nn.GELU(),
            nn.Linear(hidden, length * vocab_size, dtype=dtype),
        )

    def forward(self, z: Tensor, t: Tensor) -> Tensor:
        h = (self.embed(z.long()) + self.pos).flatten(-2)
        return self.mlp(h).unflatten(-1, (self.length, self.vocab_size))
