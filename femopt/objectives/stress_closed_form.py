"""The stress p-norm's partials in closed form: a specialization of its generated path.

With s0_ce = S_e u_c,e (S = D B at the cell centre), v0_ce = sqrt(s0^T V s0),
eta_e = rho_e^q and v_ce = eta_e v0_ce, the p-norm J = (sum v_ce^P)^(1/P) gives

    g_ce       = dJ/dv_ce = (v_ce / J)^(P-1)
    dJ/du_c,e  = g_ce eta_e S_e^T V s0_ce / v0_ce        (0 where v0_ce = 0)
    dJ/drho_e  = sum_c g_ce v0_ce q rho_e^(q-1)          (0 where rho_e = 0)

a few array products instead of dual numbers over nd + 1 seeds (about ten times less
time on the CPU); ``tests/test_integrand_functions.py`` checks that it equals the
generated terms of :class:`femopt.objectives.stress.StressPNorm`.

On NumPy the sums run in a fixed order (the contractions as ``numpy.einsum`` with
``optimize=True``, J as ``numpy.linalg.norm`` of order P): the order in which femopt
computed the stress p-norm before it was an integrand. A rounding difference of 1e-16 in
J or its gradient grows under MMA to about 1e-4 relative within 100 iterations of the
stress-constrained L-bracket (``problems/l_bracket_stress.yaml``), so keeping the order
keeps that problem's history (``tests/test_stress_history.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from femopt.backend import array_namespace, to_host


def stress_matrices(physics: Any, coords: Any) -> Any:
    """D B at the cell centres, (n_cells or 1, n_voigt, nd) in the array module of
    ``coords``: one matrix when every cell is a translate of the first (a grid)."""
    xp = array_namespace(coords)
    rel = coords - coords[:, :1]
    if bool(xp.all(rel == rel[:1])):
        return xp.asarray(physics.stress_matrices(to_host(coords[:1])))
    return xp.asarray(physics.stress_matrices(to_host(coords)))


def _einsum(xp: Any, spec: str, *ops: Any) -> Any:
    # optimize=True: NumPy's contraction order (BLAS where it applies), kept on the CPU
    return xp.einsum(spec, *ops, optimize=True) if xp is np else xp.einsum(spec, *ops)


def stresses(S: Any, V: np.ndarray, ue: Any) -> tuple[Any, Any, Any]:
    """(S broadcast to every cell, s0 (c, e, n_voigt), v0 (c, e)): the unrelaxed stresses
    and von Mises stresses of gathered states ``ue`` (c, e, nd)."""
    xp = array_namespace(ue, S)
    S = xp.broadcast_to(S, (ue.shape[1],) + S.shape[1:])
    s0 = _einsum(xp, "evj,cej->cev", S, ue)
    v0 = xp.sqrt(xp.maximum(xp.einsum("cev,vw,cew->ce", s0, xp.asarray(V), s0), 0.0))
    return S, s0, v0


def pnorm(v: Any, reduction: Any) -> tuple[float, Any]:
    """(J, dJ/dv) of the p-norm of stresses ``v`` >= 0 (c, e). On NumPy J is
    ``numpy.linalg.norm(v.ravel(), P)`` and dJ/dv = (v / J)^(P-1); where v^P overflows
    or underflows, and on other array modules, the reduction's scaled form."""
    xp = array_namespace(v)
    if xp is np:
        with np.errstate(over="ignore", under="ignore"):
            j = float(np.linalg.norm(v.ravel(), ord=reduction.param))
        if 0.0 < j < np.inf:
            return j, (v / j) ** (reduction.param - 1.0)
    value, g = reduction.apply(v[None, :, :, None], xp.ones(v.shape[0]))
    return value, g[0, :, :, 0]


def stress_pnorm_value(S: Any, V: np.ndarray, q: float, reduction: Any, ue: Any,
                       rho: Any) -> float:
    """J alone (see :func:`stress_pnorm_terms`)."""
    return pnorm(rho**q * stresses(S, V, ue)[2], reduction)[0]


def stress_pnorm_terms(S: Any, V: np.ndarray, q: float, reduction: Any, ue: Any,
                       rho: Any) -> tuple[float, Any, Any]:
    """(J, dJ/d(ue) (c, e, nd), dJ/d(rho) (e,)) of the p-norm of qp-relaxed von Mises
    stresses; ``S`` from :func:`stress_matrices`, any array module."""
    xp = array_namespace(ue, rho, S)
    S, s0, v0 = stresses(S, V, ue)
    eta = rho**q
    value, g = pnorm(eta * v0, reduction)
    pos = v0 > 0
    coef = xp.where(pos, g * eta / xp.where(pos, v0, 1.0), 0.0)
    vs = xp.einsum("vw,cew->cev", xp.asarray(V), s0) * coef[..., None]
    d_ue = _einsum(xp, "evj,cev->cej", S, vs)
    deta = xp.where(rho > 0, q * xp.where(rho > 0, rho, 1.0) ** (q - 1.0), 0.0)
    return value, d_ue, (g * v0).sum(axis=0) * deta
