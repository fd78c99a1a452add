"""``checkpoint.h5``: everything a run needs to go on exactly where it was.

Written at the end of an iteration (after any continuation step) every
``output.checkpoint_every`` iterations: the design, the iteration and its design change,
whether it converged, the optimizer's state (``state_dict()``: MMA's previous iterates,
asymptotes and multipliers; OC has none), each filter's continuation state (Heaviside
beta and its last step), the objective's normalization, the evaluation count, the history
so far, and the SHA-256 of the problem file, which ties the checkpoint to its problem.
The run uses no random numbers, so there are no seeds to keep.

The file is written to ``checkpoint.h5.tmp`` and renamed over the old one
(``os.replace`` is atomic), so a kill at any moment leaves the last complete checkpoint.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from femopt.errors import InputError
from femopt.io.results import atomic_write

CHECKPOINT = "checkpoint.h5"
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    iteration: int
    change: float
    converged: bool
    x: np.ndarray
    problem_sha256: str
    optimizer: str
    optimizer_state: dict[str, Any] = field(default_factory=dict)
    filter_states: list[dict[str, Any]] = field(default_factory=list)
    objective_scale: float = 1.0
    evaluations: int = 0
    history: list[Any] = field(default_factory=list)  # IterationRecord
    # x and the optimizer's per-cell arrays are one rank's owned cells (a distributed
    # run's checkpoint, :mod:`femopt.parallel.checkpoints`), not the whole design
    local: bool = False
    # the last states and adjoint solutions, the next solves' warm starts (a distributed
    # run's piece: with them a resumed run repeats the uninterrupted one exactly)
    warm: dict[str, np.ndarray] = field(default_factory=dict)


def _put(group, name: str, value: Any) -> None:
    if value is None:
        return  # absent means None
    if isinstance(value, (int, float, bool, np.integer, np.floating, str)):
        group.attrs[name] = value
    else:
        group.create_dataset(name, data=np.asarray(value))


def _get_all(group) -> dict[str, Any]:
    out: dict[str, Any] = {k: v.item() if isinstance(v, np.generic) else v
                           for k, v in group.attrs.items()}
    for k, v in group.items():
        out[k] = v[()]
    return out


def write_checkpoint(path: Path, ck: Checkpoint) -> None:
    """Write ``ck`` to ``path`` atomically (temporary file, then rename)."""
    import h5py

    from femopt import __version__

    path = Path(path)
    # HDF5 builds the file in memory and Python writes its bytes: a disk that fills up
    # mid-write is an OSError here, never an HDF5 write failure (which crashed the
    # process on a full tmpfs when the file handle was released)
    with h5py.File(path.name, "w", driver="core", backing_store=False) as f:
        f.attrs.update({"format": FORMAT_VERSION, "femopt": __version__,
                        "iteration": ck.iteration, "change": ck.change,
                        "converged": ck.converged, "problem_sha256": ck.problem_sha256,
                        "optimizer": ck.optimizer, "objective_scale": ck.objective_scale,
                        "evaluations": ck.evaluations})
        f.create_dataset("x", data=np.asarray(ck.x))
        if ck.warm:
            warm = f.create_group("warm")
            for k, v in ck.warm.items():
                warm.create_dataset(k, data=np.asarray(v))
        opt = f.create_group("optimizer")
        for k, v in ck.optimizer_state.items():
            _put(opt, k, v)
        flt = f.create_group("filters")
        for i, state in enumerate(ck.filter_states):
            g = flt.create_group(str(i))
            for k, v in state.items():
                _put(g, k, v)
        h = f.create_group("history")
        recs = ck.history
        h.create_dataset("iteration", data=np.array([r.iteration for r in recs], np.int64))
        for name in ("objective", "change", "seconds"):
            h.create_dataset(name, data=np.array([getattr(r, name) for r in recs], float))
        names = list(recs[0].constraints) if recs else []
        extras = list(recs[0].extra) if recs else []
        h.attrs["constraints"] = names
        h.attrs["extra"] = extras
        for kind, keys in (("constraints", names), ("extra", extras)):
            g = h.create_group(kind)
            for j, k in enumerate(keys):
                g.create_dataset(str(j), data=np.array([getattr(r, kind)[k] for r in recs],
                                                       float))
        f.flush()
        image = f.id.get_file_image()
    with atomic_write(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(image)
            fh.flush()
            os.fsync(fh.fileno())


def read_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint; InputError (naming the file) when it is missing, truncated or
    not a femopt checkpoint."""
    import h5py

    from femopt.evaluation.model import IterationRecord

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no checkpoint (set output.checkpoint_every to write one)")
    try:
        with h5py.File(path, "r", locking=False) as f:
            a = f.attrs
            if a.get("format") != FORMAT_VERSION:
                raise KeyError(f"format {a.get('format')!r}, expected {FORMAT_VERSION}")
            h = f["history"]
            cons = [str(s) for s in h.attrs["constraints"]]
            extra = [str(s) for s in h.attrs["extra"]]
            cols = {k: h[k][()] for k in ("iteration", "objective", "change", "seconds")}
            cvals = [h["constraints"][str(j)][()] for j in range(len(cons))]
            evals = [h["extra"][str(j)][()] for j in range(len(extra))]
            history = [IterationRecord(int(cols["iteration"][i]), float(cols["objective"][i]),
                                       {k: float(v[i]) for k, v in zip(cons, cvals)},
                                       float(cols["change"][i]), float(cols["seconds"][i]),
                                       {k: float(v[i]) for k, v in zip(extra, evals)})
                       for i in range(cols["iteration"].size)]
            filters = [_get_all(f["filters"][k]) for k in sorted(f["filters"], key=int)]
            return Checkpoint(int(a["iteration"]), float(a["change"]), bool(a["converged"]),
                              f["x"][()], str(a["problem_sha256"]), str(a["optimizer"]),
                              _get_all(f["optimizer"]), filters, float(a["objective_scale"]),
                              int(a["evaluations"]), history,
                              warm={k: f["warm"][k][()] for k in f["warm"]} if "warm" in f
                              else {})
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise InputError(f"{path}: not a readable femopt checkpoint (truncated or "
                         f"corrupt?): {exc}") from None
