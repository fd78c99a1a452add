"""Mean temperature of a region (heat conduction or convection-diffusion).

J = sum_c w_c (1/n) sum_{i in region} T_c,i: linear in T, so its adjoint solves with K^T,
which differs from K under convection.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from femopt.mesh.regions import Region
from femopt.objectives.base import Function, State, case_weights, nodal_functional
from femopt.objectives.linear_form import LinearForm
from femopt.plugins.registry import Options


class MeanTemperatureOptions(Options):
    region: Region | None = None
    """Nodes over which the temperature is averaged (default: every node)."""
    case: str | None = None
    """Only this load case (by name); default: all cases with their weights."""


class MeanTemperature(Function):
    """sum_c w_c (1/n) sum_{i in region} T_c,i."""

    name = "mean_temperature"
    summary = "Mean temperature of a region (heat_conduction, convection_diffusion)"
    Options = MeanTemperatureOptions
    label = "T_mean"

    def __init__(self, options: MeanTemperatureOptions, model):
        super().__init__(options, model)
        if model.physics.field_name != "temperature":
            raise ValueError(f"{self.name} needs a heat physics such as convection_diffusion; "
                             f"this problem's physics is {model.physics.name!r}")
        self.case_w = case_weights(model, options.case)
        self.functional = nodal_functional(model, options.region, np.ones(1), "temperature")

    @cached_property
    def a(self) -> np.ndarray:
        """The functional as a full dof vector, built on first use (the paths on a grid
        take :attr:`functional`, its nonzeros)."""
        return self.functional.dense()

    def value(self, state: State) -> float:
        return float(self.case_w @ (state.u @ self.a))

    def linear_form(self) -> LinearForm:
        return LinearForm(functionals=[(self.functional,
                                        np.asarray(self.case_w, dtype=np.float64))])

    def partial_u(self, state: State):
        return self.case_w[:, None] * self.a[None, :]
