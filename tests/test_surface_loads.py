"""Surface loads (traction, pressure, heat flux, a total spread by area) on boundary
facets: consistent nodal loads on meshes and structured grids, the patch test on
distorted meshes, a heat flux, and the located errors of bad input (accuracy against
Lame's solution and scikit-fem, and the coordinate derivative: test_surface_load_accuracy)."""

from __future__ import annotations

import meshio
import numpy as np
import pytest

from femopt.assembly.surface import SurfaceLoad, surface_load_vector
from femopt.mesh import Mesh, structured_grid
from femopt.mesh.facets import boundary_facets, select_facets
from femopt.mesh.regions import Region, RegionError
from femopt.runner import build_model
from test_simplex_elements import SPLIT

MESHIO = {"tri3": "triangle", "quad4": "quad", "tet4": "tetra", "hex8": "hexahedron"}
FACET_MESHIO = {2: "line", 3: "triangle", 4: "quad"}
KINDS = ["tri3", "quad4", "tet4", "hex8"]


def box_mesh(kind: str, shape, size, amount: float, seed: int) -> Mesh:
    """A box of ``kind`` cells; every node moved randomly by up to ``amount`` of a cell
    within the faces it lies on (boundary faces stay plane)."""
    dim = len(shape)
    grid = structured_grid(shape, size)
    pts = grid.points.copy()
    h = np.array(grid.grid.spacing)
    lo, hi = grid.bounds()
    rng = np.random.default_rng(seed)
    move = amount * h * rng.uniform(-1, 1, pts.shape)
    move[(np.abs(pts - lo) < 1e-12) | (np.abs(pts - hi) < 1e-12)] = 0.0
    pts += move
    cells = grid.cells
    if kind in SPLIT:
        cells = cells[:, SPLIT[kind]].reshape(-1, dim + 1)
        det = np.linalg.det(pts[cells[:, 1:]] - pts[cells[:, :1]])
        cells[det < 0, :2] = cells[det < 0, 1::-1]
    return Mesh(points=pts, cells=cells, cell_type=kind)


def write_mesh(path, mesh: Mesh, groups: dict[str, np.ndarray] | None = None):
    """The mesh as a Gmsh v2 file, each group of facets a physical group."""
    pts = mesh.points if mesh.dim == 3 else np.column_stack([mesh.points,
                                                              np.zeros(mesh.n_nodes)])
    blocks = [(MESHIO[mesh.cell_type], mesh.cells)]
    phys, geo, field = [np.full(mesh.n_cells, 1)], [np.full(mesh.n_cells, 1)], {
        "domain": np.array([1, mesh.dim])}
    for tag, (name, facets) in enumerate((groups or {}).items(), start=2):
        blocks.append((FACET_MESHIO[facets.shape[1]], facets))
        phys.append(np.full(len(facets), tag))
        geo.append(np.full(len(facets), tag))
        field[name] = np.array([tag, mesh.dim - 1])
    meshio.write(path, meshio.Mesh(pts, blocks, cell_data={"gmsh:physical": phys,
                                                           "gmsh:geometrical": geo},
                                   field_data=field), file_format="gmsh22")
    return path


def write_problem(tmp_path, mesh_file: str, loads: str, dim: int,
                  physics: str = "{type: linear_elasticity, E: 1000.0, nu: 0.3}",
                  supports: str | None = None) -> str:
    if supports is None:
        supports = ("  - {region: {face: x_min}, dofs: [x]}\n"
                    "  - {region: {face: y_min}, dofs: [y]}\n"
                    + ("  - {region: {face: z_min}, dofs: [z]}\n" if dim == 3 else ""))
    text = (f"mesh: {{type: file, path: {mesh_file}}}\nphysics: {physics}\n"
            f"supports:\n{supports}loads:\n{loads}objective: {{type: compliance}}\n")
    path = tmp_path / "problem.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def solve(path: str):
    model = build_model(path, device="cpu")
    _, _, state = model.final_analysis(np.ones(model.n))
    return model, state.u[0]


