"""Geometric multigrid on structured grids (CPU): the matrix-free operator, transfers and
Galerkin coarse operators against assembled matrices; MG-PCG against the direct solver on
SIMP designs; the grid kernels' NumPy twins against femopt's sparse reference code."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from femopt.adjoint.grid_sensitivity import grid_sensitivity
from femopt.adjoint.sensitivity import element_sensitivity
from femopt.assembly.grid_layout import GridLayout
from femopt.assembly.matrix_free import StructuredOperator, apply_numpy
from femopt.assembly.sparse import FixedPatternAssembler
from femopt.assembly.structured_csr import CSROperator, StructuredCSR
from femopt.errors import SolverError
from femopt.filters.base import radius_weights
from femopt.filters.grid_filter import GridDensityFilter
from femopt.mesh import structured_grid
from grid_cantilever import grid_cantilever, truss_design
from femopt.optimizers.oc_kernels import oc_update_linear
from femopt.physics.elasticity import ElasticityOptions, LinearElasticity
from femopt.physics.heat import HeatConduction, HeatOptions
from femopt.solvers import DirectSolver
from femopt.solvers import multigrid_transfer as transfer
from femopt.solvers.cg_kernels import pcg_fused
from femopt.solvers.galerkin import (
    child_matrices,
    coarsen_cell_matrices,
    descendant_scales,
    galerkin_cell_matrices,
    rediscretized_scale,
)
from femopt.solvers.multigrid import MultigridOptions, MultigridSolver
from femopt.solvers.multigrid_levels import eigenvalue_bound

PHYSICS = {"elasticity": (LinearElasticity, ElasticityOptions),
           "heat": (HeatConduction, HeatOptions)}


def physics_on(shape, kind):
    mesh = structured_grid(shape, [float(n) for n in shape])
    cls, opts = PHYSICS[kind]
    physics = cls(opts(), mesh)
    return physics, GridLayout(tuple(shape), physics.dofs_per_node)


def assembled(layout, physics, scale, cell_matrices=None):
    """The full (unconstrained) stiffness in the grid layout, by FixedPatternAssembler."""
    asm = FixedPatternAssembler(layout.cell_grid_dofs(), layout.n_dofs, np.arange(layout.n_dofs))
    ke = physics.element_matrices() if cell_matrices is None else cell_matrices
    return asm.assemble(scale, ke).toarray()


def prolongation(coarse):
    return np.stack([transfer.prolong(coarse, e) for e in np.eye(coarse.n_dofs)], axis=1)


@pytest.mark.parametrize("kind", ["elasticity", "heat"])
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 2)], ids=["quad4", "hex8"])
def test_matrix_free_apply_equals_assembled_matrix(shape, kind):
    physics, layout = physics_on(shape, kind)
    rng = np.random.default_rng(1)
    scale = rng.uniform(1e-3, 1.0, layout.n_cells)
    k_full = assembled(layout, physics, scale)
    free = rng.uniform(size=layout.n_dofs) > 0.25
    u = rng.standard_normal(layout.n_dofs) * free
    z = rng.standard_normal(layout.n_dofs)
    op = StructuredOperator(layout, scale, physics.element_matrices(), free)
    y = op.apply(u, alpha=0.5, beta=-2.0, z=z)
    expected = np.where(free, k_full @ u, u) * 0.5 - 2.0 * z
    np.testing.assert_allclose(y, expected, atol=1e-12 * np.abs(expected).max())
    # diagonal: K's on free dofs, 1 on constrained ones
    np.testing.assert_allclose(op.diagonal(), np.where(free, np.diag(k_full), 1.0), rtol=1e-12)
    # the layout conversions invert each other and match femopt's dof numbering
    v = rng.standard_normal(layout.n_dofs)
    np.testing.assert_array_equal(layout.to_dofs(layout.from_dofs(v)), v)
    dofs = physics.cell_dofs()
    np.testing.assert_array_equal(layout.grid_index(dofs), layout.cell_grid_dofs())


@pytest.mark.parametrize("shape, k", [((4, 2), 2), ((2, 4, 2), 3), ((4, 2, 2), 1)])
def test_restriction_is_the_transpose_of_prolongation(shape, k):
    fine = GridLayout(shape, k)
    coarse = fine.coarsened()
    p = prolongation(coarse)
    r = np.stack([transfer.restrict(coarse, e) for e in np.eye(fine.n_dofs)], axis=1)
    np.testing.assert_array_equal(r, p.T)
    # P reproduces linear fields exactly
    xs = np.meshgrid(*[np.arange(n) for n in coarse.node_shape[::-1]], indexing="ij")
    lin = np.broadcast_to((2.0 * xs[-1] - xs[0])[None], coarse.nodes(np.zeros(coarse.n_dofs)).shape)
    fine_lin = fine.nodes(transfer.prolong(coarse, lin.reshape(-1)))
    xf = np.meshgrid(*[np.arange(n) / 2 for n in fine.node_shape[::-1]], indexing="ij")
    np.testing.assert_allclose(fine_lin, np.broadcast_to(2.0 * xf[-1] - xf[0], fine_lin.shape))


@pytest.mark.parametrize("kind", ["elasticity", "heat"])
# a grid of unequal sides: a child taken along the wrong axis shows
@pytest.mark.parametrize("shape", [(8, 4), (4, 4, 4), (4, 8, 4)],
                         ids=["quad4", "hex8", "hex8_unequal"])
def test_galerkin_cell_matrices_equal_ptap(shape, kind):
    physics, fine = physics_on(shape, kind)
    rng = np.random.default_rng(2)
    scale = rng.uniform(1e-9, 1.0, fine.n_cells)
    ke = physics.element_matrices()
    k0 = assembled(fine, physics, scale)
    c1 = fine.coarsened()
    c2 = c1.coarsened()
    p1, p2 = prolongation(c1), prolongation(c2)
    g1 = p1.T @ k0 @ p1
    g2 = p2.T @ g1 @ p2
    cells1 = galerkin_cell_matrices(fine, scale, ke, 2)
    np.testing.assert_allclose(assembled(c1, physics, np.ones(c1.n_cells), cells1), g1,
                               atol=1e-12 * np.abs(g1).max())
    for cells2 in (galerkin_cell_matrices(fine, scale, ke, 4),
                   coarsen_cell_matrices(c1, cells1)):
        np.testing.assert_allclose(assembled(c2, physics, np.ones(c2.n_cells), cells2), g2,
                                   atol=1e-12 * np.abs(g2).max())
    # level 1 matrix-free: children scale factors with the child matrices
    u = rng.standard_normal(c1.n_dofs)
    y = apply_numpy(c1, u, descendant_scales(fine, scale, 2),
                    child_matrices(ke, fine.dim, fine.k, 2))
    np.testing.assert_allclose(y, g1 @ u, atol=1e-12 * np.abs(g1 @ u).max())


def galerkin_product_case(xp, dtype, shape=(4, 2, 6), seed=4):
    """Level 1 of a constrained hex8 elasticity grid: its Galerkin product operator, the
    cell-wise Galerkin operator (children's scale factors and matrices) and a coarse
    vector that vanishes on the constrained dofs."""
    from femopt.solvers.multigrid_levels import GalerkinProduct

    physics, fine = physics_on(shape, "elasticity")
    rng = np.random.default_rng(seed)
    scale = rng.uniform(1e-3, 1.0, fine.n_cells).astype(dtype)
    ke = physics.element_matrices()
    fixed = np.zeros(fine.n_dofs, dtype=bool)
    fixed[fine.grid_index(np.arange(3 * (shape[0] + 1)))] = True  # a line of nodes, all axes
    fixed[fine.n_nodes + 7] = True  # one y component elsewhere
    c1 = fine.coarsened()
    fixed_c = transfer.coarse_fixed(fine, fixed)
    dev = xp.asarray
    fine_op = StructuredOperator(fine, dev(scale), ke, dev(~fixed))
    work = (xp.full(fine.n_dofs, 7.0, dtype=dtype), xp.full(fine.n_dofs, -3.0, dtype=dtype))
    children = child_matrices(ke, 3, 3, 2)
    product = GalerkinProduct(c1, fine_op, dev(~fixed_c), work, children)
    cellwise = StructuredOperator(c1, dev(descendant_scales(fine, scale, 2)), children,
                                  dev(~fixed_c))
    u = rng.standard_normal(c1.n_dofs).astype(dtype) * ~fixed_c
    z = rng.standard_normal(c1.n_dofs).astype(dtype)
    return product, cellwise, dev(u), dev(z), fixed_c


def test_level1_galerkin_product_equals_cellwise_galerkin():
    """The level-1 operator applied as prolong, fine apply, restrict equals the cell-wise
    Galerkin operator P^T A P with its constraints (identity rows), for every form of
    alpha A u + beta z the smoothers ask, and its diagonal too; its work vectors are
    scratch."""
    product, cellwise, u, z, fixed_c = galerkin_product_case(np, np.float64)
    assert fixed_c.any() and not fixed_c.all()
    tol = 1e-12 * np.abs(cellwise.apply(u)).max()
    assert np.abs(product.apply(u)).max() > 0
    np.testing.assert_allclose(product.apply(u), cellwise.apply(u), atol=tol)
    np.testing.assert_allclose(product.apply(u, alpha=-2.0, beta=0.5, z=z),
                               cellwise.apply(u, alpha=-2.0, beta=0.5, z=z), atol=tol)
    out = z.copy()  # out is z: r <- r - A d, as the smoothers call it
    product.apply(u, out=out, alpha=-1.0, beta=1.0, z=out)
    np.testing.assert_allclose(out, z - cellwise.apply(u), atol=tol)
    np.testing.assert_array_equal(out[fixed_c], z[fixed_c])
    out = z.copy()
    product.apply(u, out=out, alpha=1.0, beta=3.0, z=out)
    np.testing.assert_allclose(out, 3.0 * z + cellwise.apply(u), atol=tol)
    np.testing.assert_allclose(product.diagonal(), cellwise.diagonal(), rtol=1e-14)


def test_the_gpu_transfers_launch_a_block_row_per_line_and_refuse_more_than_cuda_takes():
    """The transfer kernels' launch: x in blocks of a multiple of 32 threads (at most
    128), one block row per (y, z) line; more lines along y or z than a CUDA grid takes
    is a clear error before any launch."""
    from femopt.solvers.multigrid_transfer import MAX_LINES, _launch

    launched = []
    _launch(lambda *a: launched.append(a[:2]), (5, MAX_LINES), ())
    _launch(lambda *a: launched.append(a[:2]), (300, 7, 9), ())
    assert launched == [((1, MAX_LINES, 1), (32,)), ((3, 7, 9), (128,))]
    with pytest.raises(SolverError, match="at most 65535 nodes along y and z"):
        _launch(lambda *a: launched.append(a), (5, 3, MAX_LINES + 1), ())
    assert len(launched) == 2


@pytest.mark.parametrize("shape, k", [((3, 2), 2), ((2, 2, 3), 3), ((3, 2, 2), 1), ((1, 4), 2),
                                      ((4, 1, 3), 3)])
def test_structured_csr_equals_fixed_pattern_assembly(shape, k):
    layout = GridLayout(shape, k)
    rng = np.random.default_rng(3)
    fixed = rng.uniform(size=layout.n_dofs) < 0.3
    pattern = StructuredCSR(layout, fixed)
    cells = rng.standard_normal((layout.n_cells, layout.nd, layout.nd))
    data = pattern.assemble_data(cells)
    a = pattern.matrix(data).toarray()
    free = np.flatnonzero(~fixed)
    asm = FixedPatternAssembler(layout.cell_grid_dofs(), layout.n_dofs, free)
    np.testing.assert_allclose(a[np.ix_(free, free)], asm.assemble(np.ones(layout.n_cells),
                                                                   cells).toarray(), atol=1e-13)
    np.testing.assert_array_equal(a[np.ix_(fixed, fixed)], np.eye(fixed.sum()))
    assert not a[np.ix_(fixed, free)].any() and not a[np.ix_(free, fixed)].any()
    op = CSROperator(pattern, data)
    np.testing.assert_allclose(op.diagonal(), np.diag(a))
    np.testing.assert_allclose(op.to_dense(), a)


def test_structured_csr_with_int64_indices_equals_int32(monkeypatch):
    """From INT32_ENTRIES entries the pattern's indices are int64 (the limit lowered here):
    the same pattern, diagonal slots and assembled values; the pattern keeps its own copy
    of the constraints (a later change to the caller's mask does not reach it)."""
    import femopt.assembly.structured_csr as scsr

    layout = GridLayout((3, 2, 2), 3)
    rng = np.random.default_rng(5)
    fixed = rng.uniform(size=layout.n_dofs) < 0.3
    cells = rng.standard_normal((layout.n_cells, layout.nd, layout.nd))
    narrow = StructuredCSR(layout, fixed)
    monkeypatch.setattr(scsr, "INT32_ENTRIES", 0)
    wide = StructuredCSR(layout, fixed)
    assert (narrow.indices.dtype, narrow.indptr.dtype) == (np.int32, np.int32)
    assert (wide.indices.dtype, wide.indptr.dtype) == (np.int64, np.int64)
    np.testing.assert_array_equal(wide.indices, narrow.indices)
    np.testing.assert_array_equal(wide.indptr, narrow.indptr)
    np.testing.assert_array_equal(wide.diag_slot, narrow.diag_slot)
    data = narrow.assemble_data(cells)
    fixed[:] = False
    np.testing.assert_array_equal(wide.assemble_data(cells), data)


def cantilever_case(shape, design="truss"):
    """Free-dof system of the grid cantilever at a SIMP design (p = 3, min 1e-9)."""
    case = grid_cantilever(shape)
    lay = case.layout
    rho = truss_design(shape) if design == "truss" else np.full(lay.n_cells, 0.3)
    scale = 1e-9 + rho**3 * (1 - 1e-9)
    # the assembler and the direct solver see femopt's node-major numbering
    fixed = lay.to_dofs(case.fixed)
    asm = FixedPatternAssembler(lay.cell_dofs(), lay.n_dofs, np.flatnonzero(~fixed))
    f = asm.restrict(lay.to_dofs(case.load))
    return case, scale, asm, f


# CG iterations to rtol 1e-8 measured on these designs (2026-11-25), with some headroom:
# a regression in the hierarchy or the smoothers shows up as many more.
@pytest.mark.parametrize("shape, max_iters", [((32, 16), 32), ((16, 8, 8), 24)],
                         ids=["quad4", "hex8"])
def test_mg_pcg_matches_direct_solve_on_simp_design(shape, max_iters):
    case, scale, asm, f = cantilever_case(shape)
    direct = DirectSolver()
    direct.update_operator(scale, asm, case.ke)
    expected = direct.solve(f)
    mg = MultigridSolver(MultigridOptions(rtol=1e-10, coarsest_size=200), case.layout)
    mg.update_operator(scale, asm, case.ke)
    assert len(mg.levels) >= 3
    u = mg.solve(f)
    assert mg.stats()["cg_iterations"] <= max_iters
    np.testing.assert_allclose(u, expected, rtol=0, atol=1e-7 * np.abs(expected).max())


@pytest.mark.parametrize("opts", [dict(smoother="jacobi"), dict(coarse_operator="rediscretize"),
                                  dict(coarse_operator="hybrid"), dict(matrix_free_levels=2),
                                  dict(precision="float32"), dict(eigenvalue_bound="element")],
                         ids=["jacobi", "rediscretize", "hybrid", "matrix_free_level1",
                              "float32", "element_bound"])
def test_mg_pcg_variants_converge(opts):
    case, scale, asm, f = cantilever_case((16, 8, 4))
    expected = DirectSolver()
    expected.update_operator(scale, asm, case.ke)
    ref = expected.solve(f)
    mg = MultigridSolver(MultigridOptions(rtol=1e-9, coarsest_size=100, **opts), case.layout)
    mg.update_operator(scale, asm, case.ke)
    u = mg.solve(f)
    assert mg.last.iterations <= 60
    np.testing.assert_allclose(u, ref, rtol=0, atol=1e-6 * np.abs(ref).max())


def hybrid_case(shape, n_re, xp):
    """The cantilever at a SIMP design, its direct solution, and a mixed-Krylov hybrid
    multigrid with ``n_re`` rediscretized levels whose operator is set on ``xp``."""
    case, scale, asm, f = cantilever_case(shape)
    ref = DirectSolver()
    ref.update_operator(scale, asm, case.ke)
    mg = MultigridSolver(MultigridOptions(rtol=1e-9, coarsest_size=100,
                                          coarse_operator="hybrid",
                                          rediscretized_levels=n_re), case.layout)
    mg.use_krylov("mixed")
    mg.update_operator(xp.asarray(scale), asm, case.ke)
    return case, scale, asm, f, ref.solve(f), mg


@pytest.mark.parametrize("n_re", [1, 2, 3])
def test_hybrid_rediscretizes_the_levels_asked_and_galerkin_below(n_re):
    """``hybrid`` with ``rediscretized_levels`` n: levels 1 to n matrix-free on their
    children's mean scale factors, level n + 1 assembled as P^T A_n P of level n's
    operator (the coarsest assembled whatever it is), each level's element bound taken at
    its coarsening ratio from level n; with the float32 V-cycle of the mixed solve the
    solution is the direct solver's."""
    case, scale, asm, f, u_ref, mg = hybrid_case((32, 16, 8), n_re, np)
    levels = mg.levels
    assert [lev.layout.shape for lev in levels] == [(32, 16, 8), (16, 8, 4), (8, 4, 2),
                                                    (4, 2, 1)]
    assert [isinstance(lev.op, CSROperator) for lev in levels] == [
        i > n_re or i == 3 for i in range(4)]
    s = [scale]
    for i in range(1, min(n_re, 3) + 1):
        s.append(rediscretized_scale(levels[i - 1].layout, s[-1]))
    for i in range(1, min(n_re, 2) + 1):
        np.testing.assert_allclose(levels[i].op.scale, s[i], rtol=1e-6)
    lev = levels[min(n_re + 1, 3)]  # the first assembled level
    if n_re < 3:  # Galerkin of the last rediscretized level
        p = prolongation(lev.layout)
        g = p.T @ assembled(levels[n_re].layout, None, s[n_re], case.ke) @ p
    else:  # the coarsest, rediscretized too
        g = assembled(lev.layout, None, s[3], case.ke)
    free = np.asarray(lev.free)
    got = lev.op.to_dense()
    np.testing.assert_allclose(got[np.ix_(free, free)], g[np.ix_(free, free)], rtol=0,
                               atol=1e-6 * np.abs(g).max())
    np.testing.assert_array_equal(got[~free], np.eye(len(free))[~free])
    assert mg._bounds == [eigenvalue_bound(case.ke, 3, 3, 2 ** max(i - n_re, 0))
                          for i in range(4)]
    u = mg.solve(f)
    # float32 CG iterations of three outer steps: 61 to 66 measured (2026-12-06)
    assert mg.last.iterations <= 75
    np.testing.assert_allclose(u, u_ref, rtol=0, atol=1e-7 * np.abs(u_ref).max())


@pytest.mark.gpu
@pytest.mark.parametrize("n_re, shape", [(1, (32, 16, 8)), (2, (64, 32, 16))])
def test_gpu_hybrid_applies_the_next_level_by_products(n_re, shape):
    """On the GPU, hybrid's level below the rediscretized ones is P^T A_n P applied by
    products through level n's operator (no CSR values), the same matrix as the
    assembled Galerkin level; CSR from the level after; the mixed solve is the direct
    solver's."""
    import cupy

    from femopt.solvers.multigrid_levels import GalerkinProduct

    case, scale, asm, f, u_ref, mg = hybrid_case(shape, n_re, cupy)
    levels = mg.levels
    kinds = [type(lev.op).__name__ for lev in levels]
    assert kinds[n_re + 1] == "GalerkinProduct" and kinds[-1] == "CSROperator"
    assert all(k == "StructuredOperator" for k in kinds[:n_re + 1])
    s = [scale]
    for i in range(1, n_re + 1):
        s.append(rediscretized_scale(levels[i - 1].layout, s[-1]))
    lev = levels[n_re + 1]
    assert isinstance(lev.op, GalerkinProduct)
    n = lev.layout.n_dofs
    got = np.stack([cupy.asnumpy(lev.op.apply(cupy.asarray(np.eye(n, dtype=np.float32)[j]
                                                           * cupy.asnumpy(lev.free))))
                    for j in range(n)], axis=1)
    pr = prolongation(lev.layout)
    g = pr.T @ assembled(levels[n_re].layout, None, s[n_re], case.ke) @ pr
    free = cupy.asnumpy(lev.free)
    np.testing.assert_allclose(got[np.ix_(free, free)], g[np.ix_(free, free)], rtol=0,
                               atol=1e-5 * np.abs(g).max())
    u = cupy.asnumpy(mg.solve(cupy.asarray(f)))
    np.testing.assert_allclose(u, u_ref, rtol=0, atol=1e-7 * np.abs(u_ref).max())


def test_pcg_adds_its_steps_into_a_state_with_fletcher_reeves():
    """``into``: CG keeps no x of its own and adds its steps to the given array (the
    mixed solve's float64 state, its float32 steps widened); Fletcher-Reeves with z in
    q's buffer converges like Polak-Ribiere on a symmetric preconditioner; a breakdown
    leaves the state finite; ``into`` takes no x0."""
    rng = np.random.default_rng(12)
    n = 60
    a = rng.standard_normal((n, n))
    a = a @ a.T + n * np.eye(n)
    inv_diag = 1.0 / np.diag(a)

    def apply(u, out):
        out[...] = a @ u
        return out

    def precond(r, out):
        np.multiply(inv_diag, r, out=out)
        return out

    b = rng.standard_normal(n)
    start = rng.standard_normal(n)
    want = np.linalg.solve(a, b) + start
    x = start.copy()
    got, info = pcg_fused(apply, precond, b.copy(), rtol=1e-12, into=x, polak_ribiere=False)
    assert got is x and info.converged
    np.testing.assert_allclose(x, want, rtol=1e-9)
    _, pr = pcg_fused(apply, precond, b.copy(), rtol=1e-12)
    assert abs(info.iterations - pr.iterations) <= 1
    x32 = start.copy()  # float32 CG into a float64 state
    pcg_fused(lambda u, out: apply(u, out), lambda r, out: precond(r, out),
              b.astype(np.float32), rtol=1e-5, into=x32, polak_ribiere=False)
    assert x32.dtype == np.float64
    np.testing.assert_allclose(x32, want, rtol=0, atol=1e-4 * np.abs(want).max())
    with pytest.raises(ValueError, match="into"):
        pcg_fused(apply, precond, b, x0=start, into=start.copy())
    broken = start.copy()
    with pytest.raises(SolverError, match="breakdown"):
        pcg_fused(lambda u, out: apply(-u, out), precond, b.copy(), into=broken,
                  polak_ribiere=False)
    assert np.all(np.isfinite(broken))


@pytest.mark.parametrize("coarse, n_re, n_levels, n_mf, want", [
    ("hybrid", 1, 5, 3, {0}),  # the GPU's: level 2 by products borrows level 1's r, d
    ("hybrid", 1, 5, 2, {0, 1}),  # the CPU's: no product level
    ("hybrid", 2, 5, 4, {0, 1}),
    ("hybrid", 1, 2, 3, {0}),  # level 1 the coarsest
    ("galerkin", 1, 4, 2, set()),  # level 1 by products borrows the fine r, d
    ("galerkin", 1, 4, 1, {0}),
    ("rediscretize", 1, 4, 4, {0, 1, 2}),
    ("galerkin", 1, 1, 1, set()),  # one level: the coarsest alone
])
def test_fused_levels(coarse, n_re, n_levels, n_mf, want):
    from femopt.solvers.multigrid_levels import fused_levels

    assert fused_levels(coarse, n_re, n_levels, n_mf) == want


@pytest.mark.parametrize("springs", [False, True])
def test_fused_v_cycle_is_the_residual_form(springs):
    """A V-cycle whose fine level forms its residuals in the applies (no r) gives the one
    with the residual form (its r given back) to float64 rounding; springs on the fine
    operator keep the residual form (their operator has no fused step)."""
    from femopt.solvers.multigrid_levels import vcycle

    case, scale, asm, f = cantilever_case((16, 8, 8))
    mg = MultigridSolver(MultigridOptions(coarsest_size=100, coarse_operator="hybrid"),
                         case.layout)
    lay = case.layout
    k = np.zeros(lay.n_dofs)
    if springs:
        k[lay.grid_index(np.arange(5))] = 1e3
    mg.update_grid_operator(scale, case.ke, case.fixed, k if springs else None)
    top = mg.levels[0]
    assert (top.r is None) != springs
    b = np.random.default_rng(13).standard_normal(lay.n_dofs) * ~case.fixed
    x = np.zeros(lay.n_dofs)
    vcycle(mg.levels, 0, b, x)
    if springs:
        return
    top.r = np.zeros(lay.n_dofs)
    ref = np.zeros(lay.n_dofs)
    vcycle(mg.levels, 0, b, ref)
    np.testing.assert_allclose(x, ref, rtol=0, atol=1e-13 * np.abs(ref).max())
    assert np.abs(ref).max() > 0


def test_transpose_solve_multiple_rhs_and_warm_start():
    case, scale, asm, f = cantilever_case((16, 8))
    rng = np.random.default_rng(4)
    b = np.stack([f, rng.standard_normal(f.size)], axis=1)
    direct = DirectSolver()
    direct.update_operator(scale, asm, case.ke)
    expected = direct.solve(b)
    mg = MultigridSolver(MultigridOptions(rtol=1e-10, coarsest_size=50), case.layout)
    mg.update_operator(scale, asm, case.ke)
    for transpose in (False, True):
        x = mg.solve(b, transpose=transpose)
        assert x.shape == b.shape
        np.testing.assert_allclose(x, expected, rtol=0, atol=1e-7 * np.abs(expected).max())
    mg.solve(f)
    cold = mg.last.iterations
    mg.solve(f, x0=expected[:, 0] * (1 + 1e-6))
    assert mg.last.iterations < cold


def test_hex8_heat_and_odd_grid_stops_coarsening():
    physics, layout = physics_on((12, 6, 5), "heat")
    mesh = physics.mesh
    clamp = np.flatnonzero(np.isclose(mesh.points[:, 0], 0.0))
    asm = FixedPatternAssembler(physics.cell_dofs(), layout.n_dofs,
                                np.setdiff1d(np.arange(layout.n_dofs), clamp))
    rng = np.random.default_rng(5)
    scale = 1e-9 + rng.uniform(0, 1, layout.n_cells) ** 3
    b = rng.standard_normal(asm.free.size)
    mg = MultigridSolver(MultigridOptions(rtol=1e-9, coarsest_size=10), layout)
    mg.update_operator(scale, asm, physics.element_matrices())
    assert len(mg.levels) == 1  # nz = 5 is odd: no coarsening, a direct solve
    direct = DirectSolver()
    direct.update_operator(scale, asm, physics.element_matrices())
    np.testing.assert_allclose(mg.solve(b), direct.solve(b), rtol=1e-7, atol=0)


def test_not_converging_and_unbound_are_solver_errors():
    case, scale, asm, f = cantilever_case((16, 8))
    mg = MultigridSolver(MultigridOptions(max_iter=2, rtol=1e-12, coarsest_size=50),
                         case.layout)
    mg.update_operator(scale, asm, case.ke)
    with pytest.raises(SolverError, match="did not converge in 2 iterations"):
        mg.solve(f)
    with pytest.raises(SolverError, match="bind"):
        MultigridSolver().update_operator(scale, asm, case.ke)
    with pytest.raises(SolverError, match="element scale factors"):
        mg.update_operator(scale[:-1], asm, case.ke)


def test_iterations_grow_slowly_with_the_grid():
    # a design that keeps its shape under refinement (members 1/5 of the height)
    counts = []
    for shape in [(32, 16), (64, 32), (128, 64)]:
        case = grid_cantilever(shape)
        scale = 1e-9 + truss_design(shape, half=0.1) ** 3
        mg = MultigridSolver(MultigridOptions(rtol=1e-8, coarsest_size=300), case.layout)
        mg.update_grid_operator(scale, case.ke, case.fixed)
        mg.solve_grid(case.load)
        counts.append(mg.last.iterations)
    assert max(counts) <= 30 and counts[2] <= counts[0] + 6, counts


def test_fused_pcg_equals_textbook_cg():
    rng = np.random.default_rng(6)
    a = rng.standard_normal((40, 40))
    a = a @ a.T + 40 * np.eye(40)
    b = rng.standard_normal(40)
    d = 1 / np.diag(a)

    def apply(u, out):
        out[...] = a @ u

    def precond(r, out):
        out[...] = d * r

    x, info = pcg_fused(apply, precond, b, rtol=1e-12, max_iter=200)
    np.testing.assert_allclose(a @ x, b, atol=1e-10)
    assert info.converged and info.iterations < 40


# -- the other grid kernels' twins -------------------------------------------------------

@pytest.mark.parametrize("shape", [(5, 3), (3, 2, 2)], ids=["quad4", "hex8"])
def test_grid_sensitivity_equals_element_sensitivity(shape):
    physics, layout = physics_on(shape, "elasticity")
    rng = np.random.default_rng(7)
    u = rng.standard_normal(layout.n_dofs)
    lam = rng.standard_normal(layout.n_dofs)
    dm = rng.uniform(size=layout.n_cells)
    scale = rng.uniform(size=layout.n_cells)
    ke = physics.element_matrices()
    cd = physics.cell_dofs()
    ref = element_sensitivity(cd, ke, layout.to_dofs(lam)[None], layout.to_dofs(u)[None])
    sens, total = grid_sensitivity(layout, lam, u, scale, dm, ke, coef=2.0)
    np.testing.assert_allclose(sens, 2.0 * dm * ref, rtol=1e-12)
    np.testing.assert_allclose(total, scale @ ref, rtol=1e-12)
    # compliance: lam is u, its value is u^T K u
    sens, total = grid_sensitivity(layout, u, u, scale, dm, ke, coef=-1.0)
    k = assembled(layout, physics, scale)
    np.testing.assert_allclose(total, u @ k @ u, rtol=1e-12)


@pytest.mark.parametrize("shape, size, radius", [((9, 6), (9.0, 3.0), 1.2),
                                                 ((7, 5, 4), (7.0, 5.0, 8.0), 2.6)])
def test_grid_density_filter_equals_radius_weights(shape, size, radius):
    mesh = structured_grid(shape, size)
    h, hs = radius_weights(mesh, radius)
    flt = GridDensityFilter(shape, mesh.grid.spacing, radius)
    rng = np.random.default_rng(8)
    x = rng.uniform(size=mesh.n_cells)
    g = rng.standard_normal(mesh.n_cells)
    np.testing.assert_allclose(flt.hs, hs, rtol=1e-13)
    np.testing.assert_allclose(flt.forward(x), h @ x / hs, rtol=1e-13)
    np.testing.assert_allclose(flt.backward(x, g), h.T @ (g / hs), rtol=1e-12, atol=1e-15)


def test_oc_linear_update_meets_the_volume_and_the_move_limit():
    rng = np.random.default_rng(9)
    n = 500
    x = np.full(n, 0.4)
    df = -rng.uniform(0.1, 2.0, n)
    w = np.full(n, 1.0 / n)
    x_new, change = oc_update_linear(x, df, np.ones(n), w, 0.4, move=0.2)
    assert abs(w @ x_new - 0.4) < 2e-3
    assert change <= 0.2 + 1e-12 and np.all((x_new >= 0) & (x_new <= 1))
    # larger -df gets more material
    order = np.argsort(df)
    assert x_new[order[0]] >= x_new[order[-1]]


def test_structured_csr_matvec_matches_sparse():
    layout = GridLayout((4, 3), 2)
    fixed = np.zeros(layout.n_dofs, dtype=bool)
    pattern = StructuredCSR(layout, fixed)
    rng = np.random.default_rng(10)
    cells = rng.standard_normal((layout.n_cells, layout.nd, layout.nd))
    op = CSROperator(pattern, pattern.assemble_data(cells))
    u = rng.standard_normal(layout.n_dofs)
    ref = sp.csr_matrix(op.to_dense()) @ u
    np.testing.assert_allclose(op.apply(u, alpha=2.0, beta=1.0, z=u), 2 * ref + u)


def test_too_low_eigenvalue_estimate_falls_back_to_the_element_bound(monkeypatch):
    import femopt.solvers.multigrid as mg_module

    monkeypatch.setattr(mg_module, "LANCZOS_MARGIN", 0.25)  # a Chebyshev that diverges
    case, scale, asm, f = cantilever_case((16, 8, 4))
    mg = MultigridSolver(MultigridOptions(rtol=1e-8, coarsest_size=100, max_iter=100),
                         case.layout)
    mg.update_operator(scale, asm, case.ke)
    mg.solve(f)
    assert mg.stats()["mg_element_bounds"] and mg.last.converged


def test_a_failing_float32_vcycle_is_promoted_to_float64():
    """CG that cannot converge with the float32 V-cycle (here a V-cycle made indefinite
    on purpose, as rounding can make a nearly void design's) is run again with the
    V-cycle rebuilt in float64, for the rest of the run; the solution is the direct
    solver's and the log says so."""

    class Broken(MultigridSolver):
        def precondition(self, r, out):
            out = super().precondition(r, out)
            if self.dtype == np.float32:
                out[: out.size // 2] *= -1.0  # indefinite
            return out

    case, scale, asm, f = cantilever_case((16, 8, 4))
    direct = DirectSolver()
    direct.update_operator(scale, asm, case.ke)
    ref = direct.solve(f)
    mg = Broken(MultigridOptions(rtol=1e-9, coarsest_size=100, max_iter=80,
                                 precision="float32", krylov="double"), case.layout)
    mg.update_operator(scale, asm, case.ke)
    assert mg.dtype == np.float32
    u = mg.solve(f)
    assert mg.dtype == np.float64 and mg.stats()["mg_float64_vcycle"]
    assert all(lev.d.dtype == np.float64 for lev in mg.levels)
    assert any("runs in float64 from now on" in n for n in mg.notes)
    np.testing.assert_allclose(u, ref, rtol=0, atol=1e-6 * np.abs(ref).max())
    mg.update_operator(scale * 0.9, asm, case.ke)  # the next design keeps float64
    mg.solve(f)
    assert mg.dtype == np.float64 and mg.last.iterations <= 60
