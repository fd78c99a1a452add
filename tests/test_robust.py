"""The robust formulation (eroded, intermediate and dilated projections of one filtered
design, the worst case bounded by MMA's z): exact gradients of every realization on the
CPU and the GPU grid path's NumPy twin, MMA's min-max step, located bad input."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from conftest import SMALL_BEAM
from femopt.evaluation.robust import REALIZATIONS, minimum_sizes
from femopt.optimizers.base import Evaluation
from femopt.optimizers.mma_optimizer import MMA, MMAOptions
from path_checks import GRID_SOLVER, assert_same_as_cpu, assert_taylor_rates, build
from test_cli import located, run_cli

ROBUST = {"eta_eroded": 0.7, "eta_dilated": 0.3}
INVERTER = {
    "mesh": {"type": "structured", "shape": [24, 12], "size": [24.0, 12.0]},
    "physics": {"type": "linear_elasticity"},
    "supports": [{"region": {"face": "y_max"}, "dofs": ["y"]},
                 {"region": {"face": "x_min", "box": {"min": [0.0, 0.0],
                                                      "max": [0.0, 1.0]}}}],
    "springs": [{"region": {"point": [0.0, 12.0]}, "dofs": ["x"], "stiffness": 0.1},
                {"region": {"point": [24.0, 12.0]}, "dofs": ["x"], "stiffness": 0.1}],
    "loads": [{"region": {"point": [0.0, 12.0]}, "force": [1.0, 0.0]}],
    "design": {"interpolation": {"penalty": 3.0, "min": 1e-3}, "robust": ROBUST},
    "filters": [{"type": "density", "radius": 2.0}, {"type": "heaviside", "beta": 4.0}],
    "objective": {"type": "compliant_mechanism", "region": {"point": [24.0, 12.0]},
                  "direction": [1.0, 0.0]},
    "constraints": [{"type": "volume", "max": 0.3}],
    "optimizer": {"type": "mma", "max_iter": 3},
}
# compliance with the volume on the intermediate design and a second, state constraint
BEAM = {**INVERTER, "springs": [],
        "supports": [{"region": {"face": "x_min"}}],
        "loads": [{"region": {"point": [24.0, 6.0]}, "force": [0.0, -1.0]}],
        "design": {"interpolation": {"penalty": 3.0, "min": 1e-3},
                   "robust": {**ROBUST, "volume_on": "intermediate"}},
        "objective": {"type": "compliance"},
        "constraints": [{"type": "volume", "max": 0.5},
                        {"type": "displacement", "region": {"point": [24.0, 6.0]},
                         "direction": [0.0, -1.0], "max": 50.0}]}


def test_three_projections_of_one_filtered_design():
    """eroded <= intermediate <= dilated everywhere, equal thresholds' projections equal
    the filter's own, and continuation steps all three."""
    model = build(INVERTER, device="cpu")
    x = np.random.default_rng(0).uniform(0.0, 1.0, model.n)
    rhos, chains, _ = model.path.realizations(x)
    assert len(rhos) == 3 and model.robust.etas == (0.7, 0.5, 0.3)
    assert np.all(rhos[0] <= rhos[1]) and np.all(rhos[1] <= rhos[2])
    assert np.mean(rhos[2] - rhos[0]) > 0.1
    np.testing.assert_array_equal(rhos[1], model.physical(x)[0])
    heaviside = model.filters[1]
    heaviside.beta = 64.0
    sharp = model.path.realizations(x)[0]
    assert np.abs(sharp[0] - rhos[0]).max() > 0.1  # the views read the filter's beta
    assert model.value_names() == [f"objective compliant_mechanism ({r})"
                                   for r in REALIZATIONS] + ["constraint volume"]


@pytest.mark.parametrize("problem", [INVERTER, BEAM], ids=["mechanism", "compliance"])
def test_every_realization_is_exact_on_the_cpu_and_the_grid_twin(problem):
    cpu = build(problem, device="cpu")
    dev = build({**problem, "solver": GRID_SOLVER}, array_module=np)
    assert type(dev.path).__name__ == "GridDevicePath"
    rng = np.random.default_rng(3)
    x = rng.uniform(0.2, 0.8, cpu.n)
    d = rng.standard_normal(cpu.n)
    values = assert_same_as_cpu(cpu, dev, x, values=1e-9, gradients=1e-8)
    assert len(values) == 3 + len(cpu.bounds)
    # one more evaluation: each realization warm-starts from its own states
    assert_same_as_cpu(cpu, dev, x + 0.01 * d, values=1e-9, gradients=1e-8)
    assert sorted(dev.path._slots) == [0, 1]  # the two realizations not live
    for model in (cpu, dev):
        assert_taylor_rates(model, x, d, h0=1e-3)


