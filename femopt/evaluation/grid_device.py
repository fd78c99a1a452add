"""The device backend on structured grids: matrix-free multigrid in the grid layout.

The states live in the component-major grid layout (:mod:`femopt.assembly.grid_layout`);
the operator is the multigrid solver's (:meth:`MultigridSolver.update_grid_operator`: the
matrix-free fine level with the physics' one element matrix K0 of the grid, springs on
its diagonal, Galerkin coarse levels) and the adjoint term one pass over cells for every
load case (:func:`~femopt.adjoint.grid_sensitivity.grid_sensitivity_cases`). The rest of
the design chain is :class:`~femopt.evaluation.device.DevicePath`'s. The same code runs
with NumPy arrays (``xp=numpy``), which is how the CPU tests exercise it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from femopt.adjoint.grid_sensitivity import grid_sensitivity_cases
from femopt.assembly.grid_layout import GridLayout, layout_of
from femopt.assembly.matrix_free import StructuredOperator
from femopt.backend import allocator_in_use, to_host
from femopt.backend.rows import RowSource, node_rows
from femopt.evaluation import grid_memory
from femopt.evaluation.device import DevicePath, capability
from femopt.evaluation.device_forms import integrand_bytes
from femopt.evaluation.grid_loads import GridLoads
from femopt.solvers.eigen import lobpcg


# What the count misses, per dof: allocator rounding, scratch, the small blocks' pool.
# Measured on an H100 (2026-12-06, `femopt run --device gpu` without a `solver:` section,
# hex8 elasticity): with femopt's pools (backend.gpu_pool: no block split, the cached
# ones given back before the device is asked for more) the high-water mark at
# 512x256x256 with mixed Krylov is the live peak, 125 B/cell, and the count 125.0: an
# allowance of 1 B per dof is kept. With CuPy's one pool the mark was 150 against 132.9
# (5.6 B per dof, the blocks it kept split beside live ones); earlier 178 against 160.2,
# 223 against 215, 248 against 231.7, 575 mixed and 636 double (2026-12-05). The double
# Krylov path (a distributed rank's too), not measured at this code, keeps an older share
# (24.6). Not yet measured for one dof per node (heat), where it is scaled by the dofs.
UNCOUNTED_PER_DOF = {"mixed": 1.0, "double": 24.6}
# with FEMOPT_GPU_ALLOCATOR=async (CUDA's pool, whose reserved mark was of the order of
# CuPy's one pool's, 496 against 487 B/cell at 256x128x128): that pool's share
ASYNC_PER_DOF = 5.6
MEMORY_MARGIN = 1.05  # over the count and its share: 134 B/cell (mixed) at 512x256x256


def resolve_krylov(options: Any) -> str:
    """The grid path's Krylov precision of multigrid ``options`` (None: the defaults):
    ``krylov`` as asked, auto being mixed where the V-cycle runs in float32 (mixed needs
    a float32 inner solve), else double."""
    asked = getattr(options, "krylov", "auto")
    if asked != "auto":
        return asked
    return "double" if getattr(options, "precision", "auto") == "float64" else "mixed"


# The grid path's own defaults of multigrid options a problem does not set (the solver's
# are rtol 1e-8 and 20 Lanczos steps), the fastest that keep the published reference runs
# within their tests' tolerances on this path (docs/benchmarks.md, "The GPU grid path's
# defaults"). rtol 1e-6: the MBB beams keep the 88-line code's 94 and 127 iterations and
# final compliances (within 1.3e-5; the test asks 5e-3), top3d its compliance at
# iteration 13 (6.5e-7 from MATLAB's, asked 1e-6) and 62 (asked 1.5%); at 1e-5 iteration
# 13 is 1.6e-5 off. 10 Lanczos steps: half the estimates' cost, and no more CG
# iterations (ten designs at 48x24x24: 170 float32 iterations against 173). Through
# `femopt run` at 512x256x256 on an H100: 0.636 s per design iteration with the solver's
# defaults, 0.487 with these (medians of iterations 2 to 6, at 2ccfb72; over 30
# iterations at deb25f6, with OC's and the filter's faster kernels too, the median is
# 0.473 and the mean 0.488). A problem whose history must follow another code's to
# round-off past the first iterations sets ``rtol`` itself.
GRID_RTOL = 1e-6
GRID_EIG_ITERATIONS = 10
GRID_DEFAULTS = {"rtol": GRID_RTOL, "eig_iterations": GRID_EIG_ITERATIONS}


def grid_defaults(options: Any) -> dict[str, Any]:
    """The options of multigrid ``options`` that the grid path sets: those of
    :data:`GRID_DEFAULTS` the problem leaves unset, where the solver's default differs."""
    return {key: value for key, value in GRID_DEFAULTS.items()
            if key not in options.model_fields_set and getattr(options, key) != value}


