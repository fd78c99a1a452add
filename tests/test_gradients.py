"""Taylor tests of gradients through the whole model (filters, interpolation, adjoint),
and finite-difference checks of each filter and interpolation on its own."""

from __future__ import annotations

import numpy as np
import pytest

from femopt.adjoint.sensitivity import element_sensitivity, function_gradients
from femopt.adjoint.taylor import taylor_test
from femopt.design.interpolation import Interpolation
from femopt.filters.base import radius_weights
from femopt.filters.heaviside import Heaviside, HeavisideOptions
from femopt.filters.radius import DensityFilter, RadiusOptions, SensitivityFilter
from femopt.mesh import structured_grid
from femopt.objectives.base import Function
from femopt.plugins.manager import get_registry
from femopt.problem.load import parse_problem
from femopt.evaluation.model import Model

H0 = 2e-3  # first Taylor step; the directions have entries in [-1, 1]

PHYSICS = {
    "elasticity2d": """
mesh: {type: structured, shape: [12, 6], size: [12.0, 6.0]}
physics: {type: linear_elasticity, E: 1.0, nu: 0.3}
supports: [{region: {face: x_min}}]
loads: [{region: {point: [12.0, 0.0]}, force: [0.0, -1.0]}]
objective: {type: compliance}
""",
    "elasticity3d": """
mesh: {type: structured, shape: [6, 3, 3], size: [6.0, 3.0, 3.0]}
physics: {type: linear_elasticity, E: 1.0, nu: 0.3}
supports: [{region: {face: x_min}}]
loads: [{region: {face: x_max}, force: [0.0, 0.0, -1.0], distribute: total}]
objective: {type: compliance}
""",
    "heat2d": """
mesh: {type: structured, shape: [12, 6], size: [12.0, 6.0]}
physics: {type: heat_conduction, conductivity: 1.0}
supports: [{region: {face: x_min, box: {min: [0.0, 2.0], max: [0.0, 4.0]}}}]
loads: [{body: true, heat: 0.01}]
objective: {type: thermal_compliance}
""",
}
COMPLIANCE = {"elasticity2d": "compliance", "elasticity3d": "compliance",
              "heat2d": "thermal_compliance"}
FILTERS = {
    "none": "",
    "density": "filters: [{type: density, radius: 1.5}]\n",
    "density+heaviside": "filters: [{type: density, radius: 1.5}, "
                         "{type: heaviside, beta: 4.0, eta: 0.45}]\n",
}
INTERPOLATIONS = {
    "simp": "design: {interpolation: {type: simp, penalty: 3.0, min: 1.0e-3}}\n",
    "ramp": "design: {interpolation: {type: ramp, penalty: 8.0, min: 1.0e-3}}\n",
}


def build(text: str) -> Model:
    registry = get_registry()
    return Model(parse_problem(text, "test.yaml", registry), registry)


