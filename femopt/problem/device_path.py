"""The design chain of a model on the GPU: every field stays on the device.

A :class:`~femopt.problem.model.Model` whose device is ``gpu`` keeps its design x, the
densities rho, the interpolation's scale factors, the loads and the states as CuPy arrays
and runs one design iteration through the grid twins of its CPU pieces:

    x -> filters (GridDensityFilter stencil, Heaviside) -> rho -> m(rho)
      -> MultigridSolver.solve_grid (warm start from the previous state)
      -> compliance and dc/drho in one pass over cells (grid_sensitivity)
      -> volume (a dot product) -> chain rule through the filters -> OC or MMA.

Only scalars (CG residuals, function values, the bisection's constraint values) reach
the host; fields are copied back for logging and output alone. The path covers what the
classic GPU codes cover: a structured grid, a symmetric physics with one element matrix
(linear_elasticity, heat_conduction), compliance (or thermal_compliance) with volume
constraints, density/sensitivity/Heaviside filters, OC or MMA and the multigrid solver;
:func:`unsupported` names the first thing a problem has beyond that. The same code runs
with NumPy arrays (``xp=numpy``), which is how the CPU tests exercise it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from femopt.adjoint.grid_sensitivity import grid_sensitivity
from femopt.assembly.grid_layout import GridLayout, layout_of
from femopt.errors import RunError
from femopt.filters.grid_filter import GridDensityFilter
from femopt.filters.heaviside import Heaviside
from femopt.filters.radius import DensityFilter, SensitivityFilter
from femopt.objectives.compliance import Compliance
from femopt.objectives.volume import Volume
from femopt.optimizers.base import Evaluation

PHYSICS = ("linear_elasticity", "heat_conduction")
OPTIMIZERS = ("oc", "mma")

# Measured peak GPU memory of a whole design iteration on a hex8 elasticity grid (3 dofs
# per node, multigrid with float32 V-cycles and Galerkin coarse levels; docs/benchmarks.md):
# about 565 bytes per cell. About a quarter is per-cell (design, densities, scale
# factors, filter, sensitivity, optimizer), the rest scales with the dofs per node.
BYTES_PER_CELL = 140.0
BYTES_PER_DOF = (565.0 - BYTES_PER_CELL) / 3.0
MEMORY_MARGIN = 1.1  # the estimate is a measurement of one case: keep 10% in hand


def estimate_bytes(layout: GridLayout, n_cases: int = 1) -> int:
    """GPU memory a design iteration of ``layout`` needs (bytes, an estimate).

    Per node and dof as measured for hex8 elasticity; a quad4 grid has one node per cell
    too (asymptotically), so the same figures apply; each further load case adds its
    state, load and CG vectors (about 6 float64 vectors)."""
    per_cell = BYTES_PER_CELL + BYTES_PER_DOF * layout.k
    extra = (n_cases - 1) * 6 * 8 * layout.n_dofs
    return int(MEMORY_MARGIN * (per_cell * layout.n_cells + extra))


def unsupported(model: Any, solver_type: str) -> str | None:
    """Why the GPU path cannot run ``model`` (None when it can)."""
    if model.mesh.grid is None:
        return "the GPU path needs a structured grid (mesh type 'structured')"
    if model.physics.name not in PHYSICS or not model.physics.symmetric:
        return (f"the GPU path covers the physics {', '.join(PHYSICS)}, not "
                f"{model.physics.name!r}")
    if not isinstance(model.objective, Compliance):
        return (f"the GPU path minimizes compliance (or thermal_compliance), not "
                f"{model.objective.name!r}")
    if np.ndim(model.ke) != 2 or model.physics.fixed_element_matrices() is not None:
        return "the GPU path needs one element matrix for the whole grid"
    if np.any(model.springs):
        return "the GPU path does not take springs"
    for b in model.bounds:
        if not isinstance(b.function, Volume):
            return f"the GPU path takes volume constraints only, not {b.function.name!r}"
    for f in model.filters:
        if not isinstance(f, (DensityFilter, SensitivityFilter, Heaviside)):
            return f"the GPU path has no twin of the filter {f.name!r}"
    if model.optimizer.name not in OPTIMIZERS:
        return (f"the GPU path runs the optimizers {', '.join(OPTIMIZERS)}, not "
                f"{model.optimizer.name!r}")
    if solver_type != "multigrid":
        return f"the GPU path needs the multigrid solver, not {solver_type!r}"
    return None


class DevicePath:
    """The design chain of ``model`` with fields on ``xp`` (cupy, or numpy in tests).

    Args:
        model: a built model that :func:`unsupported` accepts, with a multigrid solver.
        xp: the array module of the fields.
    """

    def __init__(self, model: Any, xp: Any):
        self.model, self.xp = model, xp
        k = model.physics.dofs_per_node
        self.layout = lay = layout_of(model.mesh, k)
        grid = model.mesh.grid
        # the multigrid solver rebuilds its hierarchy when the mask object changes: one
        # host mask for the whole run
        self.fixed_grid = np.zeros(lay.n_dofs, dtype=bool)
        self.fixed_grid[lay.grid_index(np.asarray(model.fixed))] = True
        loads = np.stack([lay.from_dofs(f) for f in model.loads])
        loads[:, self.fixed_grid] = 0.0
        self.loads = xp.asarray(loads)
        self.weights = [float(w) for w in model.weights]
        self.ke = np.asarray(model.ke, dtype=np.float64)
        self.u: list[Any] = [None] * len(self.weights)
        self.twins = [GridDensityFilter(grid.shape, grid.spacing, f.options.radius, xp)
                      if isinstance(f, (DensityFilter, SensitivityFilter)) else None
                      for f in model.filters]
        self.passive_idx = xp.asarray(model.passive_idx)
        self.passive_val = xp.asarray(model.passive_val, dtype=xp.float64)
        self.volume_weights = {id(b.function): xp.asarray(b.function.weights)
                               for b in model.bounds}

    # -- the design chain ------------------------------------------------------------

    def physical(self, x: Any) -> tuple[Any, list[Any]]:
        inputs = []
        y = x
        for f, twin in zip(self.model.filters, self.twins):
            inputs.append(y)
            y = twin.forward(y) if isinstance(f, DensityFilter) else f.forward(y)
        rho = y.astype(self.xp.float64, copy=True)
        rho[self.passive_idx] = self.passive_val
        return rho, inputs

    def chain(self, grad_rho: Any, inputs: list[Any]) -> Any:
        g = grad_rho.copy()
        g[self.passive_idx] = 0.0
        for f, twin, xin in zip(reversed(self.model.filters), reversed(self.twins),
                                reversed(inputs)):
            g = twin.backward(xin, g) if isinstance(f, DensityFilter) else f.backward(xin, g)
        return g

    def modify_objective_gradient(self, x: Any, df: Any) -> Any:
        """The heuristic filters' rewrite of the objective gradient (sensitivity filter:
        H (x df) / Hs / max(1e-3, x))."""
        xp = self.xp
        for f, twin in zip(self.model.filters, self.twins):
            if isinstance(f, SensitivityFilter):
                df = twin.apply(x * df, post=twin.inv_hs) / xp.maximum(1e-3, x)
            elif f.heuristic:
                df = f.modify_objective_gradient(x, df)
        return df

    # -- analysis ------------------------------------------------------------------------

    def analyse(self, rho: Any) -> tuple[Any, Any]:
        """Solve every load case at ``rho`` (warm start from the last states); returns the
        interpolation's scale factors and their derivative."""
        m = self.model
        scale = m.interp.value(rho)
        dm = m.interp.derivative(rho)
        m.solver.update_grid_operator(scale, self.ke, self.fixed_grid)
        for c in range(len(self.u)):
            self.u[c] = m.solver.solve_grid(self.loads[c], x0=self.u[c])
        return scale, dm

    def values_and_gradients(self, x: Any) -> tuple[list[float], list[Any]]:
        """Values of the objective and the constraints and their gradients w.r.t. x."""
        xp = self.xp
        rho, inputs = self.physical(x)
        scale, dm = self.analyse(rho)
        values, grads = [], []
        for fn in self.model.functions():
            if isinstance(fn, Volume):
                w = self.volume_weights[id(fn)]
                values.append(float(w @ rho))
                grads.append(self.chain(w, inputs))
                continue
            # compliance: J = sum_c w_c f_c^T u_c, dJ/drho_e = -sum_c w_c m'_e u_ce^T K0 u_ce
            total, g = 0.0, None
            for c, wc in enumerate(self.weights):
                sens, _ = grid_sensitivity(self.layout, self.u[c], self.u[c], scale, dm,
                                           self.ke, coef=-wc)
                total += wc * float(xp.dot(self.loads[c], self.u[c]))
                g = sens if g is None else g + sens
            values.append(total)
            grads.append(self.chain(g, inputs))
        return values, grads

    def evaluate(self, x: Any) -> Evaluation:
        """The model's ``evaluate`` on the device (same scaling and heuristics)."""
        xp, m = self.xp, self.model
        values, grads = self.values_and_gradients(x)
        m.evaluations += 1
        f, df = values[0], grads[0]
        df = self.modify_objective_gradient(x, df)
        if not np.isfinite(f) or not bool(xp.isfinite(df).all()):
            raise RunError(f"the objective or its gradient is not finite (objective {f})")
        if m.evaluations == 1 and m.normalize and f != 0:
            m.objective_scale = 1.0 / abs(f)
        g = xp.asarray([b.normalized(v) for b, v in zip(m.bounds, values[1:])],
                       dtype=xp.float64)
        dg = (xp.stack([b.sign_scale() * gr for b, gr in zip(m.bounds, grads[1:])])
              if m.bounds else xp.zeros((0, m.n)))
        info = {"objective": f, **{b.label: v for b, v in zip(m.bounds, values[1:])}}
        return Evaluation(f * m.objective_scale, df * m.objective_scale, g, dg, info)

    def cheap_constraints(self, x: Any) -> np.ndarray:
        rho, _ = self.physical(x)
        return np.array([b.normalized(float(self.volume_weights[id(b.function)] @ rho))
                         for b in self.model.bounds])

    def host_states(self) -> np.ndarray:
        """The last states (n_cases, n_dofs) on the host in femopt's dof numbering."""
        from femopt.backend import to_host

        return np.stack([self.layout.to_dofs(to_host(u)) for u in self.u])