def _robust_run(model, iterations: int) -> tuple[np.ndarray, list]:
    model.optimizer.run(model, model.x0.copy(), iterations)
    history = np.array([[r.extra[f"objective_{k}"] for k in REALIZATIONS]
                        for r in model.history])
    return history, model.final_analysis(model.x)


def run_on_both(array_module, iterations: int = 10):
    """The robust mechanism optimized on the CPU and on the device path of
    ``array_module``: each realization's objective in every iteration, the final values."""
    data = {**INVERTER, "filters": [INVERTER["filters"][0],
                                    {"type": "heaviside", "beta": 2.0, "every": 4}],
            "design": {**INVERTER["design"], "robust": {**ROBUST, "volume_every": 3}}}
    cpu = build(data, device="cpu")
    dev = build({**data, "solver": GRID_SOLVER}, array_module=array_module)
    h_cpu, (v_cpu, rho_cpu, _) = _robust_run(cpu, iterations)
    h_dev, (v_dev, rho_dev, _) = _robust_run(dev, iterations)
    assert h_cpu.shape == h_dev.shape == (iterations, 3)
    # an output that passes near zero (-2.5e-6 where its history reaches 0.24) carries
    # the solves' absolute error, not a relative one: a floor of 1e-9 of its history
    np.testing.assert_allclose(h_dev, h_cpu, rtol=1e-6, atol=1e-9 * np.abs(h_cpu).max())
    np.testing.assert_allclose(v_dev, v_cpu, rtol=1e-6)
    assert np.abs(rho_dev - rho_cpu).max() <= 1e-6
    assert cpu.realization_values.keys() == set(REALIZATIONS)


def test_a_robust_run_on_the_grid_twin_follows_the_cpu():
    """Ten MMA iterations with two beta steps and three volume rescales: the same
    worst case every iteration (each realization warm-starts from its own states)."""
    run_on_both(np)


def test_the_optimizer_sees_the_worst_case_rows():
    model = build(INVERTER, device="cpu")
    x = model.x0.copy()
    ev = model.evaluate(x)
    values = model.values_and_gradients(x)[0]
    assert ev.worst_case == 3 and ev.g.shape == (4,) and not np.any(ev.df)
    assert ev.info["objective"] == max(values[:3])
    np.testing.assert_allclose(ev.g[:3], np.array(values[:3]) * model.objective_scale)
    # the dilated volume's limit is rescaled so that the intermediate has 0.3
    bound = model.bounds[0]
    assert model.robust.on == [2]
    v_i = model.path.design_terms(model.path.realizations(x)[0][1])[0][1]
    assert bound.limit * bound.factor == pytest.approx(0.3 * values[3] / v_i, rel=1e-12)
    assert ev.g[3] == pytest.approx(bound.normalized(values[3]))


def test_mma_minimizes_the_largest_of_several_functions():
    """min max(|x - a|^2, |x - b|^2) over a box: the minimizer is the midpoint, where
    both are equal; plain MMA on the first alone would go to a."""
    n = 6
    a, b = np.full(n, 0.2), np.full(n, 0.8)

    class Problem:
        xmin, xmax, m = np.zeros(n), np.ones(n), 0

    mma = MMA(MMAOptions())
    x = np.random.default_rng(1).uniform(0.0, 1.0, n)
    for it in range(1, 60):
        fs = [float(np.sum((x - c) ** 2)) for c in (a, b)]
        ev = Evaluation(max(fs), np.zeros(n), np.array(fs),
                        np.stack([2 * (x - a), 2 * (x - b)]), worst_case=2)
        x = mma.update(Problem, x, ev, it)
    np.testing.assert_allclose(x, 0.5, atol=1e-4)


def test_nominal_minimum_sizes():
    """A bar's intermediate width in 1D with the hat kernel is R for eta 0.75/0.5/0.25
    (by hand: a band of half-width R/2 has the filtered peak 3/4 and is above 1/2 over
    exactly R); symmetric thresholds give equal solid and void sizes; a wider spread
    of thresholds gives larger ones."""
    assert minimum_sizes(1.0, (0.75, 0.5, 0.25), 1) == pytest.approx((1.0, 1.0), abs=2e-3)
    solid, void = minimum_sizes(4.0, (0.75, 0.5, 0.25), 2)
    assert solid == pytest.approx(void, rel=1e-9) and 3.6 < solid < 3.9
    wide = minimum_sizes(4.0, (0.9, 0.5, 0.3), 2)
    assert wide[0] > solid and wide[1] < void


