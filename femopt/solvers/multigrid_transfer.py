"""Grid transfers of geometric multigrid on structured grids (coarsening by 2 per axis),
on grid-layout vectors (:mod:`femopt.assembly.grid_layout`).

Prolongation P is bi/trilinear interpolation of node values from the coarse grid (nodes
2i of the fine grid) to the fine grid; restriction is its transpose P^T (full weighting
without the 1/2^dim). Both are separable: one 1D pass per axis, which is what the NumPy
twins do; the kernels (``multigrid_transfer.cu``) do all axes in one gather per output
node.

Constraints: a coarse dof is constrained when any fine dof of the same component that it
interpolates to is constrained (:func:`coarse_fixed`). Then P maps free coarse dofs to
vectors that vanish on every constrained fine dof, so ``P D_c`` needs no fine mask and the
Galerkin operator of the masked fine operator is the masked Galerkin operator of K.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from femopt.assembly.grid_layout import GridLayout
from femopt.backend import array_namespace
from femopt.errors import SolverError

SOURCE = Path(__file__).with_suffix(".cu")


def _take(a: Any, axis: int, sl: slice) -> Any:
    idx = [slice(None)] * a.ndim
    idx[axis] = sl
    return a[tuple(idx)]


def _prolong_axis(a: Any, axis: int) -> Any:
    xp = array_namespace(a)
    n = a.shape[axis]
    shape = list(a.shape)
    shape[axis] = 2 * n - 1
    out = xp.empty(shape, dtype=a.dtype)
    _take(out, axis, slice(0, None, 2))[...] = a
    _take(out, axis, slice(1, None, 2))[...] = 0.5 * (_take(a, axis, slice(0, -1))
                                                     + _take(a, axis, slice(1, None)))
    return out


def _restrict_axis(f: Any, axis: int) -> Any:
    c = _take(f, axis, slice(0, None, 2)).copy()
    odd = 0.5 * _take(f, axis, slice(1, None, 2))
    _take(c, axis, slice(0, -1))[...] += odd
    _take(c, axis, slice(1, None))[...] += odd
    return c


def prolong(coarse: GridLayout, vc: Any) -> Any:
    """P vc: a coarse dof vector to the fine grid (2x the cells per axis)."""
    a = coarse.nodes(vc)
    for axis in range(1, coarse.dim + 1):  # axis 0 is the component
        a = _prolong_axis(a, axis)
    return a.reshape(-1)


def restrict(coarse: GridLayout, vf: Any) -> Any:
    """P^T vf: a fine dof vector to the coarse grid."""
    fine = GridLayout(tuple(2 * n for n in coarse.shape), coarse.k)
    a = fine.nodes(vf)
    for axis in range(1, coarse.dim + 1):
        a = _restrict_axis(a, axis)
    return a.reshape(-1)


def coarse_fixed(fine: GridLayout, fixed: Any) -> Any:
    """Constrained coarse dofs (bool (n_dofs_coarse,)) from constrained fine dofs.

    Coarse node i along an axis interpolates to fine nodes 2i-1, 2i, 2i+1; it is
    constrained where any of them (in the tensor-product box, same component) is.
    """
    a = fine.nodes(fixed)
    for axis in range(1, fine.dim + 1):
        c = _take(a, axis, slice(0, None, 2)).copy()
        odd = _take(a, axis, slice(1, None, 2))
        _take(c, axis, slice(0, -1))[...] |= odd
        _take(c, axis, slice(1, None))[...] |= odd
        a = c
    return a.reshape(-1)


def restrict_into(coarse: GridLayout, r_fine: Any, out: Any, free_coarse: Any,
                  accumulate: bool = False) -> Any:
    """out = D_c P^T r_fine (zero on constrained coarse dofs); with ``accumulate``
    out += D_c P^T r_fine (constrained coarse dofs keep their values)."""
    if array_namespace(r_fine) is np:
        if accumulate:
            out += restrict(coarse, r_fine) * free_coarse
            return out
        out[...] = restrict(coarse, r_fine)
        out *= free_coarse
        return out
    return _restrict_gpu(coarse, r_fine, out, free_coarse, accumulate)


def prolong_add(coarse: GridLayout, x_coarse: Any, x_fine: Any) -> Any:
    """x_fine += P x_coarse."""
    if array_namespace(x_fine) is np:
        x_fine += prolong(coarse, x_coarse)
        return x_fine
    return _prolong_gpu(coarse, x_coarse, x_fine, add=True)


def prolong_into(coarse: GridLayout, x_coarse: Any, x_fine: Any) -> Any:
    """x_fine = P x_coarse (no read of x_fine)."""
    if array_namespace(x_fine) is np:
        x_fine[...] = prolong(coarse, x_coarse)
        return x_fine
    return _prolong_gpu(coarse, x_coarse, x_fine, add=False)


# -- CuPy launchers ---------------------------------------------------------------------

def _name(op: str, coarse: GridLayout, a: Any) -> str:
    from femopt.backend.kernels import real_name, register_instances

    register_instances(SOURCE, [f"femopt_multigrid_{o}<{r}, {d}, {k}>"
                                for o in ("prolong", "restrict")
                                for r in ("double", "float") for d, ks in ((2, (1, 2)),
                                                                           (3, (1, 3)))
                                for k in ks])
    return f"femopt_multigrid_{op}<{real_name(a)}, {coarse.dim}, {coarse.k}>"


MAX_LINES = 65535  # CUDA's largest grid in y and z: the nodes of a level along y and z


def _launch(kern: Any, nodes: tuple[int, ...], args: tuple) -> None:
    """One thread per node of a grid with ``nodes`` (x, y[, z]) nodes: x along blocks of
    a multiple of 32 threads (at most 128), a block row per (y, z) line."""
    nodes = tuple(nodes) + (1,) * (3 - len(nodes))
    if max(nodes[1], nodes[2]) > MAX_LINES:
        raise SolverError(f"the multigrid's grid transfers on the GPU take at most "
                          f"{MAX_LINES} nodes along y and z; this level has "
                          f"{nodes[1]} x {nodes[2]} (x is not limited: put the longest "
                          f"axis first)")
    block = min(128, 32 * -(-nodes[0] // 32))
    kern((-(-nodes[0] // block), nodes[1], nodes[2]), (block,), args)


def _dims(coarse: GridLayout) -> tuple:
    shape = tuple(coarse.shape) + (1,) * (3 - coarse.dim)
    return tuple(np.int32(n) for n in shape)


def _prolong_gpu(coarse: GridLayout, xc: Any, xf: Any, add: bool) -> Any:
    from femopt.backend.kernels import get_kernel

    kern = get_kernel(SOURCE, _name("prolong", coarse, xf))
    _launch(kern, tuple(2 * n + 1 for n in coarse.shape),
            (xc, xf) + _dims(coarse) + (np.int32(add),))
    return xf


def _restrict_gpu(coarse: GridLayout, rf: Any, out: Any, free_c: Any,
                  accumulate: bool = False) -> Any:
    from femopt.backend.kernels import get_kernel

    kern = get_kernel(SOURCE, _name("restrict", coarse, rf))
    _launch(kern, tuple(n + 1 for n in coarse.shape),
            (rf, out, free_c) + _dims(coarse) + (np.int32(accumulate),))
    return out
