"""The kernels generated from a physics' element kernel: NumPy twins and CuPy launchers.

Each function takes the mesh as ``points`` (n_nodes, dim) and ``cells`` (n_cells, nn),
per-cell material factors ``mfac`` = m(rho_e), and full dof vectors (dof = node * k + c):

- :func:`apply`: y = K x or y = K^T x with K = sum_e K_e(m_e) (no assembled matrix);
- :func:`sensitivity`: s_e = dm_e sum_c lambda_c,e^T (dK_e/dm) u_c,e;
- :func:`shape_sensitivity`: g_{node,d} = sum_e sum_c lambda_c,e^T (dK_e/dX_{a,d}) u_c,e.

NumPy arrays run the twins (element matrices and their dual-number derivatives from the
integrand, :mod:`femopt.adjoint.dual`); CuPy arrays run the generated CUDA source
(:mod:`femopt.adjoint.codegen`), compiled once per device and source.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from femopt.adjoint.codegen import kernel_names, kernel_source
from femopt.adjoint.dual import coordinate_derivative, material_derivative
from femopt.assembly.element_kernel import ElementKernel, element_matrices
from femopt.backend import array_namespace


def _cell_dofs(cells: np.ndarray, k: int) -> np.ndarray:
    return (cells[:, :, None] * k + np.arange(k)).reshape(cells.shape[0], -1)


def _scatter(n: int, dofs: np.ndarray, values: np.ndarray) -> np.ndarray:
    return np.bincount(dofs.ravel(), weights=values.ravel(), minlength=n)


def apply(kernel: ElementKernel, points: Any, cells: Any, mfac: Any, x: Any,
          transpose: bool = False) -> Any:
    """y = K x (or K^T x), K = sum_e K_e(m_e), element by element."""
    if array_namespace(x) is not np:
        return _gpu(kernel, x).apply(points, cells, mfac, x, transpose)
    dofs = _cell_dofs(cells, kernel.dofs_per_node)
    ke = element_matrices(kernel, points[cells], mfac, dtype=x.dtype)
    xe = x[dofs]
    ye = np.einsum("eji,ej->ei" if transpose else "eij,ej->ei", ke, xe)
    return _scatter(x.size, dofs, ye).astype(x.dtype)


def sensitivity(kernel: ElementKernel, points: Any, cells: Any, mfac: Any, dm: Any,
                lam: Any, u: Any) -> Any:
    """dm_e sum_c lambda_c,e^T (dK_e/dm) u_c,e per cell; lam, u: (n_cases, n_dofs)."""
    if array_namespace(u) is not np:
        return _gpu(kernel, u).sensitivity(points, cells, mfac, dm, lam, u)
    dofs = _cell_dofs(cells, kernel.dofs_per_node)
    dk = material_derivative(kernel, points[cells], mfac)
    return dm * np.einsum("cei,eij,cej->e", lam[:, dofs], dk, u[:, dofs], optimize=True)


def shape_sensitivity(kernel: ElementKernel, points: Any, cells: Any, mfac: Any, lam: Any,
                      u: Any) -> Any:
    """(n_nodes, dim) sum_e sum_c lambda_c,e^T (dK_e/dX) u_c,e, gathered at the nodes."""
    if array_namespace(u) is not np:
        return _gpu(kernel, u).shape_sensitivity(points, cells, mfac, lam, u)
    dofs = _cell_dofs(cells, kernel.dofs_per_node)
    dk = coordinate_derivative(kernel, points[cells], mfac)  # (e, s, nd, nd)
    g = np.einsum("cei,esij,cej->es", lam[:, dofs], dk, u[:, dofs], optimize=True)
    n_nodes, dim = points.shape
    coord_dofs = _cell_dofs(cells, dim)
    return _scatter(n_nodes * dim, coord_dofs, g).reshape(n_nodes, dim)


# -- CUDA ---------------------------------------------------------------------------


class _GpuKernels:
    """The compiled kernels of one element kernel on the current device."""

    def __init__(self, kernel: ElementKernel):
        from femopt.backend.kernels import generated_module

        self.kernel = kernel
        self.module = generated_module(cache_key(kernel), lambda: kernel_source(kernel),
                                       lambda: tuple(kernel_names(kernel)))

    def _fn(self, op: str, real: str, transpose: bool | None = None):
        n = self.kernel.name
        if op == "apply":
            name = f"femopt_adjoint_{n}_apply<{real}, {'true' if transpose else 'false'}>"
        else:
            name = f"femopt_adjoint_{n}_{op}<{real}>"
        return self.module.get_function(name)

    def _common(self, points, cells, mfac, like):
        import cupy

        from femopt.backend.kernels import real_name

        real = real_name(like)
        dt = like.dtype
        dev = lambda a, t: cupy.ascontiguousarray(cupy.asarray(a, dtype=t))  # noqa: E731
        return (real, dev(points, dt).ravel(), dev(cells, cupy.int64).ravel(),
                dev(mfac, dt), dev(self.kernel.param_vector(), dt))

    def _launch(self, fn, n_cells: int, args: tuple) -> None:
        from femopt.backend.kernels import launch_1d

        launch_1d(fn, n_cells, args, block=128)

    def apply(self, points, cells, mfac, x, transpose):
        import cupy

        real, pts, cl, m, p = self._common(points, cells, mfac, x)
        y = cupy.zeros_like(x)
        n_cells = int(cells.shape[0])
        self._launch(self._fn("apply", real, transpose), n_cells,
                     (pts, cl, m, p, x, y, np.int64(n_cells)))
        return y

    def sensitivity(self, points, cells, mfac, dm, lam, u):
        import cupy

        real, pts, cl, m, p = self._common(points, cells, mfac, u)
        n_cells = int(cells.shape[0])
        out = cupy.zeros(n_cells, dtype=u.dtype)
        self._launch(self._fn("sensitivity", real), n_cells,
                     (pts, cl, m, cupy.ascontiguousarray(cupy.asarray(dm, dtype=u.dtype)), p,
                      cupy.ascontiguousarray(lam), cupy.ascontiguousarray(u),
                      np.int32(u.shape[0]), np.int64(u.shape[1]), out, np.int64(n_cells)))
        return out

    def shape_sensitivity(self, points, cells, mfac, lam, u):
        import cupy

        real, pts, cl, m, p = self._common(points, cells, mfac, u)
        n_cells = int(cells.shape[0])
        out = cupy.zeros(tuple(points.shape), dtype=u.dtype)
        self._launch(self._fn("shape_sensitivity", real), n_cells,
                     (pts, cl, m, p, cupy.ascontiguousarray(lam), cupy.ascontiguousarray(u),
                      np.int32(u.shape[0]), np.int64(u.shape[1]), out, np.int64(n_cells)))
        return out


def cache_key(kernel: ElementKernel) -> tuple:
    """What the generated source of ``kernel`` depends on: its name, element, dofs, the
    order of its parameters and the integrand itself (parameter values are passed at
    launch, so one module serves every value)."""
    return (kernel.name, kernel.element.name, kernel.dofs_per_node, kernel.params,
            kernel.integrand)


def _gpu(kernel: ElementKernel, like: Any) -> _GpuKernels:
    return _GpuKernels(kernel)
