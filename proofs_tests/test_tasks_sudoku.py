"""Sudoku: grid count and uniformity (4×4), the generator's validity, the counting solver, unique and locally
minimal puzzles, the propagation order, and solve_accuracy."""

from __future__ import annotations

import math
from itertools import permutations

import pytest
import torch
from scipy.stats import chisquare

from oemdm_spec.tasks import Sudoku, SudokuPuzzles, count_solutions, is_valid_grid, solve, solve_accuracy


def _brute_force_4x4() -> set[tuple[int, ...]]:
    """All 4×4 grids from rows that are permutations, checked column- and box-wise (independent of the solver)."""
    rows = list(permutations(range(4)))
    out = set()

    def ok(grid: list[tuple[int, ...]]) -> bool:
        r = len(grid)
        for c in range(4):
            if len({g[c] for g in grid}) != r:
                return False
        for band in range(0, r, 2):
            for stack in (0, 2):
                cells = [grid[i][j] for i in range(band, min(band + 2, r)) for j in (stack, stack + 1)]
                if len(set(cells)) != len(cells):
                    return False
        return True

    def rec(grid: list[tuple[int, ...]]) -> None:
        if len(grid) == 4:
            out.add(tuple(v for row in grid for v in row))
            return
        for row in rows:
            if ok(grid + [row]):
                rec(grid + [row])

    rec([])
    return out


def test_4x4_has_288_grids_and_the_uniform_sampler_is_uniform() -> None:
    task = Sudoku(2)
    grids = task.all_grids()
    assert grids.shape == (288, 16)
    assert {tuple(g) for g in grids.tolist()} == _brute_force_4x4()
    assert count_solutions([-1] * 16, limit=10 ** 6) == 288  # the solver counts them too
    assert task.entropy_nats() == math.log(288)
    x = task.sample(288 * 40, torch.Generator().manual_seed(0))
    index = {tuple(g): i for i, g in enumerate(grids.tolist())}
    counts = torch.bincount(torch.tensor([index[tuple(r)] for r in x.tolist()]), minlength=288)
    # 287 dof on a fixed seed; p > 1e-3 allows the draw, while the backtrack law (next test) fails it
    assert chisquare(counts.tolist()).pvalue > 1e-3


def test_backtrack_sampler_gives_valid_grids_full_support_on_4x4_and_no_exact_entropy() -> None:
    task = Sudoku(2, sampler="backtrack")
    x = task.sample(288 * 40, torch.Generator().manual_seed(1))
    assert bool(is_valid_grid(x).all())
    assert len({tuple(r) for r in x.tolist()}) == 288  # every grid has positive probability
    # ... but it is not uniform: the 96-grid orbit of G gets ≈ 0.25 of the mass instead of 1/3 (measured), so
    # the same chi-square that the uniform sampler passes rejects it (p ≈ 1e-30 or below at this n)
    index = {tuple(g): i for i, g in enumerate(task.all_grids().tolist())}
    counts = torch.bincount(torch.tensor([index[tuple(r)] for r in x.tolist()]), minlength=288)
    assert chisquare(counts.tolist()).pvalue < 1e-6
    assert task.entropy_nats() is None
    assert task.entropy_upper_bound_nats() == math.log(288)
    big = Sudoku(3)
    y = big.sample(40, torch.Generator().manual_seed(2))
    assert y.shape == (40, 81) and bool(is_valid_grid(y).all()) and int(y.min()) == 0 and int(y.max()) == 8
    assert len({tuple(r) for r in y.tolist()}) == 40
    assert big.entropy_nats() is None
    assert big.entropy_upper_bound_nats() == pytest.approx(math.log(6_670_903_752_021_072_936_960), rel=1e-15)


def test_random_symmetry_preserves_validity_and_moves_grids() -> None:
    task = Sudoku(3)
    base = task.sample(1, torch.Generator().manual_seed(3)).repeat(50, 1)
    moved = task.random_symmetry(base, torch.Generator().manual_seed(4))
    assert bool(is_valid_grid(moved).all())
    assert len({tuple(r) for r in moved.tolist()}) == 50  # |G| ≈ 1.2e12: 50 draws never collide in practice


def test_is_valid_grid_rejects_each_kind_of_clash() -> None:
    g = Sudoku(2).all_grids()[:1].clone()
    assert bool(is_valid_grid(g)[0])
    swapped = g.clone()
    swapped[0, [0, 1]] = swapped[0, [1, 0]]  # rows still permutations; columns clash
    assert not bool(is_valid_grid(swapped)[0])
    assert not bool(is_valid_grid(torch.zeros(1, 16, dtype=torch.long))[0])
    with pytest.raises(ValueError, match="b⁴ cells"):
        is_valid_grid(torch.zeros(1, 15, dtype=torch.long))