# -- consistent nodal loads ------------------------------------------------------------

def test_traction_on_a_graded_edge_is_not_an_even_split(tmp_path):
    """Edges 1, 2 and 4 long on x = 7 (thickness 0.5): a traction of 2 gives the nodes
    t * thickness * (l_left + l_right) / 2 = 0.5, 1.5, 3, 2; `distribute: area` of the
    total 7 is that traction, `distribute: total` splits 7 evenly (1.75 per node)."""
    ys = np.array([0.0, 1.0, 3.0, 7.0])
    xs = np.array([0.0, 3.0, 7.0])
    pts = np.array([(x, y) for y in ys for x in xs])
    idx = np.arange(pts.shape[0]).reshape(len(ys), len(xs))
    quads = np.stack([idx[:-1, :-1], idx[:-1, 1:], idx[1:, 1:], idx[1:, :-1]], -1)
    mesh = Mesh(points=pts, cells=quads.reshape(-1, 4), cell_type="quad4")
    mesh_file = write_mesh(tmp_path / "graded.msh", mesh)
    physics = "{type: linear_elasticity, thickness: 0.5}"
    right = idx[:, -1]
    expected = {"traction: [2.0, 0.0]": [0.5, 1.5, 3.0, 2.0],
                "force: [7.0, 0.0]\n    distribute: area": [0.5, 1.5, 3.0, 2.0],
                "force: [7.0, 0.0]\n    distribute: total": [1.75] * 4}
    for load, fx in expected.items():
        model = build_model(write_problem(tmp_path, "graded.msh",
                                          f"  - region: {{face: x_max}}\n    {load}\n", 2,
                                          physics), device="cpu")
        f = model.loads[0].reshape(-1, 2)
        np.testing.assert_allclose(f[right, 0], fx, rtol=1e-14)
        assert np.abs(np.delete(f, right, axis=0)).max() == 0.0
        assert np.abs(f[:, 1]).max() == 0.0
    assert mesh_file.exists()


@pytest.mark.parametrize("kind", KINDS)
def test_pressure_on_the_whole_boundary_has_no_resultant(kind):
    """A closed surface under uniform pressure: zero net force; on one face of the unit
    box the resultant is -p * area along the outward normal."""
    dim = 2 if kind in ("tri3", "quad4") else 3
    mesh = box_mesh(kind, (3, 2, 2)[:dim], (1.0, 1.5, 0.5)[:dim], 0.25, seed=4)
    every = SurfaceLoad(0, "pressure", np.array([3.0]),
                        select_facets(Region(box={"min": [-1] * dim, "max": [2] * dim}), mesh))
    assert every.facets.shape[0] == boundary_facets(mesh.cells, kind).shape[0]
    f = surface_load_vector(every, mesh.points, dim).reshape(-1, dim)
    assert np.abs(f.sum(axis=0)).max() < 1e-13
    face = SurfaceLoad(0, "pressure", np.array([3.0]), select_facets(Region(face="x_max"),
                                                                     mesh))
    total = surface_load_vector(face, mesh.points, dim).reshape(-1, dim).sum(axis=0)
    area = (1.5 * 0.5) if dim == 3 else 1.5
    np.testing.assert_allclose(total, [-3.0 * area] + [0.0] * (dim - 1), atol=1e-13)


