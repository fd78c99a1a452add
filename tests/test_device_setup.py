"""The GPU path's set-up on meshes from files, built on the device: element matrices in
batches and the CSR pattern with its gather map, each against the host's (NumPy twin
here; the GPU tests run the same code on CuPy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from femopt.assembly.element_batches import element_matrices_batched
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
