"""Distributed runs (femopt.parallel): slabs of a structured grid on MPI ranks.

In-process tests check the pieces and the distributed path on one rank (no MPI needed)
against the one-process grid path. The MPI tests run ``femopt run`` under ``mpiexec -n
2`` and ``-n 3`` (the mpich wheel and mpi4py of the ``test`` extra) and compare with the
one-rank run: the same iterations, objectives within 1e-10 relative (the reductions are
deterministic, so they come out equal). They are skipped when mpi4py or mpiexec is
missing.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from femopt.assembly.grid_layout import GridLayout
from femopt.cli import main
from femopt.evaluation.build import build_model
from femopt.io.checkpoint import read_checkpoint
from femopt.parallel.checkpoints import read_manifest
from femopt.parallel.comm import SERIAL
from femopt.parallel.launch import mpiexec
from femopt.parallel.orientation import Orientation
from femopt.parallel.slabs import largest_size, plan

PROBLEMS = Path(__file__).resolve().parent.parent / "problems"

MBB = """\
name: mbb_mpi
mesh: {type: structured, shape: [32, 16], size: [32.0, 16.0]}
physics: {type: linear_elasticity, E: 1.0, nu: 0.3}
supports:
  - region: {face: x_min}
    dofs: [x]
  - region: {point: [32.0, 0.0]}
    dofs: [y]
loads:
  - region: {point: [0.0, 16.0]}
    force: [0.0, -1.0]
filters:
  - {type: sensitivity, radius: 1.5}
objective: {type: compliance}
constraints:
  - {type: volume, max: 0.5}
optimizer: {type: oc, max_iter: 8}
solver: {type: multigrid, coarsest_size: 100}
output: {picture: false, checkpoint_every: 1}
"""

CANTILEVER = """\
name: cantilever_mpi
mesh: {type: structured, shape: [24, 8, 4], size: [24.0, 8.0, 4.0]}
physics: {type: linear_elasticity, E: 1.0, nu: 0.3}
supports:
  - region: {face: x_min}
loads:
  - region: {box: {min: [24.0, 0.0, 0.0], max: [24.0, 0.0, 4.0]}}
    force: [0.0, -1.0, 0.0]
filters:
  - {type: density, radius: 1.5}
objective: {type: compliance}
constraints:
  - {type: volume, max: 0.3}
optimizer: {type: oc, max_iter: 5}
solver: {type: multigrid, coarsest_size: 300}
output: {picture: false}
"""

# MMA, two load cases, passive cells, a Heaviside projection after the density filter
MMA_CASES = """\
name: mma_mpi
mesh: {type: structured, shape: [24, 8], size: [24.0, 8.0]}
physics: {type: linear_elasticity}
supports:
  - region: {point: [0.0, 0.0]}
  - region: {point: [24.0, 0.0]}
    dofs: [y]
load_cases:
  - name: left
    loads:
      - region: {point: [8.0, 8.0]}
        force: [0.0, -1.0]
  - name: right
    loads:
      - region: {point: [16.0, 8.0]}
        force: [0.0, -1.0]
design:
  passive:
    - region: {box: {min: [0.0, 7.0], max: [24.0, 8.0]}}
      value: solid
filters:
  - {type: density, radius: 1.5}
  - {type: heaviside, beta: 2.0}
objective: {type: compliance}
constraints:
  - {type: volume, max: 0.4}
