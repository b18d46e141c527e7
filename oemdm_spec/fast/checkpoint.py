"""Checkpoints: safetensors for tensors, JSON for everything else, written atomically.

Layout of ``<run>/checkpoints/step_000600/``:
- ``model.safetensors`` — the weights;  ``ema.safetensors`` — their EMA (when enabled);
- ``optim.safetensors`` — AdamW state tensors, keyed ``<param index>.<name>``;
- ``state.json`` — optimiser hyper-parameters, step, data position, RNG state, config, the CPU thread count
  and a sha256 of every other file of the directory (verified on load).
All files of a checkpoint get the same mode (0666 less the umask, like any file the run writes).
The directory is written under a temporary name and renamed into place (atomic on POSIX), then
``<run>/checkpoints/latest`` (a one-line file) is replaced atomically. A crash leaves either the old or the new
checkpoint, never a mixture.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn


class CheckpointError(ValueError):
    """A checkpoint that cannot be written, read, or that does not fit its run (the CLI exits with code 2)."""


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
                   device: torch.device, shard_state: Any = None) -> None:
    """Load a checkpoint's optimiser state. ``shard_state(opt, state)`` (FSDP) lays full tensors out as
    shards of their parameters first."""
    state: dict[int, dict[str, Any]] = {}
    for key, val in tensors.items():
        idx, name = key.split(".", 1)
        # AdamW keeps `step` on the CPU unless fused/capturable; keep what was saved there.
        state.setdefault(int(idx), {})[name] = val if name == "step" else val.to(device)
    for idx, sc in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(sc)
    if shard_state is not None:
        state = shard_state(opt, state)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def file_mode() -> int:
    """The mode of an ordinary new file under the current umask (safetensors creates its files 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def remove_stale_temporaries(root: Path) -> None:
    """Remove ``.tmp_step_*`` / ``.old_step_*`` leftovers of a writer that was killed mid-save. Only one
    process (rank 0 of one run) writes a run's checkpoints, so any such entry seen before a save is stale."""
    for p in list(root.glob(".tmp_step_*")) + list(root.glob(".old_step_*")):
        shutil.rmtree(p, ignore_errors=True)


def save_checkpoint(run_dir: str | Path, step: int, model: nn.Module, ema: nn.Module | None,
                    opt: torch.optim.Optimizer, config: dict[str, Any], extra: dict[str, Any] | None = None,
                    keep: int = 2) -> Path:
    root = Path(run_dir) / "checkpoints"
    tmp: Path | None = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(root)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp_step_{step:07d}_", dir=root))
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700; a checkpoint should be as readable as the rest of the run
        return _save_into(root, tmp, step, model, ema, opt, config, extra, keep)
    except (OSError, SafetensorError) as e:
        # a full disk (ENOSPC), a file-size limit (EFBIG), a read-only or vanished directory: the previous
        # checkpoint is untouched (nothing is renamed before every file is written); say which one it is
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        try:
            last = str(resolve_checkpoint(run_dir))
        except (FileNotFoundError, OSError):
            last = "none"
        raise CheckpointError(f"cannot write checkpoint step {step} under {root}: {e}; "
                              f"the last good checkpoint is {last}") from None


def _save_into(root: Path, tmp: Path, step: int, model: nn.Module, ema: nn.Module | None,
               opt: torch.optim.Optimizer, config: dict[str, Any], extra: dict[str, Any] | None,
               keep: int) -> Path:
    final = root / f"step_{step:07d}"
    save_file(_contiguous(model.state_dict()), str(tmp / "model.safetensors"))
    if ema is not None:
        save_file(_contiguous(ema.state_dict()), str(tmp / "ema.safetensors"))
    otensors, ometa = optimizer_tensors(opt)
    save_file(otensors, str(tmp / "optim.safetensors"))
    mode = file_mode()
    files = {}
    for f in sorted(tmp.glob("*.safetensors")):
        os.chmod(f, mode)
        files[f.name] = sha256_file(f)
    state = {
        "step": step,
        "optimizer": ometa,
        "data_position": {"next_step": step, "note": "batches are get_batch(step, ...): a pure function"},
        "rng": {"torch_cpu": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode(),
                "note": "training noise derives from (seed, step); this is for completeness"},
        "config": config,
        "threads": torch.get_num_threads(),  # bitwise resume on CPU needs the same intra-op thread count
        **(extra or {}),
        "sha256": files,
    }
    with open(tmp / "state.json", "w") as f:
        json.dump(state, f, indent=1)
    os.chmod(tmp / "state.json", mode)
    aside = None
    if final.exists():  # the same step written again (a resumed run that had already finished)
        # move the old one aside rather than delete it first; a kill in between leaves `latest` naming a
        # missing directory, and resolve_checkpoint then falls back to the newest complete step
        aside = root / f".old_{final.name}_{os.getpid()}"
        os.replace(final, aside)
    os.replace(tmp, final)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    latest_tmp = root / ".latest.tmp"
    latest_tmp.write_text(final.name + "\n")
    if (root / "latest").is_dir() and not (root / "latest").is_symlink():  # a stray directory in its place
        shutil.rmtree(root / "latest")
    os.replace(latest_tmp, root / "latest")
    old = sorted(p for p in root.glob("step_*") if p.is_dir())
    for p in old[:-keep] if keep > 0 else []:
        shutil.rmtree(p, ignore_errors=True)
    return final


def resolve_checkpoint(path: str | Path) -> Path:
    """Accept a run directory, its checkpoints/ directory, or a step directory.

    If ``latest`` is missing (a kill between the first step directory and ``latest``), unreadable, not a file,
    or names a directory that is gone (a kill while the same step was being written again), the newest
    complete ``step_*`` directory is used instead: every step directory is complete by construction.
    """
    p = Path(path)
    if (p / "state.json").exists():
        return p
    for root in (p / "checkpoints", p):
        latest = root / "latest"
        steps = sorted(d for d in root.glob("step_*") if (d / "state.json").is_file()) if root.is_dir() else []
        named = None
        if latest.is_file():
            try:
                text = latest.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError):
                text = ""
            if text and "/" not in text and text not in (".", ".."):
                named = root / text
                if (named / "state.json").is_file():
                    return named
        if steps:
            return steps[-1]
        if named is not None:
            return named
        if latest.exists():
            raise FileNotFoundError(f"no checkpoint found at {str(path)!r}: {latest} is not a one-line file naming "
                                    "a step directory, and there is no complete step_* directory")
    raise FileNotFoundError(f"no checkpoint found at {str(path)!r} (expected a run dir or step dir)")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """All of a checkpoint; a missing, truncated or garbled file raises CheckpointError naming it."""
    ck = resolve_checkpoint(path)
    if not ck.is_dir():
        raise FileNotFoundError(f"checkpoint {ck} does not exist (named by {ck.parent / 'latest'})")
    name = "state.json"
    try:
        with open(ck / name) as f:
            state = json.load(f)
        if not isinstance(state, dict) or "step" not in state or "config" not in state:
            raise ValueError("no step/config entries")
        if not isinstance(state["config"], dict) or isinstance(state["step"], bool) or not isinstance(
                state["step"], int) or state["step"] < 0:
            raise ValueError(f"config must be a mapping and step an int >= 0, got step={state['step']!r}")
        state["dir"] = str(ck)
        sums = state.get("sha256") or {}  # checkpoints written before checksums have none
        if not isinstance(sums, dict):
            raise ValueError("sha256 is not a mapping of file names to checksums")
        for fname, want in sums.items():
            name = str(fname)
            if (ck / name).exists() and sha256_file(ck / name) != want:
                raise ValueError(f"sha256 mismatch (the file was changed or corrupted after it was written; "
                                 f"state.json records {str(want)[:12]}…)")
        name = "model.safetensors"
        state["model"] = load_file(str(ck / name))
        name = "ema.safetensors"
        want_ema = float(state["config"].get("ema", 0) or 0) > 0
        state["ema"] = load_file(str(ck / name)) if want_ema or (ck / name).exists() else None
        name = "optim.safetensors"
        state["optim_tensors"] = load_file(str(ck / name))
    except (OSError, ValueError, SafetensorError) as e:
        raise CheckpointError(f"checkpoint {ck} is unreadable: {name}: {e}") from None
    return state


