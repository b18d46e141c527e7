"""Stateless, version-stable shuffling: a keyed pseudo-random permutation of ``[0, n)``.

``get_batch`` must be a pure function of ``(step, batch_size, seed, rank, world_size)`` so that a resumed run
sees bitwise the same batches. Materialising ``randperm(n)`` per epoch would be pure too, but its output depends
on the torch/numpy version and costs O(n) memory per call (9M sequences for OpenWebText). Instead each index is
mapped on its own through a small Feistel network (a bijection on ``[0, 4^h)``, ``4^h >= n``) with cycle walking
to stay inside ``[0, n)``. The round function is SplitMix64, which uses only 64-bit integer arithmetic, so the
result is identical on every platform and library version.
"""

from __future__ import annotations

import numpy as np

_MASK64 = (1 << 64) - 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_ROUNDS = 6


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser applied elementwise to a uint64 array (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def derive_key(*parts: int) -> int:
    """Fold integers (seed, epoch, …; any sign or size) into one 64-bit key via SplitMix64."""
    h = np.zeros(1, dtype=np.uint64)
    for p in parts:
        p = int(p)
        # Fold arbitrarily large / negative ints 64 bits at a time so no information is silently dropped.
        chunks = [p & _MASK64]
        p >>= 64
        while p not in (0, -1):
            chunks.append(p & _MASK64)
            p >>= 64
        chunks.append(1 if p == -1 else 0)
        for c in chunks:
            h = _splitmix64(h ^ np.array([c], dtype=np.uint64))
    return int(h[0])


def permute_indices(idx: np.ndarray, n: int, key: int) -> np.ndarray:
    """Map ``idx`` (ints in ``[0, n)``) through the keyed permutation of ``[0, n)``; returns int64.

    For fixed ``(n, key)`` this is a bijection of ``[0, n)``, so every index appears once per epoch.
    """
    if n <= 0:
        raise ValueError(f"n must be positive, got n={n}")
    idx = np.asarray(idx, dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise ValueError(f"idx must lie in [0, n={n}), got values in [{idx.min()}, {idx.max()}]")
    if n == 1:
        return np.zeros_like(idx)
    half = max(1, ((n - 1).bit_length() + 1) // 2)  # 4**half >= n
    mask = np.uint64((1 << half) - 1)
    sh = np.uint64(half)
    round_keys = [np.uint64(derive_key(key, r)) for r in range(_ROUNDS)]

    def encrypt(x: np.ndarray) -> np.ndarray:
        left, right = x >> sh, x & mask
        for k in round_keys:
            left, right = right, left ^ (_splitmix64(right ^ k) & mask)
        return (left << sh) | right

    x = encrypt(idx.astype(np.uint64))
    n64 = np.uint64(n)
    out = x >= n64
    while out.any():  # cycle walking; the domain is < 4n, so a few passes at most on average
        x[out] = encrypt(x[out])
        out = x >= n64
    return x.astype(np.int64)


def global_sample_indices(
    step: int, batch_size: int, seed: int, n: int, rank: int = 0, world_size: int = 1
) -> np.ndarray:
    """Row indices (into ``[0, n)``) of the batch that ``rank`` of ``world_size`` gets at ``step``.

    The global batch at ``step`` is samples ``step*G … step*G+G-1`` of an endless stream (``G = batch_size *
    world_size``); sample ``k`` is element ``k mod n`` of epoch ``k // n``'s permutation (keyed by ``seed`` and
    the epoch). Rank ``r`` takes the contiguous slice ``[r*batch_size, (r+1)*batch_size)`` of the global batch,
    so the union over ranks equals what one process with ``batch_size * world_size`` gets.
    """
    for name, val, lo in (("step", step, 0), ("batch_size", batch_size, 1), ("world_size", world_size, 1)):
        if not isinstance(val, (int, np.integer)) or isinstance(val, bool) or val < lo:
            raise ValueError(f"{name} must be an int >= {lo}, got {name}={val!r}")
    if not isinstance(rank, (int, np.integer)) or isinstance(rank, bool) or not 0 <= rank < world_size:
        raise ValueError(f"rank must be an int in [0, world_size={world_size}), got rank={rank!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise ValueError(f"seed must be an int, got seed={seed!r}")
    g = batch_size * world_size
    start = int(step) * g + int(rank) * batch_size
    k = np.arange(start, start + batch_size, dtype=np.int64)
    epoch, pos = k // n, k % n
    out = np.empty_like(k)
    for e in np.unique(epoch):
        sel = epoch == e
        out[sel] = permute_indices(pos[sel], n, derive_key(int(seed), int(e)))
    return out
