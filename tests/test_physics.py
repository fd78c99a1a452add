"""Element matrices, patch tests and analytic solutions of linear elasticity and heat
conduction, solved with femopt's own assembly and direct solver."""

from __future__ import annotations

import numpy as np
import pytest

from femopt.assembly.sparse import FixedPatternAssembler
from femopt.mesh import Mesh, structured_grid
from femopt.mesh.regions import Region, select_nodes
from femopt.physics.elasticity import ElasticityOptions, LinearElasticity, elasticity_matrix
from femopt.physics.heat import HeatConduction, HeatOptions
from femopt.solvers import DirectSolver

# (physics, dim) -> number of zero-energy modes of one unconstrained element
PHYSICS = [("elasticity", 2, 3), ("elasticity", 3, 6), ("heat", 2, 1), ("heat", 3, 1)]
PHYSICS_IDS = ["elasticity2d", "elasticity3d", "heat2d", "heat3d"]


def make_physics(kind: str, mesh: Mesh, **opts):
    if kind == "elasticity":
        return LinearElasticity(ElasticityOptions(**opts), mesh)
    return HeatConduction(HeatOptions(**opts), mesh)


def distorted_mesh(shape, size, amount: float = 0.25, seed: int = 0) -> Mesh:
    """A structured box whose interior nodes are moved randomly by up to ``amount`` of a
    cell; ``grid=None`` so every cell gets its own element matrix."""
    grid = structured_grid(shape, size)
    pts = grid.points.copy()
    lo, hi = grid.bounds()
    interior = np.all((pts > lo + 1e-12) & (pts < hi - 1e-12), axis=1)
    h = np.array(grid.grid.spacing)
    rng = np.random.default_rng(seed)
    pts[interior] += amount * h * rng.uniform(-1.0, 1.0, size=(interior.sum(), len(shape)))
    return Mesh(points=pts, cells=grid.cells, cell_type=grid.cell_type, grid=None)


def solve_dirichlet(physics, fixed: np.ndarray, u_fixed: np.ndarray,
                    f: np.ndarray | None = None) -> np.ndarray:
    """Full solution with ``u[fixed] = u_fixed``, assembled with FixedPatternAssembler."""
    n_dofs = physics.mesh.n_nodes * physics.dofs_per_node
    ke = physics.element_matrices()
    ones = np.ones(physics.mesh.n_cells)
    free = np.setdiff1d(np.arange(n_dofs), fixed)
    full = FixedPatternAssembler(physics.cell_dofs(), n_dofs, np.arange(n_dofs))
    reduced = FixedPatternAssembler(physics.cell_dofs(), n_dofs, free)
    u = np.zeros(n_dofs)
    u[fixed] = u_fixed
    rhs = -(full.assemble(ones, ke) @ u)
    if f is not None:
        rhs += f
    u[free] = DirectSolver(matrix=reduced.assemble(ones, ke)).solve(reduced.restrict(rhs))
    return u


# -- element matrices ----------------------------------------------------------------

@pytest.mark.parametrize("kind, dim, n_zero", PHYSICS, ids=PHYSICS_IDS)
def test_element_matrix_symmetric_psd_with_rigid_null_space(kind, dim, n_zero):
    mesh = distorted_mesh((1,) * dim, (1.0, 0.8, 1.2)[:dim], amount=0.0)
    rng = np.random.default_rng(1)
    mesh.points += 0.15 * rng.uniform(-1.0, 1.0, mesh.points.shape)  # a general cell
    physics = make_physics(kind, mesh)
    ke = physics.element_matrices()
    assert ke.shape == (1, 2**dim * physics.dofs_per_node, 2**dim * physics.dofs_per_node)
    ke = ke[0]
    np.testing.assert_allclose(ke, ke.T, atol=1e-14 * np.abs(ke).max())
    eig = np.linalg.eigvalsh(ke)
    tol = 1e-10 * eig.max()
    assert eig.min() > -tol
    assert np.count_nonzero(eig < tol) == n_zero
    # the null space is spanned by the rigid modes (translations, rotations; a shift of T)
    modes = physics.rigid_modes()[physics.cell_dofs()[0]]  # cell-local dof order
    assert modes.shape[1] == n_zero
    assert np.abs(ke @ modes).max() < tol * np.abs(modes).max()


