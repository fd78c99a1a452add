"""Fewer reductions in a distributed run, the same numbers: several groups of per-layer
sums by one collective (``Comm.sum_groups``), OC's bisection decided several steps a
round (``oc_kernels._update_by_rounds``), and the multigrid's Lanczos estimates of all
levels in step."""

from __future__ import annotations

import numpy as np
import pytest

from femopt.assembly.grid_layout import GridLayout
from femopt.optimizers import oc_kernels
from femopt.parallel.comm import SERIAL, Comm
from femopt.parallel.reductions import Reductions
from femopt.parallel.slabs import Slab


class _Counted:
    """A one-rank :class:`Reductions` whose ``add_up`` calls are counted."""

    def __init__(self, n_cells: int, xp=np):
        layout = GridLayout((n_cells // 10, 10), k=1)  # 10 cell layers
        comm = SERIAL
        if xp is not np:  # device arrays: a device communicator of one rank
            from femopt.parallel.comm_device import DeviceComm, HostTransport

            comm = DeviceComm(SERIAL, xp, HostTransport(SERIAL, xp))
        self.sums = Reductions(Slab(layout, comm, [0, 10], xp=xp))
        self.calls = 0

    def layer_sums(self, a):
        return self.sums.layer_sums(a)

    def add_up(self, partials):
        self.calls += 1
        return self.sums.add_up(partials)

    def max(self, value):
        return self.sums.max(value)


def _problem(seed: int, n: int = 5000, bounds: bool = False):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.01, 1.0, n)
    df, dg, w = -rng.uniform(0.0, 1.0, n), rng.uniform(0.5, 1.0, n), rng.uniform(0, 1, n) / n
    df[:10] = 0.0
    xmin, xmax = ((np.full(n, 0.001), np.where(rng.random(n) < 0.1, 0.5, 1.0)) if bounds
                  else (None, None))
    return x, df, dg, w, xmin, xmax


@pytest.mark.parametrize("depth", [1, 2, 4, 6])
@pytest.mark.parametrize("bounds", [False, True])
def test_oc_rounds_equal_the_bisection_bit_for_bit(depth, bounds):
    x, df, dg, w, xmin, xmax = _problem(3, bounds=bounds)
    want, want_change = oc_kernels.oc_update_linear(x, df, dg, w, 0.3, xmin, xmax)
    trials, (l1, l2) = 0, (0.0, 1e9)  # the one-step loop's trials
    while (l2 - l1) / (l1 + l2) > 1e-3:
        lmid = 0.5 * (l1 + l2)
        vol = float(w @ oc_kernels.oc_trial_numpy(x, df, dg, xmin, xmax, w, lmid, 0.2, 0.5)[0])
        l1, l2 = (lmid, l2) if vol > 0.3 else (l1, lmid)
        trials += 1
    one = _Counted(x.size)  # the one-step loop through the same sums: the claim
    want, want_change = oc_kernels.oc_update_linear(x, df, dg, w, 0.3, xmin, xmax,
                                                    reductions=one, round_depth=1)
    assert one.calls == trials
    sums = _Counted(x.size)
    got, change = oc_kernels.oc_update_linear(x, df, dg, w, 0.3, xmin, xmax,
                                              reductions=sums, round_depth=depth)
    assert np.array_equal(got, want) and change == want_change
    assert trials > 20
    assert sums.calls == -(-trials // depth)  # one reduction a round


def test_oc_rounds_refuse_a_depth_below_one():
    x, df, dg, w, xmin, xmax = _problem(3)
    with pytest.raises(ValueError, match="at least 1"):
        oc_kernels.oc_update_linear(x, df, dg, w, 0.3, reductions=_Counted(x.size),
                                    round_depth=0)


def test_the_bisection_tree_holds_the_loops_multipliers():
    mids, index = oc_kernels.bisection_tree(0.0, 8.0, 3, 1e-3)
    assert mids[index[()]] == 4.0
    assert mids[index[(1,)]] == 6.0 and mids[index[(0,)]] == 2.0
    assert mids[index[(1, 0)]] == 5.0 and mids[index[(0, 1)]] == 3.0
    assert len(mids) == 7
    # an interval that meets the tolerance is not split
    mids, index = oc_kernels.bisection_tree(1.0, 1.004, 4, 1e-3)
    assert mids == [1.002] and list(index) == [()]


def test_sum_groups_of_one_rank_equal_sum_layers():
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((2, 7)), rng.standard_normal((3, 4))
    got = SERIAL.sum_groups([(a, None), (b, None)])
    assert [g.tolist() for g in got] == [SERIAL.sum_layers(a).tolist(),
                                         SERIAL.sum_layers(b).tolist()]


class _FakeMPI:
    """Two ranks' Allgatherv as one process sees it: rank 0 here, rank 1's pieces given."""

    def __init__(self, other: np.ndarray):
        self.other = other

    def Get_rank(self):
        return 0

    def Get_size(self):
        return 2

    def allgather(self, n):
        return [n, self.other.shape[0]]

    def Allgatherv(self, local, spec):
        out, counts, displs, _ = spec
        out[displs[0]:displs[0] + counts[0]] = local.ravel()
        out[displs[1]:displs[1] + counts[1]] = self.other.ravel()


def test_sum_groups_of_float32_add_in_float32():
    """Float32 partials (a float32 V-cycle's Lanczos products) are added in float32, as
    sum_layers adds them: the same bits whatever the grouping."""
    rng = np.random.default_rng(9)
    a0, a1 = (rng.standard_normal((2, n)).astype(np.float32) for n in (37, 29))
    b0, b1 = (rng.standard_normal((1, n)).astype(np.float32) for n in (11, 5))
    other = np.concatenate([np.ascontiguousarray(a1.T).astype(np.float64).ravel(),
                            np.ascontiguousarray(b1.T).astype(np.float64).ravel()])
    comm = Comm(None)
    comm.mpi, comm.size = _FakeMPI(other), 2
    ga, gb = comm.sum_groups([(a0, [37, 29]), (b0, [11, 5])])
    whole = np.ascontiguousarray(np.concatenate([a0, a1], axis=1)).sum(axis=1)
    assert ga.dtype == np.float32 and ga.tolist() == whole.tolist()
    assert gb.tolist() == np.concatenate([b0, b1], axis=1).sum(axis=1).tolist()
    assert comm.sum_groups([]) == []


def test_sum_groups_of_two_ranks_equal_one_sum_layers_each(monkeypatch):
    """Two groups' layers in one gather: each total is sum_layers' of its own group, bit
    for bit (the other rank's pieces laid out as that rank lays them out)."""
    rng = np.random.default_rng(6)
    a0, a1 = rng.standard_normal((2, 5)), rng.standard_normal((2, 3))  # group a: 5 + 3
    b0, b1 = rng.standard_normal((1, 2)), rng.standard_normal((1, 6))  # group b: 2 + 6
    other = np.concatenate([np.ascontiguousarray(a1.T).ravel(),
                            np.ascontiguousarray(b1.T).ravel()])
    comm = Comm(None)
    comm.mpi, comm.size = _FakeMPI(other), 2
    ga, gb = comm.sum_groups([(a0, [5, 3]), (b0, [2, 6])], "cg")
    assert ga.tolist() == np.ascontiguousarray(np.concatenate([a0, a1], axis=1)
                                               ).sum(axis=1).tolist()
    assert gb.tolist() == np.ascontiguousarray(np.concatenate([b0, b1], axis=1)
                                               ).sum(axis=1).tolist()
    assert comm.counts.data["reductions"]["cg"] == {"calls": 1, "values": 3}


@pytest.mark.gpu
@pytest.mark.parametrize("bounds", [False, True])
def test_oc_rounds_on_the_gpu_take_four_steps_a_reduction(bounds):
    """On the GPU a distributed update takes ROUND_DEPTH steps per reduction by default,
    with the design and change of one step a round, bit for bit; one rank keeps one step
    a round (its sums cross to nobody)."""
    import cupy

    x, df, dg, w, xmin, xmax = (None if a is None else cupy.asarray(a)
                                for a in _problem(8, n=20000, bounds=bounds))
    one = _Counted(x.size, cupy)
    want, want_change = oc_kernels.oc_update_linear(x, df, dg, w, 0.3, xmin, xmax,
                                                    reductions=one, round_depth=1)
    sums = _Counted(x.size, cupy)
    got, change = oc_kernels.oc_update_linear(x, df, dg, w, 0.3, xmin, xmax,
                                              reductions=sums)
    assert bool(cupy.all(got == want)) and change == want_change
    assert one.calls > 20
    assert sums.calls == -(-one.calls // oc_kernels.ROUND_DEPTH)
    single = _Counted(x.size, cupy)
    single.distributed = False
    oc_kernels.oc_update_linear(x, df, dg, w, 0.3, xmin, xmax, reductions=single)
    assert single.calls == one.calls


def _pcg_iterations(a, b, rtol, estimate):
    """Jacobi-preconditioned CG on ``a`` (NumPy): its iterations, r.r taken every time
    or through :class:`ResidualNorm` (and how often it was taken whole)."""
    from femopt.parallel.multigrid import CHECK_NEAR, ResidualNorm

    inv_d = 1.0 / np.diag(a)
    x, r = np.zeros_like(b), b.copy()
    bnorm = np.sqrt(b @ b)
    norm = ResidualNorm(r @ r, (CHECK_NEAR * rtol * bnorm) ** 2)
    z = inv_d * r
    p, rz, whole = z.copy(), r @ z, 0
    for it in range(1, 30 * b.size):
        if not np.isfinite(rz) or rz <= 0:  # broken down: neither way converges
            return None, whole
        q = a @ p
        pq, rq, qq = p @ q, r @ q, q @ q
        alpha = rz / pq
        x += alpha * p
        r -= alpha * q
        if not estimate:
            norm.whole(r @ r)
        elif norm.step(alpha, rq, qq):
            norm.whole(r @ r)
            whole += 1
        if np.sqrt(norm.rr) / bnorm <= rtol:
            return it, whole
        z = inv_d * r
        rz_new = r @ z
        p = z + (rz_new / rz) * p
        rz = rz_new
    return None, whole


def _badly_scaled(rng, n: int, case: int):
    """An SPD matrix of condition 1e2 to 1e10 (a spread spectrum, or a cluster and a few
    large eigenvalues), its rows and columns scaled by e^-3 to e^3."""
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    cond = 10 ** rng.uniform(2, 10)
    eig = (np.logspace(0, np.log10(cond), n) if case % 2 else
           np.sort(np.concatenate([rng.uniform(1, 2, n - 5), cond * rng.uniform(0.5, 1, 5)])))
    a = (q * eig) @ q.T
    d = np.exp(rng.uniform(-3, 3, n))
    a = d[:, None] * (0.5 * (a + a.T)) * d[None, :]
    return a


@pytest.mark.parametrize("rtol", [1e-6, 1e-10, 1e-13])
def test_cg_stops_where_rr_taken_every_time_stops(rtol):
    """Badly scaled SPD matrices under Jacobi CG, whose residual norm rises and falls:
    the estimated |r|^2 stops CG at the iteration r.r taken every time stops it (or
    neither converges), taking r.r whole far less often."""
    rng = np.random.default_rng(0)
    whole_total = its_total = 0
    for case in range(60):
        a = _badly_scaled(rng, 100, case)
        b = rng.standard_normal(100)
        its, _ = _pcg_iterations(a, b, rtol, estimate=False)
        got, whole = _pcg_iterations(a, b, rtol, estimate=True)
        assert got == its, f"case {case}: {got} iterations, {its} taking r.r every time"
        if its:
            whole_total += whole
            its_total += its
    assert its_total > 0 and whole_total < 0.7 * its_total
