"""The training loop: plain, single file, DDP-aware, exactly resumable.

Determinism: every random quantity of step s is a pure function of (seed, s) — the batch is
``PackedDataset.get_batch(s, ...)`` and the times/masks come from ``draw_step_noise(seed, s, ...)`` — so a
run resumed from a checkpoint at step s replays steps s, s+1, … exactly as the uninterrupted run would
(bitwise on CPU, where the kernels are deterministic).
"""

from __future__ import annotations

import contextlib
import copy
import csv
import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import CheckpointError, load_checkpoint, load_optimizer, save_checkpoint
from .config import ConfigError, TrainConfig, build_config
from .distributed import DistInfo, setup_distributed, teardown_distributed
from .evaluate import EvalResult, evaluate_bound
from .model import OeMDM, count_parameters
from .objectives import LossModule, draw_step_noise, n_times_for, pearson, samples_for

# ----------------------------------------------------------------------------------------------------------
# data


def load_text(cfg: TrainConfig) -> dict[str, str]:
    """{"train", "validation"} texts: the embedded corpus, or a text file split 90/5/5 by characters."""
    if cfg.data == "embedded":
        from oemdm_spec.data import load_embedded_corpus

        return load_embedded_corpus()
    text = Path(cfg.data).read_text(encoding="utf-8")
    n = len(text)
    return {"train": text[: int(0.9 * n)], "validation": text[int(0.9 * n): int(0.95 * n)],
            "test": text[int(0.95 * n):]}


def build_datasets(cfg: TrainConfig):
    from oemdm_spec.data import PackedDataset, get_tokenizer

    tok = get_tokenizer(cfg.tokenizer)
    texts = load_text(cfg)
    train = PackedDataset(tok.encode(texts["train"]), cfg.seq_len)
    val = PackedDataset(tok.encode(texts["validation"]), cfg.seq_len)
    return tok, train, val


# ----------------------------------------------------------------------------------------------------------
# optimisation


def make_optimizer(model: OeMDM, cfg: TrainConfig, fused: bool) -> torch.optim.AdamW:
    """AdamW with three groups: decayed matrices, non-decayed vectors, and the scheduler heads (own lr)."""
    head_ids = {id(p) for p in model.scheduler_parameters()}
    decay, no_decay, heads = [], [], []
    for p in model.parameters():
        if id(p) in head_ids:
            heads.append(p)
        elif p.dim() >= 2:
            decay.append(p)
        else:
            no_decay.append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay, "lr_scale": 1.0},
        {"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0},
    ]
    if heads:
        scale = (cfg.head_lr / cfg.lr) if cfg.head_lr else 1.0
        groups.append({"params": heads, "weight_decay": 0.0, "lr_scale": scale})
    kw: dict[str, Any] = {"fused": True} if fused else {}
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, cfg.beta2), eps=1e-8, **kw)


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if cfg.lr_decay == "constant":
        return cfg.lr
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float, step: int) -> None:
    """EMA with a warm start: the effective decay is min(decay, (1 + step)/(10 + step))."""
    d = min(decay, (1 + step) / (10 + step))
    for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
        pe.lerp_(pm.detach(), 1 - d)


# ----------------------------------------------------------------------------------------------------------
# logging


