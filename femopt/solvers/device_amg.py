"""PCG with smoothed-aggregation AMG on an assembled CSR matrix, NumPy or CuPy.

The AMG solver of the GPU path on meshes from files (:mod:`femopt.evaluation.mesh_device`,
``solver: {type: amg}``). The structure is made once per mesh on the host from the first
design's matrix (:func:`~femopt.solvers.sa_hierarchy.build_structure`: pyamg's aggregation
of the free dofs with the physics' near-null space, the tentative prolongators); the
prolongators move to the device, where every design recomputes the hierarchy's values
(:class:`~femopt.solvers.sa_hierarchy.SAHierarchy`: smoothed prolongators and Galerkin
operators by cuSPARSE products, Chebyshev smoothers from Lanczos estimates, the coarsest
operator's Cholesky factor) and CG runs femopt's fused loop with a cycle (V or W) as
its preconditioner. The same code runs with NumPy, which is how the CPU tests check it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from femopt.backend import to_host
from femopt.solvers.cg_kernels import pcg_fused
from femopt.solvers.pcg import CGInfo, not_converged
from femopt.solvers.sa_hierarchy import (CYCLE, DEGREE, SAHierarchy, build_structure,
                                          sparse_module)


class DeviceAMGPCG:
    """CG for ``K u = f`` on the free dofs of a CSR pattern with an AMG preconditioner.

    Args:
        indptr, indices: the CSR pattern (host or ``xp`` arrays) of the free-dof matrix.
        near_null: (n_free, m) host near-null space on the free dofs (None: constants).
        xp: numpy or cupy. rtol, max_iter: CG's stopping rule. max_coarse, cycle, degree:
        the hierarchy's coarsest size, its cycle and its Chebyshev degrees (finest,
        coarser).
    """

    label = "AMG-PCG"

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, near_null: Any, xp: Any = np,
                 rtol: float = 1e-8, max_iter: int = 500, max_coarse: int = 3000,
                 cycle: str = CYCLE, degree: tuple[int, int] = DEGREE):
        self.xp, self.rtol, self.max_iter = xp, rtol, max_iter
        self.sp = sparse_module(xp)
        n = int(indptr.shape[0]) - 1
        self.shape = (n, n)
        # the hierarchy's structure is aggregated on the host, from a copy of the pattern
        self.host_pattern = (to_host(indptr), to_host(indices))
        self.indptr, self.indices = xp.asarray(indptr), xp.asarray(indices)
        self.near_null = near_null
        self.max_coarse, self.cycle, self.degree = max_coarse, cycle, tuple(degree)
        self.hierarchy: SAHierarchy | None = None
        self.matrix = None
        self.last = CGInfo()

    def update(self, data: Any) -> None:
        """A new matrix (its CSR values): the hierarchy's values, its structure on the
        first call."""
        self.matrix = self.sp.csr_matrix((data, self.indices, self.indptr), shape=self.shape)
        if self.hierarchy is None:
            import scipy.sparse as sp

            indptr, indices = self.host_pattern
            host = sp.csr_matrix((to_host(data), indices, indptr), shape=self.shape)
            ts = build_structure(host, self.near_null, self.max_coarse)
            self.hierarchy = SAHierarchy(ts, self.xp, degree=self.degree, cycle=self.cycle)
        self.hierarchy.update(self.matrix)

    def apply(self, u: Any, out: Any) -> Any:
        out[...] = self.matrix @ u
        return out

    def precondition(self, r: Any, out: Any) -> Any:
        out[...] = self.hierarchy.precondition(r)
        return out

    def solve(self, b: Any, x0: Any = None) -> Any:
        """u with K u = b (one right-hand side), starting from ``x0``."""
        x, info = pcg_fused(self.apply, self.precondition, b, x0, self.rtol, self.max_iter)
        self.last = info
        if not info.converged:
            raise not_converged(self.label, info, self.rtol)
        return x

    def stats(self) -> dict:
        h = self.hierarchy
        return {"cg_iterations": self.last.iterations,
                "amg_levels": len(h.levels) if h is not None else 0}
