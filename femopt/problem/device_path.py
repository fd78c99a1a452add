"""The design chain of a model on the GPU: every field stays on the device.

A :class:`~femopt.problem.model.Model` whose device is ``gpu`` keeps its design x, the
densities rho, the interpolation's scale factors, the loads and the states as CuPy arrays
and runs one design iteration through the grid twins of its CPU pieces:

    x -> filters (GridDensityFilter stencil, Heaviside) -> rho -> m(rho)
      -> MultigridSolver.solve_grid (warm start from the previous state)
      -> adjoint solves K mu = -a with the same solver (its hierarchy as built for this
         design; K is symmetric; warm start from the previous mu), for the functions
         linear in u that are not self-adjoint
      -> dJ/drho in one pass over cells for all load cases (grid_sensitivity_cases)
      -> volume (a dot product) -> chain rule through the filters -> OC or MMA.

Only scalars (CG residuals, function values, the bisection's constraint values) reach
the host; fields are copied back for logging and output alone. The path covers a
structured grid, a physics that declares an element kernel, is symmetric and has no
design-independent part (``Physics.gpu_capability``) with one element matrix, springs to ground, any number of load cases, and functions of the form
(:class:`LinearForm`)

    J = c sum_c w_c f_c . u_c + sum_k sum_c s_kc a_k . u_c + v . rho

(compliance and thermal compliance, displacement and the compliant mechanism, mean
temperature, volume and weighted sums of them) as objective or constraints,
density/sensitivity/Heaviside filters, OC or MMA and the multigrid solver; :func:`unsupported` names the first thing a problem has
beyond that. The same code runs with NumPy arrays (``xp=numpy``), which is how the CPU
tests exercise it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from femopt.adjoint.grid_sensitivity import grid_sensitivity_cases
from femopt.assembly.grid_layout import GridLayout, layout_of
from femopt.backend import to_host
from femopt.errors import RunError
from femopt.filters.grid_filter import GridDensityFilter
from femopt.filters.heaviside import Heaviside
from femopt.filters.radius import DensityFilter, SensitivityFilter
from femopt.objectives.base import Function, State
from femopt.objectives.compliance import Compliance
from femopt.objectives.displacement import Displacement
from femopt.objectives.temperature import MeanTemperature
from femopt.objectives.volume import Volume
from femopt.objectives.weighted_sum import WeightedSum
from femopt.optimizers.base import Evaluation

OPTIMIZERS = ("oc", "mma")
FUNCTIONS = ("compliance", "thermal_compliance", "displacement", "compliant_mechanism",
             "mean_temperature", "volume", "weighted_sum")


@dataclass
class LinearForm:
    """A function the device path evaluates: linear in the states and in rho,

        J = compliance * sum_c w_c f_c . u_c + sum_k sum_c s_k[c] a_k . u_c + v . rho,

    with w_c the load-case weights. Compliance is self-adjoint (lambda_c = -w_c u_c, no
    solve); each functional a_k needs one adjoint solve K mu_k = -a_k whatever the number
    of cases (lambda_c = ... + sum_k s_k[c] mu_k).

    Attributes:
        compliance: the coefficient c of the weighted compliance.
        functionals: (a_k as a full-dof host vector, s_k (n_cases,)) pairs.
        rho_weights: v as a host vector, or None.
    """

    compliance: float = 0.0
    functionals: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    rho_weights: np.ndarray | None = None

    def scaled(self, w: float) -> "LinearForm":
        return LinearForm(w * self.compliance, [(a, w * s) for a, s in self.functionals],
                          None if self.rho_weights is None else w * self.rho_weights)

    def add(self, other: "LinearForm") -> "LinearForm":
        v = (self.rho_weights if other.rho_weights is None else other.rho_weights
             if self.rho_weights is None else self.rho_weights + other.rho_weights)
        return LinearForm(self.compliance + other.compliance,
                          self.functionals + other.functionals, v)

    @property
    def needs_state(self) -> bool:
        return self.compliance != 0.0 or bool(self.functionals)


def linear_form(fn: Function) -> LinearForm | str:
    """The device path's form of ``fn``, or why it has none."""
    if isinstance(fn, Compliance):  # and thermal_compliance
        return LinearForm(compliance=1.0)
    if isinstance(fn, Volume):
        return LinearForm(rho_weights=np.asarray(fn.weights, dtype=np.float64))
    if isinstance(fn, (Displacement, MeanTemperature)):  # and compliant_mechanism
        return LinearForm(functionals=[(np.asarray(fn.a, dtype=np.float64),
                                        np.asarray(fn.case_w, dtype=np.float64))])
    if isinstance(fn, WeightedSum):
        out = LinearForm()
        for w, term in zip(fn.weights, fn.terms):
            form = linear_form(term)
            if isinstance(form, str):
                return form
            out = out.add(form.scaled(w))
        return out
    return (f"the GPU path's functions are {', '.join(FUNCTIONS)} (sums of them), not "
            f"{fn.name!r}")

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


