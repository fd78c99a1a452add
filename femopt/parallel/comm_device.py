"""The communicator of a distributed run on GPUs: :class:`~femopt.parallel.comm.Comm`'s
interface for arrays on the device.

Each rank runs on GPU ``rank % n_gpus``. Device arrays (halo layers, gathered coarse
levels, partial sums) travel through a *transport*:

- :class:`NcclTransport`: CuPy's ``cupy.cuda.nccl`` -- a ``NcclCommunicator`` made from a
  unique id that rank 0 draws and broadcasts over MPI; send/recv pairs inside
  ``groupStart``/``groupEnd`` for the halos, ``allGather`` and ``allReduce`` for the rest,
  all on the current stream (so they are ordered with the kernels around them);
- :class:`HostTransport`: the same calls staged through host memory and MPI. NCCL does
  not take two ranks of one communicator on one GPU ("duplicate GPU"); ranks of one host
  that share a GPU exchange their halo layers and gathers device to device through CUDA
  IPC (:class:`~femopt.parallel.comm_ipc.IpcTransport`, sums as here), or with
  ``FEMOPT_GPU_TRANSPORT=host`` through this one. With NumPy arrays it is the CPU twin of
  the device path, which is how the tests run the device code without a GPU.

Host objects (flags, maxima, the broadcast of rank 0's decisions, what is gathered for
the results directory) go through MPI as on the CPU. Sums need not be deterministic on
the device (the run agrees with the one-process GPU run within the solver tolerance);
they are taken in float64: each rank sums its part, then one ``allReduce``.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import numpy as np

from femopt.backend import gpu_allocator, to_host
from femopt.errors import InputError
from femopt.parallel.comm import Comm
from femopt.parallel.comm_host import HostTransport


class NcclTransport:
    """The collectives of ``cupy.cuda.nccl`` on the current device and stream."""

    name = "nccl"

    def __init__(self, host: Comm):
        import cupy
        from cupy.cuda import nccl

        self.nccl, self.cupy = nccl, cupy
        uid = host.bcast(nccl.get_unique_id() if host.root else None)
        self.comm = nccl.NcclCommunicator(host.size, uid, host.rank)
        self.types = {np.dtype(np.float64): nccl.NCCL_FLOAT64,
                      np.dtype(np.float32): nccl.NCCL_FLOAT32,
                      np.dtype(np.int64): nccl.NCCL_INT64,
                      np.dtype(np.int32): nccl.NCCL_INT32,
                      np.dtype(np.uint8): nccl.NCCL_UINT8}

    def _args(self, a: Any) -> tuple[int, int, int]:
        if a.dtype == np.bool_:
            a = a.view(np.uint8)
        return a.data.ptr, a.size, self.types[np.dtype(a.dtype)]

    def sendrecv(self, send: Any, dest: int | None, recv: Any, source: int | None,
                 tag: int) -> None:
        stream = self.cupy.cuda.get_current_stream().ptr
        self.nccl.groupStart()
        if send is not None and dest is not None:
            ptr, n, t = self._args(send)
            self.comm.send(ptr, n, t, dest, stream)
        if recv is not None and source is not None:
            ptr, n, t = self._args(recv)
            self.comm.recv(ptr, n, t, source, stream)
        self.nccl.groupEnd()

    def exchange(self, pairs: list[tuple[Any, int | None, Any, int | None, int]]) -> None:
        """The pairs' :meth:`sendrecv` one after the other."""
        for send, dest, recv, source, tag in pairs:
            self.sendrecv(send, dest, recv, source, tag)

    def allgather(self, local: Any) -> Any:
        out = self.cupy.empty(local.size * self.comm.size(), dtype=local.dtype)
        ptr, n, t = self._args(local)
        self.comm.allGather(ptr, out.data.ptr, n, t,
                            self.cupy.cuda.get_current_stream().ptr)
        return out

    def allreduce_sum(self, local: Any) -> Any:
        out = self.cupy.empty_like(local)
        ptr, n, t = self._args(local)
        self.comm.allReduce(ptr, out.data.ptr, n, t, self.nccl.NCCL_SUM,
                            self.cupy.cuda.get_current_stream().ptr)
        return out


