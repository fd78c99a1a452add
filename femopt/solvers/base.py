"""The solver interface shared by the forward and the adjoint solves."""

from __future__ import annotations

from typing import Any, ClassVar

from femopt.plugins.registry import Component


class LinearSolver(Component):
    """Solves K x = b for one operator, reusing what it built for later solves.

    ``update(K)`` hands it a new matrix (same pattern) and rebuilds its factorization or
    preconditioner; ``solve(b, transpose=False)`` solves with K or K^T for one right-hand
    side (n,) or several (n, k). The adjoint module calls ``solve`` on the same object.
    """

    symmetric_only: ClassVar[bool] = False

    def bind(self, mesh: Any, dofs_per_node: int) -> None:
        """Called once by the model before the first solve with the mesh the operator
        lives on; solvers that use grid structure (geometric multigrid) keep it. Raises
        ValueError when the solver cannot work on this mesh."""

    def set_near_null_space(self, modes: Any) -> None:
        """Called by the model with a callable giving the (n_dofs, m) null space of the
        unconstrained operator (the physics' rigid modes); algebraic multigrid keeps it
        for its aggregation, other solvers ignore it."""

    def update_operator(self, scale: Any, assembler: Any, ke: Any) -> None:
        """New design: the operator is sum_e scale_e K0_e restricted to the free dofs.

        Assembled solvers build the matrix with ``assembler`` and call :meth:`update`;
        matrix-free solvers (multigrid on structured grids) override this and use
        ``scale`` directly.
        """
        self.update(assembler.assemble(scale, ke))

    def require_nonsymmetric(self) -> None:
        """The physics' operator is not symmetric: switch to a non-symmetric method, or
        raise ValueError (the model locates it at the solver section)."""
        if self.symmetric_only:
            raise ValueError(f"solver '{self.name}' needs a symmetric system; this physics "
                             "is not symmetric (use type: direct)")

    def update(self, matrix: Any) -> None:
        raise NotImplementedError

    def solve(self, b: Any, transpose: bool = False, x0: Any = None) -> Any:
        raise NotImplementedError

    def stats(self) -> dict:
        """Counters for the log (e.g. CG iterations of the last solve)."""
        return {}
