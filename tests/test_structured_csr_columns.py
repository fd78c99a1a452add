"""The coarse levels' CSR without column indices: on the device the SpMV computes each
entry's column from its row's node (``femopt_assembly_csr_spmv_grid``). On the CPU: the
columns computed as the kernel computes them (``StructuredCSR.columns`` by division, the
kernel's lane walk by carries) against the indices from the grid's neighbour mask, the
kernel's NumPy twin against SciPy's product, the pattern built without any array of its
entries' size, and the count. On the GPU (``gpu``): the kernel against the one that reads
the indices, bit for bit, and a multigrid V-cycle and solve through the grid path against
the same with the indexed kernel."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import femopt.assembly.structured_csr as scsr
from femopt.assembly.grid_layout import GridLayout
from femopt.assembly.structured_csr import (
    CSROperator,
    StructuredCSR,
    _lane_walk,
    spmv_grid_numpy,
)

# 2D and 3D, k = 1, 2, 3, odd and even node counts, axes of one cell (two nodes)
GRIDS = [((5, 4), 1), ((6, 7), 2), ((1, 3), 2), ((4, 1), 3), ((3, 4, 2), 1), ((4, 3, 5), 3),
         ((2, 2, 2), 2), ((3, 1, 2), 3), ((1, 1, 1), 3), ((5, 2, 3), 2)]


def _pattern(shape, k, seed=0, **kwargs):
    lay = GridLayout(shape, k)
    fixed = np.random.default_rng(seed).uniform(size=lay.n_dofs) < 0.2
    return StructuredCSR(lay, fixed, **kwargs)


@pytest.mark.parametrize("wide", [False, True], ids=["int32", "int64"])
@pytest.mark.parametrize("shape, k", GRIDS)
def test_computed_columns_are_the_pattern_indices(shape, k, wide, monkeypatch):
    """``columns`` (all entries, and a range that starts and ends inside rows) and the
    indices a pattern without them builds when asked equal the indices from the
    neighbour mask exactly, in the pattern's index type."""
    if wide:
        monkeypatch.setattr(scsr, "INT32_ENTRIES", 0)
    kept = _pattern(shape, k)
    computed = _pattern(shape, k, keep_indices=False)
    assert kept.keeps_indices and not computed.keeps_indices
    assert kept.indices.dtype == (np.int64 if wide else np.int32)
    for name in ("indptr", "diag_slot", "fixed_dofs"):
        np.testing.assert_array_equal(getattr(computed, name), getattr(kept, name))
    assert computed.indices.dtype == kept.indices.dtype
    np.testing.assert_array_equal(computed.indices, kept.indices)
    np.testing.assert_array_equal(kept.columns(), kept.indices)
    a, b = 5, kept.nnz - 7
    np.testing.assert_array_equal(kept.columns(a, b), kept.indices[a:b])


@pytest.mark.parametrize("shape, k", GRIDS)
def test_the_kernels_lane_walk_visits_every_entry_once_at_its_column(shape, k):
    """The SpMV kernel's walk (lane l of a row takes its entries l, l + 8, ..., the
    digits stepped by 8 with carries, as the CUDA code does): every entry once, by the
    lane and at the step the indexed kernel reads it, at the column the pattern holds."""
    p = _pattern(shape, k)
    seen = np.full(p.nnz, -1, dtype=np.int64)
    steps = np.zeros((8, p.shape[0]), dtype=np.int64)
    for lane, rows, pos, col in _lane_walk(p):
        assert (seen[pos] == -1).all()
        np.testing.assert_array_equal(pos, p.indptr[rows] + lane + 8 * steps[lane, rows])
        steps[lane, rows] += 1
        seen[pos] = col
    np.testing.assert_array_equal(seen, p.indices)
    length = np.diff(p.indptr)
    np.testing.assert_array_equal(steps, np.maximum(length - np.arange(8)[:, None] + 7, 0)
                                  // 8)


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-14), (np.float32, 1e-6)],
                         ids=["f64", "f32"])
