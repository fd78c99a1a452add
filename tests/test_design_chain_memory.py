"""The design chain's per-cell arrays, as the grid path's memory count
(``grid_memory.iteration_arrays``) takes them: rho is the filtered design itself, not a
copy of it."""

from __future__ import annotations

import numpy as np
import pytest

from femopt.errors import InputError
from femopt.parallel.comm import SERIAL
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


# -- the volume weights ------------------------------------------------------------------


@pytest.mark.parametrize("where", [{"array_module": np},
                                   {"device": "cpu", "distributed": SERIAL}],
                         ids=["twin", "slab"])
def test_volume_weights_stay_one_number_on_the_device(where):
    """A grid's volume weights are one number at stride 0 in the device path's form (no
    array of the cells' size), on one GPU's twin and on a rank's slab; the volume and its
    gradient are those of the weights made an array."""
    data = problem("mbb_beam_density", solver={"type": "multigrid"})
    model, full = build(data, **where), build(data, **where)
    (_, form), = model.path.forms[1]
    v = form.rho_weights
    assert v.strides == (0,) and v.shape == model.x0.shape  # the path's own cells
    assert float(v[0]) == 1.0 / model.mesh.n_cells
    (_, full_form), = full.path.forms[1]
    full_form.rho_weights = np.array(v)  # what the path held before
    x = np.random.default_rng(2).uniform(0.2, 0.8, model.n)
    values, grads = model.values_and_gradients(model.to_device(x))
    values_full, grads_full = full.values_and_gradients(full.to_device(x))
    assert values[0] == values_full[0]
    assert values[1] == pytest.approx(values_full[1], rel=1e-15)
    for g, g_full in zip(grads, grads_full):
        np.testing.assert_array_equal(g, g_full)
    (_, b), (_, b_full) = model.linear_constraint(), full.linear_constraint()
    np.testing.assert_array_equal(model.path.linear_weights(), full.path.linear_weights())
    assert b == b_full


@pytest.mark.gpu
def test_gpu_volume_weights_are_one_number_and_give_the_same_bits():
    """On the GPU the constant weights give the volume, its partial term and OC's linear
    constraint bit for bit as the weights made an array (the path held those before)."""
    import cupy

    data = problem("mbb_beam_density", solver={"type": "multigrid"})
    model, full = build(data, array_module=cupy), build(data, array_module=cupy)
    (_, form), = model.path.forms[1]
    (_, full_form), = full.path.forms[1]
    assert isinstance(form.rho_weights, cupy.ndarray) and form.rho_weights.strides == (0,)
    full_form.rho_weights = cupy.ascontiguousarray(form.rho_weights)
    x = cupy.asarray(np.random.default_rng(2).uniform(0.2, 0.8, model.n))
    rho, rho_full = model.physical(x)[0], full.physical(x)[0]
    values, terms = model.path.function_terms(rho, None, None)
    values_full, terms_full = full.path.function_terms(rho_full, None, None)
    assert values == values_full
    assert bool((terms[1][0] == terms_full[1][0]).all())
    assert model.cheap_constraints(x)[0] == full.cheap_constraints(x)[0]
    (_, b), (_, b_full) = model.linear_constraint(), full.linear_constraint()
    w, w_full = model.path.linear_weights(), full.path.linear_weights()
    assert bool((w == w_full).all()) and b == b_full


# -- OC's w of the linear constraint ---------------------------------------------------

WHERE = [{"device": "cpu"}, {"array_module": np}, {"device": "cpu", "distributed": SERIAL}]
SENSITIVITY = [{"type": "sensitivity", "radius": 1.5}]


@pytest.mark.parametrize("where", WHERE, ids=["cpu", "twin", "slab"])
@pytest.mark.parametrize("filters, passive, constant", [
    (SENSITIVITY, False, True), ([], False, True), (SENSITIVITY, True, False),
    ([{"type": "density", "radius": 1.5}], False, False)],
    ids=["sensitivity", "no_filter", "passive", "density"])
