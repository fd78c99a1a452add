"""Matrix-free operator of a structured grid: y = alpha A u + beta z.

A = D K D + (I - D) on grid-layout vectors (:mod:`femopt.assembly.grid_layout`), where
K = sum_e K_e is the stiffness, D the diagonal 0/1 mask of free dofs: constrained dofs see
the identity, so vectors keep the whole grid and the operator stays SPD. Inputs ``u`` must
vanish on constrained dofs (every vector the solvers build does).

Two kinds of cell matrices:

- ``scale`` (n_cells,) with ``ke`` (nd, nd): K_e = scale_e K0, the fine level of a SIMP
  design (scale = m(rho)) or a rediscretized coarse level.
- ``scale`` (n_cells, c) with ``ke`` (c, nd, nd): K_e = sum_j scale_ej G_j, the Galerkin
  operator P^T K P of the level below one coarsening (c = 2^dim children per cell, G_j the
  child's element matrix seen through the interpolation), still without storing a matrix.

The NumPy path gathers every cell's dofs with 2^dim slices (contiguous in x), multiplies
by the element matrix in one GEMM, and adds the cell forces back corner by corner. The CuPy path
launches one of three kernels, none with atomics (:func:`hex8_variant` picks): for hex8
with one element matrix ``femopt_assembly_hex8_apply_walsh`` (``matrix_free_walsh.cu``:
tiles of cells marching in z, K0 u_e in the Walsh basis of the corners,
:mod:`femopt.assembly.walsh`) or ``femopt_assembly_hex8_apply_columns``
(``matrix_free_columns.cu``: one thread per node column marching in z); otherwise
``femopt_assembly_{quad4,hex8}_apply`` (``matrix_free.cu``: one thread per node gathers
the 2^dim cells around it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from femopt.assembly.grid_layout import GridLayout
from femopt.assembly.k0_literals import k0_prelude
from femopt.backend import array_namespace

SOURCE = Path(__file__).with_suffix(".cu")


def gather_cells(layout: GridLayout, u: Any) -> Any:
    """(nd, n_cells) dofs of every cell (row a * k + c: component c of corner a)."""
    xp = array_namespace(u)
    un = layout.nodes(u)
    nc = len(layout.corners)
    out = xp.empty((nc, layout.k) + layout.shape[::-1], dtype=u.dtype)
    for a, sl in enumerate(layout.corner_slices):
        out[a] = un[(slice(None),) + sl]
    return out.reshape(layout.nd, layout.n_cells)


def scatter_cells(layout: GridLayout, fe: Any, out: Any) -> Any:
    """out (n_dofs,) = sum over cells of the cell vectors fe (nd, n_cells)."""
    yn = layout.nodes(out)
    yn[...] = 0
    f = fe.reshape((len(layout.corners), layout.k) + layout.shape[::-1])
    for a, sl in enumerate(layout.corner_slices):
        yn[(slice(None),) + sl] += f[a]
    return out


def cell_forces(ue: Any, scale: Any, ke: Any) -> Any:
    """(nd, n_cells) K_e u_e for cell dofs ``ue`` (nd, n_cells); ke on ue's device."""
    if ke.ndim == 2:
        fe = ke @ ue
        fe *= scale[None, :]
        return fe
    c, nd, _ = ke.shape
    t = (ke.reshape(c * nd, nd) @ ue).reshape(c, nd, -1)
    return (t * scale.T[:, None, :]).sum(axis=0)


