"""Design sensitivities on structured grids in one pass over cells, NumPy or CuPy.

For K(rho) = sum_e m(rho_e) K0 and K^T lambda = -dJ/du, dJ/drho_e = lambda_e^T (dK/drho_e)
u_e = m'(rho_e) lambda_e^T K0 u_e (:mod:`femopt.adjoint.sensitivity`). Compliance is
self-adjoint (lambda = -u), so its gradient is -m'(rho_e) u_e^T K0 u_e and its value
sum_e m(rho_e) u_e^T K0 u_e comes out of the same pass. The CuPy path runs
``femopt_adjoint_grid_sensitivity`` (``grid_sensitivity.cu``): one thread per cell, K0 in
constant memory, one float64 partial sum per block. Vectors are in the grid layout
(:mod:`femopt.assembly.grid_layout`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from femopt.assembly.grid_layout import GridLayout
from femopt.assembly.matrix_free import gather_cells
from femopt.backend import array_namespace

SOURCE = Path(__file__).with_suffix(".cu")


def grid_sensitivity_numpy(layout: GridLayout, lam: np.ndarray, u: np.ndarray,
                           scale: np.ndarray, dm: np.ndarray, ke: np.ndarray,
                           coef: float = 1.0) -> tuple[np.ndarray, float]:
    """NumPy twin: (coef * dm_e * lam_e^T K0 u_e per cell, sum_e scale_e lam_e^T K0 u_e)."""
    ue = gather_cells(layout, u)
    le = ue if lam is u else gather_cells(layout, lam)
    q = np.einsum("in,in->n", le, np.asarray(ke, dtype=u.dtype) @ ue)
    return coef * dm * q, float(np.dot(scale.astype(np.float64), q))


def grid_sensitivity(layout: GridLayout, lam: Any, u: Any, scale: Any, dm: Any,
                     ke: np.ndarray, coef: float = 1.0) -> tuple[Any, float]:
    """Per-cell ``coef * dm_e * lam_e^T K0 u_e`` and ``sum_e scale_e lam_e^T K0 u_e``;
    pass ``lam is u`` for compliance (coef = -1 gives its gradient, the sum its value)."""
    if array_namespace(u) is np:
        return grid_sensitivity_numpy(layout, lam, u, scale, dm, ke, coef)
    import cupy

    from femopt.backend.kernels import (
        get_kernel,
        real_name,
        reduction_grid,
        register_instances,
        set_constant,
    )

    register_instances(SOURCE, [f"femopt_adjoint_grid_sensitivity<{r}, {d}, {k}, {s}>"
                                for r in ("double", "float")
                                for d, ks in ((2, (1, 2)), (3, (1, 3))) for k in ks
                                for s in ("true", "false")])
    real = real_name(u)
    same = "true" if lam is u else "false"
    kern = get_kernel(SOURCE, f"femopt_adjoint_grid_sensitivity<{real}, {layout.dim}, "
                              f"{layout.k}, {same}>")
    values = np.ascontiguousarray(ke, dtype=u.dtype).ravel()
    set_constant(SOURCE, f"femopt_sens_ke_{'f64' if real == 'double' else 'f32'}", values)
    sens = cupy.empty(layout.n_cells, dtype=u.dtype)
    out = cupy.zeros(1, dtype=cupy.float64)
    dims = tuple(np.int32(n) for n in tuple(layout.shape) + (1,) * (3 - layout.dim))
    kern((reduction_grid(layout.n_cells),), (256,),
         (lam, u, scale, dm, u.dtype.type(coef), sens, out) + dims)
    return sens, float(out[0])
