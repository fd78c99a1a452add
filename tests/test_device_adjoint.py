"""The device path's adjoint: functions that are not self-adjoint (displacement, mean
temperature, the compliant mechanism with its springs, weighted sums with compliance and
volume, several load cases) against the CPU path and by Taylor tests, with NumPy arrays
here and CuPy on the GPU; the one-pass sensitivity kernel's twin; OC's bisection on a
linear volume constraint.
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml

import femopt.runner
from femopt.adjoint.grid_sensitivity import grid_sensitivity_cases
from femopt.adjoint.sensitivity import element_sensitivity
from femopt.adjoint.taylor import check_model_gradients
from femopt.backend import to_host
from femopt.cli import main
from femopt.plugins.manager import get_registry
from femopt.problem.load import parse_problem, read_problem
from femopt.evaluation.model import Model
from femopt.solvers.multigrid import MultigridSolver

# small enough for the CPU path's direct solver, large enough for three multigrid levels
BEAM = {
    "mesh": {"type": "structured", "shape": [24, 8], "size": [24.0, 8.0]},
    "physics": {"type": "linear_elasticity"},
    "supports": [{"region": {"face": "x_min"}}],
    "load_cases": [
        {"name": "down", "loads": [{"region": {"point": [24.0, 0.0]}, "force": [0.0, -1.0]}]},
        {"name": "pull", "weight": 0.5,
         "loads": [{"region": {"point": [24.0, 8.0]}, "force": [1.0, 0.5]}]},
    ],
    "filters": [{"type": "density", "radius": 1.5}],
    "objective": {"type": "displacement", "region": {"point": [24.0, 0.0]},
                  "direction": [0.0, -1.0]},
    "constraints": [{"type": "volume", "max": 0.5}],
    "optimizer": {"type": "mma", "max_iter": 5},
}
MIDDLE = {"box": {"min": [12.0, 0.0], "max": [12.0, 8.0]}}
CASES = {
    # a displacement summed over both cases (one adjoint solve)
    "displacement": {},
    # compliance (self-adjoint) plus a displacement of one case, and a volume term
    "weighted_sum": {"objective": {"type": "weighted_sum", "terms": [
        {"type": "compliance", "weight": 0.3},
        {"type": "displacement", "weight": 2.0, "region": MIDDLE, "direction": [1.0, -1.0],
         "case": "pull"},
        {"type": "volume", "weight": 5.0}]}},
    # compliance objective under a displacement constraint and a volume constraint
    "constraint": {"objective": {"type": "compliance"},
                   "constraints": [{"type": "volume", "max": 0.5},
                                   {"type": "displacement", "region": MIDDLE,
                                    "direction": [0.0, -1.0], "max": 4.0}]},
    # heat: a mean temperature, Heaviside after the density filter
    "mean_temperature": {
        "physics": {"type": "heat_conduction"},
        "supports": [{"region": {"face": "x_min", "box": {"min": [0.0, 3.0],
                                                           "max": [0.0, 5.0]}}}],
        "load_cases": None,
        "loads": [{"body": True, "heat": 0.01}],
        "filters": [{"type": "density", "radius": 1.5},
                    {"type": "heaviside", "beta": 2.0}],
        "objective": {"type": "mean_temperature", "region": {"face": "x_max"}}},
    # 3D hex8 elasticity
    "hex8": {"mesh": {"type": "structured", "shape": [8, 4, 4], "size": [8.0, 4.0, 4.0]},
             "load_cases": None,
             "loads": [{"region": {"point": [8.0, 0.0, 0.0]}, "force": [0.0, 0.0, -1.0]}],
             "objective": {"type": "displacement", "region": {"face": "x_max"},
                           "direction": [0.0, 0.0, -1.0]}},
}
MULTIGRID = {"type": "multigrid", "rtol": 1e-12, "coarsest_size": 60}
# float32 V-cycles under the GPU path's float64 CG: 1e-10 is as far as it is asked to go
GPU_RTOL = 1e-10


def build(data: dict, **kwargs) -> Model:
    registry = get_registry()
    return Model(parse_problem(yaml.safe_dump(data), "problem.yaml", registry), registry,
                 **kwargs)


def case(name: str, **changes) -> dict:
    data = {**BEAM, **CASES[name], **changes}
    return {k: v for k, v in data.items() if v is not None}


def pair(name: str, xp):
    """The CPU path (direct solver) and the device path (multigrid, arrays of xp)."""
    cpu = build(case(name), device="cpu")
    solver = MULTIGRID if xp is np else {**MULTIGRID, "rtol": GPU_RTOL}
    dev = build(case(name, solver=solver), array_module=xp)
    assert dev.device == "gpu" and len(dev.solver.levels) == 0
    return cpu, dev


def point(model: Model, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.25, 0.75, model.n)
    d = rng.standard_normal(model.n)
    return x, d


def gradients_agree(name: str, xp) -> None:
    cpu, dev = pair(name, xp)
    x, _ = point(cpu)
    v_cpu, g_cpu = cpu.values_and_gradients(x)
    v_dev, g_dev = dev.values_and_gradients(xp.asarray(x))
    assert len(v_dev) == len(v_cpu) == 1 + len(cpu.bounds)
    for a, b, ga, gb in zip(v_cpu, v_dev, g_cpu, g_dev):
        assert abs(b - a) <= 1e-9 * abs(a)
        err = np.abs(to_host(gb) - ga).max() / np.abs(ga).max()
        assert err <= 1e-6, err
    # the forward and the adjoint shared one hierarchy
    assert len(dev.solver.levels) == 3


def taylor_rates(name: str, xp) -> None:
    _, dev = pair(name, xp)
    x, d = point(dev, seed=1)
    checks = check_model_gradients(dev, xp.asarray(x), xp.asarray(d))
    for check in checks:
        res = check.result
        if check.name.startswith("constraint volume"):
            assert res.exact
            continue
        assert 1.9 <= min(res.rates) and max(res.rates) <= 2.1, (check.name, res.rates)


@pytest.mark.parametrize("name", list(CASES))
def test_device_path_gradients_equal_the_cpu_path(name):
    gradients_agree(name, np)


@pytest.mark.parametrize("name", ["displacement", "weighted_sum", "constraint"])
def test_device_path_taylor_rates(name):
    taylor_rates(name, np)


def test_adjoint_reuses_the_hierarchy_and_warm_starts(monkeypatch):
    builds = []
    original = MultigridSolver._build_hierarchy
    monkeypatch.setattr(MultigridSolver, "_build_hierarchy",
                        lambda self, *a: builds.append(1) or original(self, *a))
    _, dev = pair("weighted_sum", np)
    x, d = point(dev)
    dev.values_and_gradients(x)
    first = dict(dev.path.cg_iterations)
    # one solve per load case, one adjoint solve (the displacement of one case)
    assert len(first["forward"]) == 2 and len(first["adjoint"]) == 1
    assert first["adjoint"][0] > 3
    dev.values_and_gradients(x)  # the same design: every warm start is the solution
    assert dev.path.cg_iterations == {"forward": [0, 0], "adjoint": [0]}
    dev.values_and_gradients(x + 1e-3 * d)
    assert 0 < dev.path.cg_iterations["adjoint"][0] < first["adjoint"][0]
    assert builds == [1]


def test_one_adjoint_solve_for_a_displacement_summed_over_cases():
    _, dev = pair("displacement", np)
    dev.values_and_gradients(point(dev)[0])
    assert len(dev.path.cg_iterations["adjoint"]) == 1


@pytest.mark.parametrize("shape, k", [((5, 3), 2), ((4, 3), 1), ((3, 2, 2), 3)])
def test_sensitivity_cases_twin_equals_element_sensitivity(shape, k):
    from femopt.assembly.grid_layout import GridLayout

    lay = GridLayout(shape, k)
    r = np.random.default_rng(3)
    a = r.standard_normal((lay.nd, lay.nd))
    ke = a + a.T
    u = r.standard_normal((3, lay.n_dofs))
    mu = r.standard_normal((2, lay.n_dofs))
    beta = r.standard_normal(3)
    coef = r.standard_normal((3, 2))
    coef[1, 0] = 0.0
    scale, dm = r.uniform(size=(2, lay.n_cells))
    lam = beta[:, None] * u + coef @ mu
    cd = lay.cell_dofs()
    ref = element_sensitivity(cd, ke, np.stack([lay.to_dofs(v) for v in lam]),
                              np.stack([lay.to_dofs(v) for v in u]))
    sens, total = grid_sensitivity_cases(lay, u, mu, beta, coef, scale, dm, ke, coef=-2.0)
    np.testing.assert_allclose(sens, -2.0 * dm * ref, rtol=1e-12, atol=1e-12)
    assert abs(total - scale @ ref) <= 1e-12 * np.abs(scale * ref).sum()
    sens, _ = grid_sensitivity_cases(lay, u, None, beta, np.zeros((3, 0)), scale, dm, ke)
    ref = element_sensitivity(cd, ke, np.stack([lay.to_dofs(b * v) for b, v in zip(beta, u)]),
                              np.stack([lay.to_dofs(v) for v in u]))
    np.testing.assert_allclose(sens, dm * ref, rtol=1e-12, atol=1e-12)


# -- the compliant mechanism: springs on the fine operator ------------------------------


def inverter_gradients(xp, rtol: float) -> None:
    from test_device import problem

    cpu = build(problem("force_inverter"), device="cpu")
    dev = build(problem("force_inverter", solver={**MULTIGRID, "rtol": rtol,
                                                  "coarsest_size": 100}), array_module=xp)
    x, d = point(cpu)
    v_cpu, g_cpu = cpu.values_and_gradients(x)
    v_dev, g_dev = dev.values_and_gradients(xp.asarray(x))
    assert len(dev.solver.levels) == 4
    assert abs(v_dev[0] - v_cpu[0]) <= 1e-9 * abs(v_cpu[0])
    assert np.abs(to_host(g_dev[0]) - g_cpu[0]).max() <= 1e-6 * np.abs(g_cpu[0]).max()
    # the springs leave the V-cycle a good preconditioner: 17 float64 CG iterations to
    # 1e-12 here; the mixed solve (the default) takes 31 float32 ones over its three
    # defect corrections, each gaining about 1e-5
    limit = {"double": 25, "mixed": 40}[dev.solver.krylov]
    assert max(dev.path.cg_iterations["forward"] + dev.path.cg_iterations["adjoint"]) <= limit
    (check, _) = check_model_gradients(dev, xp.asarray(x), xp.asarray(d))
    assert 1.9 <= min(check.result.rates) and max(check.result.rates) <= 2.1


def test_compliant_mechanism_on_the_device_path():
    inverter_gradients(np, 1e-12)


def test_force_inverter_runs_like_the_cpu_path():
    from test_device import compare

    compare("force_inverter", 25, np, optimizer={"type": "mma", "max_iter": 25})


# -- OC on a linear volume constraint -------------------------------------------------------


def mbb(**changes) -> dict:
    from test_device import problem

    return problem("mbb_beam_density", solver={"type": "multigrid", "rtol": 1e-10},
                   **changes)


@pytest.mark.parametrize("passive", [False, True])
def test_oc_linear_constraint_equals_the_filtered_bisection(passive, monkeypatch):
    changes = {}
    if passive:
        changes["design"] = {"passive": [
            {"region": {"box": {"min": [0.0, 0.0], "max": [6.0, 4.0]}}, "value": "solid"},
            {"region": {"box": {"min": [30.0, 10.0], "max": [40.0, 20.0]}}, "value": "void"}]}
    fast = build(mbb(**changes), array_module=np)
    slow = build(mbb(**changes), array_module=np)
    b = fast.linear_constraint()[1]
    w = fast.path.linear_weights()
    x = fast.x0 + 0.1 * np.random.default_rng(0).uniform(-1, 1, fast.n)
    x[fast.passive_idx] = fast.passive_val
    assert abs((w @ x + b) - fast.cheap_constraints(x)[0]) <= 1e-12 * abs(b)
    if passive:
        assert b != fast.bounds[0].normalized(0.0)  # the passive cells count
    calls = []
    original = slow.cheap_constraints
    monkeypatch.setattr(slow, "linear_constraint", lambda: None)
    monkeypatch.setattr(slow, "cheap_constraints", lambda x: calls.append(1) or original(x))
    r_fast = fast.optimizer.run(fast, fast.x0.copy(), 15)
    r_slow = slow.optimizer.run(slow, slow.x0.copy(), 15)
    assert len(calls) >= 15 * 10  # the filtered bisection: one filter pass per trial
    assert np.abs(r_fast.x - r_slow.x).max() <= 1e-10


@pytest.mark.parametrize("changes", [
    {},
    {"design": {"passive": [{"region": {"box": {"min": [0.0, 0.0], "max": [6.0, 4.0]}},
                             "value": "solid"}]}},
    {"constraints": [{"type": "weighted_sum", "max": 0.6, "terms": [
        {"type": "volume", "weight": 0.5}, {"type": "volume", "weight": 0.25}]}]},
    {"constraints": [{"type": "weighted_sum", "max": 0.3, "terms": [
        {"type": "volume", "weight": 0.5}]}]},
], ids=["volume", "passive", "sum_of_volumes", "one_weighted_volume"])
def test_the_linear_constraint_is_the_same_on_the_host_and_device_paths(changes):
    """One linear_constraint for both paths: the device twin's (w, b) is the host path's
    (the device takes v from its own form, the host from the function's linear form)."""
    cpu = build(mbb(**changes), device="cpu")
    dev = build(mbb(**changes), array_module=np)
    assert type(dev.path).__name__ == "GridDevicePath"
    (_, bc), (_, bd) = cpu.linear_constraint(), dev.linear_constraint()
    wc, wd = cpu.path.linear_weights(), dev.path.linear_weights()
    assert bd == pytest.approx(bc, rel=1e-14)
    np.testing.assert_allclose(wd, wc, rtol=1e-12,  # the grid path keeps femopt's order
                               atol=1e-15 * np.abs(wc).max())


@pytest.mark.parametrize("constraints", [
    [{"type": "compliance", "max": 10.0}],
    [{"type": "volume", "max": 0.5}, {"type": "volume", "max": 0.9}],
    [{"type": "weighted_sum", "max": 1.0, "terms": [
        {"type": "volume", "weight": -0.5}, {"type": "eigenfrequency", "weight": 0.001}]}]],
    ids=["needs_state", "two_bounds", "volume_and_eigenvalue"])
def test_no_linear_constraint_on_either_path(constraints):
    """A bound that reads the state is not linear, on either path: an eigenvalue term has
    no device part, which leaves the volume term alone there."""
    data = mbb(constraints=constraints, optimizer={"type": "mma", "max_iter": 3},
               physics={"type": "linear_elasticity", "E": 1.0, "nu": 0.3, "density": 1.0})
    assert build(data, device="cpu").linear_constraint() is None
    assert build(data, array_module=np).linear_constraint() is None


def test_device_cheap_constraints_stay_on_the_device(monkeypatch):
    """OC's filtered bisection on a device path evaluates rho-only bounds from their
    device forms (a host function's rho_only_value would mix host and device arrays),
    equal to the CPU path's values; a volume and a member-size bound together."""
    from femopt.objectives.local_volume import LocalVolume
    from femopt.objectives.volume import Volume

    data = mbb(constraints=[{"type": "volume", "max": 0.5},
                            {"type": "local_volume", "radius": 3.0, "p": 8.0, "max": 0.7}])
    cpu = build(data)
    dev = build(data, array_module=np)
    x = cpu.x0 + 0.2 * np.random.default_rng(3).uniform(-1, 1, cpu.n)
    expected = cpu.cheap_constraints(x)

    def host_only(self, rho):
        raise AssertionError("host rho_only_value called on a device path")

    monkeypatch.setattr(Volume, "rho_only_value", host_only)
    monkeypatch.setattr(LocalVolume, "rho_only_value", host_only)
    got = dev.cheap_constraints(dev.to_device(x))
    assert got.shape == (2,)
    assert np.allclose(got, expected, rtol=1e-12, atol=1e-14)


def test_no_linear_constraint_through_heaviside():
    model = build(mbb(filters=[{"type": "density", "radius": 1.5},
                               {"type": "heaviside", "beta": 2.0}]), array_module=np)
    assert model.linear_constraint() is None
    assert build(mbb(filters=[{"type": "density", "radius": 1.5},
                               {"type": "heaviside", "beta": 2.0}]),
                 device="cpu").linear_constraint() is None


# -- femopt check-gradients --device -----------------------------------------------------------


def test_check_gradients_on_the_device_path(tmp_path, monkeypatch, capsys):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(case("weighted_sum",
                                        solver={"type": "multigrid", "coarsest_size": 60})))
    registry = get_registry()

    def build_model(problem_file, device=None):
        assert device == "gpu"  # here the device path runs with NumPy arrays
        return Model(read_problem(problem_file, registry), registry, array_module=np)

    monkeypatch.setattr(femopt.runner, "build_model", build_model)
    code = main(["check-gradients", str(path), "--device", "gpu"])
    out = capsys.readouterr().out
    assert code == 0, out
    lines = out.splitlines()
    assert lines[:2] == ["note: multigrid rtol 1e-10 for the Taylor test",
                         "device: gpu (the GPU path)"]
    rates = [float(v) for v in lines[2].split("rates")[1].split()[:3]]
    assert lines[2].startswith("objective weighted_sum") and lines[2].endswith("ok")
    assert all(1.9 <= r <= 2.1 for r in rates), rates


