"""Sparse products with fixed patterns, values per design: the device hierarchy's Galerkin
operators without a general SpGEMM.

A general sparse product (cuSPARSE's SpGEMM, behind ``cupyx.scipy.sparse``'s ``@``)
rediscovers the output pattern at every call and asks for work buffers many times the
size of its operands (gigabytes for the 100k-tet bracket's hierarchy). Topology
optimization never changes a pattern, so :class:`FixedProduct` computes the pattern of
C = A B once on the host and each call only fills C's values (``fixed_spgemm.cu``: a
warp per row of C, its lanes over the entries of B's rows, no atomics, no work buffer;
A^T B by a warp per shared row adding into C atomically, so P^T A P's float32 sums vary
in order from run to run). A thread per row (:data:`WARP` 1) reads B's rows one entry
per thread, uncoalesced: 6.8x slower on the 1M-tet bracket's hierarchy (H100, 233 ms
against 34 ms per design). :class:`FixedGalerkin` chains the products
of a smoothed-aggregation level, P = T - s D^-1 A T and A_c = P^T (A P), with P's pattern
(T's and A T's together) and P^T's permutation fixed as well.

With NumPy arrays the same arithmetic runs vectorized (each product expanded into its
terms), which is how the CPU tests check the patterns and maps the kernel uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from femopt.solvers.row_split import split_product

SOURCE = Path(__file__).with_suffix(".cu")
WARP = 32  # threads per row of the products' kernels: 32 (a warp), or 1 (a thread)


def _pattern(m: sp.spmatrix) -> sp.csr_matrix:
    """The pattern of ``m`` as a CSR matrix of ones (float32: a product of patterns sums
    counts, exact far beyond any row's), the given entry order kept."""
    m = sp.csr_matrix(m)  # copies of the index arrays: SciPy may sort a matrix in place
    return sp.csr_matrix((np.ones(m.nnz, dtype=np.float32), m.indices.copy(),
                          m.indptr.copy()), shape=m.shape)


def _sorted(m: sp.csr_matrix) -> sp.csr_matrix:
    """``m``, or a copy with its columns sorted within rows where they are not."""
    if m.has_sorted_indices:
        return m
    m = m.copy()
    m.sort_indices()
    return m


def device_index(m: sp.csr_matrix, xp: Any) -> tuple[Any, Any]:
    """(indices, indptr) of the host CSR pattern ``m`` on ``xp``, int32, uploaded once per
    matrix object: every product and matrix of a hierarchy built on one pattern (A's in
    A T and A P and the level's operator, P's in A P and P^T (A P), a product's result
    in the next product and the next level) shares one copy on the device, some 28
    bytes per finest CSR value fewer than a copy each."""
    kept = getattr(m, "_femopt_device_index", None)
    if kept is None or kept[0] is not xp or kept[3] != _arrays_of(m):  # replaced: again
        as32 = lambda v: xp.asarray(np.asarray(v, dtype=np.int32))  # noqa: E731
        share_device_index(m, xp, as32(m.indices), as32(m.indptr))
        kept = m._femopt_device_index
    return kept[1], kept[2]


def _arrays_of(m: sp.csr_matrix) -> tuple[int, int, int]:
    """Which index arrays ``m`` has now (a cached device copy is of these)."""
    return id(m.indices), id(m.indptr), m.indices.size


def share_device_index(m: sp.csr_matrix, xp: Any, indices: Any, indptr: Any) -> None:
    """Let ``m``'s :func:`device_index` be ``indices``, ``indptr`` (int32 arrays on
    ``xp`` equal to ``m``'s, e.g. the operator's own pattern on the device)."""
    m._femopt_device_index = (xp, indices, indptr, _arrays_of(m))


def _shareable(m: sp.spmatrix, copy: sp.csr_matrix) -> sp.csr_matrix:
    """``m`` where its device index may be shared (a CSR matrix with sorted indices),
    else ``copy``, a CSR copy of its pattern."""
    return m if m.format == "csr" and m.has_sorted_indices else copy


def csr_on(pattern: sp.csr_matrix, data: Any, xp: Any) -> Any:
    """The matrix of ``pattern`` (host SciPy) with ``data`` on ``xp``."""
    if xp is np:
        return sp.csr_matrix((data, pattern.indices, pattern.indptr), shape=pattern.shape)
    import cupyx.scipy.sparse as csp

    return csp.csr_matrix((data, *device_index(pattern, xp)), shape=pattern.shape)


class FixedProduct:
    """C = A B (or A^T B, ``transpose_a``) for CSR patterns of A and B fixed (host SciPy
    matrices; their entry order is the order of the values passed at each call); C's
    pattern is sorted by column. A^T B runs a warp per shared row of A and B, adding
    into C's rows atomically: as many warps as fine rows where P^T (A P) by rows of P^T
    would have one per coarse row. A B by a warp per row needs B's rows free of repeated
    columns (two lanes would add to one slot at once): a B with repeats is multiplied by
    the thread-per-row kernel."""

    def __init__(self, a: sp.spmatrix, b: sp.spmatrix, xp: Any = np,
                 transpose_a: bool = False):
        pa, pb = _pattern(a), _pattern(b)
        self.transpose_a = transpose_a
        # positive products: no cancellation, the whole pattern, by rows of the left
        # factor in parts on the process's cores (on sorted operands, copies where they
        # are not: pa, pb keep the given entry order, the order of the values)
        left = _sorted(pa.T.tocsr() if transpose_a else pa)
        right = _sorted(pb)
        c = split_product(left, right).tocsr()
        c.sort_indices()
        if max(pa.nnz, pb.nnz, c.nnz) >= 2**31 - 32:  # a warp's lanes step 32 past
            raise ValueError("a fixed-pattern product of 2^31 entries or more: the kernels "
                             "index in 32 bits")
        # repeated columns in a row of B (a warp's lanes would collide in C's row)
        self.repeats = not transpose_a and _has_repeats(right)
        self.xp, self.shape = xp, c.shape
        c.data = np.ones(c.nnz, dtype=np.float32)
        self.pattern = c  # its own arrays, sorted: no product reorders them
        self._host = (pa, pb)
        # the operands' index arrays shared with whatever else was built on the same
        # CSR matrix objects where those are sorted (SciPy never reorders them in place;
        # pa, pb are copies with the same arrays' values)
        self.a_idx, self.a_ptr = device_index(_shareable(a, pa), xp)
        self.b_idx, self.b_ptr = device_index(_shareable(b, pb), xp)
        self.c_idx, self.c_ptr = device_index(c, xp)
        if xp is np:
            self._terms = self._expand()

    @property
    def nnz(self) -> int:
        return int(self.pattern.nnz)

    def arrays(self) -> list[Any]:
        """The index arrays this product uses on its device (some shared)."""
        return [self.a_ptr, self.a_idx, self.b_ptr, self.b_idx, self.c_ptr, self.c_idx]

    def _expand(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every term a_ik b_kj as (entry of A, entry of B, slot of C), in the kernel's
        order (A's rows and entries, then B's)."""
        pa, pb = self._host
        a_rows = np.repeat(np.arange(pa.shape[0]), np.diff(pa.indptr))
        # B's row that meets each A entry: its column (A B) or its row (A^T B)
        meet = a_rows if self.transpose_a else pa.indices
        per = np.diff(pb.indptr)[meet]                  # terms of each A entry
        a_ent = np.repeat(np.arange(pa.nnz), per)
        start = np.repeat(pb.indptr[meet], per)
        offset = np.arange(a_ent.size) - np.repeat(np.cumsum(per) - per, per)
        b_ent = start + offset
        rows = np.repeat(pa.indices if self.transpose_a else a_rows, per)
        c = self.pattern
        key = rows.astype(np.int64) * c.shape[1] + pb.indices[b_ent]
        ckey = (np.repeat(np.arange(c.shape[0]), np.diff(c.indptr)).astype(np.int64)
                * c.shape[1] + c.indices)
        return a_ent, b_ent, np.searchsorted(ckey, key)

    def __call__(self, a_data: Any, b_data: Any) -> Any:
        """C's values (in :attr:`pattern`'s order) for A's and B's values."""
        xp = self.xp
        if xp is np:
            a_ent, b_ent, slot = self._terms
            out = np.zeros(self.nnz, dtype=np.result_type(a_data, b_data))
            np.add.at(out, slot, a_data[a_ent] * b_data[b_ent])
            return out
        from femopt.backend.kernels import get_kernel, launch_1d, real_name

        b_data = xp.ascontiguousarray(b_data, dtype=a_data.dtype)
        if self.transpose_a:
            out = xp.zeros(self.nnz, dtype=a_data.dtype)
            name, rows = "femopt_solvers_fixed_spgemm_tn", int(self.a_ptr.size - 1)
        else:
            out = xp.empty(self.nnz, dtype=a_data.dtype)
            name, rows = "femopt_solvers_fixed_spgemm", self.shape[0]
        lanes = 32 if WARP > 1 and not self.repeats else 1
        kern = get_kernel(SOURCE, f"{name}{'_warp' if lanes > 1 else ''}<{real_name(out)}>")
        launch_1d(kern, lanes * rows, (self.a_ptr, self.a_idx, a_data, self.b_ptr,
                                       self.b_idx, b_data, self.c_ptr, self.c_idx, out,
                                       np.int64(rows)))
        return out


def _has_repeats(m: sp.csr_matrix) -> bool:
    """Whether a row of ``m`` (its columns sorted) holds a column twice."""
    same = np.diff(m.indices) == 0
    ends = m.indptr[1:-1] - 1  # entry k and k + 1 in different rows
    same[ends[(ends >= 0) & (ends < same.size)]] = False
    return bool(same.any())


def _slots(outer: sp.csr_matrix, inner: sp.csr_matrix) -> np.ndarray:
    """Where each entry of ``inner`` (a sub-pattern of ``outer``, sorted) sits in
    ``outer``'s values."""
    rows = np.repeat(np.arange(inner.shape[0]), np.diff(inner.indptr)).astype(np.int64)
    okey = (np.repeat(np.arange(outer.shape[0]), np.diff(outer.indptr)).astype(np.int64)
            * outer.shape[1] + outer.indices)
    return np.searchsorted(okey, rows * outer.shape[1] + inner.indices)


class FixedGalerkin:
    """One smoothed-aggregation level with fixed patterns: from A's values (pattern
    ``a``) and the fixed tentative prolongator ``t`` (host SciPy), P = T - s D^-1 A T,
    P^T, and the coarse operator P^T A P, each a matrix on ``xp``."""

    def __init__(self, a: sp.spmatrix, t: sp.spmatrix, xp: Any, dtype: Any):
        self.xp, self.dtype = xp, dtype
        t = sp.csr_matrix(t)
        t.sort_indices()
        self.at = FixedProduct(a, t, xp)
        p = _pattern(self.at.pattern + _pattern(t))
        p.sort_indices()
        self.p_pattern = p
        self.rows_at = xp.asarray(np.repeat(np.arange(p.shape[0]),
                                            np.diff(self.at.pattern.indptr)).astype(np.int32))
        self.slot_at = xp.asarray(_slots(p, self.at.pattern))
        self.slot_t = xp.asarray(_slots(p, _pattern(t)))
        self.t_data = xp.asarray(t.data.astype(dtype))
        perm = sp.csr_matrix((np.arange(p.nnz, dtype=np.float64), p.indices, p.indptr),
                             shape=p.shape).T.tocsr()
        perm.sort_indices()
        self.pt_pattern = _pattern(perm)
        self.pt_perm = xp.asarray(perm.data.astype(np.int64))
        self.ap = FixedProduct(a, p, xp)
        self.ptap = FixedProduct(p, self.ap.pattern, xp, transpose_a=True)

    def nbytes(self, value_bytes: int) -> int:
        """Bytes this level keeps on its device (index maps, the patterns, each array
        once however many products share it) and the values one update makes (A T, P,
        P^T, A P, P^T A P), ``value_bytes`` each."""
        arrays = [self.rows_at, self.slot_at, self.slot_t, self.t_data, self.pt_perm,
                  *device_index(self.p_pattern, self.xp),
                  *device_index(self.pt_pattern, self.xp),
                  *self.at.arrays(), *self.ap.arrays(), *self.ptap.arrays()]
        unique = {id(v): v for v in arrays}
        values = value_bytes * (self.at.nnz + 2 * self.p_pattern.nnz + self.ap.nnz
                                + self.ptap.nnz)
        return sum(int(v.nbytes) for v in unique.values()) + values

    def prolongator(self, a_data: Any, scale: Any) -> tuple[Any, Any]:
        """(P, P^T) on ``xp`` for A's values and the row scale s D^-1 (a dof vector)."""
        xp = self.xp
        at = self.at(a_data, self.t_data)
        p = xp.zeros(self.p_pattern.nnz, dtype=self.dtype)
        p[self.slot_at] = -(scale[self.rows_at] * at)
        p[self.slot_t] += self.t_data
        return csr_on(self.p_pattern, p, xp), csr_on(self.pt_pattern, p[self.pt_perm], xp)

    def coarse(self, a_data: Any, p: Any) -> Any:
        """P^T A P on ``xp`` (its pattern fixed)."""
        ap = self.ap(a_data, p.data)
        return csr_on(self.ptap.pattern, self.ptap(p.data, ap), self.xp)