def apply_numpy(layout: GridLayout, u: np.ndarray, scale: np.ndarray, ke: np.ndarray,
                free: np.ndarray | None = None, alpha: float = 1.0, beta: float = 0.0,
                z: np.ndarray | None = None, out: np.ndarray | None = None,
                weight: np.ndarray | None = None, gamma: float = 0.0) -> np.ndarray:
    """NumPy twin of the apply kernel: ``alpha A u + beta z`` (see the module docstring),
    or with a per-dof ``weight`` ``gamma out + weight (alpha A u + beta z)`` (``out``
    given; not read where gamma is 0): a smoothing step in the apply itself.

    Args:
        layout: the grid. u: (n_dofs,) grid layout, zero on constrained dofs.
        scale: (n_cells,) or (n_cells, c). ke: (nd, nd) or (c, nd, nd), symmetric.
        free: (n_dofs,) bool mask of free dofs, or None for no constraints.
        z: (n_dofs,) or None (then beta is ignored).
        weight: (n_dofs,) values in u's dtype, or None.
    Returns:
        ``out`` (allocated when None), dtype of ``u``.
    """
    fe = cell_forces(gather_cells(layout, u), scale, np.asarray(ke, dtype=u.dtype))
    y = scatter_cells(layout, fe, np.empty_like(u))
    if free is not None:
        np.copyto(y, u, where=~free)
    if alpha != 1.0:
        y *= alpha
    if z is not None and beta != 0.0:
        y += beta * z  # z may be ``out``: y is a separate buffer
    if weight is not None:
        y *= weight
        if gamma != 0.0:
            y += u.dtype.type(gamma) * out
    if out is None:
        return y
    out[...] = y
    return out


def diagonal(layout: GridLayout, scale: Any, ke: Any, free: Any = None) -> Any:
    """Diagonal of A (1 on constrained dofs), in the namespace and dtype of ``scale``."""
    xp = array_namespace(scale)
    d = xp.empty(layout.n_dofs, dtype=scale.dtype)
    if ke.ndim == 2:
        # corner by corner and component by component into the node array: one
        # cell-sized temporary, not the (nd, n_cells) cell diagonals
        dk = np.diagonal(np.asarray(ke, dtype=np.float64))
        yn = layout.nodes(d)
        yn[...] = 0
        s = scale.reshape(layout.shape[::-1])
        t = xp.empty_like(s)
        for a, sl in enumerate(layout.corner_slices):
            for c in range(layout.k):
                xp.multiply(s, s.dtype.type(dk[a * layout.k + c]), out=t)
                yn[(c,) + sl] += t
    else:
        dk = xp.asarray(np.diagonal(np.asarray(ke), axis1=1, axis2=2).copy(), dtype=scale.dtype)
        scatter_cells(layout, (scale @ dk).T, d)
    if free is not None:
        xp.copyto(d, d.dtype.type(1), where=~free)
    return d


class StructuredOperator:
    """The operator of one grid level, on NumPy or CuPy arrays (taken from ``scale``).

    Args:
        layout: the grid. scale, ke: cell matrices (module docstring); ke is a host
            array. free: bool mask of free dofs (same namespace as ``scale``) or None.
    """

    def __init__(self, layout: GridLayout, scale: Any, ke: np.ndarray, free: Any = None):
        self.layout = layout
        self.xp = array_namespace(scale)
        self.scale = self.xp.ascontiguousarray(scale)
        self.ke = np.asarray(ke, dtype=np.float64)
        self.free = free
        self.dtype = scale.dtype
        self.on_gpu = self.xp is not np
        if self.on_gpu:
            self._gpu = GpuApply(layout, self.ke, self.dtype, free)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.layout.n_dofs, self.layout.n_dofs)

    def apply(self, u: Any, out: Any = None, alpha: float = 1.0, beta: float = 0.0,
              z: Any = None) -> Any:
        """``alpha A u + beta z`` (u zero on constrained dofs)."""
        if self.on_gpu:
            return self._gpu(u, self.scale, out, alpha, beta, z)
        return apply_numpy(self.layout, u, self.scale, self.ke, self.free, alpha, beta, z, out)

    def smooth(self, x: Any, b: Any, d: Any, inv_diag: Any, c1: float, c2: float) -> None:
        """d <- c1 d + D~^-1 (c2 (b - A x)) in one apply (``inv_diag``: the smoothers'
        :class:`~femopt.solvers.smoothers.InverseDiagonal`; d not read where c1 is 0)."""
        if self.on_gpu:
            self._gpu(x, self.scale, d, -c2, c2, b, inv_diag, c1)
            return
        apply_numpy(self.layout, x, self.scale, self.ke, self.free, -c2, c2, b, d,
                    inv_diag.values(), c1)

    def __matmul__(self, u: Any) -> Any:
        return self.apply(u)

    def diagonal(self) -> Any:
        return diagonal(self.layout, self.scale, self.ke, self.free)


# -- CuPy launcher ---------------------------------------------------------------------

