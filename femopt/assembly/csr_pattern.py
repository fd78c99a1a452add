"""The free-dof CSR pattern of a mesh and the gather map of its element matrices, built on
the device by one sort.

The host's :class:`~femopt.assembly.sparse.FixedPatternAssembler` finds the pattern with
``np.unique`` of the (row, column) keys of every kept element-matrix entry (the entries
(cell, i, j) whose dofs i and j are both free), and the GPU path then sorted the entries
by their slot a second time for the gather (:func:`femopt.assembly.csr_gather.gather_map`).
Here one stable sort of the keys on ``xp`` gives both:

- the keys in order, whose first occurrences are the CSR values (slots): the row of a key
  is key // n_free, its column key % n_free, so ``indptr`` is a count of rows and
  ``indices`` the columns of the distinct keys;
- the kept entries in slot order and, within a slot, in the order of their flat position
  ``cell * nd^2 + i * nd + j`` (the sort is stable and the keys are laid out in that
  order): exactly the order of the host's gather map, hence of the CPU's ``bincount``,
  so a gather over it sums every value as the CPU does, bit for bit.

The keys are laid out a batch of cells at a time into arrays sized once (the number of
kept entries, sum over cells of (free dofs of the cell)^2), so the only peak beyond the
map itself is the sort's. With CuPy everything stays on the device (its argsort is a
stable radix sort); with NumPy the same code is the twin the tests compare with the host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

BATCH = 1 << 18  # cells per batch of keys: (batch, nd, nd) int64 temporaries


@dataclass
class DevicePattern:
    """A free-dof CSR pattern and the gather map of the element-matrix entries into it.

    Attributes:
        xp: the array module of the arrays.
        indptr: (n_free + 1,) row offsets (int32, int64 from 2^31 values).
        indices: (nnz,) int32 columns, sorted within each row.
        ptr: (nnz + 1,) int64: the kept entries of value s are ptr[s] .. ptr[s+1]-1.
        position: (n_entries,) flat position ``cell * nd^2 + i * nd + j`` of each kept
            entry in slot order (int32, int64 from 2^31 positions).
        n_cells, nd: the cells and the element matrices' size.
    """

    xp: Any
    indptr: Any
    indices: Any
    ptr: Any
    position: Any
    n_cells: int
    nd: int

    @property
    def nnz(self) -> int:
        return int(self.indices.shape[0])

    @property
    def n_free(self) -> int:
        return int(self.indptr.shape[0]) - 1

    def cells(self) -> Any:
        """(n_entries,) int32 cell of each kept entry, in slot order."""
        return (self.position // (self.nd * self.nd)).astype(self.xp.int32)

    def local(self) -> Any:
        """(n_entries,) position i * nd + j of each kept entry in its element matrix."""
        return self.position % (self.nd * self.nd)

    def values(self, ke: Any, dtype: Any = np.float64) -> Any:
        """The kept entries of ``ke`` ((n_cells, nd, nd) on ``xp``, or one (nd, nd) for
        every cell) in slot order, as ``dtype``."""
        ke = self.xp.asarray(ke, dtype=dtype)
        if ke.ndim == 2:
            return ke.reshape(-1)[self.local()]
        return ke.reshape(-1)[self.position]


def build_pattern(cells: Any, dofs_per_node: int, free: Any, n_dofs: int, xp: Any,
                  batch: int = BATCH) -> DevicePattern:
    """The CSR pattern of the free-dof matrix of ``cells`` and its gather map, on ``xp``.

    Args:
        cells: (n_cells, nodes_per_cell) node indices (host or ``xp``).
        dofs_per_node: k; element dofs are node-major (node * k + component).
        free: sorted global indices of the free dofs. n_dofs: number of global dofs.
        xp: numpy or cupy. batch: cells per batch of keys.
    Returns:
        The pattern, equal to :class:`~femopt.assembly.sparse.FixedPatternAssembler`'s
        (``indptr``, ``indices``) and its gather map to
        :func:`~femopt.assembly.csr_gather.gather_map`'s.
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    cells = xp.asarray(cells)
    free = xp.asarray(free, dtype=xp.int64)
    n_cells, nn = (int(s) for s in cells.shape)
    k = int(dofs_per_node)
    nd, n = nn * k, int(free.shape[0])
    reduced = xp.full(n_dofs, -1, dtype=xp.int64)
    reduced[free] = xp.arange(n, dtype=xp.int64)
    comp = xp.arange(k, dtype=xp.int64)

    def cell_reduced(a: int, b: int) -> Any:  # (b - a, nd) free-dof index, -1 if fixed
        return reduced[(cells[a:b, :, None].astype(xp.int64) * k + comp).reshape(b - a, nd)]

    n_entries = 0
    for a in range(0, n_cells, batch):
        n_free_dofs = (cell_reduced(a, min(a + batch, n_cells)) >= 0).sum(axis=1)
        n_entries += int((n_free_dofs * n_free_dofs).sum())
    wide = n_cells * nd * nd >= 2**31
    keys = xp.empty(n_entries, dtype=xp.int64)
    position = xp.empty(n_entries, dtype=xp.int64 if wide else xp.int32)
    at = 0
    for a in range(0, n_cells, batch):
        b = min(a + batch, n_cells)
        r = cell_reduced(a, b)
        kept = xp.flatnonzero(((r[:, :, None] >= 0) & (r[:, None, :] >= 0)).reshape(-1))
        m = int(kept.shape[0])
        keys[at:at + m] = (r[:, :, None] * n + r[:, None, :]).reshape(-1)[kept]
        position[at:at + m] = (kept + a * nd * nd).astype(position.dtype)
        at += m
    # stable: NumPy's on request, CuPy's always (its only kind)
    order = xp.argsort(keys, kind="stable") if xp is np else xp.argsort(keys)
    keys = keys[order]
    position = position[order]
    del order
    first = xp.empty(n_entries, dtype=bool)
    if n_entries:
        first[0] = True
        xp.not_equal(keys[1:], keys[:-1], out=first[1:])
    starts = xp.flatnonzero(first)
    nnz = int(starts.shape[0])
    ptr = xp.empty(nnz + 1, dtype=xp.int64)
    ptr[:-1] = starts
    ptr[-1] = n_entries
    unique = keys[starts]
    del keys, first, starts
    indices = (unique % max(n, 1)).astype(xp.int32)
    indptr = xp.zeros(n + 1, dtype=xp.int32 if nnz < 2**31 else xp.int64)
    indptr[1:] = xp.cumsum(xp.bincount(unique // max(n, 1), minlength=n)).astype(indptr.dtype)
    return DevicePattern(xp, indptr, indices, ptr, position, n_cells, nd)
