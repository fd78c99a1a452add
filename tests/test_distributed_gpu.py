"""Distributed runs on GPUs (femopt.parallel.comm_device and the slab path on CuPy).

The device code runs on the CPU through its NumPy twin: the distributed path with
``array_module=numpy`` (the device communicator's host transport, the device branches of
the slabs, reductions and filters), under ``mpiexec -n 2``, against the one-process NumPy
twin of the grid path: the same iterations, objectives within the solver's tolerance
(the device sums are not rank-count independent, so not bit for bit). A stand-in array
module that is not NumPy (``STAND_IN``) takes the branches written for CuPy. The ``gpu``
tests run ``mpiexec -n 2 femopt run --device gpu`` against the one-process GPU run.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from femopt.cli import main
from femopt.evaluation.build import build_model
from femopt.parallel.comm import SERIAL
from femopt.parallel.launch import mpiexec
from test_distributed import CANTILEVER, MBB, MMA_CASES, PROBLEMS, needs_mpi


def _tight(text: str, more: str = "") -> str:
    """The problem with rtol 1e-8 where its multigrid sets none (the distributed path's
    default; the one-process grid path's is 1e-6), and ``more`` options."""
    def pin(match: re.Match) -> str:
        rtol = "" if "rtol" in match[1] else ", rtol: 1.0e-8"
        return f"solver: {{type: multigrid, {match[1]}{more}{rtol}}}"

    return re.sub(r"solver: \{type: multigrid, ([^}]*)\}", pin, text)


def _double(text: str) -> str:
    """The problem with float64 Krylov iterations, Galerkin coarse levels and rtol 1e-8
    where it sets none: the distributed path's, which the one-process grid path (mixed,
    hybrid and 1e-6 by default) is compared with."""
    return _tight(text, ", krylov: double, coarse_operator: galerkin")


CANTILEVER, MBB, MMA_CASES = (_double(t) for t in (CANTILEVER, MBB, MMA_CASES))

# ``femopt ARGS`` with the device paths on NumPy (the CPU twin): --device gpu builds them
# with array_module=numpy instead of CuPy
TWIN = """\
import sys
import numpy as np
import femopt.runner
from femopt.cli import main
from femopt.evaluation import build

def twin(*args, **kwargs):
    kwargs.setdefault("array_module", np)
    return build.build_model(*args, **kwargs)

femopt.runner.build_model = twin
sys.exit(main(sys.argv[1:]))
"""

# the device communicator's collectives on two ranks (argv[1]: numpy or cupy), each rank's
# results in ARGV[2]/RANK.json
COLLECTIVES = """\
import json, sys
import numpy as np
from femopt.backend import to_host
from femopt.parallel.comm import world
from femopt.parallel.comm_device import device_comm
host = world()
xp = np if sys.argv[1] == "numpy" else __import__("cupy")
comm = device_comm(host, xp)
r = comm.rank
rows = comm.allgather_rows(xp.arange(3 * (r + 1), dtype=xp.float64).reshape(r + 1, 3) + r)
send = xp.full(4, 10.0 + r)
recv = xp.zeros(4)
peer = 1 - r
comm.sendrecv(send, peer, recv, peer)
sums = comm.sum_layers(xp.asarray([[1.5 * (r + 1), 2.0], [r, 0.25]]))
flags = xp.asarray([r == 1, False])
got = comm.allgather_rows(flags)
json.dump({"rank": r, "rows": to_host(rows).tolist(), "recv": to_host(recv).tolist(),
           "sums": sums.tolist(), "flags": to_host(got).tolist(),
           "transport": comm.transport.name}, open(f"{sys.argv[2]}/{r}.json", "w"))
"""


# the distributed path with an array module that is not NumPy but hands out NumPy arrays:
# the slabs, the level operators (the fine one through StructuredOperator, as on the GPU,
# springs moved to the "device"), the reductions and the device communicator take their
# device branches; the communicator's host transport, the coarsest level's NumPy solver
# and no GPU memory check stand in for CuPy's. ARGV: problem, iterations, output JSON.
STAND_IN = """\
import json, sys, types
import numpy as np
import femopt.parallel.comm_device as cd
import femopt.parallel.multigrid as pm
from femopt.evaluation.build import build_model
from femopt.parallel.comm import world

xp = types.ModuleType("stand_in")
xp.__getattr__ = lambda name: getattr(np, name)
if sys.argv[4:] == ["ipc"]:  # the halos through the CUDA IPC protocol's CPU twin
    from femopt.parallel.comm_ipc import FileIpc, ipc_transport
    cd.device_comm = lambda host, xp: cd.DeviceComm(host, xp,
                                                    ipc_transport(host, xp, FileIpc()))
else:
    cd.device_comm = lambda host, xp: cd.DeviceComm(host, xp, cd.HostTransport(host, xp))
cd.check_memory = lambda need, comm: None
coarse = pm.CoarseSolver
pm.CoarseSolver = lambda op, xp: coarse(op, np)
comm = world()
model = build_model(sys.argv[1], "gpu", distributed=comm, array_module=xp)
model.optimizer.run(model, model.x0.copy(), int(sys.argv[2]))
assert model.path.xp is xp and model.path.mg.op64.kernel is not None
if comm.root:
    json.dump({"objectives": [r.objective for r in model.history],
               "cg": model.path.cg_iterations,
               "transport": model.path.slab.comm.transport.name}, open(sys.argv[3], "w"))
"""


# the CUDA IPC protocol on the ranks of ARGV[1] ("ok": its CPU twin; "fail": the twin where
# rank 1 cannot make its events; "cuda": CUDA IPC on the GPU): halo-like exchanges of every
# rank with both neighbours, of sizes that grow and shrink, each followed by a kernel on the
# layer received; each rank's received values in ARGV[2]/RANK.json
IPC_EXCHANGES = """\
import json, sys
import numpy as np
from femopt.parallel.comm import world
from femopt.parallel.comm_device import DeviceComm
from femopt.parallel.comm_ipc import CudaIpc, FileIpc, ipc_transport

class Failing(FileIpc):
    def event(self):
        raise RuntimeError("no interprocess events here")

host = world()
r, n = host.rank, host.size
if sys.argv[1] == "cuda":
    import cupy as xp
    ops = CudaIpc(xp)
else:
    xp = np
    ops = Failing() if sys.argv[1] == "fail" and r == 1 else FileIpc(sys.argv[2])
comm = DeviceComm(host, xp, ipc_transport(host, xp, ops))
above = r + 1 if r < n - 1 else None
below = r - 1 if r > 0 else None
got = []
for k, size in enumerate([3, 1000, 5, 40000, 7, 40000, 2] * 3):
    up = xp.full(size, 1000.0 * r + k) if above is not None else None
    recv = xp.empty(size) if below is not None else None
    comm.sendrecv(up, above, recv, below, tag=11)
    down = xp.full(size, -1000.0 * r - k) if below is not None else None
    recv2 = xp.empty(size) if above is not None else None
    comm.sendrecv(down, below, recv2, above, tag=12)
    recv = None if recv is None else recv * 1.0
    recv2 = None if recv2 is None else recv2 * 1.0
    got.append([None if recv is None else [float(recv.min()), float(recv.max())],
                None if recv2 is None else [float(recv2.min()), float(recv2.max())]])
# pitched views, as a ghost layer's components: 3 rows of 40 inside rows of 50, both ends
src = xp.arange(150, dtype=xp.float64).reshape(3, 50) + 1000.0 * r
dst = xp.full((3, 50), -1.0)
comm.exchange([(src[:, 5:45] if above is not None else None, above,
                dst[:, 5:45] if below is not None else None, below, 13)])
dst = dst.get() if xp is not np else dst
sent = np.arange(150.0).reshape(3, 50) + 1000.0 * (r - 1)
pitched = None if below is None else [
    bool((dst[:, 5:45] == sent[:, 5:45]).all()),
    bool((dst[:, :5] == -1.0).all() and (dst[:, 45:] == -1.0).all())]
rows = comm.allgather_rows(xp.arange(3 * (r + 1), dtype=xp.float64).reshape(r + 1, 3) + r)
rows = [float(v) for v in rows.reshape(-1)]
json.dump({"transport": comm.transport.name, "got": got, "rows": rows, "pitched": pitched,
           "error": getattr(comm.transport, "ipc_error", None)},
          open(f"{sys.argv[2]}/{r}.json", "w"))
"""


def _mpi_env() -> dict:
    env = dict(os.environ)
    env.pop("PMI_SIZE", None)
    return env


def run_twin(args: list, ranks: int | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", TWIN, *map(str, args)]
    if ranks is not None:
        cmd = [mpiexec(), "-n", str(ranks)] + cmd
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=_mpi_env())


def collectives(xp: str, tmp: Path) -> list[dict]:
    """Each rank's results of ``COLLECTIVES`` on two ranks, in rank order."""
    proc = subprocess.run([mpiexec(), "-n", "2", sys.executable, "-c", COLLECTIVES, xp,
                           str(tmp)], capture_output=True, text=True, timeout=300,
                          env=_mpi_env())
    assert proc.returncode == 0, proc.stderr
    return [json.loads((tmp / f"{r}.json").read_text()) for r in range(2)]


def history(out: Path) -> list[dict]:
    with open(out / "history.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def close_runs(a: Path, b: Path, rtol: float) -> None:
    """Iterations exact; objectives and constraints within ``rtol`` every iteration."""
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    assert sa["iterations"] == sb["iterations"] > 0
    assert sb["objective"] == pytest.approx(sa["objective"], rel=rtol)
    ha, hb = history(a), history(b)
    assert len(ha) == len(hb) == sa["iterations"]
    for ra, rb in zip(ha, hb):
        for key in ra:
            if key not in ("seconds", "change"):
                assert float(rb[key]) == pytest.approx(float(ra[key]), rel=rtol, abs=1e-12)
    assert np.allclose(np.load(b / "design.npy"), np.load(a / "design.npy"), rtol=0,
                       atol=1e-4)


# -- in process ------------------------------------------------------------------------

def test_device_twin_on_one_rank_equals_the_grid_path(write_problem):
    """The distributed path's device branches on one rank (NumPy, host transport) and the
    one-process grid path's NumPy twin: the same CG iterations, objectives within the
    solver's tolerance."""
    path = write_problem(MBB)
    runs = []
    for kwargs in ({"distributed": SERIAL}, {}):
        model = build_model(path, "gpu", array_module=np, **kwargs)
        model.optimizer.run(model, model.x0.copy(), 5)
        runs.append(model)
    a, b = runs
    assert type(a.path).__name__ == "DistributedGridPath" and a.device == "gpu"
    assert repr(a.path.slab.comm) == "DeviceComm(rank 0 of 1, mpi)"
    assert [r.objective for r in a.history] == pytest.approx(
        [r.objective for r in b.history], rel=1e-7)
    assert a.path.cg_iterations == b.path.cg_iterations


@pytest.mark.parametrize("ranks", [2, 3])
def test_every_slab_estimate_is_about_its_share_of_the_grid(ranks, write_problem):
    """A slab's GPU memory estimate follows its cells, whichever its layer count: a slab
    with an odd number of layers (halos included) coarsens no further, and its coarsest
    level must still be the whole grid's (counting it as the slab's own once made a
    rank of 256x128x128 ask for more than an H200)."""
    from femopt.evaluation.grid_device import estimate_bytes
    from femopt.parallel.partition import rank_plan, slab_bytes
    from femopt.parallel.slabs import Slab

    text = CANTILEVER.replace("[24, 8, 4], size: [24.0, 8.0, 4.0]",
                              "[64, 32, 32], size: [64.0, 32.0, 32.0]")
    model = build_model(write_problem(text))
    plan = rank_plan(model, ranks)
    glayout, bounds = plan.layout, plan.bounds
    whole = estimate_bytes(glayout, 1, krylov="double")

    class _Rank:
        def __init__(self, rank):
            self.rank, self.size = rank, ranks

    locals_ = [Slab(glayout, _Rank(r), bounds).local for r in range(ranks)]
    assert any(lay.shape[-1] % 2 for lay in locals_)  # a slab that coarsens no further
    for lay in locals_:
        share = lay.n_cells / glayout.n_cells
        assert slab_bytes(model, plan, lay) < 1.5 * share * whole


def test_a_gpu_rank_takes_the_allocator_of_the_environment_on_its_own_gpu(monkeypatch):
    """``FEMOPT_GPU_ALLOCATOR`` reaches a distributed run's ranks: each rank's allocator is
    chosen after its GPU is made current (a stand-in for CuPy records the order)."""
    import types

    import femopt.parallel.comm_device as comm_device
    from femopt.parallel.comm import Comm

    calls = []

    class Device:
        def __init__(self, i=None):
            self.id = 0 if i is None else i

        def use(self):
            calls.append(("use", self.id))

    runtime = types.SimpleNamespace(getDeviceCount=lambda: 2,
                                    deviceGetPCIBusId=lambda i: f"0000:0{i}:00.0")
    cupy = types.SimpleNamespace(cuda=types.SimpleNamespace(Device=Device, runtime=runtime),
                                 ascontiguousarray=np.ascontiguousarray)
    monkeypatch.setattr(comm_device, "gpu_modules", lambda: (cupy, None))
    monkeypatch.setattr(comm_device, "gpu_allocator", lambda: calls.append(("allocator",)))
    host = Comm(None)
    host.rank = 1
    comm = comm_device.device_comm(host, cupy)
    assert calls == [("use", 1), ("allocator",)]
    assert comm.xp is cupy and comm.transport.name == "mpi"


@pytest.mark.parametrize("where", ["cli", "file"])
def test_gpu_ranks_without_cupy_are_refused_before_any_work(where, write_problem, tmp_path,
                                                            capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy raises ImportError
    text = MBB if where == "cli" else MBB.replace("optimizer:", "device: gpu\noptimizer:")
    path = write_problem(text)
    args = ["run", str(path), "--ranks", "2", "--out", str(tmp_path / "x")]
    assert main(args + (["--device", "gpu"] if where == "cli" else [])) == 2
    err = capsys.readouterr().err
    assert "needs CuPy" in err
    if where == "file":
        line = text.splitlines().index("device: gpu") + 1
        assert f"{path}:{line}:9" in err
    else:
        assert "--device gpu" in err
    assert not (tmp_path / "x").exists()


# -- on two ranks ------------------------------------------------------------------------

@needs_mpi
def test_device_comm_collectives_on_two_ranks(tmp_path):
    out = collectives("numpy", tmp_path)
    rows = [[0.0, 1.0, 2.0], [1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    for d in out:
        assert d["transport"] == "mpi"
        assert d["rows"] == rows
        assert d["sums"] == [1.5 + 3.0 + 2.0 + 2.0, 0.0 + 0.25 + 1.0 + 0.25]
        assert d["flags"] == [False, False, True, False]
        assert d["recv"] == [10.0 + (1 - d["rank"])] * 4


@needs_mpi
@pytest.mark.parametrize("text", [MBB, CANTILEVER, MMA_CASES],
                         ids=["mbb", "cantilever_3d", "mma_cases_heaviside"])
def test_device_twin_on_two_ranks_equals_one_process(text, write_problem, tmp_path):
    """``mpiexec -n 2 femopt run --device gpu`` on the NumPy twin against the one-process
    device path (twin): the same iterations, objectives within 1e-6 relative; the results
    directory holds what the CPU distributed run's holds."""
    path = write_problem(text)
    ref, two, cpu = tmp_path / "one", tmp_path / "two", tmp_path / "cpu"
    proc = run_twin(["run", path, "--device", "gpu", "--out", ref, "--quiet"])
    assert proc.returncode == 0, proc.stderr
    proc = run_twin(["run", path, "--device", "gpu", "--out", two, "--quiet"], ranks=2)
    assert proc.returncode == 0, proc.stderr
    close_runs(ref, two, 1e-6)
    assert json.loads((two / "summary.json").read_text())["ranks"] == 2
    proc = subprocess.run([sys.executable, "-m", "femopt", "run", str(path), "--ranks", "2",
                           "--out", str(cpu), "--quiet"], capture_output=True, text=True,
                          timeout=300, env=_mpi_env())
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in cpu.iterdir())


@needs_mpi
@pytest.mark.parametrize("problem,ranks,transport", [("mma_cases", 2, "host"),
                                                     ("force_inverter", 2, "host"),
                                                     ("mma_cases", 3, "ipc")])
def test_device_branches_on_ranks(problem, ranks, transport, write_problem, tmp_path):
    """The device branches (``STAND_IN``) on two ranks against the one-process twin: the
    same CG iterations, objectives within 1e-6 relative (force_inverter: MMA, springs);
    on three ranks with the halos through the CUDA IPC protocol (its CPU twin, a middle
    rank with two peers)."""
    path = write_problem(MMA_CASES if problem == "mma_cases" else
                         (PROBLEMS / "force_inverter.yaml").read_text()
                         + "solver: {type: multigrid, krylov: double, "
                         "coarse_operator: galerkin, rtol: 1.0e-8}\n")
    out = tmp_path / "two.json"
    proc = subprocess.run([mpiexec(), "-n", str(ranks), sys.executable, "-c", STAND_IN,
                           str(path), "3", str(out), transport], capture_output=True,
                          text=True, timeout=300,
                          env=_mpi_env())
    assert proc.returncode == 0, proc.stderr
    two = json.loads(out.read_text())
    model = build_model(path, "gpu", array_module=np)
    model.optimizer.run(model, model.x0.copy(), 3)
    one = [r.objective for r in model.history]
    assert len(two["objectives"]) == len(one) == 3
    scale = max(abs(v) for v in one)  # the inverter's objective passes through zero
    assert np.allclose(two["objectives"], one, rtol=1e-6, atol=1e-9 * scale)
    assert two["cg"] == model.path.cg_iterations
    assert two["transport"] == {"host": "mpi", "ipc": "ipc"}[transport]


# two IPC transports (the CPU twin) one after the other on the same ranks, as two runs in
# one process make them: rank 0 sends 100, 200, 300 through the second after one message
# through the first; rank 1's values in ARGV[1]/1.json
TWO_TRANSPORTS = """\
import json, sys
import numpy as np
from femopt.parallel.comm import world
from femopt.parallel.comm_device import DeviceComm
from femopt.parallel.comm_ipc import FileIpc, ipc_transport

host = world()
r = host.rank
first = DeviceComm(host, np, ipc_transport(host, np, FileIpc(sys.argv[1])))
second = DeviceComm(host, np, ipc_transport(host, np, FileIpc(sys.argv[1])))
got = []
for comm, values in [(first, [1.0]), (second, [100.0, 200.0, 300.0])]:
    for v in values:
        recv = np.zeros(3)
        comm.sendrecv(np.full(3, v) if r == 0 else None, 1 if r == 0 else None,
                      recv if r == 1 else None, 0 if r == 1 else None)
        got.append(float(recv[0]))
json.dump(got, open(f"{sys.argv[1]}/{r}.json", "w"))
"""


@needs_mpi
def test_two_ipc_transports_in_one_process_keep_their_messages_apart(tmp_path):
    proc = subprocess.run([mpiexec(), "-n", "2", sys.executable, "-c", TWO_TRANSPORTS,
                           str(tmp_path)], capture_output=True, text=True, timeout=300,
                          env=_mpi_env())
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "1.json").read_text()) == [1.0, 100.0, 200.0, 300.0]


@needs_mpi
@pytest.mark.parametrize("case", ["ok", "fail", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_ipc_protocol_exchanges_halos_on_three_ranks(case, tmp_path):
    """The CUDA IPC halo protocol (its CPU twin) on three ranks: every layer arrives
    whole from the right neighbour, over outboxes that grow, and a gather of rows of
    every rank's own count; where one rank cannot make its events, every rank falls back
    to the host transport, with the reason for the log."""
    proc = subprocess.run([mpiexec(), "-n", "3", sys.executable, "-c", IPC_EXCHANGES, case,
                           str(tmp_path)], capture_output=True, text=True, timeout=300,
                          env=_mpi_env())
    assert proc.returncode == 0, proc.stderr
    for r in range(3):
        d = json.loads((tmp_path / f"{r}.json").read_text())
        assert d["transport"] == {"ok": "ipc", "fail": "mpi", "cuda": "ipc"}[case]
        assert d["error"] == ("RuntimeError: no interprocess events here" if case == "fail"
                              else None)
        assert len(d["got"]) == 21
        for k, (from_below, from_above) in enumerate(d["got"]):
            if r > 0:
                assert from_below == [1000.0 * (r - 1) + k] * 2
            if r < 2:
                assert from_above == [-1000.0 * (r + 1) - k] * 2
            assert (from_below is None) == (r == 0) and (from_above is None) == (r == 2)
        assert d["rows"] == [0, 1, 2, 1, 2, 3, 4, 5, 6, 2, 3, 4, 5, 6, 7, 8, 9, 10]
        # a pitched view lands in its rows, the rest of the rows untouched
        assert d["pitched"] == (None if r == 0 else [True, True])
    assert not list(tmp_path.glob("femopt-outbox-*"))  # each opened by its peer, unlinked


def test_a_bad_shared_gpu_transport_is_named(monkeypatch):
    from femopt.errors import InputError
    from femopt.parallel.comm_device import shared_gpu_transport

    assert shared_gpu_transport() == "ipc"
    monkeypatch.setenv("FEMOPT_GPU_TRANSPORT", " Host ")
    assert shared_gpu_transport() == "host"
    monkeypatch.setenv("FEMOPT_GPU_TRANSPORT", "nvlink")
    with pytest.raises(InputError, match="FEMOPT_GPU_TRANSPORT='nvlink': expected ipc or host"):
        shared_gpu_transport()


def test_the_log_says_how_ranks_share_a_gpu(monkeypatch, tmp_path):
    import types

    from femopt.parallel.comm_device import sharing_note

    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", str(tmp_path))
    comm = types.SimpleNamespace(sharing=2, xp=object(),
                                 transport=types.SimpleNamespace(name="ipc"))
    assert sharing_note(comm) == (
        "2 ranks on rank 0's GPU; halos device to device (CUDA IPC); CUDA MPS is not "
        "running, so they take turns on it (start it with `nvidia-cuda-mps-control -d` "
        "before the run)")
    (tmp_path / "control").touch()
    comm.transport.name = "mpi"
    assert sharing_note(comm) == ("2 ranks on rank 0's GPU; halos through host memory; CUDA "
                                  "MPS runs, so their kernels share it")
    comm.transport.ipc_error = "CUDARuntimeError: no peer access"
    assert "host memory (CUDA IPC could not be set up: CUDARuntimeError: no peer access)" \
        in sharing_note(comm)
    comm.sharing = 1
    assert sharing_note(comm) is None


# -- on the GPU ----------------------------------------------------------------------------

@pytest.mark.gpu
@needs_mpi
def test_device_comm_collectives_on_the_gpu(tmp_path, monkeypatch):
    """Two ranks on one GPU exchange halos through CUDA IPC (NCCL refuses a GPU twice),
    or with ``FEMOPT_GPU_TRANSPORT=host`` through host memory; on two GPUs NCCL. The same
    numbers every way."""
    import cupy

    out = collectives("cupy", tmp_path)
    want = "nccl" if cupy.cuda.runtime.getDeviceCount() >= 2 else "ipc"
    (tmp_path / "host").mkdir()
    monkeypatch.setenv("FEMOPT_GPU_TRANSPORT", "host")
    forced = collectives("cupy", tmp_path / "host")
    assert all(d["transport"] == ("nccl" if want == "nccl" else "mpi") for d in forced)
    assert [d["recv"] for d in forced] == [d["recv"] for d in out]
    for d in out:
        assert d["transport"] == want
        assert d["rows"] == [[0.0, 1.0, 2.0], [1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
        assert d["sums"] == [8.5, 1.5]
        assert d["flags"] == [False, False, True, False]
        assert d["recv"] == [10.0 + (1 - d["rank"])] * 4


@pytest.mark.gpu
@needs_mpi
@pytest.mark.parametrize("text,how", [(CANTILEVER, "mpiexec"), (MMA_CASES, "ranks")],
                         ids=["cantilever_3d_mpiexec", "mma_cases_ranks"])
def test_two_ranks_on_the_gpu_equal_one_process(text, how, write_problem, tmp_path):
    """``mpiexec -n 2 femopt run --device gpu`` (or ``--ranks 2``) against ``femopt run
    --device gpu``: the same iterations, objectives within 1e-6 relative (multigrid rtol
    1e-8 for both, as ``_double`` pins it)."""
    path = write_problem(text)
    ref, two = tmp_path / "one", tmp_path / "two"
    run = ["-m", "femopt", "run", str(path), "--device", "gpu", "--quiet", "--out"]
    proc = subprocess.run([sys.executable, *run, str(ref)], capture_output=True, text=True,
                          timeout=300, env=_mpi_env())
    assert proc.returncode == 0, proc.stderr
    cmd = ([mpiexec(), "-n", "2", sys.executable, *run, str(two)] if how == "mpiexec"
           else [sys.executable, *run, str(two), "--ranks", "2"])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=_mpi_env())
    assert proc.returncode == 0, proc.stderr
    close_runs(ref, two, 1e-6)
    assert json.loads((two / "summary.json").read_text())["ranks"] == 2
