"""CUDA C generated from a physics' element kernel: the element matrix as a device
template, and from it the (transposed) operator apply, the design-sensitivity kernel and
the shape-sensitivity kernel.

The integrand of an :class:`~femopt.assembly.element_kernel.ElementKernel` is run once on
symbolic scalars (:class:`Expr`). The trace (constants folded, common subexpressions
shared) is straight-line code for one quadrature point; it is printed inside a loop over
the element's quadrature points as ``femopt_gen_<name>_element<T>``, a template over the
scalar type. The kernels instantiate it with

- ``T`` (double or float): ``femopt_adjoint_<name>_apply<T, TRANSPOSE>``, y += K^T x
  (or K x) element by element, K_e = K_e(m_e);
- ``femopt_dual<T>`` seeded on m: ``femopt_adjoint_<name>_sensitivity<T>``,
  s_e = m'(rho_e) sum_c lambda_c,e^T (dK_e/dm) u_c,e;
- ``femopt_dual<T>`` seeded on each node coordinate in turn:
  ``femopt_adjoint_<name>_shape_sensitivity<T>``, g_{a,d} += sum_c lambda_c,e^T
  (dK_e/dX_{a,d}) u_c,e.

:mod:`femopt.adjoint.generated` holds their NumPy twins and the CuPy launchers; a source
is generated when a kernel is first launched on a device and kept in the one kernel
cache (:func:`femopt.backend.kernels.generated_module`), so nothing is traced twice.
"""

from __future__ import annotations

import math
from typing import Any

from femopt.adjoint.trace import Expr, trace_integrand
from femopt.assembly.element_kernel import ElementKernel


DUAL_SOURCE = r"""
#ifndef FEMOPT_DUAL_DEFINED
#define FEMOPT_DUAL_DEFINED
// Forward-mode dual number: value v and derivative d along one direction.
template <typename T> struct femopt_dual {
    T v, d;
    __device__ femopt_dual() : v(0), d(0) {}
    __device__ femopt_dual(double c) : v(T(c)), d(T(0)) {}
    __device__ femopt_dual(T v_, T d_, int) : v(v_), d(d_) {}
};
template <typename T> __device__ __forceinline__ femopt_dual<T> operator+(femopt_dual<T> a, femopt_dual<T> b) { return femopt_dual<T>(a.v + b.v, a.d + b.d, 0); }
template <typename T> __device__ __forceinline__ femopt_dual<T> operator-(femopt_dual<T> a, femopt_dual<T> b) { return femopt_dual<T>(a.v - b.v, a.d - b.d, 0); }
template <typename T> __device__ __forceinline__ femopt_dual<T> operator-(femopt_dual<T> a) { return femopt_dual<T>(-a.v, -a.d, 0); }
template <typename T> __device__ __forceinline__ femopt_dual<T> operator*(femopt_dual<T> a, femopt_dual<T> b) { return femopt_dual<T>(a.v * b.v, a.d * b.v + a.v * b.d, 0); }
template <typename T> __device__ __forceinline__ femopt_dual<T> operator/(femopt_dual<T> a, femopt_dual<T> b) { return femopt_dual<T>(a.v / b.v, (a.d * b.v - a.v * b.d) / (b.v * b.v), 0); }
__device__ __forceinline__ double femopt_val(double a) { return a; }
__device__ __forceinline__ float femopt_val(float a) { return a; }
template <typename T> __device__ __forceinline__ T femopt_val(femopt_dual<T> a) { return a.v; }
__device__ __forceinline__ double femopt_sqrt(double a) { return sqrt(a); }
__device__ __forceinline__ float femopt_sqrt(float a) { return sqrtf(a); }
template <typename T> __device__ __forceinline__ femopt_dual<T> femopt_sqrt(femopt_dual<T> a) {
    const T s = femopt_sqrt(a.v); return femopt_dual<T>(s, a.d / (T(2) * s), 0); }
__device__ __forceinline__ double femopt_tanh(double a) { return tanh(a); }
__device__ __forceinline__ float femopt_tanh(float a) { return tanhf(a); }
template <typename T> __device__ __forceinline__ femopt_dual<T> femopt_tanh(femopt_dual<T> a) {
    const T t = femopt_tanh(a.v); return femopt_dual<T>(t, a.d * (T(1) - t * t), 0); }
#endif
"""


def _literal(v: float) -> str:
    if not math.isfinite(v):
        raise ValueError(f"non-finite constant {v} in an element kernel")
    return f"T({v!r})"


