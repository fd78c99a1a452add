"""Checkpoints, resume and the ParaView series: a run killed with SIGKILL and resumed ends
on the same design as an uninterrupted run, bit for bit; bad checkpoints are refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

import femopt
from femopt.cli import main

# MMA (asymptotes and previous iterates carried between iterations) and a Heaviside
# projection whose beta steps every 6 iterations: state that a resume must restore
PROBLEM = """\
name: resumable
mesh: {type: structured, shape: [30, 10], size: [30.0, 10.0]}
physics: {type: linear_elasticity}
supports:
  - region: {face: x_min}
    dofs: [x]
  - region: {point: [30.0, 0.0]}
    dofs: [y]
loads:
  - region: {point: [0.0, 10.0]}
    force: [0.0, -1.0]
filters:
  - {type: density, radius: 1.5}
  - {type: heaviside, beta: 1.0, beta_max: 8.0, every: 6}
objective: {type: compliance}
constraints:
  - {type: volume, max: 0.5}
optimizer: {type: mma, max_iter: 24}
output: {checkpoint_every: 1, series_every: 4, picture: false}
"""


def _kill_during_run(problem: Path, out: Path, at_iteration: int) -> None:
    """Start ``femopt run`` in a subprocess and SIGKILL it once it printed iteration
    ``at_iteration``."""
    env = dict(os.environ, PYTHONPATH=str(Path(femopt.__file__).resolve().parents[1]))
    proc = subprocess.Popen([sys.executable, "-m", "femopt.cli", "run", str(problem),
                             "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        for line in proc.stdout:
            if line.startswith("it ") and int(line.split()[1]) >= at_iteration:
                os.kill(proc.pid, signal.SIGKILL)
                break
    finally:
        proc.wait(timeout=60)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it was killed"


def test_killed_run_resumes_to_the_same_design_bitwise(write_problem, tmp_path, capsys):
    path = write_problem(PROBLEM)
    full = tmp_path / "full"
    assert main(["run", str(path), "--out", str(full), "--quiet"]) == 0

    at = int(np.random.default_rng().integers(2, 22))
    killed = tmp_path / "killed"
    _kill_during_run(path, killed, at)
    assert not (killed / "summary.json").exists()
    assert (killed / "checkpoint.h5").is_file()
    capsys.readouterr()
    assert main(["resume", str(killed)]) == 0, f"killed at iteration {at}"
    out = capsys.readouterr().out
    assert "resuming after iteration" in out

    a, b = np.load(full / "design.npy"), np.load(killed / "design.npy")
    assert np.array_equal(a, b), f"killed at iteration {at}: max diff {np.abs(a - b).max()}"
    s_full = json.loads((full / "summary.json").read_text())
    s_res = json.loads((killed / "summary.json").read_text())
    assert s_res["objective"] == s_full["objective"]
    assert s_res["iterations"] == s_full["iterations"] == 24
    assert s_res["resumed_from"] in (at - 1, at)
    h_full = (full / "history.csv").read_text().splitlines()
    h_res = (killed / "history.csv").read_text().splitlines()
    assert [r.split(",")[:3] for r in h_res] == [r.split(",")[:3] for r in h_full]
    # the series lists the initial design and every 4th iteration once, whatever was
    # written before the kill
    steps = [float(t.get("Value")) for t in ET.parse(killed / "series.xdmf").iter("Time")]
    assert steps == [0, 4, 8, 12, 16, 20, 24]


def test_series_is_a_valid_xdmf_time_series(write_problem, tmp_path):
    import meshio

    out = tmp_path / "res"
    assert main(["run", str(write_problem(PROBLEM)), "--out", str(out), "--quiet",
                 "--max-iter", "9"]) == 0
    with meshio.xdmf.TimeSeriesReader(out / "series.xdmf") as reader:
        points, cells = reader.read_points_cells()
        assert points.shape == (31 * 11, 2) and cells[0].type == "quad"
        assert reader.num_steps == 4  # the initial design, iterations 4, 8, the final 9
        assert reader.read_data(0)[0] == 0
        t, _, cell_data = reader.read_data(3)
        assert t == 9
    final = np.load(out / "density.npy")
    assert np.array_equal(cell_data["density"][0], final)
    # the same steps as VTU files of their own, listed in series.pvd: ParaView opens the
    # collection, meshio.read any step; the name and unit are field data
    sets = ET.parse(out / "series.pvd").getroot().find("Collection")
    steps = [(int(d.get("timestep")), d.get("file")) for d in sets]
    assert steps == [(it, f"series-{it:06d}.vtu") for it in (0, 4, 8, 9)]
    last = meshio.read(out / steps[-1][1])
    assert np.array_equal(last.cell_data["density"][0], final)
    assert bytes(last.field_data["unit"]).decode() == "mm"
    assert bytes(last.field_data["problem"]).decode() == "resumable"
    design = meshio.read(out / "design.vtu")
    assert bytes(design.field_data["unit"]).decode() == "mm"
    assert bytes(design.field_data["problem"]).decode() == "resumable"
    assert design.field_data["meters_per_unit"].tolist() == [0.001]


def test_resume_refuses_a_checkpoint_of_another_problem(write_problem, tmp_path, capsys):
    out = tmp_path / "res"
    assert main(["run", str(write_problem(PROBLEM)), "--out", str(out), "--quiet",
                 "--max-iter", "3"]) == 0
    copy = out / "problem.yaml"
    copy.write_text(copy.read_text().replace("max: 0.5", "max: 0.4"))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code = main(["resume", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "different problem file" in err and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.parametrize("damage", ["truncated", "garbage", "missing"])
def test_resume_refuses_a_damaged_checkpoint(write_problem, tmp_path, capsys, damage):
    out = tmp_path / "res"
    assert main(["run", str(write_problem(PROBLEM)), "--out", str(out), "--quiet",
                 "--max-iter", "3"]) == 0
    ck = out / "checkpoint.h5"
    if damage == "truncated":
        ck.write_bytes(ck.read_bytes()[: ck.stat().st_size // 2])
    elif damage == "garbage":
        ck.write_bytes(b"not hdf5 at all")
    else:
        ck.unlink()
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code = main(["resume", str(out), "--max-iter", "5"])
    err = capsys.readouterr().err
    assert code == 2 and "checkpoint" in err and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_checkpoint_holds_the_optimizer_and_filter_state(write_problem, tmp_path):
    from femopt.io.checkpoint import read_checkpoint

    out = tmp_path / "res"
    assert main(["run", str(write_problem(PROBLEM)), "--out", str(out), "--quiet",
                 "--max-iter", "7"]) == 0
    ck = read_checkpoint(out / "checkpoint.h5")
    assert ck.iteration == 7 and ck.optimizer == "mma" and len(ck.history) == 7
    # beta stepped after iteration 6, which reset MMA: one previous iterate so far
    # (xold2 not set yet, so absent)
    assert set(ck.optimizer_state) == {"xold1", "low", "upp", "lam"}
    assert ck.optimizer_state["low"].shape == (300,)
    assert ck.filter_states == [{}, {"beta": 2.0, "last_step": 6}]
    assert np.array_equal(ck.x, np.load(out / "design.npy"))
