"""The reference specification of OeMDM / LoMDM: one equation, one function (spec: shared/spec/oemdm-math.md)."""
