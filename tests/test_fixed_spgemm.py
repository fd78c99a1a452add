"""Sparse products with fixed patterns (the device AMG hierarchy's Galerkin operators):
the NumPy twin of the kernel's arithmetic against SciPy's products, the hierarchy built by
them against the one built by general products, and the CUDA kernel against the twin."""

from __future__ import annotations

import numpy as np
import pyamg
import pytest
import scipy.sparse as sp

from femopt.solvers.fixed_spgemm import FixedGalerkin, FixedProduct
from femopt.solvers.pcg import pcg
from femopt.solvers.sa_hierarchy import SAHierarchy, build_structure


def _pair(seed: int):
    rng = np.random.default_rng(seed)
    a = sp.random(70, 50, density=0.08, random_state=rng, format="csr")
    b = sp.random(50, 40, density=0.1, random_state=rng, format="csr")
    # an entry order other than sorted: the values passed follow the given pattern
    a.indices = a.indices.copy()
    for i in range(a.shape[0]):
        s = slice(a.indptr[i], a.indptr[i + 1])
        a.indices[s], a.data[s] = a.indices[s][::-1].copy(), a.data[s][::-1].copy()
    a.has_sorted_indices = False
    return a, b


def _ref(a, b):
    """A @ B from copies (SciPy sorts an operand's indices in place)."""
    return (sp.csr_matrix((a.data.copy(), a.indices.copy(), a.indptr.copy()), shape=a.shape)
            @ b.copy())


@pytest.mark.parametrize("seed", [1, 2])
def test_fixed_product_equals_scipy(seed):
    a, b = _pair(seed)
    prod = FixedProduct(a, b, np)
    c = sp.csr_matrix((prod(a.data, b.data), prod.pattern.indices, prod.pattern.indptr),
                      shape=prod.shape)
    ref = _ref(a, b).toarray()
    assert np.abs(c.toarray() - ref).max() <= 1e-14 * np.abs(ref).max()
    # the pattern is the structural one (no entry lost to cancellation), sorted per row
    ones = _ref(abs(a.copy()).sign(), abs(b.copy()).sign()).tocsr()  # abs sorts in place
    assert prod.nnz == ones.nnz and prod.pattern.has_sorted_indices
    # new values, same pattern
    a2 = a.copy()
    a2.data = np.random.default_rng(seed + 10).standard_normal(a.nnz)
    rows, cols = prod.pattern.nonzero()
    ref2 = _ref(a2, b).toarray()[rows, cols]
    assert np.abs(prod(a2.data, b.data) - ref2).max() <= 1e-14 * np.abs(ref2).max()


def test_galerkin_level_equals_dense_products():
    a = pyamg.gallery.poisson((20, 20), format="csr")
    t = build_structure(a, None, max_coarse=40)[0]
    g = FixedGalerkin(a, t, np, np.float64)
    rng = np.random.default_rng(7)
    a = a.copy()
    a.data = a.data * rng.uniform(0.5, 1.5, a.nnz)
    a = (a + a.T).tocsr()  # symmetric, new pattern order: rebuild on it
    g = FixedGalerkin(a, t, np, np.float64)
    scale = rng.uniform(0.1, 1.0, a.shape[0])
    p, pt = g.prolongator(a.data, scale)
    dense_p = t.toarray() - scale[:, None] * (a.toarray() @ t.toarray())
    assert np.abs(p.toarray() - dense_p).max() <= 1e-13 * np.abs(dense_p).max()
    assert np.array_equal(pt.toarray(), p.toarray().T)
    coarse = g.coarse(a.data, p).toarray()
    ref = dense_p.T @ a.toarray() @ dense_p
    assert np.abs(coarse - ref).max() <= 1e-12 * np.abs(ref).max()


def test_hierarchy_by_fixed_products_equals_general_products():
    """The same levels (to float32 rounding) and the same CG count and solution on an
    elasticity-like block matrix with rigid-body modes as near-null space."""
    a = pyamg.gallery.linear_elasticity((24, 24), format="bsr")[0].tocsr()
    modes = pyamg.gallery.linear_elasticity((24, 24), format="bsr")[1]
    structure = build_structure(a.tobsr(blocksize=(2, 2)), modes, max_coarse=40)
    general = SAHierarchy(structure, np)
    fixed = SAHierarchy(structure, np, fixed_products=True)
    general.update(a.tobsr(blocksize=(2, 2)))
    fixed.update(a)
    assert len(general.levels) == len(fixed.levels) >= 3
    for lg, lf in zip(general.levels, fixed.levels):
        ref = lg.a.toarray()
        assert np.abs(lf.a.toarray() - ref).max() <= 1e-5 * np.abs(ref).max()
    b = np.random.default_rng(3).standard_normal(a.shape[0])
    xs = [pcg(lambda v: a @ v, b, h.vcycle, rtol=1e-10, maxiter=200) for h in (general, fixed)]
    assert all(info.converged for _, info in xs)
    assert abs(xs[0][1].iterations - xs[1][1].iterations) <= 1
    assert np.abs(xs[0][0] - xs[1][0]).max() <= 1e-8 * np.abs(xs[0][0]).max()


