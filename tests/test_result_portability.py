"""A results directory works from any working directory: a problem whose mesh path is
relative and whose mesh is in another length unit is run in one folder, then exported,
verified and resumed from another; the exported part has the problem's unit and size."""

from __future__ import annotations

import json
import os

import meshio
import numpy as np
import trimesh
import yaml

from femopt.cli import main
from femopt.mesh import structured_grid

PROBLEM = {
    "name": "plate_cm",
    "unit": "cm",
    "mesh": {"type": "file", "path": "meshes/plate_mm.vtu", "unit": "mm"},
    "physics": {"type": "linear_elasticity"},
    "supports": [{"region": {"face": "x_min"}}],
    "loads": [{"region": {"point": [24.0, 0.0]}, "force": [0.0, -1.0]}],
    "filters": [{"type": "density", "radius": 1.5}],
    "objective": {"type": "compliance"},
    "constraints": [{"type": "volume", "max": 0.5}],
    "optimizer": {"type": "oc", "max_iter": 6},
    "output": {"checkpoint_every": 1, "picture": False},
}


def test_export_verify_and_resume_from_another_working_directory(tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / "meshes").mkdir(parents=True)
    grid = structured_grid((24, 8), (240.0, 80.0))  # millimetres
    meshio.write(project / "meshes" / "plate_mm.vtu",
                 meshio.Mesh(np.hstack([grid.points, np.zeros((grid.n_nodes, 1))]),
                             [("quad", grid.cells)]))
    (project / "problem.yaml").write_text(yaml.safe_dump(PROBLEM))
    monkeypatch.chdir(project)
    assert main(["run", "problem.yaml", "--out", "res", "--max-iter", "3", "--quiet"]) == 0
    assert json.loads((project / "res" / "source.json").read_text())["problem_dir"] == \
        str(project.resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    res = project / "res"
    # resume continues the run (3 -> 6 iterations) with the mesh found from the record
    assert main(["resume", str(res), "--quiet"]) == 0
    summary = json.loads((res / "summary.json").read_text())
    assert summary["iterations"] == 6 and summary["resumed_from"] == 3
    # the exported part is in the problem's unit (cm): 24 x 8, not 240 x 80
    assert main(["export", str(res), "--format", "stl", "--out", "part.stl"]) == 0
    part = trimesh.load(elsewhere / "part.stl")
    size = part.bounds[1] - part.bounds[0]
    assert 23.0 < size[0] <= 24.0 + 1e-9 and 7.0 < size[1] <= 8.0 + 1e-9
    # the re-analysis finds the supports and the load on the part, and reports the same
    # from here as from the problem's folder
    ratios = []
    for cwd in (elsewhere, project):
        monkeypatch.chdir(cwd)
        assert main(["export", str(res), "--format", "dxf", "--verify", "--force"]) == 0
        ratios.append(json.loads((res / "verify.json").read_text())["verify"]
                      ["compliance_ratio"])
    assert ratios[0] == ratios[1] and np.isfinite(ratios[0]) and ratios[0] > 0


def test_an_unnamed_problem_keeps_its_name_and_series_through_a_resume(tmp_path, monkeypatch):
    """A problem file without `name:` is named by its file: a resume (from the copy in
    the results directory) keeps that name, and series.pvd lists only the steps that
    exist after the steps beyond the checkpoint were dropped."""
    import xml.etree.ElementTree as ET

    monkeypatch.chdir(tmp_path)
    problem = {k: v for k, v in PROBLEM.items() if k not in ("name", "unit", "mesh")}
    problem["mesh"] = {"type": "structured", "shape": [24, 8], "size": [24.0, 8.0]}
    problem["output"] = {"checkpoint_every": 3, "series_every": 1, "picture": False}
    (tmp_path / "beam.yaml").write_text(yaml.safe_dump(problem))
    assert main(["run", "beam.yaml", "--out", "res", "--max-iter", "5", "--quiet"]) == 0
    assert main(["resume", "res", "--max-iter", "3", "--quiet"]) == 0
    assert json.loads((tmp_path / "res" / "summary.json").read_text())["problem"] == "beam"
    listed = [d.get("file") for d in
              ET.parse(tmp_path / "res" / "series.pvd").getroot().find("Collection")]
    assert listed == [f"series-{it:06d}.vtu" for it in range(4)]
    assert sorted(p.name for p in (tmp_path / "res").glob("series-*.vtu")) == listed


def test_a_failure_while_the_run_sets_up_still_writes_the_summary(tmp_path, monkeypatch):
    import errno

    import femopt.io.series as series

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x"))

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(series.SeriesWriter, "_write_step", full)
    problem = {k: v for k, v in PROBLEM.items() if k not in ("name", "unit", "mesh")}
    problem["mesh"] = {"type": "structured", "shape": [24, 8], "size": [24.0, 8.0]}
    problem["output"] = {"series_every": 1, "picture": False}
    (tmp_path / "beam.yaml").write_text(yaml.safe_dump(problem))
    assert main(["run", "beam.yaml", "--out", "res", "--quiet"]) == 1
    summary = json.loads((tmp_path / "res" / "summary.json").read_text())
    assert summary["status"] == "failed" and "No space left on device" in summary["message"]