def random_point(model: Model, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A design in [0.2, 0.8] (passive cells at their value) and a direction in [-1, 1]."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.2, 0.8, model.n)
    x[model.passive_idx] = model.passive_val
    return x, rng.uniform(-1.0, 1.0, model.n)


def assert_taylor(result, exact_ok: bool = True) -> None:
    if result.exact:
        assert exact_ok, "the function was linear along the direction; expected curvature"
        return
    assert result.ok(1.9, 2.1), f"Taylor rates {result.rates}"


@pytest.mark.parametrize("interp", INTERPOLATIONS)
@pytest.mark.parametrize("filters", FILTERS)
@pytest.mark.parametrize("physics", PHYSICS)
def test_model_gradients_taylor(physics, filters, interp):
    """Objective and constraints as MMA sees them (objective divided by its first value,
    constraints by their limits): volume <= 0.4 and compliance >= 1 (a min bound flips
    the sign of the gradient)."""
    comp = COMPLIANCE[physics]
    text = (PHYSICS[physics] + FILTERS[filters] + INTERPOLATIONS[interp]
            + f"constraints: [{{type: volume, max: 0.4}}, {{type: {comp}, min: 1.0}}]\n"
            + "optimizer: {type: mma}\n")
    model = build(text)
    x, d = random_point(model)
    ev = model.evaluate(x)  # the first evaluation fixes the objective scale
    assert ev.f == pytest.approx(1.0)
    assert ev.dg.shape == (2, model.n)
    assert ev.info[comp] > 1.0  # so the min-bound is normalized by 1 and negative
    assert ev.g[1] == pytest.approx(1.0 - ev.info[comp])

    assert_taylor(taylor_test(lambda z: model.evaluate(z).f, ev.df, x, d, h0=H0),
                  exact_ok=False)
    # volume is linear in x unless the Heaviside projection is in the chain
    vol = taylor_test(lambda z: model.evaluate(z).g[0], ev.dg[0], x, d, h0=H0)
    assert vol.exact == ("heaviside" not in filters)
    assert_taylor(vol)
    assert_taylor(taylor_test(lambda z: model.evaluate(z).g[1], ev.dg[1], x, d, h0=H0),
                  exact_ok=False)


TWO_CASES = """
mesh: {type: structured, shape: [12, 6], size: [12.0, 6.0]}
physics: {type: linear_elasticity}
supports: [{region: {face: x_min}}]
load_cases:
  - {name: down, weight: 1.0, loads: [{region: {point: [12.0, 0.0]}, force: [0.0, -1.0]}]}
  - {name: side, weight: 2.5, loads: [{region: {point: [12.0, 6.0]}, force: [1.0, 0.5]}]}
filters: [{type: density, radius: 1.5}]
objective: {type: compliance}
"""


def test_two_load_cases_weighted_sum_and_gradient():
    model = build(TWO_CASES)
    assert model.case_names == ["down", "side"]
    x, d = random_point(model, seed=1)
    values, grads = model.values_and_gradients(x)
    # the weighted sum of the single-case compliances
    singles = []
    for case in (0, 1):
        one = build(TWO_CASES)
        one.loads = one.loads[case:case + 1]
        one.weights = np.ones(1)
        one.loads_free = one.assembler.restrict(one.loads.T)
        singles.append(one.values_and_gradients(x))
    assert values[0] == pytest.approx(singles[0][0][0] + 2.5 * singles[1][0][0], rel=1e-12)
    np.testing.assert_allclose(grads[0], singles[0][1][0] + 2.5 * singles[1][1][0],
                               rtol=1e-10, atol=1e-12 * np.abs(grads[0]).max())
    assert_taylor(taylor_test(lambda z: model.values_and_gradients(z)[0][0], grads[0], x, d,
                              h0=H0), exact_ok=False)


PASSIVE = """
design:
  passive:
    - {region: {box: {min: [10.0, 0.0], max: [12.0, 2.0]}}, value: solid}
    - {region: {box: {min: [4.0, 2.0], max: [6.0, 4.0]}}, value: void}
constraints: [{type: volume, max: 0.5}]
"""


@pytest.mark.parametrize("filters", ["none", "density+heaviside"])
def test_passive_regions_gradient(filters):
    model = build(PHYSICS["elasticity2d"] + FILTERS[filters] + PASSIVE)
    assert model.passive_idx.size == 8  # two 2 x 2 blocks of unit cells
    assert np.count_nonzero(model.passive_val == 1.0) == 4
    np.testing.assert_array_equal(model.xmin[model.passive_idx], model.passive_val)
    np.testing.assert_array_equal(model.xmax[model.passive_idx], model.passive_val)
    x, d = random_point(model, seed=2)
    rho, _ = model.physical(x + 0.1 * d)  # the physical densities ignore moves there
    np.testing.assert_array_equal(rho[model.passive_idx], model.passive_val)
    values, grads = model.values_and_gradients(x)
    for k in range(2):
        if filters == "none":
            assert np.all(grads[k][model.passive_idx] == 0.0)
            assert np.count_nonzero(grads[k]) == model.n - 8
        # with a filter, x in a passive cell still moves its neighbours' densities
        assert_taylor(taylor_test(lambda z: model.values_and_gradients(z)[0][k], grads[k],
                                  x, d, h0=H0), exact_ok=(k == 1 and filters == "none"))


class NodalValue(Function):
    """sum_c c_c u_c[dof]: a function that is not self-adjoint, so its gradient goes
    through the adjoint solve (solve(transpose=True) with one column per load case)."""

    name = "nodal_value"

    def __init__(self, model, dof: int, coef):
        super().__init__(None, model)
        self.dof, self.coef = dof, np.asarray(coef, dtype=float)

    def value(self, state):
        return float(self.coef @ state.u[:, self.dof])

    def partial_u(self, state):
        du = np.zeros_like(state.u)
        du[:, self.dof] = self.coef
        return du


@pytest.mark.parametrize("solver", ["{type: direct}", "{type: pcg, rtol: 1.0e-12}"])
def test_adjoint_solve_for_functions_that_are_not_self_adjoint(solver):
    model = build(TWO_CASES + f"solver: {solver}\n")
    tip_y = int(np.flatnonzero(np.all(model.mesh.points == [12.0, 0.0], axis=1))[0]) * 2 + 1
    fns = [NodalValue(model, tip_y, [1.0, 0.0]), model.objective,
           NodalValue(model, tip_y - 1, [0.5, -2.0])]
    x, d = random_point(model, seed=3)

    def values(z):
        state = model.path.analyse(model.physical(z)[0])
        return [fn.value(state) for fn in fns]

    rho, inputs = model.physical(x)
    state = model.path.analyse(rho)
    grads = function_gradients(fns, state, model.solver, model.assembler, model.cell_dofs,
                               model.ke, model.interp.derivative(rho))
    grads = [model.chain(g, inputs) for g in grads]
    # compliance through the shared path equals the model's own gradient
    np.testing.assert_allclose(grads[1], model.values_and_gradients(x)[1][0], rtol=1e-9,
                               atol=1e-12 * np.abs(grads[1]).max())
    for k in range(3):
        assert_taylor(taylor_test(lambda z: values(z)[k], grads[k], x, d, h0=H0),
                      exact_ok=False)


def test_taylor_test_detects_a_wrong_gradient():
    model = build(PHYSICS["elasticity2d"] + FILTERS["density"])
    x, d = random_point(model, seed=4)
    values, grads = model.values_and_gradients(x)
    f = lambda z: model.values_and_gradients(z)[0][0]  # noqa: E731
    right = taylor_test(f, grads[0], x, d, h0=H0)
    wrong = taylor_test(f, 1.1 * grads[0], x, d, h0=H0)
    assert right.ok(1.9, 2.1)
    assert not wrong.ok(1.9, 2.1)
    np.testing.assert_allclose(wrong.rates, 1.0, atol=0.1)  # measured: 1.08, 1.04, 1.02
    # a gradient wrong in a single entry is caught as well
    one = grads[0].copy()
    one[7] *= 1.5
    assert not taylor_test(f, one, x, d, h0=H0).ok(1.9, 2.1)


def test_sensitivity_filter_is_heuristic():
    """The exact gradient ignores the sensitivity filter (rate 2); the filtered one that
    the optimizer sees is not a gradient of the objective (rate 1)."""
    model = build(PHYSICS["elasticity2d"] + "filters: [{type: sensitivity, radius: 1.5}]\n")
    x, d = random_point(model, seed=5)
    exact = model.values_and_gradients(x)[1][0]
    assert_taylor(taylor_test(lambda z: model.values_and_gradients(z)[0][0], exact, x, d,
                              h0=H0), exact_ok=False)
    ev = model.evaluate(x)
    assert np.abs(ev.df - model.objective_scale * exact).max() > 0.1 * np.abs(ev.df).max()
    filtered = taylor_test(lambda z: model.evaluate(z).f, ev.df, x, d, h0=H0)
    np.testing.assert_allclose(filtered.rates, 1.0, atol=0.1)  # measured: 1.00


# -- filters on their own --------------------------------------------------------

MESHES = {"2d": ((10, 5), (10.0, 5.0)), "3d": ((5, 4, 3), (5.0, 4.0, 3.0))}


def make_filter(kind: str, mesh, beta: float = 4.0, eta: float = 0.5):
    if kind == "density":
        return DensityFilter(RadiusOptions(radius=1.8), mesh)
    if kind == "sensitivity":
        return SensitivityFilter(RadiusOptions(radius=1.8), mesh)
    return Heaviside(HeavisideOptions(beta=beta, eta=eta), mesh)


@pytest.mark.parametrize("dim", MESHES)
@pytest.mark.parametrize("kind, beta, eta", [
    ("density", 0, 0), ("sensitivity", 0, 0),
    ("heaviside", 1.0, 0.5), ("heaviside", 8.0, 0.5), ("heaviside", 16.0, 0.3)])
def test_filter_backward_is_derivative_of_forward(dim, kind, beta, eta):
    mesh = structured_grid(*MESHES[dim])
    flt = make_filter(kind, mesh, beta, eta)
    rng = np.random.default_rng(6)
    x = rng.uniform(0.2, 0.8, mesh.n_cells)
    w = rng.standard_normal(mesh.n_cells)  # J(x) = w . forward(x)
    dx = rng.uniform(-1.0, 1.0, mesh.n_cells)
    grad = flt.backward(x, w)
    result = taylor_test(lambda z: float(w @ flt.forward(z)), grad, x, dx, h0=1e-3 / max(beta, 1))
    assert result.exact == (kind != "heaviside")  # density/sensitivity are linear
    assert_taylor(result)
    # central differences agree with the vector-Jacobian product
    h = 1e-6
    fd = (w @ flt.forward(x + h * dx) - w @ flt.forward(x - h * dx)) / (2 * h)
    assert fd == pytest.approx(grad @ dx, rel=1e-7)


@pytest.mark.parametrize("dim", MESHES)
def test_density_filter_adjoint_identity_and_constants(dim):
    mesh = structured_grid(*MESHES[dim])
    flt = make_filter("density", mesh)
    rng = np.random.default_rng(7)
    x, y = rng.standard_normal((2, mesh.n_cells))
    # backward is the transpose of the (linear) forward map
    assert flt.backward(None, y) @ x == pytest.approx(y @ flt.forward(x), rel=1e-12)
    np.testing.assert_allclose(flt.forward(np.full(mesh.n_cells, 0.3)), 0.3, rtol=1e-14)
    # a cone of radius 1.8 over unit cells reaches an interior cell's 3^dim - 1 nearest
    # neighbours (distances 1, sqrt(2) and, in 3D, sqrt(3) < 1.8) and no others
    inner = np.flatnonzero(np.all(np.abs(mesh.centroids() - mesh.centroids().mean(0)) < 1.0,
                                  axis=1))[0]
    c = mesh.centroids()
    expected = np.count_nonzero(np.linalg.norm(c - c[inner], axis=1) < 1.8)
    assert flt.H[inner].nnz == expected == (9 if dim == "2d" else 27)


@pytest.mark.parametrize("dim", MESHES)
def test_density_filter_weights_are_the_cone(dim):
    mesh = structured_grid(*MESHES[dim])
    radius = 1.8
    h, hs = radius_weights(mesh, radius)
    c = mesh.centroids()
    dense = np.maximum(0.0, radius - np.linalg.norm(c[:, None] - c[None], axis=2))
    np.testing.assert_allclose(h.diagonal(), radius)
    np.testing.assert_allclose(h.toarray(), dense, atol=1e-14)
    np.testing.assert_allclose(hs, dense.sum(axis=1), rtol=1e-14)


@pytest.mark.parametrize("beta, eta", [(1.0, 0.5), (8.0, 0.5), (16.0, 0.3)])
def test_heaviside_end_points_and_threshold(beta, eta):
    flt = make_filter("heaviside", structured_grid((2, 2), (2.0, 2.0)), beta, eta)
    out = flt.forward(np.array([0.0, eta, 1.0]))
    np.testing.assert_allclose(out[[0, 2]], [0.0, 1.0], atol=1e-15)
    # at the threshold: tanh(beta eta) / (tanh(beta eta) + tanh(beta (1 - eta)))
    t = np.tanh(beta * eta)
    assert out[1] == pytest.approx(t / (t + np.tanh(beta * (1.0 - eta))), rel=1e-14)


def test_heaviside_continuation_steps_beta():
    flt = Heaviside(HeavisideOptions(beta=1.0, beta_max=4.0, factor=2.0, every=10),
                    structured_grid((2, 2), (2.0, 2.0)))
    steps = [it for it in range(1, 60) if flt.advance(it, change=1.0, tol=0.01)]
    assert steps == [10, 20]
    assert flt.state() == {"beta": 4.0}
    assert not flt.advance(100, change=0.0, tol=0.01)  # at beta_max


def test_sensitivity_filter_formula_on_uniform_design():
    mesh = structured_grid((6, 4), (6.0, 4.0))
    flt = make_filter("sensitivity", mesh)
    df = np.random.default_rng(8).standard_normal(mesh.n_cells)
    x = np.full(mesh.n_cells, 0.5)
    # uniform x: a weighted average of df, which leaves a constant unchanged
    np.testing.assert_allclose(flt.modify_objective_gradient(x, np.full(mesh.n_cells, -2.0)),
                               -2.0, rtol=1e-14)
    out = flt.modify_objective_gradient(x, df)
    np.testing.assert_allclose(out, (flt.H @ df) / flt.Hs, rtol=1e-13)
    assert np.abs(out - df).max() > 0.1


# -- interpolation -----------------------------------------------------------------

@pytest.mark.parametrize("kind, penalty", [("simp", 1.0), ("simp", 3.0), ("simp", 4.5),
                                           ("ramp", 0.0), ("ramp", 3.0), ("ramp", 8.0)])
def test_interpolation_derivative(kind, penalty):
    interp = Interpolation(kind, penalty, 1e-3)
    assert interp.value(np.array(0.0)) == pytest.approx(1e-3, abs=1e-15)
    assert interp.value(np.array(1.0)) == pytest.approx(1.0, abs=1e-15)
    rho = np.linspace(0.05, 1.0, 20)
    h = 1e-6
    fd = (interp.value(rho + h) - interp.value(rho - h)) / (2 * h)
    np.testing.assert_allclose(interp.derivative(rho), fd, rtol=1e-7)
    d = np.random.default_rng(9).uniform(-1.0, 1.0, rho.size)
    x = 0.9 * rho
    result = taylor_test(lambda z: float(interp.value(z).sum()), interp.derivative(x), x, d,
                         h0=1e-3)
    linear = (kind, penalty) in (("simp", 1.0), ("ramp", 0.0))
    assert result.exact == linear
    assert_taylor(result)


def test_element_sensitivity_shared_and_per_cell_agree():
    model = build(TWO_CASES)
    rng = np.random.default_rng(10)
    lam, u = rng.standard_normal((2, 2, model.n_dofs))
    shared = element_sensitivity(model.cell_dofs, model.ke, lam, u)
    per_cell = element_sensitivity(model.cell_dofs,
                                   np.broadcast_to(model.ke, (model.n, *model.ke.shape)), lam, u)
    np.testing.assert_allclose(per_cell, shared, rtol=1e-12, atol=1e-14)
    e = 5
    le, ue = lam[:, model.cell_dofs[e]], u[:, model.cell_dofs[e]]
    assert shared[e] == pytest.approx(sum(le[c] @ model.ke @ ue[c] for c in range(2)),
                                      rel=1e-12)
