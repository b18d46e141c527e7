"""FSDP2 (``torch.distributed.fsdp.fully_shard``) for presets whose weights + Adam state should not be
replicated on every GPU. ``--parallel fsdp`` under torchrun; DDP stays the default.

Sharding plan. The model's process names the units (``Process.fsdp_units``): each transformer block of the
backbone and each LoMDM scheduler head is its own FSDP unit: it is
all-gathered for its forward and resharded after it. Everything else (embedding, time embedding, final
adaLN, output layer, GenMD4's w) belongs to the root unit, the ``LossModule``. The loss reads the output
layer's weight directly (the fused linear + loss kernel never calls ``out(h)``), so that weight must sit in a
unit whose forward encloses the whole loss. The root unit is that unit.

Everything that leaves the training step sees full tensors: checkpoints (``full_state``), evaluation and
sampling (``full_copy``). So the checkpoint format is the same as for DDP and single-process runs, and a
checkpoint written under FSDP resumes under either. Gathering is collective: every rank must call these
functions, and only rank 0 then writes or evaluates.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributed.tensor import DTensor, distribute_tensor

from .model import OeMDM


def shard(root: nn.Module, model: OeMDM, mesh: Any) -> None:
    """Apply FSDP2 in place: the blocks and scheduler heads of ``model`` are units, and ``root`` (the
    ``LossModule`` holding ``model``) is the root unit. A parameter-only replica such as the EMA is sharded
    with ``shard(ema, ema, mesh)``. Its DTensors then have the model's placements, so the EMA update
    ``lerp_`` stays a local, elementwise operation."""
    from torch.distributed.fsdp import fully_shard

    for unit in model.process.fsdp_units(model):
        fully_shard(unit, mesh=mesh)
    fully_shard(root, mesh=mesh)


def full_tensor(t: Tensor) -> Tensor:
    """The whole tensor behind a DTensor shard (an all-gather: collective), or ``t`` itself."""
    return t.full_tensor() if isinstance(t, DTensor) else t


def full_state(module: nn.Module) -> dict[str, Tensor]:
    """The module's state dict with every shard gathered (collective)."""
    return {k: full_tensor(v).detach() for k, v in module.state_dict().items()}


def full_copy(module: OeMDM) -> OeMDM:
    """An unsharded OeMDM with the module's current weights, for evaluation and sampling (collective)."""
    state = full_state(module)
    plain = OeMDM(copy.deepcopy(module.cfg)).to(next(iter(state.values())).device)
    plain.load_state_dict(state)
    return plain


class FullOptimizerState:
    """Stands in for the optimiser in ``save_checkpoint``: its ``state_dict()`` holds full tensors. Built on
    every rank (collective), used on rank 0."""

    def __init__(self, opt: torch.optim.Optimizer) -> None:
        sd = opt.state_dict()
        self._sd = {
            "state": {i: {k: full_tensor(v) if torch.is_tensor(v) else v for k, v in st.items()}
                      for i, st in sd["state"].items()},
            "param_groups": sd["param_groups"],
        }

    def state_dict(self) -> dict[str, Any]:
        return self._sd


def shard_optimizer_state(opt: torch.optim.Optimizer, state: dict[int, dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Turn a checkpoint's full optimiser tensors into shards laid out like their parameters (the moments
    of a sharded parameter must be sharded the same way before ``opt.load_state_dict``)."""
    params = [p for g in opt.param_groups for p in g["params"]]
    out: dict[int, dict[str, Any]] = {}
    for idx, st in state.items():
        p = params[idx]
        out[idx] = {}
        for k, v in st.items():
            if torch.is_tensor(v) and isinstance(p, DTensor) and v.shape == p.shape:
                out[idx][k] = distribute_tensor(v.to(p.device), p.device_mesh, p.placements)
            else:
                out[idx][k] = v
    return out
