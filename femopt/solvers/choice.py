"""The default linear solver of a problem file without a ``solver:`` section.

The choice is the fastest permissively licensed solver measured for the kind of problem
(docs/benchmarks.md, "CPU: the default solver"):

- a structured grid whose operator is the design-scaled element matrices alone (no
  springs, no fixed physics part) and symmetric: femopt's geometric multigrid, in 3D above
  a few thousand free dofs and in 2D above ``MULTIGRID_MIN_DOFS_2D`` (below, or in 2D
  with CHOLMOD installed up to ``MULTIGRID_MIN_DOFS_2D_CHOLMOD``, a direct factorization is
  as fast and exact);
- a 3D mesh from a file, same conditions, above ``AMG_MIN_DOFS`` (``AMG_MIN_DOFS_CHOLMOD``
  with CHOLMOD installed): PCG with smoothed-aggregation AMG (its structure kept per mesh:
  on the bracket 0.11 s per iteration against SuperLU's 0.72 s at 9,000 free dofs and
  0.04 s against 0.06 s at 3,800; against CHOLMOD 0.34 s and 0.49 s at 31,000, 0.24 s and
  0.21 s at 20,000);
- everything else: the direct solver (CHOLMOD where the optional cvxopt is installed,
  else SciPy's SuperLU).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from femopt.solvers.base import LinearSolver

MULTIGRID_MIN_DOFS_3D = 3_000
MULTIGRID_MIN_DOFS_2D = 6_000
MULTIGRID_MIN_DOFS_2D_CHOLMOD = 100_000
AMG_MIN_DOFS = 3_000
AMG_MIN_DOFS_CHOLMOD = 25_000

log = logging.getLogger(__name__)


@dataclass
class SolverChoice:
    solver: LinearSolver
    reason: str  # why it was picked, for the run's log


def describe(solver: LinearSolver) -> str:
    """The solver as the log names it: ``direct (CHOLMOD)``, ``multigrid``..."""
    method = getattr(solver, "method", None)
    if solver.name == "direct" and method:
        return f"direct ({'CHOLMOD' if method == 'cholmod' else 'SuperLU'})"
    return solver.name


def _has_cholmod() -> bool:
    from femopt.solvers.direct import _cholmod

    return _cholmod() is not None


def pick_solver(mesh: Any, physics: Any, n_free: int, has_springs: bool,
                cholmod: bool | None = None) -> SolverChoice:
    """The default solver for ``physics`` on ``mesh`` with ``n_free`` free dofs;
    ``cholmod``: whether CHOLMOD counts as installed (None: whether it is; the GPU path,
    where the direct solver does not run, asks as if it were not)."""
    choice = _pick(mesh, physics, n_free, has_springs,
                   _has_cholmod() if cholmod is None else cholmod)
    log.info("default solver: %s", choice.reason)
    return choice


def _pick(mesh: Any, physics: Any, n_free: int, has_springs: bool,
          cholmod: bool) -> SolverChoice:
    from femopt.solvers.direct import DirectSolver

    plain = (physics.symmetric and not has_springs
             and physics.fixed_element_matrices() is None)
    where = f"a {mesh.dim}D {'grid' if mesh.grid is not None else 'mesh'} of {n_free:,} free dofs"
    log.debug("default solver for %s: symmetric %s, springs %s, fixed physics part %s",
              where, physics.symmetric, has_springs, not plain and physics.symmetric
              and not has_springs)
    if plain and mesh.grid is not None:
        if mesh.dim == 3:
            big = n_free >= MULTIGRID_MIN_DOFS_3D
        else:
            big = n_free >= (MULTIGRID_MIN_DOFS_2D_CHOLMOD if cholmod
                             else MULTIGRID_MIN_DOFS_2D)
        if big:
            from femopt.solvers.multigrid import MultigridSolver

            solver = MultigridSolver()
            try:
                solver.bind(mesh, physics.dofs_per_node)
            except ValueError as exc:  # a grid the multigrid cannot take: direct below
                log.info("multigrid cannot take this grid (%s); direct solver", exc)
            else:
                return SolverChoice(solver, f"geometric multigrid for {where}")
    amg_min = AMG_MIN_DOFS_CHOLMOD if cholmod else AMG_MIN_DOFS
    if plain and mesh.grid is None and mesh.dim == 3 and n_free >= amg_min:
        from femopt.solvers.amg import AMGSolver

        return SolverChoice(AMGSolver(), f"AMG-PCG for {where}")
    solver = DirectSolver()
    return SolverChoice(solver, f"{describe(solver)} for {where}")


def choice_line(model: Any) -> str | None:
    """The log line that names the default solver picked for ``model`` (None when the
    problem file chose one, or when the GPU path chose its own)."""
    choice = getattr(model, "solver_choice", None)
    if choice is None or model.device == "gpu" or choice.solver is not model.solver:
        return None
    return f"femopt: solver {choice.reason}, the default (set solver: to choose another)"
