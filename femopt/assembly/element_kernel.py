"""A physics' element kernel, written once and instantiated for several scalar types.

A physics declares its element matrix as an *integrand*: a plain Python function of one
quadrature point that builds the (nd, nd) contribution out of scalars with ``+ - * /`` and
the few functions of an :class:`Ops` object (``sqrt``, ``tanh``, ``abs``, ``select_lt``).
Nothing in it knows what a scalar is, so the same function runs

- on NumPy arrays of float64 or float32 (one entry per cell): the element matrices;
- on forward-mode dual numbers (:mod:`femopt.adjoint.dual`): derivatives of the element
  matrix with respect to the material factor or the node coordinates;
- on symbolic expressions (:mod:`femopt.adjoint.codegen`): a trace that is printed as a
  CUDA C ``template <typename T>`` device function, instantiated on the GPU for
  ``double``, ``float`` and ``femopt_dual<T>``.

The element matrix of cell e is K_e(m_e) = sum_q integrand(point q), where m_e is the
material factor of the design interpolation (m(rho_e)). A kernel must be affine in m,
K_e(m) = m K0_e + C_e: every path assembles the operator in that form (the non-linearity
of the design belongs in the interpolation m(rho)), and a problem whose kernel is not
affine is refused when it is built (:mod:`femopt.physics.material_law`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from femopt.assembly.elements import Element
from femopt.backend import array_namespace

Scalar = Any  # a float, an array, a dual number or a symbolic expression


class Ops:
    """Functions of scalars an integrand may call (floats, NumPy or CuPy arrays: the
    array module comes from the arguments)."""

    @staticmethod
    def sqrt(a: Scalar) -> Scalar:
        return array_namespace(a).sqrt(a)

    @staticmethod
    def tanh(a: Scalar) -> Scalar:
        return array_namespace(a).tanh(a)

    @staticmethod
    def exp(a: Scalar) -> Scalar:
        return array_namespace(a).exp(a)

    @staticmethod
    def log(a: Scalar) -> Scalar:
        return array_namespace(a).log(a)

    def abs(self, a: Scalar) -> Scalar:
        return self.select_lt(a, 0.0, -a, a)

    @staticmethod
    def select_lt(a: Scalar, b: Scalar, x: Scalar, y: Scalar) -> Scalar:
        """``x`` where a < b, else ``y`` (a branch-free choice, also in CUDA)."""
        xp = array_namespace(a, b, x, y)
        return xp.where(xp.less(a, b), x, y)

    def max(self, a: Scalar, b: Scalar) -> Scalar:
        return self.select_lt(a, b, b, a)


NUMPY_OPS = Ops()


@dataclass
class QuadPoint:
    """What an integrand sees at one quadrature point of one cell (or of many at once).

    Attributes:
        x: node coordinates, x[a][d] (n_nodes lists of dim scalars).
        n: shape function values N_a at the point (n_nodes scalars).
        dn: reference gradients dN_a/dxi_d, dn[a][d].
        w: quadrature weight.
        m: the cell's material factor m(rho_e).
        p: the physics' parameters by name (E, nu, conductivity, velocity, ...).
    """

    x: Sequence[Sequence[Scalar]]
    n: Sequence[Scalar]
    dn: Sequence[Sequence[Scalar]]
    w: Scalar
    m: Scalar
    p: dict[str, Scalar]


Integrand = Callable[[Ops, QuadPoint], list[list[Scalar]]]


@dataclass(frozen=True)
class ElementKernel:
    """The forward element kernel of a physics.

    Attributes:
        name: C identifier stem of the generated code, e.g. ``linear_elasticity_quad4``.
        element: the element (reference nodes, quadrature rule).
        dofs_per_node: dofs per node; element dofs are node-major (a * k + c).
        params: names of the parameters ``integrand`` reads from ``point.p``, in the
            order the generated kernels take them.
        integrand: the contribution of one quadrature point, an (nd, nd) nested list.
        values: the parameter values of this physics instance (by name).
    """

    name: str
    element: Element
    dofs_per_node: int
    params: tuple[str, ...]
    integrand: Integrand
    values: dict[str, float] = field(default_factory=dict)

    @property
    def nd(self) -> int:
        return self.element.n_nodes * self.dofs_per_node

    def param_vector(self) -> np.ndarray:
        return np.array([float(self.values[k]) for k in self.params])

    def quadrature(self) -> list[tuple[np.ndarray, np.ndarray, float]]:
        """(N, dN/dxi, weight) of every quadrature point, in float64."""
        el = self.element
        n = el.shape(el.quad_points)
        dn = el.grad(el.quad_points)
        return [(n[q], dn[q], float(el.quad_weights[q])) for q in range(n.shape[0])]


def integrate(kernel: ElementKernel, ops: Ops, x: Sequence[Sequence[Scalar]], m: Scalar,
              p: dict[str, Scalar], zero: Scalar = 0.0) -> list[list[Scalar]]:
    """K_e = sum over quadrature points of the integrand, as an (nd, nd) nested list."""
    nd = kernel.nd
    ke = [[zero] * nd for _ in range(nd)]
    for n, dn, w in kernel.quadrature():
        point = QuadPoint(x, [float(v) for v in n], [[float(v) for v in row] for row in dn],
                          w, m, p)
        contrib = kernel.integrand(ops, point)
        for i in range(nd):
            for j in range(nd):
                c = contrib[i][j]
                if not (isinstance(c, float) and c == 0.0):
                    ke[i][j] = ke[i][j] + c
    return ke


def element_matrices(kernel: ElementKernel, coords: Any, m: Any = 1.0,
                     dtype: Any = np.float64) -> Any:
    """(n_cells, nd, nd) element matrices from the kernel, in ``dtype`` (float64/float32),
    on the array module of ``coords`` (NumPy or CuPy: the integrand runs on its arrays).

    Args:
        coords: (n_cells, n_nodes, dim) node coordinates. m: material factor per cell
            (scalar or (n_cells,)).
    """
    xp = array_namespace(coords)
    coords = xp.asarray(coords, dtype=dtype)
    c = coords.shape[0]
    x = [[coords[:, a, d] for d in range(coords.shape[2])] for a in range(coords.shape[1])]
    mm = xp.broadcast_to(xp.asarray(m, dtype=dtype), (c,))
    p = {k: np.dtype(dtype).type(v) for k, v in kernel.values.items()}
    ke = integrate(kernel, NUMPY_OPS, x, mm, p)
    out = xp.empty((c, kernel.nd, kernel.nd), dtype=dtype)
    for i in range(kernel.nd):
        for j in range(kernel.nd):
            out[:, i, j] = ke[i][j]
    return out


# -- geometry helpers integrands share (scalar code, any Ops) ----------------------------


def det_inv(ops: Ops, j: list[list[Scalar]]) -> tuple[Scalar, list[list[Scalar]]]:
    """Determinant and inverse of a 2x2 or 3x3 matrix of scalars (cofactors)."""
    if len(j) == 2:
        det = j[0][0] * j[1][1] - j[0][1] * j[1][0]
        inv = [[j[1][1] / det, -j[0][1] / det], [-j[1][0] / det, j[0][0] / det]]
        return det, inv
    cof = [[j[(r + 1) % 3][(c + 1) % 3] * j[(r + 2) % 3][(c + 2) % 3]
            - j[(r + 1) % 3][(c + 2) % 3] * j[(r + 2) % 3][(c + 1) % 3] for c in range(3)]
           for r in range(3)]
    det = j[0][0] * cof[0][0] + j[0][1] * cof[0][1] + j[0][2] * cof[0][2]
    inv = [[cof[c][r] / det for c in range(3)] for r in range(3)]
    return det, inv


def isoparametric(ops: Ops, point: QuadPoint) -> tuple[list[list[Scalar]], Scalar]:
    """Physical gradients dN_a/dx_d and det(J) * weight at the point.

    J[d][e] = sum_a x_a,d dN_a/dxi_e and dN/dx = dN/dxi J^-1.
    """
    x, dn = point.x, point.dn
    nn, dim = len(x), len(x[0])
    jac = [[sum((x[a][d] * dn[a][e] for a in range(nn)), 0.0) for e in range(dim)]
           for d in range(dim)]
    det, inv = det_inv(ops, jac)
    dndx = [[sum((dn[a][e] * inv[e][d] for e in range(dim)), 0.0) for d in range(dim)]
            for a in range(nn)]
    return dndx, det * point.w


def position(point: QuadPoint) -> list[Scalar]:
    """Physical coordinates of the quadrature point, sum_a N_a x_a."""
    nn, dim = len(point.x), len(point.x[0])
    return [sum((point.n[a] * point.x[a][d] for a in range(nn)), 0.0) for d in range(dim)]
