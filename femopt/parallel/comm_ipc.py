"""Halo layers between ranks of one host that share a GPU, kept on the device.

NCCL does not take two ranks of one communicator on one GPU, and the host transport's
exchange (copy to the host, MPI, copy back) makes each rank wait for its queued kernels,
so the GPU idles while Python launches the next ones. :class:`IpcTransport` keeps the
layers on the device: each rank owns an *outbox* per peer (device memory from
``cudaMalloc``, exported once by a CUDA IPC handle that the peer opens), and two
interprocess events per pair order the copies across the two processes:

- sending: the stream waits for the peer's read of the last message (event ``read``),
  copies the layer into the outbox and records ``written``; a one-byte MPI message tells
  the peer (and where the outbox grew, its new handle follows);
- receiving: after that message, the stream waits for the peer's ``written``, copies from
  the peer's outbox and records ``read``; a one-byte MPI message tells the peer.

A halo exchange's two directions go together (:meth:`IpcTransport.exchange`): the sends,
then the receives, so the ranks meet once per exchange.

A stream waits for an event's latest record at the time of the wait call, so each wait is
enqueued only after the message saying that the matching record is enqueued, and no event
is recorded again before the peer's message says it has enqueued its wait. The host does
not wait for the GPU: it waits only for the peer's host to reach the same exchange. The
gathers into replicated coarse levels go the same way (every peer's part into its place);
sums go through host memory and MPI as in
:class:`~femopt.parallel.comm_device.HostTransport` (their totals are wanted on the host).

The device operations are :class:`CudaIpc`'s; :class:`FileIpc` is their CPU twin
(outboxes in memory-mapped files, copies at once, events that need no wait), so the
protocol runs under ``mpiexec`` in the tests without a GPU.
"""

from __future__ import annotations

import atexit
import os
import sys
import tempfile
from typing import Any

import numpy as np

from femopt.parallel.comm_device import HostTransport

WRITTEN, READ, HANDLE = 7101, 7102, 7103  # MPI tags of the messages


class CudaIpc:
    """CUDA IPC's memory and events through ``cupy.cuda.runtime``, on the current stream."""

    DISABLE_TIMING, INTERPROCESS, DEVICE_TO_DEVICE = 2, 4, 3

    def __init__(self, cupy: Any):
        self.cupy, self.rt = cupy, cupy.cuda.runtime

    def _stream(self) -> int:
        return self.cupy.cuda.get_current_stream().ptr

    def alloc(self, nbytes: int) -> tuple[Any, bytes]:
        ptr = self.rt.malloc(nbytes)
        return ptr, self.rt.ipcGetMemHandle(ptr)

    def open(self, handle: bytes) -> Any:
        return self.rt.ipcOpenMemHandle(handle)

    def put(self, box: Any, a: Any) -> None:
        self.rt.memcpyAsync(box, a.data.ptr, a.nbytes, self.DEVICE_TO_DEVICE, self._stream())

    def get(self, a: Any, box: Any) -> None:
        self.rt.memcpyAsync(a.data.ptr, box, a.nbytes, self.DEVICE_TO_DEVICE, self._stream())

    def event(self) -> tuple[Any, bytes]:
        ev = self.rt.eventCreateWithFlags(self.DISABLE_TIMING | self.INTERPROCESS)
        return ev, self.rt.ipcGetEventHandle(ev)

    def open_event(self, handle: bytes) -> Any:
        return self.rt.ipcOpenEventHandle(handle)

    def record(self, ev: Any) -> None:
        self.rt.eventRecord(ev, self._stream())

    def wait(self, ev: Any) -> None:
        self.rt.streamWaitEvent(self._stream(), ev, 0)

    def finish(self) -> None:
        self.rt.deviceSynchronize()


class FileIpc:
    """The CPU twin of :class:`CudaIpc`: an outbox is a memory-mapped file in ``folder``
    (None: /dev/shm where there is one, else the temporary folder; its path the handle),
    copies are done at once, so events need no wait."""

    def __init__(self, folder: str | None = None):
        self.folder = folder or ("/dev/shm" if os.path.isdir("/dev/shm") else None)

    def alloc(self, nbytes: int) -> tuple[Any, str]:
        fd, path = tempfile.mkstemp(prefix="femopt-outbox-", dir=self.folder)
        os.ftruncate(fd, nbytes)
        os.close(fd)
        return np.memmap(path, dtype=np.uint8, mode="r+", shape=(nbytes,)), path

    def open(self, handle: str) -> Any:
        box = np.memmap(handle, dtype=np.uint8, mode="r")
        os.unlink(handle)  # both ends have it mapped: gone from the file system
        return box

    def put(self, box: Any, a: np.ndarray) -> None:
        box[:a.nbytes] = np.ascontiguousarray(a).reshape(-1).view(np.uint8)

    def get(self, a: np.ndarray, box: Any) -> None:
        a.reshape(-1).view(np.uint8)[...] = box[:a.nbytes]

    def event(self) -> tuple[Any, None]:
        return None, None

    def open_event(self, handle: None) -> None:
        return None

    def record(self, ev: Any) -> None:
        pass

    def wait(self, ev: Any) -> None:
        pass

    def finish(self) -> None:
        pass


