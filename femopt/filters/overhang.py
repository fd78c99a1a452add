"""The additive-manufacturing filter: a design printed layer by layer, each cell at most
as dense as its support in the layer below (Langelaar's layer-wise filter).

On a structured grid, with layers normal to the build direction (an axis, either sense):

    xi_first layer = x,
    xi_cell = smin(x_cell, smax(xi of the supporting cells one layer below)),

where the supporting cells are the cell right below and its neighbours along each lateral
axis (3 cells in 2D, a cross of 5 in 3D): with cells as high as wide, a member rising at
45 degrees or steeper stays supported. ``smax`` is the aggregate (sum xi^P)^(1/Q) with
Q = P + log(n) / log(xi0) (exact for n equal values xi0) and ``smin`` the smooth minimum
0.5 (x + s - sqrt((x - s)^2 + eps) + sqrt(eps)). The chain rule runs through the layers
backwards, so the filter's sensitivities are exact. The arrays may be NumPy or CuPy: the
filter runs on every path of a structured grid.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, field_validator

from femopt.backend import array_namespace
from femopt.filters.base import Filter
from femopt.mesh.mesh import AXES
from femopt.plugins.registry import Options

ANGLE_TOLERANCE = 0.5  # degrees: the cells' diagonal must give the overhang angle


class OverhangOptions(Options):
    build_direction: Literal["+x", "-x", "+y", "-y", "+z", "-z"] = "+y"
    """The direction the part grows in, an axis of the grid; the build plate is the
    domain's face on the other side."""
    angle: float = 45.0
    """Smallest self-supporting angle to the build plate, degrees; the grid's cells must
    have it as their diagonal's angle (cells as high as wide for 45)."""
    p: float = Field(40.0, gt=1)
    """Exponent of the smooth maximum of the supporting cells."""
    xi0: float = Field(0.5, gt=0, lt=1)
    """Density at which the smooth maximum of equal values is exact."""
    eps: float = Field(1e-4, gt=0)
    """Smoothing of the minimum."""

    @field_validator("angle")
    @classmethod
    def _angle(cls, v: float) -> float:
        if not 0.0 < v < 90.0:
            raise ValueError(f"the overhang angle must be in (0, 90) degrees, got {v:g}")
        return v


