"""What a run writes as it goes and at its end, in one process or on every rank of a
distributed run (every rank then makes the same calls, in the same order):

- the design history (:func:`series_writer`: ``series.xdmf`` and its HDF5 file, or the
  per-rank pieces of :class:`femopt.parallel.output.PieceSeries`);
- checkpoints (:func:`checkpoint`: ``checkpoint.h5``, or per-rank pieces and
  ``checkpoint.json``, :mod:`femopt.parallel.checkpoints`) and the one to resume from
  (:func:`read_checkpoint`);
- a distributed run's ``design.xdmf`` over per-rank pieces (:func:`design_pieces`) and
  each rank's peak memory (:func:`peak_rss_mib`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from femopt.backend import to_host
from femopt.errors import InputError
from femopt.io.checkpoint import CHECKPOINT, Checkpoint, read_checkpoint as read_file
from femopt.io.checkpoint import write_checkpoint
from femopt.io.series import SeriesWriter

Model = Any  # femopt.evaluation.model.Model (not imported: the runner's business)


def read_checkpoint(out_dir: Path, comm) -> tuple[Checkpoint, dict | None]:
    """The checkpoint to resume from: ``checkpoint.h5``, or a distributed run's manifest
    and (before the model is built) what every rank shares of its pieces."""
    from femopt.parallel.checkpoints import MANIFEST, check_pieces, parse_manifest, read_global

    if not (out_dir / MANIFEST).is_file():
        return read_file(out_dir / CHECKPOINT), None
    m = parse_manifest(out_dir)
    if comm is None:  # said before any piece is read
        raise InputError(f"{out_dir / MANIFEST}: the checkpoint of a distributed run on "
                         f"{m['ranks']} rank(s); resume it distributed: femopt resume "
                         f"{out_dir} --ranks N (any N the grid allows)")
    check_pieces(out_dir, m, comm)
    return read_global(out_dir, m), m


def on_device(model: Model, ck: Checkpoint, a):
    """A design-sized array of ``ck`` where the run keeps it (a distributed checkpoint's
    piece is this rank's owned cells already)."""
    return model.path.xp.asarray(a) if ck.local else model.to_device(a)


def checkpoint(model: Model, out_dir: Path, it: int, x, optimizer, converged: bool,
                sha: str) -> None:
    """Write iteration ``it``'s checkpoint: ``checkpoint.h5``, or in a distributed run
    every rank's piece and rank 0's manifest (every rank calls this)."""
    ck = Checkpoint(it, model.history[-1].change, converged, to_host(x), sha,
                    model.optimizer.name, optimizer.state_dict(),
                    [part.state_dict() for part in model.stateful()], model.objective_scale,
                    model.evaluations, model.history)
    if model.comm is None:
        write_checkpoint(out_dir / CHECKPOINT, ck)
        return
    from femopt.parallel.checkpoints import write_pieces

    write_pieces(out_dir, model.path, ck)


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (MiB; 0 where unknown)."""
    try:
        import resource
    except ImportError:  # not on Windows
        return 0.0
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return round(kib / 1024 / (1024 if sys.platform == "darwin" else 1), 1)


def series_writer(model: Model, out_dir: Path, ck: Checkpoint | None) -> SeriesWriter:
    """The design history's writer: per-rank pieces in a distributed run (every rank
    makes the same calls)."""
    info = {"problem": model.name, "unit": model.problem.unit}
    keep = ck.iteration if ck else None
    if model.comm is None:
        return SeriesWriter(out_dir, model.mesh, keep_until=keep, info=info)
    from femopt.parallel.output import PieceSeries, SlabBlocks

    return PieceSeries(out_dir, SlabBlocks.of(model.path, model.mesh), keep, info)


def series_rho(model: Model, x) -> np.ndarray:
    """A series step's densities: this rank's owned cells in a distributed run, else the
    whole design (kept on a device path's device, read by slabs: ``Model.output_cells``)."""
    rho = model.physical(x)[0]
    return to_host(rho) if model.comm is not None else model.output_cells(rho)


def final_rho(model: Model, rho_final) -> np.ndarray:
    """The final densities as the series takes them (:func:`_series_rho`)."""
    return np.asarray(model.path.final_rho) if model.comm is not None else rho_final


def design_pieces(model: Model, out_dir: Path, x) -> None:
    """A distributed run's ``design.xdmf`` over per-rank pieces (collective)."""
    if model.comm is None:
        return
    from femopt.parallel.output import SlabBlocks, write_design

    write_design(out_dir, SlabBlocks.of(model.path, model.mesh),
                 {"density": model.path.final_rho, "design": to_host(x)})
