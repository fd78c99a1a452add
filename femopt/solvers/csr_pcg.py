"""PCG on an assembled CSR matrix with a node-block Jacobi preconditioner, NumPy or CuPy.

The solver of the GPU path on meshes from files (:mod:`femopt.evaluation.mesh_device`).
CG runs through femopt's fused CG loop (:func:`femopt.solvers.cg_kernels.pcg_fused`); the
matrix-vector product is SciPy's on the CPU and femopt's CSR kernel
(``femopt_assembly_csr_spmv``, 8 lanes per row) on the GPU. The preconditioner inverts
the k x k diagonal blocks of the nodes (k dofs per node; plain Jacobi for k = 1): for
elasticity the blocks couple a node's displacement components, which plain Jacobi leaves
out, and CG needs fewer iterations. A constrained component keeps a 1 on its block's
diagonal and no coupling, so the block stays invertible and never touches a free value.
The inverted blocks' free entries lie inside K's own pattern (a node's dofs couple), so
applying them is one more CSR product with the same kernel, on that sub-pattern.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from femopt.errors import SolverError
from femopt.solvers.cg_kernels import pcg_fused
from femopt.solvers.pcg import CGInfo, not_converged


class NodeBlockPCG:
    """CG for ``K u = f`` on the free dofs of a CSR pattern, warm-started by the caller.

    Args:
        indptr, indices: the CSR pattern (int32, host or ``xp`` arrays) of the free-dof
            matrix; the node blocks' sub-pattern is found on ``xp``.
        free: sorted global indices of the free dofs; ``dofs_per_node`` k (dof = node*k+c).
        xp: numpy or cupy. rtol, max_iter: CG's stopping rule.
    """

    def __init__(self, indptr: np.ndarray, indices: np.ndarray, free: np.ndarray,
                 dofs_per_node: int, xp: Any = np, rtol: float = 1e-8, max_iter: int = 20000):
        self.xp, self.rtol, self.max_iter = xp, rtol, max_iter
        k = self.k = dofs_per_node
        n = free.size
        self.shape = (n, n)
        indptr, indices = xp.asarray(indptr), xp.asarray(indices)
        self.indptr, self.indices = indptr, indices
        free = xp.asarray(free)
        node, comp = free // k, free % k
        # free is sorted, so each node's free dofs are consecutive: a node's block is the
        # number of nodes before it
        new_node = xp.ones(n, dtype=bool)
        if n:
            xp.not_equal(node[1:], node[:-1], out=new_node[1:])
        block = xp.cumsum(new_node) - 1
        self.n_blocks = int(block[-1]) + 1 if n else 0
        nnz = int(indices.shape[0])
        rows = xp.searchsorted(indptr, xp.arange(nnz, dtype=indptr.dtype), side="right") - 1
        same = xp.flatnonzero(block[rows] == block[indices])  # K's slots inside node blocks
        self.block_slots = same
        self.block_pos = (block[rows[same]] * k * k + comp[rows[same]] * k
                          + comp[indices[same]])
        # the CSR sub-pattern of those slots, which the inverted blocks fill
        pre_indptr = xp.zeros(n + 1, dtype=indptr.dtype)
        pre_indptr[1:] = xp.cumsum(xp.bincount(rows[same], minlength=n)).astype(indptr.dtype)
        self.pre = SimpleNamespace(indptr=pre_indptr, indices=indices[same], shape=self.shape)
        self.data = None
        self.inv_blocks = None
        self.pre_data = None
        self.last = CGInfo()

    def update(self, data: Any) -> None:
        """A new matrix (its CSR values): invert the node blocks."""
        xp, k = self.xp, self.k
        self.data = data
        blocks = xp.zeros((self.n_blocks, k, k), dtype=data.dtype)
        blocks[:, xp.arange(k), xp.arange(k)] = 1.0  # constrained components
        blocks.reshape(-1)[self.block_pos] = data[self.block_slots]
        if k == 1:
            if bool(xp.any(blocks <= 0)):
                raise SolverError("Jacobi preconditioner: the matrix has a non-positive "
                                  "diagonal")
            self.inv_blocks = 1.0 / blocks.reshape(-1)
        else:
            self.inv_blocks = xp.linalg.inv(blocks)
            if not bool(xp.isfinite(self.inv_blocks).all()):
                raise SolverError("block Jacobi preconditioner: a node block of the matrix "
                                  "is singular")
        if k > 1:
            self.pre_data = self.inv_blocks.reshape(-1)[self.block_pos]
        if self.xp is np:
            import scipy.sparse as sp

            self._matrix = sp.csr_matrix((data, self.indices, self.indptr), shape=self.shape)
            if k > 1:
                self._pre_matrix = sp.csr_matrix((self.pre_data, self.pre.indices,
                                                  self.pre.indptr), shape=self.shape)

    def apply(self, u: Any, out: Any) -> Any:
        """out = K u."""
        if self.xp is np:
            out[...] = self._matrix @ u
            return out
        from femopt.assembly.structured_csr import spmv_gpu

        return spmv_gpu(self, self.data, u, out)

    def precondition(self, r: Any, out: Any) -> Any:
        """out = B^-1 r with B the node blocks of K."""
        if self.k == 1:
            return self.xp.multiply(self.inv_blocks, r, out=out)
        if self.xp is np:
            out[...] = self._pre_matrix @ r
            return out
        from femopt.assembly.structured_csr import spmv_gpu

        return spmv_gpu(self.pre, self.pre_data, r, out)

    def solve(self, b: Any, x0: Any = None) -> Any:
        """u with K u = b (one right-hand side), starting from ``x0``."""
        x, info = pcg_fused(self.apply, self.precondition, b, x0, self.rtol, self.max_iter)
        self.last = info
        if not info.converged:
            raise not_converged("block-Jacobi PCG", info, self.rtol)
        return x
