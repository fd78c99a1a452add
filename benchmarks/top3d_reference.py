"""Straight NumPy/SciPy transcription of the 169-line MATLAB 3D topology optimization code.

Reference: K. Liu, A. Tovar, "An efficient 3D topology optimization code written
in Matlab", Struct. Multidisc. Optim. 50 (2014) 1175-1196 (code ``top3d.m``).

Like ``top88_reference``, this module is deliberately not optimised: it follows
the published algorithm step by step (lk_H8 element matrix, the code's node and
dof numbering, density filter built by nested loops, OC bisection, stopping
rule ``change > tolx && loop < maxloop``) and is the reference/baseline for
femopt's tests and CPU speed benchmark.

Default problem (as in the paper): cantilever fixed on the face x = 0, unit
downward (-y) loads on every node of the free end's bottom edge (x = nelx,
y = 0, z = 0..nelz).

MATLAB is 1-based and column-major; here indices are 0-based and reshapes that
mirror MATLAB ``reshape``/``(:)`` use ``order="F"``.  Element
``e = ely + elx*nely + elz*nelx*nely`` (0-based) is ``xPhys[ely, elx, elz]``.
"""

from __future__ import annotations

import math
import time

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import spsolve


def lk_H8(nu: float = 0.3) -> np.ndarray:
    """24x24 stiffness matrix of the trilinear unit-cube hexahedron (E=1), as in top3d."""
    A = np.array(
        [
            [32, 6, -8, 6, -6, 4, 3, -6, -10, 3, -3, -3, -4, -8],
            [-48, 0, 0, -24, 24, 0, 0, 0, 12, -12, 0, 12, 12, 12],
        ],
        dtype=float,
    )
    kk = 1.0 / 144.0 * A.T @ np.array([1.0, nu])
    k = np.concatenate([[np.nan], kk])  # k[1..14] as in MATLAB's k(1..14)

    def sub(rows):
        return np.array([[k[i] for i in r] for r in rows])

    K1 = sub([[1, 2, 2, 3, 5, 5], [2, 1, 2, 4, 6, 7], [2, 2, 1, 4, 7, 6],
              [3, 4, 4, 1, 8, 8], [5, 6, 7, 8, 1, 2], [5, 7, 6, 8, 2, 1]])
    K2 = sub([[9, 8, 12, 6, 4, 7], [8, 9, 12, 5, 3, 5], [10, 10, 13, 7, 4, 6],
              [6, 5, 11, 9, 2, 10], [4, 3, 5, 2, 9, 12], [11, 4, 6, 12, 10, 13]])
    K3 = sub([[6, 7, 4, 9, 12, 8], [7, 6, 4, 10, 13, 10], [5, 5, 3, 8, 12, 9],
              [9, 10, 2, 6, 11, 5], [12, 13, 10, 11, 6, 4], [2, 12, 9, 4, 5, 3]])
    K4 = sub([[14, 11, 11, 13, 10, 10], [11, 14, 11, 12, 9, 8], [11, 11, 14, 12, 8, 9],
              [13, 12, 12, 14, 7, 7], [10, 9, 8, 7, 14, 11], [10, 8, 9, 7, 11, 14]])
    K5 = sub([[1, 2, 8, 3, 5, 4], [2, 1, 8, 4, 6, 11], [8, 8, 1, 5, 11, 6],
              [3, 4, 5, 1, 8, 2], [5, 6, 11, 8, 1, 8], [4, 11, 6, 2, 8, 1]])
    K6 = sub([[14, 11, 7, 13, 10, 12], [11, 14, 7, 12, 9, 2], [7, 7, 14, 10, 2, 9],
              [13, 12, 10, 14, 7, 11], [10, 9, 2, 7, 14, 7], [12, 2, 9, 11, 7, 14]])
    return 1.0 / ((nu + 1.0) * (1.0 - 2.0 * nu)) * np.block(
        [
            [K1, K2, K3, K4],
            [K2.T, K5, K6, K3.T],
            [K3.T, K6, K5.T, K2.T],
            [K4, K3, K2, K1.T],
        ]
    )


def edof_matrix(nelx: int, nely: int, nelz: int) -> np.ndarray:
    """edofMat of top3d (0-based dofs), one row per element in column-major order."""
    nele = nelx * nely * nelz
    nodegrd = np.arange(1, (nely + 1) * (nelx + 1) + 1).reshape((nely + 1, nelx + 1), order="F")
    nodeids = nodegrd[:-1, :-1].reshape(nely * nelx, order="F")
    nodeidz = np.arange(0, nelz) * (nely + 1) * (nelx + 1)
    nodeids = nodeids[:, None] + nodeidz[None, :]  # (nely*nelx, nelz)
    edofVec = 3 * nodeids.reshape(-1, order="F") + 1
    layer = np.array([0, 1, 2, *(3 * nely + np.array([3, 4, 5, 0, 1, 2])), -3, -2, -1])
    offs = np.concatenate([layer, 3 * (nely + 1) * (nelx + 1) + layer])
    assert edofVec.shape[0] == nele
    return edofVec[:, None] + offs[None, :] - 1  # -1: MATLAB 1-based -> 0-based


