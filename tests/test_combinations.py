"""Features that meet in one evaluation: a maximized objective in a robust problem, the
eigenvalues of each realization held apart, a maximized objective refused by OC, and an
eigenfrequency on the GPU grid path's twin without the whole grid mesh."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from femopt.errors import ProblemError
from path_checks import build

BEAM = {"name": "beam", "mesh": {"type": "structured", "shape": [16, 4], "size": [8.0, 2.0]},
        "physics": {"type": "linear_elasticity", "E": 1.0e7, "nu": 0.3, "density": 1.0},
        "supports": [{"region": {"face": "x_min"}}, {"region": {"face": "x_max"}}],
        "design": {"interpolation": {"type": "simp", "penalty": 3.0, "min": 1.0e-6},
                   "robust": {"eta_eroded": 0.7, "eta_dilated": 0.3}},
        "filters": [{"type": "density", "radius": 1.0},
                    {"type": "heaviside", "beta": 2.0, "eta": 0.5}],
        "objective": {"type": "eigenfrequency", "maximize": True, "modes": 2},
        "constraints": [{"type": "volume", "max": 0.5}],
        "optimizer": {"type": "mma", "max_iter": 3},
        "solver": {"type": "direct"}}


def _design(model):
    rng = np.random.default_rng(5)
    return np.clip(model.x0 + 0.2 * rng.uniform(-1, 1, model.n), 0.0, 1.0)


def test_a_maximized_robust_objective_reports_its_worst_realization_the_lowest():
    model = build(BEAM)
    x = _design(model)
    values, _ = model.values_and_gradients(x)
    final = model.final_analysis(x)[0]
    per = [model.realization_values[r]["objective"] for r in ("eroded", "intermediate",
                                                              "dilated")]
    assert min(per) < max(per)
    assert final[0] == pytest.approx(min(per), rel=1e-12)
    assert model.evaluate(x).info["objective"] == pytest.approx(min(values[:3]), rel=1e-12)


@pytest.mark.parametrize("twin", [False, True])
def test_held_eigenvalues_are_each_realization_s_own(twin):
    data = copy.deepcopy(BEAM)
    if twin:
        data["solver"] = {"type": "multigrid", "rtol": 1e-10}
    model = build(data, **({"array_module": np} if twin else {}))
    x = model.to_device(_design(model))
    values, _ = model.values_and_gradients(x, split=True)
    held = model.values_at_fixed_state(x, model.last_state)
    assert len(set(np.round(values[:3], 6))) == 3  # three different realizations
    np.testing.assert_allclose(held, values, rtol=1e-12)
    if twin:  # the grid path's twin: the mass matrices from one cell, no whole mesh
        assert not model.mesh.materialized


def test_oc_cannot_maximize():
    data = {"name": "mbb", "mesh": {"type": "structured", "shape": [12, 4],
                                    "size": [60.0, 20.0]},
            "physics": {"type": "linear_elasticity", "E": 1.0, "nu": 0.3},
            "supports": [{"region": {"face": "x_min"}}],
            "loads": [{"region": {"point": [60.0, 0.0]}, "force": [0.0, -1.0]}],
            "objective": {"type": "compliance", "maximize": True},
            "constraints": [{"type": "volume", "max": 0.5}],
            "optimizer": {"type": "oc"}}
    with pytest.raises(ProblemError, match="cannot maximize"):
        build(data)


def test_the_gpu_grid_estimate_counts_lobpcg_blocks():
    """An eigenfrequency adds LOBPCG's peak vectors and the kept Ritz vectors to the GPU
    grid path's estimate: exactly 8 * n_dofs * (LOBPCG_VECTORS + 1) * block bytes (times
    the margin) over the same problem without it."""
    from femopt.assembly.grid_layout import layout_of
    from femopt.evaluation import grid_device as gd

    data = copy.deepcopy(BEAM)
    del data["design"]["robust"]
    eigen = build(data)
    plain = copy.deepcopy(data)
    plain["objective"] = {"type": "volume"}
    plain["constraints"] = []
    plain["loads"] = [{"region": {"point": [4.0, 0.0]}, "force": [0.0, -1.0]}]
    base = build(plain)
    lay = layout_of(eigen.mesh, 2)
    block = eigen.objective.eigen_problem().block
    assert block >= 2
    grown = gd.estimate_bytes(lay, 1, eigen) - gd.estimate_bytes(lay, 1, base)
    expected = gd.MEMORY_MARGIN * 8 * lay.n_dofs * (gd.LOBPCG_VECTORS + 1) * block
    assert abs(grown - expected) <= 2


def test_validate_reports_a_robust_error_beside_the_others():
    """OC in a robust problem whose objective OC cannot take either: both errors, each at
    its place, in one report."""
    data = copy.deepcopy(BEAM)
    data["optimizer"] = {"type": "oc", "max_iter": 3}
    with pytest.raises(ProblemError) as err:
        build(data)
    text = str(err.value)
    assert "cannot minimize the worst" in text  # the robust formulation's
    assert "cannot maximize" in text  # maximize with OC
