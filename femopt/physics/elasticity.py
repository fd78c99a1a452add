"""Linear elasticity: plane stress (2D) and 3D, isotropic material."""

from __future__ import annotations

from typing import Callable, Literal

import numpy as np
from pydantic import Field

from femopt.assembly.element_kernel import ElementKernel, Ops, QuadPoint, isoparametric
from femopt.assembly.elements import Element, physical_gradients
from femopt.physics.base import Physics
from femopt.physics.mass import mass_kernel
from femopt.physics.rigid_modes import rigid_body_modes  # noqa: F401 (re-exported)
from femopt.plugins.registry import Options


class ElasticityOptions(Options):
    E: float = Field(1.0, gt=0)
    """Young's modulus of the solid material."""
    nu: float = Field(0.3, gt=-1.0, lt=0.5)
    """Poisson's ratio."""
    thickness: float = Field(1.0, gt=0)
    """Out-of-plane thickness (2D only)."""
    plane: Literal["stress"] = "stress"
    """2D model: plane stress."""
    density: float | None = Field(None, gt=0)
    """Mass density of the solid material (mass per unit volume): gives the physics its
    consistent mass matrix, which eigenfrequencies need; none by default."""


def elasticity_matrix(E: float, nu: float, dim: int) -> np.ndarray:
    """Constitutive matrix in Voigt notation (engineering shear strains)."""
    if dim == 2:  # plane stress: xx, yy, xy
        return E / (1 - nu**2) * np.array([[1, nu, 0], [nu, 1, 0], [0, 0, (1 - nu) / 2]])
    lam = E * nu / ((1 + nu) * (1 - 2 * nu))
    mu = E / (2 * (1 + nu))
    d = np.zeros((6, 6))
    d[:3, :3] = lam
    d[np.arange(3), np.arange(3)] += 2 * mu
    d[np.arange(3, 6), np.arange(3, 6)] = mu
    return d


def strain_displacement(dndx: np.ndarray) -> np.ndarray:
    """B matrices (..., n_voigt, n_nodes*dim) from gradients (..., n_nodes, dim)."""
    *lead, n, dim = dndx.shape
    if dim == 2:
        b = np.zeros((*lead, 3, n, 2))
        b[..., 0, :, 0] = dndx[..., 0]
        b[..., 1, :, 1] = dndx[..., 1]
        b[..., 2, :, 0] = dndx[..., 1]
        b[..., 2, :, 1] = dndx[..., 0]
        return b.reshape(*lead, 3, 2 * n)
    b = np.zeros((*lead, 6, n, 3))
    for i in range(3):
        b[..., i, :, i] = dndx[..., i]
    # yz, xz, xy
    for row, (i, j) in zip((3, 4, 5), ((1, 2), (0, 2), (0, 1))):
        b[..., row, :, i] = dndx[..., j]
        b[..., row, :, j] = dndx[..., i]
    return b.reshape(*lead, 6, 3 * n)


def _constitutive(p: dict, dim: int) -> list[list]:
    """The Voigt matrix of :func:`elasticity_matrix` from scalar parameters (any Ops)."""
    E, nu = p["E"], p["nu"]
    if dim == 2:
        c = E / (1.0 - nu * nu)
        return [[c, c * nu, 0.0], [c * nu, c, 0.0], [0.0, 0.0, c * (1.0 - nu) / 2.0]]
    lam = E * nu / ((1.0 + nu) * (1.0 - 2.0 * nu))
    mu = E / (2.0 * (1.0 + nu))
    d = [[0.0] * 6 for _ in range(6)]
    for i in range(3):
        for j in range(3):
            d[i][j] = lam + 2.0 * mu if i == j else lam
        d[i + 3][i + 3] = mu
    return d


def _strain_rows(dndx: list[list], dim: int) -> list[list]:
    """B as (n_voigt, nd) nested lists with structural zeros (same layout as
    :func:`strain_displacement`)."""
    nn = len(dndx)
    pairs = [(0, 1)] if dim == 2 else [(1, 2), (0, 2), (0, 1)]
    rows = []
    for i in range(dim):
        r = [0.0] * (nn * dim)
        for a in range(nn):
            r[a * dim + i] = dndx[a][i]
        rows.append(r)
    for i, j in pairs:
        r = [0.0] * (nn * dim)
        for a in range(nn):
            r[a * dim + i] = dndx[a][j]
            r[a * dim + j] = dndx[a][i]
        rows.append(r)
    return rows


