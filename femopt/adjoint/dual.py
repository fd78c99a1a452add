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
from femopt.backend import array_namespace


class TracedBranchError(TypeError):
    """Python control flow on a traced value (``if u > 0:``, ``max(u, 0)``): the branch
    taken would be fixed for every cell and its derivative lost."""


_BRANCH = ("a traced value was used in a Python condition or comparison; write the "
           "choice branch-free with ops.select_lt(a, b, x, y), ops.max or ops.abs")


class Dual:
    __slots__ = ("v", "d")
    __array_priority__ = 100  # ndarray op Dual -> Dual's reflected operator
    __array_ufunc__ = None  # np.sin(dual) is a TypeError, not an object-array loop

    def __init__(self, v: Any, d: Any):
        self.v, self.d = v, d

    def __bool__(self):
        raise TracedBranchError(_BRANCH)

    def _compare(self, o):
        raise TracedBranchError(_BRANCH)

    __lt__ = __le__ = __gt__ = __ge__ = _compare

    def __pow__(self, p):
        """A constant power; its derivative is taken as 0 where v = 0 and p < 1 (the
        convention of the relaxed stress rho^q)."""
        if isinstance(p, Dual):
            raise TypeError("a power with a traced exponent is not supported")
        xp = array_namespace(self.v)
        if p == 0:
            return Dual(self.v ** 0.0, 0.0 * self.d)
        zero = self.v == 0
        safe = xp.where(zero, 1.0, self.v)
        dv = xp.where(zero, 1.0 if p == 1 else 0.0, p * safe ** (p - 1.0))
        return Dual(self.v ** p, self.d * dv)

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
    """:class:`Ops` on duals (and plain arrays, which are constants), NumPy or CuPy: the
    array module comes from the values."""

    @staticmethod
    def sqrt(a):
        """sqrt; the derivative is taken as 0 where the value is 0 (a norm at zero)."""
        v, d = _parts(a)
        xp = array_namespace(v)
        s = xp.sqrt(v)
        if not isinstance(a, Dual):
            return s
        return Dual(s, d * xp.where(s > 0, 0.5 / xp.where(s > 0, s, 1.0), 0.0))

    @staticmethod
    def tanh(a):
        v, d = _parts(a)
        t = array_namespace(v).tanh(v)
        return Dual(t, d * (1.0 - t * t)) if isinstance(a, Dual) else t

    @staticmethod
    def exp(a):
        v, d = _parts(a)
        e = array_namespace(v).exp(v)
        return Dual(e, d * e) if isinstance(a, Dual) else e

    @staticmethod
    def log(a):
        v, d = _parts(a)
        lg = array_namespace(v).log(v)
        return Dual(lg, d / v) if isinstance(a, Dual) else lg

    @staticmethod
    def select_lt(a, b, x, y):
        av, bv = _parts(a)[0], _parts(b)[0]
        (xv, xd), (yv, yd) = _parts(x), _parts(y)
        xp = array_namespace(av, bv, xv, yv)
        cond = xp.less(av, bv)
        if not isinstance(x, Dual) and not isinstance(y, Dual):
            return xp.where(cond, x, y)
        return Dual(xp.where(cond, xv, yv), xp.where(cond, xd, yd))


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
