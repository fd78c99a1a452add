"""Smoothed-aggregation AMG with its structure built once (femopt/solvers/sa_hierarchy.py,
femopt/solvers/amg.py): values per design, equality with pyamg's own hierarchy and solve,
warm starts, and a solve that does not converge."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from femopt.cli import main
from femopt.runner import build_model
from femopt.solvers.pcg import pcg
from femopt.solvers.sa_hierarchy import OMEGA, SAHierarchy, build_structure

pyamg = pytest.importorskip("pyamg")

ROOT = Path(__file__).resolve().parent.parent
BRACKET = ROOT / "problems" / "meshes" / "bracket_3d.msh"
PROBLEM = f"""\
mesh: {{type: file, path: {BRACKET}}}
physics: {{type: linear_elasticity}}
supports:
  - region: {{group: bolts}}
loads:
  - region: {{group: lug}}
    force: [0.0, 0.0, -1.0]
filters:
  - {{type: density, radius: 6.0}}
objective: {{type: compliance}}
constraints:
  - {{type: volume, max: 0.3}}
optimizer: {{type: oc, max_iter: 3}}
output: {{picture: false}}
"""


@pytest.fixture(scope="module")
def bracket(tmp_path_factory):
    path = tmp_path_factory.mktemp("amg") / "bracket.yaml"
    path.write_text(PROBLEM + "solver: {type: amg, max_coarse: 100}\n")
    return build_model(path, device="cpu")


def _operator(model, seed: int):
    """The block operator of the AMG solver at a seeded random design, and the model."""
    rho = np.random.default_rng(seed).uniform(0.05, 1.0, model.n)
    model.solver.update_operator(model.interp.value(rho), model.assembler, model.ke)
    return model.solver.operator


def test_values_per_design_equal_a_galerkin_product_from_scratch(bracket):
    """After a new design only the values change: the coarse operators equal P^T A P of
    the new design's P (to the hierarchy's float32 precision), every level keeps its
    size."""
    solver = bracket.solver
    _operator(bracket, 1)
    sizes = solver.hierarchy.sizes()
    a = _operator(bracket, 2).copy()
    h = solver.hierarchy
    assert [n for n, _ in h.sizes()] == [n for n, _ in sizes] and len(sizes) >= 3
    for lev, nxt in zip(h.levels[:-1], h.levels[1:]):
        d = a.diagonal()
        dinv = np.where(d != 0, 1.0 / np.where(d == 0, 1.0, d), 0.0)
        dense_a = a.toarray()
        rho = np.abs(np.linalg.eigvals(dinv[:, None] * dense_a)).max()
        assert lev.rho == pytest.approx(rho, rel=0.02)  # Lanczos: 12 steps
        p = lev.t.toarray() - (OMEGA / lev.rho) * dinv[:, None] * (dense_a @ lev.t.toarray())
        assert np.abs(lev.p.toarray() - p).max() <= 1e-5 * np.abs(p).max()
        coarse = p.T @ dense_a @ p
        assert np.abs(nxt.a.toarray() - coarse).max() <= 1e-5 * np.abs(coarse).max()
        a = nxt.a


def test_solution_equals_pyamgs_own_solve(bracket):
    """femopt's hierarchy (structure kept) and pyamg's own, built from scratch for the same
    matrix, give the same solution; both converge in few CG iterations."""
    a = _operator(bracket, 3)
    free = bracket.solver.free
    b = np.zeros(a.shape[0])
    b[free] = bracket.loads_free[:, 0]
    ml = pyamg.smoothed_aggregation_solver(a, B=bracket.solver._near_null_space(True),
                                           max_coarse=100, symmetry="symmetric")
    res: list[float] = []
    x_ref = ml.solve(b, tol=1e-11, accel="cg", maxiter=200, residuals=res)
    h = bracket.solver.hierarchy
    assert h.degree == (1, 3)  # the CPU default: one product on the finest level
    x, info = pcg(lambda v: a @ v, b, h.vcycle, rtol=1e-11, maxiter=200)
    h.degree = (3, 3)  # pyamg's smoothing strength, about
    try:
        x3, info3 = pcg(lambda v: a @ v, b, h.vcycle, rtol=1e-11, maxiter=200)
    finally:
        h.degree = (1, 3)  # the module's fixture, for the tests after this one
    assert info3.converged and info3.iterations <= 40 and len(res) <= 40
    # from zero to 1e-11 on this small mesh 51 (a warm-started design iteration of the
    # large brackets at 1e-8 takes some 10% more than with (3, 3))
    assert info.converged and info.iterations <= 2 * len(res)
    assert np.abs(x - x_ref).max() <= 1e-8 * np.abs(x_ref).max()
    assert np.abs(x3 - x_ref).max() <= 1e-8 * np.abs(x_ref).max()
    assert np.all(x[np.setdiff1d(np.arange(a.shape[0]), free)] == 0.0)  # supports


def test_the_coarsest_level_stays_small_beside_the_finest(tmp_path):
    """On the CPU coarsening goes on below ``max_coarse`` until the coarsest level's dense
    n^2 is at most half the finest level's entries; ``max_coarse`` still bounds it."""
    from femopt.solvers.amg import COARSE_SHARE, coarsest_limit

    path = tmp_path / "p.yaml"
    path.write_text(PROBLEM + "solver: {type: amg}\n")
    model = build_model(path, device="cpu")
    a = _operator(model, 4)
    sizes = model.solver.hierarchy.sizes()
    limit = coarsest_limit(a, 3000)
    assert limit == int((COARSE_SHARE * a.nnz) ** 0.5) < 3000
    assert sizes[-1][0] <= limit < sizes[-2][0]  # it stopped at the first level below
    assert sizes[-1][0] ** 2 <= COARSE_SHARE * sizes[0][1]
    assert coarsest_limit(a, 100) == 100


