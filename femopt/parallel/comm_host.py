"""Device arrays between ranks through host memory and MPI: the transport of ranks that
share a GPU where CUDA IPC is not used, and with NumPy arrays the CPU twin of the device
path (:mod:`femopt.parallel.comm_device`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from femopt.backend import to_host
from femopt.parallel.comm import Comm


def rows_view(a: Any) -> bool:
    """Whether ``a`` is 2D with contiguous rows (a pitched block: a ghost layer's
    components), so that one 2D copy moves it."""
    item = a.dtype.itemsize
    return (a.ndim == 2 and a.strides[1] == item and a.strides[0] >= a.shape[1] * item)


class HostTransport:
    """NCCL's calls through host buffers and MPI (``host``: the MPI communicator)."""

    name = "mpi"

    def __init__(self, host: Comm, xp: Any):
        # a wrapper of its own: the device communicator counts these calls once
        self.host, self.xp = Comm(host.mpi), xp

    def sendrecv(self, send: Any, dest: int | None, recv: Any, source: int | None,
                 tag: int) -> None:
        sbuf = to_host(send) if send is not None else None
        rbuf = (np.empty(recv.shape, dtype=recv.dtype) if recv is not None
                and self.xp is not np else recv)
        self.host.sendrecv(sbuf, dest, rbuf, source, tag)
        if recv is not None and rbuf is not recv:
            recv[...] = self.xp.asarray(rbuf)

    def exchange(self, pairs: list[tuple[Any, int | None, Any, int | None, int]]) -> None:
        """The pairs' :meth:`sendrecv` one after the other."""
        for send, dest, recv, source, tag in pairs:
            self.sendrecv(send, dest, recv, source, tag)

    def allgather(self, local: Any) -> Any:
        """Equal-sized ``local`` (flat) of every rank, concatenated in rank order."""
        local = to_host(local)
        return self.xp.asarray(self.host.allgather_rows(local, [local.shape[0]]
                                                        * self.host.size))

    def allreduce_sum(self, local: Any) -> Any:
        full = self.host.allgather_rows(to_host(local)[None], [1] * self.host.size)
        return self.xp.asarray(full.sum(axis=0))
