"""CUDA C generated from a function's integrand: the values of every cell and point, and
their partials contracted with the reduction's dJ/d(values), one thread per (case, cell).

An :class:`~femopt.objectives.integrand.IntegrandFunction`'s integrand is run on
symbolic scalars (:mod:`femopt.adjoint.trace`) once per point of its cells: the state
entries ``u[i]`` and the density ``rho`` are the seeded inputs, the node coordinates
``x[]``, the parameters ``p[]`` and the cell data ``data[]`` run-time inputs, the
point's N, dN/dxi and weight constants. Nodes that depend on a seeded input are printed
with the scalar type ``S`` (``T`` or ``femopt_dual<T>``), the others with ``T``. The
source defines, for a function ``<name>``:

- ``femopt_integrand_<name>_points<T, S>``: the n_out values at each of the n_q points;
- ``femopt_integrand_<name>_values<T>``: vals[o, c, e, q] (the array the reduction
  takes, :mod:`femopt.objectives.reductions`);
- ``femopt_integrand_<name>_partials<T>``: for each of the nd + 1 seeds (u entries,
  then rho) one dual evaluation, d_ue[c, e, i] = sum_{o,q} g[o,c,e,q] dv[o,c,e,q]/du_i
  and d_rho[c, e] likewise (summed over the cases by the caller).

The dual arithmetic follows :class:`femopt.adjoint.dual.Dual` operation by operation
(sqrt and a constant power with a zero derivative at 0), so the kernels equal the NumPy
route of ``IntegrandFunction.cell_terms`` to rounding. The source depends on the
function's instance (its options are constants of the trace), so a function's source is
traced once and the compiled module is memoised by the source's digest and the device
(:func:`femopt.backend.kernels.generated_module`): equal sources share one module.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any

import numpy as np

from femopt.adjoint.codegen import DUAL_SOURCE
from femopt.adjoint.trace import Expr, Trace, TraceOps

HELPERS = r"""
#ifndef FEMOPT_INTEGRAND_HELPERS
#define FEMOPT_INTEGRAND_HELPERS
// dual op constant and constant op dual, as femopt.adjoint.dual.Dual computes them
template <typename T> __device__ __forceinline__ femopt_dual<T> operator+(femopt_dual<T> a, T b) { return femopt_dual<T>(a.v + b, a.d, 0); }
template <typename T> __device__ __forceinline__ femopt_dual<T> operator+(T a, femopt_dual<T> b) { return femopt_dual<T>(a + b.v, b.d, 0); }
template <typename T> __device__ __forceinline__ femopt_dual<T> operator-(femopt_dual<T> a, T b) { return femopt_dual<T>(a.v - b, a.d, 0); }
template <typename T> __device__ __forceinline__ femopt_dual<T> operator-(T a, femopt_dual<T> b) { return femopt_dual<T>(a - b.v, -b.d, 0); }
template <typename T> __device__ __forceinline__ femopt_dual<T> operator*(femopt_dual<T> a, T b) { return femopt_dual<T>(a.v * b, a.d * b, 0); }
template <typename T> __device__ __forceinline__ femopt_dual<T> operator*(T a, femopt_dual<T> b) { return femopt_dual<T>(b.v * a, b.d * a, 0); }
template <typename T> __device__ __forceinline__ femopt_dual<T> operator/(femopt_dual<T> a, T b) { return femopt_dual<T>(a.v / b, a.d / b, 0); }
template <typename T> __device__ __forceinline__ femopt_dual<T> operator/(T a, femopt_dual<T> b) { return femopt_dual<T>(a / b.v, -a * b.d / (b.v * b.v), 0); }
__device__ __forceinline__ double femopt_fn_sqrt(double a) { return sqrt(a); }
__device__ __forceinline__ double femopt_fn_tanh(double a) { return tanh(a); }
__device__ __forceinline__ double femopt_fn_exp(double a) { return exp(a); }
__device__ __forceinline__ double femopt_fn_log(double a) { return log(a); }
__device__ __forceinline__ double femopt_fn_pow(double a, double p) { return pow(a, p); }
// the derivative of sqrt is taken as 0 where the value is 0 (a norm at zero)
template <typename T> __device__ __forceinline__ femopt_dual<T> femopt_fn_sqrt(femopt_dual<T> a) {
    const T s = femopt_fn_sqrt(a.v); return femopt_dual<T>(s, s > T(0) ? a.d * (T(0.5) / s) : a.d * T(0), 0); }
template <typename T> __device__ __forceinline__ femopt_dual<T> femopt_fn_tanh(femopt_dual<T> a) {
    const T t = femopt_fn_tanh(a.v); return femopt_dual<T>(t, a.d * (T(1) - t * t), 0); }
