"""A radius filter's weight matrix on a device: the twin of the density and sensitivity
filters on unstructured meshes (the GPU path's counterpart of ``GridDensityFilter``)."""

from __future__ import annotations

from typing import Any

import numpy as np


class SparseDensityFilter:
    """rho = (H x) / Hs and its chain rule H^T (dy / Hs), with H on ``xp``.

    Args:
        flt: the host radius filter (its weights H and row sums Hs, built by the KD-tree
            search; a density filter's H^T too, for its chain rule, which a sensitivity
            filter does not have).
        xp: numpy (SciPy matrices) or cupy (cupyx.scipy.sparse matrices).
    """

    def __init__(self, flt: Any, xp: Any = np):
        from femopt.filters.radius import DensityFilter

        self.xp = xp
        h, ht = flt.H, flt.HT if isinstance(flt, DensityFilter) else None
        if xp is np:
            self.h, self.ht = h, ht
        else:
            import cupyx.scipy.sparse as csp

            self.h = csp.csr_matrix(h)
            self.ht = None if ht is None else csp.csr_matrix(ht)
        self.hs = xp.asarray(flt.Hs)
        self.inv_hs = 1.0 / self.hs

    def apply(self, x: Any, pre: Any = None, post: Any = None) -> Any:
        """post * (H (pre * x)), pre and post optional per-cell factors."""
        y = self.h @ (x if pre is None else pre * x)
        return y if post is None else y * post

    def forward(self, x: Any) -> Any:
        return self.apply(x, post=self.inv_hs)

    def backward(self, x: Any, dy: Any) -> Any:
        return self.ht @ (dy * self.inv_hs)