@pytest.mark.parametrize("kind, dim, n_zero", PHYSICS, ids=PHYSICS_IDS)
def test_structured_element_matrix_equals_per_cell(kind, dim, n_zero):
    shape, size = (3, 2, 2)[:dim], (1.5, 0.4, 0.6)[:dim]
    grid = structured_grid(shape, size)
    plain = Mesh(points=grid.points, cells=grid.cells, cell_type=grid.cell_type)
    shared = make_physics(kind, grid).element_matrices()
    per_cell = make_physics(kind, plain).element_matrices()
    assert shared.ndim == 2 and per_cell.shape == (grid.n_cells, *shared.shape)
    np.testing.assert_allclose(per_cell, np.broadcast_to(shared, per_cell.shape),
                               atol=1e-13 * np.abs(shared).max())


@pytest.mark.parametrize("kind", ["elasticity", "heat"])
def test_element_matrix_scales_with_material_and_thickness(kind):
    mesh = structured_grid((1, 1), (1.0, 2.0))
    base = make_physics(kind, mesh).element_matrices()
    if kind == "elasticity":
        scaled = make_physics(kind, mesh, E=3.0, thickness=0.5).element_matrices()
    else:
        scaled = make_physics(kind, mesh, conductivity=3.0, thickness=0.5).element_matrices()
    np.testing.assert_allclose(scaled, 1.5 * base, rtol=1e-14)


# -- patch tests -----------------------------------------------------------------------

def _boundary_nodes(mesh: Mesh) -> np.ndarray:
    lo, hi = mesh.bounds()
    on = np.any((np.abs(mesh.points - lo) < 1e-12) | (np.abs(mesh.points - hi) < 1e-12), axis=1)
    return np.flatnonzero(on)


def assert_uniform_stress(physics, mesh: Mesh, u: np.ndarray, grad: np.ndarray, E: float,
                          nu: float) -> None:
    """Every cell's stress equals D eps of the linear field u = grad x (+ const)."""
    dim = mesh.dim
    eps = 0.5 * (grad + grad.T)
    if dim == 2:
        voigt = np.array([eps[0, 0], eps[1, 1], 2 * eps[0, 1]])
    else:
        voigt = np.array([eps[0, 0], eps[1, 1], eps[2, 2],
                          2 * eps[1, 2], 2 * eps[0, 2], 2 * eps[0, 1]])
    expected = elasticity_matrix(E, nu, dim) @ voigt
    s = physics.stress_matrices(mesh.points[mesh.cells])
    stress = np.einsum("cvj,cj->cv", s, u[physics.cell_dofs()])
    np.testing.assert_allclose(stress, np.broadcast_to(expected, stress.shape),
                               atol=1e-9 * np.abs(expected).max())


@pytest.mark.parametrize("dim", [2, 3])
def test_elasticity_patch_test(dim):
    mesh = distorted_mesh((4, 4, 3)[:dim], (2.0, 1.5, 1.0)[:dim], seed=dim)
    E, nu = 210.0, 0.3
    physics = make_physics("elasticity", mesh, E=E, nu=nu)
    rng = np.random.default_rng(10 + dim)
    grad = rng.uniform(-1e-2, 1e-2, size=(dim, dim))  # u = c + G x
    c = rng.uniform(-1.0, 1.0, size=dim)
    exact = (c + mesh.points @ grad.T).ravel()
    bnodes = _boundary_nodes(mesh)
    interior = np.setdiff1d(np.arange(mesh.n_nodes), bnodes)
    assert interior.size == (9 if dim == 2 else 18)
    fixed = (bnodes[:, None] * dim + np.arange(dim)).ravel()
    u = solve_dirichlet(physics, fixed, exact[fixed])
    free = np.setdiff1d(np.arange(exact.size), fixed)
    assert np.abs(u[free] - exact[free]).max() < 1e-10 * np.abs(exact).max()
    # stresses: constant and equal to D eps in every (distorted) cell
    assert_uniform_stress(physics, mesh, u, grad, E, nu)


