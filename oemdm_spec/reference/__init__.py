"""The reference specification of OeMDM / LoMDM: one equation, one function.

Spec: shared/spec/oemdm-math.md.
"""
