"""Radius filters leave out the pairs at the radius within rounding on every path: the
grid stencil keeps exactly the weights of the KD-tree (femopt.filters.base.CUT)."""

import numpy as np
import pytest

from femopt.filters.base import CUT, radius_weights
from femopt.filters.grid_filter import GridDensityFilter
from femopt.mesh.structured import structured_grid


def _stencil_matrix(f: GridDensityFilter, n: int) -> np.ndarray:
    eye = np.eye(n)
    return np.stack([f.apply(eye[i]) for i in range(n)], axis=1)


# spacing 0.7 (0.7000000000000001 along y) and radius 3 cells: 3 * 0.7 is
# 2.0999999999999996, so the stencil's weight at three cells is 4.4e-16 where the
# KD-tree's distance gives none
@pytest.mark.parametrize("shape, size, radius", [((8, 6), (5.6, 4.2), 2.1),
                                                 ((6, 5, 4), (1.8, 1.5, 1.2), 0.9),
                                                 ((9, 7), (9.0, 3.5), 1.2)])
def test_grid_stencil_has_the_kd_tree_weights(shape, size, radius):
    mesh = structured_grid(shape, size)
    h, hs = radius_weights(mesh, radius)
    f = GridDensityFilter(mesh.grid.shape, mesh.grid.spacing, radius)
    assert all(w > CUT * radius for _, w in f.offsets())
    dense = _stencil_matrix(f, mesh.n_cells)
    assert np.count_nonzero(dense) == h.nnz  # no extra pair at the radius
    np.testing.assert_allclose(dense, h.toarray(), rtol=0, atol=1e-13 * radius)
    np.testing.assert_allclose(f.hs, hs, rtol=1e-13)


def test_stencil_leaves_out_the_entries_at_the_radius():
    f = GridDensityFilter((8, 6), (0.7, 0.7000000000000001), 2.1)
    offsets = {o for o, _ in f.offsets()}
    # the 5 x 5 square (its corners at 1.98 < 2.1); the four at three cells are at 2.1
    assert offsets == {(i, j) for i in range(-2, 3) for j in range(-2, 3)}