def unsupported_chain(model: Any) -> str | None:
    """Why the GPU paths cannot run ``model``'s filters or optimizer (None when they can)."""
    for f in model.filters:
        if not isinstance(f, (DensityFilter, SensitivityFilter, Heaviside)):
            return f"the GPU path has no twin of the filter {f.name!r}"
    if model.optimizer.name not in OPTIMIZERS:
        return (f"the GPU path runs the optimizers {', '.join(OPTIMIZERS)}, not "
                f"{model.optimizer.name!r}")
    return None


def unsupported(model: Any, solver_type: str) -> str | None:
    """Why the GPU path cannot run ``model`` (None when it can)."""
    if model.mesh.grid is None:
        return "the GPU path needs a structured grid (mesh type 'structured')"
    why = model.physics.gpu_capability()
    if why:
        return f"the physics {model.physics.name!r} cannot run on the GPU: {why}"
    for fn in model.functions():
        form = linear_form(fn)
        if isinstance(form, str):
            return form
    if np.ndim(model.ke) != 2 or model.physics.fixed_element_matrices() is not None:
        return "the GPU path needs one element matrix for the whole grid"
    why = unsupported_chain(model)
    if why:
        return why
    if solver_type != "multigrid":
        return f"the GPU path needs the multigrid solver, not {solver_type!r}"
    return None


@dataclass
class DeviceForm:
    """A :class:`LinearForm` on the device: functionals in the grid layout (zero on
    supported dofs), merged where their case weights are proportional, so each group g
    is one adjoint solve K mu_g = -a_g; ``mu`` keeps the last solutions (warm starts)."""

    compliance: float
    a: Any  # (n_groups, n_dofs) grid layout, or None
    s: np.ndarray  # (n_cases, n_groups) case weights of each group
    rho_weights: Any  # (n_cells,) or None
    mu: Any = None  # (n_groups, n_dofs) the last adjoint solutions
    solved: bool = False

    @property
    def needs_state(self) -> bool:
        return self.compliance != 0.0 or self.a is not None


