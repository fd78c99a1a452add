"""Geometric multigrid preconditioned CG on slabs (:mod:`femopt.parallel.slabs`).

The same hierarchy, smoothers and coarse operators as :class:`femopt.solvers.multigrid.
MultigridSolver` on the CPU (Galerkin coarse levels, the fine level matrix-free,
Chebyshev or Jacobi smoothing with Lanczos eigenvalue estimates, a direct solve of the
coarsest level), written for a rank's slab of each level:

- the fine level's operator is the matrix-free apply of the kept cells, its products
  K0 u_e one GEMM per cell layer (so that each product is computed with the same BLAS
  call on any rank count), then a halo exchange;
- a coarse level's Galerkin cell matrices are computed per slab (coarse cell j on the
  rank owning fine cell 2j + 1) and assembled into a CSR matrix of the slab's kept
  nodes, whose owned rows are complete;
- the first ``distributed`` levels are cut like the fine one (their slab bounds halve
  level by level); the levels below are gathered and replicated on every rank, down to
  the coarsest, which every rank solves whole (SuperLU) -- the agglomeration;
- CG's and Lanczos' dot products are :meth:`Slab.dots`: per-layer sums added in global
  layer order.

On the GPU (the slabs' ``xp`` CuPy) the vectors, the coarse levels' CSR matrices and the
replicated levels live on the device; the fine level's operator is the single-GPU path's
apply kernel (:class:`~femopt.assembly.matrix_free.StructuredOperator`) on the slab's
kept cells, and the coarsest level a dense Cholesky factor on every GPU.

Every vector keeps its ghost layers filled: operators exchange after applying,
element-wise updates keep them, transfers fill them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from femopt.assembly.grid_layout import GridLayout
from femopt.assembly.structured_csr import CSROperator, StructuredCSR
from femopt.backend.threads import single_blas_thread
from femopt.errors import SolverError
from femopt.parallel import slabs as sl
from femopt.parallel.operators import FineOperator, SlabCSR, layer_matmul
from femopt.parallel.slab_conditions import coarse_fixed_index, kept_mask, kept_normal
from femopt.parallel.slabs import Slab
from femopt.solvers.galerkin import child_matrices, coarsen_cell_matrices, descendant_scales
from femopt.solvers.multigrid import LANCZOS_MARGIN
from femopt.solvers.multigrid_levels import CoarseSolver, MultigridOptions, eigenvalue_bound
from femopt.solvers.pcg import CGInfo
from femopt.solvers.smoothers import InverseDiagonal, PolynomialSmoother, lanczos_largest


# CG takes r.r whole where its estimate is within CHECK_NEAR of the tolerance (relative
# residual), within ANCHOR_FLOOR of the last r.r taken whole, or within DRIFT_MARGIN of
# its accumulated rounding bound, ROUNDING of the terms' sizes a step
# (SlabMultigrid._pcg)
CHECK_NEAR = 10.0
ANCHOR_FLOOR = 1e-8
ROUNDING = 1e-15
DRIFT_MARGIN = 100.0


@dataclass
class Level:
    slab: Slab
    fixed: np.ndarray  # kept nodes' constrained dofs
    free: np.ndarray
    pattern: StructuredCSR | None = None
    op: Any = None
    smoother: Any = None
    coarse_solve: Any = None
    probe: np.ndarray | None = None  # Lanczos start vector (kept dofs)
    b: Any = None
    x: Any = None
    r: Any = None
    d: Any = None


class SlabMultigrid:
    """MG-preconditioned CG of one grid (internal order) cut into ``bounds`` on
    ``comm``, with ``distributed`` V-cycle levels cut likewise (the rest replicated).

    Args:
        options: the multigrid section's options (``coarse_operator`` galerkin).
        levels: the hierarchy of the whole grid in internal order, finest first, as
            :func:`~femopt.solvers.multigrid_levels.grid_levels` coarsens (the rank plan's,
            :attr:`~femopt.parallel.partition.RankPlan.levels`).
        ke: K0 in internal corner order.
        fine: the fine level's slab (CG's vectors live there).
        distributed: how many V-cycle levels are cut (0: the fine level is also the
            coarsest, solved whole).
    """

    def __init__(self, options: MultigridOptions, levels: Sequence[GridLayout],
                 ke: np.ndarray, fine: Slab, distributed: int):
        self.options = options
        self.layouts = list(levels)
        self.layout = self.layouts[0]
        self.ke, self.fine = np.asarray(ke, dtype=np.float64), fine
        self.xp = fine.xp
        self.n_distributed = distributed
        self.dtype = np.float32 if options.precision == "float32" else np.float64
        self.levels: list[Level] = []
        self.last = CGInfo()
        self.fell_back = False
        self._fixed_seen = None
        self._springs_full: tuple[np.ndarray, np.ndarray] | None = None
        self.op64: FineOperator | None = None
        n = len(self.layouts)
        self._bounds = [eigenvalue_bound(self.ke, self.layout.dim, self.layout.k, 2**i)
                        for i in range(n)]

    # -- set-up --------------------------------------------------------------------------

    def slab_of(self, i: int) -> Slab:
        if i < self.n_distributed:
            return Slab(self.layouts[i], self.fine.comm, [b >> i for b in self.fine.bounds],
                        xp=self.xp, label=f"level {i}")
        return Slab.replicated(self.layouts[i], self.xp)

    def _build(self, fixed: np.ndarray) -> None:
        """Levels of the constrained dofs ``fixed`` (sorted internal grid-layout positions
        on the whole fine grid): each level's slab keeps its part only."""
        rng = np.random.default_rng(0)
        levels = []
        index = fixed
        for i, lay in enumerate(self.layouts):
            if i:
                index = coarse_fixed_index(self.layouts[i - 1], index)
            slab = self.slab_of(i)
            f = kept_mask(slab, index)
            lev = Level(slab, f, ~f)
            n = slab.local.n_dofs
            lev.b, lev.x, lev.r, lev.d = (self.xp.zeros(n, dtype=self.dtype)
                                          for _ in range(4))
            if i > 0 or i == len(self.layouts) - 1:
                lev.pattern = StructuredCSR(slab.local, f)
            lev.probe = kept_normal(rng, slab, self.dtype) * lev.free
            levels.append(lev)
        self.levels = levels
        self.fine_fixed = kept_mask(self.fine, fixed)
        self.fine_free = ~self.fine_fixed

    def update(self, scale: np.ndarray, fixed: np.ndarray,
               springs: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """A new design: ``scale`` on the fine slab's kept cells; ``fixed`` the whole
        grid's constrained dofs (sorted internal grid-layout positions; the hierarchy is
        rebuilt when the object changes); ``springs`` (kept-dof indices, stiffness) on the fine level."""
        with single_blas_thread(np):  # one rank per core: no BLAS thread pool on top
            self._update(scale, fixed, springs)

    def _update(self, scale, fixed, springs) -> None:
        if fixed is not self._fixed_seen:
            self._build(fixed)
            self._fixed_seen = fixed
        self.op64 = FineOperator(self.fine, scale.astype(np.float64), self.ke,
                                 self.fine_free, springs)
        levels = self.levels
        cells = None  # per-cell data of the previous level (its slab's kept cells)
        for i, lev in enumerate(levels):
            if i == 0:
                s0 = scale.astype(self.dtype)
                if lev.pattern is None:  # matrix-free (the V-cycle's copy)
                    lev.op = (self.op64 if self.dtype == np.float64 else
                              FineOperator(self.fine, s0, self.ke, self.fine_free, springs))
                    cells = s0
                    continue
                # the fine level is the coarsest: whole on every rank
                full = self.fine.gather_cells(s0[self.fine.own_cell_slice])
                ke = self.xp.asarray(self.ke, dtype=self.dtype)
                cells = full[:, None, None] * ke[None]
            elif i == 1:
                child = child_matrices(self.ke, self.layout.dim, self.layout.k, 2).astype(
                    self.dtype)
                nd = self.ke.shape[0]
                g = self.xp.asarray(child.reshape(child.shape[0], nd * nd))

                def galerkin(sub_layout, sub, g=g, nd=nd):
                    s = descendant_scales(sub_layout, sub, 2)
                    p = int(np.prod(sub_layout.coarsened().shape[:-1]))
                    return layer_matmul(s, g, p, left=False).reshape(-1, nd, nd)

                cells = sl.coarse_cells(levels[0].slab, lev.slab, galerkin, cells,
                                        (nd, nd))
            else:
                cells = sl.coarse_cells(levels[i - 1].slab, lev.slab,
                                        lambda sub_layout, sub: coarsen_cell_matrices(
                                            sub_layout, sub), cells,
                                        (self.ke.shape[0],) * 2)
            data = lev.pattern.assemble_data(cells)
            if i == 0 and self._springs_full is not None:
                # springs on the whole fine level (the coarsest here), on every rank
                idx, k = self._springs_full
                data[lev.pattern.diag_slot[self.xp.asarray(idx)]] += self.xp.asarray(
                    k, dtype=data.dtype)
            op = CSROperator(lev.pattern, data)
            lev.op = SlabCSR(lev.slab, op)
            if i == len(levels) - 1:
                lev.coarse_solve = CoarseSolver(op, self.xp)
        self._make_smoothers()

    def _make_smoothers(self) -> None:
        o = self.options
        levels = self.levels[:-1]
        inv_ds, bad = [], []
        for lev in levels:
            d = lev.op.diagonal()
            own = lev.slab.layers(d)[:, lev.slab.own_node_slice]
            bad.append(not bool(self.xp.all(own > 0)))  # NaN too
            # bfloat16 where the V-cycle is float32, as one GPU's (MultigridSolver)
            inv_ds.append(InverseDiagonal.of(d, self.dtype))
        # one reduction for the distributed levels (one communicator), then each level's
        # own where one of them failed, to name it
        if self.fine.comm.any(any(bad)):
            for i, lev in enumerate(levels):
                if lev.slab.comm.any(bad[i]):
                    raise SolverError(f"multigrid level {i}: the operator has a "
                                      f"non-positive diagonal (is every element scale "
                                      f"factor positive?)")
        lams = list(self._bounds[:len(levels)])
        if o.eigenvalue_bound == "lanczos" and not self.fell_back:
            ests = self._lanczos(levels, inv_ds, o.eig_iterations)
            lams = [min(lam, LANCZOS_MARGIN * est) for lam, est in zip(lams, ests)]
        for lev, inv_d, lam in zip(levels, inv_ds, lams):
            lev.smoother = PolynomialSmoother(lev.op, inv_d, o.smoother, o.smoothing_steps,
                                              o.jacobi_omega / lam, lam, o.chebyshev_lower,
                                              1.0)

    def _lanczos(self, levels: list[Level], inv_ds: list[InverseDiagonal], iterations: int
                 ) -> list[float]:
        """:func:`femopt.solvers.smoothers.estimate_lambda_max` of every level with slab
        dot products, the levels in step: each step's products of all the distributed
        levels in one reduction (:func:`~femopt.parallel.slabs.dots_together`; the same
        numbers as one level at a time)."""
        runs = [_LanczosRun(lev, inv_d, min(iterations, lev.slab.layout.n_dofs))
                for lev, inv_d in zip(levels, inv_ds)]
        for run, (rz,) in zip(runs, sl.dots_together([(u.lev.slab, [(u.r, u.z)])
                                                      for u in runs], "lanczos")):
            run.rz = rz
            run.live = run.steps > 0
        while any(u.live for u in runs):
            live = [u for u in runs if u.live]
            for u in live:
                u.q = u.lev.op.apply(u.p)
            pqs = sl.dots_together([(u.lev.slab, [(u.p, u.q)]) for u in live], "lanczos")
            stepped = [u for u, (pq,) in zip(live, pqs) if u.step(pq)]
            rzs = sl.dots_together([(u.lev.slab, [(u.r, u.z)]) for u in stepped], "lanczos")
            for u, (rz,) in zip(stepped, rzs):
                u.finish(rz)
        return [lanczos_largest(u.alphas, u.betas) for u in runs]

    def set_springs_full(self, idx: np.ndarray, k: np.ndarray) -> None:
        """Springs on the whole fine grid (for a fine level solved whole)."""
        self._springs_full = (idx, k)

    # -- solving -------------------------------------------------------------------------

    def _vcycle(self, i: int, b: np.ndarray, x: np.ndarray) -> None:
        lev = self.levels[i]
        if lev.coarse_solve is not None:
            x[...] = lev.coarse_solve(b)
            return
        x[...] = 0
        lev.r[...] = b
        lev.smoother.run(x, lev.r, lev.d, want_residual=True)
        nxt = self.levels[i + 1]
        nxt.b[...] = sl.restrict(lev.slab, nxt.slab, lev.r, nxt.free)
        self._vcycle(i + 1, nxt.b, nxt.x)
        sl.prolong_add(nxt.slab, lev.slab, nxt.x, x)
        lev.op.apply(x, out=lev.r, alpha=-1.0, beta=1.0, z=b)
        lev.smoother.run(x, lev.r, lev.d, want_residual=False)

    def precondition(self, r: np.ndarray, out: np.ndarray) -> np.ndarray:
        top = self.levels[0]
        if top.slab.distributed or not self.fine.distributed:
            top.b[...] = r
            self._vcycle(0, top.b, top.x)
            out[...] = top.x
            return out
        top.b[...] = self.fine.gather_nodes(r)  # the fine level solved whole
        self._vcycle(0, top.b, top.x)
        out[...] = self.fine.node_part(top.x)
        return out

    def solve(self, b: np.ndarray, x0: np.ndarray | None = None,
              rtol: float | None = None) -> np.ndarray:
        """K x = b on the fine slab (kept dofs, ghosts filled, zero on constrained)."""
        with single_blas_thread(np):
            return self._solve(b, x0, rtol)

    def _solve(self, b, x0, rtol) -> np.ndarray:
        o = self.options
        rtol = o.rtol if rtol is None else rtol
        try:
            x, info = self._pcg(b, x0, rtol, o.max_iter)
        except SolverError:
            if self.fell_back or o.eigenvalue_bound != "lanczos":
                raise
            x, info = None, CGInfo()
        if not info.converged and o.eigenvalue_bound == "lanczos" and not self.fell_back:
            self.fell_back = True
            self._make_smoothers()
            x, info = self._pcg(b, x0, rtol, o.max_iter)
        self.last = info
        if not info.converged:
            hist = ", ".join(f"{r:.2e}" for r in info.residuals[-5:])
            raise SolverError(f"multigrid CG did not converge in {info.iterations} iterations "
                              f"to rtol {rtol:g} (last residuals: {hist})")
        return x

    def _pcg(self, b, x0, rtol, max_iter):
        """:func:`femopt.solvers.cg_kernels.pcg_fused` with slab dot products."""
        def dots(pairs):
            return self.fine.dots(pairs, "cg")

        xp = self.xp
        info = CGInfo()
        op = self.op64
        q = xp.empty_like(b)
        if x0 is None:
            x = xp.zeros_like(b)
            r = b.copy()
        else:
            x = x0.copy()
            op.apply(x, q)
            r = b - q
        bb, rr = dots([(b, b), (r, r)])
        bnorm = np.sqrt(bb)
        if bnorm == 0.0:
            info.converged = True
            return xp.zeros_like(b), info
        rel = np.sqrt(rr) / bnorm
        info.residuals.append(rel)
        if rel <= rtol:
            info.converged = True
            return x, info
        z = xp.empty_like(b)
        self.precondition(r, z)
        p = z.copy()
        rz = dots([(r, z)])[0]
        # the new residual's norm from r.q and q.q, taken with p.q (ResidualNorm: two
        # reductions per iteration, not three; the residuals recorded between two r.r
        # taken whole are its estimates)
        norm = ResidualNorm(rr, (CHECK_NEAR * rtol * bnorm) ** 2)
        for it in range(1, max_iter + 1):
            op.apply(p, q)
            pq, rq, qq = dots([(p, q), (r, q), (q, q)])
            if not pq > 0.0:
                raise SolverError(f"CG breakdown at iteration {it}: the operator or the "
                                  f"preconditioner is not positive definite (p^T A p = "
                                  f"{pq:.3g})")
            alpha = rz / pq
            x += alpha * p
            r -= alpha * q
            if norm.step(alpha, rq, qq):
                norm.whole(dots([(r, r)])[0])
            rel = np.sqrt(norm.rr) / bnorm
            info.residuals.append(rel)
            info.iterations = it
            if not np.isfinite(rel):
                raise SolverError(f"CG produced a non-finite residual at iteration {it}")
            if rel <= rtol:
                info.converged = True
                break
            self.precondition(r, z)
            rz_new, zq = dots([(r, z), (z, q)])
            beta = -alpha * zq / rz  # z.(r - r_old) / r_old.z_old, as pcg_fused's
            if beta < 0.0:
                beta = 0.0
            p *= beta
            p += z
            rz = rz_new
        return x, info


class ResidualNorm:
    """CG's |r|^2 without a reduction of its own: after r -= alpha q, |r - alpha q|^2 =
    r.r - 2 alpha r.q + alpha^2 q.q from r.q and q.q (taken with p.q). Its rounding, a
    few 1e-16 of the terms' sizes a step, adds up from the last r.r taken whole
    (``anchor``) in ``drift``; :meth:`step` asks for r.r whole where the estimate comes
    within ``near`` (a squared norm: near the tolerance), ANCHOR_FLOOR of the anchor or
    DRIFT_MARGIN of the drift, or is not finite. So CG stops where r.r taken every time
    would stop."""

    def __init__(self, rr: float, near: float):
        self.near = near
        self.whole(rr)

    def whole(self, rr: float) -> None:
        """r.r taken whole."""
        self.rr = self.anchor = rr
        self.drift = 0.0

    def step(self, alpha: float, rq: float, qq: float) -> bool:
        """The estimate after r -= alpha q; True where r.r is to be taken whole."""
        self.drift += ROUNDING * (abs(self.rr) + 2.0 * abs(alpha * rq) + alpha * alpha * qq)
        self.rr = self.rr - 2.0 * alpha * rq + alpha * alpha * qq
        return not self.rr > max(self.near, ANCHOR_FLOOR * self.anchor,
                                 DRIFT_MARGIN * self.drift)


class _LanczosRun:
    """One level's CG-Lanczos of :meth:`SlabMultigrid._lanczos`, a step at a time (the
    order of :func:`femopt.solvers.smoothers.estimate_lambda_max`'s operations)."""

    def __init__(self, lev: Level, inv_d: InverseDiagonal, steps: int):
        self.lev, self.inv_d, self.steps = lev, inv_d, steps
        self.r = lev.probe.copy()
        self.z = inv_d.times(self.r)
        self.p = self.z.copy()
        self.q: Any = None
        self.rz, self.alpha, self.live = 0.0, 0.0, True
        self.alphas: list[float] = []
        self.betas: list[float] = []

    def step(self, pq: float) -> bool:
        """The update after p.q; False (and the run ends) on a breakdown."""
        if pq <= 0 or self.rz <= 0:
            self.live = False
            return False
        self.alpha = self.rz / pq
        self.r = self.r - self.alpha * self.q
        self.z = self.inv_d.times(self.r)
        return True

    def finish(self, rz_new: float) -> None:
        """The step's end after r.z."""
        beta = rz_new / self.rz
        self.alphas.append(self.alpha)
        self.betas.append(beta)
        self.rz = rz_new
        if rz_new <= 0 or len(self.alphas) >= self.steps:
            self.live = False
            return
        self.p = self.z + beta * self.p
