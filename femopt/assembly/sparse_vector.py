"""A host vector of a problem's size held by its few entries.

Springs act on a few nodes, a displacement functional weighs a point or a face, a mean
temperature every node alike: as dense vectors these are, on a grid, almost all one
value. :class:`SparseVector` keeps the entries that differ (sorted, distinct positions)
and the value of all the others, so that a rank of a distributed run places its slab's
part without a vector of the whole grid (:mod:`femopt.parallel.path`); the paths that
work on whole vectors ask for :meth:`SparseVector.dense`.

:func:`scale` and :func:`add` combine such vectors, constant views
(``np.broadcast_to``) and dense arrays so that each entry is the number the dense
arithmetic gives, and no dense vector is made of two sparse or constant ones.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class SparseVector:
    """A vector of ``size`` float64 entries: ``values`` at ``index`` (sorted, distinct),
    ``fill`` everywhere else."""

    def __init__(self, index: np.ndarray, values: np.ndarray, size: int,
                 fill: float = 0.0):
        self.index = np.asarray(index, dtype=np.int64)
        self.values = np.asarray(values, dtype=np.float64)
        self.size = int(size)
        self.fill = float(fill)

    @classmethod
    def from_pieces(cls, size: int, pieces: list[tuple[np.ndarray, np.ndarray]]
                    ) -> SparseVector:
        """Sum ``pieces`` (positions, values; the positions of one piece distinct) in
        their order: each entry is the same sum, in the same order, as adding the pieces
        to a dense zero vector one after another."""
        index, values = sum_pieces(1, [(0, d, v) for d, v in pieces])
        return cls(index, values[0], size)

    def __repr__(self) -> str:
        return f"SparseVector({self.index.size} of {self.size}, fill {self.fill:g})"

    @property
    def shape(self) -> tuple[int]:
        return (self.size,)

    def dense(self) -> np.ndarray:
        out = np.full(self.size, self.fill)
        out[self.index] = self.values
        return out

    def any(self) -> bool:
        """Whether some entry is not zero."""
        return bool(np.any(self.values != 0.0)) or (
            self.fill != 0.0 and self.index.size < self.size)

    def nonzero(self) -> np.ndarray:
        """The positions of the entries that are not zero (sorted)."""
        if self.fill == 0.0:
            return self.index[self.values != 0.0]
        rest = np.ones(self.size, dtype=bool)
        rest[self.index] = self.values != 0.0
        return np.flatnonzero(rest)

    def take(self, positions: np.ndarray) -> np.ndarray:
        """The entries at ``positions`` (any order, repeats allowed)."""
        positions = np.asarray(positions, dtype=np.int64)
        out = np.full(positions.shape, self.fill)
        if self.index.size:
            at = np.minimum(np.searchsorted(self.index, positions), self.index.size - 1)
            hit = self.index[at] == positions
            out[hit] = self.values[at[hit]]
        return out


def sum_pieces(n_rows: int, pieces: list[tuple[int, np.ndarray, np.ndarray]]
               ) -> tuple[np.ndarray, np.ndarray]:
    """(index, values) of the sum of ``pieces`` (row, positions, values; the positions
    of one piece distinct) added in their order to ``n_rows`` dense zero vectors:
    ``index`` the positions some piece names (sorted, distinct), ``values`` the
    (n_rows, len(index)) sums there, each the same sum, in the same order, as the dense
    one."""
    if not pieces:
        return np.zeros(0, np.int64), np.zeros((n_rows, 0))
    index = np.unique(np.concatenate([np.asarray(d, np.int64) for _, d, _ in pieces]))
    values = np.zeros((n_rows, index.size))
    for row, positions, vals in pieces:
        values[row, np.searchsorted(index, positions)] += vals
    return index, values


def dense_of(v: Any) -> Any:
    """``v`` as an array: a :class:`SparseVector`'s dense vector, anything else as it is."""
    return v.dense() if isinstance(v, SparseVector) else v


def constant_value(v: Any) -> float | None:
    """The value of a constant view (a 1-D ``np.broadcast_to`` of one number), else None."""
    if isinstance(v, np.ndarray) and v.ndim == 1 and v.size and v.strides == (0,):
        return float(v[0])
    return None


def as_sparse(v: Any) -> Any:
    """A constant view as a :class:`SparseVector` (of no entries but its fill); anything
    else as it is."""
    c = constant_value(v)
    return v if c is None else SparseVector(np.zeros(0, np.int64), np.zeros(0), v.size, c)


def scale(v: Any, w: float) -> Any:
    """``w * v``, kept sparse or constant when ``v`` is."""
    if isinstance(v, SparseVector):
        return SparseVector(v.index, w * v.values, v.size, w * v.fill)
    c = constant_value(v)
    if c is not None:
        return np.broadcast_to(np.float64(w * c), v.shape)
    return w * v


def add(a: Any, b: Any) -> Any:
    """``a + b``, kept sparse or constant when both are."""
    ca, cb = constant_value(a), constant_value(b)
    if ca is not None and cb is not None:
        return np.broadcast_to(np.float64(ca + cb), a.shape)
    sa, sb = _sparse(a), _sparse(b)
    if sa is None or sb is None:
        return dense_of(a) + dense_of(b)
    index = np.union1d(sa.index, sb.index)
    return SparseVector(index, sa.take(index) + sb.take(index), sa.size, sa.fill + sb.fill)


def _sparse(v: Any) -> SparseVector | None:
    v = as_sparse(v)
    return v if isinstance(v, SparseVector) else None


def to_design(xp: Any, a: np.ndarray) -> Any:
    """A design-sized host array on ``xp``; a constant one (a broadcast view, which the
    model makes for a device path) stays one there: one number seen at every index
    (stride 0), no array of the design's size on either side. Code that hands such a
    view to a raw kernel makes it contiguous first (``EvaluationPath._through``, the OC
    kernel's bounds)."""
    c = constant_value(a)
    return xp.asarray(a) if c is None else xp.broadcast_to(xp.asarray(c, dtype=xp.float64),
                                                           a.shape)
