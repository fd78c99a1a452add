"""Fixed-pattern CSR assembly of per-cell element matrices on the GPU (a gather per value).

On an unstructured mesh every cell has its own element matrix, but for a physics whose
element matrix is linear in the material factor (elasticity, conduction) the matrices of
full material K0_e depend on the geometry alone: they are computed once, and each design
only scales them, K = sum_e s_e K0_e. :class:`GatherAssembler` takes the pattern and the
scatter map of a :class:`~femopt.assembly.sparse.FixedPatternAssembler` (built once on the
host) and sorts the kept element-matrix entries by their CSR slot, so that one thread per
CSR value (``femopt_assembly_csr_gather``, ``csr_gather.cu``) sums its own entries:

    data[s] = sum_{t in slot s} scale[cell[t]] * K0[t].

Why a gather rather than atomics: no atomics and no zeroing of the values array, and
each value is summed in a fixed order, the order of the CPU's product G^T s (cell
order), so float64 results equal the CPU's bit for bit and a GPU run is reproducible. The atomic scatter
(one thread per entry, ``femopt_assembly_csr_scatter_cells``) reads the same bytes; it is
kept for the benchmark (``benchmarks/tet4_assembly.py``), which times both.

The pattern and the gather map come either from the host's ``FixedPatternAssembler``
(``GatherAssembler(assembler, ke, xp)``, the benchmark's reference) or, on the GPU path,
from sorts on the device (:meth:`GatherAssembler.on_device` with
:func:`femopt.assembly.csr_pattern.build_pattern`): the same map, without the host. With
NumPy arrays the assembly is the :class:`FixedPatternAssembler`'s own product, in the
same order of sums (the twin the GPU tests compare with).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from femopt.assembly.csr_pattern import DevicePattern
from femopt.assembly.sparse import FixedPatternAssembler

SOURCE = Path(__file__).with_suffix(".cu")


def _register() -> None:
    from femopt.backend.kernels import register_instances

    register_instances(SOURCE, [f"femopt_assembly_csr_{op}<{r}>"
                                for op in ("gather", "scatter_cells")
                                for r in ("double", "float")])


def gather_map(assembler: FixedPatternAssembler, ke: np.ndarray, xp: Any = np,
               dtype: Any = np.float64) -> tuple[Any, Any, Any]:
    """The kept element-matrix entries sorted by CSR slot (stably), on ``xp``: ptr
    (nnz + 1,) int64 offsets of each slot's entries, cell (n_entries,) int32 and the
    entries of ``ke`` ((n_cells, nd, nd) or (nd, nd)) as ``dtype``. With CuPy the sort
    runs on the device (a stable radix sort; NumPy's takes some 15 s at 1M tets)."""
    a = assembler
    index = np.int32 if a.nnz < 2**31 else np.int64
    scatter = xp.asarray(a.scatter.astype(index))
    order = xp.argsort(scatter, kind="stable") if xp is np else xp.argsort(scatter)
    ptr = xp.zeros(a.nnz + 1, dtype=xp.int64)
    ptr[1:] = xp.cumsum(xp.bincount(scatter, minlength=a.nnz))
    del scatter
    cell = xp.asarray(a._cell.astype(np.int32))[order]
    local = xp.asarray(a._local.astype(np.int32))[order]
    del order
    k = xp.asarray(ke, dtype=dtype)
    values = k.reshape(-1)[local] if ke.ndim == 2 else k.reshape(a.n_cells, -1)[cell, local]
    return ptr, cell, values


def gather_numpy(scale: np.ndarray, ptr: np.ndarray, cell: np.ndarray, values: np.ndarray
                 ) -> np.ndarray:
    """The gather kernel's arithmetic in NumPy, in its order: each slot's products added
    one after the other from 0 (a check of :func:`gather_map` on the CPU)."""
    start, count = ptr[:-1], np.diff(ptr)
    data = np.zeros(start.size, dtype=values.dtype)
    for j in range(int(count.max(initial=0))):
        rows = np.flatnonzero(count > j)
        t = start[rows] + j
        data[rows] += scale[cell[t]].astype(values.dtype) * values[t]
    return data


class GatherAssembler:
    """CSR values of ``sum_e scale_e K0_e`` (plus the assembler's constant part) on ``xp``.

    Args:
        assembler: the pattern and scatter map, built once on the host.
        ke: element matrices of full material, (n_cells, nd, nd), or (nd, nd) for all.
        xp: numpy (the assembler's product) or cupy (the gather kernel).
        dtype: float64 or float32 values on the device.
    """

    def __init__(self, assembler: FixedPatternAssembler, ke: np.ndarray, xp: Any = np,
                 dtype: Any = np.float64):
        self.assembler, self.ke, self.xp = assembler, ke, xp
        self.nnz = assembler.nnz
        self.dtype = np.dtype(dtype)
        self.constant = None if assembler.constant is None else xp.asarray(assembler.constant)
        if xp is np:
            return
        if assembler.keep.size >= 2**31 or assembler.n_cells >= 2**31:
            raise ValueError("the gather assembly takes fewer than 2^31 element-matrix "
                             "entries")
        self.ptr, self.cell, self.values = gather_map(assembler, ke, xp, self.dtype)
        self._atomic: tuple[Any, Any, Any] | None = None

    @classmethod
    def on_device(cls, pattern: DevicePattern, ke: Any, dtype: Any = np.float64
                  ) -> "GatherAssembler":
        """The gather of a pattern built on the device
        (:func:`femopt.assembly.csr_pattern.build_pattern`) over element matrices ``ke``
        ((n_cells, nd, nd) on the pattern's array module, or a function of a range of
        cells giving theirs: :meth:`DevicePattern.values`). Nothing of it is on the host;
        with NumPy the values are summed by a ``bincount`` in the gather order, which is
        the host assembler's order of sums (equal to it bit for bit)."""
        xp = pattern.xp
        if xp is not np and (pattern.position.shape[0] >= 2**31 or pattern.n_cells >= 2**31):
            raise ValueError("the gather assembly takes fewer than 2^31 element-matrix "
                             "entries")
        self = cls.__new__(cls)
        self.assembler, self.ke, self.xp = None, None, xp
        self.nnz, self.dtype, self.constant = pattern.nnz, np.dtype(dtype), None
        self.ptr, self.cell = pattern.ptr, pattern.cells()
        self.values = pattern.values(ke, self.dtype, self.cell)
        self._atomic = None
        if xp is np:  # each entry's slot, for the bincount
            self._slot = np.repeat(np.arange(self.nnz), np.diff(self.ptr))
        return self

    def assemble_data(self, scale: Any) -> Any:
        """The CSR values of ``sum_e scale_e K0_e`` (+ the constant part)."""
        if self.xp is np:
            if self.assembler is not None:
                return self.assembler.assemble_data(scale, self.ke)
            return np.bincount(self._slot, weights=scale[self.cell] * self.values,
                               minlength=self.nnz)
        import cupy

        from femopt.backend.kernels import get_kernel, launch_1d, real_name

        _register()
        scale = cupy.ascontiguousarray(scale, dtype=self.dtype)
        data = cupy.empty(self.nnz, dtype=self.dtype)
        kern = get_kernel(SOURCE, f"femopt_assembly_csr_gather<{real_name(data)}>")
        launch_1d(kern, self.nnz, (scale, self.values, self.cell, self.ptr, data,
                                   np.int64(self.nnz)))
        return data if self.constant is None else data + self.constant

    def assemble_data_atomic(self, scale: Any) -> Any:
        """The same values by the atomic scatter (GPU only; for the benchmark)."""
        import cupy

        from femopt.backend.kernels import get_kernel, launch_1d, real_name

        _register()
        if self.assembler is None:
            raise ValueError("the atomic scatter needs the host-built pattern")
        if self._atomic is None:  # entries in cell order, as FixedPatternAssembler keeps them
            a = self.assembler
            values = (self.ke.reshape(-1)[a._local] if self.ke.ndim == 2
                      else self.ke.reshape(-1)[a.keep])
            self._atomic = (cupy.asarray(values.astype(self.dtype)),
                            cupy.asarray(a._cell.astype(np.int32)),
                            cupy.asarray(a.scatter.astype(np.int32)))
        values, cell, slot = self._atomic
        scale = cupy.ascontiguousarray(scale, dtype=self.dtype)
        data = cupy.zeros(self.nnz, dtype=self.dtype)
        kern = get_kernel(SOURCE, f"femopt_assembly_csr_scatter_cells<{real_name(data)}>")
        launch_1d(kern, values.size, (scale, values, cell, slot, data, np.int64(values.size)))
        return data if self.constant is None else data + self.constant