@pytest.mark.parametrize("shape, k", GRIDS)
def test_the_kernels_numpy_twin_equals_scipy(shape, k, dtype, tol):
    """``spmv_grid_numpy`` (the kernel's lanes and reduction) against SciPy's product of
    the assembled matrix, with and without ``beta z``; products rounded apart from the
    sums, so to rounding."""
    p = _pattern(shape, k, seed=1)
    rng = np.random.default_rng(2)
    lay = p.layout
    data = p.assemble_data(rng.standard_normal((lay.n_cells, lay.nd, lay.nd))).astype(dtype)
    u, z = (rng.standard_normal(lay.n_dofs).astype(dtype) for _ in range(2))
    op = CSROperator(p, data)
    for alpha, beta in ((1.0, 0.0), (2.0, -1.0), (-0.5, 3.0)):
        ref = op.apply(u.astype(np.float64), alpha=alpha, beta=beta, z=z)
        got = spmv_grid_numpy(p, data, u, alpha, beta, z)
        assert got.dtype == dtype
        s = np.abs(data).max() * np.abs(u).max() * 27 * k + abs(beta) * np.abs(z).max()
        assert np.abs(got - ref).max() <= tol * s


def test_a_pattern_without_indices_never_holds_an_array_of_its_entries():
    """The build of a pattern that keeps no indices never allocates an array of its
    entries' size (on the device that would set the hierarchy update's high-water mark):
    tracemalloc's peak of the whole build is below nnz bytes (its per-dof arrays: 0.56
    nnz here), where the kept indices' build passes 4 nnz (the int32 indices alone; 7.5
    with the neighbour mask and the int64 columns on the way)."""
    lay = GridLayout((16, 12, 10), 3)
    fixed = np.zeros(lay.n_dofs, dtype=bool)
    fixed[:3 * 17] = True

    def peak(**kwargs):
        tracemalloc.start()
        try:
            p = StructuredCSR(lay, fixed, **kwargs)
            return p, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    p, lean = peak(keep_indices=False)
    _, full = peak(keep_indices=True)
    assert p._indices is None
    assert lean < p.nnz < 4 * p.nnz < full


def test_to_dense_without_indices_equals_the_kept_pattern():
    p_kept, p_lean = _pattern((3, 4, 2), 3), _pattern((3, 4, 2), 3, keep_indices=False)
    rng = np.random.default_rng(4)
    lay = p_kept.layout
    cells = rng.standard_normal((lay.n_cells, lay.nd, lay.nd))
    data = p_kept.assemble_data(cells)
    np.testing.assert_array_equal(p_lean.assemble_data(cells), data)
    dense = CSROperator(p_lean, data).to_dense()
    np.testing.assert_array_equal(dense, p_kept.matrix(data).toarray())


def test_the_count_holds_the_coarse_values_without_indices():
    """At 512x256x256 (hex8 elasticity) the coarse CSR levels are counted as their
    float32 values and two int32 per dof (row offsets, diagonal slots), from the first
    assembled level down (1/7 more for those below it): levels 2 and below where level 1
    is Galerkin by products (18.0 B/cell, 17.55 of it the values, 81 entries a row),
    levels 3 and below under hybrid's level 2 by products (an eighth of that); the column
    indices (17.5 B/cell at level 2) are not counted."""
    from femopt.evaluation import grid_memory

    lay = GridLayout((512, 256, 256), 3)
    for first, lo, hi in ((1, 143.0, 144.0), (2, 17.9, 18.0), (3, 2.2, 2.3)):
        arrays = grid_memory.iteration_arrays(lay.n_cells, lay.n_dofs, 3, 3, n_coarse=4131,
                                              first_csr=first)
        assert all(isinstance(a.bytes, int) for a in arrays)
        csr = [a for a in arrays if "CSR" in a.name]
        assert len(csr) == 1 and csr[0].phase == "held"
        n = lay.n_dofs // 8**first
        values = 4 * 81 * n * 8 / 7
        assert csr[0].bytes == int(values + 8 * n * 8 / 7)
        assert lo < csr[0].bytes / lay.n_cells < hi
        # the product level's children's scale factors: level 1's cells for level 2's
        # products, the fine cells for level 1's, none without a product level
        children = [a for a in arrays if "children" in a.name][0].bytes / lay.n_cells
        assert children == {1: 0.0, 2: 4.0, 3: 0.5}[first]
    arrays = grid_memory.iteration_arrays(lay.n_cells, lay.n_dofs, 3, 3, n_coarse=4131,
                                          first_csr=None)  # every level rediscretized
    assert [a.bytes for a in arrays if "CSR" in a.name] == [0]


