"""The command line as a user meets it: exit codes, located errors, results on disk."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import meshio
import numpy as np
import pytest

from conftest import SMALL_BEAM
from femopt.cli import main


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def located(err: str, path: Path) -> list[tuple[int, int, str, str]]:
    """(line, col, key path, message) of every FILE:LINE:COL: error line."""
    pat = re.compile(re.escape(str(path)) + r":(\d+):(\d+): ([^:]+): (.*)")
    return [(int(m[1]), int(m[2]), m[3], m[4]) for m in map(pat.match, err.splitlines()) if m]


def test_validate_accepts_a_good_file(write_problem, capsys):
    code, out, _ = run_cli(["validate", write_problem(SMALL_BEAM)], capsys)
    assert code == 0
    assert "48 cells" in out


def test_run_writes_the_results_directory(write_problem, tmp_path, capsys):
    out_dir = tmp_path / "res"
    code, out, _ = run_cli(["run", write_problem(SMALL_BEAM), "--out", out_dir,
                            "--max-iter", "4"], capsys)
    assert code == 0
    lines = [ln for ln in out.splitlines() if ln.startswith("it ")]
    assert len(lines) == 4 and "obj" in lines[0] and "volume" in lines[0] and "change" in lines[0]
    for name in ("summary.json", "history.csv", "design.vtu", "convergence.png", "design.png"):
        assert (out_dir / name).is_file(), name
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["iterations"] == 4 and summary["converged"] is False
    assert summary["status"] == "ok"
    assert set(summary["versions"]) >= {"femopt", "numpy", "scipy", "pluggy", "meshio"}
    rows = list(csv.DictReader((out_dir / "history.csv").open()))
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4]
    mesh = meshio.read(out_dir / "design.vtu")
    rho = mesh.cell_data["density"][0]
    assert rho.shape == (48,) and 0.0 <= rho.min() and rho.max() <= 1.0
    assert mesh.point_data["displacement"].shape == (65, 3)
    # the summary's objective is the compliance of the written design: f^T u
    u = mesh.point_data["displacement"]
    top_left = np.flatnonzero((mesh.points[:, 0] == 0.0) & (mesh.points[:, 1] == 4.0))
    assert summary["objective"] == pytest.approx(-u[top_left[0], 1], rel=1e-10)
    assert summary["constraints"]["volume"] == pytest.approx(rho.mean(), rel=1e-10)


def test_check_gradients_passes_for_compliance_and_volume(write_problem, capsys):
    code, out, _ = run_cli(["check-gradients", write_problem(SMALL_BEAM)], capsys)
    assert code == 0
    rates = [float(r) for r in re.findall(r"rates ([\d.]+)", out)]
    assert rates and all(1.9 < r < 2.1 for r in rates)
    assert "exact (linear)" in out  # volume through a linear filter


def test_plugins_lists_builtins_with_their_distribution(capsys):
    code, out, _ = run_cli(["plugins"], capsys)
    assert code == 0
    assert re.search(r"^functions\s+\(femopt ", out, re.M)
    for provided in ("function:compliance", "optimizer:mma", "optimizer:nlopt",
                     "filter:heaviside", "physics:heat_conduction", "solver:direct"):
        assert provided in out


# -- bad input: each a located message, exit 2, nothing written ----------------------

BAD = {
    "malformed": ("mesh: {type: structured\nphysics: [", None, "malformed YAML"),
    "unknown_key": (SMALL_BEAM.replace("objective: {type: compliance}",
                                       "objective: {type: compliance}\nobjetcive: 1"),
                    "objetcive", "did you mean 'objective'?"),
    "unknown_nested_key": (SMALL_BEAM.replace("shape: [12, 4]", "shap: [12, 4]"),
                           "mesh.shap", "did you mean 'shape'?"),
    "unknown_type": (SMALL_BEAM.replace("{type: compliance}", "{type: complience}"),
                     "objective.type", "did you mean 'compliance'?"),
    "unknown_optimizer": (SMALL_BEAM.replace("{type: oc,", "{type: mmma,"),
                          "optimizer.type", "did you mean 'mma'?"),
    "unknown_physics": (SMALL_BEAM.replace("linear_elasticity", "elasticity"),
                        "physics.type", "unknown physics type"),
    "wrong_type": (SMALL_BEAM.replace("max_iter: 10", "max_iter: ten"),
                   "optimizer.max_iter", "integer"),
    "negative_size": (SMALL_BEAM.replace("shape: [12, 4]", "shape: [12, -4]"),
                      "mesh.shape", "positive"),
    "empty_region": (SMALL_BEAM.replace("point: [0.0, 4.0]", "point: [0.5, 4.0]"),
                     "loads.0.region", "selects no node"),
    "volume_fraction": (SMALL_BEAM.replace("max: 0.5", "max: 1.5"),
                        "constraints.0.max", "(0, 1]"),
    "small_radius": (SMALL_BEAM.replace("radius: 1.5", "radius: 0.5"),
                     "filters.0", "not larger than the smallest cell"),
    "non_finite": (SMALL_BEAM.replace("E: 1.0", "E: .inf").replace(
        "{type: linear_elasticity}", "{type: linear_elasticity, E: .nan}"),
        "physics.E", "finite"),
    "duplicate_key": (SMALL_BEAM + "objective: {type: compliance}\n", "objective",
                      "duplicate key"),
    "load_kind": (SMALL_BEAM.replace("force: [0.0, -1.0]", "heat: 1.0"),
                  "loads.0.heat", "takes 'force' loads"),
    "dof_name": (SMALL_BEAM.replace("dofs: [x]", "dofs: [t]"), "supports.0.dofs",
                 "unknown dof 't'"),
    "unknown_format": (SMALL_BEAM + "output: {formats: [vtk]}\n", "output.formats.0",
                       "did you mean 'vtu'?"),
}


@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("command", ["validate", "run"])
def test_bad_problem_file_is_located_and_writes_nothing(case, command, write_problem,
                                                        tmp_path, capsys):
    text, key, message = BAD[case]
    path = write_problem(text)
    out_dir = tmp_path / "out"
    args = [command, path] + (["--out", out_dir] if command == "run" else [])
    code, _, err = run_cli(args, capsys)
    assert code == 2
    errors = located(err, path)
    assert errors, err
    assert "Traceback" not in err
    assert any(message in msg and (key is None or k == key) for _, _, k, msg in errors), err
    assert all(line >= 1 and col >= 1 for line, col, _, _ in errors)
    assert not out_dir.exists()


def test_error_positions_point_at_the_key(write_problem, capsys):
    path = write_problem(BAD["unknown_nested_key"][0])
    _, _, err = run_cli(["validate", path], capsys)
    found = {key: (line, col) for line, col, key, _ in located(err, path)}
    assert found["mesh.shap"] == (2, 26)  # 'shap' in "mesh: {type: structured, shap: ..."
    assert found["mesh.shape"] == (2, 7)  # the mapping that lacks it


def test_every_error_is_reported_at_once(write_problem, capsys):
    text = SMALL_BEAM.replace("shape: [12, 4]", "shap: [12, 4]").replace(
        "{type: compliance}", "{type: complience}")
    path = write_problem(text)
    _, _, err = run_cli(["validate", path], capsys)
    keys = {k for _, _, k, _ in located(err, path)}
    assert {"mesh.shap", "objective.type"} <= keys


def test_supports_that_leave_a_rigid_mode_are_refused(write_problem, tmp_path, capsys):
    # only x fixed on the left edge: the beam can slide in y
    text = SMALL_BEAM.replace("""  - region: {point: [12.0, 0.0]}
    dofs: [y]
