"""oemdm_spec: order-expressive masked diffusion (OeMDM) and learnable-order MDM (LoMDM).

- :mod:`oemdm_spec.reference` — the readable float64 specification (Pyro distributions, NELBOs, samplers).
- :mod:`oemdm_spec.symbolic` — sympy derivations of the identities the reference relies on.
- :mod:`oemdm_spec.fast` — Triton kernels, the model and the trainer (imports without pyro).
"""

__version__ = "0.1.0"
MASK_CONVENTION = "mask id m = V (one index past the real vocabulary)"
