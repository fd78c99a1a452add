"""A radius filter's weights on a mesh from a file, found on the device by cell hashing.

The host finds the pairs of cells whose centroids lie within the radius r with a KD-tree
(:func:`femopt.filters.base.radius_weights`). On the device the centroids are hashed into
bins of side r / 2 instead: a cell's neighbours within r lie in the 5^dim bins around its
own, of which only those whose box comes closer than r to the centroid are searched. The
cells are sorted by bin once; for a batch of cells, the candidates of each (cell,
neighbouring bin) pair are the sorted run of that bin (found by ``searchsorted``), laid
out one after the other, and the pairs closer than r keep the
cone weight (r - |c_i - c_j|) v_j, v_j the neighbour's volume, as the host's. Each batch's
pairs are sorted by (row, column), so the rows come out in CSR order. Everything runs on
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
    c = xp.asarray(centroids, dtype=xp.float64)
    v = xp.asarray(volumes, dtype=xp.float64)
    n, dim = (int(s) for s in c.shape)
    side = radius / SPLIT
    lo = c.min(axis=0) if n else xp.zeros(dim)
    bins = xp.floor((c - lo) / side).astype(xp.int64)  # (n, dim) bin coordinates
    shape = [int(s) + 1 for s in (bins.max(axis=0) if n else xp.zeros(dim, dtype=xp.int64))]
    if float(np.prod([float(s) for s in shape])) >= 2.0**62:
        raise ValueError(f"the filter radius {radius:g} is too small for the mesh's extent "
                         "to hash its cells")
    strides = [int(np.prod(shape[d + 1:])) for d in range(dim)]
    stride = xp.asarray(strides, dtype=xp.int64)
    upper = xp.asarray(shape, dtype=xp.int64)
    key = (bins * stride).sum(axis=1)
    order = _stable_argsort(xp, key)
    sorted_key = key[order]
    del key
    steps = xp.arange(-SPLIT, SPLIT + 1, dtype=xp.int64)
    width = int(steps.shape[0])
    m = width**dim  # neighbouring bins of a cell, (offset_0, ..., offset_dim-1) in order
    slack = 1e-9 * side  # a centroid may sit a rounding error outside its bin
    rows, cols, weights = [], [], []
    for a in range(0, n, batch):
        b = min(a + batch, n)
        # per axis: the neighbouring bins' coordinate, whether it exists, its part of the
        # bin's key and the squared gap between the centroid and the bin's slab
        near = bins[a:b, :, None] + steps  # (b - a, dim, width)
        box_lo = lo[None, :, None] + near * side
        centre = c[a:b, :, None]
        gap = xp.maximum(xp.maximum(box_lo - centre, centre - (box_lo + side)) - slack, 0.0)
        exists = (near >= 0) & (near < upper[None, :, None])
        part = near * stride[None, :, None]
        del box_lo, centre
        # the bins around each cell: the axes' parts combined, (b - a, width, ..., width)
        near_key, gap2, valid = part[:, 0], gap[:, 0] ** 2, exists[:, 0]
        for d in range(1, dim):
            along = (b - a,) + (1,) * d + (width,)
            near_key = near_key[..., None] + part[:, d].reshape(along)
            gap2 = gap2[..., None] + gap[:, d].reshape(along) ** 2
            valid = valid[..., None] & exists[:, d].reshape(along)
        # the bins that exist and whose box comes closer than r to the cell's centroid
        valid = (valid & (gap2 < radius * radius)).reshape(-1)
        near_key = near_key.reshape(-1)
        del near, gap, exists, part, gap2
        start = xp.searchsorted(sorted_key, near_key, side="left")
        count = xp.where(valid, xp.searchsorted(sorted_key, near_key, side="right") - start, 0)
        end = xp.cumsum(count)
        total = int(end[-1]) if end.shape[0] else 0
        t = xp.arange(total, dtype=xp.int64)
        pair = xp.searchsorted(end, t, side="right")  # the (cell, bin) pair of candidate t
        j = order[start[pair] + t - (end[pair] - count[pair])]
        i = a + pair // m
        del t, pair
        w = radius - xp.sqrt(((c[i] - c[j]) ** 2).sum(axis=1))
        keep = xp.flatnonzero(w > CUT * radius)
        i, j = i[keep], j[keep]
        w = w[keep] * v[j]
        row_major = _stable_argsort(xp, (i - a) * n + j)
        rows.append(i[row_major])
        cols.append(j[row_major].astype(xp.int32))
        weights.append(w[row_major])
    row = xp.concatenate(rows) if rows else xp.zeros(0, dtype=xp.int64)
    indices = xp.concatenate(cols) if cols else xp.zeros(0, dtype=xp.int32)
    data = xp.concatenate(weights) if weights else xp.zeros(0)
    wide = int(data.shape[0]) >= 2**31
    indptr = xp.zeros(n + 1, dtype=xp.int64 if wide else xp.int32)  # cuSPARSE: int32
    indptr[1:] = xp.cumsum(xp.bincount(row, minlength=n)).astype(indptr.dtype)
    hs = xp.bincount(row, weights=data, minlength=n)
    return indptr, indices, data, hs


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
