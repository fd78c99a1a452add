"""The cut of a distributed run's grid (femopt.parallel.partition): the plan builds the
multigrid levels once, and a rank's memory estimate takes the coarsest level from it."""

from __future__ import annotations

import pytest

from femopt.evaluation.build import build_model
from femopt.evaluation.grid_device import MEMORY_MARGIN, estimate_bytes
from femopt.parallel import partition
from femopt.solvers.multigrid_levels import grid_levels
from femopt.parallel.slabs import Slab
from test_distributed import CANTILEVER


class _Rank:
    def __init__(self, rank: int, size: int):
        self.rank, self.size = rank, size


# (shape, coarsest_size, the coarsest level's dofs): the grid halved while a level has
# more than coarsest_size dofs (3 a node) and every axis an even number of cells
HIERARCHIES = [
    ((24, 8, 4), 300, 7 * 3 * 2 * 3),  # 3375, 585 dofs, then 6 x 2 x 1 cells
    ((40, 16, 8), 5000, 21 * 9 * 5 * 3),  # 18819 dofs, then 20 x 8 x 4 cells
    ((24, 48, 16), 1000, 4 * 7 * 3 * 3),  # 62475, 8775, 1365, then 3 x 6 x 2 (odd)
]


@pytest.mark.parametrize("shape, coarsest_size, n_coarse", HIERARCHIES)
def test_a_rank_estimate_counts_the_whole_grids_coarsest_level(
        shape, coarsest_size, n_coarse, write_problem, monkeypatch):
    """Every rank's estimate (1 to 4 ranks) is its slab's with the whole grid's coarsest
    level, as derived above, and its bounds and start as arrays (a rank keeps them so:
    three float64 per cell more than constants); the hierarchy is built once, by the plan
    (in the model's order, then reordered), none by the estimate nor by the path's
    multigrid."""
    from femopt.parallel.comm import SERIAL
    from femopt.parallel.path import DistributedGridPath

    nx, ny, nz = shape
    text = (CANTILEVER.replace("[24, 8, 4], size: [24.0, 8.0, 4.0]",
                               f"[{nx}, {ny}, {nz}], size: [{nx}.0, {ny}.0, {nz}.0]")
            .replace("coarsest_size: 300", f"coarsest_size: {coarsest_size}"))
    model = build_model(write_problem(text))
    built = []

    def counted(layout, coarsest_size, levels=None):
        built.append(layout.shape)
        return grid_levels(layout, coarsest_size, levels)

    monkeypatch.setattr(partition, "grid_levels", counted)
    for ranks in range(1, 5):
        built.clear()
        plan = partition.rank_plan(model, ranks)
        assert plan.levels[-1].n_dofs == n_coarse and built == [shape]
        assert plan.levels == tuple(grid_levels(plan.layout, coarsest_size))
        for r in range(ranks):
            local = Slab(plan.layout, _Rank(r, ranks), plan.bounds).local
            rank = partition.slab_bytes(model, plan, local)
            assert rank == estimate_bytes(local, 1, krylov="double", n_coarse=n_coarse,
                                          fixed_design=True, slab=True)
            constants = estimate_bytes(local, 1, krylov="double", n_coarse=n_coarse,
                                       slab=True)
            assert rank - constants == pytest.approx(MEMORY_MARGIN * 24 * local.n_cells, abs=2)
        assert built == [shape]
    built.clear()
    path = DistributedGridPath(model, SERIAL)
    assert built == [shape] and path.mg.layouts == list(path.plan.levels)


def test_a_ranks_estimate_counts_its_optimizer(write_problem):
    """A rank's estimate is its model's: MMA's per-cell arrays (about 30 float64) are
    counted on the slab as on one GPU."""
    plan_bytes = {}
    for name, optimizer in (("oc", "{type: oc, max_iter: 5}"),
                            ("mma", "{type: mma, max_iter: 5}")):
        text = (CANTILEVER.replace("optimizer: {type: oc, max_iter: 5}", f"optimizer: {optimizer}")
                .replace("[24, 8, 4], size: [24.0, 8.0, 4.0]", "[64, 32, 32], size: [64.0, 32.0, 32.0]"))
        model = build_model(write_problem(text))
        assert model.optimizer.name == name
        plan = partition.rank_plan(model, 2)
        local = Slab(plan.layout, _Rank(0, 2), plan.bounds).local
        plan_bytes[name] = (partition.slab_bytes(model, plan, local), local.n_cells)
    (oc, cells), (mma, _) = plan_bytes["oc"], plan_bytes["mma"]
    # MMA's gradient phase (about 300 B/cell) replaces the float64 CG's (about 145) as
    # the peak; before, a rank's estimate counted OC whatever the optimizer
    assert mma - oc > MEMORY_MARGIN * 100 * cells


def test_too_many_ranks_name_the_most_the_grid_takes():
    """A 24-cell axis cut into slabs of at least 2 layers (a filter reaching 2 cells)
    takes 12 ranks; 13 are refused with that number."""
    from femopt.errors import InputError
    from femopt.solvers.multigrid_levels import MultigridOptions

    opts = MultigridOptions()
    assert len(partition.grid_plan((24, 8, 4), 3, (2, 2, 2), opts, 12).bounds) == 13
    with pytest.raises(InputError, match=r"at most 12 rank\(s\); run with -n 12"):
        partition.grid_plan((24, 8, 4), 3, (2, 2, 2), opts, 13)