def elasticity_integrand(ops: Ops, pt: QuadPoint) -> list[list]:
    """m t B^T D B det(J) w at one quadrature point: the forward element kernel."""
    return voigt_integrand(ops, pt, _constitutive)


def voigt_integrand(ops: Ops, pt: QuadPoint,
                    constitutive: Callable[[dict, int], list[list]]) -> list[list]:
    """m t B^T D B det(J) w at one quadrature point for any linear elastic material:
    ``constitutive(p, dim)`` gives its Voigt matrix D (xx, yy, xy in 2D; xx, yy, zz, yz,
    xz, xy in 3D; engineering shears) from the parameters ``p``. The parameter
    ``thickness`` scales 2D models."""
    dndx, wdet = isoparametric(ops, pt)
    dim = len(dndx[0])
    d = constitutive(pt.p, dim)
    b = _strain_rows(dndx, dim)
    nv, nd = len(b), len(b[0])
    db = [[sum((d[v][w] * b[w][j] for w in range(nv)), 0.0) for j in range(nd)]
          for v in range(nv)]
    scale = pt.m * pt.p["thickness"] * wdet
    return [[scale * sum((b[v][i] * db[v][j] for v in range(nv)), 0.0) for j in range(nd)]
            for i in range(nd)]


def elasticity_kernel(element: Element, E: float = 1.0, nu: float = 0.3,
                      thickness: float = 1.0) -> ElementKernel:
    return ElementKernel(f"linear_elasticity_{element.name}", element, element.dim,
                         ("E", "nu", "thickness"), elasticity_integrand,
                         {"E": E, "nu": nu, "thickness": thickness})


