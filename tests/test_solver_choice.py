"""The default solver of a problem file without `solver:`, and CHOLMOD as an optional
extra."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

import femopt.solvers.choice as choice
from femopt.runner import build_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=[False, True], ids=["superlu", "cholmod"])
def cholmod(request, monkeypatch):
    """Whether CHOLMOD counts as installed (the choice only; no solve here)."""
    monkeypatch.setattr(choice, "_has_cholmod", lambda: request.param)
    return request.param


def without_solver(problem: str, tmp_path: Path) -> Path:
    """The problem file with its ``solver:`` section left out (the L-bracket names the
    direct solver to keep its history; here it stands for a 2D grid of its size)."""
    data = yaml.safe_load((ROOT / "problems" / problem).read_text())
    if data.pop("solver", None) is None:
        return ROOT / "problems" / problem  # (mesh files stay relative to problems/)
    path = tmp_path / problem
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("problem, without, with_cholmod", [
    ("cantilever_3d.yaml", "multigrid", "multigrid"),  # 3D grid, 18,900 free dofs
    ("mbb_beam.yaml", "direct", "direct"),  # 2D grid, 2,540 free dofs
    ("l_bracket_stress.yaml", "multigrid", "direct"),  # 2D grid, 13,056 free dofs
    ("force_inverter.yaml", "direct", "direct"),  # springs
    ("heat_sink_flow.yaml", "direct", "direct"),  # convection: not symmetric
    ("bracket_3d.yaml", "direct", "direct"),  # a 3D mesh of 2,910 free dofs
])
def test_the_default_solver_of_each_kind_of_problem(problem, without, with_cholmod, cholmod,
                                                    tmp_path):
    model = build_model(without_solver(problem, tmp_path), device="cpu")
    assert model.solver.name == (with_cholmod if cholmod else without)
    assert model.solver_choice is not None and model.solver_choice.solver is model.solver


@pytest.mark.parametrize("cholmod", [False, True])
def test_a_large_3d_mesh_from_a_file_gets_amg(cholmod, monkeypatch):
    monkeypatch.setattr(choice, "_has_cholmod", lambda: cholmod)
    model = build_model(ROOT / "problems" / "bracket_3d.yaml", device="cpu")
    least = choice.AMG_MIN_DOFS_CHOLMOD if cholmod else choice.AMG_MIN_DOFS
    picked = choice.pick_solver(model.mesh, model.physics, least, False)
    assert picked.solver.name == "amg" and f"{least:,} free dofs" in picked.reason
    below = choice.pick_solver(model.mesh, model.physics, least - 1, False)
    assert below.solver.name == "direct"


def test_a_solver_in_the_file_is_kept(tmp_path):
    text = (ROOT / "problems" / "cantilever_3d.yaml").read_text()
    path = tmp_path / "c.yaml"
    path.write_text(text + "solver: {type: direct, method: superlu}\n")
    model = build_model(path, device="cpu")
    assert model.solver.name == "direct" and model.solver_choice is None
    assert choice.choice_line(model) is None


def test_cholmod_and_superlu_agree_where_cvxopt_is_installed():
    pytest.importorskip("cvxopt", reason="cvxopt is the optional 'cholmod' extra")
    from femopt.solvers.direct import DirectOptions, DirectSolver

    model = build_model(ROOT / "problems" / "mbb_beam.yaml", device="cpu")
    k = model.assembler.assemble(np.full(model.mesh.n_cells, 0.5) ** 3, model.ke)
    b = model.loads_free[:, 0]
    x = [DirectSolver(DirectOptions(method=m), k).solve(b) for m in ("cholmod", "superlu")]
    assert np.allclose(x[0], x[1], rtol=1e-10, atol=0)
