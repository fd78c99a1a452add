"""The density and sensitivity filters' grid stencil on a rank's slab
(:class:`SlabStencil`), on NumPy or CuPy (the slab's ``xp``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from femopt.parallel.slabs import Slab


class SlabStencil:
    """:class:`~femopt.filters.grid_filter.GridDensityFilter` on a rank's owned cells, with
    ghost layers as wide as the filter reaches along the cut axis (the sums per cell in
    the same order as on one rank)."""

    def __init__(self, slab: Slab, spacing: tuple[float, ...], radius: float):
        from femopt.filters.grid_filter import GridDensityFilter

        self.slab = slab
        self.shape = slab.layout.shape
        # the stencil's offsets and weights (the object is never applied to a field)
        proto = GridDensityFilter.__new__(GridDensityFilter)
        proto.shape, proto.dim = self.shape, len(self.shape)
        proto.spacing, proto.radius = tuple(spacing), float(radius)
        proto.reach = tuple(int(np.ceil(proto.radius / h)) for h in proto.spacing)
        self.entries = proto.offsets()
        self.reach = proto.reach[-1]
        # only 1 / Hs is kept, as GridDensityFilter keeps it
        self.inv_hs = self.apply(slab.xp.ones(slab.n_own_cells))
        slab.xp.reciprocal(self.inv_hs, out=self.inv_hs)

    @property
    def hs(self) -> Any:
        """Hs = H 1 on the owned cells (a new array)."""
        return 1.0 / self.inv_hs

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

    def apply(self, x: np.ndarray, pre: Any = None, post: Any = None) -> np.ndarray:
        v = x if pre is None else pre * x
        ext, start = self._extended(self.slab.xp.ascontiguousarray(v))
        n_own = self.slab.own[1] - self.slab.own[0]
        shape = self.shape[:-1] + (ext.shape[0],)
        grid = ext.reshape(shape[::-1])
        out = self.slab.xp.zeros_like(grid)
        for off, w in self.entries:
            dst, src = [], []
            for o, n in zip(off[::-1], shape[::-1]):
                dst.append(slice(max(0, -o), n - max(0, o)))
                src.append(slice(max(0, o), n - max(0, -o)))
            out[tuple(dst)] += w * grid[tuple(src)]
        out = out.reshape(ext.shape)[start:start + n_own].reshape(-1)
        return out if post is None else post * out

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.apply(x, post=self.inv_hs.astype(x.dtype, copy=False))

    def backward(self, x: np.ndarray, dy: np.ndarray) -> np.ndarray:
        return self.apply(dy, pre=self.inv_hs.astype(dy.dtype, copy=False))
