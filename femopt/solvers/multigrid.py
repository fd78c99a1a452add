"""Geometric multigrid preconditioned CG for structured grids (quad4, hex8; any dofs per
node), on NumPy or CuPy arrays.

The operator is K(s) = sum_e s_e K0 on the free dofs (``update_operator``, or
``update_grid_operator`` with a constraint mask). Internally every vector has the
component-major grid layout (:mod:`femopt.assembly.grid_layout`) with constrained dofs held
at zero and an identity on them, so CG on grid vectors is CG on the free dofs; ``solve``
maps free-dof vectors in and out, ``solve_grid`` works on grid vectors directly.

Hierarchy (built once per grid and constraints; operators rebuilt per design):

- level 0: matrix-free (:mod:`femopt.assembly.matrix_free`), float64 for CG and a copy in
  the V-cycle's precision (``precision``: float32 on the GPU by default);
- coarser levels: each coarsening halves every axis. Coarsening stops at the first level
  with at most ``coarsest_size`` dofs, at ``levels``, or where an axis has an odd number of
  cells: no semi-coarsening, because the element matrix of a cell halved in some axes only
  is no longer a multiple of K0 and the hierarchy would need one per level and shape. So
  60x20x4 has at most 3 levels (30x10x2, then 15x5x1), 160x80x40 four (down to 20x10x5).
  A constrained fine dof constrains every coarse dof that interpolates to it
  (:func:`femopt.solvers.multigrid_transfer.coarse_fixed`);
- coarse operators (``MultigridOptions.coarse_operator``, measurements there):
  ``galerkin`` (the CPU's default) computes P^T A P cell by cell
  (:mod:`femopt.solvers.galerkin`), level 1 by products on the GPU (``GalerkinProduct``:
  prolong, the apply above, restrict), CSR below; ``hybrid`` (the grid device path's)
  rediscretizes level 1 (``rediscretized_levels``), on the GPU applies the next by
  Galerkin products through it and assembles from the one after; ``rediscretize``
  averages the children's scale factors on every level;
- coarsest level: a direct solve (SciPy's SuperLU, or on the GPU the inverse from a dense
  Cholesky factor);
- smoothing: Chebyshev of D^-1 A (default) or damped Jacobi (:mod:`femopt.solvers.smoothers`),
  with the largest eigenvalue from Lanczos (``eigenvalue_bound``); matrix-free levels take
  fused steps, their residuals formed in the apply (:func:`fused_levels`).

CG (:func:`femopt.solvers.cg_kernels.pcg_fused`) runs in float64 and is preconditioned by one
V-cycle. The solver keeps its hierarchy between ``solve`` calls, so the adjoint reuses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from femopt.assembly.grid_layout import GridLayout, layout_of
from femopt.assembly.matrix_free import StructuredOperator
from femopt.assembly.structured_csr import CSROperator, StructuredCSR
from femopt.backend import array_namespace, to_host
from femopt.backend.threads import single_blas_thread
from femopt.errors import SolverError
from femopt.solvers import multigrid_transfer as transfer
from femopt.solvers.base import LinearSolver
from femopt.solvers.cg_kernels import pcg_fused
from femopt.solvers.mixed_precision import solve_mixed
from femopt.solvers.multigrid_levels import (CoarseSolver, GalerkinProduct, MultigridOptions,
                                             eigenvalue_bound, fused_levels, grid_levels,
                                             vcycle, with_springs)
from femopt.solvers.galerkin import (
    assemble_level,
    child_matrices,
    galerkin_layers,
    rediscretized_scale,
)
from femopt.solvers.pcg import CGInfo, not_converged
from femopt.solvers.smoothers import InverseDiagonal, PolynomialSmoother, estimate_lambda_max


LANCZOS_MARGIN = 1.2  # the estimate approaches lambda_max from below


@dataclass
class Level:
    layout: GridLayout
    free: Any  # bool (n_dofs,): the level's one mask (its constrained dofs are ~free)
    op: Any = None  # StructuredOperator or CSROperator (V-cycle precision)
    pattern: StructuredCSR | None = None
    smoother: PolynomialSmoother | None = None
    coarse_solve: Any = None
    b: Any = None
    x: Any = None
    r: Any = None
    d: Any = None


class MultigridSolver(LinearSolver):
    """MG-preconditioned CG on a structured grid; ``bind`` names the grid before use."""

    name = "multigrid"
    device_paths = ("gpu grid",)  # the grid path solves with this solver's hierarchy
    distributed = True  # femopt.parallel.multigrid runs its hierarchy on slabs
    summary = "Geometric multigrid preconditioned CG for structured grids (CPU and GPU)"
    Options = MultigridOptions
    symmetric_only = True

    def __init__(self, options: MultigridOptions | None = None, layout: GridLayout | None = None):
        self.options = options or MultigridOptions()
        self.layout = layout
        self.levels: list[Level] = []
        self.last = CGInfo()
        self._key: Any = None
        self._assembler_key: Any = None
        self._fixed_seen: Any = None
        self.op64: StructuredOperator | None = None
        self._springs: tuple[Any, np.ndarray] | None = None  # (grid dofs, stiffness)
        self.fell_back = False
        self.float64_vcycle = False  # set for the run when the float32 V-cycle fails
        self.krylov = "double" if self.options.krylov == "auto" else self.options.krylov
        asked = self.options.coarse_operator
        self.coarse_operator = "galerkin" if asked == "auto" else asked
        self.notes: list[str] = []  # what a solve decided that the run's log should say
        self.precision_fallbacks = 0

    def use_krylov(self, mode: str) -> None:
        """The Krylov precision, "mixed" or "double", before the first solve (the grid
        device path resolves the option's auto to mixed)."""
        if mode not in ("mixed", "double"):
            raise SolverError(f"unknown Krylov precision {mode!r}: expected mixed or double")
        if mode != self.krylov:
            self.krylov = mode
            self._key = None  # the V-cycle's precision may change: rebuild

    def use_coarse_operator(self, mode: str) -> None:
        """The coarse operators, "galerkin", "rediscretize" or "hybrid", before the first
        solve (the grid device path resolves the option's auto to hybrid)."""
        if mode not in ("galerkin", "rediscretize", "hybrid"):
            raise SolverError(f"unknown coarse operator {mode!r}: expected galerkin, "
                              "rediscretize or hybrid")
        if mode != self.coarse_operator:
            self.coarse_operator = mode
            self._key = None  # the levels' formats change: rebuild

    # -- set-up ---------------------------------------------------------------------------

    def bind(self, mesh: Any, dofs_per_node: int) -> None:
        """Name the structured grid (``mesh.grid``) and the dofs per node."""
        self.layout = layout_of(mesh, dofs_per_node)

    def update(self, matrix: Any) -> None:
        raise SolverError("the multigrid solver is matrix-free: it takes the element scale "
                          "factors through update_operator, not an assembled matrix")

    def update_operator(self, scale: Any, assembler: Any, ke: Any) -> None:
        """New design: the operator is sum_e scale_e K0 (``ke``) on ``assembler.free``."""
        if self.layout is None:
            raise SolverError("the multigrid solver needs a structured grid: the model must "
                              "call bind(mesh, dofs_per_node) before the first solve")
        xp = array_namespace(scale)
        key = (id(assembler), len(assembler.free), xp.__name__)
        if key != self._assembler_key:
            free_grid = self.layout.grid_index(np.asarray(assembler.free))
            fixed = np.ones(self.layout.n_dofs, dtype=bool)
            fixed[free_grid] = False
            self._fixed_host = fixed
            self._free_idx = xp.asarray(free_grid)
            self._assembler_key = key
        self.update_grid_operator(scale, ke, self._fixed_host)

    def update_grid_operator(self, scale: Any, ke: Any, fixed: Any,
                             springs: np.ndarray | None = None) -> None:
        """New design, grid-native: operator sum_e scale_e K0 with the dofs ``fixed``
        (bool, grid layout) constrained, plus ``springs`` (host, grid layout: a stiffness
        to ground per dof, or None) on the diagonal. The hierarchy is rebuilt only when
        the grid, the constraints, K0 or the array module change.

        Springs act on the fine level (CG's operator, the fine smoother and its
        diagonal) and not on the coarse ones: the V-cycle stays symmetric positive
        definite with any SPD coarse operator, and a few springs barely change its
        quality (the force inverter: docs/architecture.md)."""
        if self.layout is None:
            raise SolverError("the multigrid solver needs a structured grid: call "
                              "bind(mesh, dofs_per_node) or pass a GridLayout first")
        lay = self.layout
        ke = np.asarray(ke, dtype=np.float64)
        if ke.shape != (lay.nd, lay.nd):
            raise SolverError(f"the multigrid solver needs one element matrix of shape "
                              f"({lay.nd}, {lay.nd}) for the whole grid, got {ke.shape}")
        if tuple(scale.shape) != (lay.n_cells,):
            raise SolverError(f"expected {lay.n_cells} element scale factors, got "
                              f"{tuple(scale.shape)}")
        xp = array_namespace(scale)
        with single_blas_thread(xp):
            if fixed is not self._fixed_seen or self._key != (xp.__name__, ke.tobytes()):
                self._build_hierarchy(xp, xp.asarray(fixed, dtype=bool), ke)
                self._fixed_seen = fixed
                self._fixed_host_grid = to_host(fixed).astype(bool)
                self._springs_key = None
                self._key = (xp.__name__, ke.tobytes())
            self._set_springs(springs, xp)
            self._design = (xp.asarray(scale, dtype=xp.float64), ke)
            self._set_design(*self._design)

    def _set_springs(self, springs: np.ndarray | None, xp: Any) -> None:
        if springs is None:
            self._springs = None
            return
        if getattr(self, "_springs_key", None) is not springs:
            free = ~np.asarray(self._fixed_host_grid)
            idx = np.flatnonzero((np.asarray(springs) != 0.0) & free)
            self._springs_key = springs
            self._springs_value = (xp.asarray(idx), np.asarray(springs)[idx])
        self._springs = self._springs_value if self._springs_value[1].size else None

    def _precision(self, xp: Any) -> Any:
        p = self.options.precision
        if self.float64_vcycle:
            return np.float64
        if p == "auto":
            return np.float32 if xp is not np or self.krylov == "mixed" else np.float64
        return np.float32 if p == "float32" else np.float64

    def _build_hierarchy(self, xp: Any, fixed: Any, ke: np.ndarray) -> None:
        o = self.options
        lay = self.layout
        free = ~fixed
        self.dtype = self._precision(xp)
        self.xp = xp
        # the constrained dofs of each level, for its coarsening and its CSR pattern; a
        # level keeps its free mask alone (the operators read it as bytes, no copies)
        fixed_of = [fixed]
        levels = [Level(lay, free)]
        for coarse in grid_levels(lay, o.coarsest_size, o.levels)[1:]:
            fixed_of.append(transfer.coarse_fixed(levels[-1].layout, fixed_of[-1]))
            levels.append(Level(coarse, ~fixed_of[-1]))
        if self.coarse_operator == "rediscretize":
            n_mf = len(levels)
        elif self.coarse_operator == "hybrid":
            # on the GPU the level below the rediscretized ones is Galerkin by products
            # (P^T A P of the last rediscretized level, applied through it: no CSR values)
            n_mf = 1 + o.rediscretized_levels + (0 if xp is np else 1)
        else:  # the fine level and, optionally, level 1 (its children scale factors)
            n_mf = min(o.matrix_free_levels or (1 if xp is np else 2), 2)
        fused = fused_levels(self.coarse_operator, o.rediscretized_levels, len(levels),
                             n_mf)
        for i, lev in enumerate(levels):
            n = lev.layout.n_dofs
            if i > 0:  # level 0's come from CG (mixed) or on first use (double)
                lev.b = xp.zeros(n, dtype=self.dtype)
                lev.x = xp.zeros(n, dtype=self.dtype)
            if i not in fused:  # a fused level forms its residuals in its applies
                lev.r = xp.zeros(n, dtype=self.dtype)
            lev.d = xp.zeros(n, dtype=self.dtype)
            if i >= n_mf or i == len(levels) - 1:
                lev.pattern = StructuredCSR(lev.layout, fixed_of[i])
        self.levels = levels
        self._child: dict = {}
        # coarsening ratio of each level's operator to the cells its bound is taken on
        # (K0's, or a rediscretized level's: they are K0's too, at another size)
        n_re = o.rediscretized_levels
        ratios = {"galerkin": [2**i for i in range(len(levels))],
                  "rediscretize": [1] * len(levels),
                  "hybrid": [2 ** max(i - n_re, 0) for i in range(len(levels))]}
        self._bounds = [eigenvalue_bound(ke, lay.dim, lay.k, r)
                        for r in ratios[self.coarse_operator]]

    def _children(self, ke: np.ndarray, ratio: int, xp: Any) -> Any:
        key = (ratio, xp.__name__)
        if key not in self._child:
            g = child_matrices(ke, self.layout.dim, self.layout.k, ratio)
            self._child[key] = g if xp is np else xp.asarray(g, dtype=self.dtype)
        return self._child[key]

    def _set_design(self, scale: Any, ke: np.ndarray) -> None:
        xp, o, levels = self.xp, self.options, self.levels
        # the last design's operators, smoothers and coarsest factor go first: they are
        # not alive beside the new ones (their scale factors, coarse values, diagonals)
        self.op64 = None
        for lev in levels:
            lev.op = lev.smoother = lev.coarse_solve = None
        self.op64 = with_springs(StructuredOperator(self.layout, scale, ke, levels[0].free),
                                 self._springs)
        s0 = scale.astype(self.dtype)
        s = s0
        # Galerkin levels derive from a "base" level: the fine one, or for ``hybrid`` the
        # last rediscretized level (``rediscretized_levels``)
        base, base_scale, base_level = self.layout, s0, 0
        n_re = o.rediscretized_levels
        nxt: Any = None  # the next level's Galerkin cell matrices, made beside this one's
        above: Any = None  # the last matrix-free level's V-cycle operator, without springs
        for i, lev in enumerate(levels):
            prev = levels[i - 1].layout if i else None
            cells, nxt = nxt, None  # this level's, where the level above made them
            if i == 0:
                pass
            elif self.coarse_operator == "rediscretize" or (
                    self.coarse_operator == "hybrid" and i <= n_re):
                s = rediscretized_scale(prev, s)
                if self.coarse_operator == "hybrid":
                    base, base_scale, base_level = lev.layout, s, i
            elif lev.pattern is None:  # matrix-free Galerkin: P^T A P of the level above,
                # by products through its operator and its idle V-cycle vectors
                lev.op = GalerkinProduct(lev.layout, above, lev.free,
                                         (levels[i - 1].r, levels[i - 1].d),
                                         self._children(ke, 2, np))
                continue
            elif cells is None:  # the first Galerkin level: by chunks of its cell layers
                ratio = 2 ** (i - base_level)
                cells = galerkin_layers(base, base_scale, ke, ratio,
                                        self._children(ke, ratio, xp), i + 1 < len(levels))
            springs = self._springs if i == 0 else None
            if lev.pattern is None:
                op = StructuredOperator(lev.layout, s, ke, lev.free)
                above = op  # a Galerkin product level below applies it, without springs
                lev.op = with_springs(op, springs)
                continue
            galerkin = cells is not None  # the levels below it come from its cells
            if cells is None:  # a rediscretized (or the only) level, assembled
                cells = s[:, None, None] * xp.asarray(ke, dtype=self.dtype)[None]
            data, nxt = assemble_level(lev.pattern, cells, galerkin and i + 1 < len(levels))
            del cells
            if springs is not None:
                data[lev.pattern.diag_slot[springs[0]]] += xp.asarray(springs[1],
                                                                      dtype=data.dtype)
            lev.op = CSROperator(lev.pattern, data)
        levels[-1].coarse_solve = CoarseSolver(levels[-1].op, xp)
        for lev in levels:  # springs wrap the fine operator: no fused steps through them
            if lev.r is None and not hasattr(lev.op, "smooth"):
                lev.r = xp.zeros(lev.layout.n_dofs, dtype=self.dtype)
        self._make_smoothers()

    def _make_smoothers(self) -> None:
        xp, o = self.xp, self.options
        for i, lev in enumerate(self.levels[:-1]):
            d = lev.op.diagonal()
            if not bool(xp.all(d > 0)):  # NaN too
                raise SolverError(f"multigrid level {i}: the operator has a non-positive "
                                  f"diagonal (is every element scale factor positive?)")
            # bfloat16 where the V-cycle is float32: the smoother and Lanczos take D~^-1
            inv_d = InverseDiagonal.of(d, self.dtype)
            del d
            lam = self._bounds[i]
            if o.eigenvalue_bound == "lanczos" and not self.fell_back:
                est = estimate_lambda_max(lev.op, inv_d, lev.free, o.eig_iterations,
                                          work=(lev.r, lev.d))
                lam = min(lam, LANCZOS_MARGIN * est)
            lev.smoother = PolynomialSmoother(lev.op, inv_d, o.smoother, o.smoothing_steps,
                                              o.jacobi_omega / lam, lam, o.chebyshev_lower,
                                              1.0)

    # -- solving ----------------------------------------------------------------------------

    def precondition(self, r: Any, out: Any) -> Any:
        """out = one V-cycle applied to r (grid vectors, float64 or the V-cycle's
        precision; in the latter, straight from r into out)."""
        top = self.levels[0]
        if r.dtype == self.dtype and out.dtype == self.dtype:
            vcycle(self.levels, 0, r, out)  # reads r, writes out: no copies
            return out
        if top.b is None:
            top.b = self.xp.zeros(top.layout.n_dofs, dtype=self.dtype)
            top.x = self.xp.zeros(top.layout.n_dofs, dtype=self.dtype)
        top.b[...] = r if r.dtype == self.dtype else r.astype(self.dtype)
        vcycle(self.levels, 0, top.b, top.x)
        out[...] = top.x
        return out

    def solve_grid(self, b: Any, x0: Any = None, rtol: float | None = None,
                   in_place: bool = False) -> Any:
        """Solve with grid-layout vectors (n_dofs,), zero on constrained dofs; float64.
        With ``in_place`` the mixed solve updates ``x0`` itself (no copy of the state)."""
        with single_blas_thread(self.xp):
            if self.op64 is None:
                raise SolverError("solve() called before update_operator()")
            if self.krylov == "mixed" and self.dtype == np.float32:
                return solve_mixed(self, b, x0, rtol, in_place)
            # a load by its nonzeros (evaluation.grid_loads) as CG's dense right-hand side
            return self._solve_grid(b.dense() if hasattr(b, "dense") else b, x0, rtol)

    def _solve_grid(self, b: Any, x0: Any = None, rtol: float | None = None) -> Any:
        o = self.options
        rtol = o.rtol if rtol is None else rtol
        x, info, error = self._cg(b, x0, rtol)
        if not info.converged and o.eigenvalue_bound == "lanczos" and not self.fell_back:
            # a Lanczos estimate too low makes the Chebyshev smoother amplify the top of
            # the spectrum; the element bounds never are: rebuild the smoothers and retry
            self.fell_back = True
            self._make_smoothers()
            x, info, error = self._cg(b, x0, rtol)
        if not info.converged and self.dtype != np.float64:
            # rounding can leave a float32 V-cycle of a nearly void design indefinite (its
            # Galerkin operators, their coarsest factor), and CG stalls on it even in
            # float64: the V-cycle runs in float64 from here on (twice its memory)
            self.notes.append(f"multigrid: CG with the float32 V-cycle did not converge "
                              f"({error or f'relative residual {info.residuals[-1]:.2e}'}); "
                              "the V-cycle runs in float64 from now on")
            self._promote()
            x, info, error = self._cg(b, x0, rtol)
        self.last = info
        if not info.converged:
            if error is not None:
                raise error
            raise not_converged("multigrid CG", info, rtol)
        return x

    def _cg(self, b: Any, x0: Any, rtol: float) -> tuple[Any, CGInfo, SolverError | None]:
        """CG on the float64 operator with the V-cycle; a breakdown is returned, not
        raised (x None, an unconverged info)."""
        try:
            x, info = pcg_fused(lambda u, out: self.op64.apply(u, out=out), self.precondition,
                                b, x0, rtol, self.options.max_iter)
        except SolverError as exc:
            return None, CGInfo(), exc
        return x, info, None

    def _promote(self) -> None:
        """The V-cycle in float64 for the rest of the run: the hierarchy rebuilt at the
        current design."""
        self.float64_vcycle = True
        scale, ke = self._design
        self._build_hierarchy(self.xp, ~self.levels[0].free, ke)
        self._set_design(scale, ke)

    def solve(self, b: Any, transpose: bool = False, x0: Any = None) -> Any:
        """Solve K x = b on the free dofs; b (n_free,) or (n_free, k). K is symmetric, so
        ``transpose`` changes nothing."""
        xp = self.xp
        if b.ndim == 2:
            cols = [self.solve(b[:, j], transpose, None if x0 is None else x0[:, j])
                    for j in range(b.shape[1])]
            return xp.stack(cols, axis=1)
        n = self.layout.n_dofs
        bg = xp.zeros(n, dtype=xp.float64)
        bg[self._free_idx] = xp.asarray(b, dtype=xp.float64)
        xg = None
        if x0 is not None:
            xg = xp.zeros(n, dtype=xp.float64)
            xg[self._free_idx] = xp.asarray(x0, dtype=xp.float64)
        x = self.solve_grid(bg, xg)
        return x[self._free_idx]

    def stats(self) -> dict:
        return {"cg_iterations": self.last.iterations, "mg_levels": len(self.levels),
                "mg_element_bounds": self.fell_back, "mg_float64_vcycle": self.float64_vcycle}