def _with_robust(robust: str, filters: str = "", optimizer: str = "mma") -> str:
    text = SMALL_BEAM.replace("type: oc", f"type: {optimizer}")
    text = text.replace("  - {type: density, radius: 1.5}\n",
                        "  - {type: density, radius: 1.5}\n" + filters)
    return text + f"design:\n  robust: {robust}\n"


HEAVISIDE = "  - {type: heaviside, eta: 0.5}\n"
BAD = {
    "no projection": (_with_robust("{eta_eroded: 0.75}"), "design.robust",
                      "add a projection filter"),
    "not ordered": (_with_robust("{eta_eroded: 0.3, eta_dilated: 0.6}", HEAVISIDE),
                    "design.robust", "eta_dilated < eta_eroded"),
    "not around the projection's": (_with_robust("{eta_eroded: 0.45, eta_dilated: 0.2}",
                                                 HEAVISIDE),
                                    "design.robust", "eta_dilated < eta (the projection's"),
    "eroded outside (0, 1)": (_with_robust("{eta_eroded: 1.2}", HEAVISIDE),
                              "design.robust.eta_eroded", "less than 1"),
    "dilated outside (0, 1)": (_with_robust("{eta_dilated: 0.0}", HEAVISIDE),
                               "design.robust.eta_dilated", "greater than 0"),
    "oc": (_with_robust("{}", HEAVISIDE, "oc"), "optimizer.type",
           "cannot minimize the worst"),
}


@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("command", ["validate", "run"])
def test_bad_robust_input_is_located_and_writes_nothing(case, command, write_problem,
                                                        tmp_path, capsys):
    text, key, message = BAD[case]
    path = write_problem(text)
    out_dir = tmp_path / "out"
    args = [command, path] + (["--out", out_dir] if command == "run" else [])
    code, _, err = run_cli(args, capsys)
    assert code == 2, err
    errors = located(err, path)
    assert any(k == key and message in msg for _, _, k, msg in errors), err
    assert all(line >= 1 and col >= 1 for line, col, _, _ in errors)
    assert not out_dir.exists()


def test_a_resumed_robust_run_is_the_uninterrupted_one(tmp_path, capsys):
    """The checkpoint keeps the dilated volume's rescaled limit and whether a rescale is
    due, besides beta: stopped at iteration 7 and resumed, the run ends bitwise where the
    uninterrupted one does (rescales at 5 and 10, beta steps at 4 and 8)."""
    from femopt.cli import main

    data = {**INVERTER, "optimizer": {"type": "mma", "max_iter": 12},
            "design": {**INVERTER["design"], "robust": {**ROBUST, "volume_every": 5}},
            "filters": [INVERTER["filters"][0], {"type": "heaviside", "every": 4}],
            "output": {"picture": False, "series_every": 0, "checkpoint_every": 1}}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    for name, limit in (("full", 12), ("cut", 7)):
        assert main(["run", str(path), "--out", str(tmp_path / name), "--quiet",
                     "--max-iter", str(limit)]) == 0
    assert main(["resume", str(tmp_path / "cut"), "--max-iter", "12", "--quiet"]) == 0
    a, b = (np.load(tmp_path / n / "design.npy") for n in ("full", "cut"))
    assert np.array_equal(a, b), np.abs(a - b).max()
    import json

    s = [json.loads((tmp_path / n / "summary.json").read_text()) for n in ("full", "cut")]
    assert s[0]["robust"]["limits"] == s[1]["robust"]["limits"]
    assert s[0]["robust"]["limits"]["volume"] != 0.3  # rescaled


@pytest.mark.gpu
@pytest.mark.parametrize("problem", [INVERTER, BEAM], ids=["mechanism", "compliance"])
def test_gpu_robust_equals_the_cpu(problem):
    import cupy

    cpu = build(problem, device="cpu")
    dev = build({**problem, "solver": GRID_SOLVER}, array_module=cupy)
    rng = np.random.default_rng(3)
    x = rng.uniform(0.2, 0.8, cpu.n)
    d = rng.standard_normal(cpu.n)
    assert_same_as_cpu(cpu, dev, x, values=1e-9, gradients=1e-8)
    assert_taylor_rates(dev, x, d, h0=1e-3)


