"""The operators of a slab's multigrid levels (:mod:`femopt.parallel.multigrid`): the
fine level matrix-free (:class:`FineOperator`), an assembled level (:class:`SlabCSR`),
each followed by the halo exchange, on NumPy or CuPy (the slab's ``xp``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from femopt.assembly.matrix_free import (StructuredOperator, diagonal, gather_cells,
                                        scatter_cells)
from femopt.assembly.structured_csr import CSROperator
from femopt.backend import array_namespace
from femopt.parallel.slabs import Slab


def layer_matmul(a: np.ndarray, b: np.ndarray, p: int, left: bool) -> np.ndarray:
    """``a @ b`` in blocks of ``p`` columns of ``b`` (left: a is the fixed matrix) or rows
    of ``a`` (b fixed): the same BLAS call per block on every rank count. On the device
    one product (the GPU path agrees within the solver tolerance, not bit for bit)."""
    xp = array_namespace(b)
    if xp is not np:
        return xp.asarray(a) @ b if left else a @ xp.asarray(b)
    if left:
        out = xp.empty((a.shape[0], b.shape[1]), dtype=np.result_type(a.dtype, b.dtype))
        for s in range(0, b.shape[1], p):
            out[:, s:s + p] = a @ b[:, s:s + p]
        return out
    out = xp.empty((a.shape[0], b.shape[1]), dtype=np.result_type(a.dtype, b.dtype))
    for s in range(0, a.shape[0], p):
        out[s:s + p] = a[s:s + p] @ b
    return out


class FineOperator:
    """sum_e scale_e K0 on a slab's kept cells, matrix-free (springs on the diagonal),
    then the halo exchange: per-layer GEMMs on the host, the single-GPU path's apply
    kernel on the device."""

    def __init__(self, slab: Slab, scale: Any, ke: np.ndarray, free: Any,
                 springs: tuple[Any, Any] | None):
        self.slab, self.layout = slab, slab.local
        self.scale, self.free = scale, free
        self.xp = xp = slab.xp
        self.ke = np.asarray(ke, dtype=scale.dtype)
        self.springs = springs
        self.dtype = scale.dtype
        self.kernel = None
        if xp is not np:
            self.kernel = StructuredOperator(self.layout, scale, ke, free)
            if springs is not None:
                self.springs = (xp.asarray(springs[0]),
                                xp.asarray(springs[1], dtype=scale.dtype))

    def apply(self, u: Any, out: Any = None, alpha: float = 1.0, beta: float = 0.0,
              z: Any = None) -> Any:
        if self.kernel is not None:
            out = self.kernel.apply(u, out=out, alpha=alpha, beta=beta, z=z)
            if self.springs is not None:
                idx, k = self.springs
                out[idx] += alpha * k * u[idx]
            return self.slab.exchange(out)
        lay = self.layout
        ue = gather_cells(lay, u)
        fe = layer_matmul(self.ke, ue, self.slab.layer_cells, left=True)
        fe *= self.scale[None, :]
        y = scatter_cells(lay, fe, np.empty_like(u))
        np.copyto(y, u, where=~self.free)
        if self.springs is not None:
            y[self.springs[0]] += self.springs[1] * u[self.springs[0]]
        if alpha != 1.0:
            y *= alpha
        if z is not None and beta != 0.0:
            y += beta * z
        if out is None:
            out = y
        else:
            out[...] = y
        return self.slab.exchange(out)

    def diagonal(self) -> Any:
        d = diagonal(self.layout, self.scale, self.ke, self.free)
        if self.springs is not None:
            d[self.springs[0]] += self.springs[1]
        return self.slab.exchange(d)


class SlabCSR:
    """An assembled level on a slab (owned rows complete), then the halo exchange."""

    def __init__(self, slab: Slab, op: CSROperator):
        self.slab, self.op = slab, op
        self.dtype = op.data.dtype
        self.xp = op.xp

    def apply(self, u, out=None, alpha=1.0, beta=0.0, z=None):
        return self.slab.exchange(self.op.apply(u, out=out, alpha=alpha, beta=beta, z=z))

    def diagonal(self):
        return self.slab.exchange(self.op.diagonal().copy())
