"""Checkpoints of a distributed run: one piece per rank and a manifest.

At a checkpoint every rank writes its piece ``ranks/checkpoint-IIIIII.RRRR.h5`` (the
format of ``checkpoint.h5``, :mod:`femopt.io.checkpoint`, with the design and the
optimizer's per-cell arrays holding the rank's owned cells, in the slabs' internal
order), then rank 0 writes ``checkpoint.json``: the rank count, the grid, the cut axis,
each rank's cell layers, the iteration and the SHA-256 of every piece. The manifest is
written last and renamed into place, and a piece's name carries its iteration, so a rank
that dies while writing leaves the last complete checkpoint (manifest and pieces)
intact; the pieces of other iterations go once the new manifest is in place.

``femopt resume`` reads the manifest, checks every piece against its hash (each rank a
share of them; every rank reports the first bad one), and gives each rank its owned cells
and the warm starts of its kept nodes, cut from the pieces that own those layers (the
slabs are ranges of layers of one array), so a run resumes on any number of ranks and
repeats the uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from femopt.backend import to_host
from femopt.errors import InputError
from femopt.io.checkpoint import Checkpoint, read_checkpoint, write_checkpoint
from femopt.io.results import atomic_write
from femopt.parallel.output import PIECES

MANIFEST = "checkpoint.json"
FORMAT = 1


def piece_path(iteration: int, rank: int) -> str:
    return f"{PIECES}/checkpoint-{iteration:06d}.{rank:04d}.h5"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_pieces(out_dir: Path, path: Any, ck: Checkpoint) -> None:
    """Write this rank's piece of ``ck`` (``ck.x`` and the per-cell entries of its
    optimizer state: this rank's owned cells), then on rank 0 the manifest. Collective."""
    out_dir = Path(out_dir)
    comm, slab = path.comm, path.slab
    mine = out_dir / piece_path(ck.iteration, comm.rank)
    mine.parent.mkdir(parents=True, exist_ok=True)
    write_checkpoint(mine, replace(ck, warm=warm_starts(path)))
    from femopt.parallel.launch import injected_failure

    injected_failure(comm, ck.iteration, "checkpoint")
    hashes = comm.gather(sha256(mine))
    if not comm.root:
        return
    per_cell = sorted(k for k, v in ck.optimizer_state.items()
                      if isinstance(v, np.ndarray) and v.shape == np.shape(ck.x))
    manifest = {
        "format": FORMAT, "ranks": comm.size, "iteration": ck.iteration,
        "problem_sha256": ck.problem_sha256,
        "grid": [int(n) for n in path.model_layout.shape], "axis": int(path.orient.axis),
        "cells_per_layer": int(slab.layer_cells), "bounds": [int(b) for b in slab.bounds],
        "per_cell": per_cell,
        "pieces": [{"file": piece_path(ck.iteration, r), "sha256": h}
                   for r, h in enumerate(hashes)]}
    with atomic_write(out_dir / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    current = {p["file"] for p in manifest["pieces"]}
    for old in (out_dir / PIECES).glob("checkpoint-*.h5"):
        if f"{PIECES}/{old.name}" not in current:
            old.unlink(missing_ok=True)


def read_manifest(out_dir: Path, comm: Any = None) -> dict[str, Any]:
    """The manifest of ``out_dir``'s distributed checkpoint, its pieces checked against
    their hashes (:func:`check_pieces`); InputError naming the file that is missing,
    changed or unreadable."""
    m = parse_manifest(out_dir)
    check_pieces(out_dir, m, comm)
    return m


def parse_manifest(out_dir: Path) -> dict[str, Any]:
    """The manifest of ``out_dir``'s distributed checkpoint as written (its pieces not
    read); InputError where it is not one."""
    file = Path(out_dir) / MANIFEST
    try:
        m = json.loads(file.read_text(encoding="utf-8"))
        if m.get("format") != FORMAT:
            raise ValueError(f"format {m.get('format')!r}, expected {FORMAT}")
        if len(m["pieces"]) != m["ranks"] or len(m["bounds"]) != m["ranks"] + 1:
            raise ValueError(f"{len(m['pieces'])} pieces for {m['ranks']} ranks")
        if not all(isinstance(p, dict) and "file" in p and "sha256" in p
                   for p in m["pieces"]):
            raise ValueError("a piece without its file or sha256")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"{file}: not a readable femopt checkpoint manifest: {exc}") from None
    return m


def check_pieces(out_dir: Path, m: dict[str, Any], comm: Any = None) -> None:
    """InputError naming the first piece of the manifest ``m`` that is missing, changed
    since it was written, or unreadable.

    With ``comm`` (collective) each rank hashes the pieces ``rank, rank + size, ...``
    and all raise the error of the first bad piece in the manifest's order: the message
    a check of every piece in one process gives, on any rank count."""
    file = Path(out_dir) / MANIFEST
    listed = [(str(p["file"]), str(p["sha256"])) for p in m["pieces"]]
    rank, size = (0, 1) if comm is None else (comm.rank, comm.size)
    mine = ((i, _piece_problem(Path(out_dir), file, *listed[i]))
            for i in range(rank, len(listed), size))
    first = next(((i, said) for i, said in mine if said is not None), None)
    if size > 1:
        found = comm.gather(first)
        first = comm.bcast(None if found is None
                           else min((f for f in found if f is not None), default=None))
    if first is not None:
        raise InputError(first[1])


