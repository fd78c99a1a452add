"""Slabs of a structured grid: which axis is cut, each rank's part of one grid level with
its ghost layers, halo exchange, and the multigrid transfers on slabs.

**Orientation.** A distributed run cuts the grid along one axis, the one that allows the
most ranks (:func:`choose_axis`). Internally that axis is made the slowest one (the
*internal* grid: the cut axis last, the others in their order), so that a slab is a
contiguous block of every per-cell array and of every component of a grid-layout node
array. :class:`~femopt.parallel.orientation.Orientation` maps cell and node arrays, dof
vectors and the element matrix K0 (its corners renumbered; the components keep their
meaning) between the model's order and the internal one.

**A slab** (:class:`Slab`) of one level: rank r owns the cell layers [o0, o1) of the cut
axis and the node layers [o0, o1) (the last rank also the last node layer). It keeps the
cells [o0 - 1, o1) and the nodes [o0 - 1, o1 + 1) (clipped to the grid): one ghost node
layer on each side and one ghost cell layer below, exactly the cells around its own
nodes. So an operator applied on the slab gives every owned node its value with the
cells summed in the same order as on one rank, and after a halo exchange the ghost
layers hold the neighbours' values: every entry of every vector is the same number
whatever the rank count. A *replicated* slab (the coarse levels below the distributed
ones) owns the whole level on every rank.

**Transfers.** Restriction computes coarse node i on the rank that owns fine node 2i,
from fine nodes 2i - 1, 2i, 2i + 1 (its ghosts); coarse cell j's Galerkin matrix on the
rank that owns fine cell 2j + 1 (fine cell 2j is in its slab, a ghost at worst). What a
rank computed is then its own part of the coarse slab (the partitions nest: coarse
bounds are half the fine ones) or gathered into a replicated one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from femopt.assembly.grid_layout import GridLayout
from femopt.backend import array_namespace
from femopt.parallel.comm import SERIAL, Comm
from femopt.solvers.multigrid_transfer import _prolong_axis, _restrict_axis


# -- the rank count ---------------------------------------------------------------------

def split(n_blocks: int, size: int) -> list[int]:
    """Block bounds of ``size`` parts of ``n_blocks`` blocks, as even as can be."""
    return [r * n_blocks // size for r in range(size + 1)]


def plan(n_layers: int, levels: int, size: int, halo: int) -> tuple[list[int], int] | None:
    """Cell-layer bounds of the fine level on ``size`` ranks and the number of V-cycle
    levels distributed with them, or None when ``size`` ranks cannot share ``n_layers``
    layers (a slab thinner than ``halo`` layers, or than one layer).

    The bounds are multiples of 2^(D-1) for the D distributed levels, D as large as the
    slabs allow (at most ``levels - 1``: the coarsest level is solved whole on every
    rank); the levels below are replicated."""
    if size > n_layers or n_layers // size < max(halo, 1):
        return None
    best = None
    for d in range(1, max(levels - 1, 1) + 1):
        unit = 2 ** (d - 1)
        if n_layers % unit or n_layers // unit < size:
            break
        bounds = [b * unit for b in split(n_layers // unit, size)]
        if min(b - a for a, b in zip(bounds, bounds[1:])) < max(halo, 1):
            break
        best = (bounds, d if levels > 1 else 0)
    return best


def largest_size(n_layers: int, levels: int, halo: int) -> int:
    """The largest rank count :func:`plan` accepts."""
    for size in range(n_layers, 0, -1):
        if plan(n_layers, levels, size, halo) is not None:
            return size
    return 1


def choose_axis(shape: tuple[int, ...], halo: tuple[int, ...], levels: int) -> int:
    """The axis cut into slabs: the one that allows the most ranks; on a tie the slowest
    (no reordering of the arrays)."""
    best, axis = -1, len(shape) - 1
    for a in range(len(shape) - 1, -1, -1):
        n = largest_size(shape[a], levels, halo[a])
        if n > best:
            best, axis = n, a
    return axis


# -- one level's slab -------------------------------------------------------------------

@dataclass
class Slab:
    """Rank ``comm.rank``'s part of the level ``layout`` (internal order), cut into the
    cell layers ``bounds`` (one entry per rank and one more); ``comm`` SERIAL with bounds
    [0, n] for a replicated level. Its vectors are arrays of ``xp`` (NumPy, or CuPy on
    the GPU path)."""

    layout: GridLayout
    comm: Comm
    bounds: Sequence[int]
    _cache: dict = field(default_factory=dict, repr=False)
    xp: Any = field(default=np, repr=False)
    label: str = "level 0"  # its halos' label in the communication counts

    @classmethod
    def replicated(cls, layout: GridLayout, xp: Any = np) -> "Slab":
        return cls(layout, SERIAL, [0, layout.shape[-1]], xp=xp)

    @property
    def distributed(self) -> bool:
        return self.comm.size > 1

    @property
    def n_layers(self) -> int:
        return self.layout.shape[-1]

    @property
    def last(self) -> bool:
        return self.comm.rank == self.comm.size - 1

    @property
    def own(self) -> tuple[int, int]:
        """Owned cell layers [o0, o1) (global)."""
        r = self.comm.rank
        return self.bounds[r], self.bounds[r + 1]

    @property
    def own_nodes(self) -> tuple[int, int]:
        """Owned node layers [n0, n1) (global)."""
        o0, o1 = self.own
        return o0, o1 + (1 if self.last else 0)

    @property
    def cells(self) -> tuple[int, int]:
        """Cell layers kept [c0, c1) (owned and the ghost layer below)."""
        o0, o1 = self.own
        return max(o0 - 1, 0), o1

    @property
    def nodes(self) -> tuple[int, int]:
        """Node layers kept [g0, g1)."""
        c0, c1 = self.cells
        return c0, c1 + 1

    @cached_property
    def local(self) -> GridLayout:
        """The layout of the kept cells and nodes."""
        c0, c1 = self.cells
        return self.layout.with_layers(c1 - c0)

    @property
    def layer_nodes(self) -> int:
        """Nodes per node layer."""
        return int(np.prod(self.layout.node_shape[:-1]))

    @property
    def layer_cells(self) -> int:
        return int(np.prod(self.layout.shape[:-1]))

    @property
    def own_node_slice(self) -> slice:
        """Owned node layers in local numbering."""
        n0, n1 = self.own_nodes
        g0 = self.nodes[0]
        return slice(n0 - g0, n1 - g0)

    @property
    def own_cell_slice(self) -> slice:
        """Owned cells in local cell numbering (a range of cells, layers times cells per
        layer)."""
        o0, o1 = self.own
        c0 = self.cells[0]
        p = self.layer_cells
        return slice((o0 - c0) * p, (o1 - c0) * p)

    @property
    def n_own_cells(self) -> int:
        o0, o1 = self.own
        return (o1 - o0) * self.layer_cells

    # -- node vectors (grid layout of the kept nodes) -----------------------------------

    def layers(self, v: np.ndarray) -> np.ndarray:
        """(k, kept node layers, nodes per layer) view of a local node vector."""
        return v.reshape(self.layout.k, -1, self.layer_nodes)

    def node_part(self, full: np.ndarray) -> np.ndarray:
        """The kept part of a whole-level node vector (grid layout), a copy: the whole
        vector is not kept alive by it."""
        g0, g1 = self.nodes
        p = self.layer_nodes
        part = full.reshape(self.layout.k, -1, p)[:, g0:g1]
        return self.xp.asarray(array_namespace(full).array(part, order="C").reshape(-1))

    def kept_positions(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(which, local): which of the whole-level node-vector positions ``index``
        (grid layout, host) lie in the kept node layers, and their local positions
        there (the positions :meth:`node_part` moves them to)."""
        g0, g1 = self.nodes
        p, n = self.layer_nodes, self.layout.n_nodes
        comp, node = np.divmod(np.asarray(index, dtype=np.int64), n)
        layer = node // p
        which = (layer >= g0) & (layer < g1)
        local = comp * ((g1 - g0) * p) + node - g0 * p
        return which, local[which]

    def cell_part(self, full: np.ndarray, kept: bool = False) -> np.ndarray:
        """The owned (or with ``kept`` the kept) part of a whole-level cell array, a copy."""
        a, b = self.cells if kept else self.own
        p = self.layer_cells
        return self.xp.asarray(array_namespace(full).array(full[a * p:b * p], order="C"))

    def exchange(self, v: np.ndarray) -> np.ndarray:
        """Fill the ghost node layers of ``v`` (in place) from the neighbours' owned
        ones."""
        if not self.distributed:
            return v
        self.comm.counts.exchange(self.label)
        a = self.layers(v).transpose(1, 0, 2)  # (layers, k, p)
        r, size = self.comm.rank, self.comm.size
        below = r - 1 if r > 0 else None
        above = r + 1 if r < size - 1 else None
        own = self.own_node_slice
        n = a.shape[0]
        # upwards: my last owned layer to the rank above, the ghost below from below;
        # downwards: my first owned layer to the rank below, the ghost above from above.
        # The layers are views (k rows of a component's nodes each): the communicator
        # copies them as its transport needs
        self.comm.exchange([(a[own.stop - 1] if above is not None else None, above,
                             a[0] if below is not None else None, below, 11),
                            (a[own.start] if below is not None else None, below,
                             a[n - 1] if above is not None else None, above, 12)],
                           label=self.label)
        return v

    def exchange_cells(self, a: np.ndarray) -> np.ndarray:
        """Fill the ghost cell layer below of a kept-cells array (cells first) in place."""
        if not self.distributed:
            return a
        label = f"{self.label} cells"
        self.comm.counts.exchange(label)
        r, size = self.comm.rank, self.comm.size
        p = self.layer_cells
        g = a.reshape((-1, p) + a.shape[1:])
        below = r - 1 if r > 0 else None
        above = r + 1 if r < size - 1 else None
        recv = self.xp.empty(g.shape[1:], dtype=a.dtype) if below is not None else None
        self.comm.sendrecv(g[-1] if above is not None else None, above, recv, below,
                           tag=13, label=label)
        if recv is not None:
            g[0] = recv
        return a

    def gather_nodes(self, v: np.ndarray, root_only: bool = False) -> np.ndarray | None:
        """The whole-level node vector from every rank's owned layers."""
        xp = self.xp
        own = xp.ascontiguousarray(self.layers(v)[:, self.own_node_slice].transpose(1, 0, 2))
        full = (self.comm.gather_rows(own) if root_only
                else self.comm.allgather_rows(own, self.rank_layers(nodes=True)))
        if full is None:
            return None
        return array_namespace(full).ascontiguousarray(full.transpose(1, 0, 2)).reshape(-1)

    def gather_cells(self, a: np.ndarray, root_only: bool = False) -> np.ndarray | None:
        """The whole-level cell array from every rank's owned cells (``a``: owned cells
        first)."""
        if root_only:
            return self.comm.gather_rows(a)
        return self.comm.allgather_rows(a, [n * self.layer_cells for n in self.rank_layers()])

    def dots(self, pairs: list[tuple[np.ndarray, np.ndarray]], label: str = "other"
             ) -> list[float]:
        """Dot products of local node vectors over the owned nodes, the same on every rank
        and for every rank count (per-layer sums added in global layer order); one
        reduction, counted under ``label``."""
        return [float(t) for t in self.comm.sum_layers(self.dot_partials(pairs), label,
                                                        self.rank_layers(nodes=True))]

    def dot_partials(self, pairs: list[tuple[np.ndarray, np.ndarray]]) -> Any:
        """The per-layer sums of :meth:`dots` on this rank: (len(pairs), owned node
        layers)."""
        k, sl = self.layout.k, self.own_node_slice
        parts = []
        for a, b in pairs:
            prod = self.layers(a)[:, sl] * self.layers(b)[:, sl]  # (k, layers, p)
            s = add_reduce(prod, 2)
            acc = s[0].copy()
            for c in range(1, k):
                acc += s[c]
            parts.append(acc)
        return self.xp.stack(parts)

    def rank_layers(self, nodes: bool = False) -> list[int]:
        """Every rank's owned cell layers (or node layers: the last rank's one more)."""
        counts = np.diff(self.bounds).tolist()
        if nodes:
            counts[-1] += 1
        return counts

    def rank_halves(self, nodes: bool = False) -> list[int]:
        """Every rank's share of the level below, by :func:`restrict` and
        :func:`coarse_cells`: coarse node layers i with 2i owned (``nodes``), or coarse
        cell layers j with 2j + 1 owned."""
        b = np.asarray(self.bounds)
        if not nodes:
            return np.diff(b // 2).tolist()
        ends = b.copy()
        ends[-1] += 1
        return (-(-ends[1:] // 2) + (-b[:-1] // 2)).tolist()

    def cell_dots(self, pairs: list[tuple[np.ndarray, np.ndarray]], label: str = "other"
                  ) -> list[float]:
        """Dot products of owned-cell arrays, as :meth:`dots`."""
        p = self.layer_cells
        parts = [add_reduce((a * b).reshape(-1, p), 1) for a, b in pairs]
        return [float(t) for t in self.comm.sum_layers(self.xp.stack(parts), label,
                                                        self.rank_layers())]


def dots_together(items: list[tuple[Slab, list[tuple[Any, Any]]]], label: str = "other"
                  ) -> list[list[float]]:
    """:meth:`Slab.dots` of several slabs (``(slab, pairs)`` each: the levels of one
    hierarchy), the distributed ones' by one reduction: the same numbers, bit for bit,
    as one call per slab."""
    out: list[list[float] | None] = [None] * len(items)
    shared = [i for i, (slab, _) in enumerate(items) if slab.distributed]
    for i, (slab, pairs) in enumerate(items):
        if i not in shared:
            out[i] = slab.dots(pairs, label)
    if shared:
        comm = items[shared[0]][0].comm
        if any(items[i][0].comm is not comm for i in shared):
            raise ValueError("dots_together: the distributed slabs have different "
                             "communicators")
        totals = comm.sum_groups([(items[i][0].dot_partials(items[i][1]),
                                   items[i][0].rank_layers(nodes=True)) for i in shared],
                                 label)
        for i, t in zip(shared, totals):
            out[i] = [float(v) for v in t]
    return out  # type: ignore[return-value]


def add_reduce(a: Any, axis: int) -> Any:
    """Sums along ``axis``: NumPy's pairwise ``add.reduce`` on the host (the order the
    rank-count independence relies on), ``sum`` in float64 on the device."""
    if isinstance(a, np.ndarray):
        return np.add.reduce(a, axis=axis)
    return array_namespace(a).sum(a, axis=axis, dtype=np.float64)


# -- transfers between the slabs of two levels -------------------------------------------

def restrict(fine: Slab, coarse: Slab, vf: np.ndarray, free_c: np.ndarray) -> np.ndarray:
    """D_c P^T vf on the coarse slab (ghosts filled): ``vf`` a fine local vector with its
    ghosts filled."""
    n0, n1 = fine.own_nodes
    lo, hi = -(-n0 // 2), -(-n1 // 2)  # coarse nodes i with 2i owned here
    f = fine.layers(vf).reshape((fine.layout.k, -1) + fine.layout.node_shape[-2::-1])
    g0 = fine.nodes[0]
    nz = fine.n_layers
    c = f[:, 2 * lo - g0:2 * (hi - 1) - g0 + 1:2].copy()
    up_end = min(hi, nz // 2)  # 2i + 1 <= nz
    if up_end > lo:
        c[:, :up_end - lo] += 0.5 * f[:, 2 * lo + 1 - g0:2 * (up_end - 1) + 2 - g0:2]
    dn = max(lo, 1)
    if hi > dn:
        c[:, dn - lo:] += 0.5 * f[:, 2 * dn - 1 - g0:2 * (hi - 1) - g0:2]
    for axis in range(2, fine.layout.dim + 1):
        c = _restrict_axis(c, axis)
    c = c.reshape(fine.layout.k, hi - lo, coarse.layer_nodes)
    return _to_coarse(fine, coarse, c, lo, hi, free_c)


def _to_coarse(fine: Slab, coarse: Slab, c: np.ndarray, lo: int, hi: int,
               free_c: np.ndarray | None) -> np.ndarray:
    """Coarse node layers [lo, hi) computed here, (k, hi - lo, p), into the coarse slab's
    local vector."""
    xp = coarse.xp
    if coarse.distributed:
        out = xp.zeros(coarse.local.n_dofs, dtype=c.dtype)
        assert (lo, hi) == coarse.own_nodes, (lo, hi, coarse.own_nodes)
        coarse.layers(out)[:, coarse.own_node_slice] = c
        if free_c is not None:
            out *= free_c
        return coarse.exchange(out)
    full = fine.comm.allgather_rows(xp.ascontiguousarray(c.transpose(1, 0, 2)),
                                    fine.rank_halves(nodes=True))
    out = xp.ascontiguousarray(full.transpose(1, 0, 2)).reshape(-1)
    if free_c is not None:
        out *= free_c
    return out


def prolong_add(coarse: Slab, fine: Slab, xc: np.ndarray, xf: np.ndarray) -> np.ndarray:
    """xf += P xc on the fine slab's kept nodes (``xc`` with its ghosts filled)."""
    g0, g1 = fine.nodes
    a0, a1 = g0 // 2, g1 // 2 + 1  # coarse layers used
    c0 = coarse.nodes[0]
    c = coarse.layers(xc).reshape((coarse.layout.k, -1) + coarse.layout.node_shape[-2::-1])
    sub = _prolong_axis(c[:, a0 - c0:a1 - c0], 1)  # fine layers [2 a0, 2 a1 - 1)
    sub = sub[:, g0 - 2 * a0:g1 - 2 * a0]
    for axis in range(2, coarse.layout.dim + 1):
        sub = _prolong_axis(sub, axis)
    xf += sub.reshape(-1)
    return xf


def coarse_cells(fine: Slab, coarse: Slab, compute: Any, kept: np.ndarray,
                 tail: tuple[int, ...]) -> np.ndarray:
    """A coarse level's per-cell data on its slab (kept cells, ghost filled).

    ``compute(sub_layout, sub)`` gives the coarse cells of the fine cells ``sub`` (whole
    coarse layers: fine layers [2 j0, 2 j1)), from the fine slab's kept cells ``kept``;
    coarse cell j is computed on the rank that owns fine cell 2j + 1 (``tail``: the shape
    of one cell's data)."""
    o0, o1 = fine.own
    j0, j1 = o0 // 2, o1 // 2
    c0 = fine.cells[0]
    p = fine.layer_cells
    sub = kept[(2 * j0 - c0) * p:(2 * j1 - c0) * p]
    sub_layout = fine.layout.with_layers(max(2 * (j1 - j0), 1))
    xp = fine.xp
    mine = (compute(sub_layout, sub) if j1 > j0
            else xp.empty((0,) + tuple(tail), dtype=kept.dtype))
    if coarse.distributed:
        assert (j0, j1) == coarse.own, ((j0, j1), coarse.own)
        out = xp.empty((coarse.local.n_cells,) + mine.shape[1:], dtype=mine.dtype)
        out[coarse.own_cell_slice] = mine
        return coarse.exchange_cells(out)
    return fine.comm.allgather_rows(mine, [n * coarse.layer_cells
                                           for n in fine.rank_halves()])
