"""Smoothed-aggregation AMG built once per mesh, refreshed per design; NumPy or CuPy.

Topology optimization changes the values of K at every design, never its pattern. The
aggregation is a structure decision: with the symmetric strength measure at theta = 0 every
entry of the pattern is a strong connection, so the aggregates (pyamg's standard
aggregation, on nodes for a block matrix) and the tentative prolongators T_l (pyamg's
``fit_candidates``: a QR of the near-null space per aggregate) depend on the mesh, the
supports and the near-null space alone. :func:`build_structure` makes them once (no
values needed: a coarse level aggregates on the graph of T^T A T); the coarse near-null
spaces come with them, and so do the sizes and patterns of every level.

Per design :meth:`SAHierarchy.update` recomputes only values, level by level:

    D_l       = diag(A_l)
    rho_l     ~ rho(D_l^-1 A_l)                 (a few Lanczos steps, warm-started)
    P_l       = T_l - (1.7 / rho_l) D_l^-1 A_l T_l   (one Jacobi step on T_l)
    A_l+1     = P_l^T A_l P_l                    (Galerkin)

and the coarsest operator's dense Cholesky factor (an aggregate with fewer free dofs than
near-null modes leaves a zero row on the coarse level, which gets a unit diagonal; the
pseudo-inverse by an eigendecomposition only where rounding leaves that level
indefinite). Coarsening stops at ``max_coarse`` rows: on the 1M-tet bracket a last
coarsening to 144 rows (24 aggregates) doubled the CG iterations of a coarsest level of
2,250 rows, whose factor takes a tenth of a second. Products of
sparse matrices are the namespace's own (SciPy's compiled SpGEMM, in BSR blocks on the
CPU; cuSPARSE through ``cupyx.scipy.sparse`` on the GPU); the patterns they produce are the
same at every design. On the GPU the products are instead
:class:`~femopt.solvers.fixed_spgemm.FixedGalerkin`'s, whose patterns are computed once
on the host: cuSPARSE's general SpGEMM would rediscover them at every design and ask for
work buffers of gigabytes. The cycle (V or W) smooths with Chebyshev polynomials in D^-1 A on
[rho/30, 1.1 rho] (matrix-vector products and vector updates only, so it runs as fast on a
GPU as a Gauss-Seidel sweep would not), the same polynomial before and after the coarse
correction, which keeps the preconditioner symmetric for CG. The hierarchy's values are
float32 by default: it is a preconditioner (CG itself runs in float64 and reaches its
tolerance in as many iterations), and every product and cycle moves half the bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from femopt.solvers.row_split import split_product, split_rows

# Jacobi weight of the prolongator smoother, over rho(D^-1 A): above the textbook 4/3,
# which minimizes the energy bound of a constant-coefficient operator; on SIMP designs of
# the bracket (docs/benchmarks.md) 1.7 takes some 8 to 13% fewer CG iterations in all
# (V-cycle (3, 3) at 1M tets: 21 to 32 per solve against 25 to 38), for at most one
# more of some ten on pyamg's constant-coefficient Poisson and elasticity matrices. The
# weight divides the Lanczos estimate of rho, which is from below: an estimate 2% low
# makes 1.73, still short of 2, where the step would stop damping the top modes
OMEGA = 1.7
CHEB_INTERVAL = (1.0 / 30.0, 1.1)  # the smoother's interval, as fractions of rho(D^-1 A)
LANCZOS_STEPS = 12
# Lanczos steps on every level of a hierarchy whose finest level has LARGE_ROWS rows or
# more: 12 steps underestimate rho there, and the smoother, tuned to [rho/30, 1.1 rho],
# amplifies the modes above (the 7.4M-tet bracket, 3.9M rows, H100: CG diverged at the
# first design with a V-cycle, 229 iterations at the third with the W-cycle; with 30
# steps 28 to 65 and 21 to 38, docs/benchmarks.md)
LANCZOS_STEPS_LARGE, LARGE_ROWS = 30, 2_000_000
# the cycle by default (the GPU's, amg.DEFAULT_CYCLE; the CPU solver passes its own):
# Chebyshev degrees on the finest level and on the coarser ones, V or W
DEGREE, CYCLE = (2, 3), "W"


def sparse_module(xp: Any) -> Any:
    """scipy.sparse for NumPy arrays, cupyx.scipy.sparse for CuPy ones."""
    if xp is np:
        import scipy.sparse as sp

        return sp
    import cupyx.scipy.sparse as csp

    return csp


def build_structure(matrix: Any, near_null: np.ndarray | None, max_coarse: int = 500,
                    max_levels: int = 10) -> list[Any]:
    """The tentative prolongators T_0, T_1, ... of ``matrix`` (host SciPy CSR or BSR; a BSR
    block is a node) for the near-null space ``near_null`` (n, m) (None: constants).

    Only the pattern matters: every entry is a strong connection (pyamg's symmetric
    strength at theta = 0). The next level aggregates on the graph of the tentative
    coarse operator T^T A T, that is aggregates that share a matrix entry; the smoothed
    Galerkin operator's pattern (pyamg's choice) links aggregates two apart as well,
    which makes few, huge aggregates on the second coarse level (on the 100k-tet bracket
    6,336 -> 144 rows and 46 CG iterations, against 6,336 -> 414 and 33 here). No values
    are needed: the structure costs one aggregation per level.
    """
    from pyamg.aggregation import fit_candidates, standard_aggregation
    from pyamg.strength import symmetric_strength_of_connection

    a = matrix
    b = np.ones((a.shape[0], 1)) if near_null is None else np.asarray(near_null, float)
    strength = symmetric_strength_of_connection(a, 0.0)
    rows, block = a.shape[0], (a.blocksize[0] if a.format == "bsr" else 1)
    ts: list[Any] = []
    while rows > max_coarse and len(ts) + 1 < max_levels:
        agg = standard_aggregation(strength)[0].tocsr()
        if agg.shape[1] == 0 or agg.shape[1] * b.shape[1] >= rows:
            break  # no coarsening left
        t, b = fit_candidates(agg, b)
        ts.append(t.tobsr(blocksize=(block, b.shape[1])))
        rows, block = agg.shape[1] * b.shape[1], b.shape[1]
        strength = (agg.T @ abs(strength) @ agg).tocsr()
        strength.data[:] = 1.0
    return ts


def _inv_diag(xp: Any, d: Any) -> Any:
    """1/d, 0 where d is 0 (a coarse dof no aggregate reaches)."""
    safe = xp.where(d != 0, d, 1.0)
    return xp.where(d != 0, 1.0 / safe, 0.0)


def _scale_rows(m: Any, s: Any) -> Any:
    """diag(s) @ m, keeping the format (BSR blocks stay blocks)."""
    out = m.copy()
    if m.format == "bsr":
        r = m.blocksize[0]
        rows = np.repeat(np.arange(m.shape[0] // r), np.diff(m.indptr))
        out.data *= s.reshape(-1, r)[rows][:, :, None]
        return out
    xp = np if isinstance(s, np.ndarray) else _cupy()
    rows = xp.searchsorted(m.indptr, xp.arange(m.nnz), side="right") - 1
    out.data *= s[rows]
    return out


def _cupy() -> Any:
    import cupy

    return cupy


def _smooth(t: Any, a: Any, dinv: Any, rho: float) -> Any:
    """P = T - (OMEGA / rho) D^-1 A T."""
    at = split_product(a, t) if isinstance(dinv, np.ndarray) else a @ t
    if a.format == "bsr":
        at = at.tobsr(blocksize=t.blocksize)
    return t - _scale_rows(at, dinv * (OMEGA / rho))


def lanczos_steps(rows: int) -> int:
    """Lanczos steps on every level of a hierarchy whose finest level has ``rows`` rows."""
    return LANCZOS_STEPS if rows < LARGE_ROWS else LANCZOS_STEPS_LARGE


def _spectral_radius(a: Any, dinv: Any, xp: Any, v0: Any, steps: int = LANCZOS_STEPS
                     ) -> tuple[float, Any]:
    """Largest eigenvalue of D^-1 A (and its Ritz vector, to warm-start the next call)
    by Lanczos on the symmetric D^-1/2 A D^-1/2."""
    s = xp.sqrt(dinv)
    n = a.shape[0]
    if v0 is None:
        v0 = xp.asarray(np.random.default_rng(0).random(n), dtype=a.dtype)
    v = v0 / float(xp.linalg.norm(v0))
    basis, alphas, betas = [], [], []
    v_prev, beta = None, 0.0
    for _ in range(min(steps, n)):
        basis.append(v)
        w = s * (a @ (s * v))
        alpha = float(xp.vdot(w, v))
        w = w - alpha * v - (beta * v_prev if v_prev is not None else 0.0)
        alphas.append(alpha)
        beta = float(xp.linalg.norm(w))
        if beta <= 1e-12 * abs(alpha):
            break
        betas.append(beta)
        v_prev, v = v, w / beta
    k = len(alphas)
    tri = np.diag(alphas) + np.diag(betas[:k - 1], 1) + np.diag(betas[:k - 1], -1)
    vals, vecs = np.linalg.eigh(tri)
    ritz = sum(float(c) * b for c, b in zip(vecs[:, -1], basis))
    return float(vals[-1]), ritz


def _cholesky(dense: Any, xp: Any) -> Any:
    """The lower Cholesky factor of the symmetric float64 ``dense``, or None where it is
    not positive definite."""
    if xp is np:
        from scipy.linalg import lapack

        c, info = lapack.dpotrf(dense, lower=1, clean=1)
        return c if info == 0 and bool(np.all(np.isfinite(c))) else None
    import cupyx

    try:  # cuSOLVER reports a failed factorization only when asked to raise
        with cupyx.errstate(linalg="raise"):
            c = xp.linalg.cholesky(dense)
    except np.linalg.LinAlgError:
        return None
    return c if bool(xp.all(xp.isfinite(c))) else None


def _cholesky_solve(c: Any, b: Any, xp: Any) -> Any:
    """L L^T x = b in float64, x in ``b``'s dtype."""
    if xp is np:
        from scipy.linalg import lapack

        x, _ = lapack.dpotrs(c, b.astype(np.float64), lower=1)
        return x.astype(b.dtype)
    from cupyx.scipy.linalg import solve_triangular

    y = solve_triangular(c, b.astype(xp.float64), lower=True)
    return solve_triangular(c, y, lower=True, trans="T").astype(b.dtype)


