"""Fast-path kernels: Triton with a pure-PyTorch fallback of the same signature.

Public API (the trainer codes against these names):

- :func:`oemdm_row_loss` — fused OeMDM loss over (N, V) logits: loss, logit gradient in one pass.
- :func:`linear_oemdm_row_loss` — the same loss of ``hidden @ weight.T + bias``, chunked, never N×V.
- :func:`forward_mask` — K forward masks with P(masked) = t^w and log q(z | x), in one pass.

Backend choice: ``backend="auto" | "triton" | "torch"`` on each call, else the env var
``OEMDM_KERNEL_BACKEND``, else auto (Triton on CUDA, or on CPU under ``TRITON_INTERPRET=1`` set before
this package is imported; PyTorch otherwise). See ``docs/performance.md``.
"""

from ._backend import BACKENDS, ENV_VAR, TRITON_AVAILABLE, TRITON_INTERPRETED, resolve_backend
from .linear import default_chunk_size, linear_oemdm_row_loss
from .loss import oemdm_row_loss
from .masking import forward_mask

__all__ = [
    "BACKENDS",
    "ENV_VAR",
    "TRITON_AVAILABLE",
    "TRITON_INTERPRETED",
    "default_chunk_size",
    "forward_mask",
    "linear_oemdm_row_loss",
    "oemdm_row_loss",
    "resolve_backend",
]
