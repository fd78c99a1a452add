"""Design maps: symmetry planes and extrusion, so that the optimizer sees only the
reduced design variables.

A design map is the first stage of the design chain, x (n_reduced,) -> (n_cells,): every
cell takes the value of its representative, the cell it is mirrored onto by each
symmetry plane (the representative is on the lower side of the plane) and moved onto
the first layer along the extrusion axis. It is a linear filter whose weight matrix is
one 1 per row (rectangular), so it runs on every path as a CSR matrix; its chain rule
sums the gradient of every cell onto its representative. Thresholded designs are then
exactly symmetric and exactly constant along the extrusion direction: the model closes
the chain with :class:`OrbitAverage`, the mean over each representative's cells.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from femopt.filters.base import Filter
from femopt.filters.linear import LinearFilter
from femopt.filters.sparse_filter import SparseDensityFilter
from femopt.mesh.mesh import AXES
from femopt.plugins.registry import Options

TOLERANCE = 1e-6  # of the domain's size: how far a mirrored centroid may miss its cell


class SymmetryPlane(Options):
    axis: Literal["x", "y", "z"]
    """The plane's normal."""
    at: float | None = None
    """The plane's coordinate along ``axis``; default: the middle of the domain."""


class DesignMapOptions(Options):
    symmetry: list[SymmetryPlane] = Field(default_factory=list)
    """Symmetry planes (any number, distinct axes)."""
    extrude: Literal["x", "y", "z"] | None = None
    """A design constant along this axis (milling, casting)."""


class DesignMap(LinearFilter):
    """x (reduced) -> one value per cell through symmetry planes and extrusion."""

    name = "design_map"
    summary = "Symmetry planes and extrusion: the optimizer sees the reduced design"
    Options = DesignMapOptions
    design_map = True

    def __init__(self, options: DesignMapOptions, mesh):
        super().__init__(options, mesh)
        axes = [AXES[p.axis] for p in options.symmetry]
        if len(set(axes)) != len(axes):
            raise ValueError("symmetry: two planes with the same axis")
        if not axes and options.extrude is None:
            raise ValueError("a design map needs a symmetry plane or an extrusion axis")
        for a in axes + ([AXES[options.extrude]] if options.extrude else []):
            if a >= mesh.dim:
                raise ValueError(f"axis {'xyz'[a]!r} is not an axis of this {mesh.dim}D mesh")
        if options.extrude is not None and AXES[options.extrude] in axes:
            raise ValueError("a design extruded along an axis needs no symmetry plane "
                             "normal to it")
        self.representative = self._representatives(mesh, options)
        self.reduced, self.cell_to_reduced = np.unique(self.representative,
                                                       return_inverse=True)
        self.n_inputs = int(self.reduced.size)

    def _representatives(self, mesh, options: DesignMapOptions) -> np.ndarray:
        """Each cell's representative cell: its centroid mirrored onto the lower side of
        every plane and moved onto the first layer along the extrusion axis, matched to
        the cell there (a mesh that is not symmetric is refused, naming cells)."""
        c = mesh.centroids()
        lo, hi = mesh.bounds()
        target = c.copy()
        for plane in options.symmetry:
            a = AXES[plane.axis]
            at = 0.5 * (lo[a] + hi[a]) if plane.at is None else plane.at
            target[:, a] = np.where(c[:, a] > at, 2.0 * at - c[:, a], c[:, a])
        if options.extrude is not None:
            a = AXES[options.extrude]
            target[:, a] = c[:, a].min()  # the first layer's centroids
        from scipy.spatial import cKDTree

        size = float(np.max(hi - lo)) or 1.0
        dist, idx = cKDTree(c).query(target)
        bad = np.flatnonzero(dist > TOLERANCE * size)
        if bad.size:
            show = ", ".join(f"{int(i)} at {np.round(c[i], 6).tolist()}" for i in bad[:5])
            raise ValueError(f"the mesh is not symmetric for this design map: {bad.size} "
                             f"cell(s) have no mirror image (or no cell in the first layer "
                             f"along the extrusion), e.g. cell {show}")
        # a chain of mirrors ends on a cell that represents itself
        rep = idx
        for _ in range(4):
            rep = rep[rep]
        return rep

    def weights(self):
        n = self.mesh.n_cells
        h = sp.csr_matrix((np.ones(n), (np.arange(n), self.cell_to_reduced)),
                          shape=(n, self.n_inputs))
        return h, np.ones(n)


class OrbitAverage(Filter):
    """The last stage of a chain that starts with a design map: every cell takes the mean
    over the cells of its representative (its orbit under the map), y -> H (H^T y / n)
    with H the map's weights and n the orbit sizes. A density filter after the map keeps
    mirror symmetry but not extrusion near the domain's ends (its neighbourhood is cut
    there); this makes the physical design exactly what the map describes. The operator
    is symmetric, so the chain rule is the same product."""

    name = "orbit_average"
    summary = "(added after the filters when a design map is used)"
    linear = True

    def __init__(self, design_map: DesignMap, xp=np):
        super().__init__(None, design_map.mesh)
        self.design_map = design_map
        h, ones = design_map.weights()
        self.op = SparseDensityFilter(h, ones, xp)  # H and H^T on xp
        counts = np.bincount(design_map.cell_to_reduced, minlength=design_map.n_inputs)
        self.inv_counts = xp.asarray(1.0 / counts)

    def forward(self, x):
        return self.op.h @ ((self.op.ht @ x) * self.inv_counts)

    def backward(self, x, dy):
        return self.forward(dy)

    def device_twin(self, xp) -> "OrbitAverage":
        return OrbitAverage(self.design_map, xp)
