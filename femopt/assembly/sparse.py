"""Sparse assembly with a fixed sparsity pattern and a precomputed gather matrix.

The pattern of the reduced stiffness (free dofs only) never changes during an
optimization, so it is built once, from the mesh's node adjacency: the node pairs that
share a cell (``nodes_per_cell``^2 per cell, not ``nd``^2 dof pairs), each expanded to
its free dofs. Every (cell, i, j) entry of the element matrices that lands on two free
dofs gets the index of its slot in the CSR data array, computed in chunks of cells
straight into int32 arrays (no sort of ``nd``^2 keys per cell, no int64 pairs of the
whole mesh at once).

The slots and the element-matrix entries are kept as one sparse matrix
G (n_cells x (nnz + 1)), a row per cell, so that one design's assembly is one product,

    data = G^T s,    data[slot] = sum over the cell's entries at slot of s_e K0_e[i, j],

SciPy's compiled ``csc_matvec``, summing each slot in cell order as a ``bincount`` of the
entries would (the same values bit for bit) in one pass with no temporary of the
entries' size. Entries on a supported dof go to the extra slot nnz (dropped), so every
row of G holds all nd^2 entries of its cell and G's values are the element matrices'
own array, not a copy. The GPU paths read the same slots as a scatter map (``keep``,
``scatter``, ``_cell``, ``_local``, built from them on first use).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

CHUNK_CELLS = 1 << 16  # cells per chunk of the slot computation


class FixedPatternAssembler:
    """Assembles ``K = sum_e s_e K_e`` restricted to free dofs into a fixed CSR pattern.

    Args:
        cell_dofs: (n_cells, nd) global dofs of each cell.
        n_dofs: number of global dofs.
        free: sorted global indices of the free (unconstrained) dofs.
        dofs_per_node: k when the cell dofs are node-major blocks, dof = node * k + c
            (the pattern is then built on nodes); 1 treats every dof as a node.

    The pattern is built on first use: a solver that only restricts and expands vectors
    (matrix-free multigrid) never pays for it.
    """

    _PATTERN = frozenset({"indices", "indptr", "nnz", "cell_slots", "cell_ptr"})
    _SCATTER = frozenset({"keep", "scatter", "_local", "_cell"})

    def __init__(self, cell_dofs: np.ndarray, n_dofs: int, free: np.ndarray,
                 dofs_per_node: int = 1):
        self.n_cells, self.nd = cell_dofs.shape
        self.n_dofs = n_dofs
        self.free = np.asarray(free, dtype=np.int64)
        self.shape = (self.free.size, self.free.size)
        self.constant: np.ndarray | None = None  # CSR data added to every assembly
        self._cell_dofs = cell_dofs
        self.k = dofs_per_node if _node_major(cell_dofs, n_dofs, dofs_per_node) else 1
        self._gathers: dict[int, tuple[np.ndarray, sp.csr_matrix]] = {}
        self._built: set[str] = set()

    def __getattr__(self, name: str):
        for group, build in ((FixedPatternAssembler._PATTERN, "_build_pattern"),
                             (FixedPatternAssembler._SCATTER, "_build_scatter")):
            if name in group and build not in self.__dict__.get("_built", {build}):
                self._built.add(build)
                getattr(self, build)()
                return getattr(self, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _build_pattern(self) -> None:
        k, cell_dofs = self.k, self._cell_dofs
        n_nodes = self.n_dofs // k
        nodes = cell_dofs[:, ::k] // k  # (n_cells, npc)
        npc = nodes.shape[1]
        free_mask = np.zeros(self.n_dofs, dtype=bool)
        free_mask[self.free] = True
        reduced = np.full(self.n_dofs, -1, dtype=np.int64)
        reduced[self.free] = np.arange(self.free.size)
        node_free = free_mask.reshape(n_nodes, k)
        n_free = node_free.sum(axis=1)
        rank = (np.cumsum(node_free, axis=1) - 1).reshape(-1)  # of a free dof in its node
        # the node graph: pairs of nodes that share a cell, in sorted order, and the
        # pair of every (cell, a, b)
        pair, rows, cols = node_pairs(nodes, n_nodes)
        width = n_free[cols]  # free dofs each node pair gives a row of its first node
        row_len = np.bincount(rows, weights=width, minlength=n_nodes).astype(np.int64)
        node_ptr = np.zeros(n_nodes + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n_nodes), out=node_ptr[1:])
        before = np.cumsum(width) - width  # free columns of the row before each pair
        before -= before[node_ptr[:-1]][rows]
        # the free-dof CSR: row r (dof f, node f // k) has the free dofs of its node's
        # neighbours, in order
        n = self.free.size
        lengths = row_len[self.free // k]
        self.nnz = int(lengths.sum())
        index = np.int32 if max(self.nnz, n) < 2**31 else np.int64
        self.indptr = np.zeros(n + 1, dtype=index)
        np.cumsum(lengths, out=self.indptr[1:])
        neighbours = reduced.reshape(n_nodes, k)[cols][node_free[cols]]  # per node row
        del cols
        row_start = np.zeros(n_nodes, dtype=np.int64)
        np.cumsum(row_len[:-1], out=row_start[1:])
        shift = np.repeat(row_start[self.free // k] - self.indptr[:-1], lengths)
        self.indices = neighbours[shift + np.arange(self.nnz)].astype(index)
        del shift, neighbours
        # the slot of every (cell, i, j) entry, a row of G per cell; an entry on a
        # supported dof goes to the extra slot nnz, whose sum is dropped: every row
        # then holds all nd^2 entries, so G's values can be the element matrices
        # themselves (no copy) and G's row pointer is e * nd^2
        cell_free = free_mask[cell_dofs]
        nd2 = self.nd * self.nd
        slot_index = np.int32 if self.nnz < 2**31 - 1 else np.int64
        self.cell_ptr = np.arange(self.n_cells + 1, dtype=np.int64) * nd2
        if self.cell_ptr[-1] < 2**31:
            self.cell_ptr = self.cell_ptr.astype(np.int32)
        self.cell_slots = np.empty(self.n_cells * nd2, dtype=slot_index)
        row_of = self.indptr.astype(slot_index)
        before = before.astype(slot_index)
        rank = rank.astype(slot_index)
        for c0 in range(0, self.n_cells, CHUNK_CELLS):
            c1 = min(c0 + CHUNK_CELLS, self.n_cells)
            d = cell_dofs[c0:c1]
            m = d.shape[0]
            # slot of (i, j) = row i's start + free columns before node j's + j's rank
            slot = row_of[np.maximum(reduced[d], 0)][:, :, None] + rank[d][:, None, :]
            slot.reshape(m, npc, k, npc, k)[...] += before[pair[c0:c1]][:, :, None, :, None]
            slot[~(cell_free[c0:c1, :, None] & cell_free[c0:c1, None, :])] = self.nnz
            self.cell_slots[c0 * nd2:c1 * nd2] = slot.reshape(-1)

    def _build_scatter(self) -> None:
        """The slots as a scatter map of the flattened (cell, i, j) entries (GPU paths)."""
        self.keep = np.flatnonzero(self.cell_slots != self.nnz)
        self.scatter = self.cell_slots[self.keep]
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
            data[self.diagonal_slots()[rows]] += d[rows]
        self.constant = data

    def diagonal_slots(self) -> np.ndarray:
        """(n_free,) the CSR slot of every free dof's diagonal entry."""
        n = self.free.size
        row = np.repeat(np.arange(n), np.diff(self.indptr))
        return np.flatnonzero(self.indices == row)  # one per row, rows in order

    def gather_matrix(self, ke: np.ndarray) -> sp.csr_matrix:
        """G (n_cells x (nnz + 1)): row e holds K_e's entries at their CSR slots, those on
        a supported dof at the extra slot nnz (``ke`` (nd, nd) for all cells or
        (n_cells, nd, nd); a C-contiguous float array of cells is G's values as it is,
        no copy); kept per ``ke`` array (stiffness, mass, a fixed part)."""
        kept = self._gathers.get(id(ke))
        if kept is not None and kept[0] is ke:
            return kept[1]
        values = (np.tile(ke.reshape(-1), self.n_cells) if ke.ndim == 2
                  else np.ascontiguousarray(ke).reshape(-1))
        g = sp.csr_matrix((values, self.cell_slots, self.cell_ptr),
                          shape=(self.n_cells, self.nnz + 1), copy=False)
        if len(self._gathers) >= 3:  # stiffness and mass stay; a one-off goes
            self._gathers.pop(next(iter(self._gathers)))
        self._gathers[id(ke)] = (ke, g)
        return g

    def _assemble_scaled(self, scale: np.ndarray, ke: np.ndarray) -> np.ndarray:
        g = self.gather_matrix(ke)
        return (g.T @ np.asarray(scale, dtype=g.dtype))[:self.nnz]

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


