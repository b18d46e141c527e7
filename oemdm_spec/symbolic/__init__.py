"""sympy derivations of the identities the reference relies on."""
