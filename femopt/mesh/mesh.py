"""The mesh container shared by every physics and solver."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

AXES = {"x": 0, "y": 1, "z": 2}  # axis names of problem files
ROWS = 1 << 20  # nodes or cells per chunk where a pass over a large mesh goes by rows


def row_chunks(n: int, size: int | None = None):
    """(start, stop) ranges covering 0..n-1 in chunks of ``size`` (default :data:`ROWS`)."""
    size = size or ROWS
    for start in range(0, n, size):
        yield start, min(n, start + size)

# Edges of each cell type as pairs of local node indices (VTK node order).
CELL_EDGES = {
    "tri3": [(0, 1), (1, 2), (2, 0)],
    "quad4": [(0, 1), (1, 2), (2, 3), (3, 0)],
    "tet4": [(0, 1), (1, 2), (2, 0), (0, 3), (1, 3), (2, 3)],
    "hex8": [(0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4),
             (0, 4), (1, 5), (2, 6), (3, 7)],
}


@dataclass(frozen=True)
class StructuredGrid:
    """Metadata of a structured grid, kept for stencil kernels and geometric multigrid.

    Nodes are numbered x fastest, then y, then z; cells likewise.
    """

    shape: tuple[int, ...]  # cells per axis
    spacing: tuple[float, ...]  # cell size per axis
    origin: tuple[float, ...]

    @property
    def node_shape(self) -> tuple[int, ...]:
        return tuple(n + 1 for n in self.shape)


@dataclass
class Mesh:
    """Nodes, cells of one cell type, and named node/cell sets.

    Attributes:
        points: (n_nodes, dim) coordinates.
        cells: (n_cells, nodes_per_cell) node indices, VTK node order.
        cell_type: "quad4" or "hex8" (tri3/tet4 come with unstructured meshes).
        grid: structured-grid metadata, or None for an unstructured mesh.
        node_sets / cell_sets: named groups (from mesh files).
        facet_sets: named groups of boundary facets (from mesh files: lines of a 2D
            mesh, triangles or quadrangles of a 3D one), (n, nodes_per_facet) node indices.
    """

    points: np.ndarray
    cells: np.ndarray
    cell_type: str
    grid: StructuredGrid | None = None
    node_sets: dict[str, np.ndarray] = field(default_factory=dict)
    cell_sets: dict[str, np.ndarray] = field(default_factory=dict)
    facet_sets: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return self.points.shape[1]

    @property
    def n_nodes(self) -> int:
        return self.points.shape[0]

    @property
    def n_cells(self) -> int:
        return self.cells.shape[0]

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        if self.grid is not None:  # a box: no pass over the nodes (a large grid has 10^8)
            g = self.grid
            lo = np.asarray(g.origin, dtype=float)
            return lo, lo + np.asarray(g.spacing) * np.asarray(g.shape)
        return self.points.min(axis=0), self.points.max(axis=0)

    @property
    def nodes_per_cell(self) -> int:
        return self.cells.shape[1]

    # By rows and by index: a structured grid (:class:`~femopt.mesh.structured.GridMesh`)
    # computes these without holding its whole coordinate and connectivity arrays.

    def node_coords(self, nodes: np.ndarray) -> np.ndarray:
        """(len(nodes), dim) coordinates of the given nodes."""
        return self.points[nodes]

    def cell_nodes(self, cells: np.ndarray) -> np.ndarray:
        """(len(cells), nodes_per_cell) node indices of the given cells."""
        return self.cells[cells]

    def cell_coords(self, cells: np.ndarray) -> np.ndarray:
        """(len(cells), nodes_per_cell, dim) node coordinates of the given cells."""
        return self.node_coords(self.cell_nodes(cells))

    def point_rows(self, start: int, stop: int) -> np.ndarray:
        return self.points[start:stop]

    def cell_rows(self, start: int, stop: int) -> np.ndarray:
        return self.cells[start:stop]

    @property
    def coords(self) -> "np.ndarray | NodeCoordinates":
        """The node coordinates as something indexed by node arrays: ``points`` itself,
        or for a structured grid a :class:`NodeCoordinates` that computes them."""
        return self.points

    def node_center(self) -> np.ndarray:
        """Mean of the node coordinates."""
        return self.points.mean(axis=0)

    def centroid_rows(self, start: int, stop: int) -> np.ndarray:
        return self.node_coords(self.cell_rows(start, stop)).mean(axis=1)

    def centroids(self) -> np.ndarray:
        return np.concatenate([self.centroid_rows(i, j)
                               for i, j in row_chunks(self.n_cells)] or
                              [np.zeros((0, self.dim))])

    def characteristic_length(self) -> float:
        """Diagonal of the bounding box, used to scale geometric tolerances."""
        lo, hi = self.bounds()
        return float(np.linalg.norm(hi - lo))

    def min_cell_size(self) -> float:
        if self.grid is not None:
            return float(min(self.grid.spacing))
        # per edge and coordinate over contiguous columns: no (cells, edges, dim) array
        nodes = [np.ascontiguousarray(self.cells[:, i]) for i in range(self.cells.shape[1])]
        axes = [np.ascontiguousarray(self.points[:, d]) for d in range(self.points.shape[1])]
        shortest = np.inf
        for i, j in CELL_EDGES[self.cell_type]:
            sq = np.zeros(self.n_cells)
            for x in axes:
                d = x[nodes[i]] - x[nodes[j]]
                sq += d * d
            shortest = min(shortest, float(sq.min(initial=np.inf)))
        return float(np.sqrt(shortest))


class NodeCoordinates:
    """A mesh's node coordinates indexed like ``points`` (``coords[nodes]`` for an index
    array of any shape, ``coords.shape``) without building the whole array."""

    def __init__(self, mesh: Mesh):
        self.mesh = mesh
        self.shape = (mesh.n_nodes, mesh.dim)

    def __getitem__(self, nodes: np.ndarray) -> np.ndarray:
        return self.mesh.node_coords(nodes)