class Logger:
    """CSV logs (+ TensorBoard when installed). Only rank 0 writes."""

    FIELDS = ["step", "loss", "nelbo", "lr", "grad_norm", "tokens_per_s", "elapsed_s", "val_nelbo", "val_se"]
    ORDER_FIELDS = ["step", "w_fwd_min", "w_fwd_mean", "w_fwd_max", "w_rev_min", "w_rev_mean", "w_rev_max",
                    "corr_fwd_conf", "corr_rev_conf"]

    def __init__(self, run_dir: Path, enabled: bool, append: bool, resume_step: int = 0) -> None:
        self.enabled = enabled
        self.log_path = run_dir / "log.csv"
        self.order_path = run_dir / "order_stats.csv"
        self.tb = None
        if not enabled:
            return
        mode = "a" if append and self.log_path.exists() else "w"
        if mode == "a":
            # rows after the checkpoint were written by the killed segment; the resumed run writes them again
            for path in (self.log_path, self.order_path):
                truncate_log_after(path, resume_step)
        self._log = open(self.log_path, mode, newline="")
        self._order = open(self.order_path, mode, newline="")
        self.w_log = csv.DictWriter(self._log, fieldnames=self.FIELDS)
        self.w_order = csv.DictWriter(self._order, fieldnames=self.ORDER_FIELDS)
        if mode == "w":
            self.w_log.writeheader()
            self.w_order.writeheader()
        with contextlib.suppress(Exception):  # TensorBoard is optional
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tb"))

    def log(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.w_log.writerow({k: row.get(k, "") for k in self.FIELDS})
        self._log.flush()
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and not math.isnan(v):
                    self.tb.add_scalar(f"train/{k}", v, row["step"])

    def log_order(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.w_order.writerow({k: row.get(k, "") for k in self.ORDER_FIELDS})
        self._order.flush()
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and not math.isnan(v):
                    self.tb.add_scalar(f"order/{k}", v, row["step"])

    def close(self) -> None:
        if self.enabled:
            self._log.close()
            self._order.close()
            if self.tb is not None:
                self.tb.close()


def truncate_log_after(path: Path, step: int) -> None:
    """Drop the rows of a CSV log whose step is beyond ``step`` (atomically: a temp file, then a rename)."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    header, body = rows[0], rows[1:]
    keep = [r for r in body if r and r[0].strip() and float(r[0]) <= step]
    if len(keep) == len(body):
        return
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        csv.writer(f).writerows([header, *keep])
    os.replace(tmp, path)


def order_stats(step: int, stats: dict[str, torch.Tensor]) -> dict[str, float]:
    """min/mean/max of w_φ and w_ψ and their Pearson r with the denoiser's confidence at masked positions."""
    row: dict[str, float] = {"step": step}
    for key in ("w_fwd", "w_rev"):
        if key in stats:
            w = stats[key].float()
            row.update({f"{key}_min": float(w.min()), f"{key}_mean": float(w.mean()), f"{key}_max": float(w.max())})
    if "conf" in stats:
        row["corr_fwd_conf"] = pearson(stats["w_fwd_masked"], stats["conf"])
        row["corr_rev_conf"] = pearson(stats["w_rev_masked"], stats["conf"])
    return row


# ----------------------------------------------------------------------------------------------------------
# stopping safely: signals and non-finite steps

GROUP_NAMES = ("decay", "no_decay", "heads")  # make_optimizer's parameter groups, in order


class TrainingDiverged(RuntimeError):
    """More than ``max_bad_steps`` consecutive steps had a non-finite loss or gradient."""


class StopSignals:
    """SIGTERM / SIGINT ask the loop to stop after the current step; the loop then writes a checkpoint.

    The first signal only sets a flag (a half-applied optimiser step or a half-written checkpoint is never
    interrupted); a second one restores the previous handler and re-delivers the signal, so a stuck run can
    still be killed with a second Ctrl-C. Handlers are installed only in the main thread (Python's rule) and
    restored on exit."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:
            self.restore()
            signal.raise_signal(signum)
            return
        self.received = signum

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def __exit__(self, *exc: Any) -> None:
        self.restore()

    def should_stop(self, dist_enabled: bool, device: torch.device) -> bool:
        """Under DDP every rank must leave the loop at the same step (a rank that stops alone would hang the
        others in the next all-reduce), so the flag is max-reduced across ranks."""
        flag = self.received is not None
        if dist_enabled:
            f = torch.tensor([1.0 if flag else 0.0], device=device)
            torch.distributed.all_reduce(f, op=torch.distributed.ReduceOp.MAX)
            flag = bool(f.item() > 0)
        return flag


def grad_norm_then_clip(model: nn.Module, grad_clip: float) -> tuple[torch.Tensor, bool]:
    """The total gradient norm, and whether it is finite; the gradients are clipped to ``grad_clip`` (0: off)
    only when it is. ``clip_grad_norm_`` would multiply every gradient by NaN when one is NaN, and the
    error message could then no longer say which parameter group went bad."""
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    finite = math.isfinite(float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm))
    if finite and grad_clip > 0:
        torch.nn.utils.clip_grads_with_norm_(params, grad_clip, norm)
    return norm, finite


def nonfinite_groups(opt: torch.optim.Optimizer) -> list[str]:
    """Names of the parameter groups holding a non-finite gradient (for the error message)."""
    bad = []
    for i, group in enumerate(opt.param_groups):
        # under FSDP each rank checks its own shard (the decision to skip uses the all-reduced norm instead)
        grads = [p.grad.to_local() if hasattr(p.grad, "to_local") else p.grad for p in group["params"]
                 if p.grad is not None]
        if any(not bool(torch.isfinite(g).all()) for g in grads):
            bad.append(GROUP_NAMES[i] if i < len(GROUP_NAMES) else f"group {i}")
    return bad


# ----------------------------------------------------------------------------------------------------------
# the run


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


def resolve_device(cfg: TrainConfig) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def busy_cores(window_s: float = 0.5) -> float | None:
    """How many cores *other* processes keep busy right now: the non-idle share of /proc/stat over a short
    window (Linux), less this process's own CPU time in it (a thread pool still spinning after the previous
    run of `oemdm compare`, say). The 1-minute load average would still count a `pip install` that ended
    seconds ago."""
    def read() -> tuple[int, int]:
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
        return sum(vals), vals[3] + (vals[4] if len(vals) > 4 else 0)  # total, idle + iowait (jiffies)

    def own_s() -> float:
        t = os.times()
        return t.user + t.system

    try:
        t0, i0 = read()
        c0, w0 = own_s(), time.monotonic()
        time.sleep(window_s)
        t1, i1 = read()
        c1, w1 = own_s(), time.monotonic()
    except (OSError, ValueError, IndexError):
        return None
    if t1 <= t0 or w1 <= w0:
        return None
    n = os.cpu_count() or 1
    busy_all = n * (1.0 - (i1 - i0) / (t1 - t0))
    return max(0.0, busy_all - (c1 - c0) / (w1 - w0))


def cpu_threads(cfg: TrainConfig) -> int:
    """``threads`` if set; else the cores nobody else is using (at least 1). Intra-op threads that have to
    share oversubscribed cores spin and wait: measured 2x slower than one thread on a busy 2-core machine."""
    if cfg.threads > 0:
        return cfg.threads
    n = os.cpu_count() or 1
    busy = busy_cores()
    if busy is None:  # not Linux: fall back to the load average
        busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, min(torch.get_num_threads(), n - int(round(busy))))


def make_run_dir(cfg: TrainConfig) -> Path:
    name = cfg.name or f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{cfg.model}"
    return Path(cfg.out_dir) / name


def _mismatch(ckpt: dict[str, Any], cfg: TrainConfig, vocab_size: int, e: Exception) -> CheckpointError:
    detail = str(e).strip().splitlines()
    return CheckpointError(
        f"checkpoint {ckpt['dir']} does not fit the run's config (model={cfg.model}, d_model={cfg.d_model}, "
        f"n_layer={cfg.n_layer}, vocabulary {vocab_size}): {' '.join(detail[:2])}")


def train(cfg: TrainConfig | None = None, *, resume: str | None = None, overrides: dict[str, Any] | None = None,
          progress: bool = True, final_eval: bool = True) -> TrainResult:
    """Train a model; returns where everything went and the final validation bound (EMA weights).

    SIGTERM / SIGINT stop the run after the current step with a checkpoint (``result.interrupted`` names the
    signal; no final evaluation). A step whose loss or gradient is non-finite is skipped (weights, optimiser
    state and EMA untouched) and counted; more than ``max_bad_steps`` in a row raise ``TrainingDiverged``."""
    with StopSignals() as signals:
        return _train(cfg, resume, overrides, progress, final_eval, signals)


def _train(cfg: TrainConfig | None, resume: str | None, overrides: dict[str, Any] | None, progress: bool,
           final_eval: bool, signals: StopSignals) -> TrainResult:
    t_start = time.time()
    ckpt = None
    if resume is not None:
        ckpt = load_checkpoint(resume)
        cfg = build_config(overrides or {}, base=TrainConfig.from_dict(ckpt["config"]))
        run_dir = Path(ckpt["dir"]).parent.parent
    else:
        cfg = cfg or build_config(overrides or {})
        run_dir = make_run_dir(cfg)
    device = resolve_device(cfg)
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads(cfg))
    dist_info: DistInfo = setup_distributed(device.type)
    if dist_info.enabled and device.type == "cuda":
        device = torch.device("cuda", dist_info.local_rank)
    if cfg.batch_size % dist_info.world_size:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by world size {dist_info.world_size}")
    local_batch = cfg.batch_size // dist_info.world_size
    main = dist_info.is_main

    # everything that can reject the input (data, checkpoint) runs before anything is written
    try:
        tok, train_ds, val_ds = build_datasets(cfg)
    except (ValueError, OSError) as e:
        raise ConfigError(f"data {cfg.data!r} (tokenizer {cfg.tokenizer}, seq_len {cfg.seq_len}): {e}") from None
    mcfg = cfg.model_config(tok.vocab_size)
    torch.manual_seed(cfg.seed)  # initial weights: a function of the seed only
    model = OeMDM(mcfg).to(device)
    ema = copy.deepcopy(model).requires_grad_(False) if cfg.ema > 0 else None
    use_cuda = device.type == "cuda"
    use_fsdp = dist_info.enabled and cfg.parallel == "fsdp"
    loss_mod: nn.Module = LossModule(model, cfg.K)
    start = 0
    if ckpt is not None:
        # full tensors go in before any sharding; the optimiser state after it (it needs the sharded params)
        try:
            model.load_state_dict(ckpt["model"])
            if ema is not None:
                if ckpt["ema"] is None:
                    raise ValueError("ema.safetensors is missing but the run has ema > 0")
                ema.load_state_dict(ckpt["ema"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise _mismatch(ckpt, cfg, tok.vocab_size, e) from None
        start = int(ckpt["step"])
    if use_fsdp:
        from torch.distributed.device_mesh import init_device_mesh

        from . import fsdp

        mesh = init_device_mesh(device.type, (dist_info.world_size,))
        fsdp.shard(loss_mod, model, mesh)
        if ema is not None:
            fsdp.shard(ema, ema, mesh)
    opt = make_optimizer(model, cfg, fused=use_cuda)
    if ckpt is not None:
        try:
            load_optimizer(opt, ckpt["optim_tensors"], ckpt["optimizer"], device,
                           shard_state=fsdp.shard_optimizer_state if use_fsdp else None)
        except (RuntimeError, ValueError, KeyError) as e:
            raise _mismatch(ckpt, cfg, tok.vocab_size, e) from None
    if main:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            cfg.save(str(run_dir / "config.json"))
        except OSError as e:
            raise ConfigError(f"cannot write the run directory {str(run_dir)!r}: {e.strerror or e}") from None
    if cfg.compile == "yes" or (cfg.compile == "auto" and use_cuda):
        # compile the backbone's feature pass (all heavy compute); the gather/loss stays eager (dynamic N)
        model.backbone.features = torch.compile(model.backbone.features)  # type: ignore[method-assign]
    amp_bf16 = cfg.dtype == "bf16" or (cfg.dtype == "auto" and use_cuda)
    autocast = (torch.autocast(device_type=device.type, dtype=torch.bfloat16) if amp_bf16
                else contextlib.nullcontext())
    if dist_info.enabled and not use_fsdp:
        loss_mod = nn.parallel.DistributedDataParallel(
            loss_mod, device_ids=[device.index] if use_cuda else None, find_unused_parameters=False
        )

    def gathered() -> tuple[OeMDM, OeMDM | None, Any]:
        """(model, ema, optimiser) with full tensors, for checkpoints and evaluation. Under FSDP this is an
        all-gather every rank must join; otherwise the live objects themselves."""
        if not use_fsdp:
            return model, ema, opt
        return fsdp.full_copy(model), fsdp.full_copy(ema) if ema is not None else None, fsdp.FullOptimizerState(opt)

    K = samples_for(model, cfg.K)
    n_times = n_times_for(model)
    stop = min(cfg.steps, cfg.stop_at) if cfg.stop_at > 0 else cfg.steps
    logger = Logger(run_dir, main, append=ckpt is not None, resume_step=start)
    if main and progress:
        print(f"[oemdm] {cfg.model} ({cfg.preset}): {count_parameters(model) / 1e6:.2f}M parameters, "
              f"{len(train_ds)} train sequences of {cfg.seq_len} tokens, device {device}"
              f"{f' ({torch.get_num_threads()} threads)' if device.type == 'cpu' else ''}, "
              f"world size {dist_info.world_size}; run dir {run_dir}", flush=True)
    bar = None
    if main and progress:
        from tqdm import tqdm

        bar = tqdm(total=stop, initial=start, desc=cfg.model, dynamic_ncols=True, mininterval=1.0,
                   file=sys.stderr)
    val_curve: list[tuple[int, float, float]] = []
    losses: list[float] = []
    tokens_per_step = cfg.batch_size * cfg.seq_len
    train_time = 0.0
    step = start
    skipped = 0  # steps skipped for a non-finite loss/gradient, in all
    bad_run: list[tuple[int, float, list[str]]] = []  # the current run of consecutive bad steps
    last_ckpt: Path | None = Path(ckpt["dir"]) if ckpt is not None else None
    ckpt_before_bad: Path | None = None
    interrupted: str | None = None

    def run_eval(n_batches: int, full: tuple[OeMDM, OeMDM | None, Any]) -> EvalResult:
        target = full[1] if full[1] is not None else full[0]
        return evaluate_bound(target, val_ds.iter_eval_batches(cfg.eval_batch_size), seed=cfg.seed + 1,
                              device=device, max_batches=n_batches)

    for step in range(start, stop):
        t0 = time.time()
        lr = lr_at(step, cfg)
        for g in opt.param_groups:
            g["lr"] = lr * g["lr_scale"]
        x = train_ds.get_batch(step, local_batch, cfg.seed, dist_info.rank, dist_info.world_size).to(device)
        noise = draw_step_noise(cfg.seed, step, global_batch=cfg.batch_size, seq_len=cfg.seq_len, K=K,
                                t_min=cfg.t_min, n_times=n_times, rank=dist_info.rank,
                                world_size=dist_info.world_size, device=device)
        want_stats = cfg.model in ("lomdm", "genmd4") and cfg.order_stats_every > 0 and (
            step % cfg.order_stats_every == 0 or step == stop - 1)
        with autocast:
            out = loss_mod(x, noise.t, noise.u, want_stats)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        # the total norm doubles as the finiteness check: it is non-finite iff some gradient is; under DDP the
        # gradients are all-reduced, so every rank decides alike
        gnorm, finite = grad_norm_then_clip(model, cfg.grad_clip)
        if use_fsdp:
            gnorm = fsdp.full_tensor(gnorm)  # a replicated DTensor under FSDP2
        loss_val = float(out.loss.detach())
        if math.isfinite(loss_val) and finite:
            bad_run.clear()
            opt.step()
            if ema is not None:
                ema_update(ema, model, cfg.ema, step)
        else:
            # skip: no optimiser step, no EMA update, so the weights and Adam moments stay finite
            skipped += 1
            if not bad_run:
                ckpt_before_bad = last_ckpt  # checkpoints written during the bad run hold the same weights
            bad_run.append((step + 1, loss_val, nonfinite_groups(opt)))
            opt.zero_grad(set_to_none=True)
            if main:
                print(f"\n[oemdm] step {step + 1}: non-finite loss/gradient (loss {loss_val}); step skipped "
                      f"({len(bad_run)} in a row, max_bad_steps={cfg.max_bad_steps})", file=sys.stderr, flush=True)
            if len(bad_run) > cfg.max_bad_steps:
                if bar is not None:
                    bar.close()
                logger.close()
                first, first_loss, groups = bad_run[0]
                where = f"the last good checkpoint (before step {first}) is {ckpt_before_bad}" \
                    if ckpt_before_bad is not None else \
                    "no checkpoint was written before it"
                raise TrainingDiverged(
                    f"training stopped: {len(bad_run)} consecutive non-finite steps, the first at step {first} "
                    f"(loss {first_loss}; non-finite gradients in parameter group(s) "
                    f"{', '.join(groups) or 'none (the loss itself)'}); none of them was applied. {where}. "
                    f"Lower lr (now {cfg.lr}), set grad_clip, or use dtype fp32, then resume from it with "
                    f"`oemdm train --resume {run_dir}`")
        losses.append(loss_val)
        dt = time.time() - t0
        train_time += dt
        tps = tokens_per_step / dt
        if want_stats and main:
            logger.log_order(order_stats(step, out.stats))
        done = step + 1
        row: dict[str, Any] = {"step": done, "loss": loss_val, "nelbo": float(out.nelbo), "lr": lr,
                               "grad_norm": float(gnorm), "tokens_per_s": tps, "elapsed_s": time.time() - t_start}
        if cfg.eval_every > 0 and done % cfg.eval_every == 0 and done < stop:
            full = gathered() if use_fsdp or main else None  # the gather is collective: every rank joins
            if main and full is not None:
                ev = run_eval(cfg.eval_batches, full)
                row.update(val_nelbo=ev.nelbo, val_se=ev.se)
                val_curve.append((done, train_time, ev.nelbo))
        if main and (done % cfg.log_every == 0 or "val_nelbo" in row or done == stop):
            logger.log(row)
        if bar is not None:
            bar.set_postfix(loss=f"{loss_val:.3f}", nelbo=f"{float(out.nelbo):.3f}", tok_s=f"{tps:,.0f}",
                            refresh=False)
            bar.update(1)
        if cfg.ckpt_every > 0 and done % cfg.ckpt_every == 0 and done < stop and (main or use_fsdp):
            full = gathered()
            if main:
                last_ckpt = save_checkpoint(run_dir, done, *full, cfg.to_dict())
        if signals.should_stop(dist_info.enabled, device) and done < stop:
            interrupted = signal.Signals(signals.received).name if signals.received is not None else "signal"
            if main:
                print(f"\n[oemdm] {interrupted} received: stopping after step {done} with a checkpoint",
                      file=sys.stderr, flush=True)
            step = done - 1
            break
        if cfg.max_minutes > 0 and (time.time() - t_start) > 60 * cfg.max_minutes:
            if main:
                print(f"\n[oemdm] max_minutes={cfg.max_minutes} reached at step {done}; stopping early",
                      flush=True)
            step = done - 1
            break
    else:
        step = stop - 1 if stop > start else start - 1
    final_step = step + 1
    if bar is not None:
        bar.close()
    result_eval = None
    final = gathered() if main or use_fsdp else (model, ema, opt)
    if main:
        last_ckpt = save_checkpoint(run_dir, final_step, *final, cfg.to_dict())
        if final_eval and interrupted is None:
            result_eval = run_eval(cfg.final_eval_batches, final)
            val_curve.append((final_step, train_time, result_eval.nelbo))
            logger.log({"step": final_step, "val_nelbo": result_eval.nelbo, "val_se": result_eval.se,
                        "elapsed_s": time.time() - t_start})
        summary = {
            "model": cfg.model, "final_step": final_step, "wall_s": time.time() - t_start,
            "train_s": train_time, "tokens_per_s": tokens_per_step * (final_step - start) / max(train_time, 1e-9),
            "parameters": count_parameters(final[0]), "val_curve": val_curve, "skipped_steps": skipped,
            "parallel": ("fsdp" if use_fsdp else "ddp") if dist_info.enabled else "single process",
            "world_size": dist_info.world_size,
            "interrupted": interrupted, "checkpoint": str(last_ckpt),
        }
        if result_eval is not None:
            summary.update(val_nelbo=result_eval.nelbo, val_se=result_eval.se, val_bits=result_eval.bits,
                           val_ppl=result_eval.perplexity, estimator=result_eval.estimator)
        with open(run_dir / "summary.json", "w") as f:
            json.dump(summary, f, indent=1)
    logger.close()
    teardown_distributed()
    tps_all = tokens_per_step * (final_step - start) / max(train_time, 1e-9)
    return TrainResult(run_dir, cfg, final_step, result_eval, time.time() - t_start, tps_all, val_curve,
                       model=final[0], ema=final[1], tokenizer=tok, val_data=val_ds, losses=losses,
                       skipped_steps=skipped, interrupted=interrupted)


def env_rank() -> int:
    return int(os.environ.get("RANK", "0"))