def load_run(path: str | Path, use_ema: bool = True):
    """(model, config, tokenizer, checkpoint dir) from a run directory or checkpoint, in eval mode.

    Raises CheckpointError (a ValueError) naming what does not fit."""
    from oemdm_spec.data.loading import tokenizer_for

    from .config import TrainConfig
    from .model import OeMDM

    try:
        ck = load_checkpoint(path)
        cfg = TrainConfig.from_dict(ck["config"])
        tok = tokenizer_for(cfg)
        model = OeMDM(cfg.model_config(tok.vocab_size))
    except FileNotFoundError as e:
        raise CheckpointError(str(e)) from None
    except TypeError as e:
        raise CheckpointError(f"checkpoint config in {path}: {e}") from None
    weights = ck["ema"] if use_ema and ck["ema"] is not None else ck["model"]
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:  # shapes/keys of another model, vocabulary or size
        detail = " ".join(str(e).strip().splitlines()[:2])
        raise CheckpointError(f"checkpoint {ck['dir']} does not fit its config (model={cfg.model}, "
                              f"d_model={cfg.d_model}, vocabulary {tok.vocab_size}): {detail}") from None
    model.eval()  # evaluate_bound and sample run under torch.no_grad themselves
    return model, cfg, tok, Path(ck["dir"])