def resolve_coarse_operator(options: Any) -> str:
    """The grid path's coarse operators of multigrid ``options`` (None: the defaults):
    ``coarse_operator`` as asked, auto being galerkin where ``matrix_free_levels`` is set
    and hybrid elsewhere (level 1 rediscretized: through
    ``femopt run`` on an H100 at 512x256x256, 20% less time per design iteration than
    Galerkin's products, the same compliance to 3e-11; docs/benchmarks.md)."""
    asked = getattr(options, "coarse_operator", "auto")
    if asked != "auto":
        return asked
    # hybrid applies level 1 matrix-free whatever matrix_free_levels says: a problem that
    # sets it keeps Galerkin's levels
    return "galerkin" if getattr(options, "matrix_free_levels", None) else "hybrid"


def first_csr(options: Any) -> int | None:
    """One GPU's first coarse level in CSR for multigrid ``options`` (None: the
    defaults): below hybrid's rediscretized levels and its level by Galerkin products,
    below galerkin's level 1 by products (``matrix_free_levels`` 2, the GPU's default),
    and none but the coarsest where every level is rediscretized."""
    coarse = resolve_coarse_operator(options)
    if coarse == "hybrid":
        return 2 + getattr(options, "rediscretized_levels", 1)
    if coarse == "galerkin":
        return min(getattr(options, "matrix_free_levels", None) or 2, 2)
    return None  # rediscretize: the coarsest level's CSR only (its dense inverse counted)


def estimate_bytes(layout: GridLayout, n_cases: int = 1, model: Any = None,
                   krylov: str | None = None, n_coarse: int | None = None,
                   fixed_design: bool | None = None, slab: bool = False) -> int:
    """GPU memory a design iteration of ``layout`` needs (bytes, an estimate): the sum of
    the named arrays of :func:`~femopt.evaluation.grid_memory.iteration_arrays` at their
    peak for the Krylov precision ``krylov`` (None: the model's solver's, resolved as the
    path resolves it; mixed without a model). With ``model``, its filters and optimizer
    are counted, and its integrand functions' arrays
    (:func:`~femopt.evaluation.device_forms.integrand_bytes`, gathered in the grid
    layout) and LOBPCG's are added. ``n_coarse``: the coarsest level's dofs when they do
    not follow from ``layout`` (a rank's slab of a distributed grid, whose hierarchy
    coarsens the whole grid); None: ``layout`` coarsened as the multigrid coarsens it.
    ``fixed_design``: the bounds and the start are arrays, not constants (passive cells;
    None: as the model's, else constants). ``slab``: a rank's slab of the distributed
    path (:func:`~femopt.evaluation.grid_memory.iteration_arrays`)."""
    n_filters, mma = 1, False
    options = getattr(getattr(model, "solver", None), "options", None)
    csr_from = first_csr(options)
    # the fine level keeps its residual vector where level 1's Galerkin products take it
    # as work space (CSR from level 2: galerkin's), or springs keep it from fused steps
    fine_residual = csr_from == 2 or bool(getattr(model, "has_springs", False))
    if n_coarse is None:
        n_coarse = grid_memory.coarsest_dofs(
            layout, getattr(options, "coarsest_size", 5000), getattr(options, "levels", None))
    if model is not None:
        n_filters = len(model.filters)
        mma = getattr(model.optimizer, "name", "") != "oc"
        if fixed_design is None:
            fixed_design = np.size(getattr(model, "passive_idx", ())) > 0
        if krylov is None:
            krylov = resolve_krylov(options)
    arrays = grid_memory.iteration_arrays(layout.n_cells, layout.n_dofs, layout.dim,
                                          layout.k, n_cases, krylov or "mixed", n_filters,
                                          mma, n_coarse, bool(fixed_design), slab,
                                          int(np.prod(layout.shape[:-1])),
                                          csr_from, fine_residual)
    total = grid_memory.peak_bytes(arrays)
    if model is not None:
        total += integrand_bytes(model, layout.n_dofs)
        total += eigen_bytes(model, layout.n_dofs)
    per_dof = UNCOUNTED_PER_DOF[krylov or "mixed"]
    if allocator_in_use() == "async":
        per_dof = max(per_dof, ASYNC_PER_DOF)
    uncounted = per_dof * layout.n_dofs
    return int(MEMORY_MARGIN * (total + uncounted))


# float64 vectors of the dofs per LOBPCG block vector at its peak: x, Kx, Mx, the residual,
# the preconditioned residual, the previous step, the search block and its K and M images
# (twice the block), the Rayleigh-Ritz basis and its K and M images (three times the
# block, each), the new x, Kx, Mx; and the Ritz vectors kept as the next design's start
LOBPCG_VECTORS = 3 + 1 + 1 + 1 + 3 * 2 + 3 * 3 + 3 + 1