def element_function(kernel: ElementKernel) -> str:
    """C source of ``femopt_gen_<name>_element<T>(x, m, p, ke)``."""
    tr, outs = trace_integrand(kernel)
    el = kernel.element
    nn, dim, nd = el.n_nodes, el.dim, kernel.nd
    quad = kernel.quadrature()
    nq = len(quad)
    name = kernel.name
    lines = [f"// quadrature of {el.name}: N, dN/dxi and weights of {nq} points",
             f"__device__ const double femopt_gen_{name}_n[{nq}][{nn}] = {{"
             + ", ".join("{" + ", ".join(repr(float(v)) for v in n) + "}" for n, _, _ in quad)
             + "};",
             f"__device__ const double femopt_gen_{name}_dn[{nq}][{nn}][{dim}] = {{"
             + ", ".join("{" + ", ".join("{" + ", ".join(repr(float(v)) for v in row) + "}"
                                         for row in dn) + "}" for _, dn, _ in quad) + "};",
             f"__device__ const double femopt_gen_{name}_w[{nq}] = {{"
             + ", ".join(repr(w) for _, _, w in quad) + "};",
             "",
             f"// K_e(m) of '{name}': x[{nn * dim}] node coordinates (node-major), m the",
             f"// material factor, p[{len(kernel.params)}] = ({', '.join(kernel.params)}),",
             f"// ke[{nd * nd}] row-major. {len(tr.nodes)} traced operations per point.",
             "template <typename T>",
             f"__device__ void femopt_gen_{name}_element(const T* x, const T m, const T* p, T* ke)",
             "{",
             f"    for (int k = 0; k < {nd * nd}; ++k) ke[k] = T(0);",
             f"    for (int q = 0; q < {nq}; ++q) {{"]

    def ref(v: Any) -> str:
        return f"t{v.index}" if isinstance(v, Expr) else _literal(v)

    for k, node in enumerate(tr.nodes):
        op, args = node[0], node[1:]
        if op == "in":
            s = args[0]
            if s.startswith("n") and not s.startswith("dn"):
                rhs = f"T(femopt_gen_{name}_n[q][{s[1:]}])"
            elif s.startswith("dn"):
                a, d = s[2:].split("_")
                rhs = f"T(femopt_gen_{name}_dn[q][{a}][{d}])"
            elif s == "w":
                rhs = f"T(femopt_gen_{name}_w[q])"
            else:
                rhs = s  # x[..], m, p[..]
        elif op == "neg":
            rhs = f"-{ref(args[0])}"
        elif op in ("sqrt", "tanh"):
            rhs = f"femopt_{op}({ref(args[0])})"
        elif op == "sel":
            rhs = (f"(femopt_val({ref(args[0])}) < femopt_val({ref(args[1])})) ? "
                   f"{ref(args[2])} : {ref(args[3])}")
        else:
            sym = {"add": "+", "sub": "-", "mul": "*", "div": "/"}[op]
            rhs = f"{ref(args[0])} {sym} {ref(args[1])}"
        lines.append(f"        const T t{k} = {rhs};")
    for i, j, e in outs:
        lines.append(f"        ke[{i * nd + j}] = ke[{i * nd + j}] + {ref(e)};")
    lines += ["    }", "}"]
    return "\n".join(lines)


