"""Coarse-level cell matrices of geometric multigrid: Galerkin and rediscretized.

Nested Q1 spaces make the Galerkin operator cell-local. A coarse cell C at coarsening
ratio r (= 2^levels) covers r^dim fine cells f; P restricted to f is the interpolation
W_f from C's 2^dim corners to f's corners (kron with I_k for k dofs per node), so

    (P^T K P)_C = sum_f s_f W_f^T K0 W_f = sum_f s_f G_f,

one GEMM ``S @ G`` with S (n_coarse, r^dim) the fine scale factors regrouped per coarse
cell and G (r^dim, nd*nd) the design-independent child matrices. One level further,
K_C' = sum over its 2^dim children c of W_c^T K_c W_c (:func:`coarsen_cell_matrices`).

Rediscretization instead gives a coarse cell the mean of its children's scale factors and
the element matrix of a cell twice the size, 2^(dim-2) K0 for these second-order
operators (the integrand scales as h^-2 and the volume as h^dim).
"""

from __future__ import annotations

from itertools import product
from typing import Any

import numpy as np

from femopt.assembly.grid_layout import GridLayout
from femopt.backend import array_namespace


def interpolation_weights(dim: int, ratio: int) -> np.ndarray:
    """W (ratio^dim, 2^dim, 2^dim): W[f, a, b] = value of coarse corner b's hat function
    at corner a of descendant f (descendants numbered x fastest)."""
    corners = GridLayout((1,) * dim, 1).corners
    out = np.empty((ratio**dim, len(corners), len(corners)))
    for f, pos in enumerate(product(range(ratio), repeat=dim)):
        pos = pos[::-1]  # product varies the last slot fastest: make x fastest
        x = (np.asarray(pos)[None, :] + corners) / ratio  # (2^dim, dim) in [0, 1]
        hat = np.where(corners[None, :, :] == 1, x[:, None, :], 1.0 - x[:, None, :])
        out[f] = np.prod(hat, axis=2)
    return out


def child_matrices(ke: np.ndarray, dim: int, k: int, ratio: int) -> np.ndarray:
    """G (ratio^dim, nd, nd): each descendant's element matrix seen from the coarse cell."""
    w = interpolation_weights(dim, ratio)
    pk = np.einsum("fab,ij->faibj", w, np.eye(k)).reshape(w.shape[0], ke.shape[0], ke.shape[0])
    return np.einsum("fia,ij,fjb->fab", pk, ke, pk)


def descendant_scales(fine: GridLayout, scale: Any, ratio: int) -> Any:
    """(n_coarse, ratio^dim): the scale factors of each coarse cell's descendants."""
    dim = fine.dim
    coarse = tuple(n // ratio for n in fine.shape)
    shape = []
    for n in coarse[::-1]:
        shape += [n, ratio]
    s = scale.reshape(shape)
    order = list(range(0, 2 * dim, 2)) + list(range(1, 2 * dim, 2))
    return s.transpose(order).reshape(int(np.prod(coarse)), ratio**dim)


def galerkin_cell_matrices(fine: GridLayout, scale: Any, ke: np.ndarray, ratio: int,
                           child: Any = None) -> Any:
    """(n_coarse, nd, nd) Galerkin cell matrices ratio times coarser than ``fine``.

    ``child`` may pass :func:`child_matrices` already moved to the device.
    """
    xp = array_namespace(scale)
    if child is None:
        child = xp.asarray(child_matrices(ke, fine.dim, fine.k, ratio), dtype=scale.dtype)
    nd = ke.shape[0]
    s = descendant_scales(fine, scale, ratio)
    return (s @ child.reshape(child.shape[0], nd * nd)).reshape(-1, nd, nd)


def coarsen_cell_matrices(layout: GridLayout, kc: Any) -> Any:
    """Galerkin cell matrices (n_coarse, nd, nd) of the next coarser grid from the cell
    matrices ``kc`` (n_cells, nd, nd) of ``layout``."""
    xp = array_namespace(kc)
    nd = kc.shape[1]
    w = interpolation_weights(layout.dim, 2)
    pk = np.einsum("fab,ij->faibj", w, np.eye(layout.k)).reshape(w.shape[0], nd, nd)
    pk = xp.asarray(pk, dtype=kc.dtype)
    # regroup the children of each coarse cell (the transpose of descendant_scales)
    coarse = layout.coarsened()
    shape = []
    for n in coarse.shape[::-1]:
        shape += [n, 2]
    dim = layout.dim
    a = kc.reshape(shape + [nd, nd])
    out = xp.zeros((coarse.n_cells, nd, nd), dtype=kc.dtype)
    for c in range(2**dim):
        # child c (x fastest) of every coarse cell: a strided view, copied one child at a
        # time (not the whole regrouped array at once)
        sel: list = []
        for axis in reversed(range(dim)):
            sel += [slice(None), (c >> axis) & 1]
        child = a[tuple(sel)].reshape(coarse.n_cells, nd, nd)
        out += pk[c].T @ child @ pk[c]
    return out


def rediscretized_scale(fine: GridLayout, scale: Any) -> Any:
    """Mean of the children's scale factors times 2^(dim-2) (the coarse cell's K0 factor)."""
    return descendant_scales(fine, scale, 2).mean(axis=1) * 2.0 ** (fine.dim - 2)
