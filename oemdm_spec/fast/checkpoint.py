"""Checkpoints: safetensors for tensors, JSON for everything else, written atomically.

Layout of ``<run>/checkpoints/step_000600/``:
- ``model.safetensors`` — the weights;  ``ema.safetensors`` — their EMA (when enabled);
- ``optim.safetensors`` — AdamW state tensors, keyed ``<param index>.<name>``;
- ``state.json`` — optimiser hyper-parameters, step, data position, RNG state, config.
The directory is written under a temporary name and renamed into place (atomic on POSIX), then
``<run>/checkpoints/latest`` (a one-line file) is replaced atomically. A crash leaves either the old or the new
checkpoint, never a mixture.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn


def _contiguous(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in sd.items()}


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for name, val in st.items():
            if torch.is_tensor(val):
                tensors[f"{idx}.{name}"] = val.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(idx), {})[name] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
                   device: torch.device) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, val in tensors.items():
        idx, name = key.split(".", 1)
        # AdamW keeps `step` on the CPU unless fused/capturable; keep what was saved there.
        state.setdefault(int(idx), {})[name] = val if name == "step" else val.to(device)
    for idx, sc in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(sc)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(run_dir: str | Path, step: int, model: nn.Module, ema: nn.Module | None,
                    opt: torch.optim.Optimizer, config: dict[str, Any], extra: dict[str, Any] | None = None,
                    keep: int = 2) -> Path:
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:07d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp_step_{step:07d}_", dir=root))
    save_file(_contiguous(model.state_dict()), str(tmp / "model.safetensors"))
    if ema is not None:
        save_file(_contiguous(ema.state_dict()), str(tmp / "ema.safetensors"))
    otensors, ometa = optimizer_tensors(opt)
    save_file(otensors, str(tmp / "optim.safetensors"))
    state = {
        "step": step,
        "optimizer": ometa,
        "data_position": {"next_step": step, "note": "batches are get_batch(step, ...): a pure function"},
        "rng": {"torch_cpu": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode(),
                "note": "training noise derives from (seed, step); this is for completeness"},
        "config": config,
        **(extra or {}),
    }
    with open(tmp / "state.json", "w") as f:
        json.dump(state, f, indent=1)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    latest_tmp = root / ".latest.tmp"
    latest_tmp.write_text(final.name + "\n")
    os.replace(latest_tmp, root / "latest")
    old = sorted(p for p in root.glob("step_*") if p.is_dir())
    for p in old[:-keep] if keep > 0 else []:
        shutil.rmtree(p, ignore_errors=True)
    return final


def resolve_checkpoint(path: str | Path) -> Path:
    """Accept a run directory, its checkpoints/ directory, or a step directory."""
    p = Path(path)
    if (p / "state.json").exists():
        return p
    for root in (p / "checkpoints", p):
        if (root / "latest").exists():
            return root / (root / "latest").read_text().strip()
    raise FileNotFoundError(f"no checkpoint found at {str(path)!r} (expected a run dir or step dir)")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    ck = resolve_checkpoint(path)
    with open(ck / "state.json") as f:
        state = json.load(f)
    state["dir"] = str(ck)
    state["model"] = load_file(str(ck / "model.safetensors"))
    state["ema"] = load_file(str(ck / "ema.safetensors")) if (ck / "ema.safetensors").exists() else None
    state["optim_tensors"] = load_file(str(ck / "optim.safetensors"))
    return state


def restore_rng(state: dict[str, Any]) -> None:
    import numpy as np

    raw = base64.b64decode(state["rng"]["torch_cpu"])
    torch.set_rng_state(torch.from_numpy(np.frombuffer(raw, dtype=np.uint8).copy()))
