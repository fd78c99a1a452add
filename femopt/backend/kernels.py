"""Compiled CUDA raw kernels, compiled once per device and source and cached.

Kernel sources live in ``.cu`` files beside the Python that launches them; kernels are
named ``femopt_<area>_<op>`` and may be templates (``femopt_cg_dot<double>``), compiled
through NVRTC by CuPy's ``RawModule`` with the template instance as a name expression.
Every source gets :data:`PREAMBLE` (shared device helpers) prepended. This module imports
cupy lazily: it is the only place, with the launchers' function bodies, that touches it.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np

BLOCK = 256

PREAMBLE = r"""
// femopt device helpers, prepended to every kernel source
typedef long long femopt_index;

__device__ __forceinline__ femopt_index femopt_thread_id() {
    return (femopt_index)blockIdx.x * blockDim.x + threadIdx.x;
}

__device__ __forceinline__ femopt_index femopt_thread_count() {
    return (femopt_index)gridDim.x * blockDim.x;
}

// The write of an operator's apply at dof i, v = (A u)_i: y_i <- alpha v + beta z_i, or
// with a per-dof weight w (wkind 1: the real type itself, 2: bfloat16 bits, the
// smoothers' D~^-1) y_i <- gamma y_i + w_i (alpha v + beta z_i), y_i not read where
// gamma is 0: a Chebyshev step d <- c1 d + c2 D~^-1 (b - A x) in the apply itself.
template <typename T>
__device__ __forceinline__ void femopt_apply_write(
    T* y, const T* z, femopt_index i, T v, T alpha, T beta, const void* w, int wkind,
    T gamma)
{
    T out = beta != T(0) ? alpha * v + beta * z[i] : alpha * v;
    if (wkind != 0) {
        const T wi = wkind == 2
            ? (T)__uint_as_float((unsigned int)((const unsigned short*)w)[i] << 16)
            : ((const T*)w)[i];
        out = gamma != T(0) ? gamma * y[i] + wi * out : wi * out;
    }
    y[i] = out;
}

// Sum of v over the block, added to *out (one double atomic per block).
// Every thread of the block must call it; blockDim.x a multiple of 32, at most 1024.
__device__ __forceinline__ void femopt_block_sum_add(double v, double* out) {
    __shared__ double warp_sums[32];
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) warp_sums[warp] = v;
    __syncthreads();
    if (warp == 0) {
        const int n_warps = blockDim.x >> 5;
        v = lane < n_warps ? warp_sums[lane] : 0.0;
        for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
        if (lane == 0) atomicAdd(out, v);
    }
    __syncthreads();
}

