"""The free-dof CSR pattern of a mesh and the gather map of its element matrices, built on
the device by sorts of the keys, a part of the rows at a time.

The host's :class:`~femopt.assembly.sparse.FixedPatternAssembler` finds the pattern with
``np.unique`` of the (row, column) keys of every kept element-matrix entry (the entries
(cell, i, j) whose dofs i and j are both free), and the GPU path then sorted the entries
by their slot a second time for the gather (:func:`femopt.assembly.csr_gather.gather_map`).
Here a stable sort of the keys on ``xp`` gives both:

- the keys in order, whose first occurrences are the CSR values (slots): the row of a key
  is key // n_free, its column key % n_free, so ``indptr`` is a count of rows and
  ``indices`` the columns of the distinct keys;
- the kept entries in slot order and, within a slot, in the order of their flat position
  ``cell * nd^2 + i * nd + j`` (the sort is stable and the keys are laid out in that
  order): exactly the order of the host's gather map, hence of the CPU's ``bincount``,
  so a gather over it sums every value as the CPU does, bit for bit.

A row's keys are the range [row n_free, (row + 1) n_free), so the rows cut into parts
(:data:`PARTS` runs of consecutive rows, each row's entries counted in a first pass) sort one
after the other and the parts' results follow each other: the same pattern and map as
one sort of all keys. Each part's keys are laid out a batch of cells at a time into
arrays sized once, so the peak beyond the map itself is one part's sort, not the whole
mesh's (at 10M tets 1.5e9 entries, some 72 GB at once). With CuPy everything stays on
the device (its argsort is a stable radix sort); with NumPy the same code is the twin
the tests compare with the host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from femopt.backend import to_host

BATCH = 1 << 16  # cells per batch of keys: (batch, nd, nd) int64 temporaries (75 MB for tet4
                 # elasticity), a few at once in every pass over the cells
# the keys sort in PARTS parts of rows (each a pass over the cells): the sorted positions
# (4 bytes an entry) and a part's sort (keys, positions, the order, the sorted copies and
# the radix sort's scratch, some 48 bytes an entry of the part) are 20 bytes an entry,
# what making the gather's values next holds (mesh_device.GATHER_PEAK)
PARTS, MIN_PART = 3, 1 << 20
# the gather's values are made in VALUE_PARTS batches of cells (each pass scans every
# entry's cell), of at least VALUE_BATCH cells: a batch's element matrices and the indices
# of its entries are an eighth of the whole
VALUE_PARTS, VALUE_BATCH = 8, 1 << 15


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

    def values(self, ke: Any, dtype: Any = np.float64, cells: Any = None) -> Any:
        """The kept entries of ``ke`` in slot order, as ``dtype``. ``ke``: (n_cells, nd, nd)
        on ``xp``, one (nd, nd) for every cell, or a function ``ke(a, b)`` giving the
        matrices of cells a .. b-1, called for :data:`VALUE_PARTS` batches of cells (at
        least :data:`VALUE_BATCH` each) so that the matrices of every cell are never
        held at once (``cells``: this pattern's :meth:`cells`, when the caller has
        them)."""
        xp = self.xp
        if not callable(ke):
            ke = xp.asarray(ke, dtype=dtype)
            if ke.ndim == 2:
                return ke.reshape(-1)[self.local()]
            return ke.reshape(-1)[self.position]
        cells = self.cells() if cells is None else cells
        out = xp.empty(self.position.shape[0], dtype=dtype)
        size = self.nd * self.nd
        step = max(VALUE_BATCH, -(-self.n_cells // VALUE_PARTS))
        for a in range(0, self.n_cells, step):
            b = min(a + step, self.n_cells)
            sel = xp.flatnonzero((cells >= a) & (cells < b))
            block = xp.asarray(ke(a, b), dtype=dtype).reshape(-1)
            out[sel] = block[self.position[sel] - a * size]
        return out


def part_entries(n_entries: int) -> int:
    """Entries of a part of rows whose keys sort at once, for ``n_entries`` in all."""
    return max(MIN_PART, -(-int(n_entries) // PARTS))


def build_pattern(cells: Any, dofs_per_node: int, free: Any, n_dofs: int, xp: Any,
                  batch: int = BATCH, part: int | None = None) -> DevicePattern:
    """The CSR pattern of the free-dof matrix of ``cells`` and its gather map, on ``xp``.

    Args:
        cells: (n_cells, nodes_per_cell) node indices (host or ``xp``).
        dofs_per_node: k; element dofs are node-major (node * k + component).
        free: sorted global indices of the free dofs. n_dofs: number of global dofs.
        xp: numpy or cupy. batch: cells per batch of keys. part: entries per part of
            rows sorted at once (at least one row's; None: :func:`part_entries`).
    Returns:
        The pattern, equal to :class:`~femopt.assembly.sparse.FixedPatternAssembler`'s
        (``indptr``, ``indices``) and its gather map to
        :func:`~femopt.assembly.csr_gather.gather_map`'s.
    """
    if batch < 1 or (part is not None and part < 1):
        raise ValueError(f"batch and part must be >= 1, got {batch}, {part}")
    cells = xp.asarray(cells)
    free = xp.asarray(free, dtype=xp.int64)
    n_cells, nn = (int(s) for s in cells.shape)
    k = int(dofs_per_node)
    nd, n = nn * k, int(free.shape[0])
    reduced = xp.full(n_dofs, -1, dtype=xp.int64)
    reduced[free] = xp.arange(n, dtype=xp.int64)
    comp = xp.arange(k, dtype=xp.int64)

    def batches():  # (first cell, kept flat positions in the batch, their keys)
        for a in range(0, n_cells, batch):
            b = min(a + batch, n_cells)
            r = reduced[(cells[a:b, :, None].astype(xp.int64) * k + comp).reshape(b - a, nd)]
            kept = xp.flatnonzero(((r[:, :, None] >= 0) & (r[:, None, :] >= 0)).reshape(-1))
            yield a, kept, (r[:, :, None] * n + r[:, None, :]).reshape(-1)[kept]

    # the entries of each row (a row's key range is [row n, row n + n)), to cut the rows
    # into parts of at most ``part`` entries (or one row) whose keys sort alone
    per_row = xp.zeros(n, dtype=xp.int64)
    for _, _, keys in batches():
        if keys.shape[0]:  # (CuPy's bincount takes no empty array)
            per_row += xp.bincount(keys // n, minlength=n)
    ends = to_host(xp.cumsum(per_row)).astype(np.int64)
    del per_row
    n_entries = int(ends[-1]) if n else 0
    cuts = _row_cuts(ends, part_entries(n_entries) if part is None else part)
    wide = n_cells * nd * nd >= 2**31
    position = xp.empty(n_entries, dtype=xp.int64 if wide else xp.int32)
    slot_starts, uniques, at = [], [], 0
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        size = int(ends[hi - 1] - (ends[lo - 1] if lo else 0)) if hi > lo else 0
        keys, pos = _part(batches(), lo * n, hi * n, size, xp, position.dtype, nd)
        # stable: NumPy's on request, CuPy's always (its only kind)
        order = xp.argsort(keys, kind="stable") if xp is np else xp.argsort(keys)
        keys = keys[order]
        position[at:at + keys.shape[0]] = pos[order]
        del order, pos
        first = xp.empty(keys.shape[0], dtype=bool)
        if keys.shape[0]:
            first[0] = True
            xp.not_equal(keys[1:], keys[:-1], out=first[1:])
        starts = xp.flatnonzero(first)
        slot_starts.append(starts + at)
        uniques.append(keys[starts])
        at += int(keys.shape[0])
        del keys, first, starts
    unique = xp.concatenate(uniques) if uniques else xp.empty(0, dtype=xp.int64)
    nnz = int(unique.shape[0])
    ptr = xp.empty(nnz + 1, dtype=xp.int64)
    if nnz:
        ptr[:-1] = xp.concatenate(slot_starts)
    ptr[-1] = n_entries
    indices = (unique % max(n, 1)).astype(xp.int32)
    indptr = xp.zeros(n + 1, dtype=xp.int32 if nnz < 2**31 else xp.int64)
    if nnz:  # (CuPy's bincount takes no empty array)
        indptr[1:] = xp.cumsum(xp.bincount(unique // n, minlength=n)).astype(indptr.dtype)
    return DevicePattern(xp, indptr, indices, ptr, position, n_cells, nd)


def _row_cuts(ends: np.ndarray, part_entries: int) -> list[int]:
    """Row bounds [0, ..., n] of parts of consecutive rows with at most ``part_entries``
    entries each (a row with more is a part of its own); ``ends``: the cumulative entries
    per row (host)."""
    n = int(ends.shape[0])
    cuts, row = [0], 0
    while row < n:
        done = int(ends[row - 1]) if row else 0
        # the last row whose cumulative count stays within the part, at least one row
        nxt = int(np.searchsorted(ends, done + part_entries, side="right"))
        row = max(nxt, row + 1)
        cuts.append(min(row, n))
    return cuts if n else [0, 0]


def _part(batches: Any, lo: int, hi: int, size: int, xp: Any, pos_dtype: Any, nd: int
          ) -> tuple[Any, Any]:
    """The ``size`` keys in [lo, hi) of every batch and their flat positions, in position
    order."""
    keys = xp.empty(size, dtype=xp.int64)
    pos = xp.empty(size, dtype=pos_dtype)
    at = 0
    for a, kept, kb in batches:
        sel = xp.flatnonzero((kb >= lo) & (kb < hi))
        m = int(sel.shape[0])
        keys[at:at + m] = kb[sel]
        pos[at:at + m] = (kept[sel] + a * nd * nd).astype(pos_dtype)
        at += m
    return keys, pos