def eigen_bytes(model: Any, n_dofs: int) -> int:
    """GPU memory of the LOBPCG solves of ``model``'s functions of eigenvalues (bytes):
    one solve at a time, each function's Ritz vectors kept between designs."""
    blocks = [fn.eigen_problem().block for fn in model.functions()
              if fn is not None and fn.eigen_problem() is not None]
    if not blocks:
        return 0
    return 8 * n_dofs * (LOBPCG_VECTORS * max(blocks) + sum(blocks))


def unsupported(model: Any, solver: str | None) -> str | None:
    """Why the GPU grid path cannot run ``model`` (None when it can); ``solver`` names a
    solver the problem asks for that does not run on this path (None: it does)."""
    if model.mesh.grid is None:
        return "the GPU path needs a structured grid (mesh type 'structured')"
    why = capability(model)
    if why:
        return why
    if np.ndim(model.ke) != 2:
        return "the GPU path needs one element matrix for the whole grid"
    if solver is not None:
        return f"the GPU path needs the multigrid solver, not {solver!r}"
    return None


KRYLOV_NOTE = {
    "mixed": "solver: mixed precision (float32 CG and V-cycle inside a float64 defect "
             "correction; float64 where float32 stagnates)",
    "double": "solver: double precision (float64 CG)"}


COARSE_NOTE = {
    "hybrid": "solver: coarse levels hybrid (level 1 rediscretized, level 2 Galerkin by "
              "products, assembled below)",
    "galerkin": "solver: coarse levels Galerkin (level 1 by products, assembled below)",
    "rediscretize": "solver: coarse levels rediscretized"}


def coarse_note(coarse: str, options: Any) -> str:
    """The log's line for the coarse operators ``coarse`` of multigrid ``options``."""
    n = getattr(options, "rediscretized_levels", 1)
    if coarse == "hybrid" and n > 1:
        return (f"solver: coarse levels hybrid (levels 1 to {n} rediscretized, level "
                f"{n + 1} Galerkin by products, assembled below)")
    return COARSE_NOTE[coarse]


