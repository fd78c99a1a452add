"""Elements, structured grids and region selectors, parametrized over quad4 and hex8."""

from __future__ import annotations

import numpy as np
import pytest

from femopt.assembly.elements import get_element, physical_gradients
from femopt.mesh import Mesh, structured_grid
from femopt.mesh.regions import Region, RegionError, select_cells, select_nodes

ELEMENTS = ["quad4", "hex8"]
DIM = {"quad4": 2, "hex8": 3}


def _random_ref_points(dim: int, n: int = 20, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.0, 1.0, size=(n, dim))


@pytest.mark.parametrize("name", ELEMENTS)
def test_shape_functions_partition_of_unity_and_kronecker(name):
    el = get_element(name)
    assert el.dim == DIM[name]
    assert el.n_nodes == 2**el.dim
    n = el.shape(_random_ref_points(el.dim))
    np.testing.assert_allclose(n.sum(axis=1), 1.0, atol=1e-14)
    # N_i(xi_j) = delta_ij at the reference nodes
    np.testing.assert_allclose(el.shape(el.ref_nodes), np.eye(el.n_nodes), atol=1e-14)


@pytest.mark.parametrize("name", ELEMENTS)
def test_shape_gradients_sum_to_zero_and_match_finite_differences(name):
    el = get_element(name)
    xi = _random_ref_points(el.dim, seed=1)
    g = el.grad(xi)
    assert g.shape == (xi.shape[0], el.n_nodes, el.dim)
    np.testing.assert_allclose(g.sum(axis=1), 0.0, atol=1e-14)
    # shape functions are multilinear, so central differences are exact up to round-off
    h = 1e-4
    for d in range(el.dim):
        e = np.zeros(el.dim)
        e[d] = h
        fd = (el.shape(xi + e) - el.shape(xi - e)) / (2 * h)
        np.testing.assert_allclose(g[:, :, d], fd, atol=1e-10)


@pytest.mark.parametrize("name", ELEMENTS)
def test_quadrature_integrates_reference_volume_and_cubics(name):
    el = get_element(name)
    w, x = el.quad_weights, el.quad_points
    assert w.size == 2**el.dim  # 2-point Gauss per axis
    assert w.sum() == pytest.approx(2.0**el.dim, abs=1e-14)
    # 2-point Gauss is exact to degree 3 per axis: int xi^2 = 2/3, int xi^3 = 0,
    # int xi_0^2 xi_1^2 = 4/9 (times 2 per remaining axis)
    rest = 2.0 ** (el.dim - 1)
    assert w @ x[:, 0] ** 2 == pytest.approx(2.0 / 3.0 * rest, rel=1e-14)
    assert w @ x[:, -1] ** 3 == pytest.approx(0.0, abs=1e-14)
    assert w @ (x[:, 0] ** 2 * x[:, 1] ** 2) == pytest.approx(4.0 / 9.0 * rest / 2.0, rel=1e-14)
    # ... but not degree 4
    assert abs(w @ x[:, 0] ** 4 - 2.0 / 5.0 * rest) > 1e-2


def _distorted_cell(name: str, seed: int = 2) -> np.ndarray:
    el = get_element(name)
    rng = np.random.default_rng(seed)
    a = np.eye(el.dim) * 1.5 + 0.2 * rng.standard_normal((el.dim, el.dim))
    return (el.ref_nodes + 1.0) @ a.T + 0.1 * rng.standard_normal(el.ref_nodes.shape)


@pytest.mark.parametrize("name", ELEMENTS)
def test_physical_gradients_reproduce_linear_fields(name):
    el = get_element(name)
    coords = _distorted_cell(name)[None]
    dndx, wdet = physical_gradients(el, coords)
    assert dndx.shape == (1, el.quad_points.shape[0], el.n_nodes, el.dim)
    grad = np.arange(1.0, el.dim + 1.0)
    values = coords[0] @ grad + 0.7
    np.testing.assert_allclose(np.einsum("cqnd,n->cqd", dndx, values)[0],
                               np.broadcast_to(grad, (wdet.size, el.dim)), atol=1e-12)
    assert np.all(wdet > 0)


@pytest.mark.parametrize("name", ELEMENTS)
def test_physical_gradients_volume_of_an_affine_cell(name):
    el = get_element(name)
    a = np.array([[2.0, 0.5, 0.1], [0.3, 1.0, 0.2], [0.0, 0.4, 3.0]])[: el.dim, : el.dim]
    coords = ((el.ref_nodes + 1.0) / 2.0 @ a.T)[None]  # unit cube mapped by a
    _, wdet = physical_gradients(el, coords)
    assert wdet.sum() == pytest.approx(np.linalg.det(a), rel=1e-13)
    from femopt.assembly.elements import quadrature_measures

    distorted = np.stack([_distorted_cell(name), coords[0]])  # without the inverses: equal
    np.testing.assert_array_equal(quadrature_measures(el, distorted),
                                  physical_gradients(el, distorted)[1])


