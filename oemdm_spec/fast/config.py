"""Run configuration: one dataclass, presets, and ``--key value`` overrides with helpful errors.

A config is saved as ``config.json`` with every run and checkpoint, and a resumed run reloads it.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
from dataclasses import dataclass, field, fields
from typing import Any

from .model import ModelConfig
from .processes import MODEL_TYPES


class ConfigError(ValueError):
    """Bad configuration input (the CLI turns it into exit code 2)."""


@dataclass
class TrainConfig:
    # what to train
    model: str = field(default="lomdm", metadata={"help": f"model type: {', '.join(MODEL_TYPES)}"})
    preset: str = field(default="tiny", metadata={"help": "size preset: tiny (CPU, minutes) or gpt2-small"})
    name: str = field(default="", metadata={"help": "run name (default: a timestamp); output in out_dir/name"})
    out_dir: str = field(default="runs", metadata={"help": "parent directory of run directories"})
    # data
    data: str = field(default="embedded", metadata={
        "help": "embedded, lm1b, lm1b-packed, owt, lm1b:PATH, owt:PATH, a path (.txt file; dir of .txt/.jsonl/"
                ".parquet; save_to_disk dataset) or task:<spec> (docs/data.md, docs/tasks.md)"})
    tokenizer: str = field(default="char", metadata={
        "help": "char, gpt2 or bert-base-uncased (default: the data's own when --data is given)"})
    seq_len: int = field(default=128, metadata={"help": "sequence length L (default: the data protocol's)"})
    protocol: str = field(default="", metadata={"help": "stream, wrap or padded ('': the data's own)"})
    text_column: str = field(default="text", metadata={"help": "text field of .jsonl/.parquet/saved datasets"})
    # backbone
    n_layer: int = field(default=4, metadata={"help": "transformer layers of the backbone"})
    n_head: int = field(default=4, metadata={"help": "attention heads"})
    d_model: int = field(default=128, metadata={"help": "model width"})
    cond_dim: int = field(default=64, metadata={"help": "adaLN conditioning width"})
    time_conditioning: bool = field(default=False, metadata={"help": "feed t to the denoiser (not cacheable)"})
    # objective
    c1: float = field(default=0.7, metadata={"help": "LoMDM: w = c1 + c2*NormSig(.)"})
    c2: float = field(default=0.65, metadata={"help": "LoMDM: w = c1 + c2*NormSig(.), need c1 > c2 >= 0"})
    order_param: str = field(default="normsig", metadata={
        "help": "LoMDM exponent: normsig (the paper's) or logspace (w = c1*exp(R*tanh(c2*(v-mean v)/R)))"})
    log_range: float = field(default=math.log(30.0), metadata={"help": "logspace: R, w within c1*exp(+-R)"})
    K: int = field(default=2, metadata={"help": "masks per sequence for the RLOO surrogate (lomdm, genmd4)"})
    t_min: float = field(default=1e-3, metadata={"help": "training clamp t >= t_min"})
    block_size: int = field(default=4, metadata={"help": "BD3LM / oemdm-block block length L'"})
    eps: float = field(default=0.01, metadata={"help": "oemdm-arm / oemdm-block: the window schedules' epsilon"})
    order_w: str = field(default="", metadata={
        "help": "oemdm-fixed: per-position exponents, 'w1,w2,...' or 'oracle:latents-first' / "
                "'oracle:observations-first' (task:latents data)"})
    head_positions: bool = field(default=False, metadata={
        "help": "lomdm: add a learned absolute position embedding to the phi/psi heads' input"})
    # optimisation
    steps: int = field(default=600, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=32, metadata={"help": "global batch (sequences), split over DDP ranks"})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate (AdamW)"})
    head_lr: float = field(default=0.0, metadata={"help": "lr of the scheduler heads (0: same as lr)"})
    warmup: int = field(default=50, metadata={"help": "linear warm-up steps"})
    lr_decay: str = field(default="cosine", metadata={"help": "after warm-up: constant or cosine (to 10%)"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay (matrices only)"})
    beta2: float = field(default=0.99, metadata={"help": "AdamW beta2"})
    grad_clip: float = field(default=1.0, metadata={"help": "gradient-norm clip (0: off)"})
    ema: float = field(default=0.99, metadata={"help": "EMA decay of the weights used for eval/sampling (0: off)"})
    seed: int = field(default=0, metadata={"help": "seed: all randomness of step s derives from (seed, s)"})
    # logging / evaluation / checkpoints
    log_every: int = field(default=10, metadata={"help": "CSV log interval (steps)"})
    eval_every: int = field(default=100, metadata={"help": "validation NELBO interval (steps, 0: end only)"})
    eval_batches: int = field(default=4, metadata={"help": "validation batches per periodic eval"})
    final_eval_batches: int = field(default=16, metadata={"help": "validation batches for the final bound"})
    eval_batch_size: int = field(default=64, metadata={"help": "sequences per eval batch"})
    order_stats_every: int = field(default=50, metadata={"help": "learned-order statistics interval (lomdm)"})
    ckpt_every: int = field(default=200, metadata={"help": "checkpoint interval (steps; one is written at the end)"})
    sample_len: int = field(default=128, metadata={"help": "length of the final sample"})
    num_samples: int = field(default=4, metadata={"help": "samples drawn at the end (heatmap rows)"})
    stop_at: int = field(default=0, metadata={"help": "stop+checkpoint at this step, schedule unchanged (0: off)"})
    max_minutes: float = field(default=0.0, metadata={"help": "stop early after this wall time (0: no limit)"})
    max_bad_steps: int = field(default=5, metadata={
        "help": "consecutive non-finite steps skipped (not applied) before the run stops with an error"})
    # hardware
    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda"})
    compile: str = field(default="auto", metadata={
        "help": "torch.compile: yes (the backbone), step (the whole loss and its backward, one graph), no, "
                "auto (yes on a GPU)"})
    dtype: str = field(default="auto", metadata={"help": "auto (bf16 autocast on GPU, fp32 on CPU), bf16, fp32"})
    parallel: str = field(default="ddp", metadata={
        "help": "under torchrun: ddp (replicate) or fsdp (FSDP2: shard weights, gradients, Adam state)"})
    threads: int = field(default=0, metadata={"help": "CPU threads (0: the cores no other process is using)"})

    def model_config(self, vocab_size: int) -> ModelConfig:
        return ModelConfig(
            vocab_size=vocab_size, seq_len=self.seq_len, model_type=self.model, n_layer=self.n_layer,
            n_head=self.n_head, d_model=self.d_model, cond_dim=self.cond_dim,
            time_conditioning=self.time_conditioning, c1=self.c1, c2=self.c2, order_param=self.order_param,
            log_range=self.log_range, block_size=self.block_size, eps=self.eps, order_w=self.order_exponents(),
            head_positions=self.head_positions,
        )

    def order_exponents(self) -> tuple[float, ...]:
        """``order_w`` as numbers: a comma list, or a task's oracle order (``oracle:<order>``)."""
        if not self.order_w:
            return ()
        if self.order_w.startswith("oracle:"):
            from oemdm_spec.data.loading import get_task_for, is_task
            from oemdm_spec.tasks import oracle_exponents

            if not is_task(self.data):
                raise ConfigError(f"order_w={self.order_w!r} needs task data (--data task:latents:...), got "
                                  f"data={self.data!r}")
            try:
                w = oracle_exponents(get_task_for(self.data), order=self.order_w[len("oracle:"):])
            except ValueError as e:
                raise ConfigError(f"order_w={self.order_w!r}: {e}") from None
            return tuple(float(v) for v in w)
        try:
            return tuple(float(v) for v in self.order_w.split(","))
        except ValueError:
            raise ConfigError(f"order_w must be comma-separated numbers or oracle:<order>, "
                              f"got {self.order_w!r}") from None

    def validate(self) -> None:
        if self.model not in MODEL_TYPES:
            raise ConfigError(f"model must be one of {', '.join(MODEL_TYPES)}, got {self.model!r}")
        if self.preset not in PRESETS:
            raise ConfigError(f"preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        if not 0 < self.t_min < 1:
            raise ConfigError(f"t_min must lie in (0, 1), got {self.t_min}")
        # optimiser settings: torch rejects some of these only deep inside AdamW, and a negative lr trains
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr must be a finite number > 0, got {self.lr}")
        if not (math.isfinite(self.head_lr) and self.head_lr >= 0):
            raise ConfigError(f"head_lr must be a finite number >= 0 (0: same as lr), got {self.head_lr}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"weight_decay must be a finite number >= 0, got {self.weight_decay}")
        if not 0 <= self.beta2 < 1:
            raise ConfigError(f"beta2 must lie in [0, 1), got {self.beta2}")
        if not 0 <= self.ema < 1:
            raise ConfigError(f"ema must lie in [0, 1) (0: off), got {self.ema}")
        from oemdm_spec.data import TOKENIZER_NAMES
        from oemdm_spec.data.loading import is_task

        if is_task(self.data) and self.tokenizer != "task":
            raise ConfigError(f"task data has its own alphabet: tokenizer must be 'task', got {self.tokenizer!r}")
        if not is_task(self.data) and self.tokenizer not in TOKENIZER_NAMES:
            raise ConfigError(f"tokenizer must be one of {', '.join(TOKENIZER_NAMES)}, got {self.tokenizer!r}")
        for key, (low, high) in INT_RANGES.items():  # every size-like key has a range (docs/reliability.md)
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ConfigError(f"{key} must be an int in [{low}, {high:,}], got {value!r}")
        for key, (low, high) in FLOAT_RANGES.items():
            value = getattr(self, key)
            if not (math.isfinite(value) and low <= value <= high):
                raise ConfigError(f"{key} must be a finite number in [{low}, {high}], got {value}")
        if self.name and (self.name in (".", "..") or "/" in self.name or os.sep in self.name):
            raise ConfigError(f"name must be a plain directory name inside out_dir (no '/', not '.' or '..'), "
                              f"got {self.name!r}")
        if self.max_bad_steps < 0:
            raise ConfigError(f"max_bad_steps must be >= 0 (0: stop at the first non-finite step), got "
                              f"{self.max_bad_steps}")
        choices = {"lr_decay": ("constant", "cosine"), "device": ("auto", "cpu", "cuda"),
                   "compile": ("auto", "yes", "step", "no"), "dtype": ("auto", "bf16", "fp32"),
                   "parallel": ("ddp", "fsdp"), "protocol": ("", "stream", "wrap", "padded")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                shown = ", ".join(repr(a) if a == "" else a for a in allowed)
                raise ConfigError(f"{key} must be one of {shown}, got {getattr(self, key)!r}")
        try:  # model sizes and schedule constants: validated in one place, ModelConfig and its process
            self.model_config(vocab_size=1)
        except ValueError as e:
            raise ConfigError(str(e)) from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """A config from a dict (config.json, a checkpoint's state.json). An unknown key is an error naming
        the closest valid key: silently dropping it would run with the default instead of what was meant."""
        known = {f.name for f in fields(cls)}
        for k in d:
            if k not in known:
                raise ConfigError(unknown_key_message(str(k)).replace("unknown config key --", "unknown config key "))
        types = _field_types()
        for k, v in d.items():  # a hand-edited or corrupted config: a wrong type names the key, not a traceback
            typ = str(types[k])
            ok = (isinstance(v, bool) if typ == "bool" else
                  isinstance(v, int) and not isinstance(v, bool) if typ == "int" else
                  isinstance(v, (int, float)) and not isinstance(v, bool) if typ == "float" else
                  isinstance(v, str) if typ == "str" else True)
            if not ok:
                raise ConfigError(f"config key {k} must be of type {typ}, got {v!r}")
        return cls(**d)

    @classmethod
    def load(cls, path: str) -> TrainConfig:
        with open(path) as f:
            return cls.from_dict(json.load(f))


# Ranges of the size-like and rate-like keys (inclusive). The upper bounds refuse what cannot fit or would run
# for hours before doing anything useful (a 10**6-token sample, a 2**64 seed torch cannot take); the lower
# bounds refuse what would crash later (eval_batches 0 at the first evaluation). lr, t_min, beta2 and ema keep
# their own (open-interval) checks above; c1, c2, log_range and eps are checked in ModelConfig.
INT_RANGES: dict[str, tuple[int, int]] = {
    "seq_len": (1, 1 << 17), "n_layer": (1, 1024), "n_head": (1, 1024), "d_model": (1, 1 << 16),
    "cond_dim": (1, 1 << 16), "K": (1, 64), "block_size": (1, 1 << 17), "steps": (1, 10**10),
    "batch_size": (1, 1 << 20), "warmup": (0, 10**10), "seed": (0, 2**63 - 1), "log_every": (1, 10**10),
    "eval_every": (0, 10**10), "eval_batches": (1, 10**6), "final_eval_batches": (1, 10**6),
    "eval_batch_size": (1, 1 << 20), "order_stats_every": (0, 10**10), "ckpt_every": (0, 10**10),
    "sample_len": (1, 16384), "num_samples": (1, 1024), "stop_at": (0, 10**10), "max_bad_steps": (0, 10**6),
    "threads": (0, 4096),
}
FLOAT_RANGES: dict[str, tuple[float, float]] = {
    "lr": (0.0, 10.0), "head_lr": (0.0, 10.0), "weight_decay": (0.0, 100.0), "grad_clip": (0.0, 1e6),
    "max_minutes": (0.0, 10.0**7),
}


# Presets set sizes and schedules; explicit --key value overrides always win.
PRESETS: dict[str, dict[str, Any]] = {
    # CPU: a 1.0M-parameter backbone (+0.5M for the phi/psi heads); LoMDM trains in ~5 minutes on 2 cores.
    # ~0.4 s per LoMDM step on 2 idle cores; max_minutes guards the 10-minute budget on a loaded machine.
    "tiny": dict(seq_len=64, n_layer=4, n_head=4, d_model=128, cond_dim=64, batch_size=32, steps=600, lr=3e-3,
                 warmup=50, ema=0.99, eval_every=100, sample_len=64, max_minutes=8.0),
    # The paper's setup: 12 x 768, 12 heads, +1 layer each for phi/psi; AdamW lr 3e-4, 2,500 warm-up, batch 512.
    "gpt2-small": dict(data="owt", tokenizer="gpt2", seq_len=1024, n_layer=12, n_head=12, d_model=768, cond_dim=128,
                       batch_size=512, steps=1_000_000, lr=3e-4, warmup=2500, lr_decay="constant",
                       weight_decay=0.0, beta2=0.999, ema=0.9999, eval_every=10_000, ckpt_every=10_000,
                       log_every=100, order_stats_every=1000, final_eval_batches=64),
}


def _field_types() -> dict[str, Any]:
    return {f.name: f.type for f in fields(TrainConfig)}


def parse_value(key: str, raw: str) -> Any:
    """Convert a command-line string to the field's type (annotations are strings under __future__)."""
    typ = _field_types()[key]
    try:
        if typ in ("bool", bool):
            low = raw.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if typ in ("int", int):
            return int(raw)
        if typ in ("float", float):
            return float(raw)
    except ValueError:
        raise ConfigError(f"--{key}: expected {typ}, got {raw!r}") from None
    return raw


def unknown_key_message(key: str) -> str:
    names = [f.name for f in fields(TrainConfig)]
    close = difflib.get_close_matches(key.replace("-", "_"), names, n=1, cutoff=0.4)
    hint = f"; did you mean --{close[0]}?" if close else ""
    return f"unknown config key --{key}{hint} (see `oemdm train --help` for all keys)"


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """Parse ``--key value`` / ``--key=value`` pairs (``-`` and ``_`` are interchangeable in keys)."""
    names = {f.name for f in fields(TrainConfig)}
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        tok = args[i]
        if not tok.startswith("--") or len(tok) == 2:
            raise ConfigError(f"expected --key value, got {tok!r}")
        key, eq, val = tok[2:].partition("=")
        key = key.replace("-", "_")
        if key not in names:
            raise ConfigError(unknown_key_message(key))
        if not eq:
            if i + 1 >= len(args):
                raise ConfigError(f"--{key} needs a value")
            val = args[i + 1]
            i += 1
        value = parse_value(key, val)
        if key in out:
            import sys

            print(f"oemdm: warning: --{key} given twice ({out[key]!r}, then {value!r}); using {value!r}",
                  file=sys.stderr)
        out[key] = value
        i += 1
    return out


def build_config(overrides: dict[str, Any] | None = None, base: TrainConfig | None = None) -> TrainConfig:
    """Defaults ← preset ← overrides; validated."""
    overrides = dict(overrides or {})
    cfg = base or TrainConfig()
    preset = overrides.get("preset", cfg.preset)
    if preset not in PRESETS:
        raise ConfigError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    if base is None:
        cfg = dataclasses.replace(cfg, **PRESETS[preset])
    if "data" in overrides:
        # the data names its protocol (tokenizer, sequence length, packing); explicit keys still win
        from oemdm_spec.data.loading import data_defaults

        try:
            implied = data_defaults(overrides["data"])
        except (ValueError, KeyError) as e:
            raise ConfigError(f"data {overrides['data']!r}: {e}") from None
        implied = {k: v for k, v in implied.items() if k not in overrides}
        if "seq_len" in implied and "sample_len" not in overrides:
            implied["sample_len"] = implied["seq_len"]  # the final sample has the data's length
        overrides = {**implied, **overrides}
    cfg = dataclasses.replace(cfg, **overrides)
    cfg.validate()
    return cfg


def config_help() -> str:
    """One line per key with its default (tiny preset applied) and meaning, for ``oemdm train --help``."""
    cfg = build_config()
    lines = []
    for f in fields(TrainConfig):
        lines.append(f"  --{f.name:<20} {str(getattr(cfg, f.name)):<12} {f.metadata.get('help', '')}")
    return "\n".join(lines)
