"""Mixed-precision solves of the grid multigrid: float32 CG inside a float64 defect
correction, with a float64 fallback.

Each outer step computes the defect r = b - K u in float64 (the float64 matrix-free
operator), solves K c = r approximately with CG in float32 (the V-cycle's fine operator,
preconditioned by the float32 V-cycle), and adds c to u in float64. The solve stops on the
float64 relative residual ||b - K u|| / ||b||, so the state meets the same tolerance as
the float64 CG's. The float32 operator is K with every element's matrix rounded
relatively (m_e K0 in float32), a perturbation of relative size about 1e-7 in K's energy
norm whatever the SIMP contrast, so each outer step gains roughly the inner tolerance.

The float64 vectors are the state (updated in place) and the defect, which is not alive
while the float32 CG runs. The CG adds its steps straight into the state (it keeps no x
of its own) and takes Fletcher-Reeves' beta, so its preconditioned residual overwrites
A p once r is updated: three float32 vectors (r, p, and q or z). Its V-cycle is float32
like its operator, symmetric to float32 rounding, well below the inner tolerance; were it
not, the outer step would fail to halve the defect and the float64 fallback take over.
When an outer step fails to
halve the defect (the float32 solve stagnates: a tolerance near float32 rounding of the
defect's components, a breakdown in float32), the solve is redone from the current state
in float64 (``MultigridSolver`` says so in its ``notes``).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from femopt.backend import array_namespace
from femopt.errors import SolverError
from femopt.solvers.cg_kernels import dot_gpu, dot_numpy, pcg_fused
from femopt.solvers.pcg import CGInfo

INNER_RTOL = 1e-5  # the float32 CG's own tolerance, relative to its defect (well above
# float32 rounding, 6e-8, times the few hundred terms of a residual's sums)
STALL = 0.5  # an outer step that does not halve the float64 defect has stagnated
MAX_OUTER = 30


class Stagnated(Exception):
    """The float32 inner solves no longer reduce the float64 defect."""

    def __init__(self, x: Any, info: CGInfo, why: str):
        super().__init__(why)
        self.x, self.info, self.why = x, info, why


def defect_correction(defect: Callable[[Any], Any], bnorm: float,
                      apply32: Callable[[Any, Any], Any],
                      precond32: Callable[[Any, Any], Any], x: Any, rtol: float,
                      max_iter: int, inner_rtol: float = INNER_RTOL,
                      start: Callable[[Any, Any], None] | None = None) -> CGInfo:
    """Solve K x = b to ||b - K x|| <= rtol ||b|| in place in ``x`` (float64).

    Args:
        defect: x -> b - K x in float64 (a new array). bnorm: ||b||.
        apply32: (u, out) -> out = K u in float32. precond32: (r, out) -> out = M^-1 r.
        x: float64 start and result (updated in place).
        rtol: tolerance of the float64 relative residual. max_iter: the float32 CG's
            iterations per outer step.
        start: (x, r) -> None, run on the start and its defect before the first step
            (:func:`scale_start`: both rescaled in place), or None.
    Returns:
        CGInfo: ``residuals`` are the float64 relative residuals of the outer steps,
        ``iterations`` the float32 CG iterations in all.
    Raises:
        Stagnated: an outer step did not halve the defect, or the float32 CG broke down;
            ``x`` holds the state reached (finite: a step with a non-finite or
            non-positive p.q is refused before it is added).
    """
    xp = array_namespace(x)
    dot = dot_numpy if xp is np else dot_gpu
    info = CGInfo()
    if bnorm == 0.0:
        x[...] = 0.0
        info.converged = True
        return info
    r = defect(x)
    if start is not None:
        start(x, r)
    rel = float(np.sqrt(dot(r, r))) / bnorm
    info.residuals.append(rel)
    for _ in range(MAX_OUTER):
        if rel <= rtol:
            info.converged = True
            return info
        if not np.isfinite(rel):
            raise SolverError("the mixed-precision solve produced a non-finite residual")
        # the float32 CG need only reach the float64 target (with a margin) or its own
        # floor; the defect in float32 is exact to rounding, relative to itself
        want = max(0.5 * rtol / rel, inner_rtol)
        r32 = r.astype(np.float32)
        del r  # the float64 defect is not alive while the float32 CG runs
        try:
            _, inner = pcg_fused(apply32, precond32, r32, None, want, max_iter,
                                 overwrite_b=True, into=x, polak_ribiere=False)
        except SolverError as exc:
            raise Stagnated(x, info, f"the float32 CG broke down ({exc})") from None
        del r32
        info.iterations += inner.iterations
        r = defect(x)
        new = float(np.sqrt(dot(r, r))) / bnorm
        info.residuals.append(new)
        if new > STALL * rel and new > rtol:
            raise Stagnated(x, info, f"the float64 residual went from {rel:.2e} to {new:.2e} "
                                     "in one float32 correction")
        rel = new
    if rel <= rtol:
        info.converged = True
        return info
    raise Stagnated(x, info, f"{MAX_OUTER} float32 corrections left the residual at "
                             f"{rel:.2e}")


def scale_start(x: Any, r: Any, b: Any) -> float:
    """Rescale a warm start and its defect in place by the factor that minimizes the
    energy norm of the error, ||alpha x - K^-1 b||_K: alpha = b.x / x.K x, with
    x.K x = b.x - x.r (no product with K).

    A design step scales the stiffness unevenly, so the last state can be far off in
    size: on the grid path's twin (48x24x24 cantilever, OC) its defect was up to 3.9 ||b||
    unscaled and 0.7 scaled, and ten designs took 173 float32 CG iterations instead of 185.

    Args:
        x: the start (float64), becomes alpha x. r: its defect b - K x, becomes
            b - K alpha x.
        b: the right-hand side, a dense vector or a load by its nonzeros
            (:class:`~femopt.evaluation.grid_loads.SparseLoad`).
    Returns:
        alpha (0 where x.K x is not positive: x = 0, r = b).
    """
    xp = array_namespace(x)
    dot = dot_numpy if xp is np else dot_gpu
    sparse = hasattr(b, "add_to")
    bx = b.dot(x) if sparse else dot(b, x)
    xkx = bx - dot(x, r)
    alpha = bx / xkx if xkx > 0 else 0.0
    x *= alpha
    if sparse:
        r *= alpha
        b.add_to(r, 1.0 - alpha)
    else:  # r = b - alpha K x in place: no temporary of b's size (an adjoint's load)
        r -= b
        r *= alpha
        r += b
    return alpha


def solve_mixed(solver: Any, b: Any, x0: Any, rtol: float | None, in_place: bool) -> Any:
    """K x = b by :func:`defect_correction` on a ``MultigridSolver``'s operators (its
    float64 fine operator, its float32 fine V-cycle operator and V-cycle), a warm start
    ``x0`` rescaled first (:func:`scale_start`); where float32 stagnates, the solver's
    float64 CG from the state reached, and a line in its ``notes``. ``in_place``: the
    solution overwrites ``x0``."""
    o, xp, op64 = solver.options, solver.xp, solver.op64
    rtol = o.rtol if rtol is None else rtol
    x = (xp.zeros(b.shape, dtype=xp.float64) if x0 is None
         else (x0 if in_place else x0.copy()))
    fine = solver.levels[0].op
    if hasattr(b, "defect"):  # a load by its nonzeros (evaluation.grid_loads)
        bnorm = b.norm()

        def defect(u):
            return b.defect(op64.apply(u, alpha=-1.0))
    else:
        bnorm = float(xp.sqrt(xp.vdot(b, b)))

        def defect(u):
            return op64.apply(u, alpha=-1.0, beta=1.0, z=b)
    start = None if x0 is None else (lambda u, r: scale_start(u, r, b))
    try:
        solver.last = defect_correction(defect, bnorm, lambda u, out: fine.apply(u, out=out),
                                        solver.precondition, x, rtol, o.max_iter,
                                        start=start)
        return x
    except Stagnated as exc:
        solver.precision_fallbacks += 1
        solver.notes.append(f"multigrid: the float32 solve stagnated ({exc.why}); "
                            "solved again in float64")
        dense = b.dense() if hasattr(b, "dense") else b
        return solver._solve_grid(dense, exc.x, rtol)
