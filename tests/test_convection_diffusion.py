"""Convection-diffusion with SUPG: patch test, the exponential boundary layer of the 1D
problem (nodally exact with SUPG; Galerkin converging at rate 2 and oscillating where the
cell Peclet number exceeds 1), and the model's choice of a non-symmetric solve."""

from __future__ import annotations

import numpy as np
import pytest

from femopt.assembly.sparse import FixedPatternAssembler
from femopt.cli import main
from femopt.mesh import structured_grid
from femopt.physics.convection_diffusion import (ConvectionDiffusion,
                                                 ConvectionDiffusionOptions)
from femopt.solvers import DirectSolver

from test_element_kernels import distorted


def solve(ph, fixed, values, m=0.0, f=None):
    """T with T[fixed] = values at uniform material factor m."""
    mesh = ph.mesh
    n = mesh.n_nodes
    free = np.setdiff1d(np.arange(n), fixed)
    scale = np.full(mesh.n_cells, m)
    full = FixedPatternAssembler(ph.cell_dofs(), n, np.arange(n))
    red = FixedPatternAssembler(ph.cell_dofs(), n, free)
    for a in (full, red):
        a.add_constant(ph.fixed_element_matrices())
    t = np.zeros(n)
    t[fixed] = values
    rhs = -(full.assemble(scale, ph.element_matrices()) @ t)
    if f is not None:
        rhs += f
    solver = DirectSolver()
    solver.require_nonsymmetric()
    solver.update(red.assemble(scale, ph.element_matrices()))
    t[free] = solver.solve(rhs[free])
    return t


@pytest.mark.parametrize("dim", [2, 3])
def test_patch_test_linear_field_with_source(dim, monkeypatch):
    """T = a + g.x solves c v.grad T - k lap T = c v.g: reproduced exactly on a distorted
    mesh at a cell Peclet number well above 1 (SUPG active, consistent source)."""
    mesh = distorted((4, 4, 3)[:dim], (2.0, 1.5, 1.0)[:dim], seed=20 + dim)
    v = np.array([3.0, -1.0, 2.0])[:dim]
    ph = ConvectionDiffusion(ConvectionDiffusionOptions(
        fluid_conductivity=0.01, capacity=2.0, velocity=list(v)), mesh)
    assert ph.peclet_numbers().min() > 5.0
    g = np.array([1.0, -2.0, 0.5])[:dim]
    exact = 3.0 + mesh.points @ g
    lo, hi = mesh.bounds()
    bnd = np.flatnonzero(np.any((np.abs(mesh.points - lo) < 1e-12)
                                | (np.abs(mesh.points - hi) < 1e-12), axis=1))
    f = ph.body_load([2.0 * float(v @ g)], np.arange(mesh.n_cells))
    t = solve(ph, bnd, exact[bnd], m=0.0, f=f)
    assert np.abs(t - exact).max() < 1e-10 * np.abs(exact).max()
    import femopt.physics.base as base  # by batches of 5 cells: the same sums, bit for bit

    cells = np.random.default_rng(dim).permutation(mesh.n_cells)
    whole = ph.body_load([1.5], cells)
    monkeypatch.setattr(base, "BODY_LOAD_CELLS", 5)
    np.testing.assert_array_equal(ph.body_load([1.5], cells), whole)


def boundary_layer(n: int, peclet: float, stabilization: str):
    """c T' - k T'' = 0 on (0, 1), T(0) = 0, T(1) = 1 (a strip of n x 1 cells):
    T = (exp(Pe x) - 1) / (exp(Pe) - 1), Pe = c |v| / k. Returns (nodal max error,
    error at cell midpoints, smallest T, largest cell Peclet number)."""
    mesh = structured_grid((n, 1), (1.0, 1.0 / n))
    ph = ConvectionDiffusion(ConvectionDiffusionOptions(
        fluid_conductivity=1.0 / peclet, velocity=[1.0, 0.0], stabilization=stabilization),
        mesh)
    x = mesh.points[:, 0]
    fixed = np.flatnonzero((x < 1e-12) | (x > 1 - 1e-12))
    t = solve(ph, fixed, (x[fixed] > 0.5).astype(float))
    exact = lambda s: np.expm1(peclet * s) / np.expm1(peclet)  # noqa: E731
    bottom = np.argsort(x[mesh.points[:, 1] == 0.0])
    tb = t[mesh.points[:, 1] == 0.0][bottom]
    xb = np.sort(x[mesh.points[:, 1] == 0.0])
    mid = 0.5 * (xb[1:] + xb[:-1])
    return (np.abs(t - exact(x)).max(), np.abs(0.5 * (tb[1:] + tb[:-1]) - exact(mid)).max(),
            t.min(), ph.peclet_numbers().max())


