"""The fundamental eigenfrequency, or a lower bound on the lowest few, of K phi = w^2 M phi.

A function of eigenvalues needs no state solve and no adjoint: it declares the
eigenproblem it reads (:meth:`Function.eigen_problem`), every evaluation path solves it
(shift-invert Lanczos on the CPU, multigrid-preconditioned LOBPCG on the grid path) and
computes the gradient from the eigenvectors. For a simple eigenvalue with M-normalised
phi_i (phi_i^T M phi_i = 1),

    dlambda_i/drho_e = phi_i,e^T (m'(rho_e) K0_e - lambda_i m_M'(rho_e) M0_e) phi_i,e,

and J(lambda_1..n) gives dJ/drho_e = sum_i dJ/dlambda_i dlambda_i/drho_e: one pass over
cells for the stiffness and one for the mass (the design sensitivity kernels of
compliance with the eigenvectors as states).

The value is w = sqrt(lambda_1) in rad/s for ``modes: 1``; with ``modes: n`` it is the
p-mean bound (sum_i w_i^-p)^(-1/p) <= w_1, which stays differentiable when the lowest
eigenvalues coalesce (a repeated eigenvalue alone is not differentiable); it lies within a
factor n^(-1/p) of w_1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import Field

from femopt.design.interpolation import MassInterpolation
from femopt.mesh.regions import Region, RegionError, select_nodes
from femopt.objectives.base import Function, State
from femopt.plugins.registry import Options


class PointMass(Options):
    region: Region
    """The point or region the mass is attached to (shared equally by its nodes)."""
    mass: float = Field(gt=0)
    """The non-structural mass (moves with every displacement component of its nodes)."""


class EigenfrequencyOptions(Options):
    modes: int = Field(1, ge=1, le=20)
    """How many of the lowest eigenfrequencies the value bounds: 1 is the fundamental
    frequency itself; more keeps the value differentiable when they coalesce."""
    p: float = Field(20.0, ge=1)
    """Exponent of the p-mean lower bound over the modes (with modes > 1)."""
    mass_interpolation: Literal["du_olhoff", "du_olhoff_smooth", "linear"] = "du_olhoff"
    """Mass factor of a cell of density rho: du_olhoff (rho above 0.1, 1e5 rho^6 below:
    no spurious modes in the void), du_olhoff_smooth (rho above 0.1, 6e5 rho^6 - 5e6
    rho^7 below: the same with a continuous slope) or linear (rho)."""
    point_masses: list[PointMass] = []
    """Non-structural masses, each `{region, mass}` (a concentrated mass): the mass is
    shared equally by the region's nodes and moves with every displacement component."""
    tol: float = Field(1e-10, gt=0, lt=1e-3)
    """Relative residual |K phi - lambda M phi| / |K phi| of LOBPCG (grid path)."""


@dataclass
class EigenProblem:
    """What a path needs to solve K phi = lambda M phi for a function.

    Attributes:
        n_modes: eigenpairs wanted (lowest first). block: LOBPCG's block size.
        mass: the mass interpolation m_M(rho). m0: element mass matrices of full
            material, shaped like the model's ``ke``. point_mass: (n_dofs,) a constant
            diagonal mass (non-structural masses). tol: LOBPCG's tolerance.
    """

    n_modes: int
    block: int
    mass: MassInterpolation
    m0: np.ndarray
    point_mass: np.ndarray
    tol: float


class Eigenfrequency(Function):
    name = "eigenfrequency"
    label = "frequency"
    summary = ("Fundamental eigenfrequency sqrt(lambda_1) in rad/s, or a p-mean bound on "
               "the lowest few (maximize it: objective maximize: true)")
    Options = EigenfrequencyOptions

    def __init__(self, options: EigenfrequencyOptions, model):
        super().__init__(options, model)
        physics = model.physics
        if physics.mass_kernel() is None:
            hint = (" (set physics.density)" if "density" in type(physics.options).model_fields
                    else "")
            raise ValueError(f"{self.name} needs a physics with a mass; physics "
                             f"{physics.name!r} has none{hint}")
        k = physics.dofs_per_node
        point = np.zeros(model.n_dofs)
        for i, pm in enumerate(options.point_masses):
            try:
                nodes = select_nodes(pm.region, model.mesh)
            except RegionError as exc:
                raise ValueError(f"point_masses.{i}.region: {exc}") from None
            for c in range(k):
                np.add.at(point, nodes * k + c, pm.mass / nodes.size)
        self._problem = EigenProblem(options.modes, options.modes + min(options.modes, 4) + 1,
                                     MassInterpolation(options.mass_interpolation),
                                     physics.element_mass_matrices(), point, options.tol)
        self.last_eigenvalues: np.ndarray | None = None

    def eigen_problem(self) -> EigenProblem:
        return self._problem

    def eigen_value(self, lams: np.ndarray) -> float:
        """J from the lowest eigenvalues (ascending)."""
        w = np.sqrt(np.maximum(lams, 0.0))
        if w.size == 1:
            return float(w[0])
        p = self.options.p
        return float(np.sum((w / w[0]) ** -p) ** (-1.0 / p) * w[0])

    def eigen_weights(self, lams: np.ndarray) -> np.ndarray:
        """dJ/dlambda_i."""
        w = np.sqrt(lams)
        j = self.eigen_value(lams)
        dj_dw = (j / w) ** (self.options.p + 1.0) if w.size > 1 else np.ones(1)
        return dj_dw / (2.0 * w)

    def value(self, state: State) -> float:
        raise NotImplementedError("an eigenvalue function is evaluated by the path "
                                  "(EvaluationPath.modal_terms)")
