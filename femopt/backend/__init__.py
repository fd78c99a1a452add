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
_released_high = 0  # bytes the pool held when release_cached last gave its blocks back


def allocator_name() -> str:
    """``FEMOPT_GPU_ALLOCATOR``'s allocator name (InputError for an unknown one)."""
    name = os.environ.get("FEMOPT_GPU_ALLOCATOR", "pool").strip().lower()
    if name not in ALLOCATORS:
        raise InputError(f"FEMOPT_GPU_ALLOCATOR must be one of {', '.join(ALLOCATORS)}, "
                         f"not {name!r}")
    return name


def gpu_allocator() -> str:
    """The GPU allocator of this process, chosen once by ``FEMOPT_GPU_ALLOCATOR``: "pool"
    (CuPy's default memory pool, the default) or "async" (CUDA's stream-ordered allocator
    through ``cupy.cuda.MemoryAsyncPool``, its pool set to keep what it has reserved).
    InputError for any other value."""
    global _allocator
    if _allocator is None:
        name = allocator_name()
        if name == "async":
            import cupy

            rt = cupy.cuda.runtime
            handle = rt.deviceGetDefaultMemPool(cupy.cuda.Device().id)
            # a release threshold of 0 (CUDA's default) gives the memory back at every
            # synchronization and allocates it again after
            rt.memPoolSetAttribute(handle, rt.cudaMemPoolAttrReleaseThreshold, 2**63 - 1)
            cupy.cuda.set_allocator(cupy.cuda.MemoryAsyncPool("default").malloc)
        _allocator = name
    return _allocator


def pool_bytes(xp: Any) -> int | None:
    """The GPU memory's high-water mark in bytes (None for NumPy): what CuPy's default
    memory pool holds (it keeps the blocks it frees for reuse, so after a run this is its
    high-water mark), or what it held before :func:`release_cached` gave its free blocks
    back, whichever is larger; with the "async" allocator the CUDA pool's reserved
    high-water mark."""
    if getattr(xp, "__name__", "") != "cupy":
        return None
    if _allocator == "async":
        rt = xp.cuda.runtime
        handle = rt.deviceGetDefaultMemPool(xp.cuda.Device().id)
        return int(rt.memPoolGetAttribute(handle, rt.cudaMemPoolAttrReservedMemHigh))
    return max(_released_high, int(xp.get_default_memory_pool().total_bytes()))


def release_cached(xp: Any) -> None:
    """Give the free blocks CuPy's default memory pool keeps back to the device (nothing
    for NumPy or the "async" allocator): after a set-up whose temporaries are larger
    than the run's arrays and of other sizes, which the pool would hold unused beside
    them. :func:`pool_bytes` keeps counting what the pool held before."""
    global _released_high
    if getattr(xp, "__name__", "") != "cupy" or _allocator == "async":
        return
    pool = xp.get_default_memory_pool()
    _released_high = max(_released_high, int(pool.total_bytes()))
    pool.free_all_blocks()


def reset_pool(xp: Any) -> None:
    """Every free block of CuPy's default memory pool back to the device and its
    high-water mark (:func:`pool_bytes`) forgotten: between runs in one process."""
    global _released_high
    if getattr(xp, "__name__", "") == "cupy":
        xp.get_default_memory_pool().free_all_blocks()
        _released_high = 0


def gpu_memory() -> tuple[int, int]:
    """(free, total) bytes of the current CUDA device."""
    import cupy

    free, total = cupy.cuda.runtime.memGetInfo()
    return int(free), int(total)
