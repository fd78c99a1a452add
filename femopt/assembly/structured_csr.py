"""CSR matrices of structured grids with a fixed pattern, assembled without a scatter map.

Used for coarse multigrid levels, whose cell matrices differ from cell to cell (Galerkin).
The pattern covers every dof of the grid in the grid layout (component-major,
:mod:`femopt.assembly.grid_layout`); constrained dofs get an identity row and column, as in
:mod:`femopt.assembly.matrix_free`. Row (component i, node n) holds, component by component,
the dofs of the 3^dim nodes around n that exist, in increasing order. So the slot of an
entry is arithmetic: a node at coordinate c of an axis with n nodes has ``lo = (c >= 1)``
neighbours below and ``hi = (c <= n - 2)`` above on it, ``1 + lo + hi`` in all; the
neighbours before offset o in {-1, 0, 1} are ``lo * (o >= 0) + (o >= 1)``; the axes combine
x fastest. The row offsets are computed once per grid with array code on the device that
uses it; the column indices are arithmetic too (entry t of a row is, in mixed radix, its
component and its offset on each axis), held on the host for SciPy and computed where
they are used on the device: the SpMV kernel ``femopt_assembly_csr_spmv_grid`` finds
each entry's column from the row's node, in the order of the kernel that reads them, so
a coarse level holds its values, row offsets and diagonal slots only (no index per
entry: 17.5 B per fine cell at levels 2 and below of a 3D elasticity grid). Each
assembly computes every entry's slot where it adds it, with no stored map (an int32 per
cell-matrix entry, 41 B per fine cell at levels 2 and below of a 3D elasticity grid,
built with int64 temporaries several times that): NumPy by corner pairs with
``np.add.at`` (as fast as the map's ``bincount`` in float64, about 2.5x slower in
float32), CuPy by one kernel ``femopt_assembly_csr_scatter_grid`` (atomic adds into
the slots); both take the cell matrices whole or by chunks of cell layers
(:meth:`StructuredCSR.assemble_layers`, :mod:`.structured_scatter`, where the order of
the sums is said).
"""

from __future__ import annotations

from itertools import product
from typing import Any

import numpy as np

from femopt.assembly.grid_layout import GridLayout
from femopt.assembly.structured_scatter import (SOURCE, add_layers_numpy, index_name,
                                                on_nodes, real_name, register,
                                                scatter_layers_gpu)
from femopt.backend import array_namespace

INT32_ENTRIES = 2**31 - 1  # from this many entries or dofs the pattern's indices are int64


