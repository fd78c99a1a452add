"""Sensitivity and density filters over a radius (physical length units)."""

from __future__ import annotations

from functools import cached_property

import numpy as np
from pydantic import Field

from femopt.filters.base import Filter, radius_weights
from femopt.plugins.registry import Options


class RadiusOptions(Options):
    radius: float = Field(gt=0)
    """Filter radius in the mesh's length unit; must exceed the smallest cell size."""


class _RadiusFilter(Filter):
    Options = RadiusOptions

    def __init__(self, options: RadiusOptions, mesh):
        super().__init__(options, mesh)
        h = mesh.min_cell_size()
        if options.radius <= h:
            raise ValueError(f"radius {options.radius:g} is not larger than the smallest cell "
                             f"({h:g}): the filter would do nothing")

    # The weight matrix is built on first use: a model on the GPU filters with a stencil
    # and never needs it (at tens of millions of cells it would take gigabytes).
    @cached_property
    def _weights(self):
        return radius_weights(self.mesh, self.options.radius)

    @property
    def H(self):
        return self._weights[0]

    @property
    def Hs(self):
        return self._weights[1]

    @cached_property
    def HT(self):
        """H^T, for the density filter's chain rule (the sensitivity filter has none)."""
        return self.H.T.tocsr()


class DensityFilter(_RadiusFilter):
    """rho_i = sum_j H_ij x_j / sum_j H_ij, with its exact chain rule."""

    name = "density"
    summary = "Density filter (weighted average over a radius), exact chain rule"

    def forward(self, x):
        return (self.H @ x) / self.Hs

    def backward(self, x, dy):
        return self.HT @ (dy / self.Hs)


class SensitivityFilter(_RadiusFilter):
    """Heuristic filter of the objective gradient (Sigmund 1997):
    df_i <- sum_j H_ij x_j df_j / (max(1e-3, x_i) sum_j H_ij)."""

    name = "sensitivity"
    summary = "Sensitivity filter of the objective gradient (heuristic)"
    heuristic = True

    def modify_objective_gradient(self, x, df):
        return (self.H @ (x * df)) / self.Hs / np.maximum(1e-3, x)