@pytest.mark.gpu
def test_gpu_robust_run_follows_the_cpu():
    import cupy

    run_on_both(cupy)


# -- the shipped robust force inverter ------------------------------------------------

def opening_change(phase: np.ndarray, radius: float) -> float:
    """The fraction of a phase's cells that a morphological opening with a disk of
    ``radius`` (cells) removes or adds: 0 when every part of the phase holds the disk.
    The image is mirrored at its edges (the top edge is the symmetry line; elsewhere a
    member along the edge is not thinned by the domain's end)."""
    from scipy import ndimage

    n = int(np.floor(radius))
    i, j = np.mgrid[-n:n + 1, -n:n + 1]
    pad = n + 1
    padded = np.pad(phase, pad, mode="symmetric")
    opened = ndimage.binary_opening(padded, structure=i * i + j * j <= radius * radius)
    return np.count_nonzero(opened[pad:-pad, pad:-pad] != phase) / np.count_nonzero(phase)


def check_robust_force_inverter(tmp_path, device: str) -> None:
    """problems/force_inverter_robust.yaml: every realization inverts (pushed right, the
    output moves left), the intermediate design has 30% of the material, and its solid
    and void both hold a disk of the nominal minimum size (3.77 cells) everywhere but
    in under 1% of their cells. Measured on the CPU (313 iterations, beta up to 16):
    u_out -0.928 (eroded), -1.018 (intermediate), -0.928 (dilated); 4.8% grey cells;
    opening changes 0% of the solid and 0.09% of the void at radius 1.885, and under 1%
    up to radius 3 (sizes of 6 cells). The GPU run passed the same checks (2026-12-05,
    H100); with beta up to 32 it lost the eroded design there (u_out 0)."""
    from femopt.runner import build_model, run

    data = yaml.safe_load(open("problems/force_inverter_robust.yaml").read())
    data["output"] = {"picture": False, "series_every": 0, "checkpoint_every": 0}
    path = tmp_path / "robust.yaml"
    path.write_text(yaml.safe_dump(data))
    res = run(path, out=tmp_path / "out", quiet=True, device=device)
    summary = res.summary
    assert summary["converged"]
    robust = summary["robust"]
    size = robust["minimum_size"]["solid"]
    assert size == pytest.approx(3.77, abs=0.01) and robust["minimum_size"]["void"] == size
    assert robust["intermediate"]["mean_density"] == pytest.approx(0.3, abs=5e-3)
    assert summary["objective"] == max(robust[r]["objective"] for r in REALIZATIONS)

    model = build_model(path, device="cpu")
    model.filters[1].beta = 16.0  # the final continuation step (beta_max)
    rhos = model.path.realizations(np.load(tmp_path / "out" / "design.npy"))[0]
    pts = model.mesh.points
    node_in = int(np.flatnonzero(np.all(pts == [0.0, 40.0], axis=1))[0])
    node_out = int(np.flatnonzero(np.all(pts == [80.0, 40.0], axis=1))[0])
    # the run's u_out against a direct solve's: to 1e-6, or ten times the run's solver
    # tolerance (the GPU grid path's 1e-6 left 5.9e-7 on the twin)
    band = max(1e-6, 10.0 * summary.get("solver_rtol", 0.0))
    for name, rho in zip(REALIZATIONS, rhos):
        u = model.path.analyse(rho).u[0]
        assert u[2 * node_in] > 0.0, name
        assert u[2 * node_out] < -0.9, name  # about -1: each one a working inverter
        assert u[2 * node_out] == pytest.approx(robust[name]["objective"], rel=band)
    solid = rhos[1].reshape(40, 80) > 0.5
    assert np.mean(np.abs(rhos[1] - 0.5) < 0.45) < 0.05  # nearly black and white
    for phase in (solid, ~solid):
        assert opening_change(phase, size / 2) < 0.01


def test_the_robust_force_inverter(tmp_path):
    check_robust_force_inverter(tmp_path, "cpu")


@pytest.mark.gpu
def test_gpu_robust_force_inverter(tmp_path):
    """The whole run on the GPU grid path (multigrid): the same properties."""
    check_robust_force_inverter(tmp_path, "gpu")


# -- a realization lost during the run ------------------------------------------------

def _records(eroded: list[float]):
    from femopt.evaluation.model import IterationRecord

    return [IterationRecord(i, -1.0, {}, 0.1, 0.0, {"objective_eroded": e,
                                                    "objective_intermediate": -1.0,
                                                    "objective_dilated": -0.9})
            for i, e in enumerate(eroded)]