@pytest.mark.parametrize("dim", [2, 3])
def test_heat_patch_test(dim):
    mesh = distorted_mesh((4, 4, 3)[:dim], (2.0, 1.5, 1.0)[:dim], seed=5 + dim)
    physics = make_physics("heat", mesh, conductivity=4.0)
    g = np.array([1.0, -2.0, 0.5])[:dim]
    exact = 3.0 + mesh.points @ g
    fixed = _boundary_nodes(mesh)
    u = solve_dirichlet(physics, fixed, exact[fixed])
    assert np.abs(u - exact).max() < 1e-10 * np.abs(exact).max()
    # a distorted mesh really has different element matrices per cell
    ke = physics.element_matrices()
    assert np.abs(ke - ke[0]).max() > 1e-2 * np.abs(ke[0]).max()


# -- cantilever against beam theory -------------------------------------------------

def cantilever_tip(shape, size, E: float, nu: float, P: float) -> float:
    """Mean downward deflection of the free end of a beam clamped at x = 0, with a total
    shear load P shared evenly by the nodes of the free end."""
    mesh = structured_grid(shape, size)
    dim = mesh.dim
    physics = make_physics("elasticity", mesh, E=E, nu=nu)
    n_dofs = mesh.n_nodes * dim
    clamp = select_nodes(Region(face="x_min"), mesh)
    fixed = (clamp[:, None] * dim + np.arange(dim)).ravel()
    free = np.setdiff1d(np.arange(n_dofs), fixed)
    assembler = FixedPatternAssembler(physics.cell_dofs(), n_dofs, free)
    k = assembler.assemble(np.ones(mesh.n_cells), physics.element_matrices())
    end = select_nodes(Region(face="x_max"), mesh)
    f = np.zeros(n_dofs)
    f[end * dim + 1] = -P / end.size
    u = assembler.expand(DirectSolver(matrix=k).solve(assembler.restrict(f)))
    return float(-u[end * dim + 1].mean())


def timoshenko_tip(L: float, h: float, b: float, E: float, nu: float, P: float) -> float:
    """P L^3 / (3 E I) + P L / (kappa G A), rectangular section, kappa = 5/6."""
    inertia, area, shear = b * h**3 / 12.0, b * h, E / (2.0 * (1.0 + nu))
    return P * L**3 / (3.0 * E * inertia) + P * L / (5.0 / 6.0 * shear * area)


def test_cantilever_2d_converges_at_rate_two_to_beam_theory():
    L, h, E, nu, P = 10.0, 1.0, 1000.0, 0.3, 2.0
    exact = timoshenko_tip(L, h, 1.0, E, nu, P)
    tips = np.array([cantilever_tip((16 * 2**k, 2 * 2**k), (L, h), E, nu, P)
                     for k in range(4)])  # 16x2, 32x4, 64x8, 128x16
    # displacement elements are too stiff and the meshes are nested: monotone from below
    assert np.all(np.diff(tips) > 0)
    assert np.all(tips < exact)
    # observed order of the discretization error from successive differences
    d = np.diff(tips)
    rates = np.log2(d[:-1] / d[1:])  # measured: 1.75, 1.91
    assert 1.6 < rates[0] < 2.1
    assert 1.8 < rates[1] < 2.1
    # error against the Richardson extrapolation of the two finest meshes
    p = rates[-1]
    limit = tips[-1] + (tips[-1] - tips[-2]) / (2**p - 1)
    err = np.abs(tips - limit)
    err_rates = np.log2(err[:-1] / err[1:])
    assert np.all(err_rates > 1.7) and np.all(err_rates < 2.2)
    # beam theory ignores the clamp's restraint of the Poisson contraction: the limit
    # agrees to 0.5 %, the finest mesh to 1 % (measured: -0.18 % and -0.47 %)
    assert abs(limit - exact) / exact < 5e-3
    assert abs(tips[-1] - exact) / exact < 1e-2
    # the coarse mesh locks in bending: 15 % too stiff
    assert 0.10 < (exact - tips[0]) / exact < 0.20


