"""The results of a distributed run as per-rank HDF5 pieces under one XDMF file.

Every rank writes its slab into a file of its own under ``ranks/``: the nodes it owns
(their coordinates), the cells it owns (their corners as global node ids) and the cell
data (the densities). Rank 0 writes a small HDF5 file of virtual datasets (HDF5 VDS)
that lay the pieces side by side, and one XDMF file that points at those:

- ``design.xdmf`` over ``design.h5`` over ``ranks/design.RRRR.h5``: the final design;
- ``series.xdmf`` over ``series.h5`` over ``ranks/series.RRRR.h5``: the design history
  (:class:`PieceSeries`).

A virtual dataset maps each piece onto the rows it holds in femopt's numbering (nodes
and cells x fastest): rank r's nodes with node layers [n0, n1) of the cut axis are the
rows ``n0 * inner + j * N * inner + [0, (n1 - n0) * inner)`` for j < outer (``inner``
the nodes per line of the faster axes, ``N`` the node layers of the cut axis, ``outer``
the lines of the slower axes): one regular hyperslab. So ParaView (HDF5 >= 1.10), h5py
and ``meshio.read("design.xdmf")`` read one mesh whose points, cells and densities are
those of a one-process run, in the same order.

Nothing is half-written: a piece is written to a temporary name and renamed; rank 0
writes the virtual file and then the XDMF file (also renamed into place) only after
every rank has its piece.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from femopt.io.results import atomic_write
from femopt.io.series import SeriesWriter
from femopt.io.xdmf import design_xdmf

PIECES = "ranks"
DESIGN_H5 = "design.h5"
DESIGN_XDMF = "design.xdmf"


def piece_name(stem: str, rank: int) -> str:
    """The results-directory-relative path of ``rank``'s piece of ``stem``."""
    return f"{PIECES}/{stem}.{rank:04d}.h5"


class SlabBlocks:
    """Where each rank's owned nodes and cells sit in femopt's numbering.

    Args:
        comm: the run's communicator (its rank is "this rank").
        mesh: the structured-grid mesh of the run.
        axis: the model axis cut into slabs.
        bounds: the cell layers of that axis each rank owns (one entry per rank and one
            more).
    """

    def __init__(self, comm: Any, mesh: Any, axis: int, bounds: list[int]):
        self.comm, self.mesh, self.axis = comm, mesh, axis
        self.shape = tuple(int(n) for n in mesh.grid.shape)
        self.bounds = list(bounds)

    @classmethod
    def of(cls, path: Any, mesh: Any) -> "SlabBlocks":
        """The slabs of the distributed path ``path``."""
        return cls(path.comm, mesh, path.orient.axis, path.slab.bounds)

    def _layers(self, rank: int, nodes: bool) -> tuple[int, int]:
        a, b = self.bounds[rank], self.bounds[rank + 1]
        if nodes and rank == len(self.bounds) - 2:
            b += 1
        return a, b

    def block(self, rank: int, nodes: bool) -> tuple[int, int, int, int]:
        """(start, stride, count, block) of ``rank``'s rows among all nodes (or cells)."""
        shape = tuple(n + 1 for n in self.shape) if nodes else self.shape
        inner = int(np.prod(shape[:self.axis], dtype=np.int64))
        outer = int(np.prod(shape[self.axis + 1:], dtype=np.int64))
        a, b = self._layers(rank, nodes)
        return a * inner, shape[self.axis] * inner, outer, (b - a) * inner

    def ids(self, rank: int, nodes: bool) -> np.ndarray:
        """The global ids of ``rank``'s nodes (or cells), in femopt's order."""
        shape = tuple(n + 1 for n in self.shape) if nodes else self.shape
        a, b = self._layers(rank, nodes)
        ranges = [np.arange(a, b) if ax == self.axis else np.arange(n)
                  for ax, n in enumerate(shape)]
        strides = np.cumprod((1,) + shape[:-1]).astype(np.int64)
        out = np.zeros([len(r) for r in ranges[::-1]], dtype=np.int64)
        for ax, (r, s) in enumerate(zip(ranges, strides)):
            view = [1] * len(shape)
            view[len(shape) - 1 - ax] = len(r)
            out += (r * s).reshape(view)
        return out.reshape(-1)

    def own_cells(self, local: np.ndarray) -> np.ndarray:
        """This rank's owned-cell array (internal order) in femopt's order."""
        from femopt.parallel.orientation import Orientation

        a, b = self._layers(self.comm.rank, False)
        sub = list(self.shape)
        sub[self.axis] = b - a
        return Orientation(tuple(sub), self.axis).cells_out(np.asarray(local))

    def mesh_piece(self) -> dict[str, np.ndarray]:
        """This rank's points and cells (global node ids)."""
        r = self.comm.rank
        return {"mesh/points": self.mesh.node_coords(self.ids(r, True)),
                "mesh/cells": self.mesh.cell_nodes(self.ids(r, False))}

    def totals(self) -> tuple[int, int]:
        return self.mesh.n_nodes, self.mesh.n_cells


def write_piece(file: Path, arrays: dict[str, np.ndarray]) -> None:
    """A new HDF5 file of ``arrays`` (name -> array), written under a temporary name."""
    import h5py

    file.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(file, file.with_name(file.name + ".tmp")) as tmp:
        with h5py.File(tmp, "w", locking=False) as f:
            for name, a in arrays.items():
                f.create_dataset(name, data=a)


def add_to_piece(file: Path, name: str, a: np.ndarray) -> None:
    """Add (or replace) dataset ``name`` of the piece ``file``."""
    import h5py

    with h5py.File(file, "a", locking=False) as f:
        if name in f:
            del f[name]
        f.create_dataset(name, data=a)


