"""The density filter of a structured grid as a stencil, NumPy or CuPy.

Same weights as :func:`femopt.filters.base.radius_weights` (H_ij = max(0, r - |c_i - c_j|)
between cell centres, the pairs at the radius within rounding left out alike:
:data:`~femopt.filters.base.CUT`) without a sparse matrix: H is translation invariant on
a grid, so H x is a sum of shifted copies of x (NumPy twin) or one gather per cell
(``femopt_filters_density_stencil`` in ``grid_filter.cu``). Per-cell arrays are in cell
order (x fastest).

Hs = H 1 depends on a cell only through the faces of the box that cut its stencil: along
an axis of n cells and reach r, cell j's stencil is cut as that of cell
:func:`proxy_index` (j) of an axis of min(n, 2r + 1) cells. So 1 / Hs is kept on that
proxy grid alone, at most (2r + 1)^dim values, and looked up per cell.
"""

from __future__ import annotations

from itertools import product
from pathlib import Path
from typing import Any

import numpy as np

from femopt.backend import array_namespace
from femopt.filters.base import CUT

SOURCE = Path(__file__).with_suffix(".cu")
# the kernel's ``scale`` bits: 1 / Hs times x (the chain rule), times H x (the forward)
PRE, POST = 1, 2


def proxy_index(n: int, r: int) -> np.ndarray:
    """Per cell j of an axis of ``n`` cells, the cell of an axis of min(n, 2r + 1) cells
    whose stencil of reach ``r`` the axis's ends cut as they cut cell j's: j near the low
    end, as far from the high end near it, else r (no end within reach)."""
    j = np.arange(n)
    m = min(n, 2 * r + 1)
    return np.where(j < r, j, np.where(n - 1 - j < r, m - n + j, r))


def proxy_runs(p: np.ndarray) -> list[tuple[slice, int]]:
    """The cells of an axis (``p``: their proxy indices) as runs of one proxy index:
    (slice of the cells, proxy index); at most 2r + 1 runs."""
    cut = np.flatnonzero(np.diff(p)) + 1
    starts, ends = np.r_[0, cut], np.r_[cut, p.size]
    return [(slice(int(a), int(b)), int(p[a])) for a, b in zip(starts, ends)]


def by_proxy(grid: Any, table: np.ndarray, runs: list[list[tuple[slice, int]]],
             assign: bool = False) -> None:
    """grid *= table (``assign``: grid = table) per cell, in place, one block of cells
    per proxy cell (no per-cell array of the table).

    Args:
        grid: NumPy or CuPy cells, axes reversed (z, y, x). table: host values on the
            proxy grid, axes reversed, of ``grid``'s dtype. runs: :func:`proxy_runs` of
            each axis (x, y[, z]).
    """
    for block in product(*runs[::-1]):
        cells = tuple(s for s, _ in block)
        value = table[tuple(p for _, p in block)]
        if assign:
            grid[cells] = value
        else:
            grid[cells] *= value


