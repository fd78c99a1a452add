"""The density filter of a structured grid as a stencil, NumPy or CuPy.

Same weights as :func:`femopt.filters.base.radius_weights` (H_ij = max(0, r - |c_i - c_j|)
between cell centres, the pairs at the radius within rounding left out alike:
:data:`~femopt.filters.base.CUT`) without a sparse matrix: H is translation invariant on
a grid, so H x is a sum of shifted copies of x (NumPy twin) or one gather per cell
(``femopt_filters_density_stencil`` in ``grid_filter.cu``). Per-cell arrays are in cell
order (x fastest).
"""

from __future__ import annotations

from itertools import product
from pathlib import Path
from typing import Any

import numpy as np

from femopt.backend import array_namespace
from femopt.filters.base import CUT

SOURCE = Path(__file__).with_suffix(".cu")


class GridDensityFilter:
    """rho = (H x) / Hs on a structured grid, and its exact chain rule.

    Args:
        shape: cells per axis (x, y[, z]). spacing: cell size per axis. radius: filter
            radius (same length unit). xp: numpy or cupy (where Hs is kept).
    """

    def __init__(self, shape: tuple[int, ...], spacing: tuple[float, ...], radius: float,
                 xp: Any = np):
        self.shape = tuple(int(n) for n in shape)
        self.dim = len(self.shape)
        self.spacing = tuple(float(h) for h in spacing)
        self.radius = float(radius)
        self.reach = tuple(int(np.ceil(self.radius / h)) for h in self.spacing)
        self.xp = xp
        # only 1 / Hs is kept (one per-cell array): Hs itself is made when asked for
        self.inv_hs = self.apply(xp.ones(int(np.prod(self.shape)), dtype=xp.float64))
        xp.reciprocal(self.inv_hs, out=self.inv_hs)

    @property
    def hs(self) -> Any:
        """Hs = H 1, the row sums (a new array)."""
        return 1.0 / self.inv_hs

    def offsets(self) -> list[tuple[tuple[int, ...], float]]:
        """(offset (x, y[, z]), weight) of every stencil entry with a weight above
        ``CUT * radius`` (as :func:`~femopt.filters.base.radius_weights` keeps them)."""
        out = []
        for off in product(*[range(-r, r + 1) for r in self.reach]):
            d = np.sqrt(sum((o * h) ** 2 for o, h in zip(off, self.spacing)))
            w = self.radius - d
            if w > CUT * self.radius:
                out.append((off, float(w)))
        return out

    def apply(self, x: Any, pre: Any = None, post: Any = None) -> Any:
        """post * H (pre * x) for per-cell arrays (pre/post None: 1)."""
        if array_namespace(x) is np:
            return self._apply_numpy(x, pre, post)
        return self._apply_gpu(x, pre, post)

    def forward(self, x: Any) -> Any:
        return self.apply(x, post=self.inv_hs.astype(x.dtype, copy=False))

    def backward(self, x: Any, dy: Any) -> Any:
        return self.apply(dy, pre=self.inv_hs.astype(dy.dtype, copy=False))

    def _apply_numpy(self, x: np.ndarray, pre: Any, post: Any) -> np.ndarray:
        v = x if pre is None else pre * x
        grid = v.reshape(self.shape[::-1])
        out = np.zeros_like(grid)
        for off, w in self.offsets():
            dst, src = [], []
            for o, n in zip(off[::-1], self.shape[::-1]):
                dst.append(slice(max(0, -o), n - max(0, o)))
                src.append(slice(max(0, o), n - max(0, -o)))
            out[tuple(dst)] += w * grid[tuple(src)]
        out = out.reshape(-1)
        return out if post is None else post * out

    def _apply_gpu(self, x: Any, pre: Any, post: Any) -> Any:
        import cupy

        from femopt.backend.kernels import get_kernel, launch_1d, real_name, register_instances

        register_instances(SOURCE, [f"femopt_filters_density_stencil<{r}>"
                                    for r in ("double", "float")])
        kern = get_kernel(SOURCE, f"femopt_filters_density_stencil<{real_name(x)}>")
        out = cupy.empty_like(x)
        shape = self.shape + (1,) * (3 - self.dim)
        reach = self.reach + (0,) * (3 - self.dim)
        h = self.spacing + (1.0,) * (3 - self.dim)
        # CuPy passes None as a null pointer
        launch_1d(kern, x.size, (x, pre, post, out) + tuple(np.int32(n) for n in shape)
                  + tuple(np.int32(r) for r in reach) + tuple(np.float64(v) for v in h)
                  + (np.float64(self.radius), np.float64(CUT * self.radius)))
        return out