def test_scalar_csr_hierarchy_on_a_poisson_matrix():
    """A scalar operator (CSR, constants as near-null space) through the same code:
    CG counts bounded independently of the size, pyamg's solution."""
    counts = []
    for n in (40, 80):
        a = pyamg.gallery.poisson((n, n), format="csr")
        h = SAHierarchy(build_structure(a, None, max_coarse=50), np)
        h.update(a)
        b = np.random.default_rng(n).standard_normal(a.shape[0])
        x, info = pcg(lambda v: a @ v, b, h.vcycle, rtol=1e-10, maxiter=200)
        assert info.converged
        counts.append(info.iterations)
        assert np.linalg.norm(a @ x - b) <= 1e-9 * np.linalg.norm(b)
        x_ref = sp.linalg.spsolve(a.tocsc(), b)
        assert np.abs(x - x_ref).max() <= 1e-7 * np.abs(x_ref).max()
    assert max(counts) <= 20 and counts[1] <= counts[0] + 4


def test_warm_start_and_reuse_across_designs(bracket):
    """The next design's solve starts from the last solution: fewer CG iterations than a
    cold start, same answer; the structure is not rebuilt."""
    _operator(bracket, 4)
    b = bracket.loads_free[:, 0]
    u1 = bracket.solver.solve(b)
    cold = bracket.solver.last.iterations
    structure = [lev.t for lev in bracket.solver.hierarchy.levels[:-1]]
    assert np.array_equal(bracket.solver.solve(b), u1)  # same design: nothing to do
    assert bracket.solver.last.iterations == 0
    rho = np.random.default_rng(4).uniform(0.05, 1.0, bracket.n) * 1.001
    bracket.solver.update_operator(bracket.interp.value(rho), bracket.assembler, bracket.ke)
    u2 = bracket.solver.solve(b)
    warm = bracket.solver.last.iterations
    assert [lev.t for lev in bracket.solver.hierarchy.levels[:-1]] == structure
    assert warm <= cold - 4
    assert np.abs(u2 - u1).max() < 0.01 * np.abs(u1).max()


def test_amg_that_does_not_converge_fails_the_run_with_its_history(tmp_path, capsys):
    """An iteration cap too small for rtol: exit 1, the history in the message and in
    summary.json, never a design written as if converged."""
    problem = tmp_path / "p.yaml"
    problem.write_text(PROBLEM + "solver: {type: amg, max_iter: 3, rtol: 1.0e-12}\n")
    out = tmp_path / "out"
    code = main(["run", str(problem), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "AMG-PCG did not converge in 3 iterations to rtol 1e-12" in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["converged"] is False
    history = summary["solver_residuals"]
    assert len(history) == 3 and history[-1] > 1e-12 and history[-1] < history[0]
    assert f"3: {history[2]:.2e}" in err and f"3: {history[2]:.2e}" in summary["message"]


@pytest.mark.gpu
def test_device_hierarchy_on_the_gpu_equals_the_numpy_twin(bracket):
    """DeviceAMGPCG with CuPy (cuSPARSE products, device Chebyshev and coarse solve) and
    with NumPy on the same free-dof matrix: the same level sizes (stored entries may
    differ: SciPy keeps whole blocks), coarse values to float32 precision, the same
    solution, CG counts within 2."""
    import cupy

    from femopt.solvers.device_amg import DeviceAMGPCG

    _operator(bracket, 5)
    a = bracket.solver.matrix
    modes = np.asarray(bracket.physics.rigid_modes())[bracket.solver.free]
    b = bracket.loads_free[:, 0]
    out = {}
    for xp in (np, cupy):
        s = DeviceAMGPCG(a.indptr, a.indices, modes, xp, rtol=1e-10, max_coarse=100)
        s.update(xp.asarray(a.data))
        x = s.solve(xp.asarray(b))
        out[xp.__name__] = (s, cupy.asnumpy(x) if xp is cupy else x)
    (s_np, x_np), (s_cp, x_cp) = out["numpy"], out["cupy"]
    assert [n for n, _ in s_np.hierarchy.sizes()] == [n for n, _ in s_cp.hierarchy.sizes()]
    for l_np, l_cp in zip(s_np.hierarchy.levels[1:], s_cp.hierarchy.levels[1:]):
        ref = l_np.a.toarray()
        assert np.abs(l_cp.a.get().toarray() - ref).max() <= 1e-4 * np.abs(ref).max()
    assert abs(s_np.last.iterations - s_cp.last.iterations) <= 2
    assert s_cp.last.iterations <= 30
    assert np.abs(x_cp - x_np).max() <= 1e-8 * np.abs(x_np).max()


def _reference_embedding(matrix, free, n_dofs, k):
    """The block matrix built the plain way: COO of all dofs -> CSR -> BSR."""
    fixed = np.setdiff1d(np.arange(n_dofs), free)
    rows = free[np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))]
    coo = sp.coo_matrix((np.concatenate([matrix.data, np.ones(fixed.size)]),
                         (np.concatenate([rows, fixed]),
                          np.concatenate([free[matrix.indices], fixed]))),
                        shape=(n_dofs, n_dofs))
    return coo.tocsr().tobsr(blocksize=(k, k))