def node_pairs(nodes: np.ndarray, n_nodes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct node pairs (a, b) of the cells ``nodes`` (n_cells, npc), sorted by a
    then b (as ``np.unique`` of the keys a * n_nodes + b would sort them), and the index
    of the pair of every (cell, i, j).

    By counting rather than a sort of every key: SciPy's COO -> CSR pass groups the
    n_cells * npc^2 entries by their first node in one pass, each row (a node's some
    hundred entries) is sorted by the second node, and the first of each run of equal
    pairs starts a new pair. Returns (pair (n_cells, npc, npc), rows, cols)."""
    from scipy.sparse import _sparsetools

    n_cells, npc = nodes.shape
    total = n_cells * npc * npc
    index = np.int32 if max(total, n_nodes) < 2**31 else np.int64
    nodes = nodes.astype(index, copy=False)
    first = np.empty((n_cells, npc, npc), dtype=index)  # a of (cell, a, b)
    second = np.empty((n_cells, npc, npc), dtype=index)  # b of (cell, a, b)
    first[...] = nodes[:, :, None]
    second[...] = nodes[:, None, :]
    first, second = first.reshape(-1), second.reshape(-1)
    indptr, cols, entry = (np.empty(n_nodes + 1, dtype=index), np.empty(total, dtype=index),
                           np.empty(total, dtype=index))
    _sparsetools.coo_tocsr(n_nodes, n_nodes, total, first, second,
                           np.arange(total, dtype=index), indptr, cols, entry)
    del first, second
    _sparsetools.csr_sort_indices(n_nodes, indptr, cols, entry)
    starts = np.ones(total, dtype=bool)  # a new pair: a new row or a new column
    np.not_equal(cols[1:], cols[:-1], out=starts[1:])
    starts[indptr[:-1][np.diff(indptr) > 0]] = True
    pair_id = np.cumsum(starts, dtype=index) - 1
    pair = np.empty(total, dtype=index)
    pair[entry] = pair_id
    del pair_id, entry
    at = np.flatnonzero(starts)
    rows = np.searchsorted(indptr, at, side="right") - 1  # the node whose row holds it
    return pair.reshape(n_cells, npc, npc), rows.astype(np.int64), cols[at].astype(np.int64)


def _node_major(cell_dofs: np.ndarray, n_dofs: int, k: int) -> bool:
    """Whether every cell's dofs are whole nodes of ``k`` dofs, node-major (a * k + c)."""
    n_cells, nd = cell_dofs.shape
    if k <= 1 or nd % k or n_dofs % k:
        return False
    blocks = cell_dofs.reshape(n_cells, nd // k, k)
    base = blocks[:, :, :1]
    return bool(np.all(base % k == 0) and np.all(blocks == base + np.arange(k)))
