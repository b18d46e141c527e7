"""Synthetic tasks for studying generation order (issue 14): where does a learned order pay?

- ``latents``: latents and observations (Kim et al., ICML 2025), :class:`LatentsObservations`;
- ``sudoku``: solved Sudoku grids and unique-solution puzzles, :class:`Sudoku`;
- ``chain``: the hidden chain, the control where order should not matter at convergence, :class:`HiddenChainTask`.

:func:`get_task` builds a task from a spec string ``"<name>:key=value,..."`` (e.g. ``"latents:N=8,P=16,fn=nae,
seed=0"``), the form ``oemdm train --data task:<spec>`` is meant to take; :func:`task_names` lists the names and
:func:`task_help` their keys. Every task has ``vocab_size``, ``seq_len``, ``sample(n, generator)``,
``entropy_nats()`` and ``dataset(split)`` (a :class:`TaskDataset` with the trainer's dataset interface).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .base import Task, TaskDataset, step_seed
from .chain import HiddenChainTask
from .latents import LatentsObservations
from .oracle import normsig_two_level, oracle_exponents, prob_group_first
from .sudoku import Sudoku, SudokuPuzzles, count_solutions, is_valid_grid, solve, solve_accuracy

__all__ = ["Task", "TaskDataset", "step_seed", "LatentsObservations", "Sudoku", "SudokuPuzzles", "HiddenChainTask",
           "count_solutions", "solve", "is_valid_grid", "solve_accuracy", "oracle_exponents", "normsig_two_level",
           "prob_group_first", "get_task", "task_names", "task_help", "parse_spec"]

# name -> (constructor, {spec key: (constructor keyword, type, default)})
_REGISTRY: dict[str, tuple[Callable[..., Task], dict[str, tuple[str, type, Any]]]] = {
    "latents": (LatentsObservations, {"N": ("n_latents", int, 8), "P": ("n_observations", int, 16),
                                      "fn": ("fn", str, "nae"), "seed": ("seed", int, 0)}),
    "sudoku": (Sudoku, {"box": ("box", int, 2), "sampler": ("sampler", str, None)}),
    "chain": (HiddenChainTask, {"L": ("length", int, 16), "V": ("vocab_size", int, 16),
                                "noise": ("noise", float, 0.1), "seed": ("seed", int, 0)}),
}


def task_names() -> list[str]:
    """The registered task names."""
    return sorted(_REGISTRY)


def task_help() -> dict[str, dict[str, Any]]:
    """{name: {spec key: default}} for every task."""
    return {name: {k: d for k, (_, _, d) in keys.items()} for name, (_, keys) in sorted(_REGISTRY.items())}


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"name:k=v,k=v"`` -> (name, {constructor keyword: typed value}); unknown names/keys and bad values raise
    ``ValueError`` naming them."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"get_task: spec must be a non-empty string like 'latents:N=8,P=16', got spec={spec!r}")
    name, _, rest = spec.strip().partition(":")
    if name not in _REGISTRY:
        raise ValueError(f"get_task: unknown task name {name!r} in spec={spec!r}; known: {task_names()}")
    keys = _REGISTRY[name][1]
    kwargs: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not value:
            raise ValueError(f"get_task: expected key=value, got {item!r} in spec={spec!r}")
        if key not in keys:
            raise ValueError(f"get_task: unknown key {key!r} for task {name!r} in spec={spec!r}; known: {sorted(keys)}")
        kw, typ, _ = keys[key]
        if kw in kwargs:
            raise ValueError(f"get_task: key {key!r} given twice in spec={spec!r}")
        try:
            kwargs[kw] = typ(value)
        except ValueError:
            raise ValueError(f"get_task: key {key!r} needs a {typ.__name__}, got {value!r} in spec={spec!r}") from None
    return name, kwargs


def get_task(spec: str) -> Task:
    """Build a task from its spec string; missing keys take their defaults (:func:`task_help`)."""
    name, kwargs = parse_spec(spec)
    return _REGISTRY[name][0](**kwargs)
