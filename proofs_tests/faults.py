"""Fault injection for the reliability tests: run ``oemdm`` in a child process with faults switched on by env.

    python proofs_tests/faults.py train --steps 40 ...      # same arguments as `oemdm`

The trainer has no fault hooks of its own, so this wrapper patches it from outside, in the child only:

- ``OEMDM_FAULT_STEP_SLEEP=0.02`` — sleep this long at the start of every training step. It changes no
  number (the step's noise is a pure function of (seed, step)); it only widens the window in which the
  parent's SIGKILL / SIGTERM lands mid-run instead of after the run has finished.
- ``OEMDM_FAULT_KILL_IN_SAVE=N:WHERE`` — SIGKILL this process during the N-th checkpoint write (1-based).
  WHERE is ``model-half`` (half of ``model.safetensors`` written), ``optim`` (model and EMA written, the
  optimiser file not), ``before-rename`` (every temp file written, the step directory not renamed) or
  ``before-latest`` (step directory renamed, ``latest`` not yet replaced).
- ``OEMDM_FAULT_NAN_STEPS=S,T,...`` or ``S-E`` — multiply the loss of those 0-based steps by NaN, so the
  loss and every gradient are non-finite at exactly those steps.

Why a wrapper instead of timing: a tiny checkpoint is written in about a millisecond, so a kill from the
parent essentially never lands inside it; this lands there every time, at a chosen point.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _parse_steps(spec: str) -> set[int]:
    out: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            out.update(range(int(lo), int(hi) + 1))
        else:
            out.add(int(part))
    return out


def install() -> None:
    """Patch the trainer modules according to the OEMDM_FAULT_* variables of this process."""
    import oemdm_spec.fast.checkpoint as ck
    import oemdm_spec.fast.trainer as tr

    current = {"step": -1}
    sleep_s = float(os.environ.get("OEMDM_FAULT_STEP_SLEEP", "0") or 0)
    real_noise = tr.draw_step_noise

    def noise(seed: int, step: int, **kw: Any):
        current["step"] = step  # the loop draws the step's noise first: this is the step being run
        if sleep_s > 0:
            time.sleep(sleep_s)
        return real_noise(seed, step, **kw)

    tr.draw_step_noise = noise

    nan_steps = _parse_steps(os.environ.get("OEMDM_FAULT_NAN_STEPS", ""))
    if nan_steps:
        real_cls = tr.LossModule

        class NaNLoss(real_cls):  # type: ignore[misc, valid-type]
            def forward(self, *args: Any, **kw: Any):
                out = super().forward(*args, **kw)
                if current["step"] in nan_steps:
                    # NaN·loss: the loss and, through the chain rule, every gradient become NaN
                    out.loss = out.loss * float("nan")
                return out

        tr.LossModule = NaNLoss

    spec = os.environ.get("OEMDM_FAULT_KILL_IN_SAVE", "")
    if spec:
        nth_s, where = spec.split(":", 1)
        nth = int(nth_s)
        calls = {"save": 0, "file": 0}
        real_save_ckpt = ck.save_checkpoint
        real_save_file = ck.save_file
        real_replace = os.replace

        def save_file(tensors: dict, path: str, *a: Any, **kw: Any) -> None:
            calls["file"] += 1
            if calls["save"] == nth:
                name = os.path.basename(path)
                if where == "model-half" and name == "model.safetensors":
                    from safetensors.torch import save

                    data = save(tensors)
                    with open(path, "wb") as f:
                        f.write(data[: len(data) // 2])
                    _die()
                if where == "optim" and name == "optim.safetensors":
                    _die()
            real_save_file(tensors, path, *a, **kw)

        def replace(src: Any, dst: Any) -> None:
            if calls["save"] == nth:
                name = os.path.basename(str(dst))
                if where == "before-rename" and name.startswith("step_"):
                    _die()
                if where == "before-latest" and name == "latest":
                    _die()
            real_replace(src, dst)

        def save_checkpoint(*a: Any, **kw: Any):
            calls["save"] += 1
            return real_save_ckpt(*a, **kw)

        ck.save_file = save_file
        ck.os.replace = replace  # ck imports os as a module: only the child process is affected
        ck.save_checkpoint = save_checkpoint
        tr.save_checkpoint = save_checkpoint


def main() -> int:
    install()
    from oemdm_spec.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
