"""Preconditioned conjugate gradients, backend-neutral (NumPy or CuPy arrays)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from pydantic import Field

from femopt.backend import array_namespace
from femopt.errors import SolverError
from femopt.plugins.registry import Options
from femopt.solvers.base import LinearSolver


@dataclass
class CGInfo:
    iterations: int = 0
    converged: bool = False
    residuals: list[float] = field(default_factory=list)  # relative, per iteration


def not_converged(label: str, info: CGInfo, rtol: float) -> SolverError:
    """The error of a Krylov solve that stopped at its iteration limit, with its residual
    history: in the message at iterations 1, 2, 4, 8, ... and the last; in full on the
    error (``residuals``), which a run's summary.json keeps."""
    res = info.residuals
    marks = sorted({i for i in (2**j for j in range(64)) if i <= len(res)} | {len(res)})
    hist = ", ".join(f"{i}: {res[i - 1]:.2e}" for i in marks)
    return SolverError(f"{label} did not converge in {info.iterations} iterations to rtol "
                       f"{rtol:g}; relative residual by iteration: {hist}",
                       residuals=res)


def pcg(matvec: Callable[[Any], Any], b: Any, precond: Callable[[Any], Any] | None = None,
        x0: Any = None, rtol: float = 1e-8, maxiter: int = 1000) -> tuple[Any, CGInfo]:
    """Solve A x = b for SPD A; stops when ||r|| <= rtol ||b||.

    Args:
        matvec: x -> A x. precond: r -> M^{-1} r (identity when None).
    Returns:
        x and a CGInfo with the relative residual history.
    """
    xp = array_namespace(b)
    info = CGInfo()
    bnorm = float(xp.linalg.norm(b))
    if bnorm == 0.0:
        info.converged = True
        return xp.zeros_like(b), info
    x = xp.zeros_like(b) if x0 is None else x0.copy()
    r = b - matvec(x) if x0 is not None else b.copy()
    if x0 is not None and float(xp.linalg.norm(r)) <= rtol * bnorm:
        info.converged = True  # the warm start already solves it
        return x, info
    z = precond(r) if precond is not None else r
    p = z.copy()
    rz = float(xp.vdot(r, z))
    for it in range(1, maxiter + 1):
        ap = matvec(p)
        pap = float(xp.vdot(p, ap))
        if pap <= 0.0:
            raise SolverError(f"CG breakdown at iteration {it}: the operator is not "
                              f"positive definite (p^T A p = {pap:.3g})")
        alpha = rz / pap
        x += alpha * p
        r -= alpha * ap
        rel = float(xp.linalg.norm(r)) / bnorm
        info.residuals.append(rel)
        info.iterations = it
        if rel <= rtol:
            info.converged = True
            break
        z = precond(r) if precond is not None else r
        rz_new = float(xp.vdot(r, z))
        p *= rz_new / rz
        p += z
        rz = rz_new
    return x, info


class PCGOptions(Options):
    rtol: float = Field(1e-8, gt=0, lt=1)
    """Relative residual at which CG stops."""
    max_iter: int = Field(5000, gt=0)
    """Largest number of CG iterations per solve."""
    preconditioner: str = "jacobi"
    """Preconditioner: jacobi."""


class PCGSolver(LinearSolver):
    """CG with a Jacobi preconditioner built once per matrix; warm-starts from ``x0``.
    Subclasses with another preconditioner override ``update`` and ``precondition``."""

    name = "pcg"
    device_paths = ("gpu mesh",)  # the mesh path solves by block-Jacobi PCG
    summary = "Conjugate gradients with a Jacobi preconditioner (symmetric systems)"
    Options = PCGOptions
    symmetric_only = True
    label = "PCG"  # names the method in the non-convergence message

    def __init__(self, options: PCGOptions | None = None, matrix=None):
        self.options = options or PCGOptions()
        if self.options.preconditioner != "jacobi":
            raise ValueError("preconditioner must be 'jacobi'")
        self.matrix = None
        self.inv_diag = None
        self.last = CGInfo()
        if matrix is not None:
            self.update(matrix)

    def update(self, matrix) -> None:
        self.matrix = matrix
        d = matrix.diagonal()
        xp = array_namespace(d)
        if bool(xp.any(d <= 0)):
            raise SolverError("Jacobi preconditioner: the matrix has a non-positive diagonal")
        self.inv_diag = 1.0 / d

    def solve(self, b, transpose: bool = False, x0=None):
        # the operator is symmetric, so the transpose solve is the same solve
        if b.ndim == 2:
            xp = array_namespace(b)
            cols = [self.solve(b[:, k], transpose, None if x0 is None else x0[:, k])
                    for k in range(b.shape[1])]
            return xp.stack(cols, axis=1)
        x, info = pcg(lambda v: self.matrix @ v, b, self.precondition, x0,
                      self.options.rtol, self.options.max_iter)
        self.last = info
        if not info.converged:
            raise not_converged(self.label, info, self.options.rtol)
        return x

    def precondition(self, r):
        return self.inv_diag * r

    def stats(self) -> dict:
        return {"cg_iterations": self.last.iterations}