class OverhangFilter(Filter):
    """Printed densities xi(x) of a layer-by-layer process, with their exact chain rule."""

    name = "overhang"
    summary = "Additive-manufacturing filter: every cell supported within the overhang angle"
    Options = OverhangOptions

    def __init__(self, options: OverhangOptions, mesh):
        super().__init__(options, mesh)
        grid = getattr(mesh, "grid", None)
        if grid is None:
            raise ValueError("the overhang filter works layer by layer on a structured grid "
                             "(mesh type 'structured')")
        axis = AXES[options.build_direction[1]]
        if axis >= len(grid.shape):
            raise ValueError(f"build_direction {options.build_direction!r} is not an axis of "
                             f"this {len(grid.shape)}D grid")
        self.axis, self.flip = axis, options.build_direction[0] == "-"
        height = grid.spacing[axis]
        for lateral in range(len(grid.shape)):
            if lateral == axis:
                continue
            cell_angle = math.degrees(math.atan2(height, grid.spacing[lateral]))
            if abs(cell_angle - options.angle) > ANGLE_TOLERANCE:
                raise ValueError(
                    f"angle {options.angle:g}: the grid's cells rise at {cell_angle:.3g} "
                    f"degrees along axis {'xyz'[lateral]} (cell size {height:g} in the build "
                    f"direction, {grid.spacing[lateral]:g} across); the layer-wise filter "
                    "takes the angle of the cells' diagonal: choose the grid spacing so")
        self.shape = tuple(grid.shape)
        n_support = 1 + 2 * (len(self.shape) - 1)
        self.q = options.p + math.log(n_support) / math.log(options.xi0)

    def device_twin(self, xp: Any) -> "OverhangFilter":
        return self  # written on the arrays' own module

    @classmethod
    def paths(cls) -> list[str]:
        return ["cpu", "gpu grid"]  # layers need a structured grid

    # -- layers --------------------------------------------------------------------------

    def _layers(self, v: Any) -> Any:
        """(n_layers, *lateral) view of a cell vector, first layer on the build plate."""
        xp = array_namespace(v)
        grid = v.reshape(self.shape[::-1])  # (z, y, x): axis a is dimension dim - 1 - a
        grid = xp.moveaxis(grid, len(self.shape) - 1 - self.axis, 0)
        return grid[::-1] if self.flip else grid

    def _cells(self, layers: Any) -> Any:
        """The inverse of :meth:`_layers`, as a contiguous cell vector."""
        xp = array_namespace(layers)
        grid = layers[::-1] if self.flip else layers
        grid = xp.moveaxis(grid, 0, len(self.shape) - 1 - self.axis)
        return xp.ascontiguousarray(grid).reshape(-1)

    def _support(self, below: Any) -> list[Any]:
        """The supporting values of every cell of a layer: the cell below and its lateral
        neighbours (zero beyond the domain)."""
        xp = array_namespace(below)
        out = [below]
        for ax in range(below.ndim):
            pad = [(0, 0)] * below.ndim
            pad[ax] = (1, 1)
            padded = xp.pad(below, pad)
            n = below.shape[ax]
            lo = [slice(None)] * below.ndim
            hi = [slice(None)] * below.ndim
            lo[ax], hi[ax] = slice(0, n), slice(2, n + 2)
            out += [padded[tuple(lo)], padded[tuple(hi)]]
        return out

    def _smin(self, x: Any, s: Any) -> tuple[Any, Any, Any]:
        """smin(x, s) and its derivatives by x and s."""
        xp = array_namespace(x)
        e = self.options.eps
        d = x - s
        r = xp.sqrt(d * d + e)
        return 0.5 * (x + s - r + math.sqrt(e)), 0.5 * (1.0 - d / r), 0.5 * (1.0 + d / r)

    def _smax(self, parts: list[Any]) -> tuple[Any, list[Any]]:
        """smax of the supporting values and its derivative by each."""
        p, q = self.options.p, self.q
        total = sum(v**p for v in parts) + 1e-300
        s = total ** (1.0 / q)
        scale = (p / q) * total ** (1.0 / q - 1.0)
        return s, [scale * v ** (p - 1.0) for v in parts]

    def _sweep(self, x: Any) -> tuple[Any, list[tuple[Any, Any, list[Any]]]]:
        """The printed layers of ``x`` and, per layer above the first, d xi / d x,
        d xi / d s and d s / d support (kept for the chain rule of the same ``x``)."""
        xp = array_namespace(x)
        layers = self._layers(x)
        xi = xp.empty_like(layers)
        xi[0] = layers[0]
        steps = []
        for i in range(1, layers.shape[0]):
            s, ds = self._smax(self._support(xi[i - 1]))
            xi[i], dx, dsm = self._smin(layers[i], s)
            steps.append((dx, dsm, ds))
        return xi, steps

    def forward(self, x: Any) -> Any:
        xi, steps = self._sweep(x)
        self._last = (x, steps)  # the chain rule follows with the same x
        return self._cells(xi)

    def backward(self, x: Any, dy: Any) -> Any:
        """The chain rule through the layers, last layer first: the printed density of a
        layer depends on its own design and, through its support, on every layer below."""
        xp = array_namespace(x)
        last = getattr(self, "_last", None)
        steps = last[1] if last is not None and last[0] is x else self._sweep(x)[1]
        lam = xp.array(self._layers(dy), copy=True)  # adjoint of xi, layer by layer
        out = xp.zeros_like(lam)
        for i in range(lam.shape[0] - 1, 0, -1):
            dx, dsm, ds = steps[i - 1]
            out[i] = lam[i] * dx
            back = lam[i] * dsm
            lam[i - 1] = lam[i - 1] + self._support_transpose([back * d for d in ds])
        out[0] = lam[0]
        return self._cells(out)

    def _support_transpose(self, grads: list[Any]) -> Any:
        """The transpose of :meth:`_support`: each neighbour's contribution sent back to
        the cell it was read from."""
        xp = array_namespace(grads[0])
        acc = xp.array(grads[0], copy=True)
        k = 1
        for ax in range(acc.ndim):
            n = acc.shape[ax]
            # grads[k] at cell j read the value of cell j - 1; grads[k + 1] that of j + 1
            dst, src = [slice(None)] * acc.ndim, [slice(None)] * acc.ndim
            dst[ax], src[ax] = slice(0, n - 1), slice(1, n)
            acc[tuple(dst)] += grads[k][tuple(src)]
            dst[ax], src[ax] = slice(1, n), slice(0, n - 1)
            acc[tuple(dst)] += grads[k + 1][tuple(src)]
            k += 2
        return acc


def unsupported_cells(solid: Any, shape: tuple[int, ...], build_direction: str) -> int:
    """Solid cells above the first layer with no solid cell among their supports (the cell
    below and its lateral neighbours): the overhang check of a thresholded design."""
    import numpy as np

    probe = OverhangFilter.__new__(OverhangFilter)
    probe.shape, probe.axis = tuple(shape), AXES[build_direction[1]]
    probe.flip = build_direction[0] == "-"
    layers = probe._layers(np.asarray(solid, dtype=float))
    count = 0
    for i in range(1, layers.shape[0]):
        support = np.max(probe._support(layers[i - 1]), axis=0)
        count += int(np.sum((layers[i] > 0) & (support == 0)))
    return count
