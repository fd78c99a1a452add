"""The grid path's mixed-precision solve (float32 CG and V-cycle inside a float64 defect
correction) against its float64 solve, on the NumPy twin and on the GPU: the same
designs and compliances, the same gradients, the top3d reference, and the float64
fallback where float32 stagnates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from femopt.errors import ProblemError
from femopt.evaluation import grid_device
from femopt.plugins.manager import get_registry
from femopt.problem.load import parse_problem
from path_checks import assert_taylor_rates, build

ROOT = Path(__file__).resolve().parents[1]


def cantilever(shape=(16, 8, 8), krylov: str | None = None, rtol: float = 1e-8,
               optimizer: dict | None = None) -> dict:
    """The benchmark's 3D cantilever (benchmarks/gpu_cli_run.py) at ``shape``."""
    nx, ny, nz = shape
    solver = {"type": "multigrid", "rtol": rtol, "coarsest_size": 300}
    if krylov is not None:
        solver["krylov"] = krylov
    return {
        "mesh": {"type": "structured", "shape": list(shape),
                 "size": [float(nx), float(ny), float(nz)]},
        "physics": {"type": "linear_elasticity", "E": 1.0, "nu": 0.3},
        "supports": [{"region": {"face": "x_min"}}],
        "loads": [{"region": {"box": {"min": [float(nx), 0.0, 0.0],
                                      "max": [float(nx), 0.0, float(nz)]}},
                   "force": [0.0, -1.0, 0.0], "distribute": "total"}],
        "design": {"interpolation": {"type": "simp", "penalty": 3.0, "min": 1.0e-9}},
        "filters": [{"type": "density", "radius": 1.5}],
        "objective": {"type": "compliance"},
        "constraints": [{"type": "volume", "max": 0.3}],
        "optimizer": optimizer or {"type": "oc", "move": 0.2, "tol": 1.0e-9},
        "solver": solver,
    }


def optimize(data: dict, xp, iterations: int):
    model = build(data, array_module=xp)
    result = model.optimizer.run(model, model.x0.copy(), iterations)
    values, _, state = model.final_analysis(result.x)
    return model, result, values, state


def residual(model, state=None) -> float:
    """||f - K u|| / ||f|| of the final state (None: the path's last), with the solver's
    float64 operator."""
    path, xp = model.path, model.path.xp
    u = path.u[0] if state is None else xp.asarray(path.layout.from_dofs(state.u[0]))
    f = path.loads.dense()[0]
    r = f - model.solver.op64.apply(u)
    return float(xp.linalg.norm(r) / xp.linalg.norm(f))


def compare_precisions(xp, shape, iterations, optimizer=None, rtol=1e-8):
    runs = {k: optimize(cantilever(shape, k, rtol, optimizer), xp, iterations)
            for k in ("double", "mixed")}
    (m64, r64, v64, s64), (m32, r32, v32, s32) = runs["double"], runs["mixed"]
    assert (m64.solver.krylov, m32.solver.krylov) == ("double", "mixed")
    assert m32.solver.precision_fallbacks == 0
    assert r64.iterations == r32.iterations == iterations
    assert abs(v32[0] - v64[0]) <= 1e-6 * abs(v64[0]), (v32[0], v64[0])
    assert abs(v32[1] - v64[1]) <= 1e-6
    # the mixed state meets the float64 tolerance, measured in float64
    assert residual(m32, s32) <= rtol
    return v64[0], v32[0]


# -- on the NumPy twin ---------------------------------------------------------------------


def test_auto_is_mixed_on_the_grid_path_and_the_log_says_so():
    model = build(cantilever(), array_module=np)
    assert model.solver.krylov == "mixed"
    assert grid_device.KRYLOV_NOTE["mixed"] in model.device_notes
    model = build(cantilever(krylov="double"), array_module=np)
    assert model.solver.krylov == "double"
    assert grid_device.KRYLOV_NOTE["double"] in model.device_notes
    # the CPU path keeps the float64 CG
    assert build(cantilever(), device="cpu").solver.krylov == "double"


