"""Mesh files through meshio (mesh type ``file``): formats, named groups, units, the
checks that refuse bad meshes, and topology optimization on an unstructured mesh."""

from __future__ import annotations

import copy
from pathlib import Path

import meshio
import numpy as np
import pytest
import scipy.sparse as sp

from femopt.cli import main
from femopt.errors import MeshError
from femopt.filters.base import radius_weights
from femopt.mesh import structured_grid
from femopt.mesh.meshfile import read_mesh_file
from femopt.objectives.base import cell_volumes
from femopt.runner import build_model
from test_simplex_elements import SPLIT

ROOT = Path(__file__).resolve().parents[1]
BRACKET = ROOT / "problems" / "meshes" / "bracket_3d.msh"


def box(kind: str, shape=(4, 2, 2)):
    """Points and cells of a unit-cell box: hex8 (quad4) or split into tet4 (tri3)."""
    grid = structured_grid(shape, shape)
    if kind in ("hex8", "quad4"):
        return grid.points, grid.cells
    cells = grid.cells[:, SPLIT[kind]].reshape(-1, grid.dim + 1)
    p = grid.points[cells]
    det = np.linalg.det(p[:, 1:] - p[:, :1])
    cells[det < 0, :2] = cells[det < 0, 1::-1]
    return grid.points, cells


MESHIO = {"tri3": "triangle", "quad4": "quad", "tet4": "tetra", "hex8": "hexahedron"}
FORMATS = [("gmsh22", "msh"), ("gmsh", "msh"), ("vtu", "vtu"), ("xdmf", "xdmf"),
           ("abaqus", "inp")]


@pytest.mark.parametrize("fmt, ext", FORMATS)
@pytest.mark.parametrize("kind", ["tri3", "quad4", "tet4", "hex8"])
def test_every_format_and_element_reads_back(kind, fmt, ext, tmp_path):
    shape = (4, 2) if kind in ("tri3", "quad4") else (4, 2, 2)
    pts, cells = box(kind, shape)
    path = tmp_path / f"m.{ext}"
    z = np.zeros((len(pts), 3 - pts.shape[1]))  # 2D meshes are written with z = 0
    meshio.write(path, meshio.Mesh(np.hstack([pts, z]), [(MESHIO[kind], cells)]),
                 file_format=fmt)
    mesh = read_mesh_file(path)
    assert mesh.cell_type == kind and mesh.grid is None
    assert mesh.points.shape == pts.shape  # 2D files lose their z = 0
    np.testing.assert_array_equal(mesh.cells, cells)
    assert cell_volumes(mesh).sum() == pytest.approx(np.prod(shape))


def test_gmsh_physical_groups_of_the_bracket():
    mesh = read_mesh_file(BRACKET)
    assert mesh.cell_type == "tet4" and 3000 < mesh.n_cells < 5000
    assert set(mesh.cell_sets) == {"body", "lug_ring"}  # groups of tetrahedra
    assert set(mesh.node_sets) == {"body", "lug_ring", "bolts", "lug"}
    assert mesh.cell_sets["body"].size == mesh.n_cells
    # facet groups give the nodes of their triangles: the bolt holes' surfaces (r = 5)
    for centre in ((10.0, 10.0), (10.0, 30.0)):
        r = np.linalg.norm(mesh.points[mesh.node_sets["bolts"], :2] - centre, axis=1)
        assert np.count_nonzero(np.abs(r - 5.0) < 1e-6) > 20
    r = np.linalg.norm(mesh.points[mesh.node_sets["lug"], :2] - (68.0, 20.0), axis=1)
    np.testing.assert_allclose(r, 6.0, atol=1e-6)
    # 8 mm of a unit-less volume: every cell of the ring has its centroid within r = 11
    c = mesh.centroids()[mesh.cell_sets["lug_ring"]]
    assert np.all(np.linalg.norm(c[:, :2] - (68.0, 20.0), axis=1) < 11.0)


