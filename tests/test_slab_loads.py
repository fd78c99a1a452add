"""A rank's loads, supports and passive cells from their indices equal the part of the
whole-grid arrays it used to cut (every orientation, every rank of 1 to 3)."""

import numpy as np
import pytest

from femopt.assembly.grid_layout import GridLayout
from femopt.evaluation.load_nonzeros import LoadNonzeros
from femopt.parallel.comm import SERIAL
from femopt.parallel.orientation import Orientation
from femopt.parallel.slabs import Slab


class _Rank:
    def __init__(self, rank: int, size: int):
        self.rank, self.size = rank, size


@pytest.mark.parametrize("shape,k", [((4, 3, 5), 3), ((6, 4), 2), ((3, 5, 4), 1)])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_dofs_in_matches_nodes_in(shape, k, axis):
    if axis >= len(shape):
        pytest.skip("no such axis")
    orient = Orientation(shape, axis)
    lay = GridLayout(shape, k)
    dofs = np.arange(lay.n_dofs)
    moved = orient.nodes_in(lay.from_dofs(dofs.astype(float)), k)
    pos = orient.dofs_in(dofs, k)
    np.testing.assert_array_equal(moved[pos], dofs)


@pytest.mark.parametrize("size", [1, 2, 3])
def test_kept_positions_match_node_part(size):
    lay = GridLayout((3, 2, 6), 3)
    bounds = [round(i * 6 / size) for i in range(size + 1)]
    full = np.arange(lay.n_dofs, dtype=float) + 1.0
    for rank in range(size):
        slab = Slab(lay, _Rank(rank, size) if size > 1 else SERIAL, bounds)
        kept = slab.node_part(full)
        which, local = slab.kept_positions(np.arange(lay.n_dofs))
        assert which.sum() == kept.size
        np.testing.assert_array_equal(kept[local], full[which])


def test_load_nonzeros_sum_in_order():
    rng = np.random.default_rng(3)
    n = 40
    dense = np.zeros((2, n))
    pieces = []
    for _ in range(12):
        c = int(rng.integers(2))
        d = rng.choice(n, size=7, replace=False)
        v = rng.standard_normal(7)
        dense[c, d] += v
        pieces.append((c, d, v))
    nz = LoadNonzeros.from_pieces(2, n, pieces)
    np.testing.assert_array_equal(nz.dense(), dense)  # exactly: the same sums in order
    assert nz.index.size == np.count_nonzero(np.any(dense != 0, axis=0))