class DeviceComm(Comm):
    """:class:`Comm` for arrays of ``xp``: device arrays through ``transport``, host
    objects through ``host`` (MPI).

    Args:
        host: the run's MPI communicator. xp: cupy (or numpy for the CPU twin).
        transport: :class:`NcclTransport` or :class:`HostTransport`.
    """

    def __init__(self, host: Comm, xp: Any, transport: Any, sharing: int = 1):
        super().__init__(host.mpi)
        self.host, self.xp, self.transport = host, xp, transport
        self.sharing = sharing  # ranks on this rank's GPU (itself included)
        self.counts = host.counts  # one rank's communication in one place

    def __repr__(self) -> str:
        return f"DeviceComm(rank {self.rank} of {self.size}, {self.transport.name})"

    def sendrecv(self, send: Any, dest: int | None, recv: Any, source: int | None,
                 tag: int = 0, label: str = "other") -> None:
        self.exchange([(send, dest, recv, source, tag)], label)

    def exchange(self, pairs: list[tuple[Any, int | None, Any, int | None, int]],
                 label: str = "other") -> None:
        if self.size == 1:
            return
        xp = self.xp
        # a transport that copies rows of a strided view (CUDA IPC: one 2D copy) takes a
        # ghost layer's view as it is (its ``takes_view``); others get contiguous buffers
        view = getattr(self.transport, "takes_view", None)

        def takes(a: Any) -> bool:
            return a.flags.c_contiguous or (view is not None and view(a))

        ready, copies = [], []
        for send, dest, recv, source, tag in pairs:
            if send is not None and not takes(send):
                send = xp.ascontiguousarray(send)
            if send is not None and dest is not None:
                self.counts.message(label, send.nbytes)
            if recv is not None and not takes(recv):
                copies.append((recv, xp.empty(recv.shape, dtype=recv.dtype)))
                recv = copies[-1][1]
            ready.append((send, dest, recv, source, tag))
        self.transport.exchange(ready)
        for recv, buffer in copies:
            recv[...] = buffer

    def allgather_rows(self, local: Any, rows: list[int] | None = None) -> Any:
        """As :meth:`Comm.allgather_rows`, on the device: the row counts (over MPI where
        not given), the rows (padded to the most any rank has) by one allGather."""
        xp = self.xp
        local = xp.ascontiguousarray(local)
        if self.size == 1:
            return local.copy()
        self.counts.gather("allgather", local.nbytes)
        rows = self.row_counts(local, rows)
        tail = local.shape[1:]
        most = max(rows)
        padded = xp.zeros((most,) + tail, dtype=local.dtype)
        padded[:local.shape[0]] = local
        full = self.transport.allgather(padded.reshape(-1))
        full = full.reshape((len(rows), most) + tail)
        return xp.concatenate([full[r, :n] for r, n in enumerate(rows)])

    def gather_rows(self, local: Any) -> np.ndarray | None:
        """Every rank's rows on rank 0, as a host array (for the results directory)."""
        return self.host.gather_rows(to_host(local))

    def sum_layers(self, partials: Any, label: str = "other",
                   rows: list[int] | None = None) -> np.ndarray:
        """Totals of per-layer partial sums (n_sums, n_own_layers), on the host: each
        rank's float64 sum, then one allReduce (``rows`` not needed)."""
        local = self.xp.asarray(partials, dtype=np.float64).sum(axis=1)
        if self.size > 1:
            self.counts.reduction(label, local.shape[0])
            local = self.transport.allreduce_sum(local)
        return to_host(local)

    def sum_groups(self, groups: list[tuple[Any, list[int] | None]],
                   label: str = "other") -> list[np.ndarray]:
        """:meth:`sum_layers` of several groups ``(partials, rows)`` by one allReduce."""
        xp = self.xp
        local = [xp.asarray(p, dtype=np.float64).sum(axis=1) for p, _ in groups]
        if self.size > 1 and local:
            flat = xp.concatenate(local)
            self.counts.reduction(label, flat.shape[0])
            total = to_host(self.transport.allreduce_sum(flat))
            ends = np.cumsum([v.shape[0] for v in local])[:-1]
            return np.split(total, ends)
        return [to_host(v) for v in local]

    def max(self, value: Any) -> float:
        return self.host.max(float(value))

    def any(self, flag: Any) -> bool:
        return self.host.any(bool(flag))

    def gather(self, obj: Any) -> list[Any] | None:
        return self.host.gather(obj)

    def bcast(self, obj: Any) -> Any:
        return self.host.bcast(obj)

    def barrier(self) -> None:
        self.host.barrier()

    def abort(self, code: int) -> None:
        self.host.abort(code)