@pytest.mark.parametrize("name", ELEMENTS)
@pytest.mark.parametrize("defect", ["mirrored", "collapsed"])
def test_physical_gradients_raise_for_inverted_or_degenerate_cell(name, defect):
    el = get_element(name)
    good = (el.ref_nodes + 1.0) / 2.0
    bad = good.copy()
    if defect == "mirrored":
        bad[:, 0] *= -1.0  # reflection: det J < 0 everywhere
    else:
        bad[:, -1] = 0.0  # flat cell: det J = 0
    coords = np.stack([good, good, bad, good])
    with pytest.raises(ValueError, match=r"^1 inverted or degenerate cell\(s\), first: \[2\]"):
        physical_gradients(el, coords)


@pytest.mark.parametrize(
    "shape, size, n_nodes, n_cells",
    [((3, 2), (3.0, 1.0), 12, 6), ((5, 1), (2.0, 0.5), 12, 5),
     ((3, 2, 4), (3.0, 2.0, 1.0), 60, 24), ((1, 1, 1), (1.0, 1.0, 1.0), 8, 1)],
)
def test_structured_grid_counts_and_orientation(shape, size, n_nodes, n_cells):
    mesh = structured_grid(shape, size, origin=[1.0] * len(shape))
    assert mesh.n_nodes == n_nodes
    assert mesh.n_cells == n_cells
    assert mesh.cell_type == ("quad4" if len(shape) == 2 else "hex8")
    assert mesh.grid.node_shape == tuple(n + 1 for n in shape)
    lo, hi = mesh.bounds()
    np.testing.assert_allclose(lo, 1.0)
    np.testing.assert_allclose(hi, 1.0 + np.array(size))
    # every node is used, VTK orientation gives det J > 0, and cells tile the box
    assert np.unique(mesh.cells).size == n_nodes
    el = get_element(mesh.cell_type)
    _, wdet = physical_gradients(el, mesh.points[mesh.cells])
    np.testing.assert_allclose(wdet.sum(axis=1), np.prod(mesh.grid.spacing), rtol=1e-13)
    assert wdet.sum() == pytest.approx(np.prod(size), rel=1e-13)
    # x runs fastest: the first cell's nodes are the origin corner in VTK order
    h = np.array(mesh.grid.spacing)
    np.testing.assert_allclose(mesh.points[mesh.cells[0]], 1.0 + (el.ref_nodes + 1) / 2 * h)
    np.testing.assert_allclose(mesh.points[1] - mesh.points[0], [h[0]] + [0.0] * (len(h) - 1))


def test_structured_grid_rejects_mismatched_dimensions():
    with pytest.raises(ValueError, match="2 or 3 entries"):
        structured_grid((2, 2), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="2 or 3 entries"):
        structured_grid((2,), (1.0,))


def test_min_cell_size_of_structured_grid():
    mesh = structured_grid((4, 2, 5), (2.0, 2.0, 0.5))
    assert mesh.min_cell_size() == pytest.approx(0.1)


@pytest.mark.parametrize(
    "shape, size, expected",
    [
        ((2, 3), (2.0, 0.3), 0.1),
        ((2, 2, 2), (2.0, 2.0, 0.2), 0.1),
    ],
)
def test_min_cell_size_of_unstructured_mesh_is_shortest_edge(shape, size, expected):
    grid = structured_grid(shape, size)
    mesh = Mesh(points=grid.points, cells=grid.cells, cell_type=grid.cell_type)
    assert mesh.grid is None
    assert mesh.min_cell_size() == pytest.approx(expected)


# -- regions -------------------------------------------------------------------------

def _mesh(name: str) -> Mesh:
    # 4 x 2 (x 3) cells of size 1: nodes 5 x 3 (x 4)
    return structured_grid((4, 2), (4.0, 2.0)) if name == "quad4" else \
        structured_grid((4, 2, 3), (4.0, 2.0, 3.0))


# nodes per face of the 5 x 3 (x 4) node grid
FACE_NODES = {
    "quad4": {"x_min": 3, "x_max": 3, "y_min": 5, "y_max": 5},
    "hex8": {"x_min": 12, "x_max": 12, "y_min": 20, "y_max": 20, "z_min": 15, "z_max": 15},
}
# cells touching each face of the 4 x 2 (x 3) cell grid
FACE_CELLS = {
    "quad4": {"x_min": 2, "x_max": 2, "y_min": 4, "y_max": 4},
    "hex8": {"x_min": 6, "x_max": 6, "y_min": 12, "y_max": 12, "z_min": 8, "z_max": 8},
}
FACE_CASES = [(name, face) for name in ELEMENTS for face in FACE_NODES[name]]


@pytest.mark.parametrize("name, face", FACE_CASES)
def test_face_region_counts(name, face):
    mesh = _mesh(name)
    region = Region(face=face)
    nodes = select_nodes(region, mesh)
    assert nodes.size == FACE_NODES[name][face]
    axis = "xyz".index(face[0])
    target = mesh.bounds()[0 if face.endswith("min") else 1][axis]
    np.testing.assert_array_equal(mesh.points[nodes, axis], target)
    cells = select_cells(region, mesh)
    assert cells.size == FACE_CELLS[name][face]