# -- on the GPU ---------------------------------------------------------------------------------


def _cupy():
    import cupy

    return cupy


@pytest.mark.gpu
@pytest.mark.parametrize("name", list(CASES))
def test_gpu_gradients_equal_the_cpu_path(name):
    gradients_agree(name, _cupy())


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["displacement", "weighted_sum", "constraint"])
def test_gpu_taylor_rates(name):
    taylor_rates(name, _cupy())


@pytest.mark.gpu
def test_gpu_oc_linear_constraint_equals_the_filtered_bisection(monkeypatch):
    cupy = _cupy()
    fast = build(mbb(), array_module=cupy)
    slow = build(mbb(), array_module=cupy)
    monkeypatch.setattr(slow, "linear_constraint", lambda: None)
    r_fast = fast.optimizer.run(fast, fast.x0.copy(), 15)
    r_slow = slow.optimizer.run(slow, slow.x0.copy(), 15)
    assert float(cupy.abs(r_fast.x - r_slow.x).max()) <= 1e-8


@pytest.mark.gpu
def test_gpu_compliant_mechanism():
    inverter_gradients(_cupy(), GPU_RTOL)


@pytest.mark.gpu
def test_gpu_force_inverter_runs_like_the_cpu_path():
    from test_device import compare

    compare("force_inverter", 25, _cupy(), optimizer={"type": "mma", "max_iter": 25})