class GridDensityFilter:
    """rho = (H x) / Hs on a structured grid, and its exact chain rule.

    Args:
        shape: cells per axis (x, y[, z]). spacing: cell size per axis. radius: filter
            radius (same length unit). xp: numpy or cupy (where 1 / Hs is kept).
    """

    def __init__(self, shape: tuple[int, ...], spacing: tuple[float, ...], radius: float,
                 xp: Any = np):
        self.shape = tuple(int(n) for n in shape)
        self.dim = len(self.shape)
        self.spacing = tuple(float(h) for h in spacing)
        self.radius = float(radius)
        self.reach = tuple(int(np.ceil(self.radius / h)) for h in self.spacing)
        self.xp = xp
        self.proxy_shape = tuple(min(n, 2 * r + 1) for n, r in zip(self.shape, self.reach))
        self.runs = [proxy_runs(proxy_index(n, r)) for n, r in zip(self.shape, self.reach)]
        # 1 / Hs on the proxy grid, by the sums that the whole grid's cells take (same
        # weights, same order: bit for bit theirs); Hs is made when asked for
        self.inv_hs_table = None
        self._entries = None  # the GPU kernel's stencil (entries()), on the device
        table = self._stencil(xp.ones(int(np.prod(self.proxy_shape)), dtype=xp.float64),
                              self.proxy_shape, 0)
        xp.reciprocal(table, out=table)
        self.inv_hs_table = table
        self._host_table = table if xp is np else table.get()

    def table(self, dtype: Any = np.float64) -> np.ndarray:
        """1 / Hs on the proxy grid, host, axes reversed (z, y, x), as ``dtype``."""
        return self._host_table.astype(dtype).reshape(self.proxy_shape[::-1])

    def inv_hs(self) -> Any:
        """1 / Hs per cell, on ``xp`` (a new array: the table looked up)."""
        return self._cells(self.table())

    @property
    def hs(self) -> Any:
        """Hs = H 1, the row sums (a new array)."""
        return self._cells(1.0 / self.table())

    def _cells(self, table: np.ndarray) -> Any:
        out = self.xp.empty(self.shape[::-1], dtype=table.dtype)
        by_proxy(out, table, self.runs, assign=True)
        return out.reshape(-1)

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

    def entries(self) -> tuple[np.ndarray, np.ndarray]:
        """The GPU kernel's stencil: :meth:`offsets` in the kernel's order, z slowest and
        x fastest, as (offsets, int32 (m, 3): dx dy dz of each entry, 0 along an axis the
        grid lacks; weights, float64 (m,)), the NumPy twin's weights."""
        pad = (0,) * (3 - self.dim)
        items = sorted(((tuple(o) + pad, w) for o, w in self.offsets()),
                       key=lambda item: item[0][::-1])
        return (np.array([o for o, _ in items], dtype=np.int32).reshape(-1, 3),
                np.array([w for _, w in items], dtype=np.float64))

    def apply(self, x: Any, pre: bool = False, post: bool = False) -> Any:
        """H x for a per-cell array; ``pre``: H (x / Hs) (the chain rule: H is
        symmetric), ``post``: (H x) / Hs (the forward)."""
        return self._stencil(x, self.shape, PRE * bool(pre) + POST * bool(post))

    def forward(self, x: Any) -> Any:
        return self.apply(x, post=True)

    def backward(self, x: Any, dy: Any) -> Any:
        return self.apply(dy, pre=True)

    def _stencil(self, x: Any, shape: tuple[int, ...], scale: int) -> Any:
        if array_namespace(x) is np:
            return self._stencil_numpy(x, shape, scale)
        return self._stencil_gpu(x, shape, scale)

    def _stencil_numpy(self, x: np.ndarray, shape: tuple[int, ...],
                       scale: int) -> np.ndarray:
        if scale & PRE:
            x = x.copy()
            by_proxy(x.reshape(shape[::-1]), self.table(x.dtype), self.runs)
        grid = x.reshape(shape[::-1])
        out = np.zeros_like(grid)
        for off, w in self.offsets():
            dst, src = [], []
            for o, n in zip(off[::-1], shape[::-1]):
                dst.append(slice(max(0, -o), n - max(0, o)))
                src.append(slice(max(0, o), n - max(0, -o)))
            out[tuple(dst)] += w * grid[tuple(src)]
        if scale & POST:
            by_proxy(out, self.table(out.dtype), self.runs)
        return out.reshape(-1)

    def _stencil_gpu(self, x: Any, shape: tuple[int, ...], scale: int) -> Any:
        import cupy

        from femopt.backend.kernels import get_kernel, launch_1d, real_name, register_instances

        register_instances(SOURCE, [f"femopt_filters_density_stencil<{r}>"
                                    for r in ("double", "float")])
        kern = get_kernel(SOURCE, f"femopt_filters_density_stencil<{real_name(x)}>")
        if self._entries is None:
            self._entries = tuple(cupy.asarray(a) for a in self.entries())
        offsets, weights = self._entries
        out = cupy.empty_like(x)
        pad = (1,) * (3 - self.dim)
        shape, proxy = shape + pad, self.proxy_shape + pad
        reach = self.reach + (0,) * (3 - self.dim)
        # CuPy passes None as a null pointer (the table's own sums: no table yet)
        launch_1d(kern, x.size, (x, self.inv_hs_table, np.int32(scale), out)
                  + tuple(np.int32(n) for n in shape + reach + proxy)
                  + (offsets, weights, np.int32(weights.size)))
        return out
