"""The reference specification of OeMDM / LoMDM: one equation, one function, float64.

Spec: shared/spec/oemdm-math.md. Modules by concept:

- ``schedules`` (α per position, in t and in log-time), ``terms`` (per-position integrands), ``elbo`` (the
  NELBOs), ``exact`` (−log p_T by enumeration), ``distributions`` (Pyro), ``sampling`` (ancestral,
  first-hitting, and LoMDM's ``lomdm_sample``), ``denoisers``;
- LoMDM: ``exponents`` (w from head scores), ``networks`` (backbone, heads, ``LoMDM``), ``time_densities``,
  ``objective`` (the loss and its RLOO estimator); ``lomdm`` re-exports these;
- ``tasks``, ``order_viz``, ``lomdm_demo``, ``bounds_demo``; ``_common`` holds the checks they share.
"""
