"""The GPU path on meshes from files (tet4): its pieces and the whole path with NumPy
arrays against the CPU path; the GPU tests run the kernels and the path with CuPy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse.linalg as spla
import yaml

import femopt.backend
import femopt.errors
import femopt.evaluation.model
from femopt.assembly.csr_gather import GatherAssembler, gather_map, gather_numpy
from femopt.assembly.sparse import FixedPatternAssembler
from femopt.plugins.manager import get_registry
from femopt.problem.load import parse_problem
from femopt.evaluation.model import Model
from femopt.solvers.csr_pcg import NodeBlockPCG
from femopt.solvers.pcg import PCGOptions, PCGSolver

PROBLEMS = Path(__file__).resolve().parent.parent / "problems"


def bracket(**changes) -> dict:
    data = yaml.safe_load((PROBLEMS / "bracket_3d.yaml").read_text())
    data["mesh"]["path"] = str(PROBLEMS / "meshes" / "bracket_3d.msh")
    data.update(changes)
    return data


def build(data: dict, **kwargs) -> Model:
    registry = get_registry()
    return Model(parse_problem(yaml.safe_dump(data), "problem.yaml", registry), registry,
                 **kwargs)


@pytest.fixture(scope="module")
def system():
    """The bracket's stiffness at a random design, with the bolts clamped and the lug
    nodes held in x only (node blocks with a constrained component)."""
    model = build(bracket(), device="cpu")
    lug = model.mesh.node_sets["lug"]
    fixed = np.union1d(model.fixed, lug * 3)
    free = np.setdiff1d(np.arange(model.n_dofs), fixed)
    asm = FixedPatternAssembler(model.cell_dofs, model.n_dofs, free)
    r = np.random.default_rng(5)
    scale = 1e-3 + r.uniform(size=model.mesh.n_cells) ** 3
    return model, asm, free, scale


def test_gather_order_sums_like_the_bincount_bit_for_bit(system):
    model, asm, _, scale = system
    r = np.random.default_rng(1)
    ke = model.ke * r.uniform(0.5, 2.0, size=model.ke.shape)  # not symmetric on purpose
    ptr, cell, values = gather_map(asm, ke)
    assert ptr[-1] == asm.keep.size == cell.size
    assert np.all(np.diff(ptr) >= 1)  # every CSR value has at least one entry
    np.testing.assert_array_equal(gather_numpy(scale, ptr, cell, values),
                                  asm.assemble_data(scale, ke))
    # the NumPy path of GatherAssembler is the assembler's own bincount
    np.testing.assert_array_equal(GatherAssembler(asm, ke).assemble_data(scale),
                                  asm.assemble_data(scale, ke))


def test_node_block_pcg_solves_in_fewer_iterations_than_jacobi(system):
    model, asm, free, scale = system
    k = asm.assemble(scale, model.ke)
    f = asm.restrict(model.loads[0])
    expected = spla.spsolve(k.tocsc(), f)
    block = NodeBlockPCG(asm.indptr, asm.indices, free, 3, rtol=1e-10)
    block.update(k.data)
    assert free.size < 3 * block.n_blocks  # the lug's x components are constrained
    # the preconditioner solves each node's block of free components exactly
    node = free // 3
    r = np.random.default_rng(2).standard_normal(free.size)
    z = block.precondition(r, np.empty_like(r))
    kd = k.toarray()
    partial = 0
    for n in np.unique(node):
        rows = np.flatnonzero(node == n)
        partial += rows.size < 3
        np.testing.assert_allclose(z[rows], np.linalg.solve(kd[np.ix_(rows, rows)], r[rows]),
                                   rtol=1e-9)
    assert partial > 0
    u = block.solve(f)
    assert np.abs(u - expected).max() <= 1e-7 * np.abs(expected).max()
    jacobi = PCGSolver(PCGOptions(rtol=1e-10, max_iter=20000), k)
    jacobi.solve(f)
    assert block.last.iterations < jacobi.last.iterations
    # warm start from the solution: converged at once
    block.solve(f, x0=u)
    assert block.last.iterations <= 1


def test_default_solver_becomes_block_jacobi_pcg_on_the_gpu_path():
    model = build(bracket(), array_module=np)
    assert (model.device, model.solver.name) == ("gpu", "pcg")
    assert model.device_notes == ["solver: block-Jacobi PCG on the GPU instead of direct, "
                                  "the CPU's default"]
    assert type(model.path).__name__ == "MeshDevicePath"
    assert model.assembler is None


def test_the_cpus_default_amg_of_a_3d_mesh_stays_on_the_gpu_path(monkeypatch):
    """Where the CPU's default for a 3D mesh is AMG without CHOLMOD (from AMG_MIN_DOFS free
    dofs, lowered here so that the shipped bracket takes it), the GPU path takes it too,
    CHOLMOD installed or not, and solves with its own AMG, not block-Jacobi PCG (0.12
    against 1.46 s per design iteration at 1M tets on an H100); the first OC iterations
    equal the CPU's AMG run's."""
    from femopt.solvers import choice

    monkeypatch.setattr(choice, "AMG_MIN_DOFS", 100)
    monkeypatch.setattr(choice, "AMG_MIN_DOFS_CHOLMOD", 100)
    cpu = build(bracket(optimizer={"type": "oc", "max_iter": 3}))
    assert cpu.solver.name == "amg"
    # where CHOLMOD is installed the CPU takes it up to AMG_MIN_DOFS_CHOLMOD; the GPU,
    # which has no direct solver, still takes AMG from AMG_MIN_DOFS
    monkeypatch.setattr(choice, "_has_cholmod", lambda: True)
    monkeypatch.setattr(choice, "AMG_MIN_DOFS_CHOLMOD", 10**9)
    assert build(bracket()).solver.name == "direct"
    model = build(bracket(optimizer={"type": "oc", "max_iter": 3}), array_module=np)
    assert (model.device, model.solver.name) == ("gpu", "amg")
    assert model.device_notes == [f"solver: {model.solver_choice.reason} on the GPU, the "
                                  "default"]
    assert model.device_notes[0].startswith("solver: AMG-PCG for a 3D mesh of ")
    assert type(model.path.solver).__name__ == "DeviceAMGPCG"
    for m in (cpu, model):
        m.optimizer.run(m, m.x0.copy(), 3)
    np.testing.assert_allclose([h.objective for h in model.history],
                               [h.objective for h in cpu.history], rtol=1e-6)


def test_a_robust_run_with_amg_on_the_mesh_twin_follows_the_cpu():
    """The robust formulation (eroded, intermediate and dilated projections) with AMG on
    the mesh path's NumPy twin: each realization's compliance in each of three MMA
    iterations equals the CPU's AMG run's (observed 9e-11 relative; both solve to rtol
    1e-8)."""
    from femopt.evaluation.robust import REALIZATIONS

    data = bracket(optimizer={"type": "mma", "max_iter": 3}, solver={"type": "amg"})
    data["filters"] = [data["filters"][0], {"type": "heaviside", "beta": 2.0}]
    data["design"] = {**data["design"], "robust": {"eta_eroded": 0.7, "eta_dilated": 0.3}}
    histories = []
    for where in ({}, {"array_module": np}):
        model = build(data, **where)
        model.optimizer.run(model, model.x0.copy(), 3)
        histories.append(np.array([[r.extra[f"objective_{k}"] for k in REALIZATIONS]
                                   for r in model.history]))
    assert type(model.path).__name__ == "MeshDevicePath" and model.solver.name == "amg"
    cpu, twin = histories
    assert cpu.shape == (3, 3) and np.all(cpu[:, 0] > cpu[:, 1]) and np.all(cpu[:, 1] > cpu[:, 2])
    np.testing.assert_allclose(twin, cpu, rtol=1e-7)


@pytest.mark.parametrize("change, message", [
    ({"solver": {"type": "direct"}}, "the GPU path on a mesh from a file solves with pcg "
                                     "(block-Jacobi PCG on the GPU) or amg (smoothed-"
                                     "aggregation AMG-PCG), not 'direct'"),
    ({"optimizer": {"type": "nlopt"}}, "the optimizer 'nlopt' works on host arrays; the GPU paths run "
         "optimizers that keep the design on the device"),
])
def test_gpu_requested_for_what_the_path_cannot_do_is_located(monkeypatch, change, message):
    monkeypatch.setattr(femopt.backend, "gpu_status", lambda: (True, "1 CUDA device(s)"))
    monkeypatch.setattr(femopt.evaluation.device_choice, "gpu_memory", lambda: (2**26, 80 * 2**30))
    with pytest.raises(femopt.errors.ProblemError) as exc:
        build(bracket(device="gpu", **change))
    (issue,) = exc.value.issues
    assert (issue.path, issue.message) == ("device", message)


def test_too_large_for_the_gpu_is_refused(monkeypatch):
    monkeypatch.setattr(femopt.backend, "gpu_status", lambda: (True, "1 CUDA device(s)"))
    monkeypatch.setattr(femopt.evaluation.device_choice, "gpu_memory", lambda: (2**20, 80 * 2**30))
    with pytest.raises(femopt.errors.InputError, match=r"the problem needs about 0\.\d\d GiB "
                       r"of GPU memory \(3650 cells, estimated\) but the GPU has 0\.00 GiB"):
        build(bracket(device="gpu"))


def test_femopt_run_on_the_gpu_path_writes_results(monkeypatch, tmp_path, capsys):
    """The command line end to end, with NumPy standing in for CuPy."""
    import json
    import sys

    from femopt.cli import main

    monkeypatch.setattr(femopt.backend, "gpu_status", lambda: (True, "1 CUDA device(s)"))
    monkeypatch.setattr(femopt.evaluation.device_choice, "gpu_memory", lambda: (2**33, 80 * 2**30))
    monkeypatch.setitem(sys.modules, "cupy", np)
    out_dir = tmp_path / "res"
    code = main(["run", str(PROBLEMS / "bracket_3d.yaml"), "--out", str(out_dir),
                 "--device", "gpu", "--max-iter", "3"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "solver: block-Jacobi PCG on the GPU instead of direct, the CPU's default" in out
    summary = json.loads((out_dir / "summary.json").read_text())
    assert (summary["device"], summary["iterations"]) == ("gpu", 3)
    assert summary["gpu_pool_bytes"] is None  # written on this path; NumPy has no pool
    assert np.load(out_dir / "density.npy").shape == (3650,)
    assert (out_dir / "design.vtu").is_file()


def optimize(model: Model, max_iter: int):
    result = model.optimizer.run(model, model.x0.copy(), max_iter)
    values, rho, state = model.final_analysis(result.x)
    return result, [h.objective for h in model.history], values, rho, state


def compare(max_iter: int, array_module, solver: str = "pcg", **changes):
    cpu = build(bracket(**changes), device="cpu")
    options = {"type": solver, "rtol": 1e-10}
    if solver == "amg":  # the small bracket fits the default dense coarsest level whole
        options["max_coarse"] = 500
    dev = build(bracket(solver=options, **changes), array_module=array_module)
    assert dev.device == "gpu"
    r_cpu, h_cpu, v_cpu, rho_cpu, s_cpu = optimize(cpu, max_iter)
    r_dev, h_dev, v_dev, rho_dev, s_dev = optimize(dev, max_iter)
    assert r_dev.iterations == r_cpu.iterations == max_iter
    assert len(h_dev) == len(h_cpu) == max_iter
    np.testing.assert_allclose(h_dev, h_cpu, rtol=1e-6)
    assert abs(v_dev[0] - v_cpu[0]) <= 1e-6 * abs(v_cpu[0])
    assert abs(v_dev[1] - v_cpu[1]) <= 1e-6
    assert np.abs(rho_dev - rho_cpu).max() <= 1e-6
    assert np.abs(s_dev.u - s_cpu.u).max() <= 1e-6 * np.abs(s_cpu.u).max()
    return h_cpu, h_dev, dev


def test_unstructured_device_path_matches_the_cpu_path():
    h_cpu, h_dev, dev = compare(6, np)
    # OC on the bracket: compliance 2154 at the start, falling after the first steps
    assert h_cpu[0] == pytest.approx(2153.83, rel=1e-5)
    assert h_cpu[-1] < 0.5 * h_cpu[0]
    assert max(abs(a - b) / abs(a) for a, b in zip(h_cpu, h_dev)) < 1e-8
    assert 0 < dev.path.solver.last.iterations < 2000


@pytest.mark.parametrize("changes", [
    dict(optimizer={"type": "mma", "max_iter": 5}),
    dict(filters=[{"type": "density", "radius": 6.0},
                  {"type": "heaviside", "beta": 2.0, "every": 2}]),
    dict(filters=[{"type": "sensitivity", "radius": 6.0}]),
], ids=["mma", "heaviside", "sensitivity_filter"])
def test_unstructured_device_path_with_other_pieces_matches_the_cpu_path(changes):
    compare(5, np, **changes)


def test_unstructured_device_path_with_amg_matches_the_cpu_path():
    """Smoothed-aggregation AMG-PCG on the path (NumPy twin): the CPU's designs, in few
    CG iterations per solve, its structure built once."""
    h_cpu, h_dev, dev = compare(6, np, solver="amg")
    solver = dev.path.solver
    assert type(solver).__name__ == "DeviceAMGPCG" and solver.stats()["amg_levels"] >= 2
    structure = [lev.t for lev in solver.hierarchy.levels[:-1]]
    rho = dev.path.physical(dev.x0)[0]
    dev.path.solved = False  # a cold solve at the first design
    dev.path.analyse(rho)
    assert 5 <= dev.path.cg_iterations["forward"][0] <= 30
    assert [lev.t for lev in solver.hierarchy.levels[:-1]] == structure


def test_unstructured_device_path_runs_heat_conduction_like_the_cpu_path():
    # one dof per node: the node blocks are 1 x 1 (Jacobi)
    compare(5, np, physics={"type": "heat_conduction", "conductivity": 1.0},
            loads=[{"body": True, "heat": 0.01}], objective={"type": "thermal_compliance"},
            design={"interpolation": {"type": "simp", "penalty": 3.0, "min": 1e-3}})


# a displacement of the lug (not self-adjoint: one adjoint solve per evaluation), as
# objective and as constraint
DISPLACEMENT = {
    "objective": dict(objective={"type": "displacement", "region": {"group": "lug"},
                                 "direction": [0.0, 0.0, -1.0]},
                      optimizer={"type": "mma", "max_iter": 5}),
    "constraint": dict(constraints=[{"type": "volume", "max": 0.25},
                                    {"type": "displacement", "region": {"group": "lug"},
                                     "direction": [0.0, 0.0, -1.0], "max": 0.05}],
                       optimizer={"type": "mma", "max_iter": 5}),
}


def displacement_gradients(case: str, xp) -> None:
    """Values and gradients of the path (rtol 1e-12) against the CPU path's direct solve,
    and Taylor rates of the path's own gradients."""
    from femopt.adjoint.taylor import check_model_gradients
    from femopt.backend import to_host

    cpu = build(bracket(**DISPLACEMENT[case]), device="cpu")
    dev = build(bracket(solver={"type": "pcg", "rtol": 1e-12}, **DISPLACEMENT[case]),
                array_module=xp)
    r = np.random.default_rng(3)
    x = r.uniform(0.3, 0.7, cpu.n)
    x[cpu.passive_idx] = cpu.passive_val
    d = r.standard_normal(cpu.n)
    d[cpu.passive_idx] = 0.0
    v_cpu, g_cpu = cpu.values_and_gradients(x)
    v_dev, g_dev = dev.values_and_gradients(xp.asarray(x))
    assert len(v_dev) == len(v_cpu) == 1 + len(cpu.bounds)
    for a, b_, ga, gb in zip(v_cpu, v_dev, g_cpu, g_dev):
        assert abs(b_ - a) <= 1e-8 * abs(a)
        assert np.abs(to_host(gb) - ga).max() <= 1e-6 * np.abs(ga).max()
    assert dev.path.cg_iterations["adjoint"] and dev.path.cg_iterations["adjoint"][0] > 0
    for check in check_model_gradients(dev, xp.asarray(x), xp.asarray(d)):
        if check.name.startswith("constraint volume"):
            assert check.result.exact
            continue
        rates = check.result.rates
        assert 1.9 <= min(rates) and max(rates) <= 2.1, (check.name, rates)


