"""The entries of a grid's element matrix K0 as compile-time constants of the hex8 apply
kernels: snapped so that entries equal in exact arithmetic are equal in floating point,
and written as exact hex literals."""

from __future__ import annotations

import numpy as np


def snap_entries(ke: np.ndarray, rtol: float = 1e-12) -> np.ndarray:
    """``ke`` with magnitudes that agree to ``rtol`` (of the largest) made equal.

    Quadrature leaves entries that are equal in exact arithmetic a few ulps apart; made
    equal, the 576 entries of a hex8 elasticity matrix take 10 distinct magnitudes, which
    the apply kernel keeps in registers. The change is at rounding level.
    """
    ke = np.asarray(ke, dtype=np.float64)
    mag = np.abs(ke).ravel()
    tol = rtol * mag.max()
    order = np.argsort(mag)
    groups = np.split(order, np.flatnonzero(np.diff(mag[order]) > tol) + 1)
    snapped = mag.copy()
    for g in groups:
        snapped[g] = 0.0 if mag[g].max() <= tol else mag[g].mean()
    return (np.sign(ke).ravel() * snapped).reshape(ke.shape)


def k0_prelude(ke: np.ndarray) -> str:
    """C++ defining ``femopt_k0(i)``: the entries of ``ke`` (snapped, :func:`snap_entries`)
    as exact (hex) literals."""
    values = ", ".join(float(v).hex() for v in snap_entries(ke).ravel())
    return ("__device__ __forceinline__ constexpr double femopt_k0(int i) {\n"
            f"    constexpr double v[{ke.size}] = {{{values}}};\n"
            "    return v[i];\n}\n")
