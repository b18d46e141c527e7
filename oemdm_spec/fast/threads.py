"""How many CPU threads a run should use: the cores no other process is using."""

from __future__ import annotations

import os
import time

import torch


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


def cpu_threads(requested: int) -> int:
    """``requested`` if > 0; else the cores nobody else is using (at least 1). Intra-op threads that have to
    share oversubscribed cores spin and wait: measured 2x slower than one thread on a busy 2-core machine."""
    if requested > 0:
        return requested
    n = os.cpu_count() or 1
    busy = busy_cores()
    if busy is None:  # not Linux: fall back to the load average
        busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, min(torch.get_num_threads(), n - int(round(busy))))