@pytest.mark.parametrize("name", ELEMENTS)
def test_box_region_counts(name):
    mesh = _mesh(name)
    dim = DIM[name]
    # closed box [1, 2] x [0, 1] (x [0, 3]): 2 x 2 (x 4) nodes; cell centroids inside: 1 (x 3)
    bmin = [1.0, 0.0, 0.0][:dim]
    bmax = [2.0, 1.0, 3.0][:dim]
    region = Region(box={"min": bmin, "max": bmax})
    assert select_nodes(region, mesh).size == (4 if dim == 2 else 16)
    cells = select_cells(region, mesh)
    assert cells.size == (1 if dim == 2 else 3)
    np.testing.assert_allclose(mesh.centroids()[cells][:, :2], [[1.5, 0.5]] * cells.size)


@pytest.mark.parametrize("name", ELEMENTS)
def test_point_region_counts(name):
    mesh = _mesh(name)
    dim = DIM[name]
    corner = [4.0, 0.0, 0.0][:dim]
    nodes = select_nodes(Region(point=corner), mesh)
    assert nodes.size == 1
    np.testing.assert_allclose(mesh.points[nodes[0]], corner)
    assert select_cells(Region(point=corner), mesh).size == 1
    # an interior node is shared by 2^dim cells
    inner = [2.0, 1.0, 1.0][:dim]
    assert select_cells(Region(point=inner), mesh).size == 2**dim
    # a point inside a cell, off any node
    assert select_cells(Region(point=[0.5, 0.5, 0.5][:dim]), mesh).size == 1


@pytest.mark.parametrize("name", ELEMENTS)
def test_region_conditions_intersect(name):
    mesh = _mesh(name)
    dim = DIM[name]
    # x_max face within y <= 1: 2 nodes (x 4 in z)
    region = Region(face="x_max", box={"min": [0.0] * dim, "max": [4.0, 1.0, 3.0][:dim]})
    nodes = select_nodes(region, mesh)
    assert nodes.size == (2 if dim == 2 else 8)
    assert np.all(mesh.points[nodes, 0] == 4.0) and np.all(mesh.points[nodes, 1] <= 1.0)
    # face + point: the point must also lie on the face
    on = Region(face="y_min", point=[4.0, 0.0, 0.0][:dim])
    assert select_nodes(on, mesh).size == 1
    off = Region(face="y_max", point=[4.0, 0.0, 0.0][:dim])
    with pytest.raises(RegionError, match="selects no node"):
        select_nodes(off, mesh)


@pytest.mark.parametrize("name", ELEMENTS)
def test_region_tolerance(name):
    mesh = _mesh(name)
    dim = DIM[name]
    near = [4.0 - 1e-3, 0.0, 0.0][:dim]
    with pytest.raises(RegionError, match="selects no node"):
        select_nodes(Region(point=near), mesh)
    assert select_nodes(Region(point=near, tol=2e-3), mesh).size == 1


@pytest.mark.parametrize("name", ELEMENTS)
def test_region_selecting_nothing_raises(name):
    mesh = _mesh(name)
    dim = DIM[name]
    outside = Region(box={"min": [10.0] * dim, "max": [11.0] * dim})
    with pytest.raises(RegionError, match="the region selects no node"):
        select_nodes(outside, mesh)
    with pytest.raises(RegionError, match="the region selects no cell"):
        select_cells(outside, mesh)


@pytest.mark.parametrize("name", ELEMENTS)
def test_region_with_wrong_dimension_raises(name):
    mesh = _mesh(name)
    dim = DIM[name]
    wrong = 3 if dim == 2 else 2
    with pytest.raises(RegionError, match=f"point has {wrong} coordinates; the mesh is {dim}D"):
        select_nodes(Region(point=[0.0] * wrong), mesh)
    with pytest.raises(RegionError, match=f"box.min has {wrong} coordinates"):
        select_nodes(Region(box={"min": [0.0] * wrong, "max": [1.0] * wrong}), mesh)
    with pytest.raises(RegionError, match=f"point has {wrong} coordinates"):
        select_cells(Region(point=[0.0] * wrong), mesh)


def test_z_face_does_not_exist_in_2d():
    with pytest.raises(RegionError, match="face 'z_min' does not exist in a 2D mesh"):
        select_nodes(Region(face="z_min"), _mesh("quad4"))


def test_group_region_and_unknown_group():
    mesh = _mesh("quad4")
    mesh.node_sets["corner"] = np.array([0, 4])
    assert select_nodes(Region(group="corner"), mesh).tolist() == [0, 4]
    assert select_nodes(Region(group="corner", face="x_min"), mesh).tolist() == [0]
    with pytest.raises(RegionError, match=r"no group 'edge' \(groups: corner\)"):
        select_nodes(Region(group="edge"), mesh)
