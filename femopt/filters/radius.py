"""Sensitivity and density filters over a radius (physical length units)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from femopt.backend import array_namespace
from femopt.filters.base import radius_weights
from femopt.filters.linear import LinearFilter
from femopt.plugins.registry import Options


class RadiusOptions(Options):
    radius: float = Field(gt=0)
    """Filter radius in the mesh's length unit; must exceed the smallest cell size."""


class _RadiusFilter(LinearFilter):
    """Cone weights H_ij = max(0, r - |c_i - c_j|) between cell centroids."""

    Options = RadiusOptions

    def __init__(self, options: RadiusOptions, mesh):
        super().__init__(options, mesh)
        h = mesh.min_cell_size()
        if options.radius <= h:
            raise ValueError(f"radius {options.radius:g} is not larger than the smallest cell "
                             f"({h:g}): the filter would do nothing")

    def weights(self):
        return radius_weights(self.mesh, self.options.radius)

    def slab_twin(self, slab: Any, spacing: tuple[float, ...]) -> "_RadiusFilter":
        """A copy whose weights are the grid stencil on a rank's slab (ghost layers as wide
        as the radius reaches)."""
        import copy

        from femopt.parallel.stencil import SlabStencil

        twin = copy.copy(self)
        twin.__dict__["op"] = SlabStencil(slab, spacing, self.options.radius)
        return twin

    def grid_stencil(self, xp: Any):
        from femopt.filters.grid_filter import GridDensityFilter

        grid = self.mesh.grid
        return GridDensityFilter(grid.shape, grid.spacing, self.options.radius, xp)


class DensityFilter(_RadiusFilter):
    """rho_i = sum_j H_ij x_j / sum_j H_ij, with its exact chain rule."""

    name = "density"
    summary = "Density filter (weighted average over a radius), exact chain rule"


class SensitivityFilter(_RadiusFilter):
    """Heuristic filter of the objective gradient (Sigmund 1997):
    df_i <- sum_j H_ij x_j df_j / (max(1e-3, x_i) sum_j H_ij)."""

    name = "sensitivity"
    summary = "Sensitivity filter of the objective gradient (heuristic)"
    heuristic = True

    def forward(self, x):
        return x

    def backward(self, x, dy):
        return dy

    def modify_objective_gradient(self, x, df):
        xp = array_namespace(x)
        return self.op.apply(x * df) / self.op.hs / xp.maximum(1e-3, x)
