"""Structured grids of quad4 (2D) and hex8 (3D) cells with physical dimensions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from femopt.mesh.mesh import Mesh, StructuredGrid

# Offsets of a cell's nodes in VTK order (counter-clockwise bottom face, then top face).
QUAD4_CORNERS = np.array([(0, 0), (1, 0), (1, 1), (0, 1)])
HEX8_CORNERS = np.array(
    [(0, 0, 0), (1, 0, 0), (1, 1, 0), (0, 1, 0), (0, 0, 1), (1, 0, 1), (1, 1, 1), (0, 1, 1)]
)


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
    node_shape = tuple(n + 1 for n in shape)
    axes = [o + h * np.arange(n) for o, h, n in zip(origin, spacing, node_shape)]
    # x fastest: meshgrid with 'ij' on reversed axes, then reverse columns
    grids = np.meshgrid(*axes[::-1], indexing="ij")
    points = np.stack([g.ravel() for g in grids[::-1]], axis=1)

    corners = QUAD4_CORNERS if dim == 2 else HEX8_CORNERS
    strides = np.cumprod((1,) + node_shape[:-1])
    base = np.zeros((1,) * dim, dtype=np.int64)  # first node of each cell, x fastest
    for axis, (n, s) in enumerate(zip(shape, strides)):
        base = base + (np.arange(n, dtype=np.int64) * s).reshape(
            (1,) * (dim - 1 - axis) + (n,) + (1,) * axis)
    cells = base.reshape(-1, 1) + (corners @ strides).astype(np.int64)
    grid = StructuredGrid(shape=shape, spacing=spacing, origin=origin)
    return Mesh(points=points, cells=cells,
                cell_type="quad4" if dim == 2 else "hex8", grid=grid)