def test_an_unsorted_finest_pattern_gives_the_same_levels():
    """A finest matrix with unsorted rows gets the same levels as the sorted one (its
    values taken through the order found once); a sorted one needs no order."""
    a = pyamg.gallery.linear_elasticity((12, 12), format="bsr")[0].tocsr()
    a = a.astype(np.float32)  # the hierarchy's own precision: no conversion that sorts
    modes = pyamg.gallery.linear_elasticity((12, 12), format="bsr")[1]
    structure = build_structure(a.tobsr(blocksize=(2, 2)), modes, max_coarse=20)
    indices, data = a.indices.copy(), a.data.copy()
    rng = np.random.default_rng(6)
    for r in range(a.shape[0]):  # shuffle the entries of every row (the same matrix)
        lo, hi = a.indptr[r], a.indptr[r + 1]
        perm = lo + rng.permutation(hi - lo)
        indices[lo:hi], data[lo:hi] = a.indices[perm], a.data[perm]
    shuffled = sp.csr_matrix((data, indices, a.indptr.copy()), shape=a.shape)
    assert not shuffled.has_sorted_indices
    levels = []
    for m in (a, shuffled):
        h = SAHierarchy(structure, np, fixed_products=True)
        h.update(m)
        assert (h.finest_order is None) == (m is a)
        levels.append([lev.a.toarray() for lev in h.levels])
    for x, y in zip(*levels):
        np.testing.assert_array_equal(x, y)


def test_transposed_product_equals_scipy():
    a, _ = _pair(4)
    b = sp.random(70, 30, density=0.1, random_state=np.random.default_rng(5), format="csr")
    prod = FixedProduct(a, b, np, transpose_a=True)
    rows, cols = prod.pattern.nonzero()
    ref = (_ref(a, sp.identity(50, format="csr")).T @ b.copy()).toarray()[rows, cols]
    assert prod.shape == (50, 30)
    assert np.abs(prod(a.data, b.data) - ref).max() <= 1e-14 * np.abs(ref).max()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("transpose_a", [False, True])
def test_fixed_product_kernel_equals_the_twin(dtype, transpose_a):
    import cupy

    a, b = _pair(3)
    if transpose_a:
        b = sp.random(70, 30, density=0.1, random_state=np.random.default_rng(6),
                      format="csr")
    a.data, b.data = a.data.astype(dtype), b.data.astype(dtype)
    host = FixedProduct(a, b, np, transpose_a)(a.data, b.data)
    dev = FixedProduct(a, b, cupy, transpose_a)(cupy.asarray(a.data), cupy.asarray(b.data))
    tol = 1e-14 if dtype == np.float64 else 1e-6
    assert np.abs(cupy.asnumpy(dev) - host).max() <= tol * np.abs(host).max()


@pytest.mark.gpu
@pytest.mark.parametrize("transpose_a", [False, True])
def test_warp_per_row_kernels_equal_the_thread_per_row_ones(monkeypatch, transpose_a):
    """Rows of B longer than a warp (about 90 entries): the warp-per-row product (the
    default) gives A B bit for bit as the thread-per-row kernel (the same order of each
    sum) and A^T B to rounding (atomics), both equal to the twin."""
    import cupy

    from femopt.solvers import fixed_spgemm

    rng = np.random.default_rng(11)
    a = sp.random(120, 300 if not transpose_a else 80, density=0.1, random_state=rng,
                  format="csr", dtype=np.float32)
    b = sp.random(300 if not transpose_a else 120, 400, density=0.22, random_state=rng,
                  format="csr", dtype=np.float32)
    assert np.diff(b.indptr).max() > 64
    host = FixedProduct(a, b, np, transpose_a)(a.data, b.data)
    prod = FixedProduct(a, b, cupy, transpose_a)
    args = (cupy.asarray(a.data), cupy.asarray(b.data))
    out = {}
    for warp in (1, 32):
        monkeypatch.setattr(fixed_spgemm, "WARP", warp)
        out[warp] = cupy.asnumpy(prod(*args))
        assert np.abs(out[warp] - host).max() <= 1e-5 * np.abs(host).max()
    if transpose_a:
        assert np.abs(out[1] - out[32]).max() <= 1e-5 * np.abs(host).max()
    else:
        assert np.array_equal(out[1], out[32])


