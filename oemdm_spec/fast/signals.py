"""Stopping safely: SIGTERM / SIGINT ask the training loop to stop after the current step."""

from __future__ import annotations

import signal
import threading
from typing import Any

import torch


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

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else "signal"

    def should_stop(self, dist_enabled: bool, device: torch.device) -> bool:
        """Under DDP every rank must leave the loop at the same step (a rank that stops alone would hang the
        others in the next all-reduce), so the flag is max-reduced across ranks."""
        flag = self.received is not None
        if dist_enabled:
            f = torch.tensor([1.0 if flag else 0.0], device=device)
            torch.distributed.all_reduce(f, op=torch.distributed.ReduceOp.MAX)
            flag = bool(f.item() > 0)
        return flag