template <typename T> __device__ __forceinline__ femopt_dual<T> femopt_fn_exp(femopt_dual<T> a) {
    const T e = femopt_fn_exp(a.v); return femopt_dual<T>(e, a.d * e, 0); }
template <typename T> __device__ __forceinline__ femopt_dual<T> femopt_fn_log(femopt_dual<T> a) {
    return femopt_dual<T>(femopt_fn_log(a.v), a.d / a.v, 0); }
// a constant power; its derivative is taken as 0 at v = 0 unless p = 1 (rho^q, q < 1)
template <typename T> __device__ __forceinline__ femopt_dual<T> femopt_fn_pow(femopt_dual<T> a, double p) {
    const T dv = a.v == T(0) ? T(p == 1.0 ? 1 : 0) : T(p) * femopt_fn_pow(a.v, p - 1.0);
    return femopt_dual<T>(femopt_fn_pow(a.v, p), a.d * dv, 0); }
#endif
"""

KERNELS = r"""
// vals[o, c, e, q]: one thread per (case, cell)
template <typename T>
__global__ void femopt_integrand_@NAME@_values(
    const T* __restrict__ ue, const T* __restrict__ rho, const T* __restrict__ coords,
    int shared_coords, const T* __restrict__ p, const T* __restrict__ data,
    T* __restrict__ vals, femopt_index n_cases, femopt_index n_cells)
{
    T u[@ND@], out[@NOUT@ * @NQ@];
    for (femopt_index t = femopt_thread_id(); t < n_cases * n_cells; t += femopt_thread_count()) {
        const femopt_index c = t / n_cells, e = t % n_cells;
        for (int i = 0; i < @ND@; ++i) u[i] = ue[t * @ND@ + i];
        femopt_integrand_@NAME@_points<T, T>(u, rho[e], coords + (shared_coords ? 0 : e * @NX@),
                                             p, data + e * @NDATA@, out);
        for (int o = 0; o < @NOUT@; ++o)
            for (int q = 0; q < @NQ@; ++q)
                vals[((o * n_cases + c) * n_cells + e) * @NQ@ + q] = out[q * @NOUT@ + o];
    }
}

// d_ue[c, e, i] = sum_{o,q} g[o,c,e,q] dv/du_i and d_rho[c, e] = sum_{o,q} g dv/drho,
// one dual evaluation per seed (the nd state entries, then rho)
template <typename T>
__global__ void femopt_integrand_@NAME@_partials(
    const T* __restrict__ ue, const T* __restrict__ rho, const T* __restrict__ coords,
    int shared_coords, const T* __restrict__ p, const T* __restrict__ data,
    const T* __restrict__ g, T* __restrict__ d_ue, T* __restrict__ d_rho,
    femopt_index n_cases, femopt_index n_cells)
{
    femopt_dual<T> u[@ND@], out[@NOUT@ * @NQ@];
    T gl[@NOUT@ * @NQ@];
    for (femopt_index t = femopt_thread_id(); t < n_cases * n_cells; t += femopt_thread_count()) {
        const femopt_index c = t / n_cells, e = t % n_cells;
        for (int o = 0; o < @NOUT@; ++o)
            for (int q = 0; q < @NQ@; ++q)
                gl[q * @NOUT@ + o] = g[((o * n_cases + c) * n_cells + e) * @NQ@ + q];
        for (int s = 0; s <= @ND@; ++s) {
            for (int i = 0; i < @ND@; ++i) u[i] = femopt_dual<T>(ue[t * @ND@ + i], T(i == s ? 1 : 0), 0);
            const femopt_dual<T> r(rho[e], T(s == @ND@ ? 1 : 0), 0);
            femopt_integrand_@NAME@_points<T, femopt_dual<T>>(
                u, r, coords + (shared_coords ? 0 : e * @NX@), p, data + e * @NDATA@, out);
            T acc = T(0);
            for (int k = 0; k < @NOUT@ * @NQ@; ++k) acc += gl[k] * out[k].d;
            if (s < @ND@) d_ue[t * @ND@ + s] = acc; else d_rho[t] = acc;
        }
    }
}
"""

_SEEDED = re.compile(r"^(u\[\d+\]|rho)$")


def c_name(fn: Any) -> str:
    """The function's name as a C identifier stem."""
    return re.sub(r"\W", "_", fn.name)


def layout(fn: Any) -> dict[str, int]:
    """Sizes the source is written for: nodes, coordinates, dofs, outputs, points, data."""
    mesh = fn.model.mesh
    nn, dim = mesh.cells.shape[1], mesh.points.shape[1]
    return {"NN": nn, "NX": nn * dim, "DIM": dim, "ND": nn * fn.model.physics.dofs_per_node,
            "NOUT": fn.reduction.n_out, "NQ": fn.n_points, "NDATA": len(data_columns(fn))}


