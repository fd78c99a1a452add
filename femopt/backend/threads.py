"""One BLAS thread around NumPy code made of many small products.

The CPU design loop (OC, MMA) and the multigrid solver are made of products and dots
(24 x 24 cell matrices times the cells, the volume dot product of OC's bisection) too
small for a BLAS thread pool to pay off, and when the cores are shared (pytest workers,
other jobs) OpenBLAS's spinning threads make them ten to a hundred times slower
(docs/benchmarks.md, "CPU: the default solver"). threadpoolctl limits the pool for the
duration of a block; CuPy arrays are left alone.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np

_controller: Any = None


def single_blas_thread(xp: Any = np) -> AbstractContextManager:
    """A context in which NumPy's BLAS runs on one thread (a no-op for CuPy, or without
    threadpoolctl)."""
    global _controller
    if xp is not np:
        return nullcontext()
    if _controller is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            return nullcontext()
        _controller = ThreadpoolController()
    return _controller.limit(limits=1, user_api="blas")
