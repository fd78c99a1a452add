"""Plugins are first-class on every path: a linear filter given by its weights, a
pointwise projection given by a scalar function and a function written through its cell
terms run on the CPU, on the GPU grid path and on the GPU mesh path (their NumPy twins
here, CuPy under ``gpu``) with gradients equal to the CPU's and Taylor rates of 2."""

from __future__ import annotations

import json
import types
from typing import Any

import meshio
import numpy as np
import pytest
import scipy.sparse as sp
import yaml
from pydantic import Field
from scipy.spatial import cKDTree

from femopt.backend import array_namespace
from femopt.filters.linear import LinearFilter
from femopt.filters.projection import ProjectionFilter
from femopt.mesh import structured_grid
from femopt.objectives.base import Function, State, case_weights
from femopt.plugins.manager import build_manager, hookimpl
from femopt.plugins.registry import Options
from path_checks import assert_same_as_cpu, assert_taylor_rates, build
from femopt.errors import ProblemError


class GaussianOptions(Options):
    radius: float = Field(gt=0)


class GaussianFilter(LinearFilter):
    """Weights exp(-3 (d / r)^2) between cell centroids closer than r."""

    name = "gaussian"
    Options = GaussianOptions

    def weights(self):
        c = self.mesh.centroids()
        tree = cKDTree(c)
        d = tree.sparse_distance_matrix(tree, self.options.radius, output_type="coo_matrix")
        n = self.mesh.n_cells
        w = np.exp(-3.0 * (d.data / self.options.radius) ** 2)
        h = sp.csr_matrix((w, (d.row, d.col)), shape=(n, n))  # self-pairs: weight 1
        return h, np.asarray(h.sum(axis=1)).ravel()


class SmoothStep(ProjectionFilter):
    """P(x) = x^2 (3 - 2x): pushes densities towards 0 and 1."""

    name = "smooth_step"

    def projection(self, ops, x):
        return x * x * (3.0 - 2.0 * x)


class WeightedStrain(Function):
    """J = sum_c w_c sum_e rho_e^2 |u_c,e|^2: not linear in u, so the device paths take
    it through its cell terms (one adjoint solve per load case)."""

    name = "weighted_state"
    Options = Options

    def __init__(self, options, model):
        super().__init__(options, model)
        self.w = case_weights(model, None)

    def cell_terms(self, ue: Any, rho: Any, coords: Any):
        xp = array_namespace(ue)
        w = xp.asarray(self.w)[:, None]
        sq = (ue * ue).sum(axis=2)  # (c, e)
        value = float((w * rho[None] ** 2 * sq).sum())
        d_ue = 2.0 * (w * rho[None] ** 2)[:, :, None] * ue
        d_rho = (w * 2.0 * rho[None] * sq).sum(axis=0)
        return value, d_ue, d_rho

    def _terms(self, state: State):
        dofs = self.model.cell_dofs
        return self.cell_terms(np.asarray(state.u)[:, dofs], state.rho, None), dofs

    def value(self, state: State) -> float:
        return self._terms(state)[0][0]

    def partial_u(self, state: State):
        (_, d_ue, _), dofs = self._terms(state)
        n = state.u.shape[1]
        return np.stack([np.bincount(dofs.ravel(), weights=d.ravel(), minlength=n)
                         for d in d_ue])

    def partial_rho(self, state: State):
        return self._terms(state)[0][2]


def femopt_register_filters(registry) -> None:
    registry.add("filter", GaussianFilter)
    registry.add("filter", SmoothStep)


def femopt_register_functions(registry) -> None:
    registry.add("function", WeightedStrain)


PLUGIN = types.ModuleType("every_path_plugins")
PLUGIN.femopt_register_filters = hookimpl(femopt_register_filters)
PLUGIN.femopt_register_functions = hookimpl(femopt_register_functions)


