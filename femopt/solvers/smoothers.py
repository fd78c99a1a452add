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

A smoother needs D only roughly: where the V-cycle is float32, D^-1 is held as bfloat16
(:class:`InverseDiagonal`, 2 bytes a dof instead of 4), and the smoothers and the Lanczos
estimate all take the same rounded D~^-1, so they are polynomials in D~^-1 A (D~ positive
diagonal: still symmetric in the A inner product) and lambda_max is that operator's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from femopt.backend import array_namespace

SOURCE = Path(__file__).with_suffix(".cu")

# the kernels' (real, D^-1 storage) instances: float64, float32, float32 from bfloat16 bits
_STORAGE = (("double", "double"), ("float", "float"), ("float", "unsigned short"))


def _register() -> None:
    from femopt.backend.kernels import register_instances

    register_instances(SOURCE, [f"femopt_multigrid_{op}<{t}, {d}>" for t, d in _STORAGE
                                for op in ("smooth_step", "inverse_diagonal_times",
                                           "lanczos_r", "lanczos_p")]
                       + ["femopt_multigrid_bfloat16_bits<float>"])


def _kernel(op: str, v: Any, inv: "InverseDiagonal") -> Any:
    """The kernel ``op`` for vectors like ``v`` and D^-1 stored as ``inv``'s."""
    from femopt.backend.kernels import get_kernel, real_name

    _register()
    storage = "unsigned short" if inv.packed else real_name(inv.data)
    return get_kernel(SOURCE, f"femopt_multigrid_{op}<{real_name(v)}, {storage}>")


def bfloat16_bits(v: Any) -> Any:
    """The bfloat16 nearest to each float32 of ``v`` (ties to even) as its bits (uint16):
    the top 16 bits of the float32, rounded with integer operations, so NumPy and the
    kernel round alike. For finite values and infinities, not NaN; values beyond the
    largest bfloat16 round to infinity."""
    xp = array_namespace(v)
    if v.dtype != np.float32:
        raise TypeError(f"bfloat16_bits takes float32, got {v.dtype}")
    if xp is not np:
        from femopt.backend.kernels import get_kernel, launch_1d

        _register()
        bits = xp.empty(v.shape, dtype=np.uint16)
        launch_1d(get_kernel(SOURCE, "femopt_multigrid_bfloat16_bits<float>"), v.size,
                  (v, bits, np.int64(v.size)))
        return bits
    u = v.view(np.uint32)
    t = u >> 16
    t &= 1  # the kept part's lowest bit: a tie rounds to the even one
    t += 0x7FFF
    t += u
    t >>= 16
    return t.astype(np.uint16)


def bfloat16_values(bits: Any, out: Any = None) -> Any:
    """The float32 values of bfloat16 ``bits`` (exact), into ``out`` where given."""
    xp = array_namespace(bits)
    if out is None:
        out = xp.empty(bits.shape, dtype=np.float32)
    u = out.view(np.uint32)
    u[...] = bits
    u <<= 16
    return out


class InverseDiagonal:
    """D^-1 of a level's smoother: float64 or float32 values, or bfloat16 bits standing
    for float32 values (``packed``).

    Args:
        data: the values (float64, float32), or the bits (uint16).

    ``dtype`` is the values' type: float32 for bits.
    """

    def __init__(self, data: Any):
        self.data = data
        self.packed = data.dtype == np.uint16
        self.dtype = np.dtype(np.float32) if self.packed else data.dtype
        self.xp = array_namespace(data)
        self.size = int(data.size)

    @classmethod
    def of(cls, diagonal: Any, dtype: Any, pack: bool = True) -> "InverseDiagonal":
        """1 / ``diagonal`` (positive: the caller checks) in ``dtype``, computed in place
        where ``diagonal`` has that dtype; float32 kept as bfloat16 bits where ``pack``."""
        xp = array_namespace(diagonal)
        inv = (xp.reciprocal(diagonal, out=diagonal) if diagonal.dtype == dtype
               else (1.0 / diagonal).astype(dtype))
        if np.dtype(dtype) == np.float32 and pack:
            return cls(bfloat16_bits(inv))
        return cls(inv)

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)

    def values(self, out: Any = None) -> Any:
        """D~^-1 as ``dtype`` values: into ``out`` where given; else the bits widened
        into a new array, or the data itself."""
        if self.packed:
            return bfloat16_values(self.data, out)
        if out is None:
            return self.data
        out[...] = self.data
        return out

    def times(self, r: Any, out: Any = None) -> Any:
        """out = D~^-1 r (a new array where ``out`` is None); ``out`` may be ``r``."""
        xp = self.xp
        if xp is np:
            if self.packed and out is not None and out is not r:
                out = self.values(out)
                out *= r
                return out
            return np.multiply(self.values(), r, out=out)
        from femopt.backend.kernels import launch_1d

        if out is None:
            out = xp.empty(r.shape, dtype=self.dtype)
        launch_1d(_kernel("inverse_diagonal_times", r, self), self.size,
                  (self.data, r, out, np.int64(self.size)))
        return out


