"""Shape optimization: element quality, the extension of the boundary gradient, the
optimizer's step control (against a stand-in objective), the plate with a hole under
biaxial tension (the optimal hole is an ellipse with axis ratio sigma_x / sigma_y = 2),
and bad shape problems (exit 2, nothing written)."""

from __future__ import annotations

import json
from pathlib import Path

import meshio
import numpy as np
import pytest

from femopt.cli import main
from femopt.mesh.meshfile import read_mesh_file
from femopt.shape.extension import Extension, boundary_facets, held_components
from femopt.shape.optimizer import ShapeConstraint, ShapeOptimizer
from femopt.shape.quality import scaled_jacobian

ROOT = Path(__file__).resolve().parents[1]
PROBLEM = ROOT / "problems" / "plate_with_hole.yaml"
COARSE = ROOT / "problems" / "meshes" / "plate_with_hole_coarse.msh"
S3 = np.sqrt(3.0)

CUBE = np.array([(0, 0, 0), (1, 0, 0), (1, 1, 0), (0, 1, 0), (0, 0, 1), (1, 0, 1),
                 (1, 1, 1), (0, 1, 1)], dtype=float)


@pytest.mark.parametrize("cell_type, points, expected", [
    ("tri3", [(0, 0), (1, 0), (0.5, S3 / 2)], 1.0),
    ("tri3", [(0, 0), (1, 0), (0, 1)], np.sqrt(2 / 3)),  # sin 45 / sin 60
    ("tri3", [(0, 0), (0, 1), (1, 0)], -2 / S3),  # clockwise: inverted
    ("quad4", [(0, 0), (2, 0), (2, 1), (0, 1)], 1.0),
    ("quad4", [(0, 0), (1, 0), (1.5, 1), (0.5, 1)], np.sin(np.arctan2(1, 0.5))),
    ("tet4", [(0, 0, 0), (1, 0, 0), (0.5, S3 / 2, 0), (0.5, S3 / 6, np.sqrt(2 / 3))], 1.0),
    ("tet4", [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1)], np.sqrt(2) / 2),
    ("hex8", CUBE * [3, 1, 0.5], 1.0),
    ("hex8", np.where(np.arange(8)[:, None] == 6, [0.2, 0.2, 0.2], CUBE), None),
])
def test_scaled_jacobian(cell_type, points, expected):
    p = np.asarray(points, dtype=float)
    q = scaled_jacobian(p, np.arange(len(p))[None, :], cell_type)
    if expected is None:  # a corner pushed through the opposite corner
        assert q[0] < 0
    else:
        assert q[0] == pytest.approx(expected, rel=1e-12)


def _plate(**extension):
    """The coarse quarter plate: its mesh, hole nodes and an extension with the symmetry
    lines sliding."""
    mesh = read_mesh_file(COARSE)
    hole = mesh.node_sets["hole"]
    slides = [(mesh.node_sets["bottom"], 1), (mesh.node_sets["left"], 0)]
    held = held_components(mesh.points, mesh.cells, mesh.cell_type, hole, slides)
    return mesh, hole, Extension(mesh.cells, mesh.cell_type, hole, held, **extension)


@pytest.mark.parametrize("kind", ["elasticity", "laplace"])
@pytest.mark.parametrize("data", ["neumann", "dirichlet"])
def test_extension_holds_slides_and_descends(kind, data):
    mesh, hole, ext = _plate(kind=kind, data=data, normal=False)
    rng = np.random.default_rng(1)
    g = rng.standard_normal(mesh.points.shape)
    (v,) = ext.extend(mesh.points, [g])
    held = ext.held
    # the outer edges stay, the symmetry lines slide along themselves
    for name in ("right", "top"):
        assert np.abs(v[mesh.node_sets[name]]).max() == 0.0
    assert np.abs(v[mesh.node_sets["bottom"], 1]).max() == 0.0
    assert np.abs(v[mesh.node_sets["left"], 0]).max() == 0.0
    assert np.abs(v[mesh.node_sets["bottom"], 0]).max() > 0
    # right and top (6 nodes each, one shared) fully, the slides' normals (14 nodes each,
    # one of them already on the right or top edge)
    assert held.sum() == 2 * 11 + 13 + 13
    # an ascent motion of the restricted gradient, which also moves the inside
    gr = np.where(ext.free_moving, g, 0.0)
    assert float(np.sum(gr * v)) > 0
    inside = np.setdiff1d(np.arange(mesh.n_nodes), np.unique(
        boundary_facets(mesh.cells, mesh.cell_type)))
    assert np.abs(v[inside]).max() > 0
    if data == "dirichlet":  # the boundary motion is the gradient per boundary measure
        m = ext.boundary_measure(mesh.points)  # zero off the boundary
        moving = ext.free_moving
        assert np.all(m[moving.any(axis=1)] > 0)
        assert np.allclose(v[moving], (g[moving.any(axis=1)] / m[moving.any(axis=1), None])
                           [moving[moving.any(axis=1)]])
    else:  # the Riesz map: a(V, V) = G(V)
        a = ext.matrix(mesh.points)
        assert float(v.ravel() @ (a @ v.ravel())) == pytest.approx(float(np.sum(gr * v)),
                                                                   rel=1e-9)


