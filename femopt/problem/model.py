"""The built model: mesh, physics, loads, filters, functions, solver and optimizer of one
problem, and the design problem (values and gradients at a design) optimizers see."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import numpy as np

from femopt.adjoint.sensitivity import function_gradients
from femopt.backend import array_namespace, gpu_memory, resolve_device, to_host
from femopt.assembly.sparse import FixedPatternAssembler
from femopt.design.interpolation import Interpolation
from femopt.errors import (FemoptError, InputError, Issue, PluginError, ProblemError, RunError,
                           SingularSystemError)
from femopt.errors import MeshError
from femopt.assembly.grid_layout import layout_of
from femopt.mesh.regions import RegionError, select_cells, select_nodes
from femopt.objectives.base import Function, State
from femopt.optimizers.base import Evaluation
from femopt.plugins.registry import Registry
from femopt.problem.load import LoadedProblem, Section
from femopt.solvers.base import LinearSolver


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

    def _scale(self) -> float:
        if self.natural:
            return float(getattr(self.function, "natural_scale", 1.0))
        return 1.0 / abs(self.limit) if self.limit != 0 else 1.0

    def normalized(self, value: float) -> float:
        """g <= 0 when satisfied: (value - limit) or (limit - value), scaled."""
        d = value - self.limit if self.kind == "max" else self.limit - value
        return d * self._scale()

    def sign_scale(self) -> float:
        return (1.0 if self.kind == "max" else -1.0) * self._scale()


class Model:
    """Everything built from one problem file. Implements ``DesignProblem``.

    Args:
        loaded: the validated problem file. registry: the plugin registry.
        device: ``auto``, ``cpu`` or ``gpu`` from the command line (None: the file's
            ``device``). On the GPU the design chain runs in :attr:`path`
            (:class:`~femopt.problem.device_path.DevicePath`) with device arrays.
        array_module: run the device path with this array module instead of
            resolving a device (tests run it with numpy on a machine without a GPU).
    """

    def __init__(self, loaded: LoadedProblem, registry: Registry, device: str | None = None,
                 array_module: Any = None):
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
        if hasattr(source, "base_dir"):
            source.base_dir = Path(loaded.filename).resolve().parent
        if hasattr(source, "problem_unit"):
            source.problem_unit = self.problem.unit
        try:
            self.mesh = source.build()
        except MeshError as exc:  # the file's own errors, located at the mesh section
            where = ("path",) if hasattr(sec["mesh"].options, "path") else ()
            raise loaded.error(sec["mesh"].path + where, str(exc)) from None
        self.physics = self._create("physics", sec["physics"], issues, self.mesh)
        if issues:
            raise ProblemError(loaded.filename, issues)

        # a shape design moves the nodes of a moving boundary; every cell is solid
        self.shape = self.problem.design.type == "shape"
        if self.shape:
            self._check_shape_problem(issues)
            if issues:
                raise ProblemError(loaded.filename, issues)
        self.n_dofs = self.mesh.n_nodes * self.physics.dofs_per_node
        self.ke = self.physics.element_matrices()
        self.fixed = self._supports(issues)
        self.springs = self._springs(issues)
        self.case_names, self.weights, self.loads = self._loads(issues)
        self.passive_idx, self.passive_val = self._passive(issues)
        self.filters = [self._create("filter", s, issues, self.mesh) for s in sec["filters"]]
        d = self.problem.design.interpolation if not self.shape else None
        self.interp = Interpolation(d.type, d.penalty, d.min) if d else Interpolation("simp", 3.0, 1e-9)
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
        self.solver = self._create("solver", sec["solver"], issues)
        if self.solver is not None:
            try:
                self.solver.bind(self.mesh, self.physics.dofs_per_node)
            except ValueError as exc:
                issues.append(loaded.issue(sec["solver"].path, str(exc)))
        self.optimizer = (self._create("optimizer", sec["optimizer"], issues)
                          if not self.shape else None)
        if self.solver is not None and not self.physics.symmetric:
            try:  # e.g. the direct solver switches from Cholesky to LU
                self.solver.require_nonsymmetric()
            except ValueError as exc:
                issues.append(loaded.issue(("solver",), str(exc)))
        if issues:
            raise ProblemError(loaded.filename, issues)

        self.path: Any = None
        self.device_notes: list[str] = []  # what the device choice decided, for the log
        xp = self._choose_device(device, array_module) if not self.shape else \
            self._shape_device(device)
        free_mask = np.ones(self.n_dofs, dtype=bool)
        free_mask[self.fixed] = False
        self.n_free = int(free_mask.sum())
        self.ke_fixed = self.physics.fixed_element_matrices()
        if xp is None:
            self.assembler = FixedPatternAssembler(self.cell_dofs, self.n_dofs,
                                                   np.flatnonzero(free_mask))
            if self.ke_fixed is not None or np.any(self.springs):
                if type(self.solver).update_operator is not LinearSolver.update_operator:
                    raise loaded.error(("solver", "type"),
                                       f"solver '{self.solver.name}' builds its operator from "
                                       "the design alone and cannot add springs or a physics' "
                                       "fixed part (convection); use type: direct")
                self.assembler.add_constant(self.ke_fixed,
                                            self.springs if np.any(self.springs) else None)
            self.loads_free = self.assembler.restrict(self.loads.T)  # (n_free, n_cases)
        else:  # the device path assembles nothing: no sparse pattern on the host
            self.assembler = None
        if not np.any(self.loads[:, free_mask]):
            raise loaded.error(("load_cases" if self.problem.load_cases else "loads",),
                               "every load acts on supported degrees of freedom only: "
                               "the structure carries nothing")

        n = self.mesh.n_cells
        if self.passive_idx.size == n:
            raise loaded.error(("design", "passive"), "every cell is passive: no function "
                               "depends on the design")
        self.n, self.m = n, len(self.bounds)
        self.xmin = np.zeros(n)
        self.xmax = np.ones(n)
        self.xmin[self.passive_idx] = self.passive_val
        self.xmax[self.passive_idx] = self.passive_val
        self.x0 = np.full(n, self._initial_density())
        self.x0[self.passive_idx] = self.passive_val

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
        self.last_state: State | None = None
        self.evaluations = 0
        self._t_last = time.perf_counter()
        if self.shape:
            from femopt.shape.setup import shape_optimizer

            self.optimizer = shape_optimizer(self)
        if xp is not None:
            from femopt.problem.device_path import DevicePath
            from femopt.problem.unstructured_device import UnstructuredDevicePath

            path = DevicePath if self.mesh.grid is not None else UnstructuredDevicePath
            self.path = path(self, xp)
            self.xmin, self.xmax, self.x0 = (xp.asarray(a) for a in (self.xmin, self.xmax,
                                                                     self.x0))

    @cached_property
    def cell_dofs(self) -> np.ndarray:
        """(n_cells, nd) global dofs of each cell, built on first use (the GPU path, which
        works on the grid, never needs it)."""
        return self.physics.cell_dofs()

    # -- the device ------------------------------------------------------------------

    def _choose_device(self, requested: str | None, array_module: Any) -> Any:
        """Resolve ``auto|cpu|gpu`` (the command line's, else the file's) to the device
        this model runs on; the array module of the device path, or None for the CPU.
        A GPU request the path cannot serve is bad input located at ``device`` (or at
        ``--device``); ``auto`` falls back to the CPU and notes why."""
        from femopt.problem import device_path, unstructured_device

        grid = self.mesh.grid is not None
        paths = device_path if grid else unstructured_device

        self.device = "cpu"
        from_cli = requested is not None
        requested = requested if from_cli else self.problem.device

        def refuse(message: str) -> FemoptError:
            if from_cli:
                return InputError(f"--device {requested}: {message}")
            return self.loaded.error(("device",), message)

        if array_module is None:
            try:
                device, note = resolve_device(requested)
            except InputError as exc:
                raise refuse(str(exc)) from None
            if note:
                self.device_notes.append(f"device auto: {note}")
            if device == "cpu":
                return None
        solver_type = self.solver.name
        default_solver = "solver" not in self.loaded.located.data
        if solver_type == "direct" and default_solver:
            solver_type = "multigrid" if grid else unstructured_device.SOLVER
        why = paths.unsupported(self, solver_type)
        if why is not None:
            if requested == "gpu" or array_module is not None:
                raise refuse(why)
            self.device_notes.append(f"device auto: {why}; running on the CPU")
            return None
        if array_module is None:
            if grid:
                need = device_path.estimate_bytes(
                    layout_of(self.mesh, self.physics.dofs_per_node), len(self.case_names))
            else:
                need = unstructured_device.estimate_bytes(self)
            free, total = gpu_memory()
            if need > free:
                raise InputError(
                    f"the problem needs about {need / 2**30:.2f} GiB of GPU memory "
                    f"({self.mesh.n_cells} cells, estimated) but the GPU has "
                    f"{free / 2**30:.2f} GiB free of {total / 2**30:.2f} GiB; use a coarser "
                    "grid or --device cpu")
            import cupy

            xp = cupy
        else:
            xp = array_module
        if not grid and self.solver.name != unstructured_device.SOLVER:
            from femopt.solvers.pcg import PCGOptions, PCGSolver

            self.solver = PCGSolver(PCGOptions(max_iter=unstructured_device.MAX_ITER))
            self.device_notes.append("solver: block-Jacobi PCG on the GPU instead of the "
                                     "default direct solver")
        elif grid and self.solver.name != "multigrid":
            from femopt.solvers.multigrid import MultigridOptions, MultigridSolver

            self.solver = MultigridSolver(MultigridOptions())
            self.solver.bind(self.mesh, self.physics.dofs_per_node)
            self.device_notes.append("solver: multigrid on the GPU instead of the default "
                                     "direct solver")
        self.device = "gpu"
        return xp

    def _check_shape_problem(self, issues: list[Issue]) -> None:
        """What a shape design cannot take: a structured grid, filters, an optimizer
        section, exporters of density fields."""
        data = self.loaded.located.data
        if self.mesh.grid is not None:
            issues.append(self.loaded.issue(("design", "type"), "a shape design moves the "
                                            "nodes of a mesh read from a file (mesh: {type: "
                                            "file, path: ...}); this mesh is a structured grid"))
        if data.get("filters"):
            issues.append(self.loaded.issue(("filters",), "filters act on densities; a shape "
                                            "design has none"))
        if "optimizer" in data:
            issues.append(self.loaded.issue(("optimizer",), "a shape design is optimized by "
                                            "femopt's shape optimizer; its settings (max_step, "
                                            "max_iter, tol, ...) go under design"))
        for i, fmt in enumerate(self.problem.output.formats):
            if fmt != "vtu":
                issues.append(self.loaded.issue(("output", "formats", i), f"{fmt!r} exports a "
                                                "density field; a shape design writes vtu "
                                                "(the moved mesh)"))

    def _shape_device(self, requested: str | None) -> None:
        """Shape designs run on the CPU: a GPU request is refused, auto says so."""
        self.device = "cpu"
        asked = requested if requested is not None else self.problem.device
        if asked == "gpu":
            message = "a shape design runs on the CPU"
            if requested is not None:
                raise InputError(f"--device gpu: {message}")
            raise self.loaded.error(("device",), message)
        return None

    def on_device(self, a: Any) -> bool:
        """Whether ``a`` belongs to the device path (its array module)."""
        return self.path is not None and array_namespace(a) is self.path.xp

    def to_device(self, a: Any) -> Any:
        """``a`` on the model's device (unchanged on the CPU)."""
        return a if self.path is None else self.path.xp.asarray(a)

    def final_analysis(self, x: Any) -> tuple[list[float], np.ndarray, State]:
        """Function values, densities and the states at ``x`` (the latter two on the host)."""
        if self.on_device(x):  # the forward solve and the values: no adjoints
            rho, _ = self.path.physical(x)
            self.path.analyse(rho)
            values = self.path.function_terms(rho, None, None)[0]
            rho = to_host(rho)
            return values, rho, State(rho, self.path.host_states(), self.loads,
                                      self.weights, self)
        rho = self.physical(x)[0]
        state = self.analyse(rho)
        return [fn.value(state) for fn in self.functions()], rho, state

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

    def _supports(self, issues: list[Issue]) -> np.ndarray:
        names = self.physics.dof_names
        k = len(names)
        fixed: list[np.ndarray] = []
        for i, s in enumerate(self.problem.supports):
            try:
                nodes = select_nodes(s.region, self.mesh)
            except RegionError as exc:
                issues.append(self.loaded.issue(("supports", i, "region"), str(exc)))
                continue
            comps = range(k)
            if s.dofs is not None:
                bad = [d for d in s.dofs if d not in names]
                if bad:
                    issues.append(self.loaded.issue(
                        ("supports", i, "dofs"),
                        f"unknown dof {bad[0]!r} for {self.physics.name} "
                        f"(its dofs: {', '.join(names)})"))
                    continue
                comps = [names.index(d) for d in s.dofs]
            fixed.append((nodes[:, None] * k + np.array(list(comps))[None, :]).ravel())
        if issues:
            return np.zeros(0, dtype=np.int64)
        fixed_dofs = np.unique(np.concatenate(fixed)) if fixed else np.zeros(0, np.int64)
        self._check_rigid_modes(fixed_dofs)
        return fixed_dofs

    def _springs(self, issues: list[Issue]) -> np.ndarray:
        """Spring stiffness per dof (full dof vector) from the ``springs`` section."""
        names = self.physics.dof_names
        k = len(names)
        out = np.zeros(self.n_dofs)
        for i, s in enumerate(self.problem.springs):
            try:
                nodes = select_nodes(s.region, self.mesh)
            except RegionError as exc:
                issues.append(self.loaded.issue(("springs", i, "region"), str(exc)))
                continue
            bad = [d for d in (s.dofs or []) if d not in names]
            if bad:
                issues.append(self.loaded.issue(
                    ("springs", i, "dofs"), f"unknown dof {bad[0]!r} for {self.physics.name} "
                    f"(its dofs: {', '.join(names)})"))
                continue
            comps = [names.index(d) for d in s.dofs] if s.dofs else list(range(k))
            value = s.stiffness / nodes.size if s.distribute == "total" else s.stiffness
            for c in comps:
                out[nodes * k + c] += value
        return out

    def _check_rigid_modes(self, fixed: np.ndarray) -> None:
        """Supports must remove every rigid-body mode, else K is singular."""
        sub = self.physics.rigid_modes(fixed)
        sub = sub / np.maximum(np.linalg.norm(sub, axis=0), 1e-300)
        if sub.shape[0] == 0:
            free_modes = np.eye(sub.shape[1])
        else:  # vt square: thin when there are more fixed dofs than modes
            _, s, vt = np.linalg.svd(sub, full_matrices=sub.shape[0] < sub.shape[1])
            s = np.concatenate([s, np.zeros(vt.shape[0] - s.size)])
            free_modes = vt[s < 1e-8 * max(1.0, s.max(initial=0.0))]
        if free_modes.shape[0]:
            names = self.physics.rigid_mode_names()
            which = sorted({names[int(np.argmax(np.abs(v)))] for v in free_modes})
            line, col = self.loaded.located.position(("supports",))
            raise SingularSystemError(
                f"{self.loaded.filename}:{line}:{col}: supports: the supports leave the "
                f"structure free to move ({free_modes.shape[0]} rigid-body mode(s) "
                f"unconstrained: {', '.join(which)}); the system would be singular")

    def _loads(self, issues: list[Issue]):
        p = self.problem
        if p.load_cases is not None:
            cases = [(("load_cases", i, "loads"), c.name or f"case{i + 1}", c.weight, c.loads)
                     for i, c in enumerate(p.load_cases)]
        else:
            cases = [(("loads",), "loads", 1.0, p.loads)]
        k = self.physics.dofs_per_node
        vecs = np.zeros((len(cases), self.n_dofs))
        for c, (path, _, _, loads) in enumerate(cases):
            for j, load in enumerate(loads):
                lp = path + (j,)
                key = self.physics.load_name
                value = load.force if load.force is not None else load.heat
                given = "force" if load.force is not None else "heat"
                if given != key:
                    issues.append(self.loaded.issue(lp + (given,),
                                  f"{self.physics.name} takes '{key}' loads, not '{given}'"))
                    continue
                vec = np.atleast_1d(np.asarray(value, dtype=float))
                if vec.size != k:
                    issues.append(self.loaded.issue(lp + (given,),
                                  f"expected {k} component(s) ({', '.join(self.physics.dof_names)}),"
                                  f" got {vec.size}"))
                    continue
                try:
                    if load.body:
                        cells = (select_cells(load.region, self.mesh) if load.region
                                 else np.arange(self.mesh.n_cells))
                        vecs[c] += self.physics.body_load(list(vec), cells)
                    else:
                        nodes = select_nodes(load.region, self.mesh)
                        if load.distribute == "total":
                            vec = vec / nodes.size
                        for comp in range(k):
                            vecs[c, nodes * k + comp] += vec[comp]
                except RegionError as exc:
                    issues.append(self.loaded.issue(lp + ("region",), str(exc)))
        return [n for _, n, _, _ in cases], np.array([w for _, _, w, _ in cases]), vecs

    def _passive(self, issues: list[Issue]):
        idx, val = [], []
        if self.shape:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        for i, ps in enumerate(self.problem.design.passive):
            try:
                cells = select_cells(ps.region, self.mesh)
            except RegionError as exc:
                issues.append(self.loaded.issue(("design", "passive", i, "region"), str(exc)))
                continue
            idx.append(cells)
            val.append(np.full(cells.size, 1.0 if ps.value == "solid" else 0.0))
        if not idx:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        # a later entry wins where regions overlap
        all_idx, all_val = np.concatenate(idx), np.concatenate(val)
        last = {int(c): v for c, v in zip(all_idx, all_val)}
        keys = np.array(sorted(last), dtype=np.int64)
        return keys, np.array([last[int(c)] for c in keys])

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

    # -- the design chain ------------------------------------------------------------

    def physical(self, x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """rho from x through the filters; also each filter's input (for the chain rule)."""
        if self.on_device(x):
            return self.path.physical(x)
        inputs = []
        y = x
        for f in self.filters:
            inputs.append(y)
            y = f.forward(y)
        rho = np.array(y, dtype=float, copy=True)
        rho[self.passive_idx] = self.passive_val
        return rho, inputs

    def chain(self, grad_rho: np.ndarray, inputs: list[np.ndarray]) -> np.ndarray:
        if self.on_device(grad_rho):
            return self.path.chain(grad_rho, inputs)
        g = grad_rho.copy()
        g[self.passive_idx] = 0.0
        for f, xin in zip(reversed(self.filters), reversed(inputs)):
            g = f.backward(xin, g)
        return g

    # -- analysis --------------------------------------------------------------------

    def analyse(self, rho: np.ndarray) -> State:
        """Assemble, factorize and solve every load case at densities ``rho``."""
        self.solver.update_operator(self.interp.value(rho), self.assembler, self.ke)
        u_free = self.solver.solve(self.loads_free if self.loads_free.shape[1] > 1
                                   else self.loads_free[:, 0])
        u = self.assembler.expand(u_free.reshape(self.loads_free.shape)).T
        if not np.all(np.isfinite(u)):
            raise RunError("the state has non-finite values")
        self.last_state = State(rho, u, self.loads, self.weights, self)
        return self.last_state

    def functions(self) -> list[Function]:
        return [self.objective] + [b.function for b in self.bounds]

    def values_and_gradients(self, x: np.ndarray, split: bool = False
                             ) -> tuple[list[float], list[Any]]:
        """Raw values of objective and constraint functions and their exact gradients
        with respect to x (no heuristic filtering); with ``split`` each gradient is the
        pair (partial_rho term, adjoint term), both through the filters' chain rule."""
        if self.on_device(x):
            return self.path.values_and_gradients(x, split)
        rho, inputs = self.physical(x)
        state = self.analyse(rho)
        fns = self.functions()
        values = []
        for fn in fns:
            with self.registry.guard("function", fn.name, "value()"):
                v = fn.value(state)
            if not isinstance(v, (int, float, np.floating)) or not np.isfinite(v):
                raise PluginError(f"function '{fn.name}' returned a value that is not a "
                                  f"finite number: {v!r}")
            values.append(float(v))
        with self.registry.guard("function", ",".join(f.name for f in fns), "its gradient"):
            terms = function_gradients(fns, state, self.solver, self.assembler,
                                       self.cell_dofs, self.ke,
                                       self.interp.derivative(rho), split=True)
        for fn, (pr, adj) in zip(fns, terms):
            for what, g in (("partial_rho", pr), ("adjoint term", adj)):
                if g.shape != rho.shape or not np.all(np.isfinite(g)):
                    raise PluginError(f"the gradient of function '{fn.name}' ({what}) is "
                                      f"not a finite array of shape {rho.shape}")
        if split:
            return values, [(self.chain(pr, inputs), self.chain(adj, inputs))
                            for pr, adj in terms]
        return values, [self.chain(pr + adj, inputs) for pr, adj in terms]

    def values_at_fixed_state(self, x: np.ndarray, state: State) -> list[float]:
        """Function values at the densities of ``x`` with the states of ``state`` held
        fixed (the explicit rho dependence alone, for checking partial_rho)."""
        if self.on_device(x):
            return self.path.values_at_fixed_state(x, state)
        rho, _ = self.physical(x)
        fixed = State(rho, state.u, state.loads, state.weights, self)
        return [float(fn.value(fixed)) for fn in self.functions()]

    # -- DesignProblem -----------------------------------------------------------------

    def evaluate(self, x: np.ndarray) -> Evaluation:
        if self.on_device(x):
            return self.path.evaluate(x)
        values, grads = self.values_and_gradients(x)
        self.evaluations += 1
        f, df = values[0], grads[0]
        for flt in self.filters:
            if flt.heuristic:
                df = flt.modify_objective_gradient(x, df)
        if not np.isfinite(f) or not np.all(np.isfinite(df)):
            raise RunError(f"the objective or its gradient is not finite (objective {f})")
        if self.evaluations == 1 and self.normalize and f != 0:
            self.objective_scale = 1.0 / abs(f)
        g = np.array([b.normalized(v) for b, v in zip(self.bounds, values[1:])])
        dg = (np.array([b.sign_scale() * gr for b, gr in zip(self.bounds, grads[1:])])
              if self.bounds else np.zeros((0, self.n)))
        info = {"objective": f, **{b.label: v for b, v in zip(self.bounds, values[1:])}}
        return Evaluation(f * self.objective_scale, df * self.objective_scale, g, dg, info)

    def cheap_constraints(self, x: np.ndarray):
        if any(b.function.needs_state for b in self.bounds):
            return None
        if self.on_device(x):
            return self.path.cheap_constraints(x)
        rho, _ = self.physical(x)
        return np.array([b.normalized(b.function.rho_only_value(rho)) for b in self.bounds])

    def linear_constraint(self) -> tuple[Any, float] | None:
        """(w, b) when the one constraint is g(x) = w . x + b (the device path with a
        volume through linear filters), else None: OC then bisects without filtering."""
        return None if self.path is None else self.path.linear_constraint()

    def advance_continuation(self, iteration: int, change: float) -> bool:
        tol = getattr(self.optimizer.options, "tol", 0.01)
        stepped = False
        for f in self.filters:
            stepped |= f.advance(iteration, change, tol)
        return stepped

    def report(self, iteration: int, x: np.ndarray, ev: Evaluation, change: float) -> bool:
        now = time.perf_counter()
        extra = {k: v for f in self.filters for k, v in f.state().items()}
        rec = IterationRecord(iteration, ev.info["objective"],
                              {b.label: ev.info[b.label] for b in self.bounds},
                              change, now - self._t_last, extra)
        self._t_last = now
        self.history.append(rec)
        self.x = x
        if self.on_iteration is not None:
            return bool(self.on_iteration(rec))
        return False

    def end_iteration(self, iteration: int, x: np.ndarray, optimizer: Any,
                      converged: bool) -> None:
        if self.on_end_iteration is not None:
            self.on_end_iteration(iteration, x, optimizer, converged)

    def start_clock(self) -> None:
        self._t_last = time.perf_counter()


def _stem(filename: str) -> str:
    return Path(filename).stem
