"""Preconditioned CG with fused vector updates and reductions, NumPy or CuPy.

Per iteration the GPU path makes four passes over the vectors besides the operator and
the preconditioner (``cg_kernels.cu``): p.q; x += a p, r -= a q with r.r; r.z and z.q;
p = z + b p. Each reduction kernel adds one partial sum per block into a float64
accumulator. The beta of Polak-Ribiere, z.(r - r_old) / r_old.z_old, keeps CG convergent
when the preconditioner is slightly nonsymmetric (a float32 V-cycle under a float64 CG);
for an exactly symmetric one it equals Fletcher-Reeves' r.z / r_old.z_old. Since
r - r_old = -alpha q, its numerator is -alpha z.q: the last preconditioned residual need
not be kept, so CG holds five vectors (x, r, q, z, p).

The mixed-precision solve's float32 CG (:mod:`femopt.solvers.mixed_precision`) holds three:
its steps go straight into the float64 state (``into``: x += alpha p with x float64, the
float32 alpha widened), and with Fletcher-Reeves' beta (``polak_ribiere=False``: its
V-cycle is the operator's own precision, symmetric to float32 rounding) q is dead once r
is updated, so z takes q's place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from femopt.backend import array_namespace
from femopt.errors import SolverError
from femopt.solvers.pcg import CGInfo

SOURCE = Path(__file__).with_suffix(".cu")


# -- NumPy twins ------------------------------------------------------------------------

def dot_numpy(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b))


def update_xr_numpy(x: np.ndarray, r: np.ndarray, p: np.ndarray, q: np.ndarray,
                    alpha: float) -> float:
    """x += alpha p; r -= alpha q; returns r.r. With x float64 and p float32, alpha is
    rounded to float32 first (r's alpha) and the step taken in float64, as on the GPU."""
    if x.dtype == p.dtype:
        x += alpha * p
    else:
        x += np.float64(p.dtype.type(alpha)) * p.astype(x.dtype)
    r -= alpha * q
    return float(np.dot(r, r))


def dots_numpy(r: np.ndarray, z: np.ndarray, q: np.ndarray) -> tuple[float, float]:
    """(r.z, z.q)."""
    return float(np.dot(r, z)), float(np.dot(z, q))


def update_p_numpy(p: np.ndarray, z: np.ndarray, beta: float) -> None:
    """p = z + beta p."""
    p *= beta
    p += z


# -- CuPy launchers ---------------------------------------------------------------------

def _register() -> None:
    from femopt.backend.kernels import register_instances

    register_instances(SOURCE, [f"femopt_cg_{op}<{r}>" for op in ("dot", "dots", "update_p")
                                for r in ("double", "float")]
                       + [f"femopt_cg_update_xr<{x}, {r}>" for x, r in
                          (("double", "double"), ("float", "float"), ("double", "float"))])


def _reduce_launch(name: str, n: int, args: tuple, n_out: int) -> Any:
    import cupy

    from femopt.backend.kernels import get_kernel, reduction_grid

    _register()
    out = cupy.zeros(n_out, dtype=cupy.float64)
    kern = get_kernel(SOURCE, name)
    kern((reduction_grid(n),), (256,), args + (out, np.int64(n)))
    return out


def dot_gpu(a: Any, b: Any) -> float:
    from femopt.backend.kernels import real_name

    out = _reduce_launch(f"femopt_cg_dot<{real_name(a)}>", a.size, (a, b), 1)
    return float(out[0])


def update_xr_gpu(x: Any, r: Any, p: Any, q: Any, alpha: float) -> float:
    from femopt.backend.kernels import real_name

    real = r.dtype.type
    out = _reduce_launch(f"femopt_cg_update_xr<{real_name(x)}, {real_name(r)}>", x.size,
                         (x, r, p, q, real(alpha)), 1)
    return float(out[0])


def dots_gpu(r: Any, z: Any, q: Any) -> tuple[float, float]:
    from femopt.backend.kernels import real_name

    out = _reduce_launch(f"femopt_cg_dots<{real_name(r)}>", r.size, (r, z, q), 2).get()
    return float(out[0]), float(out[1])


def update_p_gpu(p: Any, z: Any, beta: float) -> None:
    from femopt.backend.kernels import get_kernel, launch_1d, real_name

    _register()
    kern = get_kernel(SOURCE, f"femopt_cg_update_p<{real_name(p)}>")
    launch_1d(kern, p.size, (p, z, p.dtype.type(beta), np.int64(p.size)))


def _ops(xp: Any):
    if xp is np:
        return dot_numpy, update_xr_numpy, dots_numpy, update_p_numpy
    return dot_gpu, update_xr_gpu, dots_gpu, update_p_gpu


def pcg_fused(apply: Callable[[Any, Any], Any], precond: Callable[[Any, Any], Any], b: Any,
              x0: Any = None, rtol: float = 1e-8, max_iter: int = 500,
              overwrite_b: bool = False, into: Any = None,
              polak_ribiere: bool = True) -> tuple[Any, CGInfo]:
    """Solve A x = b for SPD A; stops when ||r|| <= rtol ||b||.

    Args:
        apply: (u, out) -> out = A u. precond: (r, out) -> out = M^-1 r.
        b: right-hand side; x0: initial guess (copied) or None.
        overwrite_b: with ``x0`` None, CG's residual is ``b`` itself (one vector less;
            ``b`` is overwritten).
        into: with ``x0`` None, an array (of b's dtype or float64) that CG's steps are
            added to in place, x being ``into`` plus the solution: CG keeps no x of its
            own. It is returned as x.
        polak_ribiere: Polak-Ribiere's beta (a slightly nonsymmetric preconditioner);
            False: Fletcher-Reeves', and z overwrites q (one vector less).
    Returns:
        x and a CGInfo with the relative residual history.
    """
    xp = array_namespace(b)
    dot, update_xr, dots, update_p = _ops(xp)
    if into is not None and x0 is not None:
        raise ValueError("pcg_fused: into adds the solution to an array; it takes no x0")
    info = CGInfo()
    bnorm = np.sqrt(dot(b, b))
    if bnorm == 0.0:
        info.converged = True
        return (into if into is not None else xp.zeros_like(b)), info
    q = xp.empty_like(b)
    if x0 is None:
        x = into if into is not None else xp.zeros_like(b)
        r = b if overwrite_b else b.copy()
    else:
        x = x0.copy()
        apply(x, q)
        r = b - q
    rel = np.sqrt(dot(r, r)) / bnorm
    info.residuals.append(rel)
    if rel <= rtol:
        info.converged = True
        return x, info
    z = xp.empty_like(b) if polak_ribiere else q
    precond(r, z)
    p = z.copy()
    rz = dot(r, z)
    for it in range(1, max_iter + 1):
        apply(p, q)
        pq = dot(p, q)
        if not (pq > 0.0 and np.isfinite(pq)):
            raise SolverError(f"CG breakdown at iteration {it}: the operator or the "
                              f"preconditioner is not positive definite (p^T A p = {pq:.3g})")
        alpha = rz / pq
        rr = update_xr(x, r, p, q, alpha)
        rel = np.sqrt(rr) / bnorm
        info.residuals.append(rel)
        info.iterations = it
        if not np.isfinite(rel):
            raise SolverError(f"CG produced a non-finite residual at iteration {it}")
        if rel <= rtol:
            info.converged = True
            break
        precond(r, z)
        if polak_ribiere:
            rz_new, zq = dots(r, z, q)
            beta = -alpha * zq / rz  # z.(r - r_old) / r_old.z_old
            if beta < 0.0:  # Polak-Ribiere restart
                beta = 0.0
        else:
            rz_new = dot(r, z)
            if not (rz_new > 0.0 and np.isfinite(rz_new)):
                raise SolverError(f"CG breakdown at iteration {it}: the preconditioner is "
                                  f"not positive definite (r^T M^-1 r = {rz_new:.3g})")
            beta = rz_new / rz
        update_p(p, z, beta)
        rz = rz_new
    return x, info
