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

The first assembled Galerkin level is made and assembled by chunks of its cell layers
(:func:`galerkin_layers`, :func:`assemble_level`, at most :data:`CHUNK_BYTES` of
matrices at a time, two layers at least), the next level's cell matrices made from
each chunk as it goes: no array of that level's cell matrices exists whole (36 B per
fine cell of a 3D elasticity grid's level 2). Each chunk's rows are the whole array's,
by the same products, and its sums into the CSR values keep the whole array's order on
NumPy (:mod:`femopt.assembly.structured_scatter`).
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import product
from typing import Any

import numpy as np

from femopt.assembly.grid_layout import GridLayout
from femopt.backend import array_namespace

CHUNK_BYTES = 2**26  # cell matrices made and assembled at a time (two layers at least)


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


def layer_chunks(n_layers: int, layer_bytes: int, even: bool,
                 max_bytes: int | None = None) -> list[tuple[int, int]]:
    """(first, stop) of chunks of ``n_layers`` cell layers, top first, each at most
    ``max_bytes`` (None: :data:`CHUNK_BYTES`; one layer at least; with ``even`` an even
    number of layers from an even first layer, two at least, so that each chunk
    coarsens on its own)."""
    max_bytes = CHUNK_BYTES if max_bytes is None else max_bytes
    per = max(1, max_bytes // max(layer_bytes, 1))
    if even:
        per = max(2, per - per % 2)
    out, stop = [], n_layers
    while stop > 0:
        first = max(0, stop - per)
        out.append((first, stop))
        stop = first
    return out


def galerkin_layers(fine: GridLayout, scale: Any, ke: np.ndarray, ratio: int,
                    child: Any = None, even: bool = False, max_bytes: int | None = None
                    ) -> Iterator[tuple[int, Any]]:
    """:func:`galerkin_cell_matrices` by chunks of the coarse grid's cell layers: (first
    layer, its layers' cell matrices), top first (:func:`layer_chunks`; ``even``: as the
    next level's coarsening needs them). Each chunk is the whole array's rows: its
    descendants' scale factors are a slice of ``scale`` and the same product."""
    coarse = tuple(n // ratio for n in fine.shape)
    nd = ke.shape[0]
    layer = int(np.prod(coarse[:-1]))
    fine_layer = int(np.prod(fine.shape[:-1])) * ratio
    size = np.dtype(scale.dtype).itemsize * nd * nd
    for first, stop in layer_chunks(coarse[-1], layer * size, even, max_bytes):
        sub = fine.with_layers((stop - first) * ratio)
        part = scale[first * fine_layer:stop * fine_layer]
        yield first, galerkin_cell_matrices(sub, part, ke, ratio, child)


def assemble_level(pattern: Any, cells: Any, coarsen: bool = False) -> tuple[Any, Any]:
    """(CSR data of a level, the next level's Galerkin cell matrices or None) from the
    level's cell matrices, whole or by chunks of cell layers top first
    (:func:`galerkin_layers`); ``pattern`` is its
    :class:`~femopt.assembly.structured_csr.StructuredCSR`. With ``coarsen`` the next
    level's matrices are made from each chunk as it is assembled
    (:func:`coarsen_cell_matrices`: the whole array's, cell by cell)."""
    chunks = [(0, cells)] if hasattr(cells, "shape") else cells
    if not coarsen:
        return pattern.assemble_layers(chunks), None
    xp = pattern.xp
    layout = pattern.layout
    layer = int(np.prod(layout.shape[:-1]))
    coarse_layer = int(np.prod(layout.coarsened().shape[:-1]))
    out: list[Any] = []

    def coarsened() -> Iterator[tuple[int, Any]]:
        for first, part in chunks:
            yield first, part
            n = part.shape[0] // layer
            if first % 2 or n % 2:  # each chunk coarsens on its own: pairs of layers
                raise ValueError(f"assemble_level: a chunk of layers {first} to "
                                 f"{first + n} does not coarsen on its own (pairs of "
                                 f"layers from an even one)")
            kc = coarsen_cell_matrices(layout.with_layers(n), part)
            del part
            if not out:
                out.append(xp.empty((layout.coarsened().n_cells,) + kc.shape[1:],
                                    dtype=kc.dtype))
            lo = first // 2 * coarse_layer
            out[0][lo:lo + kc.shape[0]] = kc
            del kc

    data = pattern.assemble_layers(coarsened())
    return data, out[0]
