"""The built model: mesh, physics, loads, filters, functions, solver and optimizer of one
problem, and the design problem (values and gradients at a design) optimizers see."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from femopt.assembly.sparse import FixedPatternAssembler
from femopt.design.interpolation import Interpolation
from femopt.errors import Issue, MeshError, ProblemError
from femopt.evaluation import conditions
from femopt.evaluation.host_fields import HostFields
from femopt.evaluation.device_choice import choose_device, make_path, shape_device
from femopt.evaluation.function_checks import check_functions
from femopt.evaluation.path import EvaluationPath
from femopt.evaluation.robust import REALIZATIONS, robust_design
from femopt.mesh.plugin import locate
from femopt.objectives.base import Function, State
from femopt.optimizers.base import Evaluation
from femopt.physics.material_law import require_affine_material_law
from femopt.plugins.registry import Registry
from femopt.problem.load import LoadedProblem, Section
from femopt.solvers.base import LinearSolver
from femopt.solvers.choice import pick_solver
from femopt.solvers.row_split import cpu_threads


@dataclass
class IterationRecord:
    iteration: int
    objective: float
    constraints: dict[str, float]
    change: float
    seconds: float
    extra: dict[str, float] = field(default_factory=dict)


@dataclass
class Bound:
    function: Function
    label: str
    kind: str  # "max" or "min"
    limit: float

    natural: bool = False  # scale by the function's natural_scale instead of 1/|limit|
    factor: float = 1.0  # the limit in force is limit * factor (a robust dilated volume)

    def _scale(self) -> float:
        if self.natural:
            return float(getattr(self.function, "natural_scale", 1.0))
        return 1.0 / abs(self.limit) if self.limit != 0 else 1.0

    def normalized(self, value: float) -> float:
        """g <= 0 when satisfied: (value - limit) or (limit - value), scaled."""
        limit = self.limit * self.factor
        d = value - limit if self.kind == "max" else limit - value
        return d * self._scale()

    def sign_scale(self) -> float:
        return (1.0 if self.kind == "max" else -1.0) * self._scale()


class Model(HostFields):
    """Everything built from one problem file. Implements ``DesignProblem``.

    Args:
        loaded: the validated problem file. registry: the plugin registry.
        device: ``auto``, ``cpu`` or ``gpu`` from the command line (None: the file's
            ``device``). The design chain runs in :attr:`path`, the backend chosen
            for the device (:mod:`femopt.evaluation`).
        array_module: run the device path with this array module instead of
            resolving a device (tests run it with numpy on a machine without a GPU).
        problem_dir: the folder relative mesh paths are read from (default: the problem
            file's; a results directory's copy gives the original's).
        distributed: run on the slabs of this communicator
            (:class:`femopt.parallel.comm.Comm`; :mod:`femopt.parallel`), or None.
    """

    def __init__(self, loaded: LoadedProblem, registry: Registry, device: str | None = None,
                 array_module: Any = None, problem_dir: Path | None = None,
                 distributed: Any = None):
        self.loaded = loaded
        self.registry = registry
        self.problem = loaded.problem
        self.name = self.problem.name or _stem(loaded.filename)
        issues: list[Issue] = []
        sec = loaded.sections

        source = self._create("mesh", sec["mesh"], issues)
        if source is None:
            raise ProblemError(loaded.filename, issues)
        # mesh sources that read files resolve paths and units against the problem file
        # (a results directory's copy names the original's folder)
        locate(source, problem_dir or Path(loaded.filename).resolve().parent,
               self.problem.unit)
        try:
            self.mesh = source.build()
        except MeshError as exc:  # the file's own errors, located at the mesh section
            where = ("path",) if hasattr(sec["mesh"].options, "path") else ()
            raise loaded.error(sec["mesh"].path + where, str(exc)) from None
        self.physics = self._create("physics", sec["physics"], issues, self.mesh)
        if issues:
            raise ProblemError(loaded.filename, issues)
        require_affine_material_law(self.physics)  # K = m K0 + C on every path

        # a shape design moves the nodes of a moving boundary; every cell is solid
        self.shape = self.problem.design.type == "shape"
        if self.shape:
            from femopt.shape.setup import check_shape_problem

            check_shape_problem(self, issues)
            if issues:
                raise ProblemError(loaded.filename, issues)
        self.n_dofs = self.mesh.n_nodes * self.physics.dofs_per_node
        self.fixed = conditions.supports(self, issues)
        self.spring_nonzeros = conditions.springs(self, issues)
        (self.case_names, self.weights, self.load_nonzeros,
         self.surface_loads) = conditions.loads(self, issues)
        self.passive_idx, self.passive_val = conditions.passive(self, issues)
        self.filters = [self._create("filter", s, issues, self.mesh) for s in sec["filters"]]
        d = self.problem.design.interpolation if not self.shape else None
        self.interp = Interpolation(d.type, d.penalty, d.min) if d else Interpolation("simp", 3.0, 1e-9)
        conditions.check_design_map(self, issues)
        if self.filters and getattr(self.filters[0], "design_map", False) and not issues:
            from femopt.filters.design_map import OrbitAverage

            self.filters.append(OrbitAverage(self.filters[0]))  # exactly what the map says
        if issues:
            raise ProblemError(loaded.filename, issues)

        self.objective = self._create("function", sec["objective"], issues, self)
        self.bounds: list[Bound] = []
        for i, s in enumerate(sec["constraints"]):
            fn = self._create("function", s, issues, self)
            if fn is None:
                continue
            kind = next(k for k in ("max", "min", "equal") if k in s.extra)
            limit = float(s.extra[kind])
            if kind == "equal" and not self.shape:
                issues.append(loaded.issue(("constraints", i, kind), "an equality constraint "
                                           "needs a shape design (design: {type: shape}); "
                                           "topology optimizers take 'max' or 'min'"))
            if fn.name == "volume" and self.shape and limit <= 0:
                issues.append(loaded.issue(("constraints", i, kind), "a volume ratio (to the "
                                           f"initial mesh's volume) must be > 0, got {limit:g}"))
            elif fn.name == "volume" and not self.shape and not 0 < limit <= 1:
                issues.append(loaded.issue(("constraints", i, kind),
                                           f"a volume fraction must be in (0, 1], got {limit:g}"))
            if fn.positive_limit and limit <= 0:
                issues.append(loaded.issue(("constraints", i, kind),
                                           f"a {fn.name} limit must be > 0, got {limit:g}"))
            label = fn.label or fn.name
            if any(b.label == label for b in self.bounds):
                label = f"{label}{i}"
            self.bounds.append(Bound(fn, label, kind, limit))
        self.n_free = self.n_dofs - int(np.unique(self.fixed).size)
        self.solver_choice = None  # why the default solver was picked (no solver: section)
        if "solver" not in loaded.located.data:
            self.solver_choice = pick_solver(self.mesh, self.physics, self.n_free,
                                             self.has_springs)
            self.solver = self.solver_choice.solver
        else:
            self.solver = self._create("solver", sec["solver"], issues)
        if self.solver is not None:
            try:
                self.solver.bind(self.mesh, self.physics.dofs_per_node)
                self.solver.set_near_null_space(self.physics.rigid_modes)
            except ValueError as exc:
                issues.append(loaded.issue(sec["solver"].path, str(exc)))
        self.optimizer = (self._create("optimizer", sec["optimizer"], issues)
                          if not self.shape else None)
        check_functions(self, issues)  # maximize, static, functions of eigenvalues
        # the robust formulation: three realizations of the design (evaluation/robust)
        self.robust = robust_design(self, issues)  # checked even beside other errors
        if self.solver is not None and not self.physics.symmetric:
            try:  # e.g. the direct solver switches from Cholesky to LU
                self.solver.require_nonsymmetric()
            except ValueError as exc:
                issues.append(loaded.issue(("solver",), str(exc)))
        if issues:
            raise ProblemError(loaded.filename, issues)

        self.device_notes: list[str] = []  # what the device choice decided, for the log
        self.comm = distributed
        if distributed is not None:
            from femopt.parallel.path import prepare

            xp = prepare(self, device, array_module)
        else:
            xp = (choose_device(self, device, array_module) if not self.shape
                  else shape_device(self, device))
        loaded_dofs = self.load_nonzeros.loaded()
        if self.static and np.all(np.isin(loaded_dofs, self.fixed)):
            raise loaded.error(("load_cases" if self.problem.load_cases else "loads",),
                               "every load acts on supported degrees of freedom only: "
                               "the structure carries nothing")

        n = self.mesh.n_cells
        if self.passive_idx.size == n:
            raise loaded.error(("design", "passive"), "every cell is passive: no function "
                               "depends on the design")
        building = False  # a filter's weights built on another core meanwhile
        if xp is None and distributed is None and not self.shape and cpu_threads() > 1:
            for f in self.filters:  # the host path filters by weights
                if hasattr(f, "prefetch") and f.linear:
                    building = f.prefetch() or building
        if xp is None or self.mesh.grid is not None:  # built now, before nodes may move
            _ = self.ke  # (the GPU path on a mesh from a file makes its own on the device)
        self.ke_fixed = self.physics.fixed_element_matrices()
        if xp is None and distributed is None:
            free_mask = np.ones(self.n_dofs, dtype=bool)
            free_mask[self.fixed] = False
            self.assembler = FixedPatternAssembler(self.cell_dofs, self.n_dofs,
                                                   np.flatnonzero(free_mask),
                                                   self.physics.dofs_per_node)
            if self.ke_fixed is not None or self.has_springs:
                if type(self.solver).update_operator is not LinearSolver.update_operator:
                    raise loaded.error(("solver", "type"),
                                       f"solver '{self.solver.name}' builds its operator from "
                                       "the design alone and cannot add springs or a physics' "
                                       "fixed part (convection); use type: direct")
                self.assembler.add_constant(self.ke_fixed,
                                            self.springs if self.has_springs else None)
            self.loads_free = self.assembler.restrict(self.loads.T)  # (n_free, n_cases)
            if self.mesh.grid is None and building:
                _ = self.assembler.nnz  # the pattern, while the filter's weights build
        else:  # the device path assembles nothing: no sparse pattern on the host
            self.assembler = None
        # the design variables: one per cell, or the reduced ones of a design map
        self.x_fixed_idx, self.x_fixed_val = conditions.fixed_design(self)
        n = int(getattr(self.filters[0], "n_inputs", n)) if self.filters else n
        self.n, self.m = n, len(self.bounds)
        self.xmin, self.xmax, self.x0 = conditions.design_start(
            self, n, xp is not None and distributed is None, distributed is not None)

        # Optimizers such as MMA want O(1) functions: the objective is divided by its
        # first value and constraints by their limits. OC's bisection instead works in the
        # functions' natural units (raw objective, volume in length^d), as the classic
        # codes do, which keeps its multiplier search identical to theirs.
        self.objective_scale = 1.0
        self.normalize = getattr(self.optimizer, "normalize_functions", True)
        for b in self.bounds:
            b.natural = not self.normalize
        self.on_iteration: Callable[[IterationRecord], bool] | None = None
        # (iteration, x, optimizer, converged) when an iteration is complete: checkpoints
        self.on_end_iteration: Callable[[int, Any, Any, bool], None] | None = None
        self.history: list[IterationRecord] = []
        # a distributed run's communication counts at the start and at each report
        self.comm_snapshots = [] if distributed is None else [distributed.counts.snapshot()]
        self.comm_cg: list[int] = []  # CG iterations of each design iteration
        self.last_state: State | None = None
        self.evaluations = 0
        self.realization_values: dict | None = None  # a robust problem's, at the end
        self._t_last = time.perf_counter()
        if self.shape:
            from femopt.shape.setup import shape_optimizer

            self.optimizer = shape_optimizer(self)
        # the one backend every evaluation goes through
        self.path: EvaluationPath = make_path(self, xp, distributed)

    # -- the device ------------------------------------------------------------------

    def to_device(self, a: Any) -> Any:
        """``a`` on the model's device (unchanged on the CPU); in a distributed run a
        whole design-sized array becomes this rank's part."""
        if self.comm is not None and np.shape(a) == (self.n,):
            return self.path.local_design(np.asarray(a))
        return self.path.xp.asarray(a)

    def host_cells(self, a: Any) -> Any:
        """A per-cell field (design, densities) whole on the host: gathered on rank 0 of
        a distributed run (None on the other ranks; collective)."""
        if self.comm is not None:
            return self.path.gather_cells(a)
        from femopt.backend import to_host

        return to_host(a)

    @property
    def reductions(self) -> Any:
        """Reductions over a design cut into slabs (None: the design is whole here)."""
        return self.path.reductions

    def output_cells(self, a: Any) -> Any:
        """A per-cell field (design, densities) as the results directory's writers take
        it: on the host (:meth:`host_cells`), or on a device path of one process kept on
        the device as a :class:`~femopt.backend.rows.RowSource` read by slabs."""
        return self.host_cells(a) if self.comm is not None else self.path.cell_field(a)

    def final_analysis(self, x: Any, lazy: bool = False
                       ) -> tuple[list[float], np.ndarray, State]:
        """Function values, densities and the states at ``x`` (the latter two on the
        host; with ``lazy`` a device path keeps them on the device: ``final_analysis``
        of :class:`~femopt.evaluation.path.EvaluationPath`)."""
        return self.path.final_analysis(x, lazy)

    def final_modes(self, lazy: bool = False) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """The eigenpairs of every function of eigenvalues at the design
        :meth:`final_analysis` analysed (``EvaluationPath.final_modes``)."""
        return self.path.final_modes(lazy)

    # -- building --------------------------------------------------------------------

    def create_function(self, section: Section) -> Function:
        """A function from a (nested) section; a bad option raises a located error."""
        issues: list[Issue] = []
        fn = self._create("function", section, issues, self)
        if issues:
            raise ProblemError(self.loaded.filename, issues)
        return fn

    def _create(self, kind: str, section: Section | None, issues: list[Issue], *args):
        if section is None:
            return None
        try:
            return self.registry.create(kind, section.type, section.options, *args)
        except ValueError as exc:
            issues.append(self.loaded.issue(section.path, str(exc)))
            return None

    def _initial_density(self) -> float:
        if self.shape:
            return 1.0
        d = self.problem.design.initial
        if d is not None:
            return d
        for b in self.bounds:
            if b.function.name == "volume" and b.kind == "max" and 0 < b.limit <= 1:
                return b.limit
        return 0.5

    # -- the design chain and its analysis, on the model's backend ----------------------

    def physical(self, x: Any) -> tuple[Any, list[Any]]:
        """rho from x through the filters; also each filter's input (for the chain rule)."""
        return self.path.physical(x)

    def chain(self, grad_rho: Any, inputs: list[Any]) -> Any:
        return self.path.chain(grad_rho, inputs)

    def functions(self) -> list[Function]:
        return [self.objective] + [b.function for b in self.bounds]

    def value_names(self) -> list[str]:
        """What each entry of :meth:`values_and_gradients` is: the objective (at each
        realization of a robust problem), then each constraint."""
        name = f"objective {self.objective.name}"
        objective = [name] if self.robust is None else [f"{name} ({r})" for r in REALIZATIONS]
        return objective + [f"constraint {b.label}" for b in self.bounds]

    def values_and_gradients(self, x: Any, split: bool = False
                             ) -> tuple[list[float], list[Any]]:
        """Raw values of objective and constraint functions and their exact gradients
        with respect to x (no heuristic filtering); with ``split`` each gradient is the
        pair (partial_rho term, adjoint term), both through the filters' chain rule."""
        return self.path.values_and_gradients(x, split)

    def values_at_fixed_state(self, x: Any, state: State) -> list[float]:
        """Function values at the densities of ``x`` with the states of ``state`` held
        fixed (the explicit rho dependence alone, for checking partial_rho)."""
        return self.path.values_at_fixed_state(x, state)

    # -- DesignProblem -----------------------------------------------------------------

    def evaluate(self, x: Any) -> Evaluation:
        return self.path.evaluate(x)

    def cheap_constraints(self, x: Any):
        if any(b.function.needs_state for b in self.bounds):
            return None
        return self.path.cheap_constraints(x)

    def linear_constraint(self) -> tuple[Any, float] | None:
        """(w, b) when the one constraint is g(x) = w . x + b (a volume through linear
        filters, on every path), else None: OC then bisects without filtering. w is
        None where it is not one number: the constraint's gradient is w
        (``EvaluationPath.linear_constraint``)."""
        return self.path.linear_constraint()

    def stateful(self) -> list[Any]:
        """What changes in the design chain during a run (``state_dict`` and
        ``load_state_dict``, for checkpoints): the filters, then the robust formulation."""
        return self.filters + ([self.robust] if self.robust is not None else [])

    def advance_continuation(self, iteration: int, change: float) -> bool:
        tol = getattr(self.optimizer.options, "tol", 0.01)
        if self.robust is not None:
            self.robust.advance(iteration)
        stepped = False
        for f in self.filters:
            stepped |= f.advance(iteration, change, tol)
        return stepped

    def report(self, iteration: int, x: np.ndarray, ev: Evaluation, change: float) -> bool:
        now = time.perf_counter()
        if self.comm is not None:  # the communication of this design iteration
            self.comm_snapshots.append(self.comm.counts.snapshot())
            self.comm_cg.append(sum(sum(v) for v in self.path.cg_iterations.values()))
        extra = {k: v for f in self.filters for k, v in f.state().items()}
        extra.update({k: v for k, v in ev.info.items() if k.startswith("objective_")})
        rec = IterationRecord(iteration, ev.info["objective"],
                              {b.label: ev.info[b.label] for b in self.bounds},
                              change, now - self._t_last, extra)
        self._t_last = now
        self.history.append(rec)
        self.x = x
        stop = bool(self.on_iteration(rec)) if self.on_iteration is not None else False
        if self.comm is not None:
            from femopt.parallel.launch import collective_interrupt, injected_failure

            injected_failure(self.comm, iteration)
            collective_interrupt(self.comm)
        if self.comm is not None and self.comm.size > 1:
            stop = bool(self.comm.bcast(stop))  # rank 0's progress output decides
        return stop

    def end_iteration(self, iteration: int, x: np.ndarray, optimizer: Any,
                      converged: bool) -> None:
        if self.on_end_iteration is not None:
            self.on_end_iteration(iteration, x, optimizer, converged)

    def start_clock(self) -> None:
        self._t_last = time.perf_counter()
        if self.comm is not None:
            self.comm_snapshots = [self.comm.counts.snapshot()]
            self.comm_cg = []


def _stem(filename: str) -> str:
    return Path(filename).stem
