"""Pieces of the grid multigrid around its levels: its options, springs to ground on
the fine operator, a Galerkin level applied by products, the levels smoothed by fused
steps and the V-cycle over the levels, the design-independent bound of a level's
smoothing spectrum, and the direct solve of the coarsest level."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from femopt.assembly.matrix_free import diagonal
from femopt.assembly.structured_csr import CSROperator
from femopt.errors import SolverError
from femopt.plugins.registry import Options
from femopt.solvers import multigrid_transfer as transfer
from femopt.solvers.galerkin import child_matrices, descendant_scales


class MultigridOptions(Options):
    rtol: float = Field(1e-8, gt=0, lt=1)
    """Relative residual ||r|| / ||b|| at which CG stops; on the one-GPU grid path 1e-6
    unless set (the loosest that keeps the MBB beams' and top3d's references)."""
    max_iter: int = Field(500, gt=0)
    """Largest number of CG iterations per solve."""
    levels: int | None = Field(None, ge=1)
    """Largest number of grid levels (the finest counts); None: coarsen down to
    ``coarsest_size``."""
    coarsest_size: int = Field(5000, gt=0)
    """Stop coarsening at the first level with at most this many dofs."""
    coarse_operator: Literal["auto", "galerkin", "rediscretize", "hybrid"] = "auto"
    """Coarse operators: P^T A P (robust for SIMP contrast), rediscretized densities, or
    hybrid: level 1 rediscretized (matrix-free, an eighth of the fine cost), Galerkin of
    it below (on the GPU level 2 by products through level 1, CSR from level 3); auto:
    hybrid on the grid device path (one GPU) unless ``matrix_free_levels`` is set,
    galerkin elsewhere. On SIMP designs of contrast 1e-9 Galerkin never needed more CG
    iterations than the others and up to 15% fewer; hybrid 2.5% more than Galerkin at
    64x32x32, and through ``femopt run`` on an H100 at 33.5M cells 20% less time per
    design iteration (docs/benchmarks.md)."""
    rediscretized_levels: int = Field(1, ge=1)
    """Levels that ``hybrid`` rediscretizes (matrix-free), from level 1 down; Galerkin
    of the last of them below (on the GPU the next level by products). 2 took 7% to 15%
    more CG iterations on SIMP designs from 96x48x48 up, for level 3's CSR values on the
    GPU (about 2 B per cell of 3D elasticity; docs/benchmarks.md)."""
    matrix_free_levels: int | None = Field(None, ge=1)
    """Galerkin levels applied without assembling (the finest counts); None: 1 on the CPU,
    2 on the GPU."""
    smoother: Literal["jacobi", "chebyshev"] = "chebyshev"
    """Smoother: damped Jacobi or a Chebyshev polynomial of D^-1 A."""
    smoothing_steps: int = Field(2, ge=1)
    """Jacobi sweeps, or Chebyshev degree, before and after the coarse correction."""
    jacobi_omega: float = Field(4.0 / 3.0, gt=0, lt=2)
    """Jacobi damping as a multiple of 1 / lambda_max(D^-1 A) (estimated per level and
    design; 4/3 smooths the upper three quarters of the spectrum evenly, 2 diverges)."""
    chebyshev_lower: float = Field(0.1, gt=0, lt=1)
    """Lower end of the Chebyshev interval as a fraction of the largest eigenvalue."""
    eigenvalue_bound: Literal["element", "lanczos"] = "lanczos"
    """Largest eigenvalue of D^-1 A for the smoothers: a Lanczos estimate per design and
    level times 1.2, capped at the element bound (tight: fewer CG iterations), or the
    design-independent element bound alone (never too low, but loose). When a solve with
    the estimate fails, the solver switches to the bound for good and retries."""
    eig_iterations: int = Field(20, ge=2)
    """Lanczos (CG) steps of the ``lanczos`` estimate; on the one-GPU grid path 10 unless
    set (half the cost, no more CG iterations)."""
    precision: Literal["auto", "float64", "float32"] = "auto"
    """Arithmetic of the V-cycle; auto: float32 on the GPU and with ``krylov: mixed``,
    float64 otherwise."""
    krylov: Literal["auto", "mixed", "double"] = "auto"
    """Precision of the Krylov solve: ``mixed`` runs CG in float32 (with a float32
    V-cycle) inside a float64 defect correction that stops on the float64 residual, with
    a float64 solve where the float32 one stagnates; ``double`` runs CG in float64. auto:
    mixed on the GPU grid path (unless ``precision: float64``), double elsewhere."""

    @model_validator(mode="after")
    def _mixed_needs_float32(self) -> "MultigridOptions":
        if self.krylov == "mixed" and self.precision == "float64":
            raise ValueError("krylov: mixed runs a float32 V-cycle; it cannot take "
                             "precision: float64 (use krylov: double)")
        return self

def grid_levels(layout: Any, coarsest_size: int = 5000, levels: int | None = None) -> list:
    """The grids of a geometric multigrid hierarchy of ``layout`` (a ``GridLayout``):
    halved while a level has more than ``coarsest_size`` dofs and every axis an even
    number of cells, at most ``levels`` of them (None: no limit)."""
    out = [layout]
    while (out[-1].n_dofs > coarsest_size and out[-1].can_coarsen()
           and (levels is None or len(out) < levels)):
        out.append(out[-1].coarsened())
    return out


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


class GalerkinProduct:
    """A level's Galerkin operator D_c P^T A P D_c + (I - D_c) of the level above (A: the
    fine level's for galerkin's level 1, the rediscretized level 1's for hybrid's level 2)
    applied as three products: the coarse vector interpolated onto the level above, that
    level's own apply (on hex8 the Walsh kernel), and the restriction of the result. As
    galerkin's level 1 at 512x256x256 on an H100 it took 1.7 ms, where the cell-wise form
    (the children's scale factors and matrices in one gathering kernel) took 2.2 ms and a
    fine apply 0.85 (docs/benchmarks.md); it keeps nothing per cell. The diagonal, once per design, is the cell-wise one.

    Args:
        layout: this level's grid. fine: the level above's operator in the V-cycle's
            precision, without springs (they are the fine level's alone). free: this
            level's free dofs. work: two vectors of the level above that are idle while
            this level works (its V-cycle r and d). children: the children's matrices
            (``galerkin.child_matrices`` at ratio 2, host).
    """

    def __init__(self, layout: Any, fine: Any, free: Any, work: tuple[Any, Any],
                 children: np.ndarray):
        self.layout, self.fine, self.free, self.work = layout, fine, free, work
        self.children = children
        self.xp, self.dtype = fine.xp, fine.dtype
        self.shape = (layout.n_dofs, layout.n_dofs)

    def apply(self, u: Any, out: Any = None, alpha: float = 1.0, beta: float = 0.0,
              z: Any = None) -> Any:
        """``alpha A u + beta z`` (u zero on constrained dofs)."""
        pu, y = self.work
        if out is None:
            out = self.xp.empty_like(u)
        transfer.prolong_into(self.layout, u, pu)
        self.fine.apply(pu, out=y, alpha=alpha)
        if z is None or beta == 0.0:
            return transfer.restrict_into(self.layout, y, out, self.free)
        if out is not z:
            self.xp.multiply(z, out.dtype.type(beta), out=out)
        elif beta != 1.0:
            out *= out.dtype.type(beta)
        return transfer.restrict_into(self.layout, y, out, self.free, accumulate=True)

    def __matmul__(self, u: Any) -> Any:
        return self.apply(u)

    def diagonal(self) -> Any:
        scales = descendant_scales(self.fine.layout, self.fine.scale, 2)
        return diagonal(self.layout, scales, self.children, self.free)


def fused_levels(coarse_operator: str, rediscretized: int, n_levels: int,
                 n_mf: int) -> set[int]:
    """The levels smoothed by their operator's fused steps (``StructuredOperator.smooth``:
    each step's residual formed in the apply, no residual vector held) in a hierarchy of
    ``n_levels`` whose first ``n_mf`` are matrix-free: the fine level and the
    rediscretized ones (``rediscretized`` of them under hybrid), but for the one above a
    Galerkin product level, whose r and d the products take as work space."""
    last = n_levels - 1
    if coarse_operator == "rediscretize":
        structured, product = set(range(last)), set()
    elif coarse_operator == "hybrid":
        structured = set(range(min(rediscretized + 1, last)))
        product = {rediscretized + 1} if rediscretized + 1 < min(n_mf, last) else set()
    else:
        structured = {0} if last > 0 else set()
        product = {1} if 1 < min(n_mf, last) else set()
    return structured - {i - 1 for i in product}


def vcycle(levels: list, i: int, b: Any, x: Any) -> None:
    """x = one V-cycle from level ``i`` of ``levels`` (``multigrid.Level``) applied to b:
    pre-smoothing from x = 0, the residual restricted, the coarse correction, post-
    smoothing; a level without a residual vector (:func:`fused_levels`) forms its
    smoothing residuals in its applies and the one it restricts in d."""
    lev = levels[i]
    if lev.coarse_solve is not None:
        x[...] = lev.coarse_solve(b)
        return
    nxt = levels[i + 1]
    fused = lev.r is None
    if fused:  # its first step writes x (no pass of zeros)
        lev.smoother.run_fused(x, b, lev.d, zero_start=True)
        lev.op.apply(x, out=lev.d, alpha=-1.0, beta=1.0, z=b)
    else:
        x[...] = 0
        lev.r[...] = b
        lev.smoother.run(x, lev.r, lev.d, want_residual=True)
    transfer.restrict_into(nxt.layout, lev.d if fused else lev.r, nxt.b, nxt.free)
    vcycle(levels, i + 1, nxt.b, nxt.x)
    transfer.prolong_add(nxt.layout, nxt.x, x)
    if fused:
        lev.smoother.run_fused(x, b, lev.d, zero_start=False)
        return
    lev.op.apply(x, out=lev.r, alpha=-1.0, beta=1.0, z=b)
    lev.smoother.run(x, lev.r, lev.d, want_residual=False)


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
    """Direct solve of the coarsest level: SuperLU (NumPy); on CuPy the explicit inverse
    from a dense Cholesky factor (each V-cycle's solve is then one matrix-vector
    product: 0.15 ms on an H100 at 4,131 dofs, where two triangular solves took 1.5), or a
    dense LU where rounding leaves the coarsest operator of a nearly void design
    indefinite (as SuperLU without pivoting does on the host)."""

    def __init__(self, op: CSROperator, xp: Any):
        self.xp = xp
        self.inverse = self.lu = None
        if xp is np:
            import scipy.sparse.linalg as spla

            mat = op.pattern.matrix(op.data.astype(np.float64)).tocsc()
            self.lu = spla.splu(mat, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                                options=dict(SymmetricMode=True))
            return
        import cupyx
        from cupyx.scipy.linalg import lu_factor

        dense = op.to_dense().astype(xp.float64)
        try:  # cuSOLVER reports a failed factorization only when asked to raise
            with cupyx.errstate(linalg="raise"):
                chol = xp.linalg.cholesky(dense)
        except np.linalg.LinAlgError:
            chol = None
        if chol is not None and bool(xp.all(xp.isfinite(chol))):
            del dense
            from cupyx.scipy.linalg import solve_triangular

            # the identity's transpose is Fortran-ordered: the solve may overwrite it
            lower = solve_triangular(chol, xp.eye(chol.shape[0]).T, lower=True,
                                     overwrite_b=True)
            self.inverse = solve_triangular(chol, lower, lower=True, trans="T",
                                            overwrite_b=True)
            return
        self.lu = lu_factor(dense, check_finite=False)
        u_diag = xp.diagonal(self.lu[0])
        if not (bool(xp.all(xp.isfinite(self.lu[0]))) and bool(xp.all(u_diag != 0))):
            raise SolverError("multigrid: the coarsest operator is singular")

    def __call__(self, b: Any) -> Any:
        if self.xp is np:
            return self.lu.solve(b.astype(np.float64)).astype(b.dtype)
        from cupyx.scipy.linalg import lu_solve

        if self.inverse is None:
            return lu_solve(self.lu, b.astype(self.xp.float64)).astype(b.dtype)
        return (self.inverse @ b.astype(self.xp.float64)).astype(b.dtype)
