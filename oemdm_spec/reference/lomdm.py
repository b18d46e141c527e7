r"""LoMDM, learning the generation order jointly with the denoiser (spec §3): the public names in one place.

This module only re-exports; each concept lives in its own module:

- :mod:`.exponents` — ``ORDER_PARAMS``, :func:`normsig`, :func:`exponent` (NormSig or log-space w),
  :func:`exponent_range`, :func:`check_exponent_constants`;
- :mod:`.networks` — :class:`LoMDMConfig`, :class:`TransformerLayer`, :class:`Backbone`,
  :class:`SchedulerHead`, :class:`LoMDM`;
- :mod:`.time_densities` — :func:`stratified`, :class:`ClampedUniformTime`, :class:`LogTimeMixture`;
- :mod:`.objective` — :func:`forward_log_prob`, :func:`sample_masks`, :func:`position_terms`,
  :func:`rloo_surrogate`, :class:`LoMDMLoss`, :func:`lomdm_loss`, :func:`exact_objective_at_t`;
- :mod:`.sampling` — :func:`lomdm_sample` (here also under its old name ``sample``), beside the generic
  ancestral and first-hitting samplers.

Names follow the fast path: ``valid`` (True at real, non-padding positions), ``order_param``, ``d_model``,
``n_layer``, ``n_head``.
"""

from __future__ import annotations

from .exponents import ORDER_PARAMS, check_exponent_constants, exponent, exponent_range, normsig
from .networks import Backbone, LoMDM, LoMDMConfig, SchedulerHead, TransformerLayer
from .objective import (
    LoMDMLoss,
    exact_objective_at_t,
    forward_log_prob,
    lomdm_loss,
    position_terms,
    rloo_surrogate,
    sample_masks,
)
from .sampling import lomdm_sample
from .time_densities import ClampedUniformTime, LogTimeMixture, stratified

#: the order sampler under the name it had when everything lived in this module
sample = lomdm_sample

__all__ = [
    "ORDER_PARAMS",
    "normsig",
    "exponent",
    "exponent_range",
    "check_exponent_constants",
    "LoMDMConfig",
    "TransformerLayer",
    "Backbone",
    "SchedulerHead",
    "LoMDM",
    "stratified",
    "ClampedUniformTime",
    "LogTimeMixture",
    "forward_log_prob",
    "sample_masks",
    "position_terms",
    "rloo_surrogate",
    "LoMDMLoss",
    "lomdm_loss",
    "exact_objective_at_t",
    "lomdm_sample",
    "sample",
]