class StructuredCSR:
    """Pattern of the CSR matrix of ``layout`` with constraints ``fixed``.

    The row offsets (``indptr``), the diagonal's slots and the constrained dofs are held;
    the column indices only where ``keep_indices`` (by default on NumPy, for SciPy's
    products): the device's product computes them (:func:`spmv_grid_gpu`), and
    :attr:`indices` builds them when asked.

    Args:
        layout: the grid.
        fixed: (n_dofs,) bool mask of constrained dofs (NumPy or CuPy: the namespace of
            every array built here).
        keep_indices: hold the column indices (None: on NumPy only).
    """

    def __init__(self, layout: GridLayout, fixed: Any, keep_indices: bool | None = None):
        xp = array_namespace(fixed)
        self.xp = xp
        self.layout = layout
        self.fixed = xp.ascontiguousarray(fixed, dtype=bool).copy()  # the kernel reads it
        dim, k = layout.dim, layout.k
        ns = layout.node_shape
        nn = layout.n_nodes
        # per axis: how many of the offsets -1, 0, 1 stay on the grid, how many below
        count, lo = [], []
        for n in ns:
            c = xp.arange(n)
            lo.append((c >= 1).astype(xp.int64))
            count.append(1 + lo[-1] + (c <= n - 2))
        n_valid = xp.ones(ns[::-1], dtype=xp.int64)
        before_centre = xp.zeros(ns[::-1], dtype=xp.int64)  # the diagonal's place in a block
        for ax in range(dim):
            before_centre = before_centre + on_nodes(lo[ax], ax, dim) * n_valid
            n_valid = n_valid * on_nodes(count[ax], ax, dim)
        n_valid, before_centre = n_valid.ravel(), before_centre.ravel()
        indptr = xp.zeros(layout.n_dofs + 1, dtype=xp.int64)
        indptr[1:] = xp.cumsum(xp.tile(n_valid * k, k))
        self.nnz = int(indptr[-1])
        self.index_dtype = (xp.int32 if self.nnz < INT32_ENTRIES
                            and layout.n_dofs < INT32_ENTRIES else xp.int64)
        self.fixed_dofs = xp.flatnonzero(self.fixed)
        # row (i, n): its block i starts i * n_valid[n] after the row's start
        self.diag_slot = (indptr[:-1].reshape(k, nn) + xp.arange(k)[:, None] * n_valid
                          + before_centre).ravel().astype(self.index_dtype)
        self.indptr = indptr.astype(self.index_dtype)
        del indptr
        self.shape = (layout.n_dofs, layout.n_dofs)
        keep = xp is np if keep_indices is None else keep_indices
        self._indices = self._valid_neighbours() if keep else None

    @property
    def indices(self) -> Any:
        """Column indices (nnz,): the held ones, or built now (and not kept)."""
        return self._indices if self._indices is not None else self.columns()

    @property
    def keeps_indices(self) -> bool:
        return self._indices is not None

    def _valid_neighbours(self) -> Any:
        """The column indices from the mask of the neighbours on the grid: every node's
        3^dim offsets, x fastest, those on the grid kept (an int64 array of 3^dim k
        entries per node on the way)."""
        xp, lay = self.xp, self.layout
        dim, k, ns, nn = lay.dim, lay.k, lay.node_shape, lay.n_nodes
        offsets = np.array([o[::-1] for o in product((-1, 0, 1), repeat=dim)])  # x fastest
        strides = np.cumprod((1,) + ns[:-1])
        valid_ax = []
        for n in ns:
            c = xp.arange(n)[:, None] + xp.asarray([-1, 0, 1])[None, :]
            valid_ax.append((c >= 0) & (c < n))
        # (n_nodes, 3^dim): node index x fastest, offset index x fastest
        valid = valid_ax[0]
        for t in valid_ax[1:]:
            a, b = valid.shape
            valid = (t[:, None, :, None] & valid[None, :, None, :]).reshape(t.shape[0] * a,
                                                                              3 * b)
        # the columns of a row do not depend on its component: one block, k times
        node_ids = xp.arange(nn, dtype=xp.int64)
        cols = (xp.arange(k)[None, :, None] * nn + node_ids[:, None, None]
                + xp.asarray(offsets @ strides)[None, None, :])
        block = cols[xp.broadcast_to(valid[:, None, :], cols.shape)].astype(self.index_dtype)
        del cols
        return xp.tile(block, k)

    def columns(self, start: int = 0, stop: int | None = None) -> Any:
        """Column indices of the entries ``start:stop`` computed from their rows' nodes:
        entry t of row (i, n) is, in mixed radix x fastest, t = ((j n_z + rz) n_y + ry)
        n_x + rx (component j, offset r - lo on each axis, n = 1 + lo + hi the counts of
        the module docstring); the column is j n_nodes + n + sum (r - lo) stride. What
        the device's product computes for each entry, on any array module."""
        xp, lay = self.xp, self.layout
        stop = self.nnz if stop is None else stop
        entry = xp.arange(start, stop, dtype=xp.int64)
        row = xp.searchsorted(self.indptr, entry, side="right") - 1
        t = entry - self.indptr[row]
        del entry
        node = row % lay.n_nodes
        col = node.copy()
        radix: Any = 1
        stride = 1
        for ax, n in enumerate(lay.node_shape):
            c = (node // stride) % n
            lo = (c >= 1).astype(xp.int64)
            cnt = 1 + lo + (c <= n - 2)
            col += ((t // radix) % cnt - lo) * stride
            radix, stride = radix * cnt, stride * n
        col += (t // radix) * lay.n_nodes
        return col.astype(self.index_dtype)

    def assemble_data(self, cell_matrices: Any) -> Any:
        """CSR data of sum_e K_e from cell matrices (n_cells, nd, nd), 1 on the diagonal
        of constrained dofs."""
        return self.assemble_layers([(0, cell_matrices)])

    def assemble_layers(self, chunks: Any) -> Any:
        """CSR data of sum_e K_e from the cell matrices given by chunks of cell layers:
        (first layer of the slowest axis, (cells, nd, nd) of its layers), top first,
        covering the grid once (:mod:`.structured_scatter`: on NumPy the whole array's
        values bit for bit, whatever the chunks); 1 on the diagonal of constrained dofs.
        No array of every cell's matrices is needed."""
        xp, lay = self.xp, self.layout
        layer = int(np.prod(lay.shape[:-1]))
        data, top = None, lay.shape[-1]
        for first, cells in chunks:
            n = cells.shape[0] // layer
            if first + n != top or n * layer != cells.shape[0] or n < 1:
                raise ValueError(f"cell layers {first}..{first + n} of "
                                 f"{tuple(cells.shape)} matrices: expected the layers "
                                 f"below {top}, top first, whole layers of {layer} cells")
            if data is None:  # NumPy: one extra slot, where dropped entries go
                data = xp.zeros(self.nnz + (xp is np), dtype=cells.dtype)
            if xp is np:
                add_layers_numpy(self, data, cells, first)
            else:
                scatter_layers_gpu(self, data, cells, first)
            top = first
            del cells  # not alive beside the next chunk while that is made
        if top != 0:
            raise ValueError(f"the cell layers below {top} were not given")
        data = data[:self.nnz]
        data[self.diag_slot[self.fixed_dofs]] = 1.0
        return data

    def matrix(self, data: Any) -> Any:
        """A SciPy (NumPy data) or CuPy-SciPy (CuPy data) CSR matrix with this pattern."""
        if self.xp is np:
            import scipy.sparse as sp

            return sp.csr_matrix((data, self.indices, self.indptr), shape=self.shape)
        import cupyx.scipy.sparse as csp

        return csp.csr_matrix((data, self.indices, self.indptr), shape=self.shape)


class CSROperator:
    """``alpha A u + beta z`` with an assembled CSR matrix (SciPy, or on CuPy arrays the
    raw SpMV kernel ``femopt_assembly_csr_spmv_grid``, which computes the columns)."""

    def __init__(self, pattern: StructuredCSR, data: Any):
        self.pattern = pattern
        self.data = data
        self.xp = array_namespace(data)
        self.shape = pattern.shape
        if self.xp is np:
            self._mat = pattern.matrix(data)

    def apply(self, u: Any, out: Any = None, alpha: float = 1.0, beta: float = 0.0,
              z: Any = None) -> Any:
        if self.xp is np:
            y = self._mat @ u
            if alpha != 1.0:
                y *= alpha
            if z is not None and beta != 0.0:
                y += beta * z
            if out is not None:
                out[...] = y
                return out
            return y
        return spmv_grid_gpu(self.pattern, self.data, u, out, alpha, beta, z)

    def diagonal(self) -> Any:
        return self.data[self.pattern.diag_slot]

    def to_dense(self) -> Any:
        xp = self.xp
        p = self.pattern
        dense = xp.zeros(self.shape, dtype=self.data.dtype)
        rows = xp.searchsorted(p.indptr, xp.arange(p.nnz), side="right") - 1
        dense[rows, p.indices] = self.data  # a small level: its columns built here
        return dense


# -- CuPy launchers -------------------------------------------------------------------

class DeviceFixedPattern:
    """A :class:`~femopt.assembly.sparse.FixedPatternAssembler`'s pattern and scatter map
    on the GPU: ``assemble_data`` is one ``femopt_assembly_csr_scatter_scaled`` launch.

    For problems that want an assembled matrix on the device (unstructured meshes); it
    reads the assembler's kept entries (cell and local position of each) once.
    """

    def __init__(self, assembler: Any):
        import cupy

        if assembler.nnz >= 2**31 or assembler.keep.size >= 2**31:
            raise ValueError("the device assembly takes fewer than 2^31 entries")
        self.nnz = assembler.nnz
        self.shape = assembler.shape
        self.cell = cupy.asarray(assembler._cell.astype(np.int32))
        self.local = cupy.asarray(assembler._local.astype(np.int32))
        self.scatter = cupy.asarray(assembler.scatter.astype(np.int32))
        self.indices = cupy.asarray(assembler.indices)
        self.indptr = cupy.asarray(assembler.indptr)

    def assemble_data(self, scale: Any, ke: Any) -> Any:
        """CSR data of sum_e scale_e K0 (``ke`` (nd, nd), one matrix for every cell)."""
        import cupy

        from femopt.backend.kernels import get_kernel, launch_1d

        register()
        ke = cupy.asarray(ke, dtype=scale.dtype).reshape(-1)
        data = cupy.zeros(self.nnz, dtype=scale.dtype)
        kern = get_kernel(SOURCE, f"femopt_assembly_csr_scatter_scaled<{real_name(scale)}, int>")
        n = self.scatter.size
        launch_1d(kern, n, (scale, ke, self.cell, self.local, self.scatter, data, np.int64(n)))
        return data

    def assemble(self, scale: Any, ke: Any) -> Any:
        import cupyx.scipy.sparse as csp

        return csp.csr_matrix((self.assemble_data(scale, ke), self.indices, self.indptr),
                              shape=self.shape)


def spmv_gpu(pattern: StructuredCSR, data: Any, u: Any, out: Any = None, alpha: float = 1.0,
             beta: float = 0.0, z: Any = None) -> Any:
    """``alpha A u + beta z`` with the CSR kernel (8 lanes per row)."""
    from femopt.backend.kernels import get_kernel, launch_1d

    out, z, beta = _product_operands(u, out, z, beta)
    real = data.dtype.type
    name = f"femopt_assembly_csr_spmv<{real_name(data)}, {index_name(pattern.indices)}>"
    kern = get_kernel(SOURCE, name)
    n = pattern.shape[0]
    launch_1d(kern, 8 * n, (pattern.indptr, pattern.indices, data, u, z, out,
                            real(alpha), real(beta), np.int64(n)))
    return out


def _product_operands(u: Any, out: Any, z: Any, beta: float) -> tuple[Any, Any, float]:
    """The kernels registered; (out, z, beta) of a product, out made and z = u with beta
    0 where not given."""
    import cupy

    register()
    if z is None:
        z, beta = u, 0.0
    return (cupy.empty_like(u) if out is None else out), z, beta


def _node_counts(pattern: StructuredCSR) -> tuple[int, int, int]:
    """Nodes per axis (x, y, z); a 2D grid has one node along z."""
    ns = tuple(pattern.layout.node_shape) + (1,) * (3 - pattern.layout.dim)
    return ns[0], ns[1], ns[2]


def spmv_grid_gpu(pattern: StructuredCSR, data: Any, u: Any, out: Any = None,
                  alpha: float = 1.0, beta: float = 0.0, z: Any = None) -> Any:
    """``alpha A u + beta z`` with ``pattern``'s columns computed, not read: the lanes,
    their entries and the reduction of :func:`spmv_gpu`, so the result is that kernel's
    bit for bit (:func:`spmv_grid_numpy` is its twin)."""
    from femopt.backend.kernels import get_kernel, launch_1d

    out, z, beta = _product_operands(u, out, z, beta)
    real = data.dtype.type
    index = pattern.indptr.dtype.type
    name = f"femopt_assembly_csr_spmv_grid<{real_name(data)}, {index_name(pattern.indptr)}>"
    kern = get_kernel(SOURCE, name)
    n = pattern.shape[0]
    nx, ny, nz = _node_counts(pattern)
    launch_1d(kern, 8 * n, (pattern.indptr, data, u, z, out, real(alpha), real(beta),
                            np.int32(pattern.layout.k), index(nx), index(ny), index(nz),
                            np.int64(n)))
    return out


def _lane_walk(pattern: StructuredCSR, lanes: int = 8):
    """The entries ``femopt_assembly_csr_spmv_grid`` visits, as it finds them: for each
    lane and step, (rows, positions in the values, columns) of the rows that still have
    an entry; a lane steps by ``lanes`` entries in mixed radix with carries (NumPy)."""
    lay = pattern.layout
    k, nn = lay.k, lay.n_nodes
    nx, ny, nz = _node_counts(pattern)
    rows = np.arange(pattern.shape[0], dtype=np.int64)
    node = rows % nn
    coord = (node % nx, (node // nx) % ny, node // (nx * ny))
    lo = [(c >= 1).astype(np.int64) for c in coord]
    cnt = [1 + lo[ax] + (coord[ax] <= n - 2) for ax, n in enumerate((nx, ny, nz))]
    first = node - lo[0] - lo[1] * nx - lo[2] * (nx * ny)
    start = pattern.indptr[:-1].astype(np.int64)

    def carry(r, j):
        for ax in range(2):
            while (over := r[ax] >= cnt[ax]).any():
                r[ax] -= cnt[ax] * over
                r[ax + 1] += over
        while (over := r[2] >= cnt[2]).any():
            r[2] -= cnt[2] * over
            j += over

    for lane in range(lanes):
        r = [np.full_like(rows, lane), np.zeros_like(rows), np.zeros_like(rows)]
        j = np.zeros_like(rows)
        carry(r, j)
        p = start + lane
        while (live := j < k).any():
            col = first + j * nn + r[0] + r[1] * nx + r[2] * (nx * ny)
            yield lane, rows[live], p[live], col[live]
            p += lanes
            r[0] += lanes
            carry(r, j)


def spmv_grid_numpy(pattern: StructuredCSR, data: np.ndarray, u: np.ndarray,
                    alpha: float = 1.0, beta: float = 0.0, z: np.ndarray | None = None
                    ) -> np.ndarray:
    """NumPy twin of :func:`spmv_grid_gpu`: each lane's sum over its entries in the
    kernel's order, the lanes added as its shuffles add them (products rounded apart
    from the sums, where the kernel may fuse them)."""
    real = data.dtype.type
    u = u.astype(data.dtype, copy=False)
    part = np.zeros((8, pattern.shape[0]), dtype=data.dtype)
    for lane, rows, p, col in _lane_walk(pattern):
        part[lane, rows] += data[p] * u[col]
    for off in (4, 2, 1):  # __shfl_down_sync(..., off, 8): lane l adds lane l + off
        part[:off] += part[off:2 * off]
    y = real(alpha) * part[0]
    if z is not None and beta != 0.0:
        y = y + real(beta) * z.astype(data.dtype, copy=False)
    return y
