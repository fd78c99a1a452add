"""Pictures: sizes, physical coordinates, void drawn as void, calm constraint axes, and
no change of matplotlib's backend on import."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from femopt.io import plots
from femopt.mesh.structured import structured_grid


def _pixel(fig, image, x: float, y: float) -> np.ndarray:
    """The RGB of the saved ``image`` at data point (x, y) of the figure's first axes."""
    px, py = fig.axes[0].transData.transform((x, y))
    return image[image.shape[0] - 1 - int(round(py)), int(round(px)), :3]


def test_a_2d_design_is_drawn_cell_by_cell_in_physical_coordinates(tmp_path):
    from matplotlib.image import imread

    mesh = structured_grid((40, 10), (80.0, 20.0))  # cells of 2 x 2 length units
    x = mesh.centroids()
    rho = np.where(x[:, 0] < 40.0, 1.0, 1e-3)  # left half solid, right half void
    rho[(x[:, 0] > 50) & (x[:, 0] < 52) & (x[:, 1] > 10) & (x[:, 1] < 12)] = 1.0  # one cell
    marks = plots.Marks(np.array([[0.0, 0.0], [0.0, 20.0]]), np.array([[80.0, 20.0]]),
                        np.array([[0.0, -1.0]]))
    fig = plots.design_picture(mesh, rho, tmp_path / "d.png", marks=marks, unit="mm")
    image = imread(tmp_path / "d.png")
    w, h = fig.get_size_inches() * 100
    assert image.shape[:2] == (round(h), round(w))
    assert _pixel(fig, image, 20.0, 10.0).max() < 0.1  # solid: black
    assert _pixel(fig, image, 70.0, 5.0).min() > 0.9  # void: white
    # no blur: the lone solid cell is black at its centre, its void neighbour white
    assert _pixel(fig, image, 51.0, 11.0).max() < 0.1
    assert _pixel(fig, image, 53.5, 11.0).min() > 0.9
    assert fig.axes[0].get_xlabel() == "x [mm]"
    lo, hi = fig.axes[0].get_xlim()
    assert lo <= 0.0 and hi >= 80.0


def test_a_3d_design_is_a_shaded_surface_of_the_part(tmp_path):
    from matplotlib.image import imread

    mesh = structured_grid((12, 6, 4), (24.0, 12.0, 8.0))
    x = mesh.centroids()
    rho = np.where(x[:, 0] < 12.0, 1.0, 0.0)
    fig = plots.design_picture(mesh, rho, tmp_path / "d.png", unit="mm")
    image = imread(tmp_path / "d.png")
    assert image.shape[:2] == (550, 800)
    rgb = image[..., :3]
    bluish = (rgb[..., 2] > rgb[..., 0] + 0.05)
    assert bluish.mean() > 0.02  # the part is drawn
    # physical, equal axes: the box aspect follows the domain's 24 x 8 x 12
    ax = fig.axes[0]
    assert ax.get_xlim() == pytest.approx((0.0, 24.0))
    assert ax.get_zlim() == pytest.approx((0.0, 12.0))
    # the solid left half is drawn where it projects, the void right half is not
    from mpl_toolkits.mplot3d import proj3d

    def pixel3d(x, y, z):
        px, py, _ = proj3d.proj_transform(x, z, y, ax.get_proj())  # plot axes: x, z, y
        return _pixel(fig, image, px, py)

    solid, void = pixel3d(6.0, 6.0, 4.0), pixel3d(18.0, 6.0, 4.0)
    assert solid[2] > solid[0] + 0.05
    assert not void[2] > void[0] + 0.05
    empty = plots.design_picture(mesh, np.zeros(mesh.n_cells), tmp_path / "e.png")
    assert empty is not None
    rgb = imread(tmp_path / "e.png")[..., :3]
    assert not (rgb[..., 2] > rgb[..., 0] + 0.05).any()


def test_the_constraint_axis_stays_calm_when_the_volume_barely_moves(tmp_path):
    history = [SimpleNamespace(iteration=i, objective=100.0 / i,
                               constraints={"volume": 0.5 + 3e-4 * (-1) ** i})
               for i in range(1, 31)]
    fig = plots.convergence_plot(history, tmp_path / "c.png", {"volume": ("max", 0.5)})
    ax, ax2 = fig.axes
    assert ax.get_yscale() == "log"  # the objective falls by 30x
    lo, hi = ax2.get_ylim()
    assert lo <= 0.9 and hi >= 1.1 and hi - lo < 0.5
    assert ax2.yaxis.get_offset_text().get_text() == ""


