"""Steady convection-diffusion of heat in a prescribed flow, with SUPG stabilization.

    c v . grad T - div(k(rho) grad T) = Q,    k(rho) = k_f + m(rho) (k_s - k_f)

The design places a conducting solid (conductivity k_s) in a fluid (k_f) that moves with
the prescribed velocity v everywhere (volumetric heat capacity c). The operator is not
symmetric, K(rho) = sum_e m(rho_e) K0_e + C_e with K0_e the solid's extra conduction and
C_e the fluid's conduction, the convection and the stabilization.

Streamline-upwind Petrov-Galerkin (SUPG): the test function N_i gets the extra weight
tau v . grad N_i, with the optimal one-dimensional tau = xi(Pe) / sum_a |v . grad N_a|,
xi(Pe) = coth(Pe) - 1/Pe and the cell Peclet number Pe = c |v| h / (2 k_f) over the
streamline length h = 2 |v| / sum_a |v . grad N_a|. xi tends to Pe/3 for small Pe, so the
stabilization fades where diffusion dominates and reaches full upwinding (xi -> 1) where
the cell Peclet number is large; on a uniform 1D mesh this tau makes the nodal values
exact. tau uses the fluid's conductivity (the least diffusive material, where the
stabilization is needed) and so does not depend on the design. The second-derivative
term of the residual vanishes on affine cells and is left out; body sources get the same
Petrov-Galerkin weight, which keeps the scheme consistent (patch test).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from femopt.assembly.element_kernel import (NUMPY_OPS, ElementKernel, Ops, QuadPoint,
                                            element_matrices, isoparametric, position)
from femopt.assembly.elements import Element
from femopt.physics.base import Physics
from femopt.plugins.registry import Options


class ChannelFlow(Options):
    profile: Literal["channel"]
    """Plane Poiseuille flow along x between the mesh's y_min and y_max walls."""
    max: float = Field(1.0)
    """Velocity on the centre line (negative: flow towards -x)."""


class ConvectionDiffusionOptions(Options):
    conductivity: float = Field(1.0, gt=0)
    """Thermal conductivity of the solid (design) material."""
    fluid_conductivity: float = Field(0.01, gt=0)
    """Thermal conductivity of the fluid (where the design is void)."""
    capacity: float = Field(1.0, gt=0)
    """Volumetric heat capacity of the fluid (rho c_p)."""
    velocity: list[float] | ChannelFlow = [1.0, 0.0]
    """The prescribed flow: a uniform vector, or {profile: channel, max: V}."""
    stabilization: Literal["supg", "none"] = "supg"
    """SUPG streamline stabilization (fades where the cell Peclet number is small)."""
    thickness: float = Field(1.0, gt=0)
    """Out-of-plane thickness (2D only)."""

    @model_validator(mode="after")
    def _solid_conducts(self):
        if self.fluid_conductivity > self.conductivity:
            raise ValueError("fluid_conductivity must not exceed the solid's conductivity")
        return self


def _velocity(ops: Ops, pt: QuadPoint, profile: str) -> list:
    dim = len(pt.x[0])
    if profile == "uniform":
        return [pt.p[f"v{d}"] for d in range(dim)]
    y = position(pt)[1]
    y0, y1 = pt.p["y0"], pt.p["y1"]
    vx = pt.p["vmax"] * 4.0 * (y - y0) * (y1 - y) / ((y1 - y0) * (y1 - y0))
    return [vx] + [0.0] * (dim - 1)


def _supg(ops: Ops, pt: QuadPoint, v: list, dndx: list) -> tuple[list, object]:
    """(v . grad N_a for every a, tau) at the point."""
    nn, dim = len(dndx), len(v)
    vgrad = [sum((v[d] * dndx[a][d] for d in range(dim)), 0.0) for a in range(nn)]
    vv = sum((vi * vi for vi in v), 0.0)
    tiny = 1e-30
    s = sum((ops.abs(g) for g in vgrad), 0.0)
    s = ops.select_lt(vv, tiny, 1.0, s)
    speed = ops.sqrt(ops.select_lt(vv, tiny, 1.0, vv))
    pe = pt.p["capacity"] * speed * speed / (s * pt.p["fluid_conductivity"])  # c|v|h/(2k)
    safe = ops.select_lt(pe, 1e-3, 1.0, pe)
    xi = ops.select_lt(pe, 1e-3, pe / 3.0, 1.0 / ops.tanh(safe) - 1.0 / safe)
    return vgrad, pt.p["supg"] * ops.select_lt(vv, tiny, 0.0, xi / s)


def _integrand(profile: str):
    def integrand(ops: Ops, pt: QuadPoint) -> list[list]:
        """(k_f + m (k_s - k_f)) grad N_i . grad N_j + c (N_i + tau v.grad N_i) v.grad N_j,
        times det(J) w t."""
        dndx, wdet = isoparametric(ops, pt)
        nn, dim = len(dndx), len(dndx[0])
        v = _velocity(ops, pt, profile)
        vgrad, tau = _supg(ops, pt, v, dndx)
        p = pt.p
        k = p["fluid_conductivity"] + pt.m * (p["conductivity"] - p["fluid_conductivity"])
        scale = wdet * p["thickness"]
        out = []
        for i in range(nn):
            test = pt.n[i] + tau * vgrad[i]
            row = []
            for j in range(nn):
                diff = sum((dndx[i][d] * dndx[j][d] for d in range(dim)), 0.0)
                row.append(scale * (k * diff + p["capacity"] * test * vgrad[j]))
            out.append(row)
        return out

    return integrand


