"""The filter interface and the neighbourhood weight matrix filters share."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

from femopt.mesh.mesh import Mesh
from femopt.plugins.registry import Component


class Filter(Component):
    """One stage of the design chain x -> ... -> rho.

    ``forward`` maps the stage's input to its output; ``backward`` is the exact
    vector-Jacobian product (chain rule). A heuristic stage (``heuristic = True``, the
    sensitivity filter) instead rewrites the objective gradient in
    ``modify_objective_gradient``; Taylor tests check the exact gradient without it.
    """

    heuristic: ClassVar[bool] = False

    def __init__(self, options, mesh: Mesh):
        self.options = options
        self.mesh = mesh

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
    """Cone weights H_ij = max(0, r - |c_i - c_j|) between cell centroids, and row sums."""
    c = mesh.centroids()
    tree = cKDTree(c)
    d = tree.sparse_distance_matrix(tree, radius, output_type="coo_matrix")
    # self-pairs come back with distance 0, so every cell has its own weight r
    w = radius - d.data
    keep = w > 0
    n = mesh.n_cells
    h = sp.csr_matrix((w[keep], (d.row[keep], d.col[keep])), shape=(n, n))
    return h, np.asarray(h.sum(axis=1)).ravel()
