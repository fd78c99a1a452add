"""The GPU memory estimate counts what integrand functions keep and gather on the device
paths: exact byte counts against the arrays the NumPy twins hold after an evaluation."""

from __future__ import annotations

import numpy as np
import pytest

from femopt.assembly.grid_layout import layout_of
from femopt.evaluation import grid_device, mesh_device
from femopt.evaluation.device_forms import integrand_bytes, integrand_functions
from path_checks import GRID_SOLVER, build

GRID = {"type": "structured", "shape": [16, 8], "size": [16.0, 8.0]}
STRESS = {"type": "stress_pnorm", "p": 8.0, "q": 0.5, "max": 2.0,
          "region": {"box": {"min": [0.0, 0.0], "max": [12.0, 8.0]}}}


def problem(constraint: dict, mesh: dict = GRID, solver: dict = GRID_SOLVER) -> dict:
    """Two load cases on a 16 x 8 plate, volume objective, one constraint."""
    return {
        "mesh": mesh,
        "physics": {"type": "linear_elasticity"},
        "supports": [{"region": {"face": "x_min"}}],
        "load_cases": [
            {"name": "down", "loads": [{"region": {"face": "x_max"}, "force": [0.0, -1.0],
                                        "distribute": "total"}]},
            {"name": "side", "loads": [{"region": {"point": [16.0, 8.0]},
                                        "force": [1.0, 0.5]}]}],
        "filters": [{"type": "density", "radius": 1.5}],
        "objective": {"type": "volume"},
        "constraints": [constraint],
        "optimizer": {"type": "mma", "max_iter": 3},
        "solver": solver,
    }


def test_grid_estimate_grows_by_the_stress_functions_arrays():
    """After one evaluation on the grid twin, the arrays the path keeps for the stress
    function have exactly the bytes the count gives them; the per-design arrays are
    counted by their shapes; the estimate grows by that count times its margin."""
    model = build(problem(STRESS), array_module=np)
    x = np.random.default_rng(4).uniform(0.3, 0.8, model.n)
    model.values_and_gradients(model.to_device(x))
    path = model.path
    (_, form), = path.forms[1]
    fn = form.integrand
    n_cells, c, nd, n_f = model.mesh.n_cells, 2, 8, fn.cells.size
    assert 0 < n_f < n_cells
    lay = layout_of(model.mesh, 2)
    kept = (path._cells.nbytes  # the dofs of every cell, once
            + form.cells.nbytes + form.coords.nbytes + path._last_index.nbytes
            + form.mu.nbytes)  # adjoint states, one per case
    assert form.mu.shape == (c, lay.n_dofs) and form.coords.shape == (n_f, 4, 2)
    d_ue, d_rho_full = form.terms[1], form.terms[2]
    per_design = (2 * d_ue.nbytes  # the gathered states and dJ/du_e
                  + 2 * 8 * n_f  # gathered densities, dJ/drho of the cells
                  + 8 * c * n_f  # dJ/drho per case (the generated kernel's, on a GPU)
                  + 2 * 8 * c * n_f  # the p-norm's values and dJ/dvalues (one point)
                  + d_rho_full.nbytes  # dJ/drho on every cell
                  + 8 * c * lay.n_dofs)  # the adjoint right-hand sides
    assert d_ue.shape == (c, n_f, nd) and d_rho_full.shape == (n_cells,)
    assert integrand_bytes(model, lay.n_dofs) == kept + per_design
    without = build(problem({"type": "volume", "max": 0.5}), array_module=np)
    assert integrand_bytes(without, lay.n_dofs) == 0
    grow = (grid_device.estimate_bytes(lay, c, model)
            - grid_device.estimate_bytes(lay, c, without))
    assert grow == pytest.approx(grid_device.MEMORY_MARGIN * (kept + per_design), abs=1)


