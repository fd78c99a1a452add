"""The array-namespace seam: ``xp`` is numpy on the CPU and cupy on the GPU.

Nothing outside this package imports cupy at module level. Backend-neutral code takes its
namespace from its inputs with :func:`array_namespace`.
"""

from __future__ import annotations

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


def pool_bytes(xp: Any) -> int | None:
    """Bytes CuPy's default memory pool holds (None for NumPy). The pool keeps the blocks
    it frees for reuse, so after a run this is its high-water mark."""
    if getattr(xp, "__name__", "") != "cupy":
        return None
    return int(xp.get_default_memory_pool().total_bytes())


def gpu_memory() -> tuple[int, int]:
    """(free, total) bytes of the current CUDA device."""
    import cupy

    free, total = cupy.cuda.runtime.memGetInfo()
    return int(free), int(total)
