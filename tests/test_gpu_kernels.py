"""The CuPy raw kernels against their NumPy twins on fresh random data (float64 and
float32), multigrid PCG on the GPU against a CPU direct solve, and design iterations on
the GPU against the CPU. Skipped without CuPy or a CUDA device."""

from __future__ import annotations

import numpy as np
import pytest

cupy = pytest.importorskip("cupy")
try:
    _N_DEVICES = cupy.cuda.runtime.getDeviceCount()
except Exception:  # no driver
    _N_DEVICES = 0

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(_N_DEVICES < 1, reason="no CUDA device visible to CuPy")]

from femopt.adjoint.grid_sensitivity import (  # noqa: E402
    grid_sensitivity,
    grid_sensitivity_cases,
    grid_sensitivity_cases_numpy,
    grid_sensitivity_numpy,
)
from femopt.assembly.grid_layout import GridLayout  # noqa: E402
from femopt.assembly.matrix_free import StructuredOperator, apply_numpy  # noqa: E402
from femopt.assembly.sparse import FixedPatternAssembler  # noqa: E402
from femopt.assembly.structured_csr import (  # noqa: E402
    CSROperator,
    DeviceFixedPattern,
    StructuredCSR,
)
from femopt.backend.kernels import get_kernel  # noqa: E402
from femopt.filters.grid_filter import GridDensityFilter  # noqa: E402
from grid_cantilever import grid_cantilever, truss_design  # noqa: E402
from femopt.optimizers.oc_kernels import oc_trial, oc_trial_numpy  # noqa: E402
from femopt.solvers import DirectSolver  # noqa: E402
from femopt.solvers import cg_kernels as cg  # noqa: E402
from femopt.solvers import multigrid_transfer as transfer  # noqa: E402
from femopt.solvers.galerkin import child_matrices  # noqa: E402
from femopt.solvers.multigrid import MultigridOptions, MultigridSolver  # noqa: E402
from femopt.solvers.smoothers import (  # noqa: E402
    InverseDiagonal,
    smooth_step,
    smooth_step_numpy,
)

DTYPES = [np.float64, np.float32]
TOL = {np.float64: 1e-12, np.float32: 2e-5}
# (shape, dofs per node): quad4 heat and elasticity, hex8 heat and elasticity
GRIDS = [((7, 6), 1), ((8, 6), 2), ((5, 4, 6), 1), ((6, 4, 8), 3)]


def rng(seed=None):
    return np.random.default_rng(seed)


def close(gpu, ref, dtype, scale=None):
    ref = np.asarray(ref, dtype=np.float64)
    got = cupy.asnumpy(gpu).astype(np.float64)
    s = scale if scale is not None else max(np.abs(ref).max(), 1e-300)
    assert np.abs(got - ref).max() <= TOL[dtype] * s * 10, np.abs(got - ref).max() / s


def symmetric(n, r):
    a = r.standard_normal((n, n))
    return a + a.T


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("shape, k", GRIDS + [((3, 5, 70), 3), ((9, 2, 1), 1)])
@pytest.mark.parametrize("children, variant", [(False, "columns"), (False, "gather"),
                                               (False, "walsh"), (True, "gather")],
                         ids=["K0_columns", "K0_gather", "K0_walsh", "galerkin_children"])
