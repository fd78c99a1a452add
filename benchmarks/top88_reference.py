"""Straight NumPy/SciPy transcription of the 88-line MATLAB topology optimization code.

Reference: E. Andreassen, A. Clausen, M. Schevenels, B. S. Lazarov, O. Sigmund,
"Efficient topology optimization in MATLAB using 88 lines of code",
Struct. Multidisc. Optim. 43 (2011) 1-16.

This module is deliberately *not* optimised: it follows the published algorithm
line by line (same element stiffness matrix, same node/dof numbering, same
filter matrix, same OC bisection and stopping rule) so that it can serve as

  * the reference femopt's tests compare against, and
  * the baseline of the CPU speed benchmark.

MATLAB is 1-based and column-major; here every index is 0-based and every
reshape that mirrors a MATLAB ``reshape``/``(:)`` uses ``order="F"``.  Element
``e = ely + elx*nely`` (0-based) is ``xPhys[ely, elx]``.
"""

from __future__ import annotations

import math
import time

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import spsolve


def lk(nu: float = 0.3) -> np.ndarray:
    """8x8 stiffness matrix of the bilinear unit square element (E=1), as in top88."""
    A11 = np.array([[12, 3, -6, -3], [3, 12, 3, 0], [-6, 3, 12, -3], [-3, 0, -3, 12]], dtype=float)
    A12 = np.array([[-6, -3, 0, 3], [-3, -6, -3, -6], [0, -3, -6, 3], [3, -6, 3, -6]], dtype=float)
    B11 = np.array([[-4, 3, -2, 9], [3, -4, -9, 4], [-2, -9, -4, -3], [9, 4, -3, -4]], dtype=float)
    B12 = np.array([[2, -3, 4, -9], [-3, 2, 9, -2], [4, 9, 2, 3], [-9, -2, 3, 2]], dtype=float)
    return (
        1.0 / (1.0 - nu**2) / 24.0
        * (np.block([[A11, A12], [A12.T, A11]]) + nu * np.block([[B11, B12], [B12.T, B11]]))
    )


def edof_matrix(nelx: int, nely: int) -> np.ndarray:
    """edofMat of top88 (0-based dofs), one row per element in column-major order."""
    nodenrs = np.arange(1, (1 + nelx) * (1 + nely) + 1).reshape((1 + nely, 1 + nelx), order="F")
    edofVec = (2 * nodenrs[:-1, :-1] + 1).reshape(nelx * nely, order="F")
    offs = np.array([0, 1, 2 * nely + 2, 2 * nely + 3, 2 * nely + 0, 2 * nely + 1, -2, -1])
    return edofVec[:, None] + offs[None, :] - 1  # -1: MATLAB 1-based -> 0-based


def filter_matrix(nelx: int, nely: int, rmin: float):
    """H and Hs exactly as built by the nested loops of top88 (0-based)."""
    r = math.ceil(rmin) - 1
    n = nelx * nely * (2 * r + 1) ** 2
    iH = np.zeros(n, dtype=np.int64)
    jH = np.zeros(n, dtype=np.int64)
    sH = np.zeros(n)
    k = 0
    for i1 in range(nelx):
        for j1 in range(nely):
            e1 = i1 * nely + j1
            for i2 in range(max(i1 - r, 0), min(i1 + r, nelx - 1) + 1):
                for j2 in range(max(j1 - r, 0), min(j1 + r, nely - 1) + 1):
                    e2 = i2 * nely + j2
                    iH[k] = e1
                    jH[k] = e2
                    sH[k] = max(0.0, rmin - math.sqrt((i1 - i2) ** 2 + (j1 - j2) ** 2))
                    k += 1
    # unused trailing entries of MATLAB's preallocated arrays are (1,1,0): they add nothing
    H = sp.coo_matrix((sH[:k], (iH[:k], jH[:k])), shape=(nelx * nely, nelx * nely)).tocsc()
    Hs = np.asarray(H.sum(axis=1)).ravel()
    return H, Hs


def mbb_bc(nelx: int, nely: int):
    """Half MBB beam of top88 (0-based dofs): (F, fixeddofs).

    F(2) = -1: unit downward load on the y dof of node 1 (top-left corner);
    fixed: x dofs of the left edge (symmetry) and the y dof of the last node
    (bottom-right corner, roller support).
    """
    ndof = 2 * (nely + 1) * (nelx + 1)
    F = np.zeros(ndof)
    F[1] = -1.0  # F = sparse(2,1,-1,...)
    fixeddofs = np.union1d(np.arange(0, 2 * (nely + 1), 2), [ndof - 1])
    return F, fixeddofs


