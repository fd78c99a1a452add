"""The communicator of a distributed run, and reductions that do not depend on the rank
count.

A sum over a field (a dot product in CG, a volume, a compliance) is computed per layer of
the slab axis on the rank that owns the layer (NumPy's pairwise sum over the layer), the
per-layer sums are gathered on every rank in global layer order and added there in that
fixed order. So every rank gets the same number, and it is the same number on 1, 2 or 3
ranks: a distributed run repeats the one-rank run's iterations exactly.

``Comm`` wraps an mpi4py communicator; ``SERIAL`` is the one-rank stand-in (no MPI
needed) that the one-rank reference run and the replicated coarse levels use.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from femopt.parallel.comm_counts import CommCounts

# environment variables by which an MPI launcher tells a process how many ranks it has
WORLD_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "PMIX_SIZE")


def launched_size() -> int:
    """The number of ranks an MPI launcher (mpiexec) started, from its environment; 1
    when the process was not started by one."""
    for var in WORLD_SIZE_VARS:
        value = os.environ.get(var)
        if value and value.isdigit():
            return int(value)
    return 1


def launched_rank() -> int:
    """This process's rank as an MPI launcher tells it (0 when there is none)."""
    for var in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK"):
        value = os.environ.get(var)
        if value and value.isdigit():
            return int(value)
    return 0


