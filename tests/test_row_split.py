"""Row-split sparse products (femopt/solvers/row_split.py): the parts' products on a
thread pool give the whole product's values bit for bit, for CSR and BSR matrices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from femopt.solvers.row_split import RowSplit, split_rows


@pytest.mark.parametrize("fmt,dtype", [("csr", np.float64), ("csr", np.float32),
                                       ("bsr", np.float64), ("bsr", np.float32)])
@pytest.mark.parametrize("parts", [2, 3])
def test_row_split_product_equals_the_whole_product(fmt, dtype, parts):
    rng = np.random.default_rng(parts)
    n = 3000
    rows = np.repeat(np.arange(n), 12)
    cols = (rows + rng.integers(-60, 60, rows.size)) % n
    m = sp.csr_matrix((rng.standard_normal(rows.size), (rows, cols)), shape=(n, n))
    m = (m.tobsr(blocksize=(3, 3)) if fmt == "bsr" else m).astype(dtype)
    v = rng.standard_normal(n).astype(dtype)
    split = RowSplit(m, parts)
    assert len(split.parts) == parts
    assert sum(p.shape[0] for p in split.parts) == n
    got = split @ v
    assert got.dtype == (m @ v).dtype
    assert np.array_equal(got, m @ v)
    # a vector of another precision or a strided one goes through SciPy's own products
    for w in (v.astype(np.float64 if dtype == np.float32 else np.float32),
              np.repeat(v, 2)[::2]):
        assert np.array_equal(split @ w, m @ w)


def test_small_matrices_and_one_core_stay_whole(monkeypatch):
    m = sp.identity(100, format="csr")
    assert split_rows(m) is m
    big = sp.identity(50_000, format="csr")
    monkeypatch.setenv("FEMOPT_SPMV_THREADS", "1")
    assert split_rows(big) is big
    monkeypatch.setenv("FEMOPT_SPMV_THREADS", "2")
    assert isinstance(split_rows(big), RowSplit)
    # few rows but many entries (a coarse level of dense blocks): split too
    dense = sp.random(2000, 2000, density=0.2, format="csr", random_state=0)
    assert dense.nnz == 800_000 and isinstance(split_rows(dense), RowSplit)
    half = dense[:, :1000].tocsr()
    assert half.nnz < 500_000 and split_rows(half) is half


@pytest.mark.parametrize("name,value,message", [
    ("FEMOPT_SPMV_THREADS", "two",
     "FEMOPT_SPMV_THREADS must be a whole number of threads, not 'two'"),
    ("FEMOPT_GPU_ALLOCATOR", "arena",
     "FEMOPT_GPU_ALLOCATOR must be one of pool, async, not 'arena'")])
def test_a_bad_environment_variable_is_refused_before_any_work(
        name, value, message, tmp_path, monkeypatch, capsys):
    from femopt.cli import main

    monkeypatch.setenv(name, value)
    out = tmp_path / "out"
    code = main(["run", str(Path(__file__).parents[1] / "problems" / "mbb_beam.yaml"),
                 "--out", str(out), "--quiet"])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("fmt", ["csr", "bsr"])
def test_split_sparse_product_equals_the_whole_product(fmt, monkeypatch):
    """A sparse-sparse product with the left factor's rows in parts gives the whole
    product's pattern and values exactly (BSR blocks kept)."""
    from femopt.solvers import row_split

    monkeypatch.setenv("FEMOPT_SPMV_THREADS", "3")
    monkeypatch.setattr(row_split, "MIN_ROWS", 100)
    rng = np.random.default_rng(2)
    n, m = 3000, 600
    rows = np.repeat(np.arange(n), 9)
    a = sp.csr_matrix((rng.standard_normal(rows.size), (rows, (rows + rng.integers(-30, 30,
                      rows.size)) % n)), shape=(n, n)).astype(np.float32)
    t = sp.csr_matrix((rng.standard_normal(n), (np.arange(n), np.arange(n) // 5)),
                      shape=(n, m)).astype(np.float32)
    if fmt == "bsr":
        a, t = a.tobsr(blocksize=(3, 3)), t.tobsr(blocksize=(3, 6))
    got, want = row_split.split_product(a, t), a @ t
    assert got.format == want.format == fmt and got.shape == want.shape
    if fmt == "bsr":
        assert got.blocksize == want.blocksize == (3, 6)
    assert np.array_equal(got.indptr, want.indptr)
    assert np.array_equal(got.indices, want.indices)
    assert np.array_equal(got.data, want.data)


def test_work_in_parts_covers_every_item_once_and_sensitivities_equal(monkeypatch):
    """``in_parts`` hands out disjoint ranges covering all items; the per-cell
    sensitivities computed in parts equal the whole computation bit for bit."""
    from femopt.adjoint import sensitivity
    from femopt.solvers.row_split import in_parts

    monkeypatch.setenv("FEMOPT_SPMV_THREADS", "3")
    seen = np.zeros(1000, dtype=int)

    def work(a, b):
        seen[a:b] += 1

    in_parts(1000, work, min_count=10)
    assert np.all(seen == 1)
    rng = np.random.default_rng(8)
    n = 120_000
    cell_dofs = rng.integers(0, 30_000, (n, 12))
    ke = rng.standard_normal((n, 12, 12))
    u, lam = rng.standard_normal((2, 30_000)), rng.standard_normal((2, 30_000))
    got = sensitivity.element_sensitivity(cell_dofs, ke, lam, u)
    assert np.array_equal(got, sensitivity._cell_products(cell_dofs, ke, lam, u))
