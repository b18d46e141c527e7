"""Choosing between the Triton kernels and their pure-PyTorch fallbacks.

Precedence, highest first:

1. an explicit ``backend="triton"`` or ``backend="torch"`` argument;
2. the environment variable ``OEMDM_KERNEL_BACKEND`` (``auto`` | ``triton`` | ``torch``), read at every call;
3. ``auto``: Triton when it can run on the tensor's device, else PyTorch.

Triton "can run" on CUDA tensors when triton imports, and on CPU tensors only when the Triton interpreter was
switched on (``TRITON_INTERPRET=1``) **before** the kernels were defined, i.e. before this package was first
imported: ``@triton.jit`` reads the variable at decoration time, so flipping it later has no effect.
"""

from __future__ import annotations

import os

import torch

__all__ = ["BACKENDS", "ENV_VAR", "TRITON_AVAILABLE", "TRITON_INTERPRETED", "resolve_backend"]

BACKENDS = ("auto", "triton", "torch")
ENV_VAR = "OEMDM_KERNEL_BACKEND"

try:  # triton is an optional dependency (extra "gpu"); the fallbacks never need it.
    import triton  # noqa: F401

    TRITON_AVAILABLE = True
except ImportError:  # pragma: no cover - depends on the installation
    TRITON_AVAILABLE = False

# Frozen at import: the kernels in _triton.py are decorated right after this module is imported.
TRITON_INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def triton_runs_on(device: torch.device) -> bool:
    """Whether the Triton kernels of this package can launch on tensors living on ``device``."""
    if not TRITON_AVAILABLE:
        return False
    if TRITON_INTERPRETED:
        return device.type == "cpu"
    return device.type == "cuda"


def resolve_backend(backend: str, device: torch.device, *, fn: str) -> str:
    """Return ``"triton"`` or ``"torch"`` for a call of ``fn`` on ``device``.

    Raises ValueError for an unknown backend name, or when Triton is requested explicitly but cannot run on
    ``device`` (silently falling back would hide a misconfigured GPU run).
    """
    if backend not in BACKENDS:
        raise ValueError(f"{fn}: backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        backend = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
        if backend not in BACKENDS:
            raise ValueError(f"{fn}: environment variable {ENV_VAR} must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "triton" if triton_runs_on(device) else "torch"
    if backend == "triton" and not triton_runs_on(device):
        why = (
            "triton is not installed"
            if not TRITON_AVAILABLE
            else f"tensors are on {device.type} and TRITON_INTERPRET={int(TRITON_INTERPRETED)} at import"
        )
        raise ValueError(f"{fn}: backend='triton' cannot run here ({why})")
    return backend