def gpu_modules() -> tuple[Any, Any]:
    """(cupy, cupy.cuda.nccl); InputError naming what is missing."""
    try:
        import cupy
    except ImportError:
        raise InputError("a distributed run on the GPU needs CuPy (pip install "
                         "cupy-cuda12x) and a GPU") from None
    try:
        from cupy.cuda import nccl
    except ImportError:
        nccl = None
    if nccl is None or not getattr(nccl, "available", True):
        raise InputError("a distributed run on the GPU needs NCCL for CuPy (pip install "
                         "nvidia-nccl-cu12)")
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDA's own error types vary by version
        raise InputError(f"a distributed run on the GPU: no usable GPU ({exc})") from None
    if n < 1:
        raise InputError("a distributed run on the GPU: no GPU found")
    return cupy, nccl


def device_comm(host: Comm, xp: Any) -> DeviceComm:
    """The device communicator of ``host``'s ranks on ``xp``: with CuPy each rank on GPU
    ``rank % n_gpus`` with the allocator ``FEMOPT_GPU_ALLOCATOR`` names
    (:func:`~femopt.backend.gpu_allocator`), NCCL when every rank has a GPU of its own,
    CUDA IPC for the halos when the ranks are on one host and some share a GPU (unless
    ``FEMOPT_GPU_TRANSPORT=host``), else the host transport; with NumPy the host
    transport (the CPU twin)."""
    if xp is np:
        return DeviceComm(host, np, HostTransport(host, np))
    cupy, _ = gpu_modules()
    cupy.cuda.Device(host.rank % cupy.cuda.runtime.getDeviceCount()).use()
    gpu_allocator()  # FEMOPT_GPU_ALLOCATOR, on this rank's GPU (now the current one)
    gpu = (socket.gethostname(), cupy.cuda.runtime.deviceGetPCIBusId(cupy.cuda.Device().id))
    gpus = host.mpi.allgather(gpu) if host.size > 1 else [gpu]
    sharing = gpus.count(gpu)
    if host.size == 1:
        transport: Any = HostTransport(host, cupy)
    elif len(set(gpus)) == host.size:
        transport = NcclTransport(host)
    elif len({name for name, _ in gpus}) == 1 and shared_gpu_transport() == "ipc":
        from femopt.parallel.comm_ipc import CudaIpc, ipc_transport

        transport = ipc_transport(host, cupy, CudaIpc(cupy))
    else:
        transport = HostTransport(host, cupy)
    return DeviceComm(host, cupy, transport, sharing)


def shared_gpu_transport() -> str:
    """How ranks of one host that share a GPU exchange halo layers: ``ipc`` (device to
    device, the default) or ``host`` (through host memory and MPI), from
    ``FEMOPT_GPU_TRANSPORT``; InputError for another value."""
    value = os.environ.get("FEMOPT_GPU_TRANSPORT", "ipc").strip().lower() or "ipc"
    if value not in ("ipc", "host"):
        raise InputError(f"FEMOPT_GPU_TRANSPORT={value!r}: expected ipc or host")
    return value


def mps_running() -> bool:
    """Whether CUDA's multi-process service has its control pipe (its daemon runs)."""
    pipe = os.environ.get("CUDA_MPS_PIPE_DIRECTORY", "/tmp/nvidia-mps")
    return os.path.exists(os.path.join(pipe, "control"))


def sharing_note(comm: DeviceComm) -> str | None:
    """The log's line on ranks that share a GPU (None where none do)."""
    if comm.sharing <= 1 or comm.xp is np:
        return None
    how = {"ipc": "device to device (CUDA IPC)", "mpi": "through host memory"}.get(
        comm.transport.name, comm.transport.name)
    if getattr(comm.transport, "ipc_error", None):
        how += f" (CUDA IPC could not be set up: {comm.transport.ipc_error})"
    mps = ("CUDA MPS runs, so their kernels share it" if mps_running() else
           "CUDA MPS is not running, so they take turns on it (start it with "
           "`nvidia-cuda-mps-control -d` before the run)")
    return f"{comm.sharing} ranks on rank 0's GPU; halos {how}; {mps}"


def check_memory(need: int, comm: DeviceComm) -> None:
    """InputError on every rank when some rank's GPU has less free memory than ``need``
    bytes for each of the ranks that share it (checked before the slab is allocated)."""
    if comm.xp is np:
        return
    from femopt.backend import gpu_memory

    free, total = gpu_memory()
    short = need * comm.sharing > free
    if comm.host.any(short):
        raise InputError(
            f"a rank's slab needs about {need / 2**30:.2f} GiB of GPU memory (estimated), "
            f"{comm.sharing} rank(s) on this GPU, {free / 2**30:.2f} GiB free of "
            f"{total / 2**30:.2f} GiB on rank {comm.rank}'s GPU"
            + (" (another rank's GPU is short)" if not short else "")
            + "; use more GPUs, fewer ranks per GPU or a coarser grid")