def test_count_solutions_and_solve() -> None:
    g = Sudoku(2).all_grids()[5].tolist()
    assert count_solutions(g) == 1
    assert count_solutions([-1] * 16, limit=2) == 2
    clash = [0, 0] + [-1] * 14
    assert count_solutions(clash) == 0 and solve(clash) is None
    holes = list(g)
    holes[3] = holes[10] = -1
    assert solve(holes) == g


@pytest.mark.parametrize("box,count", [(2, 30), (3, 3)])
def test_puzzles_are_unique_and_locally_minimal(box: int, count: int) -> None:
    task = Sudoku(box)
    puz = task.make_puzzles(count, torch.Generator().manual_seed(5))
    assert len(puz) == count and bool(is_valid_grid(puz.solution).all())
    for i in range(count):
        cells = puz.cells(i)
        assert count_solutions(cells, limit=3) == 1
        assert solve(cells) == puz.solution[i].tolist()
        for j in range(task.seq_len):
            if cells[j] >= 0:
                fewer = list(cells)
                fewer[j] = -1
                assert count_solutions(fewer, limit=2) == 2  # no clue can go: locally minimal
    init = puz.init(mask_id=task.vocab_size)
    assert torch.equal(init == task.vocab_size, ~puz.clue_mask)


def test_min_clues_is_respected() -> None:
    task = Sudoku(3)
    puz = task.make_puzzles(2, torch.Generator().manual_seed(6), min_clues=40)
    assert puz.clue_mask.sum(-1).tolist() == [40, 40]
    for i in range(2):
        assert count_solutions(puz.cells(i), limit=2) == 1


def test_solving_order_hand_case_and_invariants() -> None:
    task = Sudoku(2)
    sol = task.all_grids()[0]
    mask = torch.ones(1, 16, dtype=torch.bool)
    mask[0, [9, 0]] = False  # two naked singles: the lower index is filled first
    order = task.solving_order(SudokuPuzzles(mask, sol[None]))
    expect = torch.full((16,), -1)
    expect[0], expect[9] = 0, 1
    assert torch.equal(order, expect)
    big = Sudoku(3)
    puz = big.make_puzzles(2, torch.Generator().manual_seed(7))
    for i in range(2):
        o = big.solving_order(puz, i)
        blanks = ~puz.clue_mask[i]
        assert bool((o[~blanks] == -1).all())
        assert sorted(o[blanks].tolist()) == list(range(int(blanks.sum())))


def test_solve_accuracy_counts_valid_consistent_grids() -> None:
    task = Sudoku(2)
    puz = task.make_puzzles(40, torch.Generator().manual_seed(8))
    m = task.vocab_size
    oracle = lambda init: torch.where(init == m, puz.solution[: init.shape[0]], init)
    assert solve_accuracy(lambda z: puz.solution.clone(), puz, mask_id=m, batch_size=40) == (1.0, 0.0)
    assert solve_accuracy(lambda z: torch.where(z == m, 0, z), puz, mask_id=m, batch_size=40)[0] == 0.0
    relabel = torch.tensor([1, 2, 3, 0])
    assert solve_accuracy(lambda z: relabel[puz.solution], puz, mask_id=m, batch_size=40)[0] == 0.0  # valid, wrong
    half = lambda z: torch.where(torch.arange(40)[:, None] < 20, puz.solution, relabel[puz.solution])
    acc, se = solve_accuracy(half, puz, mask_id=m, batch_size=40)
    assert acc == 0.5 and se == pytest.approx(math.sqrt(0.25 / 40), rel=1e-15)
    assert solve_accuracy(lambda z: (oracle(z), None), puz, mask_id=m, batch_size=40)[0] == 1.0  # tuple outputs
    with pytest.raises(ValueError, match="shape"):
        solve_accuracy(lambda z: z[:, :3], puz, mask_id=m)


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="box"):
        Sudoku(1)
    with pytest.raises(ValueError, match="sampler"):
        Sudoku(3, sampler="uniform")
    with pytest.raises(ValueError, match="sampler"):
        Sudoku(2, sampler="fast")
    with pytest.raises(ValueError, match="min_clues"):
        Sudoku(2).make_puzzles(1, min_clues=17)
    with pytest.raises(ValueError, match="limit"):
        count_solutions([-1] * 16, limit=0)
