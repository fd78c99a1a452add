"""Sparse direct solver that keeps its LU factorization for adjoint and repeated solves."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from typing import Literal

from pydantic import Field

from femopt.errors import SolverError
from femopt.plugins.registry import Options
from femopt.solvers.base import LinearSolver


class DirectOptions(Options):
    method: Literal["auto", "cholmod", "superlu"] = "auto"
    """Factorization: CHOLMOD sparse Cholesky (SPD systems, through cvxopt: the optional
    `cholmod` extra, GPL-3.0), SciPy's SuperLU, or auto (CHOLMOD when the system is
    symmetric and cvxopt is installed, else SuperLU)."""
    symmetric: bool = True
    """The system is symmetric positive definite (stiffness, conductivity)."""
    check_residual: float = Field(1e-6, gt=0)
    """Largest relative residual accepted before the solve is reported as failed."""


def _cholmod():
    try:
        from cvxopt import cholmod

        return cholmod
    except ImportError:
        return None


class _Cholmod:
    """CHOLMOD factors of an SPD matrix. The symbolic analysis (ordering, elimination
    tree) depends only on the sparsity pattern, which is fixed during an optimization, so
    it is done once and each update is a numeric refactorization."""

    def __init__(self, cholmod):
        self.cholmod = cholmod
        self.symbolic = None
        self.pattern = None

    def factor(self, matrix) -> None:
        from cvxopt import matrix as cvx_matrix, spmatrix

        csr = matrix.tocsr()
        if self.pattern is None or not (csr.indices is self.pattern[0]
                                        or np.array_equal(csr.indices, self.pattern[0])):
            # lower triangle of a fixed pattern: which data entries, at which (row, col)
            rows = np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr))
            self.lower = np.flatnonzero(csr.indices <= rows)
            self.rows = cvx_matrix(rows[self.lower].astype(np.int32), tc="i")
            self.cols = cvx_matrix(csr.indices[self.lower].astype(np.int32), tc="i")
            self.symbolic = None
            self.pattern = (csr.indices, csr.shape)
        a = spmatrix(cvx_matrix(csr.data[self.lower].astype(float)), self.rows, self.cols,
                     size=csr.shape)
        if self.symbolic is None:
            self.symbolic = self.cholmod.symbolic(a, uplo="L")
        try:
            self.cholmod.numeric(a, self.symbolic)
        except ArithmeticError as exc:
            raise SolverError("direct factorization failed: the matrix is singular or not "
                              f"positive definite (CHOLMOD status {exc})") from exc

    def solve(self, b: np.ndarray) -> np.ndarray:
        from cvxopt import matrix as cvx_matrix

        rhs = cvx_matrix(np.asfortranarray(b.reshape(b.shape[0], -1), dtype=float))
        self.cholmod.solve(self.symbolic, rhs)
        return np.array(rhs).reshape(b.shape)


class DirectSolver(LinearSolver):
    """Sparse Cholesky (CHOLMOD) or LU (SuperLU) kept between forward and adjoint solves;
    ``solve(b, transpose=True)`` uses the same factors."""

    name = "direct"
    summary = "Sparse Cholesky (CHOLMOD) or LU (SuperLU), kept for the adjoint solves"
    Options = DirectOptions

    def __init__(self, options: DirectOptions | None = None, matrix=None):
        self.options = options or DirectOptions()
        self.lu = None
        self.chol: _Cholmod | None = None
        self.matrix = None
        self.factorizations = 0
        method = self.options.method
        if method != "superlu":
            cholmod = _cholmod()
            if method == "cholmod" and cholmod is None:
                raise ValueError("method 'cholmod' (sparse Cholesky of a symmetric positive "
                                 "definite system) needs cvxopt, an optional GPL-3.0 package: "
                                 "pip install 'femopt[cholmod]', or use method: superlu")
            if method == "cholmod" and not self.options.symmetric:
                raise ValueError("method 'cholmod' needs a symmetric system")
            if cholmod is not None and self.options.symmetric:
                self.chol = _Cholmod(cholmod)
        if matrix is not None:
            self.update(matrix)

    def require_nonsymmetric(self) -> None:
        """LU with SuperLU and a column ordering for a general matrix; an explicit
        ``symmetric: true`` or ``method: cholmod`` is a contradiction and refused."""
        if self.options.method == "cholmod":
            raise ValueError("method 'cholmod' needs a symmetric system; this physics is "
                             "not symmetric (use method: superlu or auto)")
        if self.options.symmetric and "symmetric" in self.options.model_fields_set:
            raise ValueError("symmetric: true, but this physics is not symmetric "
                             "(leave it out or set symmetric: false)")
        self.options = self.options.model_copy(update={"symmetric": False})
        self.chol = None

    @property
    def method(self) -> str:
        return "cholmod" if self.chol is not None else "superlu"

    def update(self, matrix) -> None:
        if self.chol is not None:
            self.chol.factor(matrix)
            self.matrix = matrix
            self.factorizations += 1
            return
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
        if self.matrix is None:
            raise SolverError("solve() called before a matrix was factorized")
        b = np.asarray(b, dtype=float)
        if self.chol is not None:  # symmetric: the transpose solve is the same solve
            x = self.chol.solve(b)
        else:
            x = self.lu.solve(b, trans="T" if transpose else "N")
        if not np.all(np.isfinite(x)):
            raise SolverError("direct solve produced non-finite values (singular system?)")
        a = self.matrix.T if transpose else self.matrix
        res = np.linalg.norm(a @ x - b) / max(np.linalg.norm(b), 1e-300)
        if res > self.options.check_residual:
            raise SolverError(f"direct solve residual {res:.3g} is above "
                              f"{self.options.check_residual:g} (singular or ill-conditioned)")
        return x
