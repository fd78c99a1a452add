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
    sums = _Counted(x.size)
    got, change = oc_kernels.oc_update_linear(x, df, dg, w, 0.3, xmin, xmax,
                                              reductions=sums, round_depth=depth)
    assert np.array_equal(got, want) and change == want_change
    assert trials > 20
    assert sums.calls == -(-trials // depth)  # one reduction a round


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
