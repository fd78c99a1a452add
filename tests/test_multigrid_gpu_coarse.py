"""The coarsest level's direct solve on the device (CuPy): the inverse from a Cholesky
factor where the operator is positive definite, a dense LU where rounding has left it
indefinite (a nearly void design's Galerkin operator), the same solution as SuperLU on
the host."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from femopt.solvers.multigrid_levels import CoarseSolver


class _Pattern:
    def matrix(self, data):
        return sp.csr_matrix(data)


class _Dense:
    """The two methods CoarseSolver reads of an operator, on a dense matrix."""

    def __init__(self, a, xp):
        self.a, self.xp = a, xp
        self.pattern = _Pattern()
        self.data = a

    def to_dense(self):
        return self.xp.asarray(self.a)


def _matrices():
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.standard_normal((12, 12)))
    spd = q @ np.diag(np.geomspace(1e-3, 1.0, 12)) @ q.T
    indefinite = q @ np.diag(np.r_[-1e-7, np.geomspace(1e-3, 1.0, 11)]) @ q.T
    return {"spd": spd, "indefinite": indefinite}


@pytest.mark.parametrize("case", ["spd", "indefinite"])
def test_host_coarse_solve_solves(case):
    a = _matrices()[case]
    b = np.random.default_rng(4).standard_normal(12)
    x = CoarseSolver(_Dense(a, np), np)(b)
    assert np.abs(a @ x - b).max() <= 1e-6 * np.abs(b).max()


@pytest.mark.gpu
@pytest.mark.parametrize("case", ["spd", "indefinite"])
def test_device_coarse_solve_equals_host(case):
    import cupy

    a = _matrices()[case]
    b = np.random.default_rng(4).standard_normal(12)
    host = CoarseSolver(_Dense(a, np), np)(b)
    dev = CoarseSolver(_Dense(a, cupy), cupy)
    assert (dev.inverse is None) == (case == "indefinite")
    x = cupy.asnumpy(dev(cupy.asarray(b)))
    assert np.abs(x - host).max() <= 1e-8 * np.abs(host).max()
