"""Region selection: the structured grid's fast point lookup equals the node-by-node test."""

from __future__ import annotations

import numpy as np
import pytest

from femopt.mesh.regions import Region, RegionError, _mask, select_nodes
from femopt.mesh.structured import structured_grid


@pytest.mark.parametrize("shape, size, origin", [
    ([7, 5], [3.5, 2.0], [-1.0, 0.5]),
    ([4, 3, 5], [3.5, 2.0, 1.5], [-1.0, 0.5, 2.0]),
])
def test_grid_point_lookup_equals_the_test_of_every_node(shape, size, origin):
    mesh = structured_grid(shape, size, origin)
    rng = np.random.default_rng(7)
    selected = 0
    for k in range(600):
        node = mesh.points[rng.integers(mesh.n_nodes)]
        p = node + rng.normal(scale=[1e-7, 0.3, 0.6][k % 3], size=len(shape))
        region = Region(point=p.tolist(), tol=[None, 0.3, 1e-3, 2.0][k % 4])
        expected = np.flatnonzero(_mask(region, mesh, mesh.points, mesh.node_sets))
        try:
            got = select_nodes(region, mesh)
        except RegionError:
            got = np.zeros(0, np.int64)
        np.testing.assert_array_equal(got, expected)
        selected += expected.size
    assert selected > 600  # the cases select nodes, often several


def test_grid_point_outside_or_of_the_wrong_dimension():
    mesh = structured_grid([4, 2], [4.0, 2.0])
    with pytest.raises(RegionError, match="selects no node"):
        select_nodes(Region(point=[9.0, 1.0]), mesh)
    with pytest.raises(RegionError, match="3 coordinates; the mesh is 2D"):
        select_nodes(Region(point=[1.0, 1.0, 0.0]), mesh)
    np.testing.assert_array_equal(select_nodes(Region(point=[1.0, 2.0]), mesh), [11])