def test_normal_part_only():
    mesh, hole, ext = _plate(normal=True)
    n = ext.normals(mesh.points)
    r = np.linalg.norm(mesh.points[hole], axis=1)
    assert np.allclose(np.abs(np.sum(n[hole] * mesh.points[hole] / r[:, None], axis=1)), 1,
                       atol=0.02)  # a quarter circle's normals are radial
    t = np.column_stack([-n[:, 1], n[:, 0]])
    assert np.abs(np.sum(ext.restrict(mesh.points, t), axis=1)).max() < 1e-12


def _area_and_gradient(points, cells):
    """Total area of a tri3 mesh and its exact derivative at the node coordinates."""
    p = points[cells]
    e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    area = 0.5 * (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])
    grad = np.zeros_like(points)
    for a in range(3):  # dA/dx_a = 0.5 (y_b - y_c, x_c - x_b), (a, b, c) counter-clockwise
        b, c = (a + 1) % 3, (a + 2) % 3
        e = p[:, c] - p[:, b]
        np.add.at(grad, cells[:, a], 0.5 * np.column_stack([-e[:, 1], e[:, 0]]))
    return float(area.sum()), grad


def test_inverting_steps_are_shortened_and_the_mesh_stays_good():
    """A stand-in objective (minus the area: the hole shrinks until the mesh cannot
    follow) and far too long a first step: the step that would invert cells is halved,
    no evaluation ever sees a cell below the quality limit, and the hole shrinks until a
    cell reaches the limit, never beyond it."""
    mesh, hole, ext = _plate()
    min_quality = 0.3
    seen = []

    def evaluate(points):
        q = scaled_jacobian(points, mesh.cells, mesh.cell_type)
        seen.append(float(q.min()))
        area, grad = _area_and_gradient(points, mesh.cells)
        return [-area], [-grad]

    opt = ShapeOptimizer(mesh.cells, mesh.cell_type, ext, [], max_step=3.0,
                         min_quality=min_quality, tol=1e-14, backtracks=8)
    v, _, _ = opt.direction(*evaluate(mesh.points), mesh.points)
    full = mesh.points + 3.0 * v / np.linalg.norm(v, axis=1).max()
    assert scaled_jacobian(full, mesh.cells, mesh.cell_type).min() < 0  # it would invert
    seen.clear()
    res = opt.run(evaluate, mesh.points, max_iter=100)
    assert res.steps[0].backtracks >= 1 and res.steps[0].change < 3.0 / 2 + 1e-12
    assert min(seen) >= min_quality
    assert min(s.quality for s in res.steps) >= min_quality
    assert scaled_jacobian(res.points, mesh.cells, mesh.cell_type).min() >= min_quality
    assert scaled_jacobian(res.points, mesh.cells, mesh.cell_type).min() < 1.01 * min_quality
    assert res.values[0] < res.initial_values[0]  # the hole did shrink, to the limit
    r = np.linalg.norm(res.points[hole], axis=1)
    assert r.max() < 0.9


def test_equality_constraint_is_kept_by_projection_and_restoration():
    """Stand-in: push the hole's nodes outward along x (J = -sum x) with the area held
    at a target: the restoration takes the area, 0.05 off at the start, within 0.005 of
    the target in one step, and it stays there."""
    mesh, hole, ext = _plate()
    area0, _ = _area_and_gradient(mesh.points, mesh.cells)
    target = area0 + 0.05  # the quarter hole is pi / 4

    def evaluate(points):
        area, grad = _area_and_gradient(points, mesh.cells)
        gx = np.zeros_like(points)
        gx[hole, 0] = -1.0
        return [-float(points[hole, 0].sum()), area], [gx, grad]

    opt = ShapeOptimizer(mesh.cells, mesh.cell_type, ext,
                         [ShapeConstraint("area", "equal", target)], max_step=0.1,
                         min_quality=0.3)
    res = opt.run(evaluate, mesh.points, max_iter=15)
    areas = np.array([s.values[1] for s in res.steps])
    # restored in one step to first order; what the steps' curvature takes off (steps of
    # 0.1 on a hole of radius 1) is given back by the next step
    assert np.abs(areas - target).max() < 0.005
    assert abs(areas[-1] - target) < 0.001
    assert res.values[0] < res.initial_values[0]


def _fit_axes(points):
    """Semi-axes (a along x, b along y) of the centred ellipse fitted to ``points``."""
    c = np.linalg.lstsq(points ** 2, np.ones(len(points)), rcond=None)[0]
    return 1 / np.sqrt(c)