""", "")
    code, _, err = run_cli(["run", write_problem(text), "--out", tmp_path / "o"], capsys)
    assert code == 2
    assert "free to move" in err and "translation in y" in err
    assert not (tmp_path / "o").exists()


def test_heat_without_a_fixed_temperature_is_refused(write_problem, capsys):
    text = """\
mesh: {type: structured, shape: [4, 4], size: [1.0, 1.0]}
physics: {type: heat_conduction}
supports:
  - region: {point: [9.0, 9.0]}
loads:
  - {body: true, heat: 1.0}
objective: {type: thermal_compliance}
constraints: [{type: volume, max: 0.5}]
"""
    code, _, err = run_cli(["validate", write_problem(text)], capsys)
    assert code == 2 and "supports.0.region" in err and "selects no node" in err


def test_output_directory_that_cannot_be_created(write_problem, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code, _, err = run_cli(["run", write_problem(SMALL_BEAM), "--out", blocker / "res"],
                           capsys)
    assert code == 2 and "not a directory" in err
    assert blocker.read_text() == "not a directory"


def test_missing_problem_file(tmp_path, capsys):
    code, _, err = run_cli(["validate", tmp_path / "nope.yaml"], capsys)
    assert code == 2 and "no such problem file" in err


@pytest.mark.parametrize("args", [["run"], ["run", "x.yaml", "--max-iter", "0"],
                                  ["frobnicate"]])
def test_bad_arguments_exit_2(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2


def test_oc_with_two_constraints_is_bad_input(write_problem, tmp_path, capsys):
    text = SMALL_BEAM.replace("  - {type: volume, max: 0.5}",
                              "  - {type: volume, max: 0.5}\n  - {type: compliance, max: 100}")
    code, _, err = run_cli(["run", write_problem(text), "--out", tmp_path / "o"], capsys)
    assert code == 2 and "oc" in err
    assert not (tmp_path / "o").exists()


def test_solver_failure_during_a_run_exits_1_with_a_failed_summary(write_problem, tmp_path,
                                                                  capsys):
    text = SMALL_BEAM + "solver: {type: pcg, max_iter: 2}\n"
    out_dir = tmp_path / "o"
    code, _, err = run_cli(["run", write_problem(text), "--out", out_dir], capsys)
    assert code == 1
    assert "PCG did not converge in 2 iterations" in err and "Traceback" not in err
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["converged"] is False
    history = summary["solver_residuals"]  # the failed solve's, in full
    assert len(history) == 2 and all(r > 1e-8 for r in history)
    assert f"1: {history[0]:.2e}, 2: {history[1]:.2e}" in err
