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
        by_rows: H = W diag(v) with W symmetric and a constant diagonal (a radius
            filter's cone weights times the neighbour's volume): the chain rule takes
            H^T y = s * (H (y / s)), s = diag(H), and no H^T is kept (as many weights
            again: gigabytes on a large mesh).
    """

    def __init__(self, h: Any, hs: np.ndarray, xp: Any = np, transpose: bool = True,
                 by_rows: bool = False):
        self.xp = xp
        ht = h.T.tocsr() if transpose and not by_rows else None
        if xp is np:
            self.h, self.ht = h, ht
        else:
            import cupyx.scipy.sparse as csp

            self.h = csp.csr_matrix(h)
            self.ht = None if ht is None else csp.csr_matrix(ht)
        self._finish(hs, transpose and by_rows)

    def _finish(self, hs: Any, by_rows: bool) -> None:
        """The row sums and, for ``by_rows``, the chain rule's scales."""
        xp = self.xp
        self.hs = xp.asarray(hs)
        self.inv_hs = 1.0 / self.hs
        self.scale = self.h.diagonal() if by_rows else None
        self._inv_hs_scale = None if self.scale is None else 1.0 / (self.hs * self.scale)

    @classmethod
    def from_csr(cls, indptr: Any, indices: Any, data: Any, hs: Any, xp: Any = np,
                 transpose: bool = True, by_rows: bool = False) -> "SparseDensityFilter":
        """The filter of weights already on ``xp`` as CSR arrays (n x n), H^T (where the
        chain rule needs one, not ``by_rows``) made there too: nothing of H on the
        host."""
        n = int(indptr.shape[0]) - 1
        if xp is np:
            import scipy.sparse as sparse
        else:
            import cupyx.scipy.sparse as sparse
        self = cls.__new__(cls)
        self.xp = xp
        self.h = sparse.csr_matrix((data, indices, indptr), shape=(n, n))
        self.ht = self.h.T.tocsr() if transpose and not by_rows else None
        self._finish(hs, transpose and by_rows)
        return self

    def apply(self, x: Any, pre: Any = None, post: Any = None) -> Any:
        """post * (H (pre * x)), pre and post optional per-cell factors."""
        y = self.h @ (x if pre is None else pre * x)
        return y if post is None else y * post

    def forward(self, x: Any) -> Any:
        return self.apply(x, post=self.inv_hs)

    def backward(self, x: Any, dy: Any) -> Any:
        if self.scale is not None:
            return self.scale * (self.h @ (dy * self._inv_hs_scale))
        return self.ht @ (dy * self.inv_hs)