class DevicePath:
    """The design chain of ``model`` with fields on ``xp`` (cupy, or numpy in tests).

    Args:
        model: a built model that :func:`unsupported` accepts, with a multigrid solver.
        xp: the array module of the fields.

    Attributes:
        cg_iterations: CG iterations of the last evaluation: ``forward`` (one per load
            case) and ``adjoint`` (one per adjoint solve).
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
        self.weights = np.asarray(model.weights, dtype=np.float64)
        self.ke = np.asarray(model.ke, dtype=np.float64)
        # springs to ground (compliant mechanisms): on the fine operator's diagonal
        self.springs = (lay.from_dofs(np.asarray(model.springs, dtype=np.float64))
                        if np.any(model.springs) else None)
        # the states, one row per load case (grid layout); rows are warm starts once solved
        self.u = xp.zeros((len(self.weights), lay.n_dofs), dtype=xp.float64)
        self.solved = False
        self.twins = [GridDensityFilter(grid.shape, grid.spacing, f.options.radius, xp)
                      if isinstance(f, (DensityFilter, SensitivityFilter)) else None
                      for f in model.filters]
        self.passive_idx = xp.asarray(model.passive_idx)
        self.passive_val = xp.asarray(model.passive_val, dtype=xp.float64)
        self.forms = [self._device_form(linear_form(fn)) for fn in model.functions()]
        self.cg_iterations: dict[str, list[int]] = {"forward": [], "adjoint": []}

    # -- what a path stores its states in: the grid layout here, free dofs on a mesh -----

    def _to_states(self, a: np.ndarray) -> np.ndarray:
        """A full-dof host vector in the states' layout, zero on supported dofs."""
        out = self.layout.from_dofs(a)
        out[self.fixed_grid] = 0.0
        return out

    def _set_operator(self, scale: Any) -> None:
        """The operator of a new design (scale factors of the cells' K0)."""
        self.model.solver.update_grid_operator(scale, self.ke, self.fixed_grid, self.springs)

    def _solve(self, rhs: Any, x0: Any) -> tuple[Any, int]:
        """K x = rhs with the operator of :meth:`_set_operator` (x0: warm start or None);
        the solution and its CG iterations."""
        solver = self.model.solver
        x = solver.solve_grid(rhs, x0=x0)
        return x, solver.last.iterations

    def _adjoint_term(self, u: Any, mu: Any, beta: np.ndarray, a: np.ndarray, scale: Any,
                      dm: Any) -> Any:
        """Per cell dm_e sum_c lambda_c,e^T K0 u_c,e with lambda_c = beta_c u_c +
        sum_g a_cg mu_g (``mu`` None: no functionals), in one pass over cells."""
        return grid_sensitivity_cases(self.layout, u, mu, beta, a, scale, dm, self.ke)[0]

    def _device_form(self, form: LinearForm) -> DeviceForm:
        xp = self.xp
        groups: dict[tuple[float, ...], tuple[np.ndarray, np.ndarray]] = {}
        for a, s in form.functionals:
            ref = float(s[int(np.argmax(np.abs(s)))])
            if ref == 0.0:
                continue
            key = tuple(s / ref)
            ag = self._to_states(a) * ref
            old = groups.get(key)
            groups[key] = (ag if old is None else old[0] + ag, s / ref)
        a = xp.asarray(np.stack([g[0] for g in groups.values()])) if groups else None
        s = (np.stack([g[1] for g in groups.values()], axis=1) if groups
             else np.zeros((len(self.weights), 0)))
        v = None if form.rho_weights is None else xp.asarray(form.rho_weights)
        return DeviceForm(form.compliance, a, s, v,
                          None if a is None else xp.zeros_like(a))

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
        """The forward solve: every load case at ``rho`` (warm start from the last
        states); returns the interpolation's scale factors and their derivative."""
        m = self.model
        scale = m.interp.value(rho)
        dm = m.interp.derivative(rho)
        self._set_operator(scale)
        its = []
        for c in range(self.u.shape[0]):
            self.u[c], it = self._solve(self.loads[c], self.u[c] if self.solved else None)
            its.append(it)
        self.solved = True
        self.cg_iterations = {"forward": its, "adjoint": []}
        return scale, dm

    def solve_adjoints(self) -> None:
        """K mu_g = -a_g for every functional group of every function, with the solver
        object of the forward solve (its multigrid hierarchy and smoothers as set up for
        this design; K^T = K), to the forward's tolerance, warm-started from the last mu_g.
        Compliance needs no solve (lambda_c = -w_c u_c)."""
        for form in self.forms:
            if form.a is None:
                continue
            for g in range(form.a.shape[0]):
                form.mu[g], it = self._solve(-form.a[g], form.mu[g] if form.solved else None)
                self.cg_iterations["adjoint"].append(it)
            form.solved = True

    def function_terms(self, rho: Any, scale: Any, dm: Any, u: Any = None
                       ) -> tuple[list[float], list[tuple[Any, Any]]]:
        """Values and the pairs (partial_rho, adjoint term) of dJ/drho of every function,
        after :meth:`analyse` and :meth:`solve_adjoints`. The adjoint term of all load
        cases is one pass over cells: lambda_c = -c w_c u_c + sum_g s_gc mu_g."""
        xp = self.xp
        u = self.u if u is None else u
        fu = None
        values, terms = [], []
        for form in self.forms:
            value = 0.0
            if form.compliance != 0.0:
                if fu is None:
                    fu = to_host(xp.sum(self.loads * u, axis=1))
                value += form.compliance * float(self.weights @ fu)
            if form.a is not None:
                au = to_host(u @ form.a.T)  # (n_cases, n_groups)
                value += float(np.sum(form.s * au))
            if form.rho_weights is not None:
                value += float(form.rho_weights @ rho)
            pr = (form.rho_weights if form.rho_weights is not None
                  else xp.zeros(rho.shape[0], dtype=xp.float64))
            if form.needs_state and dm is not None:
                adj = self._adjoint_term(u, form.mu, -form.compliance * self.weights, form.s,
                                         scale, dm)
            else:
                adj = xp.zeros(rho.shape[0], dtype=xp.float64)
            values.append(value)
            terms.append((pr, adj))
        return values, terms

    def values_and_gradients(self, x: Any, split: bool = False
                             ) -> tuple[list[float], list[Any]]:
        """Values of the objective and the constraints and their gradients w.r.t. x;
        with ``split`` each gradient is the pair (partial_rho term, adjoint term) and the
        model's ``last_state`` keeps the states (for :meth:`values_at_fixed_state`)."""
        rho, inputs = self.physical(x)
        scale, dm = self.analyse(rho)
        self.solve_adjoints()
        values, terms = self.function_terms(rho, scale, dm)
        if split:
            self.model.last_state = State(rho, self.u.copy(), self.loads, self.weights,
                                          self.model)
            return values, [(self.chain(pr, inputs), self.chain(adj, inputs))
                            for pr, adj in terms]
        return values, [self.chain(pr + adj, inputs) for pr, adj in terms]

    def values_at_fixed_state(self, x: Any, state: State) -> list[float]:
        """Function values at the densities of ``x`` with the states of ``state`` (from a
        split :meth:`values_and_gradients`) held fixed."""
        rho, _ = self.physical(x)
        return self.function_terms(rho, None, None, u=state.u)[0]

    def evaluate(self, x: Any) -> Evaluation:
        """The model's ``evaluate`` on the device (same scaling and heuristics)."""
        return self.evaluation(x, *self.values_and_gradients(x))

    def evaluation(self, x: Any, values: list[float], grads: list[Any]) -> Evaluation:
        """What the optimizer sees from the raw values and gradients at ``x``."""
        xp, m = self.xp, self.model
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
        return np.array([b.normalized(float(form.rho_weights @ rho))
                         for b, form in zip(self.model.bounds, self.forms[1:])])

    def linear_constraint(self) -> tuple[Any, float] | None:
        """(w, b) with the one constraint g(x) = w . x + b when g is linear in x: a
        volume (or a sum of volumes) through a linear filter chain (density filters, a
        sensitivity filter; no Heaviside). Then OC's bisection needs no filter pass per
        trial (:func:`femopt.optimizers.oc_kernels.oc_update_linear`). None otherwise.
        Built on the first call and kept: bounds, filters and passive cells never change."""
        if not hasattr(self, "_linear"):
            self._linear = self._linear_constraint()
        return self._linear

    def _linear_constraint(self) -> tuple[Any, float] | None:
        m = self.model
        if len(m.bounds) != 1 or self.forms[1].needs_state or self.forms[1].rho_weights is None:
            return None
        if not all(isinstance(f, (DensityFilter, SensitivityFilter)) for f in m.filters):
            return None
        bound, v = m.bounds[0], self.forms[1].rho_weights
        # g(x) = normalized(v . rho(x)), rho = H x off the passive cells, fixed on them
        # (linear filters' chain rule does not read their inputs)
        w = bound.sign_scale() * self.chain(v, [None] * len(m.filters))
        offset = float(v[self.passive_idx] @ self.passive_val)
        return w, bound.normalized(offset)

    def host_states(self) -> np.ndarray:
        """The last states (n_cases, n_dofs) on the host in femopt's dof numbering."""
        return np.stack([self.layout.to_dofs(u) for u in to_host(self.u)])
