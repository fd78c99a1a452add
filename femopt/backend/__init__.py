"""The array-namespace seam: ``xp`` is numpy on the CPU and cupy on the GPU.

Nothing outside this package imports cupy at module level. Backend-neutral code takes its
namespace from its inputs with :func:`array_namespace`.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from femopt.errors import InputError


def array_namespace(*arrays: Any):
    """Return the array module (numpy or cupy) that owns ``arrays``."""
    for a in arrays:
        mod = type(a).__module__
        if mod.startswith("cupy"):
            import cupy

            return cupy
    return np


def to_host(a: Any) -> np.ndarray:
    """Copy an array to host memory as a numpy array (no copy for numpy input)."""
    if type(a).__module__.startswith("cupy"):
        return a.get()
    return np.asarray(a)


def gpu_status() -> tuple[bool, str]:
    """Whether a usable CUDA GPU is visible through CuPy, and what was found."""
    try:
        import cupy
    except ModuleNotFoundError as exc:
        if exc.name != "cupy":
            return False, f"CuPy is not importable ({type(exc).__name__}: {exc})"
        return False, "CuPy is not installed (pip install 'femopt[gpu]' for an NVIDIA GPU)"
    except Exception as exc:  # a CUDA library that fails to load
        return False, f"CuPy is not importable ({type(exc).__name__}: {exc})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return False, f"CuPy found no usable CUDA driver or device ({exc})"
    if count < 1:
        return False, "CuPy sees no CUDA device"
    return True, f"{count} CUDA device(s)"


def resolve_device(requested: str) -> tuple[str, str | None]:
    """Map ``auto|cpu|gpu`` to the device to use; the note says what auto decided."""
    if requested == "cpu":
        return "cpu", None
    ok, what = gpu_status()
    if requested == "gpu":
        if not ok:
            raise InputError(f"device 'gpu' was requested but {what}")
        return "gpu", None
    if requested == "auto":
        return ("gpu", None) if ok else ("cpu", f"running on the CPU; no GPU: {what}")
    raise InputError(f"unknown device {requested!r}; expected auto, cpu or gpu")


ALLOCATORS = ("pool", "async")
_allocator: str | None = None
_pools = None  # the "pool" allocator's SizedPools, once gpu_allocator set it


def allocator_name() -> str:
    """``FEMOPT_GPU_ALLOCATOR``'s allocator name (InputError for an unknown one)."""
    name = os.environ.get("FEMOPT_GPU_ALLOCATOR", "pool").strip().lower()
    if name not in ALLOCATORS:
        raise InputError(f"FEMOPT_GPU_ALLOCATOR must be one of {', '.join(ALLOCATORS)}, "
                         f"not {name!r}")
    return name


def allocator_in_use() -> str:
    """The allocator this process has set (:func:`gpu_allocator`), or the one it will set
    (``FEMOPT_GPU_ALLOCATOR``)."""
    return _allocator or allocator_name()


def gpu_allocator() -> str:
    """The GPU allocator of this process, chosen once by ``FEMOPT_GPU_ALLOCATOR``: "pool"
    (CuPy pools, large blocks kept by exact size: :class:`~femopt.backend.gpu_pool.
    SizedPools`, the default) or "async" (CUDA's stream-ordered allocator through
    ``cupy.cuda.MemoryAsyncPool``, its pool set to keep what it has reserved).
    InputError for any other value."""
    global _allocator, _pools
    if _allocator is None:
        name = allocator_name()
        import cupy

        if name == "async":
            # the pool first: making it may set the device pool's threshold from
            # CUPY_GPU_MEMORY_LIMIT (0 where unset, in some CuPy versions)
            pool = cupy.cuda.MemoryAsyncPool("default")
            rt = cupy.cuda.runtime
            handle = rt.deviceGetDefaultMemPool(cupy.cuda.Device().id)
            # a release threshold of 0 (CUDA's default) gives the memory back at every
            # synchronization and allocates it again after
            rt.memPoolSetAttribute(handle, rt.cudaMemPoolAttrReleaseThreshold, 2**63 - 1)
            cupy.cuda.set_allocator(pool.malloc)
        else:
            from femopt.backend.gpu_pool import SizedPools

            _pools = SizedPools(cupy)
            cupy.cuda.set_allocator(_pools.malloc)
        _allocator = name
    return _allocator


def _is_cupy(xp: Any) -> bool:
    return getattr(xp, "__name__", "") == "cupy"


def pool_bytes(xp: Any) -> int | None:
    """The GPU memory's high-water mark in bytes (None for NumPy): the most that femopt's
    pools (:func:`gpu_allocator`) have held from the device at once, or with the "async"
    allocator the CUDA pool's reserved high-water mark; before either is set, what
    CuPy's default pool holds (it keeps the blocks it frees: its high-water mark)."""
    if not _is_cupy(xp):
        return None
    if _allocator == "async":
        return _cuda_pool(xp, "cudaMemPoolAttrReservedMemHigh")
    if _pools is not None:
        return _pools.high_water()
    return int(xp.get_default_memory_pool().total_bytes())


def pool_total(xp: Any) -> int | None:
    """Bytes the GPU allocator holds from the device now (None for NumPy; the "async"
    allocator's reserved bytes)."""
    if not _is_cupy(xp):
        return None
    if _allocator == "async":
        return _cuda_pool(xp, "cudaMemPoolAttrReservedMemCurrent")
    if _pools is not None:
        return _pools.total()
    return int(xp.get_default_memory_pool().total_bytes())


def _cuda_pool(xp: Any, attribute: str) -> int:
    """An attribute of the current device's default CUDA memory pool (the "async"
    allocator's), in bytes."""
    rt = xp.cuda.runtime
    handle = rt.deviceGetDefaultMemPool(xp.cuda.Device().id)
    return int(rt.memPoolGetAttribute(handle, getattr(rt, attribute)))


def release_cached(xp: Any) -> None:
    """Give the free blocks the GPU pools keep back to the device (nothing for NumPy or
    the "async" allocator): after a set-up whose temporaries are larger than the run's
    arrays. :func:`pool_bytes` keeps counting what the pools held before."""
    if not _is_cupy(xp) or _allocator == "async":
        return
    if _pools is not None:
        _pools.release()
    else:
        xp.get_default_memory_pool().free_all_blocks()


def reset_pool(xp: Any) -> None:
    """Every free block of the GPU pools back to the device and their high-water mark
    (:func:`pool_bytes`) forgotten: between runs in one process."""
    if not _is_cupy(xp) or _allocator == "async":
        return
    if _pools is not None:
        _pools.reset()
    else:
        xp.get_default_memory_pool().free_all_blocks()


def gpu_memory() -> tuple[int, int]:
    """(free, total) bytes of the current CUDA device."""
    import cupy

    free, total = cupy.cuda.runtime.memGetInfo()
    return int(free), int(total)