# -- on the GPU --------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("wide", [False, True], ids=["int32", "int64"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape, k", GRIDS)
def test_device_spmv_without_indices_is_the_indexed_kernel_bit_for_bit(shape, k, dtype, wide,
                                                                       monkeypatch):
    """The device pattern holds no indices; its product (columns computed) equals the
    kernel that reads them (``spmv_gpu``, the indices built on demand) to 0 ulp: the
    same lanes, entries, order and reduction, compiled alike; for alpha = 1, beta = 0
    and alpha, beta z (z aliasing the output, too); and both equal SciPy and the NumPy
    twin to rounding. The device's computed indices are the host's from the mask."""
    import cupy

    if wide:
        monkeypatch.setattr(scsr, "INT32_ENTRIES", 0)
    host = _pattern(shape, k, seed=5)
    dev = StructuredCSR(host.layout, cupy.asarray(host.fixed))
    assert dev._indices is None
    assert dev.indptr.dtype == (np.int64 if wide else np.int32)
    np.testing.assert_array_equal(cupy.asnumpy(dev.indices), host.indices)
    lay = host.layout
    rng = np.random.default_rng(6)
    cells = rng.standard_normal((lay.n_cells, lay.nd, lay.nd))
    data = dev.assemble_data(cupy.asarray(cells, dtype=dtype))
    u = cupy.asarray(rng.standard_normal(lay.n_dofs), dtype=dtype)
    z = cupy.asarray(rng.standard_normal(lay.n_dofs), dtype=dtype)
    op = CSROperator(dev, data)
    for alpha, beta in ((1.0, 0.0), (2.0, -1.0)):
        got = op.apply(u, alpha=alpha, beta=beta, z=z)
        ref = scsr.spmv_gpu(dev, data, u, None, alpha, beta, z)
        assert got.dtype == dtype
        assert cupy.array_equal(got, ref)  # 0 ulp
        host_data = cupy.asnumpy(data)
        twin = spmv_grid_numpy(host, host_data, cupy.asnumpy(u), alpha, beta, cupy.asnumpy(z))
        scipy_ref = CSROperator(host, host_data.astype(np.float64)).apply(
            cupy.asnumpy(u).astype(np.float64), alpha=alpha, beta=beta,
            z=cupy.asnumpy(z).astype(np.float64))
        tol = 1e-13 if dtype == np.float64 else 2e-5
        s = np.abs(scipy_ref).max() + np.abs(host_data).max() * 27 * k
        assert np.abs(cupy.asnumpy(got) - scipy_ref).max() <= tol * s
        assert np.abs(twin - scipy_ref).max() <= tol * s
    # z aliasing the output: the V-cycle's residual r = b - A x written into b's place
    out, out_ref = z.copy(), z.copy()
    op.apply(u, out=out, alpha=-1.0, beta=1.0, z=out)
    scsr.spmv_gpu(dev, data, u, out_ref, -1.0, 1.0, out_ref)
    assert cupy.array_equal(out, out_ref)
    np.testing.assert_array_equal(cupy.asnumpy(op.to_dense()),
                                  host.matrix(cupy.asnumpy(data)).toarray())


@pytest.mark.gpu
def test_device_pattern_build_allocates_no_array_of_its_entries():
    """No single device allocation of the pattern's build reaches nnz bytes (the int32
    indices would be 4 nnz; the largest here is the int64 row offsets, 0.12 nnz)."""
    import cupy
    from cupy.cuda.memory_hook import MemoryHook

    class Largest(MemoryHook):
        name = "largest"

        def __init__(self):
            self.largest = 0

        def malloc_preprocess(self, **kwargs):
            self.largest = max(self.largest, kwargs["size"])

    lay = GridLayout((16, 12, 10), 3)
    fixed = cupy.zeros(lay.n_dofs, dtype=bool)
    fixed[:3 * 17] = True
    hook = Largest()
    # a pool of its own: the hooks see its mallocs whatever allocator the process uses
    with cupy.cuda.using_allocator(cupy.cuda.MemoryPool().malloc), hook:
        p = StructuredCSR(lay, fixed)
    assert p._indices is None
    assert 0 < hook.largest < p.nnz


@pytest.mark.gpu
@pytest.mark.parametrize("krylov, coarse, precision", [
    ("mixed", "hybrid", "auto"), ("double", "hybrid", "auto"), ("double", "hybrid", "float64"),
    ("mixed", "galerkin", "auto"), ("double", "rediscretize", "auto")])
