"""The lowest eigenpairs of K phi = lambda M phi (K SPD, M symmetric positive
semi-definite), on the free dofs.

- :func:`shift_invert_lanczos` (CPU): ARPACK's Lanczos (``scipy.sparse.linalg.eigsh``) in
  shift-invert mode about 0, with K^-1 applied by the forward solver object (its stored
  factorization: one back-substitution per Lanczos step, no second factorization).
- :func:`lobpcg` (backend-neutral, NumPy or CuPy from its inputs): block LOBPCG
  (Knyazev 2001) preconditioned by the forward operator's multigrid V-cycle, in the
  basis-orthogonalized form of Hetmaniuk and Lehoucq (2006) with SVQB
  (Stathopoulos and Wu 2002), warm-started from the last design's vectors. Only the small
  Gram matrices reach the host.

Both return the eigenvalues ascending and M-orthonormal eigenvectors, so that a simple
eigenvalue's derivative is phi^T (dK - lambda dM) phi.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import scipy.linalg

from femopt.backend import array_namespace, to_host
from femopt.errors import SolverError

Apply = Callable[[Any], Any]  # one vector in, one out


def shift_invert_lanczos(k: Any, m: Any, n_modes: int, solve: Apply
                         ) -> tuple[np.ndarray, np.ndarray]:
    """(lambda (n,), phi (n_free, n)) of the ``n_modes`` lowest eigenpairs of
    K phi = lambda M phi; ``solve(b)`` applies K^-1 (the forward factorization)."""
    import scipy.sparse.linalg as spla

    n = k.shape[0]
    if n_modes >= n:
        raise SolverError(f"{n_modes} modes asked for a system of {n} free dofs")
    op = spla.LinearOperator((n, n), matvec=lambda b: solve(np.asarray(b).ravel()),
                             dtype=np.float64)
    rng = np.random.default_rng(0)  # ARPACK's start vector: reproducible runs
    try:
        lam, phi = spla.eigsh(k, k=n_modes, M=m, sigma=0.0, which="LM", OPinv=op,
                              v0=rng.standard_normal(n), tol=0.0)
    except spla.ArpackNoConvergence as exc:
        raise SolverError(f"shift-invert Lanczos found {len(exc.eigenvalues)} of "
                          f"{n_modes} eigenpairs") from None
    order = np.argsort(lam)
    lam, phi = lam[order], phi[:, order]
    phi = phi / np.sqrt(np.einsum("ij,ij->j", phi, m @ phi))
    return lam, phi


@dataclass
class LOBPCGInfo:
    iterations: int = 0
    residuals: Any = None  # the last relative residuals of the wanted pairs
    block: Any = None  # every Ritz vector of the block (the next warm start)


def _apply_rows(op: Apply, x: Any) -> Any:
    xp = array_namespace(x)
    return xp.stack([op(v) for v in x]) if x.shape[0] else xp.zeros_like(x)


def _svqb(s: Any, bs: Any, drop: float = 1e-12) -> tuple[Any, Any]:
    """Rows of ``s`` made M-orthonormal (``bs`` = M s), near-dependent ones dropped."""
    g = to_host(s @ bs.T)
    g = 0.5 * (g + g.T)
    d = np.diag(g).copy()
    keep = np.flatnonzero(d > drop * max(d.max(initial=0.0), 1e-300))
    xp = array_namespace(s)
    rows = xp.asarray(keep)  # an index array: CuPy takes no host boolean mask
    s, bs, g, d = s[rows], bs[rows], g[np.ix_(keep, keep)], d[keep]
    if not d.size:
        return s, bs
    scale = 1.0 / np.sqrt(d)
    theta, v = np.linalg.eigh(scale[:, None] * g * scale[None, :])
    ok = theta > drop * theta.max()
    t = (scale[:, None] * v[:, ok]) / np.sqrt(theta[ok])[None, :]
    tt = xp.asarray(t.T)
    return tt @ s, tt @ bs


def _orthogonalize(s: Any, x: Any, bx: Any, b: Apply) -> tuple[Any, Any]:
    """``s`` M-orthogonal to the M-orthonormal rows of ``x``, then M-orthonormal (twice:
    one pass loses orthogonality to round-off when ``s`` is nearly in span(x))."""
    for _ in range(2):
        s = s - (s @ bx.T) @ x
        bs = _apply_rows(b, s)
        s, bs = _svqb(s, bs)
    return s, bs


def lobpcg(a: Apply, b: Apply, precondition: Apply, x: Any, n_wanted: int,
           tol: float = 1e-10, max_iter: int = 1000) -> tuple[np.ndarray, Any, LOBPCGInfo]:
    """The ``n_wanted`` lowest eigenpairs of A x = lambda B x by block LOBPCG.

    Args:
        a, b: apply K and M to one vector (the caller keeps constrained dofs at zero).
        precondition: an approximation of K^-1 on one vector (a multigrid V-cycle).
        x: (block, n) start vectors, block >= n_wanted (a few more help convergence).
        tol: converged when |K phi - lambda M phi| <= tol |K phi| for every wanted pair.
    Returns:
        lambda (n_wanted,) on the host, phi (n_wanted, n) M-orthonormal in ``x``'s
        namespace, and the iteration count with the last residuals.
    Raises:
        SolverError when the residuals do not fall below ``tol`` in ``max_iter``.
    """
    xp = array_namespace(x)
    m = x.shape[0]
    bx = _apply_rows(b, x)
    x, bx = _svqb(x, bx)
    if x.shape[0] < n_wanted:
        raise SolverError("LOBPCG: the start vectors span fewer dimensions than the modes "
                          "asked for")
    ax = _apply_rows(a, x)
    theta, c = np.linalg.eigh(_sym(to_host(x @ ax.T)))
    cc = xp.asarray(c.T)
    x, ax, bx = cc @ x, cc @ ax, cc @ bx
    p = None
    info = LOBPCGInfo()
    for it in range(1, max_iter + 1):
        r = ax - xp.asarray(theta)[:, None] * bx
        rn = to_host(xp.sqrt((r * r).sum(axis=1)))
        an = to_host(xp.sqrt((ax * ax).sum(axis=1)))
        res = rn / np.maximum(an, 1e-300)
        info = LOBPCGInfo(it - 1, res[:n_wanted], x)
        if np.all(res[:n_wanted] <= tol):
            return theta[:n_wanted], x[:n_wanted], info
        w = _apply_rows(precondition, r)
        s = w if p is None else xp.concatenate([w, p])
        s, bs = _orthogonalize(s, x, bx, b)
        as_ = _apply_rows(a, s)
        basis_a = xp.concatenate([ax, as_])
        basis_b = xp.concatenate([bx, bs])
        basis = xp.concatenate([x, s])
        h = _sym(to_host(basis @ basis_a.T))
        g = _sym(to_host(basis @ basis_b.T))
        theta_all, c = scipy.linalg.eigh(h, g)
        theta, c = theta_all[:m], c[:, :m]
        cx = xp.asarray(c.T)
        cs = xp.asarray(c[m:].T)
        p = cs @ s  # the step from the previous vectors: LOBPCG's third block
        x, ax, bx = cx @ basis, cx @ basis_a, cx @ basis_b
    hist = ", ".join(f"{v:.2e}" for v in info.residuals)
    raise SolverError(f"LOBPCG did not converge in {max_iter} iterations to {tol:g} "
                      f"(last relative residuals: {hist})")


def _sym(g: np.ndarray) -> np.ndarray:
    return 0.5 * (g + g.T)
