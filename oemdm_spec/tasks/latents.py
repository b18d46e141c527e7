r"""Latents and observations (Kim et al., ICML 2025, "Train for the Worst, Plan for the Best", §3).

N latent bits are uniform and independent; each of P observation bits is a fixed Boolean function of 3 distinct
latents chosen once from a fixed seed: not-all-equal (``fn="nae"``, the function of Kim et al.) or parity
(``fn="parity"``). The N + P bits sit at a fixed random interleaving of the L = N + P positions.

Why order matters here: generating latents first makes every observation a deterministic look-up, whereas an
MDM trained on random masks must also learn to infill latents from observations, a constraint-satisfaction
problem (for NAE, 3-SAT-like). The likelihood of a perfect model is the same in every order (chain rule).

Exact entropy: the observations are a function of the latents, so x ↦ latents is a bijection of the support
and H(x) = N·log 2 nats, each of the 2^N support sequences with probability 2^−N.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import Task, check_int

__all__ = ["LatentsObservations", "FUNCTIONS"]

FUNCTIONS = ("nae", "parity")


class LatentsObservations(Task):
    """The latents-and-observations task; vocabulary {0, 1}, ``seq_len = n_latents + n_observations``.

    Attributes (all fixed by ``seed``): ``triples`` (P, 3) the latent indices each observation reads (sorted,
    distinct); ``perm`` (L,) a random permutation: ``perm[:N]`` = :attr:`latent_positions` (position of latent k),
    ``perm[N:]`` = :attr:`observation_positions` (position of observation j).
    """

    name = "latents"

    def __init__(self, n_latents: int = 8, n_observations: int = 16, fn: str = "nae", seed: int = 0) -> None:
        self.n_latents = check_int("LatentsObservations", "n_latents", n_latents, 3)
        self.n_observations = check_int("LatentsObservations", "n_observations", n_observations, 0)
        if fn not in FUNCTIONS:
            raise ValueError(f"LatentsObservations: fn must be one of {FUNCTIONS}, got fn={fn!r}")
        self.fn, self.seed = fn, check_int("LatentsObservations", "seed", seed, 0)
        self.vocab_size, self.seq_len = 2, self.n_latents + self.n_observations
        gen = torch.Generator().manual_seed(seed)
        rows = [torch.randperm(self.n_latents, generator=gen)[:3].sort().values for _ in range(self.n_observations)]
        self.triples = torch.stack(rows) if rows else torch.empty(0, 3, dtype=torch.long)
        self.perm = torch.randperm(self.seq_len, generator=gen)
        self.latent_positions = self.perm[: self.n_latents]
        self.observation_positions = self.perm[self.n_latents:]

    def observe(self, latents: Tensor) -> Tensor:
        """The observation bits (n, P) of latent bits (n, N)."""
        a, b, c = (latents[:, self.triples[:, k]] for k in range(3))
        if self.fn == "nae":
            return 1 - ((a == b) & (b == c)).long()
        return a ^ b ^ c

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` sequences (n, L): uniform latents, their observations, placed at the fixed positions."""
        check_int("LatentsObservations.sample", "n", n, 0)
        latents = torch.randint(2, (n, self.n_latents), generator=generator)
        x = torch.empty(n, self.seq_len, dtype=torch.long)
        x[:, self.latent_positions] = latents
        x[:, self.observation_positions] = self.observe(latents)
        return x

    def valid(self, x: Tensor) -> Tensor:
        """BoolTensor (n,): whether each sequence of x (n, L) is in the support (binary, observations consistent)."""
        if x.dim() != 2 or x.shape[1] != self.seq_len:
            raise ValueError(f"valid: x must have shape (n, {self.seq_len}), got {tuple(x.shape)}")
        binary = ((x == 0) | (x == 1)).all(-1)
        xb = x.clamp(0, 1)
        obs = self.observe(xb[:, self.latent_positions])
        return binary & (obs == xb[:, self.observation_positions]).all(-1)

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log p(x) (n,) in float64: −N log 2 on the support, −inf off it."""
        lp = torch.full((x.shape[0],), -self.n_latents * math.log(2.0), dtype=torch.float64)
        return torch.where(self.valid(x), lp, torch.full_like(lp, -math.inf))

    def entropy_nats(self) -> float:
        """H(x) = N·log 2 nats, exactly."""
        return self.n_latents * math.log(2.0)

    def easy_order(self) -> Tensor:
        """A permutation (L,) of the positions in generation order: the latents (in latent index order), then
        the observations (in observation index order). ``easy_order().argsort()`` is the per-position step."""
        return torch.cat([self.latent_positions, self.observation_positions])

    def __repr__(self) -> str:
        return (f"LatentsObservations(N={self.n_latents}, P={self.n_observations}, fn={self.fn!r}, "
                f"seed={self.seed})")
