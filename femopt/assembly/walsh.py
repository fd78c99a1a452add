"""A hex8 element matrix in the Walsh basis of the cube's corners: K0 u_e with butterflies.

The element matrix of a box cell of a material with the box's mirror symmetries is
invariant under the three mirror reflections x -> 1 - x, y -> 1 - y, z -> 1 - z (which
also flip the sign of the displacement component along the mirrored axis). The Walsh
functions w_m(b) = (-1)^(m . b) of the corner bits b = (bx, by, bz), m = mx + 2 my + 4 mz,
are the reflections' joint eigenvectors: mirror i multiplies w_m by (-1)^(m_i), and
component c's own sign adds e_c for a vector field (none for a scalar field). So in the
basis (component c, mode m) the matrix couples only pairs of equal "character"
m xor s_c: for elasticity eight 3x3 blocks (45 non-zeros: the translations are zero rows),
for heat a diagonal (7 non-zeros). With the unnormalised transform W (W W = 8 I)

    K_e u_e = s_e W M W u_e,   M = W K0 W / 64,

which is 72 butterfly adds, the non-zeros of M and 72 adds instead of 576 FMAs.

The transform is separable (x, then y, then z); the CUDA kernel
(``matrix_free_walsh.cu``) keeps the x-y transform of a node layer for both cells that
share it and adds the cell forces of two cell layers in the x-y Walsh space before one
inverse x-y transform. :func:`apply_tiled_numpy` is that kernel's NumPy twin, data flow
included (tiles, halos, z chunks, the exchanges between threads).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from femopt.assembly.grid_layout import GridLayout
from femopt.backend import array_namespace
from femopt.mesh.structured import HEX8_CORNERS

# corner a of a hex8 (VTK order) has bits (bx, by, bz); CORNER_OF_BITS[bx + 2 by + 4 bz] = a
CORNER_OF_BITS = np.array([int(np.flatnonzero((HEX8_CORNERS == (i & 1, (i >> 1) & 1, i >> 2))
                                              .all(axis=1))[0]) for i in range(8)])


def walsh_matrix() -> np.ndarray:
    """(8, 8) W[m, a] = (-1)^(m . bits(a)): mode m = mx + 2 my + 4 mz, VTK corner a."""
    modes = np.array([[(m >> i) & 1 for i in range(3)] for m in range(8)])
    return (-1.0) ** (modes @ HEX8_CORNERS.T)


def mirror_characters(k: int) -> np.ndarray | None:
    """(8k,) character of each Walsh dof c * 8 + m (its signs under the three mirrors as
    bits): m for a scalar field (k = 1), m xor 2^c for a 3D vector field (k = 3); None
    for other k."""
    if k not in (1, 3):
        return None
    return np.array([m ^ ((1 << c) if k == 3 else 0) for c in range(k) for m in range(8)])


@dataclass(frozen=True)
class WalshFactor:
    """K0 = W M W with the corner transform W per component (module docstring).

    Attributes:
        k: dofs per node. m: (8k, 8k) M, rows and columns c * 8 + m, entries below
            ``rtol`` of the largest set to zero and equal magnitudes made equal.
    """

    k: int
    m: np.ndarray

    @property
    def nonzeros(self) -> int:
        """Multiplications per cell in the Walsh basis (576 for a dense 24 x 24)."""
        return int(np.count_nonzero(self.m))

    @property
    def blocked(self) -> bool:
        """Whether M couples only dofs of equal mirror character (K0 has the mirror
        symmetries), which makes it sparse."""
        ch = mirror_characters(self.k)
        if ch is None:
            return False
        return not np.any(self.m[ch[:, None] != ch[None, :]])


def walsh_factor(ke: np.ndarray, k: int, rtol: float = 1e-12) -> WalshFactor:
    """The Walsh form of a hex8 element matrix ``ke`` (8k x 8k, local dof a * k + c).

    Any ``ke`` has one (``W M W`` is exact for every matrix); only a mirror-symmetric one
    gives a sparse M. Entries of M below ``rtol`` times the largest are rounding noise of
    the quadrature and are set to zero; the change is at rounding level.
    """
    from femopt.assembly.k0_literals import snap_entries

    ke = np.asarray(ke, dtype=np.float64)
    nd = 8 * k
    if ke.shape != (nd, nd):
        raise ValueError(f"a hex8 element matrix with {k} dofs per node is {nd} x {nd}, "
                         f"got shape {ke.shape}")
    t = np.zeros((nd, nd))
    w = walsh_matrix()
    for c in range(k):
        t[c * 8:(c + 1) * 8, c::k] = w
    m = t @ ke @ t.T / 64.0
    return WalshFactor(k, snap_entries(m, rtol))


def _butterflies(v: Any, xp: Any) -> Any:
    """Unnormalised Walsh transform over the three leading axes (z, y, x) of size 2."""
    for axis in range(3):
        a = xp.take(v, 0, axis=axis)
        b = xp.take(v, 1, axis=axis)
        v = xp.stack([a + b, a - b], axis=axis)
    return v


def walsh_transform(ue: Any, k: int) -> Any:
    """(8k, n) Walsh coefficients (row c * 8 + m) of cell vectors ``ue`` (8k, n), local dof
    a * k + c; three butterfly stages."""
    xp = array_namespace(ue)
    n = ue.shape[1]
    v = ue.reshape(8, k, n)[CORNER_OF_BITS].reshape(2, 2, 2, k, n)  # (bz, by, bx, c, n)
    v = _butterflies(v, xp)  # (mz, my, mx, c, n)
    return xp.moveaxis(v.reshape(8, k, n), 1, 0).reshape(8 * k, n)


def walsh_inverse(vh: Any, k: int) -> Any:
    """Cell vectors (8k, n), local dof a * k + c, of Walsh coefficients ``vh``: the same
    butterflies (W is symmetric; the 1/64 is in M)."""
    xp = array_namespace(vh)
    n = vh.shape[1]
    v = xp.moveaxis(vh.reshape(k, 8, n), 0, 1).reshape(2, 2, 2, k, n)  # (mz, my, mx, c, n)
    v = _butterflies(v, xp).reshape(8, k, n)  # bits order
    out = xp.empty_like(v)
    out[CORNER_OF_BITS] = v
    return out.reshape(8 * k, n)


def walsh_cell_forces(ue: Any, scale: Any, factor: WalshFactor) -> Any:
    """(8k, n) s_e K0 u_e = s_e W M W u_e for cell vectors ``ue`` (8k, n) and factors
    ``scale`` (n,): the NumPy/CuPy twin of the kernel's arithmetic."""
    xp = array_namespace(ue)
    m = xp.asarray(factor.m, dtype=ue.dtype)
    return walsh_inverse((m @ walsh_transform(ue, factor.k)) * scale[None, :], factor.k)


