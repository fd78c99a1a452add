"""Sensitivity and density filters over a radius (physical length units)."""

from __future__ import annotations

from typing import Any

import numpy as np
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
    symmetric_by_columns = True  # H_ij = w_ij v_j, w_ij = w_ji, w_jj = r

    def __init__(self, options: RadiusOptions, mesh):
        super().__init__(options, mesh)
        h = mesh.min_cell_size()
        if options.radius <= h:
            raise ValueError(f"radius {options.radius:g} is not larger than the smallest cell "
                             f"({h:g}): the filter would do nothing")

    def weights(self):
        return radius_weights(self.mesh, self.options.radius)


    def device_twin(self, xp: Any) -> "_RadiusFilter":
        """On a mesh from a file, the weights found on ``xp`` by cell hashing
        (:mod:`femopt.filters.cell_hash`; the host's KD-tree is not run); on a grid, the
        stencil."""
        if self.mesh.grid is not None or "op" in self.__dict__:
            return super().device_twin(xp)
        import copy

        from femopt.filters.cell_hash import cell_hash_weights, centroids_and_volumes
        from femopt.filters.sparse_filter import SparseDensityFilter

        centroids, volumes = centroids_and_volumes(self.mesh, xp)
        weights = cell_hash_weights(centroids, volumes, self.options.radius, xp)
        twin = copy.copy(self)
        twin.__dict__["op"] = SparseDensityFilter.from_csr(
            *weights, xp, transpose=not self.heuristic, by_rows=self.symmetric_by_columns)
        return twin

    def weights_nnz(self) -> int:
        """The number of weights, estimated without finding them on a mesh from a file:
        each cell's neighbours fill the ball of radius r at the mesh's mean cell volume
        (a sample of cells; boundary cells have fewer, so this is on the high side)."""
        mesh = self.mesh
        if mesh.grid is not None or "op" in self.__dict__:
            return super().weights_nnz()
        import math

        from femopt.assembly.elements import get_element, physical_gradients

        n = mesh.n_cells
        sample = np.arange(0, n, max(1, n // 4096))
        _, wdet = physical_gradients(get_element(mesh.cell_type),
                                     mesh.points[mesh.cells[sample]])
        mean_volume = float(wdet.sum(axis=1).mean())
        r = self.options.radius
        ball = math.pi * r * r if mesh.dim == 2 else 4.0 / 3.0 * math.pi * r**3
        return int(n * min(n, math.ceil(ball / mean_volume)))

    def device_scratch_bytes(self) -> int:
        """Device memory the cell hashing of :meth:`device_twin` holds while it runs (0 on
        a grid): for a batch of cells, its (cell, bin) pairs (5^dim bins, some 4 arrays
        of dim values) and its candidates (about 2 per neighbour on the 100k-tet bracket;
        counted as 3, at some 80 bytes each: pair, cells, distances, weights)."""
        mesh = self.mesh
        if mesh.grid is not None:
            return 0
        from femopt.filters.cell_hash import BATCH, SPLIT

        batch = min(BATCH, mesh.n_cells)
        pairs = batch * (2 * SPLIT + 1) ** mesh.dim * mesh.dim * 8 * 4
        per_cell = self.weights_nnz() / max(mesh.n_cells, 1)
        return int(pairs + batch * 3 * per_cell * 80)

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
        # (H (x df) / Hs) / max(1e-3, x), divided in place: one temporary at a time
        # beside the product (a grid's Hs is made when asked for)
        out = self.op.apply(x * df)
        hs = self.op.hs
        out /= hs
        del hs
        out /= xp.maximum(1e-3, x)
        return out
