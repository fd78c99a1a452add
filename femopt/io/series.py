"""The design history as a ParaView time series: ``series.h5`` (HDF5: the mesh once, one
density array per saved iteration) and ``series.xdmf`` (XDMF 3: a temporal collection
that points into it).

The series is readable while the run goes on: a step's array is written and the HDF5
file closed before the small XDMF file, which lists only complete steps, is rewritten to
a temporary file and renamed over the old one. HDF5 file locking is off so that a reader
(ParaView) holding the file open does not stop the writer.

A run's series starts with the initial design (iteration 0). The problem's name and unit
are ``Information`` items of the XDMF domain. Each step is also a VTU file of its own,
``series-NNNNNN.vtu`` (the density as cell data, the name and unit as field data), listed
in ``series.pvd``: ParaView opens the collection, ``meshio.read`` any step (meshio reads
the XDMF series only through ``meshio.xdmf.TimeSeriesReader``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from femopt.backend.rows import RowSource
from femopt.io.results import atomic_write
from femopt.io.xdmf import series_xdmf

SERIES_H5 = "series.h5"
SERIES_XDMF = "series.xdmf"
SERIES_PVD = "series.pvd"


class SeriesWriter:
    """Appends designs to the series of a results directory.

    Args:
        out_dir: the results directory.
        mesh: the design mesh.
        keep_until: resume: drop steps after this iteration (written after the
            checkpoint the run resumes from) and keep the earlier ones; None starts anew.
        info: name -> text items written into the XDMF file (problem name, unit).
    """

    def __init__(self, out_dir: Path, mesh, keep_until: int | None = None,
                 info: dict[str, str] | None = None):
        import h5py

        self.h5 = Path(out_dir) / SERIES_H5
        self.xdmf = Path(out_dir) / SERIES_XDMF
        self.pvd = Path(out_dir) / SERIES_PVD
        self.mesh = mesh
        self.info = dict(info or {})
        self.steps: list[int] = []
        if keep_until is not None and self.h5.is_file():
            try:
                with h5py.File(self.h5, "a", locking=False) as f:
                    for name in list(f["density"]):
                        if int(name) > keep_until:
                            del f["density"][name]
                        else:
                            self.steps.append(int(name))
                self.steps.sort()
                for old in Path(out_dir).glob("series-*.vtu"):  # steps after the checkpoint
                    if old.stem[7:].isdigit() and int(old.stem[7:]) > keep_until:
                        old.unlink()
                self._write_xdmf()
                return
            except (OSError, KeyError, ValueError):
                self.steps = []  # unreadable: start the series again
        with h5py.File(self.h5, "w", locking=False) as f:
            _write_mesh(f, mesh)
            f.create_group("density")
        self._write_xdmf()

    def add(self, iteration: int, density: np.ndarray | RowSource) -> None:
        """Add the densities of ``iteration`` (a host array, or a field kept on the
        device and read by slabs)."""
        import h5py

        with h5py.File(self.h5, "a", locking=False) as f:
            name = f"{iteration:06d}"
            if name in f["density"]:
                del f["density"][name]
            if isinstance(density, RowSource):  # kept on the device: by slabs
                density.copy_into(f["density"].create_dataset(name, density.shape,
                                                              dtype=np.float64))
            else:
                f["density"].create_dataset(name, data=np.asarray(density, dtype=float))
        if iteration not in self.steps:
            self.steps.append(iteration)
        self._write_step(iteration, density)
        self._write_xdmf()

    def _step_file(self, iteration: int) -> Path:
        return self.xdmf.with_name(f"series-{iteration:06d}.vtu")

    def _write_step(self, iteration: int, density: np.ndarray) -> None:
        """The step as a VTU file of its own (listed by :meth:`_write_pvd`)."""
        from femopt.io.vtu import labels, write_vtu

        with atomic_write(self._step_file(iteration)) as tmp:
            if not isinstance(density, RowSource):
                density = np.asarray(density, dtype=float)
            write_vtu(tmp, self.mesh, {"density": density}, {},
                      labels(self.info.get("problem", ""), self.info.get("unit", "")))

    def _write_pvd(self) -> None:
        """The collection of the steps whose VTU file exists (a series written before the
        step files has none for its older steps)."""
        sets = "".join(f'<DataSet timestep="{it}" file="{self._step_file(it).name}"/>\n'
                       for it in sorted(self.steps) if self._step_file(it).is_file())
        with atomic_write(self.pvd) as tmp:
            tmp.write_text('<?xml version="1.0"?>\n<VTKFile type="Collection" version="0.1">'
                           f"\n<Collection>\n{sets}</Collection>\n</VTKFile>\n",
                           encoding="utf-8")

    def _write_xdmf(self) -> None:
        text = series_xdmf(self.mesh, self.h5.name, self.steps, self.info)
        with atomic_write(self.xdmf) as tmp:
            tmp.write_text(text, encoding="utf-8")
        self._write_pvd()


def _write_mesh(f, mesh) -> None:
    """The mesh's node coordinates and connectivity (64-bit) into the open HDF5 file ``f``,
    by rows: a structured grid never holds them whole."""
    from femopt.mesh.mesh import row_chunks

    points = f.create_dataset("mesh/points", (mesh.n_nodes, mesh.dim), dtype=np.float64)
    for i, j in row_chunks(mesh.n_nodes):
        points[i:j] = mesh.point_rows(i, j)
    cells = f.create_dataset("mesh/cells", (mesh.n_cells, mesh.nodes_per_cell),
                             dtype=np.int64)
    for i, j in row_chunks(mesh.n_cells):
        cells[i:j] = mesh.cell_rows(i, j)
