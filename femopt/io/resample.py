"""A design on an unstructured mesh as a density field on a regular grid, for contouring.

Cell densities become nodal densities (cell-volume-weighted averages of the cells around
each node); every cell is split into simplices (a quad into 2 triangles, a hex into 6
tetrahedra) and each grid sample point takes the linear interpolant of the simplex that
contains it. Points inside no cell (holes, the outside) are void, so holes stay open.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from femopt.mesh.mesh import Mesh, StructuredGrid
from femopt.objectives.base import cell_volumes

SPLIT = {
    "tri3": [(0, 1, 2)],
    "tet4": [(0, 1, 2, 3)],
    "quad4": [(0, 1, 2), (0, 2, 3)],
    "hex8": [(0, 1, 2, 6), (0, 2, 3, 6), (0, 3, 7, 6), (0, 7, 4, 6), (0, 4, 5, 6), (0, 5, 1, 6)],
}


def nodal_density(mesh: Mesh, rho: np.ndarray) -> np.ndarray:
    """Volume-weighted average of the densities of the cells around each node."""
    v = cell_volumes(mesh)
    num = np.zeros(mesh.n_nodes)
    den = np.zeros(mesh.n_nodes)
    for k in range(mesh.cells.shape[1]):
        np.add.at(num, mesh.cells[:, k], v * rho)
        np.add.at(den, mesh.cells[:, k], v)
    return num / np.where(den > 0, den, 1.0)


def sample_grid(mesh: Mesh, max_samples: int = 2_000_000) -> StructuredGrid:
    """A regular grid over the mesh's bounding box, about two samples per cell width."""
    lo, hi = mesh.bounds()
    extent = hi - lo
    h = 0.5 * (float(cell_volumes(mesh).mean()) ** (1.0 / mesh.dim))
    shape = np.maximum(np.ceil(extent / h).astype(int), 2)
    while np.prod(shape) > max_samples:
        h *= 1.25
        shape = np.maximum(np.ceil(extent / h).astype(int), 2)
    spacing = extent / shape
    return StructuredGrid(tuple(int(n) for n in shape), tuple(float(s) for s in spacing),
                          tuple(float(o) for o in lo))


def resample(mesh: Mesh, rho: np.ndarray, grid: StructuredGrid, chunk: int = 200_000,
             candidates: int = 12) -> np.ndarray:
    """Densities at the grid's cell centres, shape ``grid.shape`` (x first)."""
    simplices = np.concatenate([mesh.cells[:, list(s)] for s in SPLIT[mesh.cell_type]])
    d = mesh.dim
    p = mesh.points[simplices]  # (s, d+1, d)
    # barycentric coordinates: lambda_1..d = inv(T) (x - p0), lambda_0 = 1 - sum
    t = np.transpose(p[:, 1:] - p[:, :1], (0, 2, 1))  # (s, d, d)
    ok = np.abs(np.linalg.det(t)) > 1e-14 * np.abs(t).max() ** d
    inv = np.zeros_like(t)
    inv[ok] = np.linalg.inv(t[ok])
    values = nodal_density(mesh, rho)[simplices]  # (s, d+1)
    tree = cKDTree(p.mean(axis=1))
    radius = np.linalg.norm(p - p.mean(axis=1, keepdims=True), axis=2).max()
    axes = [o + h * (np.arange(n) + 0.5) for o, h, n in zip(grid.origin, grid.spacing,
                                                             grid.shape)]
    pts = np.stack([g.ravel() for g in np.meshgrid(*axes, indexing="ij")], axis=1)
    out = np.zeros(len(pts))
    k = min(candidates, len(simplices))
    for start in range(0, len(pts), chunk):
        x = pts[start:start + chunk]
        dist, idx = tree.query(x, k=k, distance_upper_bound=radius)
        idx = np.atleast_2d(idx.T).T if k == 1 else idx
        found = np.zeros(len(x), dtype=bool)
        val = np.zeros(len(x))
        for j in range(k):
            cand = idx[:, j]
            live = (cand < len(simplices)) & ~found
            if not live.any():
                continue
            c = cand[live]
            lam = np.einsum("sij,sj->si", inv[c], x[live] - p[c, 0])
            lam = np.column_stack([1.0 - lam.sum(axis=1), lam])
            inside = ok[c] & np.all(lam >= -1e-9, axis=1)
            rows = np.flatnonzero(live)[inside]
            val[rows] = np.einsum("si,si->s", lam[inside], values[c[inside]])
            found[rows] = True
        out[start:start + chunk] = val
    return out.reshape(grid.shape)
