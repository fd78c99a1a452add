"""Orthotropic linear elasticity with material axes given as options.

The compliance in the material axes (1, 2, 3) comes from the engineering constants,
Voigt order 11, 22, 33, 23, 13, 12 with engineering shears (2D, plane stress: 11, 22, 12):

    S = [[1/E1, -nu12/E1, -nu13/E1], [., 1/E2, -nu23/E2], [., ., 1/E3]] (+) diag(1/G23,
        1/G13, 1/G12),

its inverse C is turned into the global axes as a fourth-order tensor,
C'_ijkl = R_ia R_jb R_kc R_ld C_abcd, with R's columns the material axes. The integrand
is elasticity's m t B^T D B det(J) w with D = C' taken from the kernel's parameters, so
femopt generates everything else (element matrices, rigid modes, adjoint and GPU kernels).
"""

from __future__ import annotations

from pydantic import Field

import numpy as np

from femopt.assembly.element_kernel import ElementKernel, Ops, QuadPoint
from femopt.physics import Physics
from femopt.physics.elasticity import voigt_integrand
from femopt.plugins.registry import Options

# Voigt index of the tensor index pair (i, j), femopt's order
PAIRS = {2: [(0, 0), (1, 1), (0, 1)],
         3: [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]}


class OrthotropicOptions(Options):
    E1: float = Field(1.0, gt=0)
    """Young's modulus along material axis 1."""
    E2: float = Field(1.0, gt=0)
    """Young's modulus along material axis 2."""
    E3: float = Field(1.0, gt=0)
    """Young's modulus along material axis 3 (3D only)."""
    nu12: float = 0.3
    """Poisson's ratio: contraction along 2 under stress along 1 (nu21 = nu12 E2/E1)."""
    nu13: float = 0.3
    """Poisson's ratio 13 (3D only)."""
    nu23: float = 0.3
    """Poisson's ratio 23 (3D only)."""
    G12: float = Field(1.0 / 2.6, gt=0)
    """Shear modulus in the 1-2 plane."""
    G13: float = Field(1.0 / 2.6, gt=0)
    """Shear modulus in the 1-3 plane (3D only)."""
    G23: float = Field(1.0 / 2.6, gt=0)
    """Shear modulus in the 2-3 plane (3D only)."""
    angle: float = 0.0
    """2D: angle of material axis 1 from the x axis, degrees, counter-clockwise."""
    axes: list[list[float]] | None = None
    """3D: material axes 1 and 2 as two vectors (axis 2 is made orthogonal to axis 1,
    axis 3 = 1 x 2); default x and y."""
    thickness: float = Field(1.0, gt=0)
    """Out-of-plane thickness (2D only)."""


def material_compliance(o: OrthotropicOptions, dim: int) -> np.ndarray:
    """S in the material axes (Voigt, engineering shears)."""
    if dim == 2:  # plane stress
        return np.array([[1 / o.E1, -o.nu12 / o.E1, 0.0],
                         [-o.nu12 / o.E1, 1 / o.E2, 0.0],
                         [0.0, 0.0, 1 / o.G12]])
    s = np.zeros((6, 6))
    s[:3, :3] = [[1 / o.E1, -o.nu12 / o.E1, -o.nu13 / o.E1],
                 [-o.nu12 / o.E1, 1 / o.E2, -o.nu23 / o.E2],
                 [-o.nu13 / o.E1, -o.nu23 / o.E2, 1 / o.E3]]
    s[3:, 3:] = np.diag([1 / o.G23, 1 / o.G13, 1 / o.G12])
    return s


def rotation(o: OrthotropicOptions, dim: int) -> np.ndarray:
    """R whose columns are the material axes in the global axes."""
    if dim == 2:
        t = np.radians(o.angle)
        return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    if o.axes is None:
        return np.eye(3)
    if len(o.axes) != 2 or any(len(a) != 3 for a in o.axes):
        raise ValueError("axes: expected two 3-component vectors (material axes 1 and 2)")
    a1, a2 = (np.asarray(a, dtype=float) for a in o.axes)
    if np.linalg.norm(a1) == 0:
        raise ValueError("axes: axis 1 is the zero vector")
    a1 = a1 / np.linalg.norm(a1)
    a2 = a2 - (a2 @ a1) * a1
    if np.linalg.norm(a2) < 1e-9 * max(1.0, np.linalg.norm(o.axes[1])):
        raise ValueError("axes: axis 2 is parallel to axis 1")
    a2 = a2 / np.linalg.norm(a2)
    return np.column_stack([a1, a2, np.cross(a1, a2)])


def rotate_voigt(c: np.ndarray, r: np.ndarray) -> np.ndarray:
    """The Voigt stiffness ``c`` of the material axes in the global axes (R's columns
    are the material axes)."""
    dim = r.shape[0]
    pairs = PAIRS[dim]
    t = np.zeros((dim,) * 4)
    for a, (i, j) in enumerate(pairs):
        for b, (k, l) in enumerate(pairs):
            for p, q in {(i, j), (j, i)}:
                for s, u in {(k, l), (l, k)}:
                    t[p, q, s, u] = c[a, b]
    g = np.einsum("ia,jb,kc,ld,abcd->ijkl", r, r, r, r, t)
    return np.array([[g[i, j, k, l] for k, l in pairs] for i, j in pairs])


def stiffness(o: OrthotropicOptions, dim: int) -> np.ndarray:
    """The global Voigt stiffness D; a ValueError when the constants are not those of a
    stable material (S not positive definite) or name another dimension's options."""
    if dim == 3 and o.angle != 0.0:
        raise ValueError("angle orients a 2D material; in 3D give axes")
    if dim == 2 and o.axes is not None:
        raise ValueError("axes orient a 3D material; in 2D give angle")
    s = material_compliance(o, dim)
    if np.linalg.eigvalsh(s).min() <= 0:
        raise ValueError("the engineering constants give no stable material (the "
                         "compliance matrix is not positive definite)")
    return rotate_voigt(np.linalg.inv(s), rotation(o, dim))


def _key(i: int, j: int) -> str:
    return f"D{min(i, j)}{max(i, j)}"


def _voigt_from_params(p: dict, dim: int) -> list[list]:
    n = len(PAIRS[dim])
    return [[p[_key(i, j)] for j in range(n)] for i in range(n)]


def orthotropic_integrand(ops: Ops, pt: QuadPoint) -> list[list]:
    """m t B^T D B det(J) w with D from the parameters D00, D01, ... (upper triangle)."""
    return voigt_integrand(ops, pt, _voigt_from_params)


class OrthotropicElasticity(Physics):
    name = "orthotropic_elasticity"
    summary = ("Small-strain orthotropic elasticity, material axes as options: plane "
               "stress (2D) and 3D")
    Options = OrthotropicOptions
    field_name = "displacement"
    load_name = "force"

    def __init__(self, options: OrthotropicOptions, mesh):
        super().__init__(options, mesh)
        self.dof_names = ("x", "y", "z")[: mesh.dim]
        self.D = stiffness(options, mesh.dim)

    def element_kernel(self) -> ElementKernel:
        n = self.D.shape[0]
        keys = tuple(_key(i, j) for i in range(n) for j in range(i, n))
        values = {_key(i, j): float(self.D[i, j]) for i in range(n) for j in range(i, n)}
        return ElementKernel(f"orthotropic_elasticity_{self.element.name}", self.element,
                             self.mesh.dim, keys + ("thickness",), orthotropic_integrand,
                             {**values, "thickness": self.thickness()})
