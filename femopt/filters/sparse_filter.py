"""A radius filter's weight matrix on a device: the twin of the density and sensitivity
filters on unstructured meshes (the GPU path's counterpart of ``GridDensityFilter``)."""

from __future__ import annotations

from typing import Any

import numpy as np


class SparseDensityFilter:
    """rho = (H x) / Hs and its chain rule H^T (dy / Hs), with H on ``xp``.

    Args:
        h: the filter's (n, n) SciPy CSR weights (``radius_weights``), built on the host.
        xp: numpy (SciPy matrices) or cupy (cupyx.scipy.sparse matrices).
    """

    def __init__(self, h: Any, xp: Any = np):
        self.xp = xp
        ht = h.T.tocsr()
        hs = np.asarray(h.sum(axis=1)).ravel()
        if xp is np:
            self.h, self.ht = h, ht
        else:
            import cupyx.scipy.sparse as csp

            self.h, self.ht = csp.csr_matrix(h), csp.csr_matrix(ht)
        self.hs = xp.asarray(hs)
        self.inv_hs = 1.0 / self.hs

    @property
    def nnz(self) -> int:
        return int(self.h.nnz)

    def apply(self, x: Any, pre: Any = None, post: Any = None) -> Any:
        """post * (H (pre * x)), pre and post optional per-cell factors."""
        y = self.h @ (x if pre is None else pre * x)
        return y if post is None else y * post

    def forward(self, x: Any) -> Any:
        return self.apply(x, post=self.inv_hs)

    def backward(self, x: Any, dy: Any) -> Any:
        return self.ht @ (dy * self.inv_hs)