@pytest.mark.parametrize("dim", [2, 3])
def test_structured_grid_traction_on_the_cpu_and_device_paths(dim):
    """A traction on x = 6 of a structured grid (h = 1, 2D thickness 0.5): corner nodes
    of the face carry 1/4 (2D: 1/2) of a cell face's share, the rest of the face the full
    share; the device path (NumPy arrays) gets the same loads and compliance."""
    import yaml

    from femopt.evaluation.model import Model
    from femopt.plugins.manager import get_registry
    from femopt.problem.load import parse_problem

    data = {"mesh": {"type": "structured", "shape": [6, 3, 2][:dim],
                     "size": [6.0, 3.0, 2.0][:dim]},
            "physics": {"type": "linear_elasticity", "thickness": 0.5},
            "supports": [{"region": {"face": "x_min"}}],
            "loads": [{"region": {"face": "x_max"}, "traction": [0.0, -2.0, 0.0][:dim]}],
            "objective": {"type": "compliance"}, "device": "cpu"}
    registry = get_registry()
    models = [Model(parse_problem(yaml.safe_dump(data), "p.yaml", registry), registry,
                    **kw) for kw in ({}, {"array_module": np})]
    assert models[1].mesh.grid is not None and type(models[1].path).__name__ == "GridDevicePath"
    fy = models[0].loads[0].reshape(-1, dim)[:, 1]
    face = np.flatnonzero(np.abs(models[0].mesh.points[:, 0] - 6.0) < 1e-12)
    share = -2.0 * (0.5 if dim == 2 else 1.0)  # traction times a cell face's measure
    corner = 0.5 if dim == 2 else 0.25
    counts = np.isclose(models[0].mesh.points[face, 1:], 0) | np.isclose(
        models[0].mesh.points[face, 1:], [3.0, 2.0][:dim - 1])
    expected = share * np.where(counts.sum(axis=1) == dim - 1, corner,
                                np.where(counts.any(axis=1), 0.5, 1.0))
    np.testing.assert_allclose(fy[face], expected, rtol=1e-14)
    assert fy.sum() == pytest.approx(-2.0 * 3.0 * (0.5 if dim == 2 else 2.0), rel=1e-14)
    np.testing.assert_array_equal(models[1].loads, models[0].loads)
    x = np.ones(models[0].n)
    c_cpu = models[0].evaluate(x).info["objective"]
    c_dev = float(models[1].evaluate(models[1].to_device(x)).info["objective"])
    assert c_dev == pytest.approx(c_cpu, rel=1e-6)


# -- patch test ------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_uniform_traction_and_pressure_give_a_uniform_stress_exactly(kind, tmp_path):
    """Distorted meshes (nodes moved by up to 0.3 of a cell), symmetry supports, a
    traction t_x = 3 on x = 1 and a pressure 2 on y = 1: sigma_xx = 3, sigma_yy = -2, the
    rest 0, so u is the linear field of that stress at every node (to round-off)."""
    dim = 2 if kind in ("tri3", "quad4") else 3
    mesh = box_mesh(kind, (4, 3, 3)[:dim], (1.0, 1.0, 1.0)[:dim], 0.3, seed=7)
    write_mesh(tmp_path / "box.msh", mesh)
    loads = (f"  - {{region: {{face: x_max}}, traction: {[3.0, 0.0, 0.0][:dim]}}}\n"
             "  - {region: {face: y_max}, pressure: 2.0}\n")
    model, u = solve(write_problem(tmp_path, "box.msh", loads, dim))
    E, nu, sxx, syy = 1000.0, 0.3, 3.0, -2.0
    x = model.mesh.points
    exact = np.zeros_like(x)
    exact[:, 0] = (sxx - nu * syy) / E * x[:, 0]
    exact[:, 1] = (syy - nu * sxx) / E * x[:, 1]
    if dim == 3:
        exact[:, 2] = -nu * (sxx + syy) / E * x[:, 2]
    np.testing.assert_allclose(u.reshape(-1, dim), exact, atol=1e-12)


# -- heat flux -------------------------------------------------------------------------

def test_heat_flux_through_a_slab_gives_the_linear_temperature(tmp_path):
    """A heat flux q = 2 into x = 1 of a distorted quad slab held at T = 0 on x = 0:
    T = q x / k at every node (k = 4)."""
    mesh = box_mesh("quad4", (5, 3), (1.0, 0.6), 0.3, seed=1)
    write_mesh(tmp_path / "slab.msh", mesh)
    path = write_problem(tmp_path, "slab.msh", "  - {region: {face: x_max}, heat_flux: 2.0}\n",
                         2, physics="{type: heat_conduction, conductivity: 4.0}",
                         supports="  - {region: {face: x_min}}\n")
    model, u = solve(path)
    np.testing.assert_allclose(u, 2.0 * model.mesh.points[:, 0] / 4.0, atol=1e-12)


