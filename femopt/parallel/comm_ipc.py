"""Halo layers between ranks of one host that share a GPU, kept on the device.

NCCL does not take two ranks of one communicator on one GPU, and the host transport's
exchange (copy to the host, MPI, copy back) makes each rank wait for its queued kernels,
so the GPU idles while Python launches the next ones. :class:`IpcTransport` keeps the
layers on the device: each rank owns an *outbox* per peer (device memory from
``cudaMalloc``, exported once by a CUDA IPC handle that the peer opens), and two
interprocess events per pair order the copies across the two processes:

- sending: the stream waits for the peer's read of the last message (event ``read``),
  copies the layer into the outbox and records ``written``; a one-byte MPI message tells
  the peer (and where the outbox grew, its new handle follows); messages are sent without
  waiting for them (``Isend``), so the protocol does not need MPI to buffer them;
- receiving: after that message, the stream waits for the peer's ``written``, copies from
  the peer's outbox and records ``read``; a one-byte MPI message tells the peer.

The transport has a duplicate of the run's communicator, so two transports in one
process (two runs) never take each other's messages. A halo exchange's two directions go
together (:meth:`IpcTransport.exchange`): the sends, then the receives, so the ranks meet
once per exchange.

A stream waits for an event's latest record at the time of the wait call, so each wait is
enqueued only after the message saying that the matching record is enqueued, and no event
is recorded again before the peer's message says it has enqueued its wait. The host does
not wait for the GPU: it waits only for the peer's host to reach the same exchange. The
gathers into replicated coarse levels go the same way (every peer's part into its place);
sums go through host memory and MPI as in
:class:`~femopt.parallel.comm_host.HostTransport` (their totals are wanted on the host).

The device operations are :class:`CudaIpc`'s; :class:`FileIpc` is their CPU twin
(outboxes in memory-mapped files, copies at once, events that need no wait), so the
protocol runs under ``mpiexec`` in the tests without a GPU.
"""

from __future__ import annotations

import atexit
import os
import tempfile
from typing import Any

import numpy as np

from femopt.parallel.comm_host import HostTransport, rows_view

WRITTEN, READ, HANDLE = 7101, 7102, 7103  # MPI tags of the messages
MAX_PITCH = 11  # cudaDevAttrMaxPitch: the largest row pitch of a 2D copy (2 GiB on an H100)


