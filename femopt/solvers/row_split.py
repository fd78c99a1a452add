"""Sparse matrix-vector products on several CPU cores: the rows split into parts.

SciPy's sparse products run on one core, and they release the GIL while they run, so
the parts of a row-split product run at once on a small thread pool; each row's sum is
computed exactly as in the whole product (the same values bit for bit). Worth it for
the large operators of the AMG solver's finest levels and its CG, applied tens of times
per solve; a small matrix stays whole (a thread hand-off costs some tens of
microseconds).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

MIN_ROWS = 20_000  # below this a matrix is multiplied whole,
MIN_ENTRIES = 500_000  # unless it stores this many values (a dense coarse level)
_pool: ThreadPoolExecutor | None = None


def cpu_threads() -> int:
    """Cores this process may run on (``FEMOPT_SPMV_THREADS`` overrides; 1 turns the
    split off)."""
    env = os.environ.get("FEMOPT_SPMV_THREADS")
    if env:
        if not env.strip().isdigit():
            from femopt.errors import InputError

            raise InputError(f"FEMOPT_SPMV_THREADS must be a whole number of threads, "
                             f"not {env!r}")
        return max(1, int(env))
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _executor(workers: int) -> ThreadPoolExecutor:
    global _pool
    if _pool is None or _pool._max_workers < workers:
        _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="femopt-spmv")
    return _pool


class RowSplit:
    """``m @ v`` with the rows of the SciPy CSR or BSR matrix ``m`` in ``parts`` parts
    (views of its arrays, no copy), the first on the calling thread. Each part writes its
    rows straight into one output array by SciPy's compiled kernel (no array per part
    and no concatenation: at a million rows those allocations, fresh pages on a worker
    thread, cost as much as a tenth of the product)."""

    def __init__(self, m: Any, parts: int):
        import scipy.sparse as sp
        from scipy.sparse import _sparsetools

        self.matrix, self.shape, self.dtype = m, m.shape, m.dtype
        block = m.blocksize if m.format == "bsr" else (1, 1)
        n_rows = m.shape[0] // block[0]
        # parts of about equal stored entries
        cuts = np.searchsorted(m.indptr, np.linspace(0, m.indptr[-1], parts + 1)[1:-1])
        bounds = [0, *sorted(set(int(c) for c in cuts) - {0, n_rows}), n_rows]
        self.parts, self._kernels = [], []
        for r0, r1 in zip(bounds[:-1], bounds[1:]):
            p0, p1 = m.indptr[r0], m.indptr[r1]
            ptr = (m.indptr[r0:r1 + 1] - p0).astype(m.indices.dtype, copy=False)
            shape = ((r1 - r0) * block[0], m.shape[1])
            if m.format == "bsr":
                part = sp.bsr_matrix((m.data[p0:p1], m.indices[p0:p1], ptr), shape=shape,
                                     blocksize=m.blocksize, copy=False)
                call = (_sparsetools.bsr_matvec, r1 - r0, m.shape[1] // block[1], *block,
                        ptr, m.indices[p0:p1], m.data[p0:p1].reshape(-1))
            else:
                part = sp.csr_matrix((m.data[p0:p1], m.indices[p0:p1], ptr), shape=shape,
                                     copy=False)
                call = (_sparsetools.csr_matvec, r1 - r0, m.shape[1], ptr,
                        m.indices[p0:p1], m.data[p0:p1])
            self.parts.append(part)
            self._kernels.append((call, r0 * block[0], r1 * block[0]))

    def _product(self, k: int, v: np.ndarray, out: np.ndarray) -> None:
        """Part ``k``'s rows of ``m @ v`` into ``out`` (SciPy's kernels add to it)."""
        call, y0, y1 = self._kernels[k]
        y = out[y0:y1]
        y.fill(0)
        call[0](*call[1:], v, y)

    def __matmul__(self, v: np.ndarray) -> np.ndarray:
        if len(self.parts) == 1:
            return self.matrix @ v
        pool = _executor(len(self.parts) - 1)
        if not (isinstance(v, np.ndarray) and v.ndim == 1 and v.dtype == self.dtype
                and v.shape[0] == self.shape[1] and v.flags.c_contiguous):
            futures = [pool.submit(part.__matmul__, v) for part in self.parts[1:]]
            first = self.parts[0] @ v
            return np.concatenate([first] + [f.result() for f in futures])
        out = np.empty(self.shape[0], dtype=self.dtype)
        futures = [pool.submit(self._product, k, v, out) for k in range(1, len(self.parts))]
        self._product(0, v, out)
        for f in futures:
            f.result()
        return out


def split_rows(m: Any, xp: Any = np) -> Any:
    """``m`` itself (CuPy, a small matrix, one core), or its :class:`RowSplit`."""
    threads = cpu_threads()
    if (xp is not np or threads < 2 or (m.shape[0] < MIN_ROWS and m.nnz < MIN_ENTRIES)
            or m.format not in ("csr", "bsr")):
        return m
    return RowSplit(m, threads)


def split_product(a: Any, b: Any, xp: Any = np) -> Any:
    """``a @ b`` of SciPy sparse matrices with ``a``'s rows in parts multiplied at once on
    the thread pool (SciPy's sparse-sparse products release the GIL too), the parts'
    rows stacked: each row of a product is computed from that row alone, so the result
    is the whole product's, entry for entry. Whole where :func:`split_rows` would keep
    ``a`` whole."""
    split = split_rows(a, xp)
    if not isinstance(split, RowSplit) or len(split.parts) == 1:
        return a @ b
    pool = _executor(len(split.parts) - 1)
    futures = [pool.submit(part.__matmul__, b) for part in split.parts[1:]]
    first = split.parts[0] @ b
    return _stack_rows([first] + [f.result() for f in futures])


def _stack_rows(parts: list[Any]) -> Any:
    """The row blocks ``parts`` (CSR, or BSR of one block size) as one matrix, by joining
    their arrays."""
    import scipy.sparse as sp

    fmt = parts[0].format
    same = all(p.format == fmt for p in parts) and fmt in ("csr", "bsr") and (
        fmt == "csr" or all(p.blocksize == parts[0].blocksize for p in parts))
    if not same:
        return sp.vstack(parts, format=fmt)
    offsets = np.cumsum([0] + [p.indptr[-1] for p in parts[:-1]])
    index = np.int64 if offsets[-1] + parts[-1].indptr[-1] >= 2**31 else np.int32
    indptr = np.concatenate([parts[0].indptr[:1].astype(index)]
                            + [(p.indptr[1:] + o).astype(index)
                               for p, o in zip(parts, offsets)])
    indices = np.concatenate([p.indices for p in parts]).astype(index, copy=False)
    data = np.concatenate([p.data for p in parts])
    shape = (sum(p.shape[0] for p in parts), parts[0].shape[1])
    if fmt == "bsr":
        return sp.bsr_matrix((data, indices, indptr), shape=shape,
                             blocksize=parts[0].blocksize)
    return sp.csr_matrix((data, indices, indptr), shape=shape)


def in_parts(count: int, work: Any, min_count: int = 100_000) -> None:
    """``work(start, stop)`` over ``range(count)`` in one part per core, at once on the
    thread pool (the first on the calling thread); whole below ``min_count``. For work
    whose items are independent (one value per cell), so any split gives the same
    values."""
    threads = cpu_threads()
    if threads < 2 or count < min_count:
        work(0, count)
        return
    bounds = np.linspace(0, count, threads + 1).astype(np.int64)
    pool = _executor(threads - 1)
    futures = [pool.submit(work, int(a), int(b)) for a, b in zip(bounds[1:-1], bounds[2:])]
    work(int(bounds[0]), int(bounds[1]))
    for f in futures:
        f.result()