def test_ocs_w_is_one_number_where_every_weight_is_alike(where, filters, passive, constant):
    """w = the chain rule of the volume weights is one number at stride 0 where they
    reach x unmixed (no filter, or the sensitivity filter, whose chain rule is the
    identity; no passive cell), on every path; the same numbers as the chain of the
    weights made an array. Elsewhere the path keeps no w (None: OC takes the
    constraint's gradient for it), and ``linear_weights`` makes it."""
    data = _problem("mbb_beam", passive, filters=filters, solver={"type": "multigrid"})
    model = build(data, **where)
    path = model.path
    kept, _ = model.linear_constraint()
    w = path.linear_weights()
    assert (kept is not None) == constant == (w.strides == (0,))
    if constant:
        assert kept is not None and float(kept[0]) == float(w[0])
    v = np.array(path._bound_rho_weights())
    full = model.bounds[0].sign_scale() * path.chain(v, [None] * len(path.stages))
    np.testing.assert_array_equal(w, full)


@pytest.mark.parametrize("where", WHERE, ids=["cpu", "twin", "slab"])
@pytest.mark.parametrize("filters", [[{"type": "density", "radius": 1.5}], SENSITIVITY],
                         ids=["density", "sensitivity"])
def test_ocs_w_is_the_constraints_gradient(where, filters):
    """The linear constraint's gradient is w: OC, which takes dg for a w the path does
    not keep, bisects on the same volumes (to rounding) as with w made an array, and
    the same designs follow (passive cells make w an array either way)."""
    data = _problem("mbb_beam", True, filters=filters, solver={"type": "multigrid"})
    model, full, probe = (build(data, **where) for _ in range(3))
    assert model.linear_constraint()[0] is None
    x = probe.to_device(np.random.default_rng(3).uniform(0.2, 0.8, probe.n))
    dg = probe.evaluate(x).dg[0]
    w = model.path.linear_weights()
    np.testing.assert_allclose(np.asarray(dg), np.asarray(w), rtol=1e-14,
                               atol=1e-16 * float(np.abs(w).max()))
    full.path._linear = (w, model.linear_constraint()[1])
    r_one, r_full = model.optimizer.run(model, model.x0, 5), full.optimizer.run(
        full, full.x0, 5)
    assert [h.objective for h in model.history] == [h.objective for h in full.history]
    np.testing.assert_array_equal(r_one.x, r_full.x)


@pytest.mark.parametrize("where", WHERE, ids=["cpu", "twin", "slab"])
def test_oc_runs_with_one_number_for_w_as_with_an_array(where):
    """OC's updates with w one number are those with w an array, bit for bit."""
    data = problem("mbb_beam", solver={"type": "multigrid"})
    one, full = build(data, **where), build(data, **where)
    w, b = full.linear_constraint()
    assert w.strides == (0,)
    full.path._linear = (np.array(w), b)  # w held as an array, as before
    r_one, r_full = one.optimizer.run(one, one.x0, 6), full.optimizer.run(full, full.x0, 6)
    assert [h.objective for h in one.history] == [h.objective for h in full.history]
    np.testing.assert_array_equal(r_one.x, r_full.x)


# -- the count ---------------------------------------------------------------------------

DESIGN_CHAIN = ("design x", "filters' 1 / Hs", "filtered designs", "volume weights")


def _held_design_chain(**kwargs) -> tuple[float, dict[str, float]]:
    """B/cell of the count's held design-chain arrays at 512x256x256, and each entry's."""
    from femopt.assembly.grid_layout import GridLayout
    from femopt.evaluation import grid_memory

    lay = GridLayout((512, 256, 256), 3)
    arrays = grid_memory.iteration_arrays(lay.n_cells, lay.n_dofs, 3, 3, n_coarse=4131,
                                          **kwargs)
    chain = {a.name: a.bytes / lay.n_cells for a in arrays if a.name.startswith(DESIGN_CHAIN)}
    assert len(chain) == len(DESIGN_CHAIN)
    assert all(a.phase == "held" for a in arrays if a.name in chain)
    return sum(chain.values()), chain


@pytest.mark.parametrize("krylov", ["mixed", "double"])
def test_the_count_holds_no_volume_weights(krylov):
    """The volume weights are one number: the count's design chain with a density
    filter and OC holds x and rho (16 B/cell), v nothing, OC's w nothing (its gradient
    dg), and 1 / Hs nothing per cell (a table on the filter's proxy grid)."""
    total, chain = _held_design_chain(krylov=krylov)
    assert chain["volume weights (one number: a grid's cells are alike)"] == 0
    assert chain[next(k for k in chain if k.startswith("filters' 1 / Hs"))] == 0
    assert total == 8 + 8


