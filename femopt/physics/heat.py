"""Steady heat conduction, isotropic conductivity, 2D and 3D."""

from __future__ import annotations

from pydantic import Field

from femopt.assembly.element_kernel import ElementKernel, Ops, QuadPoint, isoparametric
from femopt.assembly.elements import Element
from femopt.physics.base import Physics
from femopt.plugins.registry import Options


class HeatOptions(Options):
    conductivity: float = Field(1.0, gt=0)
    """Thermal conductivity of the solid material."""
    thickness: float = Field(1.0, gt=0)
    """Out-of-plane thickness (2D only)."""


def heat_integrand(ops: Ops, pt: QuadPoint) -> list[list]:
    """m k t grad N_i . grad N_j det(J) w at one quadrature point."""
    dndx, wdet = isoparametric(ops, pt)
    nn, dim = len(dndx), len(dndx[0])
    scale = pt.m * pt.p["conductivity"] * pt.p["thickness"] * wdet
    return [[scale * sum((dndx[i][d] * dndx[j][d] for d in range(dim)), 0.0)
             for j in range(nn)] for i in range(nn)]


def heat_kernel(element: Element, conductivity: float = 1.0, thickness: float = 1.0
                ) -> ElementKernel:
    return ElementKernel(f"heat_conduction_{element.name}", element, 1,
                         ("conductivity", "thickness"), heat_integrand,
                         {"conductivity": conductivity, "thickness": thickness})


class HeatConduction(Physics):
    name = "heat_conduction"
    summary = "Steady heat conduction (temperature per node), 2D and 3D"
    Options = HeatOptions
    dof_names = ("T",)
    field_name = "temperature"
    load_name = "heat"

    def element_kernel(self) -> ElementKernel:
        return heat_kernel(self.element, self.options.conductivity, self.thickness())