def test_a_sum_counts_its_integrand_terms_only():
    """A weighted sum of a stress p-norm and a volume: the stress term's arrays alone,
    the same as the stress p-norm by itself."""
    total = {"type": "weighted_sum", "max": 2.0, "terms": [
        dict({k: v for k, v in STRESS.items() if k != "max"}, weight=1.0),
        {"type": "volume", "weight": 0.5}]}
    summed = build(problem(total), device="cpu")
    alone = build(problem(STRESS), device="cpu")
    assert [f.name for f in integrand_functions(summed.functions()[1])] == ["stress_pnorm"]
    assert integrand_bytes(summed, 306) == integrand_bytes(alone, 306) > 0


def test_mesh_estimate_counts_full_dof_gathers(tmp_path):
    """On the mesh path states live on the free dofs and are gathered from full-dof
    vectors: the count of the run's arrays adds those."""
    import meshio

    from femopt.mesh import structured_grid

    grid = structured_grid((16, 8), (16.0, 8.0))
    path = tmp_path / "plate.vtu"
    meshio.write(path, meshio.Mesh(np.hstack([grid.points, np.zeros((len(grid.points), 1))]),
                                   [("quad", grid.cells)]))
    mesh = {"type": "file", "path": str(path)}
    pcg = {"type": "pcg", "rtol": 1e-10}
    model = build(problem(STRESS, mesh, pcg), array_module=np)
    x = np.random.default_rng(5).uniform(0.3, 0.8, model.n)
    model.values_and_gradients(model.to_device(x))
    (_, form), = model.path.forms[1]
    n_free, n_dofs, c = model.path.free.size, model.n_dofs, 2
    on_grid_layout = integrand_bytes(model, n_free)
    assert model.path._dofs.nbytes == model.mesh.n_cells * 8 * 8
    assert form.mu.shape == (c, n_free)
    assert integrand_bytes(model, n_free, n_dofs) == on_grid_layout + 2 * 8 * c * n_dofs
    without = build(problem({"type": "volume", "max": 0.5}, mesh, pcg), device="cpu")
    parts, before = mesh_device.estimate_parts(model), mesh_device.estimate_parts(without)
    grow = sum(parts.values()) - sum(before.values())
    assert grow == integrand_bytes(model, n_free, n_dofs) > 0
    # the estimate is the larger of two phases, not their sum: here (128 cells) the
    # set-up's peak, which the run's arrays do not add to
    estimate = mesh_device.estimate_bytes(model)
    margin = mesh_device.MEMORY_MARGIN
    run = sum(parts.values()) - parts["set-up"]
    assert margin * parts["set-up"] < estimate < margin * (parts["set-up"] + run)


@pytest.mark.parametrize("name, within", [("plate_with_hole.msh", 0.01),
                                          ("bracket_3d.msh", 0.15),
                                          ((30, 30), 0.01), ((12, 12, 12), 0.06)])
def test_csr_entries_from_eulers_formula_are_near_the_patterns_count(name, within):
    """The estimate's count of CSR values from the numbers of nodes and cells against
    the pattern's own count (every dof free): a little low, by the boundary's share (the
    coarse bracket's 3,650 tets have many boundary faces), never high."""
    from pathlib import Path

    from femopt.assembly.sparse import FixedPatternAssembler
    from femopt.mesh import structured_grid
    from femopt.mesh.meshfile import read_mesh_file

    if isinstance(name, tuple):
        mesh = structured_grid(name, tuple(float(s) for s in name))
    else:
        mesh = read_mesh_file(Path(__file__).resolve().parent.parent / "problems"
                              / "meshes" / name)
    k = mesh.dim
    dofs = (mesh.cells[:, :, None] * k + np.arange(k)).reshape(mesh.n_cells, -1)
    n = mesh.points.shape[0] * k
    count = FixedPatternAssembler(dofs, n, np.arange(n), k).nnz
    estimate = mesh_device.csr_entries(mesh, k)
    assert count * (1 - within) <= estimate <= count * 1.001