@dataclass
class Level:
    a: Any = None          # the operator of this level
    op: Any = None         # what the cycle multiplies by: a, or a row-split a (CPU)
    dinv: Any = None       # 1 / diag(a)
    rho: float = 1.0       # ~ rho(D^-1 a)
    ritz: Any = None       # the Lanczos start of the next design
    t: Any = None          # tentative prolongator to the next level (fixed)
    p: Any = None          # smoothed prolongator (values per design)
    pt: Any = None         # its transpose, the restriction
    p_op: Any = None       # what the cycle multiplies by: p and pt, or row-split (CPU)
    pt_op: Any = None


class SAHierarchy:
    """A smoothed-aggregation hierarchy with fixed structure on ``xp``.

    Args:
        prolongators: :func:`build_structure`'s tentative prolongators (host SciPy).
        xp: numpy or cupy. degree: the Chebyshev smoother's degree on the finest level
            and on the coarser ones. cycle: "V" or "W".
    """

    def __init__(self, prolongators: list[Any], xp: Any = np,
                 degree: tuple[int, int] = DEGREE, cycle: str = CYCLE,
                 dtype: Any = np.float32, fixed_products: bool | None = None):
        self.xp, self.sp, self.degree = xp, sparse_module(xp), degree
        self.dtype = dtype
        self.visits = 2 if cycle == "W" else 1  # coarse corrections per level
        # fixed-pattern products (the GPU's; with NumPy for tests), made on the first update
        self.fixed = xp is not np if fixed_products is None else fixed_products
        self.levels = [Level(t=None if self.fixed else self._to_device(t))
                       for t in prolongators] + [Level()]
        self.coarse_inv = self.coarse_chol = None
        self.host_t = list(prolongators)
        self.galerkin: list[Any] | None = None

    def _to_device(self, m: Any) -> Any:
        m = m.astype(self.dtype)
        if self.xp is np:
            return m
        return self.sp.csr_matrix(m.tocsr())

    def update(self, matrix: Any) -> None:
        """New values of the finest operator ``matrix`` (same pattern as before, same
        format as the structure was built for): recompute every level's values."""
        xp = self.xp
        if self.fixed:  # the values in the hierarchy's precision, no copy of the pattern
            self._update_fixed(matrix)
            return
        a = matrix if matrix.dtype == self.dtype else matrix.astype(self.dtype)
        steps = lanczos_steps(a.shape[0])  # the finest level's size decides for all
        for lev in self.levels[:-1]:
            lev.a = a
            lev.op = split_rows(a, xp)
            lev.dinv = _inv_diag(xp, a.diagonal())
            lev.rho, lev.ritz = _spectral_radius(lev.op, lev.dinv, xp, lev.ritz,
                                                 steps)
            lev.p = _smooth(lev.t, a, lev.dinv, lev.rho)
            lev.pt = lev.p.T
            if xp is not np:
                lev.pt = lev.pt.tocsr()
            elif lev.pt.format == "bsr":  # the transpose's blocks are strided views
                lev.pt.data = np.ascontiguousarray(lev.pt.data)
            lev.p_op, lev.pt_op = split_rows(lev.p, xp), split_rows(lev.pt, xp)
            a = (split_product(lev.pt, split_product(a, lev.p)) if xp is np
                 else lev.pt @ (a @ lev.p))
            if xp is np and lev.p.format == "bsr":
                a = a.tobsr(blocksize=(lev.p.blocksize[1],) * 2)
        self._coarsest(a)

    def _update_fixed(self, matrix: Any) -> None:
        """:meth:`update` by fixed-pattern products (CSR on every level)."""
        import scipy.sparse as sp

        from femopt.solvers.fixed_spgemm import FixedGalerkin

        xp = self.xp
        a = sp.csr_matrix(matrix) if xp is np else matrix
        if self.galerkin is None:
            indptr, indices = (a.indptr, a.indices) if xp is np else (a.indptr.get(),
                                                                    a.indices.get())
            # the finest pattern sorted by column once (a product's pattern is sorted
            # already): no later operation reorders a matrix whose values it indexes
            # (SciPy's compiled check; each entry's slot rides along a sort of the rows)
            pattern = sp.csr_matrix((np.arange(indices.size, dtype=np.float64),
                                     indices.copy(), indptr.copy()), shape=a.shape)
            self.finest_order = None
            if not pattern.has_sorted_indices:
                pattern.sort_indices()
                self.finest_order = xp.asarray(pattern.data.astype(np.int64))
            pattern.data[:] = 1.0
            self.finest_pattern = pattern
            if self.finest_order is None and xp is not np and (
                    matrix.indices.dtype == matrix.indptr.dtype == np.int32):
                from femopt.solvers.fixed_spgemm import share_device_index

                # the operator's own pattern on the device: no second copy
                share_device_index(pattern, xp, matrix.indices, matrix.indptr)
            self.galerkin = []
            for t in self.host_t:
                g = FixedGalerkin(pattern, t, xp, self.dtype)
                self.galerkin.append(g)
                pattern = g.ptap.pattern
        from femopt.solvers.fixed_spgemm import csr_on

        data = a.data if self.finest_order is None else a.data[self.finest_order]
        a = csr_on(self.finest_pattern, data.astype(self.dtype, copy=False), xp)
        steps = lanczos_steps(a.shape[0])  # the finest level's size decides for all
        for lev, g in zip(self.levels[:-1], self.galerkin):
            lev.a = a
            lev.op = split_rows(a, xp)
            lev.dinv = _inv_diag(xp, a.diagonal())
            lev.rho, lev.ritz = _spectral_radius(lev.op, lev.dinv, xp, lev.ritz,
                                                 steps)
            lev.p, lev.pt = g.prolongator(a.data, lev.dinv * (OMEGA / lev.rho))
            lev.p_op, lev.pt_op = split_rows(lev.p, xp), split_rows(lev.pt, xp)
            a = g.coarse(a.data, lev.p)
        self._coarsest(a)

    def _coarsest(self, a: Any) -> None:
        """The coarsest operator ``a`` and its solve: a Cholesky factor in float64 (a
        row no aggregate reaches is all zero: it gets a unit diagonal, and its right-hand
        side entry is zero), else, where rounding left ``a`` indefinite, its
        pseudo-inverse from a dense eigendecomposition (some 40x the factor's time at
        2,000 rows)."""
        xp = self.xp
        last = self.levels[-1]
        last.a = a
        dense = a.toarray().astype(xp.float64)
        dense = 0.5 * (dense + dense.T)
        self.coarse_inv = self.coarse_chol = None
        empty = xp.flatnonzero(~xp.any(dense != 0, axis=1))
        unit = dense.copy()
        unit[empty, empty] = 1.0
        self.coarse_chol = _cholesky(unit, xp)
        if self.coarse_chol is not None:
            return
        w, v = xp.linalg.eigh(dense)
        cut = float(xp.abs(w).max()) * 1e-12 if w.size else 0.0
        winv = xp.where(xp.abs(w) > cut, 1.0 / xp.where(w == 0, 1.0, w), 0.0)
        self.coarse_inv = ((v * winv) @ v.T).astype(self.dtype)

    def sizes(self) -> list[tuple[int, int]]:
        """(rows, stored entries) per level, finest first."""
        return [(int(lev.a.shape[0]), int(lev.a.nnz)) for lev in self.levels]

    def _chebyshev(self, lev: Level, b: Any, x: Any) -> Any:
        """``degree`` Chebyshev steps for A x = b in D^-1 A on [rho/30, 1.1 rho]."""
        lo, hi = CHEB_INTERVAL[0] * lev.rho, CHEB_INTERVAL[1] * lev.rho
        theta, delta = 0.5 * (hi + lo), 0.5 * (hi - lo)
        sigma = theta / delta
        r = b.copy() if x is None else b - lev.op @ x
        d = lev.dinv * r
        d /= theta
        x = d.copy() if x is None else x + d
        rk = 1.0 / sigma
        for _ in range(self.degree[lev is not self.levels[0]] - 1):
            r -= lev.op @ d
            rn = 1.0 / (2.0 * sigma - rk)
            # d = (rn rk) d + (2 rn / delta) D^-1 r, in place (the same values)
            d *= rn * rk
            t = lev.dinv * r
            t *= 2.0 * rn / delta
            d += t
            rk = rn
            x += d
        return x

    def precondition(self, r: Any) -> Any:
        """M^-1 r by one cycle, in the hierarchy's precision (r's dtype back)."""
        return self.vcycle(r.astype(self.dtype)).astype(r.dtype)

    def coarse_solve(self, b: Any) -> Any:
        """x = A_coarsest^-1 b (the pseudo-inverse where it is singular)."""
        if self.coarse_chol is None:
            return self.coarse_inv @ b
        return _cholesky_solve(self.coarse_chol, b, self.xp)

    def vcycle(self, b: Any, level: int = 0) -> Any:
        """One cycle (V or W) for A_level x = b from x = 0."""
        if level == len(self.levels) - 1:
            return self.coarse_solve(b)
        lev = self.levels[level]
        x = self._chebyshev(lev, b, None)
        visits = self.visits if level + 2 < len(self.levels) else 1
        for _ in range(visits):
            x += lev.p_op @ self.vcycle(lev.pt_op @ (b - lev.op @ x), level + 1)
        return self._chebyshev(lev, b, x)
