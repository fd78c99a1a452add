"""A radius filter's weights on a mesh from a file, found on the device by cell hashing.

The host finds the pairs of cells whose centroids lie within the radius r with a KD-tree
(:func:`femopt.filters.base.radius_weights`). On the device the centroids are hashed into
bins of side r / 2 instead: a cell's neighbours within r lie in the 5^dim bins around its
own, of which only those whose box comes closer than r to the centroid are searched. The
cells are sorted by bin once; for a batch of cells, the candidates of each (cell,
neighbouring bin) pair are the sorted run of that bin (found by ``searchsorted``), laid
out one after the other, and the pairs closer than r keep the
cone weight (r - |c_i - c_j|) v_j, v_j the neighbour's volume, as the host's. Each batch's
pairs are sorted by (row, column), so the rows come out in CSR order. A first pass over
the batches counts the rows' weights, a second writes them into arrays of their exact
size. Everything runs on
``xp``: CuPy on the GPU path, NumPy for its twin (the tests compare it with the host's
KD-tree weights).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from femopt.filters.base import CUT

BATCH = 1 << 15  # cells per batch
SPLIT = 2  # bins of side r / SPLIT: 2.2x fewer candidates than side r (100k-tet bracket)


def _stable_argsort(xp: Any, a: Any) -> Any:
    return xp.argsort(a, kind="stable") if xp is np else xp.argsort(a)  # CuPy's is stable


def cell_hash_weights(centroids: Any, volumes: Any, radius: float, xp: Any,
                      batch: int = BATCH) -> tuple[Any, Any, Any, Any]:
    """Cone weights H_ij = max(0, r - |c_i - c_j|) v_j as CSR arrays on ``xp``.

    Two passes over the batches: the first counts each row's weights, the second writes
    them into the CSR arrays, made at their exact size in between. So the weights are
    held once, beside one batch's candidates (a single pass kept the batches' pieces,
    then their concatenation, and summed rows over all of them: 93 bytes per weight on
    the GPU at the 1M-tet bracket, against 12 held).

    Args:
        centroids: (n, dim) cell centroids; volumes: (n,) cell volumes (v_j).
        radius: r. xp: numpy or cupy. batch: cells per batch of candidates.
    Returns:
        indptr (n + 1,) int32 (int64 from 2^31 weights), indices (nnz,) int32 (columns
        sorted within each row),
        data (nnz,) float64 and the row sums (n,).
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    hashed = _Hashed(centroids, volumes, radius, xp)
    n = hashed.n
    counts = xp.zeros(n, dtype=xp.int64)
    for a in range(0, n, batch):
        b = min(a + batch, n)
        rows = hashed.pairs(a, b, ordered=False)[0]
        if rows.shape[0]:  # (every cell is its own neighbour; CuPy's bincount takes no empty)
            counts[a:b] = xp.bincount(rows, minlength=b - a)
    ends = xp.cumsum(counts)
    del counts
    nnz = int(ends[-1]) if n else 0
    indptr = xp.zeros(n + 1, dtype=xp.int64 if nnz >= 2**31 else xp.int32)  # cuSPARSE: int32
    indptr[1:] = ends
    del ends
    indices = xp.empty(nnz, dtype=xp.int32)
    data = xp.empty(nnz, dtype=xp.float64)
    hs = xp.zeros(n, dtype=xp.float64)
    for a in range(0, n, batch):
        b = min(a + batch, n)
        i, j, w = hashed.pairs(a, b)
        if i.shape[0]:
            lo, hi = int(indptr[a]), int(indptr[b])
            indices[lo:hi] = j
            data[lo:hi] = w
            hs[a:b] = xp.bincount(i, weights=w, minlength=b - a)
    return indptr, indices, data, hs


