"""Compliance f^T u (structural or thermal), summed over load cases with their weights.

Self-adjoint: with J = sum_c w_c f_c^T u_c and K u_c = f_c, the adjoint equation
K lambda_c = -dJ/du_c = -w_c f_c gives lambda_c = -w_c u_c without a solve, and
dJ/drho_e = sum_c lambda_c^T (dK/drho_e) u_c = -sum_c w_c u_c^T (dK/drho_e) u_c.
"""

from __future__ import annotations

from femopt.objectives.base import Function, State
from femopt.objectives.linear_form import LinearForm
from femopt.plugins.registry import Options


class ComplianceOptions(Options):
    pass


class Compliance(Function):
    name = "compliance"
    summary = "Weighted sum over load cases of f^T u (any linear physics)"
    Options = ComplianceOptions

    def value(self, state: State) -> float:
        return float((state.weights * (state.loads * state.u).sum(axis=1)).sum())

    def partial_u(self, state: State):
        return state.weights[:, None] * state.loads

    def partial_x(self, state: State):
        # f_c(X) . u_c: body loads move with the nodes
        if state.geometry is None:
            return None
        return state.geometry.load_derivative(state.weights[:, None] * state.u)

    def linear_form(self) -> LinearForm:
        return LinearForm(compliance=1.0)

    def adjoint_state(self, state: State):
        if not state.model.physics.symmetric:
            return None  # K^T differs from K: the adjoint needs its own solve
        return -state.weights[:, None] * state.u


class ThermalCompliance(Compliance):
    name = "thermal_compliance"
    summary = "Compliance of heat conduction: sum of q^T T (needs heat_conduction)"

    def __init__(self, options, model):
        super().__init__(options, model)
        if model.physics.field_name != "temperature":
            raise ValueError("thermal_compliance needs a heat physics such as heat_conduction; "
                             f"this problem's physics is {model.physics.name!r}")