class IpcTransport(HostTransport):
    """Halo layers and gathers device to device between ranks of one host (``ops``:
    :class:`CudaIpc`, or :class:`FileIpc` with NumPy); sums as :class:`HostTransport`.
    Made by :func:`ipc_transport`.

    Args:
        host: the run's MPI communicator. xp: the array module. ops: the device operations.
        events: peer -> this rank's (written, read) events for it.
        peer_events: peer -> the peer's (written, read) events for this rank, opened.
    """

    name = "ipc"

    def __init__(self, host: Any, xp: Any, ops: Any, events: dict, peer_events: dict):
        super().__init__(host, xp)
        self.ops, self.mpi = ops, host.mpi
        self.written = {p: w for p, (w, _) in events.items()}
        self.read = {p: r for p, (_, r) in events.items()}
        self.peer_written = {p: w for p, (w, _) in peer_events.items()}
        self.peer_read = {p: r for p, (_, r) in peer_events.items()}
        # peer -> (box, capacity in bytes); an outbox that grew is kept (``retired``): the
        # peer keeps it mapped
        self.outbox: dict[int, tuple[Any, int]] = {}
        self.retired: list[Any] = []
        self.inbox: dict[int, Any] = {}  # peer -> its outbox for this rank, opened
        self.sent: set[int] = set()  # peers that have had a message from this rank
        self.closed = False
        # the messages: one byte, "the outbox grew" (its handle follows) in a "written"
        self._token_out, self._token_in = np.zeros(1, np.uint8), np.zeros(1, np.uint8)
        # MPI's finalization does not take messages nobody received: the peers' last
        # "read" messages are taken at the process's exit (before mpi4py finalizes)
        atexit.register(self.close)

    def sendrecv(self, send: Any, dest: int | None, recv: Any, source: int | None,
                 tag: int) -> None:
        self.exchange([(send, dest, recv, source, tag)])

    def exchange(self, pairs: list[tuple[Any, int | None, Any, int | None, int]]) -> None:
        """The sends of every pair, then the receives: one wait for the peers per
        exchange, not one per direction."""
        for send, dest, _, _, _ in pairs:
            if send is not None and dest is not None:
                self._send(send, dest)
        for _, _, recv, source, _ in pairs:
            if recv is not None and source is not None:
                self._recv(recv, source)

    def allgather(self, local: Any) -> Any:
        """Equal-sized ``local`` (flat) of every rank, concatenated in rank order, device
        to device: each peer's part received straight into its place."""
        n, size, me = local.shape[0], self.host.size, self.host.rank
        out = self.xp.empty(n * size, dtype=local.dtype)
        out[me * n:(me + 1) * n] = local
        self.exchange([(local, p, out[p * n:(p + 1) * n], p, 0)
                       for p in range(size) if p != me])
        return out

    def _send(self, send: Any, dest: int) -> None:
        ops = self.ops
        if dest in self.sent:  # the peer has enqueued its read of the last message
            self.mpi.Recv(self._token_in, source=dest, tag=READ)
            ops.wait(self.peer_read[dest])
        self.sent.add(dest)
        box, capacity = self.outbox.get(dest, (None, 0))
        grew = send.nbytes > capacity
        if grew:
            if box is not None:
                self.retired.append(box)
            capacity = max(send.nbytes, 2 * capacity)
            box, handle = ops.alloc(capacity)
            self.outbox[dest] = (box, capacity)
        ops.put(box, send)
        ops.record(self.written[dest])
        self._token_out[0] = grew
        self.mpi.Send(self._token_out, dest=dest, tag=WRITTEN)
        if grew:
            self.mpi.send(handle, dest=dest, tag=HANDLE)

    def _recv(self, recv: Any, source: int) -> None:
        ops = self.ops
        self.mpi.Recv(self._token_in, source=source, tag=WRITTEN)
        if self._token_in[0]:
            self.inbox[source] = ops.open(self.mpi.recv(source=source, tag=HANDLE))
        ops.wait(self.peer_written[source])
        ops.get(recv, self.inbox[source])
        ops.record(self.read[source])
        self._token_out[0] = 0
        self.mpi.Send(self._token_out, dest=source, tag=READ)

    def close(self) -> None:
        """Take the peers' last "read" messages, let this rank's device finish its
        copies, and wait for every rank to have done so: no outbox goes away while a peer
        may still read it."""
        if self.closed:
            return
        self.closed = True
        for dest in sorted(self.sent):
            self.mpi.Recv(self._token_in, source=dest, tag=READ)
        self.ops.finish()
        self.mpi.Barrier()


def ipc_transport(host: Any, xp: Any, ops: Any) -> HostTransport:
    """:class:`IpcTransport` on every rank, or the host transport on every rank where
    some rank cannot set it up (the reason on rank 0's standard error). Every rank takes
    part in the same two collectives whatever fails."""
    mpi, me = host.mpi, host.rank
    peers = [r for r in range(host.size) if r != me]
    events, error = {}, None
    try:  # this rank's (written, read) events per peer, and their handles
        made = {p: (ops.event(), ops.event()) for p in peers}
        events = {p: (w[0], r[0]) for p, (w, r) in made.items()}
        handles = {p: (w[1], r[1]) for p, (w, r) in made.items()}
    except Exception as exc:  # CUDA's own error types vary by version
        handles, error = None, exc
    everyone = mpi.allgather(handles)
    peer_events = {}
    if all(h is not None for h in everyone):
        try:
            peer_events = {p: (ops.open_event(everyone[p][me][0]),
                               ops.open_event(everyone[p][me][1])) for p in peers}
        except Exception as exc:
            error = exc
    errors = mpi.allgather(None if error is None else f"{type(error).__name__}: {error}")
    if any(e is not None for e in errors) or any(h is None for h in everyone):
        if host.root:
            first = next((e for e in errors if e is not None), "a rank made no events")
            print(f"femopt: ranks sharing a GPU exchange through host memory: CUDA IPC "
                  f"could not be set up ({first})", file=sys.stderr)
        return HostTransport(host, xp)
    return IpcTransport(host, xp, ops, events, peer_events)
