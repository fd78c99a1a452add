"""How a distributed run cuts its grid over ranks: the axis, the multigrid levels in the
internal order, the slabs' bounds, and a rank's GPU memory.

:func:`grid_plan` plans a grid from what the cut depends on (its shape, the dofs per
node, a filter's reach per axis, the multigrid options); :func:`rank_plan` plans a built
model's grid with it (the distributed path, the launcher's check of a rank count), and
the 8-GPU model of ``benchmarks/mpi_gpu_model.py`` plans its grids, too large to build,
with :func:`grid_plan` directly. The levels are built once, in the plan: the path's
:class:`~femopt.parallel.multigrid.SlabMultigrid` and :func:`slab_bytes` take them from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from femopt.assembly.grid_layout import GridLayout
from femopt.errors import InputError
from femopt.parallel.orientation import Orientation
from femopt.parallel.slabs import choose_axis, largest_size, plan
from femopt.solvers.multigrid_levels import MultigridOptions, grid_levels


@dataclass(frozen=True)
class RankPlan:
    """A grid cut over ranks.

    Attributes:
        orient: the cut axis (:class:`~femopt.parallel.orientation.Orientation`).
        levels: the multigrid hierarchy of the internal grid, finest first.
        bounds: the fine level's cell-layer bounds, one more than the ranks.
        distributed: how many V-cycle levels are cut (the rest replicated).
    """

    orient: Orientation
    levels: tuple[GridLayout, ...]
    bounds: tuple[int, ...]
    distributed: int

    @property
    def layout(self) -> GridLayout:
        """The internal grid (the finest level)."""
        return self.levels[0]


def filter_reach(model: Any) -> tuple[int, ...]:
    """Per model axis, the cells a filter reaches (the ghost width it needs)."""
    grid = model.mesh.grid
    reach = [1] * len(grid.shape)
    for f in model.filters:
        r = getattr(getattr(f, "options", None), "radius", None)
        if r is not None:
            for a, h in enumerate(grid.spacing):
                reach[a] = max(reach[a], int(np.ceil(float(r) / h)))
    return tuple(reach)


def grid_plan(shape: tuple[int, ...], k: int, reach: tuple[int, ...],
              options: MultigridOptions, size: int) -> RankPlan:
    """The plan of a grid of ``shape`` cells (model order), ``k`` dofs per node, ghost
    layers ``reach`` per axis, on ``size`` ranks; InputError naming the largest rank count
    that works when ``size`` is too many (slabs thinner than a filter's reach or than one
    cell)."""
    shape = tuple(int(n) for n in shape)
    model_levels = grid_levels(GridLayout(shape, k), options.coarsest_size, options.levels)
    orient = Orientation(shape, choose_axis(shape, reach, len(model_levels)))
    # halving commutes with reordering the axes: the same hierarchy, reordered
    levels = tuple(GridLayout(orient.internal(lay.shape), k) for lay in model_levels)
    n_layers, halo = levels[0].shape[-1], reach[orient.axis]
    p = plan(n_layers, len(levels), size, halo)
    if p is None:
        most = largest_size(n_layers, len(levels), halo)
        raise InputError(
            f"{size} ranks are too many for this grid: cut along axis "
            f"{'xyz'[orient.axis]} ({n_layers} cells) into slabs of at least {halo} "
            f"cell layer(s) (the filter's reach), it takes at most {most} rank(s); run "
            f"with -n {most} or fewer")
    return RankPlan(orient, levels, tuple(p[0]), p[1])


def rank_plan(model: Any, size: int) -> RankPlan:
    """The plan of ``model``'s grid (its physics' dofs per node, its filters' reach, its
    multigrid options) on ``size`` ranks; InputError when ``size`` is too many."""
    return grid_plan(model.mesh.grid.shape, model.physics.dofs_per_node,
                     filter_reach(model), model.solver.options, size)


def slab_bytes(model: Any, partition: RankPlan, local: GridLayout) -> int:
    """GPU memory of a rank of ``partition`` whose slab (halo layers included) has the
    layout ``local`` (bytes, an estimate). The distributed multigrid's CG is float64 (its
    V-cycle in the solver's precision), so a slab is counted as the grid path's double
    Krylov; the coarsest level is the plan's, the whole grid's (a slab with its halo
    layers need not coarsen as often as the grid). A rank keeps its bounds and start as
    arrays of its cells (``local_design_of``)."""
    from femopt.evaluation.grid_device import estimate_bytes

    return estimate_bytes(local, len(model.load_nonzeros), model, krylov="double",
                          n_coarse=partition.levels[-1].n_dofs, fixed_design=True, slab=True)
