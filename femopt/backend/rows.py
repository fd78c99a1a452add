"""Fields of the final design read by row ranges, where they were computed.

On the device paths the final densities, design and states stay on the device; the
writers of the results directory (:func:`femopt.io.vtu.write_vtu`,
:func:`femopt.io.npy.save_npy`, the series) ask a :class:`RowSource` for rows ``i..j``
and get them as a host array, one slab at a time, so that no host copy of the whole field
exists. A state in the grid layout (component-major, :mod:`femopt.assembly.grid_layout`)
is read node by node: each slab is transposed on the device before it is copied.

A consumer that needs the whole array (CAD export, a picture of a small design) takes
``np.asarray(field)``, which assembles it from the same slabs.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import numpy as np

from femopt.backend import array_namespace, to_host

# what :meth:`RowSource.slabs` brings to the host at once, at most: a device-to-host
# copy of 16 MiB runs at full speed, and a few slabs alive at once stay small
SLAB_BYTES = 16 << 20


class RowSource:
    """A field of ``shape`` (n,) or (n, ncomp) read by rows: ``rows(i, j)`` gives rows
    i..j-1 as a host array (a slab).

    Attributes:
        shape, dtype: the field's, as the host array it stands for.
        array: the one device array behind the field when it is one (its rows are the
            field's rows); None for a field converted per slab.
    """

    def __init__(self, shape: tuple[int, ...], dtype: Any,
                 rows: Callable[[int, int], np.ndarray], array: Any = None):
        self.shape, self.dtype = tuple(int(n) for n in shape), np.dtype(dtype)
        self._rows, self.array = rows, array

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.row_bytes

    def __len__(self) -> int:
        return self.shape[0]

    def rows(self, i: int, j: int) -> np.ndarray:
        """Rows ``i..j-1`` on the host."""
        return self._rows(i, j)

    def slabs(self, max_bytes: int | None = None) -> Iterator[np.ndarray]:
        """The rows in order, at most ``max_bytes`` (default :data:`SLAB_BYTES`; at least
        one row) at a time."""
        limit = SLAB_BYTES if max_bytes is None else max_bytes
        per = max(1, limit // max(1, self.row_bytes))
        for i in range(0, self.shape[0], per):
            yield self.rows(i, min(self.shape[0], i + per))

    def copy_into(self, out: Any) -> Any:
        """Fill ``out`` (anything of the field's shape that takes row-range assignment: a
        host array, an HDF5 dataset) slab by slab; returns it."""
        i = 0
        for block in self.slabs():
            out[i:i + len(block)] = block
            i += len(block)
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """The whole field on the host (``np.asarray(field)``), assembled from slabs."""
        out = self.copy_into(np.empty(self.shape, dtype=self.dtype))
        return out if dtype is None else out.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"RowSource(shape={self.shape}, dtype={self.dtype})"


def cell_rows(a: Any) -> RowSource:
    """The rows of an array (n,) or (n, m) on any array module (a per-cell field)."""
    return RowSource(a.shape, a.dtype, lambda i, j: to_host(a[i:j]), array=a)


def node_rows(v: Any, k: int) -> RowSource:
    """A grid-layout vector ``v`` (k * n_nodes,) node by node: the field (n_nodes, k),
    (n_nodes,) when ``k`` is 1. Each slab is the (k, j - i) block of the component-major
    layout, transposed on ``v``'s device and copied to the host."""
    if k == 1:
        return cell_rows(v)
    by_component = v.reshape(k, -1)
    xp = array_namespace(v)

    def rows(i: int, j: int) -> np.ndarray:
        return to_host(xp.ascontiguousarray(by_component[:, i:j].T))

    return RowSource((by_component.shape[1], k), v.dtype, rows)


def dof_rows(v: Any, k: int) -> RowSource:
    """A node-major dof vector ``v`` (n_nodes * k,) on any array module node by node:
    (n_nodes, k), (n_nodes,) when ``k`` is 1."""
    return cell_rows(v if k == 1 else v.reshape(-1, k))


def mean_of(a: Any) -> float:
    """The mean of a host array, or of a :class:`RowSource` of one array computed where
    that array is (no copy to the host)."""
    if isinstance(a, RowSource) and a.array is not None:
        return float(array_namespace(a.array).mean(a.array))
    return float(np.mean(a))
