"""Reaction-diffusion: -div(k grad u) + c u = f, a scalar Helmholtz-type equation.

The design scales the whole material, diffusion and reaction alike:

    K_e(m) = m sum_q (k grad N_i . grad N_j + c N_i N_j) det(J) w t,

so void conducts nothing and absorbs nothing, and K_e is affine in m as femopt requires
(K = sum_e m_e K0_e). With c > 0 the operator is definite: no support is needed to make
it solvable, and femopt finds no rigid mode in it.
"""

from __future__ import annotations

from pydantic import Field

from femopt.assembly.element_kernel import ElementKernel, Ops, QuadPoint, isoparametric
from femopt.physics import Physics
from femopt.plugins.registry import Options


class ReactionDiffusionOptions(Options):
    k: float = Field(1.0, gt=0)
    """Diffusion coefficient of the solid material."""
    c: float = Field(1.0, ge=0)
    """Reaction coefficient of the solid material (c u in the equation)."""
    thickness: float = Field(1.0, gt=0)
    """Out-of-plane thickness (2D only)."""


def reaction_diffusion_integrand(ops: Ops, pt: QuadPoint) -> list[list]:
    """m (k grad N_i . grad N_j + c N_i N_j) det(J) w t at one quadrature point."""
    dndx, wdet = isoparametric(ops, pt)
    nn, dim = len(dndx), len(dndx[0])
    k, c = pt.p["k"], pt.p["c"]
    s = pt.m * pt.p["thickness"] * wdet
    return [[s * (k * sum((dndx[i][d] * dndx[j][d] for d in range(dim)), 0.0)
                  + c * pt.n[i] * pt.n[j]) for j in range(nn)] for i in range(nn)]


class ReactionDiffusion(Physics):
    name = "reaction_diffusion"
    summary = "-div(k grad u) + c u = f (scalar, Helmholtz type with c >= 0), 2D and 3D"
    Options = ReactionDiffusionOptions
    dof_names = ("u",)
    field_name = "u"
    load_name = "heat"  # the problem file's key of a scalar load

    def element_kernel(self) -> ElementKernel:
        o = self.options
        return ElementKernel(f"reaction_diffusion_{self.element.name}", self.element, 1,
                             ("k", "c", "thickness"), reaction_diffusion_integrand,
                             {"k": o.k, "c": o.c, "thickness": self.thickness()})
