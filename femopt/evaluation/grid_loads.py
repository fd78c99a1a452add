"""The load vectors of the grid path held by their nonzeros.

A grid problem's loads act on a face, a line or a few points, so the (n_cases, n_dofs)
float64 vectors in the grid layout (24 bytes per cell and case in 3D elasticity) are
almost all zeros. :class:`GridLoads` keeps the loaded grid dofs once and each case's
values there; the mixed-precision solve forms its defect f - K u from them
(:meth:`SparseLoad.defect`), the compliance term f . u is a gather, and a dense vector
is made only where a float64 CG needs one as its right-hand side (``krylov: double``,
or a fallback), for that solve alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class SparseLoad:
    """One case's load: ``values`` at the grid dofs ``index`` of a vector of ``size``."""

    def __init__(self, index: Any, values: Any, size: int, xp: Any):
        self.index, self.values, self.size, self.xp = index, values, size, xp
        self.shape, self.dtype = (size,), values.dtype

    def dense(self) -> Any:
        out = self.xp.zeros(self.size, dtype=self.values.dtype)
        out[self.index] = self.values
        return out

    def norm(self) -> float:
        return float(self.xp.sqrt(self.xp.sum(self.values * self.values)))

    def defect(self, ku: Any) -> Any:
        """f - K u from ``ku`` = -K u (overwritten: the loaded dofs are distinct)."""
        return self.add_to(ku, 1.0)

    def add_to(self, out: Any, scale: float) -> Any:
        """out += scale f, in place; returns ``out``."""
        out[self.index] += scale * self.values
        return out

    def dot(self, u: Any) -> float:
        """f . u."""
        return float(self.xp.sum(self.values * u[self.index]))


class GridLoads:
    """(n_cases, n_dofs) load vectors, zero on supported dofs, by their nonzeros.

    Args:
        index: the grid dofs where some case has a load (host, distinct).
        values: (n_cases, len(index)) host values there.
        size: dofs of the grid. xp: the array module where they are kept.
    """

    def __init__(self, index: np.ndarray, values: np.ndarray, size: int, xp: Any):
        self.xp = xp
        self.index = xp.asarray(index)
        self.values = xp.asarray(values, dtype=xp.float64)
        self.shape = (values.shape[0], size)
        self.dtype = self.values.dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, c: int) -> SparseLoad:
        return SparseLoad(self.index, self.values[c], self.shape[1], self.xp)

    def dense(self) -> Any:
        """The full vectors (tests, and a caller that needs them)."""
        out = self.xp.zeros(self.shape, dtype=self.dtype)
        out[:, self.index] = self.values
        return out

    def dots(self, u: Any) -> Any:
        """(n_cases,) f_c . u_c on the array module."""
        return self.xp.sum(self.values * u[:, self.index], axis=1)
