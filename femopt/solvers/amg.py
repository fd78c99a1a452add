"""PCG preconditioned by smoothed-aggregation algebraic multigrid, CPU (the GPU path on
meshes from files runs the same hierarchy: :mod:`femopt.solvers.device_amg`).

For meshes without grid structure, where geometric multigrid does not apply. The
aggregation gets the operator's near-null space from the physics (its rigid modes:
translations and rotations for elasticity, constants for a scalar field); without them
smoothed aggregation converges poorly on elasticity.

The hierarchy's structure (aggregates, tentative prolongators, coarse near-null spaces)
is built once per mesh and kept; each design recomputes only values
(:mod:`femopt.solvers.sa_hierarchy`): the smoothed prolongators, the Galerkin coarse
operators, the smoothers' diagonals and spectral radii. A vector physics (k dofs per
node) is solved in node blocks: the free-dof matrix goes into a k x k block (BSR) matrix
of every dof, with a unit diagonal on the supported ones (their near-null space rows are
zero, so they stay out of every coarse level), through a gather order built once. SciPy's
products of block matrices are some 2.5x faster than those of scalar CSR ones here.

Every solve starts from the previous design's solution of the same right-hand side slot
(forward column c, adjoint column c): designs change little between iterations. The
adjoint solves reuse the forward hierarchy (the operator is symmetric).
"""

from __future__ import annotations

from typing import Annotated, Any, Callable, Literal

import numpy as np
from pydantic import Field

from femopt.plugins.registry import Options
from femopt.solvers.pcg import CGInfo, PCGSolver, not_converged, pcg
from femopt.solvers.row_split import split_rows
from femopt.solvers.sa_hierarchy import CYCLE, DEGREE, SAHierarchy, build_structure


class AMGOptions(Options):
    rtol: float = Field(1e-8, gt=0, lt=1)
    """Relative residual at which CG stops."""
    max_iter: int = Field(500, gt=0)
    """Largest number of CG iterations per solve."""
    cycle: Literal["V", "W"] | None = None
    """Multigrid cycle of one preconditioner application (W: two coarse corrections per
    level, fewer CG iterations for more work on the coarse levels); by default V on the
    CPU and W on the GPU."""
    max_coarse: int = Field(3000, gt=0)
    """Largest system solved directly (dense Cholesky) at the coarsest level (on the CPU
    also at most sqrt(0.5 x the finest level's stored entries) rows)."""
    smoother_degree: list[Annotated[int, Field(ge=1, le=8)]] | None = Field(
        None, min_length=2, max_length=2)
    """Degree of the Chebyshev smoother on the finest level and on the coarser ones (a
    lower one: cheaper cycles, more CG iterations); by default [1, 3] on the CPU, where
    the finest level's products are most of a design iteration, and [2, 3] on the GPU
    (with the W-cycle), where fewer CG iterations weigh more."""


# the default cycle per device: (Chebyshev degrees on the finest and coarser levels, cycle)
DEFAULT_CYCLE = {"cpu": ((1, 3), "V"), "gpu": (DEGREE, CYCLE)}


def cycle_settings(options: AMGOptions, device: str) -> tuple[tuple[int, int], str]:
    """The Chebyshev degrees (finest, coarser) and the cycle ("V" or "W") of ``options``,
    each where unset the default of the ``device`` ("cpu" or "gpu") the hierarchy runs
    on. On the 1M-tet bracket (docs/benchmarks.md) the GPU's W-cycle with degrees (2, 3)
    takes 18 to 26 CG iterations per solve against 21 to 32 for a V-cycle with (3, 3);
    on the CPU, where the coarse levels' products weigh more, the V-cycle with (1, 3) is
    the faster."""
    degree, cycle = DEFAULT_CYCLE[device]
    if options.smoother_degree is not None:
        degree = tuple(options.smoother_degree)
    return degree, options.cycle or cycle


COARSE_SHARE = 0.5  # the coarsest level's dense n^2 against the finest level's entries


def coarsest_limit(operator: Any, max_coarse: int) -> int:
    """Rows of the largest coarsest level for ``operator`` on the CPU: ``max_coarse``, or
    fewer where its dense factor would outweigh the finest level (n^2 at most
    :data:`COARSE_SHARE` of the stored entries): the factor is made at every design and
    applied at every cycle (on 20k free dofs a coarsest level of 2,388 rows doubled the
    time of a design iteration)."""
    return max(1, min(max_coarse, int((COARSE_SHARE * operator.nnz) ** 0.5)))


