"""Pointwise projections given by a scalar function: rho_e = P(x_e).

A plugin writes :meth:`ProjectionFilter.projection` alone, as a function of one scalar
built from ``+ - * /`` and the functions of an :class:`~femopt.assembly.element_kernel.Ops`
object (``sqrt``, ``tanh``, ``select_lt``, ...). femopt evaluates it on the design's
arrays (NumPy or CuPy: a projection runs on every path) and differentiates it by a
forward-mode dual number for the chain rule, so no derivative is written by hand.
"""

from __future__ import annotations

from typing import Any

from femopt.adjoint.dual import DUAL_OPS, Dual
from femopt.assembly.element_kernel import NUMPY_OPS, Ops
from femopt.backend import array_namespace
from femopt.filters.base import Filter


class ProjectionFilter(Filter):
    """rho = P(x) entry by entry, P given by :meth:`projection`; its exact chain rule
    dy * P'(x) comes from a dual number seeded on x."""

    pointwise = True

    def projection(self, ops: Ops, x: Any) -> Any:
        """P(x) for a scalar (or an array of them) ``x``."""
        raise NotImplementedError

    def forward(self, x: Any) -> Any:
        y = self.projection(NUMPY_OPS, x)
        return y + 0.0 * x  # a constant projection still has x's shape

    def backward(self, x: Any, dy: Any) -> Any:
        xp = array_namespace(x)
        y = self.projection(DUAL_OPS, Dual(x, xp.ones_like(x)[None]))
        if not isinstance(y, Dual):  # P does not depend on x
            return 0.0 * dy
        return dy * y.d[0]
