"""The assembled CPU backend: K(rho) = sum_e m(rho_e) K0_e (+ C, springs) in a fixed
sparse pattern, solved by the model's solver (direct, PCG, AMG or multigrid), adjoints by
one multi-RHS solve on the same solver object (:mod:`femopt.adjoint.sensitivity`);
eigenpairs by shift-invert Lanczos on the same solver object
(:func:`femopt.solvers.eigen.shift_invert_lanczos`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from femopt.adjoint.sensitivity import element_sensitivity, function_gradients
from femopt.errors import PluginError, RunError
from femopt.evaluation.function_checks import only_modal
from femopt.evaluation.path import EvaluationPath
from femopt.evaluation.value_checks import check_terms, checked_values
from femopt.objectives.base import State
from femopt.solvers.eigen import shift_invert_lanczos


class AssembledPath(EvaluationPath):
    """The design chain of ``model`` with NumPy arrays and an assembled operator."""

    def analyse(self, rho: np.ndarray) -> State:
        """Assemble, factorize and solve every load case at densities ``rho`` (no solve
        when no function reads a static state: functions of eigenvalues alone)."""
        m = self.model
        m.solver.update_operator(m.interp.value(rho), m.assembler, m.ke)
        rhs = m.loads_free
        if m.static:
            u_free = m.solver.solve(rhs if rhs.shape[1] > 1 else rhs[:, 0])
        else:
            u_free = np.zeros(rhs.shape)
        u = m.assembler.expand(u_free.reshape(rhs.shape)).T
        if not np.all(np.isfinite(u)):
            raise RunError("the state has non-finite values")
        m.last_state = State(rho, u, m.loads, m.weights, m)
        return m.last_state

    def _values(self, state: State, modal: dict[int, tuple[float, Any]]) -> list[float]:
        """Each function's value: its own (a sum's other terms) plus its eigenvalue part."""
        m = self.model
        values = []
        for k, fn in enumerate(m.functions()):
            own = 0.0
            if not only_modal(fn):
                with m.registry.guard("function", fn.name, "value()"):
                    own = fn.value(state)
            values.append(own + (modal[k][0] if k in modal else 0.0))
        return checked_values(m, values)

    def design_terms(self, rho: np.ndarray, keep_state: bool = False
                     ) -> tuple[list[float], list[tuple[Any, Any]], State | None]:
        m = self.model
        state = self.analyse(rho)
        modal = self.modal_terms(rho)
        fns = m.functions()
        plain = [k for k in range(len(fns)) if not only_modal(fns[k])]
        values = self._values(state, modal)
        terms: list[Any] = [(np.zeros(rho.shape), 0.0) for _ in fns]
        if plain:
            with m.registry.guard("function", ",".join(fns[k].name for k in plain),
                                  "its gradient"):
                try:
                    found = function_gradients([fns[k] for k in plain], state, m.solver,
                                               m.assembler, m.cell_dofs, m.ke,
                                               m.interp.derivative(rho), split=True)
                except RunError as exc:
                    raise RunError(f"{exc} at design iteration {len(m.history) + 1}"
                                   ) from None
            for k, t in zip(plain, found):
                terms[k] = t
        for k, (_, grad) in modal.items():  # a sum's eigenvalue part adds to its own
            terms[k] = (terms[k][0], terms[k][1] + grad)
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
        return self.held_modal_values([0.0 if only_modal(fn) else float(fn.value(fixed))
                                       for fn in m.functions()])

    def design_final(self, rho: np.ndarray, lazy: bool = False
                     ) -> tuple[list[float], np.ndarray, State]:
        # the fields are on the host already, whether ``lazy`` or not
        state = self.analyse(rho)
        return self._values(state, self.modal_terms(rho, gradient=False)), rho, state

    # -- eigenpairs --------------------------------------------------------------------

    def _eigenpairs(self, key: Any, problem: Any, rho: Any) -> tuple[np.ndarray, Any]:
        m = self.model
        asm = m.assembler
        k = asm.assemble(m.interp.value(rho), m.ke)
        mass = (asm.assemble(problem.mass.value(rho), problem.m0, constant=False)
                + sp.diags(problem.point_mass[asm.free]))
        lams, phis = shift_invert_lanczos(k, mass.tocsr(), problem.n_modes, m.solver.solve)
        return lams, asm.expand(phis).T

    def _modal_sensitivity(self, problem: Any, phis: Any, ck: np.ndarray, cm: np.ndarray,
                           rho: Any) -> Any:
        m = self.model
        sk = element_sensitivity(m.cell_dofs, m.ke, ck[:, None] * phis, phis)
        sm = element_sensitivity(m.cell_dofs, problem.m0, cm[:, None] * phis, phis)
        return m.interp.derivative(rho) * sk + problem.mass.derivative(rho) * sm
