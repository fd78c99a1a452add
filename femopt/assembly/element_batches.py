"""Element matrices of a mesh from a file on the device, computed in batches of cells.

The GPU path on meshes from files scales the element matrices of full material K0_e at
every design (:mod:`femopt.assembly.csr_gather`); they depend on the geometry alone and
are computed once per mesh. Here they are computed where they are used: the physics'
element kernel (its integrand, the one definition every path generates from) runs on
arrays of ``xp`` with one entry per cell, a batch of cells at a time so that the
integrand's temporaries (a few hundred arrays of one batch each for tet4 elasticity) stay
bounded whatever the mesh. Only the mesh (points, cells) is read; the node coordinates of
a batch are gathered on the device.

With NumPy the same code runs on the CPU (the twin the tests compare with the host's
``Physics.element_matrices``: equal to rounding, since the host may sum B^T D B in
another order).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from femopt.assembly.element_kernel import ElementKernel, element_matrices

BATCH = 1 << 17  # cells per batch: ~250 temporaries of 1 MB each for tet4 elasticity


def element_matrices_batched(kernel: ElementKernel, points: Any, cells: Any, xp: Any,
                             dtype: Any = np.float64, batch: int = BATCH) -> Any:
    """(n_cells, nd, nd) element matrices of full material (m = 1) on ``xp``.

    Args:
        kernel: the physics' element kernel (affine in m with no fixed part: K_e(1) = K0_e).
        points: (n_nodes, dim) node coordinates; cells: (n_cells, n_nodes_per_cell) node
            indices (host or ``xp`` arrays; they are moved to ``xp`` once).
        xp: numpy or cupy. dtype: float64 or float32.
        batch: cells per batch (bounds the integrand's temporaries).
    Returns:
        The element matrices on ``xp``, row-major (cell, i, j).
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    points = xp.asarray(points, dtype=dtype)
    cells = xp.asarray(cells)
    n_cells = int(cells.shape[0])
    out = xp.empty((n_cells, kernel.nd, kernel.nd), dtype=dtype)
    for start in range(0, n_cells, batch):
        stop = min(start + batch, n_cells)
        out[start:stop] = element_matrices(kernel, points[cells[start:stop]], 1.0, dtype)
    return out
