"""The additive-manufacturing (overhang) filter: exact chain rule in 2D and 3D for every
build direction, Taylor rates through a whole model on the CPU and on the GPU grid path,
located bad input, and a printed MBB beam whose thresholded design needs no support."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from femopt.errors import ProblemError
from femopt.filters.overhang import OverhangFilter, OverhangOptions, unsupported_cells
from femopt.mesh import structured_grid
from femopt.runner import run
from path_checks import GRID_SOLVER, assert_same_as_cpu, assert_taylor_rates, build

CASES = [((6, 5), d) for d in ("+x", "-x", "+y", "-y")] + \
        [((4, 3, 5), d) for d in ("+x", "-x", "+y", "-y", "+z", "-z")]


@pytest.mark.parametrize("shape, direction", CASES, ids=[f"{len(s)}d{d}" for s, d in CASES])
def test_chain_rule_equals_central_differences(shape, direction):
    mesh = structured_grid(shape, tuple(float(n) for n in shape))
    flt = OverhangFilter(OverhangOptions(build_direction=direction), mesh)
    rng = np.random.default_rng(len(shape) * 10 + CASES.index((shape, direction)))
    x = rng.uniform(0.1, 0.9, mesh.n_cells)
    d, w = rng.standard_normal((2, mesh.n_cells))
    h = 1e-6
    fd = (w @ flt.forward(x + h * d) - w @ flt.forward(x - h * d)) / (2 * h)
    assert flt.backward(x, w) @ d == pytest.approx(fd, rel=1e-7)


def test_a_supported_design_passes_and_an_overhang_is_cut():
    mesh = structured_grid((5, 4), (5.0, 4.0))
    flt = OverhangFilter(OverhangOptions(build_direction="+y"), mesh)
    full = flt.forward(np.ones(mesh.n_cells))
    assert full.min() > 0.99  # solid is printable
    # a horizontal bar in the top layer over void: nothing holds it up
    x = np.zeros((4, 5))
    x[3, :] = 1.0
    printed = flt.forward(x.reshape(-1)).reshape(4, 5)
    assert printed[3].max() < 0.02
    # a column from the plate with a 45-degree branch stays
    x = np.zeros((4, 5))
    x[:, 1] = 1.0
    x[[1, 2, 3], [2, 3, 4]] = 1.0
    printed = flt.forward(x.reshape(-1)).reshape(4, 5)
    assert printed[x > 0].min() > 0.98
    assert unsupported_cells(x.reshape(-1) > 0.5, (5, 4), "+y") == 0
    x[3, 0] = 1.0  # not above anything solid: its supports are void
    x[2, 0] = 0.0
    assert unsupported_cells(x.reshape(-1) > 0.5, (5, 4), "+y") == 0  # (1, 2) holds it
    x[3, 0], x[3, 1], x[2, 1] = 1.0, 0.0, 0.0
    assert unsupported_cells(x.reshape(-1) > 0.5, (5, 4), "+y") == 1


BEAM = {
    "mesh": {"type": "structured", "shape": [24, 8], "size": [24.0, 8.0]},
    "physics": {"type": "linear_elasticity"},
    "supports": [{"region": {"face": "x_min"}}],
    "loads": [{"region": {"point": [24.0, 4.0]}, "force": [0.0, -1.0]}],
    "filters": [{"type": "density", "radius": 1.5},
                {"type": "overhang", "build_direction": "-x"}],
    "objective": {"type": "compliance"},
    "constraints": [{"type": "volume", "max": 0.5}],
    "optimizer": {"type": "mma", "max_iter": 5},
}



def test_taylor_rates_through_the_model_and_the_gpu_grid_path_twin():
    cpu = build(BEAM, device="cpu")
    dev = build({**BEAM, "solver": GRID_SOLVER}, array_module=np)
    assert type(dev.path).__name__ == "GridDevicePath"
    rng = np.random.default_rng(7)
    x = rng.uniform(0.3, 0.7, cpu.n)
    d = rng.standard_normal(cpu.n)
    assert_same_as_cpu(cpu, dev, x)
    for model in (cpu, dev):
        assert_taylor_rates(model, x, d, h0=1e-3)


@pytest.mark.parametrize("change, message", [
    ({"angle": 30.0}, "angle 30: the grid's cells rise at 45 degrees along axis y"),
    ({"angle": 95.0}, "the overhang angle must be in (0, 90) degrees, got 95"),
    ({"build_direction": "+z"}, "build_direction '+z' is not an axis of this 2D grid"),
    ({"build_direction": "up"}, "Input should be '+x', '-x', '+y', '-y', '+z' or '-z'"),
])
def test_bad_overhang_options_are_located(change, message):
    data = {**BEAM, "filters": [{"type": "overhang", "build_direction": "-x", **change}]}
    with pytest.raises(ProblemError) as exc:
        build(data)
    (issue,) = exc.value.issues
    assert issue.path.startswith("filters.0") and message in issue.message, issue


def test_mbb_beam_printed_upwards_has_no_unsupported_cell(tmp_path):
    """The shipped MBB beam built along +y (problems/mbb_beam_overhang.yaml): the
    thresholded design needs no support structure, where the unconstrained design of the
    same settings has overhangs. Measured: c = 238.97 against 210.79 (+13%)."""
    printed = yaml.safe_load(open("problems/mbb_beam_overhang.yaml").read())
    printed["output"] = {"picture": False, "series_every": 0, "checkpoint_every": 0}
    free = {**printed, "filters": [f for f in printed["filters"] if f["type"] != "overhang"]}
    results = {}
    for name, data in (("free", free), ("printed", printed)):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data))
        res = run(path, out=tmp_path / name, quiet=True, device="cpu")
        rho = np.load(tmp_path / name / "density.npy")
        results[name] = (res.summary["objective"],
                         unsupported_cells(rho > 0.5, (60, 20), "+y"), rho)
    c_free, bad_free, _ = results["free"]
    c_printed, bad_printed, rho = results["printed"]
    assert bad_printed == 0
    assert bad_free > 0  # the unconstrained design has overhangs: the check can fail
    assert c_free < c_printed < 1.25 * c_free
    assert rho.mean() == pytest.approx(0.5, abs=1e-4)


def test_a_3d_cantilever_printed_upwards_is_self_supporting(tmp_path):
    """A 30x10x4 cantilever built along +y (laterally a cross of 5 supports). Measured:
    no unsupported cell against 52 without the filter; compliance 4575 against 3254
    after 100 MMA iterations."""
    data = yaml.safe_load(open("problems/cantilever_3d.yaml").read())
    data["mesh"].update(shape=[30, 10, 4], size=[30.0, 10.0, 4.0])
    data["loads"][0]["region"] = {"box": {"min": [30.0, 0.0, 0.0], "max": [30.0, 0.0, 4.0]}}
    data["output"] = {"picture": False, "series_every": 0, "checkpoint_every": 0}
    data["optimizer"] = {"type": "mma", "max_iter": 100}
    bad = {}
    for name, extra in (("free", []), ("printed", [{"type": "overhang",
                                                     "build_direction": "+y"}])):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**data, "filters": data["filters"] + extra}))
        run(path, out=tmp_path / name, quiet=True, device="cpu")
        rho = np.load(tmp_path / name / "density.npy")
        bad[name] = unsupported_cells(rho > 0.5, (30, 10, 4), "+y")
        assert rho.mean() == pytest.approx(0.3, abs=1e-4)
    assert bad["printed"] == 0 < bad["free"]


@pytest.mark.gpu
def test_gpu_overhang_equals_the_cpu():
    import cupy

    cpu = build(BEAM, device="cpu")
    dev = build({**BEAM, "solver": {"type": "multigrid", "rtol": 1e-10}}, array_module=cupy)
    assert_same_as_cpu(cpu, dev, np.random.default_rng(7).uniform(0.3, 0.7, cpu.n),
                       values=1e-8, gradients=1e-6)