def test_mixed_compliance_after_30_oc_iterations_equals_the_double_one():
    compare_precisions(np, (16, 8, 8), 30)


def test_mixed_with_mma_equals_the_double_one():
    compare_precisions(np, (12, 6, 6), 10, optimizer={"type": "mma", "tol": 1e-9})


def test_mixed_gradient_passes_the_taylor_test():
    model = build(cantilever((8, 4, 4), krylov="mixed", rtol=1e-12), array_module=np)
    rng = np.random.default_rng(11)
    x = rng.uniform(0.3, 0.9, model.n)
    d = rng.uniform(-1.0, 1.0, model.n)
    assert_taylor_rates(model, x, d)


def reproduces_top3d(rtol: float | None, last: int, array_module) -> None:
    """problems/cantilever_3d.yaml (top3d(60,20,4,0.3,3,1.5)) on the grid path with its
    default (mixed) solve: MATLAB's compliance at iteration 13 to 1e-6, at 62 within 1.5%
    (tests/test_problems.py has the CPU path's); with rtol 1e-10, at 39 to 1e-6 as well.
    The OC history is chaotic past iteration 30: solves to rtol 1e-8 drift from solves to
    1e-11 by 1e-7 at 31, 2e-6 at 34, 6e-5 at 40 and 2e-3 at 43 (measured), so iteration
    39 at 1e-6 asks for the tighter solves. The path's defaults (rtol 1e-6, 10 Lanczos
    steps) are 6.5e-7 from MATLAB at 13 (rtol 1e-8: 1.9e-8; 1e-5: 1.6e-5, too far)."""
    from test_problems import TOP3D_MATLAB

    data = yaml.safe_load((ROOT / "problems" / "cantilever_3d.yaml").read_text())
    data.pop("device", None)
    if rtol is not None:
        data["solver"] = {"type": "multigrid", "rtol": rtol}
    model = build(data, array_module=array_module)
    assert model.solver.krylov == "mixed"
    assert model.solver.options.rtol == (grid_device.GRID_RTOL if rtol is None else rtol)
    model.optimizer.run(model, model.x0.copy(), last)
    c = {r.iteration: r.objective for r in model.history}
    assert c[13] == pytest.approx(TOP3D_MATLAB[13], rel=1e-6)
    assert c[last] == pytest.approx(TOP3D_MATLAB[last], rel=1e-6 if last == 39 else 0.015)
    assert model.solver.precision_fallbacks == 0


@pytest.mark.parametrize("rtol, last", [(None, 62), (1e-10, 39)])
def test_top3d_reference_on_the_grid_twin_in_mixed_precision(rtol, last):
    reproduces_top3d(rtol, last, np)


@pytest.mark.gpu
def test_top3d_reference_on_the_gpu_with_the_defaults():
    reproduces_top3d(None, 62, _cupy())


def test_a_stagnating_float32_solve_is_redone_in_float64():
    """rtol 1e-14 is below what float32 corrections reach here (about 5e-14, where the
    float64 residual is rounding): the solve says so, is redone in float64, and the
    state meets the tolerance (CG's recurrence; the residual recomputed from the state
    is at rounding level, 2e-14)."""
    model = build(cantilever((8, 4, 4), krylov="mixed", rtol=1e-14), array_module=np)
    x = np.full(model.n, 0.3)
    values, _ = model.values_and_gradients(model.to_device(x))
    solver = model.solver
    assert solver.precision_fallbacks == 1
    assert len(solver.notes) == 1 and "stagnated" in solver.notes[0]
    assert "solved again in float64" in solver.notes[0]
    assert solver.last.converged and solver.last.residuals[-1] <= 1e-14
    assert residual(model) <= 5e-14
    ref = build(cantilever((8, 4, 4), krylov="double", rtol=1e-14), array_module=np)
    assert values[0] == pytest.approx(ref.values_and_gradients(x)[0][0], rel=1e-12)