def smooth_step_numpy(x: np.ndarray, d: np.ndarray, r: np.ndarray, inv_diag: InverseDiagonal,
                      c1: float, c2: float, assign: bool = False) -> None:
    """d <- c1 d + c2 D~^-1 r; x <- x + d (in place; ``assign``: x <- d, a start from 0
    whose x is not read), in the kernel's order: (D~^-1 r) c2 for c1 = 0, else c1 d +
    (c2 D~^-1) r."""
    if c1 == 0.0:
        inv_diag.times(r, out=d)
        d *= c2
    else:
        step = inv_diag.values(np.empty_like(d))
        step *= c2
        step *= r
        d *= c1
        d += step
    if assign:
        x[...] = d
    else:
        x += d


def smooth_step(x: Any, d: Any, r: Any, inv_diag: InverseDiagonal, c1: float,
                c2: float, assign: bool = False) -> None:
    """:func:`smooth_step_numpy` on NumPy or CuPy arrays."""
    if array_namespace(x) is np:
        smooth_step_numpy(x, d, r, inv_diag, c1, c2, assign)
        return
    from femopt.backend.kernels import launch_1d

    real = x.dtype.type
    launch_1d(_kernel("smooth_step", x, inv_diag), x.size,
              (x, d, r, inv_diag.data, real(c1), real(c2), np.int32(assign),
               np.int64(x.size)))


class PolynomialSmoother:
    """Jacobi sweeps or one Chebyshev polynomial of D^-1 A for one level.

    Args:
        op: the level operator (``apply(u, out, alpha, beta, z)``).
        inv_diag: 1 / diag(A) (:class:`InverseDiagonal`).
        kind: "jacobi" or "chebyshev". steps: Jacobi sweeps or Chebyshev degree.
        omega: Jacobi damping. lam_max: estimate of the largest eigenvalue of D^-1 A.
        lower, upper: Chebyshev interval as fractions of lam_max.
    """

    def __init__(self, op: Any, inv_diag: InverseDiagonal, kind: str, steps: int,
                 omega: float = 0.6, lam_max: float = 1.0, lower: float = 0.1,
                 upper: float = 1.1):
        if steps < 1:  # a fused start from zero writes x in its first step
            raise ValueError(f"a smoother takes at least one step, got {steps}")
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

    def run_fused(self, x: Any, b: Any, d: Any, zero_start: bool) -> None:
        """Smooth A x = b in place with the operator's fused step (``op.smooth``: d <- c1
        d + D~^-1 (c2 (b - A x)) in one apply, then x += d): the same polynomial as
        :meth:`run` with each step's residual formed in the apply, so no residual vector
        is held. ``zero_start``: start from x = 0 (x's values on entry are not read),
        so the first step's residual is b and it writes x = d."""
        op, inv = self.op, self.inv_diag
        if self.kind == "jacobi":
            coefficients = [(0.0, self.omega)] * self.steps
        else:
            sigma = self.theta / self.delta
            rho = 1.0 / sigma
            coefficients = [(0.0, 1.0 / self.theta)]
            for _ in range(1, self.steps):
                rho_new = 1.0 / (2.0 * sigma - rho)
                coefficients.append((rho_new * rho, 2.0 * rho_new / self.delta))
                rho = rho_new
        for s, (c1, c2) in enumerate(coefficients):
            if s == 0 and zero_start:
                smooth_step(x, d, b, inv, 0.0, c2, assign=True)  # d = D~^-1 b c2, x = d
                continue
            op.smooth(x, b, d, inv, c1, c2)
            x += d