@pytest.mark.parametrize("fmt", ["gmsh22", "abaqus"])
def test_named_sets_become_node_and_cell_groups(fmt, tmp_path):
    """gmsh v2 physical groups (gmsh:physical + field_data) and Abaqus elsets/nsets; a
    facet group gives only nodes; a point set (nset) gives nodes."""
    pts, tets = box("tet4", (2, 1, 1))
    bottom = np.array([[0, 1, 4]])
    kw = {}
    if fmt == "gmsh22":
        kw = {"cell_data": {"gmsh:physical": [np.full(len(tets), 7), np.array([9])],
                            "gmsh:geometrical": [np.ones(len(tets), int), np.array([2])]},
              "field_data": {"solid": np.array([7, 3]), "bottom": np.array([9, 2])}}
    else:
        kw = {"cell_sets": {"solid": [np.arange(len(tets)), np.zeros(0, int)],
                            "bottom": [np.zeros(0, int), np.array([0])]},
              "point_sets": {"tip": np.array([len(pts) - 1])}}
    path = tmp_path / ("m.msh" if fmt == "gmsh22" else "m.inp")
    meshio.write(path, meshio.Mesh(pts, [("tetra", tets), ("triangle", bottom)], **kw),
                 file_format=fmt)
    mesh = read_mesh_file(path)
    assert mesh.n_cells == len(tets)  # the triangle marks a group, it is no element
    assert set(mesh.cell_sets) == {"solid"}
    np.testing.assert_array_equal(mesh.node_sets["bottom"], [0, 1, 4])
    if fmt == "abaqus":
        np.testing.assert_array_equal(mesh.node_sets["tip"], [len(pts) - 1])


def write(path, pts, blocks, **kw):
    meshio.write(path, meshio.Mesh(np.asarray(pts, float), blocks, **kw), file_format="gmsh22")
    return path


def _bad_meshes(tmp: Path) -> dict[str, tuple[Path, str]]:
    pts, tets = box("tet4", (2, 1, 1))
    inverted = tets.copy()
    inverted[[1, 4], :2] = inverted[[1, 4], 1::-1]
    flat = np.vstack([tets, [[0, 1, 2, 2]]])  # a tet with a repeated node has no volume
    two = np.vstack([pts, pts + [5.0, 0, 0]])
    moved = np.vstack([pts, pts + [2.0, 0, 0]])  # touching at x = 2, nodes duplicated
    (tmp / "garbage.msh").write_text("this is not a mesh\n")
    return {
        "missing": (tmp / "nothere.msh", "no such mesh file"),
        "garbage": (tmp / "garbage.msh", "cannot read the mesh file"),
        "wedge": (write(tmp / "w.msh", [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1],
                                        [1, 0, 1], [0, 1, 1]],
                        [("wedge", np.array([[0, 1, 2, 3, 4, 5]]))]),
                  "unsupported cell type(s) wedge (the file has: wedge; supported"),
        "tet10": (write(tmp / "t10.msh", np.vstack([pts, pts[:6] + 0.01]),
                        [("tetra10", np.arange(10)[None, :])]), "unsupported cell type(s) "
                  "tetra10"),
        "mixed": (write(tmp / "x.msh", [[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0],
                                        [3, 0, 0], [3, 1, 0]],
                        [("triangle", np.array([[0, 1, 2]])),
                         ("quad", np.array([[1, 4, 5, 3]]))]),
                  "mixed element types quad, triangle"),
        "2d3d": (write(tmp / "d.msh", np.vstack([pts, [[9, 9, 9], [9, 8, 9], [8, 9, 9]]]),
                       [("tetra", tets), ("triangle", np.array([[len(pts), len(pts) + 1,
                                                                 len(pts) + 2]]))]),
                 "mixed 2D/3D cells: 1 triangle cell(s) are not facets"),
        "inverted": (write(tmp / "i.msh", pts, [("tetra", inverted)]),
                     "2 inverted element(s): 1, 4"),
        "degenerate": (write(tmp / "g.msh", pts, [("tetra", flat)]),
                       "1 degenerate (zero-volume) element(s): 12"),
        "duplicated": (write(tmp / "u.msh", moved, [("tetra", np.vstack([tets,
                                                                          tets + len(pts)]))]),
                       "pair(s) of coincident nodes"),
        "parts": (write(tmp / "p.msh", two, [("tetra", np.vstack([tets, tets + len(pts),
                                                                 tets[:3] + len(pts)]))]),
                  "the mesh has 2 unconnected parts (elements per part: 12, 15)"),
        "bent": (write(tmp / "b.msh", [[0, 0, 0], [1, 0, 0], [0, 1, 0.5]],
                       [("triangle", np.array([[0, 1, 2]]))]),
                 "do not lie in a plane z = constant"),
        "negative_index": (vtu(tmp / "n.vtu", pts, _with(tets, (5, 2), -1)),
                           "1 tetra cell(s) refer to nodes the file does not have: 5 "
                           "(0-based); cell 5 refers to node -1, the file has nodes 0 to 11"),
        "index_past_end": (vtu(tmp / "e.vtu", pts, _with(_with(tets, (3, 0), 12), (7, 1), 40)),
                           "2 tetra cell(s) refer to nodes the file does not have: 3, 7 "
                           "(0-based); cell 3 refers to node 12"),
        "nan_node": (vtu(tmp / "nan.vtu", _with(pts, (4, 1), np.nan), tets),
                     "1 node(s) with a non-finite coordinate (NaN or inf): 4 (0-based node "
                     "indices); first: [1.0, nan, 0.0]"),
        "inf_node": (vtu(tmp / "inf.vtu", _with(_with(pts, (2, 0), np.inf), (9, 2), -np.inf),
                         tets),
                     "2 node(s) with a non-finite coordinate (NaN or inf): 2, 9"),
    }


