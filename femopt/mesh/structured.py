"""Structured grids of quad4 (2D) and hex8 (3D) cells with physical dimensions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from femopt.mesh.mesh import Mesh, NodeCoordinates, StructuredGrid

# Offsets of a cell's nodes in VTK order (counter-clockwise bottom face, then top face).
QUAD4_CORNERS = np.array([(0, 0), (1, 0), (1, 1), (0, 1)])
HEX8_CORNERS = np.array(
    [(0, 0, 0), (1, 0, 0), (1, 1, 0), (0, 1, 0), (0, 0, 1), (1, 0, 1), (1, 1, 1), (0, 1, 1)]
)


class GridMesh(Mesh):
    """A structured grid whose node coordinates and connectivity are arithmetic of the
    grid: built on first use of ``points`` or ``cells`` (then kept), and by rows
    (:meth:`point_rows`, :meth:`cell_rows`) without ever holding the whole arrays. The GPU
    grid path and the output writers use the rows, so a grid of 10^8 cells costs the host
    no coordinate or connectivity array (:attr:`coords` indexes the coordinates like
    ``points`` for surface loads); integrand functions over node regions still build the
    whole arrays."""

    def __init__(self, grid: StructuredGrid):
        self.grid = grid
        self.cell_type = "quad4" if len(grid.shape) == 2 else "hex8"
        self.node_sets, self.cell_sets, self.facet_sets = {}, {}, {}
        self._points: np.ndarray | None = None
        self._cells: np.ndarray | None = None

    @property
    def dim(self) -> int:
        return len(self.grid.shape)

    @property
    def n_nodes(self) -> int:
        return int(np.prod(self.grid.node_shape))

    @property
    def n_cells(self) -> int:
        return int(np.prod(self.grid.shape))

    @property
    def points(self) -> np.ndarray:
        if self._points is None:
            self._points = self.point_rows(0, self.n_nodes)
        return self._points

    @property
    def cells(self) -> np.ndarray:
        if self._cells is None:
            self._cells = self.cell_rows(0, self.n_cells)
        return self._cells

    @property
    def nodes_per_cell(self) -> int:
        return 2 ** self.dim

    @property
    def materialized(self) -> bool:
        """Whether the whole coordinate or connectivity array has been built."""
        return self._points is not None or self._cells is not None

    def node_coords(self, nodes: np.ndarray) -> np.ndarray:
        g = self.grid
        index = np.unravel_index(np.asarray(nodes, dtype=np.int64), g.node_shape[::-1])
        return np.stack([o + h * i for o, h, i in zip(g.origin, g.spacing, index[::-1])],
                        axis=-1)

    def cell_nodes(self, cells: np.ndarray) -> np.ndarray:
        g = self.grid
        index = np.unravel_index(np.asarray(cells, dtype=np.int64), g.shape[::-1])
        strides = np.cumprod((1,) + g.node_shape[:-1])
        base = sum(i * s for i, s in zip(index[::-1], strides))
        corners = QUAD4_CORNERS if self.dim == 2 else HEX8_CORNERS
        return base[..., None] + (corners @ strides).astype(np.int64)

    def point_rows(self, start: int, stop: int) -> np.ndarray:
        """Coordinates (stop - start, dim) of nodes start..stop-1 (x fastest)."""
        return self.node_coords(np.arange(start, stop, dtype=np.int64))

    def cell_rows(self, start: int, stop: int) -> np.ndarray:
        """Node indices (stop - start, 2^dim) of cells start..stop-1, VTK order."""
        return self.cell_nodes(np.arange(start, stop, dtype=np.int64))

    @property
    def coords(self) -> NodeCoordinates:
        return NodeCoordinates(self)

    def node_center(self) -> np.ndarray:
        g = self.grid
        return np.array([o + h * n / 2 for o, h, n in zip(g.origin, g.spacing, g.shape)])


def structured_grid(
    shape: Sequence[int], size: Sequence[float], origin: Sequence[float] | None = None
) -> Mesh:
    """A box of ``shape`` cells and physical ``size``; quad4 in 2D, hex8 in 3D."""
    shape = tuple(int(n) for n in shape)
    size = tuple(float(s) for s in size)
    dim = len(shape)
    if dim not in (2, 3) or len(size) != dim:
        raise ValueError("shape and size must both have 2 or 3 entries")
    origin = tuple(float(o) for o in (origin if origin is not None else (0.0,) * dim))
    spacing = tuple(s / n for s, n in zip(size, shape))
    return GridMesh(StructuredGrid(shape=shape, spacing=spacing, origin=origin))
