"""Design maps (symmetry planes, extrusion): the optimizer sees the reduced variables,
gradients are exact (Taylor rates, CPU and GPU grid twin equal), the shipped bridge and
beam come out exactly symmetric and exactly constant along the extrusion, and bad maps
are located errors."""

from __future__ import annotations

import meshio
import numpy as np
import pytest
import yaml

from femopt.errors import ProblemError
from femopt.runner import run
from path_checks import GRID_SOLVER, assert_same_as_cpu, assert_taylor_rates, build

PLATE = {
    "mesh": {"type": "structured", "shape": [16, 8, 4], "size": [16.0, 8.0, 4.0]},
    "physics": {"type": "linear_elasticity"},
    "supports": [{"region": {"face": "x_min"}}, {"region": {"face": "x_max"}}],
    "loads": [{"region": {"box": {"min": [8.0, 8.0, 0.0], "max": [8.0, 8.0, 4.0]}},
               "force": [0.0, -1.0, 0.0], "distribute": "total"}],
    "design": {"passive": [{"region": {"box": {"min": [0.0, 7.0, 0.0],
                                                "max": [2.0, 8.0, 4.0]}}, "value": "solid"}]},
    "filters": [{"type": "design_map", "symmetry": [{"axis": "x"}], "extrude": "z"},
                {"type": "density", "radius": 1.5}, {"type": "heaviside", "beta": 2.0}],
    "objective": {"type": "compliance"},
    "constraints": [{"type": "volume", "max": 0.4}],
    "optimizer": {"type": "mma", "max_iter": 3},
}



def test_the_optimizer_sees_the_reduced_design_and_gradients_are_exact():
    cpu = build(PLATE, device="cpu")
    assert cpu.n == 8 * 8 == cpu.filters[0].n_inputs  # half of x, one layer of z
    assert cpu.mesh.n_cells == 16 * 8 * 4
    # the passive corner's representatives are fixed in the reduced design
    assert cpu.xmin[cpu.x_fixed_idx].min() == 1.0 and cpu.x_fixed_idx.size == 2
    dev = build({**PLATE, "solver": GRID_SOLVER}, array_module=np)
    rng = np.random.default_rng(3)
    x = rng.uniform(0.3, 0.7, cpu.n)
    d = rng.standard_normal(cpu.n)
    assert_same_as_cpu(cpu, dev, x)
    for model in (cpu, dev):
        assert_taylor_rates(model, x, d, h0=2e-3)


@pytest.mark.parametrize("name, check", [
    ("bridge_3d_symmetric", lambda r: max(np.abs(r - r[:, :, ::-1]).max(),
                                          np.abs(r - r[::-1]).max())),
    ("beam_3d_extruded", lambda r: np.abs(r - r[:1]).max()),
])
def test_shipped_designs_are_exactly_symmetric_or_extruded(name, check, tmp_path):
    data = yaml.safe_load(open(f"problems/{name}.yaml").read())
    data["optimizer"]["max_iter"] = 15
    data["output"] = {"picture": False, "series_every": 0, "checkpoint_every": 0}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    res = run(path, out=tmp_path / "res", quiet=True, device="cpu")
    nx, ny, nz = data["mesh"]["shape"]
    rho = np.load(tmp_path / "res" / "density.npy").reshape(nz, ny, nx)
    solid = (rho > 0.5).astype(float)
    assert check(solid) == 0.0 and check(rho) == 0.0
    assert 0.1 < solid.mean() < 0.5
    assert res.summary["iterations"] == 15
    # design.vtu carries the design per cell
    design = meshio.read(tmp_path / "res" / "design.vtu").cell_data["design"][0]
    assert design.shape == (nx * ny * nz,)


@pytest.mark.parametrize("filters, where, message", [
    ([{"type": "density", "radius": 1.5}, {"type": "design_map", "extrude": "z"}],
     "filters.1.type", "a design map must be the first filter"),
    ([{"type": "design_map", "extrude": "z"}, {"type": "sensitivity", "radius": 1.5}],
     "filters.1.type", "the sensitivity filter rewrites the gradient"),
    ([{"type": "design_map"}], "filters.0", "needs a symmetry plane or an extrusion axis"),
    ([{"type": "design_map", "symmetry": [{"axis": "x"}, {"axis": "x"}]}], "filters.0",
     "two planes with the same axis"),
])
def test_bad_design_maps_are_located(filters, where, message):
    with pytest.raises(ProblemError) as exc:
        build({**PLATE, "filters": filters})
    assert any(i.path.startswith(where) and message in i.message
               for i in exc.value.issues), exc.value.issues


