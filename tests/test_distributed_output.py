"""The results of a distributed run: ``design.xdmf`` and the series over per-rank HDF5
pieces (virtual datasets), read back with meshio as one mesh equal to ``design.vtu``."""

from __future__ import annotations

import os
from pathlib import Path

import meshio
import numpy as np
import pytest

from femopt.mesh.structured import structured_grid
from femopt.parallel.output import PieceSeries, SlabBlocks, write_design
from femopt.parallel.slabs import Orientation
from test_distributed import CANTILEVER, femopt, needs_mpi


class RankOf:
    """One rank of a communicator of ``size``, for writing each rank's piece in turn."""

    def __init__(self, rank: int, size: int):
        self.rank, self.size = rank, size

    @property
    def root(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        pass


def read_elsewhere(path: Path) -> meshio.Mesh:
    """``meshio.read(path)`` from another working directory: the pieces are found beside
    the virtual file, not in the current directory."""
    here = os.getcwd()
    os.chdir("/")
    try:
        return meshio.read(path)
    finally:
        os.chdir(here)


@pytest.mark.parametrize("shape,axis,bounds", [
    ((4, 3, 5), 0, [0, 1, 3, 4]), ((4, 3, 5), 1, [0, 2, 3]), ((4, 3, 5), 2, [0, 2, 5]),
    ((6, 4), 0, [0, 2, 4, 6]), ((6, 4), 1, [0, 1, 4])])
def test_pieces_read_as_one_mesh(shape, axis, bounds, tmp_path):
    """Every rank's piece (slabs cut along any axis) and the virtual file: meshio reads
    the points, cells and densities of the whole grid in femopt's order."""
    mesh = structured_grid(shape, [float(n) for n in shape])
    rho = np.random.default_rng(3).random(mesh.n_cells)
    orient = Orientation(shape, axis)
    internal = orient.cells_in(rho)
    per_layer = int(np.prod(orient.internal_shape[:-1]))
    size = len(bounds) - 1
    for r in reversed(range(size)):  # rank 0 last: it writes the virtual file
        blocks = SlabBlocks(RankOf(r, size), mesh, axis, bounds)
        write_design(tmp_path, blocks,
                     {"density": internal[bounds[r] * per_layer:bounds[r + 1] * per_layer]})
    assert sorted(p.name for p in (tmp_path / "ranks").iterdir()) == [
        f"design.{r:04d}.h5" for r in range(size)]
    m = read_elsewhere(tmp_path / "design.xdmf")
    assert np.array_equal(m.points[:, :mesh.dim], mesh.point_rows(0, mesh.n_nodes))
    assert np.array_equal(m.cells[0].data, mesh.cell_rows(0, mesh.n_cells))
    assert np.array_equal(m.cell_data["density"][0], rho)


def test_piece_series_steps_and_resume(tmp_path):
    """The series over pieces: two steps, then a resume after the first drops the second."""
    import meshio.xdmf

    shape, axis, bounds = (4, 6), 1, [0, 3, 6]
    mesh = structured_grid(shape, [4.0, 6.0])
    steps = {0: np.full(24, 0.5), 5: np.arange(24.0)}
    writers = [PieceSeries(tmp_path, SlabBlocks(RankOf(r, 2), mesh, axis, bounds))
               for r in (1, 0)]
    for it, rho in steps.items():
        for w, r in zip(writers, (1, 0)):
            w.add(it, rho[r * 12:(r + 1) * 12])  # axis y is the slowest: no reordering
    with meshio.xdmf.TimeSeriesReader(tmp_path / "series.xdmf") as reader:
        reader.read_points_cells()
        assert reader.num_steps == 2
        t, _, cell_data = reader.read_data(1)
    assert t == 5.0 and np.array_equal(cell_data["density"][0], steps[5])
    for r in (1, 0):
        w = PieceSeries(tmp_path, SlabBlocks(RankOf(r, 2), mesh, axis, bounds), keep_until=3)
        assert w.steps == [0]
    with meshio.xdmf.TimeSeriesReader(tmp_path / "series.xdmf") as reader:
        reader.read_points_cells()
        assert reader.num_steps == 1


@needs_mpi
def test_design_xdmf_of_three_ranks_equals_one_process(write_problem, tmp_path):
    """``femopt run --ranks 3``'s design.xdmf (3 pieces) is the one-rank run's design.vtu
    (one process, the same solver): the same points and cells in the same order,
    densities within 1e-10."""
    path = write_problem(CANTILEVER)
    one, three = tmp_path / "one", tmp_path / "three"
    assert femopt("run", path, "--ranks", 1, "--out", one, "--quiet").returncode == 0
    proc = femopt("run", path, "--ranks", 3, "--out", three, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert len(list((three / "ranks").glob("design.*.h5"))) == 3
    vtu, xdmf = meshio.read(one / "design.vtu"), read_elsewhere(three / "design.xdmf")
    assert np.array_equal(xdmf.points, vtu.points)
    assert np.array_equal(xdmf.cells[0].data, vtu.cells[0].data)
    for name in ("density", "design"):
        assert np.allclose(xdmf.cell_data[name][0], vtu.cell_data[name][0], rtol=0,
                           atol=1e-10)
    same = meshio.read(three / "design.vtu")  # the gathered design of the same run
    assert np.array_equal(xdmf.cell_data["density"][0], same.cell_data["density"][0])
