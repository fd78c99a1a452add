"""The communication a distributed run counts (femopt.parallel.comm_counts), against what
the code does by hand on a tiny grid.

MBB beam 32 x 16 quad4 (2 dofs a node) on two ranks: cut along x into cells [0, 16) and
[16, 32); three multigrid levels (33 x 17, 17 x 9 and 9 x 5 nodes; coarsest_size 100):
levels 0 and 1 cut, level 2 (90 dofs) replicated on both ranks and solved whole. Rank 0
sends one message per halo exchange (it has a neighbour above only). Per design
iteration, n CG iterations (compliance: the forward solve only), s = 2 Chebyshev steps,
m = 20 Lanczos steps per smoothed level:

- level 0 halos: the diagonal (1) and the Lanczos products (m) when the smoothers are
  built, the warm start's product (1, from the second design on), one product per CG
  iteration (n) and 2 s per V-cycle (s pre-smoothing products, the residual, s - 1
  post-smoothing: one V-cycle per CG iteration, n);
- level 1 halos: the diagonal and m Lanczos products, and per V-cycle the restricted
  residual's exchange and 2 s smoothing products;
- CG's reductions: |b| with the first residual, then r.z (2), per iteration p.Ap with
  r.q and q.q (n of 3 values) and, but after the last, the pair r.z, z.q (n - 1 of 2
  values), and the residual r.r taken whole where its estimate nears the tolerance (t,
  at least once); Lanczos: 1 + 2 m for the smoothed cut levels together (one value per
  level each);
- allgathers: the coarse residual into the replicated level per V-cycle (n) and its
  Galerkin cell matrices once.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from femopt.cli import main
from femopt.parallel.comm_counts import CommCounts, difference
from test_distributed import MBB, femopt, needs_mpi

# the MBB beam of test_distributed with a density filter, for three iterations
MBB_DENSITY = (MBB.replace("mbb_mpi", "mbb_counts").replace("type: sensitivity", "type: density")
               .replace("max_iter: 8", "max_iter: 3").replace(", checkpoint_every: 1", ""))

S, M = 2, 20  # Chebyshev steps, Lanczos steps (the multigrid's defaults)
F8 = 8  # float64 (the distributed multigrid's precision by default)


def test_counts_add_up_and_differences_drop_nothing_counted():
    c = CommCounts()
    before = c.snapshot()
    c.exchange("level 0")
    c.message("level 0", 272)
    c.message("level 0", 272)
    c.reduction("cg", 2)
    c.gather("allgather", 80)
    d = difference(c.snapshot(), before)
    assert d == {"halo": {"level 0": {"exchanges": 1, "messages": 2, "bytes": 544}},
                 "reductions": {"cg": {"calls": 1, "values": 2}},
                 "gathers": {"allgather": {"calls": 1, "bytes": 80}}}
    assert difference(c.snapshot(), c.snapshot()) == {"halo": {}, "reductions": {},
                                                      "gathers": {}}


def test_one_rank_sends_nothing(write_problem, tmp_path, capsys):
    out = tmp_path / "r1"
    assert main(["run", str(write_problem(MBB_DENSITY)), "--ranks", "1", "--out", str(out),
                 "--quiet"]) == 0
    comm = json.loads((out / "summary.json").read_text())["communication"]
    assert comm["ranks"] == 1 and len(comm["per_iteration"]) == 3
    assert all(it == {"halo": {}, "reductions": {}, "gathers": {}}
               for it in comm["per_iteration"])


def _two_ranks(how: str, path, out):
    """``femopt run`` of ``path`` on two ranks: on the CPU, on the device path's NumPy
    twin (the device communicator's counting), or on the GPU."""
    if how == "cpu":
        return femopt("run", path, "--ranks", 2, "--out", out, "--quiet")
    from test_distributed_gpu import run_twin

    if how == "twin":
        return run_twin(["run", path, "--device", "gpu", "--out", out, "--quiet"], ranks=2)
    return femopt("run", path, "--ranks", 2, "--device", "gpu", "--out", out, "--quiet")


@needs_mpi
@pytest.mark.parametrize("how", ["cpu", "twin", pytest.param("gpu", marks=pytest.mark.gpu)])
def test_two_ranks_count_what_the_code_does(how, write_problem, tmp_path):
    """The counts of the module docstring, on the CPU, on the device path's twin and on
    the GPU (NCCL on two GPUs; ranks sharing one GPU count their host transport's calls
    alike)."""
    out = tmp_path / "r2"
    proc = _two_ranks(how, write_problem(MBB_DENSITY), out)
    assert proc.returncode == 0, proc.stderr
    comm = json.loads((out / "summary.json").read_text())["communication"]
    assert comm["ranks"] == 2 and comm["rank"] == 0
    steps, cg = comm["per_iteration"], comm["cg_iterations"]
    assert len(steps) == len(cg) == 3
    for k, (step, n) in enumerate(zip(steps, cg)):
        assert 5 <= n <= 40
        warm = 1 if k else 0  # the first design's solve starts from zero
        halo, red, gat = step["halo"], step["reductions"], step["gathers"]
        assert halo["level 0"] == {"exchanges": 1 + M + warm + n * (1 + 2 * S),
                                   "messages": 1 + M + warm + n * (1 + 2 * S),
                                   "bytes": (1 + M + warm + n * (1 + 2 * S)) * 17 * 2 * F8}
        assert halo["level 1"] == {"exchanges": 1 + M + n * (1 + 2 * S),
                                   "messages": 1 + M + n * (1 + 2 * S),
                                   "bytes": (1 + M + n * (1 + 2 * S)) * 9 * 2 * F8}
        # the design's scale factors (one layer of 16 cells) and level 1's Galerkin
        # matrices (one layer of 8 coarse cells, 8 x 8 each), once a design
        assert halo["level 0 cells"] == {"exchanges": 1, "messages": 1, "bytes": 16 * F8}
        assert halo["level 1 cells"] == {"exchanges": 1, "messages": 1,
                                         "bytes": 8 * 64 * F8}
        # CG: b.b with r.r and r.z at the start; p.q with r.q and q.q each iteration, r.z
        # with z.q each iteration but the last; r.r whole where its estimate nears the
        # tolerance (t times: at least the last iteration, at most a few)
        t = red["cg"]["calls"] - (2 + n + (n - 1))
        assert 1 <= t <= 4
        assert red["cg"]["values"] == 3 + 3 * n + 2 * (n - 1) + t
        # Lanczos: both cut levels in step, one reduction for both (two values)
        assert red["lanczos"] == {"calls": 1 + 2 * M, "values": 2 * (1 + 2 * M)}
        assert gat["allgather"]["calls"] == n + 1
        # the filter's ghost layers: 2 cell layers (radius 1.5 on a unit grid) of 16 cells
        assert halo["filter"]["bytes"] == halo["filter"]["messages"] * 2 * 16 * F8
    assert steps[1]["reductions"]["bcast"] == {"calls": 1, "values": 1}  # the stop decision


@pytest.mark.parametrize("label", ["level 0", "filter"])
def test_a_device_communicator_counts_once(label):
    """The device communicator shares its host's counts; its host transport's own MPI
    calls are not counted again (one rank: nothing crosses, nothing is counted)."""
    import numpy as np

    from femopt.parallel.comm import Comm
    from femopt.parallel.comm_device import DeviceComm, HostTransport

    host = Comm(None)
    dev = DeviceComm(host, np, HostTransport(host, np))
    assert dev.counts is host.counts and dev.transport.host is not host
    dev.sendrecv(np.ones(3), None, None, None, label=label)
    dev.sum_layers(np.ones((2, 3)), "cg")
    assert host.counts.data == {"halo": {}, "reductions": {}, "gathers": {}}


# -- the model of 8 GPUs (benchmarks/mpi_gpu_model.py) -----------------------------------

def _model_module():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import mpi_gpu_model

    return mpi_gpu_model


def test_the_model_plans_the_grids_as_a_run_does():
    m = _model_module()
    # 512x256x256 on 8 ranks: cut along x (the longest), 64 cell layers each, 6 levels
    # (coarsest_size 5000: 17 x 9 x 9 nodes, 4131 dofs) of which all but the coarsest cut
    rank = m.hierarchy((512, 256, 256), 8)
    orient, lays, bounds, cut = rank.orient, rank.levels, rank.bounds, rank.distributed
    assert orient.axis == 0 and bounds == tuple(64 * r for r in range(9))
    assert len(lays) == 6 and cut == 5 and lays[-1].n_dofs == 17 * 9 * 9 * 3
    assert m.face_nodes(lays[0]) == 257 * 257 and m.face_cells(lays[1]) == 128 * 128


@pytest.mark.parametrize("shape, ranks", [((64, 16, 16), 2), ((16, 40, 24), 4)])
def test_the_model_plans_its_cantilever_as_femopt_plans_the_built_model(
        shape, ranks, write_problem):
    """The model's hierarchy (femopt's grid_plan with the model's dofs per node, filter
    reach and multigrid defaults) is the rank plan of the benchmark cantilever built
    from its problem file."""
    from femopt.evaluation.build import build_model
    from femopt.parallel.partition import rank_plan

    m = _model_module()
    nx, ny, nz = shape
    model = build_model(write_problem(m.PROBLEM.format(nx=nx, ny=ny, nz=nz,
                                                       iterations=2)))
    built, planned = rank_plan(model, ranks), m.hierarchy(shape, ranks)
    assert planned.orient.axis == built.orient.axis
    assert [lay.shape for lay in planned.levels] == [lay.shape for lay in built.levels]
    assert planned.bounds == built.bounds and planned.distributed == built.distributed
    with pytest.raises(SystemExit, match="100 ranks are too many"):
        m.hierarchy(shape, 100)


def test_the_model_without_communication_costs_is_the_compute():
    """With free communication the total is the compute, and linear scaling (exponent 1)
    at a grid 8 times the reference gives one GPU's reference time per rank plus the
    ghost layer and the replicated coarse levels."""
    m = _model_module()
    summary = {"communication": {
        "cg_iterations": [10, 12],
        "per_iteration": [{}, {"halo": {"level 0": {"exchanges": 22 + 5 * 12,
                                                    "messages": 82,
                                                    "bytes": 82 * 17 * 17 * 3 * 8},
                                        "level 1": {"exchanges": 21 + 5 * 12},
                                        "filter": {"exchanges": 3}},
                               "reductions": {"cg": {"calls": 26}}, "gathers": {}}]}}
    c = m.Counts(summary, (64, 16, 16))
    # CG: 2 reductions per iteration (24), 2 more (its start and the last r.r taken whole)
    assert c.rest == [22.0, 21.0] and c.cg_rest == 2.0 and c.bytes_per_value == 8.0
    free = {"sendrecv_us": 0.0, "allreduce_us": 0.0, "nvlink_gbs": float("inf"),
            "mpi_us": 0.0}
    r = m.model((1024, 512, 512), 8, c, 12, 1.0, 512 * 256 * 256, 1.0, free)
    assert r["halo"] == r["reductions"] == r["gathers"] == 0.0
    assert r["total"] == r["compute"]
    assert 1.0 < r["compute"] < 1.0 * (129 / 128) * 1.001  # 128 layers + 1 ghost
    assert r["one_gpu"] == pytest.approx(8.0)


def test_sums_of_layers_with_known_row_counts_ask_no_counts():
    """With every rank's layer count known (the slab's bounds) the sums take one
    collective, not two; a count that does not match this rank's layers is an error."""
    from femopt.parallel.comm import Comm

    mpi = _StandIn()  # rank 0 of 2; the other rank holds the same partials
    comm = Comm(mpi)
    partials = np.array([[1.0, 2.0, 3.0], [0.5, 0.25, 0.125]])
    assert comm.sum_layers(partials, "cg", rows=[3, 3]).tolist() == [12.0, 1.75]
    assert mpi.calls == ["Allgatherv"]
    assert comm.sum_layers(partials, "cg").tolist() == [12.0, 1.75]
    assert mpi.calls == ["Allgatherv", "allgather", "Allgatherv"]
    with pytest.raises(RuntimeError, match="holds 3 rows, not 2"):
        comm.sum_layers(partials, "cg", rows=[2, 4])


class _StandIn:
    """An MPI communicator stand-in: rank ``rank`` of ``size``, every other rank holding
    the same rows; it records the collectives called."""

    def __init__(self, rank: int = 0, size: int = 2):
        self.rank, self.size, self.calls = rank, size, []

    def Get_rank(self):
        return self.rank

    def Get_size(self):
        return self.size

    def allgather(self, obj):
        self.calls.append("allgather")
        return [obj] * self.size

    def Allgatherv(self, local, recv):
        self.calls.append("Allgatherv")
        out, counts, displs, _ = recv
        flat = out.reshape(-1)
        for c, d in zip(counts, displs):
            flat[d:d + c] = local.reshape(-1)


@pytest.mark.parametrize("bounds", [[0, 4, 8, 12, 16], [0, 2, 6, 8], [0, 3, 7, 10],
                                    [0, 8, 12]])
def test_every_ranks_share_of_the_level_below_from_the_bounds(bounds, monkeypatch):
    """Slab.rank_halves, on every rank alike, equals the rows each rank's own restrict
    (coarse node layers) and coarse_cells (coarse cell layers) compute there, run on
    that rank; the shares cover the coarse level once."""
    from types import SimpleNamespace

    from femopt.parallel import slabs
    from femopt.parallel.comm import Comm
    from femopt.parallel.slabs import GridLayout, Slab

    layout = GridLayout((4, bounds[-1]), 2)
    coarse = GridLayout((2, bounds[-1] // 2), 2)  # the level below
    made = []  # the coarse node layers a rank's restrict computes
    monkeypatch.setattr(slabs, "_to_coarse",
                        lambda fine, c_slab, c, lo, hi, free_c: made.append(hi - lo))
    gathered = []  # the coarse cells a rank's coarse_cells computes (then gathers)
    monkeypatch.setattr(Comm, "allgather_rows",
                        lambda self, local, rows=None: gathered.append(local.shape[0]))
    below = SimpleNamespace(layer_nodes=int(np.prod(coarse.node_shape[:-1])),
                            layer_cells=int(np.prod(coarse.shape[:-1])), distributed=False)
    nodes, cells, seen = [], [], set()
    for r in range(len(bounds) - 1):
        slab = Slab(layout, Comm(_StandIn(r, len(bounds) - 1)), bounds)
        slabs.restrict(slab, below, np.zeros(slab.local.n_dofs), None)
        nodes.append(made.pop())
        slabs.coarse_cells(slab, below, lambda sub_layout, sub: np.zeros(
            (sub_layout.n_cells // 2 ** sub_layout.dim, 1)), np.zeros(slab.local.n_cells),
            (1,))
        cells.append(gathered.pop() // below.layer_cells)
        seen.add((tuple(slab.rank_halves(nodes=True)), tuple(slab.rank_halves())))
    assert seen == {(tuple(nodes), tuple(cells))}
    assert sum(nodes) == bounds[-1] // 2 + 1 and sum(cells) == bounds[-1] // 2


def test_device_gathers_with_known_row_counts_ask_no_counts():
    """The device communicator (host transport, NumPy twin) gathers rows with one
    collective where the counts are given (the slabs' bounds), two where not; a count
    that does not match the rank's rows is an error."""
    from femopt.parallel.comm import Comm
    from femopt.parallel.comm_device import DeviceComm, HostTransport

    mpi = _StandIn()
    host = Comm(mpi)
    comm = DeviceComm(host, np, HostTransport(host, np))
    local = np.arange(6.0).reshape(3, 2)
    assert comm.allgather_rows(local, [3, 3]).tolist() == local.tolist() * 2
    assert mpi.calls == ["Allgatherv"]
    assert comm.allgather_rows(local).tolist() == local.tolist() * 2
    assert mpi.calls == ["Allgatherv", "allgather", "Allgatherv"]
    assert comm.sum_layers(np.ones((2, 3))).tolist() == [6.0, 6.0]
    assert mpi.calls[3:] == ["Allgatherv"]
    with pytest.raises(RuntimeError, match="holds 3 rows, not 4"):
        comm.allgather_rows(local, [4, 2])