@pytest.mark.parametrize("shape", [(64, 32), (32, 16, 16)], ids=["quad4", "hex8"])
def test_multigrid_solve_on_gpu_is_the_solve_with_indexed_coarse_levels(
        shape, krylov, coarse, precision, monkeypatch):
    """A multigrid hierarchy as the grid GPU path makes it (the path's Krylov precision
    and coarse operators; assembled levels holding no column indices), then the same
    hierarchy with the kernel that reads the indices: a V-cycle (no atomics in it) gives
    the same bits, and a solve the same iterations and residual history. The solves are
    compared to 1e-9, not bit for bit: CG's dot products add their blocks' sums with
    atomics, so two solves with one kernel may differ in the last bits (and the assembly
    adds the coarse values with atomics: both use the one hierarchy)."""
    import cupy

    from femopt.solvers.multigrid import MultigridOptions, MultigridSolver
    from grid_cantilever import grid_cantilever, truss_design

    case = grid_cantilever(shape)
    scale = cupy.asarray(1e-9 + truss_design(shape) ** 3)
    f = cupy.asarray(case.load)
    mg = MultigridSolver(MultigridOptions(rtol=1e-9, coarsest_size=100,
                                          precision=precision), case.layout)
    mg.use_krylov(krylov)
    mg.use_coarse_operator(coarse)
    mg.update_grid_operator(scale, case.ke, case.fixed)
    assert mg.dtype == (np.float64 if precision == "float64" else np.float32)
    assembled = [lev for lev in mg.levels if lev.pattern is not None]
    assert len(mg.levels) >= 4 and assembled
    assert all(lev.pattern._indices is None for lev in assembled)
    if coarse != "rediscretize":  # galerkin: levels 2 and below; hybrid: 3 and below
        assert len(assembled) == len(mg.levels) - (2 if coarse == "galerkin" else 3)
    r = cupy.asarray(np.random.default_rng(7).standard_normal(case.layout.n_dofs)
                     * ~case.fixed, dtype=mg.dtype)
    # a tolerance every variant reaches with its own V-cycle: a float64 CG on a float32
    # V-cycle that stalls falls back to the element bounds, then to a float64 V-cycle,
    # and the second solve would then run another hierarchy
    rtol = 1e-9 if krylov == "mixed" or mg.dtype == np.float64 else 1e-6
    calls: list = []

    def indexed(pattern, data, u, out=None, alpha=1.0, beta=0.0, z=None):
        calls.append(pattern)
        return scsr.spmv_gpu(pattern, data, u, out, alpha, beta, z)

    def cycle():
        return cupy.asnumpy(mg.precondition(r, cupy.empty_like(r)))

    def solve():
        u = mg.solve_grid(f, rtol=rtol)
        return cupy.asnumpy(u), mg.last.iterations, list(mg.last.residuals)

    # the V-cycles first, one after the other (nothing in between changes the hierarchy)
    z = cycle()
    with monkeypatch.context() as m:
        m.setattr(scsr, "spmv_grid_gpu", indexed)
        z_ref = cycle()
    # the indexed kernel did run where a level above the coarsest is assembled (not with
    # rediscretized levels, nor hybrid's on four levels: level 2 by products, the coarsest
    # solved by a dense inverse, so no CSR product in a V-cycle)
    assert bool(calls) == (len(assembled) > 1)
    np.testing.assert_array_equal(z, z_ref)
    if not calls:  # no CSR product in the solve either: nothing of the kernel's to compare
        return
    dtype = mg.dtype
    u, its, res = solve()
    with monkeypatch.context() as m:
        m.setattr(scsr, "spmv_grid_gpu", indexed)
        u_ref, its_ref, res_ref = solve()
    assert mg.dtype == dtype and not mg.fell_back  # both solves on the one hierarchy
    assert its == its_ref and len(res) == len(res_ref)
    # a float64 CG on a float32 V-cycle: the dot products' atomic rounding, cast to
    # float32 on its way into the V-cycle, moves the residuals by up to about 1e-6
    # (measured 5e-7 on an H100) from one solve to the next, whatever the kernel
    close = 1e-9 if krylov == "mixed" or dtype == np.float64 else 1e-5
    np.testing.assert_allclose(res, res_ref, rtol=close, atol=0)
    np.testing.assert_allclose(u, u_ref, rtol=0, atol=close * np.abs(u_ref).max())
