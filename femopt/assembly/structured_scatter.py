"""The values of a structured grid's CSR pattern (:mod:`.structured_csr`) added up from
cell matrices given by chunks of cell layers, and the launch helpers of its kernels.

A chunk is the cell matrices of the layers ``first, first + 1, ...`` of the grid's
slowest axis (z in 3D, y in 2D), in cell order. Chunks come top first (each one's layers
above the next's) and cover the grid once, so a coarse level's cell matrices need never
exist whole (the multigrid's Galerkin levels, :func:`femopt.solvers.galerkin.assemble_level`).

The order of the sums: NumPy adds corner pair (a, b) by corner pair with ``np.add.at``,
cells in order within a pair, so an entry's contributions come in the order of the
corner ``a`` its row's node is in each cell (one cell per corner). A node on a layer
boundary is at corners of the slowest axis' bit 0 in the layer above it and bit 1 in
the layer below, and the corners (x fastest, VTK order) have that bit 0 first: taking
the layers above first keeps that order, so chunks top first give the whole array's
values bit for bit, whatever their sizes. The device's kernel
``femopt_assembly_csr_scatter_grid`` adds with atomics: an entry's contributions (8 of
them on a 3D diagonal) come in whatever order the threads reach it, whole or by chunks,
so its float sums are not reproducible to the last bit either way (the chunks only
order one chunk's adds before the next's).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

SOURCE = Path(__file__).with_name("structured_csr.cu")


def on_nodes(a: Any, ax: int, dim: int) -> Any:
    """A per-axis array (n_ax,) shaped to broadcast over the node grid (z, y, x)."""
    shape = [1] * dim
    shape[dim - 1 - ax] = a.shape[0]
    return a.reshape(shape)


def add_layers_numpy(pattern: Any, data: np.ndarray, cells: np.ndarray, first: int) -> None:
    """Add the cell matrices ``cells`` of the layers from ``first`` into ``data`` (the
    values and one extra slot past the end, where dropped entries go): corner pair (a, b)
    by corner pair, ``np.add.at`` into the slots (1-D operands: its fast path)."""
    lay = pattern.layout
    dim, k, nn, ns = lay.dim, lay.k, lay.n_nodes, lay.node_shape
    corners = lay.corners
    shape = lay.shape[:-1] + (cells.shape[0] // int(np.prod(lay.shape[:-1])),)
    grid = shape[::-1]
    m = len(corners)
    vals = cells.reshape(cells.shape[0], m, k, m, k)
    idx = np.intp
    comp = np.arange(k, dtype=idx)
    strides = np.cumprod((1,) + ns[:-1])
    start_at = [0] * (dim - 1) + [first]
    for a in range(m):
        coord = [on_nodes(np.arange(shape[ax]) + start_at[ax] + corners[a, ax], ax, dim)
                 for ax in range(dim)]
        node = np.broadcast_to(sum(c * s for c, s in zip(coord, strides)), grid).ravel()
        lo = [(c >= 1).astype(idx) for c in coord]
        count = [1 + lo[ax] + (coord[ax] <= ns[ax] - 2) for ax in range(dim)]
        rows = comp[None, :] * nn + node[:, None]  # (cells, k)
        start, fixed_row = pattern.indptr[rows].astype(idx), pattern.fixed[rows]
        for b in range(m):
            rel = corners[b] - corners[a]
            width: Any = 1
            before: Any = 0
            for ax in range(dim):
                before = before + (lo[ax] * (rel[ax] >= 0) + (rel[ax] >= 1)) * width
                width = width * count[ax]
            before = np.broadcast_to(before, grid).ravel().astype(idx)
            width = np.broadcast_to(width, grid).ravel().astype(idx)
            slot = ((start + before[:, None])[:, :, None]
                    + comp[None, None, :] * width[:, None, None])
            cols = comp[None, :] * nn + (node + int(rel @ strides))[:, None]
            np.putmask(slot, fixed_row[:, :, None] | pattern.fixed[cols][:, None, :],
                       pattern.nnz)
            np.add.at(data, slot.ravel(), vals[:, a, :, b, :].ravel())


def scatter_layers_gpu(pattern: Any, data: Any, cells: Any, first: int) -> None:
    """Add the cell matrices ``cells`` of the layers from ``first`` into ``data`` with
    ``femopt_assembly_csr_scatter_grid`` (one thread per entry, atomic adds)."""
    import cupy

    from femopt.backend.kernels import get_kernel, launch_1d

    register()
    lay = pattern.layout
    values = cupy.ascontiguousarray(cells).reshape(-1)
    corners = np.zeros((len(lay.corners), 3), dtype=np.int32)
    corners[:, :lay.dim] = lay.corners
    layer = int(np.prod(lay.shape[:-1]))
    cells_xy = tuple(lay.shape) + (1,) * (3 - lay.dim)
    nodes = tuple(lay.node_shape) + (1,) * (3 - lay.dim)
    name = (f"femopt_assembly_csr_scatter_grid<{real_name(values)}, "
            f"{index_name(pattern.indptr)}>")
    kern = get_kernel(SOURCE, name)
    launch_1d(kern, values.size,
              (values, pattern.fixed, pattern.indptr, cupy.asarray(corners.ravel()), data,
               np.int32(lay.k), np.int32(len(lay.corners)), np.int64(cells_xy[0]),
               np.int64(cells_xy[1]), np.int64(nodes[0]), np.int64(nodes[1]),
               np.int64(nodes[2]), np.int64(first * layer), np.int64(values.size)))


def index_name(a: Any) -> str:
    return "int" if a.dtype == np.int32 else "long long"


def real_name(a: Any) -> str:
    return "double" if a.dtype == np.float64 else "float"


def register() -> None:
    """The template instances of ``structured_csr.cu``, declared together (one module)."""
    from femopt.backend.kernels import register_instances

    register_instances(SOURCE, [f"femopt_assembly_csr_{op}<{r}, {i}>"
                                for op in ("scatter_grid", "scatter_scaled", "spmv",
                                           "spmv_grid")
                                for r in ("double", "float") for i in ("int", "long long")])
