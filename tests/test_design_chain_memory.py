"""The design chain's per-cell arrays, as the grid path's memory count
(``grid_memory.iteration_arrays``) takes them: rho is the filtered design itself, not a
copy of it."""

from __future__ import annotations

import numpy as np
import pytest

from path_checks import build
from test_device import problem

PASSIVE = {"passive": [
    {"region": {"box": {"min": [0.0, 0.0], "max": [6.0, 4.0]}}, "value": "solid"},
    {"region": {"box": {"min": [30.0, 10.0], "max": [40.0, 20.0]}}, "value": "void"}]}
PATHS = [{"device": "cpu"}, {"array_module": np}]


def _problem(name: str, passive: bool = False, **changes) -> dict:
    data = problem(name, **changes)
    if passive:
        data["design"] = {**data["design"], **PASSIVE}
    return data


def _recorded(stage) -> list:
    """The arrays ``stage.forward`` returns, in order."""
    out: list = []
    forward = stage.forward
    stage.forward = lambda y: out.append(forward(y)) or out[-1]
    return out


@pytest.mark.parametrize("where", PATHS, ids=["cpu", "twin"])
@pytest.mark.parametrize("passive", [False, True])
def test_rho_is_the_filtered_design_itself(where, passive):
    """Through a density filter rho is the filter's new array (the passive cells written
    into it), no copy of it; x is left as it was."""
    model = build(_problem("mbb_beam_density", passive), **where)
    x = model.to_device(np.random.default_rng(1).uniform(0.2, 0.8, model.n))
    x_before = np.array(x, copy=True)
    out = _recorded(model.path.stages[0])
    rho, inputs = model.physical(x)
    assert rho is out[0] and inputs[0] is x
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(rho[model.passive_idx], model.passive_val)
    assert (model.passive_idx.size > 0) == passive


@pytest.mark.parametrize("where", PATHS, ids=["cpu", "twin"])
@pytest.mark.parametrize("filters", [[], [{"type": "sensitivity", "radius": 1.5}]],
                         ids=["none", "sensitivity"])
def test_rho_is_a_copy_where_the_chain_hands_x_back(where, filters):
    """With no filter, or one whose forward returns its input (the sensitivity filter),
    rho is a new array: writing the passive cells never reaches the design."""
    model = build(_problem("mbb_beam", True, filters=filters), **where)
    x = model.to_device(np.full(model.n, 0.5))
    rho, _ = model.physical(x)
    assert not np.shares_memory(rho, x)
    assert np.all(x == 0.5) and rho[model.passive_idx].min() == 0.0
