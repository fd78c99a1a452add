"""One design iteration of compliance minimization on a structured grid, on one device.

The device path of the classic density-filtered SIMP/OC loop (top88/top3d) for a
:class:`~femopt.mesh.grid_cantilever.GridCantilever`, with every field on the device of
``xp`` (NumPy or CuPy) from start to end:

    x -> rho = H x / Hs (stencil) -> m(rho) -> MG-PCG solve K(rho) u = f (warm start)
      -> compliance and dc/drho in one pass over cells -> dc/dx = H (dc / Hs)
      -> OC update under sum(rho) <= volfrac n, a linear constraint w . x <= volfrac n.

Only scalars (CG residuals, bisection sums, the objective) reach the host. This is what the
GPU benchmarks time and what the GPU tests compare with the CPU; the model's own loop
(femopt.problem.model) is generic and calls the same pieces through its plugins.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from femopt.adjoint.grid_sensitivity import grid_sensitivity
from femopt.filters.grid_filter import GridDensityFilter
from femopt.mesh.grid_cantilever import GridCantilever
from femopt.optimizers.oc_kernels import oc_update_linear
from femopt.solvers.multigrid import MultigridOptions, MultigridSolver


@dataclass
class IterationResult:
    compliance: float
    change: float
    cg_iterations: int
    seconds: float
    phases: dict[str, float] = field(default_factory=dict)


class GridComplianceLoop:
    """Density-filtered SIMP compliance minimization with OC on a grid cantilever.

    Args:
        case: the grid problem (layout, K0, constraints, load; arrays on ``xp``).
        xp: numpy or cupy. volfrac, penal, rmin, emin, move: as in top3d.
        solver_options: options of the multigrid solver (rtol is per call, see ``step``).
    """

    def __init__(self, case: GridCantilever, xp: Any = np, volfrac: float = 0.3,
                 penal: float = 3.0, rmin: float = 1.5, emin: float = 1e-9, move: float = 0.2,
                 solver_options: MultigridOptions | None = None):
        self.case, self.xp = case, xp
        self.volfrac, self.penal, self.emin, self.move = volfrac, penal, emin, move
        lay = case.layout
        self.filter = GridDensityFilter(lay.shape, (1.0,) * lay.dim, rmin, xp)
        n = lay.n_cells
        self.x = xp.full(n, volfrac, dtype=xp.float64)
        # sum(H x / Hs) = w . x with w = H^T (1 / Hs), the top3d code's dv
        self.w = self.filter.backward(self.x, xp.ones(n, dtype=xp.float64))
        self.fixed = xp.asarray(case.fixed)
        self.load = xp.asarray(case.load, dtype=xp.float64)
        self.solver = MultigridSolver(solver_options or MultigridOptions(), lay)
        self.u: Any = None

    def _sync(self) -> None:
        if self.xp is not np:
            self.xp.cuda.Device().synchronize()

    def step(self, rtol: float = 1e-5, timed: bool = False) -> IterationResult:
        """One design iteration; ``timed`` synchronizes the device between phases to
        report their times (the total is measured either way)."""
        lay = self.case.layout
        phases: dict[str, float] = {}
        t0 = time.perf_counter()
        last = t0

        def mark(name: str) -> None:
            nonlocal last
            if timed:
                self._sync()
                now = time.perf_counter()
                phases[name] = now - last
                last = now

        rho = self.filter.forward(self.x)
        rho_p1 = rho ** (self.penal - 1.0)
        scale = self.emin + (1.0 - self.emin) * rho_p1 * rho
        dm = self.penal * (1.0 - self.emin) * rho_p1
        mark("filter")
        self.solver.update_grid_operator(scale, self.case.ke, self.fixed)
        mark("mg_setup")
        self.u = self.solver.solve_grid(self.load, x0=self.u, rtol=rtol)
        mark("solve")
        dc, compliance = grid_sensitivity(lay, self.u, self.u, scale, dm, self.case.ke,
                                          coef=-1.0)
        mark("sensitivity")
        dcx = self.filter.backward(self.x, dc)
        mark("filter_chain")
        self.x, change = oc_update_linear(self.x, dcx, self.w, self.w,
                                          self.volfrac * lay.n_cells, move=self.move)
        mark("oc")
        self._sync()
        seconds = time.perf_counter() - t0
        return IterationResult(compliance, change, self.solver.last.iterations, seconds,
                               phases)

    def density(self) -> np.ndarray:
        """The physical density on the host."""
        rho = self.filter.forward(self.x)
        return rho.get() if self.xp is not np else rho
