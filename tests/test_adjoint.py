"""Gradients of every objective and constraint through the adjoint (Taylor rate 2 for
each function x physics x filter), the force inverter, bad input, and reports that name
the wrong term of a wrong gradient."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from femopt.adjoint.taylor import check_model_gradients
from femopt.cli import main
from femopt.objectives.base import Function
from femopt.plugins.manager import get_registry
from femopt.problem.load import parse_problem
from femopt.evaluation.model import Model

ROOT = Path(__file__).resolve().parents[1]
H0 = 5e-4

ELASTIC_2D = """
mesh: {type: structured, shape: [12, 6], size: [12.0, 6.0]}
physics: {type: linear_elasticity}
supports: [{region: {face: x_min}}]
springs: [{region: {point: [12.0, 3.0]}, dofs: [x], stiffness: 0.1},
          {region: {point: [6.0, 6.0]}, dofs: [y], stiffness: 0.05}]
load_cases:
  - {name: down, loads: [{region: {point: [12.0, 0.0]}, force: [0.0, -1.0]}]}
  - {name: side, weight: 2.0, loads: [{region: {point: [12.0, 6.0]}, force: [1.0, 0.5]}]}
"""
ELASTIC_3D = """
mesh: {type: structured, shape: [6, 3, 2], size: [6.0, 3.0, 2.0]}
physics: {type: linear_elasticity}
supports: [{region: {face: x_min}}]
loads: [{region: {face: x_max}, force: [0.0, -1.0, 0.5], distribute: total}]
"""
HEAT_2D = """
mesh: {type: structured, shape: [12, 6], size: [12.0, 6.0]}
physics: {type: heat_conduction}
supports: [{region: {face: x_min, box: {min: [0.0, 2.0], max: [0.0, 4.0]}}}]
loads: [{body: true, heat: 0.01}]
"""
CD_UNIFORM = """
mesh: {type: structured, shape: [12, 6], size: [2.0, 1.0]}
physics: {type: convection_diffusion, fluid_conductivity: 0.01, velocity: [1.0, 0.3]}
supports: [{region: {face: x_min}}]
loads: [{body: true, region: {box: {min: [0.5, 0.0], max: [1.0, 0.3]}}, heat: 5.0}]
"""
CD_CHANNEL = CD_UNIFORM.replace("velocity: [1.0, 0.3]", "velocity: {profile: channel, max: 2.0}")

PHYSICS = {"elasticity2d": ELASTIC_2D, "elasticity3d": ELASTIC_3D, "heat2d": HEAT_2D,
           "cd_uniform": CD_UNIFORM, "cd_channel": CD_CHANNEL}
FUNCTIONS = {
    "elasticity2d": [
        "{type: compliance}",
        "{type: displacement, region: {point: [12.0, 3.0]}, direction: [1.0, 0.0]}",
        "{type: displacement, region: {box: {min: [10.0, 0.0], max: [12.0, 6.0]}}, "
        "direction: [1.0, -1.0], case: side}",
        "{type: compliant_mechanism, region: {point: [12.0, 3.0]}, direction: [1.0, 0.0]}",
        "{type: stress_pnorm, p: 8.0, q: 0.5}",
        "{type: stress_pnorm, p: 1.0, q: 1.0, region: {box: {min: [0.0, 0.0], max: [6.0, 6.0]}}}",
        "{type: weighted_sum, terms: [{type: compliance, weight: 0.5}, {type: volume, weight: 2.0},"
        " {type: displacement, region: {point: [12.0, 3.0]}, direction: [0.0, 1.0], weight: -1.0}]}",
    ],
    "elasticity3d": [
        "{type: displacement, region: {face: x_max}, direction: [0.0, 0.0, 1.0]}",
        "{type: stress_pnorm, p: 6.0}",
    ],
    "heat2d": [
        "{type: mean_temperature, region: {face: x_max}}",
        "{type: weighted_sum, terms: [{type: thermal_compliance, weight: 1.0}, "
        "{type: mean_temperature, weight: 3.0}]}",
    ],
    "cd_uniform": [
        "{type: mean_temperature, region: {box: {min: [0.5, 0.0], max: [1.0, 0.3]}}}",
        "{type: thermal_compliance}",
        "{type: weighted_sum, terms: [{type: mean_temperature, weight: 1.0}, "
        "{type: volume, weight: 0.1}]}",
    ],
    "cd_channel": ["{type: mean_temperature}"],
}
FILTERS = {
    "none": "",
    "density": "filters: [{type: density, radius: 1.5}]\n",
    "density+heaviside": "filters: [{type: density, radius: 1.5}, "
                         "{type: heaviside, beta: 4.0, eta: 0.45}]\n",
}
CASES = [(p, f, k) for p, fns in FUNCTIONS.items() for f in FILTERS for k in range(len(fns))]


def build(text: str) -> Model:
    registry = get_registry()
    return Model(parse_problem(text, "test.yaml", registry), registry)


def filters_for(physics: str, name: str) -> str:
    """Filter radii scaled to the cell size (the convection meshes have h = 1/6)."""
    text = FILTERS[name]
    return text.replace("radius: 1.5", "radius: 0.25") if physics.startswith("cd") else text


@pytest.mark.parametrize("physics, filters, k", CASES,
                         ids=[f"{p}-{FUNCTIONS[p][k].split(',')[0][7:]}{k}-{f}"
                              for p, f, k in CASES])
def test_function_gradients_taylor_rate_two(physics, filters, k):
    """Each function as objective and, with a max bound, as constraint (MMA scaling)."""
    fn = FUNCTIONS[physics][k]
    text = (PHYSICS[physics] + filters_for(physics, filters)
            + "design: {interpolation: {type: simp, penalty: 3.0, min: 1.0e-3}}\n"
            + f"objective: {fn}\n"
            + "constraints: [" + fn[:-1] + ", max: 10.0}]\n" + "optimizer: {type: mma}\n")
    model = build(text)
    rng = np.random.default_rng(k)
    x = rng.uniform(0.2, 0.8, model.n)
    d = rng.uniform(-1.0, 1.0, model.n)
    for check in check_model_gradients(model, x, d, h0=H0):
        res = check.result
        assert not res.exact, f"{check.name}: linear along the direction"
        assert res.ok(1.9, 2.1), f"{check.name}: rates {res.rates} ({check.wrong_term})"


# -- the force inverter --------------------------------------------------------------

def test_force_inverter_is_a_mechanism_with_pinned_output():
    from femopt.runner import build_model

    model = build_model(ROOT / "problems" / "force_inverter.yaml")
    result = model.optimizer.run(model, model.x0.copy(), 200)
    state = model.path.analyse(model.physical(result.x)[0])
    pts = model.mesh.points
    node_in = int(np.flatnonzero(np.all(pts == [0.0, 40.0], axis=1))[0])
    node_out = int(np.flatnonzero(np.all(pts == [80.0, 40.0], axis=1))[0])
    u_in, u_out = state.u[0, 2 * node_in], state.u[0, 2 * node_out]
    assert u_in > 0.0 and u_out < 0.0  # pushed right, the output moves left
    # measured: u_out = -1.071 after 134 iterations (u_in = 2.54); the classic design
    assert -1.15 < u_out < -0.95
    assert model.history[-1].objective == pytest.approx(u_out, rel=1e-6)  # last step tiny
    assert model.history[-1].constraints["volume"] == pytest.approx(0.3, abs=2e-3)
    assert result.converged


# -- bad input -----------------------------------------------------------------------

BASE = ELASTIC_2D.replace("springs:", "unused_springs:").split("unused_springs")[0] + \
    "loads: [{region: {point: [12.0, 0.0]}, force: [0.0, -1.0]}]\n"
BAD = {
    "region selects no node": (
        "objective: {type: displacement, region: {point: [30.0, 0.0]}, direction: [0, 1]}\n",
        "objective", "region: the region selects no node"),
    "stress limit <= 0": (
        "objective: {type: volume}\nconstraints: [{type: stress_pnorm, max: 0.0}]\n",
        "constraints.0.max", "stress_pnorm limit must be > 0"),
    "p-norm exponent < 1": (
        "objective: {type: stress_pnorm, p: 0.5}\n", "objective.p",
        "greater than or equal to 1"),
    "objective does not depend on the design": (
        "objective: {type: displacement, region: {face: x_min}, direction: [1, 0]}\n",
        "objective", "does not depend on the design"),
    "mechanism without springs": (
        "objective: {type: compliant_mechanism, region: {point: [12.0, 3.0]}, "
        "direction: [1, 0]}\n", "objective", "needs an output spring"),
    "weighted sum: unknown term type": (
        "objective: {type: weighted_sum, terms: [{type: volume, weight: 1.0}, "
        "{type: complience, weight: 1.0}]}\n", "objective.terms.1.type",
        "did you mean 'compliance'"),
    "weighted sum: bad term option": (
        "objective: {type: weighted_sum, terms: [{type: stress_pnorm, p: 0.2, weight: 1.0}]}\n",
        "objective.terms.0.p", "greater than or equal to 1"),
    "weighted sum: term without weight": (
        "objective: {type: weighted_sum, terms: [{type: compliance}]}\n",
        "objective.terms.0", "finite, non-zero 'weight'"),
    "weighted sum: term region selects nothing": (
        "objective: {type: weighted_sum, terms: [{type: compliance, weight: 1.0}, "
        "{type: displacement, region: {point: [1.5, 1.5]}, direction: [0, 1], weight: 1}]}\n",
        "objective.terms.1", "region selects no node"),
    "mean temperature on elasticity": (
        "objective: {type: mean_temperature}\n", "objective", "needs a heat physics"),
    "unknown load case": (
        "objective: {type: displacement, region: {point: [12.0, 0.0]}, direction: [0, 1], "
        "case: up}\n", "objective", "unknown load case 'up'"),
}


@pytest.mark.parametrize("what", BAD)
def test_bad_function_input_is_a_located_error(what, write_problem, capsys):
    text, path, message = BAD[what]
    problem = write_problem(BASE + text)
    assert main(["validate", str(problem)]) == 2
    err = capsys.readouterr().err
    line = next((ln for ln in err.splitlines() if f": {path}: " in ln), None)
    assert line is not None, err
    assert line.startswith(f"{problem}:") and message in line, err


# -- reports of a wrong gradient ------------------------------------------------------

class _Wrong(Function):
    """Mean squared displacement with one of its partials scaled by mistake."""

    name = "wrong"

    def __init__(self, model, wrong: str):
        super().__init__(None, model)
        self.wrong = wrong

    SCALE = 1e-6  # both terms of the gradient of a similar size

    def value(self, state):
        return float(self.SCALE * (state.u**2).sum() + (state.rho**2).sum())

    def partial_u(self, state):
        return (2.6 if self.wrong == "u" else 2.0) * self.SCALE * state.u

    def partial_rho(self, state):
        return (2.6 if self.wrong == "rho" else 2.0) * state.rho


@pytest.mark.parametrize("wrong, term", [("rho", "partial_rho"), ("u", "adjoint term"),
                                         (None, None)])
def test_failing_taylor_test_names_the_function_and_the_term(wrong, term):
    model = build(BASE + "objective: {type: compliance}\n")
    model.objective = _Wrong(model, wrong)
    rng = np.random.default_rng(3)
    x, d = rng.uniform(0.3, 0.7, model.n), rng.uniform(-1, 1, model.n)
    (check,) = check_model_gradients(model, x, d, h0=H0)
    assert check.name == "objective wrong"
    assert check.ok == (wrong is None)
    assert check.wrong_term == term
    if wrong == "u":
        assert check.partial.ok()  # the explicit term alone is right


@pytest.mark.parametrize("problem", ["force_inverter", "l_bracket_stress", "heat_sink_flow"])
def test_check_gradients_covers_the_shipped_problems(problem, capsys):
    assert main(["check-gradients", str(ROOT / "problems" / f"{problem}.yaml")]) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if " rates " in ln]
    assert len(lines) == 2 and all(ln.rstrip().endswith("ok") for ln in lines)
    assert any(ln.startswith("objective") for ln in lines)


def test_springs_add_to_the_diagonal_only():
    with_springs = build(ELASTIC_2D + "objective: {type: compliance}\n")
    no_springs = "\n".join(ln for ln in ELASTIC_2D.splitlines() if "stiffness" not in ln)
    without = build(no_springs + "\nobjective: {type: compliance}\n")
    ones = np.ones(with_springs.n)
    diff = (with_springs.assembler.assemble(ones, with_springs.ke)
            - without.assembler.assemble(ones, without.ke)).tocoo()
    diff.eliminate_zeros()
    assert np.all(diff.row == diff.col)
    np.testing.assert_allclose(sorted(diff.data), [0.05, 0.1])
    assert np.count_nonzero(with_springs.springs) == 2


def test_one_adjoint_solve_for_all_functions_and_load_cases():
    """Three non-self-adjoint functions over two load cases: one transpose solve call,
    no refactorization. The stress needs a column per case; a displacement summed over
    the cases needs one (its dJ/du_c differ by the case weights only): 2 + 1 + 1."""
    model = build(ELASTIC_2D + "objective: {type: stress_pnorm}\nconstraints: ["
                  "{type: displacement, region: {point: [12.0, 3.0]}, direction: [1, 0], max: 1},"
                  "{type: compliant_mechanism, region: {point: [6.0, 6.0]}, "
                  "direction: [0, 1], max: 1}]\n")
    calls = []
    solve = model.solver.solve
    model.solver.solve = lambda b, transpose=False, x0=None: (
        calls.append((transpose, b.shape)) or solve(b, transpose, x0))
    model.values_and_gradients(np.full(model.n, 0.5))
    n_free = model.assembler.free.size
    assert calls == [(False, (n_free, 2)), (True, (n_free, 4))]
    assert model.solver.factorizations == 1


def test_heat_sink_cools_the_chip_through_the_flow():
    """30 MMA iterations (the full run converges in 94 at T_mean 2.094): the chip's
    mean temperature falls to an eighth, the solid stays out of the inlet strip and
    reaches from the chip into the channel."""
    from femopt.runner import build_model

    model = build_model(ROOT / "problems" / "heat_sink_flow.yaml")
    result = model.optimizer.run(model, model.x0.copy(), 30)
    first, last = model.history[0].objective, model.history[-1].objective
    assert last < first / 6.0  # measured 16.5 -> 2.097
    assert 2.0 < last < 2.3
    assert model.history[-1].constraints["volume"] == pytest.approx(0.2, abs=2e-3)
    rho = model.physical(result.x)[0].reshape(40, 80)  # (y, x), h = 0.025
    assert rho[:, :12].max() == 0.0  # the passive inlet strip x < 0.3
    assert rho[10:20, 12:24].mean() > 0.5  # fins up into the flow upstream of the chip


def test_l_bracket_meets_its_stress_limit_with_less_material():
    """60 iterations (the full run ends on ftol after 150, volume 0.1573 at the limit)."""
    from femopt.runner import build_model

    model = build_model(ROOT / "problems" / "l_bracket_stress.yaml")
    model.optimizer.run(model, model.x0.copy(), 60)
    rec = model.history[-1]
    assert rec.constraints["stress"] <= 1.8 * 1.01  # measured 1.7986
    assert rec.objective < 0.25  # of the square; the full L is 0.6345
    assert model.history[0].constraints["stress"] == pytest.approx(1.0, abs=0.01)
