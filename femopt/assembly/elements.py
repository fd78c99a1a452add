"""Isoparametric Lagrange elements: shape functions, their derivatives and Gauss rules.

Tensor-product cells (quad4, hex8) have the reference cell [-1, 1]^d; simplices (tri3,
tet4) the unit simplex with a vertex at the origin. Nodes are in VTK order. Each element is
a small record of node coordinates plus two functions of the reference point, which is all
a physics needs to integrate its element matrix.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from itertools import product

import numpy as np


@dataclass(frozen=True)
class Element:
    name: str
    dim: int
    ref_nodes: np.ndarray  # (n_nodes, dim) reference coordinates, VTK order
    quad_points: np.ndarray  # (n_q, dim)
    quad_weights: np.ndarray  # (n_q,)

    @property
    def n_nodes(self) -> int:
        return self.ref_nodes.shape[0]

    def shape(self, xi: np.ndarray) -> np.ndarray:
        """N at reference points ``xi`` (n_q, dim) -> (n_q, n_nodes)."""
        # tensor-product linear: prod_d (1 + xi_d * a_d) / 2
        return np.prod((1.0 + xi[:, None, :] * self.ref_nodes[None, :, :]) / 2.0, axis=2)

    def grad(self, xi: np.ndarray) -> np.ndarray:
        """dN/dxi at ``xi`` -> (n_q, n_nodes, dim)."""
        f = (1.0 + xi[:, None, :] * self.ref_nodes[None, :, :]) / 2.0  # (q, n, d)
        out = np.empty(f.shape)
        for d in range(self.dim):
            others = np.prod(np.delete(f, d, axis=2), axis=2)
            out[:, :, d] = self.ref_nodes[None, :, d] / 2.0 * others
        return out


@dataclass(frozen=True)
class SimplexElement(Element):
    """Linear simplex (tri3, tet4): N_0 = 1 - sum(xi), N_i = xi_(i-1); constant gradients,
    so one quadrature point at the centroid integrates its stiffness exactly."""

    def shape(self, xi: np.ndarray) -> np.ndarray:
        return np.column_stack([1.0 - xi.sum(axis=1), xi])

    def grad(self, xi: np.ndarray) -> np.ndarray:
        g = np.vstack([-np.ones((1, self.dim)), np.eye(self.dim)])  # (n_nodes, dim)
        return np.broadcast_to(g, (xi.shape[0], *g.shape)).copy()


def _gauss(order: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    x, w = np.polynomial.legendre.leggauss(order)
    pts = np.array(list(product(x, repeat=dim)))[:, ::-1]
    wts = np.prod(np.array(list(product(w, repeat=dim))), axis=1)
    return pts, wts


@cache
def get_element(name: str) -> Element:
    """The element called ``name`` ("quad4", "hex8", "tri3" or "tet4")."""
    if name == "quad4":
        nodes = np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)], dtype=float)
        return Element("quad4", 2, nodes, *_gauss(2, 2))
    if name == "hex8":
        nodes = np.array(
            [(-1, -1, -1), (1, -1, -1), (1, 1, -1), (-1, 1, -1),
             (-1, -1, 1), (1, -1, 1), (1, 1, 1), (-1, 1, 1)], dtype=float)
        return Element("hex8", 3, nodes, *_gauss(2, 3))
    if name in ("tri3", "tet4"):
        dim = 2 if name == "tri3" else 3
        nodes = np.vstack([np.zeros((1, dim)), np.eye(dim)])
        centroid = np.full((1, dim), 1.0 / (dim + 1))
        volume = 0.5 if dim == 2 else 1.0 / 6.0
        return SimplexElement(name, dim, nodes, centroid, np.array([volume]))
    raise ValueError(f"unknown element {name!r}")


def physical_gradients(element: Element, coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shape-function gradients in physical space at the quadrature points.

    Args:
        coords: (n_cells, n_nodes, dim) node coordinates of each cell.
    Returns:
        dN/dx of shape (n_cells, n_q, n_nodes, dim) and det(J) * weight (n_cells, n_q).
    Raises:
        ValueError if a cell is inverted or degenerate (det J <= 0).
    """
    dn = element.grad(element.quad_points)  # (q, n, d)
    jac, det = _jacobians(element, coords)
    inv = np.linalg.inv(jac)  # dxi_e/dx_d
    dndx = np.einsum("qne,cqed->cqnd", dn, inv)
    return dndx, det * element.quad_weights[None, :]


def _jacobians(element: Element, coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """dx_d/dxi_e (n_cells, n_q, dim, dim) and its determinants at the quadrature points,
    refusing inverted or degenerate cells."""
    dn = element.grad(element.quad_points)  # (q, n, d)
    jac = np.einsum("cnd,qne->cqde", coords, dn)  # dx_d/dxi_e
    det = np.linalg.det(jac)
    if np.any(det <= 0):
        bad = np.unique(np.nonzero(det <= 0)[0])
        raise ValueError(f"{bad.size} inverted or degenerate cell(s), first: {bad[:10].tolist()}")
    return jac, det


def quadrature_measures(element: Element, coords: np.ndarray) -> np.ndarray:
    """(n_cells, n_q) det(J) times the weights at the quadrature points of cells with node
    coordinates ``coords``: :func:`physical_gradients`' second result, without inverting
    the Jacobians."""
    _, det = _jacobians(element, coords)
    return det * element.quad_weights[None, :]


def cell_measures(element: Element, coords: np.ndarray) -> np.ndarray:
    """(n_cells,) volumes (areas in 2D) of cells with node coordinates ``coords``:
    :func:`quadrature_measures` summed over the quadrature points."""
    return quadrature_measures(element, coords).sum(axis=1)
