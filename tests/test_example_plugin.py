"""The example plugin package docs/examples/femopt-mean-displacement, installed as a user
would install it and found through its entry point by a femopt run in a subprocess."""

from __future__ import annotations

import json
import re
from pathlib import Path

import meshio
import numpy as np
import pytest

from plugin_install import femopt, install

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "docs" / "examples" / "femopt-mean-displacement"
PROBLEM = PACKAGE / "cantilever_tip.yaml"

# the tip region of cantilever_tip.yaml: x = 40, 8 <= y <= 12
TIP_X, TIP_Y = 40.0, (8.0, 12.0)


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory) -> dict[str, str]:
    """The example package installed; the environment of a subprocess that sees it."""
    return install(PACKAGE, "femopt_mean_displacement",
                   tmp_path_factory.mktemp("example_plugin"))


def test_plugins_lists_the_example(plugin_env):
    proc = femopt(plugin_env, "plugins")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    header = [ln for ln in lines if ln.startswith("mean_displacement ")]
    assert len(header) == 1, proc.stdout
    assert "femopt-mean-displacement 0.1.0" in header[0]
    provided = lines[lines.index(header[0]) + 1].strip()
    # and the paths it runs on, from what it declares
    assert re.fullmatch(r"function:mean_displacement  \(runs on: cpu(, gpu grid, gpu mesh)?\)",
                        provided), provided


def test_run_matches_an_independent_evaluation(plugin_env, tmp_path):
    out = tmp_path / "out"
    proc = femopt(plugin_env, "run", str(PROBLEM), "--out", str(out), "--max-iter", "5",
                  "--quiet")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout == ""
    summary = json.loads((out / "summary.json").read_text())
    assert summary["iterations"] == 5
    assert summary["status"] == "ok"
    assert len((out / "history.csv").read_text().splitlines()) == 1 + 5

    # J = mean over the tip nodes of d . u with d = (0, -1), from the VTU's point data
    vtu = meshio.read(out / "design.vtu")
    pts = vtu.points
    tip = (np.abs(pts[:, 0] - TIP_X) < 1e-9) & (pts[:, 1] >= TIP_Y[0] - 1e-9) & (
        pts[:, 1] <= TIP_Y[1] + 1e-9)
    assert tip.sum() == 5
    u = vtu.point_data["displacement"]
    j = float(np.mean(-u[tip, 1]))
    assert j > 0
    assert summary["objective"] == pytest.approx(j, rel=1e-9)
    # the tip is loaded by a total of 1 shared by the same nodes: J is the compliance
    assert summary["objective"] == pytest.approx(float(np.sum(-u[tip, 1]) / 5), rel=1e-9)


def test_check_gradients_of_the_plugin_objective(plugin_env):
    proc = femopt(plugin_env, "check-gradients", str(PROBLEM))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = next(ln for ln in proc.stdout.splitlines()
                if ln.startswith("objective mean_displacement"))
    rates = [float(r) for r in re.findall(r"\d+\.\d+", line)]
    assert len(rates) == 3, line
    assert all(1.8 <= r <= 2.2 for r in rates), line
    assert line.rstrip().endswith("ok")


OBJECTIVE = ["objective:",
             "  type: mean_displacement",
             "  region: {face: x_max, box: {min: [40.0, 8.0], max: [40.0, 12.0]}}"]

BAD_OPTIONS = [
    # (the objective's last line, the error, the objective line (0-based) it points at):
    # an unknown key points at the key; a ValueError from the plugin at the section
    ("  cases: heavy", "objective.cases: unknown key 'cases'; did you mean 'case'?", 3),
    ("  direction: [0.0, -1.0, 0.0]",
     "objective: direction has 3 component(s); linear_elasticity has 2 per node (x, y)", 1),
]


@pytest.mark.parametrize("last, expected, at", BAD_OPTIONS, ids=["unknown-key", "direction"])
def test_bad_plugin_options_are_located(plugin_env, tmp_path, last, expected, at):
    text = PROBLEM.read_text()
    start, end = text.index("objective:\n"), text.index("constraints:\n")
    objective = OBJECTIVE + ([] if last.startswith("  direction") else
                             ["  direction: [0.0, -1.0]"]) + [last]
    if at == 3:
        at = len(objective) - 1
    bad = tmp_path / "bad.yaml"
    bad.write_text(text[:start] + "\n".join(objective) + "\n" + text[end:])
    out = tmp_path / "out"
    proc = femopt(plugin_env, "run", str(bad), "--out", str(out), "--quiet")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 1, proc.stderr
    line = text[:start].count("\n") + 1 + at
    assert errors[0] == f"{bad}:{line}:3: {expected}"
    assert not out.exists()  # bad input leaves no results directory behind
