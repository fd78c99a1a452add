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
    vectors: the count adds those, and the estimate grows by the count times its margin."""
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
    grow = mesh_device.estimate_bytes(model) - mesh_device.estimate_bytes(without)
    assert grow == pytest.approx(
        mesh_device.MEMORY_MARGIN * integrand_bytes(model, n_free, n_dofs), abs=1)