def problem(mesh: dict, solver: dict) -> dict:
    return {
        "mesh": mesh,
        "physics": {"type": "linear_elasticity"},
        "supports": [{"region": {"face": "x_min"}}],
        "load_cases": [
            {"name": "down", "loads": [{"region": {"point": [16.0, 0.0]},
                                        "force": [0.0, -1.0]}]},
            {"name": "pull", "weight": 0.5,
             "loads": [{"region": {"point": [16.0, 8.0]}, "force": [1.0, 0.5]}]}],
        "filters": [{"type": "gaussian", "radius": 2.5}, {"type": "smooth_step"}],
        "objective": {"type": "weighted_sum", "terms": [
            {"type": "compliance", "weight": 1.0}, {"type": "volume", "weight": 3.0}]},
        "constraints": [{"type": "weighted_state", "max": 50.0},
                        {"type": "volume", "max": 0.5}],
        "optimizer": {"type": "mma", "max_iter": 3},
        "solver": solver,
    }


@pytest.fixture(scope="module")
def registry():
    return build_manager({"every_path_plugins": PLUGIN})[1]


@pytest.fixture(scope="module")
def quad_mesh_file(tmp_path_factory) -> str:
    """A 16 x 8 quad4 mesh read from a file (so the mesh path, not the grid path, runs),
    interior nodes moved a little so the cells differ."""
    grid = structured_grid((16, 8), (16.0, 8.0))
    pts = grid.points.copy()
    inner = (pts[:, 0] > 0) & (pts[:, 0] < 16) & (pts[:, 1] > 0) & (pts[:, 1] < 8)
    pts[inner] += np.random.default_rng(3).uniform(-0.15, 0.15, (int(inner.sum()), 2))
    path = tmp_path_factory.mktemp("mesh") / "plate.vtu"
    meshio.write(path, meshio.Mesh(np.hstack([pts, np.zeros((len(pts), 1))]),
                                   [("quad", grid.cells)]))
    return str(path)


GRID = {"type": "structured", "shape": [16, 8], "size": [16.0, 8.0]}
DIRECT = {"type": "direct"}
DEVICE_SOLVER = {"grid": {"type": "multigrid", "rtol": 1e-12, "coarsest_size": 60},
                 "mesh": {"type": "pcg", "rtol": 1e-12, "max_iter": 20000}}


def models(path: str, registry, mesh_file: str, xp):
    mesh = GRID if path == "grid" else {"type": "file", "path": mesh_file}
    cpu = build(problem(mesh, DIRECT), registry, device="cpu")
    dev = build(problem(mesh, DEVICE_SOLVER[path]), registry, array_module=xp)
    assert dev.device == "gpu"
    assert type(dev.path).__name__ == ("GridDevicePath" if path == "grid" else "MeshDevicePath")
    return cpu, dev


def agree(path: str, registry, mesh_file: str, xp) -> None:
    cpu, dev = models(path, registry, mesh_file, xp)
    rng = np.random.default_rng(0)
    x = rng.uniform(0.25, 0.75, cpu.n)
    assert len(assert_same_as_cpu(cpu, dev, x, values=1e-8)) == 3
    assert_taylor_rates(dev, x, rng.standard_normal(dev.n))


@pytest.mark.parametrize("path", ["grid", "mesh"])
def test_plugin_filters_and_functions_on_the_device_paths_equal_the_cpu(path, registry,
                                                                        quad_mesh_file):
    agree(path, registry, quad_mesh_file, np)


def test_projection_derivative_is_generated_from_the_scalar_function(registry):
    flt = SmoothStep(SmoothStep.Options(), None)
    x = np.linspace(0.0, 1.0, 11)
    np.testing.assert_allclose(flt.forward(x), x * x * (3 - 2 * x), rtol=0, atol=1e-15)
    np.testing.assert_allclose(flt.backward(x, np.ones_like(x)), 6 * x * (1 - x),
                               rtol=0, atol=1e-14)


@pytest.mark.gpu
@pytest.mark.parametrize("path", ["grid", "mesh"])
def test_gpu_plugin_filters_and_functions_equal_the_cpu(path, registry, quad_mesh_file):
    import cupy

    agree(path, registry, quad_mesh_file, cupy)