@pytest.mark.gpu
def test_released_set_up_blocks_still_count_in_the_high_water_mark():
    """The mesh path gives the set-up's cached blocks back (release_cached); the pool's
    high-water mark (summary.json's gpu_pool_bytes) still counts them."""
    cupy = pytest.importorskip("cupy")
    from femopt.backend import gpu_allocator, pool_bytes, pool_total, release_cached, reset_pool

    gpu_allocator()
    reset_pool(cupy)
    big = cupy.ones(50_000_000, dtype=cupy.float64)  # 400 MB
    held = pool_bytes(cupy)
    assert held >= big.nbytes
    del big
    release_cached(cupy)
    assert pool_total(cupy) < 400_000_000
    assert pool_bytes(cupy) == held
    small = cupy.ones(1000)
    assert pool_bytes(cupy) == held and small.sum() == 1000
    reset_pool(cupy)
    assert pool_bytes(cupy) < held


@pytest.mark.parametrize("amg_min, cpu_solver, gpu_solver",
                         [(None, "direct", "pcg"), (100, "amg", "amg")])
def test_the_gpu_memory_check_counts_the_gpu_solver_of_a_problem_without_one(
        monkeypatch, amg_min, cpu_solver, gpu_solver):
    """A mesh problem without ``solver:`` runs block-Jacobi PCG on the GPU where the CPU's
    default is the direct solver, and keeps AMG where that is the CPU's default (from
    AMG_MIN_DOFS free dofs, lowered here for the shipped bracket): the memory check
    counts the solver the GPU runs."""
    from pathlib import Path

    import yaml

    from femopt.errors import InputError
    from femopt.evaluation import device_choice
    from femopt.solvers import choice

    if amg_min is not None:
        monkeypatch.setattr(choice, "AMG_MIN_DOFS", amg_min)
        monkeypatch.setattr(choice, "AMG_MIN_DOFS_CHOLMOD", amg_min)
    root = Path(__file__).resolve().parent.parent / "problems"
    data = yaml.safe_load((root / "bracket_3d.yaml").read_text())
    data["mesh"]["path"] = str(root / data["mesh"]["path"])
    assert "solver" not in data
    assert build(data).solver.name == cpu_solver  # the CPU's default
    counted = []
    real = mesh_device.estimate_bytes
    monkeypatch.setattr(device_choice, "resolve_device", lambda requested: ("gpu", None))
    monkeypatch.setattr(device_choice, "gpu_memory", lambda: (1, 2))  # 1 byte free
    monkeypatch.setattr(mesh_device, "estimate_bytes",
                        lambda model: counted.append(model.solver.name) or real(model))
    with pytest.raises(InputError, match="GiB of GPU memory"):
        build(data, device="gpu")
    assert counted == [gpu_solver]


@pytest.mark.gpu
def test_gpu_pools_hold_at_most_what_is_alive_at_once():
    """femopt's pools (backend.gpu_pool) over three design iterations of the 3D
    cantilever at 128x64x64 (test_mixed_precision's, mixed precision): their high-water
    mark (summary.json's gpu_pool_bytes) is the live bytes' peak, which a CuPy memory hook follows, within
    the slack of the pool of blocks under 64 KiB (3%: the coarse levels' vectors); CuPy's
    one pool held 10% over it at 512x256x256."""
    import cupy

    from femopt.backend import gpu_allocator, pool_bytes, pool_total, reset_pool
    from test_mixed_precision import cantilever

    import gc

    gpu_allocator()
    gc.collect()
    reset_pool(cupy)
    base = pool_total(cupy)

    class Live(cupy.cuda.MemoryHook):
        name = "femopt_live"

        def __init__(self):
            self.live, self.peak, self.sizes = 0, 0, {}

        def malloc_postprocess(self, **kw):
            self.sizes[kw["mem_ptr"]] = kw["mem_size"]
            self.live += kw["mem_size"]
            self.peak = max(self.peak, self.live)

        def free_postprocess(self, **kw):
            self.live -= self.sizes.pop(kw["mem_ptr"], 0)  # not one of the run's: 0

    live = Live()
    with live:
        model = build(cantilever((128, 64, 64)), array_module=cupy)
        model.optimizer.run(model, model.x0, 3)
    held = pool_bytes(cupy) - base
    assert live.peak > 100 * model.mesh.n_cells  # the run's arrays, not a trivial count
    assert live.peak <= held <= 1.03 * live.peak
