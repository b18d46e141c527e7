"""The run's logs: ``log.csv`` (one row per logged step), ``order_stats.csv`` (learned-order statistics) and,
when installed, TensorBoard. Only rank 0 writes."""

from __future__ import annotations

import contextlib
import csv
import math
import os
from pathlib import Path
from typing import Any

import torch

from .processes import pearson


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
            # (order_stats.csv rows carry the 0-based step that produced them: the resumed run's first step is
            # resume_step itself, so its row goes too)
            truncate_log_after(self.log_path, resume_step)
            truncate_log_after(self.order_path, resume_step - 1)
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
            self.enabled = False


def truncate_log_after(path: Path, step: int) -> None:
    """Drop the rows of a CSV log whose step is beyond ``step`` (atomically: a temp file, then a rename)."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    header, body = rows[0], rows[1:]
    keep = [r for r in body if r and _step_of(r[0]) <= step]
    if len(keep) == len(body):
        return
    tmp = path.with_suffix(".csv.tmp")
    try:
        with open(tmp, "w", newline="") as f:
            csv.writer(f).writerows([header, *keep])
        os.replace(tmp, path)
    except OSError:  # a full disk: the log stays as it was, and no temporary is left behind
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _step_of(cell: str) -> float:
    try:
        return float(cell)
    except ValueError:  # a garbled row (a hand edit, a torn write): dropped with the rows after the checkpoint
        return math.inf


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