def test_femopt_plugins_shows_where_each_component_runs(monkeypatch, capsys):
    import femopt.plugins.manager as manager
    from femopt.cli import main

    monkeypatch.setattr(manager, "_infos", dict(manager._infos))  # restored afterwards
    pm, reg = manager.build_manager({"every_path_plugins": PLUGIN})
    monkeypatch.setattr(manager, "_manager", pm)
    monkeypatch.setattr(manager, "_registry", reg)
    assert main(["plugins"]) == 0
    lines = {ln.strip() for ln in capsys.readouterr().out.splitlines()}
    for line in ("filter:gaussian  (runs on: cpu, gpu grid, gpu mesh)",
                 "filter:smooth_step  (runs on: cpu, gpu grid, gpu mesh)",
                 "function:weighted_state  (runs on: cpu, gpu grid, gpu mesh)",
                 "physics:linear_elasticity  (runs on: cpu, gpu grid, gpu mesh)",
                 ("physics:convection_diffusion  (runs on: cpu; not on the GPU: its operator is not "
                  "symmetric (the GPU paths solve with CG))"),
                 "optimizer:nlopt  (runs on: cpu)",
                 "optimizer:mma  (runs on: cpu, gpu grid, gpu mesh)",
                 "solver:multigrid  (runs on: cpu, gpu grid)", "solver:amg  (runs on: cpu, gpu mesh)"):
        assert line in lines, line


def test_a_non_finite_plugin_value_fails_the_run_naming_function_and_iteration(
        registry, quad_mesh_file, tmp_path, monkeypatch):
    """exit 1 (a run-time failure), the function and the iteration named, the last
    checkpoint intact."""
    import femopt.evaluation.build as build_module
    from femopt.cli import main

    calls = []
    original = WeightedStrain.cell_terms

    def poisoned(self, ue, rho, coords):
        value, d_ue, d_rho = original(self, ue, rho, coords)
        calls.append(1)
        return (float("nan") if len(calls) > 3 else value), d_ue, d_rho

    monkeypatch.setattr(WeightedStrain, "cell_terms", poisoned)
    monkeypatch.setattr(build_module, "get_registry", lambda: registry)
    data = problem(GRID, DIRECT)
    data["optimizer"]["max_iter"] = 10
    data["output"] = {"checkpoint_every": 1, "picture": False}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "res"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert "function 'weighted_state' is not finite (nan) at design iteration" in \
        summary["message"]
    assert (out / "checkpoint.h5").is_file()


def test_heaviside_is_a_projection_equal_to_its_closed_form():
    from femopt.filters.heaviside import Heaviside

    flt = Heaviside(Heaviside.Options(beta=8.0, eta=0.4), None)
    x = np.random.default_rng(4).uniform(0.0, 1.0, 50)
    b, e = 8.0, 0.4
    den = np.tanh(b * e) + np.tanh(b * (1 - e))
    np.testing.assert_allclose(flt.forward(x), (np.tanh(b * e) + np.tanh(b * (x - e))) / den,
                               rtol=1e-15)
    dy = np.random.default_rng(5).standard_normal(50)
    np.testing.assert_allclose(flt.backward(x, dy),
                               dy * b * (1 - np.tanh(b * (x - e)) ** 2) / den, rtol=1e-13)


def stress_problem(mesh: dict, solver: dict) -> dict:
    """A small L-bracket-like plate under a stress p-norm constraint (an integrand
    function with a region) and a volume objective."""
    return {
        "mesh": mesh,
        "physics": {"type": "linear_elasticity"},
        "supports": [{"region": {"face": "x_min"}}],
        "loads": [{"region": {"face": "x_max"}, "force": [0.0, -1.0], "distribute": "total"}],
        "filters": [{"type": "density", "radius": 1.5}],
        "objective": {"type": "volume"},
        "constraints": [{"type": "stress_pnorm", "p": 8.0, "q": 0.5, "max": 2.0,
                         "region": {"box": {"min": [0.0, 0.0], "max": [12.0, 8.0]}}}],
        "optimizer": {"type": "mma", "max_iter": 3},
        "solver": solver,
    }


