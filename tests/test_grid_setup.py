"""The grid path's set-up without arrays of the grid's size on the host: face and box
regions from index ranges, loads uploaded from their nonzeros, design bounds made on the
device; each equal to what the full-size arrays give."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from femopt.mesh.regions import Region, RegionError, node_mask, select_nodes
from femopt.mesh.structured import structured_grid
from path_checks import build

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

REGIONS = [
    {"face": "x_min"}, {"face": "x_max"}, {"face": "y_min"},
    {"box": {"min": [0.9, 0.05], "max": [0.9, 0.05]}},
    {"box": {"min": [0.3, 0.2], "max": [2.1, 0.9]}},
    {"face": "y_max", "box": {"min": [0.5, -5.0], "max": [1.6, 5.0]}},
    {"box": {"min": [0.62, 0.5], "max": [0.62, 0.6]}, "tol": 0.05},
]


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("spec", REGIONS)
def test_face_and_box_nodes_of_a_grid_equal_the_masks(dim, spec):
    """The index-range selection equals the coordinate mask's, node for node, on a grid
    with an origin and uneven spacing (0.3 by 0.1 by 0.25)."""
    shape, size, origin = [8, 9, 4][:dim], [2.4, 0.9, 1.0][:dim], [0.0, 0.05, -0.5][:dim]
    mesh = structured_grid(shape, size, origin)
    spec = dict(spec)
    if "box" in spec:
        spec["box"] = {k: (v + [-1.0] if dim == 3 else v)
                       for k, v in spec["box"].items()}
        if dim == 3:
            spec["box"]["max"][2] = 2.0
    region = Region(**spec)
    mask = np.flatnonzero(node_mask(region, mesh))
    assert mask.size > 0
    got = select_nodes(region, mesh)
    np.testing.assert_array_equal(got, mask)
    assert not mesh.materialized


def test_a_missing_face_is_an_error():
    with pytest.raises(RegionError, match="does not exist in a 2D mesh"):
        select_nodes(Region(face="z_min"), structured_grid([4, 2], [4.0, 2.0]))


def cantilever(shape=(8, 4, 4)) -> dict:
    from gpu_cli_run import problem

    data = problem(shape, 3)
    data["solver"] = {"type": "multigrid", "coarsest_size": 100}
    data["output"] = {}
    return data


def test_loads_and_bounds_on_the_device_equal_the_full_arrays():
    """The loads kept by their nonzeros equal the full vectors in the grid layout with
    the supports zeroed, and so do their dots with states; the bounds and the start on
    the device are constants (one number at stride 0: no array of the design's size)."""
    model = build(cantilever(), array_module=np)
    path = model.path
    full = np.stack([path._to_states(f) for f in model.loads])
    np.testing.assert_array_equal(path.loads.dense(), full)
    assert path.loads.values.shape == (1, 5)  # no vector of the grid's size
    u = np.random.default_rng(3).standard_normal(full.shape)
    np.testing.assert_allclose(path.loads.dots(u), np.sum(full * u, axis=1), rtol=1e-14)
    assert np.count_nonzero(full) == 5  # the load line's five nodes, in y
    for a, value in ((model.xmin, 0.0), (model.xmax, 1.0), (model.x0, 0.3)):
        assert a.shape == (model.n,) and a.strides == (0,) and np.all(a == value)


def test_the_setup_keeps_fewer_host_bytes_per_cell():
    """tracemalloc's peak of the host set-up before the path (benchmarks/
    grid_setup_memory.py's figure) at 64x32x32: below 45 bytes per cell (109 before the
    index-range regions, the in-place loads and the device-side bounds)."""
    import tracemalloc

    import femopt.evaluation.model as model_module

    real = model_module.make_path
    seen = {}

    def make_path(model, xp, distributed):
        seen["peak"] = tracemalloc.get_traced_memory()[1]
        return real(model, xp, distributed)

    data = cantilever((64, 32, 32))
    build(data, array_module=np)  # imports and caches outside the measurement
    model_module.make_path = make_path
    try:
        tracemalloc.start()
        build(data, array_module=np)
    finally:
        tracemalloc.stop()
        model_module.make_path = real
    assert seen["peak"] / (64 * 32 * 32) < 45


@pytest.mark.gpu
def test_gpu_loads_equal_the_full_arrays_and_bounds_are_constants():
    import cupy

    model = build(cantilever((16, 8, 8)), array_module=cupy)
    path = model.path
    full = np.stack([path._to_states(f) for f in model.loads])
    np.testing.assert_array_equal(cupy.asnumpy(path.loads.dense()), full)
    u = cupy.asarray(np.random.default_rng(3).standard_normal(full.shape))
    np.testing.assert_allclose(cupy.asnumpy(path.loads.dots(u)),
                               np.sum(full * cupy.asnumpy(u), axis=1), rtol=1e-13)
    for a, value in ((model.xmin, 0.0), (model.xmax, 1.0), (model.x0, 0.3)):
        assert isinstance(a, cupy.ndarray) and a.shape == (model.n,) and a.strides == (0,)
        assert bool(cupy.all(a == value))
