"""The top3d cantilever built directly in the grid layout, for tests and benchmarks.

A structured box of unit cells clamped on x = 0 with unit loads in -y at every node of the
bottom edge of the free end (x = nx, y = 0), as in ``problems/cantilever_3d.yaml`` and the
169-line top3d code; the 2D version loads the node (nx, 0). Everything is produced in the
component-major grid layout (:mod:`femopt.assembly.grid_layout`) without building a
:class:`~femopt.mesh.mesh.Mesh`, whose node and cell arrays alone would not fit next to a
100-million-dof problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from femopt.assembly.grid_layout import GridLayout
from femopt.mesh.mesh import Mesh
from femopt.mesh.structured import HEX8_CORNERS, QUAD4_CORNERS
from femopt.physics.elasticity import ElasticityOptions, LinearElasticity


@dataclass
class GridCantilever:
    layout: GridLayout
    ke: np.ndarray  # (nd, nd) element matrix of a unit cell, E = 1
    fixed: Any  # bool (n_dofs,), grid layout
    load: Any  # float64 (n_dofs,), grid layout


def unit_cell_matrix(dim: int, nu: float = 0.3) -> np.ndarray:
    """Elasticity element matrix of the unit square/cube (E = 1, thickness 1)."""
    corners = (QUAD4_CORNERS if dim == 2 else HEX8_CORNERS).astype(float)
    cell = Mesh(points=corners, cells=np.arange(len(corners))[None, :],
                cell_type="quad4" if dim == 2 else "hex8")
    physics = LinearElasticity(ElasticityOptions(nu=nu), cell)
    return physics.element_matrices_at(corners[None])[0]


def grid_cantilever(shape: tuple[int, ...], xp: Any = np) -> GridCantilever:
    """The cantilever of ``shape`` cells (x, y[, z]) on the array module ``xp``."""
    layout = GridLayout(tuple(int(n) for n in shape), len(shape))
    dim = layout.dim
    fixed = xp.zeros(layout.nodes(xp.zeros(layout.n_dofs, dtype=bool)).shape, dtype=bool)
    fixed[(slice(None),) * (dim) + (0,)] = True  # every component of the nodes at x = 0
    load = xp.zeros(fixed.shape, dtype=xp.float64)
    # component y (1) of the nodes x = nx, y = 0 (all z)
    load[(1,) + (slice(None),) * (dim - 2) + (0, layout.shape[0])] = -1.0
    return GridCantilever(layout, unit_cell_matrix(dim), fixed.reshape(-1), load.reshape(-1))


def truss_design(shape: tuple[int, ...], xp: Any = np, half: float | None = None) -> Any:
    """A truss-like SIMP design (flanges and diagonals attached to x = 0, solid 1 and void
    0 blurred by a density filter of radius 1.5 cells like an optimized design's): a
    deterministic density field for solver tests, cell order. ``half`` is a member's
    half-width as a fraction of the height (default: three cells thick at least); a fixed
    ``half`` keeps the design geometrically similar under refinement."""
    from femopt.filters.grid_filter import GridDensityFilter

    nx, ny = shape[0], shape[1]
    x = (np.arange(nx) + 0.5) / nx
    y = (np.arange(ny) + 0.5) / ny
    yy, xx = np.meshgrid(y, x, indexing="ij")  # (ny, nx)
    if half is None:
        half = max(0.08, 1.5 / ny)
    t = (xx * 4.0) % 1.0  # four bays
    solid = (yy < 2 * half) | (yy > 1 - 2 * half) | (np.abs(t - yy) < half)
    solid |= (np.abs(t - (1 - yy)) < half) | (xx < 1.0 / nx)
    rho = solid.astype(float)
    if len(shape) == 3:
        rho = np.broadcast_to(rho, (shape[2], ny, nx))
    rho = np.ascontiguousarray(rho).reshape(-1)
    rho = GridDensityFilter(tuple(shape), (1.0,) * len(shape), 1.5).forward(rho)
    return xp.asarray(rho)
