"""FE accuracy on unstructured tri3 and tet4 meshes read from files: the thick-walled
cylinder under internal pressure against Lamé's solution.

A quarter of the annulus a <= r <= b (symmetry supports on x = 0 and y = 0; in 3D a slab
0 <= z <= c with u_z = 0 on z = 0 and free ends). With free ends (plane stress, and in 3D
sigma_z = 0) the exact displacement is

    u_r = ((1 - nu) A r + (1 + nu) B / r) / E,   u_z = -2 nu A z / E,
    A = p a^2 / (b^2 - a^2),  B = p a^2 b^2 / (b^2 - a^2),

since sigma_r + sigma_theta = 2A is constant, so eps_z is too. The pressure enters as the
consistent nodal forces of the inner facets (p |facet| / d per node, along the facet
normal). Linear elements converge at rate 2 in the displacement's L2 norm.
"""

from __future__ import annotations

from itertools import combinations

import meshio
import numpy as np
import pytest

from femopt.mesh import Mesh, structured_grid
from femopt.mesh.meshfile import read_mesh_file
from femopt.physics.elasticity import ElasticityOptions, LinearElasticity
from test_physics import solve_dirichlet
from test_simplex_elements import SPLIT

A_IN, B_OUT, DEPTH = 1.0, 2.0, 0.25
E, NU, P = 1000.0, 0.3, 1.0


def quarter_annulus(n: int, dim: int, seed: int) -> Mesh:
    """Simplices of the quarter annulus, n cells across the wall, 2n around (and n/4 through the depth),
    interior nodes moved randomly by up to 0.2 of a cell so that no two cells are alike."""
    shape = (n, 2 * n) if dim == 2 else (n, 2 * n, max(1, n // 4))
    grid = structured_grid(shape, (1.0,) * dim)
    st = grid.points.copy()
    inner = np.all((st > 1e-12) & (st < 1 - 1e-12), axis=1)
    rng = np.random.default_rng(seed)
    st[inner] += 0.2 * rng.uniform(-1, 1, (inner.sum(), dim)) / np.array(shape)
    r = A_IN + (B_OUT - A_IN) * st[:, 0]
    t = 0.5 * np.pi * st[:, 1]
    pts = np.column_stack([r * np.cos(t), r * np.sin(t)] + ([DEPTH * st[:, 2]] if dim == 3
                                                            else []))
    name = "tri3" if dim == 2 else "tet4"
    cells = grid.cells[:, SPLIT[name]].reshape(-1, dim + 1)
    det = np.linalg.det(pts[cells[:, 1:]] - pts[cells[:, :1]])
    cells[det < 0, :2] = cells[det < 0, 1::-1]
    return Mesh(points=pts, cells=cells, cell_type=name)


def boundary_facets(mesh: Mesh) -> np.ndarray:
    """Facets (d nodes) that belong to one simplex only, oriented outward."""
    d = mesh.dim
    facets, opposite = [], []
    for local in combinations(range(d + 1), d):
        facets.append(mesh.cells[:, local])
        opposite.append(mesh.cells[:, [i for i in range(d + 1) if i not in local][0]])
    facets, opposite = np.concatenate(facets), np.concatenate(opposite)
    _, idx, counts = np.unique(np.sort(facets, axis=1), axis=0, return_index=True,
                               return_counts=True)
    return facets[idx[counts == 1]], opposite[idx[counts == 1]]


def pressure_load(mesh: Mesh, facets: np.ndarray, opposite: np.ndarray) -> np.ndarray:
    """Nodal forces of a pressure P on ``facets``, pushing away from their cells."""
    d = mesh.dim
    p = mesh.points[facets]
    if d == 2:
        e = p[:, 1] - p[:, 0]
        n = np.column_stack([e[:, 1], -e[:, 0]])  # |n| = facet length
    else:
        n = 0.5 * np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])  # |n| = facet area
    inward = np.einsum("fd,fd->f", n, mesh.points[opposite] - p[:, 0]) > 0
    n[~inward] *= -1  # n now points into the material: the direction the pressure pushes
    f = np.zeros(mesh.n_nodes * d)
    for k in range(d):
        for j in range(d):
            np.add.at(f, facets[:, j] * d + k, P * n[:, k] / d)
    return f


def lame(points: np.ndarray) -> np.ndarray:
    a2, b2 = A_IN ** 2, B_OUT ** 2
    ca, cb = P * a2 / (b2 - a2), P * a2 * b2 / (b2 - a2)
    r = np.linalg.norm(points[:, :2], axis=1)
    ur = ((1 - NU) * ca * r + (1 + NU) * cb / r) / E
    u = np.column_stack([ur * points[:, 0] / r, ur * points[:, 1] / r])
    if points.shape[1] == 3:
        u = np.column_stack([u, -2 * NU * ca * points[:, 2] / E])
    return u