@pytest.mark.parametrize("sorted_columns", [True, False])
def test_block_embedding_equals_the_coo_csr_bsr_conversion(sorted_columns):
    """The directly written block matrix equals the COO -> CSR -> BSR one entry for entry
    and block for block (same block order), on a random node graph with fully and
    partly supported nodes; a second design refills only the values."""
    from femopt.solvers.amg import BlockEmbedding

    rng = np.random.default_rng(7)
    k, nodes = 3, 60
    graph = sp.random(nodes, nodes, density=0.08, random_state=3, format="csr")
    graph = (graph + graph.T + sp.eye(nodes)).tocsr()
    full = sp.kron(graph, np.ones((k, k)), format="csr")
    n_dofs = full.shape[0]
    supported = np.zeros(n_dofs, dtype=bool)
    supported[:3 * k] = True  # three fully supported nodes
    supported[rng.choice(np.arange(3 * k, n_dofs), 20, replace=False)] = True
    free = np.flatnonzero(~supported)
    matrix = full[free][:, free].tocsr()
    if not sorted_columns:
        for r in range(matrix.shape[0]):
            lo, hi = matrix.indptr[r], matrix.indptr[r + 1]
            p = rng.permutation(hi - lo)
            matrix.indices[lo:hi] = matrix.indices[lo:hi][p]
        matrix.has_sorted_indices = False
    for seed in (1, 2):
        matrix.data = np.random.default_rng(seed).uniform(1.0, 2.0, matrix.nnz)
        if seed == 1:
            embedding = BlockEmbedding(matrix, free, n_dofs, k)
        assert embedding.matches(matrix)
        got = embedding.embed(matrix)
        want = _reference_embedding(matrix, free, n_dofs, k)
        assert np.array_equal(got.indptr, want.indptr)
        assert np.array_equal(got.indices, want.indices)
        assert np.array_equal(got.data, want.data)
    assert got.shape == (n_dofs, n_dofs) and got.blocksize == (k, k)
    assert (got.diagonal()[supported] == 1.0).all()


def test_coarsest_solve_by_cholesky_and_by_pseudo_inverse_where_indefinite():
    """An SPD coarsest operator with a row no aggregate reaches (all zero) is solved by its
    Cholesky factor, as its pseudo-inverse would (zero on that row); an indefinite one
    falls back to the pseudo-inverse."""
    rng = np.random.default_rng(3)
    m = rng.standard_normal((30, 30))
    spd = m @ m.T + 30 * np.eye(30)
    spd[7, :] = spd[:, 7] = 0.0
    b = rng.standard_normal(30)
    b[7] = 0.0  # P^T r is zero where P's column is
    h = SAHierarchy([], np, dtype=np.float64)
    h._coarsest(sp.csr_matrix(spd))
    assert h.coarse_chol is not None and h.coarse_inv is None
    want = np.linalg.pinv(spd) @ b
    got = h.coarse_solve(b)
    assert got.dtype == np.float64 and got[7] == 0.0
    assert np.abs(got - want).max() <= 1e-12 * np.abs(want).max()
    indefinite = spd - 40 * np.eye(30)
    h._coarsest(sp.csr_matrix(indefinite))
    assert h.coarse_chol is None
    want = np.linalg.pinv(indefinite) @ b
    assert np.abs(h.coarse_solve(b) - want).max() <= 1e-9 * np.abs(want).max()


