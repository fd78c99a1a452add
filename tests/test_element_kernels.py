"""Element kernels written once: their NumPy, dual-number and traced (CUDA C) forms agree
with each other, with the physics' element matrices, with the explicit transpose of the
assembled operator and with finite differences. GPU tests compile the generated sources
with CuPy and compare them with the NumPy twins."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp

from femopt.adjoint import generated
from femopt.adjoint.codegen import kernel_names, kernel_source
from femopt.adjoint.trace import evaluate_trace
from femopt.adjoint.dual import coordinate_derivative, material_derivative
from femopt.assembly.element_kernel import element_matrices
from femopt.mesh import Mesh, structured_grid
from femopt.physics.convection_diffusion import (ConvectionDiffusion,
                                                 ConvectionDiffusionOptions)
from femopt.physics.elasticity import ElasticityOptions, LinearElasticity
from femopt.physics.heat import HeatConduction, HeatOptions
from femopt.physics.plugin import builtin_element_kernels

KERNELS = builtin_element_kernels()
KERNEL_IDS = [k.name for k in KERNELS]


def distorted(shape, size, seed=0, amount=0.2) -> Mesh:
    grid = structured_grid(shape, size)
    pts = grid.points.copy()
    lo, hi = grid.bounds()
    inner = np.all((pts > lo + 1e-12) & (pts < hi - 1e-12), axis=1)
    h = np.array(grid.grid.spacing)
    rng = np.random.default_rng(seed)
    pts[inner] += amount * h * rng.uniform(-1, 1, (inner.sum(), len(shape)))
    return Mesh(points=pts, cells=grid.cells, cell_type=grid.cell_type, grid=None)


def physics_on(name: str, mesh: Mesh):
    if name == "elasticity":
        return LinearElasticity(ElasticityOptions(E=3.0, nu=0.25, thickness=0.7), mesh)
    if name == "heat":
        return HeatConduction(HeatOptions(conductivity=2.0), mesh)
    if name == "cd_uniform":
        v = [1.0, 0.5, -0.3][:mesh.dim]
        return ConvectionDiffusion(ConvectionDiffusionOptions(
            fluid_conductivity=0.05, velocity=v), mesh)
    return ConvectionDiffusion(ConvectionDiffusionOptions(
        fluid_conductivity=0.02, velocity={"profile": "channel", "max": 2.0}), mesh)


PHYSICS = [(p, d) for p in ("elasticity", "heat", "cd_uniform", "cd_channel") for d in (2, 3)]
PHYSICS_IDS = [f"{p}-{d}d" for p, d in PHYSICS]


def mesh_for(dim: int, seed: int = 1) -> Mesh:
    return distorted((4, 3, 2)[:dim], (2.0, 1.5, 1.0)[:dim], seed=seed)


@pytest.mark.parametrize("name, dim", PHYSICS, ids=PHYSICS_IDS)
def test_kernel_matches_physics_element_matrices(name, dim):
    """K_e(m) = m K0_e + C_e with the physics' own K0 (einsum code for elasticity and
    heat) and fixed part; float32 agrees to single precision."""
    mesh = mesh_for(dim)
    ph = physics_on(name, mesh)
    kern = ph.element_kernel()
    coords = mesh.points[mesh.cells]
    m = np.random.default_rng(2).uniform(0.1, 1.0, mesh.n_cells)
    c = ph.fixed_element_matrices()
    expected = m[:, None, None] * ph.element_matrices_at(coords) + (0.0 if c is None else c)
    got = element_matrices(kern, coords, m)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(got, expected, atol=1e-12 * scale)
    got32 = element_matrices(kern, coords, m, dtype=np.float32)
    assert got32.dtype == np.float32
    np.testing.assert_allclose(got32, expected, atol=2e-5 * scale)
    assert (np.abs(expected - np.swapaxes(expected, 1, 2)).max() > 1e-3 * scale) == \
        (not ph.symmetric)


@pytest.mark.parametrize("kern", KERNELS, ids=KERNEL_IDS)
def test_trace_is_the_kernel(kern):
    """The trace printed as C, interpreted node by node, gives the same element matrices
    as the integrand on NumPy arrays."""
    dim = kern.element.dim
    coords = mesh_for(dim, seed=3).points[mesh_for(dim, seed=3).cells]
    m = np.linspace(0.2, 0.9, coords.shape[0])
    a = element_matrices(kern, coords, m)
    np.testing.assert_allclose(evaluate_trace(kern, coords, m), a,
                               atol=1e-13 * np.abs(a).max())


def assembled_full(ph, mfac) -> sp.csr_matrix:
    """sum_e K_e(m_e) over all dofs, explicitly (COO of the dense element matrices)."""
    ke = element_matrices(ph.element_kernel(), ph.mesh.points[ph.mesh.cells], mfac)
    dofs = ph.cell_dofs()
    nd = dofs.shape[1]
    rows = np.repeat(dofs, nd, axis=1).ravel()
    cols = np.tile(dofs, (1, nd)).ravel()
    n = ph.mesh.n_nodes * ph.dofs_per_node
    return sp.csr_matrix((ke.ravel(), (rows, cols)), shape=(n, n))


@pytest.mark.parametrize("name, dim", PHYSICS, ids=PHYSICS_IDS)
def test_generated_apply_is_the_assembled_operator_and_its_transpose(name, dim):
    mesh = mesh_for(dim, seed=4)
    ph = physics_on(name, mesh)
    rng = np.random.default_rng(5)
    mfac = rng.uniform(0.01, 1.0, mesh.n_cells)
    k = assembled_full(ph, mfac)
    x = rng.standard_normal(k.shape[0])
    kern = ph.element_kernel()
    pts, cells = mesh.points, mesh.cells
    yt = generated.apply(kern, pts, cells, mfac, x, transpose=True)
    np.testing.assert_allclose(yt, k.T @ x, atol=1e-12 * np.abs(k.T @ x).max())
    np.testing.assert_allclose(generated.apply(kern, pts, cells, mfac, x), k @ x,
                               atol=1e-12 * np.abs(k @ x).max())
    if not ph.symmetric:  # the transpose is a different operator here
        assert np.abs(yt - k @ x).max() > 1e-3 * np.abs(yt).max()


@pytest.mark.parametrize("name, dim", PHYSICS, ids=PHYSICS_IDS)
def test_generated_design_sensitivity(name, dim):
    """dm_e lam_e^T (dK_e/dm) u_e from the dual seed on m equals the same contraction
    with the physics' K0 (the CPU path) and central differences of lam^T K(m) u."""
    mesh = mesh_for(dim, seed=6)
    ph = physics_on(name, mesh)
    kern = ph.element_kernel()
    rng = np.random.default_rng(7)
    n = mesh.n_nodes * ph.dofs_per_node
    mfac, dm = rng.uniform(0.1, 1.0, (2, mesh.n_cells))
    lam, u = rng.standard_normal((2, 2, n))  # two load cases
    s = generated.sensitivity(kern, mesh.points, mesh.cells, mfac, dm, lam, u)
    dofs = ph.cell_dofs()
    k0 = ph.element_matrices_at(mesh.points[mesh.cells])
    ref = dm * np.einsum("cei,eij,cej->e", lam[:, dofs], k0, u[:, dofs])
    np.testing.assert_allclose(s, ref, atol=1e-12 * np.abs(ref).max())
    e, h = 2, 1e-6
    def q(mv):
        ke = element_matrices(kern, mesh.points[mesh.cells[e:e + 1]], mv)[0]
        return sum(lam[c, dofs[e]] @ ke @ u[c, dofs[e]] for c in range(2))
    fd = (q(mfac[e] + h) - q(mfac[e] - h)) / (2 * h)
    assert dm[e] * fd == pytest.approx(s[e], rel=1e-7)
    np.testing.assert_allclose(material_derivative(kern, mesh.points[mesh.cells], mfac), k0,
                               atol=1e-12 * np.abs(k0).max())