def _instances() -> list[str]:
    names = []
    for real in ("double", "float"):
        for k in (1, 3):
            for c in (1, 8):
                names.append(f"femopt_assembly_hex8_apply<{real}, {k}, {c}>")
        for k in (1, 2):
            for c in (1, 4):
                names.append(f"femopt_assembly_quad4_apply<{real}, {k}, {c}>")
    return names


MAX_ND = 24
COLUMNS_SOURCE = Path(__file__).with_name("matrix_free_columns.cu")
WALSH_SOURCE = Path(__file__).with_name("matrix_free_walsh.cu")
# hex8 with one element matrix, per precision: "walsh" (cell tiles, K0 in the Walsh basis
# of the corners: femopt.assembly.walsh), "columns" (z-marching, K0 as literals) or
# "gather" (one thread per node gathering its 8 cells, K0 in constant memory; every other
# case). Switching a precision's default is this one line.
HEX8_DEFAULT = {"double": "walsh", "float": "walsh"}
HEX8_VARIANT: str | None = None  # one variant for both precisions (tests, benchmarks)
COLUMN_THREADS = 2_000_000  # threads to aim for when splitting the z columns in chunks
# blocks of 128 threads per multiprocessor the columns kernel is compiled for (register cap;
# measured fastest on an H100: 3 in float64, 5 in float32; docs/benchmarks.md)
COLUMN_MIN_BLOCKS = {"double": 3, "float": 5}
# the Walsh kernel: tiles of 32 x WALSH_ROWS threads, compiled for WALSH_MIN_BLOCKS tiles
# per multiprocessor (register cap: 128 registers in float64, 80 in float32), z split in
# chunks of at least WALSH_MIN_CHUNK node layers until about WALSH_BLOCKS tiles run
WALSH_ROWS = 8
WALSH_MIN_BLOCKS = {"double": 2, "float": 3}
WALSH_BLOCKS = 2048
WALSH_MIN_CHUNK = 8


def hex8_variant(real: str, ke: np.ndarray, layout: GridLayout, nchild: int,
                 variant: str | None = None) -> str:
    """The apply kernel for a level: ``variant`` (or :data:`HEX8_VARIANT`) when given,
    else the precision's default (:data:`HEX8_DEFAULT`); "gather" where the others do
    not apply (quad4, Galerkin children). A default "walsh" falls back to "columns" for an
    element matrix without the mirror symmetries (its Walsh form is dense, still exact)."""
    from femopt.assembly.walsh import walsh_factor

    chosen = variant or HEX8_VARIANT
    name = chosen or HEX8_DEFAULT[real]
    if name not in ("walsh", "columns", "gather"):
        raise ValueError(f"unknown hex8 apply variant {name!r}: expected walsh, columns "
                         f"or gather")
    if layout.dim != 3 or nchild != 1:
        return "gather"
    if name == "walsh":
        if layout.n_dofs >= 2**31:  # the kernel's in-layer offsets are 32-bit
            return "columns"
        if chosen is None and not walsh_factor(ke, layout.k).blocked:
            return "columns"
    return name