def _with(a, index, value):
    out = np.array(a, dtype=float if isinstance(value, float) else a.dtype)
    out[index] = value
    return out


def vtu(path, pts, tets):
    meshio.write(path, meshio.Mesh(np.asarray(pts, float), [("tetra", tets)]))
    return path


BAD = ["missing", "garbage", "wedge", "tet10", "mixed", "2d3d", "inverted", "degenerate",
       "duplicated", "parts", "bent", "negative_index", "index_past_end", "nan_node",
       "inf_node"]


@pytest.mark.parametrize("case", BAD)
def test_bad_mesh_files_are_refused_with_the_file_named(case, tmp_path):
    path, message = _bad_meshes(tmp_path)[case]
    with pytest.raises(MeshError) as err:
        read_mesh_file(path)
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)


PROBLEM = """\
mesh: {{type: file, path: {path}{extra}}}
physics: {{type: linear_elasticity}}
supports:
  - region: {{group: {support}}}
loads:
  - region: {{group: lug}}
    force: [0.0, 0.0, -1.0]
filters:
  - {{type: density, radius: 6.0}}
objective: {{type: compliance}}
constraints:
  - {{type: volume, max: 0.3}}
optimizer: {{type: oc, max_iter: 2}}
output: {{picture: false}}
"""


@pytest.mark.parametrize("case", ["parts", "missing", "negative_index", "nan_node"])
@pytest.mark.parametrize("command", ["run", "validate"])
def test_cli_refuses_a_bad_mesh_with_exit_2_and_writes_nothing(case, command, write_problem,
                                                              tmp_path, capsys):
    path, message = _bad_meshes(tmp_path)[case]
    problem = write_problem(PROBLEM.format(path=path.name, extra="", support="bolts"))
    out = tmp_path / "results"
    assert main([command, str(problem)] + (["--out", str(out)] if command == "run" else [])) == 2
    err = capsys.readouterr().err
    assert str(path) in err and message in err  # the relative path resolved by the problem
    # located at the mesh section's path key: FILE:1:COL: mesh.path: MESHFILE: message
    col = problem.read_text().index("path: ") + len("path: ") + 1  # at the file name
    assert f"{problem}:1:{col}: mesh.path: {path}: " in err, err
    assert not out.exists()


