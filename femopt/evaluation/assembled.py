"""The assembled CPU backend: K(rho) = sum_e m(rho_e) K0_e (+ C, springs) in a fixed
sparse pattern, solved by the model's solver (direct, PCG, AMG or multigrid), adjoints by
one multi-RHS solve on the same solver object (:mod:`femopt.adjoint.sensitivity`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from femopt.adjoint.sensitivity import function_gradients
from femopt.errors import PluginError, RunError
from femopt.evaluation.path import EvaluationPath, check_terms, checked_values
from femopt.objectives.base import State


class AssembledPath(EvaluationPath):
    """The design chain of ``model`` with NumPy arrays and an assembled operator."""

    def analyse(self, rho: np.ndarray) -> State:
        """Assemble, factorize and solve every load case at densities ``rho``."""
        m = self.model
        m.solver.update_operator(m.interp.value(rho), m.assembler, m.ke)
        rhs = m.loads_free
        u_free = m.solver.solve(rhs if rhs.shape[1] > 1 else rhs[:, 0])
        u = m.assembler.expand(u_free.reshape(rhs.shape)).T
        if not np.all(np.isfinite(u)):
            raise RunError("the state has non-finite values")
        m.last_state = State(rho, u, m.loads, m.weights, m)
        return m.last_state

    def _values(self, state: State) -> list[float]:
        m = self.model
        values = []
        for fn in m.functions():
            with m.registry.guard("function", fn.name, "value()"):
                values.append(fn.value(state))
        return checked_values(m, values)

    def design_terms(self, rho: np.ndarray, keep_state: bool = False
                     ) -> tuple[list[float], list[tuple[Any, Any]], State | None]:
        m = self.model
        state = self.analyse(rho)
        fns = m.functions()
        values = self._values(state)
        with m.registry.guard("function", ",".join(f.name for f in fns), "its gradient"):
            try:
                terms = function_gradients(fns, state, m.solver, m.assembler, m.cell_dofs,
                                           m.ke, m.interp.derivative(rho), split=True)
            except RunError as exc:
                raise RunError(f"{exc} at design iteration {len(m.history) + 1}") from None
        for fn, (pr, adj) in zip(fns, terms):
            for what, g in (("partial_rho", pr), ("adjoint term", adj)):
                if g.shape != rho.shape:
                    raise PluginError(f"the gradient of function '{fn.name}' ({what}) has "
                                      f"the shape {g.shape}, not {rho.shape}")
        check_terms(m, values, terms)
        return values, terms, state

    def design_values(self, rho: np.ndarray, state: State) -> list[float]:
        m = self.model
        fixed = State(rho, state.u, state.loads, state.weights, m)
        return [float(fn.value(fixed)) for fn in m.functions()]

    def design_final(self, rho: np.ndarray) -> tuple[list[float], np.ndarray, State]:
        state = self.analyse(rho)
        return self._values(state), rho, state
