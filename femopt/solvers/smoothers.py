"""Jacobi and Chebyshev smoothers of geometric multigrid, NumPy or CuPy.

Both are polynomials in D^-1 A built from one fused step (``femopt_multigrid_smooth_step``
in ``smoothers.cu``, :func:`smooth_step_numpy` its twin)

    d <- c1 d + c2 D^-1 r,   x <- x + d,

followed by a residual update r <- r - A d (one operator apply, fused with the subtraction).
Jacobi is c1 = 0, c2 = omega. Chebyshev (the three-term recurrence of Saad, "Iterative
methods for sparse linear systems", Alg. 12.1, on D^-1 A) damps the eigenvalues of D^-1 A in
[lambda_max * lower, lambda_max * upper]; lambda_max comes from a few Jacobi-preconditioned
CG steps (Lanczos) at each design. Both are symmetric in the A inner product, so a V-cycle
with as many post- as pre-smoothing steps is a symmetric preconditioner.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from femopt.backend import array_namespace

SOURCE = Path(__file__).with_suffix(".cu")


def smooth_step_numpy(x: np.ndarray, d: np.ndarray, r: np.ndarray, inv_diag: np.ndarray,
                      c1: float, c2: float) -> None:
    """d <- c1 d + c2 inv_diag r; x <- x + d (in place)."""
    if c1 == 0.0:
        np.multiply(inv_diag, r, out=d)
        d *= c2
    else:
        d *= c1
        d += c2 * inv_diag * r
    x += d


def smooth_step(x: Any, d: Any, r: Any, inv_diag: Any, c1: float, c2: float) -> None:
    if array_namespace(x) is np:
        smooth_step_numpy(x, d, r, inv_diag, c1, c2)
        return
    from femopt.backend.kernels import get_kernel, launch_1d, real_name, register_instances

    register_instances(SOURCE, [f"femopt_multigrid_smooth_step<{r}>" for r in ("double", "float")])
    kern = get_kernel(SOURCE, f"femopt_multigrid_smooth_step<{real_name(x)}>")
    real = x.dtype.type
    launch_1d(kern, x.size, (x, d, r, inv_diag, real(c1), real(c2), np.int64(x.size)))


class PolynomialSmoother:
    """Jacobi sweeps or one Chebyshev polynomial of D^-1 A for one level.

    Args:
        op: the level operator (``apply(u, out, alpha, beta, z)``).
        inv_diag: 1 / diag(A).
        kind: "jacobi" or "chebyshev". steps: Jacobi sweeps or Chebyshev degree.
        omega: Jacobi damping. lam_max: estimate of the largest eigenvalue of D^-1 A.
        lower, upper: Chebyshev interval as fractions of lam_max.
    """

    def __init__(self, op: Any, inv_diag: Any, kind: str, steps: int, omega: float = 0.6,
                 lam_max: float = 1.0, lower: float = 0.1, upper: float = 1.1):
        self.op, self.inv_diag, self.kind, self.steps = op, inv_diag, kind, steps
        self.omega = omega
        self.lam_max = lam_max
        a, b = lower * lam_max, upper * lam_max
        self.theta, self.delta = 0.5 * (b + a), 0.5 * (b - a)

    def run(self, x: Any, r: Any, d: Any, want_residual: bool) -> None:
        """Smooth A x = b in place; ``r`` holds b - A x on entry and, when
        ``want_residual``, on exit. ``d`` is work space."""
        op = self.op
        if self.kind == "jacobi":
            for s in range(self.steps):
                smooth_step(x, d, r, self.inv_diag, 0.0, self.omega)
                if want_residual or s < self.steps - 1:
                    op.apply(d, out=r, alpha=-1.0, beta=1.0, z=r)
            return
        sigma = self.theta / self.delta
        rho = 1.0 / sigma
        smooth_step(x, d, r, self.inv_diag, 0.0, 1.0 / self.theta)
        for s in range(1, self.steps + 1):
            if want_residual or s < self.steps:
                op.apply(d, out=r, alpha=-1.0, beta=1.0, z=r)
            if s == self.steps:
                break
            rho_new = 1.0 / (2.0 * sigma - rho)
            smooth_step(x, d, r, self.inv_diag, rho_new * rho, 2.0 * rho_new / self.delta)
            rho = rho_new


def estimate_lambda_max(op: Any, inv_diag: Any, free: Any, iterations: int = 10,
                        seed: int = 0, work: tuple[Any, Any] | None = None) -> float:
    """Largest eigenvalue of D^-1 A from ``iterations`` Jacobi-preconditioned CG steps.

    The CG coefficients give the Lanczos tridiagonal matrix T of D^-1 A; its largest
    eigenvalue approaches lambda_max from below, fast (hence the smoothers' upper margin).
    """
    xp = array_namespace(inv_diag)
    n = inv_diag.shape[0]
    rng = np.random.default_rng(seed)
    if xp is np:
        b = rng.standard_normal(n).astype(inv_diag.dtype)
    else:
        b = xp.random.RandomState(seed).standard_normal(n, dtype=inv_diag.dtype)
    if free is not None:
        b *= free
    # four vectors of the level, updated in place (the same roundings as out of place);
    # ``work``, two vectors of the level's own (its V-cycle's, idle now), hold r and z
    if work is not None:
        r, z = work
        r[...] = b
        del b
        xp.multiply(inv_diag, r, out=z)
    else:
        r = b
        z = inv_diag * r
    p = z.copy()
    q = xp.empty_like(p)
    rz = float(xp.vdot(r, z))
    alphas, betas = [], []
    for _ in range(min(iterations, n)):
        op.apply(p, out=q)
        pq = float(xp.vdot(p, q))
        if pq <= 0 or rz <= 0:
            break
        alpha = rz / pq
        q *= q.dtype.type(alpha)
        r -= q
        xp.multiply(inv_diag, r, out=z)
        rz_new = float(xp.vdot(r, z))
        beta = rz_new / rz
        alphas.append(alpha)
        betas.append(beta)
        rz = rz_new
        if rz <= 0:
            break
        p *= p.dtype.type(beta)
        p += z
    return lanczos_largest(alphas, betas)


def lanczos_largest(alphas: list[float], betas: list[float]) -> float:
    """The largest eigenvalue of the Lanczos tridiagonal matrix of a CG run with
    coefficients ``alphas`` and ``betas`` (1 when the run took no step)."""
    m = len(alphas)
    if m == 0:
        return 1.0
    t = np.zeros((m, m))
    for i in range(m):
        t[i, i] = 1.0 / alphas[i] + (betas[i - 1] / alphas[i - 1] if i > 0 else 0.0)
        if i + 1 < m:
            t[i, i + 1] = t[i + 1, i] = np.sqrt(betas[i]) / alphas[i]
    return float(np.linalg.eigvalsh(t)[-1])
