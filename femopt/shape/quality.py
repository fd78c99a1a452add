"""Element quality: the scaled Jacobian of tri3, quad4, tet4 and hex8 cells.

At each corner of a cell the edges leaving it are normalized to unit length and their
determinant taken (the cross product in 2D, the triple product in 3D); the quality of a
cell is the smallest of its corners' values, divided by the value of the ideal cell so
that an equilateral triangle, a square, a regular tetrahedron and a cube score 1. A
quality <= 0 means an inverted or degenerate cell; a small positive one a flat, nearly
degenerate cell. The corners follow the VTK node order, whose cells are positively
oriented (a corner's edges form a right-handed frame).
"""

from __future__ import annotations

import numpy as np

# (corner, edge end 1, edge end 2[, edge end 3]) of each corner, right-handed
CORNERS = {
    "tri3": [(0, 1, 2), (1, 2, 0), (2, 0, 1)],
    "quad4": [(0, 1, 3), (1, 2, 0), (2, 3, 1), (3, 0, 2)],
    "tet4": [(0, 1, 2, 3), (1, 2, 0, 3), (2, 0, 1, 3), (3, 0, 2, 1)],
    "hex8": [(0, 1, 3, 4), (1, 2, 0, 5), (2, 3, 1, 6), (3, 0, 2, 7),
             (4, 7, 5, 0), (5, 4, 6, 1), (6, 5, 7, 2), (7, 6, 4, 3)],
}

# the corner value of the ideal cell: sin 60 deg, 1, 1/sqrt(2) (regular tetrahedron), 1
IDEAL = {"tri3": np.sqrt(3.0) / 2.0, "quad4": 1.0, "tet4": 1.0 / np.sqrt(2.0), "hex8": 1.0}


def scaled_jacobian(points: np.ndarray, cells: np.ndarray, cell_type: str) -> np.ndarray:
    """The quality of every cell, (n_cells,): 1 for the ideal cell, <= 0 when inverted.

    Args:
        points: (n_nodes, dim) node coordinates.
        cells: (n_cells, nodes_per_cell) node indices in VTK order.
        cell_type: tri3, quad4, tet4 or hex8.
    """
    if cell_type not in CORNERS:
        raise ValueError(f"no quality measure for {cell_type!r} cells")
    corners = np.array(CORNERS[cell_type])
    p = points[cells]  # (c, n, d)
    origin = p[:, corners[:, 0]]  # (c, k, d)
    edges = p[:, corners[:, 1:]] - origin[:, :, None, :]  # (c, k, d, d): one edge per row
    length = np.linalg.norm(edges, axis=3)
    with np.errstate(divide="ignore", invalid="ignore"):
        unit = edges / length[..., None]
    det = np.linalg.det(np.nan_to_num(unit))  # a zero-length edge gives 0: degenerate
    q = det.min(axis=1) / IDEAL[cell_type]
    return np.minimum(q, 1.0)  # a tetrahedron's corner can exceed the regular one's
