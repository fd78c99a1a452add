"""The Hilbert-space extension: a shape gradient on the moving boundary becomes a smooth
node motion of the whole mesh.

The derivative dJ/dX of a function at the node coordinates is a covector (an integral
against the nodal basis). Restricted to the free components of the moving boundary's
nodes, it is turned into a motion V of every node by one solve with a mesh operator

    a(V, W) = int_Omega k_e (grad V : C : grad W) + l^-2 V . W  dx,

C the isotropic elasticity tensor (``type: elasticity``, Poisson's ratio ``nu``) or the
identity (``type: laplace``, each component its own Laplace equation); l the length
scale (no mass term without one); k_e = (mean cell volume / cell volume)^stiffening, so
that the small cells near the boundary move nearly rigidly instead of being crushed.

- ``data: neumann``: a(V, W) = G(W) for every admissible W: V is the Riesz
  representative of the restricted gradient G; the boundary motion is G smoothed by the
  operator, and G(V) = a(V, V) > 0.
- ``data: dirichlet``: V = G / m on the moving boundary (m the boundary measure each node
  carries), extended into the volume by a(V, W) = 0.

Held dofs (V = 0): every component of a boundary node on a boundary facet that has a node
neither moving nor sliding (the fixed part of the boundary; a moving node there is held
too), and the normal component of a node in a ``slide`` region (a symmetry plane).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import splu

from femopt.assembly.elements import get_element, physical_gradients
from femopt.mesh.facets import FACETS, boundary_facets  # noqa: F401 (re-exported)
from femopt.physics.elasticity import elasticity_matrix, strain_displacement


def facet_measures(points: np.ndarray, facets: np.ndarray) -> np.ndarray:
    """Length (2D) or area (3D) of each facet; a quad facet as two triangles."""
    p = points[facets]
    if p.shape[2] == 2:
        return np.linalg.norm(p[:, 1] - p[:, 0], axis=1)
    area = 0.5 * np.linalg.norm(np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), axis=1)
    if facets.shape[1] == 4:
        area += 0.5 * np.linalg.norm(np.cross(p[:, 2] - p[:, 0], p[:, 3] - p[:, 0]), axis=1)
    return area


@dataclass
class Extension:
    """The extension operator of one mesh topology; :meth:`extend` at any node positions.

    Args:
        cells, cell_type: the mesh's cells.
        moving: indices of the moving boundary's nodes.
        held: (n_nodes, dim) True where a motion component is held at zero.
        kind: ``elasticity`` or ``laplace``. data: ``neumann`` or ``dirichlet``.
        length: length scale of the mass term (None: no mass term). nu: Poisson's ratio of
        the elasticity operator. stiffening: exponent of the cell stiffness factor.
        normal: keep only the boundary gradient's normal component.
    """

    cells: np.ndarray
    cell_type: str
    moving: np.ndarray
    held: np.ndarray
    kind: str = "elasticity"
    data: str = "neumann"
    length: float | None = None
    nu: float = 0.3
    stiffening: float = 1.0
    normal: bool = True

    def __post_init__(self) -> None:
        n, dim = self.held.shape
        self.dim = dim
        self.free_moving = np.zeros((n, dim), dtype=bool)
        self.free_moving[self.moving] = True
        self.free_moving &= ~self.held
        facets = boundary_facets(self.cells, self.cell_type)
        on_moving = np.zeros(n, dtype=bool)
        on_moving[self.moving] = True
        self.moving_facets = facets[on_moving[facets].all(axis=1)]
        k = self.cells.shape[1] * dim
        self._rows = np.repeat(self._dofs(), k, axis=1).ravel()
        self._cols = np.tile(self._dofs(), (1, k)).ravel()

    def _dofs(self) -> np.ndarray:
        return (self.cells[:, :, None] * self.dim + np.arange(self.dim)).reshape(
            self.cells.shape[0], -1)

    def matrix(self, points: np.ndarray) -> sp.csr_matrix:
        """The operator a(., .) assembled at node positions ``points``, (n*dim, n*dim).

        Raises:
            ValueError (from the element geometry) when a cell is inverted.
        """
        element = get_element(self.cell_type)
        dndx, wdet = physical_gradients(element, points[self.cells])  # (c,q,n,d), (c,q)
        vol = wdet.sum(axis=1)
        k = (vol.mean() / vol) ** self.stiffening
        c, q, nn, d = dndx.shape
        if self.kind == "laplace":
            lap = np.einsum("cqad,cqbd,cq->cab", dndx, dndx, wdet)
            ke = np.einsum("cab,ij->caibj", lap, np.eye(d)).reshape(c, nn * d, nn * d)
        else:  # B^T D B of E = 1 (plane stress in 2D, as the physics)
            b = strain_displacement(dndx)
            ke = np.einsum("cqvi,vw,cqwj,cq->cij", b, elasticity_matrix(1.0, self.nu, d), b,
                           wdet)
        ke = ke * k[:, None, None]
        if self.length is not None:  # lumped mass: each node carries vol / nn
            m = np.repeat(vol / nn, nn * d).reshape(c, nn * d) / self.length ** 2
            ke = ke + m[:, :, None] * np.eye(nn * d)[None]
        size = self.held.size
        return sp.csr_matrix((ke.ravel(), (self._rows, self._cols)), shape=(size, size))

    def boundary_measure(self, points: np.ndarray) -> np.ndarray:
        """(n_nodes,) the share of the moving boundary's measure each node carries."""
        m = facet_measures(points, self.moving_facets) / self.moving_facets.shape[1]
        out = np.zeros(points.shape[0])
        np.add.at(out, self.moving_facets, m[:, None])
        return out

    def normals(self, points: np.ndarray) -> np.ndarray:
        """(n_nodes, dim) unit outward normals of the moving boundary at its nodes (the
        measure-weighted mean of the facets' normals without the held components; zero
        elsewhere)."""
        p = points[self.moving_facets]
        if self.dim == 2:
            t = p[:, 1] - p[:, 0]
            n = np.column_stack([t[:, 1], -t[:, 0]])  # length-weighted, outward for CCW cells
        else:
            n = 0.5 * np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
            if p.shape[1] == 4:
                n += 0.5 * np.cross(p[:, 2] - p[:, 0], p[:, 3] - p[:, 0])
        out = np.zeros_like(points)
        for j in range(self.moving_facets.shape[1]):
            np.add.at(out, self.moving_facets[:, j], n)
        out[self.held] = 0.0  # a node on a symmetry plane: the normal within the plane
        length = np.linalg.norm(out, axis=1)
        return np.divide(out, length[:, None], out=np.zeros_like(out), where=length[:, None] > 0)

    def restrict(self, points: np.ndarray, gradient: np.ndarray) -> np.ndarray:
        """The gradient on the moving boundary's free components; with ``normal`` its
        normal part only (tangential node motion changes the shape only to second order)."""
        g = np.where(self.free_moving, gradient, 0.0)
        if self.normal:
            n = self.normals(points)
            g = n * np.sum(g * n, axis=1, keepdims=True)
            g = np.where(self.free_moving, g, 0.0)
        return g

    def extend(self, points: np.ndarray, gradients: list[np.ndarray]) -> list[np.ndarray]:
        """The node motion (n_nodes, dim) of each gradient (n_nodes, dim), restricted to the
        moving boundary's free components, under the operator at ``points``. One
        factorization serves every gradient."""
        gradients = [self.restrict(points, g) for g in gradients]
        a = self.matrix(points)
        held = self.held.ravel()
        if self.data == "neumann":
            free = np.flatnonzero(~held)
            lu = splu(a[free][:, free].tocsc())
            rhs = np.column_stack([g.ravel()[free]
                                   for g in gradients])
            sol = lu.solve(rhs)
            out = []
            for j in range(len(gradients)):
                v = np.zeros(held.size)
                v[free] = sol[:, j]
                out.append(v.reshape(self.held.shape))
            return out
        measure = self.boundary_measure(points)
        given = held | self.free_moving.ravel()  # held (0) or prescribed on the boundary
        inner = np.flatnonzero(~given)
        lu = splu(a[inner][:, inner].tocsc()) if inner.size else None
        out = []
        for g in gradients:
            v = np.zeros(self.held.shape)
            with np.errstate(divide="ignore", invalid="ignore"):
                v[self.free_moving] = (g / measure[:, None])[self.free_moving]
            v = v.ravel()
            if lu is not None:
                v[inner] = lu.solve(-(a[inner] @ v))
            out.append(v.reshape(self.held.shape))
        return out


def held_components(mesh_points: np.ndarray, cells: np.ndarray, cell_type: str,
                    moving: np.ndarray, slides: list[tuple[np.ndarray, int]]) -> np.ndarray:
    """(n_nodes, dim) the held components of the node motion.

    Args:
        moving: the moving boundary's nodes.
        slides: (nodes, normal axis) of each slide region: those nodes keep that
            coordinate (they slide along the plane).
    """
    n, dim = mesh_points.shape
    held = np.zeros((n, dim), dtype=bool)
    loose = np.zeros(n, dtype=bool)
    loose[moving] = True
    for nodes, axis in slides:
        loose[nodes] = True
        held[nodes, axis] = True
    facets = boundary_facets(cells, cell_type)
    fixed = facets[~loose[facets].all(axis=1)]
    held[np.unique(fixed)] = True
    return held
