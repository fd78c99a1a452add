"""Degrees of freedom on a structured grid of quad4 (2D) or hex8 (3D) cells.

Nodes are numbered x fastest, then y, then z; cells likewise; a node's ``k`` dofs are
consecutive (dof = node * k + component). A full dof vector therefore reshapes without a
copy to a C-ordered array of shape ``(nz + 1, ny + 1, nx + 1, k)`` (``(ny + 1, nx + 1, k)``
in 2D), and a per-cell array to ``(nz, ny, nx)``: the layout stencil kernels and geometric
multigrid work on.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from femopt.mesh.structured import HEX8_CORNERS, QUAD4_CORNERS


@dataclass(frozen=True)
class GridLayout:
    """Cells per axis (x, y[, z]) and dofs per node of a structured grid."""

    shape: tuple[int, ...]
    k: int

    def __post_init__(self) -> None:
        if len(self.shape) not in (2, 3) or min(self.shape) < 1 or self.k < 1:
            raise ValueError(f"a grid layout needs 2 or 3 positive cell counts and k >= 1, "
                             f"got shape {self.shape}, k {self.k}")

    @property
    def dim(self) -> int:
        return len(self.shape)

    @property
    def cell_type(self) -> str:
        return "quad4" if self.dim == 2 else "hex8"

    @property
    def node_shape(self) -> tuple[int, ...]:
        return tuple(n + 1 for n in self.shape)

    @property
    def n_cells(self) -> int:
        return int(np.prod(self.shape))

    @property
    def n_nodes(self) -> int:
        return int(np.prod(self.node_shape))

    @property
    def n_dofs(self) -> int:
        return self.n_nodes * self.k

    @property
    def corners(self) -> np.ndarray:
        """(2^dim, dim) node offsets of a cell's corners in VTK order."""
        return QUAD4_CORNERS if self.dim == 2 else HEX8_CORNERS

    @property
    def nd(self) -> int:
        """Dofs per cell."""
        return len(self.corners) * self.k

    def nodes(self, v: Any) -> Any:
        """View of a dof vector (n_dofs, ...) as (nz+1, ny+1, nx+1, k, ...)."""
        return v.reshape(self.node_shape[::-1] + (self.k,) + v.shape[1:])

    def cells(self, s: Any) -> Any:
        """View of a per-cell array (n_cells, ...) as (nz, ny, nx, ...)."""
        return s.reshape(self.shape[::-1] + s.shape[1:])

    @cached_property
    def corner_slices(self) -> tuple[tuple[slice, ...], ...]:
        """For each corner a, the slice of the node array (z, y, x order) holding corner a
        of every cell, in cell order."""
        return tuple(tuple(slice(int(o), int(o) + n) for o, n in zip(off[::-1], self.shape[::-1]))
                     for off in self.corners)

    def can_coarsen(self) -> bool:
        """Whether every axis has an even number (>= 2) of cells."""
        return all(n % 2 == 0 and n >= 2 for n in self.shape)

    def coarsened(self) -> GridLayout:
        return GridLayout(tuple(n // 2 for n in self.shape), self.k)

    def cell_dofs(self) -> np.ndarray:
        """(n_cells, nd) global dofs of each cell, node-major (as ``Physics.cell_dofs``)."""
        strides = np.cumprod((1,) + self.node_shape[:-1])
        idx = np.indices(self.shape[::-1]).reshape(self.dim, -1)[::-1].T
        nodes = (idx @ strides)[:, None] + self.corners @ strides
        return (nodes[:, :, None] * self.k + np.arange(self.k)).reshape(self.n_cells, -1)


def layout_of(mesh: Any, dofs_per_node: int) -> GridLayout:
    """The layout of a structured mesh (``mesh.grid`` set by the structured generator)."""
    grid = getattr(mesh, "grid", None)
    if grid is None:
        raise ValueError("a structured grid is needed (mesh type 'structured'); this mesh "
                         "has no grid metadata")
    return GridLayout(tuple(int(n) for n in grid.shape), int(dofs_per_node))
