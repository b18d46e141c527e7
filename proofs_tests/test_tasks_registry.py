"""Task registry (spec strings), the dataset interface (purity, rank slicing, fixed validation set), the
hidden-chain wrapper and the oracle exponents."""

from __future__ import annotations

import math

import pytest
import torch

from oemdm_spec.reference.tasks import HiddenChain
from oemdm_spec.tasks import (
    HiddenChainTask,
    LatentsObservations,
    Sudoku,
    get_task,
    normsig_two_level,
    oracle_exponents,
    prob_group_first,
    step_seed,
    task_help,
    task_names,
)


def test_spec_strings_build_the_named_tasks() -> None:
    assert task_names() == ["chain", "latents", "sudoku"]
    t = get_task("latents:N=8,P=16,fn=nae,seed=0")
    assert isinstance(t, LatentsObservations) and (t.n_latents, t.n_observations, t.fn, t.seed) == (8, 16, "nae", 0)
    assert torch.equal(t.perm, LatentsObservations(8, 16, "nae", 0).perm)
    p = get_task(" latents:N=5, fn=parity ")
    assert (p.n_latents, p.n_observations, p.fn) == (5, 16, "parity")  # P defaults to 16
    s = get_task("sudoku:box=3")
    assert isinstance(s, Sudoku) and (s.seq_len, s.vocab_size, s.sampler) == (81, 9, "backtrack")
    assert get_task("sudoku").sampler == "uniform"
    c = get_task("chain:L=8,V=4,noise=0.2,seed=3")
    assert isinstance(c, HiddenChainTask) and (c.seq_len, c.vocab_size) == (8, 4)
    assert task_help()["latents"] == {"N": 8, "P": 16, "fn": "nae", "seed": 0}


@pytest.mark.parametrize("spec,named", [
    ("maze:N=3", "maze"), ("latents:Q=3", "'Q'"), ("latents:N=x", "'N'"), ("latents:N", "'N'"),
    ("latents:N=4,N=5", "twice"), ("", "spec"), ("latents:fn=xor", "fn"),
])
def test_bad_specs_name_the_problem(spec: str, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        get_task(spec)


def test_get_batch_is_a_pure_function_sliced_by_rank() -> None:
    ds = LatentsObservations(6, 10, seed=1).dataset("train")
    a = ds.get_batch(7, 8, seed=3)
    assert a.shape == (8, 16) and a.dtype == torch.long
    assert torch.equal(a, ds.get_batch(7, 8, seed=3))  # pure in (seed, step)
    assert torch.equal(a, LatentsObservations(6, 10, seed=1).dataset().get_batch(7, 8, seed=3))  # new object
    assert not torch.equal(a, ds.get_batch(8, 8, seed=3)) and not torch.equal(a, ds.get_batch(7, 8, seed=4))
    whole = ds.get_batch(7, 8, seed=3, rank=0, world_size=1)
    assert torch.equal(torch.cat([ds.get_batch(7, 4, 3, r, 2) for r in range(2)]), whole)
    assert len(ds) == 1 << 20
    with pytest.raises(ValueError, match="rank"):
        ds.get_batch(0, 4, 0, rank=2, world_size=2)
    with pytest.raises(ValueError, match="step"):
        ds.get_batch(-1, 4, 0)
    assert step_seed(0, 1) != step_seed(1, 0) and 0 <= step_seed(2 ** 40, 2 ** 40) < 2 ** 63


def test_validation_set_is_fixed_and_iterated_in_order() -> None:
    task = Sudoku(2)
    val = task.dataset("validation")
    assert len(val) == 2048
    batches = list(val.iter_eval_batches(500))
    assert [b.shape[0] for b in batches] == [500, 500, 500, 500, 48]
    again = torch.cat(list(Sudoku(2).dataset("validation").iter_eval_batches(1000)))
    assert torch.equal(torch.cat(batches), again)
    shards = [list(val.iter_eval_batches(500, r, 2)) for r in range(2)]
    assert [b.shape[0] for b in shards[0]] == [500, 500, 48] and [b.shape[0] for b in shards[1]] == [500, 500]
    rows = {tuple(r) for r in again.tolist()}
    assert all(tuple(r) in rows for r in val.get_batch(0, 16, 0).tolist())  # validation batches come from it
    with pytest.raises(ValueError, match="split"):
        task.dataset("test")


def test_chain_wrapper_matches_the_reference_task() -> None:
    c = HiddenChainTask(8, 5, 0.1, seed=2)
    ref = HiddenChain(8, 5, 0.1, seed=2)
    assert c.entropy_nats() == ref.entropy()
    assert torch.equal(c.sample(4, torch.Generator().manual_seed(0)), ref.sample(4, torch.Generator().manual_seed(0)))
    assert torch.equal(c.easy_order(), ref.perm)


def test_oracle_exponents_put_the_first_group_high() -> None:
    task = LatentsObservations(8, 16, seed=0)
    w = oracle_exponents(task, "latents-first", 0.375, 1.025)
    assert w.dtype == torch.float64 and w.shape == (24,)
    assert bool((w[task.latent_positions] == 1.025).all()) and bool((w[task.observation_positions] == 0.375).all())
    w2 = oracle_exponents(task, "observations-first")
    assert bool((w2[task.observation_positions] == 1.025).all()) and bool((w2[task.latent_positions] == 0.375).all())
    lo, hi = normsig_two_level(8, 24, 0.7, 0.65)
    assert (lo, hi) == pytest.approx((0.7 - 0.65 / 3, 0.7 + 0.65 * 2 / 3), abs=1e-15)
    assert (8 * hi + 16 * lo) / 24 == pytest.approx(0.7, abs=1e-15)  # NormSig keeps the mean of w at c1
    with pytest.raises(ValueError, match="order"):
        oracle_exponents(task, "random")
    with pytest.raises(ValueError, match="w_lo"):
        oracle_exponents(task, "latents-first", 1.0, 0.5)
    with pytest.raises(ValueError, match="task"):
        oracle_exponents(Sudoku(2), "latents-first")


@pytest.mark.parametrize("m,n,wf,ws", [(1, 1, 1.0, 1.0), (8, 16, 1.025, 0.375), (3, 5, 0.05, 1.35)])
def test_prob_group_first_equals_the_sequential_plackett_luce_product(m: int, n: int, wf: float, ws: float) -> None:
    # first-hitting order law: the next reveal is i w.p. w_i / Σ w_j, so the whole group goes first with
    # probability Π_j (m − j) w_f / ((m − j) w_f + n w_s): an independent route to the Beta-function formula
    seq = math.prod((m - j) * wf / ((m - j) * wf + n * ws) for j in range(m))
    assert prob_group_first(m, n, wf, ws) == pytest.approx(seq, rel=1e-12)
