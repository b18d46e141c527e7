"""Latents-and-observations task: support, exact entropy by enumeration, structure, errors."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from scipy.stats import chisquare

from oemdm_spec.tasks import LatentsObservations


def _support_by_hand(task: LatentsObservations) -> set[tuple[int, ...]]:
    """Every support sequence, built with plain Python loops (independent of the tensor code)."""
    out = set()
    for lat in itertools.product((0, 1), repeat=task.n_latents):
        x = [0] * task.seq_len
        for k, pos in enumerate(task.latent_positions.tolist()):
            x[pos] = lat[k]
        for j, (a, b, c) in enumerate(task.triples.tolist()):
            bits = (lat[a], lat[b], lat[c])
            x[task.observation_positions[j]] = int(len(set(bits)) > 1) if task.fn == "nae" else sum(bits) % 2
        out.add(tuple(x))
    return out


@pytest.mark.parametrize("fn", ["nae", "parity"])
def test_support_is_2_to_the_n_equally_likely_sequences(fn: str) -> None:
    task = LatentsObservations(4, 6, fn=fn, seed=3)
    support = _support_by_hand(task)
    assert len(support) == 2 ** 4  # x -> latents is injective: 2^N distinct sequences
    n = 16_000
    x = task.sample(n, torch.Generator().manual_seed(0))
    seen = [tuple(r) for r in x.tolist()]
    assert set(seen) == support
    counts = [seen.count(s) for s in sorted(support)]
    # each has probability 2^-N: chi-square with 15 dof on a fixed seed; 1e-3 leaves room for the draw and
    # still rejects any law off uniform by a few percent at this n
    assert chisquare(counts).pvalue > 1e-3
    # exact entropy: the law is uniform on the enumerated support
    assert task.entropy_nats() == 4 * math.log(2.0)
    assert math.log(len(support)) == pytest.approx(task.entropy_nats(), abs=1e-15)


def test_structure_positions_and_triples() -> None:
    task = LatentsObservations(8, 16, seed=0)
    assert task.seq_len == 24 and task.vocab_size == 2
    both = torch.cat([task.latent_positions, task.observation_positions]).sort().values
    assert torch.equal(both, torch.arange(24))
    assert torch.equal(task.easy_order(), torch.cat([task.latent_positions, task.observation_positions]))
    for row in task.triples.tolist():
        assert len(set(row)) == 3 and row == sorted(row) and all(0 <= v < 8 for v in row)
    same, other = LatentsObservations(8, 16, seed=0), LatentsObservations(8, 16, seed=1)
    assert torch.equal(same.perm, task.perm) and torch.equal(same.triples, task.triples)
    assert not (torch.equal(other.perm, task.perm) and torch.equal(other.triples, task.triples))


def test_valid_and_log_prob_detect_a_flipped_observation() -> None:
    task = LatentsObservations(6, 10, fn="nae", seed=2)
    x = task.sample(64, torch.Generator().manual_seed(1))
    assert bool(task.valid(x).all())
    assert torch.equal(task.log_prob(x), torch.full((64,), -6 * math.log(2.0), dtype=torch.float64))
    bad = x.clone()
    bad[:, task.observation_positions[0]] ^= 1  # observations are deterministic: any flip leaves the support
    assert not bool(task.valid(bad).any())
    assert bool(torch.isinf(task.log_prob(bad)).all())
    lat = x.clone()
    lat[:, task.latent_positions[0]] = 2  # not a bit
    assert not bool(task.valid(lat).any())


def test_nae_and_parity_truth_tables() -> None:
    task = LatentsObservations(3, 1, fn="nae", seed=0)
    lat = torch.tensor(list(itertools.product((0, 1), repeat=3)))
    nae = task.observe(lat)[:, 0].tolist()
    assert nae == [0, 1, 1, 1, 1, 1, 1, 0]
    par = LatentsObservations(3, 1, fn="parity", seed=0).observe(lat)[:, 0].tolist()
    assert par == [0, 1, 1, 0, 1, 0, 0, 1]


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="fn"):
        LatentsObservations(8, 16, fn="xor")
    with pytest.raises(ValueError, match="n_latents"):
        LatentsObservations(2, 4)
    with pytest.raises(ValueError, match="n_observations"):
        LatentsObservations(4, -1)
    with pytest.raises(ValueError, match="valid: x"):
        LatentsObservations(4, 4).valid(torch.zeros(2, 7, dtype=torch.long))
