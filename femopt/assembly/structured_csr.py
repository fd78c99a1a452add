"""CSR matrices of structured grids with a fixed pattern and a precomputed scatter map.

Used for coarse multigrid levels, whose cell matrices differ from cell to cell (Galerkin).
The pattern covers every dof of the grid in the grid layout (component-major,
:mod:`femopt.assembly.grid_layout`); constrained dofs get an identity row and column, as in
:mod:`femopt.assembly.matrix_free`. Row (component i, node n) holds, component by component,
the dofs of the 3^dim nodes around n that exist, in increasing order. The pattern and the scatter map (entry (cell, i, j) -> slot of the
CSR data, -1 where a constrained dof drops the entry) are computed once per grid with
array code on the device that uses them; each assembly is then one ``bincount`` (NumPy)
or one scatter kernel ``femopt_assembly_csr_scatter`` (CuPy, atomic adds into the slots).
"""

from __future__ import annotations

from itertools import product
from pathlib import Path
from typing import Any

import numpy as np

from femopt.assembly.grid_layout import GridLayout
from femopt.backend import array_namespace

SOURCE = Path(__file__).with_suffix(".cu")


class StructuredCSR:
    """Pattern and scatter map of the CSR matrix of ``layout`` with constraints ``fixed``.

    Args:
        layout: the grid.
        fixed: (n_dofs,) bool mask of constrained dofs (NumPy or CuPy: the namespace of
            every array built here).
    """

    def __init__(self, layout: GridLayout, fixed: Any):
        xp = array_namespace(fixed)
        self.xp = xp
        self.layout = layout
        dim, k = layout.dim, layout.k
        ns = layout.node_shape
        offsets = np.array([o[::-1] for o in product((-1, 0, 1), repeat=dim)])  # x fastest
        # node coordinates, (n_nodes, dim) in x, y, z order
        grids = xp.meshgrid(*[xp.arange(n) for n in ns[::-1]], indexing="ij")
        coords = xp.stack([g.ravel() for g in grids[::-1]], axis=1)
        strides = np.cumprod((1,) + ns[:-1])
        valid = xp.ones((layout.n_nodes, len(offsets)), dtype=bool)
        for ax in range(dim):
            c = coords[:, ax:ax + 1]
            o = xp.asarray(offsets[None, :, ax])
            valid &= (c + o >= 0) & (c + o < ns[ax])
        node_ids = xp.arange(layout.n_nodes, dtype=xp.int64)
        nbr = node_ids[:, None] + xp.asarray(offsets @ strides)[None, :]
        n_valid = valid.sum(axis=1).astype(xp.int64)
        # rows (i, node) in grid-layout order; columns (j, neighbour) in increasing order
        self.indptr = xp.zeros(layout.n_dofs + 1, dtype=xp.int64)
        self.indptr[1:] = xp.cumsum(xp.tile(n_valid * k, k))
        self.nnz = int(self.indptr[-1])
        nn = layout.n_nodes
        cols = (xp.arange(k)[None, None, :, None] * nn + nbr[None, :, None, :])
        cols = xp.broadcast_to(cols, (k, nn, k, len(offsets)))
        mask = xp.broadcast_to(valid[None, :, None, :], cols.shape)
        index_dtype = xp.int32 if self.nnz < 2**31 - 1 and layout.n_dofs < 2**31 else xp.int64
        self.indices = cols[mask].astype(index_dtype)
        # scatter map: slot of (cell, a, i, b, j)
        before = xp.cumsum(valid, axis=1) - valid  # valid offsets before each offset
        cell_nodes = xp.asarray(layout.cell_nodes())  # (n_cells, 2^dim)
        corners = layout.corners
        rel = corners[None, :, :] - corners[:, None, :]  # (a, b, dim) in {-1, 0, 1}
        t_ab = ((rel + 1) * 3 ** np.arange(dim)).sum(axis=2)  # offset index
        pos = before[cell_nodes[:, :, None], xp.asarray(t_ab)[None]]  # (cells, a, b)
        comp = xp.arange(k)
        rows = comp[None, None, :] * nn + cell_nodes[:, :, None]  # (cells, a, i)
        start = self.indptr[rows]
        width = n_valid[cell_nodes][:, :, None, None, None]
        slot = (start[:, :, :, None, None] + comp[None, None, None, None, :] * width
                + pos[:, :, None, :, None])
        fixed_cell = fixed[rows]  # (cells, a, i)
        drop = fixed_cell[:, :, :, None, None] | fixed_cell[:, None, None, :, :]
        slot = xp.where(drop, -1, slot)
        self.scatter = slot.reshape(layout.n_cells, layout.nd * layout.nd).astype(index_dtype)
        # NumPy assembles with bincount over the kept entries; the kernel skips slot -1
        self.keep = xp.flatnonzero(self.scatter.ravel() >= 0) if xp is np else None
        self.fixed_dofs = xp.flatnonzero(fixed)
        centre = int(np.flatnonzero((offsets == 0).all(axis=1))[0])
        dof_comp = xp.arange(layout.n_dofs) // nn
        dof_node = xp.arange(layout.n_dofs) % nn
        self.diag_slot = (self.indptr[:-1] + dof_comp * n_valid[dof_node]
                          + before[dof_node, centre])
        self.indptr = self.indptr.astype(index_dtype)
        self.shape = (layout.n_dofs, layout.n_dofs)

    def assemble_data(self, cell_matrices: Any) -> Any:
        """CSR data of sum_e K_e from cell matrices (n_cells, nd, nd), 1 on the diagonal
        of constrained dofs."""
        xp = self.xp
        if xp is np:
            w = cell_matrices.reshape(-1)[self.keep]
            data = np.bincount(self.scatter.reshape(-1)[self.keep].astype(np.intp),
                               weights=w, minlength=self.nnz).astype(cell_matrices.dtype)
        else:
            data = _scatter_gpu(cell_matrices, self.scatter, self.nnz)
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
    """``alpha A u + beta z`` with an assembled CSR matrix (SciPy, or the raw SpMV kernel
    ``femopt_assembly_csr_spmv`` on CuPy arrays)."""

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
        return spmv_gpu(self.pattern, self.data, u, out, alpha, beta, z)

    def diagonal(self) -> Any:
        return self.data[self.pattern.diag_slot]

    def to_dense(self) -> Any:
        xp = self.xp
        p = self.pattern
        dense = xp.zeros(self.shape, dtype=self.data.dtype)
        rows = xp.searchsorted(p.indptr, xp.arange(p.nnz), side="right") - 1
        dense[rows, p.indices] = self.data
        return dense