def test_plate_with_hole_becomes_an_ellipse_of_axis_ratio_two(tmp_path, capsys):
    text = PROBLEM.read_text().replace("path: meshes/plate_with_hole.msh", f"path: {COARSE}")
    problem = tmp_path / "plate.yaml"
    problem.write_text(text)
    out = tmp_path / "out"
    assert main(["run", str(problem), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "shape design of 12 moving nodes" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["converged"]
    assert summary["objective"] < summary["initial_objective"]
    assert abs(summary["constraints"]["volume"] - 1) < 1e-3
    assert summary["min_quality"] >= 0.3
    mesh = read_mesh_file(COARSE)
    points = np.load(out / "design.npy")
    a, b = _fit_axes(points[mesh.node_sets["hole"]])
    assert abs(a / b - 2) < 0.2, (a, b)  # within 10% of the known optimum
    assert a * b == pytest.approx(1.0, rel=0.03)  # the hole's area (pi r^2 = pi a b)
    rows = (out / "history.csv").read_text().splitlines()
    assert rows[0].split(",")[:3] == ["iteration", "objective", "volume"]
    assert len(rows) - 1 == summary["iterations"]
    vtu = meshio.read(out / "design.vtu")
    motion = vtu.point_data["shape_motion"][:, :2]
    assert np.allclose(vtu.points[:, :2], mesh.points + motion)
    assert np.allclose(motion, points - mesh.points)
    assert {"displacement", "shape_motion"} <= set(vtu.point_data)
    assert (out / "design.png").exists() and (out / "convergence.png").exists()
    # a shape run has no checkpoint: resume says so and leaves the results alone
    before = {f.name: f.stat().st_mtime_ns for f in out.iterdir()}
    assert main(["resume", str(out)]) == 2
    assert "shape optimization run keeps no checkpoint" in capsys.readouterr().err
    assert {f.name: f.stat().st_mtime_ns for f in out.iterdir()} == before


def test_check_gradients_on_a_shape_problem(tmp_path, capsys):
    text = PROBLEM.read_text().replace("path: meshes/plate_with_hole.msh", f"path: {COARSE}")
    problem = tmp_path / "plate.yaml"
    problem.write_text(text)
    assert main(["check-gradients", str(problem)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[1] for ln in lines] == ["compliance", "volume"]
    for ln in lines:
        rates = [float(r) for r in ln.split("rates")[1].split()[:3]]
        assert all(1.9 < r < 2.1 for r in rates), ln


BAD = [
    ("boundary: {group: hole}", "boundary: {group: hol}", "design.boundary",
     "no group 'hol' (groups: bottom, hole, left, plate, right, top)"),
    ("type: shape", "type: shap", "design.type", "unknown type 'shap'; did you mean 'shape'?"),
    ("  max_step: 0.05", "  max_step: -1", "design.max_step", "greater than 0"),
    ("      normal: y", "      normal: z", "design.slide.0.normal", "a 2D mesh has no axis 'z'"),
    ("boundary: {group: hole}", "boundary: {group: plate}", "design.boundary",
     "lie inside the mesh, not on its boundary"),
    ("boundary: {group: hole}", "boundary: {point: [10.0, 10.0]}", "design.boundary",
     "every node of the moving boundary is held"),
    ("objective:", "optimizer: {type: mma}\nobjective:", "optimizer",
     "go under design"),
    ("objective:", "filters: [{type: density, radius: 1.0}]\nobjective:", "filters",
     "a shape design has none"),
    ("objective:", "output: {formats: [vtu, stl]}\nobjective:", "output.formats.1",
     "a shape design writes vtu"),
    ("objective:", "device: gpu\nobjective:", "device", "runs on the CPU"),
]


@pytest.mark.parametrize("old, new, where, message", BAD, ids=[b[2] + ":" + b[1][:12]
                                                                for b in BAD])
def test_bad_shape_problems_exit_2_and_write_nothing(tmp_path, capsys, old, new, where,
                                                     message):
    text = PROBLEM.read_text().replace("path: meshes/plate_with_hole.msh", f"path: {COARSE}")
    assert old in text
    problem = tmp_path / "bad.yaml"
    problem.write_text(text.replace(old, new, 1))
    out = tmp_path / "out"
    assert main(["run", str(problem), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{problem}:" in err and f": {where}: " in err and message in err, err
    assert not out.exists()


def test_shape_design_on_a_structured_grid_and_equality_in_topology(tmp_path, capsys):
    text = (ROOT / "problems" / "mbb_beam.yaml").read_text()
    old = "design:\n  interpolation: {type: simp, penalty: 3.0, min: 1.0e-9}\nfilters:\n" \
          "  - type: sensitivity\n    radius: 1.5\n"
    assert old in text
    shape = tmp_path / "grid.yaml"
    shape.write_text(text.replace(old, "design: {type: shape, boundary: {face: y_max}}\n")
                     .split("optimizer:")[0])
    assert main(["validate", str(shape)]) == 2
    err = capsys.readouterr().err
    assert ": design.type: a shape design moves the nodes of a mesh read from a file" in err
    eq = tmp_path / "eq.yaml"
    eq.write_text(text.replace("max: 0.5", "equal: 0.5"))
    assert main(["validate", str(eq)]) == 2
    assert ": constraints.0.equal: an equality constraint needs a shape design" in \
        capsys.readouterr().err