class CudaIpc:
    """CUDA IPC's memory and events through ``cupy.cuda.runtime``, on the current stream."""

    def __init__(self, cupy: Any):
        self.cupy, self.rt = cupy, cupy.cuda.runtime
        rt = self.rt
        self.event_flags = rt.eventDisableTiming | rt.eventInterprocess
        self.device_to_device = rt.memcpyDeviceToDevice
        # the largest row pitch of a 2D copy (0: no 2D copies, each view packed first)
        self.max_pitch = 0
        if hasattr(rt, "memcpy2DAsync"):
            try:
                self.max_pitch = int(rt.deviceGetAttribute(MAX_PITCH, cupy.cuda.Device().id))
            except Exception:  # CUDA's own error types vary by version: pack every view
                self.max_pitch = 0

    def _stream(self) -> int:
        return self.cupy.cuda.get_current_stream().ptr

    def alloc(self, nbytes: int) -> tuple[Any, bytes]:
        ptr = self.rt.malloc(nbytes)
        return ptr, self.rt.ipcGetMemHandle(ptr)

    def open(self, handle: bytes) -> Any:
        return self.rt.ipcOpenMemHandle(handle)

    def close(self, box: Any) -> None:
        self.rt.ipcCloseMemHandle(box)

    def free(self, box: Any) -> None:
        self.rt.free(box)

    def takes_view(self, a: Any) -> bool:
        """Whether :meth:`put` and :meth:`get` take ``a``, a view of pitched rows
        (:func:`~femopt.parallel.comm_host.rows_view`), as it is: one 2D copy, no packing;
        not where its pitch passes the device's largest (``memPitch``)."""
        return self.max_pitch > 0 and rows_view(a) and a.strides[0] <= self.max_pitch

    def put(self, box: Any, a: Any) -> None:
        if a.flags.c_contiguous:
            self.rt.memcpyAsync(box, a.data.ptr, a.nbytes, self.device_to_device,
                                self._stream())
            return
        width = a.shape[1] * a.dtype.itemsize  # a view of pitched rows, packed in the box
        self.rt.memcpy2DAsync(box, width, a.data.ptr, a.strides[0], width, a.shape[0],
                              self.device_to_device, self._stream())

    def get(self, a: Any, box: Any) -> None:
        if a.flags.c_contiguous:
            self.rt.memcpyAsync(a.data.ptr, box, a.nbytes, self.device_to_device,
                                self._stream())
            return
        width = a.shape[1] * a.dtype.itemsize
        self.rt.memcpy2DAsync(a.data.ptr, a.strides[0], box, width, width, a.shape[0],
                              self.device_to_device, self._stream())

    def event(self) -> tuple[Any, bytes]:
        ev = self.rt.eventCreateWithFlags(self.event_flags)
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

    def close(self, box: Any) -> None:
        pass

    def free(self, box: Any) -> None:
        if box.filename is not None and os.path.exists(box.filename):
            os.unlink(box.filename)  # never opened by its peer

    def takes_view(self, a: np.ndarray) -> bool:
        """A view of pitched rows is taken as it is (packed in the box as it reads)."""
        return rows_view(a)

    def put(self, box: Any, a: np.ndarray) -> None:
        box[:a.nbytes] = np.ascontiguousarray(a).reshape(-1).view(np.uint8)

    def get(self, a: np.ndarray, box: Any) -> None:
        a[...] = box[:a.nbytes].view(a.dtype).reshape(a.shape)

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
    Made by :func:`ipc_transport`, which sets up its events and first outboxes.

    Args:
        host: the run's communicator. xp: the array module. ops: the device operations.
        mpi: a communicator of its own (a duplicate of the run's), so that the messages
            of two transports (two runs in one process) never meet.
        link: peer -> (this rank's written and read events for it, its outbox for it, the
            outbox's capacity in bytes, the peer's written and read events and outbox for
            this rank, opened).
    """

    name = "ipc"

    def __init__(self, host: Any, xp: Any, ops: Any, mpi: Any, link: dict):
        super().__init__(host, xp)
        self.ops, self.mpi = ops, mpi
        self.written = {p: v[0] for p, v in link.items()}
        self.read = {p: v[1] for p, v in link.items()}
        self.outbox = {p: (v[2], v[3]) for p, v in link.items()}  # peer -> (box, bytes)
        self.peer_written = {p: v[4] for p, v in link.items()}
        self.peer_read = {p: v[5] for p, v in link.items()}
        self.inbox = {p: v[6] for p, v in link.items()}  # the peer's outbox for this rank
        # an outbox that grew is kept: its peer keeps it mapped
        self.retired: list[Any] = []
        self.sent: set[int] = set()  # peers that have had a message from this rank
        self.pending: list[tuple[Any, Any]] = []  # (request, buffer) of messages sent
        self.closed = False
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
        # the sent messages' requests that are done (each holds its buffer till then)
        self.pending = [(q, b) for q, b in self.pending if not q.Test()]

    def allgather(self, local: Any) -> Any:
        """Equal-sized ``local`` (flat) of every rank, concatenated in rank order, device
        to device: each peer's part received straight into its place."""
        n, size, me = local.shape[0], self.host.size, self.host.rank
        out = self.xp.empty(n * size, dtype=local.dtype)
        out[me * n:(me + 1) * n] = local
        self.exchange([(local, p, out[p * n:(p + 1) * n], p, 0)
                       for p in range(size) if p != me])
        return out

    def _message(self, dest: int, tag: int, flag: int = 0) -> None:
        """A one-byte message, not waited for: MPI need not buffer it."""
        buf = np.full(1, flag, dtype=np.uint8)
        self.pending.append((self.mpi.Isend(buf, dest=dest, tag=tag), buf))

    def takes_view(self, a: Any) -> bool:
        """Whether a halo's send or receive ``a``, a view, is copied as it is (no
        packing): as its device operations say."""
        return self.ops.takes_view(a)

    def _copies_as_is(self, a: Any) -> bool:
        return a.flags.c_contiguous or self.takes_view(a)

    def _send(self, send: Any, dest: int) -> None:
        ops = self.ops
        if not self._copies_as_is(send):
            send = self.xp.ascontiguousarray(send)
        if dest in self.sent:  # the peer has enqueued its read of the last message
            self.mpi.Recv(np.empty(1, np.uint8), source=dest, tag=READ)
            ops.wait(self.peer_read[dest])
        box, capacity = self.outbox[dest]
        grew = send.nbytes > capacity
        if grew:
            self.retired.append(box)
            capacity = max(send.nbytes, 2 * capacity)
            box, handle = ops.alloc(capacity)
            self.outbox[dest] = (box, capacity)
        ops.put(box, send)
        ops.record(self.written[dest])
        self._message(dest, WRITTEN, int(grew))
        if grew:
            self.pending.append((self.mpi.isend(handle, dest=dest, tag=HANDLE), None))
        self.sent.add(dest)

    def _recv(self, recv: Any, source: int) -> None:
        ops = self.ops
        flag = np.empty(1, np.uint8)
        self.mpi.Recv(flag, source=source, tag=WRITTEN)
        if flag[0]:
            self.inbox[source] = ops.open(self.mpi.recv(source=source, tag=HANDLE))
        ops.wait(self.peer_written[source])
        if self._copies_as_is(recv):
            ops.get(recv, self.inbox[source])
        else:  # the copy reads bytes: into a contiguous buffer first
            tmp = self.xp.empty(recv.shape, dtype=recv.dtype)
            ops.get(tmp, self.inbox[source])
            recv[...] = tmp
        ops.record(self.read[source])
        self._message(source, READ)

    def close(self) -> None:
        """Take the peers' last "read" messages, let this rank's device finish its
        copies, and wait for every rank to have done so: no outbox goes away while a peer
        may still read it."""
        if self.closed:
            return
        self.closed = True
        for dest in sorted(self.sent):
            self.mpi.Recv(np.empty(1, np.uint8), source=dest, tag=READ)
        for request, _ in self.pending:
            request.Wait()
        self.pending = []
        self.ops.finish()
        self.mpi.Barrier()
        self.mpi.Free()


# the first outbox's bytes per peer (a node layer of a 128x128 face in float32: 196 KiB)
FIRST_OUTBOX = 1 << 18


def ipc_transport(host: Any, xp: Any, ops: Any) -> HostTransport:
    """:class:`IpcTransport` on every rank, or the host transport on every rank where
    some rank cannot set it up (the reason as the transport's ``ipc_error``, for the log).
    Each rank makes its events and a first outbox per peer and opens the peers' (so the
    checks of a peer's GPU and of the container's IPC come here, not mid-run), every rank
    taking part in the same collectives whatever fails."""
    mpi = host.mpi.Dup()
    me = host.rank
    peers = [r for r in range(host.size) if r != me]
    made, error = {}, None
    try:
        for p in peers:
            (w, wh), (r, rh) = ops.event(), ops.event()
            box, bh = ops.alloc(FIRST_OUTBOX)
            made[p] = (w, r, box, FIRST_OUTBOX, wh, rh, bh)
        handles = {p: v[4:] for p, v in made.items()}
    except Exception as exc:  # CUDA's own error types vary by version
        handles, error = None, exc
    everyone = mpi.allgather(handles)
    link, opened = {}, []
    if all(h is not None for h in everyone):
        try:
            for p in peers:
                wh, rh, bh = everyone[p][me]
                events = (ops.open_event(wh), ops.open_event(rh))
                opened.append(ops.open(bh))
                link[p] = made[p][:4] + events + (opened[-1],)
        except Exception as exc:
            error = exc
    errors = mpi.allgather(None if error is None else f"{type(error).__name__}: {error}")
    if any(e is not None for e in errors):  # a rank without handles has its error
        # the peers' outboxes closed here before any rank frees its own
        for box in opened:
            ops.close(box)
        mpi.Barrier()
        for v in made.values():
            ops.free(v[2])
        mpi.Free()
        transport = HostTransport(host, xp)
        transport.ipc_error = next(e for e in errors if e is not None)
        return transport
    return IpcTransport(host, xp, ops, mpi, link)
