"""sympy derivations of the identities the reference relies on (spec §1–§3).

Each module is named after a concept and each function returns the sympy expression whose reduction to 0
(or whose limit) is the proof of one spec claim; ``proofs_tests/test_symbolic_*.py`` and the pages under
``docs/theory/`` run them.

- :mod:`.schedules`  — schedules as sympy expressions (MDLM, polynomial, cosine, ε-window ARM/order/block),
  lambdified to the torch ``Schedule`` interface;
- :mod:`.kl`         — posterior, reverse-step KL, its dt → 0 limit, the generalized KL of jump rates;
- :mod:`.rates`      — velocities, L_velocity ≥ 0, Bregman form, posterior-mean minimiser;
- :mod:`.riemann`    — the discrete bound as a Riemann sum, refinement and its counterexamples;
- :mod:`.nelbo`      — closed-form NELBOs for α̂ = α and a time-agnostic denoiser; AR, MDLM, BD3LM formulas;
- :mod:`.order`      — order semantics of polynomial schedules;
- :mod:`.invariance` — which schedule changes leave the bound unchanged;
- :mod:`.limits`     — ARM window bounds with an explicit O(ε) constant, the block change of variables;
- :mod:`.genmd4`, :mod:`.lomdm` — GenMD4 and LoMDM as special cases;
- :mod:`.independent` — the same formulas fed with a concrete denoiser, for the numeric theorem checks.
"""