def virtual(f: Any, name: str, blocks: SlabBlocks, nodes: bool, source: str,
            dtype: Any, width: int | None) -> None:
    """Dataset ``name`` of the open HDF5 file ``f``: every rank's dataset ``name`` of its
    piece ``source`` (a :func:`piece_name` stem), each mapped onto its rows."""
    import h5py
    from h5py import h5d, h5p, h5s, h5t

    n_nodes, n_cells = blocks.totals()
    rows = n_nodes if nodes else n_cells
    full = (rows,) if width is None else (rows, width)
    dcpl = h5p.create(h5p.DATASET_CREATE)
    for r in range(len(blocks.bounds) - 1):
        start, stride, count, block = blocks.block(r, nodes)
        vspace = h5s.create_simple(full)
        if width is None:
            vspace.select_hyperslab((start,), (count,), (stride,), (block,))
            src = h5s.create_simple((count * block,))
        else:
            vspace.select_hyperslab((start, 0), (count, 1), (stride, 1), (block, width))
            src = h5s.create_simple((count * block, width))
        dcpl.set_virtual(vspace, piece_name(source, r).encode(), name.encode(), src)
    if name in f:
        del f[name]
    parent = name.rpartition("/")[0]
    group = f.require_group(parent) if parent else f
    h5d.create(group.id, name.rpartition("/")[2].encode(),
               h5t.py_create(np.dtype(dtype)), h5s.create_simple(full), dcpl=dcpl)
    assert isinstance(f[name], h5py.Dataset)


def virtual_mesh(f: Any, blocks: SlabBlocks, source: str) -> None:
    m = blocks.mesh
    virtual(f, "mesh/points", blocks, True, source, np.float64, m.dim)
    virtual(f, "mesh/cells", blocks, False, source, np.int64, m.nodes_per_cell)


def write_design(out_dir: Path, blocks: SlabBlocks, cells: dict[str, np.ndarray]) -> None:
    """The final design as ``design.xdmf``: every rank's piece of the mesh and of the
    owned-cell arrays ``cells`` (name -> internal order), then rank 0's virtual file and
    XDMF file. Collective."""
    import h5py

    comm = blocks.comm
    out_dir = Path(out_dir)
    arrays = blocks.mesh_piece()
    arrays.update({k: blocks.own_cells(v).astype(np.float64) for k, v in cells.items()})
    write_piece(out_dir / piece_name("design", comm.rank), arrays)
    comm.barrier()
    if not comm.root:
        return
    with atomic_write(out_dir / DESIGN_H5) as tmp:
        with h5py.File(tmp, "w", locking=False) as f:
            virtual_mesh(f, blocks, "design")
            for k in cells:
                virtual(f, k, blocks, False, "design", np.float64, None)
    with atomic_write(out_dir / DESIGN_XDMF) as tmp:
        tmp.write_text(design_xdmf(blocks.mesh, DESIGN_H5, list(cells)),
                       encoding="utf-8")


class PieceSeries(SeriesWriter):
    """The design history of a distributed run: every rank appends its owned densities to
    its piece ``ranks/series.RRRR.h5``, rank 0 a virtual dataset per step to ``series.h5``
    and the step to ``series.xdmf`` (the same XDMF as a one-process run's). No VTU file
    per step (that would gather the design on one rank). Every rank makes the same calls.

    Args:
        out_dir: the results directory.
        blocks: the ranks' slabs (:class:`SlabBlocks`).
        keep_until: resume: the steps after this iteration are dropped.
        info: the XDMF file's information items.
    """

    def __init__(self, out_dir: Path, blocks: SlabBlocks, keep_until: int | None = None,
                 info: dict[str, str] | None = None):
        import h5py

        out_dir = Path(out_dir)
        self.h5 = out_dir / "series.h5"
        self.xdmf = out_dir / "series.xdmf"
        self.blocks, self.mesh, self.info = blocks, blocks.mesh, dict(info or {})
        self.piece = out_dir / piece_name("series", blocks.comm.rank)
        self.steps: list[int] = []
        files = [self.piece] + ([self.h5] if blocks.comm.root else [])
        if keep_until is not None and all(p.is_file() for p in files):
            try:
                for p in files:
                    with h5py.File(p, "a", locking=False) as f:
                        for name in list(f["density"]):
                            if int(name) > keep_until:
                                del f["density"][name]
                        steps = sorted(int(n) for n in f["density"])
                self.steps = steps
                if blocks.comm.root:
                    self._write_xdmf()
                return
            except (OSError, KeyError, ValueError):
                self.steps = []
        write_piece(self.piece, blocks.mesh_piece())
        with h5py.File(self.piece, "a", locking=False) as f:
            f.create_group("density")
        if blocks.comm.root:
            with h5py.File(self.h5, "w", locking=False) as f:
                virtual_mesh(f, blocks, "series")
                f.create_group("density")
            self._write_xdmf()

    def add(self, iteration: int, density: np.ndarray) -> None:
        """Add this rank's owned densities (internal order) as step ``iteration``.
        Collective."""
        import h5py

        name = f"density/{iteration:06d}"
        add_to_piece(self.piece, name,
                     self.blocks.own_cells(np.asarray(density, dtype=np.float64)))
        if iteration not in self.steps:
            self.steps.append(iteration)
        self.blocks.comm.barrier()
        if self.blocks.comm.root:
            with h5py.File(self.h5, "a", locking=False) as f:
                virtual(f, name, self.blocks, False, "series", np.float64, None)
            self._write_xdmf()

    def _write_pvd(self) -> None:
        return None