// Maximum of v >= 0 over the block, merged into *out (the bits of a double >= 0, which
// order like the doubles themselves) with one atomic per block.
__device__ __forceinline__ void femopt_block_max_bits(double v, unsigned long long* out) {
    __shared__ double warp_max[32];
    for (int off = 16; off > 0; off >>= 1) v = fmax(v, __shfl_down_sync(0xffffffffu, v, off));
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) warp_max[warp] = v;
    __syncthreads();
    if (warp == 0) {
        const int n_warps = blockDim.x >> 5;
        v = lane < n_warps ? warp_max[lane] : 0.0;
        for (int off = 16; off > 0; off >>= 1) v = fmax(v, __shfl_down_sync(0xffffffffu, v, off));
        if (lane == 0) atomicMax(out, (unsigned long long)__double_as_longlong(v));
    }
    __syncthreads();
}
"""


def _device_id() -> int:
    import cupy

    return int(cupy.cuda.runtime.getDevice())


@lru_cache(maxsize=None)
def _module(device: int, source: str, name_expressions: tuple[str, ...],
            options: tuple[str, ...], prelude: str = "") -> Any:
    return _compile(device, PREAMBLE + prelude + Path(source).read_text(), name_expressions,
                    options)


def _compile(device: int, code: str, name_expressions: tuple[str, ...],
             options: tuple[str, ...] = ()) -> Any:
    import cupy

    with cupy.cuda.Device(device):
        mod = cupy.RawModule(code=code, options=("--std=c++17",) + options,
                             name_expressions=name_expressions)
        if name_expressions:
            mod.get_function(name_expressions[0])  # compile now, once
    return mod


# template instances each source is compiled with: launchers declare theirs up front
# (register_instances), so one compilation per source and device makes them all
_INSTANCES: dict[str, tuple[str, ...]] = {}


def register_instances(source: Path | str, names: list[str] | tuple[str, ...]) -> None:
    """Declare the kernel names (template instances) a source provides."""
    key = str(source)
    known = _INSTANCES.get(key, ())
    _INSTANCES[key] = tuple(dict.fromkeys(known + tuple(names)))


def get_module(source: Path | str, options: tuple[str, ...] = (), prelude: str = "") -> Any:
    """The compiled module of ``source`` for the current device (cached). ``prelude`` is
    code placed before the source (generated definitions, such as an element matrix as
    literals); each distinct prelude is its own module."""
    key = str(source)
    return _module(_device_id(), key, _INSTANCES.get(key, ()), tuple(options), prelude)


_GENERATED: dict[tuple, Any] = {}


def generated_module(key: tuple, source: Callable[[], str],
                     names: Callable[[], tuple[str, ...]]) -> Any:
    """The compiled module of a generated source, memoised per (``key``, device): the
    source and its template instances are produced (traced) only on the first call for a
    key on a device. ``key`` names everything the source depends on (for an element
    kernel: :func:`femopt.adjoint.generated.cache_key`)."""
    full = (key, _device_id())
    mod = _GENERATED.get(full)
    if mod is None:
        mod = _compile(full[1], PREAMBLE + source(), names())
        _GENERATED[full] = mod
    return mod


@lru_cache(maxsize=None)
def _function(module: Any, name: str) -> Any:
    return module.get_function(name)


def get_kernel(source: Path | str, name: str, options: tuple[str, ...] = (),
               prelude: str = "") -> Any:
    """The kernel ``name`` (a template instance, or a plain ``extern "C"`` name) from the
    ``.cu`` file ``source`` (after ``prelude``), compiled for the current device (cached)."""
    if name not in _INSTANCES.get(str(source), ()):
        register_instances(source, [name])  # recompiles the source once with it
    return _function(get_module(source, options, prelude), name)


_CONSTANTS: dict[tuple[int, str], bytes] = {}


def set_constant(source: Path | str, symbol: str, values: np.ndarray, key: bytes | None = None
                 ) -> None:
    """Copy ``values`` into the ``__constant__`` array ``symbol`` of ``source``'s module on
    the current device, unless it already holds them (``key`` identifies the contents;
    default: the bytes). Ordered after the kernels already queued on the default stream."""
    mod = get_module(source)
    values = np.ascontiguousarray(values)
    k = values.tobytes() if key is None else key
    slot = (id(mod), symbol)
    if _CONSTANTS.get(slot) == k:
        return
    ptr = mod.get_global(symbol)
    ptr.copy_from_host(ctypes.c_void_p(values.ctypes.data), values.nbytes)
    _CONSTANTS[slot] = k


def launch_1d(kernel: Any, n: int, args: tuple, block: int = BLOCK,
              shared_mem: int = 0) -> None:
    """Launch ``kernel`` with one thread per item for ``n`` items."""
    if n <= 0:
        return
    grid = (int(n) + block - 1) // block
    kernel((grid,), (block,), args, shared_mem=shared_mem)


@lru_cache(maxsize=None)
def _sm_count(device: int) -> int:
    import cupy

    return int(cupy.cuda.runtime.getDeviceProperties(device)["multiProcessorCount"])


def reduction_grid(n: int, block: int = BLOCK) -> int:
    """Blocks of a grid-stride reduction over n items: enough to fill the device, few
    enough that the per-block atomics cost nothing."""
    return max(1, min((int(n) + block - 1) // block, 8 * _sm_count(_device_id())))


def real_name(a: Any) -> str:
    """The C type of a float32/float64 array."""
    if a.dtype == np.float64:
        return "double"
    if a.dtype == np.float32:
        return "float"
    raise TypeError(f"expected a float32 or float64 array, got {a.dtype}")