class GridDevicePath(DevicePath):
    """The design chain of ``model`` (a structured grid) with fields on ``xp``.

    Args:
        model: a built model that :func:`unsupported` accepts, with a multigrid solver.
        xp: the array module of the fields (cupy, or numpy in tests).
    """

    @property
    def cold_start_in_place(self) -> bool:
        """The mixed solve updates its start in place; the float64 CG copies it."""
        return getattr(self.model.solver, "krylov", "double") == "mixed"

    def __init__(self, model: Any, xp: Any):
        self.layout = lay = layout_of(model.mesh, model.physics.dofs_per_node)
        # the multigrid solver rebuilds its hierarchy when the mask object changes: one
        # host mask for the whole run
        self.fixed_grid = np.zeros(lay.n_dofs, dtype=bool)
        self.fixed_grid[lay.grid_index(np.asarray(model.fixed))] = True
        self.ke = np.asarray(model.ke, dtype=np.float64)
        # springs to ground (compliant mechanisms): on the fine operator's diagonal
        self.springs = (lay.from_dofs(np.asarray(model.springs, dtype=np.float64))
                        if model.has_springs else None)
        solver = model.solver
        if hasattr(solver, "use_krylov"):
            self.krylov = resolve_krylov(solver.options)
            solver.use_krylov(self.krylov)
            model.device_notes.append(KRYLOV_NOTE[self.krylov])
            changes = grid_defaults(solver.options)
            if changes:
                solver.options = solver.options.model_copy(update=changes)
                model.device_notes.append(
                    "solver: " + ", ".join(f"{k} {v:g}" for k, v in changes.items())
                    + ", the GPU grid path's defaults (set them in solver: to choose others)")
        if hasattr(solver, "use_coarse_operator"):
            coarse = resolve_coarse_operator(solver.options)
            solver.use_coarse_operator(coarse)
            model.device_notes.append(coarse_note(coarse, solver.options))
        # the loads by their nonzeros, on the device: no vector of the grid's size
        super().__init__(model, xp, self._sparse_loads(model.load_nonzeros, xp))

    def _sparse_loads(self, loads: Any, xp: Any) -> GridLoads:
        """The loads' nonzeros (:class:`~femopt.evaluation.load_nonzeros.LoadNonzeros`,
        femopt's numbering) as :class:`GridLoads` in the grid layout, zero on supported
        dofs (equal to ``self._to_states`` of each dense vector)."""
        nz = loads.loaded()
        values = loads.values[:, np.searchsorted(loads.index, nz)]
        idx = self.layout.grid_index(nz)
        keep = ~self.fixed_grid[idx]
        return GridLoads(idx[keep], values[:, keep], self.layout.n_dofs, xp)

    def _loads_dot(self, u: Any) -> np.ndarray:
        return to_host(self.loads.dots(u))

    def _to_states(self, a: np.ndarray) -> np.ndarray:
        out = self.layout.from_dofs(a)
        out[self.fixed_grid] = 0.0
        return out

    def _set_operator(self, scale: Any) -> None:
        self.model.solver.update_grid_operator(scale, self.ke, self.fixed_grid, self.springs)

    def _solve(self, rhs: Any, x0: Any) -> tuple[Any, int]:
        # x0 is the path's own last state (a row of u or of an adjoint's mu), which the
        # caller overwrites with the result: the mixed solve updates it in place
        solver = self.model.solver
        x = solver.solve_grid(rhs, x0=x0, in_place=True)
        return x, solver.last.iterations

    def _adjoint_term(self, u: Any, mu: Any, beta: np.ndarray, a: np.ndarray, scale: Any,
                      dm: Any) -> Any:
        return grid_sensitivity_cases(self.layout, u, mu, beta, a, scale, dm, self.ke)[0]

    # -- eigenpairs: LOBPCG with the forward operator's multigrid -----------------------

    def _eigenpairs(self, key: Any, problem: Any, rho: Any) -> tuple[np.ndarray, Any]:
        """LOBPCG on the free dofs of the grid layout: K is the multigrid solver's
        float64 fine operator, M = sum_e m_M(rho_e) M0 matrix-free (plus the point
        masses), the preconditioner one V-cycle of the hierarchy built for this design.
        Warm-started from the last design's vectors (a fixed random start first)."""
        xp, lay = self.xp, self.layout
        solver = self.model.solver
        if not hasattr(self, "_free_device"):
            self._free_device = xp.asarray(~self.fixed_grid)
        free = self._free_device
        mass = StructuredOperator(lay, xp.asarray(problem.mass.value(rho)), problem.m0, free)
        point = xp.asarray(self._to_states(problem.point_mass))
        starts = getattr(self, "_modes", {})
        x0 = starts.get(key)
        if x0 is None:
            rng = np.random.default_rng(7)
            x0 = xp.asarray(rng.standard_normal((problem.block, lay.n_dofs))) * free

        def a(v):
            return solver.op64.apply(v) * free

        def b(v):
            return (mass.apply(v) + point * v) * free

        def precondition(r):
            return solver.precondition(r * free, xp.empty_like(r)) * free

        lams, phis, info = lobpcg(a, b, precondition, x0, problem.n_modes, problem.tol)
        self.eigen_iterations = info.iterations
        starts[key] = info.block  # the next design starts from this one's Ritz vectors
        self._modes = starts
        return lams, phis

    def host_modes(self, phis: Any) -> np.ndarray:
        # mode by mode from the grid's layout: one host copy at a time
        return np.stack([self.layout.to_dofs(to_host(p)) for p in phis])

    def _modal_sensitivity(self, problem: Any, phis: Any, ck: np.ndarray, cm: np.ndarray,
                           rho: Any) -> Any:
        m, xp = self.model, self.xp
        none = np.zeros((ck.size, 0))
        sk = grid_sensitivity_cases(self.layout, phis, None, ck, none, rho,
                                    m.interp.derivative(rho), self.ke)[0]
        sm = grid_sensitivity_cases(self.layout, phis, None, cm, none, rho,
                                    xp.asarray(problem.mass.derivative(rho)), problem.m0)[0]
        return sk + sm

    def _cell_index(self) -> Any:
        """(n_cells, nd) the grid-layout index of every cell dof (built on first use)."""
        if not hasattr(self, "_cells"):
            dofs = self.model.physics.cell_dofs()
            self._cells = self.xp.asarray(self.layout.grid_index(dofs))
        return self._cells

    def _cells_index(self, cells: Any) -> Any:
        """The grid-layout index of the dofs of ``cells`` (kept for the last cells asked
        for: a function asks for the same cells at every design)."""
        if getattr(self, "_last_cells", None) is not cells:
            self._last_cells, self._last_index = cells, self._cell_index()[cells]
        return self._last_index

    def _cell_states(self, u: Any, cells: Any) -> Any:
        return u[:, self._cells_index(cells)]

    def _from_cells(self, de: Any, cells: Any) -> Any:
        out = self._scatter(self._cells_index(cells), de, self.layout.n_dofs)
        if not hasattr(self, "_fixed_device"):
            self._fixed_device = self.xp.asarray(self.fixed_grid)
        out[:, self._fixed_device] = 0.0
        return out

    def host_states(self) -> np.ndarray:
        # case by case: one case's host copy at a time
        return np.stack([self.layout.to_dofs(to_host(u)) for u in self.u])

    def state_rows(self) -> list[RowSource]:
        return [node_rows(u, self.layout.k) for u in self.u]

    def mode_rows(self, phis: Any) -> list[RowSource]:
        return [node_rows(p, self.layout.k) for p in phis]
