"""The Python API: problems from dicts with the problem file's errors, a run with a
callback, the result object, and the documented example."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import femopt
from femopt.errors import ProblemError

ROOT = Path(__file__).resolve().parents[1]
SMALL = {
    "name": "small",
    "mesh": {"type": "structured", "shape": [24, 8], "size": [24.0, 8.0]},
    "physics": {"type": "linear_elasticity"},
    "supports": [{"region": {"face": "x_min"}, "dofs": ["x"]},
                 {"region": {"point": [24.0, 0.0]}, "dofs": ["y"]}],
    "loads": [{"region": {"point": [0.0, 8.0]}, "force": [0.0, -1.0]}],
    "filters": [{"type": "density", "radius": 1.5}],
    "objective": {"type": "compliance"},
    "constraints": [{"type": "volume", "max": 0.5}],
    "optimizer": {"type": "oc", "max_iter": 5},
    "output": {"picture": False},
}


def _messages(exc: ProblemError) -> list[str]:
    """The errors without the file:line:col prefix."""
    return sorted(line.split(": ", 1)[1] for line in str(exc).splitlines())


@pytest.mark.parametrize("change", [
    {"physics": {"type": "linear_elasticty"}},
    {"optimizer": {"type": "oc", "max_itr": 5}},
    {"constraints": [{"type": "volume", "max": 1.5}]},
    {"mesh": {"type": "structured", "shape": [24, 8]}},
])
def test_a_dict_fails_with_the_messages_of_the_same_problem_file(change, tmp_path):
    """Schema errors (parse) and model errors (build) alike."""
    data = {**SMALL, **change}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ProblemError) as from_file:
        femopt.Problem.from_file(path).build(device="cpu")
    with pytest.raises(ProblemError) as from_dict:
        femopt.Problem.from_dict(data).build(device="cpu")
    assert _messages(from_dict.value) == _messages(from_file.value)
    assert len(_messages(from_dict.value)) >= 1


def test_run_calls_back_every_iteration_and_returns_the_result(tmp_path):
    seen = []
    result = femopt.run(SMALL, out=tmp_path / "res", callback=seen.append)
    assert [r.iteration for r in seen] == [1, 2, 3, 4, 5] == [r.iteration for r in result.history]
    assert result.iterations == 5 and not result.summary["converged"]
    assert result.objective == pytest.approx(seen[-1].objective, rel=0.05)
    assert result.design.shape == result.density.shape == (24 * 8,)
    fields = result.fields()
    assert fields["density"].shape == (24 * 8,)
    assert fields["displacement"].shape[0] == 25 * 9
    assert np.allclose(fields["density"], result.density)
    assert (tmp_path / "res" / "summary.json").exists()
    info = result.export("dxf")
    assert Path(info["file"]).exists() and info["outlines"] >= 1


def test_a_problem_from_a_file_builds_the_same_model():
    problem = femopt.Problem.from_file(ROOT / "problems" / "mbb_beam.yaml")
    model = problem.build(device="cpu")
    assert problem.name == "mbb_beam" and model.mesh.n_cells == 1200


def test_the_api_example_reproduces_the_mbb_beam(tmp_path):
    """docs/examples/api_mbb_beam.py as a user runs it: 94 iterations, c = 203.18."""
    proc = subprocess.run([sys.executable, str(ROOT / "docs" / "examples" / "api_mbb_beam.py"),
                           str(tmp_path / "res")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "94 iterations, compliance 203.18, converged True" in proc.stdout
    assert (tmp_path / "res" / "design.svg").exists()


def test_typed_schema_objects_stand_in_for_their_dicts():
    from femopt.api import Load, Region, Support

    data = yaml.safe_load((ROOT / "problems" / "mbb_beam.yaml").read_text())
    data["supports"] = [Support(region=Region(face="x_min"), dofs=["x"]),
                        Support(region={"point": [60.0, 0.0]}, dofs=["y"])]
    data["loads"] = [Load(region={"point": [0.0, 20.0]}, force=[0.0, -1.0])]
    typed = femopt.Problem.from_dict(data).build(device="cpu")
    plain = femopt.Problem.from_file(ROOT / "problems" / "mbb_beam.yaml").build(device="cpu")
    assert np.array_equal(np.sort(typed.fixed), np.sort(plain.fixed)) and typed.fixed.size == 22
    assert np.array_equal(typed.loads, plain.loads)