KERNELS_TEMPLATE = r"""
// (a) y += K x (TRANSPOSE false) or y += K^T x (true), element by element: one thread
// per cell computes K_e(m_e) and scatters with atomics. Full dof vectors, dof = node*K+c.
template <typename T, bool TRANSPOSE>
__global__ void femopt_adjoint_@NAME@_apply(
    const T* __restrict__ coords, const femopt_index* __restrict__ cells,
    const T* __restrict__ mfac, const T* __restrict__ p, const T* __restrict__ xin,
    T* __restrict__ y, femopt_index n_cells)
{
    T xe[@NN@ * @DIM@], ke[@ND@ * @ND@], ve[@ND@];
    for (femopt_index e = femopt_thread_id(); e < n_cells; e += femopt_thread_count()) {
        for (int a = 0; a < @NN@; ++a) {
            const femopt_index node = cells[e * @NN@ + a];
            for (int d = 0; d < @DIM@; ++d) xe[a * @DIM@ + d] = coords[node * @DIM@ + d];
            for (int c = 0; c < @K@; ++c) ve[a * @K@ + c] = xin[node * @K@ + c];
        }
        femopt_gen_@NAME@_element<T>(xe, mfac[e], p, ke);
        for (int i = 0; i < @ND@; ++i) {
            T s = T(0);
            for (int j = 0; j < @ND@; ++j)
                s += (TRANSPOSE ? ke[j * @ND@ + i] : ke[i * @ND@ + j]) * ve[j];
            atomicAdd(&y[cells[e * @NN@ + i / @K@] * @K@ + i % @K@], s);
        }
    }
}

// lam^T A u summed over load cases, A = the derivative parts of a dual element matrix
template <typename T>
__device__ __forceinline__ T femopt_adjoint_@NAME@_contract(
    const femopt_dual<T>* ke, const T* __restrict__ lam, const T* __restrict__ u,
    const femopt_index* __restrict__ cells, femopt_index e, int n_cases, femopt_index n_dofs)
{
    T total = T(0);
    for (int c = 0; c < n_cases; ++c) {
        for (int i = 0; i < @ND@; ++i) {
            const femopt_index di = cells[e * @NN@ + i / @K@] * @K@ + i % @K@;
            T row = T(0);
            for (int j = 0; j < @ND@; ++j)
                row += ke[i * @ND@ + j].d * u[c * n_dofs + cells[e * @NN@ + j / @K@] * @K@ + j % @K@];
            total += lam[c * n_dofs + di] * row;
        }
    }
    return total;
}

// (b) sens[e] = dm[e] * sum_c lam_c,e^T (dK_e/dm) u_c,e, dK_e/dm by a dual seed on m.
template <typename T>
__global__ void femopt_adjoint_@NAME@_sensitivity(
    const T* __restrict__ coords, const femopt_index* __restrict__ cells,
    const T* __restrict__ mfac, const T* __restrict__ dm, const T* __restrict__ p,
    const T* __restrict__ lam, const T* __restrict__ u, int n_cases, femopt_index n_dofs,
    T* __restrict__ sens, femopt_index n_cells)
{
    femopt_dual<T> xe[@NN@ * @DIM@], pe[@NP@ + 1], ke[@ND@ * @ND@];
    for (int k = 0; k < @NP@; ++k) pe[k] = femopt_dual<T>(p[k], T(0), 0);
    for (femopt_index e = femopt_thread_id(); e < n_cells; e += femopt_thread_count()) {
        for (int a = 0; a < @NN@; ++a)
            for (int d = 0; d < @DIM@; ++d)
                xe[a * @DIM@ + d] = femopt_dual<T>(coords[cells[e * @NN@ + a] * @DIM@ + d], T(0), 0);
        femopt_gen_@NAME@_element<femopt_dual<T>>(xe, femopt_dual<T>(mfac[e], T(1), 0), pe, ke);
        sens[e] = dm[e] * femopt_adjoint_@NAME@_contract<T>(ke, lam, u, cells, e, n_cases, n_dofs);
    }
}

// (c) grad[node * DIM + d] += sum_c lam_c,e^T (dK_e/dX_{a,d}) u_c,e, one dual seed per
// node coordinate of the cell.
template <typename T>
__global__ void femopt_adjoint_@NAME@_shape_sensitivity(
    const T* __restrict__ coords, const femopt_index* __restrict__ cells,
    const T* __restrict__ mfac, const T* __restrict__ p, const T* __restrict__ lam,
    const T* __restrict__ u, int n_cases, femopt_index n_dofs, T* __restrict__ grad,
    femopt_index n_cells)
{
    femopt_dual<T> xe[@NN@ * @DIM@], pe[@NP@ + 1], ke[@ND@ * @ND@];
    for (int k = 0; k < @NP@; ++k) pe[k] = femopt_dual<T>(p[k], T(0), 0);
    for (femopt_index e = femopt_thread_id(); e < n_cells; e += femopt_thread_count()) {
        for (int s = 0; s < @NN@ * @DIM@; ++s) {
            for (int a = 0; a < @NN@; ++a)
                for (int d = 0; d < @DIM@; ++d)
                    xe[a * @DIM@ + d] = femopt_dual<T>(coords[cells[e * @NN@ + a] * @DIM@ + d],
                                                       T(a * @DIM@ + d == s ? 1 : 0), 0);
            femopt_gen_@NAME@_element<femopt_dual<T>>(xe, femopt_dual<T>(mfac[e], T(0), 0), pe, ke);
            const T g = femopt_adjoint_@NAME@_contract<T>(ke, lam, u, cells, e, n_cases, n_dofs);
            atomicAdd(&grad[cells[e * @NN@ + s / @DIM@] * @DIM@ + s % @DIM@], g);
        }
    }
}
"""


def kernel_source(kernel: ElementKernel) -> str:
    """The whole generated CUDA source of ``kernel`` (needs femopt's device preamble)."""
    el = kernel.element
    body = KERNELS_TEMPLATE
    for key, val in {"NAME": kernel.name, "NN": el.n_nodes, "DIM": el.dim, "ND": kernel.nd,
                     "K": kernel.dofs_per_node, "NP": len(kernel.params)}.items():
        body = body.replace(f"@{key}@", str(val))
    head = f"// Generated by femopt.adjoint.codegen from the element kernel '{kernel.name}'.\n"
    return head + DUAL_SOURCE + "\n" + element_function(kernel) + "\n" + body


def kernel_names(kernel: ElementKernel) -> list[str]:
    """Template instances of the generated kernels (double and float)."""
    n = kernel.name
    out = []
    for t in ("double", "float"):
        out += [f"femopt_adjoint_{n}_apply<{t}, false>", f"femopt_adjoint_{n}_apply<{t}, true>",
                f"femopt_adjoint_{n}_sensitivity<{t}>",
                f"femopt_adjoint_{n}_shape_sensitivity<{t}>"]
    return out
