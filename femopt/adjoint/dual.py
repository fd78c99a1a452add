"""Forward-mode dual numbers on NumPy arrays, and element-matrix derivatives from them.

A :class:`Dual` is a value ``v`` with derivatives ``d`` along several seed directions at
once (``d[s]`` has the shape of ``v``). Running a physics' element integrand
(:mod:`femopt.assembly.element_kernel`) on duals gives the exact derivative of the element
matrix: seeded on the material factor it is dK_e/dm (the design sensitivity kernel),
seeded on the node coordinates it is dK_e/dX (shape sensitivities). The CUDA twin is
``femopt_dual<T>`` in the generated sources (:mod:`femopt.adjoint.codegen`), with one
direction per evaluation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from femopt.assembly.element_kernel import ElementKernel, Ops, integrate


class Dual:
    __slots__ = ("v", "d")
    __array_priority__ = 100  # ndarray op Dual -> Dual's reflected operator

    def __init__(self, v: Any, d: Any):
        self.v, self.d = v, d

    def __add__(self, o):
        if isinstance(o, Dual):
            return Dual(self.v + o.v, self.d + o.d)
        return Dual(self.v + o, self.d)

    __radd__ = __add__

    def __sub__(self, o):
        if isinstance(o, Dual):
            return Dual(self.v - o.v, self.d - o.d)
        return Dual(self.v - o, self.d)

    def __rsub__(self, o):
        return Dual(o - self.v, -self.d)

    def __neg__(self):
        return Dual(-self.v, -self.d)

    def __mul__(self, o):
        if isinstance(o, Dual):
            return Dual(self.v * o.v, self.d * o.v + self.v * o.d)
        return Dual(self.v * o, self.d * o)

    __rmul__ = __mul__

    def __truediv__(self, o):
        if isinstance(o, Dual):
            return Dual(self.v / o.v, (self.d * o.v - self.v * o.d) / (o.v * o.v))
        return Dual(self.v / o, self.d / o)

    def __rtruediv__(self, o):
        return Dual(o / self.v, -o * self.d / (self.v * self.v))


def _parts(a: Any) -> tuple[Any, Any]:
    return (a.v, a.d) if isinstance(a, Dual) else (a, 0.0)


class DualOps(Ops):
    """:class:`Ops` on duals (and plain arrays, which are constants)."""

    @staticmethod
    def sqrt(a):
        v, d = _parts(a)
        s = np.sqrt(v)
        return Dual(s, d / (2.0 * s)) if isinstance(a, Dual) else s

    @staticmethod
    def tanh(a):
        v, d = _parts(a)
        t = np.tanh(v)
        return Dual(t, d * (1.0 - t * t)) if isinstance(a, Dual) else t

    @staticmethod
    def select_lt(a, b, x, y):
        cond = np.less(_parts(a)[0], _parts(b)[0])
        if not isinstance(x, Dual) and not isinstance(y, Dual):
            return np.where(cond, x, y)
        (xv, xd), (yv, yd) = _parts(x), _parts(y)
        return Dual(np.where(cond, xv, yv), np.where(cond, xd, yd))


DUAL_OPS = DualOps()


def _stack(kernel: ElementKernel, ke: list[list[Any]], n_cells: int, n_seeds: int
           ) -> np.ndarray:
    out = np.zeros((n_cells, n_seeds, kernel.nd, kernel.nd))
    for i in range(kernel.nd):
        for j in range(kernel.nd):
            d = _parts(ke[i][j])[1]
            out[:, :, i, j] = np.broadcast_to(np.asarray(d).T, (n_cells, n_seeds))
    return out


def material_derivative(kernel: ElementKernel, coords: np.ndarray, m: Any) -> np.ndarray:
    """dK_e/dm at material factors ``m``: (n_cells, nd, nd), by one dual seed on m."""
    coords = np.asarray(coords, dtype=float)
    c = coords.shape[0]
    x = [[coords[:, a, d] for d in range(coords.shape[2])] for a in range(coords.shape[1])]
    mm = Dual(np.broadcast_to(np.asarray(m, dtype=float), (c,)), np.ones((1, c)))
    ke = integrate(kernel, DUAL_OPS, x, mm, dict(kernel.values))
    return _stack(kernel, ke, c, 1)[:, 0]


def coordinate_derivative(kernel: ElementKernel, coords: np.ndarray, m: Any = 1.0
                          ) -> np.ndarray:
    """dK_e/dX_{a,d}: (n_cells, n_nodes * dim, nd, nd), seed a * dim + d moving node a
    of the cell along axis d; all seeds in one pass."""
    coords = np.asarray(coords, dtype=float)
    c, nn, dim = coords.shape
    x = []
    for a in range(nn):
        row = []
        for d in range(dim):
            seed = np.zeros((nn * dim, c))
            seed[a * dim + d] = 1.0
            row.append(Dual(coords[:, a, d], seed))
        x.append(row)
    mm = np.broadcast_to(np.asarray(m, dtype=float), (c,))
    ke = integrate(kernel, DUAL_OPS, x, mm, dict(kernel.values))
    return _stack(kernel, ke, c, nn * dim)
