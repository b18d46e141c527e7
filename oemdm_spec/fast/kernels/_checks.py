"""Input validation shared by the kernels: ValueError naming the argument and the offending value.

Value checks (ranges, signs) read the device once per call: all the reductions are stacked into one small
tensor and copied to the host together, so a GPU call pays one synchronisation, not one per check.
"""

from __future__ import annotations

import torch
from torch import Tensor

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def check_shape(fn: str, name: str, value: Tensor, shape: tuple[int, ...]) -> None:
    if not isinstance(value, Tensor):
        raise ValueError(f"{fn}: {name} must be a torch.Tensor, got {type(value).__name__}")
    if tuple(value.shape) != tuple(shape):
        raise ValueError(f"{fn}: {name} must have shape {tuple(shape)}, got {tuple(value.shape)}")


def check_float(fn: str, name: str, value: Tensor) -> None:
    if value.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{fn}: {name} must be float32, bfloat16 or float16, got {value.dtype}")


def check_same_device(fn: str, **tensors: Tensor | None) -> None:
    devices = {name: t.device for name, t in tensors.items() if t is not None}
    if len(set(devices.values())) > 1:
        raise ValueError(f"{fn}: all tensors must be on one device, got {devices}")


def check_int(fn: str, name: str, value: Tensor) -> None:
    if value.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise ValueError(f"{fn}: {name} must be an integer tensor, got {value.dtype}")


def check_values(fn: str, checks: list[tuple[str, Tensor, float, float, str]]) -> None:
    """Each check is (name, tensor, low, high, description); values must lie in [low, high] and not be NaN.

    ``high`` may be ``float('inf')``; integer tensors are compared exactly (they are cast to float64, exact for
    any index below 2**53).
    """
    live = [(n, t, lo, hi, d) for n, t, lo, hi, d in checks if t.numel() > 0]
    if not live:
        return
    stats = torch.stack(
        [
            torch.stack([t.detach().double().min(), t.detach().double().max(), t.detach().isnan().any().double()])
            for _, t, _, _, _ in live
        ]
    ).tolist()
    for (name, _, lo, hi, desc), (vmin, vmax, has_nan) in zip(live, stats, strict=True):
        if has_nan:
            raise ValueError(f"{fn}: {name} contains NaN")
        if vmin < lo or vmax > hi:
            raise ValueError(f"{fn}: {name} must be {desc}, got values in [{vmin:g}, {vmax:g}]")
