"""Design parametrization: material interpolation (SIMP, RAMP) and passive regions."""