# -- bad input -------------------------------------------------------------------------

def _run(args, capsys):
    from femopt.cli import main

    code = main([str(a) for a in args])
    return code, capsys.readouterr()[1]


BEAM = """\
mesh: {type: file, path: plate.msh}
physics: {type: PHYSICS}
supports:
  - region: {face: x_min}
loads:
  - LOAD
objective: {type: compliance}
"""

BAD = {  # name: (physics, load, key path, message)
    "no boundary facet": ("linear_elasticity",
                          "{region: {box: {min: [1.0, 0.5], max: [3.0, 1.5]}}, pressure: 1.0}",
                          "loads.0.region", "but no boundary facet"),
    "interior facets": ("linear_elasticity", "{region: {group: middle}, pressure: 1.0}",
                        "loads.0.region", "lie inside the mesh"),
    "components": ("linear_elasticity", "{region: {face: x_max}, traction: [1.0, 0.0, 2.0]}",
                   "loads.0.traction", "expected 2 component(s) (x, y), got 3"),
    "heat flux on elasticity": ("linear_elasticity",
                                "{region: {face: x_max}, heat_flux: 1.0}",
                                "loads.0.heat_flux", "not 'heat_flux'"),
    "pressure on heat": ("heat_conduction", "{region: {face: x_max}, pressure: 1.0}",
                         "loads.0.pressure", "takes 'heat_flux' surface loads, not "
                                             "'pressure'"),
    "distribute a traction": ("linear_elasticity",
                              "{region: {face: x_max}, traction: [1.0, 0.0], "
                              "distribute: area}", "loads.0", "per unit area already"),
}


@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("command", ["validate", "run"])
def test_bad_surface_loads_are_located_and_write_nothing(case, command, tmp_path, capsys):
    physics, load, key, message = BAD[case]
    mesh = box_mesh("tri3", (4, 2), (4.0, 2.0), 0.0, seed=0)
    middle = np.array([[i, i + 5] for i in range(2, 12, 5)])  # the edges on x = 2
    assert np.allclose(mesh.points[middle][..., 0], 2.0)
    write_mesh(tmp_path / "plate.msh", mesh, {"middle": middle})
    path = tmp_path / "problem.yaml"
    path.write_text(BEAM.replace("PHYSICS", physics).replace("LOAD", load), encoding="utf-8")
    out = tmp_path / "out"
    code, err = _run([command, path] + (["--out", out] if command == "run" else []), capsys)
    assert code == 2, err
    line = next(line for line in err.splitlines() if line.startswith(f"{path}:"))
    where, k, msg = line.split(": ", 2)
    assert k == key and message in msg, err
    row, col = where.split(":")[-2:]
    assert int(row) == 6 and int(col) >= 5, line
    assert "Traceback" not in err
    assert not out.exists()


def test_a_facet_group_needs_facets_of_the_elements():
    mesh = box_mesh("quad4", (2, 1), (2.0, 1.0), 0.0, seed=0)
    mesh.facet_sets["diagonal"] = np.array([[0, 4]])
    with pytest.raises(RegionError, match="not facets of any quad4 element"):
        select_facets(Region(group="diagonal"), mesh)
    mesh.facet_sets["triangles"] = np.array([[0, 1, 4]])
    with pytest.raises(RegionError, match="facets of 3 nodes; the faces of quad4"):
        select_facets(Region(group="triangles"), mesh)


