"""Degrees of freedom on a structured grid of quad4 (2D) or hex8 (3D) cells.

Nodes are numbered x fastest, then y, then z; cells likewise. femopt numbers dofs node by
node (dof = node * k + component); the grid kernels and geometric multigrid use the
component-major "grid layout" instead (index = component * n_nodes + node), so that a
vector reshapes without a copy to ``(k, nz + 1, ny + 1, nx + 1)`` (``(k, ny + 1, nx + 1)``
in 2D) and every component is a contiguous array: the 2^dim corner slices of a cell array
are then runs of contiguous x, for NumPy copies and for coalesced GPU loads alike.
:meth:`GridLayout.from_dofs` and :meth:`GridLayout.to_dofs` convert.
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
        """View of a grid-layout vector (n_dofs,) as (k, nz+1, ny+1, nx+1)."""
        return v.reshape((self.k,) + self.node_shape[::-1])

    def from_dofs(self, v: Any) -> Any:
        """Grid-layout copy of a vector in femopt's node-major dof numbering."""
        return v.reshape(self.n_nodes, self.k).T.reshape(-1).copy()

    def to_dofs(self, v: Any) -> Any:
        """Node-major copy of a grid-layout vector."""
        return v.reshape(self.k, self.n_nodes).T.reshape(-1).copy()

    def grid_index(self, dofs: Any) -> Any:
        """Grid-layout positions of node-major dof numbers."""
        return (dofs % self.k) * self.n_nodes + dofs // self.k

    @cached_property
    def corner_slices(self) -> tuple[tuple[slice, ...], ...]:
        """For each corner a, the slice of a node array (z, y, x), component axis
        excluded, holding corner a of every cell, in cell order."""
        return tuple(tuple(slice(int(o), int(o) + n) for o, n in zip(off[::-1], self.shape[::-1]))
                     for off in self.corners)

    def can_coarsen(self) -> bool:
        """Whether every axis has an even number (>= 2) of cells."""
        return all(n % 2 == 0 and n >= 2 for n in self.shape)

    def coarsened(self) -> GridLayout:
        return GridLayout(tuple(n // 2 for n in self.shape), self.k)

    def with_layers(self, n_layers: int) -> GridLayout:
        """This grid cut to ``n_layers`` cell layers of its slowest axis (a slab, a
        chunk)."""
        return GridLayout(tuple(self.shape[:-1]) + (n_layers,), self.k)

    def cell_nodes(self) -> np.ndarray:
        """(n_cells, 2^dim) node numbers of each cell's corners."""
        strides = np.cumprod((1,) + self.node_shape[:-1])
        idx = np.indices(self.shape[::-1]).reshape(self.dim, -1)[::-1].T
        return (idx @ strides)[:, None] + self.corners @ strides

    def cell_dofs(self) -> np.ndarray:
        """(n_cells, nd) node-major dofs of each cell (as ``Physics.cell_dofs``); local dof
        a * k + c is component c of corner a."""
        nodes = self.cell_nodes()
        return (nodes[:, :, None] * self.k + np.arange(self.k)).reshape(self.n_cells, -1)

    def cell_grid_dofs(self) -> np.ndarray:
        """(n_cells, nd) grid-layout indices of each cell's dofs, same local order."""
        nodes = self.cell_nodes()
        return (nodes[:, :, None] + np.arange(self.k) * self.n_nodes).reshape(self.n_cells, -1)


def layout_of(mesh: Any, dofs_per_node: int) -> GridLayout:
    """The layout of a structured mesh (``mesh.grid`` set by the structured generator)."""
    grid = getattr(mesh, "grid", None)
    if grid is None:
        raise ValueError("a structured grid is needed (mesh type 'structured'); this mesh "
                         "has no grid metadata")
    return GridLayout(tuple(int(n) for n in grid.shape), int(dofs_per_node))
