"""The cut axis made the slowest one: :class:`Orientation` maps a structured grid's cell
and node arrays, dof vectors and its element matrix between the model's axis order and
the internal one of a distributed run (:mod:`femopt.parallel.slabs`)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from femopt.assembly.grid_layout import GridLayout


@dataclass(frozen=True)
class Orientation:
    """The model's grid (cells per axis ``shape``, x first) seen with axis ``axis`` last.

    ``perm[i]`` is the model axis of internal axis i."""

    shape: tuple[int, ...]
    axis: int

    @property
    def dim(self) -> int:
        return len(self.shape)

    @cached_property
    def perm(self) -> tuple[int, ...]:
        return tuple(a for a in range(self.dim) if a != self.axis) + (self.axis,)

    @property
    def identity(self) -> bool:
        return self.perm == tuple(range(self.dim))

    @cached_property
    def internal_shape(self) -> tuple[int, ...]:
        return tuple(self.shape[p] for p in self.perm)

    def internal(self, values: tuple) -> tuple:
        """A per-axis tuple (spacing, ...) in internal axis order."""
        return tuple(values[p] for p in self.perm)

    @cached_property
    def _to_internal_axes(self) -> tuple[int, ...]:
        # arrays are indexed (z, y, x): model array axis of internal array axis j
        d = self.dim
        return tuple(d - 1 - self.perm[d - 1 - j] for j in range(d))

    @cached_property
    def _to_model_axes(self) -> tuple[int, ...]:
        return tuple(int(i) for i in np.argsort(self._to_internal_axes))

    def cells_in(self, a: np.ndarray) -> np.ndarray:
        """A per-cell array (n_cells, ...) in model order, in internal order."""
        return self._cells(a, self.shape, self._to_internal_axes)

    def cells_out(self, a: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`cells_in`."""
        return self._cells(a, self.internal_shape, self._to_model_axes)

    def nodes_in(self, v: np.ndarray, k: int) -> np.ndarray:
        """A grid-layout node vector (k * n_nodes,) in model order, in internal order."""
        return self._nodes(v, k, self.shape, self._to_internal_axes)

    def nodes_out(self, v: np.ndarray, k: int) -> np.ndarray:
        """The inverse of :meth:`nodes_in`."""
        return self._nodes(v, k, self.internal_shape, self._to_model_axes)

    def _cells(self, a: np.ndarray, shape: tuple[int, ...], axes: tuple[int, ...]
               ) -> np.ndarray:
        """``a`` (cells of ``shape``, x fastest, then any trailing axes) with its grid
        axes transposed by ``axes``."""
        if self.identity:
            return np.ascontiguousarray(a)
        rest = a.shape[1:]
        g = a.reshape(tuple(shape[::-1]) + rest)
        order = axes + tuple(range(self.dim, self.dim + len(rest)))
        return np.ascontiguousarray(g.transpose(order)).reshape(a.shape)

    def _nodes(self, v: np.ndarray, k: int, shape: tuple[int, ...], axes: tuple[int, ...]
               ) -> np.ndarray:
        """A grid-layout node vector (k components) of the cells ``shape`` with its grid
        axes transposed by ``axes``."""
        if self.identity:
            return np.ascontiguousarray(v)
        g = v.reshape((k,) + tuple(n + 1 for n in shape)[::-1])
        return np.ascontiguousarray(
            g.transpose((0,) + tuple(1 + a for a in axes))).reshape(-1)

    def cell_index_in(self, cells: np.ndarray) -> np.ndarray:
        """Internal positions of model-order cell numbers: where :meth:`cells_in` puts
        them."""
        return self._index_in(np.asarray(cells, dtype=np.int64), list(self.shape))

    def _index_in(self, index: np.ndarray, ns: list[int]) -> np.ndarray:
        coord = []
        for n in ns:  # model coordinates, x first
            coord.append(index % n)
            index = index // n
        out = np.zeros_like(index)
        stride = 1
        for p in self.perm:  # internal axes, fastest first
            out += coord[p] * stride
            stride *= ns[p]
        return out

    def dofs_in(self, dofs: np.ndarray, k: int) -> np.ndarray:
        """Internal grid-layout positions of femopt's (node-major, model order) dof
        numbers: where :meth:`nodes_in` of a grid-layout vector puts them, without a
        vector of the grid's size."""
        node, comp = np.divmod(np.asarray(dofs, dtype=np.int64), k)
        ns = [n + 1 for n in self.shape]
        return comp * int(np.prod(ns)) + self._index_in(node, ns)

    def element_matrix(self, ke: np.ndarray, k: int) -> np.ndarray:
        """K0 with its corners in the internal grid's VTK order (components unchanged)."""
        if self.identity:
            return np.asarray(ke, dtype=np.float64)
        corners = GridLayout(self.shape, k).corners  # (2^dim, dim) model offsets
        index = {tuple(int(v) for v in c): a for a, c in enumerate(corners)}
        old = []
        for c in corners:  # c: internal offsets of internal corner a'
            model = [0] * self.dim
            for i, p in enumerate(self.perm):
                model[p] = int(c[i])
            old.append(index[tuple(model)])
        dofs = np.array([a * k + j for a in old for j in range(k)])
        ke = np.asarray(ke, dtype=np.float64)
        return np.ascontiguousarray(ke[np.ix_(dofs, dofs)])