def test_unknown_group_lists_the_groups_of_the_mesh(write_problem, tmp_path, capsys):
    problem = write_problem(PROBLEM.format(path=BRACKET, extra="", support="bolt"))
    assert main(["run", str(problem), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "supports.0.region: the mesh has no group 'bolt' (groups: body, bolts, lug, " \
           "lug_ring)" in err
    assert not (tmp_path / "r").exists()


def test_mesh_unit_converts_the_coordinates(write_problem):
    """The file is in mm; a problem in m gets coordinates / 1000 (default: the problem's
    own unit, no conversion)."""
    mm = build_model(write_problem(PROBLEM.format(path=BRACKET, extra=", unit: mm",
                                                  support="bolts")))
    assert mm.mesh.bounds()[1] == pytest.approx([80.0, 40.0, 12.0])
    text = "unit: m\n" + PROBLEM.format(path=BRACKET, extra=", unit: mm",
                                         support="bolts").replace("radius: 6.0",
                                                                  "radius: 0.006")
    m = build_model(write_problem(text, "in_metres.yaml"))
    assert m.mesh.bounds()[1] == pytest.approx([0.08, 0.04, 0.012])


def test_radius_filter_weights_neighbours_by_volume():
    """On an unstructured mesh H_ij = (r - d_ij) v_j; on a structured grid v_j is left out
    (the MBB tests pin those results)."""
    grid = structured_grid((6, 4), (3.0, 2.0))
    h_grid, _ = radius_weights(grid, 1.2)
    pts, tris = box("tri3", (6, 4))
    from femopt.mesh import Mesh

    mesh = Mesh(points=pts * 0.5, cells=tris, cell_type="tri3")
    h, hs = radius_weights(mesh, 1.2)
    c = mesh.centroids()
    i, j = h.nonzero()
    cone = 1.2 - np.linalg.norm(c[i] - c[j], axis=1)
    np.testing.assert_allclose(np.asarray(h[i, j]).ravel(), cone * cell_volumes(mesh)[j])
    np.testing.assert_allclose(hs, np.asarray(h.sum(axis=1)).ravel())
    i, j = h_grid.nonzero()
    cg = grid.centroids()
    assert np.array_equal(np.asarray(h_grid[i, j]).ravel(),
                          1.2 - np.linalg.norm(cg[i] - cg[j], axis=1))


@pytest.mark.parametrize("chunk", [7, 1 << 20])
def test_pair_weights_equal_the_full_distance_matrix_bit_for_bit(chunk, monkeypatch):
    """The pairs i < j, mirrored, with the distances summed per coordinate in chunks (a
    chunk smaller than the pairs too), give the full KD-tree distance matrix's cone
    weights exactly: the same pattern in canonical CSR and the same values bit for bit."""
    import scipy.sparse as sp
    from scipy.spatial import cKDTree

    from femopt.filters import base

    monkeypatch.setattr(base, "CHUNK", chunk)
    c = np.random.default_rng(11).uniform(0.0, 4.0, (400, 3))
    radius = 0.9
    tree = cKDTree(c)
    h = base._pair_weights(tree, c, radius)
    i, j = np.nonzero(np.ones((400, 400), dtype=bool))
    w = radius - np.sqrt(((c[i] - c[j]) ** 2).sum(axis=1))
    want = sp.csr_matrix((w[w > 0], (i[w > 0], j[w > 0])), shape=(400, 400))
    assert h.has_canonical_format and h.indices.dtype == np.int32
    assert 4000 < h.nnz == want.nnz
    assert np.array_equal(h.indptr, want.indptr)
    assert np.array_equal(h.indices, want.indices)
    assert np.array_equal(h.data, want.data)


def test_bracket_3d_optimizes_on_its_tet_mesh():
    model = build_model(ROOT / "problems" / "bracket_3d.yaml")
    assert model.ke.shape == (model.mesh.n_cells, 12, 12)  # one matrix per tetrahedron
    result = model.optimizer.run(model, model.x0.copy(), 25)
    first, last = model.history[0].objective, model.history[-1].objective
    assert last < 0.2 * first
    assert model.history[-1].constraints["volume"] == pytest.approx(0.25, abs=5e-3)
    rho = model.physical(result.x)[0]
    assert np.all(rho[model.mesh.cell_sets["lug_ring"]] == 1.0)


def test_amg_solver_matches_the_direct_solve_on_the_bracket(write_problem):
    """PCG with smoothed aggregation (rigid-body modes as near-null space) converges in
    few iterations on the tet mesh, with the direct solver's state."""
    pytest.importorskip("pyamg")
    text = PROBLEM.format(path=BRACKET, extra="", support="bolts")
    direct = build_model(write_problem(text))
    amg = build_model(write_problem(text + "solver: {type: amg, rtol: 1.0e-10}\n",
                                    "amg.yaml"))
    rho = np.random.default_rng(1).uniform(0.1, 1.0, direct.n)
    u_direct = direct.path.analyse(rho).u
    u_amg = amg.path.analyse(rho).u
    assert np.abs(u_amg - u_direct).max() < 1e-7 * np.abs(u_direct).max()
    assert amg.solver.stats()["cg_iterations"] < 60
    assert amg.solver.stats()["amg_levels"] >= 2


def winding_number(surface, point) -> float:
    """Solid angle of a closed surface seen from ``point`` over 4 pi: 1 inside, 0 outside
    (Van Oosterom and Strackee's formula per triangle)."""
    t = np.asarray(surface.vertices)[np.asarray(surface.faces)] - np.asarray(point)
    a, b, c = t[:, 0], t[:, 1], t[:, 2]
    la, lb, lc = (np.linalg.norm(v, axis=1) for v in (a, b, c))
    num = np.einsum("ij,ij->i", a, np.cross(b, c))
    den = (la * lb * lc + np.einsum("ij,ij->i", a, b) * lc + np.einsum("ij,ij->i", a, c) * lb
           + np.einsum("ij,ij->i", b, c) * la)
    return float(2.0 * np.arctan2(num, den).sum() / (4.0 * np.pi))


def test_cad_export_and_verify_of_a_design_on_a_mesh_file(tmp_path, capsys):
    """A design on tets is resampled onto a grid inside its own cells: the part is
    closed, the lug hole stays open, and the re-analysis finds the groups' supports and
    loads on the part's new mesh."""
    import json

    import trimesh

    problem = tmp_path / "bracket.yaml"
    problem.write_text((ROOT / "problems" / "bracket_3d.yaml").read_text().replace(
        "path: meshes/", f"path: {ROOT / 'problems' / 'meshes'}/").replace(
        "output:\n  picture: false", "output:\n  picture: false\n  formats: [vtu, stl]"))
    out = tmp_path / "r"
    assert main(["run", str(problem), "--out", str(out), "--max-iter", "30", "--quiet"]) == 0
    part = trimesh.load(out / "design.stl")
    assert part.is_watertight and part.is_winding_consistent and part.volume > 0
    assert winding_number(part, [68.0, 20.0, 6.0]) == pytest.approx(0.0, abs=1e-6)  # lug hole
    assert winding_number(part, [68.0, 27.5, 6.0]) == pytest.approx(1.0, abs=1e-6)  # ring
    capsys.readouterr()
    assert main(["export", str(out), "--format", "stl", "--out", str(tmp_path / "p.stl"),
                 "--verify"]) == 0
    report = json.loads((out / "verify.json").read_text())["verify"]
    assert 0.5 < report["compliance_ratio"] < 1.1, report
    assert abs(report["volume_error"]) < 0.03, report


def test_a_facet_group_cannot_select_cells(write_problem, tmp_path, capsys):
    text = PROBLEM.format(path=BRACKET, extra="", support="bolts").replace(
        "filters:", "design:\n  passive:\n    - {region: {group: lug}, value: solid}\n"
        "filters:")
    assert main(["validate", str(write_problem(text))]) == 2
    assert ("design.passive.0.region: group 'lug' holds no elements (it marks nodes or "
            "facets); groups of elements: body, lug_ring") in capsys.readouterr().err


def test_filter_transpose_is_a_view_with_the_copys_values_bit_for_bit():
    """H^T x through the CSC view of H (no copy of the weights) equals the product with a
    CSR copy of H^T bit for bit, on the bracket's unsymmetric volume-weighted H."""
    from femopt.filters.linear import HostWeights

    model = build_model(ROOT / "problems" / "bracket_3d.yaml")
    h, hs = radius_weights(model.mesh, 6.0)
    op = HostWeights(h, hs)
    assert op.ht.data is h.data or np.shares_memory(op.ht.data, h.data)
    dy = np.random.default_rng(5).standard_normal(h.shape[0])
    want = h.T.tocsr() @ (dy / hs)
    assert np.array_equal(op.backward(None, dy), want)
    assert abs(h - h.T).max() > 0  # the volumes make H unsymmetric: a real transpose


@pytest.mark.parametrize("mesh", ["bracket", "grid"])
def test_radius_filter_chain_rule_by_rows_equals_the_transpose(mesh, write_problem):
    """A radius filter's H is W diag(v) with W symmetric and r on its diagonal (v the
    neighbours' volumes, 1 on a grid), so its chain rule H^T (dy / Hs) is taken as
    v * (H (dy / (Hs v))) with v = diag(H), a product by H's rows: equal to the
    transpose's product within rounding, on the bracket's unsymmetric H and on a grid's
    symmetric one."""
    from femopt.filters.linear import HostWeights

    if mesh == "bracket":
        model = build_model(ROOT / "problems" / "bracket_3d.yaml")
    else:
        model = build_model(ROOT / "problems" / "cantilever_3d.yaml", device="cpu")
    f = [f for f in model.filters if f.linear][0]
    assert f.symmetric_by_columns
    h, hs = f.weights()
    w = h @ sp.diags(1.0 / h.diagonal())
    assert abs(w - w.T).max() <= 1e-12 * abs(w).max()  # W is symmetric
    op = HostWeights(h, hs, by_rows=True)
    dy = np.random.default_rng(6).standard_normal(h.shape[0])
    want = h.T.tocsr() @ (dy / hs)
    np.testing.assert_allclose(op.backward(None, dy), want, rtol=0,
                               atol=1e-13 * np.abs(want).max())


@pytest.mark.parametrize("route", ["cell hashing", "host weights"])
def test_device_radius_filter_keeps_no_transpose(route):
    """On a device path (its NumPy twin here) a radius filter's weights are kept once: no
    H^T (as many weights again), its chain rule by H's rows equal to the transpose's
    product within rounding, whether the twin found its weights by cell hashing or took
    the host's."""
    model = build_model(ROOT / "problems" / "bracket_3d.yaml")
    f = [f for f in model.filters if f.linear][0]
    if route == "host weights":
        f.op  # noqa: B018 - built on the host first: the twin uploads these
    op = f.device_twin(np).op
    assert op.ht is None and op.scale is not None
    h, hs = op.h, op.hs
    dy = np.random.default_rng(8).standard_normal(h.shape[0])
    want = h.T.tocsr() @ (dy / hs)
    np.testing.assert_allclose(op.backward(None, dy), want, rtol=0,
                               atol=1e-13 * np.abs(want).max())
    assert abs(h - h.T).max() > 0  # an unsymmetric H: the scales matter


def test_filter_weights_built_meanwhile_equal_those_built_on_use(monkeypatch):
    """On the host path the filter's weights build on a background thread while the model
    makes its element matrices and pattern: the same H bit for bit; an error of the
    build is raised where the weights are used."""
    monkeypatch.setenv("FEMOPT_SPMV_THREADS", "2")
    model = build_model(ROOT / "problems" / "bracket_3d.yaml")
    f = model.filters[0]
    assert "_pending" in vars(f) or "op" in vars(f)
    assert "indices" in vars(model.assembler)  # the pattern was built meanwhile
    want, want_s = radius_weights(model.mesh, f.options.radius)
    assert np.array_equal(f.H.indptr, want.indptr) and np.array_equal(f.H.data, want.data)
    assert np.array_equal(f.Hs, want_s) and "_pending" not in vars(f)

    def broken():
        raise MemoryError("no room for the weights")

    other = copy.copy(f)
    other.__dict__.pop("op")
    other.weights = broken
    other.prefetch()
    with pytest.raises(MemoryError, match="no room"):
        _ = other.H