@pytest.mark.parametrize("case", list(DISPLACEMENT))
def test_unstructured_device_path_displacement_gradients(case):
    displacement_gradients(case, np)


def test_check_gradients_on_the_unstructured_gpu_path(monkeypatch, capsys):
    """`femopt check-gradients --device gpu` on a mesh from a file (NumPy for CuPy): the
    split gradients and the tightened rtol reach the path's own PCG."""
    import sys

    from femopt.cli import main

    monkeypatch.setattr(femopt.backend, "gpu_status", lambda: (True, "1 CUDA device(s)"))
    monkeypatch.setattr(femopt.evaluation.device_choice, "gpu_memory", lambda: (2**33, 80 * 2**30))
    monkeypatch.setitem(sys.modules, "cupy", np)
    assert main(["check-gradients", str(PROBLEMS / "bracket_3d.yaml"), "--device", "gpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "note: pcg rtol 1e-10 for the Taylor test" in lines
    (obj,) = [ln for ln in lines if ln.startswith("objective compliance")]
    rates = [float(v) for v in obj.split("rates")[1].split()[:3]]
    assert all(1.9 <= r <= 2.1 for r in rates) and obj.endswith("ok")


# -- on the GPU ----------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_gather_kernel_equals_the_fixed_pattern_assembler(system, dtype):
    import cupy

    model, asm, _, _ = system
    r = np.random.default_rng()
    ke = model.ke * r.uniform(0.5, 2.0, size=model.ke.shape)
    scale = r.uniform(1e-9, 1.0, size=model.mesh.n_cells)
    ref = asm.assemble_data(scale, ke)
    dev = GatherAssembler(asm, ke, cupy, dtype)
    got = cupy.asnumpy(dev.assemble_data(cupy.asarray(scale, dtype=dtype)))
    atomic = cupy.asnumpy(dev.assemble_data_atomic(cupy.asarray(scale, dtype=dtype)))
    if dtype == np.float64:
        np.testing.assert_array_equal(got, ref)  # same products, same order of sums
        np.testing.assert_allclose(atomic, ref, rtol=1e-13, atol=1e-15 * np.abs(ref).max())
    else:
        tol = 1e-5 * np.abs(ref).max()
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=tol)
        np.testing.assert_allclose(atomic, ref, rtol=1e-5, atol=tol)


@pytest.mark.gpu
def test_unstructured_gpu_path_matches_the_cpu():
    import cupy

    h_cpu, h_dev, dev = compare(6, cupy)
    print(f"bracket_3d on the GPU: objectives CPU {h_cpu[-1]:.12g} GPU {h_dev[-1]:.12g}, "
          f"last CG iterations {dev.path.solver.last.iterations}")


@pytest.mark.gpu
def test_unstructured_gpu_path_with_amg_matches_the_cpu():
    import cupy

    h_cpu, h_dev, dev = compare(6, cupy, solver="amg")
    its = dev.path.solver.last.iterations
    print(f"bracket_3d on the GPU with amg: objectives CPU {h_cpu[-1]:.12g} GPU "
          f"{h_dev[-1]:.12g}, last CG iterations {its}")
    assert 0 < its <= 30


@pytest.mark.gpu
def test_femopt_run_on_the_gpu_with_a_mesh_file(tmp_path, capsys):
    import json

    from femopt.cli import main

    out_dir = tmp_path / "res"
    code = main(["run", str(PROBLEMS / "bracket_3d.yaml"), "--out", str(out_dir),
                 "--device", "gpu", "--max-iter", "8"])
    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads((out_dir / "summary.json").read_text())
    assert (summary["device"], summary["iterations"]) == ("gpu", 8)
    assert summary["gpu_pool_bytes"] > 0  # the pool's high-water mark
    assert np.load(out_dir / "density.npy").shape == (3650,)


@pytest.mark.gpu
@pytest.mark.parametrize("case", list(DISPLACEMENT))
def test_unstructured_gpu_path_displacement_gradients(case):
    import cupy

    displacement_gradients(case, cupy)
