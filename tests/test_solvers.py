"""Fixed-pattern assembly against a naive COO assembly; direct and PCG solvers."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from femopt.assembly.sparse import FixedPatternAssembler
from femopt.errors import SolverError
from femopt.mesh import structured_grid
from femopt.mesh.regions import Region, select_nodes
from femopt.physics.elasticity import ElasticityOptions, LinearElasticity
from femopt.solvers import DirectSolver, PCGSolver, pcg
from femopt.solvers.direct import DirectOptions
from femopt.solvers.pcg import PCGOptions


def naive_assembly(cell_dofs, n_dofs, free, scale, ke) -> np.ndarray:
    """sum_e scale_e K_e by COO triplets (duplicates summed), restricted to free dofs."""
    n_cells, nd = cell_dofs.shape
    kes = np.broadcast_to(ke, (n_cells, nd, nd)) * scale[:, None, None]
    rows = np.repeat(cell_dofs, nd, axis=1).ravel()
    cols = np.tile(cell_dofs, (1, nd)).ravel()
    full = sp.coo_matrix((kes.ravel(), (rows, cols)), shape=(n_dofs, n_dofs)).toarray()
    return full[np.ix_(free, free)]


def cantilever(shape, E=1.0):
    """Elasticity of a box clamped at x_min: physics, free dofs, unit element matrix."""
    mesh = structured_grid(shape, [float(n) for n in shape])
    physics = LinearElasticity(ElasticityOptions(E=E), mesh)
    dim = mesh.dim
    n_dofs = mesh.n_nodes * dim
    clamp = select_nodes(Region(face="x_min"), mesh)
    fixed = (clamp[:, None] * dim + np.arange(dim)).ravel()
    return physics, n_dofs, np.setdiff1d(np.arange(n_dofs), fixed)


@pytest.mark.parametrize("shape", [(5, 3), (3, 2, 2)], ids=["2d", "3d"])
@pytest.mark.parametrize("per_cell", [False, True], ids=["uniform", "per_cell"])
def test_fixed_pattern_assembly_equals_naive_coo(shape, per_cell):
    physics, n_dofs, free = cantilever(shape)
    rng = np.random.default_rng(0)
    # drop a few more dofs in the middle so fixed dofs are not only a prefix
    free = np.setdiff1d(free, rng.choice(free, size=4, replace=False))
    cell_dofs = physics.cell_dofs()
    nd = cell_dofs.shape[1]
    if per_cell:  # nonsymmetric random blocks exercise the (i, j) ordering
        ke = rng.standard_normal((physics.mesh.n_cells, nd, nd))
    else:
        ke = physics.element_matrices()
    scale = rng.uniform(0.01, 2.0, physics.mesh.n_cells)
    asm = FixedPatternAssembler(cell_dofs, n_dofs, free)
    k = asm.assemble(scale, ke)
    assert k.shape == (free.size, free.size)
    expected = naive_assembly(cell_dofs, n_dofs, free, scale, ke)
    np.testing.assert_allclose(k.toarray(), expected, atol=1e-13 * np.abs(expected).max())
    # the pattern holds exactly the couplings of free dofs sharing a cell
    coupled = naive_assembly(cell_dofs, n_dofs, free, np.ones_like(scale),
                             np.ones((nd, nd))) > 0
    assert asm.nnz == np.count_nonzero(coupled)
    assert k.has_sorted_indices
    # new data, same pattern: only the values change
    k2 = asm.assemble(2.0 * scale, ke)
    np.testing.assert_array_equal(k2.indices, k.indices)
    np.testing.assert_allclose(k2.data, 2.0 * k.data, rtol=1e-14)


def test_restrict_and_expand_are_inverse_on_free_dofs():
    physics, n_dofs, free = cantilever((4, 2))
    asm = FixedPatternAssembler(physics.cell_dofs(), n_dofs, free)
    v = np.random.default_rng(1).standard_normal((n_dofs, 2))
    back = asm.expand(asm.restrict(v))
    np.testing.assert_array_equal(back[free], v[free])
    assert np.count_nonzero(back) == 2 * free.size
    assert n_dofs - free.size == 6  # 3 clamped nodes, 2 dofs each
    assert "indices" not in asm.__dict__  # restrict/expand never built the pattern
    assert asm.nnz > 0 and "indices" in asm.__dict__  # first use builds it
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        asm.nothing


def random_nonsymmetric(n: int, seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    a = sp.random(n, n, density=0.05, random_state=rng, format="csr")
    a = a + sp.diags(rng.uniform(1.0, 2.0, n) * (1.0 + abs(a).sum(axis=1).A1))
    assert abs(a - a.T).max() > 0.1
    return a.tocsr()


def spd_stiffness(shape=(8, 4), seed: int = 0) -> sp.csr_matrix:
    physics, n_dofs, free = cantilever(shape)
    asm = FixedPatternAssembler(physics.cell_dofs(), n_dofs, free)
    scale = np.random.default_rng(seed).uniform(0.1, 1.0, physics.mesh.n_cells)
    return asm.assemble(scale, physics.element_matrices())


@pytest.mark.parametrize("symmetric", [False, True], ids=["nonsymmetric", "spd"])
@pytest.mark.parametrize("n_rhs", [0, 1, 3])
def test_direct_solve_and_transpose_solve(symmetric, n_rhs):
    a = spd_stiffness() if symmetric else random_nonsymmetric(120)
    n = a.shape[0]
    rng = np.random.default_rng(2)
    b = rng.standard_normal(n if n_rhs == 0 else (n, n_rhs))
    solver = DirectSolver(DirectOptions(symmetric=symmetric), matrix=a)
    dense = a.toarray()
    for transpose, op in ((False, dense), (True, dense.T)):
        x = solver.solve(b, transpose=transpose)
        assert x.shape == b.shape
        np.testing.assert_allclose(x, np.linalg.solve(op, b), rtol=1e-8,
                                   atol=1e-10 * np.abs(x).max())
    if not symmetric:  # the transpose solve really differs
        assert np.abs(solver.solve(b) - solver.solve(b, transpose=True)).max() > 1e-3


def test_direct_solver_counts_factorizations():
    a = spd_stiffness()
    solver = DirectSolver()
    assert solver.factorizations == 0
    with pytest.raises(SolverError, match="before a matrix was factorized"):
        solver.solve(np.ones(a.shape[0]))
    solver.update(a)
    b = np.ones(a.shape[0])
    for _ in range(3):
        solver.solve(b)
        solver.solve(b, transpose=True)
    assert solver.factorizations == 1
    solver.update(2.0 * a)
    assert solver.factorizations == 2
    np.testing.assert_allclose(solver.solve(b), 0.5 * np.linalg.solve(a.toarray(), b),
                               rtol=1e-10)
    assert DirectSolver(matrix=a).factorizations == 1


@pytest.mark.parametrize("symmetric", [False, True])
def test_direct_solver_reports_singular_matrix(symmetric):
    a = sp.csr_matrix(np.array([[1.0, 2.0], [2.0, 4.0]]))
    solver = DirectSolver(DirectOptions(symmetric=symmetric))
    with pytest.raises(SolverError, match="direct factorization failed: .*singular"):
        solver.update(a)
    assert solver.factorizations == 0


@pytest.mark.parametrize("n_rhs", [0, 2])
def test_pcg_matches_direct(n_rhs):
    a = spd_stiffness((12, 6), seed=3)
    n = a.shape[0]
    b = np.random.default_rng(4).standard_normal(n if n_rhs == 0 else (n, n_rhs))
    ref = DirectSolver(matrix=a).solve(b)
    solver = PCGSolver(PCGOptions(rtol=1e-10), matrix=a)
    x = solver.solve(b)
    assert x.shape == b.shape
    rel = np.linalg.norm(x - ref) / np.linalg.norm(ref)
    assert rel < 1e-6
    its = solver.stats()["cg_iterations"]
    assert 10 < its < n  # converged, and not by accident in a handful of steps
    np.testing.assert_allclose(solver.solve(b, transpose=True), x, rtol=1e-12)
    # a warm start at the solution converges at once
    if n_rhs == 0:
        solver.solve(b, x0=ref)
        assert solver.stats()["cg_iterations"] <= 2


def test_pcg_residual_history_meets_rtol():
    a = spd_stiffness((10, 5), seed=5)
    b = np.ones(a.shape[0])
    d = a.diagonal()
    x, info = pcg(lambda v: a @ v, b, lambda r: r / d, rtol=1e-9, maxiter=2000)
    assert info.converged
    assert len(info.residuals) == info.iterations
    assert info.residuals[-1] <= 1e-9 < info.residuals[-2]
    assert np.linalg.norm(a @ x - b) / np.linalg.norm(b) == pytest.approx(info.residuals[-1],
                                                                       rel=1e-4)


def test_pcg_raises_when_max_iter_is_too_small():
    a = spd_stiffness()
    solver = PCGSolver(PCGOptions(rtol=1e-10, max_iter=3), matrix=a)
    pattern = (r"PCG did not converge in 3 iterations to rtol 1e-10; relative residual by "
               r"iteration: 1: \d\.\d\de[-+]\d\d, 2: \d\.\d\de[-+]\d\d, 3: \d\.\d\de[-+]\d\d$")
    with pytest.raises(SolverError, match=pattern) as err:
        solver.solve(np.ones(a.shape[0]))
    assert solver.last.iterations == 3 and not solver.last.converged
    assert err.value.residuals == solver.last.residuals and len(err.value.residuals) == 3
    assert min(err.value.residuals) > 1e-10


def test_pcg_raises_on_indefinite_matrix():
    # positive diagonal, eigenvalues 3 and -1: the first step already sees p^T A p < 0
    a = np.array([[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(SolverError, match=r"CG breakdown at iteration 1: .*not positive "
                                          r"definite \(p\^T A p = -2\)"):
        pcg(lambda v: a @ v, np.array([1.0, -1.0]))


def test_pcg_rejects_nonpositive_diagonal_and_zero_rhs():
    with pytest.raises(SolverError, match="non-positive diagonal"):
        PCGSolver(matrix=sp.csr_matrix(np.diag([1.0, 0.0, 2.0])))
    x, info = pcg(lambda v: v, np.zeros(4))
    assert info.converged and info.iterations == 0 and not np.any(x)
