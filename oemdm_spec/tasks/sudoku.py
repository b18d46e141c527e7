r"""Sudoku: grids, puzzles with unique solutions, a counting solver and a propagation order.

Sizes: box b ∈ {2, 3, ...}, n = b² digits, L = n² cells in row-major order, token v ∈ [0, n) = digit v + 1.
The mask id is the model's own (``vocab_size = n``). Training data are **solved grids**; puzzles are
(clue mask, solution) pairs for evaluation.

Grid distributions (``sampler``):

- ``"uniform"`` (4×4 only): uniform over all valid grids, by enumerating them once (288 for b = 2). Exact entropy
  log 288.
- ``"backtrack"`` (any size; the default for b ≥ 3): randomised backtracking (fewest-candidates cell first,
  lowest index on ties, candidate digits in a uniformly random order) gives a base grid, and a uniformly random
  element of the validity-preserving group G is applied to it (digit relabelling, band and stack permutations,
  row/column permutations inside each band/stack, transpose; |G| = n!·(b!)^{2b+2}·2). The law is G-invariant and
  gives every valid grid positive probability (choosing the target grid's digit first at every node reaches it
  with no dead end), but it is **not uniform**, and its entropy is not known exactly: :meth:`Sudoku.entropy_nats`
  returns None for it; :meth:`Sudoku.entropy_upper_bound_nats` is log(number of grids), exact only for uniform.

Puzzles: from a sampled grid, clues are removed in a uniformly random order, each removal kept only if the
:func:`count_solutions` solver still finds exactly one solution (stopping at ``min_clues``). The result is a
locally minimal puzzle (no single clue can be removed) with a unique solution.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .base import Task, check_int

__all__ = ["Sudoku", "SudokuPuzzles", "count_solutions", "solve", "solve_accuracy", "is_valid_grid",
           "NUM_GRIDS", "SAMPLERS"]

SAMPLERS = ("uniform", "backtrack")
# Number of valid grids: 288 for 4×4 (enumerated in the tests); 9×9 from Felgenhauer & Jarvis (2006).
NUM_GRIDS = {2: 288, 3: 6_670_903_752_021_072_936_960}


class _Geometry:
    """Peers and units of an n×n Sudoku with b×b boxes, precomputed once per b."""

    _cache: dict[int, _Geometry] = {}

    def __init__(self, b: int) -> None:
        n = b * b
        self.b, self.n, self.cells = b, n, n * n
        self.row = [i // n for i in range(n * n)]
        self.col = [i % n for i in range(n * n)]
        self.box = [(i // n // b) * b + (i % n) // b for i in range(n * n)]
        units = [[r * n + c for c in range(n)] for r in range(n)]
        units += [[r * n + c for r in range(n)] for c in range(n)]
        units += [[(bi // b * b + k // b) * n + bi % b * b + k % b for k in range(n)] for bi in range(n)]
        self.units = units
        self.units_t = torch.tensor(units, dtype=torch.long)  # (3n, n)
        self.full = (1 << n) - 1

    @classmethod
    def of(cls, b: int) -> _Geometry:
        if b not in cls._cache:
            cls._cache[b] = cls(b)
        return cls._cache[b]


def _box_of(grid_len: int, owner: str) -> int:
    b = round(grid_len ** 0.25)
    if b < 2 or b ** 4 != grid_len:
        raise ValueError(f"{owner}: a grid must have b⁴ cells (16 for 4×4, 81 for 9×9), got {grid_len}")
    return b


def _search(cells: list[int], geo: _Geometry, limit: int, rng: random.Random | None) -> tuple[int, list[int] | None]:
    """Backtracking with bitmasks, fewest candidates first (ties: lowest index). ``cells``: −1 = empty.

    Returns (number of solutions found, capped at ``limit``; the first solution found or None). With ``rng``
    the candidate digits are tried in a random order (the first solution is then a random completion)."""
    n = geo.n
    rows, cols, boxes = [0] * n, [0] * n, [0] * n
    grid = list(cells)
    for i, v in enumerate(grid):
        if v >= 0:
            bit = 1 << v
            if (rows[geo.row[i]] | cols[geo.col[i]] | boxes[geo.box[i]]) & bit:
                return 0, None  # the clues already clash
            rows[geo.row[i]] |= bit
            cols[geo.col[i]] |= bit
            boxes[geo.box[i]] |= bit
    empty = [i for i, v in enumerate(grid) if v < 0]
    found: list[int] = [0]
    first: list[list[int] | None] = [None]
    row_of, col_of, box_of, full = geo.row, geo.col, geo.box, geo.full

    def rec() -> bool:  # returns True when the limit is reached (stop everything)
        best, best_mask, best_count = -1, 0, n + 1
        for i in empty:
            if grid[i] >= 0:
                continue
            mask = full & ~(rows[row_of[i]] | cols[col_of[i]] | boxes[box_of[i]])
            cnt = mask.bit_count()
            if cnt < best_count:
                best, best_mask, best_count = i, mask, cnt
                if cnt <= 1:
                    break
        if best < 0:
            found[0] += 1
            if first[0] is None:
                first[0] = list(grid)
            return found[0] >= limit
        if best_count == 0:
            return False
        digits = [d for d in range(n) if best_mask >> d & 1]
        if rng is not None:
            rng.shuffle(digits)
        r, c, bx = row_of[best], col_of[best], box_of[best]
        for d in digits:
            bit = 1 << d
            grid[best] = d
            rows[r] |= bit
            cols[c] |= bit
            boxes[bx] |= bit
            stop = rec()
            rows[r] &= ~bit
            cols[c] &= ~bit
            boxes[bx] &= ~bit
            grid[best] = -1
            if stop:
                return True
        return False

    rec()
    return found[0], first[0]


def count_solutions(cells: list[int] | Tensor, limit: int = 2) -> int:
    """Number of completions of a partial grid (−1 = empty cell), counted up to ``limit`` (exact below it)."""
    cells = cells.tolist() if isinstance(cells, Tensor) else list(cells)
    check_int("count_solutions", "limit", limit, 1)
    return _search(cells, _Geometry.of(_box_of(len(cells), "count_solutions")), limit, None)[0]


def solve(cells: list[int] | Tensor) -> list[int] | None:
    """The first completion found by the solver (−1 = empty cell), or None if there is none."""
    cells = cells.tolist() if isinstance(cells, Tensor) else list(cells)
    return _search(cells, _Geometry.of(_box_of(len(cells), "solve")), 1, None)[1]


def is_valid_grid(grids: Tensor) -> Tensor:
    """BoolTensor (B,): each row of ``grids`` (B, n²) is a complete valid Sudoku (every row, column and box a
    permutation of 0..n−1)."""
    if grids.dim() != 2:
        raise ValueError(f"is_valid_grid: grids must be (B, n²), got shape {tuple(grids.shape)}")
    geo = _Geometry.of(_box_of(grids.shape[1], "is_valid_grid"))
    units = grids[:, geo.units_t].sort(-1).values  # (B, 3n, n)
    return (units == torch.arange(geo.n)).all(-1).all(-1)


@dataclass(frozen=True)
class SudokuPuzzles:
    """A batch of puzzles: ``clue_mask`` (P, L) bool (True = given), ``solution`` (P, L) long (the unique
    completion). :meth:`init` gives the model's start state."""

    clue_mask: Tensor
    solution: Tensor

    def __len__(self) -> int:
        return self.solution.shape[0]

    def init(self, mask_id: int) -> Tensor:
        """LongTensor (P, L): the clue digits, ``mask_id`` at the cells to fill."""
        return torch.where(self.clue_mask, self.solution, torch.full_like(self.solution, mask_id))

    def cells(self, i: int) -> list[int]:
        """Puzzle i as a list, −1 at the empty cells (the solver's input)."""
        return torch.where(self.clue_mask[i], self.solution[i], torch.full_like(self.solution[i], -1)).tolist()


