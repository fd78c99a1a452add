"""The consistent mass matrix of a physics whose dofs are one displacement component per
axis: M_e(m) = m rho0 t int N_a N_b delta_ij det(J) (written as an element kernel, so the
mass of any element comes from the same shape functions as its stiffness).

The material factor m is the mass interpolation's (linear in the density, or Du and
Olhoff's), applied by the paths exactly as the stiffness' m(rho): M(rho) = sum_e
m_M(rho_e) M0_e, and M0_e is this kernel at m = 1.
"""

from __future__ import annotations

from femopt.assembly.element_kernel import ElementKernel, Ops, QuadPoint, isoparametric
from femopt.assembly.elements import Element


def mass_integrand(ops: Ops, pt: QuadPoint) -> list[list]:
    """m rho0 t N_a N_b delta_ij det(J) w at one quadrature point (dof a * dim + i)."""
    _, wdet = isoparametric(ops, pt)
    nn, dim = len(pt.n), len(pt.x[0])
    nd = nn * dim
    scale = pt.m * pt.p["density"] * pt.p["thickness"] * wdet
    out = [[0.0] * nd for _ in range(nd)]
    for a in range(nn):
        for b in range(nn):
            v = scale * (pt.n[a] * pt.n[b])
            for i in range(dim):
                out[a * dim + i][b * dim + i] = v
    return out


def mass_kernel(element: Element, density: float, thickness: float = 1.0) -> ElementKernel:
    """The consistent mass kernel of ``element`` with mass density ``density`` (per unit
    volume) and, in 2D, the out-of-plane ``thickness``."""
    return ElementKernel(f"consistent_mass_{element.name}", element, element.dim,
                         ("density", "thickness"), mass_integrand,
                         {"density": density, "thickness": thickness})
