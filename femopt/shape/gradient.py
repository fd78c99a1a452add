"""Functions of a model as functions of its node coordinates, with their shape gradients
by the discrete adjoint.

The densities are held fixed (rho = 1: every cell solid), the node coordinates X
(n_nodes, dim) are the design. For K(X) u_c = f_c(X) and a function J(u, X):

    dJ/dX = partial J/partial X  +  sum_c lambda_c^T (dK/dX u_c - df_c/dX),
    K^T lambda_c = -dJ/du_c,

the same adjoint states as for dJ/drho (one multi-RHS solve with the forward solver's
factorization; compliance is self-adjoint, lambda_c = -w_c u_c). lambda^T dK/dX u comes
from the physics' :meth:`~femopt.physics.base.Physics.coordinate_sensitivity`: by
default its element kernel run on dual numbers seeded on the node coordinates
(:func:`femopt.adjoint.dual.coordinate_derivative`, the NumPy twin of the generated CUDA
``shape_sensitivity`` kernel), for elasticity a closed form checked against it. df/dX
(body loads, surface loads) and the explicit partial J/partial X (compliance's f . u, the volume, the
stresses' strain matrices) come from :mod:`femopt.shape.geometry` and each function's
:meth:`~femopt.objectives.base.Function.partial_x`.
"""

from __future__ import annotations

import numpy as np

from femopt.adjoint.sensitivity import adjoint_states
from femopt.assembly.element_kernel import element_matrices
from femopt.assembly.sparse import FixedPatternAssembler
from femopt.errors import InputError, PluginError, RunError
from femopt.objectives.base import State
from femopt.physics.base import Physics
from femopt.shape.geometry import (Geometry, body_loads_of, check_cells, gather,
                                   jacobian_determinants)

