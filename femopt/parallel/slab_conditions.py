"""A slab's share of the conditions of a distributed grid run, from index arrays.

The supports reach each rank as the sorted internal grid-layout positions of the fine
level's constrained dofs (O(surface)); each multigrid level's constrained dofs follow
from them by :func:`coarse_fixed_index` (equal to
:func:`femopt.solvers.multigrid_transfer.coarse_fixed` of the whole mask), and a level's
slab keeps only its kept nodes' part (:func:`kept_mask`). The random probe of a level's
eigenvalue estimate is drawn as one whole-level stream, as before, but only the slab's
part of it is kept (:func:`kept_normal`). Springs and linear functionals come by
their nonzeros and the slab places its part (:func:`kept_values`). No array of a whole
level's size is made on a distributed level.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from femopt.assembly.grid_layout import GridLayout

_CHUNK = 1 << 20  # draws skipped at a time


def coarse_fixed_index(fine: GridLayout, index: np.ndarray) -> np.ndarray:
    """The constrained dofs of the next coarser level (sorted grid-layout positions) from
    the fine level's ``index``: coarse node i along an axis is constrained where fine
    node 2i-1, 2i or 2i+1 is (same component), i.e. fine node j marks j // 2 and
    (j + 1) // 2."""
    index = np.asarray(index, dtype=np.int64)
    coarse = fine.coarsened()
    comp, node = np.divmod(index, fine.n_nodes)
    coords = []
    for n in fine.node_shape:  # x first
        coords.append(node % n)
        node = node // n
    strides = np.cumprod((1,) + coarse.node_shape[:-1])
    parts = []
    for up in np.ndindex(*(2,) * fine.dim):  # j // 2 or (j + 1) // 2 on each axis
        node = sum(((j + u) // 2) * s for j, u, s in zip(coords, up, strides))
        parts.append(comp * coarse.n_nodes + node)
    out = np.concatenate(parts)
    return np.unique(out)


def kept_mask(slab: Any, index: np.ndarray) -> Any:
    """Bool (kept dofs,) of ``slab``: True at the whole-level positions ``index``."""
    which, local = slab.kept_positions(index)
    mask = np.zeros(slab.local.n_dofs, dtype=bool)
    mask[local] = True
    return slab.xp.asarray(mask)


def kept_values(slab: Any, index: np.ndarray, values: np.ndarray,
                fill: float = 0.0) -> np.ndarray:
    """Float64 (kept dofs,) of ``slab`` on the host: ``values`` at the whole-level
    positions ``index``, ``fill`` elsewhere (the kept part of that whole vector)."""
    which, local = slab.kept_positions(index)
    out = np.full(slab.local.n_dofs, float(fill))
    out[local] = np.asarray(values, dtype=np.float64)[which]
    return out


def _skip(rng: np.random.Generator, n: int) -> None:
    while n > 0:
        m = min(n, _CHUNK)
        rng.standard_normal(m)
        n -= m


def kept_normal(rng: np.random.Generator, slab: Any, dtype: Any) -> Any:
    """``slab.node_part(rng.standard_normal(n_dofs).astype(dtype))`` of the slab's
    whole level, drawing the same stream in pieces and keeping the kept node layers
    only."""
    lay = slab.layout
    p = slab.layer_nodes
    g0, g1 = slab.nodes
    n_layers = lay.node_shape[-1]
    out = np.empty((lay.k, g1 - g0, p), dtype=dtype)
    for c in range(lay.k):
        _skip(rng, g0 * p)
        out[c] = rng.standard_normal((g1 - g0) * p).astype(dtype).reshape(g1 - g0, p)
        _skip(rng, (n_layers - g1) * p)
    return slab.xp.asarray(out.reshape(-1))