def test_apply_kernel_equals_numpy(shape, k, children, variant, dtype, monkeypatch):
    import femopt.assembly.matrix_free as mf

    monkeypatch.setattr(mf, "HEX8_VARIANT", variant)
    monkeypatch.setattr(mf, "COLUMN_THREADS", 64)  # several z chunks even on small grids
    monkeypatch.setattr(mf, "WALSH_MIN_CHUNK", 1)
    monkeypatch.setattr(mf, "WALSH_BLOCKS", 4096)
    r = rng()
    if children and any(n % 2 for n in shape):
        shape = tuple(n + n % 2 for n in shape)
    lay = GridLayout(shape, k)
    if children:
        ke = child_matrices(symmetric(lay.nd, r), lay.dim, k, 2)
        scale = r.uniform(1e-9, 1, (lay.n_cells, 2**lay.dim))
    else:
        ke = symmetric(lay.nd, r)
        scale = r.uniform(1e-9, 1, lay.n_cells)
    free = r.uniform(size=lay.n_dofs) > 0.2
    u = (r.standard_normal(lay.n_dofs) * free).astype(dtype)
    z = r.standard_normal(lay.n_dofs).astype(dtype)
    ref = apply_numpy(lay, u.astype(np.float64), scale, ke, free, 0.5, -1.5, z.astype(np.float64))
    op = StructuredOperator(lay, cupy.asarray(scale, dtype=dtype), ke, cupy.asarray(free))
    got = op.apply(cupy.asarray(u), alpha=0.5, beta=-1.5, z=cupy.asarray(z))
    close(got, ref, dtype)
    # in place on z, as the smoothers use it
    zz = cupy.asarray(z)
    op.apply(cupy.asarray(u), out=zz, alpha=0.5, beta=-1.5, z=zz)
    close(zz, ref, dtype)
    close(op.diagonal(), StructuredOperator(lay, scale, ke, free).diagonal(), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("shape, k", [((70, 20, 9), 3), ((33, 8, 17), 1), ((31, 7, 2), 3)])
@pytest.mark.parametrize("min_chunk", [1, 8])
def test_walsh_apply_with_the_element_matrix_equals_numpy(shape, k, min_chunk, dtype,
                                                          monkeypatch):
    """The Walsh kernel with the sparse Walsh form of the box element matrix (45 non-zeros
    for elasticity, 7 for heat) on grids of several tiles in x, y and z, against the NumPy
    apply and against the kernel's NumPy twin."""
    import femopt.assembly.matrix_free as mf
    from femopt.assembly.walsh import apply_tiled_numpy, walsh_factor
    from femopt.mesh import structured_grid
    from femopt.physics.elasticity import ElasticityOptions, LinearElasticity
    from femopt.physics.heat import HeatConduction, HeatOptions

    monkeypatch.setattr(mf, "HEX8_VARIANT", "walsh")
    monkeypatch.setattr(mf, "WALSH_MIN_CHUNK", min_chunk)
    cell = structured_grid((1, 1, 1), (1.0, 1.0, 1.0))
    physics = (LinearElasticity(ElasticityOptions(), cell) if k == 3
               else HeatConduction(HeatOptions(), cell))
    ke = physics.element_matrices()
    assert walsh_factor(ke, k).blocked
    r = rng()
    lay = GridLayout(shape, k)
    scale = r.uniform(1e-9, 1, lay.n_cells)
    free = r.uniform(size=lay.n_dofs) > 0.1
    u = (r.standard_normal(lay.n_dofs) * free).astype(dtype)
    z = r.standard_normal(lay.n_dofs).astype(dtype)
    ref = apply_numpy(lay, u.astype(np.float64), scale, ke, free, 2.0, 0.5, z.astype(np.float64))
    op = StructuredOperator(lay, cupy.asarray(scale, dtype=dtype), ke, cupy.asarray(free))
    assert op._gpu.variant == "walsh"
    bound = 1e-12 if dtype == np.float64 else 1e-6  # relative to the largest entry

    def rel_error(gpu, reference):
        return np.abs(cupy.asnumpy(gpu).astype(np.float64) - reference).max() / np.abs(
            reference).max()

    got = op.apply(cupy.asarray(u), alpha=2.0, beta=0.5, z=cupy.asarray(z))
    assert rel_error(got, ref) <= bound
    twin = apply_tiled_numpy(lay, u, scale.astype(dtype), walsh_factor(ke, k), free, 2.0, 0.5,
                             z, rows=mf.WALSH_ROWS, chunk=op._gpu.chunk)
    assert rel_error(got, twin.astype(np.float64)) <= bound
    got = op.apply(cupy.asarray(u))  # beta = 0: no z read
    assert rel_error(got, apply_numpy(lay, u.astype(np.float64), scale, ke, free)) <= bound


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("shape, k", [((4, 6), 1), ((8, 6), 2), ((4, 2, 6), 1), ((6, 4, 8), 3),
                                      ((150, 4), 2), ((140, 2, 4), 3)])
def test_transfer_kernels_equal_numpy(shape, k, dtype):
    r = rng()
    fine = GridLayout(shape, k)
    coarse = fine.coarsened()
    xc = r.standard_normal(coarse.n_dofs).astype(dtype)
    xf = r.standard_normal(fine.n_dofs).astype(dtype)
    free_c = r.uniform(size=coarse.n_dofs) > 0.3
    got = transfer.prolong_add(coarse, cupy.asarray(xc), cupy.asarray(xf))
    close(got, xf.astype(np.float64) + transfer.prolong(coarse, xc.astype(np.float64)), dtype)
    got = transfer.prolong_into(coarse, cupy.asarray(xc), cupy.asarray(xf))
    close(got, transfer.prolong(coarse, xc.astype(np.float64)), dtype)
    out = cupy.empty(coarse.n_dofs, dtype=dtype)
    transfer.restrict_into(coarse, cupy.asarray(xf), out, cupy.asarray(free_c))
    restricted = transfer.restrict(coarse, xf.astype(np.float64)) * free_c
    close(out, restricted, dtype)
    out = cupy.asarray(xc)  # accumulating: constrained coarse dofs keep their values
    transfer.restrict_into(coarse, cupy.asarray(xf), out, cupy.asarray(free_c), accumulate=True)
    close(out, xc.astype(np.float64) + restricted, dtype)
    fixed = r.uniform(size=fine.n_dofs) < 0.1
    np.testing.assert_array_equal(cupy.asnumpy(transfer.coarse_fixed(fine, cupy.asarray(fixed))),
                                  transfer.coarse_fixed(fine, fixed))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_level1_galerkin_product_equals_numpy(dtype):
    """Level 1's Galerkin operator by products (prolong, the Walsh apply, the restriction
    kernel, also accumulating) on the GPU against the cell-wise operator on the host."""
    from test_multigrid import galerkin_product_case

    product, _, u, z, fixed_c = galerkin_product_case(cupy, dtype, shape=(8, 6, 10))
    _, cellwise, u64, z64, _ = galerkin_product_case(np, np.float64, shape=(8, 6, 10))
    assert product.fine._gpu.variant == "walsh"
    close(product.apply(u), cellwise.apply(u64), dtype)
    out = z.copy()
    product.apply(u, out=out, alpha=-1.0, beta=1.0, z=out)
    close(out, z64 - cellwise.apply(u64), dtype)
    np.testing.assert_array_equal(cupy.asnumpy(out)[fixed_c], cupy.asnumpy(z)[fixed_c])
    close(product.apply(u, alpha=0.5, beta=-2.0, z=z),
          cellwise.apply(u64, alpha=0.5, beta=-2.0, z=z64), dtype)
    close(product.diagonal(), cellwise.diagonal(), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_smoother_and_cg_kernels_equal_numpy(dtype):
    r = rng()
    n = 100_003
    vecs = [r.standard_normal(n).astype(dtype) for _ in range(6)]
    x, d, res, inv = (v.copy() for v in vecs[:4])
    gx, gd = cupy.asarray(x), cupy.asarray(d)
    smooth_step(gx, gd, cupy.asarray(res), InverseDiagonal(cupy.asarray(inv)), 0.3, 1.7)
    smooth_step_numpy(x, d, res, InverseDiagonal(inv), 0.3, 1.7)
    close(gx, x, dtype)
    close(gd, d, dtype)
    a, b = vecs[4], vecs[5]
    assert abs(cg.dot_gpu(cupy.asarray(a), cupy.asarray(b)) - float(a.astype(np.float64) @ b)) \
        <= TOL[dtype] * n * 10
    x, rr, p, q, z = (v.copy() for v in vecs[:5])
    g = [cupy.asarray(v) for v in (x, rr, p, q, z)]
    s_gpu = cg.update_xr_gpu(g[0], g[1], g[2], g[3], 0.25)
    s_cpu = cg.update_xr_numpy(x, rr, p, q, 0.25)
    assert abs(s_gpu - s_cpu) <= TOL[dtype] * abs(s_cpu) * 100
    close(g[0], x, dtype)
    close(g[1], rr, dtype)
    d_gpu = cg.dots_gpu(g[1], g[4], g[3])
    d_cpu = cg.dots_numpy(rr, z, q)
    np.testing.assert_allclose(d_gpu, d_cpu, rtol=TOL[dtype] * 100, atol=TOL[dtype] * n)
    cg.update_p_gpu(g[2], g[4], 0.6)
    cg.update_p_numpy(p, z, 0.6)
    close(g[2], p, dtype)


def test_float32_cg_steps_into_a_float64_state_equal_numpy():
    """The mixed solve's CG adds alpha p (float32 alpha, widened) into a float64 x: the
    GPU kernel and its twin take the step in float64, not float32."""
    r = rng()
    n = 100_003
    x = r.standard_normal(n)
    rr, p, q = (r.standard_normal(n).astype(np.float32) for _ in range(3))
    g = [cupy.asarray(v) for v in (x, rr, p, q)]
    alpha = 0.1234567891234
    want = x + np.float64(np.float32(alpha)) * p.astype(np.float64)
    s_gpu = cg.update_xr_gpu(*g, alpha)
    s_cpu = cg.update_xr_numpy(x, rr, p, q, alpha)
    assert g[0].dtype == np.float64
    np.testing.assert_allclose(x, want, rtol=0, atol=1e-14)  # float32 steps: ~1e-8 off
    np.testing.assert_allclose(cupy.asnumpy(g[0]), want, rtol=0, atol=1e-14)
    close(g[1], rr, np.float32)
    assert abs(s_gpu - s_cpu) <= 1e-6 * abs(s_cpu)


@pytest.mark.parametrize("wide", [False, True], ids=["int32", "int64"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("shape, k", [((5, 4), 2), ((4, 3, 5), 3), ((3, 4, 2), 1), ((1, 3), 2),
                                      ((3, 1, 2), 3)])
def test_csr_assembly_and_spmv_kernels_equal_numpy(shape, k, dtype, wide, monkeypatch):
    """The slot-computing assembly kernel and the SpMV against NumPy, with int32 and (the
    limit lowered) int64 pattern indices."""
    if wide:
        import femopt.assembly.structured_csr as scsr

        monkeypatch.setattr(scsr, "INT32_ENTRIES", 0)
    r = rng()
    lay = GridLayout(shape, k)
    fixed = r.uniform(size=lay.n_dofs) < 0.2
    cells = r.standard_normal((lay.n_cells, lay.nd, lay.nd))
    cpu = StructuredCSR(lay, fixed)
    gpu = StructuredCSR(lay, cupy.asarray(fixed))
    np.testing.assert_array_equal(cupy.asnumpy(gpu.indptr), cpu.indptr)
    np.testing.assert_array_equal(cupy.asnumpy(gpu.indices), cpu.indices)
    np.testing.assert_array_equal(cupy.asnumpy(gpu.diag_slot), cpu.diag_slot)
    data_cpu = cpu.assemble_data(cells)
    data_gpu = gpu.assemble_data(cupy.asarray(cells, dtype=dtype))
    close(data_gpu, data_cpu, dtype)
    u = r.standard_normal(lay.n_dofs)
    ref = CSROperator(cpu, data_cpu).apply(u, alpha=2.0, beta=-1.0, z=u)
    got = CSROperator(gpu, data_gpu).apply(cupy.asarray(u, dtype=dtype), alpha=2.0, beta=-1.0,
                                           z=cupy.asarray(u, dtype=dtype))
    close(got, ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_fixed_pattern_assembly_kernel_equals_numpy(dtype):
    r = rng()
    lay = GridLayout((5, 4, 3), 3)
    free = np.flatnonzero(r.uniform(size=lay.n_dofs) > 0.15)
    asm = FixedPatternAssembler(lay.cell_dofs(), lay.n_dofs, free)
    ke = symmetric(lay.nd, r)
    scale = r.uniform(1e-9, 1, lay.n_cells)
    ref = asm.assemble_data(scale, ke)
    dev = DeviceFixedPattern(asm)
    close(dev.assemble_data(cupy.asarray(scale, dtype=dtype), ke), ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("shape, k", GRIDS)
def test_sensitivity_kernel_equals_numpy(shape, k, dtype):
    r = rng()
    lay = GridLayout(shape, k)
    ke = symmetric(lay.nd, r)
    u, lam = (r.standard_normal(lay.n_dofs) for _ in range(2))
    scale, dm = (r.uniform(size=lay.n_cells) for _ in range(2))
    for same in (True, False):
        lam_ = u if same else lam
        ref, tot = grid_sensitivity_numpy(lay, lam_, u, scale, dm, ke, -1.0)
        gu = cupy.asarray(u, dtype=dtype)
        gl = gu if same else cupy.asarray(lam_, dtype=dtype)
        got, gtot = grid_sensitivity(lay, gl, gu, cupy.asarray(scale, dtype=dtype),
                                     cupy.asarray(dm, dtype=dtype), ke, -1.0)
        close(got, ref, dtype)
        assert abs(gtot - tot) <= TOL[dtype] * 100 * np.abs(ref).sum()


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("shape, k", GRIDS)
@pytest.mark.parametrize("n_cases, n_mu", [(1, 0), (1, 1), (3, 2)])
def test_sensitivity_cases_kernel_equals_numpy(shape, k, n_cases, n_mu, dtype):
    r = rng()
    lay = GridLayout(shape, k)
    ke = symmetric(lay.nd, r)
    u = r.standard_normal((n_cases, lay.n_dofs))
    mu = r.standard_normal((n_mu, lay.n_dofs)) if n_mu else None
    beta = r.standard_normal(n_cases)
    a = r.standard_normal((n_cases, n_mu))
    if n_mu:
        a[0, 0] = 0.0  # a skipped term
    scale, dm = (r.uniform(size=lay.n_cells) for _ in range(2))
    ref, tot = grid_sensitivity_cases_numpy(lay, u, mu, beta, a, scale, dm, ke, -1.5)
    got, gtot = grid_sensitivity_cases(
        lay, cupy.asarray(u, dtype=dtype), None if mu is None else cupy.asarray(mu, dtype=dtype),
        beta, a, cupy.asarray(scale, dtype=dtype), cupy.asarray(dm, dtype=dtype), ke, -1.5)
    close(got, ref, dtype)
    assert abs(gtot - tot) <= TOL[dtype] * 100 * np.abs(ref).sum()


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("shape, spacing, radius", [((13, 9), (1.0, 0.5), 1.2),
                                                    ((9, 7, 6), (1.0, 1.0, 2.0), 2.6),
                                                    # entries at the radius within rounding
                                                    ((8, 6), (0.7, 0.7000000000000001), 2.1)])
def test_filter_kernel_equals_numpy(shape, spacing, radius, dtype):
    r = rng()
    cpu = GridDensityFilter(shape, spacing, radius)
    gpu = GridDensityFilter(shape, spacing, radius, cupy)
    close(gpu.hs, cpu.hs, np.float64)
    x = r.uniform(size=cpu.hs.size)
    g = r.standard_normal(cpu.hs.size)
    close(gpu.forward(cupy.asarray(x, dtype=dtype)), cpu.forward(x), dtype)
    close(gpu.backward(None, cupy.asarray(g, dtype=dtype)), cpu.backward(None, g), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_oc_kernel_equals_numpy(dtype):
    r = rng()
    n = 200_001
    x = r.uniform(size=n).astype(dtype)
    df = -r.uniform(size=n).astype(dtype)
    dg = r.uniform(0.5, 1, n).astype(dtype)
    w = (r.uniform(size=n) / n).astype(dtype)
    xmax = np.ones(n, dtype=dtype)
    xmax[:100] = 0.25
    for lmid in (0.05, 0.7, 4.0):
        ref = oc_trial_numpy(x.astype(np.float64), df.astype(np.float64), dg.astype(np.float64),
                             None, xmax.astype(np.float64), w.astype(np.float64), lmid, 0.2, 0.5)
        got = oc_trial(cupy.asarray(x), cupy.asarray(df), cupy.asarray(dg), None,
                       cupy.asarray(xmax), cupy.asarray(w), lmid, 0.2, 0.5)
        close(got[0], ref[0], dtype)
        assert abs(got[1] - ref[1]) <= TOL[dtype] * 100
        assert abs(got[2] - ref[2]) <= TOL[dtype] * 10


@pytest.mark.parametrize("low, high", [(0.0, 1.0), (0.1, 0.9)])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_oc_update_with_constant_bounds_and_w_equals_full_arrays(low, high, dtype):
    """Bounds and w as constant views (one number at stride 0, as the device path keeps
    the model's bounds and a w of equal weights) give the update, bit for bit, that full
    arrays of the same numbers give: each passed to the kernel as null and its number in
    the design's dtype."""
    from femopt.optimizers.oc_kernels import oc_update_linear

    r = rng()
    n = 100_003
    x = cupy.asarray(r.uniform(size=n), dtype=dtype)
    df, dg = cupy.asarray(-r.uniform(size=n), dtype=dtype), cupy.asarray(r.uniform(0.5, 1, n),
                                                                           dtype=dtype)
    values = (low, high, 1.0 / n)
    views = [cupy.broadcast_to(cupy.asarray(v, dtype=dtype), (n,)) for v in values]
    full = [cupy.full(n, v, dtype=dtype) for v in values]
    assert all(v.strides == (0,) for v in views)
    for w, bounds in ((views[2], views[:2]), (full[2], views[:2]), (views[2], full[:2])):
        got, change = oc_update_linear(x, df, dg, w, 0.4, *bounds)
        ref, change_ref = oc_update_linear(x, df, dg, full[2], 0.4, *full[:2])
        assert float(cupy.abs(got - ref).max()) == 0.0 and change == change_ref
        assert low <= float(got.min()) and float(got.max()) <= high


@pytest.mark.parametrize("eta", [0.5, 0.4])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_oc_candidate_volumes_and_update_equal_the_trials(dtype, eta):
    """The volumes kernel's 15 sums equal the trial kernel's volume at each multiplier,
    and the update by candidate passes gives the one-trial-a-step update's design and
    change bit for bit (the same multipliers, the same last trial)."""
    from femopt.optimizers.oc_kernels import (CANDIDATE_DEPTH, _kernel_operands,
                                              _kernel_volumes, oc_update_linear)

    r = rng()
    n = 300_007
    x = cupy.asarray(r.uniform(0.01, 1.0, n), dtype=dtype)
    df = cupy.asarray(-r.uniform(size=n) ** 3, dtype=dtype)
    dg = cupy.asarray(r.uniform(0.5, 1, n), dtype=dtype)
    w = cupy.asarray(r.uniform(size=n) / n, dtype=dtype)
    xmax = cupy.asarray(np.where(r.random(n) < 0.1, 0.5, 1.0), dtype=dtype)
    mids = list(np.geomspace(1e-3, 10.0, 2**CANDIDATE_DEPTH - 1))
    operands = _kernel_operands(x, None, xmax, w)
    got = _kernel_volumes(x, df, dg, operands, mids, 0.2, eta)
    want = [oc_trial(x, df, dg, None, xmax, w, m, 0.2, eta)[1] for m in mids]
    rel = 1e-12 if dtype == np.float64 else 1e-6
    assert np.allclose(got, want, rtol=rel, atol=0)
    assert np.ptp(want) > 0.1 * max(want)  # the multipliers span the active range
    assert np.allclose(_kernel_volumes(x, df, dg, operands, mids[:3], 0.2, eta), want[:3],
                       rtol=rel, atol=0)
    for limit in (0.35, 0.5):
        fast, change = oc_update_linear(x, df, dg, w, limit, None, xmax, eta=eta)
        slow, change_slow = oc_update_linear(x, df, dg, w, limit, None, xmax, eta=eta,
                                             candidates=False)
        assert float(cupy.abs(fast - slow).max()) == 0.0 and change == change_slow


def test_kernels_compile_once_per_device():
    from femopt.solvers.cg_kernels import SOURCE

    assert get_kernel(SOURCE, "femopt_cg_dot<double>") is get_kernel(SOURCE,
                                                                      "femopt_cg_dot<double>")


def cantilever_system(shape):
    case = grid_cantilever(shape)
    lay = case.layout
    scale = 1e-9 + truss_design(shape) ** 3
    fixed = lay.to_dofs(case.fixed)
    asm = FixedPatternAssembler(lay.cell_dofs(), lay.n_dofs, np.flatnonzero(~fixed))
    return case, scale, asm, asm.restrict(lay.to_dofs(case.load))


@pytest.mark.parametrize("opts", [dict(), dict(precision="float64"),
                                  dict(coarse_operator="hybrid"), dict(smoother="jacobi")],
                         ids=["default_f32", "f64", "hybrid", "jacobi"])
@pytest.mark.parametrize("shape", [(64, 32), (32, 16, 16)], ids=["quad4", "hex8"])
def test_mg_pcg_on_gpu_equals_cpu_direct_solve(shape, opts):
    case, scale, asm, f = cantilever_system(shape)
    direct = DirectSolver()
    direct.update_operator(scale, asm, case.ke)
    expected = direct.solve(f)
    mg = MultigridSolver(MultigridOptions(rtol=1e-9, coarsest_size=500, **opts), case.layout)
    mg.update_operator(cupy.asarray(scale), asm, case.ke)
    assert len(mg.levels) >= 3
    u = mg.solve(cupy.asarray(f))
    assert mg.last.iterations <= 60
    np.testing.assert_allclose(cupy.asnumpy(u), expected, rtol=0,
                               atol=1e-6 * np.abs(expected).max())
    # the same solver object serves the adjoint (transpose, several right-hand sides)
    two = cupy.asarray(np.stack([f, 2 * f], axis=1))
    np.testing.assert_allclose(cupy.asnumpy(mg.solve(two, transpose=True))[:, 1], 2 * expected,
                               rtol=0, atol=2e-6 * np.abs(expected).max())


@pytest.mark.parametrize("opts", [dict(), dict(precision="float64"),
                                  dict(coarse_operator="rediscretize")],
                         ids=["default_f32", "f64", "rediscretize"])
def test_mg_pcg_with_the_walsh_kernel_equals_cpu_direct_solve(opts, monkeypatch):
    """The Walsh kernel as the default of both precisions (the fine float64 operator of
    the CG, the float32 V-cycle, rediscretized coarse levels) in a multigrid solve."""
    import femopt.assembly.matrix_free as mf

    monkeypatch.setattr(mf, "HEX8_DEFAULT", {"double": "walsh", "float": "walsh"})
    shape = (64, 16, 16)  # several tiles in x on the fine level
    case, scale, asm, f = cantilever_system(shape)
    direct = DirectSolver()
    direct.update_operator(scale, asm, case.ke)
    expected = direct.solve(f)
    mg = MultigridSolver(MultigridOptions(rtol=1e-9, coarsest_size=500, **opts), case.layout)
    mg.update_operator(cupy.asarray(scale), asm, case.ke)
    # matrix-free levels: K0 on the fine level (and on every rediscretized one) runs
    # walsh; the Galerkin level 1 applies the fine level's operator between its transfers
    variants = [lev.op._gpu.variant for lev in mg.levels if isinstance(lev.op, StructuredOperator)]
    assert mg.op64._gpu.variant == "walsh" and variants[0] == "walsh"
    if opts.get("coarse_operator") == "rediscretize":
        assert variants == ["walsh"] * 3
    else:
        assert variants == ["walsh"] and mg.levels[1].op.fine is mg.levels[0].op
    u = mg.solve(cupy.asarray(f))
    assert mg.last.iterations <= 60
    np.testing.assert_allclose(cupy.asnumpy(u), expected, rtol=0,
                               atol=1e-6 * np.abs(expected).max())
