"""Functions written as integrands (femopt.objectives.integrand): generated partials by
Taylor rates and finite differences, every reduction and point kind, equality with the
closed forms (stress p-norm, mean displacement, mean temperature) and the backend-neutral
cell_terms on NumPy (and CuPy on a GPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from femopt.adjoint.taylor import check_model_gradients, taylor_test
from femopt.assembly.element_kernel import isoparametric
from femopt.mesh.regions import Region
from femopt.objectives.integrand import IntegrandFunction
from femopt.objectives.reductions import Reduction
from femopt.objectives.stress import StressPNorm
from femopt.plugins.manager import build_manager
from femopt.plugins.registry import Options
from femopt.problem.load import parse_problem
from femopt.evaluation.model import Model

H0 = 5e-4

ELASTIC_2D = """
mesh: {type: structured, shape: [12, 6], size: [12.0, 6.0]}
physics: {type: linear_elasticity}
supports: [{region: {face: x_min}}]
load_cases:
  - {name: down, loads: [{region: {point: [12.0, 0.0]}, force: [0.0, -1.0]}]}
  - {name: side, weight: 2.0, loads: [{region: {point: [12.0, 6.0]}, force: [1.0, 0.5]}]}
filters: [{type: density, radius: 1.5}]
design: {interpolation: {type: simp, penalty: 3.0, min: 1.0e-3}}
optimizer: {type: mma}
"""
ELASTIC_3D = """
mesh: {type: structured, shape: [6, 3, 2], size: [6.0, 3.0, 2.0]}
physics: {type: linear_elasticity}
supports: [{region: {face: x_min}}]
loads: [{region: {face: x_max}, force: [0.0, -1.0, 0.5], distribute: total}]
design: {interpolation: {type: simp, penalty: 3.0, min: 1.0e-3}}
optimizer: {type: mma}
"""
MESHES = Path(__file__).resolve().parents[1] / "problems" / "meshes"
PLATE_TRI3 = f"""
mesh: {{type: file, path: {MESHES / "plate_with_hole_coarse.msh"}}}
physics: {{type: linear_elasticity, E: 1000.0}}
supports: [{{region: {{group: left}}, dofs: [x]}}, {{region: {{group: bottom}}, dofs: [y]}}]
loads: [{{region: {{group: right}}, force: [20.0, 0.0], distribute: total}}]
design: {{interpolation: {{type: simp, penalty: 3.0, min: 1.0e-3}}}}
optimizer: {{type: mma}}
"""
HEAT_2D = """
mesh: {type: structured, shape: [12, 6], size: [12.0, 6.0]}
physics: {type: heat_conduction}
supports: [{region: {face: x_min, box: {min: [0.0, 2.0], max: [0.0, 4.0]}}}]
loads: [{body: true, heat: 0.01}]
design: {interpolation: {type: simp, penalty: 3.0, min: 1.0e-3}}
optimizer: {type: mma}
"""


class ProbeOptions(Options):
    region: Region | None = None
    """Cells (or nodes) of the function."""
    case: str | None = None
    """One load case by name."""
    direction: list[float] | None = None
    """A direction (nodal means)."""


def _energy(ops, cell):
    """m |grad u|^2 det J w at a point: nonlinear in u, rho and the coordinates."""
    dndx, wdet = isoparametric(ops, cell)
    k = len(cell.u) // len(cell.x)
    g = [sum(dndx[a][d] * cell.u[a * k] for a in range(len(cell.x)))
         for d in range(len(dndx[0]))]
    return cell.m * sum(gd * gd for gd in g) * wdet


def _cellwise(ops, cell):
    """A cell value with sqrt, tanh, exp, abs, max and a constant power."""
    s = sum(ui * ui for ui in cell.u)
    return (cell.rho ** 1.5 * ops.sqrt(s + 1e-3) + ops.tanh(cell.u[0] * cell.x[1][0])
            + 0.1 * ops.exp(ops.abs(cell.u[1])) * ops.max(cell.rho, 0.5))


def make(kind: str, points: str, param: float = 0.0):
    """A test function class: reduction ``kind`` of the integrands above."""

    class Probe(IntegrandFunction):
        name = f"probe_{kind}_{points}"
        Options = ProbeOptions

        def __init__(self, options, model):
            super().__init__(options, model)
            self.reduction = Reduction(kind, param)

        def integrand(self, ops, cell):
            value = _cellwise(ops, cell) if points == "cell" else _energy(ops, cell)
            if kind == "ratio":
                wdet = isoparametric(ops, cell)[1] if points != "cell" else 1.0
                return value, (cell.rho + 0.5) * wdet
            return value

    Probe.points = points
    return Probe


class NodalMean(IntegrandFunction):
    """The mean over a region's nodes of d . u, as an integrand (a test twin of the
    built-in displacement and mean_temperature)."""

    name = "nodal_mean"
    Options = ProbeOptions
    region_selects = "nodes"

    def __init__(self, options, model):
        super().__init__(options, model)
        d = np.asarray(options.direction or [1.0], dtype=float)
        self.direction = (d / np.linalg.norm(d)).tolist()

    def integrand(self, ops, cell):
        k, w = len(self.direction), cell.data["node_weight"]
        return sum(w[a] * sum(self.direction[c] * cell.u[a * k + c] for c in range(k))
                   for a in range(len(w)))


REDUCTIONS = [("sum", 0.0), ("mean", 0.0), ("ratio", 0.0), ("pnorm", 4.0), ("ks", 3.0)]
POINTS = ["cell", "centre", "quadrature"]
PROBES = [make(k, p, a) for k, a in REDUCTIONS for p in POINTS]


@pytest.fixture(scope="module")
def registry():
    _, reg = build_manager()
    for cls in PROBES + [NodalMean]:
        reg.add("function", cls)
    return reg


def build(registry, text: str) -> Model:
    return Model(parse_problem(text, "test.yaml", registry), registry)


def random_point(model: Model, seed: int):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.2, 0.8, model.n), rng.uniform(-1.0, 1.0, model.n)


@pytest.mark.parametrize("cls", PROBES, ids=[c.name for c in PROBES])
def test_generated_gradients_taylor_rate_two(registry, cls):
    """Every reduction x point kind as objective and constraint, two load cases."""
    region = ", region: {box: {min: [0.0, 0.0], max: [8.0, 6.0]}}" if "mean" in cls.name else ""
    fn = "{type: " + cls.name + region + "}"
    model = build(registry, ELASTIC_2D + f"objective: {fn}\n"
                  + f"constraints: [{fn[:-1]}, max: 1000.0}}]\n")
    x, d = random_point(model, 3)
    for check in check_model_gradients(model, x, d, h0=H0):
        assert not check.result.exact, check.name
        assert check.result.ok(1.9, 2.1), f"{check.name}: rates {check.result.rates}"


@pytest.mark.parametrize("cls", [PROBES[3 * 3 + 2], PROBES[0]], ids=["pnorm-qp", "sum-cell"])
def test_cell_terms_equal_central_differences(registry, cls):
    """cell_terms on NumPy arrays: dJ/d(ue), dJ/d(rho), dJ/d(coords) against central
    differences of cell_value at seeded random cell arrays."""
    model = build(registry, ELASTIC_2D + "objective: {type: " + cls.name + "}\n")
    fn = model.functions()[0]
    rng = np.random.default_rng(7)
    n = fn.cells.size
    ue = rng.standard_normal((2, n, 8))
    rho = rng.uniform(0.2, 0.9, n)
    coords = model.mesh.points[model.mesh.cells[fn.cells]] + 0.1 * rng.standard_normal((n, 4, 2))
    value, d_ue, d_rho = fn.cell_terms(ue, rho, coords)
    d_x = fn.coordinate_terms(ue, rho, coords)
    assert value == pytest.approx(fn.cell_value(ue, rho, coords), rel=1e-14)
    h = 1e-6
    for arr, grad in ((ue, d_ue), (rho, d_rho), (coords, d_x)):
        for idx in [tuple(rng.integers(0, s) for s in arr.shape) for _ in range(6)]:
            arr[idx] += h
            up = fn.cell_value(ue, rho, coords)
            arr[idx] -= 2 * h
            down = fn.cell_value(ue, rho, coords)
            arr[idx] += h
            # round-off of J over 2h bounds the difference quotient's accuracy
            assert grad[idx] == pytest.approx((up - down) / (2 * h), rel=1e-6,
                                              abs=1e-8 * max(1.0, abs(value)))


def test_cell_terms_in_chunks_equal_one_pass(registry, monkeypatch):
    """Cells are seeded in chunks of BUDGET derivative entries: the same terms."""
    import femopt.objectives.integrand as integrand

    model = build(registry, ELASTIC_2D + "objective: {type: probe_ratio_quadrature}\n")
    fn = model.functions()[0]
    rng = np.random.default_rng(9)
    n = fn.cells.size
    args = (rng.standard_normal((2, n, 8)), rng.uniform(0.2, 0.9, n),
            model.mesh.points[model.mesh.cells[fn.cells]])
    whole, whole_x = fn.cell_terms(*args), fn.coordinate_terms(*args)
    monkeypatch.setattr(integrand, "BUDGET", 2 * 9 * 5)  # 5 cells a chunk
    assert len(fn._chunks(args[0].shape, 9)) == -(-n // 5)
    parts, parts_x = fn.cell_terms(*args), fn.coordinate_terms(*args)
    assert parts.value == whole.value
    np.testing.assert_allclose(parts.d_ue, whole.d_ue, rtol=1e-14, atol=0)
    np.testing.assert_allclose(parts.d_rho, whole.d_rho, rtol=1e-14, atol=0)
    np.testing.assert_allclose(parts_x, whole_x, rtol=1e-14, atol=0)


@pytest.mark.parametrize("name", ["probe_pnorm_quadrature", "probe_ratio_centre",
                                  "stress_pnorm"])
def test_one_cell_of_a_uniform_grid_stands_for_all(registry, monkeypatch, name):
    """coords of one cell (1, nn, dim) on a structured grid: the same terms as every
    cell's coordinates (what a grid path passes instead of a per-cell array), for
    integrands that read the coordinates through their differences only."""
    import femopt.objectives.integrand as integrand

    monkeypatch.setattr(integrand, "BUDGET", 2 * 9 * 7)  # several chunks
    model = build(registry, ELASTIC_2D + "objective: {type: " + name + "}\n")
    fn = model.functions()[0]
    rng = np.random.default_rng(12)
    n = fn.cells.size
    ue, rho = rng.standard_normal((2, n, 8)), rng.uniform(0.2, 0.9, n)
    coords = model.mesh.points[model.mesh.cells[fn.cells]]
    for closed in ([True, False] if name == "stress_pnorm" else [False]):
        fn.closed_form = closed
        every, one = fn.cell_terms(ue, rho, coords), fn.cell_terms(ue, rho, coords[:1])
        assert one.value == pytest.approx(every.value, rel=1e-14)
        np.testing.assert_allclose(one.d_ue, every.d_ue, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(one.d_rho, every.d_rho, rtol=1e-13, atol=1e-15)


class DensityIntegral(IntegrandFunction):
    """sum_e rho_e^2 det J: no dependence on u."""

    name = "density_integral"
    Options = ProbeOptions
    points = "quadrature"

    def integrand(self, ops, cell):
        return cell.rho * cell.rho * isoparametric(ops, cell)[1]


def test_a_function_of_rho_alone_needs_no_adjoint_solve():
    _, reg = build_manager()
    reg.add("function", DensityIntegral)
    model = build(reg, ELASTIC_2D + "objective: {type: density_integral}\n")
    x, d = random_point(model, 13)
    values, grads = model.values_and_gradients(x)
    fn, state = model.functions()[0], model.last_state
    assert fn.partial_u(state) is None
    rho = state.rho
    # unit cells; the sum runs over both cases with their weights 1 and 2
    assert values[0] == pytest.approx(3.0 * float(rho @ rho), rel=1e-12)
    res = taylor_test(lambda z: model.values_and_gradients(z)[0][0], grads[0], x, d, h0=H0)
    assert res.ok(1.9, 2.1), res.rates


STRESS = ["{type: stress_pnorm, p: 8.0, q: 0.5}",
          "{type: stress_pnorm, p: 3.0, q: 1.0, region: {box: {min: [0.0, 0.0], max: [6.0, 6.0]}}}"]


@pytest.mark.parametrize("problem, fn", [(ELASTIC_2D, STRESS[0]), (ELASTIC_2D, STRESS[1]),
                                         (ELASTIC_3D, "{type: stress_pnorm, p: 6.0}"),
                                         (PLATE_TRI3, STRESS[0])],
                         ids=["2d", "2d-region", "3d", "tri3-mesh"])
def test_stress_generated_equals_closed_form(registry, problem, fn):
    """The stress p-norm's generated partials equal its closed form to 1e-10, and both
    pass the Taylor test."""
    model = build(registry, problem + f"objective: {fn}\n")
    x, d = random_point(model, 5)
    stress = model.functions()[0]
    assert isinstance(stress, StressPNorm) and stress.closed_form
    values, grads = model.values_and_gradients(x)
    state = model.last_state
    closed = (stress.value(state), stress.partial_u(state), stress.partial_rho(state))
    stress.closed_form = False
    stress._cache = None
    generated = (stress.value(state), stress.partial_u(state), stress.partial_rho(state))
    assert generated[0] == pytest.approx(closed[0], rel=1e-12)
    for a, b in zip(generated[1:], closed[1:]):
        assert np.abs(a - b).max() <= 1e-10 * np.abs(b).max()
    values_g, grads_g = model.values_and_gradients(x)
    assert np.abs(grads_g[0] - grads[0]).max() <= 1e-10 * np.abs(grads[0]).max()
    res = taylor_test(lambda z: model.values_and_gradients(z)[0][0], grads_g[0], x, d, h0=H0)
    assert res.ok(1.9, 2.1), res.rates


@pytest.mark.parametrize("problem, builtin, twin", [
    (ELASTIC_2D, "{type: displacement, region: {point: [12.0, 3.0]}, direction: [1.0, -1.0]}",
     "{type: nodal_mean, region: {point: [12.0, 3.0]}, direction: [1.0, -1.0]}"),
    (ELASTIC_2D, "{type: displacement, region: {face: x_max}, direction: [0.0, 1.0], "
     "case: side}", "{type: nodal_mean, region: {face: x_max}, direction: [0.0, 1.0], "
     "case: side}"),
    (HEAT_2D, "{type: mean_temperature, region: {face: x_max}}",
     "{type: nodal_mean, region: {face: x_max}}"),
    (HEAT_2D, "{type: mean_temperature}", "{type: nodal_mean}"),
], ids=["displacement-point", "displacement-face-case", "temperature-face", "temperature-all"])
def test_nodal_mean_integrand_equals_linear_functional(registry, problem, builtin, twin):
    model = build(registry, problem + f"objective: {builtin}\nconstraints: [{twin[:-1]}, "
                  "max: 1000.0}]\n")
    x, d = random_point(model, 11)
    values, grads = model.values_and_gradients(x)
    assert values[1] == pytest.approx(values[0], rel=1e-12)
    np.testing.assert_allclose(grads[1], grads[0], rtol=0, atol=1e-12 * np.abs(grads[0]).max())
    state = model.last_state
    fns = model.functions()
    np.testing.assert_allclose(fns[1].partial_u(state), fns[0].partial_u(state),
                               rtol=0, atol=1e-14)
    assert not np.any(fns[1].partial_rho(state))


class SoftMaxOptions(Options):
    k: float = 4.0
    """KS parameter."""
    region: Region | None = None
    """Cells."""


class SoftMaxDisplacement(IntegrandFunction):
    """The worked example of docs/plugins.md."""

    name = "soft_max_displacement"
    summary = "Smooth maximum of |u| at the cell centres"
    Options = SoftMaxOptions
    points = "centre"

    def __init__(self, options, model):
        super().__init__(options, model)
        self.reduction = Reduction("ks", options.k)

    def integrand(self, ops, cell):
        nn, k = len(cell.x), len(cell.x[0])
        u = [sum(cell.n[a] * cell.u[a * k + c] for a in range(nn)) for c in range(k)]
        return ops.sqrt(sum(uc * uc for uc in u))


@pytest.mark.parametrize("problem", [ELASTIC_2D, ELASTIC_3D], ids=["2d", "3d"])
def test_plugin_guide_example_taylor_rate_two(problem):
    _, reg = build_manager()
    reg.add("function", SoftMaxDisplacement)
    model = build(reg, problem + "objective: {type: soft_max_displacement, k: 20.0}\n")
    x, d = random_point(model, 4)
    check = check_model_gradients(model, x, d, h0=H0)[0]
    assert check.result.ok(1.9, 2.1), check.result.rates
    state = model.last_state
    u = state.u[:, model.cell_dofs].reshape(state.u.shape[0], model.mesh.n_cells, 4 if
                                            model.mesh.dim == 2 else 8, model.mesh.dim)
    top = np.linalg.norm(u.mean(axis=2), axis=2).max()  # centre value: the nodal mean
    value = model.functions()[0].value(state)
    assert top <= value <= top + np.log(u.shape[0] * model.mesh.n_cells) / 20.0


# -- the backend-neutral entry on the GPU ---------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("cls", [PROBES[3 * 3 + 2], PROBES[2 * 3]], ids=["pnorm-qp", "ratio"])
def test_cell_terms_on_cupy_equal_numpy(registry, cls):
    import cupy

    model = build(registry, ELASTIC_2D + "objective: {type: " + cls.name + "}\n")
    fn = model.functions()[0]
    rng = np.random.default_rng(2)
    n = fn.cells.size
    ue = rng.standard_normal((2, n, 8))
    rho = rng.uniform(0.2, 0.9, n)
    coords = model.mesh.points[model.mesh.cells[fn.cells]]
    host = fn.cell_terms(ue, rho, coords)
    dev = fn.cell_terms(cupy.asarray(ue), cupy.asarray(rho), cupy.asarray(coords))
    assert isinstance(dev.d_ue, cupy.ndarray) and isinstance(dev.d_rho, cupy.ndarray)
    assert dev.value == pytest.approx(host.value, rel=1e-12)
    np.testing.assert_allclose(dev.d_ue.get(), host.d_ue, rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(dev.d_rho.get(), host.d_rho, rtol=1e-11, atol=1e-14)
    d_x = fn.coordinate_terms(cupy.asarray(ue), cupy.asarray(rho), cupy.asarray(coords))
    np.testing.assert_allclose(d_x.get(), fn.coordinate_terms(ue, rho, coords),
                               rtol=1e-11, atol=1e-14)