class BlockEmbedding:
    """The free-dof CSR matrix as a k x k block (BSR) matrix of all ``n_dofs`` dofs, with
    1 on the diagonal of the supported dofs; the gather order is built once per pattern.

    The all-dof CSR pattern is written directly: the free rows keep their entries (the
    free dofs map to all dofs in increasing order, so sorted columns stay sorted) and a
    supported dof's row holds only its diagonal, so no COO sort is needed; SciPy then
    groups it into blocks in one pass. Each design fills the blocks by one gather from
    the free matrix's values, then sets its padding zeros and unit diagonal."""

    def __init__(self, matrix: Any, free: np.ndarray, n_dofs: int, k: int):
        import scipy.sparse as sp

        self.free, self.n, self.k = free, n_dofs, k
        self.indices = matrix.indices
        nnz = matrix.nnz
        index = np.int32 if max(n_dofs, nnz) + 2 < 2**31 else np.int64
        # markers: slot + 1 for a matrix entry, -1 for a supported dof's unit diagonal
        marks = sp.csr_matrix((np.arange(1, nnz + 1, dtype=float), matrix.indices,
                               matrix.indptr), shape=matrix.shape)
        if not marks.has_sorted_indices:
            marks = marks.copy()
            marks.sort_indices()
        lengths = np.ones(n_dofs, dtype=np.int64)
        lengths[free] = np.diff(marks.indptr)
        indptr = np.zeros(n_dofs + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        del lengths
        fixed = np.ones(n_dofs, dtype=bool)
        fixed[free] = False
        fixed = np.flatnonzero(fixed)
        # where each free entry lands: its offset in its row plus its row's new start
        shift = indptr[free] - marks.indptr[:-1]
        at = np.repeat(shift, np.diff(marks.indptr))
        at += np.arange(nnz)
        del shift
        indices = np.empty(indptr[-1], dtype=index)
        data = np.empty(indptr[-1])
        indices[at] = free.astype(index)[marks.indices]
        data[at] = marks.data
        del at, marks
        indices[indptr[fixed]] = fixed
        data[indptr[fixed]] = -1.0
        self.bsr = sp.csr_matrix((data, indices, indptr.astype(index, copy=False)),
                                 shape=(n_dofs, n_dofs)).tobsr(blocksize=(k, k))
        del data, indices, indptr
        flat = self.bsr.data.reshape(-1)
        # the gather order of the values (0 where the block holds a padding zero or a
        # supported dof's 1, written after the gather)
        self.zeros = np.flatnonzero(flat == 0).astype(index)
        self.ones = np.flatnonzero(flat < 0).astype(index)
        self.order = np.maximum(flat - 1, 0).astype(index)

    def matches(self, matrix: Any) -> bool:
        return matrix.indices is self.indices or np.array_equal(matrix.indices,
                                                                self.indices)

    def embed(self, matrix: Any) -> Any:
        """The block matrix with ``matrix``'s values, written into its own array (no
        copy of the values with the 0 and 1 appended, no new array per design)."""
        flat = self.bsr.data.reshape(-1)
        np.take(matrix.data, self.order, out=flat, mode="clip")  # clip: unbuffered
        flat[self.zeros] = 0.0
        flat[self.ones] = 1.0
        return self.bsr

    def expand(self, v: np.ndarray) -> np.ndarray:
        out = np.zeros(self.n)
        out[self.free] = v
        return out


class AMGSolver(PCGSolver):
    """CG with a smoothed-aggregation AMG preconditioner whose structure is built once."""

    name = "amg"
    summary = ("PCG with smoothed-aggregation algebraic multigrid, its structure built once per "
               "mesh (CPU; the GPU path on meshes from files)")
    Options = AMGOptions
    label = "AMG-PCG"
    device_paths = ("gpu mesh",)  # the mesh path runs its own AMG on the device

    def __init__(self, options: AMGOptions | None = None):
        try:
            import pyamg  # noqa: F401
        except ImportError:
            raise ValueError("solver 'amg' needs pyamg (pip install pyamg)") from None
        self.options = options or AMGOptions()
        self.modes: Callable[[], np.ndarray] | None = None
        self.free: np.ndarray | None = None
        self.k = 1
        self.hierarchy: Any = None
        self.embedding: BlockEmbedding | None = None
        self.matrix = None
        self.operator = None  # what CG multiplies by: the block matrix or ``matrix``
        self._apply: Any = None  # the operator, row-split on several cores
        self.last = CGInfo()
        self._warm: dict[tuple[bool, int], np.ndarray] = {}
        self._rows = -1

    def bind(self, mesh: Any, dofs_per_node: int) -> None:
        self.k = dofs_per_node

    def set_near_null_space(self, modes: Callable[[], np.ndarray]) -> None:
        self.modes = modes

    def update_operator(self, scale: Any, assembler: Any, ke: Any) -> None:
        self.free = assembler.free
        self.n_dofs = assembler.n_dofs
        self.update(assembler.assemble(scale, ke))

    def update(self, matrix) -> None:
        self.matrix = matrix = matrix.tocsr()
        blocks = (self.k > 1 and self.free is not None
                  and getattr(self, "n_dofs", 0) % self.k == 0)
        if blocks and (self.embedding is None or not self.embedding.matches(matrix)):
            self.embedding = BlockEmbedding(matrix, self.free, self.n_dofs, self.k)
            self.hierarchy = None
        self.operator = self.embedding.embed(matrix) if blocks else matrix
        self._apply = split_rows(self.operator)
        if self.hierarchy is None or self._rows != self.operator.shape[0]:
            ts = build_structure(self.operator, self._near_null_space(blocks),
                                 coarsest_limit(self.operator, self.options.max_coarse))
            degree, cycle = cycle_settings(self.options, "cpu")
            self.hierarchy = SAHierarchy(ts, np, degree=degree, cycle=cycle)
            self._rows = self.operator.shape[0]
            self._warm.clear()
        self.hierarchy.update(self.operator)

    def _near_null_space(self, blocks: bool) -> np.ndarray | None:
        """The modes on the operator's rows: every dof (zero on the supported ones) for
        the block matrix, the free dofs otherwise; None for a definite operator."""
        if self.modes is None:
            return None
        b = np.asarray(self.modes(), dtype=float)
        if b.ndim != 2 or b.shape[1] == 0:
            return None
        if self.free is None:
            return b if b.shape[0] == self.matrix.shape[0] else None
        if blocks:
            out = np.zeros_like(b)
            out[self.free] = b[self.free]
            return out
        return b[self.free] if b.shape[0] != self.matrix.shape[0] else b

    def precondition(self, r):
        return self.hierarchy.precondition(r)

    def solve(self, b, transpose: bool = False, x0=None):
        if b.ndim == 2:
            cols = [self._solve_one(b[:, c], transpose, c, None if x0 is None else x0[:, c])
                    for c in range(b.shape[1])]
            return np.stack(cols, axis=1)
        return self._solve_one(b, transpose, 0, x0)

    def _solve_one(self, b: np.ndarray, transpose: bool, slot: int, x0: Any) -> np.ndarray:
        emb = self.embedding if self.operator is not self.matrix else None
        rhs = emb.expand(b) if emb is not None else b
        if x0 is None:
            x0 = self._warm.get((transpose, slot))
        elif emb is not None:
            x0 = emb.expand(x0)
        if x0 is not None and (x0.shape != rhs.shape or not self._helps(x0, rhs)):
            x0 = None
        x, info = pcg(lambda v: self._apply @ v, rhs, self.precondition, x0,
                      self.options.rtol, self.options.max_iter)
        self.last = info
        if not info.converged:
            raise not_converged(self.label, info, self.options.rtol)
        self._warm[(transpose, slot)] = x
        return x[emb.free] if emb is not None else x

    def _helps(self, x0: np.ndarray, b: np.ndarray) -> bool:
        """A warm start whose residual is below the right-hand side's norm."""
        return bool(np.linalg.norm(b - self.operator @ x0) < np.linalg.norm(b))

    def stats(self) -> dict:
        h = self.hierarchy
        return {"cg_iterations": self.last.iterations,
                "amg_levels": len(h.levels) if h is not None else 0}
