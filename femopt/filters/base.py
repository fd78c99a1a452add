"""The filter interface and the neighbourhood weight matrix filters share."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from femopt.mesh.mesh import Mesh
from femopt.plugins.registry import Component

CHUNK = 1 << 20  # pairs per chunk of the distances
# a pair's weight r - |c_i - c_j| is kept above CUT * r: pairs at the radius within
# rounding (on a regular mesh, many) are left out the same way by every path, whatever
# order the device sums the coordinates in
CUT = 1e-12


class Filter(Component):
    """One stage of the design chain x -> ... -> rho.

    ``forward`` maps the stage's input to its output; ``backward`` is the exact
    vector-Jacobian product (chain rule). ``forward`` returns a new array, which then
    belongs to the design chain (the last stage's is rho itself, the passive cells
    written into it: ``EvaluationPath._through``), or its input itself. A heuristic
    stage (``heuristic = True``, the sensitivity filter) instead rewrites the objective
    gradient in ``modify_objective_gradient``; Taylor tests check the exact gradient
    without it.
    """

    heuristic: ClassVar[bool] = False
    linear: ClassVar[bool] = False
    """True when ``forward`` is linear in x and ``backward`` does not read x (OC then
    bisects on a linear volume constraint without a filter pass per trial)."""
    pointwise: ClassVar[bool] = False
    """True when ``forward`` and ``backward`` act entry by entry in the array module of
    their input (a projection): the filter then runs on the device paths as it is."""

    def __init__(self, options, mesh: Mesh):
        self.options = options
        self.mesh = mesh

    @classmethod
    def paths(cls) -> list[str]:
        """The paths this kind of filter runs on (for ``femopt plugins``)."""
        runs = cls.pointwise or cls.device_twin is not Filter.device_twin
        return ["cpu", "gpu grid", "gpu mesh"] if runs else ["cpu"]

    def device_twin(self, xp: Any) -> "Filter | None":
        """This filter with its data on the device paths' array module ``xp``, or None
        when it cannot run there (see :meth:`gpu_capability`)."""
        return self if self.pointwise else None

    def slab_twin(self, slab: Any, spacing: tuple[float, ...]) -> "Filter | None":
        """This filter on a rank's slab of a distributed run (:mod:`femopt.parallel`),
        or None when it does not run distributed: a pointwise filter runs as it is."""
        return self if self.pointwise else None

    def gpu_capability(self) -> str | None:
        """None when the filter runs on the GPU paths (it is pointwise or has a device
        twin), else why not."""
        if "gpu grid" in self.paths():
            return None
        return (f"the filter {self.name!r} is neither pointwise nor linear with given "
                "weights (a LinearFilter), so it has no device form")

    def forward(self, x: Any) -> Any:
        return x

    def backward(self, x: Any, dy: Any) -> Any:
        return dy

    def modify_objective_gradient(self, x: Any, df: Any) -> Any:
        return df

    def advance(self, iteration: int, change: float, tol: float) -> bool:
        """Step a continuation parameter when due; True if the filter changed."""
        return False

    def state(self) -> dict:
        """Parameters that change during a run (for logs and history.csv)."""
        return {}

    def state_dict(self) -> dict:
        """Everything continuation changes during a run, for checkpoints."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""


def radius_weights(mesh: Mesh, radius: float) -> tuple[sp.csr_matrix, np.ndarray]:
    """Cone weights H_ij = max(0, r - |c_i - c_j|) v_j between cell centroids, and row
    sums. On an unstructured mesh each neighbour j counts with its volume v_j, so that a
    filtered density is a volume average that does not depend on how finely a region is
    meshed; on a structured grid every v_j is equal and is left out (v_j = 1)."""
    from scipy.spatial import cKDTree  # on first use: its import takes a fifth of a second

    c = mesh.centroids()
    tree = cKDTree(c)
    n = mesh.n_cells
    if mesh.grid is None:
        h = _pair_weights(tree, c, radius)
        h.data *= _volumes(mesh)[h.indices]
        return h, np.asarray(h.sum(axis=1)).ravel()
    d = tree.sparse_distance_matrix(tree, radius, output_type="coo_matrix")
    # self-pairs come back with distance 0, so every cell has its own weight r
    w = radius - d.data
    keep = w > CUT * radius
    h = sp.csr_matrix((w[keep], (d.row[keep], d.col[keep])), shape=(n, n))
    return h, np.asarray(h.sum(axis=1)).ravel()


def _volumes(mesh: Mesh) -> np.ndarray:
    from femopt.objectives.base import cell_volumes

    return cell_volumes(mesh)


def _pair_weights(tree: Any, c: np.ndarray, radius: float) -> sp.csr_matrix:
    """max(0, r - |c_i - c_j|) from the pairs i < j within r, mirrored, and r on the
    diagonal: a third of the search and int32 indices (the full distance matrix of a
    1M-cell mesh holds some 60M entries with int64 rows and columns); the same matrix,
    canonical CSR.

    The distances are summed per coordinate in chunks that stay in cache, in the order
    NumPy's sum over a row of three takes ((dx^2 + dy^2) + dz^2, the same values bit for
    bit); the CSR is written by SciPy's counting pass (no entry repeats: each pair comes
    once, one way) and its rows sorted, without the COO route's duplicate check."""
    from scipy.sparse import _sparsetools

    n = len(c)
    index = np.int32 if n < 2**31 else np.int64
    pairs = tree.query_pairs(radius, output_type="ndarray").astype(index)
    i, j = pairs[:, 0], pairs[:, 1]
    axes = [np.ascontiguousarray(c[:, d]) for d in range(c.shape[1])]
    w = np.empty(len(pairs))
    part = np.empty(min(CHUNK, len(pairs)))
    for a in range(0, len(pairs), CHUNK):
        b = min(a + CHUNK, len(pairs))
        ii, jj, acc, t = i[a:b], j[a:b], w[a:b], part[:b - a]
        np.subtract(axes[0][ii], axes[0][jj], out=acc)
        np.multiply(acc, acc, out=acc)
        for x in axes[1:]:
            np.subtract(x[ii], x[jj], out=t)
            np.multiply(t, t, out=t)
            np.add(acc, t, out=acc)
        np.sqrt(acc, out=acc)
        np.subtract(radius, acc, out=acc)
    # a pair at the radius within rounding has no weight (rare: mostly none to drop)
    keep = w > CUT * radius
    if not keep.all():
        i, j, w = i[keep], j[keep], w[keep]
    del pairs, keep, part
    diag = np.arange(n, dtype=index)
    rows, cols = np.concatenate([i, j, diag]), np.concatenate([j, i, diag])
    del i, j
    vals = np.concatenate([w, w, np.full(n, float(radius))])
    del w
    nnz = len(vals)
    index = np.int32 if nnz < 2**31 else np.int64
    indptr, indices, data = (np.empty(n + 1, dtype=index), np.empty(nnz, dtype=index),
                             np.empty(nnz))
    _sparsetools.coo_tocsr(n, n, nnz, rows.astype(index, copy=False),
                           cols.astype(index, copy=False), vals, indptr, indices, data)
    del rows, cols, vals
    h = sp.csr_matrix((data, indices, indptr), shape=(n, n))
    h.sort_indices()
    return h
