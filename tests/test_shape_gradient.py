"""Shape gradients (node coordinates as the design) by the discrete adjoint: Taylor tests
on a quarter plate with a hole (tri3, quad4) and its extrusion (tet4, hex8) for
compliance with nodal and body loads, the volume, the stress p-norm, a displacement and
a weighted sum; a gradient without its adjoint term converges at rate 1; inverted cells
are refused by name."""

from __future__ import annotations

import meshio
import numpy as np
import pytest

from femopt.adjoint import generated
from femopt.adjoint.taylor import taylor_test
from femopt.errors import InputError, InvertedCellsError
from femopt.objectives.stress import StressPNorm
from femopt.runner import build_model
from femopt.shape import ShapeEvaluator, check_shape_gradients, smooth_direction
from femopt.physics import base as physics_base
from femopt.physics.base import Physics
from femopt.shape.geometry import gather

L, R, H = 2.0, 0.6, 0.5
MESHIO = {"tri3": "triangle", "quad4": "quad", "tet4": "tetra", "hex8": "hexahedron"}
KINDS = ["tri3", "quad4", "tet4", "hex8"]


def plate_with_hole(kind: str, n_r: int = 4, n_t: int = 6, n_z: int = 2):
    """A quarter of an L x L plate with a hole of radius R at the origin: (points, cells).
    Radial lines from the hole to the outer edges, graded towards the hole; tri3 splits
    the quads, hex8 extrudes them by H, tet4 splits the hexes."""
    s, t = np.meshgrid(np.linspace(0, 1, n_r + 1) ** 1.3, np.linspace(0, 1, n_t + 1),
                       indexing="ij")
    th = t * np.pi / 2
    inner = R * np.stack([np.cos(th), np.sin(th)], -1)
    lower = th <= np.pi / 4
    outer = np.where(lower[..., None],
                     np.stack([np.full_like(th, L), L * np.tan(np.where(lower, th, 0))], -1),
                     np.stack([L / np.tan(np.where(lower, np.pi / 4, th)), np.full_like(th, L)],
                              -1))
    pts = ((1 - s[..., None]) * inner + s[..., None] * outer).reshape(-1, 2)
    idx = np.arange(pts.shape[0]).reshape(n_r + 1, n_t + 1)
    quads = np.stack([idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]],
                     -1).reshape(-1, 4)
    if kind == "quad4":
        return pts, quads
    if kind == "tri3":
        return pts, np.vstack([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
    n2 = pts.shape[0]
    p3 = np.vstack([np.column_stack([pts, np.full(n2, z)]) for z in np.linspace(0, H, n_z + 1)])
    hexes = np.vstack([np.hstack([quads + k * n2, quads + (k + 1) * n2]) for k in range(n_z)])
    if kind == "hex8":
        return p3, hexes
    split = [[0, 1, 2, 6], [0, 2, 3, 6], [0, 3, 7, 6], [0, 7, 4, 6], [0, 4, 5, 6], [0, 5, 1, 6]]
    tets = np.vstack([hexes[:, k] for k in split])
    e = p3[tets[:, 1:]] - p3[tets[:, :1]]
    flip = np.einsum("ij,ij->i", np.cross(e[:, 0], e[:, 1]), e[:, 2]) < 0
    tets[flip] = tets[flip][:, [0, 2, 1, 3]]
    return p3, tets


def problem(tmp_path, kind: str, objective: str | None = None, constraints: str | None = None,
            physics: str = "{type: linear_elasticity, nu: 0.3, thickness: 0.5}",
            supports: str | None = None, loads: str | None = None) -> str:
    pts, cells = plate_with_hole(kind)
    dim = pts.shape[1]
    meshio.write(tmp_path / "plate.vtu", meshio.Mesh(
        np.hstack([pts, np.zeros((len(pts), 3 - dim))]), [(MESHIO[kind], cells)]))
    corner = [L, L, 0.0][:dim]
    if supports is None:
        supports = ("  - {region: {face: x_min}, dofs: [x]}\n"
                    "  - {region: {face: y_min}, dofs: [y]}\n"
                    + ("  - {region: {face: z_min}, dofs: [z]}\n" if dim == 3 else ""))
    if loads is None:
        loads = (f"  - {{region: {{face: x_max}}, force: {[1.0, 0.2, 0.1][:dim]}}}\n"
                 f"  - {{body: true, force: {[0.0, -0.3, 0.2][:dim]}}}\n")
    if objective is None:
        objective = ("  type: weighted_sum\n  terms:\n"
                     "    - {type: compliance, weight: 1.0}\n"
                     "    - {type: stress_pnorm, p: 6, weight: 0.5}\n"
                     "    - {type: volume, weight: 2.0}\n")
    if constraints is None:
        constraints = ("  - {type: compliance, max: 100.0}\n"
                       "  - {type: volume, max: 0.9}\n"
                       "  - {type: stress_pnorm, p: 6, max: 10.0}\n"
                       f"  - {{type: displacement, region: {{point: {corner}}}, "
                       f"direction: {[1.0, 0.5, 0.0][:dim]}, max: 10.0}}\n")
    text = (f"mesh: {{type: file, path: plate.vtu}}\nphysics: {physics}\n"
            f"supports:\n{supports}loads:\n{loads}objective:\n{objective}"
            f"constraints:\n{constraints}optimizer: {{type: oc}}\n")
    path = tmp_path / "problem.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def in_band(res) -> bool:
    return not res.exact and 1.9 <= min(res.rates) and max(res.rates) <= 2.1


@pytest.mark.parametrize("kind", KINDS)
def test_shape_gradients_pass_the_taylor_test(kind, tmp_path):
    """Weighted sum (compliance + stress + volume), compliance with nodal and body loads,
    volume, stress p-norm and a displacement (an adjoint solve of its own)."""
    model = build_model(problem(tmp_path, kind), device="cpu")
    checks = check_shape_gradients(model, seed=3, step=0.005)
    assert [c.name for c in checks] == [
        "objective weighted_sum", "constraint compliance", "constraint volume",
        "constraint stress", "constraint displacement"]
    for c in checks:
        assert in_band(c.result), (c.name, c.result.rates)
        assert c.wrong_term is None


@pytest.mark.parametrize("kind", ["tri3", "tet4"])
def test_heat_conduction_shape_gradient(kind, tmp_path):
    """Another physics through its element kernel: thermal compliance of a heat source."""
    path = problem(tmp_path, kind, physics="{type: heat_conduction, conductivity: 2.0}",
                   supports="  - {region: {face: x_min}}\n",
                   loads="  - {region: {face: x_max}, heat: 1.0}\n"
                         "  - {body: true, heat: 0.5}\n",
                   objective="  {type: thermal_compliance}\n",
                   constraints="  - {type: volume, max: 0.9}\n")
    for c in check_shape_gradients(build_model(path, device="cpu"), seed=1, step=0.005):
        assert in_band(c.result), (c.name, c.result.rates)


def test_values_at_the_initial_mesh_match_the_model(tmp_path):
    """At the mesh's own coordinates, with every cell solid, the evaluator's values are
    the model's values at rho = 1 (volume: 1, the ratio to the initial volume)."""
    model = build_model(problem(tmp_path, "quad4"), device="cpu")
    ev = ShapeEvaluator(model)
    values, grads = ev.evaluate(model.mesh.points)
    expected, _ = model.values_and_gradients(np.ones(model.n))
    np.testing.assert_allclose(values, expected, rtol=1e-10)
    assert values[2] == pytest.approx(1.0, abs=1e-14)
    assert all(g.shape == model.mesh.points.shape for g in grads)


def test_a_gradient_without_its_adjoint_term_fails_at_rate_one(tmp_path):
    model = build_model(problem(tmp_path, "tri3"), device="cpu")
    ev = ShapeEvaluator(model)
    x = model.mesh.points
    d = smooth_direction(x, seed=2) * 0.02
    _, terms = ev.evaluate(x, split=True)
    for k in (0, 1, 3):  # weighted sum, compliance, stress: all depend on u
        explicit, adjoint = terms[k]
        assert np.abs(adjoint).max() > 0
        f = lambda y, k=k: ev.values(y.reshape(x.shape))[k]  # noqa: E731
        right = taylor_test(f, (explicit + adjoint).ravel(), x.ravel(), d.ravel(), h0=0.05)
        wrong = taylor_test(f, explicit.ravel(), x.ravel(), d.ravel(), h0=0.05)
        assert in_band(right), right.rates
        assert not in_band(wrong) and 0.8 <= min(wrong.rates) <= max(wrong.rates) <= 1.2, \
            wrong.rates


def test_a_wrong_explicit_term_is_named(tmp_path, monkeypatch):
    """The stress p-norm without its strain-matrix derivative: the check fails and the
    states-fixed test names partial_x."""
    model = build_model(problem(tmp_path, "quad4"), device="cpu")
    monkeypatch.setattr(StressPNorm, "partial_x", lambda self, state: None)
    checks = {c.name: c for c in check_shape_gradients(model, seed=3, step=0.005)}
    stress = checks["constraint stress"]
    assert not stress.ok and stress.wrong_term == "partial_x"
    assert max(stress.result.rates) < 1.2
    assert checks["constraint compliance"].ok and checks["constraint volume"].ok


@pytest.mark.parametrize("kind", KINDS)
def test_adjoint_term_matches_the_generated_shape_sensitivity(kind, tmp_path, monkeypatch):
    """lambda^T dK/dX u: elasticity's closed form and the base class's chunked dual-number
    pass (chunks of 7 cells) against the generated kernel's NumPy twin, for compliance
    (lambda = -u, nodal loads only: no explicit term) and a displacement."""
    dim = 2 if kind in ("tri3", "quad4") else 3
    model = build_model(problem(tmp_path, kind, loads="  - {region: {face: x_max}, force: "
                                f"{[1.0, 0.2, 0.1][:dim]}}}\n"), device="cpu")
    ev = ShapeEvaluator(model)
    x = model.mesh.points + 0.01 * smooth_direction(model.mesh.points, seed=5)
    _, terms = ev.evaluate(x, split=True)
    u = ev.last_state.u
    twin = generated.shape_sensitivity(ev.kernel, x, model.mesh.cells, ev.m, -u, u)
    np.testing.assert_allclose(terms[1][1], twin, rtol=1e-9, atol=1e-12 * np.abs(twin).max())
    assert np.abs(terms[1][0]).max() == 0.0

    physics, cells, dofs = model.physics, model.mesh.cells, model.cell_dofs
    lam = np.random.default_rng(0).standard_normal(u.shape)
    nd = physics.element_kernel().nd
    monkeypatch.setattr(physics_base, "DUAL_CHUNK_BYTES", 7 * dim * cells.shape[1] * nd**2 * 8)
    closed = physics.coordinate_sensitivity(x[cells], ev.m, u[:, dofs], [lam[:, dofs]])[0]
    dual = Physics.coordinate_sensitivity(physics, x[cells], ev.m, u[:, dofs],
                                          [lam[:, dofs]])[0]
    twin = generated.shape_sensitivity(ev.kernel, x, cells, ev.m, lam, u)
    for g in (closed, dual):
        np.testing.assert_allclose(gather(cells, g, len(x)), twin, rtol=1e-9,
                                   atol=1e-12 * np.abs(twin).max())


@pytest.mark.parametrize("kind", ["tri3", "quad4", "tet4", "hex8"])
def test_inverted_cells_are_refused_by_name(kind, tmp_path):
    model = build_model(problem(tmp_path, kind), device="cpu")
    ev = ShapeEvaluator(model)
    cells = model.mesh.cells
    x = model.mesh.points.copy()
    # push the first node of cell 5 through the opposite side (past the cell's centroid)
    a = cells[5, 0]
    centre = x[cells[5]].mean(axis=0)
    x[a] = centre + 2.0 * (centre - x[a])
    with pytest.raises(InvertedCellsError, match=r"inverted or degenerate.*cells .*\b5\b") \
            as info:
        ev.evaluate(x)
    assert 5 in info.value.cells
    assert set(info.value.cells) <= set(np.flatnonzero((cells == a).any(axis=1)))


def test_degenerate_and_non_finite_coordinates_are_refused(tmp_path):
    model = build_model(problem(tmp_path, "tri3"), device="cpu")
    ev = ShapeEvaluator(model)
    cells = model.mesh.cells
    x = model.mesh.points.copy()
    x[cells[3, 2]] = 0.5 * (x[cells[3, 0]] + x[cells[3, 1]])  # flat triangle
    with pytest.raises(InvertedCellsError) as info:
        ev.evaluate(x)
    assert 3 in info.value.cells
    x = model.mesh.points.copy()
    x[7, 1] = np.nan
    with pytest.raises(ValueError, match=r"non-finite coordinates, first: \[7\]"):
        ev.evaluate(x)
    with pytest.raises(ValueError, match="must have shape"):
        ev.evaluate(x[:-1])
    values, _ = ev.evaluate(model.mesh.points)  # and it still works afterwards
    assert np.isfinite(values).all()


def test_a_structured_grid_solver_is_refused(tmp_path):
    path = tmp_path / "beam.yaml"
    path.write_text("mesh: {type: structured, shape: [8, 4], size: [2.0, 1.0]}\n"
                    "physics: {type: linear_elasticity}\n"
                    "supports: [{region: {face: x_min}}]\n"
                    "loads: [{region: {face: x_max}, force: [0.0, -1.0]}]\n"
                    "objective: {type: compliance}\nconstraints: [{type: volume, max: 0.5}]\n"
                    "solver: {type: multigrid}\noptimizer: {type: oc}\n")
    with pytest.raises(InputError, match="assembled solver"):
        ShapeEvaluator(build_model(path, device="cpu"))


def test_convection_diffusion_and_load_cases(tmp_path):
    """A non-symmetric physics with a geometry-dependent fixed part (convection, SUPG:
    element matrices from the kernel, LU transpose solves) and two weighted load cases."""
    path = problem(tmp_path, "quad4",
                   physics="{type: convection_diffusion, fluid_conductivity: 0.05, "
                           "velocity: [1.0, 0.5]}",
                   supports="  - {region: {face: x_min}}\n", loads="  []\n",
                   objective="  {type: thermal_compliance}\n",
                   constraints="  - {type: mean_temperature, region: {face: y_max}, "
                               "max: 10.0}\n")
    text = open(path).read().replace("loads:\n  []\n", (
        "load_cases:\n"
        "  - {name: a, weight: 2.0, loads: [{region: {face: x_max}, heat: 1.0}]}\n"
        "  - {name: b, loads: [{region: {face: y_max}, heat: 0.5}]}\n"))
    open(path, "w").write(text)
    model = build_model(path, device="cpu")
    assert model.ke_fixed is not None and len(model.case_names) == 2
    ev = ShapeEvaluator(model)
    expected, _ = model.values_and_gradients(np.ones(model.n))
    np.testing.assert_allclose(ev.values(model.mesh.points), expected, rtol=1e-10)
    for c in check_shape_gradients(ev, seed=4):
        assert in_band(c.result), (c.name, c.result.rates)
