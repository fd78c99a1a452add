"""Integrands femopt cannot run or differentiate are found when the problem is built:
a Python branch on a traced value, a call of a function it cannot differentiate, a
result of the wrong shape. Each is a problem-file error (exit code 2) located at the
function's section and naming the integrand's file and line."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from femopt.errors import ProblemError
from femopt.objectives.integrand import IntegrandFunction
from femopt.plugins.manager import build_manager
from test_integrand_functions import ELASTIC_2D, ProbeOptions, build


class Branches(IntegrandFunction):
    name = "branches"
    Options = ProbeOptions

    def integrand(self, ops, cell):
        if cell.u[0] > 0:  # BAD-BRANCH
            return cell.u[0]
        return -cell.u[0]


class CallsMath(IntegrandFunction):
    name = "calls_math"
    Options = ProbeOptions

    def integrand(self, ops, cell):
        return cell.rho * math.sin(cell.u[1])  # BAD-MATH


class WrongShape(IntegrandFunction):
    name = "wrong_shape"
    Options = ProbeOptions

    def integrand(self, ops, cell):  # BAD-SHAPE
        return [ui * ui for ui in cell.u]


@pytest.mark.parametrize("cls, marker, says", [
    (Branches, "BAD-BRANCH", "used in a Python condition or comparison; write the choice "
     "branch-free with ops.select_lt"),
    (CallsMath, "BAD-MATH", "must be real number, not Dual"),
    (WrongShape, "BAD-SHAPE", "returned a list of 8 values for 3 cells and 2 load case(s); it must return one "
     "scalar per cell or point"),
], ids=["branch", "math-sin", "shape"])
def test_bad_integrand_is_a_located_problem_error(cls, marker, says):
    _, reg = build_manager()
    reg.add("function", cls)
    with pytest.raises(ProblemError) as info:
        build(reg, ELASTIC_2D + "objective: {type: " + cls.name + "}\n")
    assert info.value.exit_code == 2
    lines = Path(__file__).read_text().splitlines()
    line = next(i + 1 for i, ln in enumerate(lines) if ln.endswith(f"# {marker}"))
    msg = str(info.value)
    assert msg.startswith("test.yaml:")
    assert f"objective: function '{cls.name}': integrand at {__file__}:{line}: `" in msg
    assert says in msg


@pytest.mark.parametrize("command", ["validate", "run"])
def test_bad_integrand_exits_2_from_the_command_line(command, tmp_path, monkeypatch, capsys):
    """``femopt validate`` and ``femopt run`` report the located error, exit with 2 and
    leave no results directory."""
    import femopt.evaluation.build
    import femopt.plugins.manager
    from femopt.cli import main

    _, reg = build_manager()
    reg.add("function", CallsMath)
    monkeypatch.setattr(femopt.evaluation.build, "get_registry", lambda: reg)
    monkeypatch.setattr(femopt.plugins.manager, "get_registry", lambda: reg)
    path = tmp_path / "bad.yaml"
    path.write_text(ELASTIC_2D + "objective: {type: calls_math}\n")
    out = tmp_path / "out"
    args = [command, str(path)] + (["--out", str(out), "--quiet"] if command == "run" else [])
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    line = next(i + 1 for i, ln in enumerate(Path(__file__).read_text().splitlines())
                if ln.endswith("# BAD-MATH"))
    assert len(err) == 1, err
    assert err[0].startswith(f"{path}:11:12: objective: function 'calls_math': integrand at "
                             f"{__file__}:{line}: `return cell.rho * math.sin(cell.u[1])")
    assert not out.exists()
