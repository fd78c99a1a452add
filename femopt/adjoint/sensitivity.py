"""Adjoint gradients dJ/drho of functions J(u(rho), rho).

For K(rho) u_c = f_c (one per load case c) and J(u, rho):

    dJ/drho_e = dJ/drho_e|_u + sum_c lambda_c^T (dK/drho_e) u_c,   K^T lambda_c = -dJ/du_c.

dK/drho_e = m'(rho_e) K0_e, so the design-sensitivity kernel is one pass over cells:
s_e = m'(rho_e) sum_c lambda_c,e^T K0_e u_c,e. All functions that need a solve share one
call of the forward solver object with several right-hand sides (its factorization or
preconditioner is reused); self-adjoint functions skip the solve.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from femopt.errors import RunError
from femopt.objectives.base import Function, State


def element_sensitivity(cell_dofs: np.ndarray, ke: np.ndarray, lam: np.ndarray,
                        u: np.ndarray) -> np.ndarray:
    """sum_c lambda_c,e^T K0_e u_c,e for every cell e.

    Args:
        cell_dofs: (n_cells, nd). ke: (nd, nd) shared, or (n_cells, nd, nd).
        lam, u: (n_cases, n_dofs).
    """
    if ke.ndim == 3:  # one matrix per cell: the cells in parts on the process's cores
        from femopt.solvers.row_split import in_parts

        out = np.empty(cell_dofs.shape[0])

        def part(a: int, b: int) -> None:
            out[a:b] = _cell_products(cell_dofs[a:b], ke[a:b], lam, u)

        in_parts(cell_dofs.shape[0], part)
        return out
    return _cell_products(cell_dofs, ke, lam, u)


def _cell_products(cell_dofs: np.ndarray, ke: np.ndarray, lam: np.ndarray,
                   u: np.ndarray) -> np.ndarray:
    ue = u[:, cell_dofs]  # (c, e, nd)
    # K0 u_e first, as one matrix product (BLAS) for a shared K0
    ku = ue @ ke.T if ke.ndim == 2 else np.einsum("eij,cej->cei", ke, ue, optimize=True)
    le = lam[:, cell_dofs]
    return np.einsum("cei,cei->e", le, ku)


def adjoint_states(functions: list[Function], state: State, solver: Any,
                   assembler: Any) -> list[np.ndarray | None]:
    """The adjoint states lambda (n_cases, n_dofs) of ``functions``, K^T lambda_c = -dJ/du_c,
    from one multi-RHS solve; None for a function that does not depend on the states.

    The solve is ``solver.solve(rhs, transpose=True)`` on the forward solver object: one
    column per (function, load case), with the forward factorization or preconditioner.
    A function that knows its adjoint state without a solve (compliance) skips it.
    """
    n_cases = state.u.shape[0]
    lams: list[np.ndarray | None] = [None] * len(functions)
    pending: list[tuple[int, np.ndarray]] = []
    for k, fn in enumerate(functions):
        if not fn.needs_state:
            continue
        lam = fn.adjoint_state(state)
        if lam is not None:
            lams[k] = lam
            continue
        du = fn.partial_u(state)
        if du is not None:
            if not np.all(np.isfinite(du)):
                raise RunError(f"the partial derivatives of function '{fn.name}' are not "
                               "finite")
            pending.append((k, du))
    if pending:
        # one column per (function, load case), except that a function whose dJ/du_c
        # are multiples s_c of one vector (a displacement or temperature summed over the
        # cases) needs one column: lambda_c = s_c lambda by linearity
        columns, scales, offset = [], [], 0
        for _, du in pending:
            b = -assembler.restrict(np.asarray(du).T)  # (n_free, n_cases)
            ref, s = _rank_one_scales(b)
            columns.append(b if s is None else b[:, ref:ref + 1])
            scales.append((offset, s))
            offset += columns[-1].shape[1]
        rhs = np.concatenate(columns, axis=1)
        sol = solver.solve(rhs, transpose=True).reshape(rhs.shape)
        for (k, _), (start, s) in zip(pending, scales):
            if s is None:
                lam_free = sol[:, start:start + n_cases]
            else:
                lam_free = sol[:, start:start + 1] * s[None, :]
            lams[k] = assembler.expand(lam_free).T
    return lams


def function_gradients(functions: list[Function], state: State, solver: Any,
                       assembler: Any, cell_dofs: np.ndarray, ke: np.ndarray,
                       dm_drho: np.ndarray, split: bool = False) -> list[Any]:
    """dJ/drho (n_cells,) for each function, sharing one multi-RHS adjoint solve
    (:func:`adjoint_states`).

    Only the design-scaled part K0 of K(rho) = sum_e m(rho_e) K0_e + C enters dK/drho
    (springs and convection do not depend on the design).

    With ``split=True`` each entry is the pair (partial_rho term, adjoint term), whose
    sum is the gradient (for reports that name the wrong term).
    """
    lams = adjoint_states(functions, state, solver, assembler)
    grads: list[Any] = []
    n = state.rho.shape[0]
    for k, fn in enumerate(functions):
        pr = fn.partial_rho(state)
        pr = np.zeros(n) if pr is None else np.asarray(pr, dtype=float)
        adj = (dm_drho * element_sensitivity(cell_dofs, ke, lams[k], state.u)
               if lams[k] is not None else np.zeros(n))
        grads.append((pr, adj) if split else pr + adj)
    return grads


def _rank_one_scales(b: np.ndarray) -> tuple[int, np.ndarray | None]:
    """(ref, s) with b[:, c] = s_c b[:, ref] (ref the largest column) when the columns of
    ``b`` are exactly multiples of one vector; s is None otherwise."""
    norms = np.linalg.norm(b, axis=0)
    ref = int(np.argmax(norms))
    if b.shape[1] == 1 or norms[ref] == 0.0:
        return ref, None
    v = b[:, ref]
    s = (v @ b) / (v @ v)
    if np.abs(b - np.outer(v, s)).max() > 1e-14 * np.abs(v).max():
        return ref, None
    return ref, s
