"""The device choice (--device, device:) and the GPU path of the model.

The CPU tests fake what CuPy reports (``femopt.backend.gpu_status``, the free memory) and
run the device path with NumPy arrays; the GPU tests run it with CuPy and compare with the
CPU path: same iterations within 1, objectives within 1e-6 relative.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

import femopt.backend
import femopt.evaluation.model
from conftest import SMALL_BEAM
from femopt.backend import resolve_device
from femopt.cli import main
from femopt.errors import InputError
from femopt.plugins.manager import get_registry
from femopt.problem.load import parse_problem
from femopt.evaluation import grid_device
from femopt.evaluation.model import Model

PROBLEMS = Path(__file__).resolve().parent.parent / "problems"
NO_GPU = (False, "CuPy is not installed (pip install 'femopt[gpu]' for an NVIDIA GPU)")


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(femopt.backend, "gpu_status", lambda: NO_GPU)


@pytest.fixture
def fake_gpu(monkeypatch):
    """CuPy sees a device with 64 MiB free (nothing may touch it)."""
    monkeypatch.setattr(femopt.backend, "gpu_status", lambda: (True, "1 CUDA device(s)"))
    monkeypatch.setattr(femopt.evaluation.device_choice, "gpu_memory", lambda: (2**26, 80 * 2**30))


def build(data: dict, **kwargs) -> Model:
    registry = get_registry()
    return Model(parse_problem(yaml.safe_dump(data), "problem.yaml", registry), registry,
                 **kwargs)


def problem(name: str, **changes) -> dict:
    data = yaml.safe_load((PROBLEMS / f"{name}.yaml").read_text())
    data.update(changes)
    return data


# -- resolution and messages -----------------------------------------------------------


def test_resolve_device_names_what_was_found(no_gpu):
    with pytest.raises(InputError, match="device 'gpu' was requested but CuPy is not "
                                         "installed"):
        resolve_device("gpu")
    assert resolve_device("auto") == ("cpu", f"running on the CPU; no GPU: {NO_GPU[1]}")
    assert resolve_device("cpu") == ("cpu", None)


def test_gpu_requested_without_one_exits_2_and_writes_nothing(no_gpu, write_problem,
                                                              tmp_path, capsys):
    out_dir = tmp_path / "res"
    code, _, err = run_cli(["run", write_problem(SMALL_BEAM), "--out", out_dir,
                            "--device", "gpu"], capsys)
    assert code == 2
    assert err.strip() == (f"error: --device gpu: device 'gpu' was requested but "
                           f"{NO_GPU[1]}")
    assert not out_dir.exists()


def test_device_in_the_file_is_located(no_gpu, write_problem, tmp_path, capsys):
    path = write_problem(SMALL_BEAM + "device: gpu\n")
    code, _, err = run_cli(["run", path, "--out", tmp_path / "res"], capsys)
    assert code == 2
    line = len(SMALL_BEAM.splitlines()) + 1
    assert err.strip() == (f"{path}:{line}:9: device: device 'gpu' was requested but "
                           f"{NO_GPU[1]}")
    assert not (tmp_path / "res").exists()


def test_the_command_line_overrides_the_file(no_gpu, write_problem, tmp_path, capsys):
    path = write_problem(SMALL_BEAM + "device: gpu\n")
    code, out, _ = run_cli(["run", path, "--out", tmp_path / "res", "--device", "cpu",
                            "--max-iter", "2"], capsys)
    assert code == 0
    assert "device auto" not in out
    assert json.loads((tmp_path / "res" / "summary.json").read_text())["device"] == "cpu"


def test_a_bad_device_value_is_located(write_problem, capsys):
    path = write_problem(SMALL_BEAM + "device: tpu\n")
    code, _, err = run_cli(["validate", path], capsys)
    assert code == 2
    assert f"{path}:{len(SMALL_BEAM.splitlines()) + 1}:9: device: " in err


def test_auto_falls_back_to_the_cpu_and_says_so_once(no_gpu, write_problem, tmp_path,
                                                      capsys):
    code, out, err = run_cli(["run", write_problem(SMALL_BEAM), "--out", tmp_path / "res",
                              "--max-iter", "3"], capsys)
    assert code == 0
    lines = [ln for ln in (out + err).splitlines() if "GPU" in ln]
    assert lines == [f"femopt: device auto: running on the CPU; no GPU: {NO_GPU[1]}"]
    assert json.loads((tmp_path / "res" / "summary.json").read_text())["device"] == "cpu"


def test_auto_with_a_gpu_keeps_what_the_gpu_path_cannot_do_on_the_cpu(fake_gpu):
    model = build(problem("heat_sink_flow"))
    assert model.device == "cpu" and type(model.path).__name__ == "AssembledPath"
    assert model.device_notes == ["device auto: the physics 'convection_diffusion' cannot "
                                  "run on the GPU: its operator is not symmetric (the GPU "
                                  "paths solve with CG); running on the CPU"]


@pytest.mark.parametrize("change, message", [
    ({"solver": {"type": "direct"}}, "the GPU path needs the multigrid solver, not 'direct'"),
    ({"optimizer": {"type": "nlopt"}}, "the optimizer 'nlopt' works on host arrays; the GPU paths run "
         "optimizers that keep the design on the device"),
])
def test_gpu_requested_for_what_the_path_cannot_do_is_located(fake_gpu, change, message):
    data = problem("cantilever_3d", device="gpu", **change)
    with pytest.raises(femopt.errors.ProblemError) as exc:
        build(data)
    (issue,) = exc.value.issues
    assert (issue.path, issue.message) == ("device", message)


def test_too_large_for_the_gpu_is_refused_before_anything_is_written(fake_gpu, tmp_path,
                                                                     capsys, monkeypatch):
    # 128 x 64 x 32 hex8 cells at the mixed path's count (grid_memory: about 300 bytes a
    # cell held, and the update's: the coarsest level's dense matrix and its making, 2295
    # dofs, level 2's cell matrices in one chunk and its coarsening's temporaries, level
    # 3's), times the margin: more than the 64 MiB "free"; refused before the path
    # allocates anything
    def allocate(*args, **kwargs):
        raise AssertionError("the grid path was built")

    monkeypatch.setattr(grid_device.GridDevicePath, "__init__", allocate)
    data = problem("cantilever_3d")
    data["mesh"] = {"type": "structured", "shape": [128, 64, 32],
                    "size": [128.0, 64.0, 32.0]}
    data["loads"][0]["region"] = {"box": {"min": [128.0, 0.0, 0.0],
                                          "max": [128.0, 0.0, 32.0]}}
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump(data))
    code, _, err = run_cli(["run", path, "--out", tmp_path / "res", "--device", "gpu"],
                           capsys)
    assert code == 2
    assert err.startswith("error: the problem needs about 0.16 GiB of GPU memory (262144 "
                          "cells, estimated) but the GPU has 0.06 GiB free of 80.00 GiB")
    assert not (tmp_path / "res").exists()


def test_a_grid_that_stops_coarsening_early_counts_its_dense_coarsest_level():
    """120 x 60 x 30 coarsens once (15 cells in z is odd): the coarsest level has 90,768
    dofs, whose dense Cholesky factor alone is 66 GB; the estimate counts it."""
    from femopt.assembly.grid_layout import GridLayout
    from femopt.evaluation import grid_memory

    lay = GridLayout((120, 60, 30), 3)
    assert grid_memory.coarsest_dofs(lay) == 61 * 31 * 16 * 3 == 90768
    assert grid_device.estimate_bytes(lay) > grid_device.MEMORY_MARGIN * 8 * 90768**2


def test_the_default_solver_becomes_multigrid_on_the_gpu_path():
    model = build(problem("mbb_beam"), array_module=np)
    assert (model.device, model.solver.name) == ("gpu", "multigrid")
    assert model.device_notes == ["solver: multigrid on the GPU instead of direct, the "
                                  "CPU's default", grid_device.KRYLOV_NOTE["mixed"],
                                  "solver: rtol 1e-06, eig_iterations 10, the GPU grid "
                                  "path's defaults (set them in solver: to choose others)",
                                  grid_device.COARSE_NOTE["hybrid"]]
    assert (model.solver.krylov, model.solver._precision(np)) == ("mixed", np.float32)
    assert model.solver.coarse_operator == "hybrid"
    assert model.solver.options.rtol == grid_device.GRID_RTOL == 1e-6
    assert model.solver.options.eig_iterations == grid_device.GRID_EIG_ITERATIONS == 10
    # a multigrid section without them gets the path's; what it sets stands, and the CPU
    # path keeps the solver's own 1e-8 and 20
    data = problem("mbb_beam")
    data["solver"] = {"type": "multigrid"}
    options = build(data, array_module=np).solver.options
    assert (options.rtol, options.eig_iterations) == (1e-6, 10)
    options = build(data, device="cpu").solver.options
    assert (options.rtol, options.eig_iterations) == (1e-8, 20)
    data["solver"]["rtol"] = 1e-8
    model = build(data, array_module=np)
    assert (model.solver.options.rtol, model.solver.options.eig_iterations) == (1e-8, 10)
    assert ("solver: eig_iterations 10, the GPU grid path's defaults (set them in solver: "
            "to choose others)") in model.device_notes
    data["solver"]["eig_iterations"] = 20
    model = build(data, array_module=np)
    assert (model.solver.options.rtol, model.solver.options.eig_iterations) == (1e-8, 20)
    assert not any("defaults" in note for note in model.device_notes)
    # the CPU path keeps Galerkin's coarse levels; a problem's choice stands on the GPU
    data = problem("mbb_beam")
    data["solver"] = {"type": "multigrid"}
    assert build(data, device="cpu").solver.coarse_operator == "galerkin"
    # hybrid would override matrix_free_levels: a problem that sets it keeps Galerkin
    data["solver"]["matrix_free_levels"] = 2
    assert build(data, array_module=np).solver.coarse_operator == "galerkin"
    del data["solver"]["matrix_free_levels"]
    data["solver"]["rediscretized_levels"] = 2
    assert ("solver: coarse levels hybrid (levels 1 to 2 rediscretized, level 3 Galerkin "
            "by products, assembled below)"
            in build(data, array_module=np).device_notes)
    del data["solver"]["rediscretized_levels"]
    data["solver"]["coarse_operator"] = "galerkin"
    model = build(data, array_module=np)
    assert model.solver.coarse_operator == "galerkin"
    assert grid_device.COARSE_NOTE["galerkin"] in model.device_notes
    assert model.assembler is None


# -- the device path with NumPy arrays against the CPU path ------------------------------


def optimize(model: Model, max_iter: int):
    t0 = time.perf_counter()
    result = model.optimizer.run(model, model.x0.copy(), max_iter)
    values, _, state = model.final_analysis(result.x)
    return result, values, state, (time.perf_counter() - t0) / result.iterations


def compare(name: str, max_iter: int, array_module, **changes):
    cpu = build(problem(name, **changes), device="cpu")
    dev = build(problem(name, solver={"type": "multigrid", "rtol": 1e-10}, **changes),
                array_module=array_module)
    assert dev.device == "gpu"
    r_cpu, v_cpu, s_cpu, t_cpu = optimize(cpu, max_iter)
    r_dev, v_dev, s_dev, t_dev = optimize(dev, max_iter)
    assert abs(r_dev.iterations - r_cpu.iterations) <= 1
    assert r_dev.converged == r_cpu.converged
    assert abs(v_dev[0] - v_cpu[0]) <= 1e-6 * abs(v_cpu[0])
    assert abs(v_dev[1] - v_cpu[1]) <= 1e-6
    u_cpu = s_cpu.u
    assert np.abs(s_dev.u - u_cpu).max() <= 1e-4 * np.abs(u_cpu).max()
    return r_cpu.iterations, v_cpu[0], v_dev[0], t_cpu, t_dev


@pytest.mark.parametrize("name", ["mbb_beam", "mbb_beam_density"])
def test_device_path_matches_the_cpu_path(name):
    iterations, _, _, _, _ = compare(name, 300, np)
    assert iterations == {"mbb_beam": 94, "mbb_beam_density": 127}[name]


def test_device_path_with_mma_and_heaviside_matches_the_cpu_path():
    compare("mbb_beam_density", 12, np, optimizer={"type": "mma", "max_iter": 12},
            filters=[{"type": "density", "radius": 1.5},
                     {"type": "heaviside", "beta": 2.0, "every": 5}])


# -- on the GPU ------------------------------------------------------------------------------


def _cupy():
    import cupy

    return cupy


@pytest.mark.gpu
@pytest.mark.parametrize("name, max_iter", [("mbb_beam", 300), ("mbb_beam_density", 300),
                                            ("cantilever_3d", 40)])
def test_gpu_matches_the_cpu(name, max_iter):
    it, f_cpu, f_gpu, t_cpu, t_gpu = compare(name, max_iter, _cupy())
    print(f"{name}: {it} iterations, objective CPU {f_cpu:.12g} GPU {f_gpu:.12g} "
          f"(relative difference {abs(f_gpu - f_cpu) / abs(f_cpu):.2e}), seconds per "
          f"iteration CPU {t_cpu:.4f} GPU {t_gpu:.4f}")


def keeps_the_88_line_results(name: str, ft: int, array_module) -> None:
    """The MBB beam ``name`` on the grid path with its default solver (rtol
    ``GRID_RTOL``): the 88-line code's iteration count and final compliance (measured on
    the twin: 1.3e-5 from it at most; 5e-8 at rtol 1e-8), its history within 1e-3 (1.3e-4
    measured, the drift of solves to 1e-6 through 127 designs)."""
    from test_problems import top88

    ref = top88(60, 20, 0.5, 3.0, 1.5, ft)
    model = build(problem(name), array_module=array_module)
    assert model.solver.options.rtol == grid_device.GRID_RTOL
    result = model.optimizer.run(model, model.x0.copy(), 300)
    assert result.converged and result.iterations == ref["iterations"]
    assert model.history[-1].objective == pytest.approx(ref["compliance"][-1], rel=1e-4)
    ours = np.array([r.objective for r in model.history])
    assert np.allclose(ours, ref["compliance"][:len(ours)], rtol=1e-3, atol=0)


@pytest.mark.parametrize("name, ft", [("mbb_beam", 1), ("mbb_beam_density", 2)])
def test_the_grid_paths_default_tolerance_keeps_the_88_line_results(name, ft):
    keeps_the_88_line_results(name, ft, np)


@pytest.mark.gpu
@pytest.mark.parametrize("name, ft", [("mbb_beam", 1), ("mbb_beam_density", 2)])
def test_the_gpu_default_tolerance_keeps_the_88_line_results(name, ft):
    keeps_the_88_line_results(name, ft, _cupy())


@pytest.mark.gpu
def test_run_on_the_gpu_writes_results(tmp_path, capsys):
    out_dir = tmp_path / "res"
    code, out, err = run_cli(["run", PROBLEMS / "mbb_beam_density.yaml", "--out", out_dir,
                              "--device", "gpu", "--max-iter", "12"], capsys)
    assert code == 0, err
    assert "on the GPU" in out and "solver: multigrid on the GPU" in out
    summary = json.loads((out_dir / "summary.json").read_text())
    assert (summary["device"], summary["iterations"]) == ("gpu", 12)
    for f in ("history.csv", "design.vtu", "design.npy", "density.npy", "checkpoint.h5",
              "convergence.png", "design.png"):
        assert (out_dir / f).is_file(), f
    assert np.load(out_dir / "density.npy").shape == (1200,)
    code, out, err = run_cli(["resume", out_dir, "--device", "gpu", "--max-iter", "15"],
                             capsys)
    assert code == 0, err
    assert json.loads((out_dir / "summary.json").read_text())["iterations"] == 15