def walsh_prelude(factor: WalshFactor) -> str:
    """C++ defining ``femopt_walsh_m(i)`` (the entries of M, row-major, as exact hex
    literals) and ``femopt_walsh_row(i)`` (whether row i has a non-zero): the kernel
    multiplies by the non-zeros only. Indices past the end read 0 (a module holds the
    instances for every k; only the one matching M is launched)."""
    values = ", ".join(float(v).hex() for v in factor.m.ravel())
    rows = ", ".join("true" if r else "false" for r in np.any(factor.m != 0, axis=1))
    n, nd = factor.m.size, len(factor.m)
    return ("__device__ __forceinline__ constexpr double femopt_walsh_m(int i) {\n"
            f"    constexpr double v[{n}] = {{{values}}};\n"
            f"    return i < {n} ? v[i] : 0.0;\n}}\n"
            "__device__ __forceinline__ constexpr bool femopt_walsh_row(int i) {\n"
            f"    constexpr bool v[{nd}] = {{{rows}}};\n"
            f"    return i < {nd} ? v[i] : false;\n}}\n")


# -- the kernel's data flow in NumPy -----------------------------------------------------

WARP = 32  # threads per tile row (x); a tile row is one warp


def tile_grid(layout: GridLayout, rows: int, chunk: int) -> tuple[int, int, int]:
    """Blocks (x, y, z) of the Walsh kernel: tiles of 31 x (rows - 1) nodes (one cell of
    halo below each axis), z chunks of ``chunk`` node layers."""
    nnx, nny, nnz = layout.node_shape
    return (-(-nnx // (WARP - 1)), -(-nny // (rows - 1)), -(-nnz // chunk))


def _xy_butterfly(u00: Any, u10: Any, u01: Any, u11: Any) -> tuple[Any, Any, Any, Any]:
    """The x-y Walsh transform of a face (corners (bx, by)): modes mx + 2 my; its own
    inverse up to a factor 4."""
    a0, a1, b0, b1 = u00 + u10, u00 - u10, u01 + u11, u01 - u11
    return a0 + b0, a1 + b1, a0 - b0, a1 - b1


def apply_tiled_numpy(layout: GridLayout, u: np.ndarray, scale: np.ndarray,
                      factor: WalshFactor, free: np.ndarray | None = None, alpha: float = 1.0,
                      beta: float = 0.0, z: np.ndarray | None = None, rows: int = 8,
                      chunk: int = 16) -> np.ndarray:
    """``alpha A u + beta z`` computed the way ``femopt_assembly_hex8_apply_walsh`` does.

    All threads of all tiles of one z chunk run as one vectorised step per cell layer,
    with the kernel's index arithmetic: thread (tx, ty) of tile (bx, by) owns cell and
    node (31 bx - 1 + tx, (rows - 1) by - 1 + ty), reads its cell's other three corners of
    the new node layer from the tile's shared buffer, takes the x neighbour's corner
    forces by a shuffle and the y neighbour's through shared memory, and writes its node
    when tx, ty >= 1. A chunk starts one cell layer below its first node layer.
    """
    if layout.dim != 3:
        raise ValueError("the Walsh apply is for hex8 grids")
    k = layout.k
    nx, ny, nz = layout.shape
    nnx, nny, nnz = layout.node_shape
    gx, gy, gz = tile_grid(layout, rows, chunk)
    m = factor.m.astype(u.dtype)
    mask = np.ones(layout.n_dofs, dtype=bool) if free is None else np.asarray(free, bool)
    un = layout.nodes(u)  # (k, nnz, nny, nnx)
    sc = scale.reshape(nz, ny, nx)
    y = np.empty_like(u)
    yn = layout.nodes(y)
    # every thread of every tile: (gy, rows, gx, WARP)
    tx = np.arange(WARP)[None, None, None, :]
    ty = np.arange(rows)[None, :, None, None]
    ix = (WARP - 1) * np.arange(gx)[None, None, :, None] - 1 + tx
    iy = (rows - 1) * np.arange(gy)[:, None, None, None] - 1 + ty
    ix, iy = np.broadcast_arrays(ix, iy)
    cell_in = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)

    def node_value(jx: np.ndarray, jy: np.ndarray, layer: int) -> np.ndarray:
        ok = (jx >= 0) & (jx < nnx) & (jy >= 0) & (jy < nny)
        return np.where(ok, un[:, layer, np.clip(jy, 0, nny - 1), np.clip(jx, 0, nnx - 1)],
                        0).astype(u.dtype)

    def face(layer: int) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        # the shared buffer holds nodes (tx, ty) for tx <= 32, ty <= rows of each tile
        own = node_value(ix, iy, layer)
        return own, _xy_butterfly(own, node_value(ix + 1, iy, layer),
                                  node_value(ix, iy + 1, layer),
                                  node_value(ix + 1, iy + 1, layer))

    def shuffle_up(v: np.ndarray) -> np.ndarray:  # lane tx gets lane tx - 1 (lane 0: own)
        return np.concatenate([v[..., :1], v[..., :-1]], axis=-1)

    def from_row_below(v: np.ndarray) -> np.ndarray:  # row ty gets row ty - 1 (row 0: 0)
        return np.concatenate([np.zeros_like(v[:, :, :1]), v[:, :, :-1]], axis=2)

    writes = (ix >= 0) & (ix < nnx) & (iy >= 0) & (iy < nny) & (tx >= 1) & (ty >= 1)
    zn = None if z is None or beta == 0.0 else layout.nodes(z)
    fn = mask.reshape(un.shape)

    def cell(ez: int, bh: tuple, th: tuple) -> tuple[list, list]:
        """Bottom and top face forces (x-y Walsh space) of cell layer ez."""
        s = np.where(cell_in, sc[ez, np.clip(iy, 0, ny - 1), np.clip(ix, 0, nx - 1)],
                     0).astype(u.dtype)
        # Walsh dof c * 8 + q + 4 mz, q = mx + 2 my, the cell's scale folded in
        uh = np.empty((k, 8) + s.shape, dtype=u.dtype)
        for q in range(4):
            uh[:, q] = s * bh[q] + s * th[q]
            uh[:, q + 4] = s * bh[q] - s * th[q]
        gh = np.tensordot(m, uh.reshape((8 * k,) + s.shape), axes=1).reshape(uh.shape)
        return ([gh[:, q] + gh[:, q + 4] for q in range(4)],
                [gh[:, q] - gh[:, q + 4] for q in range(4)])

    def write(acc: list, own: np.ndarray, ez: int) -> None:
        c00, c10, c01, c11 = _xy_butterfly(*acc)
        total = c00 + shuffle_up(c10) + from_row_below(c01 + shuffle_up(c11))
        jx, jy = ix[writes], iy[writes]
        for c in range(k):
            v = np.where(fn[c, ez, jy, jx], total[c][writes], own[c][writes])
            v = alpha * v if zn is None else alpha * v + beta * zn[c, ez, jy, jx]
            yn[c, ez, jy, jx] = v

    for bz in range(gz):
        n0, n1 = bz * chunk, min(nnz, (bz + 1) * chunk)
        ez = max(n0 - 1, 0)
        own, bh = face(ez)
        toph = [np.zeros_like(own)] * 4
        if n0 > 0:  # the cell layer below the chunk: its top forces only
            own, th = face(n0)
            _, toph = cell(ez, bh, th)
            bh, ez = th, n0
        for ez in range(ez, min(n1, nz)):
            u_here = own
            own, th = face(ez + 1)
            bot, top = cell(ez, bh, th)
            write([a + b for a, b in zip(toph, bot)], u_here, ez)
            toph, bh = top, th
        if n1 == nnz:  # the top node layer: cells below only
            write(toph, own, nz)
    return y
