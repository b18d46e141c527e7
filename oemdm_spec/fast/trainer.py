"""The training loop: plain, DDP/FSDP-aware, exactly resumable. setup → step → periodic work → finish.

Determinism: every random quantity of step s is a pure function of (seed, s) — the batch is
``dataset.get_batch(s, ...)`` and the times/masks come from ``draw_step_noise(seed, s, ...)`` — so a run
resumed from a checkpoint at step s replays steps s, s+1, … exactly as the uninterrupted run would (bitwise on
CPU, where the kernels are deterministic). The trainer never asks which model type it trains: the model's
process (``model.process``) decides the masks, rates, heads and FSDP units.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import CheckpointError, load_checkpoint, load_optimizer, resolve_checkpoint, save_checkpoint
from .config import ConfigError, TrainConfig, build_config
from .distributed import DistInfo, setup_distributed, teardown_distributed
from .evaluate import EvalResult, NonFiniteBound, evaluate_bound
from .logger import Logger, order_stats
from .model import OeMDM, count_parameters
from .noise import draw_step_noise
from .objectives import LossModule, LossOutput, compile_step
from .optim import ema_update, grad_norm_then_clip, lr_at, make_optimizer, nonfinite_groups
from .runlock import RunLock, check_fresh_run_dir, claim_run_dir
from .signals import StopSignals
from .threads import cpu_threads


class TrainingDiverged(RuntimeError):
    """More than ``max_bad_steps`` consecutive steps had a non-finite loss or gradient."""


class OutputError(RuntimeError):
    """A log/summary/checkpoint file of the run could not be written (full disk, ...): exit code 2."""


@dataclass
class TrainResult:
    run_dir: Path
    config: TrainConfig
    final_step: int
    eval: EvalResult | None
    wall_s: float
    tokens_per_s: float
    val_curve: list[tuple[int, float, float]]  # (step, elapsed s, val NELBO)
    model: OeMDM | None = None
    ema: OeMDM | None = None
    tokenizer: Any = None
    val_data: Any = None
    losses: list[float] | None = None
    skipped_steps: int = 0
    interrupted: str | None = None  # the signal's name when SIGTERM / SIGINT stopped the run
    note: str | None = None  # a resume with nothing to do: what happened (nothing was written)


def resolve_device(cfg: TrainConfig) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda: no CUDA GPU is available (use --device cpu or auto)")
    return torch.device(cfg.device)


def make_run_dir(cfg: TrainConfig) -> Path:
    """The planned run directory; a default (timestamp) name gets a -2, -3, ... suffix when it is taken
    (``claim_run_dir``)."""
    name = cfg.name or f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{cfg.model}"
    return Path(cfg.out_dir) / name


def check_data_path(data: str) -> None:
    """Refuse a data path that is not a regular file or directory (a device such as /dev/zero never ends, a
    FIFO blocks) and a file too large to tokenize in memory (~10 bytes of memory per byte of text)."""
    if data == "embedded":
        return
    p = Path(data)
    if p.exists() and not (p.is_file() or p.is_dir()):
        raise ConfigError(f"data {data!r} is not a regular file or directory (a device or FIFO cannot be read "
                          "as a corpus)")
    if p.is_file():
        try:
            total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return
        size = p.stat().st_size
        if size * 10 > total:
            raise ConfigError(f"data {data!r}: {size / 2**30:.1f} GiB of text needs ~{size * 10 / 2**30:.0f} GiB of "
                              f"memory to tokenize, more than this machine's {total / 2**30:.0f} GiB")


def _resume_note(start: int, cfg: TrainConfig, run_dir: Path) -> str:
    if cfg.stop_at > 0 and cfg.stop_at <= start < cfg.steps:
        how = f"it stopped at --stop_at {cfg.stop_at}; pass --stop_at 0 (or a later step) to continue"
    else:
        how = f"it has finished (steps={cfg.steps}); pass a larger --steps to train on"
    return f"run {run_dir} is already at step {start}: nothing to do, nothing written ({how})"


def _mismatch(ckpt: dict[str, Any], cfg: TrainConfig, vocab_size: int, e: Exception) -> CheckpointError:
    detail = str(e).strip().splitlines()
    return CheckpointError(
        f"checkpoint {ckpt['dir']} does not fit the run's config (model={cfg.model}, d_model={cfg.d_model}, "
        f"n_layer={cfg.n_layer}, vocabulary {vocab_size}): {' '.join(detail[:2])}")


def train(cfg: TrainConfig | None = None, *, resume: str | None = None, overrides: dict[str, Any] | None = None,
          progress: bool = True, final_eval: bool = True, overwrite: bool = False) -> TrainResult:
    """Train a model; returns where everything went and the final validation bound (EMA weights).

    SIGTERM / SIGINT stop the run after the current step with a checkpoint (``result.interrupted`` names the
    signal; no final evaluation). A step whose loss or gradient is non-finite is skipped (weights, optimiser
    state and EMA untouched) and counted; more than ``max_bad_steps`` in a row raise ``TrainingDiverged``.

    The run directory has one owner: ``RUN/.lock`` (see ``runlock.py``) is held until this returns. A fresh run
    never reuses an existing directory unless ``overwrite``; a resume with nothing to do writes nothing and
    says so in ``result.note``. A file that cannot be written raises ``OutputError`` (after trying to save a
    checkpoint when it was a log)."""
    with StopSignals() as signals:
        run = Run(cfg, resume, overrides, signals, progress, overwrite)
        try:
            if run.note is not None:
                return TrainResult(run.run_dir, run.cfg, run.start, None, time.time() - run.t_start, 0.0, [],
                                   note=run.note)
            return run.loop(final_eval)
        finally:
            run.release()


class Run:
    """One training run. ``__init__`` is the set-up (everything that can reject the input runs before anything
    is written); ``loop`` calls ``step`` and ``periodic`` for each step, then ``finish``."""

    def __init__(self, cfg: TrainConfig | None, resume: str | None, overrides: dict[str, Any] | None,
                 signals: StopSignals, progress: bool, overwrite: bool = False) -> None:
        self.t_start = time.time()
        self.signals = signals
        self.progress = progress
        self.overwrite = overwrite
        self.lock: RunLock | None = None
        self.note: str | None = None
        self.ckpt = None
        try:
            overrides = dict(overrides or {})
            if resume is not None:
                bad = sorted(k for k in ("out_dir", "name") if k in overrides)
                if bad:
                    raise ConfigError(f"--{bad[0]} {overrides[bad[0]]!r} cannot be used with --resume: a resumed run "
                                      f"stays in its directory ({resume!r})")
                if overwrite:
                    raise ConfigError("--overwrite cannot be used with --resume")
                ck_dir = resolve_checkpoint(resume)
                self.run_dir = ck_dir.parent.parent
                if os.environ.get("RANK", "0") == "0":  # before reading: a run still training keeps its directory
                    self.lock = RunLock(self.run_dir)
                self.ckpt = load_checkpoint(ck_dir)
                self.cfg = build_config(overrides, base=TrainConfig.from_dict(self.ckpt["config"]))
                self._resume_checks(overrides)
                start = int(self.ckpt["step"])
                stop = min(self.cfg.steps, self.cfg.stop_at) if self.cfg.stop_at > 0 else self.cfg.steps
                if start >= stop:
                    self.start, self.note = start, _resume_note(start, self.cfg, self.run_dir)
                    return
            else:
                self.cfg = cfg or build_config(overrides)
                self.run_dir = make_run_dir(self.cfg)
                if self.cfg.name:
                    check_fresh_run_dir(self.run_dir, overwrite)  # before anything is loaded or written
            check_data_path(self.cfg.data)
            self._setup_hardware()
            self._setup_data()
            self._setup_model()
            self._setup_state()
        except BaseException:
            self.release()  # the lock of a run that never started
            raise

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def _resume_checks(self, overrides: dict[str, Any]) -> None:
        """config.json is not read on resume (the checkpoint's config is): say so when it was edited. Keep the
        checkpoint's CPU thread count unless --threads is given (bitwise resume needs the same count)."""
        ckpt, cfg = self.ckpt, self.cfg
        try:
            on_disk = json.loads((self.run_dir / "config.json").read_text())
        except (OSError, ValueError):
            on_disk = None
        if isinstance(on_disk, dict):
            stored = TrainConfig.from_dict(ckpt["config"]).to_dict()
            diff = sorted(k for k in set(on_disk) | set(stored)
                          if k not in overrides and on_disk.get(k) != stored.get(k))
            if diff:
                what = ", ".join(f"{k} ({on_disk.get(k)!r} there, {stored.get(k)!r} in the checkpoint)"
                                 for k in diff[:4])
                print(f"oemdm: warning: {self.run_dir / 'config.json'} differs from the checkpoint's config in {what}; "
                      "a resume uses the checkpoint's config and the --key value overrides (config.json is "
                      "rewritten): pass a change as --key value", file=sys.stderr, flush=True)
        recorded = ckpt.get("threads")
        if isinstance(recorded, int) and not isinstance(recorded, bool) and recorded > 0:
            if "threads" not in overrides:
                self.cfg = dataclasses.replace(cfg, threads=recorded)
            elif cfg.threads != recorded:
                print(f"oemdm: warning: --threads {cfg.threads} differs from the {recorded} thread(s) the checkpoint "
                      "was written with: the resumed steps may differ in the last bits from an uninterrupted run",
                      file=sys.stderr, flush=True)

    # --- set-up -------------------------------------------------------------------------------------------
    def _setup_hardware(self) -> None:
        cfg = self.cfg
        self.device = resolve_device(cfg)
        if self.device.type == "cpu":
            torch.set_num_threads(cpu_threads(cfg.threads))
        self.dist: DistInfo = setup_distributed(self.device.type)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        if cfg.batch_size % self.dist.world_size:
            raise ValueError(f"batch_size {cfg.batch_size} is not divisible by world size {self.dist.world_size}")
        if cfg.compile == "step" and self.dist.enabled:  # before the run directory is claimed
            raise ConfigError("compile=step is single-process for now (not measured under DDP/FSDP); use "
                              "compile=yes (the backbone) with torchrun")
        self.local_batch = cfg.batch_size // self.dist.world_size
        self.main = self.dist.is_main
        self.use_cuda = self.device.type == "cuda"
        self.use_fsdp = self.dist.enabled and cfg.parallel == "fsdp"

    def _setup_data(self) -> None:
        from oemdm_spec.data.loading import build_datasets

        cfg = self.cfg
        try:
            self.tok, self.train_ds, self.val_ds = build_datasets(cfg)
        except (ValueError, OSError, ImportError) as e:
            raise ConfigError(f"data {cfg.data!r} (tokenizer {cfg.tokenizer}, seq_len {cfg.seq_len}): {e}") from None
        # padded data (one sentence per row): batches carry a valid mask, True at real tokens
        self.padded = getattr(self.train_ds, "pad_id", None) is not None

    def _setup_model(self) -> None:
        cfg, ckpt = self.cfg, self.ckpt
        torch.manual_seed(cfg.seed)  # initial weights: a function of the seed only
        self.model = model = OeMDM(cfg.model_config(self.tok.vocab_size)).to(self.device)
        self.ema = copy.deepcopy(model).requires_grad_(False) if cfg.ema > 0 else None
        self.loss_mod: nn.Module = LossModule(model, cfg.K)
        self.start = 0
        if ckpt is not None:
            # full tensors go in before any sharding; the optimiser state after it (it needs the sharded params)
            try:
                model.load_state_dict(ckpt["model"])
                if self.ema is not None:
                    if ckpt["ema"] is None:
                        raise ValueError("ema.safetensors is missing but the run has ema > 0")
                    self.ema.load_state_dict(ckpt["ema"])
            except (RuntimeError, ValueError, KeyError) as e:
                raise _mismatch(ckpt, cfg, self.tok.vocab_size, e) from None
            self.start = int(ckpt["step"])
        if self.use_fsdp:
            from torch.distributed.device_mesh import init_device_mesh

            from . import fsdp

            mesh = init_device_mesh(self.device.type, (self.dist.world_size,))
            fsdp.shard(self.loss_mod, model, mesh)
            if self.ema is not None:
                fsdp.shard(self.ema, self.ema, mesh)
        self.opt = make_optimizer(model, cfg, fused=self.use_cuda)
        if ckpt is not None:
            from . import fsdp

            try:
                load_optimizer(self.opt, ckpt["optim_tensors"], ckpt["optimizer"], self.device,
                               shard_state=fsdp.shard_optimizer_state if self.use_fsdp else None)
            except (RuntimeError, ValueError, KeyError) as e:
                raise _mismatch(ckpt, cfg, self.tok.vocab_size, e) from None
        if self.main:
            try:
                if self.ckpt is None:  # a fresh directory, locked (default names never collide)
                    self.run_dir, self.lock = claim_run_dir(self.run_dir, self.overwrite, unique=not cfg.name)
                cfg.save(str(self.run_dir / "config.json"))
            except OSError as e:
                raise ConfigError(f"cannot write the run directory {str(self.run_dir)!r}: {e.strerror or e}") from None
        if cfg.compile == "step":
            compile_step(self.loss_mod)
        elif cfg.compile == "yes" or (cfg.compile == "auto" and self.use_cuda):
            # compile the backbone's feature pass (all heavy compute); the gather/loss stays eager (dynamic N)
            model.backbone.features = torch.compile(model.backbone.features)  # type: ignore[method-assign]
        amp_bf16 = cfg.dtype == "bf16" or (cfg.dtype == "auto" and self.use_cuda)
        self.autocast = (torch.autocast(device_type=self.device.type, dtype=torch.bfloat16) if amp_bf16
                         else contextlib.nullcontext())
        if self.dist.enabled and not self.use_fsdp:
            self.loss_mod = nn.parallel.DistributedDataParallel(
                self.loss_mod, device_ids=[self.device.index] if self.use_cuda else None,
                find_unused_parameters=False)

    def _setup_state(self) -> None:
        cfg = self.cfg
        proc = self.model.process
        self.K = proc.n_masks(cfg.K)
        self.n_times = proc.n_times()
        self.stop = min(cfg.steps, cfg.stop_at) if cfg.stop_at > 0 else cfg.steps
        try:
            self.logger = Logger(self.run_dir, self.main, append=self.ckpt is not None, resume_step=self.start)
        except OSError as e:
            raise OutputError(f"cannot write the logs in {self.run_dir}: {e.strerror or e} "
                              f"({e.filename or 'log.csv'}); nothing else was changed") from None
        self.bar = None
        self.plain_every = 0  # not on a terminal: a plain progress line every plain_every steps or 30 s
        if self.main and self.progress:
            threads = f" ({torch.get_num_threads()} threads)" if self.device.type == "cpu" else ""
            print(f"[oemdm] {cfg.model} ({cfg.preset}): {count_parameters(self.model) / 1e6:.2f}M parameters, "
                  f"{len(self.train_ds)} train sequences of {cfg.seq_len} tokens, device {self.device}{threads}, "
                  f"world size {self.dist.world_size}; run dir {self.run_dir}", flush=True)
            if sys.stderr.isatty():
                from tqdm import tqdm

                self.bar = tqdm(total=self.stop, initial=self.start, desc=cfg.model, dynamic_ncols=True,
                                mininterval=1.0, file=sys.stderr)
            else:  # a captured log: no carriage-return updates
                self.plain_every = max(1, (self.stop - self.start) // 20)
                self.last_plain = time.time()
        self.val_curve: list[tuple[int, float, float]] = []
        self.losses: list[float] = []
        self.tokens_per_step = cfg.batch_size * cfg.seq_len
        self.train_time = 0.0
        self.skipped = 0  # steps skipped for a non-finite loss/gradient, in all
        self.bad_run: list[tuple[int, float, list[str]]] = []  # the current run of consecutive bad steps
        self.last_ckpt: Path | None = Path(self.ckpt["dir"]) if self.ckpt is not None else None
        self.ckpt_before_bad: Path | None = None
        self.interrupted: str | None = None

    # --- the loop -----------------------------------------------------------------------------------------
    def loop(self, final_eval: bool) -> TrainResult:
        final_step = self.start
        try:
            for step in range(self.start, self.stop):
                t0 = time.time()
                lr, out, gnorm = self.step(step)
                dt = time.time() - t0
                self.train_time += dt
                final_step = step + 1
                if self.periodic(step, lr, out, gnorm, dt):
                    break
        except OSError as e:
            self.output_failed(e, final_step)
        return self.finish(final_step, final_eval)

    def output_failed(self, e: OSError, final_step: int) -> None:
        """A log write failed (a full disk): save the progress in a checkpoint if that still works, then stop
        with one line naming the file, the error and the checkpoint to resume from."""
        if self.bar is not None:
            self.bar.close()
        with contextlib.suppress(OSError):
            self.logger.close()
        where = f"the last checkpoint is {self.last_ckpt}"
        if self.main and not self.use_fsdp:
            try:
                self.last_ckpt = save_checkpoint(self.run_dir, final_step, self.model, self.ema, self.opt,
                                                 self.cfg.to_dict())
                where = f"a checkpoint of step {final_step} was written to {self.last_ckpt}"
            except CheckpointError:
                where = f"a checkpoint could not be written either; the last one is {self.last_ckpt}"
        teardown_distributed()
        raise OutputError(f"cannot write {e.filename or 'a log file'}: {e.strerror or e} at step {final_step}; "
                          f"{where}. Free space, then `oemdm train --resume {self.run_dir}`") from None

    def want_stats(self, step: int) -> bool:
        return self.model.process.order_stats and self.cfg.order_stats_every > 0 and (
            step % self.cfg.order_stats_every == 0 or step == self.stop - 1)

    def step(self, step: int) -> tuple[float, LossOutput, torch.Tensor]:
        """One optimiser step (or a skipped one, when the loss or a gradient is not finite)."""
        cfg, dist = self.cfg, self.dist
        lr = lr_at(step, cfg)
        for g in self.opt.param_groups:
            g["lr"] = lr * g["lr_scale"]
        batch = self.train_ds.get_batch(step, self.local_batch, cfg.seed, dist.rank, dist.world_size,
                                        **({"with_valid": True} if self.padded else {}))
        x, valid = batch if self.padded else (batch, None)
        x, valid = x.to(self.device), (valid.to(self.device) if valid is not None else None)
        noise = draw_step_noise(cfg.seed, step, global_batch=cfg.batch_size, seq_len=cfg.seq_len, K=self.K,
                                t_min=cfg.t_min, n_times=self.n_times, rank=dist.rank,
                                world_size=dist.world_size, device=self.device)
        with self.autocast:
            out = self.loss_mod(x, noise.t, noise.u, self.want_stats(step), noise.seed, valid)
        self.opt.zero_grad(set_to_none=True)
        out.loss.backward()
        # the total norm doubles as the finiteness check: it is non-finite iff some gradient is; under DDP the
        # gradients are all-reduced, so every rank decides alike
        gnorm, finite = grad_norm_then_clip(self.model, cfg.grad_clip)
        if self.use_fsdp:
            from . import fsdp

            gnorm = fsdp.full_tensor(gnorm)  # a replicated DTensor under FSDP2
        loss_val = float(out.loss.detach())
        if math.isfinite(loss_val) and finite:
            self.bad_run.clear()
            self.opt.step()
            if self.ema is not None:
                ema_update(self.ema, self.model, cfg.ema, step)
        else:
            self.skip(step, loss_val)
        self.losses.append(loss_val)
        return lr, out, gnorm

    def skip(self, step: int, loss_val: float) -> None:
        """Skip a non-finite step: no optimiser step, no EMA update, so weights and Adam moments stay finite;
        too many in a row stop the run naming the first bad step, the parameter groups and a checkpoint."""
        self.skipped += 1
        if not self.bad_run:
            self.ckpt_before_bad = self.last_ckpt  # checkpoints written during the bad run hold the same weights
        self.bad_run.append((step + 1, loss_val, nonfinite_groups(self.opt)))
        self.opt.zero_grad(set_to_none=True)
        if self.main:
            print(f"\n[oemdm] step {step + 1}: non-finite loss/gradient (loss {loss_val}); step skipped "
                  f"({len(self.bad_run)} in a row, max_bad_steps={self.cfg.max_bad_steps})", file=sys.stderr,
                  flush=True)
        if len(self.bad_run) <= self.cfg.max_bad_steps:
            return
        if self.bar is not None:
            self.bar.close()
        self.logger.close()
        first, first_loss, groups = self.bad_run[0]
        where = (f"the last good checkpoint (before step {first}) is {self.ckpt_before_bad}"
                 if self.ckpt_before_bad is not None else "no checkpoint was written before it")
        raise TrainingDiverged(
            f"training stopped: {len(self.bad_run)} consecutive non-finite steps, the first at step {first} "
            f"(loss {first_loss}; non-finite gradients in parameter group(s) "
            f"{', '.join(groups) or 'none (the loss itself)'}); none of them was applied. {where}. "
            f"Lower lr (now {self.cfg.lr}), set grad_clip, or use dtype fp32, then resume from it with "
            f"`oemdm train --resume {self.run_dir}`")

    def periodic(self, step: int, lr: float, out: LossOutput, gnorm: torch.Tensor, dt: float) -> bool:
        """Order statistics, evaluation, the log row, progress and checkpoints after a step; True to stop."""
        cfg, done = self.cfg, step + 1
        if self.want_stats(step) and self.main:
            self.logger.log_order(order_stats(step, out.stats))
        tps = self.tokens_per_step / dt
        row: dict[str, Any] = {"step": done, "loss": self.losses[-1], "nelbo": float(out.nelbo), "lr": lr,
                               "grad_norm": float(gnorm), "tokens_per_s": tps, "elapsed_s": time.time() - self.t_start}
        if cfg.eval_every > 0 and done % cfg.eval_every == 0 and done < self.stop:
            full = self.gathered() if self.use_fsdp or self.main else None  # the gather is collective
            if self.main and full is not None:
                ev = self.evaluate(cfg.eval_batches, full)
                row.update(val_nelbo=ev.nelbo, val_se=ev.se)
                self.val_curve.append((done, self.train_time, ev.nelbo))
        if self.main and (done % cfg.log_every == 0 or "val_nelbo" in row or done == self.stop):
            self.logger.log(row)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{self.losses[-1]:.3f}", nelbo=f"{float(out.nelbo):.3f}", tok_s=f"{tps:,.0f}",
                                 refresh=False)
            self.bar.update(1)
        elif self.plain_every and (done % self.plain_every == 0 or done == self.stop
                                   or time.time() - self.last_plain >= 30):
            self.last_plain = time.time()
            print(f"[oemdm] step {done}/{self.stop}: loss {self.losses[-1]:.4f}, nelbo {float(out.nelbo):.4f}, "
                  f"{tps:,.0f} tokens/s", file=sys.stderr, flush=True)
        if cfg.ckpt_every > 0 and done % cfg.ckpt_every == 0 and done < self.stop and (self.main or self.use_fsdp):
            full = self.gathered()
            if self.main:
                self.last_ckpt = save_checkpoint(self.run_dir, done, *full, cfg.to_dict())
        return self.should_stop(done)

    def should_stop(self, done: int) -> bool:
        """A signal (every rank agrees) or the wall-time limit ends the run early."""
        if self.signals.should_stop(self.dist.enabled, self.device) and done < self.stop:
            self.interrupted = self.signals.name
            if self.main:
                print(f"\n[oemdm] {self.interrupted} received: stopping after step {done} with a checkpoint",
                      file=sys.stderr, flush=True)
            return True
        if self.cfg.max_minutes > 0 and (time.time() - self.t_start) > 60 * self.cfg.max_minutes:
            if self.main:
                print(f"\n[oemdm] max_minutes={self.cfg.max_minutes} reached at step {done}; stopping early",
                      flush=True)
            return True
        return False

    # --- full tensors, evaluation and the end -------------------------------------------------------------
    def gathered(self) -> tuple[OeMDM, OeMDM | None, Any]:
        """(model, ema, optimiser) with full tensors, for checkpoints and evaluation. Under FSDP this is an
        all-gather every rank must join; otherwise the live objects themselves."""
        if not self.use_fsdp:
            return self.model, self.ema, self.opt
        from . import fsdp

        ema = fsdp.full_copy(self.ema) if self.ema is not None else None
        return fsdp.full_copy(self.model), ema, fsdp.FullOptimizerState(self.opt)

    def evaluate(self, n_batches: int, full: tuple[OeMDM, OeMDM | None, Any]) -> EvalResult:
        target = full[1] if full[1] is not None else full[0]
        kw = {"with_valid": True} if self.padded else {}
        return evaluate_bound(target, self.val_ds.iter_eval_batches(self.cfg.eval_batch_size, **kw),
                              seed=self.cfg.seed + 1, device=self.device, max_batches=n_batches)

    def finish(self, final_step: int, final_eval: bool) -> TrainResult:
        """The final checkpoint, evaluation and summary.json; returns the result."""
        cfg = self.cfg
        if self.bar is not None:
            self.bar.close()
        result_eval = None
        final = self.gathered() if self.main or self.use_fsdp else (self.model, self.ema, self.opt)
        eval_error = None
        if self.main:
            self.last_ckpt = save_checkpoint(self.run_dir, final_step, *final, cfg.to_dict())
            try:
                if final_eval and self.interrupted is None:
                    try:
                        result_eval = self.evaluate(cfg.final_eval_batches, final)
                    except NonFiniteBound as e:  # no bound is ever reported from NaN weights
                        eval_error = f"{e}; the checkpoint {self.last_ckpt} holds these weights"
                    if result_eval is not None:
                        self.val_curve.append((final_step, self.train_time, result_eval.nelbo))
                        self.logger.log({"step": final_step, "val_nelbo": result_eval.nelbo,
                                         "val_se": result_eval.se, "elapsed_s": time.time() - self.t_start})
                self.write_summary(final_step, final[0], result_eval, eval_error)
            except OSError as e:
                with contextlib.suppress(OSError):
                    self.logger.close()
                teardown_distributed()
                raise OutputError(f"cannot write {e.filename or 'the logs'}: {e.strerror or e}; the checkpoint "
                                  f"of step {final_step} is {self.last_ckpt}") from None
        self.logger.close()
        teardown_distributed()
        if eval_error is not None:
            raise NonFiniteBound(eval_error)
        tps_all = self.tokens_per_step * (final_step - self.start) / max(self.train_time, 1e-9)
        return TrainResult(self.run_dir, cfg, final_step, result_eval, time.time() - self.t_start, tps_all,
                           self.val_curve, model=final[0], ema=final[1], tokenizer=self.tok, val_data=self.val_ds,
                           losses=self.losses, skipped_steps=self.skipped, interrupted=self.interrupted)

    def write_summary(self, final_step: int, model: OeMDM, result_eval: EvalResult | None,
                      eval_error: str | None = None) -> None:
        summary = {
            "model": self.cfg.model, "final_step": final_step, "wall_s": time.time() - self.t_start,
            "train_s": self.train_time,
            "tokens_per_s": self.tokens_per_step * (final_step - self.start) / max(self.train_time, 1e-9),
            "parameters": count_parameters(model), "val_curve": self.val_curve, "skipped_steps": self.skipped,
            "parallel": ("fsdp" if self.use_fsdp else "ddp") if self.dist.enabled else "single process",
            "world_size": self.dist.world_size, "interrupted": self.interrupted, "checkpoint": str(self.last_ckpt),
        }
        if eval_error is not None:
            summary["eval_error"] = eval_error
        if result_eval is not None:
            summary.update(val_nelbo=result_eval.nelbo, val_se=result_eval.se, val_bits=result_eval.bits,
                           val_ppl=result_eval.perplexity, estimator=result_eval.estimator)
        with open(self.run_dir / "summary.json", "w") as f:
            json.dump(summary, f, indent=1)