class Comm:
    """A communicator: rank, size, halo exchange (``sendrecv``) and gathers.

    Args:
        mpi: an mpi4py communicator, or None for a single rank without MPI.
    """

    xp = np  # the array module of the arrays it exchanges

    def __init__(self, mpi: Any = None):
        self.mpi = mpi
        self.rank = 0 if mpi is None else mpi.Get_rank()
        self.size = 1 if mpi is None else mpi.Get_size()
        self.counts = CommCounts()  # what crosses between ranks (comm_counts)

    @property
    def root(self) -> bool:
        return self.rank == 0

    def __repr__(self) -> str:
        return f"Comm(rank {self.rank} of {self.size})"

    # -- point to point ---------------------------------------------------------------

    def sendrecv(self, send: np.ndarray | None, dest: int | None, recv: np.ndarray | None,
                 source: int | None, tag: int = 0, label: str = "other") -> None:
        """Send ``send`` to ``dest`` and receive ``recv`` from ``source`` (None: nobody);
        the message counted under the halo ``label``."""
        if self.mpi is None:
            return
        from mpi4py import MPI

        if send is not None and dest is not None:
            self.counts.message(label, send.nbytes)

        null = MPI.PROC_NULL
        sbuf = np.ascontiguousarray(send) if send is not None else np.empty(0)
        rbuf = recv if recv is not None else np.empty(0)
        if not rbuf.flags.c_contiguous:  # a view (a ghost layer): MPI takes whole buffers
            rbuf = np.empty(recv.shape, dtype=recv.dtype)
        self.mpi.Sendrecv(sbuf, dest if dest is not None else null, tag,
                          rbuf, source if source is not None else null, tag)
        if recv is not None and rbuf is not recv:
            recv[...] = rbuf

    def exchange(self, pairs: list[tuple[Any, int | None, Any, int | None, int]],
                 label: str = "other") -> None:
        """Several :meth:`sendrecv` of one halo exchange, ``(send, dest, recv, source,
        tag)`` each: the sends read no array that a receive writes, so a transport may
        take them together (one after the other here)."""
        for send, dest, recv, source, tag in pairs:
            self.sendrecv(send, dest, recv, source, tag=tag, label=label)

    # -- collectives --------------------------------------------------------------------

    def allgather_rows(self, local: np.ndarray, rows: list[int] | None = None
                       ) -> np.ndarray:
        """The rows (first axis) of every rank's ``local``, concatenated in rank order, on
        every rank. The other axes must agree; ``rows``: every rank's row count, where
        the caller knows them (one collective instead of two)."""
        local = np.ascontiguousarray(local)
        if self.mpi is None:
            return local.copy()
        self.counts.gather("allgather", local.nbytes)
        return self._allgatherv(local, rows)

    def _allgatherv(self, local: np.ndarray, rows: list[int] | None = None) -> np.ndarray:
        """Every rank's rows of the contiguous ``local`` in rank order (uncounted);
        ``rows``: every rank's row count where the caller knows them (else asked)."""
        rows = self.row_counts(local, rows)
        row = int(np.prod(local.shape[1:], dtype=np.int64))
        out = np.empty((sum(rows),) + local.shape[1:], dtype=local.dtype)
        counts = [r * row for r in rows]
        displs = np.concatenate([[0], np.cumsum(counts)[:-1]]).tolist()
        self.mpi.Allgatherv(local, [out, counts, displs, _mpi_type(local.dtype)])
        return out

    def row_counts(self, local: Any, rows: list[int] | None) -> list[int]:
        """Every rank's row count: ``rows`` where given (checked against ``local``), else
        asked of every rank."""
        if rows is None:
            return self.mpi.allgather(local.shape[0])
        if len(rows) != self.size or rows[self.rank] != local.shape[0]:
            raise RuntimeError(f"rank {self.rank} holds {local.shape[0]} rows, not "
                               f"{rows[self.rank] if len(rows) == self.size else rows}")
        return list(rows)

    def gather_rows(self, local: np.ndarray) -> np.ndarray | None:
        """As :meth:`allgather_rows`, on rank 0 only (None elsewhere)."""
        local = np.ascontiguousarray(local)
        if self.mpi is None:
            return local.copy()
        self.counts.gather("gather", local.nbytes)
        rows = self.mpi.gather(local.shape[0], root=0)
        row = int(np.prod(local.shape[1:], dtype=np.int64))
        if self.rank == 0:
            out = np.empty((sum(rows),) + local.shape[1:], dtype=local.dtype)
            counts = [r * row for r in rows]
            displs = np.concatenate([[0], np.cumsum(counts)[:-1]]).tolist()
            self.mpi.Gatherv(local, [out, counts, displs, _mpi_type(local.dtype)], root=0)
            return out
        self.mpi.Gatherv(local, None, root=0)
        return None

    def sum_layers(self, partials: np.ndarray, label: str = "other",
                   rows: list[int] | None = None) -> np.ndarray:
        """Totals of per-layer partial sums ``partials`` (n_sums, n_own_layers): the layers
        of every rank gathered in global order, each row summed in that order (counted
        as one reduction of n_sums values under ``label``, not as a gather); ``rows``:
        every rank's layer count, where known (one collective instead of two)."""
        t = np.ascontiguousarray(partials.T)  # (n_own_layers, n_sums)
        if self.mpi is None:
            return np.ascontiguousarray(t.T).sum(axis=1)
        self.counts.reduction(label, t.shape[1])
        return np.ascontiguousarray(self._allgatherv(t, rows).T).sum(axis=1)

    def sum_groups(self, groups: list[tuple[np.ndarray, list[int] | None]],
                   label: str = "other") -> list[np.ndarray]:
        """:meth:`sum_layers` of several groups ``(partials, rows)`` (each its own layers,
        such as the slabs of two multigrid levels) by one collective: the same totals,
        bit for bit, as one call per group; counted as one reduction of all their
        values under ``label``. The pieces travel as float64 and each group is added in
        its own dtype (float32 -> float64 -> float32 is exact)."""
        if self.mpi is None or len(groups) <= 1:
            return [self.sum_layers(p, label, rows) for p, rows in groups]
        self.counts.reduction(label, sum(p.shape[0] for p, _ in groups))
        dtypes = [np.asarray(p).dtype for p, _ in groups]
        ts = [np.ascontiguousarray(np.asarray(p, dtype=np.float64).T) for p, _ in groups]
        rows = [self.row_counts(t, r) for t, (_, r) in zip(ts, groups)]
        # one flat piece per rank: every group's (its layers, its sums) in turn
        full = self._allgatherv(np.concatenate([t.ravel() for t in ts]),
                                [sum(r[k] * t.shape[1] for t, r in zip(ts, rows))
                                 for k in range(self.size)])
        parts: list[list[np.ndarray]] = [[] for _ in ts]
        at = 0
        for k in range(self.size):
            for g, (t, r) in enumerate(zip(ts, rows)):
                n = r[k] * t.shape[1]
                parts[g].append(full[at:at + n].reshape(r[k], t.shape[1]))
                at += n
        return [np.ascontiguousarray(np.concatenate(p).T).astype(dt, copy=False).sum(axis=1)
                for p, dt in zip(parts, dtypes)]

    def max(self, value: float) -> float:
        if self.mpi is None:
            return float(value)
        from mpi4py import MPI

        self.counts.reduction("max", 1)
        return float(self.mpi.allreduce(float(value), op=MPI.MAX))

    def any(self, flag: bool) -> bool:
        if self.mpi is None:
            return bool(flag)
        from mpi4py import MPI

        self.counts.reduction("any", 1)
        return bool(self.mpi.allreduce(bool(flag), op=MPI.LOR))

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj`` in rank order on rank 0 (None on the others)."""
        if self.mpi is None:
            return [obj]
        self.counts.gather("gather", 0)
        return self.mpi.gather(obj, root=0)

    def bcast(self, obj: Any) -> Any:
        if self.mpi is None:
            return obj
        self.counts.reduction("bcast", 1)
        return self.mpi.bcast(obj, root=0)

    def barrier(self) -> None:
        if self.mpi is not None:
            self.mpi.Barrier()

    def abort(self, code: int) -> None:
        if self.mpi is not None:
            self.mpi.Abort(code)


def _mpi_type(dtype: np.dtype) -> Any:
    from mpi4py import MPI

    return {np.dtype(np.float64): MPI.DOUBLE, np.dtype(np.float32): MPI.FLOAT,
            np.dtype(np.int64): MPI.INT64_T, np.dtype(np.int32): MPI.INT32_T,
            np.dtype(np.bool_): MPI.C_BOOL, np.dtype(np.uint8): MPI.UINT8_T}[np.dtype(dtype)]


SERIAL = Comm(None)

_WORLD: Comm | None = None


def world() -> Comm:
    """The communicator of this process: MPI's world when an MPI launcher started more
    than one rank (mpi4py imported then, and only then), else :data:`SERIAL`."""
    global _WORLD
    if _WORLD is None:
        if launched_size() > 1:
            from mpi4py import MPI

            _WORLD = Comm(MPI.COMM_WORLD) if MPI.COMM_WORLD.Get_size() > 1 else SERIAL
        else:
            _WORLD = SERIAL
    return _WORLD
