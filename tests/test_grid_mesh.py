"""A structured grid's coordinates and connectivity are arithmetic of the grid: by rows and
by index they equal the whole arrays, passes over the mesh by chunks select what one pass
selects, and a run on the GPU grid path (its NumPy twin) never builds the whole arrays
(113M cells would cost the host 10 GB for them)."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from femopt.mesh import mesh as mesh_module
from femopt.mesh.mesh import Mesh
from femopt.mesh.regions import Region, select_cells, select_nodes
from femopt.mesh.structured import structured_grid


def _reference(shape, size, origin):
    """The grid's arrays built the straightforward way: nodes x fastest, hex8/quad4 in
    VTK order."""
    dim = len(shape)
    h = [s / n for s, n in zip(size, shape)]
    axes = [o + hh * np.arange(n + 1) for o, hh, n in zip(origin, h, shape)]
    pts = np.stack([g.ravel() for g in np.meshgrid(*axes[::-1], indexing="ij")[::-1]], 1)
    corners = ([(0, 0), (1, 0), (1, 1), (0, 1)] if dim == 2 else
               [(0, 0, 0), (1, 0, 0), (1, 1, 0), (0, 1, 0), (0, 0, 1), (1, 0, 1), (1, 1, 1),
                (0, 1, 1)])
    ns = [n + 1 for n in shape]
    cells = []
    for idx in np.ndindex(*shape[::-1]):
        ijk = idx[::-1]
        cells.append([sum((i + c) * int(np.prod(ns[:a])) for a, (i, c) in
                          enumerate(zip(ijk, cor))) for cor in corners])
    return pts, np.array(cells)


@pytest.mark.parametrize("shape,size,origin", [((4, 3), (2.0, 1.5), (0.5, -1.0)),
                                               ((3, 2, 4), (1.5, 1.0, 2.0), (0.0, 0.0, 1.0))])
def test_rows_and_indices_equal_the_whole_arrays(shape, size, origin):
    mesh = structured_grid(shape, size, origin)
    pts, cells = _reference(shape, size, origin)
    assert (mesh.n_nodes, mesh.n_cells, mesh.dim) == (len(pts), len(cells), len(shape))
    np.testing.assert_array_equal(mesh.point_rows(2, 9), pts[2:9])
    np.testing.assert_array_equal(mesh.cell_rows(1, 5), cells[1:5])
    pick = np.array([5, 0, len(cells) - 1])
    np.testing.assert_array_equal(mesh.cell_coords(pick), pts[cells[pick]])
    np.testing.assert_array_equal(mesh.centroids(), pts[cells].mean(axis=1))
    np.testing.assert_allclose(mesh.node_center(), pts.mean(axis=0), rtol=1e-15)
    assert not mesh.materialized
    np.testing.assert_array_equal(mesh.points, pts)
    np.testing.assert_array_equal(mesh.cells, cells)
    assert mesh.materialized


@pytest.mark.parametrize("region", [
    {"face": "x_max"}, {"face": "y_min", "box": {"min": [0, 0, 0], "max": [2, 1, 4]}},
    {"box": {"min": [0.9, 0.2, 0.5], "max": [2.1, 2.0, 3.1]}}, {"point": [1.5, 1.0, 1.6]}])
def test_selections_by_chunks_equal_one_pass(region, monkeypatch):
    grid = structured_grid((6, 4, 5), (3.0, 2.0, 4.0))
    plain = Mesh(points=grid.points, cells=grid.cells, cell_type="hex8")
    region = Region(**region)
    whole = (select_nodes(region, plain), select_cells(region, plain))
    monkeypatch.setattr(mesh_module, "ROWS", 7)  # chunks of 7 nodes or cells
    fresh = structured_grid((6, 4, 5), (3.0, 2.0, 4.0))
    np.testing.assert_array_equal(select_nodes(region, fresh), whole[0])
    np.testing.assert_array_equal(select_cells(region, fresh), whole[1])
    assert not fresh.materialized
    assert len(whole[0]) > 0 and len(whole[1]) > 0


def test_a_grid_run_on_the_gpu_path_never_builds_the_whole_mesh(tmp_path, monkeypatch):
    """The GPU grid path's NumPy twin through run_model with pictures, the time series and
    checkpoints on: the grid's coordinate and connectivity arrays are never built (the
    output files are written by rows), and the design file reads back whole. Chunks of 100
    rows make the writers' row passes real."""
    import meshio

    from femopt.runner import run_model
    from path_checks import build

    monkeypatch.setattr(mesh_module, "ROWS", 100)
    data = {"name": "lean", "mesh": {"type": "structured", "shape": [12, 6, 6],
                                     "size": [12.0, 6.0, 6.0]},
            "physics": {"type": "linear_elasticity", "E": 1.0, "nu": 0.3},
            "supports": [{"region": {"face": "x_min"}}],
            "loads": [{"region": {"point": [12.0, 0.0, 3.0]}, "force": [0.0, -1.0, 0.0]}],
            "design": {"passive": [{"region": {"box": {"min": [0, 5, 0], "max": [2, 6, 6]}},
                                    "value": "solid"}]},
            "filters": [{"type": "density", "radius": 1.5}],
            "objective": {"type": "compliance"},
            "constraints": [{"type": "volume", "max": 0.3}],
            "optimizer": {"type": "oc", "max_iter": 3},
            "solver": {"type": "multigrid", "rtol": 1e-8},
            "output": {"picture": True, "series_every": 1, "checkpoint_every": 1}}
    problem = tmp_path / "lean.yaml"
    problem.write_text(yaml.safe_dump(data))
    model = build(data, array_module=np)
    model.loaded.filename = str(problem)
    run_model(model, problem.read_bytes(), tmp_path / "out", quiet=True)
    assert not model.mesh.materialized
    design = meshio.read(tmp_path / "out" / "design.vtu")
    pts, cells = _reference((12, 6, 6), (12.0, 6.0, 6.0), (0.0, 0.0, 0.0))
    np.testing.assert_array_equal(design.points, pts)
    np.testing.assert_array_equal(design.cells[0].data, cells)
    assert design.cell_data["density"][0].shape == (432,)
    step = meshio.read(tmp_path / "out" / "series-000001.vtu")
    np.testing.assert_array_equal(step.cells[0].data, cells)


def test_shipped_grid_problems_on_the_gpu_path_never_build_the_whole_mesh():
    """Every shipped structured-grid problem the GPU grid path takes (surface loads,
    stress, robust, eigenfrequency, overhang, design maps among them), built on that path's
    NumPy twin, evaluated once with gradients and analysed at the end, without building
    the grid's whole coordinate or connectivity array."""
    from pathlib import Path

    from path_checks import build

    ran = []
    for path in sorted(Path(__file__).parents[1].joinpath("problems").glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        if data["mesh"]["type"] != "structured":
            continue
        data.pop("solver", None)
        data["mesh"]["shape"] = [min(n, 48) for n in data["mesh"]["shape"]]
        try:
            model = build(data, array_module=np)
        except Exception:  # noqa: BLE001 - shrunk problems the builder refuses
            continue
        if model.device != "gpu":
            continue
        x = model.to_device(model.x0.copy())
        model.values_and_gradients(x)
        model.final_analysis(x)
        assert not model.mesh.materialized, path.name
        ran.append(path.name)
    assert {"bridge_pressure.yaml", "l_bracket_stress.yaml"} <= set(ran), ran
    assert len(ran) >= 10, ran
