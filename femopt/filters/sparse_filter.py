"""A linear filter's weight matrix on a device (cupyx.scipy.sparse, or SciPy for the NumPy
twin): the device paths' form of every :class:`~femopt.filters.linear.LinearFilter`
without a grid stencil."""

from __future__ import annotations

from typing import Any

import numpy as np


class SparseDensityFilter:
    """y = (H x) / Hs and its chain rule H^T (dy / Hs), with H on ``xp``.

    Args:
        h, hs: the host weights (SciPy CSR) and their row sums.
        xp: numpy (SciPy matrices) or cupy (cupyx.scipy.sparse matrices).
        transpose: keep H^T for the chain rule (a heuristic filter has none).
    """

    def __init__(self, h: Any, hs: np.ndarray, xp: Any = np, transpose: bool = True):
        self.xp = xp
        ht = h.T.tocsr() if transpose else None
        if xp is np:
            self.h, self.ht = h, ht
        else:
            import cupyx.scipy.sparse as csp

            self.h = csp.csr_matrix(h)
            self.ht = None if ht is None else csp.csr_matrix(ht)
        self.hs = xp.asarray(hs)
        self.inv_hs = 1.0 / self.hs

    @classmethod
    def from_csr(cls, indptr: Any, indices: Any, data: Any, hs: Any, xp: Any = np,
                 transpose: bool = True) -> "SparseDensityFilter":
        """The filter of weights already on ``xp`` as CSR arrays (n x n), H^T made there
        too: nothing of H on the host."""
        n = int(indptr.shape[0]) - 1
        if xp is np:
            import scipy.sparse as sparse
        else:
            import cupyx.scipy.sparse as sparse
        self = cls.__new__(cls)
        self.xp = xp
        self.h = sparse.csr_matrix((data, indices, indptr), shape=(n, n))
        self.ht = self.h.T.tocsr() if transpose else None
        self.hs = xp.asarray(hs)
        self.inv_hs = 1.0 / self.hs
        return self

    def apply(self, x: Any, pre: Any = None, post: Any = None) -> Any:
        """post * (H (pre * x)), pre and post optional per-cell factors."""
        y = self.h @ (x if pre is None else pre * x)
        return y if post is None else y * post

    def forward(self, x: Any) -> Any:
        return self.apply(x, post=self.inv_hs)

    def backward(self, x: Any, dy: Any) -> Any:
        return self.ht @ (dy * self.inv_hs)
