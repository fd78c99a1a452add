"""Design sensitivities on structured grids in one pass over cells, NumPy or CuPy.

For K(rho) = sum_e m(rho_e) K0 and K^T lambda = -dJ/du, dJ/drho_e = lambda_e^T (dK/drho_e)
u_e = m'(rho_e) lambda_e^T K0 u_e (:mod:`femopt.adjoint.sensitivity`). Compliance is
self-adjoint (lambda = -u), so its gradient is -m'(rho_e) u_e^T K0 u_e and its value
sum_e m(rho_e) u_e^T K0 u_e comes out of the same pass. The CuPy path runs
``femopt_adjoint_grid_sensitivity`` (``grid_sensitivity.cu``): one thread per cell, K0 in
constant memory, one float64 partial sum per block. Vectors are in the grid layout
(:mod:`femopt.assembly.grid_layout`).

:func:`grid_sensitivity_cases` is the general form for a function over several load
cases, in one pass: the adjoint state of case c is lambda_c = beta_c u_c + sum_k A_ck mu_k,
where beta carries the self-adjoint part (compliance: beta_c = -w_c) and mu_k solves
K mu_k = -a_k for the linear functionals a_k . u (a displacement, a mean temperature); a
functional summed over the cases with weights s_c is one mu with A_c0 = s_c. So
dJ/drho_e = m'(rho_e) sum_c lambda_c,e^T K0 u_c,e costs one pass whatever the mix, and
no vector lambda_c is ever formed.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from femopt.assembly.grid_layout import GridLayout
from femopt.assembly.matrix_free import gather_cells
from femopt.backend import array_namespace

SOURCE = Path(__file__).with_suffix(".cu")


@lru_cache(maxsize=None)
def _register() -> None:
    """Both kernels' instances, declared together so the source compiles once."""
    from femopt.backend.kernels import register_instances

    grids = [(d, k) for d, ks in ((2, (1, 2)), (3, (1, 3))) for k in ks]
    register_instances(SOURCE, [f"femopt_adjoint_grid_sensitivity<{r}, {d}, {k}, {s}>"
                                for r in ("double", "float") for d, k in grids
                                for s in ("true", "false")]
                       + [f"femopt_adjoint_grid_sensitivity_cases<{r}, {d}, {k}>"
                          for r in ("double", "float") for d, k in grids])


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

    from femopt.backend.kernels import get_kernel, real_name, reduction_grid, set_constant

    _register()
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


def grid_sensitivity_cases_numpy(layout: GridLayout, u: np.ndarray, mu: np.ndarray | None,
                                 beta: np.ndarray, a: np.ndarray, scale: np.ndarray,
                                 dm: np.ndarray, ke: np.ndarray, coef: float = 1.0
                                 ) -> tuple[np.ndarray, float]:
    """NumPy twin of :func:`grid_sensitivity_cases`."""
    ke = np.asarray(ke, dtype=u.dtype)
    q = np.zeros(layout.n_cells, dtype=u.dtype)
    for c in range(u.shape[0]):
        lam = beta[c] * u[c]
        for k in range(0 if mu is None else mu.shape[0]):
            if a[c, k] != 0.0:
                lam = lam + a[c, k] * mu[k]
        ue = gather_cells(layout, u[c])
        q += np.einsum("in,in->n", gather_cells(layout, lam), ke @ ue)
    return coef * dm * q, float(np.dot(scale.astype(np.float64), q))


def grid_sensitivity_cases(layout: GridLayout, u: Any, mu: Any, beta: Any, a: Any,
                           scale: Any, dm: Any, ke: np.ndarray, coef: float = 1.0
                           ) -> tuple[Any, float]:
    """Per-cell ``coef * dm_e * sum_c lambda_c,e^T K0 u_c,e`` and
    ``sum_e scale_e sum_c lambda_c,e^T K0 u_c,e`` with lambda_c = beta_c u_c + sum_k
    a_ck mu_k, in one pass over cells.

    Args:
        layout: the grid. u: (n_cases, n_dofs) states (grid layout, C-contiguous).
        mu: (n_mu, n_dofs) adjoint solutions, or None. beta: (n_cases,) and a:
            (n_cases, n_mu) host numbers. scale, dm: (n_cells,). ke: K0 (host).
    """
    beta = np.asarray(beta, dtype=np.float64).reshape(-1)
    n_mu = 0 if mu is None else int(mu.shape[0])
    a = np.asarray(a, dtype=np.float64).reshape(beta.size, n_mu)
    if u.ndim != 2 or u.shape[0] != beta.size or (n_mu and mu.shape[1] != u.shape[1]):
        raise ValueError(f"grid_sensitivity_cases: u {tuple(u.shape)}, mu "
                         f"{None if mu is None else tuple(mu.shape)} and {beta.size} "
                         "coefficients do not match")
    if array_namespace(u) is np:
        return grid_sensitivity_cases_numpy(layout, u, mu, beta, a, scale, dm, ke, coef)
    import cupy

    from femopt.backend.kernels import get_kernel, real_name, reduction_grid, set_constant

    _register()
    real = real_name(u)
    kern = get_kernel(SOURCE, f"femopt_adjoint_grid_sensitivity_cases<{real}, {layout.dim}, "
                              f"{layout.k}>")
    set_constant(SOURCE, f"femopt_sens_ke_{'f64' if real == 'double' else 'f32'}",
                 np.ascontiguousarray(ke, dtype=u.dtype).ravel())
    coefs = cupy.asarray(np.concatenate([beta, a.ravel()]))
    u = cupy.ascontiguousarray(u)
    mu = None if n_mu == 0 else cupy.ascontiguousarray(mu, dtype=u.dtype)
    sens = cupy.empty(layout.n_cells, dtype=u.dtype)
    out = cupy.zeros(1, dtype=cupy.float64)
    dims = tuple(np.int32(n) for n in tuple(layout.shape) + (1,) * (3 - layout.dim))
    kern((reduction_grid(layout.n_cells),), (256,),
         (u, mu, coefs, np.int32(beta.size), np.int32(n_mu), scale, dm, u.dtype.type(coef),
          sens, out) + dims)
    return sens, float(out[0])