def test_a_mesh_that_is_not_symmetric_names_its_cells(tmp_path):
    from femopt.mesh import structured_grid

    grid = structured_grid((6, 4), (6.0, 4.0))
    pts = grid.points.copy()
    pts[(pts[:, 0] == 1.0), 0] = 1.3  # one column of nodes moved: no mirror image
    path = tmp_path / "m.vtu"
    meshio.write(path, meshio.Mesh(np.hstack([pts, np.zeros((len(pts), 1))]),
                                   [("quad", grid.cells)]))
    data = {**PLATE, "mesh": {"type": "file", "path": str(path)},
            "supports": [{"region": {"face": "x_min"}}],
            "loads": [{"region": {"point": [6.0, 4.0]}, "force": [0.0, -1.0]}],
            "design": {},
            "filters": [{"type": "design_map", "symmetry": [{"axis": "x"}]}]}
    with pytest.raises(ProblemError) as exc:
        build(data)
    (issue,) = exc.value.issues
    assert issue.path.startswith("filters.0")
    assert "the mesh is not symmetric for this design map: 8 cell(s) have no mirror image" \
        in issue.message and "e.g. cell 4 at [4.5, 0.5]" in issue.message


def test_a_map_along_the_build_direction_of_an_overhang_filter_is_refused():
    filters = [{"type": "design_map", "symmetry": [{"axis": "y"}]},
               {"type": "density", "radius": 1.5},
               {"type": "overhang", "build_direction": "+y"}]
    with pytest.raises(ProblemError) as exc:
        build({**PLATE, "filters": filters})
    (issue,) = exc.value.issues
    assert issue.path == "filters.2.build_direction"
    assert "mirrors or extrudes along y, the build direction" in issue.message


def test_a_map_with_a_lateral_overhang_and_oc_on_the_mesh_path(tmp_path):
    """Symmetry about x with a part printed along +y; OC keeps its linear bisection
    (the chain's stages are linear) without the overhang and the mesh path's twin takes
    the map's rectangular CSR weights."""
    from femopt.mesh import structured_grid

    data = {**PLATE, "mesh": {"type": "structured", "shape": [16, 8], "size": [16.0, 8.0]},
            "loads": [{"region": {"point": [8.0, 8.0]}, "force": [0.0, -1.0]}],
            "design": {},
            "filters": [{"type": "design_map", "symmetry": [{"axis": "x"}]},
                        {"type": "density", "radius": 1.5}],
            "optimizer": {"type": "oc", "max_iter": 3}}
    grid = build({**data, "solver": GRID_SOLVER}, array_module=np)
    assert grid.linear_constraint() is not None  # map, filter and average are linear
    printed = {**data, "filters": data["filters"] + [{"type": "overhang",
                                                       "build_direction": "+y"}]}
    assert build({**printed, "solver": GRID_SOLVER},
                 array_module=np).linear_constraint() is None
    # the same on a mesh from a file (no overhang there: it needs a grid)
    mesh = structured_grid((16, 8), (16.0, 8.0))
    path = tmp_path / "m.vtu"
    meshio.write(path, meshio.Mesh(np.hstack([mesh.points, np.zeros((mesh.n_nodes, 1))]),
                                   [("quad", mesh.cells)]))
    on_file = {**data, "mesh": {"type": "file", "path": str(path)}}
    cpu = build(on_file, device="cpu")
    dev = build({**on_file, "solver": {"type": "pcg", "rtol": 1e-12}}, array_module=np)
    assert type(dev.path).__name__ == "MeshDevicePath" and dev.n == 8 * 8
    assert_same_as_cpu(cpu, dev, np.random.default_rng(8).uniform(0.3, 0.7, cpu.n))


@pytest.mark.gpu
def test_gpu_design_map_equals_the_cpu():
    import cupy

    cpu = build(PLATE, device="cpu")
    dev = build({**PLATE, "solver": {"type": "multigrid", "rtol": 1e-10}},
                array_module=cupy)
    assert_same_as_cpu(cpu, dev, np.random.default_rng(3).uniform(0.3, 0.7, cpu.n),
                       values=1e-8, gradients=1e-6)