def test_a_realization_whose_objective_fell_to_zero_is_lost():
    """Lost: a realization's final objective at most 1e-6 of the largest magnitude it had
    in the run (an eroded inverter at -0.93 that ends at 4.5e-9); not lost: one that
    never worked (all its values tiny) or one that ends at a fair share of its best."""
    from femopt.evaluation.robust import lost_realizations

    final = lambda e: {"eroded": {"objective": e},  # noqa: E731
                       "intermediate": {"objective": -1.0}, "dilated": {"objective": -0.9}}
    assert lost_realizations(_records([1e-11, -0.5, -0.93, 0.0]), final(4.5e-9)) == ["eroded"]
    assert lost_realizations(_records([1e-11, 2e-9, 5e-9]), final(4.5e-9)) == []
    assert lost_realizations(_records([1e-11, -0.5, -0.93]), final(-0.2)) == []
    assert lost_realizations(_records([1e-11, -0.5, -0.93]), final(2e-6)) == []
    assert lost_realizations([], final(0.0)) == []


def test_a_run_that_loses_a_realization_says_so(tmp_path, capsys, monkeypatch):
    """The runner writes the lost realizations under robust.lost in summary.json and
    warns on stderr (the detection itself is the test above; here the run's end asks it,
    with the run's history and final values)."""
    import json

    from femopt import runner

    seen = []

    def lost(history, final):
        seen.append((len(history), sorted(final)))
        return ["eroded"]

    monkeypatch.setattr(runner, "lost_realizations", lost)
    data = {**INVERTER, "output": {"picture": False, "series_every": 0,
                                   "checkpoint_every": 0}}
    path = tmp_path / "inverter.yaml"
    path.write_text(yaml.safe_dump(data))
    code, _, err = run_cli(["run", path, "--out", tmp_path / "out", "--quiet"], capsys)
    assert code == 0, err
    assert seen == [(3, sorted(REALIZATIONS))]
    robust = json.loads((tmp_path / "out" / "summary.json").read_text())["robust"]
    assert robust["lost"] == ["eroded"]
    assert "robust: the eroded design's objective fell to 0 during the run" in err


@pytest.mark.slow
def test_a_too_fast_continuation_loses_the_eroded_inverter(request, tmp_path, capsys):
    """The shipped robust inverter with beta multiplied by 1.5 every 25 iterations: its
    eroded design loses a hinge when beta reaches 32 (observed on the CPU: 226
    iterations, the eroded output displacement 0 after -0.93), which the run names. About
    25 s of CPU."""
    import json

    from test_eigenfrequency import _slow

    _slow(request)
    data = yaml.safe_load(open("problems/force_inverter_robust.yaml").read())
    data["filters"][1].update({"factor": 1.5, "every": 25, "beta_max": 32.0})
    data["output"] = {"picture": False, "series_every": 0, "checkpoint_every": 0}
    path = tmp_path / "fast.yaml"
    path.write_text(yaml.safe_dump(data))
    code, _, err = run_cli(["run", path, "--out", tmp_path / "out", "--quiet"], capsys)
    assert code == 0, err
    robust = json.loads((tmp_path / "out" / "summary.json").read_text())["robust"]
    assert robust["lost"] == ["eroded"]
    assert "robust: the eroded design's objective fell to 0" in err


@pytest.mark.parametrize("robust", [False, True], ids=["plain", "robust"])
def test_the_constant_start_reaches_the_filter_as_an_array(robust, monkeypatch):
    """On a device path the model's start is one number at stride 0 (no design-sized
    array); every way into the filter chain (the design's densities, an evaluation, the
    final analysis) hands the grid filter a contiguous array, as its raw kernel on the
    GPU needs (the NumPy twin would read a view without complaint)."""
    from femopt.filters.grid_filter import GridDensityFilter

    design = INVERTER["design"] if robust else {"interpolation": {"penalty": 3.0}}
    model = build({**INVERTER, "design": design, "solver": GRID_SOLVER}, array_module=np)
    assert (model.robust is not None) == robust
    assert model.x0.strides == (0,)
    seen = []
    apply = GridDensityFilter.apply

    def checked(self, x, pre=None, post=None):
        seen.append(x.flags.c_contiguous)
        return apply(self, x, pre, post)

    monkeypatch.setattr(GridDensityFilter, "apply", checked)
    model.physical(model.x0)
    model.values_and_gradients(model.x0)
    model.final_analysis(model.x0)
    assert seen and all(seen)