class LinearElasticity(Physics):
    name = "linear_elasticity"
    summary = "Small-strain isotropic elasticity: plane stress (2D) and 3D"
    Options = ElasticityOptions
    field_name = "displacement"
    load_name = "force"

    def __init__(self, options: ElasticityOptions, mesh):
        super().__init__(options, mesh)
        self.dof_names = ("x", "y", "z")[: mesh.dim]
        self.D = elasticity_matrix(options.E, options.nu, mesh.dim)


    def element_matrices_at(self, coords: np.ndarray) -> np.ndarray:
        dndx, wdet = physical_gradients(self.element, coords)
        b = strain_displacement(dndx)  # (c, q, v, nd)
        if coords.shape[0] == 1:
            # a structured grid's shared K0: this summation order is the one its reference
            # runs reproduce bit for bit
            return np.einsum("cqvi,vw,cqwj,cq->cij", b, self.D, b, wdet) * self.thickness()
        db = np.einsum("vw,cqwj->cqvj", self.D, b * wdet[:, :, None, None])
        out = np.einsum("cqvi,cqvj->cij", b, db, optimize=True)
        t = self.thickness()
        if t != 1.0:  # x * 1 is x: no pass over the matrices in 3D
            out *= t
        return out

    def coordinate_sensitivity(self, coords: np.ndarray, m: np.ndarray, u: np.ndarray,
                               lams: list[np.ndarray]) -> list[np.ndarray]:
        """sum_c lambda_c,e^T (dK_e/dX_{a,d}) u_c,e per cell node, K_e = m_e K0_e(X), in
        closed form (the dual-number kernel of the base class is its reference).

        With G = dN/dx, H = grad u, sigma = C : eps(u) (tensors) at a quadrature point,
        d(w det J)/dX_{b,d} = w det J G_{b,d} and dH_{k,i}/dX_{b,d} = -H_{k,d} G_{b,i} give

            lambda^T dK_e/dX_{b,d} u = m t sum_q w det J [sigma(u) : eps(lambda) G
                                        - G sigma(lambda) H(u) - G sigma(u) H(lambda)]_{b,d}.
        """
        g, wdet = physical_gradients(self.element, coords)  # (e, q, n, d), (e, q)
        e, q, n, dim = g.shape
        pairs = [(0, 1)] if dim == 2 else [(1, 2), (0, 2), (0, 1)]

        def grads(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            """H (c, e, q, k, i) and the stress tensor (c, e, q, i, j) of cell states v."""
            h = np.einsum("ceak,eqai->ceqki", v.reshape(v.shape[0], e, n, dim), g,
                          optimize=True)
            eps = [h[..., i, i] for i in range(dim)] + [h[..., i, j] + h[..., j, i]
                                                        for i, j in pairs]
            sv = np.einsum("vw,wceq->ceqv", self.D, np.stack(eps))
            s = np.empty(h.shape)
            for i in range(dim):
                s[..., i, i] = sv[..., i]
            for v_, (i, j) in enumerate(pairs, start=dim):
                s[..., i, j] = s[..., j, i] = sv[..., v_]
            return h, s

        hu, su = grads(u)
        scale = self.thickness() * wdet * np.asarray(m, dtype=float).reshape(-1, 1)  # (e, q)
        out = []
        for lam in lams:
            hl, sl = grads(lam)
            energy = np.einsum("ceqij,ceqij->eq", su, hl)
            t = np.einsum("ceqik,ceqkd->eqid", sl, hu) + np.einsum("ceqik,ceqkd->eqid", su, hl)
            out.append(np.einsum("eq,eqbd->ebd", scale * energy, g)
                       - np.einsum("eq,eqbi,eqid->ebd", scale, g, t, optimize=True))
        return out

    def mass_kernel(self) -> ElementKernel | None:
        if self.options.density is None:
            return None
        return mass_kernel(self.element, self.options.density, self.thickness())

    def element_kernel(self) -> ElementKernel:
        return elasticity_kernel(self.element, self.options.E, self.options.nu,
                                 self.thickness())

    def _centre_gradients(self, coords: np.ndarray) -> np.ndarray:
        """dN/dx at the cell centre: (n_cells, n_nodes, dim)."""
        from dataclasses import replace

        el = self.element
        centre = replace(el, quad_points=el.ref_nodes.mean(axis=0, keepdims=True),
                         quad_weights=np.ones(1))
        return physical_gradients(centre, coords)[0][:, 0]

    def stress_matrices(self, coords: np.ndarray) -> np.ndarray:
        """D B at the cell centre: (n_cells, n_voigt, nd), stress = (D B) u_e."""
        dndx = self._centre_gradients(coords)
        return np.einsum("vw,cwj->cvj", self.D, strain_displacement(dndx[:, None])[:, 0])

    def stress_coordinate_derivative(self, coords: np.ndarray, ue: np.ndarray,
                                     w: np.ndarray) -> np.ndarray:
        """sum_c w_c,e . d(S_e u_c,e)/dX_{a,d} at fixed u: the explicit derivative of the
        centre stresses (:meth:`stress_matrices`) weighted by ``w``, per cell node.

        With H = du/dx = sum_a u_a G_a^T (G = dN/dx) the strains are linear in H and
        dG_{a,i}/dX_{b,d} = -G_{a,d} G_{b,i} gives dH_{k,i}/dX_{b,d} = -H_{k,d} G_{b,i};
        w . D eps(H) = T : H with T the tensor form of D^T w (shears on both sides).

        Args:
            coords: (n_cells, n_nodes, dim). ue: (n_cases, n_cells, nd) cell states.
            w: (n_cases, n_cells, n_voigt) weights of the stress components.
        Returns:
            (n_cells, n_nodes, dim).
        """
        g = self._centre_gradients(coords)  # (e, n, d)
        dim = g.shape[2]
        u = ue.reshape(ue.shape[0], ue.shape[1], -1, dim)  # (c, e, n, k)
        h = np.einsum("ceak,eai->ceki", u, g)
        t = np.einsum("vw,cev->cew", self.D, w)
        tt = np.zeros(h.shape)
        for i in range(dim):
            tt[..., i, i] = t[..., i]
        pairs = [(0, 1)] if dim == 2 else [(1, 2), (0, 2), (0, 1)]
        for v, (i, j) in enumerate(pairs, start=dim):
            tt[..., i, j] = tt[..., j, i] = t[..., v]
        return -np.einsum("ceki,cekd,ebi->ebd", tt, h, g, optimize=True)
