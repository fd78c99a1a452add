"""Pieces of the grid multigrid around its levels: springs to ground on the fine
operator, the design-independent bound of a level's smoothing spectrum, and the direct
solve of the coarsest level."""

from __future__ import annotations

from typing import Any

import numpy as np

from femopt.assembly.structured_csr import CSROperator
from femopt.errors import SolverError
from femopt.solvers.galerkin import child_matrices


class SpringOperator:
    """``op`` plus springs to ground: A u + diag(k) u at the dofs ``idx`` (a few)."""

    def __init__(self, op: Any, idx: Any, k: np.ndarray):
        self.op, self.idx = op, idx
        self.xp = op.xp
        self.k = self.xp.asarray(k, dtype=op.dtype)
        self.dtype, self.shape = op.dtype, op.shape

    def apply(self, u: Any, out: Any = None, alpha: float = 1.0, beta: float = 0.0,
              z: Any = None) -> Any:
        y = self.op.apply(u, out=out, alpha=alpha, beta=beta, z=z)
        y[self.idx] += (alpha * self.k) * u[self.idx]
        return y

    def __matmul__(self, u: Any) -> Any:
        return self.apply(u)

    def diagonal(self) -> Any:
        d = self.op.diagonal().copy()
        d[self.idx] += self.k
        return d


def with_springs(op: Any, springs: tuple[Any, np.ndarray] | None) -> Any:
    return op if springs is None else SpringOperator(op, *springs)


def eigenvalue_bound(ke: np.ndarray, dim: int, k: int, ratio: int) -> float:
    """An upper bound of lambda_max(D^-1 A) on a level ``ratio`` times coarser than K0's.

    For A = sum_e A_e with A_e positive semidefinite and D = sum_e diag(A_e),
    x^T A x <= max_e lambda_max(diag(A_e)^-1 A_e) x^T D x. A Galerkin level splits into the
    fine cells seen through the interpolation, G_f (one per position f of a fine cell in
    a coarse one), so the bound is design-independent (a principal submatrix, for the
    constraints, only lowers it). Beyond ratio 8 the positions are sampled at ratio 8 and
    the bound gets a 10% margin: the maximum over positions converges (5.3, 6.5, 8.7, 9.3
    for 3D elasticity at ratios 1, 2, 4, 8).
    """
    r = min(ratio, 8)
    g = child_matrices(ke, dim, k, r)
    diag = np.diagonal(g, axis1=1, axis2=2)
    lam = float(np.linalg.eigvals(g / diag[:, :, None]).real.max())
    return lam * (1.1 if ratio > r else 1.0)


class CoarseSolver:
    """Direct solve of the coarsest level: SuperLU (NumPy) or dense Cholesky (CuPy)."""

    def __init__(self, op: CSROperator, xp: Any):
        self.xp = xp
        if xp is np:
            import scipy.sparse.linalg as spla

            mat = op.pattern.matrix(op.data.astype(np.float64)).tocsc()
            self.lu = spla.splu(mat, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                                options=dict(SymmetricMode=True))
        else:
            import cupyx.scipy.linalg  # noqa: F401  (solve_triangular)

            dense = op.to_dense().astype(xp.float64)
            self.chol = xp.linalg.cholesky(dense)
            if not bool(xp.all(xp.isfinite(self.chol))):
                raise SolverError("multigrid: the coarsest operator is not positive definite")

    def __call__(self, b: Any) -> Any:
        if self.xp is np:
            return self.lu.solve(b.astype(np.float64)).astype(b.dtype)
        from cupyx.scipy.linalg import solve_triangular

        y = solve_triangular(self.chol, b.astype(self.xp.float64), lower=True)
        return solve_triangular(self.chol, y, lower=True, trans="T").astype(b.dtype)