optimizer: {type: mma, max_iter: 6}
solver: {type: multigrid, coarsest_size: 60}
output: {picture: false}
"""


def _mpi_missing() -> str | None:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed (pip install mpich mpi4py, the test extra)"
    if mpiexec() is None:
        return "no mpiexec (pip install mpich)"
    return None


needs_mpi = pytest.mark.skipif(_mpi_missing() is not None, reason=str(_mpi_missing()))


def femopt(*args, env: dict | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    """``python -m femopt ARGS`` in a fresh process (so that mpiexec can start it)."""
    full = dict(os.environ, **(env or {}))
    full.pop("PMI_SIZE", None)
    return subprocess.run([sys.executable, "-m", "femopt", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=full)


def history(out: Path) -> list[dict]:
    with open(out / "history.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def same_run(a: Path, b: Path) -> None:
    """Iterations exact, objectives and constraints within 1e-10 relative."""
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    assert sa["iterations"] == sb["iterations"]
    assert sb["objective"] == pytest.approx(sa["objective"], rel=1e-10)
    ha, hb = history(a), history(b)
    assert len(ha) == len(hb) == sa["iterations"]
    for ra, rb in zip(ha, hb):
        for key in ra:
            if key != "seconds":
                assert float(rb[key]) == pytest.approx(float(ra[key]), rel=1e-10, abs=1e-14)
    assert np.allclose(np.load(b / "design.npy"), np.load(a / "design.npy"), rtol=0,
                       atol=1e-10)


# -- the pieces, in process -----------------------------------------------------------

@pytest.mark.parametrize("shape,axis", [((6, 4), 0), ((5, 3, 4), 0), ((5, 3, 4), 1)])
def test_orientation_round_trips(shape, axis):
    o = Orientation(shape, axis)
    assert o.internal_shape[-1] == shape[axis]
    rng = np.random.default_rng(0)
    cells = rng.standard_normal(int(np.prod(shape)))
    assert np.array_equal(o.cells_out(o.cells_in(cells)), cells)
    lay = GridLayout(shape, 2)
    nodes = rng.standard_normal(lay.n_dofs)
    assert np.array_equal(o.nodes_out(o.nodes_in(nodes, 2), 2), nodes)


def test_plan_and_the_largest_rank_count():
    # 60 cell layers, 3 levels, a filter reaching 2 cells
    bounds, dist = plan(60, 3, 3, 2)
    assert bounds == [0, 20, 40, 60] and dist == 2
    assert plan(60, 3, 31, 2) is None
    assert largest_size(60, 3, 2) == 30
    bounds, dist = plan(32, 3, 17, 1)  # too many ranks for pairs of layers: one level cut
    assert dist == 1 and len(bounds) == 18


def test_one_rank_equals_the_grid_path(write_problem):
    """The distributed path on one rank (no MPI) and the one-process grid path (NumPy):
    the same CG iterations and objectives within the solver's tolerance. Both in float64
    CG (the grid path's default mixed precision counts float32 iterations), to the same
    rtol (the grid path's default is looser than the distributed path's)."""
    path = write_problem(MBB.replace("coarsest_size: 100}", "coarsest_size: 100, "
                                     "krylov: double, coarse_operator: galerkin, "
                                     "rtol: 1.0e-8}"))
    runs = []
    for kwargs in ({"distributed": SERIAL}, {}):
        if kwargs:
            model = build_model(path, **kwargs)
        else:
            from femopt.evaluation.model import Model
            from femopt.plugins.manager import get_registry
            from femopt.problem.load import read_problem

            reg = get_registry()
            model = Model(read_problem(path, reg), reg, array_module=np)
        model.optimizer.run(model, model.x0.copy(), 5)
        runs.append(model)
    a, b = runs
    assert [r.objective for r in a.history] == pytest.approx(
        [r.objective for r in b.history], rel=1e-7)
    assert a.path.cg_iterations == b.path.cg_iterations
    assert len(a.path.mg.levels) == 3


def test_ranks_one_runs_in_process(write_problem, tmp_path, capsys):
    path = write_problem(MBB)
    assert main(["run", str(path), "--ranks", "1", "--out", str(tmp_path / "r1"),
                 "--quiet"]) == 0
    s = json.loads((tmp_path / "r1" / "summary.json").read_text())
    assert s["ranks"] == 1 and s["iterations"] == 8


def test_what_is_not_distributed_is_refused(write_problem, tmp_path, capsys):
    text = MBB.replace("solver: {type: multigrid, coarsest_size: 100}", "solver: {type: pcg}")
    path = write_problem(text)
    assert main(["run", str(path), "--ranks", "1", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "cannot run distributed" in err and "multigrid" in err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("name,why", [
    ("mbb_beam_overhang", "overhang"), ("bridge_3d_symmetric", "design_map"),
    ("l_bracket_stress", "stress_pnorm"), ("heat_sink_flow", "not symmetric"),
    ("bracket_3d", "structured grid")])
def test_shipped_problems_not_distributed_yet(name, why, tmp_path, capsys):
    assert main(["run", str(PROBLEMS / f"{name}.yaml"), "--ranks", "1", "--out",
                 str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "cannot run distributed" in err and why in err
    assert not (tmp_path / "x").exists()


def test_too_many_ranks_before_any_work(write_problem, tmp_path, capsys):
    path = write_problem(MBB)
    t = time.perf_counter()
    assert main(["run", str(path), "--ranks", "40", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "40 ranks are too many" in err and "at most 16 rank(s)" in err
    assert not (tmp_path / "x").exists()
    assert time.perf_counter() - t < 30


def test_the_linear_constraint_on_one_rank_is_the_grid_paths(write_problem):
    """OC's linear volume constraint (w, b) on the distributed path (one rank, no MPI;
    passive cells counted by the slab's dot) equals the one-process grid path's, w in
    the slab's cell order."""
    from femopt.evaluation.model import Model
    from femopt.plugins.manager import get_registry
    from femopt.problem.load import read_problem

    path = write_problem(MBB.replace("filters:", "design:\n  passive:\n    - region: {box: "
                                     "{min: [0.0, 0.0], max: [4.0, 16.0]}}\n"
                                     "      value: solid\nfilters:"))
    dist = build_model(path, distributed=SERIAL)
    reg = get_registry()
    grid = Model(read_problem(path, reg), reg, array_module=np)
    assert grid.passive_idx.size == 4 * 16
    (_, bd), (_, bg) = dist.linear_constraint(), grid.linear_constraint()
    wd, wg = dist.path.linear_weights(), grid.path.linear_weights()
    assert bd == pytest.approx(bg, rel=1e-14) and bd != grid.bounds[0].normalized(0.0)
    np.testing.assert_allclose(wd, dist.path.orient.cells_in(wg), rtol=1e-12,
                               atol=1e-15 * np.abs(wg).max())


# -- on several ranks ---------------------------------------------------------------------

@needs_mpi
@pytest.mark.parametrize("text", [MBB, CANTILEVER], ids=["mbb", "cantilever_3d"])
def test_two_and_three_ranks_equal_one(text, write_problem, tmp_path):
    path = write_problem(text)
    outs, lines = {}, {}
    for n in (1, 2, 3):
        outs[n] = tmp_path / f"r{n}"
        proc = femopt("run", path, "--ranks", n, "--out", outs[n])
        assert proc.returncode == 0, proc.stderr
        lines[n] = [ln for ln in proc.stdout.splitlines() if ln.startswith("femopt: ")]
    assert len(lines[2]) == len(lines[3]) == len(lines[1]) > 0  # rank 0's progress, once
    for n in (2, 3):
        same_run(outs[1], outs[n])
        s = json.loads((outs[n] / "summary.json").read_text())
        assert s["ranks"] == n
        assert sorted(p.name for p in outs[n].iterdir()) == sorted(
            p.name for p in outs[1].iterdir())


@needs_mpi
def test_a_float32_v_cycle_on_two_ranks_equals_one(write_problem, tmp_path):
    """A float32 V-cycle's Lanczos products are float32 sums: the cut levels' sums taken
    together (Comm.sum_groups) add them in float32 as one level's alone does."""
    text = (MBB.replace("shape: [32, 16], size: [32.0, 16.0]",
                        "shape: [64, 32], size: [64.0, 32.0]")
            .replace("[32.0, 0.0]", "[64.0, 0.0]").replace("[0.0, 16.0]", "[0.0, 32.0]")
            .replace("max_iter: 8", "max_iter: 3")
            .replace("coarsest_size: 100}", "coarsest_size: 100, precision: float32}"))
    path = write_problem(text)
    outs = {n: tmp_path / f"r{n}" for n in (1, 2)}
    for n, out in outs.items():
        proc = femopt("run", path, "--ranks", n, "--out", out)
        assert proc.returncode == 0, proc.stderr
    comm = json.loads((outs[2] / "summary.json").read_text())["communication"]
    # two cut levels or more: their Lanczos products go in one reduction per step
    assert comm["per_iteration"][0]["reductions"]["lanczos"]["values"] >= 2 * (1 + 2 * 20)
    same_run(outs[1], outs[2])
    for ra, rb in zip(history(outs[1]), history(outs[2])):  # bit for bit, as in float64
        assert {k: v for k, v in ra.items() if k != "seconds"} == \
            {k: v for k, v in rb.items() if k != "seconds"}


@needs_mpi
def test_mma_load_cases_passive_cells_on_two_ranks(write_problem, tmp_path):
    path = write_problem(MMA_CASES)
    outs = {}
    for n in (1, 2):
        outs[n] = tmp_path / f"r{n}"
        proc = femopt("run", path, "--ranks", n, "--out", outs[n], "--quiet")
        assert proc.returncode == 0, proc.stderr
    same_run(outs[1], outs[2])


@needs_mpi
@pytest.mark.parametrize("name,iters", [("mbb_beam", 6), ("cantilever_3d", 3),
                                        ("force_inverter", 3), ("mbb_beam_density", 2),
                                        ("bridge_pressure", 2), ("heat_volume_to_point", 2),
                                        ("two_load_cases", 2)])
def test_shipped_problems_on_two_ranks(name, iters, tmp_path):
    """The shipped grid problems (their first iterations; docs/benchmarks.md has whole
    runs): two ranks equal one. The force inverter: springs, MMA, an adjoint solve."""
    outs = {}
    for n in (1, 2):
        outs[n] = tmp_path / f"r{n}"
        proc = femopt("run", PROBLEMS / f"{name}.yaml", "--ranks", n, "--out", outs[n],
                      "--max-iter", iters, "--quiet")
        assert proc.returncode == 0, proc.stderr
    same_run(outs[1], outs[2])


@needs_mpi
def test_mpiexec_with_too_many_ranks(write_problem, tmp_path):
    """Under mpiexec itself: every rank finds it, rank 0 says it once, exit 2."""
    path = write_problem(MBB.replace("shape: [32, 16]", "shape: [4, 2]").replace(
        "[32.0, 0.0]", "[4.0, 0.0]").replace("size: [32.0, 16.0]", "size: [4.0, 2.0]")
        .replace("[0.0, 16.0]", "[0.0, 2.0]"))
    proc = subprocess.run([mpiexec(), "-n", "3", sys.executable, "-m", "femopt", "run",
                           str(path), "--out", str(tmp_path / "x")], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("3 ranks are too many") == 1
    assert "at most 2 rank(s)" in proc.stderr
    assert not (tmp_path / "x").exists()


@needs_mpi
def test_a_failing_rank_stops_the_others(write_problem, tmp_path):
    path = write_problem(MBB.replace("max_iter: 8", "max_iter: 50"))
    out = tmp_path / "f"
    t = time.perf_counter()
    proc = femopt("run", path, "--ranks", 2, "--out", out, "--quiet",
                  env={"FEMOPT_TEST_FAIL_RANK": "1:4"}, timeout=120)
    assert time.perf_counter() - t < 60
    assert proc.returncode == 1, proc.stderr
    assert "rank 1 of 2 failed" in proc.stderr and "injected failure" in proc.stderr, (
        proc.stderr)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and "rank 1 of 2 failed" in summary["message"]
    m = read_manifest(out)  # the last one, intact (each piece matches its hash)
    assert m["iteration"] == 3 and m["ranks"] == 2
    ck = read_checkpoint(out / m["pieces"][1]["file"])
    assert ck.iteration == 3 and ck.local is False and ck.x.size == 32 * 16 // 2


@pytest.mark.parametrize("came_through", [False, True])
def test_the_launcher_says_a_failure_the_abort_cut_off(came_through, tmp_path, capsys,
                                                       monkeypatch):
    """MPI's abort can stop a rank's last words on their way to mpiexec: the launcher then
    prints the copy the rank left in its folder, though other lines (a warning) did come
    through; a message that came through is not printed twice."""
    pytest.importorskip("mpi4py")
    import femopt.parallel.launch as launch

    said = "femopt: rank 1 of 2 failed: disk full"
    fake = tmp_path / "mpiexec"
    fake.write_text("#!/bin/sh\n"
                    "echo 'WARNING: something else' >&2\n"
                    + (f"echo '{said}' >&2\n" if came_through else "")
                    + f"printf '%s' '{said}' > \"${launch.PID_VARIABLE}/failed-1\"\n"
                    "exit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(launch, "mpiexec", lambda: str(fake))
    assert launch.launch(["run", "p.yaml"], 2) == 1
    err = capsys.readouterr().err
    assert "something else" in err and err.count(said) == 1


@needs_mpi
def test_resume_on_another_rank_count(write_problem, tmp_path):
    """The pieces of a checkpoint on 2 ranks give each of 3 ranks its cell layers and the
    warm starts of its node layers, so a run resumes on any number of ranks and repeats
    the uninterrupted run (history and design within 1e-10; they come out equal)."""
    path = write_problem(MBB)
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert femopt("run", path, "--ranks", 2, "--out", whole, "--quiet").returncode == 0
    assert femopt("run", path, "--ranks", 2, "--out", part, "--quiet",
                  "--max-iter", 4).returncode == 0
    proc = femopt("resume", part, "--ranks", 3, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((part / "summary.json").read_text())["resumed_from"] == 4
    same_run(whole, part)


@needs_mpi
@pytest.mark.parametrize("sig,code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_interrupting_a_distributed_run(sig, code, write_problem, tmp_path):
    """Ctrl-C or SIGTERM to ``femopt run --ranks 2``: every rank stops at the end of the
    iteration, rank 0 writes the summary (interrupted) and the command to go on."""
    import signal

    path = write_problem(MBB.replace("max_iter: 8", "max_iter: 400").replace(
        "shape: [32, 16]", "shape: [64, 32]").replace("size: [32.0, 16.0]",
                                                      "size: [64.0, 32.0]")
        .replace("[32.0, 0.0]", "[64.0, 0.0]").replace("[0.0, 16.0]", "[0.0, 32.0]"))
    out = tmp_path / "i"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "femopt", "run", str(path), "--ranks", "2",
                             "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        for line in proc.stdout:
            if line.startswith("it    3"):
                break
        proc.send_signal(getattr(signal, sig))
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    assert f"interrupted by {sig}" in err and f"femopt resume {out} --ranks N" in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["ranks"] == 2
    assert read_manifest(out)["ranks"] == 2
