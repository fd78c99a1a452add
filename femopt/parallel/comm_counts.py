"""What a distributed run's ranks send each other, counted (:class:`CommCounts`).

Every :class:`~femopt.parallel.comm.Comm` holds a :class:`CommCounts` (a device
communicator shares its host communicator's, and its transport's own MPI calls are not
counted again), and records only what crosses between ranks (nothing on one rank):

- ``halo``: per label (``level i`` a multigrid level's node halos, ``level i cells``
  its cell data's ghost layer -- the design's scale factors on level 0, Galerkin cell
  matrices below --, ``filter`` the filters' ghost layers): ``exchanges`` (one per
  filled ghost region, every rank alike), ``messages`` and ``bytes`` this rank sent;
- ``reductions``: per label (``cg``, ``lanczos``, ``functions``, ``optimizer``,
  ``other`` for the sums of :meth:`Comm.sum_layers`; ``max``, ``any``, ``bcast``):
  ``calls`` and ``values`` (the numbers each call reduces);
- ``gathers``: ``allgather`` (the replicated coarse levels' agglomeration) and
  ``gather`` (what rank 0 collects for the results directory): ``calls`` and ``bytes``
  this rank contributed (the allgathers' arrays; a ``gather`` of pickled objects counts
  its calls only, 0 bytes).

A run takes a :meth:`CommCounts.snapshot` when its iterations start and at each design
iteration's report (:meth:`femopt.evaluation.model.Model.report`); the summary's
``communication`` is rank 0's counts per design iteration (:func:`per_iteration`).
"""

from __future__ import annotations

import copy
from typing import Any

SECTIONS = ("halo", "reductions", "gathers")


class CommCounts:
    """Counters of one rank's communication, by section and label."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, dict[str, int]]] = {s: {} for s in SECTIONS}

    def _add(self, section: str, label: str, **amounts: int) -> None:
        entry = self.data[section].setdefault(label, {k: 0 for k in amounts})
        for k, v in amounts.items():
            entry[k] = entry.get(k, 0) + int(v)

    def exchange(self, label: str) -> None:
        """One ghost region filled (its messages are counted by :meth:`message`)."""
        self._add("halo", label, exchanges=1, messages=0, bytes=0)

    def message(self, label: str, nbytes: int) -> None:
        self._add("halo", label, exchanges=0, messages=1, bytes=nbytes)

    def reduction(self, label: str, values: int) -> None:
        self._add("reductions", label, calls=1, values=values)

    def gather(self, label: str, nbytes: int) -> None:
        self._add("gathers", label, calls=1, bytes=nbytes)

    def snapshot(self) -> dict[str, dict[str, dict[str, int]]]:
        return copy.deepcopy(self.data)


def difference(after: dict, before: dict) -> dict:
    """``after - before`` of two snapshots, the labels with something counted only."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for section in SECTIONS:
        part = {}
        for label, entry in after.get(section, {}).items():
            old = before.get(section, {}).get(label, {})
            d = {k: v - old.get(k, 0) for k, v in entry.items()}
            if any(d.values()):
                part[label] = d
        out[section] = part
    return out


def per_iteration(snapshots: list[dict], cg: list[int], size: int) -> dict[str, Any]:
    """The summary's ``communication``: ``snapshots`` the counts at the start and at each
    design iteration's report, ``cg`` the CG iterations (forward and adjoint) of each
    design iteration. Iteration k's counts run from report k - 1 (the start for the
    first) to report k: the optimizer's update and the report's own collectives of
    iteration k - 1, then the evaluation of the new design."""
    steps = [difference(b, a) for a, b in zip(snapshots, snapshots[1:])]
    return {"ranks": size, "rank": 0, "cg_iterations": list(cg), "per_iteration": steps}