def test_smoother_degree_option_reaches_the_hierarchy_and_a_bad_one_is_located(
        tmp_path, capsys):
    """``smoother_degree: [4, 1]`` gives the cycle those degrees (and still pyamg's
    answer); without it the CPU solver takes (1, 3) and a V-cycle, the GPU mesh path
    (its NumPy twin here) (2, 3) and a W-cycle, and ``cycle`` overrides either; a degree
    of 0 is refused at its place in the problem file."""
    path = tmp_path / "deg.yaml"
    path.write_text(PROBLEM + "solver: {type: amg, max_coarse: 100, "
                    "smoother_degree: [4, 1]}\n")
    model = build_model(path, device="cpu")
    _operator(model, 6)
    b = model.loads_free[:, 0]
    u = model.solver.solve(b)
    assert model.solver.hierarchy.degree == (4, 1)
    k = model.assembler.assemble(model.interp.value(
        np.random.default_rng(6).uniform(0.05, 1.0, model.n)), model.ke)
    assert np.linalg.norm(k @ u - b) <= 1e-7 * np.linalg.norm(b)
    default = tmp_path / "default.yaml"
    default.write_text(PROBLEM + "solver: {type: amg, max_coarse: 100}\n")
    cpu = build_model(default, device="cpu")
    _operator(cpu, 6)
    cpu.solver.solve(b)
    assert cpu.solver.hierarchy.degree == (1, 3) and cpu.solver.hierarchy.visits == 1
    twin = build_model(default, array_module=np).path.solver
    assert (twin.degree, twin.cycle) == ((2, 3), "W")
    chosen = tmp_path / "chosen.yaml"
    chosen.write_text(PROBLEM + "solver: {type: amg, cycle: V, smoother_degree: [3, 2]}\n")
    twin = build_model(chosen, array_module=np).path.solver
    assert (twin.degree, twin.cycle) == ((3, 2), "V")
    bad = tmp_path / "bad.yaml"
    bad.write_text(PROBLEM + "solver: {type: amg, smoother_degree: [0, 3]}\n")
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:{PROBLEM.count(chr(10)) + 1}:" in err and "smoother_degree" in err


def test_w_cycle_is_symmetric_and_takes_fewer_cg_iterations(bracket):
    """The W-cycle (two coarse corrections on every level above the coarsest) is a
    symmetric preconditioner, as CG needs (v^T M w = w^T M v), and reaches the V-cycle's
    solution in fewer CG iterations at the same degrees."""
    a = _operator(bracket, 7)
    free = bracket.solver.free
    b = np.zeros(a.shape[0])
    b[free] = bracket.loads_free[:, 0]
    h = bracket.solver.hierarchy
    assert len(h.levels) >= 3  # a level visited twice per cycle
    rng = np.random.default_rng(7)
    v, w = (np.where(np.isin(np.arange(a.shape[0]), free), rng.standard_normal(a.shape[0]),
                     0.0) for _ in range(2))
    runs = {}
    try:
        for visits in (1, 2):
            h.visits = visits
            mv, mw = h.vcycle(v), h.vcycle(w)
            assert float(w @ mv) == pytest.approx(float(v @ mw), rel=1e-5)  # float32 cycle
            runs[visits] = pcg(lambda u: a @ u, b, h.vcycle, rtol=1e-10, maxiter=200)
    finally:
        h.visits = 1  # the module's fixture, for the tests after this one
    (x_v, info_v), (x_w, info_w) = runs[1], runs[2]
    assert info_v.converged and info_w.converged
    assert info_w.iterations < info_v.iterations, (info_w.iterations, info_v.iterations)
    assert np.abs(x_w - x_v).max() <= 1e-7 * np.abs(x_v).max()


def test_a_large_hierarchy_takes_more_lanczos_steps_on_every_level(monkeypatch):
    """The finest level's size decides the Lanczos steps of every level: the default
    below LARGE_ROWS rows, LANCZOS_STEPS_LARGE from there (12 steps underestimate rho on
    millions of rows, and the smoother then diverges)."""
    from femopt.solvers import sa_hierarchy as sa

    a = pyamg.gallery.poisson((40, 40), format="csr")
    asked = []
    real = sa._spectral_radius
    monkeypatch.setattr(sa, "_spectral_radius",
                        lambda *args: asked.append(args[-1]) or real(*args))
    for rows, want in ((a.shape[0] + 1, sa.LANCZOS_STEPS),
                       (a.shape[0], sa.LANCZOS_STEPS_LARGE)):
        monkeypatch.setattr(sa, "LARGE_ROWS", rows)
        h = SAHierarchy(build_structure(a, None, max_coarse=50), np)
        asked.clear()
        h.update(a)
        assert len(asked) == len(h.levels) - 1 >= 2 and set(asked) == {want}
    assert sa.LANCZOS_STEPS_LARGE > sa.LANCZOS_STEPS
