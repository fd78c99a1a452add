"""``.npy`` files of the final design (``design.npy``, ``density.npy``), written by slabs.

A host array goes through ``np.save``. A :class:`~femopt.backend.rows.RowSource` (a field
kept on the device) gets the header ``np.save`` would write (numpy.lib.format, the
oldest format version that holds it) followed by its rows, one slab at a time: the same
bytes, without a host copy of the whole field.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npy_format

from femopt.backend.rows import RowSource


def npy_header(shape: tuple[int, ...], dtype: Any) -> bytes:
    """The header ``np.save`` writes for a C-ordered array of ``shape`` and ``dtype``."""
    d = {"descr": npy_format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
         "shape": tuple(shape)}
    out = io.BytesIO()
    try:
        npy_format.write_array_header_1_0(out, d)
    except ValueError:  # a header longer than version 1.0 allows
        out = io.BytesIO()
        npy_format.write_array_header_2_0(out, d)
    return out.getvalue()


def save_npy(path: str | Path, a: Any, slab_bytes: int | None = None) -> None:
    """Write ``a`` (a host array, or a :class:`RowSource` read ``slab_bytes`` at a time,
    default :data:`~femopt.backend.rows.SLAB_BYTES`) to ``path`` as ``np.save`` does."""
    if not isinstance(a, RowSource):
        np.save(path, np.asarray(a))
        return
    with open(path, "wb") as f:
        f.write(npy_header(a.shape, a.dtype))
        for block in a.slabs(slab_bytes):
            np.ascontiguousarray(block, dtype=a.dtype).tofile(f)