def data_columns(fn: Any) -> list[tuple[str, int | None]]:
    """The cell data as columns (name, column or None for a scalar per cell), in the
    order of ``data[]`` in the generated code."""
    cols: list[tuple[str, int | None]] = []
    for k, v in fn.cell_data.items():
        cols += [(k, j) for j in range(v.shape[1])] if np.ndim(v) == 2 else [(k, None)]
    return cols


def trace_points(fn: Any) -> list[tuple[Trace, list[Any]]]:
    """The integrand traced at each point: (trace, its n_out outputs)."""
    from femopt.objectives import integrand_check
    from femopt.objectives.cell import Cell

    lay = layout(fn)
    out = []
    quad = fn._quad if fn.points != "cell" else [(None, None, None)]
    for n, dn, w in quad:
        tr = Trace()
        u = [tr.input(f"u[{i}]") for i in range(lay["ND"])]
        x = [[tr.input(f"x[{a * lay['DIM'] + d}]") for d in range(lay["DIM"])]
             for a in range(lay["NN"])]
        p = {k: tr.input(f"p[{i}]") for i, k in enumerate(fn.params)}
        cols = [tr.input(f"data[{j}]") for j in range(lay["NDATA"])]
        data: dict[str, Any] = {}
        for (k, j), col in zip(data_columns(fn), cols):
            if j is None:
                data[k] = col
            else:
                data.setdefault(k, []).append(col)
        cell = Cell(u, tr.input("rho"), fn.model.interp, x, n, dn, w, p, data)
        result = fn.integrand(TraceOps(tr), cell)
        parts = [result] if lay["NOUT"] == 1 else list(result)
        if len(parts) != lay["NOUT"] or not all(isinstance(v, (Expr, int, float))
                                                  for v in parts):
            raise integrand_check.IntegrandShapeError(
                f"the integrand of '{fn.name}' returned {len(parts)} value(s) of types "
                f"{[type(v).__name__ for v in parts]}; {lay['NOUT']} scalar(s) expected")
        out.append((tr, parts))
    return out


def _literal(v: float) -> str:
    if not math.isfinite(v):
        raise ValueError(f"non-finite constant {v} in an integrand")
    return f"T({float(v)!r})"


def point_code(tr: Trace, parts: list[Any], offset: str) -> list[str]:
    """Straight-line C of one traced point writing out[offset + o]."""
    seeded: list[bool] = []
    lines = []

    def ref(v: Any) -> str:
        return f"t{v.index}" if isinstance(v, Expr) else _literal(v)

    def is_seeded(v: Any) -> bool:
        return isinstance(v, Expr) and seeded[v.index]

    for k, node in enumerate(tr.nodes):
        op, args = node[0], node[1:]
        if op == "in":
            seeded.append(bool(_SEEDED.match(args[0])))
            rhs = args[0]
        elif op == "sel":
            seeded.append(is_seeded(args[2]) or is_seeded(args[3]))
            typ = "S" if seeded[-1] else "T"
            rhs = (f"(femopt_val({ref(args[0])}) < femopt_val({ref(args[1])})) ? "
                   f"{typ}({ref(args[2])}) : {typ}({ref(args[3])})")
        else:
            seeded.append(any(is_seeded(a) for a in args))
            if op == "neg":
                rhs = f"-{ref(args[0])}"
            elif op in ("sqrt", "tanh", "exp", "log"):
                rhs = f"femopt_fn_{op}({ref(args[0])})"
            elif op == "pow":
                rhs = f"femopt_fn_pow({ref(args[0])}, {float(args[1])!r})"
            else:
                sym = {"add": "+", "sub": "-", "mul": "*", "div": "/"}[op]
                rhs = f"{ref(args[0])} {sym} {ref(args[1])}"
        lines.append(f"    const {'S' if seeded[-1] else 'T'} t{k} = {rhs};")
    for o, part in enumerate(parts):
        lines.append(f"    out[{offset} + {o}] = S({ref(part)});")
    return lines