def convection_diffusion_kernel(element: Element, profile: str = "uniform",
                                values: dict[str, float] | None = None) -> ElementKernel:
    dim = element.dim
    flow = tuple(f"v{d}" for d in range(dim)) if profile == "uniform" else ("vmax", "y0", "y1")
    params = ("conductivity", "fluid_conductivity", "capacity", "thickness", "supg") + flow
    vals = {"conductivity": 1.0, "fluid_conductivity": 0.01, "capacity": 1.0,
            "thickness": 1.0, "supg": 1.0, **{k: 0.0 for k in flow}}
    if profile == "channel":
        vals.update(vmax=1.0, y1=1.0)
    vals.update(values or {})
    return ElementKernel(f"convection_diffusion_{profile}_{element.name}", element, 1,
                         params, _integrand(profile), vals)


class ConvectionDiffusion(Physics):
    name = "convection_diffusion"
    summary = ("Steady heat convection-diffusion in a prescribed flow (conductivity by "
               "design, SUPG), non-symmetric")
    Options = ConvectionDiffusionOptions
    dof_names = ("T",)
    field_name = "temperature"
    load_name = "heat"
    symmetric = False

    def __init__(self, options: ConvectionDiffusionOptions, mesh):
        super().__init__(options, mesh)
        o = options
        values = {"conductivity": o.conductivity, "fluid_conductivity": o.fluid_conductivity,
                  "capacity": o.capacity, "thickness": self.thickness(),
                  "supg": 1.0 if o.stabilization == "supg" else 0.0}
        if isinstance(o.velocity, ChannelFlow):
            self.profile = "channel"
            lo, hi = mesh.bounds()
            values.update(vmax=o.velocity.max, y0=float(lo[1]), y1=float(hi[1]))
        else:
            if len(o.velocity) != mesh.dim:
                raise ValueError(f"velocity has {len(o.velocity)} component(s); the mesh "
                                 f"is {mesh.dim}D")
            self.profile = "uniform"
            values.update({f"v{d}": float(v) for d, v in enumerate(o.velocity)})
        self.kernel = convection_diffusion_kernel(self.element, self.profile, values)


    def element_kernel(self) -> ElementKernel:
        return self.kernel

    def _uniform(self) -> bool:
        """Every cell has the same element matrices (a grid in a uniform flow)."""
        return self.mesh.grid is not None and self.profile == "uniform"

    def _coords(self, all_cells: bool) -> np.ndarray:
        cells = self.mesh.cells if all_cells else self.mesh.cells[:1]
        return self.mesh.points[cells]

    def element_matrices_at(self, coords: np.ndarray) -> np.ndarray:
        """The design-scaled part K0 (the solid's extra conduction)."""
        return (element_matrices(self.kernel, coords, 1.0)
                - element_matrices(self.kernel, coords, 0.0))

    def fixed_element_matrices(self) -> np.ndarray:
        """C_e = K_e(m = 0): fluid conduction, convection and SUPG."""
        c = element_matrices(self.kernel, self._coords(not self._uniform()), 0.0)
        return c[0] if self._uniform() else c

    def peclet_numbers(self) -> np.ndarray:
        """The largest cell Peclet number c |v| h / (2 k_f) of each cell (at its
        quadrature points)."""
        coords = self.mesh.points[self.mesh.cells]
        out = np.zeros(coords.shape[0])
        x = [[coords[:, a, d] for d in range(coords.shape[2])] for a in range(coords.shape[1])]
        p = self.kernel.values
        for n, dn, w in self.kernel.quadrature():
            pt = QuadPoint(x, list(n), [list(r) for r in dn], w, 1.0, p)
            dndx, _ = isoparametric(NUMPY_OPS, pt)
            v = _velocity(NUMPY_OPS, pt, self.profile)
            vgrad = [sum(v[d] * dndx[a][d] for d in range(len(v))) for a in range(len(dndx))]
            s = sum(np.abs(g) for g in vgrad)
            vv = sum(np.asarray(vi) ** 2 for vi in v)
            with np.errstate(divide="ignore", invalid="ignore"):
                pe = np.where(s > 0, p["capacity"] * vv / (s * p["fluid_conductivity"]), 0.0)
            out = np.maximum(out, pe)
        return out

    def source_terms(self, cells: np.ndarray) -> np.ndarray:
        """(cells, nodes) sum_q (N_i + tau v . grad N_i) det(J) w t of ``cells``: the
        Petrov-Galerkin source (the base class's ``body_load`` sums it by batches)."""
        coords = self.mesh.cell_coords(cells)
        x = [[coords[:, a, d] for d in range(coords.shape[2])] for a in range(coords.shape[1])]
        fe = np.zeros((cells.size, self.element.n_nodes))
        p = self.kernel.values
        for n, dn, w in self.kernel.quadrature():
            pt = QuadPoint(x, list(n), [list(r) for r in dn], w, 1.0, p)
            dndx, wdet = isoparametric(NUMPY_OPS, pt)
            v = _velocity(NUMPY_OPS, pt, self.profile)
            vgrad, tau = _supg(NUMPY_OPS, pt, v, dndx)
            for a in range(self.element.n_nodes):
                fe[:, a] += (n[a] + tau * vgrad[a]) * wdet * p["thickness"]
        return fe