@pytest.mark.parametrize("path", ["grid", "mesh"])
def test_stress_pnorm_runs_on_the_device_paths_like_the_cpu(path, registry, quad_mesh_file):
    """A built-in written as an integrand runs on the GPU paths through its cell terms:
    one adjoint solve per load case at every design, gradients equal to the CPU's."""
    mesh = GRID if path == "grid" else {"type": "file", "path": quad_mesh_file}
    cpu = build(stress_problem(mesh, DIRECT), registry, device="cpu")
    dev = build(stress_problem(mesh, DEVICE_SOLVER[path]), registry, array_module=np)
    rng = np.random.default_rng(11)
    x = rng.uniform(0.3, 0.8, cpu.n)
    assert_same_as_cpu(cpu, dev, x, values=1e-8)
    assert dev.path.cg_iterations["adjoint"] and len(dev.path.cg_iterations["adjoint"]) == 1
    assert_taylor_rates(dev, x, rng.standard_normal(dev.n))


class HandWritten(Function):
    """Partials by hand on host arrays, no linear form, no cell terms: CPU only."""

    name = "hand_written"
    Options = Options

    def value(self, state):
        return float((state.u ** 2).sum())

    def partial_u(self, state):
        return 2.0 * state.u


def test_a_function_without_cell_terms_is_refused_on_the_gpu_by_name(monkeypatch):
    import femopt.backend

    def femopt_register_functions(registry) -> None:
        registry.add("function", HandWritten)

    plugin = types.ModuleType("hand_written_plugin")
    plugin.femopt_register_functions = hookimpl(femopt_register_functions)
    registry = build_manager({"every_path_plugins": PLUGIN, "hand_written_plugin": plugin})[1]
    data = problem(GRID, DEVICE_SOLVER["grid"])
    data["objective"] = {"type": "weighted_sum", "terms": [
        {"type": "compliance", "weight": 1.0}, {"type": "hand_written", "weight": 1.0}]}
    data["device"] = "gpu"
    monkeypatch.setattr(femopt.backend, "gpu_status", lambda: (True, "1 CUDA device(s)"))
    with pytest.raises(ProblemError) as exc:
        build(data, registry)
    (issue,) = exc.value.issues
    assert issue.path == "device"
    assert issue.message == ("the function 'hand_written' is neither linear in the states (a "
                             "linear form) nor written as an integrand (cell_terms), so it "
                             "runs on the CPU only")


@pytest.mark.parametrize("path", ["cpu", "grid", "mesh"])
@pytest.mark.parametrize("poison", ["value", "d_ue", "d_rho"])
def test_non_finite_cell_terms_name_the_function_and_iteration(path, poison, registry,
                                                                quad_mesh_file, monkeypatch):
    """On every path: a run-time failure (RunError, exit 1) naming the function and the
    design iteration, never a solver breakdown or a NaN handed to the optimizer."""
    from femopt.errors import RunError

    original = WeightedStrain.cell_terms

    def poisoned(self, ue, rho, coords):
        value, d_ue, d_rho = original(self, ue, rho, coords)
        if poison == "value":
            value = float("nan")
        elif poison == "d_ue":
            d_ue = np.full_like(d_ue, np.inf)
        else:
            d_rho = np.full_like(d_rho, np.nan)
        return value, d_ue, d_rho

    monkeypatch.setattr(WeightedStrain, "cell_terms", poisoned)
    mesh = {"type": "file", "path": quad_mesh_file} if path == "mesh" else GRID
    model = (build(problem(mesh, DIRECT), registry, device="cpu") if path == "cpu" else
             build(problem(mesh, DEVICE_SOLVER[path]), registry, array_module=np))
    model.history = [None, None]  # two iterations done: this is the third
    with pytest.raises(RunError, match=r"function 'weighted_state'.* not finite.* at design "
                                       r"iteration 3"):
        model.evaluate(np.full(model.n, 0.5))


def test_a_sum_of_a_linear_and_an_integrand_function_runs_on_the_gpu_paths(registry):
    data = stress_problem(GRID, DEVICE_SOLVER["grid"])
    data["objective"] = {"type": "weighted_sum", "terms": [
        {"type": "compliance", "weight": 2.0},
        {"type": "stress_pnorm", "p": 8.0, "q": 0.5, "weight": 0.5}]}
    data["constraints"] = [{"type": "volume", "max": 0.5}]
    cpu = build({**data, "solver": DIRECT}, registry, device="cpu")
    dev = build(data, registry, array_module=np)
    assert_same_as_cpu(cpu, dev, np.random.default_rng(12).uniform(0.3, 0.8, cpu.n),
                       values=1e-8)
