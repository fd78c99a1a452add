"""Displacement of a point or region along a direction, and the compliant mechanism.

J = sum_c w_c a . u_c with a the mean over the region's nodes of the direction d: linear
in u, so dJ/du_c = w_c a and the adjoint solve K^T lambda_c = -w_c a gives
dJ/drho_e = sum_c lambda_c,e^T (dK/drho_e) u_c,e (no explicit rho term).
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
from pydantic import Field

from femopt.mesh.regions import Region
from femopt.objectives.base import Function, State, case_weights, nodal_functional
from femopt.objectives.linear_form import LinearForm
from femopt.plugins.registry import Options


class DisplacementOptions(Options):
    region: Region
    """The point or region whose mean displacement is measured."""
    direction: list[float] = Field(min_length=1)
    """Direction of the measured displacement (normalized; e.g. [1, 0])."""
    case: str | None = None
    """Only this load case (by name); default: all cases with their weights."""


class Displacement(Function):
    """sum_c w_c (1/n) sum_{i in region} d . u_c,i, d the unit direction."""

    name = "displacement"
    summary = "Mean displacement of a point or region along a direction (linear in u)"
    Options = DisplacementOptions

    def __init__(self, options: DisplacementOptions, model):
        super().__init__(options, model)
        k = model.physics.dofs_per_node
        d = np.asarray(options.direction, dtype=float)
        if model.physics.field_name != "displacement":
            raise ValueError(f"{self.name} needs an elasticity physics; this problem's "
                             f"physics is {model.physics.name!r}")
        if d.size != k:
            raise ValueError(f"direction has {d.size} component(s); the mesh is {k}D")
        norm = float(np.linalg.norm(d))
        if norm == 0.0:
            raise ValueError("direction must not be the zero vector")
        self.direction = d / norm
        self.case_w = case_weights(model, options.case)
        self.functional = nodal_functional(model, options.region, self.direction,
                                           "displacement")

    @cached_property
    def a(self) -> np.ndarray:
        """The functional as a full dof vector, built on first use (the paths on a grid
        take :attr:`functional`, its nonzeros)."""
        return self.functional.dense()

    def value(self, state: State) -> float:
        return float(self.case_w @ (state.u @ self.a))

    def linear_form(self) -> LinearForm:
        return LinearForm(functionals=[(self.functional,
                                        np.asarray(self.case_w, dtype=np.float64))])

    def partial_u(self, state: State):
        return self.case_w[:, None] * self.a[None, :]


class MechanismOptions(DisplacementOptions):
    pass


class CompliantMechanism(Displacement):
    """The output displacement of a compliant mechanism (force inverter, gripper).

    Minimizing u_out . d with an input force, an input spring k_in and an output spring
    k_out (the workpiece) at the output port (``springs`` in the problem file) gives a
    mechanism that moves the output against d. The output region must carry a spring:
    without it the optimum is a floppy structure of unbounded output.
    """

    name = "compliant_mechanism"
    summary = "Output displacement of a compliant mechanism with input/output springs"
    Options = MechanismOptions
    label = "u_out"

    def __init__(self, options: MechanismOptions, model):
        super().__init__(options, model)
        springs = model.spring_nonzeros
        on = springs.index[springs.values != 0.0]
        at_output = np.intersect1d(on, self.functional.nonzero())
        if at_output.size == 0:
            raise ValueError("a compliant mechanism needs an output spring: add a 'springs' "
                             "entry on the output region along the direction")
        if on.size == at_output.size:
            raise ValueError("a compliant mechanism needs an input spring as well: add a "
                             "'springs' entry where the input force acts")