def solve_cylinder(path) -> tuple[float, float]:
    """Mesh size and relative L2 (nodal RMS) displacement error of the mesh file."""
    mesh = read_mesh_file(path)
    d = mesh.dim
    physics = LinearElasticity(ElasticityOptions(E=E, nu=NU), mesh)
    facets, opposite = boundary_facets(mesh)
    radius = np.linalg.norm(mesh.points[facets][..., :2], axis=2)
    on_inner = np.all(np.abs(radius - A_IN) < 1e-9, axis=1)
    f = pressure_load(mesh, facets[on_inner], opposite[on_inner])
    x = mesh.points
    fixed = np.concatenate([np.flatnonzero(np.abs(x[:, 0]) < 1e-9) * d,  # u_x = 0 on x = 0
                            np.flatnonzero(np.abs(x[:, 1]) < 1e-9) * d + 1]
                           + ([np.flatnonzero(np.abs(x[:, 2]) < 1e-9) * d + 2] if d == 3
                              else []))
    u = solve_dirichlet(physics, fixed, np.zeros(fixed.size), f).reshape(-1, d)
    exact = lame(x)
    err = np.sqrt(np.mean(np.sum((u - exact) ** 2, axis=1)))
    return mesh.min_cell_size(), err / np.abs(exact).max()


def delaunay_quarter(h: float) -> Mesh:
    """Delaunay triangles (scipy) of the quarter annulus: boundary points about ``h``
    apart and interior points on a randomly jittered grid of spacing ``h`` (seeded), a
    mesh with no structure at all. Triangles over the hole are dropped."""
    from scipy.spatial import Delaunay

    n_a, n_b = (int(np.ceil(0.5 * np.pi * r / h)) for r in (A_IN, B_OUT))
    n_r = int(np.ceil((B_OUT - A_IN) / h))
    s = np.arange(n_r) / n_r
    ta, tb = 0.5 * np.pi * (1 - np.arange(n_a) / n_a), 0.5 * np.pi * np.arange(n_b) / n_b
    loop = np.vstack([np.column_stack([A_IN + (B_OUT - A_IN) * s, 0 * s]),
                      np.column_stack([B_OUT * np.cos(tb), B_OUT * np.sin(tb)]),
                      np.column_stack([0 * s, B_OUT - (B_OUT - A_IN) * s]),
                      np.column_stack([A_IN * np.cos(ta), A_IN * np.sin(ta)])])
    rng = np.random.default_rng(round(1 / h))
    g = np.arange(h, B_OUT, h)
    inner = np.stack(np.meshgrid(g, g), axis=-1).reshape(-1, 2)
    inner = inner + rng.uniform(-0.2 * h, 0.2 * h, inner.shape)
    r = np.linalg.norm(inner, axis=1)
    # interior points at least 0.6 h from the boundary: no slivers against it
    inner = inner[(r > A_IN + 0.6 * h) & (r < B_OUT - 0.6 * h)
                  & (inner.min(axis=1) > 0.6 * h)]
    points = np.vstack([loop, inner])
    tri = Delaunay(points).simplices
    centre = points[tri].mean(axis=1)
    tri = tri[np.linalg.norm(centre, axis=1) > A_IN]
    p = points[tri]
    d1, d2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    cw = d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0] < 0
    tri[cw] = tri[cw][:, ::-1]
    return Mesh(points=points, cells=tri, cell_type="tri3")


MESHES = {  # name: (mesh of refinement level 0, 1, 2; file format written and read back)
    "tri3-mapped": (lambda lvl: quarter_annulus(4 * 2 ** lvl, 2, seed=lvl), "vtu"),
    "tri3-delaunay": (lambda lvl: delaunay_quarter(0.25 / 2 ** lvl), "gmsh22"),
    "tet4-mapped": (lambda lvl: quarter_annulus(4 * 2 ** lvl, 3, seed=lvl), "gmsh"),
}


@pytest.mark.parametrize("name", list(MESHES))
def test_thick_cylinder_converges_at_rate_two(name, tmp_path):
    """Meshes refined twice (written to files, read back through meshio): the
    displacement error falls at rate 2 +- 0.25 per halving of the cell size (measured:
    1.96, 1.99 mapped tri3; 1.82, 2.03 Delaunay tri3; 1.85, 1.96 tet4)."""
    make, fmt = MESHES[name]
    errors = []
    for level in range(3):
        mesh = make(level)
        points = mesh.points if mesh.dim == 3 else np.column_stack(
            [mesh.points, np.zeros(mesh.n_nodes)])
        path = tmp_path / f"cylinder{level}.{'vtu' if fmt == 'vtu' else 'msh'}"
        meshio.write(path, meshio.Mesh(points, [("triangle" if mesh.dim == 2 else "tetra",
                                                 mesh.cells)]), file_format=fmt)
        errors.append(solve_cylinder(path)[1])
    rates = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert errors[-1] < 3e-3
    assert np.all(np.abs(rates - 2.0) < 0.25), rates