def top88(nelx, nely, volfrac, penal, rmin, ft, max_loop=2000, verbose=False) -> dict:
    """Run the 88-line code (half MBB beam). ft=1: sensitivity filter, ft=2: density filter."""
    # MATERIAL PROPERTIES
    E0 = 1.0
    Emin = 1e-9
    nu = 0.3
    # PREPARE FINITE ELEMENT ANALYSIS
    KE = lk(nu)
    nele = nelx * nely
    ndof = 2 * (nely + 1) * (nelx + 1)
    edofMat = edof_matrix(nelx, nely)
    iK = np.kron(edofMat, np.ones((8, 1), dtype=np.int64)).T.reshape(64 * nele, order="F")
    jK = np.kron(edofMat, np.ones((1, 8), dtype=np.int64)).T.reshape(64 * nele, order="F")
    # DEFINE LOADS AND SUPPORTS (HALF MBB-BEAM)
    F, fixeddofs = mbb_bc(nelx, nely)
    U = np.zeros(ndof)
    alldofs = np.arange(ndof)
    freedofs = np.setdiff1d(alldofs, fixeddofs)
    # PREPARE FILTER
    H, Hs = filter_matrix(nelx, nely, rmin)
    # INITIALIZE ITERATION
    x = np.full((nely, nelx), float(volfrac))
    xPhys = x.copy()
    loop = 0
    change = 1.0
    compliance: list[float] = []
    changes: list[float] = []
    t0 = time.perf_counter()
    # START ITERATION
    while change > 0.01 and loop < max_loop:
        loop += 1
        # FE-ANALYSIS
        xf = xPhys.reshape(-1, order="F")
        sK = (KE.reshape(-1, 1, order="F") * (Emin + xf[None, :] ** penal * (E0 - Emin))).reshape(
            64 * nele, order="F"
        )
        K = sp.coo_matrix((sK, (iK, jK)), shape=(ndof, ndof)).tocsc()
        K = (K + K.T) / 2
        U[freedofs] = spsolve(K[freedofs, :][:, freedofs], F[freedofs])
        # OBJECTIVE FUNCTION AND SENSITIVITY ANALYSIS
        Ue = U[edofMat]
        ce = np.sum((Ue @ KE) * Ue, axis=1).reshape((nely, nelx), order="F")
        c = float(np.sum((Emin + xPhys**penal * (E0 - Emin)) * ce))
        dc = -penal * (E0 - Emin) * xPhys ** (penal - 1) * ce
        dv = np.ones((nely, nelx))
        # FILTERING/MODIFICATION OF SENSITIVITIES
        if ft == 1:
            xv = x.reshape(-1, order="F")
            dcv = dc.reshape(-1, order="F")
            dc = (H @ (xv * dcv) / Hs / np.maximum(1e-3, xv)).reshape((nely, nelx), order="F")
        elif ft == 2:
            dc = (H @ (dc.reshape(-1, order="F") / Hs)).reshape((nely, nelx), order="F")
            dv = (H @ (dv.reshape(-1, order="F") / Hs)).reshape((nely, nelx), order="F")
        # OPTIMALITY CRITERIA UPDATE OF DESIGN VARIABLES AND PHYSICAL DENSITIES
        l1 = 0.0
        l2 = 1e9
        move = 0.2
        while (l2 - l1) / (l1 + l2) > 1e-3:
            lmid = 0.5 * (l2 + l1)
            xnew = np.maximum(
                0.0, np.maximum(x - move, np.minimum(1.0, np.minimum(x + move, x * np.sqrt(-dc / dv / lmid))))
            )
            if ft == 1:
                xPhys = xnew
            elif ft == 2:
                xPhys = (H @ xnew.reshape(-1, order="F") / Hs).reshape((nely, nelx), order="F")
            if xPhys.sum() > volfrac * nelx * nely:
                l1 = lmid
            else:
                l2 = lmid
        change = float(np.max(np.abs(xnew - x)))
        x = xnew
        compliance.append(c)
        changes.append(change)
        if verbose:
            print(f" It.:{loop:5d} Obj.:{c:11.4f} Vol.:{xPhys.mean():7.3f} ch.:{change:7.3f}")
    elapsed = time.perf_counter() - t0
    return {
        "iterations": loop,
        "compliance": compliance,
        "change": changes,
        "xPhys": xPhys,
        "seconds_per_iteration": elapsed / max(loop, 1),
    }


if __name__ == "__main__":
    for ft in (1, 2):
        res = top88(60, 20, 0.5, 3, 1.5, ft)
        print(
            f"top88(60,20,0.5,3,1.5,{ft}): iterations={res['iterations']} "
            f"final compliance={res['compliance'][-1]:.4f} "
            f"({res['seconds_per_iteration'] * 1e3:.2f} ms/iteration)"
        )
