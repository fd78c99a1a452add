"""The member-size bound (local volume fractions aggregated by a p-mean): exact
gradients on the CPU and the GPU grid twin, and an MBB beam whose thick members it
breaks up."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from scipy import ndimage

from femopt.runner import run
from path_checks import GRID_SOLVER, assert_same_as_cpu, assert_taylor_rates, build

BEAM = {
    "mesh": {"type": "structured", "shape": [24, 8], "size": [24.0, 8.0]},
    "physics": {"type": "linear_elasticity"},
    "supports": [{"region": {"face": "x_min"}}],
    "loads": [{"region": {"point": [24.0, 4.0]}, "force": [0.0, -1.0]}],
    "filters": [{"type": "density", "radius": 1.5}],
    "objective": {"type": "compliance"},
    "constraints": [{"type": "volume", "max": 0.5},
                    {"type": "local_volume", "radius": 3.0, "p": 8.0, "max": 0.6}],
    "optimizer": {"type": "mma", "max_iter": 3},
}



def test_local_volume_gradients_on_the_cpu_and_the_grid_twin():
    cpu = build(BEAM, device="cpu")
    dev = build({**BEAM, "solver": GRID_SOLVER}, array_module=np)
    rng = np.random.default_rng(2)
    x = rng.uniform(0.2, 0.9, cpu.n)
    d = rng.standard_normal(cpu.n)
    v_cpu = assert_same_as_cpu(cpu, dev, x)
    # a function of the densities alone: no adjoint solve on the device path
    assert dev.path.cg_iterations["adjoint"] == []
    assert_taylor_rates(cpu, x, d)
    # the p-mean is below the largest local fraction and above the mean one
    rho = cpu.physical(x)[0]
    v = (cpu.bounds[1].function._weights(np)[0] @ rho) * cpu.bounds[1].function._weights(np)[2]
    assert v.mean() < v_cpu[2] < v.max()


def test_the_bound_breaks_up_thick_members(tmp_path):
    """MBB beam 60x20 with and without a local volume bound of 0.6 in a radius of 3
    cells: the bounded design has more holes and meets the bound."""
    data = yaml.safe_load(open("problems/mbb_beam_density.yaml").read())
    data["optimizer"] = {"type": "mma", "max_iter": 80}
    data["output"] = {"picture": False, "series_every": 0, "checkpoint_every": 0}
    holes, summaries = {}, {}
    for name, extra in (("free", []), ("bounded", [{"type": "local_volume", "radius": 3.0,
                                                     "p": 16.0, "max": 0.6}])):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**data, "constraints": data["constraints"] + extra}))
        res = run(path, out=tmp_path / name, quiet=True, device="cpu")
        rho = np.load(tmp_path / name / "density.npy").reshape(20, 60)
        holes[name] = ndimage.label(rho < 0.5)[1]
        summaries[name] = res.summary
    assert summaries["bounded"]["constraints"]["local_volume"] <= 0.6 * 1.01
    assert summaries["free"]["constraints"] == pytest.approx({"volume": 0.5}, abs=1e-3)
    assert holes["bounded"] > holes["free"]