def estimate_lambda_max(op: Any, inv_diag: InverseDiagonal, free: Any, iterations: int = 10,
                        seed: int = 0, work: tuple[Any, Any] | None = None) -> float:
    """Largest eigenvalue of D^-1 A from ``iterations`` Jacobi-preconditioned CG steps
    (D^-1 as the smoothers take it: ``inv_diag``).

    The CG coefficients give the Lanczos tridiagonal matrix T of D^-1 A; its largest
    eigenvalue approaches lambda_max from below, fast (hence the smoothers' upper margin).
    Three vectors of the level: r, p and q = A p; z = D~^-1 r is formed where it is used
    (r.z with r's update, p = p beta + z), and the dot products are summed in float64.
    ``work``: two vectors of the level's own (its V-cycle's, idle now) for r and p (r
    None: a new one).
    """
    xp = inv_diag.xp
    n = inv_diag.size
    rng = np.random.default_rng(seed)
    if xp is np:
        b = rng.standard_normal(n).astype(inv_diag.dtype)
    else:
        b = xp.random.RandomState(seed).standard_normal(n, dtype=inv_diag.dtype)
    if free is not None:
        b *= free
    if work is not None:
        r, p = work
        if r is None:  # a level smoothed by fused steps holds no residual: r is b itself
            r = b
        else:
            r[...] = b
        del b
    else:
        r, p = b, xp.empty_like(b)
    inv_diag.times(r, out=p)
    rz = _dot(r, p)
    q = xp.empty_like(p)
    alphas, betas = [], []
    for _ in range(min(iterations, n)):
        op.apply(p, out=q)
        pq = _dot(p, q)
        if pq <= 0 or rz <= 0:
            break
        alpha = rz / pq
        rz_new = _lanczos_r(r, q, inv_diag, alpha)
        beta = rz_new / rz
        alphas.append(alpha)
        betas.append(beta)
        rz = rz_new
        if rz <= 0:
            break
        _lanczos_p(p, r, inv_diag, beta)
    return lanczos_largest(alphas, betas)


def _dot(a: Any, b: Any) -> float:
    """a . b summed in float64."""
    from femopt.solvers.cg_kernels import dot_gpu

    if array_namespace(a) is not np:
        return dot_gpu(a, b)
    return float(np.dot(a.astype(np.float64, copy=False), b.astype(np.float64, copy=False)))


def _lanczos_r(r: Any, q: Any, inv_diag: InverseDiagonal, alpha: float) -> float:
    """r <- r - (alpha q); returns r . (D~^-1 r) summed in float64."""
    real = r.dtype.type
    if array_namespace(r) is np:
        r -= real(alpha) * q
        return _dot(r, inv_diag.times(r))
    import cupy

    from femopt.backend.kernels import BLOCK, reduction_grid

    out = cupy.zeros(1, dtype=cupy.float64)
    _kernel("lanczos_r", r, inv_diag)((reduction_grid(r.size),), (BLOCK,),
                                      (r, q, inv_diag.data, real(alpha), out,
                                       np.int64(r.size)))
    return float(out[0])


def _lanczos_p(p: Any, r: Any, inv_diag: InverseDiagonal, beta: float) -> None:
    """p <- (p beta) + D~^-1 r."""
    real = p.dtype.type
    if array_namespace(p) is np:
        p *= real(beta)
        p += inv_diag.times(r)
        return
    from femopt.backend.kernels import launch_1d

    launch_1d(_kernel("lanczos_p", p, inv_diag), p.size,
              (p, r, inv_diag.data, real(beta), np.int64(p.size)))


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
