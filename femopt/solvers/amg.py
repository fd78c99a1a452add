"""PCG preconditioned by algebraic multigrid (pyamg's smoothed aggregation), CPU.

For meshes without grid structure, where geometric multigrid does not apply. The
aggregation gets the operator's near-null space: the rigid-body modes of elasticity
(translations and rotations of the free dofs' nodes) or the constants of a scalar field;
without them smoothed aggregation converges poorly on elasticity. The hierarchy is built
once per matrix and kept, so the adjoint solves reuse it.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field

from femopt.plugins.registry import Options
from femopt.solvers.pcg import CGInfo, PCGSolver


class AMGOptions(Options):
    rtol: float = Field(1e-8, gt=0, lt=1)
    """Relative residual at which CG stops."""
    max_iter: int = Field(500, gt=0)
    """Largest number of CG iterations per solve."""
    cycle: Literal["V", "W"] = "V"
    """Multigrid cycle of one preconditioner application."""
    max_coarse: int = Field(500, gt=0)
    """Largest system solved directly at the coarsest level."""


def near_null_space(points: np.ndarray, dofs_per_node: int) -> np.ndarray:
    """(n_nodes * k, m) rigid-body modes of the nodes (k = dim) or constants (k = 1)."""
    from femopt.physics.rigid_modes import rigid_body_modes

    n, dim = points.shape
    if dofs_per_node == dim:
        return rigid_body_modes(points)
    return np.kron(np.ones((n, 1)), np.eye(dofs_per_node))


class AMGSolver(PCGSolver):
    """CG with a smoothed-aggregation AMG preconditioner (pyamg) built once per matrix."""

    name = "amg"
    summary = "PCG with algebraic multigrid (pyamg smoothed aggregation), CPU"
    Options = AMGOptions
    label = "AMG-PCG"

    def __init__(self, options: AMGOptions | None = None):
        try:
            import pyamg  # noqa: F401
        except ImportError:
            raise ValueError("solver 'amg' needs pyamg (pip install pyamg)") from None
        self.options = options or AMGOptions()
        self.points: np.ndarray | None = None
        self.dofs_per_node = 1
        self.free: np.ndarray | None = None
        self.hierarchy: Any = None
        self.matrix = None
        self.last = CGInfo()

    def bind(self, mesh: Any, dofs_per_node: int) -> None:
        self.points = np.asarray(mesh.points)
        self.dofs_per_node = dofs_per_node

    def update_operator(self, scale: Any, assembler: Any, ke: Any) -> None:
        self.free = assembler.free
        self.update(assembler.assemble(scale, ke))

    def update(self, matrix) -> None:
        import pyamg

        self.matrix = matrix.tocsr()
        b = self._near_null_space(matrix.shape[0])
        self.hierarchy = pyamg.smoothed_aggregation_solver(
            self.matrix, B=b, max_coarse=self.options.max_coarse,
            symmetry="symmetric")
        self._precond = self.hierarchy.aspreconditioner(cycle=self.options.cycle)

    def _near_null_space(self, n: int):
        """The modes on the free dofs, built once: the nodes and free dofs never change."""
        cached = getattr(self, "_null", None)
        if cached is not None and cached.shape[0] == n:
            return cached
        if self.points is None:
            return None
        b = near_null_space(self.points, self.dofs_per_node)
        if self.free is not None and b.shape[0] != n:
            b = b[self.free]
        self._null = b if b.shape[0] == n else None
        return self._null

    def precondition(self, r):
        return self._precond.matvec(r)

    def stats(self) -> dict:
        return {"cg_iterations": self.last.iterations,
                "amg_levels": len(self.hierarchy.levels) if self.hierarchy else 0}
