"""Symbolic traces of element integrands: the integrand of an
:class:`~femopt.assembly.element_kernel.ElementKernel` run once on :class:`Expr` scalars
gives straight-line code for one quadrature point (constants folded, equal
subexpressions shared), which :mod:`femopt.adjoint.codegen` prints as CUDA C and
:func:`evaluate_trace` replays on NumPy arrays (the check that the trace is the
integrand)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from femopt.assembly.element_kernel import ElementKernel, Ops, QuadPoint


class Trace:
    """The nodes of one traced integrand, hash-consed so equal subexpressions are one."""

    def __init__(self) -> None:
        self.nodes: list[tuple] = []
        self.table: dict[tuple, Expr] = {}

    def node(self, op: str, *args: Any) -> Any:
        if all(not isinstance(a, Expr) for a in args) and op != "in":
            return _fold(op, args)
        simple = _simplify(op, args)
        if simple is not _NONE:
            return simple
        key = (op,) + tuple(a.index if isinstance(a, Expr) else ("c", a) for a in args)
        if op in ("add", "mul"):  # commutative: one node for a*b and b*a
            key = (op,) + tuple(sorted(key[1:], key=repr))
        hit = self.table.get(key)
        if hit is not None:
            return hit
        e = Expr(self, len(self.nodes))
        self.nodes.append((op,) + args)
        self.table[key] = e
        return e

    def input(self, name: str) -> Expr:
        return self.node("in", name)


_NONE = object()


def _fold(op: str, a: tuple) -> float:
    if op == "add":
        return a[0] + a[1]
    if op == "sub":
        return a[0] - a[1]
    if op == "mul":
        return a[0] * a[1]
    if op == "div":
        return a[0] / a[1]
    if op == "neg":
        return -a[0]
    if op == "sqrt":
        return math.sqrt(a[0])
    if op == "tanh":
        return math.tanh(a[0])
    if op == "exp":
        return math.exp(a[0])
    if op == "log":
        return math.log(a[0])
    if op == "pow":
        return a[0] ** a[1]
    if op == "sel":
        return a[2] if a[0] < a[1] else a[3]
    raise ValueError(op)


def _is(v: Any, c: float) -> bool:
    return not isinstance(v, Expr) and v == c


def _simplify(op: str, a: tuple) -> Any:
    if op == "add":
        if _is(a[0], 0.0):
            return a[1]
        if _is(a[1], 0.0):
            return a[0]
    elif op == "sub":
        if _is(a[1], 0.0):
            return a[0]
        if _is(a[0], 0.0):
            return -a[1]
    elif op == "mul":
        if _is(a[0], 0.0) or _is(a[1], 0.0):
            return 0.0
        if _is(a[0], 1.0):
            return a[1]
        if _is(a[1], 1.0):
            return a[0]
    elif op == "div":
        if _is(a[0], 0.0):
            return 0.0
        if _is(a[1], 1.0):
            return a[0]
    elif op == "pow" and _is(a[1], 1.0):
        return a[0]
    return _NONE


class Expr:
    """A symbolic scalar: an index into its :class:`Trace`."""

    __slots__ = ("trace", "index")

    def __init__(self, trace: Trace, index: int):
        self.trace, self.index = trace, index

    def _n(self, op, *args):
        return self.trace.node(op, *args)

    def __add__(self, o):
        return self._n("add", self, _c(o))

    def __radd__(self, o):
        return self._n("add", _c(o), self)

    def __sub__(self, o):
        return self._n("sub", self, _c(o))

    def __rsub__(self, o):
        return self._n("sub", _c(o), self)

    def __mul__(self, o):
        return self._n("mul", self, _c(o))

    def __rmul__(self, o):
        return self._n("mul", _c(o), self)

    def __truediv__(self, o):
        return self._n("div", self, _c(o))

    def __rtruediv__(self, o):
        return self._n("div", _c(o), self)

    def __neg__(self):
        return self._n("neg", self)

    def __pow__(self, p):
        """A constant power (the dual numbers' convention at 0 in the generated code)."""
        if isinstance(p, Expr):
            raise TypeError("a power with a traced exponent is not supported")
        if float(p) == 0.0:
            return 1.0
        return self._n("pow", self, float(p))

    def __bool__(self):
        raise TypeError("a traced value was used in a Python condition; write the choice "
                        "branch-free with ops.select_lt")


def _c(v: Any) -> Any:
    return v if isinstance(v, Expr) else float(v)


class TraceOps(Ops):
    """:class:`Ops` on symbolic scalars."""

    def __init__(self, trace: Trace):
        self.trace = trace

    def sqrt(self, a):
        return self.trace.node("sqrt", _c(a))

    def tanh(self, a):
        return self.trace.node("tanh", _c(a))

    def exp(self, a):
        return self.trace.node("exp", _c(a))

    def log(self, a):
        return self.trace.node("log", _c(a))

    def select_lt(self, a, b, x, y):
        return self.trace.node("sel", _c(a), _c(b), _c(x), _c(y))


def trace_integrand(kernel: ElementKernel) -> tuple[Trace, list[tuple[int, int, Any]]]:
    """The integrand of one quadrature point on symbolic inputs; returns the trace and
    the non-zero outputs (i, j, expression or constant)."""
    tr = Trace()
    el = kernel.element
    nn, dim = el.n_nodes, el.dim
    point = QuadPoint(
        x=[[tr.input(f"x[{a * dim + d}]") for d in range(dim)] for a in range(nn)],
        n=[tr.input(f"n{a}") for a in range(nn)],
        dn=[[tr.input(f"dn{a}_{d}") for d in range(dim)] for a in range(nn)],
        w=tr.input("w"), m=tr.input("m"),
        p={k: tr.input(f"p[{i}]") for i, k in enumerate(kernel.params)})
    contrib = kernel.integrand(TraceOps(tr), point)
    outs = [(i, j, contrib[i][j]) for i in range(kernel.nd) for j in range(kernel.nd)
            if not _is(contrib[i][j], 0.0)]
    return tr, outs


def evaluate_trace(kernel: ElementKernel, coords: np.ndarray, m: Any) -> np.ndarray:
    """Element matrices (n_cells, nd, nd) by interpreting the trace node by node with
    NumPy, exactly the operations the generated C performs (a check of the trace)."""
    tr, outs = trace_integrand(kernel)
    coords = np.asarray(coords, dtype=float)
    c, nn, dim = coords.shape
    mm = np.broadcast_to(np.asarray(m, dtype=float), (c,))
    ke = np.zeros((c, kernel.nd, kernel.nd))
    pv = kernel.param_vector()
    for n, dn, w in kernel.quadrature():
        env = {"m": mm, "w": w}
        env.update({f"n{a}": n[a] for a in range(nn)})
        env.update({f"dn{a}_{d}": dn[a, d] for a in range(nn) for d in range(dim)})
        env.update({f"x[{a * dim + d}]": coords[:, a, d] for a in range(nn)
                    for d in range(dim)})
        env.update({f"p[{i}]": pv[i] for i in range(pv.size)})
        vals: list[Any] = []
        get = lambda v: vals[v.index] if isinstance(v, Expr) else v  # noqa: E731
        for node in tr.nodes:
            op, args = node[0], node[1:]
            if op == "in":
                vals.append(env[args[0]])
                continue
            a = [get(v) for v in args]
            if op == "sel":
                vals.append(np.where(np.less(a[0], a[1]), a[2], a[3]))
            elif op in ("sqrt", "tanh", "exp", "log"):
                vals.append(getattr(np, op)(a[0]))
            elif op == "pow":
                vals.append(np.power(a[0], a[1]))
            elif op == "neg":
                vals.append(-a[0])
            else:
                vals.append({"add": np.add, "sub": np.subtract, "mul": np.multiply,
                             "div": np.divide}[op](a[0], a[1]))
        for i, j, e in outs:
            ke[:, i, j] += get(e)
    return ke


# -- C source ----------------------------------------------------------------------
