"""The mesh at moved node coordinates: what functions and loads derive from the geometry,
and their derivatives with respect to the node coordinates X (n_nodes, dim).

Isoparametric identities used throughout (J = dx/dxi, G = dN/dx = dN/dxi J^-1):

    d det(J) / dX_{b,d} = det(J) G_{b,d}        d G_{a,i} / dX_{b,d} = -G_{a,d} G_{b,i}

so a cell's measure v_e = sum_q w_q det J_q has dv_e/dX_{b,d} = sum_q w_q det J_q G_q,bd,
and a body load f_{e,a} = t s sum_q w_q det J_q N_a(q) (a uniform source s per unit
volume) has lambda^T df/dX_{b,d} = t sum_q w_q det J_q G_q,bd sum_a N_a(q) s . lambda_a.
Surface loads (traction, pressure, heat flux) move with their facets: their vectors and
derivatives come from :mod:`femopt.assembly.surface`. Nodal loads, supports and springs
do not depend on X.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from femopt.assembly.elements import Element, physical_gradients
from femopt.assembly.surface import SurfaceLoad, surface_load_derivative, surface_load_vector
from femopt.errors import InvertedCellsError


@dataclass(frozen=True)
class BodyLoad:
    """A uniform source per unit volume ``value`` (one entry per dof of a node) on
    ``cells``, in load case ``case``."""

    case: int
    value: np.ndarray
    cells: np.ndarray


def body_loads_of(model) -> list[BodyLoad]:
    """The body loads of a built model's problem file, by load case (the cells its
    regions selected on the initial mesh; they stay the same cells when nodes move)."""
    from femopt.mesh.regions import select_cells

    p = model.problem
    cases = [c.loads for c in p.load_cases] if p.load_cases is not None else [p.loads or []]
    out = []
    for c, loads in enumerate(cases):
        for load in loads:
            if not load.body:
                continue
            value = load.force if load.force is not None else load.heat
            cells = (select_cells(load.region, model.mesh) if load.region
                     else np.arange(model.mesh.n_cells))
            out.append(BodyLoad(c, np.atleast_1d(np.asarray(value, dtype=float)), cells))
    return out


def gather(cells: np.ndarray, values: np.ndarray, n_nodes: int) -> np.ndarray:
    """(n_nodes, dim) sums over cells of per-cell node values (n_cells, nn, dim)."""
    dim = values.shape[2]
    idx = (cells[:, :, None] * dim + np.arange(dim)).ravel()
    return np.bincount(idx, weights=values.ravel(), minlength=n_nodes * dim
                       ).reshape(n_nodes, dim)


def jacobian_determinants(element: Element, coords: np.ndarray) -> np.ndarray:
    """det J of every cell at its quadrature points and its corners: (n_cells, q + nn).
    A bilinear quad is valid where det J > 0 at its corners; a trilinear hex needs that
    at least."""
    xi = np.vstack([element.quad_points, element.ref_nodes])
    dn = element.grad(xi)  # (q, n, d)
    return np.linalg.det(np.einsum("cnd,qne->cqde", coords, dn))


def check_cells(element: Element, coords: np.ndarray, min_det: float) -> None:
    """Raise :class:`InvertedCellsError` naming the cells whose det J is <= ``min_det``
    somewhere (at a quadrature point or a corner), or not finite."""
    det = jacobian_determinants(element, coords)
    bad = np.flatnonzero(~np.all(det > min_det, axis=1))  # also catches NaN
    if bad.size:
        first = ", ".join(str(int(c)) for c in bad[:10])
        more = f", ... ({bad.size} in all)" if bad.size > 10 else ""
        raise InvertedCellsError(
            f"{bad.size} cell(s) inverted or degenerate at these node coordinates "
            f"(det J <= {min_det:.3g} at a quadrature point or corner): cells {first}{more}",
            bad)


class Geometry:
    """The mesh of a model with its nodes at ``points``: cell measures, load vectors and
    their coordinate derivatives. Built by :class:`femopt.shape.gradient.ShapeEvaluator`
    (which has checked the cells) and handed to functions as ``State.geometry``.

    Args:
        points: (n_nodes, dim) node coordinates. cells: (n_cells, nn). element: the cells'
        element. dofs_per_node, thickness: the physics'. nodal_loads: (n_cases, n_dofs),
        the loads that do not move with the nodes. body_loads, surface_loads: those that
        do (on cells, on boundary facets).
    """

    def __init__(self, points: np.ndarray, cells: np.ndarray, element: Element,
                 dofs_per_node: int, thickness: float, nodal_loads: np.ndarray,
                 body_loads: list[BodyLoad], surface_loads: list[SurfaceLoad] = ()):
        self.points = points
        self.cells = cells
        self.element = element
        self.k = dofs_per_node
        self.thickness = thickness
        self.nodal_loads = nodal_loads
        self.body_loads = body_loads
        self.surface_loads = list(surface_loads)

    @property
    def n_nodes(self) -> int:
        return self.points.shape[0]

    @cached_property
    def _gradients(self) -> tuple[np.ndarray, np.ndarray]:
        """G = dN/dx (n_cells, q, nn, dim) and w det J (n_cells, q)."""
        return physical_gradients(self.element, self.points[self.cells])

    @cached_property
    def cell_volumes(self) -> np.ndarray:
        """(n_cells,) cell measures (area in 2D, without the thickness)."""
        return self._gradients[1].sum(axis=1)

    def volume_derivative(self, weights: np.ndarray) -> np.ndarray:
        """d(sum_e weights_e v_e)/dX, (n_nodes, dim)."""
        g, wdet = self._gradients
        per_cell = np.einsum("c,cq,cqnd->cnd", weights, wdet, g, optimize=True)
        return gather(self.cells, per_cell, self.n_nodes)

    def _body(self, load: BodyLoad) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The load's cells' G, w det J and shape functions at the quadrature points."""
        g, wdet = self._gradients
        n = self.element.shape(self.element.quad_points)  # (q, nn)
        return g[load.cells], wdet[load.cells], n

    @cached_property
    def loads(self) -> np.ndarray:
        """(n_cases, n_dofs) load vectors at these coordinates."""
        out = np.array(self.nodal_loads, dtype=float, copy=True)
        n_dofs = out.shape[1]
        for load in self.body_loads:
            _, wdet, n = self._body(load)
            fe = np.einsum("cq,qn->cn", wdet, n) * self.thickness  # (c, nn)
            nodes = self.cells[load.cells]
            for comp in range(self.k):
                out[load.case] += np.bincount((nodes * self.k + comp).ravel(),
                                              weights=(fe * load.value[comp]).ravel(),
                                              minlength=n_dofs)
        for sl in self.surface_loads:
            out[sl.case] += surface_load_vector(sl, self.points, self.k, self.thickness)
        return out

    def load_derivative(self, v: np.ndarray) -> np.ndarray | None:
        """sum_c v_c^T dF_c/dX, (n_nodes, dim), for per-case dof vectors ``v``
        (n_cases, n_dofs); None when no load depends on the coordinates."""
        if not self.body_loads and not self.surface_loads:
            return None
        out = np.zeros_like(self.points, dtype=float)
        for load in self.body_loads:
            g, wdet, n = self._body(load)
            nodes = self.cells[load.cells]
            va = v[load.case][nodes[:, :, None] * self.k + np.arange(self.k)]  # (c, nn, k)
            s = np.einsum("qa,cak,k->cq", n, va, load.value)  # sum_a N_a(q) s . v_a
            per_cell = self.thickness * np.einsum("cq,cq,cqbd->cbd", wdet, s, g)
            out += gather(nodes, per_cell, self.n_nodes)
        for sl in self.surface_loads:
            out += surface_load_derivative(sl, self.points, self.k, v[sl.case],
                                           self.thickness)
        return out