def test_cantilever_3d_error_decreases():
    L, h, b, E, nu, P = 5.0, 1.0, 1.0, 1000.0, 0.3, 1.0
    exact = timoshenko_tip(L, h, b, E, nu, P)
    tips = np.array([cantilever_tip((8 * 2**k, 2 * 2**k, 2 * 2**k), (L, h, b), E, nu, P)
                     for k in range(2)])  # 8x2x2, 16x4x4
    err = (exact - tips) / exact  # measured: 18.5 %, 6.6 %
    assert np.all(err > 0)
    assert err[1] < err[0] / 2.5
    assert 0.03 < err[1] < 0.10


# -- heat: slab with a uniform source ----------------------------------------------

@pytest.mark.parametrize("dim", [2, 3])
def test_heat_slab_with_uniform_source(dim):
    """T(x) = q x (L - x) / (2 k) with T = 0 on both x faces. The problem is 1D, and
    linear elements with a consistent load are exact at the nodes of a 1D Poisson
    problem, so the nodal error is round-off on every mesh; between nodes the bilinear
    interpolant misses the parabola by q h^2 / (8 k) at a cell centre (rate exactly 2)."""
    L, k, q = 2.0, 2.5, 3.0
    centre_errors = []
    for n in (4, 8, 16):
        mesh = structured_grid((n, 2, 2)[:dim], (L, 0.5, 0.5)[:dim])
        physics = make_physics("heat", mesh, conductivity=k)
        fixed = np.union1d(select_nodes(Region(face="x_min"), mesh),
                           select_nodes(Region(face="x_max"), mesh))
        f = physics.body_load([q], np.arange(mesh.n_cells))
        assert f.sum() == pytest.approx(q * L * 0.5 ** (dim - 1), rel=1e-13)
        t = solve_dirichlet(physics, fixed, np.zeros(fixed.size), f)
        x = mesh.points[:, 0]
        exact = q * x * (L - x) / (2.0 * k)
        assert np.abs(t - exact).max() < 1e-10 * exact.max()
        xc = mesh.centroids()[:, 0]
        centre = t[mesh.cells].mean(axis=1)
        centre_errors.append(np.abs(centre - q * xc * (L - xc) / (2.0 * k)).max())
        assert centre_errors[-1] == pytest.approx(q * (L / n) ** 2 / (8.0 * k), rel=1e-8)
    rates = np.log2(np.array(centre_errors[:-1]) / np.array(centre_errors[1:]))
    np.testing.assert_allclose(rates, 2.0, atol=1e-6)


@pytest.mark.parametrize("kind,shape,value", [
    ("elasticity", (5, 4), [0.5, -2.0]), ("elasticity", (3, 4, 2), [0.0, -1.0, 0.25]),
    ("heat", (4, 3, 3), [1.5])])
def test_a_body_load_by_batches_of_cells_is_the_whole_sum(kind, shape, value, monkeypatch):
    """Batches of 7 cells (a distorted mesh, a shuffled subset of its cells) give every
    dof the sum all cells at once give, bit for bit; the total is value x volume."""
    import femopt.physics.base as base
    from femopt.objectives.base import cell_volumes

    mesh = distorted_mesh(shape, [1.0 + 0.5 * d for d in range(len(shape))], seed=4)
    physics = make_physics(kind, mesh, **({"conductivity": 1.0} if kind == "heat" else {}))
    rng = np.random.default_rng(8)
    cells = rng.permutation(mesh.n_cells)[: 2 * mesh.n_cells // 3]
    whole = physics.body_load(value, cells)  # one batch
    monkeypatch.setattr(base, "BODY_LOAD_CELLS", 7)
    np.testing.assert_array_equal(physics.body_load(value, cells), whole)
    k = len(value)
    volume = cell_volumes(mesh)[cells].sum()
    np.testing.assert_allclose(whole.reshape(-1, k).sum(axis=0), np.array(value) * volume,
                               rtol=1e-12, atol=1e-14)