@pytest.mark.parametrize("n_filters, rho", [(0, 1), (1, 1), (2, 2)])
def test_the_count_holds_rho_and_each_further_filters_input(n_filters, rho):
    """rho is counted once (the last filter's output itself, or x's copy without a
    filter) and each filter's input beyond x once more."""
    _, chain = _held_design_chain(n_filters=n_filters)
    assert chain["filtered designs, rho"] == 8 * rho


def test_the_counted_design_chain_is_what_the_twin_holds():
    """tracemalloc on the grid twin (OC, a density filter): the float64 arrays of the
    cells' size alive when the second design's operator is set, but for the scale
    factors (counted with the solver's arrays), are the count's held design chain: x
    and rho (OC's w is the constraint's gradient, let go of with it); the grid filter
    holds 1 / Hs on its proxy grid alone (made at the set-up: 5 x 5 x 4 values for a
    reach of two cells)."""
    import tracemalloc

    from test_mixed_precision import cantilever

    model = build(cantilever((10, 6, 4)), array_module=np)
    n, path, live = model.mesh.n_cells, model.path, []
    set_operator = path._set_operator

    def traced(scale):
        frames = [t.traceback for t in tracemalloc.take_snapshot().traces
                  if t.size == 8 * n]
        live.append([f for f in frames
                     if not any(fr.filename.endswith("interpolation.py") for fr in f)])
        return set_operator(scale)

    path._set_operator = traced
    tracemalloc.start(30)
    try:
        model.optimizer.run(model, model.x0, 2)
    finally:
        tracemalloc.stop()
    total, chain = _held_design_chain()
    assert len(live[1]) * 8 == total == 16
    (stage,) = model.path.stages
    assert stage.op.proxy_shape == (5, 5, 4) and stage.op.inv_hs_table.size == 100
    assert all(np.size(v) <= 100 for v in vars(stage.op).values()
               if isinstance(v, np.ndarray))


def test_the_estimate_holds_no_w_with_any_filter():
    """OC's w is never counted: the estimates of the density-filtered, the
    sensitivity-filtered and the passive beams are one (16 B/cell of design chain)."""
    from femopt.assembly.grid_layout import layout_of
    from femopt.evaluation import grid_device

    estimate = {}
    for name, filters, passive in [("density", [{"type": "density", "radius": 1.5}], False),
                                   ("sensitivity", SENSITIVITY, False),
                                   ("passive", SENSITIVITY, True)]:
        model = build(_problem("mbb_beam", passive, filters=filters), device="cpu")
        lay = layout_of(model.mesh, 2)
        estimate[name] = grid_device.estimate_bytes(lay, 1, model, fixed_design=False)
    assert estimate["density"] == estimate["sensitivity"] == estimate["passive"]


@pytest.mark.gpu
def test_gpu_oc_runs_with_one_number_for_w_as_with_an_array():
    """On the GPU OC's kernel reads a w of one number (null and its number) as it read
    the array: the same designs and objectives over a few iterations, to the solves'
    tolerance, 1e-8 (two GPU runs do not repeat each other bit for bit: the float32
    V-cycle's sums; on an H100 they differed by 1.7e-9; the kernel alone is compared bit
    for bit in tests/test_gpu_kernels.py)."""
    import cupy

    data = problem("mbb_beam", solver={"type": "multigrid", "rtol": 1e-8})
    one, full = build(data, array_module=cupy), build(data, array_module=cupy)
    w, b = full.linear_constraint()
    assert isinstance(w, cupy.ndarray) and w.strides == (0,)
    full.path._linear = (cupy.ascontiguousarray(w), b)
    r_one, r_full = one.optimizer.run(one, one.x0, 4), full.optimizer.run(full, full.x0, 4)
    np.testing.assert_allclose([h.objective for h in one.history],
                               [h.objective for h in full.history], rtol=1e-7)
    assert float(cupy.abs(r_one.x - r_full.x).max()) <= 1e-5


def test_linear_weights_of_a_constraint_that_is_not_linear_is_an_input_error():
    data = _problem("mbb_beam", constraints=[{"type": "compliance", "max": 10.0}],
                    objective={"type": "volume"}, optimizer={"type": "mma", "max_iter": 2})
    model = build(data, device="cpu")
    assert model.linear_constraint() is None
    with pytest.raises(InputError, match="not a linear form of the densities"):
        model.path.linear_weights()
