"""Loads on boundary facets: the consistent nodal loads of a traction, a pressure or a
flux, f_a = int_facet N_a t dA (times the thickness in 2D), by a quadrature rule on the
facet, and their derivative with respect to the node coordinates X.

A facet x(xi) = sum_a X_a N_a(xi) has tangents T_j = dx/dxi_j and the area-weighted
outward normal n = (T_y, -T_x) (2D) or T_1 x T_2 (3D), so dA = |n| dxi and n dA/|n| is
the outward normal times the area element. The facet's nodes are ordered so that n points
out of the body (:func:`femopt.mesh.facets.select_facets`).

- traction t (one value per dof; a heat flux is a traction of a scalar physics):
  f_a = t sum_q w_q N_a(q) |n_q|;
- pressure p (pushes into the body, along the inward normal): f_a = -p sum_q w_q N_a(q) n_q.

Coordinate derivatives: d(w . n)/dX_b = dN_b/dxi (-w_y, w_x) in 2D and
dN_b/dxi_1 (T_2 x w) + dN_b/dxi_2 (w x T_1) in 3D; d|n| is that with w = n / |n|.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from femopt.assembly.elements import Element, SimplexElement, _gauss


@cache
def facet_element(nodes_per_facet: int, dim: int) -> Element:
    """The reference facet of a ``dim``-D mesh: a 2-node line (2-point Gauss rule), a
    3-node triangle (3-point rule, exact to degree 2) or a 4-node quadrangle (2 x 2 Gauss)."""
    if dim == 2 and nodes_per_facet == 2:
        return Element("line2", 1, np.array([[-1.0], [1.0]]), *_gauss(2, 1))
    if dim == 3 and nodes_per_facet == 3:
        pts = np.array([[1 / 6, 1 / 6], [2 / 3, 1 / 6], [1 / 6, 2 / 3]])
        return SimplexElement("tri3", 2, np.vstack([np.zeros((1, 2)), np.eye(2)]), pts,
                              np.full(3, 1 / 6))
    if dim == 3 and nodes_per_facet == 4:
        nodes = np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)], dtype=float)
        return Element("quad4", 2, nodes, *_gauss(2, 2))
    raise ValueError(f"no facet of {nodes_per_facet} nodes in a {dim}D mesh")


@dataclass(frozen=True)
class SurfaceLoad:
    """A uniform load per unit area on boundary ``facets`` (n, nodes_per_facet; ordered so
    that their normal points out of the body), in load case ``case``.

    ``kind`` is ``traction`` (``value``: one entry per dof of a node; a heat flux is the
    traction of a scalar physics) or ``pressure`` (``value``: one entry, positive along
    the inward normal).
    """

    case: int
    kind: str
    value: np.ndarray
    facets: np.ndarray


def _frames(load: SurfaceLoad, points: np.ndarray):
    """Shape functions (q, nf), their derivatives (q, nf, dim - 1) and weights (q,) on
    the reference facet; tangents (f, q, dim, dim - 1) and normals (f, q, dim)."""
    dim = points.shape[1]
    el = facet_element(load.facets.shape[1], dim)
    dn = el.grad(el.quad_points)
    tang = np.einsum("fad,qaj->fqdj", points[load.facets], dn)
    if dim == 2:
        normal = np.stack([tang[..., 1, 0], -tang[..., 0, 0]], axis=-1)
    else:
        normal = np.cross(tang[..., 0], tang[..., 1])
    return el.shape(el.quad_points), dn, el.quad_weights, tang, normal


def surface_load_vector(load: SurfaceLoad, points: np.ndarray, dofs_per_node: int,
                        thickness: float = 1.0) -> np.ndarray:
    """The consistent nodal loads of ``load`` at node coordinates ``points`` (n_nodes,
    dim): a full dof vector (n_nodes * dofs_per_node,)."""
    n, _, w, _, normal = _frames(load, points)
    if load.kind == "pressure":
        per_node = -load.value[0] * np.einsum("q,qa,fqd->fad", w, n, normal)
    else:
        area = np.linalg.norm(normal, axis=-1)  # (f, q)
        per_node = np.einsum("q,qa,fq,k->fak", w, n, area, load.value)
    k = dofs_per_node
    idx = (load.facets[:, :, None] * k + np.arange(k)).ravel()
    return thickness * np.bincount(idx, weights=per_node.ravel(),
                                   minlength=points.shape[0] * k)


def _normal_derivative(dn: np.ndarray, tang: np.ndarray, w: np.ndarray) -> np.ndarray:
    """d(w . n)/dX_b per facet node b: (f, q, nf, dim), for w (f, q, dim)."""
    if w.shape[-1] == 2:
        turned = np.stack([-w[..., 1], w[..., 0]], axis=-1)
        return np.einsum("qb,fqd->fqbd", dn[..., 0], turned)
    t1, t2 = tang[..., 0], tang[..., 1]
    return (np.einsum("qb,fqd->fqbd", dn[..., 0], np.cross(t2, w))
            + np.einsum("qb,fqd->fqbd", dn[..., 1], np.cross(w, t1)))


def surface_load_derivative(load: SurfaceLoad, points: np.ndarray, dofs_per_node: int,
                            v: np.ndarray, thickness: float = 1.0) -> np.ndarray:
    """v^T d f/dX for the load's vector f at ``points`` and a dof vector ``v``:
    (n_nodes, dim)."""
    n, dn, w, tang, normal = _frames(load, points)
    k = dofs_per_node
    va = v[load.facets[:, :, None] * k + np.arange(k)]  # (f, nf, k)
    if load.kind == "pressure":
        vq = np.einsum("qa,fad->fqd", n, va)  # v at the quadrature points
        per_q = -load.value[0] * _normal_derivative(dn, tang, vq)
    else:
        area = np.linalg.norm(normal, axis=-1, keepdims=True)
        s = np.einsum("qa,fak,k->fq", n, va, load.value)  # t . v at the points
        per_q = _normal_derivative(dn, tang, normal / area) * s[:, :, None, None]
    per_node = thickness * np.einsum("q,fqbd->fbd", w, per_q)
    dim = points.shape[1]
    idx = (load.facets[:, :, None] * dim + np.arange(dim)).ravel()
    return np.bincount(idx, weights=per_node.ravel(),
                       minlength=points.size).reshape(points.shape)
