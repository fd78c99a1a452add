"""Sparse assembly with a fixed sparsity pattern and a precomputed scatter map.

The pattern of the reduced stiffness (free dofs only) never changes during an
optimization, so it is built once: every (cell, i, j) entry of the element matrices that
lands on two free dofs gets the index of its slot in the CSR data array. Each assembly is
then one weighted ``bincount`` (CPU) or one scatter kernel (GPU), with no sorting.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


class FixedPatternAssembler:
    """Assembles ``K = sum_e s_e K_e`` restricted to free dofs into a fixed CSR pattern.

    Args:
        cell_dofs: (n_cells, nd) global dofs of each cell.
        n_dofs: number of global dofs.
        free: sorted global indices of the free (unconstrained) dofs.

    The pattern is built on first use: a solver that only restricts and expands vectors
    (matrix-free multigrid) never pays for it.
    """

    _PATTERN = frozenset({"cell_reduced", "keep", "scatter", "_keys", "indices", "indptr",
                          "nnz", "_local", "_cell"})

    def __init__(self, cell_dofs: np.ndarray, n_dofs: int, free: np.ndarray):
        self.n_cells, self.nd = cell_dofs.shape
        self.n_dofs = n_dofs
        self.free = np.asarray(free, dtype=np.int64)
        self.shape = (self.free.size, self.free.size)
        self.constant: np.ndarray | None = None  # CSR data added to every assembly
        self._cell_dofs = cell_dofs

    def __getattr__(self, name: str):
        if name in FixedPatternAssembler._PATTERN and "_cell_dofs" in self.__dict__:
            self._build_pattern(self.__dict__.pop("_cell_dofs"))
            return getattr(self, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _build_pattern(self, cell_dofs: np.ndarray) -> None:
        n_dofs = self.n_dofs
        reduced = np.full(n_dofs, -1, dtype=np.int64)
        reduced[self.free] = np.arange(self.free.size)
        self.cell_reduced = reduced[cell_dofs]  # (n_cells, nd), -1 for fixed dofs
        r = np.broadcast_to(self.cell_reduced[:, :, None], (self.n_cells, self.nd, self.nd))
        c = np.broadcast_to(self.cell_reduced[:, None, :], (self.n_cells, self.nd, self.nd))
        keep = ((r >= 0) & (c >= 0)).ravel()
        self.keep = np.flatnonzero(keep)  # positions in the flattened (cell, i, j) array
        n = self.free.size
        keys = r.ravel()[self.keep] * n + c.ravel()[self.keep]
        unique, self.scatter = np.unique(keys, return_inverse=True)
        self._keys = unique
        self.indices = (unique % n).astype(np.int32)
        rows = unique // n
        self.indptr = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(np.bincount(rows, minlength=n), out=self.indptr[1:])
        self.nnz = unique.size
        # entries of a uniform element matrix that survive, by position in the (nd, nd) block
        self._local = self.keep % (self.nd * self.nd)
        self._cell = self.keep // (self.nd * self.nd)

    def add_constant(self, ke: np.ndarray | None = None,
                     diagonal: np.ndarray | None = None) -> None:
        """Add a design-independent part to every assembled matrix: element matrices
        ``ke`` ((nd, nd) or (n_cells, nd, nd), unscaled; e.g. convection) and/or a
        ``diagonal`` of full-dof values (e.g. springs to ground). Both fit the fixed
        pattern: the element blocks are in it, and so is every free dof's diagonal."""
        data = np.zeros(self.nnz) if self.constant is None else self.constant.copy()
        if ke is not None:
            data += self._assemble_scaled(np.ones(self.n_cells), ke)
        if diagonal is not None:
            d = np.asarray(diagonal, dtype=float)[self.free]
            rows = np.flatnonzero(d)
            n = self.free.size
            pos = np.searchsorted(self._keys, rows * n + rows)
            data[pos] += d[rows]
        self.constant = data

    def _assemble_scaled(self, scale: np.ndarray, ke: np.ndarray) -> np.ndarray:
        if ke.ndim == 2:
            # the design changes, the element matrix does not: gather its entries once
            if getattr(self, "_ke_src", None) is not ke:
                self._ke_src, self._ke_vals = ke, ke.ravel()[self._local]
            weights = scale[self._cell] * self._ke_vals
        else:
            weights = (scale[:, None, None] * ke).ravel()[self.keep]
        return np.bincount(self.scatter, weights=weights, minlength=self.nnz)

    def assemble_data(self, scale: np.ndarray, ke: np.ndarray, constant: bool = True
                      ) -> np.ndarray:
        """CSR data of sum_e scale_e * K_e; ``ke`` is (nd, nd) for all cells or
        (n_cells, nd, nd); plus the constant part (:meth:`add_constant`), if any, unless
        ``constant`` is False (a mass matrix in the same pattern)."""
        data = self._assemble_scaled(scale, ke)
        return data if self.constant is None or not constant else data + self.constant

    def assemble(self, scale: np.ndarray, ke: np.ndarray, constant: bool = True
                 ) -> sp.csr_matrix:
        data = self.assemble_data(scale, ke, constant)
        return sp.csr_matrix((data, self.indices, self.indptr), shape=self.shape)

    def restrict(self, vec: np.ndarray) -> np.ndarray:
        """Free-dof part of a full dof vector (or of the columns of a matrix)."""
        return vec[self.free]

    def expand(self, vec_free: np.ndarray) -> np.ndarray:
        """Full dof vector with zeros on constrained dofs."""
        out = np.zeros((self.n_dofs,) + vec_free.shape[1:], dtype=vec_free.dtype)
        out[self.free] = vec_free
        return out