class Sudoku(Task):
    """Solved b²×b² Sudoku grids as sequences of n² = b⁴ cells; see the module docstring for the samplers.

    There is no fixed random structure (hence no seed): all randomness comes from the generator passed in."""

    name = "sudoku"

    def __init__(self, box: int = 2, sampler: str | None = None) -> None:
        self.box = check_int("Sudoku", "box", box, 2, 4)
        if sampler is None:
            sampler = "uniform" if box == 2 else "backtrack"
        if sampler not in SAMPLERS:
            raise ValueError(f"Sudoku: sampler must be one of {SAMPLERS}, got sampler={sampler!r}")
        if sampler == "uniform" and box != 2:
            raise ValueError(f"Sudoku: sampler='uniform' enumerates all grids and exists only for box=2, got box={box}")
        self.sampler = sampler
        self.geo = _Geometry.of(box)
        self.n = box * box
        self.vocab_size, self.seq_len = self.n, self.n * self.n
        self._all: Tensor | None = None

    # ---- grids --------------------------------------------------------------------------------------------
    def all_grids(self) -> Tensor:
        """Every valid grid (only for box = 2: 288 × 16), enumerated by the solver, in lexicographic order."""
        if self.box != 2:
            raise ValueError(f"all_grids: enumeration exists only for box=2, got box={self.box}")
        if self._all is None:
            out: list[list[int]] = []

            def rec(grid: list[int], i: int) -> None:
                if i == self.seq_len:
                    out.append(list(grid))
                    return
                for d in range(self.n):
                    grid[i] = d
                    if count_solutions(grid, 1):
                        rec(grid, i + 1)
                grid[i] = -1

            rec([-1] * self.seq_len, 0)
            self._all = torch.tensor(out, dtype=torch.long)
        return self._all

    def random_symmetry(self, grids: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Apply an independent uniformly random element of the validity-preserving group G to each grid."""
        b, n = self.box, self.n
        m = grids.shape[0]
        g = grids.view(m, n, n)

        def line_perm() -> Tensor:  # (m, n): a uniformly random band permutation and in-band permutations
            bands = torch.rand(m, b, generator=generator).argsort(-1)
            inner = torch.rand(m, b, b, generator=generator).argsort(-1)
            return (bands[:, :, None] * b + inner).reshape(m, n)

        rp, cp = line_perm(), line_perm()
        relabel = torch.rand(m, n, generator=generator).argsort(-1)
        transpose = torch.rand(m, generator=generator) < 0.5
        ar = torch.arange(m)[:, None, None]
        out = g[ar, rp[:, :, None], cp[:, None, :]]
        out = torch.where(transpose[:, None, None], out.transpose(1, 2), out)
        out = torch.gather(relabel, 1, out.reshape(m, -1))
        return out

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` solved grids (n, L) from the task's sampler (module docstring)."""
        check_int("Sudoku.sample", "n", n, 0)
        if self.sampler == "uniform":
            grids = self.all_grids()
            return grids[torch.randint(grids.shape[0], (n,), generator=generator)]
        seed = int(torch.randint(2 ** 62, (1,), generator=generator))
        rng = random.Random(seed)
        base = [_search([-1] * self.seq_len, self.geo, 1, rng)[1] for _ in range(n)]
        grids = torch.tensor(base, dtype=torch.long).view(n, self.seq_len)
        return self.random_symmetry(grids, generator)

    def valid(self, x: Tensor) -> Tensor:
        """BoolTensor (n,): each sequence is a complete valid grid."""
        return is_valid_grid(x)

    def entropy_nats(self) -> float | None:
        """log 288 for the uniform 4×4 sampler; None for ``backtrack`` (not uniform, no exact value known)."""
        return math.log(NUM_GRIDS[2]) if self.sampler == "uniform" else None

    def entropy_upper_bound_nats(self) -> float:
        """log(number of valid grids): the entropy of the uniform law, an upper bound for any sampler."""
        if self.box not in NUM_GRIDS:
            raise ValueError(f"entropy_upper_bound_nats: the grid count is not stored for box={self.box}")
        return math.log(NUM_GRIDS[self.box])

    def alphabet(self) -> list[str]:
        """Digit names: token v is digit v + 1."""
        return [str(v + 1) for v in range(self.n)]

    # ---- puzzles ------------------------------------------------------------------------------------------
    def make_puzzles(self, count: int, generator: torch.Generator | None = None, *,
                     min_clues: int = 0) -> SudokuPuzzles:
        """``count`` locally minimal puzzles with unique solutions (module docstring), never below ``min_clues``."""
        check_int("make_puzzles", "count", count, 0)
        check_int("make_puzzles", "min_clues", min_clues, 0, self.seq_len)
        sol = self.sample(count, generator)
        mask = torch.ones(count, self.seq_len, dtype=torch.bool)
        orders = torch.rand(count, self.seq_len, generator=generator).argsort(-1).tolist()
        for p in range(count):
            cells = sol[p].tolist()
            clues = self.seq_len
            for i in orders[p]:
                if clues <= min_clues:
                    break
                keep = cells[i]
                cells[i] = -1
                if _search(cells, self.geo, 2, None)[0] == 1:
                    clues -= 1
                    mask[p, i] = False
                else:
                    cells[i] = keep
        return SudokuPuzzles(mask, sol)

    def solving_order(self, puzzles: SudokuPuzzles, index: int = 0) -> Tensor:
        """The order (L,) in which a constraint-propagation solver fills puzzle ``index``: order[i] = the step at
        which cell i is filled, −1 for clues (the sampler convention of ``fast/sample.py``).

        One cell per step: the lowest-index naked single (one candidate left); if none, the first hidden
        single (a digit with one possible cell in a unit; rows, then columns, then boxes, digits ascending);
        if none (propagation stalls), the fewest-candidates cell (lowest index) filled with its solution digit.
        """
        geo, n = self.geo, self.n
        cells = puzzles.cells(index)
        solution = puzzles.solution[index].tolist()
        order = [-1] * self.seq_len
        step = 0
        while True:
            empty = [i for i, v in enumerate(cells) if v < 0]
            if not empty:
                break
            used_r, used_c, used_b = [0] * n, [0] * n, [0] * n
            for i, v in enumerate(cells):
                if v >= 0:
                    used_r[geo.row[i]] |= 1 << v
                    used_c[geo.col[i]] |= 1 << v
                    used_b[geo.box[i]] |= 1 << v
            cand = {i: geo.full & ~(used_r[geo.row[i]] | used_c[geo.col[i]] | used_b[geo.box[i]]) for i in empty}
            pick: tuple[int, int] | None = None
            for i in empty:
                if cand[i].bit_count() == 1:
                    pick = (i, cand[i].bit_length() - 1)
                    break
            if pick is None:
                for unit in geo.units:
                    for d in range(n):
                        where = [i for i in unit if cells[i] < 0 and cand[i] >> d & 1]
                        if len(where) == 1:
                            pick = (where[0], d)
                            break
                    if pick is not None:
                        break
            if pick is None:
                i = min(empty, key=lambda j: (cand[j].bit_count(), j))
                pick = (i, solution[i])
            cells[pick[0]] = pick[1]
            order[pick[0]] = step
            step += 1
        return torch.tensor(order, dtype=torch.long)

    def __repr__(self) -> str:
        return f"Sudoku(box={self.box}, sampler={self.sampler!r})"


def solve_accuracy(sampler_fn: Callable[[Tensor], Tensor | tuple[Tensor, ...]], puzzles: SudokuPuzzles, *,
                   mask_id: int, batch_size: int = 256) -> tuple[float, float]:
    """(accuracy, standard error) of ``sampler_fn`` on ``puzzles``.

    ``sampler_fn(init)`` gets a LongTensor (B, L) (clue digits, ``mask_id`` at empty cells) and returns the
    completed grids (B, L) (or a tuple whose first element they are, such as ``adaptive_sample``'s). A puzzle
    counts as solved when the completed grid is a valid Sudoku that agrees with every clue (with a unique
    solution that is the stored solution). The standard error is the binomial one, sqrt(acc(1 − acc)/P).
    """
    check_int("solve_accuracy", "batch_size", batch_size, 1)
    total = len(puzzles)
    if total == 0:
        raise ValueError("solve_accuracy: puzzles is empty")
    init = puzzles.init(mask_id)
    solved = 0
    for lo in range(0, total, batch_size):
        out = sampler_fn(init[lo:lo + batch_size].clone())
        grid = out[0] if isinstance(out, tuple) else out
        if grid.shape != init[lo:lo + batch_size].shape:
            raise ValueError(f"solve_accuracy: sampler_fn returned shape {tuple(grid.shape)}, expected "
                             f"{tuple(init[lo:lo + batch_size].shape)}")
        grid = grid.cpu()
        clues = puzzles.clue_mask[lo:lo + batch_size]
        agree = torch.where(clues, grid == puzzles.solution[lo:lo + batch_size], True).all(-1)
        solved += int((is_valid_grid(grid) & agree).sum())
    acc = solved / total
    return acc, math.sqrt(acc * (1 - acc) / total)