def test_a_bad_krylov_value_is_located():
    """validate's message names the file, line and column of the value."""
    data = cantilever()
    data["solver"]["krylov"] = "single"
    with pytest.raises(ProblemError) as err:
        parse_problem(yaml.safe_dump(data), "p.yaml", get_registry())
    text = str(err.value)
    assert "solver.krylov: Input should be 'auto', 'mixed' or 'double'" in text
    line = yaml.safe_dump(data).splitlines().index("  krylov: single") + 1
    assert f"p.yaml:{line}:11:" in text


# -- on the GPU ------------------------------------------------------------------------------


def _cupy():
    import cupy

    return cupy


@pytest.mark.gpu
def test_gpu_mixed_compliance_after_30_oc_iterations_equals_the_double_one():
    f64, f32 = compare_precisions(_cupy(), (48, 24, 24), 30)
    print(f"compliance double {f64:.12g} mixed {f32:.12g} "
          f"(relative {abs(f32 - f64) / abs(f64):.2e})")


@pytest.mark.gpu
def test_gpu_mixed_with_mma_equals_the_double_one():
    compare_precisions(_cupy(), (24, 12, 12), 10, optimizer={"type": "mma", "tol": 1e-9})


@pytest.mark.gpu
def test_gpu_mixed_gradient_passes_the_taylor_test():
    cp = _cupy()
    model = build(cantilever((16, 8, 8), krylov="mixed", rtol=1e-12), array_module=cp)
    rng = np.random.default_rng(11)
    assert_taylor_rates(model, rng.uniform(0.3, 0.9, model.n),
                        rng.uniform(-1.0, 1.0, model.n))


@pytest.mark.gpu
def test_gpu_a_stagnating_float32_solve_is_redone_in_float64():
    cp = _cupy()
    model = build(cantilever((16, 8, 8), krylov="mixed", rtol=1e-14), array_module=cp)
    x = np.full(model.n, 0.3)
    model.values_and_gradients(model.to_device(x))
    assert model.solver.precision_fallbacks >= 1
    assert model.solver.last.converged and model.solver.last.residuals[-1] <= 1e-14
    assert residual(model) <= 5e-14


@pytest.mark.gpu
def test_gpu_mixed_takes_less_memory_than_double():
    """The memory pools' high-water mark of one design iteration at 128x64x64, against
    the estimate of each precision, mixed below double."""
    import gc

    from femopt.backend import gpu_allocator, pool_bytes, pool_total, reset_pool

    cp = _cupy()
    peaks = {}
    gpu_allocator()
    for k in ("double", "mixed"):
        gc.collect()
        reset_pool(cp)
        base = pool_total(cp)  # what earlier tests still hold
        model = build(cantilever((128, 64, 64), krylov=k, rtol=1e-6), array_module=cp)
        x = model.to_device(np.full(model.n, 0.3))
        model.values_and_gradients(x)
        peaks[k] = pool_bytes(cp) - base
        est = grid_device.estimate_bytes(model.path.layout, 1, model, krylov=k)
        print(f"{k}: pool {peaks[k] / model.mesh.n_cells:.0f} B/cell, estimate "
              f"{est / model.mesh.n_cells:.0f} B/cell")
        assert peaks[k] <= est
        del model, x
    assert peaks["mixed"] < peaks["double"]


# -- the memory estimate ---------------------------------------------------------------------