class ShapeEvaluator:
    """Functions of a model (objective first, then constraints, as ``Model.functions()``)
    as functions of the node coordinates, densities held fixed (for shape optimization
    every cell is solid, rho = 1).

    Every evaluation rebuilds what depends on the geometry (element matrices, body loads,
    cell volumes, strain matrices) and reuses the sparsity pattern, the scatter map and
    the solver's symbolic factorization. The volume function is measured against the
    initial mesh's volume: 1 at the initial coordinates, v(X) / v(X0) elsewhere.

    Args:
        model: a model built on the CPU with an assembled solver (direct, pcg or amg).
        rho: the fixed densities (default: ones).

    Raises:
        InputError: the model runs on the GPU path, its solver is matrix-free on a
            structured grid, its physics has no element kernel, or it has body loads
            its physics weights in its own way (convection-diffusion's SUPG source).
    """

    def __init__(self, model, rho: np.ndarray | None = None):
        if model.device != "cpu":
            raise InputError("shape derivatives run on the CPU: build the model with "
                             "device 'cpu'")
        if model.assembler is None or model.solver.name == "multigrid":
            raise InputError(f"solver '{model.solver.name}' works on the structured grid "
                             "alone; moving nodes needs an assembled solver (direct, pcg, "
                             "amg)")
        self.kernel = model.physics.element_kernel()
        if self.kernel is None:
            raise InputError(f"physics '{model.physics.name}' declares no element kernel: "
                             "its coordinate derivative dK/dX is not available")
        self.model = model
        mesh = model.mesh
        self.cells = mesh.cells
        self.points0 = np.array(mesh.points, dtype=float, copy=True)
        self.element = model.physics.element
        self.rho = np.ones(mesh.n_cells) if rho is None else np.asarray(rho, dtype=float)
        self.m = np.asarray(model.interp.value(self.rho), dtype=float)
        self.functions = model.functions()
        self.body_loads = body_loads_of(model)
        if self.body_loads and type(model.physics).body_load is not Physics.body_load:
            raise InputError(f"physics '{model.physics.name}' weights its body loads its own "
                             "way; their coordinate derivative is not available for shape "
                             "derivatives (use nodal loads)")
        thickness = model.physics.thickness()
        k = model.physics.dofs_per_node
        # model.loads holds the nodal loads plus the body loads at the initial coordinates
        surface = model.surface_loads  # tractions, pressures: they move with their facets
        initial = Geometry(self.points0, self.cells, self.element, k, thickness,
                           np.zeros_like(model.loads), self.body_loads, surface)
        self.nodal_loads = model.loads - initial.loads
        self._geometry_args = (k, thickness, self.nodal_loads, self.body_loads, surface)
        if model.ke_fixed is None:
            # K_e(m) = m K0_e: the physics' own element matrices, scaled
            self.assembler = model.assembler
        else:
            # a geometry-dependent fixed part (convection) comes from the kernel with the
            # scaled part; only the springs stay constant
            self.assembler = FixedPatternAssembler(model.cell_dofs, model.n_dofs,
                                                   model.assembler.free,
                                                   model.physics.dofs_per_node)
            if np.any(model.springs):
                self.assembler.add_constant(None, model.springs)
        det0 = np.abs(jacobian_determinants(self.element, self.points0[self.cells]))
        self.min_det = 1e-12 * float(np.median(det0))
        self.last_state: State | None = None

    # -- the state at given coordinates -------------------------------------------------

    def geometry(self, points: np.ndarray) -> Geometry:
        """The mesh at ``points``, checked.

        Raises:
            ValueError: ``points`` has the wrong shape or non-finite entries.
            InvertedCellsError: cells inverted or degenerate at ``points`` (named).
        """
        points = np.asarray(points, dtype=float)
        if points.shape != self.points0.shape:
            raise ValueError(f"node coordinates must have shape {self.points0.shape}, got "
                             f"{points.shape}")
        bad = np.flatnonzero(~np.all(np.isfinite(points), axis=1))
        if bad.size:
            raise ValueError(f"{bad.size} node(s) with non-finite coordinates, first: "
                             f"{bad[:10].tolist()}")
        check_cells(self.element, points[self.cells], self.min_det)
        return Geometry(points, self.cells, self.element, *self._geometry_args)

    def analyse(self, points: np.ndarray) -> State:
        """Assemble, factorize and solve every load case with the nodes at ``points``."""
        model = self.model
        geom = self.geometry(points)
        coords = geom.points[self.cells]
        if model.ke_fixed is None:
            scale, ke = self.m, model.physics.element_matrices_at(coords)
        else:
            scale, ke = np.ones_like(self.m), element_matrices(self.kernel, coords, self.m)
        model.solver.update_operator(scale, self.assembler, ke)
        loads = geom.loads
        rhs = self.assembler.restrict(loads.T)
        u_free = model.solver.solve(rhs if rhs.shape[1] > 1 else rhs[:, 0])
        u = self.assembler.expand(u_free.reshape(rhs.shape)).T
        if not np.all(np.isfinite(u)):
            raise RunError("the state has non-finite values")
        self.last_state = State(self.rho, u, loads, model.weights, model, geom)
        return self.last_state

    def state_values(self, state: State) -> list[float]:
        """Function values at the state of an analysis."""
        values = []
        for fn in self.functions:
            with self.model.registry.guard("function", fn.name, "value()"):
                v = fn.value(state)
            if not isinstance(v, (int, float, np.floating)) or not np.isfinite(v):
                raise PluginError(f"function '{fn.name}' returned a value that is not a "
                                  f"finite number: {v!r}")
            values.append(float(v))
        return values

    def values(self, points: np.ndarray) -> list[float]:
        """Function values at ``points`` (no gradients)."""
        return self.state_values(self.analyse(points))

    def values_at_fixed_state(self, points: np.ndarray, state: State) -> list[float]:
        """Function values at ``points`` with the states of ``state`` held fixed (the
        explicit X dependence alone, for checking partial_x)."""
        geom = self.geometry(points)
        fixed = State(state.rho, state.u, geom.loads, state.weights, self.model, geom)
        return self.state_values(fixed)

    # -- gradients ---------------------------------------------------------------------

    def evaluate(self, points: np.ndarray, split: bool = False
                 ) -> tuple[list[float], list[np.ndarray]]:
        """Values at node coordinates ``points`` (n_nodes, dim) and each total derivative
        dJ/dX, (n_nodes, dim). With ``split`` each derivative is the pair (explicit term
        partial J/partial X, adjoint term lambda^T (dK/dX u - df/dX))."""
        state = self.analyse(points)
        return self.state_values(state), self.gradients(state, split)

    def gradients(self, state: State | None = None, split: bool = False
                  ) -> list[np.ndarray]:
        """The total derivatives (see :meth:`evaluate`) at the state of the last analysis
        (or ``state``): the adjoint solves reuse its factorization."""
        state = self.last_state if state is None else state
        model = self.model
        names = ",".join(f.name for f in self.functions)
        with model.registry.guard("function", names, "its shape gradient"):
            lams = adjoint_states(self.functions, state, model.solver, self.assembler)
            explicit = [fn.partial_x(state) for fn in self.functions]
        adjoint = self._adjoint_terms(state, lams)
        shape = state.geometry.points.shape
        grads = []
        for fn, ex, adj in zip(self.functions, explicit, adjoint):
            ex = np.zeros(shape) if ex is None else np.asarray(ex, dtype=float)
            for what, g in (("partial_x", ex), ("adjoint term", adj)):
                if g.shape != shape or not np.all(np.isfinite(g)):
                    raise PluginError(f"the shape gradient of function '{fn.name}' ({what}) "
                                      f"is not a finite array of shape {shape}")
            grads.append((ex, adj) if split else ex + adj)
        return grads

    def _adjoint_terms(self, state: State, lams: list[np.ndarray | None]
                       ) -> list[np.ndarray]:
        """sum_c lambda_c^T (dK/dX u_c - df_c/dX) per function; lambda^T dK/dX u from the
        physics' :meth:`~femopt.physics.base.Physics.coordinate_sensitivity`, once for all
        functions."""
        geom = state.geometry
        out = [np.zeros(geom.points.shape) for _ in lams]
        active = [k for k, lam in enumerate(lams) if lam is not None]
        if not active:
            return out
        dofs = self.model.cell_dofs
        per_cell = self.model.physics.coordinate_sensitivity(
            geom.points[self.cells], self.m, state.u[:, dofs],
            [lams[f][:, dofs] for f in active])
        for f, g in zip(active, per_cell):
            out[f] = gather(self.cells, g, geom.n_nodes)
            df = geom.load_derivative(lams[f])
            if df is not None:
                out[f] -= df
        return out