# -- CuPy launchers -------------------------------------------------------------------

def _index_name(a: Any) -> str:
    return "int" if a.dtype == np.int32 else "long long"


def _real_name(a: Any) -> str:
    return "double" if a.dtype == np.float64 else "float"


def _scatter_gpu(cell_matrices: Any, scatter: Any, nnz: int) -> Any:
    import cupy

    from femopt.backend.kernels import get_kernel, launch_1d

    _register()
    values = cupy.ascontiguousarray(cell_matrices).reshape(-1)
    data = cupy.zeros(nnz, dtype=values.dtype)
    name = f"femopt_assembly_csr_scatter<{_real_name(values)}, {_index_name(scatter)}>"
    kern = get_kernel(SOURCE, name)
    launch_1d(kern, values.size, (values, scatter.reshape(-1), data, np.int64(values.size)))
    return data


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

        _register()
        ke = cupy.asarray(ke, dtype=scale.dtype).reshape(-1)
        data = cupy.zeros(self.nnz, dtype=scale.dtype)
        kern = get_kernel(SOURCE, f"femopt_assembly_csr_scatter_scaled<{_real_name(scale)}, int>")
        n = self.scatter.size
        launch_1d(kern, n, (scale, ke, self.cell, self.local, self.scatter, data, np.int64(n)))
        return data

    def assemble(self, scale: Any, ke: Any) -> Any:
        import cupyx.scipy.sparse as csp

        return csp.csr_matrix((self.assemble_data(scale, ke), self.indices, self.indptr),
                              shape=self.shape)


def _register() -> None:
    from femopt.backend.kernels import register_instances

    register_instances(SOURCE, [f"femopt_assembly_csr_{op}<{r}, {i}>"
                                for op in ("scatter", "scatter_scaled", "spmv")
                                for r in ("double", "float") for i in ("int", "long long")])


def spmv_gpu(pattern: StructuredCSR, data: Any, u: Any, out: Any = None, alpha: float = 1.0,
             beta: float = 0.0, z: Any = None) -> Any:
    """``alpha A u + beta z`` with the CSR kernel (8 lanes per row)."""
    import cupy

    from femopt.backend.kernels import get_kernel, launch_1d

    _register()
    if out is None:
        out = cupy.empty_like(u)
    if z is None:
        z, beta = u, 0.0
    real = data.dtype.type
    name = f"femopt_assembly_csr_spmv<{_real_name(data)}, {_index_name(pattern.indices)}>"
    kern = get_kernel(SOURCE, name)
    n = pattern.shape[0]
    launch_1d(kern, 8 * n, (pattern.indptr, pattern.indices, data, u, z, out,
                            real(alpha), real(beta), np.int64(n)))
    return out
