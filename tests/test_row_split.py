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


def test_a_bad_thread_count_in_the_environment_is_refused_before_any_work(
        tmp_path, monkeypatch, capsys):
    from femopt.cli import main

    monkeypatch.setenv("FEMOPT_SPMV_THREADS", "two")
    out = tmp_path / "out"
    code = main(["run", str(Path(__file__).parents[1] / "problems" / "mbb_beam.yaml"),
                 "--out", str(out), "--quiet"])
    assert code == 2
    assert "FEMOPT_SPMV_THREADS must be a whole number of threads, not 'two'" in \
        capsys.readouterr().err
    assert not out.exists()