@pytest.mark.parametrize("kern", KERNELS, ids=KERNEL_IDS)
def test_coordinate_derivative_matches_finite_differences(kern):
    dim = kern.element.dim
    mesh = mesh_for(dim, seed=8)
    coords = mesh.points[mesh.cells[:2]]
    m = np.array([0.4, 0.8])
    dk = coordinate_derivative(kern, coords, m)
    assert dk.shape == (2, kern.element.n_nodes * dim, kern.nd, kern.nd)
    h = 1e-6
    worst = 0.0
    for s in range(kern.element.n_nodes * dim):
        step = np.zeros_like(coords)
        step[:, s // dim, s % dim] = h
        fd = (element_matrices(kern, coords + step, m)
              - element_matrices(kern, coords - step, m)) / (2 * h)
        worst = max(worst, np.abs(fd - dk[:, s]).max())
    assert worst < 1e-6 * np.abs(dk).max()


@pytest.mark.parametrize("name, dim", [("elasticity", 2), ("cd_channel", 2), ("heat", 3)])
def test_shape_sensitivity_gathers_coordinate_derivatives(name, dim):
    """g = d/dX (sum_c lam_c^T K(X) u_c) at the nodes, against central differences of the
    assembled operator when one node moves."""
    mesh = mesh_for(dim, seed=9)
    ph = physics_on(name, mesh)
    kern = ph.element_kernel()
    rng = np.random.default_rng(10)
    n = mesh.n_nodes * ph.dofs_per_node
    mfac = rng.uniform(0.1, 1.0, mesh.n_cells)
    lam, u = rng.standard_normal((2, 2, n))
    g = generated.shape_sensitivity(kern, mesh.points, mesh.cells, mfac, lam, u)
    assert g.shape == mesh.points.shape
    node, h = int(np.argmax(np.bincount(mesh.cells.ravel()))), 1e-6  # an interior node
    for d in range(dim):
        vals = []
        for sgn in (1, -1):
            pts = mesh.points.copy()
            pts[node, d] += sgn * h
            moved = Mesh(points=pts, cells=mesh.cells, cell_type=mesh.cell_type)
            k = assembled_full(physics_on(name, moved), mfac)
            vals.append(sum(lam[c] @ (k @ u[c]) for c in range(2)))
        assert (vals[0] - vals[1]) / (2 * h) == pytest.approx(g[node, d], rel=1e-6)


@pytest.mark.parametrize("kern", KERNELS, ids=KERNEL_IDS)
def test_generated_sources_name_their_kernels(kern):
    src = kernel_source(kern)
    for name in kernel_names(kern):
        assert name.split("<")[0] in src
    assert f"femopt_gen_{kern.name}_element<femopt_dual<T>>" in src


# -- GPU: the generated CUDA against the NumPy twins ------------------------------------

GPU_CASES = [("elasticity", 2), ("elasticity", 3), ("heat", 3), ("cd_uniform", 2),
             ("cd_channel", 2), ("cd_uniform", 3)]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name, dim", GPU_CASES, ids=[f"{p}-{d}d" for p, d in GPU_CASES])
def test_gpu_generated_kernels_match_numpy_twins(name, dim, dtype):
    import cupy

    mesh = mesh_for(dim, seed=11)
    ph = physics_on(name, mesh)
    kern = ph.element_kernel()
    rng = np.random.default_rng(12)
    n = mesh.n_nodes * ph.dofs_per_node
    mfac, dm = rng.uniform(0.1, 1.0, (2, mesh.n_cells))
    lam, u = rng.standard_normal((2, 2, n))
    x = rng.standard_normal(n)
    tol = 1e-11 if dtype == np.float64 else 2e-4
    pts, cells = mesh.points, mesh.cells
    g = lambda a: cupy.asarray(a, dtype=dtype)  # noqa: E731
    for transpose in (False, True):
        ref = generated.apply(kern, pts, cells, mfac, x, transpose)
        got = generated.apply(kern, pts, cells, g(mfac), g(x), transpose).get()
        assert got.dtype == dtype
        np.testing.assert_allclose(got, ref, atol=tol * np.abs(ref).max())
    ref = generated.sensitivity(kern, pts, cells, mfac, dm, lam, u)
    got = generated.sensitivity(kern, pts, cells, g(mfac), g(dm), g(lam), g(u)).get()
    np.testing.assert_allclose(got, ref, atol=tol * np.abs(ref).max())
    ref = generated.shape_sensitivity(kern, pts, cells, mfac, lam, u)
    got = generated.shape_sensitivity(kern, pts, cells, g(mfac), g(lam), g(u)).get()
    np.testing.assert_allclose(got, ref, atol=tol * np.abs(ref).max())


def test_generated_modules_are_traced_once_per_kernel_and_device(monkeypatch):
    """The one kernel cache: a second launch of the same element kernel (another physics
    instance with other parameter values) neither traces nor compiles again; another
    device or another integrand does."""
    import femopt.backend.kernels as kernels

    compiled = []
    monkeypatch.setattr(kernels, "_GENERATED", {})
    monkeypatch.setattr(kernels, "_compile", lambda dev, code, names: compiled.append(dev)
                        or object())
    device = [0]
    monkeypatch.setattr(kernels, "_device_id", lambda: device[0])
    traced = []

    def source(kern):
        traced.append(kern.name)
        return kernel_source(kern)

    kern = KERNELS[0]
    other = dataclasses.replace(kern, values={**kern.values, "E": 7.0})
    first = kernels.generated_module(generated.cache_key(kern), lambda: source(kern),
                                     lambda: tuple(kernel_names(kern)))
    again = kernels.generated_module(generated.cache_key(other), lambda: source(other),
                                     lambda: tuple(kernel_names(other)))
    assert again is first and traced == [kern.name] and compiled == [0]
    device[0] = 1
    kernels.generated_module(generated.cache_key(kern), lambda: source(kern),
                             lambda: tuple(kernel_names(kern)))
    assert compiled == [0, 1]
    kernels.generated_module(generated.cache_key(KERNELS[1]), lambda: source(KERNELS[1]),
                             lambda: tuple(kernel_names(KERNELS[1])))
    assert len(traced) == 3