class GpuApply:
    """Launches the apply kernel for one level's cell matrices (:func:`hex8_variant`):
    ``femopt_assembly_hex8_apply_walsh`` or the z-marching
    ``femopt_assembly_hex8_apply_columns`` for hex8 with one element matrix, else
    ``femopt_assembly_{quad4,hex8}_apply``."""

    def __init__(self, layout: GridLayout, ke: np.ndarray, dtype: Any, free: Any = None,
                 variant: str | None = None):
        import cupy

        from femopt.backend.kernels import register_instances

        register_instances(SOURCE, _instances())
        register_instances(COLUMNS_SOURCE, [
            f"femopt_assembly_hex8_apply_columns<{r}, {k}, {COLUMN_MIN_BLOCKS[r]}>"
            for r in ("double", "float") for k in (1, 3)])
        register_instances(WALSH_SOURCE, [
            f"femopt_assembly_hex8_apply_walsh<{r}, {k}, {WALSH_ROWS}, {WALSH_MIN_BLOCKS[r]}>"
            for r in ("double", "float") for k in (1, 3)])
        if layout.nd > MAX_ND:
            raise ValueError(f"the apply kernel takes at most {MAX_ND} dofs per cell, "
                             f"got {layout.nd}")
        self.layout = layout
        nchild = 1 if ke.ndim == 2 else ke.shape[0]
        real = "double" if np.dtype(dtype) == np.float64 else "float"
        self.real = np.dtype(dtype).type
        self.variant = hex8_variant(real, ke, layout, nchild, variant)
        ns = layout.node_shape
        if self.variant == "columns":
            self.column_name = (f"femopt_assembly_hex8_apply_columns<{real}, {layout.k}, "
                                f"{COLUMN_MIN_BLOCKS[real]}>")
            self.prelude = k0_prelude(ke)
            plane = ns[0] * ns[1]
            n_chunks = max(1, min(ns[2], -(-COLUMN_THREADS // plane)))
            self.chunk = -(-ns[2] // n_chunks)
            self.threads = plane * (-(-ns[2] // self.chunk))
        elif self.variant == "walsh":
            from femopt.assembly.walsh import tile_grid, walsh_factor, walsh_prelude

            self.walsh_name = (f"femopt_assembly_hex8_apply_walsh<{real}, {layout.k}, "
                               f"{WALSH_ROWS}, {WALSH_MIN_BLOCKS[real]}>")
            self.prelude = walsh_prelude(walsh_factor(ke, layout.k))
            gx, gy, _ = tile_grid(layout, WALSH_ROWS, ns[2])
            n_chunks = max(1, min(-(-WALSH_BLOCKS // (gx * gy)), ns[2] // WALSH_MIN_CHUNK))
            self.chunk = -(-ns[2] // n_chunks)
            self.tiles = tile_grid(layout, WALSH_ROWS, self.chunk)
        self.name = f"femopt_assembly_{layout.cell_type}_apply<{real}, {layout.k}, {nchild}>"
        self.symbol = f"femopt_ke{1 if nchild == 1 else 8}_{'f64' if real == 'double' else 'f32'}"
        self.values = np.ascontiguousarray(ke, dtype=dtype).ravel()
        self.key = self.values.tobytes()
        if free is None:
            self.free = cupy.ones(layout.n_dofs, dtype=cupy.uint8)
        else:  # a bool mask is read as its bytes (no copy: levels share their masks)
            free = cupy.asarray(free, order="C")
            self.free = (free.view(cupy.uint8) if free.dtype in (cupy.bool_, cupy.uint8)
                         else (free != 0).view(cupy.uint8))
        shape = tuple(layout.shape) + (1,) * (3 - layout.dim)
        self.dims = tuple(np.int32(n) for n in shape)

    def __call__(self, u: Any, scale: Any, out: Any = None, alpha: float = 1.0,
                 beta: float = 0.0, z: Any = None, weight: Any = None,
                 gamma: float = 0.0) -> Any:
        """out = alpha A u + beta z; with ``weight`` (an ``InverseDiagonal``: float
        values or bfloat16 bits) out = gamma out + weight (alpha A u + beta z)."""
        import cupy

        from femopt.backend.kernels import get_kernel, launch_1d, set_constant

        if out is None:
            out = cupy.empty_like(u)
        elif out is u:
            raise ValueError("the apply kernel cannot write into its input")
        if z is None:
            z, beta = u, 0.0
        if weight is None:
            epilogue = (np.uint64(0), np.int32(0), self.real(0.0))  # a null weight
        elif weight.dtype != self.real:
            raise ValueError(f"the apply's weight holds {weight.dtype} values, its "
                             f"operator {np.dtype(self.real)}")
        else:
            epilogue = (weight.data, np.int32(2 if weight.packed else 1), self.real(gamma))
        args = (u, scale, self.free, z, out, self.real(alpha), self.real(beta)) + self.dims
        if self.variant == "walsh":
            kern = get_kernel(WALSH_SOURCE, self.walsh_name, prelude=self.prelude)
            kern(self.tiles, (32, WALSH_ROWS), args + (np.int32(self.chunk),) + epilogue)
            return out
        if self.variant == "columns":
            kern = get_kernel(COLUMNS_SOURCE, self.column_name, prelude=self.prelude)
            launch_1d(kern, self.threads, args + (np.int32(self.chunk),) + epilogue,
                      block=128)
            return out
        kern = get_kernel(SOURCE, self.name)
        set_constant(SOURCE, self.symbol, self.values, self.key)
        launch_1d(kern, self.layout.n_nodes, args + epilogue)
        return out