def filter_matrix(nelx: int, nely: int, nelz: int, rmin: float):
    """H and Hs exactly as built by the nested loops of top3d (0-based)."""
    r = math.ceil(rmin) - 1
    iH: list[int] = []
    jH: list[int] = []
    sH: list[float] = []
    for k1 in range(nelz):
        for i1 in range(nelx):
            for j1 in range(nely):
                e1 = k1 * nelx * nely + i1 * nely + j1
                for k2 in range(max(k1 - r, 0), min(k1 + r, nelz - 1) + 1):
                    for i2 in range(max(i1 - r, 0), min(i1 + r, nelx - 1) + 1):
                        for j2 in range(max(j1 - r, 0), min(j1 + r, nely - 1) + 1):
                            e2 = k2 * nelx * nely + i2 * nely + j2
                            iH.append(e1)
                            jH.append(e2)
                            sH.append(
                                max(0.0, rmin - math.sqrt((i1 - i2) ** 2 + (j1 - j2) ** 2 + (k1 - k2) ** 2))
                            )
    nele = nelx * nely * nelz
    H = sp.coo_matrix((sH, (iH, jH)), shape=(nele, nele)).tocsc()
    Hs = np.asarray(H.sum(axis=1)).ravel()
    return H, Hs


def cantilever_bc(nelx: int, nely: int, nelz: int):
    """Default loads and supports of top3d (0-based dofs): (F, fixeddof)."""
    ndof = 3 * (nelx + 1) * (nely + 1) * (nelz + 1)
    # USER-DEFINED LOAD DOFs: x = nelx, y = 0, z = 0..nelz
    il, jl, kl = nelx, 0, np.arange(nelz + 1)
    loadnid = kl * (nelx + 1) * (nely + 1) + il * (nely + 1) + (nely + 1 - jl)  # 1-based node ids
    loaddof = 3 * loadnid - 1  # 1-based y dofs
    F = np.zeros(ndof)
    np.add.at(F, loaddof - 1, -1.0)  # sparse(loaddof,1,-1,ndof,1) sums duplicates
    # USER-DEFINED SUPPORT FIXED DOFs: x = 0, all y, all z
    jf, kf = np.meshgrid(np.arange(nely + 1), np.arange(nelz + 1), indexing="ij")
    fixednid = (kf * (nelx + 1) * (nely + 1) + 0 * (nely + 1) + (nely + 1 - jf)).reshape(-1, order="F")
    fixeddof = np.concatenate([3 * fixednid, 3 * fixednid - 1, 3 * fixednid - 2]) - 1
    return F, fixeddof


def top3d(nelx, nely, nelz, volfrac, penal, rmin, max_loop=200, tolx=0.01, verbose=False) -> dict:
    """Run top3d (cantilever, density filter, OC)."""
    maxloop = max_loop
    # USER-DEFINED MATERIAL PROPERTIES
    E0 = 1.0
    Emin = 1e-9
    nu = 0.3
    # LOADS AND SUPPORTS
    F, fixeddof = cantilever_bc(nelx, nely, nelz)
    # PREPARE FINITE ELEMENT ANALYSIS
    nele = nelx * nely * nelz
    ndof = 3 * (nelx + 1) * (nely + 1) * (nelz + 1)
    U = np.zeros(ndof)
    freedofs = np.setdiff1d(np.arange(ndof), fixeddof)
    KE = lk_H8(nu)
    edofMat = edof_matrix(nelx, nely, nelz)
    iK = np.kron(edofMat, np.ones((24, 1), dtype=np.int64)).T.reshape(24 * 24 * nele, order="F")
    jK = np.kron(edofMat, np.ones((1, 24), dtype=np.int64)).T.reshape(24 * 24 * nele, order="F")
    # PREPARE FILTER
    H, Hs = filter_matrix(nelx, nely, nelz, rmin)
    shape = (nely, nelx, nelz)
    # INITIALIZE ITERATION
    x = np.full(shape, float(volfrac))
    xPhys = x.copy()
    loop = 0
    change = 1.0
    compliance: list[float] = []
    changes: list[float] = []
    t0 = time.perf_counter()
    # START ITERATION
    while change > tolx and loop < maxloop:
        loop += 1
        # FE-ANALYSIS
        xf = xPhys.reshape(-1, order="F")
        sK = (KE.reshape(-1, 1, order="F") * (Emin + xf[None, :] ** penal * (E0 - Emin))).reshape(
            24 * 24 * nele, order="F"
        )
        K = sp.coo_matrix((sK, (iK, jK)), shape=(ndof, ndof)).tocsc()
        K = (K + K.T) / 2
        U[freedofs] = spsolve(K[freedofs, :][:, freedofs], F[freedofs])
        # OBJECTIVE FUNCTION AND SENSITIVITY ANALYSIS
        Ue = U[edofMat]
        ce = np.sum((Ue @ KE) * Ue, axis=1).reshape(shape, order="F")
        c = float(np.sum((Emin + xPhys**penal * (E0 - Emin)) * ce))
        dc = -penal * (E0 - Emin) * xPhys ** (penal - 1) * ce
        dv = np.ones(shape)
        # FILTERING AND MODIFICATION OF SENSITIVITIES
        dc = (H @ (dc.reshape(-1, order="F") / Hs)).reshape(shape, order="F")
        dv = (H @ (dv.reshape(-1, order="F") / Hs)).reshape(shape, order="F")
        # OPTIMALITY CRITERIA UPDATE
        l1 = 0.0
        l2 = 1e9
        move = 0.2
        while (l2 - l1) / (l1 + l2) > 1e-3:
            lmid = 0.5 * (l2 + l1)
            xnew = np.maximum(
                0.0, np.maximum(x - move, np.minimum(1.0, np.minimum(x + move, x * np.sqrt(-dc / dv / lmid))))
            )
            xPhys = (H @ xnew.reshape(-1, order="F") / Hs).reshape(shape, order="F")
            if xPhys.sum() > volfrac * nele:
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
    res = top3d(60, 20, 4, 0.3, 3, 1.5)
    print(
        f"top3d(60,20,4,0.3,3,1.5): iterations={res['iterations']} "
        f"final compliance={res['compliance'][-1]:.4f} "
        f"({res['seconds_per_iteration']:.3f} s/iteration)"
    )
