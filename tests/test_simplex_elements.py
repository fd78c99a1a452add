"""Linear simplices (tri3, tet4), used to re-analyse exported parts: shape functions,
quadrature, and patch tests of elasticity and heat conduction on distorted simplex meshes."""

from __future__ import annotations

import numpy as np
import pytest

from femopt.assembly.elements import get_element, physical_gradients
from femopt.mesh import Mesh
from test_physics import (_boundary_nodes, assert_uniform_stress, distorted_mesh,
                          make_physics, solve_dirichlet)

SIMPLICES = ["tri3", "tet4"]
# Kuhn split of the unit square/cube along the diagonal 0-2 / 0-6 (VTK node order):
# conforming between neighbouring cells of a structured grid
SPLIT = {
    "tri3": np.array([(0, 1, 2), (0, 2, 3)]),
    "tet4": np.array([(0, 1, 2, 6), (0, 2, 3, 6), (0, 3, 7, 6), (0, 7, 4, 6), (0, 4, 5, 6),
                      (0, 5, 1, 6)]),
}


def simplex_mesh(dim: int, seed: int) -> Mesh:
    """A distorted box split into positively oriented triangles or tetrahedra."""
    box = distorted_mesh((4, 4, 3)[:dim], (2.0, 1.5, 1.0)[:dim], seed=seed)
    name = "tri3" if dim == 2 else "tet4"
    cells = box.cells[:, SPLIT[name]].reshape(-1, dim + 1)
    p = box.points[cells]
    det = np.linalg.det(p[:, 1:] - p[:, :1])
    cells[det < 0, :2] = cells[det < 0, 1::-1]  # swap two nodes of inverted ones
    return Mesh(points=box.points, cells=cells, cell_type=name)


@pytest.mark.parametrize("name", SIMPLICES)
def test_shape_functions_partition_of_unity_kronecker_and_gradients(name):
    el = get_element(name)
    assert el.n_nodes == el.dim + 1
    xi = np.random.default_rng(0).dirichlet(np.ones(el.dim + 1), size=10)[:, 1:]
    np.testing.assert_allclose(el.shape(xi).sum(axis=1), 1.0, atol=1e-14)
    np.testing.assert_allclose(el.shape(el.ref_nodes), np.eye(el.n_nodes), atol=1e-14)
    h = 1e-6
    for d in range(el.dim):
        e = np.zeros(el.dim)
        e[d] = h
        fd = (el.shape(xi + e) - el.shape(xi - e)) / (2 * h)
        np.testing.assert_allclose(el.grad(xi)[:, :, d], fd, atol=1e-9)


@pytest.mark.parametrize("name", SIMPLICES)
def test_quadrature_integrates_linear_functions_exactly(name):
    el = get_element(name)
    ref_volume = 0.5 if el.dim == 2 else 1.0 / 6.0
    assert el.quad_weights.sum() == pytest.approx(ref_volume, rel=1e-15)
    # int_T xi_0 = volume / (dim + 1)
    assert el.quad_weights @ el.quad_points[:, 0] == pytest.approx(ref_volume / (el.dim + 1))


@pytest.mark.parametrize("dim", [2, 3])
def test_simplex_mesh_volume_and_linear_fields(dim):
    mesh = simplex_mesh(dim, seed=3)
    el = get_element(mesh.cell_type)
    dndx, wdet = physical_gradients(el, mesh.points[mesh.cells])
    assert wdet.sum() == pytest.approx(np.prod((2.0, 1.5, 1.0)[:dim]), rel=1e-12)
    grad = np.arange(1.0, dim + 1.0)
    values = mesh.points @ grad + 0.3
    got = np.einsum("cqnd,cn->cqd", dndx, values[mesh.cells])
    np.testing.assert_allclose(got, np.broadcast_to(grad, got.shape), atol=1e-12)


@pytest.mark.parametrize("dim", [2, 3])
def test_elasticity_patch_test_on_simplices(dim):
    mesh = simplex_mesh(dim, seed=dim)
    E, nu = 70.0, 0.25
    physics = make_physics("elasticity", mesh, E=E, nu=nu)
    rng = np.random.default_rng(20 + dim)
    grad = rng.uniform(-1e-2, 1e-2, size=(dim, dim))
    exact = (rng.uniform(-1, 1, dim) + mesh.points @ grad.T).ravel()
    bnodes = _boundary_nodes(mesh)
    fixed = (bnodes[:, None] * dim + np.arange(dim)).ravel()
    u = solve_dirichlet(physics, fixed, exact[fixed])
    assert np.abs(u - exact).max() < 1e-10 * np.abs(exact).max()
    assert_uniform_stress(physics, mesh, u, grad, E, nu)


@pytest.mark.parametrize("dim", [2, 3])
def test_heat_patch_test_on_simplices(dim):
    mesh = simplex_mesh(dim, seed=7 + dim)
    physics = make_physics("heat", mesh, conductivity=3.0)
    exact = mesh.points @ np.array([1.0, -2.0, 0.5])[:dim] + 1.0
    bnodes = _boundary_nodes(mesh)
    u = solve_dirichlet(physics, bnodes, exact[bnodes])
    assert np.abs(u - exact).max() < 1e-11 * np.abs(exact).max()
