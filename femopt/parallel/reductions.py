"""Sums over a design cut into slabs, for the optimizers (:class:`Reductions`), on NumPy
or CuPy (the slab's ``xp``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from femopt.backend import array_namespace
from femopt.parallel.slabs import Slab, add_reduce


class Reductions:
    """Sums over a design cut into slabs, for the optimizers: OC's volume and design
    change, MMA's subproblem (the methods of :class:`femopt.optimizers.mma.LocalSums`).
    Each sum is taken per cell layer on its rank and the layers added in global order,
    so that it does not depend on the rank count. ``layer_of``: the layer of each entry
    when the arrays are a subset of the owned cells (MMA leaves fixed cells out)."""

    def __init__(self, slab: Slab, layer_of: np.ndarray | None = None):
        self.slab, self.layer_of = slab, layer_of
        o0, o1 = slab.own
        self.n_layers = o1 - o0

    @property
    def distributed(self) -> bool:
        """Whether its sums cross between ranks (more than one rank)."""
        return self.slab.distributed

    def subset(self, index: Any) -> "Reductions":
        """The same sums over the owned cells ``index`` (an index array, or a slice)."""
        if isinstance(index, slice) and index == slice(None):
            return self
        cells = self.slab.xp.arange(self.slab.n_own_cells)[index]
        return Reductions(self.slab, cells // self.slab.layer_cells)

    def layer_sums(self, a: Any) -> Any:
        """``a``'s sums per owned cell layer, for :meth:`add_up`."""
        if self.layer_of is None:
            return add_reduce(a.reshape(self.n_layers, -1), 1)
        return self.slab.xp.bincount(self.layer_of, weights=a, minlength=self.n_layers)

    def _sums(self, arrays: list[Any]) -> Any:
        return self.add_up([self.layer_sums(a) for a in arrays])

    def add_up(self, partials: list[Any]) -> Any:
        """The totals of :meth:`layer_sums` of several arrays, by one reduction."""
        xp = self.slab.xp
        if not partials:
            return xp.zeros(0)
        return xp.asarray(self.slab.comm.sum_layers(xp.stack(partials), "optimizer",
                                                    self.slab.rank_layers()))

    def dot(self, a: np.ndarray, b: np.ndarray) -> float:
        return float(self._sums([a * b])[0])

    def max(self, value: float) -> float:
        return self.slab.comm.max(value)

    def rows(self, A: np.ndarray, v: np.ndarray) -> np.ndarray:
        return self._sums([A[i] * v for i in range(A.shape[0])])

    def gram(self, A: np.ndarray, B: np.ndarray) -> np.ndarray:
        m = A.shape[0]
        return self._sums([A[i] * B[j] for i in range(m) for j in range(B.shape[0])]
                          ).reshape(m, B.shape[0])

    @staticmethod
    def combine(lam: Any, A: Any) -> Any:
        out = lam[0] * A[0] if A.shape[0] else array_namespace(A).zeros(A.shape[1])
        for i in range(1, A.shape[0]):
            out = out + lam[i] * A[i]
        return out

    def norm_max(self, pieces: list[np.ndarray], sized: tuple[bool, ...]
                 ) -> tuple[float, float]:
        xp = self.slab.xp
        design = [p for p, s in zip(pieces, sized) if s]
        rest = xp.concatenate([p for p, s in zip(pieces, sized) if not s])
        sq = design[0] * design[0]
        for p in design[1:]:
            sq = sq + p * p
        total = float(self._sums([sq])[0]) + float(xp.dot(rest, rest))
        local = max(_largest(p) for p in design)
        worst = max(self.max(local), _largest(rest))
        return float(np.sqrt(total)), worst


def _largest(a: Any) -> float:
    """max |a| (0 for an empty array)."""
    return float(array_namespace(a).abs(a).max()) if a.size else 0.0