def _piece_problem(out_dir: Path, file: Path, name: str, digest: str) -> str | None:
    """What is wrong with the piece ``name`` of the manifest ``file`` (missing, or its
    SHA-256 not ``digest``), or None."""
    piece = out_dir / name
    try:
        if not piece.is_file():
            return f"{piece}: missing (listed in {file}); the checkpoint is incomplete"
        same = sha256(piece) == digest
    except OSError as exc:  # on this rank only, maybe: said by every rank all the same
        return f"{piece}: unreadable ({exc}); the checkpoint cannot be checked"
    if not same:
        return (f"{piece}: changed since {file} was written (its SHA-256 differs); the "
                "checkpoint is not intact")
    return None


def read_global(out_dir: Path, m: dict[str, Any]) -> Checkpoint:
    """The checkpoint as rank 0's piece holds it: everything but the per-cell arrays is
    the same on every rank (the history, the filters' and the optimizer's numbers)."""
    return read_checkpoint(Path(out_dir) / m["pieces"][0]["file"])


def localize(out_dir: Path, m: dict[str, Any], ck: Checkpoint, path: Any) -> Checkpoint:
    """``ck`` with this rank's part of the pieces: the design and the per-cell optimizer
    arrays of its owned cells (cut from the pieces that own its cell layers), and the
    warm starts of its kept nodes (each node layer from the piece that owns it, so they
    are the uninterrupted run's on any rank count). InputError when the manifest's grid
    is not this run's."""
    slab = path.slab
    grid = [int(n) for n in path.model_layout.shape]
    if (m["grid"] != grid or m["axis"] != path.orient.axis
            or m["cells_per_layer"] != slab.layer_cells or m["bounds"][-1] != slab.n_layers):
        raise InputError(f"{Path(out_dir) / MANIFEST}: written for a grid of {m['grid']} cells "
                         f"cut along axis {m['axis']}, not this run's {grid}")
    bounds = m["bounds"]
    read: dict[int, Checkpoint] = {0: ck}

    def piece(r: int) -> Checkpoint:
        if r not in read:
            read[r] = read_checkpoint(Path(out_dir) / m["pieces"][r]["file"])
        return read[r]

    o0, o1 = slab.own
    p = slab.layer_cells
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ["x"] + m["per_cell"]}
    for r, (a, b) in enumerate(zip(bounds, bounds[1:])):
        lo, hi = max(a, o0), min(b, o1)
        for k in parts if lo < hi else ():
            whole = piece(r).x if k == "x" else piece(r).optimizer_state[k]
            parts[k].append(np.asarray(whole)[(lo - a) * p:(hi - a) * p])
    # node layers [g0, g1) kept here; piece r keeps [max(a - 1, 0), b + 1), owns [a, b)
    # (and the last node layer, on the last rank)
    g0, g1 = slab.nodes
    k, q = slab.layout.k, slab.layer_nodes
    warm_parts: dict[str, list[np.ndarray]] = {name: [] for name in ck.warm}
    for r, (a, b) in enumerate(zip(bounds, bounds[1:])):
        lo, hi = max(a, g0), min(b + (1 if r == len(bounds) - 2 else 0), g1)
        for name in warm_parts if lo < hi else ():
            w = np.asarray(piece(r).warm[name])
            kept = w.reshape(w.shape[0], k, -1, q)
            start = max(a - 1, 0)
            warm_parts[name].append(kept[:, :, lo - start:hi - start])
    warm = {name: np.concatenate(v, axis=2).reshape(v[0].shape[0], -1)
            for name, v in warm_parts.items() if v}
    state = dict(ck.optimizer_state)
    state.update({k: np.concatenate(parts[k]) for k in m["per_cell"]})
    return replace(ck, x=np.concatenate(parts["x"]), optimizer_state=state, local=True,
                   warm=warm)


def warm_starts(path: Any) -> dict[str, np.ndarray]:
    """The distributed path's last states and adjoint solutions (its kept nodes)."""
    out = {"u": to_host(path.u)} if path.solved else {}
    for i, form in enumerate(path._parts()):
        if form.solved and form.mu is not None:
            out[f"mu{i}"] = to_host(form.mu)
    return out


def restore_warm_starts(path: Any, warm: dict[str, np.ndarray]) -> None:
    """Give the path the warm starts :func:`localize` cut from the pieces."""
    if "u" in warm and np.shape(warm["u"]) == np.shape(path.u):
        path.u[...] = path.xp.asarray(warm["u"])
        path.solved = True
    for i, form in enumerate(path._parts()):
        mu = warm.get(f"mu{i}")
        if mu is not None:
            form.mu, form.solved = path.xp.array(mu), True
