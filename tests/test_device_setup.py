"""The GPU path's set-up on meshes from files, built on the device: element matrices in
batches, the CSR pattern with its gather map and a radius filter's weights by cell
hashing, each against the host's; bracket runs set up on the device against runs set up
on the host; the mesh check's connected parts (NumPy twin here; the GPU tests run the
same code on CuPy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from femopt.assembly.csr_gather import GatherAssembler, gather_map
from femopt.assembly import csr_pattern
from femopt.assembly.csr_pattern import build_pattern
from femopt.assembly.element_batches import element_matrices_batched
from femopt.assembly.sparse import FixedPatternAssembler
from femopt.mesh.meshfile import read_mesh_file
from femopt.physics.elasticity import ElasticityOptions, LinearElasticity
from femopt.physics.heat import HeatConduction, HeatOptions
from test_physics import distorted_mesh
from test_simplex_elements import simplex_mesh

MESHES = Path(__file__).resolve().parent.parent / "problems" / "meshes"


def mesh_named(name: str):
    if name in ("tri3", "tet4"):
        return simplex_mesh(2 if name == "tri3" else 3, seed=4)
    if name in ("quad4", "hex8"):
        return distorted_mesh((5, 4, 3)[:2 if name == "quad4" else 3],
                              (2.0, 1.5, 1.0)[:2 if name == "quad4" else 3], seed=6)
    return read_mesh_file(MESHES / f"{name}.msh")


def physics_on(kind: str, mesh):
    if kind == "elasticity":
        return LinearElasticity(ElasticityOptions(E=210.0, nu=0.3, thickness=0.8), mesh)
    return HeatConduction(HeatOptions(conductivity=3.5), mesh)


MESH_NAMES = ["tri3", "tet4", "quad4", "hex8", "plate_with_hole_coarse", "bracket_3d"]
CASES = [(m, p) for m in MESH_NAMES for p in ("elasticity", "heat")]
CASE_IDS = [f"{m}-{p}" for m, p in CASES]


@pytest.mark.parametrize("mesh_name, kind", CASES, ids=CASE_IDS)
def test_batched_element_matrices_equal_the_host_ones(mesh_name, kind):
    mesh = mesh_named(mesh_name)
    physics = physics_on(kind, mesh)
    host = physics.element_matrices()
    assert host.shape == (mesh.n_cells, physics.element_kernel().nd, physics.element_kernel().nd)
    dev = element_matrices_batched(physics.element_kernel(), mesh.points, mesh.cells, np,
                                   batch=7)
    assert dev.shape == host.shape and dev.dtype == np.float64
    scale = np.abs(host).max(axis=(1, 2))[:, None, None]  # each cell's largest entry
    assert np.all(scale > 0)
    assert (np.abs(dev - host) / scale).max() <= 1e-12
    # the batches change nothing: each cell's arithmetic is its own
    whole = element_matrices_batched(physics.element_kernel(), mesh.points, mesh.cells, np)
    np.testing.assert_array_equal(dev, whole)


def test_batched_element_matrices_refuse_an_empty_batch():
    mesh = mesh_named("tri3")
    with pytest.raises(ValueError, match="batch must be >= 1"):
        element_matrices_batched(physics_on("heat", mesh).element_kernel(), mesh.points,
                                 mesh.cells, np, batch=0)


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["elasticity", "heat"])
def test_batched_element_matrices_on_the_gpu_equal_the_twin(kind):
    import cupy

    mesh = mesh_named("bracket_3d")
    kernel = physics_on(kind, mesh).element_kernel()
    twin = element_matrices_batched(kernel, mesh.points, mesh.cells, np)
    dev = element_matrices_batched(kernel, mesh.points, mesh.cells, cupy, batch=1000)
    # the same IEEE operations one array at a time (no contraction across CuPy kernels)
    np.testing.assert_allclose(cupy.asnumpy(dev), twin, rtol=1e-13,
                               atol=1e-13 * np.abs(twin).max())


# -- the CSR pattern and the gather map ---------------------------------------------


def fixed_dofs(mesh, k: int, seed: int) -> np.ndarray:
    """Whole nodes (the lowest fifth in x) and single components elsewhere."""
    r = np.random.default_rng(seed)
    x = mesh.points[:, 0]
    nodes = np.flatnonzero(x <= x.min() + 0.2 * (x.max() - x.min()))
    whole = (nodes[:, None] * k + np.arange(k)).ravel()
    some = r.choice(mesh.n_nodes * k, size=max(1, mesh.n_nodes // 10), replace=False)
    return np.union1d(whole, some)


@pytest.mark.parametrize("mesh_name, kind", CASES, ids=CASE_IDS)
def test_device_pattern_and_gather_map_equal_the_host_ones(mesh_name, kind, monkeypatch):
    mesh = mesh_named(mesh_name)
    physics = physics_on(kind, mesh)
    k = physics.dofs_per_node
    n_dofs = mesh.n_nodes * k
    free = np.setdiff1d(np.arange(n_dofs), fixed_dofs(mesh, k, seed=len(mesh_name)))
    host = FixedPatternAssembler(physics.cell_dofs(), n_dofs, free)
    r = np.random.default_rng(11)
    ke = physics.element_matrices() * r.uniform(0.5, 2.0, (mesh.n_cells, 1, 1))
    dev = build_pattern(mesh.cells, k, free, n_dofs, np, batch=5)
    assert dev.nnz == host.nnz and dev.n_free == free.size
    assert dev.indptr.dtype == host.indptr.dtype == np.int32
    np.testing.assert_array_equal(dev.indptr, host.indptr)
    np.testing.assert_array_equal(dev.indices, host.indices)
    assert dev.position.size == host.keep.size
    ptr, cell, values = gather_map(host, ke)
    np.testing.assert_array_equal(dev.ptr, ptr)
    np.testing.assert_array_equal(dev.cells(), cell)
    np.testing.assert_array_equal(dev.values(ke), values)
    # the element matrices a batch of cells at a time: the same values
    monkeypatch.setattr(csr_pattern, "VALUE_BATCH", 7)
    monkeypatch.setattr(csr_pattern, "VALUE_PARTS", mesh.n_cells)  # batches of 7 cells
    asked = []
    batched = dev.values(lambda a, b: asked.append((a, b)) or ke[a:b])
    np.testing.assert_array_equal(batched, values)
    assert asked == [(a, min(a + 7, mesh.n_cells)) for a in range(0, mesh.n_cells, 7)]
    # one batch or many, one part of the rows or many: the same pattern and map
    whole = build_pattern(mesh.cells, k, free, n_dofs, np)
    np.testing.assert_array_equal(whole.position, dev.position)
    for part in (1, 200):  # every row its own part, and parts of a few rows
        parts = build_pattern(mesh.cells, k, free, n_dofs, np, batch=7, part=part)
        for name in ("indptr", "indices", "ptr", "position"):
            np.testing.assert_array_equal(getattr(parts, name), getattr(dev, name))
    # assembled in the gather order: the host's values bit for bit
    scale = 1e-3 + r.uniform(size=mesh.n_cells) ** 3
    gather = GatherAssembler.on_device(dev, ke)
    np.testing.assert_array_equal(gather.assemble_data(scale), host.assemble_data(scale, ke))


def test_device_pattern_with_every_dof_free_has_each_cells_full_block():
    mesh = mesh_named("tet4")
    n_dofs = mesh.n_nodes * 3
    dev = build_pattern(mesh.cells, 3, np.arange(n_dofs), n_dofs, np, batch=3)
    assert dev.position.size == mesh.n_cells * 12 * 12  # every entry of every cell kept
    np.testing.assert_array_equal(np.sort(dev.position), np.arange(mesh.n_cells * 144))
    rows = np.repeat(np.arange(n_dofs), np.diff(dev.indptr))
    assert np.all(dev.indices[rows == 0] == np.sort(dev.indices[rows == 0]))
    assert np.all(np.diff(dev.ptr) >= 1)


def test_rows_cut_into_parts_of_bounded_entries():
    """Consecutive rows whose entries add up to at most the bound, a row above it alone;
    the cuts cover every row once."""
    from femopt.assembly.csr_pattern import _row_cuts

    ends = np.cumsum([3, 4, 2, 9, 1, 1, 5, 0, 2])
    assert _row_cuts(ends, 6) == [0, 1, 3, 4, 6, 8, 9]
    assert _row_cuts(ends, 100) == [0, 9]
    assert _row_cuts(ends, 1) == list(range(10))
    assert _row_cuts(np.zeros(0, dtype=np.int64), 5) == [0, 0]


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["elasticity", "heat"])
def test_device_pattern_on_the_gpu_equals_the_twin(kind, monkeypatch):
    import cupy

    mesh = mesh_named("bracket_3d")
    physics = physics_on(kind, mesh)
    k = physics.dofs_per_node
    n_dofs = mesh.n_nodes * k
    free = np.setdiff1d(np.arange(n_dofs), fixed_dofs(mesh, k, seed=3))
    twin = build_pattern(mesh.cells, k, free, n_dofs, np)
    dev = build_pattern(cupy.asarray(mesh.cells), k, cupy.asarray(free), n_dofs, cupy,
                        batch=4096)
    parts = build_pattern(cupy.asarray(mesh.cells), k, cupy.asarray(free), n_dofs, cupy,
                          batch=4096, part=10_000)
    for name in ("indptr", "indices", "ptr", "position"):
        np.testing.assert_array_equal(cupy.asnumpy(getattr(dev, name)), getattr(twin, name))
        np.testing.assert_array_equal(cupy.asnumpy(getattr(parts, name)), getattr(twin, name))
    ke = element_matrices_batched(physics.element_kernel(), mesh.points, mesh.cells, cupy)
    # the values from the element matrices of batches of cells: the same on the GPU
    monkeypatch.setattr(csr_pattern, "VALUE_BATCH", 100)
    monkeypatch.setattr(csr_pattern, "VALUE_PARTS", mesh.n_cells)
    np.testing.assert_array_equal(cupy.asnumpy(dev.values(lambda a, b: ke[a:b])),
                                  cupy.asnumpy(dev.values(ke)))
    host = FixedPatternAssembler(physics.cell_dofs(), n_dofs, free)
    scale = np.random.default_rng(2).uniform(1e-3, 1.0, mesh.n_cells)
    got = GatherAssembler.on_device(dev, ke).assemble_data(cupy.asarray(scale))
    ref = GatherAssembler.on_device(twin, cupy.asnumpy(ke)).assemble_data(scale)
    np.testing.assert_array_equal(cupy.asnumpy(got), ref)  # same products, same order
    np.testing.assert_allclose(cupy.asnumpy(got), host.assemble_data(
        scale, physics.element_matrices()), rtol=1e-12, atol=1e-12 * np.abs(ref).max())


# -- the GPU path on a mesh from a file, set up on the device -------------------------


def bracket_run(solver: str, changes: dict, setup: str, max_iter: int = 4):
    from femopt.evaluation.mesh_device import MeshDevicePath
    from test_unstructured_device import bracket, build, optimize

    model = build(bracket(solver={"type": solver, "rtol": 1e-12}, **changes),
                  array_module=np)
    assert type(model.path).__name__ == "MeshDevicePath"
    if setup == "host":
        model.path = MeshDevicePath(model, np, setup="host")
    else:  # nothing of the set-up per cell on the host: no K0, no cell dofs, no pattern
        assert "ke" not in model.__dict__ and "cell_dofs" not in model.__dict__
        assert model.assembler is None and model.path.assembly.assembler is None
        assert set(model.path.setup_seconds) == {"pattern", "element matrices", "solver",
                                                 "filters", "functions"}
    result, history, values, rho, state = optimize(model, max_iter)
    assert result.iterations == len(history) == max_iter
    return history, values, state.u


HEAT = dict(physics={"type": "heat_conduction", "conductivity": 1.0},
            loads=[{"body": True, "heat": 0.01}], objective={"type": "thermal_compliance"},
            design={"interpolation": {"type": "simp", "penalty": 3.0, "min": 1e-3}})


@pytest.mark.parametrize("solver, changes", [("pcg", {}), ("pcg", HEAT), ("amg", {})],
                         ids=["elasticity-pcg", "heat-pcg", "elasticity-amg"])
def test_bracket_run_set_up_on_the_device_equals_the_host_set_up(solver, changes):
    h_dev, v_dev, u_dev = bracket_run(solver, changes, "device")
    h_host, v_host, u_host = bracket_run(solver, changes, "host")
    assert h_dev[-1] < 0.9 * h_dev[0]  # the runs optimize
    assert max(abs(a - b) / abs(b) for a, b in zip(h_dev, h_host)) <= 1e-10
    assert max(abs(a - b) / abs(b) for a, b in zip(v_dev, v_host) if b) <= 1e-10
    assert np.abs(u_dev - u_host).max() <= 1e-9 * np.abs(u_host).max()


@pytest.mark.gpu
def test_gpu_path_set_up_on_the_device_equals_the_host_set_up():
    import cupy

    from femopt.evaluation.mesh_device import MeshDevicePath
    from test_unstructured_device import bracket, build

    model = build(bracket(solver={"type": "pcg", "rtol": 1e-10}), array_module=cupy)
    dev = model.path
    host = MeshDevicePath(model, cupy, setup="host")
    for a, b in [(dev.solver.indptr, host.solver.indptr),
                 (dev.solver.indices, host.solver.indices),
                 (dev.solver.block_pos, host.solver.block_pos)]:
        np.testing.assert_array_equal(cupy.asnumpy(a), cupy.asnumpy(b))
    scale = cupy.asarray(np.random.default_rng(4).uniform(1e-3, 1.0, model.mesh.n_cells))
    a = cupy.asnumpy(dev.assembly.assemble_data(scale))
    b = cupy.asnumpy(host.assembly.assemble_data(scale))
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * np.abs(b).max())
    print("set-up seconds on the device:", dev.setup_seconds)


# -- a radius filter's weights by cell hashing ----------------------------------------


@pytest.mark.parametrize("mesh_name", MESH_NAMES)
@pytest.mark.parametrize("cells_across", [1.5, 3.0])
def test_cell_hash_weights_equal_the_kd_tree_weights(mesh_name, cells_across):
    from femopt.filters.base import radius_weights
    from femopt.filters.cell_hash import cell_hash_weights, centroids_and_volumes
    from femopt.objectives.base import cell_volumes

    mesh = mesh_named(mesh_name)
    radius = cells_across * float(cell_volumes(mesh).mean()) ** (1.0 / mesh.dim)
    h, hs = radius_weights(mesh, radius)
    h = h.copy()
    h.sort_indices()
    c, v = centroids_and_volumes(mesh, np)
    np.testing.assert_array_equal(c, mesh.centroids())
    np.testing.assert_array_equal(v, cell_volumes(mesh))  # the host's cell_measures
    from femopt.assembly.elements import get_element
    from femopt.filters.cell_hash import quadrature_volumes

    coords = mesh.points[mesh.cells]  # the device's own sum, run here on NumPy
    np.testing.assert_allclose(quadrature_volumes(get_element(mesh.cell_type), coords, np),
                               v, rtol=1e-13, atol=0)
    indptr, indices, data, sums = cell_hash_weights(c, v, radius, np, batch=17)
    assert h.nnz > 3 * mesh.n_cells  # neighbours beyond each cell itself
    np.testing.assert_array_equal(indptr, h.indptr)
    assert indptr.dtype == indices.dtype == np.int32  # as cuSPARSE takes them
    np.testing.assert_array_equal(indices, h.indices)
    scale = radius * v.max()
    assert np.abs(data - h.data).max() <= 1e-13 * scale
    np.testing.assert_allclose(sums, hs, rtol=1e-12)


def test_radius_filter_estimates_its_weights_without_finding_them():
    from femopt.filters.radius import DensityFilter, RadiusOptions

    mesh = mesh_named("bracket_3d")
    f = DensityFilter(RadiusOptions(radius=6.0), mesh)
    estimate = f.weights_nnz()
    assert "op" not in f.__dict__  # the KD-tree did not run
    actual = f.H.nnz
    assert actual <= estimate <= 2.5 * actual, (actual, estimate)
    assert f.weights_nnz() == actual  # once the weights exist, their count


@pytest.mark.gpu
def test_cell_hash_weights_on_the_gpu_equal_the_twin():
    import cupy

    from femopt.filters.cell_hash import cell_hash_weights, centroids_and_volumes

    mesh = mesh_named("bracket_3d")
    c, v = centroids_and_volumes(mesh, np)
    cd, vd = centroids_and_volumes(mesh, cupy)
    np.testing.assert_allclose(cupy.asnumpy(cd), c, rtol=1e-14)
    np.testing.assert_allclose(cupy.asnumpy(vd), v, rtol=1e-12)
    twin = cell_hash_weights(c, v, 6.0, np)
    dev = cell_hash_weights(cd, vd, 6.0, cupy, batch=500)
    np.testing.assert_array_equal(cupy.asnumpy(dev[0]), twin[0])
    np.testing.assert_array_equal(cupy.asnumpy(dev[1]), twin[1])
    np.testing.assert_allclose(cupy.asnumpy(dev[2]), twin[2], rtol=1e-12,
                               atol=1e-12 * twin[2].max())
    np.testing.assert_allclose(cupy.asnumpy(dev[3]), twin[3], rtol=1e-12)


# -- the mesh check's connected parts ------------------------------------------------


def test_cell_components_by_the_node_graph_equal_those_of_the_element_graph():
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    from femopt.mesh import Mesh
    from femopt.mesh.meshfile import cell_components

    one = mesh_named("tet4")
    # three copies side by side (apart), their cells interleaved, plus a node of no cell
    shift = np.array([10.0, 0.0, 0.0])
    points = np.vstack([one.points, one.points + shift, one.points + 2 * shift,
                        [[50.0, 0.0, 0.0]]])
    n = one.n_nodes
    cells = np.stack([one.cells + 2 * n, one.cells, one.cells + n], axis=1).reshape(-1, 4)
    cells = cells[np.random.default_rng(8).permutation(cells.shape[0])]
    mesh = Mesh(points=points, cells=cells, cell_type="tet4")
    n_parts, part = cell_components(mesh)
    rows = np.repeat(np.arange(cells.shape[0]), 4)
    incidence = sp.csr_matrix((np.ones(cells.size), (rows, cells.ravel())),
                              shape=(cells.shape[0], points.shape[0]))
    expected_n, expected = connected_components(incidence @ incidence.T, directed=False)
    assert n_parts == expected_n == 3
    np.testing.assert_array_equal(part, expected)  # numbered by their first element
    assert np.bincount(part).tolist() == [one.n_cells] * 3
    assert cell_components(one) == (1, pytest.approx(np.zeros(one.n_cells)))


def test_gpu_path_on_a_mesh_builds_nothing_per_cell_on_the_host(monkeypatch):
    """The host's element matrices, cell dofs, sparse pattern and KD-tree filter weights
    are never built: a run of the twin gets through with each of them refusing."""
    import femopt.assembly.sparse
    import femopt.filters.radius
    import femopt.physics.base
    from test_unstructured_device import bracket, build

    def refuse(*args, **kwargs):
        raise AssertionError("built on the host")

    monkeypatch.setattr(femopt.physics.base.Physics, "element_matrices", refuse)
    monkeypatch.setattr(femopt.physics.base.Physics, "cell_dofs", refuse)
    monkeypatch.setattr(femopt.assembly.sparse.FixedPatternAssembler, "_build_pattern", refuse)
    monkeypatch.setattr(femopt.filters.radius, "radius_weights", refuse)
    model = build(bracket(solver={"type": "pcg", "rtol": 1e-10}), array_module=np)
    values, grads = model.values_and_gradients(model.x0)
    assert values[0] == pytest.approx(2153.83, rel=1e-5)  # the bracket's first compliance
    assert grads[0].shape == (model.n,) and np.all(grads[0][model.x0 > 0] <= 0)


@pytest.mark.parametrize("mesh_name", MESH_NAMES)
def test_cell_volumes_without_inverses_are_the_physical_gradients_ones(mesh_name):
    from femopt.assembly.elements import get_element, physical_gradients
    from femopt.objectives.base import cell_volumes

    mesh = mesh_named(mesh_name)
    _, wdet = physical_gradients(get_element(mesh.cell_type), mesh.points[mesh.cells])
    np.testing.assert_array_equal(cell_volumes(mesh), wdet.sum(axis=1))  # bit for bit