def test_the_estimate_of_mixed_is_below_double_by_the_krylov_vectors():
    """At 512x256x256: mixed holds what double holds less the fine V-cycle's b and x (8
    bytes per dof: the CG's own vectors when mixed), its CG vectors are half double's
    (float32), and its estimate, held plus the largest phase times the margin, is below
    85% of double's; the mixed estimate covers the pool's high-water mark measured at this
    size without the coarse levels' column indices, within 10%."""
    from femopt.assembly.grid_layout import GridLayout
    from femopt.evaluation import grid_memory

    lay = GridLayout((512, 256, 256), 3)
    n_c = grid_memory.coarsest_dofs(lay)
    phases = {}
    for k in ("double", "mixed"):
        arrays = grid_memory.iteration_arrays(lay.n_cells, lay.n_dofs, 3, 3, 1, k,
                                              n_coarse=n_c)
        phases[k] = {p: sum(a.bytes for a in arrays if a.phase == p)
                     for p in grid_memory.PHASES}
        names = [a.name for a in arrays]
        assert len(names) == len(set(names))  # named once each
        peak = phases[k]["held"] + max(phases[k][p] for p in grid_memory.PHASES[1:])
        assert grid_device.estimate_bytes(lay, krylov=k) > peak
    assert phases["double"]["held"] - phases["mixed"]["held"] == 8 * lay.n_dofs
    # double's CG: x, r, q, z, p and its dense right-hand side (the loads are kept by
    # their nonzeros) in float64; mixed's float32 CG: r, p, q (its steps go into the state)
    assert phases["double"]["solve"] == 4 * phases["mixed"]["solve"] == 48 * lay.n_dofs
    double = grid_device.estimate_bytes(lay, krylov="double")
    mixed = grid_device.estimate_bytes(lay, krylov="mixed")
    assert mixed / double < 0.85
    # the pool's high-water mark with mixed Krylov on an H100 through femopt run (the
    # user's defaults, docs/benchmarks.md): 248 with the int32 column indices of levels 2
    # and below held (81 a row, 17.5 B/cell), 223 without them (3e6340b); since then the
    # per-cell 1 / Hs became a table, the float32 CG keeps three vectors, not five, the
    # smoothers' 1 / diagonal is bfloat16 and the fine operators read the mask itself:
    # 178 measured at b772c6b (H100, 2026-12-06); then hybrid's level 2 by products (its
    # CSR values, 16 B/cell, not held) and the fine level's fused smoothing steps (no
    # residual vector, 12): 150 measured at 4c0697e; then OC's w not held (its gradient
    # dg, 8) and femopt's pools, which keep no block split beside a live one: 125, the
    # live peak; the estimate covers it within 10%
    indices = 4 * 81 * (lay.n_dofs // 64) * 8 / 7 / lay.n_cells
    assert 17.5 < indices < 17.6
    assert 125 <= mixed / lay.n_cells <= 1.10 * 125


def test_the_fine_v_cycle_vectors_are_the_cgs_own_when_mixed():
    """What the count assumes of the solver: with the float32 V-cycle of the GPU, the
    fine level's b and x exist only for the float64 CG, and the fine level, smoothed by
    its operator's fused steps, holds no residual vector (its d alone)."""
    for krylov, allocated in (("mixed", False), ("double", True)):
        data = cantilever((8, 4, 4), krylov=krylov)
        data["solver"]["precision"] = "float32"
        model = build(data, array_module=np)
        model.values_and_gradients(model.to_device(np.full(model.n, 0.3)))
        top = model.solver.levels[0]
        assert (top.b is not None) == allocated
        assert top.r is None and top.d.dtype == np.float32
        assert model.path.u.dtype == np.float64


def test_the_first_mixed_solve_starts_in_place_from_the_zero_states():
    """With mixed Krylov the grid path's first forward solve takes its own zero states as
    the start and updates them in place (no second state); with double Krylov, whose CG
    copies a start, the first solve has none. Later solves start from the last states
    either way."""
    for krylov, in_place in (("mixed", True), ("double", False)):
        data = cantilever((8, 4, 4), krylov=krylov)
        data["solver"]["precision"] = "float32"
        model = build(data, array_module=np)
        starts = []
        solve = model.solver.solve_grid

        def recording(b, x0=None, rtol=None, in_place=False, _solve=solve):
            starts.append(None if x0 is None else np.shares_memory(x0, model.path.u))
            out = _solve(b, x0=x0, rtol=rtol, in_place=in_place)
            if x0 is not None and in_place and krylov == "mixed":
                assert out is x0  # the state row itself, updated
            return out

        model.solver.solve_grid = recording
        x = model.to_device(np.full(model.n, 0.3))
        model.values_and_gradients(x)
        model.values_and_gradients(x)
        assert starts == [True if in_place else None, True]
        assert model.path.cg_iterations["forward"][0] <= 2  # warm: the same design


def test_dm_drho_is_made_after_the_solves():
    """The interpolation's derivative is not alive beside the solves' vectors: the path
    makes it after the forward (and any adjoint) solves, and the gradient is the same as
    ever (the Taylor test of the mixed path, above, checks its value)."""
    model = build(cantilever((8, 4, 4)), array_module=np)
    events = []
    solve, derivative = model.solver.solve_grid, model.interp.derivative
    model.solver.solve_grid = lambda *a, **k: (events.append("solve"), solve(*a, **k))[1]
    model.interp.derivative = lambda rho: (events.append("dm/drho"), derivative(rho))[1]
    model.values_and_gradients(model.to_device(np.full(model.n, 0.3)))
    assert events == ["solve", "dm/drho"]


def test_a_run_logs_the_fallback_and_its_summary_says_the_precision(tmp_path):
    """A run of the twin at rtol 1e-14: each iteration whose float32 solve stagnated
    says so in the log, and summary.json names the precision and the tolerance and
    counts the solves redone (no GPU pool on the twin)."""
    import io
    import json

    from femopt.runner import run_model

    data = cantilever((8, 4, 4), krylov="mixed", rtol=1e-14,
                      optimizer={"type": "oc", "max_iter": 2})
    data["output"] = {"picture": False, "series_every": 0, "checkpoint_every": 0}
    model = build(data, array_module=np)
    log = io.StringIO()
    result = run_model(model, yaml.safe_dump(data).encode(), tmp_path / "res", stream=log)
    assert result.exit_code == 0
    lines = [line for line in log.getvalue().splitlines() if "stagnated" in line]
    assert lines and all(line.startswith("femopt: iteration ") for line in lines)
    summary = json.loads((tmp_path / "res" / "summary.json").read_text())
    assert (summary["solver_precision"], summary["solver_rtol"]) == ("mixed", 1e-14)
    assert summary["precision_fallbacks"] == model.solver.precision_fallbacks >= len(lines)
    assert summary["gpu_pool_bytes"] is None


def test_a_float64_v_cycle_makes_auto_double_and_refuses_mixed():
    """``precision: float64`` (a float64 V-cycle): ``krylov: auto`` resolves to double on
    the grid path (what runs is what is reported and estimated); ``krylov: mixed`` with
    it is refused at its place in the problem file."""
    data = cantilever((8, 4, 4))
    data["solver"]["precision"] = "float64"
    model = build(data, array_module=np)
    assert model.path.krylov == "double"
    lay = model.path.layout
    assert grid_device.estimate_bytes(lay, 1, model) == grid_device.estimate_bytes(
        lay, 1, model, krylov="double") > grid_device.estimate_bytes(lay, 1, model,
                                                                     krylov="mixed")
    data["solver"]["krylov"] = "mixed"
    with pytest.raises(ProblemError) as exc:
        build(data, array_module=np)
    (issue,) = exc.value.issues
    assert issue.path.startswith("solver")
    assert "krylov: mixed runs a float32 V-cycle" in issue.message


@pytest.mark.gpu
def test_gpu_async_allocator_gives_the_same_run_and_reports_its_high_water_mark(tmp_path):
    """``FEMOPT_GPU_ALLOCATOR=async femopt run --device gpu`` (CUDA's stream-ordered
    allocator) against the default pool, each in its own process: the same objectives to
    rounding (the coarse levels' CSR is summed with atomics, in an order that varies from
    run to run: 3.014729976550785 against 3.0147299765540128 at 256x128x128 on an H100),
    and summary.json's ``gpu_pool_bytes`` the CUDA pool's reserved high-water mark:
    positive (CuPy's pool, which the async run leaves empty, would read 0) and of the
    default pool's order (either may be the larger: 496 against 487 B/cell at
    256x128x128 on an H100, docs/benchmarks.md). The CUDA pool reserves whole blocks of
    32 MiB (at 32x16x16 on an H100: 33,554,432 bytes against the default pool's 4.1 MB),
    so its bound is twice the default pool's rounded up to a block."""
    import json
    import os
    import subprocess
    import sys

    _cupy()
    data = cantilever((32, 16, 16), optimizer={"type": "oc", "max_iter": 3})
    data["output"] = {"picture": False, "series_every": 0, "checkpoint_every": 0}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    runs = {}
    for name in ("pool", "async"):
        out = tmp_path / name
        env = {**os.environ, "FEMOPT_GPU_ALLOCATOR": name}
        proc = subprocess.run([sys.executable, "-m", "femopt", "run", str(path), "--device",
                               "gpu", "--quiet", "--out", str(out)], env=env,
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        runs[name] = json.loads((out / "summary.json").read_text())
    assert runs["async"]["objective"] == pytest.approx(runs["pool"]["objective"], rel=1e-9)
    pool, block = runs["pool"]["gpu_pool_bytes"], 32 << 20
    assert 0.5 * pool < runs["async"]["gpu_pool_bytes"] <= -(-2 * pool // block) * block


@pytest.mark.parametrize("sparse", [False, True])
def test_a_warm_start_is_scaled_to_the_least_energy_error(sparse):
    """scale_start: alpha x minimizes ||alpha x - K^-1 b||_K (the energy error is larger
    at alpha(1 +- 1e-3)), the defect it leaves is b - K alpha x; a start pointing away
    is turned (-u becomes u), a zero start stays zero with r = b. With the load by its
    nonzeros as well."""
    from femopt.evaluation.grid_loads import GridLoads
    from femopt.solvers.mixed_precision import scale_start

    rng = np.random.default_rng(3)
    n = 40
    m = rng.standard_normal((n, n))
    k = m @ m.T + n * np.eye(n)
    idx = np.array([2, 11, 30])
    b_dense = np.zeros(n)
    b_dense[idx] = rng.uniform(1.0, 2.0, 3)
    b = GridLoads(idx, b_dense[idx][None, :], n, np)[0] if sparse else b_dense
    u = np.linalg.solve(k, b_dense)

    def energy_error(v):
        e = v - u
        return e @ k @ e

    x = 3.7 * u + 0.05 * np.abs(u).max() * rng.standard_normal(n)  # far off in size
    x0 = x.copy()
    r = b_dense - k @ x
    alpha = scale_start(x, r, b)
    assert 0.2 < alpha < 0.3
    assert np.allclose(x, alpha * x0, rtol=1e-14, atol=0)
    assert np.allclose(r, b_dense - k @ x, rtol=0, atol=1e-12 * np.abs(b_dense).max())
    assert energy_error(x) < min(energy_error(alpha * (1 + s) * x0) for s in (-1e-3, 1e-3))
    x = -u.copy()
    r = b_dense - k @ x
    assert scale_start(x, r, b) == pytest.approx(-1.0, rel=1e-12)
    assert np.allclose(x, u, rtol=1e-12, atol=0)
    assert np.abs(r).max() <= 1e-12 * np.abs(b_dense).max()
    x = np.zeros(n)
    r = b_dense.copy()
    assert scale_start(x, r, b) == 0.0
    assert not x.any() and np.array_equal(r, b_dense)


def test_the_mixed_solve_scales_its_warm_start():
    """A warm start twice the solution is scaled to it before the first step: no float32
    CG iteration, the first residual at rounding level (unscaled it is about the load's
    size)."""
    model = build(cantilever((8, 4, 4), krylov="mixed", rtol=1e-8), array_module=np)
    x = np.full(model.n, 0.3)
    model.values_and_gradients(model.to_device(x))
    solver, path = model.solver, model.path
    u = path.u[0].copy()
    x0 = 2.0 * u
    out = solver.solve_grid(path.loads[0], x0=x0, in_place=True)
    assert out is x0 and np.allclose(out, u, rtol=0, atol=1e-9 * np.abs(u).max())
    assert solver.last.iterations == 0
    assert solver.last.residuals[0] < 1e-8