def function_source(fn: Any) -> str:
    """The whole generated CUDA source of ``fn`` (needs femopt's device preamble)."""
    lay = layout(fn)
    name = c_name(fn)
    body = [f"// Generated by femopt.adjoint.integrand_codegen from the integrand of "
            f"'{fn.name}' ({type(fn).__qualname__}):",
            f"// u[{lay['ND']}] the cell's state, rho its density, x[{lay['NX']}] its node "
            f"coordinates, p[{len(fn.params)}] = ({', '.join(fn.params)}),",
            f"// data[{lay['NDATA']}] its cell data; out[{lay['NOUT']} * q + o]: output o "
            f"at point q of {lay['NQ']}.",
            "template <typename T, typename S>",
            f"__device__ void femopt_integrand_{name}_points(const S* u, const S rho, "
            "const T* x, const T* p, const T* data, S* out)",
            "{"]
    for q, (tr, parts) in enumerate(trace_points(fn)):
        body.append("  {" + f"  // point {q}: {len(tr.nodes)} traced operations")
        body += point_code(tr, parts, str(q * lay["NOUT"]))
        body.append("  }")
    body.append("}")
    kernels = KERNELS.replace("@NAME@", name)
    for key, val in lay.items():
        kernels = kernels.replace(f"@{key}@", str(val))
    return DUAL_SOURCE + HELPERS + "\n" + "\n".join(body) + "\n" + kernels


def kernel_names(fn: Any) -> tuple[str, str]:
    """The values and partials kernels (double instances)."""
    name = c_name(fn)
    return (f"femopt_integrand_{name}_values<double>",
            f"femopt_integrand_{name}_partials<double>")


def generated(fn: Any) -> tuple[tuple, str]:
    """(cache key, source) of ``fn``, traced once per function instance."""
    got = getattr(fn, "_generated_source", None)
    if got is None:
        src = function_source(fn)
        got = (("integrand", fn.name, hashlib.sha256(src.encode()).hexdigest()), src)
        fn._generated_source = got
    return got


def module(fn: Any) -> Any:
    """The compiled module of ``fn``'s kernels on the current device (memoised)."""
    from femopt.backend.kernels import generated_module

    key, src = generated(fn)
    return generated_module(key, lambda: src, lambda: kernel_names(fn))


# -- launch (CuPy) ---------------------------------------------------------------------


def _inputs(fn: Any, ue: Any, rho: Any, coords: Any) -> tuple:
    """The kernels' common arguments as contiguous float64 device arrays."""
    import cupy

    n_e = ue.shape[1]
    device = int(cupy.cuda.runtime.getDevice())
    dev = lambda a: cupy.ascontiguousarray(cupy.asarray(a, dtype=cupy.float64))  # noqa: E731
    cols = data_columns(fn)
    if cols and n_e != fn.cells.size:
        raise ValueError(f"'{fn.name}' has cell data for {fn.cells.size} cells; the "
                         f"generated kernels got {n_e} cells")
    cached = getattr(fn, "_generated_inputs", None)
    if cached is None or cached[0] != device:
        data = np.zeros((max(n_e, 1), max(len(cols), 1)))
        for j, (k, col) in enumerate(cols):
            v = np.asarray(fn.cell_data[k], dtype=float)
            data[:, j] = v if col is None else v[:, col]
        p = np.array([float(v) for v in fn.params.values()] or [0.0])
        cached = (device, dev(p), dev(data))
        fn._generated_inputs = cached
    shared = np.int32(1 if coords.shape[0] == 1 else 0)
    return dev(ue), dev(rho), dev(coords), shared, cached[1], cached[2]


def values(fn: Any, ue: Any, rho: Any, coords: Any) -> Any:
    """vals (n_out, n_cases, n_cells, n_q) of ``fn``'s integrand by the generated
    kernel, from CuPy arrays (see ``IntegrandFunction.cell_value``)."""
    import cupy

    from femopt.backend.kernels import launch_1d

    n_c, n_e, _ = ue.shape
    args = _inputs(fn, ue, rho, coords)
    vals = cupy.zeros((fn.reduction.n_out, n_c, n_e, fn.n_points), dtype=cupy.float64)
    kernel = module(fn).get_function(kernel_names(fn)[0])
    launch_1d(kernel, n_c * n_e, args + (vals, np.int64(n_c), np.int64(n_e)), block=128)
    return vals


def partials(fn: Any, ue: Any, rho: Any, coords: Any, g: Any) -> tuple[Any, Any]:
    """(dJ/d(ue) (n_cases, n_cells, nd), dJ/d(rho) (n_cells,)) by the generated kernel,
    ``g`` = dJ/d(vals) from the reduction."""
    import cupy

    from femopt.backend.kernels import launch_1d

    n_c, n_e, nd = ue.shape
    args = _inputs(fn, ue, rho, coords)
    d_ue = cupy.zeros((n_c, n_e, nd), dtype=cupy.float64)
    d_rho = cupy.zeros((n_c, n_e), dtype=cupy.float64)
    g = cupy.ascontiguousarray(cupy.asarray(g, dtype=cupy.float64))
    kernel = module(fn).get_function(kernel_names(fn)[1])
    launch_1d(kernel, n_c * n_e, args + (g, d_ue, d_rho, np.int64(n_c), np.int64(n_e)),
              block=128)
    return d_ue, d_rho.sum(axis=0)