def test_boundary_layer_supg_is_nodally_exact_and_converges():
    errs = []
    for n in (10, 160, 320, 640):
        nodal, midpoint, lowest, pe = boundary_layer(n, 50.0, "supg")
        assert pe == pytest.approx(25.0 / n)  # c |v| h / (2 k)
        assert nodal < 1e-12  # the optimal tau makes the 1D nodal values exact
        assert lowest >= 0.0  # no undershoot even at cell Peclet 2.5
        errs.append(midpoint)
    rates = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
    # interpolation error, O(h^2) once h resolves the layer: measured 1.89, 1.94
    np.testing.assert_allclose(rates[1:], 2.0, atol=0.12)


def test_boundary_layer_galerkin_oscillates_then_converges_at_rate_two():
    nodal = {}
    for n in (10, 80, 160, 320):
        nodal[n], _, lowest, pe = boundary_layer(n, 50.0, "none")
        if n == 10:
            assert pe > 1 and lowest < -0.1  # cell Peclet 2.5: wiggles below 0
    for a, b in ((80, 160), (160, 320)):
        assert np.log2(nodal[a] / nodal[b]) == pytest.approx(2.0, abs=0.1)  # 2.01, 2.01


def test_supg_fades_where_diffusion_dominates():
    """At a small cell Peclet number SUPG changes the element matrix by O(Pe)."""
    mesh = structured_grid((4, 4), (1.0, 1.0))
    def fixed(stab, k):
        return ConvectionDiffusion(ConvectionDiffusionOptions(
            conductivity=100.0, fluid_conductivity=k, velocity=[1.0, 0.0],
            stabilization=stab),
            mesh).fixed_element_matrices()
    for k, most in ((10.0, 1e-3), (0.001, None)):
        diff = np.abs(fixed("supg", k) - fixed("none", k)).max() / np.abs(fixed("none", k)).max()
        if most is not None:
            assert diff < most
        else:
            assert diff > 0.1


HEAT_SINK = """
mesh: {type: structured, shape: [12, 6], size: [2.0, 1.0]}
physics: {type: convection_diffusion, fluid_conductivity: 0.01, velocity: [1.0, 0.0]}
supports: [{region: {face: x_min}}]
loads: [{body: true, heat: 1.0}]
objective: {type: mean_temperature}
constraints: [{type: volume, max: 0.3}]
"""


@pytest.mark.parametrize("solver, ok", [
    ("", True), ("solver: {type: direct}\n", True),
    ("solver: {type: direct, method: superlu}\n", True),
    ("solver: {type: direct, symmetric: true}\n", False),
    ("solver: {type: direct, method: cholmod}\n", False),
    ("solver: {type: pcg}\n", False)])
def test_model_picks_a_nonsymmetric_direct_solve(solver, ok, write_problem, capsys):
    path = write_problem(HEAT_SINK + solver)
    code = main(["validate", str(path)])
    err = capsys.readouterr().err
    assert code == (0 if ok else 2), err
    if ok:
        from femopt.runner import build_model

        model = build_model(path)
        assert model.solver.method == "superlu" and not model.solver.options.symmetric
        state = model.path.analyse(model.physical(model.x0)[0])
        k = model.solver.matrix
        assert abs(k - k.T).max() > 1e-3 * abs(k).max()  # really non-symmetric
        assert np.all(np.isfinite(state.u))
    else:
        assert f"{path}:" in err and "solver" in err and "symmetric" in err
