"""Sparse direct solver that keeps its LU factorization for adjoint and repeated solves."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from pydantic import Field

from femopt.errors import SolverError
from femopt.plugins.registry import Options
from femopt.solvers.base import LinearSolver


class DirectOptions(Options):
    symmetric: bool = True
    """Use a symmetric fill-reducing ordering and diagonal pivoting (for SPD systems)."""
    check_residual: float = Field(1e-6, gt=0)
    """Largest relative residual accepted before the solve is reported as failed."""


class DirectSolver(LinearSolver):
    """SuperLU factorization; ``solve(b, transpose=True)`` uses the same factors."""

    name = "direct"
    summary = "Sparse LU (SuperLU) kept between the forward and adjoint solves"
    Options = DirectOptions

    def __init__(self, options: DirectOptions | None = None, matrix=None):
        self.options = options or DirectOptions()
        self.lu = None
        self.matrix = None
        self.factorizations = 0
        if matrix is not None:
            self.update(matrix)

    def update(self, matrix) -> None:
        csc = matrix.tocsc() if not sp.isspmatrix_csc(matrix) else matrix
        if self.options.symmetric:
            # symmetric ordering on A + A^T and diagonal pivots: SPD stiffness needs no
            # row interchanges, and the ordering keeps the fill close to a Cholesky's
            kw = dict(permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                      options=dict(SymmetricMode=True))
        else:
            kw = dict(permc_spec="COLAMD")
        try:
            self.lu = spla.splu(csc, **kw)
        except RuntimeError as exc:  # "Factor is exactly singular"
            raise SolverError(f"direct factorization failed: {exc}") from exc
        self.matrix = matrix
        self.factorizations += 1

    def solve(self, b, transpose: bool = False, x0=None):
        if self.lu is None:
            raise SolverError("solve() called before a matrix was factorized")
        x = self.lu.solve(np.asarray(b, dtype=float), trans="T" if transpose else "N")
        if not np.all(np.isfinite(x)):
            raise SolverError("direct solve produced non-finite values (singular system?)")
        a = self.matrix.T if transpose else self.matrix
        res = np.linalg.norm(a @ x - b) / max(np.linalg.norm(b), 1e-300)
        if res > self.options.check_residual:
            raise SolverError(f"direct solve residual {res:.3g} is above "
                              f"{self.options.check_residual:g} (singular or ill-conditioned)")
        return x