class _Hashed:
    """The cells sorted by bin of side r / SPLIT; :meth:`pairs` finds a batch's weights."""

    def __init__(self, centroids: Any, volumes: Any, radius: float, xp: Any):
        self.xp, self.radius = xp, radius
        self.c = c = xp.asarray(centroids, dtype=xp.float64)
        self.v = xp.asarray(volumes, dtype=xp.float64)
        self.n, dim = (int(s) for s in c.shape)
        self.dim = dim
        self.side = side = radius / SPLIT
        self.lo = c.min(axis=0) if self.n else xp.zeros(dim)
        self.bins = xp.floor((c - self.lo) / side).astype(xp.int64)  # (n, dim) bin coordinates
        shape = [int(s) + 1 for s in (self.bins.max(axis=0) if self.n
                                      else xp.zeros(dim, dtype=xp.int64))]
        if float(np.prod([float(s) for s in shape])) >= 2.0**62:
            raise ValueError(f"the filter radius {radius:g} is too small for the mesh's "
                             "extent to hash its cells")
        self.stride = xp.asarray([int(np.prod(shape[d + 1:])) for d in range(dim)],
                                 dtype=xp.int64)
        self.upper = xp.asarray(shape, dtype=xp.int64)
        key = (self.bins * self.stride).sum(axis=1)
        self.order = _stable_argsort(xp, key)
        self.sorted_key = key[self.order]
        self.steps = xp.arange(-SPLIT, SPLIT + 1, dtype=xp.int64)

    def pairs(self, a: int, b: int, ordered: bool = True) -> tuple[Any, Any, Any]:
        """The weights of rows a..b-1 in CSR order (``ordered``; else in no order, for
        counting): (row - a (int64), column (int32), weight)."""
        xp, c, side, radius = self.xp, self.c, self.side, self.radius
        width = int(self.steps.shape[0])
        m = width**self.dim  # neighbouring bins of a cell, (offset_0, ...) in order
        slack = 1e-9 * side  # a centroid may sit a rounding error outside its bin
        # per axis: the neighbouring bins' coordinate, whether it exists, its part of the
        # bin's key and the squared gap between the centroid and the bin's slab
        near = self.bins[a:b, :, None] + self.steps  # (b - a, dim, width)
        box_lo = self.lo[None, :, None] + near * side
        centre = c[a:b, :, None]
        gap = xp.maximum(xp.maximum(box_lo - centre, centre - (box_lo + side)) - slack, 0.0)
        exists = (near >= 0) & (near < self.upper[None, :, None])
        part = near * self.stride[None, :, None]
        del box_lo, centre
        # the bins around each cell: the axes' parts combined, (b - a, width, ..., width)
        near_key, gap2, valid = part[:, 0], gap[:, 0] ** 2, exists[:, 0]
        for d in range(1, self.dim):
            along = (b - a,) + (1,) * d + (width,)
            near_key = near_key[..., None] + part[:, d].reshape(along)
            gap2 = gap2[..., None] + gap[:, d].reshape(along) ** 2
            valid = valid[..., None] & exists[:, d].reshape(along)
        # the bins that exist and whose box comes closer than r to the cell's centroid
        valid = (valid & (gap2 < radius * radius)).reshape(-1)
        near_key = near_key.reshape(-1)
        del near, gap, exists, part, gap2
        start = xp.searchsorted(self.sorted_key, near_key, side="left")
        count = xp.where(valid, xp.searchsorted(self.sorted_key, near_key, side="right")
                         - start, 0)
        end = xp.cumsum(count)
        total = int(end[-1]) if end.shape[0] else 0
        t = xp.arange(total, dtype=xp.int64)
        pair = xp.searchsorted(end, t, side="right")  # the (cell, bin) pair of candidate t
        j = self.order[start[pair] + t - (end[pair] - count[pair])]
        i = pair // m
        del t, pair
        w = radius - xp.sqrt(((c[a + i] - c[j]) ** 2).sum(axis=1))
        keep = xp.flatnonzero(w > CUT * radius)
        i, j = i[keep], j[keep]
        w = w[keep] * self.v[j]
        if not ordered:
            return i, j, w
        row_major = _stable_argsort(xp, i * self.n + j)
        return i[row_major], j[row_major].astype(xp.int32), w[row_major]


def centroids_and_volumes(mesh: Any, xp: Any) -> tuple[Any, Any]:
    """(n, dim) centroids and (n,) volumes of the cells of ``mesh`` (a mesh from a file),
    computed on ``xp`` from its points and cells: on NumPy the volumes are
    :func:`femopt.assembly.elements.cell_measures`' (the host's
    :func:`femopt.objectives.base.cell_volumes`); on CuPy the same sum of det J w over
    the element's quadrature points, on the device (``cell_measures`` runs on NumPy
    only)."""
    from femopt.assembly.elements import cell_measures, get_element

    el = get_element(mesh.cell_type)
    coords = xp.asarray(mesh.points, dtype=xp.float64)[xp.asarray(mesh.cells)]
    centroids = coords.mean(axis=1)
    if xp is np:
        return centroids, cell_measures(el, coords)
    return centroids, quadrature_volumes(el, coords, xp)


def quadrature_volumes(el: Any, coords: Any, xp: Any) -> Any:
    """(n,) sums of det J w over ``el``'s quadrature points of the cells ``coords``
    (n, nodes, dim) on ``xp`` (CuPy's; the tests run it on NumPy against
    ``cell_measures``)."""
    dn = xp.asarray(el.grad(el.quad_points))  # (q, nodes, dim)
    jac = xp.einsum("cnd,qne->cqde", coords, dn)
    wdet = xp.linalg.det(jac) * xp.asarray(el.quad_weights)[None, :]
    return wdet.sum(axis=1)