def test_importing_femopt_leaves_the_matplotlib_backend_alone():
    code = ("import matplotlib; matplotlib.use('svg'); import femopt.runner, femopt.api, "
            "femopt.io.plots; print(matplotlib.get_backend())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "svg"


def test_a_large_3d_field_is_coarsened_by_block_maxima_for_its_picture():
    field_ = np.zeros((120, 60, 40))  # 288,000 cells: blocks of 2 x 2 x 2
    field_[77, 13, 5] = 1.0  # a member one cell thin stays visible
    small, step = plots._coarsened(field_)
    assert step == 2 and small.shape == (60, 30, 20)
    assert small[38, 6, 2] == 1.0 and small.sum() == 1.0
    assert plots._coarsened(np.zeros((40, 20, 10)))[1] == 1


@pytest.mark.parametrize("cells, step", [(10_000, 1), (300, 2), (40, 3)])
def test_every_picture_field_is_the_block_maxima_of_its_cells(monkeypatch, cells, step):
    """A host field, a grid's densities and the same densities read by rows coarsen to
    the maxima of blocks of step^3 cells (computed here block by block), and a field
    read by rows is read `step` cell layers at a time (a small one at once)."""
    from femopt.backend.rows import RowSource
    from femopt.mesh.mesh import StructuredGrid

    monkeypatch.setattr(plots, "PICTURE_CELLS", cells)
    nx, ny, nz = 14, 9, 7
    rho = np.random.default_rng(4).random(nx * ny * nz)
    by_xyz = rho.reshape(nz, ny, nx).T
    c = [-(-n // step) for n in (nx, ny, nz)]
    expected = np.zeros(c)
    for i, j, k in np.ndindex(*c):
        block = by_xyz[i * step:(i + 1) * step, j * step:(j + 1) * step,
                       k * step:(k + 1) * step]
        expected[i, j, k] = block.max()  # a block past the grid: its cells'
    widest = []

    def rows(i, j):
        widest.append(j - i)
        return rho[i:j]

    grid = StructuredGrid((nx, ny, nz), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    for got, got_step in (plots._coarsened(by_xyz), plots._grid_field(grid, rho),
                          plots._grid_field(grid, RowSource(rho.shape, rho.dtype, rows))):
        assert got_step == step and np.array_equal(got, expected)
    assert max(widest) == (nx * ny * nz if step == 1 else step * nx * ny)


def test_a_design_on_a_2d_mesh_from_a_file_is_drawn_cell_by_cell(tmp_path):
    from pathlib import Path

    from matplotlib.image import imread

    from femopt.runner import build_model

    root = Path(__file__).resolve().parents[1]
    model = build_model(root / "problems" / "plate_with_hole.yaml", device="cpu")
    c = model.mesh.centroids()
    mid = np.median(c[:, 0])
    rho = np.where(c[:, 0] < mid, 1.0, 0.0)
    assert len(plots.marks_of(model).loads) > 0  # (marks left out below: they cover cells)
    fig = plots.design_picture(model.mesh, rho, tmp_path / "d.png", unit="mm")
    image = imread(tmp_path / "d.png")
    volumes = np.prod(np.ptp(model.mesh.points[model.mesh.cells], axis=1), axis=1)
    solid = np.flatnonzero(c[:, 0] < mid)[np.argmax(volumes[c[:, 0] < mid])]
    void = np.flatnonzero(c[:, 0] >= mid)[np.argmax(volumes[c[:, 0] >= mid])]
    assert _pixel(fig, image, *c[solid]).max() < 0.15
    assert _pixel(fig, image, *c[void]).min() > 0.85


def _dense_marks(model):
    """The marks from the dense load vectors (n_cases, n_dofs), as a reference."""
    k, mesh = model.physics.dofs_per_node, model.mesh
    loads = np.asarray(model.loads).reshape(len(model.loads), -1, k)
    loaded = np.flatnonzero(np.abs(loads).sum(axis=(0, 2)) > 0)
    directions = np.zeros((loaded.size, mesh.dim))
    if k == mesh.dim:
        v = loads.sum(axis=0)[loaded]
        n = np.linalg.norm(v, axis=1, keepdims=True)
        directions = np.divide(v, n, out=np.zeros_like(v), where=n > 0)
    return mesh.node_coords(loaded), directions


@pytest.mark.parametrize("name", ["two_load_cases", "cantilever_3d", "bridge_pressure",
                                  "heat_volume_to_point"])
def test_marks_come_from_the_loads_nonzeros(name):
    """The picture's load marks are found from the loads' nonzeros, without the dense
    load vectors (on a large grid, 24 bytes per cell and load case), and equal the marks
    of the dense vectors."""
    from pathlib import Path

    from femopt.runner import build_model

    root = Path(__file__).resolve().parents[1]
    model = build_model(root / "problems" / f"{name}.yaml", device="cpu")
    model.__dict__.pop("loads", None)  # the CPU path built them; the GPU paths do not
    marks = plots.marks_of(model)
    assert "loads" not in model.__dict__
    points, directions = _dense_marks(model)
    assert len(points) > 0
    np.testing.assert_array_equal(marks.loads, points)
    np.testing.assert_allclose(marks.directions, directions, rtol=0, atol=1e-15)
