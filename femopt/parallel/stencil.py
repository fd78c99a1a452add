"""The density and sensitivity filters' grid stencil on a rank's slab
(:class:`SlabStencil`), on NumPy or CuPy (the slab's ``xp``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from femopt.filters.grid_filter import GridDensityFilter, by_proxy, proxy_index, proxy_runs
from femopt.parallel.slabs import Slab


class SlabStencil:
    """:class:`~femopt.filters.grid_filter.GridDensityFilter` on a rank's owned cells, with
    ghost layers as wide as the filter reaches along the cut axis (the sums per cell in
    the same order as on one rank)."""

    def __init__(self, slab: Slab, spacing: tuple[float, ...], radius: float):
        self.slab = slab
        self.shape = slab.layout.shape
        # the whole grid's stencil on the host (never applied to a field): its offsets
        # and weights, and 1 / Hs on its proxy grid. The grid's faces cut an owned cell's
        # stencil, not the slab's ends (ghost layers lie between): its sums are the whole
        # grid's, in the same order, and so is its 1 / Hs bit for bit
        self.grid = GridDensityFilter(self.shape, spacing, radius)
        self.entries = self.grid.offsets()
        self.reach = self.grid.reach[-1]
        o0, o1 = slab.own
        self.runs = self.grid.runs[:-1] + [
            proxy_runs(proxy_index(self.shape[-1], self.reach)[o0:o1])]

    def inv_hs(self) -> Any:
        """1 / Hs on the owned cells (a new array)."""
        return self._cells(self.grid.table())

    @property
    def hs(self) -> Any:
        """Hs = H 1 on the owned cells (a new array)."""
        return self._cells(1.0 / self.grid.table())

    def _cells(self, table: np.ndarray) -> Any:
        o0, o1 = self.slab.own
        out = self.slab.xp.empty((o1 - o0,) + self.shape[:-1][::-1], dtype=table.dtype)
        by_proxy(out, table, self.runs, assign=True)
        return out.reshape(-1)

    def _extended(self, v: np.ndarray) -> tuple[np.ndarray, int]:
        """Owned cells with ``reach`` ghost layers each side (clipped to the grid)."""
        s = self.slab
        o0, o1 = s.own
        lo, hi = max(o0 - self.reach, 0), min(o1 + self.reach, s.n_layers)
        p = s.layer_cells
        xp = s.xp
        ext = xp.empty(((hi - lo), p), dtype=v.dtype)
        ext[o0 - lo:o1 - lo] = v.reshape(-1, p)
        r, size = s.comm.rank, s.comm.size
        below = r - 1 if r > 0 else None
        above = r + 1 if r < size - 1 else None
        nb, na = o0 - lo, hi - o1
        own = ext[o0 - lo:o1 - lo]
        if s.distributed:
            s.comm.counts.exchange("filter")
        # my first layers are the ghosts above of the rank below, and so on
        # the ghost layers received where they go (whole rows of ext: contiguous)
        s.comm.exchange([(own[own.shape[0] - min(self.reach, o1):]
                          if above is not None else None, above,
                          ext[:nb] if below is not None else None, below, 21),
                         (own[:min(self.reach, s.n_layers - o0)] if below is not None
                          else None, below, ext[o1 - lo:] if above is not None else None,
                          above, 22)], label="filter")
        return ext, o0 - lo

    def apply(self, x: np.ndarray, pre: bool = False, post: bool = False) -> np.ndarray:
        """H x on the owned cells; ``pre``: H (x / Hs), ``post``: (H x) / Hs (as
        :meth:`~femopt.filters.grid_filter.GridDensityFilter.apply`)."""
        xp = self.slab.xp
        n_own = self.slab.own[1] - self.slab.own[0]
        own_shape = (n_own,) + self.shape[:-1][::-1]
        v = x.copy() if pre else xp.ascontiguousarray(x)
        if pre:
            by_proxy(v.reshape(own_shape), self.grid.table(v.dtype), self.runs)
        ext, start = self._extended(v)
        shape = self.shape[:-1] + (ext.shape[0],)
        grid = ext.reshape(shape[::-1])
        out = xp.zeros_like(grid)
        for off, w in self.entries:
            dst, src = [], []
            for o, n in zip(off[::-1], shape[::-1]):
                dst.append(slice(max(0, -o), n - max(0, o)))
                src.append(slice(max(0, o), n - max(0, -o)))
            out[tuple(dst)] += w * grid[tuple(src)]
        out = out[start:start + n_own]
        if not post:
            return out.reshape(-1)
        out = out.copy()  # the owned cells alone, not the ghost layers, are kept
        by_proxy(out, self.grid.table(out.dtype), self.runs)
        return out.reshape(-1)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.apply(x, post=True)

    def backward(self, x: np.ndarray, dy: np.ndarray) -> np.ndarray:
        return self.apply(dy, pre=True)
