"""The gradient phase of a design iteration on the grid path's CPU twin, as the memory
count (``grid_memory.iteration_arrays``) takes it: the float64 arrays of the cells' size
alive beyond those held when the adjoint solves end, counted by tracemalloc after each
step of the sensitivity pass, the chain rule and the optimizer's evaluation. Each
step's own temporaries are gone by then (they are freed as the step returns), so these
are the arrays the code keeps alive between its steps, as on the GPU."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import femopt.evaluation.device as device
import femopt.evaluation.path as path_module
from path_checks import build
from test_mixed_precision import cantilever

SENSITIVITY = [{"type": "sensitivity", "radius": 1.5}]


def _counted_steps(model, monkeypatch, iterations: int = 2) -> dict[str, list[int]]:
    """Live float64 cell arrays beyond the held ones after each wrapped step, by phase:
    ``gradient`` (dm/drho, the functions' terms, the chain rule) and ``optimizer``
    (the evaluation: heuristic rewrite, scaling, the rows of dg)."""
    n, path = model.mesh.n_cells, model.path
    state: dict = {"base": None}
    counts: dict[str, list[int]] = {"gradient": [], "optimizer": []}

    def live() -> int:
        return sum(1 for t in tracemalloc.take_snapshot().traces if t.size == 8 * n)

    def after(owner, name, phase, start=False, stop=False):
        f = getattr(owner, name)

        def wrapped(*args, **kwargs):
            out = f(*args, **kwargs)
            if start:
                state["base"] = live()
            elif state["base"] is not None:
                counts[phase].append(live() - state["base"])
            if stop:
                state["base"] = None
            return out

        monkeypatch.setattr(owner, name, wrapped)

    # rho is held all through in the count (it is let go of when values_and_gradients
    # returns): kept here till the next design's, so that the base stays the same
    realizations = path.realizations
    monkeypatch.setattr(path, "realizations",
                        lambda x: state.__setitem__("rho", realizations(x)) or state["rho"])
    after(path, "solve_adjoints", None, start=True)
    after(model.interp, "derivative", "gradient")
    after(path, "_adjoint_term", "gradient")
    after(device, "add_term", "gradient")
    after(path, "function_terms", "gradient")
    after(path, "design_terms", "gradient")
    for stage in path.stages:
        after(stage, "backward", "gradient")
    after(path, "chain", "gradient")
    after(path, "values_and_gradients", "gradient")
    after(path, "modify_objective_gradient", "optimizer")
    after(path_module, "_scaled", "optimizer")
    after(path, "evaluation", "optimizer", stop=True)
    tracemalloc.start()
    try:
        model.optimizer.run(model, model.x0, iterations)
    finally:
        tracemalloc.stop()
    return counts


@pytest.mark.parametrize("filters, rewrite", [(None, 0), (SENSITIVITY, 1)],
                         ids=["density", "sensitivity"])
def test_the_gradient_phase_keeps_the_counted_arrays(filters, rewrite, monkeypatch):
    """Compliance, volume and OC on the twin: at most 3 cell arrays of the gradient
    phase alive at once (dm/drho and two functions' terms; a row's sum and its filter's
    output beside the other row), the count's 24 B/cell; the evaluation keeps df and dg
    (2) and, with the sensitivity filter, df beside its rewrite (3), within the count's
    optimizer phase (df, dg and 2 more)."""
    data = cantilever((10, 6, 4))
    if filters is not None:
        data["filters"] = filters
    model = build(data, array_module=np)
    counts = _counted_steps(model, monkeypatch)
    assert len(counts["gradient"]) >= 2 * 9 and len(counts["optimizer"]) >= 2 * 3
    assert max(counts["gradient"]) == 3
    assert max(counts["optimizer"]) == 2 + rewrite
    from femopt.evaluation import grid_memory

    arrays = grid_memory.iteration_arrays(model.mesh.n_cells, 3 * 1000, 3, 3)
    phase = {p: sum(a.bytes for a in arrays if a.phase == p) for p in grid_memory.PHASES}
    assert phase["gradient"] == 8 * 3 * model.mesh.n_cells
    assert phase["optimizer"] >= 8 * (2 + rewrite + 1) * model.mesh.n_cells


def test_a_function_sum_is_float64_whatever_its_first_part():
    """A function's parts add into float64 as into zeros of float64: a float32 first part
    (a plugin's weights) does not make the sum float32."""
    from femopt.evaluation.device import add_term

    t32 = np.array([1e-3, -2.5, 0.1], dtype=np.float32)
    t64 = np.array([1.0 + 1e-12, 3.0, -0.0])
    got = add_term(add_term(None, 0.3, t32), 2.0, t64)
    want = np.zeros(3) + 0.3 * t32
    want = want + 2.0 * t64
    assert got.dtype == np.float64 and got.tolist() == want.tolist()
    assert add_term(None, 1.0, t32).dtype == np.float64
