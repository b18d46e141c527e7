"""Per-step noise: every random quantity of training step s is a pure function of (seed, s).

The times t and the mask uniforms are drawn for the *global* batch from a generator seeded by (seed, step) and
sliced by rank, so the same global batch gives the same masks on 1 or N processes, and a resumed run draws the
same noise as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    """A CPU generator that is a pure function of (seed, step, stream)."""
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + step * 7919 + stream * 104_729) % (2**63 - 1))
    return g


@dataclass
class StepNoise:
    t: Tensor  # (B,) per sequence, or (B, n_times) when a process needs several times (BD3LM: one per block)
    u: Tensor  # (K, B, L) uniforms for the masks
    seed: int = 0  # a per-(seed, step, rank) integer for kernels that draw their own counter-based uniforms


def draw_step_noise(seed: int, step: int, *, global_batch: int, seq_len: int, K: int, t_min: float,
                    n_times: int = 1, rank: int = 0, world_size: int = 1,
                    device: torch.device | str = "cpu") -> StepNoise:
    """t stratified over the whole global batch (t ∈ [t_min, 1)), and mask uniforms; this rank's slice.

    Stratification: with N = global_batch·n_times slots, t_j = t_min + (1 − t_min)·((j + o) / N) with one
    offset o ~ U[0,1) and a random assignment of slots to sequences, so each rank still gets a spread of t."""
    if global_batch % world_size:
        raise ValueError(f"draw_step_noise: global_batch {global_batch} not divisible by world_size {world_size}")
    g = step_generator(seed, step)
    n = global_batch * n_times
    offset = torch.rand((), generator=g, dtype=torch.float64)
    perm = torch.randperm(n, generator=g)
    s = (perm.double() + offset) / n
    t = (t_min + (1.0 - t_min) * s).float().view(global_batch, n_times)
    u = torch.rand((K, global_batch, seq_len), generator=g).clamp_min(1e-12)
    # drawn last, so t and u are the same as before this field existed
    kernel_seed = int(torch.randint(0, 2**62, (), generator=g)) + rank
    local = global_batch // world_size
    sl = slice(rank * local, (rank + 1) * local)
    t = t[sl] if n_times > 1 else t[sl, 0]
    return StepNoise(t=t.to(device), u=u[:, sl].to(device), seed=kernel_seed)
