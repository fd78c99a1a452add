"""Linear filters given by their weights: y = (H x) / Hs with Hs the row sums of H.

A plugin writes :meth:`LinearFilter.weights` alone; femopt applies the weights on the CPU
(SciPy), and on the device paths as a device CSR matrix
(:class:`~femopt.filters.sparse_filter.SparseDensityFilter`), or as a faster stencil where
the filter offers one on a structured grid (:meth:`LinearFilter.grid_stencil`). The
filter's methods are written against :attr:`LinearFilter.op`, whichever of these it is.
"""

from __future__ import annotations

import copy
import threading
from concurrent.futures import Future
from functools import cached_property
from typing import Any

import numpy as np
import scipy.sparse as sp

from femopt.filters.base import Filter


def _in_background(build: Any) -> Future:
    """``build()`` on a daemon thread of its own, as a future: an exit on bad input found
    later in the set-up does not wait for it (a thread pool's workers are joined at
    exit), and the row-split products' pool stays free."""
    future: Future = Future()

    def run() -> None:
        if future.set_running_or_notify_cancel():
            try:
                future.set_result(build())
            except BaseException as exc:  # re-raised where the result is used
                future.set_exception(exc)

    threading.Thread(target=run, name="femopt-setup", daemon=True).start()
    return future


class HostWeights:
    """H, its row sums and H^T as SciPy matrices. ``by_rows``: H = W diag(v) with W
    symmetric and a constant diagonal (a radius filter's cone weights times the
    neighbour's volume, r on the diagonal), so that H^T y = v * (H (y / v)) with v
    diag(H) (any constant factor cancels): a product by H's rows on the process's cores
    (a 100k-tet bracket with the shipped 6 mm radius has 168M weights, and the CSC
    product H^T y on one core takes twice as long); otherwise H^T y by the CSC view."""

    def __init__(self, h: sp.csr_matrix, hs: np.ndarray, by_rows: bool = False):
        from femopt.solvers.row_split import split_rows

        self.h, self.hs = h, hs
        self.scale = h.diagonal() if by_rows else None
        self._hs_scale = None if self.scale is None else hs * self.scale
        self._h = split_rows(h)  # H x on the process's cores (the same rows' sums)

    @property
    def ht(self) -> sp.csc_matrix:
        """H^T as the CSC view of H's arrays, no copy: its product visits the rows of H in
        order and adds into each entry of the result in that order, as a CSR copy of H^T
        (sorted columns) would, so the values are the same bit for bit (at 1M cells the
        copy of some 60M weights took 2.6 s and 0.7 GB)."""
        return self.h.T

    def apply(self, x: Any) -> Any:
        return self._h @ x

    def forward(self, x: Any) -> Any:
        return (self._h @ x) / self.hs

    def backward(self, x: Any, dy: Any) -> Any:
        if self.scale is None:
            return self.ht @ (dy / self.hs)
        return self.scale * (self._h @ (dy / self._hs_scale))


class LinearFilter(Filter):
    """A filter y = (H x) / Hs given by its weight matrix H (n_cells x n_cells).

    Subclasses implement :meth:`weights`; ``forward``/``backward`` are the weighted
    average and its exact chain rule. A heuristic subclass rewrites the objective
    gradient through :attr:`op` instead (see the sensitivity filter).
    """

    linear = True

    def weights(self) -> tuple[sp.csr_matrix, np.ndarray]:
        """(H, row sums of H) over the mesh's cells."""
        raise NotImplementedError

    # whether the weights are H = W diag(v) with W symmetric and a constant diagonal
    # (H^T y is then taken by H's rows: :class:`HostWeights`)
    symmetric_by_columns = False

    def grid_stencil(self, xp: Any) -> Any | None:
        """An operator with the same weights as a stencil on a structured grid (``apply``,
        ``forward``, ``backward``, ``hs`` on ``xp``), or None to use the CSR weights."""
        return None

    # The weights are built on first use: a model on the GPU may filter with a stencil
    # and never need them (at tens of millions of cells they would take gigabytes).
    @cached_property
    def op(self) -> Any:
        pending = self.__dict__.pop("_pending", None)
        return HostWeights(*(pending.result() if pending is not None else self.weights()),
                           self.symmetric_by_columns)

    def prefetch(self) -> bool:
        """Start building the weights on a background thread, for a model that will need
        them on the host: the rest of its set-up (element matrices, sparse pattern) runs
        meanwhile on another core (NumPy, SciPy and the KD-tree release the GIL in their
        loops); :attr:`op` waits for them and re-raises what the build raised. Whether a
        build is under way."""
        if "op" in self.__dict__:
            return False
        if "_pending" not in self.__dict__:
            self.__dict__["_pending"] = _in_background(self.weights)
        return True

    def weights_nnz(self) -> int:
        """The number of weights of H (the device memory estimate's count; by default H
        is built to count them)."""
        return int(self.H.nnz)

    @property
    def H(self) -> sp.csr_matrix:
        return self.op.h

    @property
    def Hs(self) -> np.ndarray:
        return self.op.hs

    def forward(self, x: Any) -> Any:
        return self.op.forward(x)

    def backward(self, x: Any, dy: Any) -> Any:
        return self.op.backward(x, dy)

    def device_twin(self, xp: Any) -> "LinearFilter":
        """A copy of this filter whose :attr:`op` holds the weights on ``xp``."""
        from femopt.filters.sparse_filter import SparseDensityFilter

        twin = copy.copy(self)
        op = self.grid_stencil(xp) if self.mesh.grid is not None else None
        if op is None:
            op = SparseDensityFilter(self.op.h, self.op.hs, xp, transpose=not self.heuristic,
                                     by_rows=self.symmetric_by_columns)
        twin.__dict__["op"] = op
        return twin
