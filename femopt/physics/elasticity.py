"""Linear elasticity: plane stress (2D) and 3D, isotropic material."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from femopt.assembly.elements import physical_gradients
from femopt.physics.base import Physics
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

    def thickness(self) -> float:
        return self.options.thickness if self.mesh.dim == 2 else 1.0

    def element_matrices_at(self, coords: np.ndarray) -> np.ndarray:
        dndx, wdet = physical_gradients(self.element, coords)
        b = strain_displacement(dndx)  # (c, q, v, nd)
        return np.einsum("cqvi,vw,cqwj,cq->cij", b, self.D, b, wdet) * self.thickness()

    def stress_matrices(self, coords: np.ndarray) -> np.ndarray:
        """D B at the cell centre: (n_cells, n_voigt, nd), stress = (D B) u_e."""
        from dataclasses import replace

        el = self.element
        centre = replace(el, quad_points=el.ref_nodes.mean(axis=0, keepdims=True),
                         quad_weights=np.ones(1))
        dndx, _ = physical_gradients(centre, coords)
        return np.einsum("vw,cwj->cvj", self.D, strain_displacement(dndx)[:, 0])

    def rigid_modes(self) -> np.ndarray:
        x = self.mesh.points - self.mesh.points.mean(axis=0)
        n, dim = x.shape
        modes = []
        for d in range(dim):  # translations
            m = np.zeros((n, dim))
            m[:, d] = 1.0
            modes.append(m)
        rotations = [(0, 1)] if dim == 2 else [(1, 2), (2, 0), (0, 1)]
        for i, j in rotations:  # infinitesimal rotations in the (i, j) plane
            m = np.zeros((n, dim))
            m[:, i] = -x[:, j]
            m[:, j] = x[:, i]
            modes.append(m)
        return np.stack([m.ravel() for m in modes], axis=1)

    def rigid_mode_names(self) -> list[str]:
        if self.mesh.dim == 2:
            return ["translation in x", "translation in y", "rotation about z"]
        return ["translation in x", "translation in y", "translation in z",
                "rotation about x", "rotation about y", "rotation about z"]