@pytest.mark.parametrize("shape", [(5, 3), (4, 3, 2)])
def test_grid_facets_found_from_node_indices_equal_the_general_search(shape):
    """On a structured grid the cells near a region come from the node indices; the same
    facets, in the same order, as the pass over every cell of the same mesh without grid
    metadata."""
    from femopt.mesh.mesh import Mesh

    dim = len(shape)
    grid = structured_grid(shape, tuple(float(n) for n in shape))
    plain = Mesh(points=grid.points, cells=grid.cells, cell_type=grid.cell_type)
    counts = []
    for region in (Region(face="x_max"), Region(face="y_min"),
                   Region(box={"min": [-1.0] * dim, "max": [9.0] * dim}),
                   Region(box={"min": [1.0] + [0.0] * (dim - 1),
                               "max": [3.0] + [1.0] * (dim - 1)})):
        facets = select_facets(region, grid)
        np.testing.assert_array_equal(facets, select_facets(region, plain))
        counts.append(len(facets))
    assert counts == ([3, 5, 16, 2] if dim == 2 else [6, 8, 52, 4])


def test_the_reanalysis_of_an_exported_part_keeps_a_traction_s_resultant(tmp_path, capsys):
    """A cantilever with a traction on its free end (the resultant 4 x 2 = 8, thickness
    1), 80 iterations: `femopt export --verify` re-analyses the part under that resultant
    (measured: compliance ratio 1.20 of the part to the design on the re-analysis grid of
    quarter cells, 0.944 on the former Triangle mesh of the part; a lost or doubled
    resultant would give a ratio near 0 or 4)."""
    import json

    from femopt.cli import main

    text = """\
mesh: {type: structured, shape: [30, 10], size: [30.0, 10.0]}
physics: {type: linear_elasticity}
supports:
  - region: {face: x_min}
loads:
  - region: {face: x_max, box: {min: [30.0, 3.0], max: [30.0, 7.0]}}
    traction: [0.0, -2.0]
design:
  passive:
    - {region: {box: {min: [29.0, 3.0], max: [30.0, 7.0]}}, value: solid}
filters:
  - {type: density, radius: 1.5}
objective: {type: compliance}
constraints:
  - {type: volume, max: 0.5}
optimizer: {type: oc, max_iter: 80}
output: {picture: false}
"""
    (tmp_path / "p.yaml").write_text(text, encoding="utf-8")
    out = tmp_path / "res"
    assert main(["run", str(tmp_path / "p.yaml"), "--out", str(out), "--quiet"]) == 0
    code = main(["export", str(out), "--format", "svg", "--verify"])
    assert code == 0, capsys.readouterr()
    v = json.loads((out / "verify.json").read_text())["verify"]
    assert 0.85 < v["compliance_ratio"] < 1.3, v


@pytest.mark.parametrize("kind", KINDS)
def test_a_facet_group_of_a_mesh_file_loads_as_its_face(kind, tmp_path):
    """A Gmsh physical group of the lines (2D) or triangles/quadrangles (3D) on x = 1,
    written in the opposite node order: the same loads as `face: x_max`."""
    dim = 2 if kind in ("tri3", "quad4") else 3
    mesh = box_mesh(kind, (3, 2, 2)[:dim], (1.0, 1.0, 1.0)[:dim], 0.2, seed=3)
    right = select_facets(Region(face="x_max"), mesh)
    write_mesh(tmp_path / "m.msh", mesh, {"right": right[:, ::-1]})
    traction = [0.3, -1.0, 0.5][:dim]
    loaded = [build_model(write_problem(tmp_path, "m.msh",
                                        f"  - {{region: {region}, traction: {traction}}}\n"
                                        "  - {region: {face: y_max}, pressure: 0.5}\n",
                                        dim), device="cpu").loads[0]
              for region in ("{group: right}", "{face: x_max}")]
    np.testing.assert_allclose(loaded[0], loaded[1], rtol=0, atol=1e-15)
    per_node = loaded[0].reshape(-1, dim)
    assert per_node[:, 0].sum() == pytest.approx(0.3, rel=1e-13)
