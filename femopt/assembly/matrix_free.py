"""Matrix-free operator of a structured grid: y = alpha A u + beta z.

A = D K D + (I - D) on the full dof vector, where K = sum_e K_e is the stiffness, D the
diagonal 0/1 mask of free dofs: constrained dofs see the identity, so vectors keep the grid
layout (:mod:`femopt.assembly.grid_layout`) and the operator stays SPD. Inputs ``u`` must
vanish on constrained dofs (every vector the solvers build does).

Two kinds of cell matrices:

- ``scale`` (n_cells,) with ``ke`` (nd, nd): K_e = scale_e K0, the fine level of a SIMP
  design (scale = m(rho)) or a rediscretized coarse level.
- ``scale`` (n_cells, c) with ``ke`` (c, nd, nd): K_e = sum_j scale_ej G_j, the Galerkin
  operator P^T K P of the level below one coarsening (c = 2^dim children per cell, G_j the
  child's element matrix seen through the interpolation), still without storing a matrix.

The NumPy path gathers every cell's dofs with 2^dim strided slices, multiplies by the
element matrix in one GEMM, and adds the cell forces back corner by corner. The CuPy path
launches ``femopt_assembly_{quad4,hex8}_apply`` (``matrix_free.cu``): one thread per node
gathers the 2^dim cells around it (no atomics).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from femopt.assembly.grid_layout import GridLayout
from femopt.backend import array_namespace

SOURCE = Path(__file__).with_suffix(".cu")


def _stacked(ke: np.ndarray) -> tuple[np.ndarray, int]:
    """(nd, c*nd) with columns [G_0 | G_1 | ...] so that ue @ it gives every G_j ue."""
    if ke.ndim == 2:
        return ke, 1
    c, nd, _ = ke.shape
    return ke.transpose(1, 0, 2).reshape(nd, c * nd), c


def gather_cells(layout: GridLayout, u: Any, out: Any = None) -> Any:
    """(n_cells, nd) dofs of every cell, node-major, from a dof vector."""
    xp = array_namespace(u)
    un = layout.nodes(u)
    nc = len(layout.corners)
    if out is None:
        out = xp.empty(layout.shape[::-1] + (nc, layout.k), dtype=u.dtype)
    else:
        out = out.reshape(layout.shape[::-1] + (nc, layout.k))
    for a, sl in enumerate(layout.corner_slices):
        out[..., a, :] = un[sl]
    return out.reshape(layout.n_cells, layout.nd)


def scatter_cells(layout: GridLayout, fe: Any, out: Any) -> Any:
    """out (n_dofs,) = sum over cells of the cell vectors fe (n_cells, nd)."""
    yn = layout.nodes(out)
    yn[...] = 0
    f = fe.reshape(layout.shape[::-1] + (len(layout.corners), layout.k))
    for a, sl in enumerate(layout.corner_slices):
        yn[sl] += f[..., a, :]
    return out


def apply_numpy(layout: GridLayout, u: np.ndarray, scale: np.ndarray, ke: np.ndarray,
                free: np.ndarray | None = None, alpha: float = 1.0, beta: float = 0.0,
                z: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """NumPy twin of the apply kernel: ``alpha A u + beta z`` (see the module docstring).

    Args:
        layout: the grid. u: (n_dofs,), zero on constrained dofs.
        scale: (n_cells,) or (n_cells, c). ke: (nd, nd) or (c, nd, nd), symmetric.
        free: (n_dofs,) bool mask of free dofs, or None for no constraints.
        z: (n_dofs,) or None (then beta is ignored).
    Returns:
        ``out`` (allocated when None), dtype of ``u``.
    """
    ue = gather_cells(layout, u)
    stacked, c = _stacked(np.asarray(ke, dtype=u.dtype))
    t = ue @ stacked
    if c == 1:
        t *= scale[:, None]
        fe = t
    else:
        fe = np.einsum("nc,ncj->nj", scale, t.reshape(layout.n_cells, c, layout.nd))
    y = scatter_cells(layout, fe, np.empty_like(u))
    if free is not None:
        np.copyto(y, u, where=~free)
    if alpha != 1.0:
        y *= alpha
    if z is not None and beta != 0.0:
        y += beta * z  # z may be ``out``: y is a separate buffer
    if out is None:
        return y
    out[...] = y
    return out


def diagonal(layout: GridLayout, scale: Any, ke: Any, free: Any = None) -> Any:
    """Diagonal of A (1 on constrained dofs), in the namespace and dtype of ``scale``."""
    xp = array_namespace(scale)
    if ke.ndim == 2:
        dk = xp.asarray(np.diagonal(np.asarray(ke)).copy(), dtype=scale.dtype)
        de = scale[:, None] * dk[None, :]
    else:
        dk = xp.asarray(np.diagonal(np.asarray(ke), axis1=1, axis2=2).copy(), dtype=scale.dtype)
        de = scale @ dk
    d = xp.empty(layout.n_dofs, dtype=scale.dtype)
    scatter_cells(layout, de, d)
    if free is not None:
        d = xp.where(free, d, xp.ones_like(d))
    return d


class StructuredOperator:
    """The operator of one grid level, on NumPy or CuPy arrays (taken from ``scale``).

    Args:
        layout: the grid. scale, ke: cell matrices (module docstring); ke is a host
            array. free: bool mask of free dofs (same namespace as ``scale``) or None.
    """

    def __init__(self, layout: GridLayout, scale: Any, ke: np.ndarray, free: Any = None):
        self.layout = layout
        self.scale = scale
        self.ke = np.asarray(ke, dtype=np.float64)
        self.free = free
        self.xp = array_namespace(scale)
        self.dtype = scale.dtype
        self.on_gpu = self.xp is not np
        if self.on_gpu:
            from femopt.assembly import matrix_free_gpu

            self._gpu = matrix_free_gpu.ApplyKernel(layout, self.ke, self.dtype, free)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.layout.n_dofs, self.layout.n_dofs)

    def apply(self, u: Any, out: Any = None, alpha: float = 1.0, beta: float = 0.0,
              z: Any = None) -> Any:
        """``alpha A u + beta z`` (u zero on constrained dofs)."""
        if self.on_gpu:
            return self._gpu(u, self.scale, out, alpha, beta, z)
        return apply_numpy(self.layout, u, self.scale, self.ke, self.free, alpha, beta, z, out)

    def __matmul__(self, u: Any) -> Any:
        return self.apply(u)

    def diagonal(self) -> Any:
        return diagonal(self.layout, self.scale, self.ke, self.free)
