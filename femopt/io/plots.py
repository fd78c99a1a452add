"""Pictures of a run: the convergence history and the final design.

Figures are drawn on matplotlib's object API with the Agg canvas (no pyplot), so nothing
here changes the backend of a program that imports femopt. 2D designs are drawn cell by
cell on the physical grid (no smoothing between cells) with their supports and loads;
3D designs as the shaded surface of the thresholded part, the same marching-cubes surface
the CAD exporters write, in physical coordinates with equal axes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from femopt.backend.rows import RowSource, cell_rows


def _figure(size: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path):
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return fig


@dataclass
class Marks:
    """Where a design is held and loaded: support points, load points and their force
    directions (unit vectors; zero for a heat load)."""

    supports: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    loads: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    directions: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))


def marks_of(model: Any) -> Marks:
    """The support and load points of a built model (the directions of the loads summed
    over the load cases), from the loads' nonzeros (``model.load_nonzeros``): no dense
    load vector of the problem's size is made."""
    k, mesh = model.physics.dofs_per_node, model.mesh
    fixed_nodes = np.unique(np.asarray(model.fixed) // k)
    ln = model.load_nonzeros
    on = np.any(ln.values != 0.0, axis=0)  # the dofs some case loads (sorted, distinct)
    dofs = ln.index[on]
    loaded = np.unique(dofs // k)
    directions = np.zeros((loaded.size, mesh.dim))
    if k == mesh.dim:
        v = np.zeros((loaded.size, k))
        v[np.searchsorted(loaded, dofs // k), dofs % k] = ln.values[:, on].sum(axis=0)
        n = np.linalg.norm(v, axis=1, keepdims=True)
        directions = np.divide(v, n, out=np.zeros_like(v), where=n > 0)
    return Marks(mesh.node_coords(fixed_nodes), mesh.node_coords(loaded), directions)


def convergence_plot(history, path: Path, limits: dict[str, tuple[str, float]] | None = None):
    """Objective (log scale when it spans more than a decade) and the constraints as
    ratios to their limits, with the limit drawn at 1. ``limits``: name -> (kind,
    limit). The ratio axis spans at least 0.9 to 1.1, so that a volume held to 3e-4 of
    its limit draws as the flat line it is. Returns the Figure."""
    it = [r.iteration for r in history]
    obj = np.array([r.objective for r in history], dtype=float)
    fig = _figure((6.4, 4.2))
    ax = fig.add_subplot()
    ax.plot(it, obj, color="C0", label="objective")
    if obj.size and np.all(obj > 0) and obj.max() > 10 * obj.min():
        ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("objective", color="C0")
    if ax.get_yscale() == "linear":
        ax.ticklabel_format(axis="y", useOffset=False)
    names = list(history[0].constraints) if history else []
    limits = limits or {}
    if names:
        ax2 = ax.twinx()
        lo, hi = 0.9, 1.1
        for k, name in enumerate(names):
            values = np.array([r.constraints[name] for r in history], dtype=float)
            kind, limit = limits.get(name, ("max", 0.0))
            ratio = values / limit if limit else values
            label = f"{name} / {kind} {limit:g}" if limit else name
            ax2.plot(it, ratio, color=f"C{k + 1}", linestyle="--", label=label)
            if limit:
                finite = ratio[np.isfinite(ratio)]
                if finite.size:
                    lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
        if any(limits.get(n, ("", 0.0))[1] for n in names):
            ax2.axhline(1.0, color="0.4", linewidth=0.8, linestyle=":")
            pad = 0.05 * (hi - lo)
            ax2.set_ylim(lo - pad, hi + pad)
            ax2.set_ylabel("constraint / limit")
        else:
            ax2.set_ylabel(", ".join(names))
        ax2.ticklabel_format(axis="y", useOffset=False)
        ax2.legend(loc="upper right", fontsize="small")
    ax.set_title("convergence")
    return _save(fig, path)


def _unit_label(axis: str, unit: str | None) -> str:
    return f"{axis} [{unit}]" if unit else axis


def design_picture(mesh, rho: np.ndarray, path: Path, threshold: float = 0.5,
                   marks: Marks | None = None, unit: str | None = None):
    """2D: the densities cell by cell in physical coordinates, supports (triangles) and
    loads (arrows) marked. 3D: the shaded surface of the part ``rho > threshold``.
    Grids and meshes from files alike; a 3D grid's densities kept on the device (a
    :class:`~femopt.backend.rows.RowSource`) are read by slabs of cell layers. Returns
    the Figure."""
    if mesh.dim == 3 and mesh.grid is not None and isinstance(rho, RowSource):
        return _picture_3d(mesh, rho, path, threshold, unit)
    rho = np.asarray(rho, dtype=float)
    if mesh.dim == 2:
        return _picture_2d(mesh, rho, path, marks, unit)
    return _picture_3d(mesh, rho, path, threshold, unit)


def _picture_2d(mesh, rho, path, marks, unit):
    lo, hi = mesh.bounds()
    w = 8.0
    aspect = float((hi[1] - lo[1]) / max(hi[0] - lo[0], 1e-300))
    fig = _figure((w, max(2.0, min(12.0, w * aspect + 1.0))))
    ax = fig.add_subplot()
    g = mesh.grid
    if g is not None:
        nx, ny = g.shape
        xs = g.origin[0] + g.spacing[0] * np.arange(nx + 1)
        ys = g.origin[1] + g.spacing[1] * np.arange(ny + 1)
        ax.pcolormesh(xs, ys, rho.reshape(ny, nx), cmap="gray_r", vmin=0.0, vmax=1.0,
                      shading="flat", rasterized=True)
    else:
        from matplotlib.collections import PolyCollection

        polys = PolyCollection(mesh.points[mesh.cells], array=rho, cmap="gray_r",
                               edgecolors="face", linewidths=0.1)
        polys.set_clim(0.0, 1.0)
        ax.add_collection(polys)
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
    size = float(max(hi - lo))
    if marks is not None:
        if len(marks.supports):
            ax.scatter(marks.supports[:, 0], marks.supports[:, 1], marker="^", s=18,
                       color="C0", zorder=3, label="support", clip_on=False)
        if len(marks.loads):
            d = marks.directions[:, :2] * 0.08 * size
            arrows = np.linalg.norm(d, axis=1) > 0
            if arrows.any():
                ax.quiver(marks.loads[arrows, 0] - d[arrows, 0],
                          marks.loads[arrows, 1] - d[arrows, 1], d[arrows, 0], d[arrows, 1],
                          angles="xy", scale_units="xy", scale=1, color="C3", width=0.004,
                          zorder=4, label="load")
            if (~arrows).any():
                ax.scatter(marks.loads[~arrows, 0], marks.loads[~arrows, 1], marker="o",
                           s=18, color="C3", zorder=4, label="load", clip_on=False)
        ax.legend(loc="upper right", fontsize="small", framealpha=0.8)
    ax.set_aspect("equal")
    ax.set_xlabel(_unit_label("x", unit))
    ax.set_ylabel(_unit_label("y", unit))
    ax.set_title("design (density)")
    return _save(fig, path)


PICTURE_CELLS = 200_000  # a 3D picture's surface comes from at most about this many cells


def _picture_step(n_cells: int) -> int:
    """The edge (in cells) of the blocks a 3D picture coarsens ``n_cells`` cells by."""
    return max(1, int(np.ceil((n_cells / PICTURE_CELLS) ** (1 / 3))))


def _block_maxima(shape: tuple[int, int, int], layers) -> tuple[np.ndarray, int]:
    """A 3D field of ``shape`` (x, y, z) in blocks of ``step``^3 cells, each the block's
    maximum (so that thin members stay visible; ``step`` 1 when the field is small
    enough), read ``step`` z layers at a time (a small field at once): ``layers(z0, z1)``
    gives the (x, y, z1 - z0) part, so that no host copy of a large field is made."""
    nx, ny, nz = shape
    step = _picture_step(nx * ny * nz)
    cx, cy, cz = (-(-n // step) for n in shape)
    out = np.empty((cx, cy, cz))
    per = step if step > 1 else max(1, nz)
    for z0 in range(0, nz, per):
        z1 = min(nz, z0 + per)
        c0, c1 = z0 // step, -(-z1 // step)
        pad = np.zeros((cx * step, cy * step, (c1 - c0) * step))
        pad[:nx, :ny, : z1 - z0] = layers(z0, z1)
        out[:, :, c0:c1] = pad.reshape(cx, step, cy, step, c1 - c0, step).max(axis=(1, 3, 5))
    return out, step


def _coarsened(field_: np.ndarray) -> tuple[np.ndarray, int]:
    """A 3D field (x, y, z) on the host coarsened for its picture (:func:`_block_maxima`)."""
    return _block_maxima(field_.shape, lambda z0, z1: field_[:, :, z0:z1])


def _grid_field(grid, rho: np.ndarray | RowSource) -> tuple[np.ndarray, int]:
    """A 3D grid's densities (cells x fastest; a host array or a :class:`RowSource`) as
    the (x, y, z) field the picture draws, coarsened by :func:`_block_maxima`: read
    ``step`` cell layers at a time."""
    nx, ny, nz = grid.shape
    src = rho if isinstance(rho, RowSource) else cell_rows(np.asarray(rho, dtype=float))
    return _block_maxima((nx, ny, nz), lambda z0, z1: src.rows(z0 * nx * ny, z1 * nx * ny)
                         .reshape(z1 - z0, ny, nx).T)


def _picture_3d(mesh, rho, path, threshold, unit):
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    from femopt.io.surface import density_surface

    if mesh.grid is not None:
        g = mesh.grid
        field_, step = _grid_field(g, rho)
    else:
        from femopt.io.resample import resample, sample_grid

        g = sample_grid(mesh, max_samples=PICTURE_CELLS)
        field_, step = _coarsened(resample(mesh, rho, g))
    spacing, origin = np.multiply(g.spacing, step), g.origin
    fig = _figure((8.0, 5.5))
    ax = fig.add_subplot(projection="3d")
    lo, hi = mesh.bounds()
    try:
        surface, _ = density_surface(field_, spacing, origin, threshold, smooth=5)
    except ValueError:  # nothing above the threshold: an empty box with its axes
        surface = None
    if surface is not None:
        v, f = np.asarray(surface.vertices), np.asarray(surface.faces)
        tri = v[f]
        # matplotlib's z axis is up: show the model's y as up
        tri_plot = tri[:, :, [0, 2, 1]]
        normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-300)
        light = np.array([0.4, 0.8, 0.45])  # in model axes: from above (y) and the front
        shade = 0.35 + 0.65 * np.clip(normals @ (light / np.linalg.norm(light)), 0, 1)
        colours = np.clip(np.outer(shade, [0.44, 0.56, 0.69]), 0, 1)
        ax.add_collection3d(Poly3DCollection(tri_plot, facecolors=colours, linewidths=0))
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[2], hi[2])
    ax.set_zlim(lo[1], hi[1])
    ax.set_box_aspect((hi[0] - lo[0], hi[2] - lo[2], hi[1] - lo[1]))
    if hi[2] - lo[2] < 0.25 * max(hi[0] - lo[0], hi[1] - lo[1]):  # thin: its two faces only
        ax.set_yticks([lo[2], hi[2]])
    ax.set_xlabel(_unit_label("x", unit))
    ax.set_ylabel(_unit_label("z", unit))
    ax.set_zlabel(_unit_label("y", unit))
    ax.view_init(elev=25, azim=-60)
    ax.set_title(f"design: density > {threshold:g}")
    return _save(fig, path)
