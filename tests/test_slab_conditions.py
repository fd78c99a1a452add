"""A rank's loads, supports, multigrid masks and probes and passive cells built from
index arrays equal the parts of the whole-grid arrays they replace (every orientation,
every rank of 1 to 3 slabs)."""

import numpy as np
import pytest

from femopt.assembly.grid_layout import GridLayout
from femopt.assembly.sparse_vector import SparseVector, sum_pieces
from femopt.evaluation.load_nonzeros import LoadNonzeros
from femopt.parallel.comm import SERIAL
from femopt.parallel.orientation import Orientation
from femopt.parallel.slab_conditions import coarse_fixed_index, kept_mask, kept_normal
from femopt.parallel.slabs import Slab
from femopt.solvers.multigrid_transfer import coarse_fixed


class _Rank:
    def __init__(self, rank: int, size: int):
        self.rank, self.size = rank, size


@pytest.mark.parametrize("shape,k,axis", [
    (shape, k, axis) for shape, k in [((4, 3, 5), 3), ((6, 4), 2), ((3, 5, 4), 1)]
    for axis in range(len(shape))])
def test_dofs_in_matches_nodes_in(shape, k, axis):
    orient = Orientation(shape, axis)
    lay = GridLayout(shape, k)
    dofs = np.arange(lay.n_dofs)
    moved = orient.nodes_in(lay.from_dofs(dofs.astype(float)), k)
    pos = orient.dofs_in(dofs, k)
    np.testing.assert_array_equal(moved[pos], dofs)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_cell_index_in_matches_cells_in(axis):
    orient = Orientation((4, 3, 5), axis)
    cells = np.arange(60)
    moved = orient.cells_in(cells.astype(float))
    np.testing.assert_array_equal(moved[orient.cell_index_in(cells)], cells)


def _slabs(lay, size, n_layers):
    bounds = [round(i * n_layers / size) for i in range(size + 1)]
    return [Slab(lay, _Rank(rank, size) if size > 1 else SERIAL, bounds)
            for rank in range(size)]


@pytest.mark.parametrize("shape,k", [((8, 4, 8), 3), ((8, 12), 2)])
def test_coarse_fixed_index_matches_the_whole_mask(shape, k):
    rng = np.random.default_rng(5)
    lay = GridLayout(shape, k)
    mask = rng.random(lay.n_dofs) < 0.03
    index = np.flatnonzero(mask)
    for _ in range(2):
        coarse = coarse_fixed(lay, mask)
        index = coarse_fixed_index(lay, index)
        np.testing.assert_array_equal(index, np.flatnonzero(coarse))
        lay, mask = lay.coarsened(), coarse
    assert index.size > 0


@pytest.mark.parametrize("size", [1, 2, 3])
def test_kept_mask_and_probe_match_the_whole_level(size):
    lay = GridLayout((4, 3, 6), 3)
    rng = np.random.default_rng(9)
    mask = rng.random(lay.n_dofs) < 0.1
    for slab in _slabs(lay, size, 6):
        np.testing.assert_array_equal(kept_mask(slab, np.flatnonzero(mask)),
                                      slab.node_part(mask))
        whole = np.random.default_rng(0).standard_normal(lay.n_dofs).astype(np.float32)
        part = kept_normal(np.random.default_rng(0), slab, np.float32)
        np.testing.assert_array_equal(part, slab.node_part(whole))


@pytest.mark.parametrize("size", [1, 2, 3])
def test_kept_positions_match_node_part(size):
    lay = GridLayout((3, 2, 6), 3)
    full = np.arange(lay.n_dofs, dtype=float) + 1.0
    for slab in _slabs(lay, size, 6):
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


def test_load_nonzeros_and_sparse_vector_sum_their_pieces_alike():
    rng = np.random.default_rng(5)
    n = 30
    pieces = [(int(rng.integers(3)), rng.choice(n, size=5, replace=False),
               rng.standard_normal(5)) for _ in range(10)]
    nz = LoadNonzeros.from_pieces(3, n, pieces)
    for c in range(3):
        row = SparseVector.from_pieces(n, [(d, v) for r, d, v in pieces if r == c])
        np.testing.assert_array_equal(row.dense(), nz.dense()[c])
    index, values = sum_pieces(3, pieces)
    np.testing.assert_array_equal(index, nz.index)
    np.testing.assert_array_equal(values, nz.values)
    empty = LoadNonzeros.from_pieces(2, n, [])
    assert empty.values.shape == (2, 0) and empty.dense().shape == (2, n)
    assert SparseVector.from_pieces(n, []).dense().shape == (n,)
    assert not SparseVector.from_pieces(n, []).any()


PASSIVE_3D = """\
name: slab_conditions
mesh: {type: structured, shape: [4, 6, 3], size: [4.0, 6.0, 3.0]}
physics: {type: linear_elasticity}
supports:
  - region: {face: y_min}
load_cases:
  - loads:
      - region: {box: {min: [4.0, 6.0, 0.0], max: [4.0, 6.0, 3.0]}}
        force: [0.0, -1.0, 0.5]
  - loads:
      - region: {face: z_max}
        pressure: 0.25
design:
  passive:
    - region: {box: {min: [0.0, 5.0, 0.0], max: [4.0, 6.0, 3.0]}}
      value: solid
filters:
  - {type: density, radius: 1.5}
objective: {type: compliance}
constraints:
  - {type: volume, max: 0.4}
optimizer: {type: oc, max_iter: 2}
solver: {type: multigrid}
output: {picture: false}
"""


def test_one_rank_conditions_equal_the_whole_arrays_cut(write_problem):
    from femopt.evaluation.build import build_model

    model = build_model(write_problem(PASSIVE_3D), "cpu", distributed=SERIAL)
    path = model.path
    n = model.mesh.n_cells
    assert model.x_fixed_idx.size == 12  # one layer of 4 x 3 cells
    x0 = np.full(n, model._initial_density())
    x0[model.x_fixed_idx] = model.x_fixed_val
    xmin = np.zeros(n)
    xmin[model.x_fixed_idx] = model.x_fixed_val
    np.testing.assert_array_equal(model.x0, path.local_design(x0))
    np.testing.assert_array_equal(model.xmin, path.local_design(xmin))
    np.testing.assert_array_equal(model.xmax, path.local_design(np.ones(n)))
    mask = np.zeros(n, dtype=bool)
    mask[model.passive_idx] = True
    np.testing.assert_array_equal(path.passive_idx, np.flatnonzero(path.local_design(mask)))
    expect = np.stack([path._to_states(f) for f in model.loads])
    np.testing.assert_array_equal(path.loads, expect)
    assert np.count_nonzero(expect[1]) > 0