@pytest.mark.parametrize("transpose_a", [False, True])
def test_a_large_product_pattern_by_row_parts_equals_the_whole(monkeypatch, transpose_a):
    """A left factor (A, or A^T) of 30,000 rows is multiplied by parts of its rows on 3
    threads: the same pattern (row pointers and columns) as on one thread, and the same
    values."""
    from femopt.solvers import row_split

    rng = np.random.default_rng(5)
    shape = (2_000, 30_000) if transpose_a else (30_000, 2_000)
    a = sp.random(*shape, density=0.002, random_state=rng, format="csr")
    b = sp.random(2_000, 500, density=0.01, random_state=rng, format="csr")
    parts = []
    split = row_split.split_rows
    monkeypatch.setattr(row_split, "split_rows",
                        lambda m, xp=np: parts.append(m.shape[0]) or split(m, xp))
    made = {}
    for threads in ("1", "3"):
        monkeypatch.setenv("FEMOPT_SPMV_THREADS", threads)
        made[threads] = FixedProduct(a, b, np, transpose_a)
    one, three = made["1"].pattern, made["3"].pattern
    assert parts == [30_000, 30_000] and one.nnz > 10_000
    assert np.array_equal(one.indptr, three.indptr)
    assert np.array_equal(one.indices, three.indices)
    assert np.array_equal(made["1"](a.data, b.data), made["3"](a.data, b.data))


def test_a_right_factor_with_repeated_columns_keeps_the_thread_per_row_kernel():
    """A row of B that holds a column twice would make two lanes of a warp add to one
    slot of C at once: such a product is marked for the thread-per-row kernel, and its
    values (the repeats summed) equal the dense product's; A^T B adds atomically and
    needs no mark."""
    a = sp.csr_matrix(np.array([[1.0, 2.0], [0.0, 3.0]]))
    b = sp.csr_matrix((np.array([1.0, 4.0, 5.0, 6.0]), np.array([1, 1, 0, 1]),
                       np.array([0, 2, 4])), shape=(2, 2))  # row 0: column 1 twice
    prod = FixedProduct(a, b)
    assert prod.repeats and not FixedProduct(a, b, transpose_a=True).repeats
    assert not FixedProduct(a, sp.csr_matrix(b.toarray())).repeats
    dense = a.toarray() @ b.toarray()
    assert np.allclose(sp.csr_matrix((prod(a.data, b.data), prod.pattern.indices,
                                      prod.pattern.indptr), shape=(2, 2)).toarray(), dense)


def test_a_hierarchys_products_share_their_patterns_index_arrays():
    """A's pattern is uploaded once for A T, A P and the level's operator, P's for A P,
    P^T (A P) and the prolongator, each product's result for the next product and the
    next level: the arrays are the same objects, and nbytes counts each once."""
    import types

    from femopt.solvers.fixed_spgemm import device_index

    # a device whose every upload is a new array: only the cache can make two the same
    dev = types.SimpleNamespace(
        asarray=lambda v, dtype=None: np.array(v, dtype=dtype, copy=True))
    a = pyamg.gallery.linear_elasticity((24, 24), format="bsr")[0].tocsr()
    modes = pyamg.gallery.linear_elasticity((24, 24), format="bsr")[1]
    t0, t1 = build_structure(a.tobsr(blocksize=(2, 2)), modes, max_coarse=40)[:2]
    a.sort_indices()
    g = FixedGalerkin(a, t0, dev, np.float32)
    coarse = FixedGalerkin(g.ptap.pattern, t1, dev, np.float32)
    assert g.at.a_idx is g.ap.a_idx is device_index(a, dev)[0]
    assert g.at.a_idx is not a.indices and np.array_equal(g.at.a_idx, a.indices)
    assert g.ap.b_idx is g.ptap.a_idx is device_index(g.p_pattern, dev)[0]
    assert g.ptap.b_idx is g.ap.c_idx
    assert coarse.at.a_idx is coarse.ap.a_idx is g.ptap.c_idx
    assert device_index(a, np)[0] is not g.at.a_idx  # another device, another copy
    # a matrix whose arrays were replaced is uploaded again, not served stale
    old = device_index(g.pt_pattern, dev)[0]
    g.pt_pattern.indices = g.pt_pattern.indices.copy()
    assert device_index(g.pt_pattern, dev)[0] is not old
    every = [*g.at.arrays(), *g.ap.arrays(), *g.ptap.arrays()]
    assert len({id(v) for v in every}) == len(every) - 6  # A, P, A P: two users each
    values = 4 * (g.at.nnz + 2 * g.p_pattern.nnz + g.ap.nnz + g.ptap.nnz)
    maps = sum(v.nbytes for v in (g.rows_at, g.slot_at, g.slot_t, g.t_data, g.pt_perm))
    once = {id(v): v for v in [*every, *device_index(g.p_pattern, dev),
                               *device_index(g.pt_pattern, dev)]}
    assert g.nbytes(4) == values + maps + sum(v.nbytes for v in once.values())
    # an unsorted operand is not shared (SciPy may sort it in place later)
    b, c = _pair(3)
    prod = FixedProduct(b, c, dev)
    assert not b.has_sorted_indices and getattr(b, "_femopt_device_index", None) is None
    assert np.array_equal(prod.a_idx, b.indices)
