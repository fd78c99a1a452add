"""Region selectors: nodes and cells chosen by geometry or by name, never by number.

A region is a mapping of conditions; every condition given must hold (intersection):

- ``face: x_min`` (``x_max``, ``y_min``, ..., ``z_max``): on that face of the bounding box;
- ``box: {min: [...], max: [...]}``: inside the closed box;
- ``point: [x, y(, z)]``: at that point;
- ``group: NAME``: a named node/cell set of the mesh;
- ``tol``: geometric tolerance (default 1e-6 of the mesh's bounding-box diagonal).
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, model_validator

from femopt.mesh.mesh import Mesh, row_chunks

FaceName = Literal["x_min", "x_max", "y_min", "y_max", "z_min", "z_max"]


class Box(BaseModel):
    model_config = ConfigDict(
        extra="forbid", allow_inf_nan=False, frozen=True,
        strict=True,
    )
    min: list[float]
    """Lower corner."""
    max: list[float]
    """Upper corner."""

    @model_validator(mode="after")
    def _ordered(self) -> Box:
        if len(self.min) != len(self.max):
            raise ValueError("box.min and box.max must have the same length")
        if any(a > b for a, b in zip(self.min, self.max)):
            raise ValueError("box.min must not exceed box.max on any axis")
        return self


class Region(BaseModel):
    """Where a support, load or passive zone applies (all given conditions must hold)."""

    model_config = ConfigDict(
        extra="forbid", allow_inf_nan=False, frozen=True,
        strict=True,
    )
    face: FaceName | None = None
    """A face of the bounding box: x_min, x_max, y_min, y_max, z_min, z_max."""
    box: Box | None = None
    """A closed box {min: [...], max: [...]}."""
    point: list[float] | None = None
    """A point [x, y(, z)] (the nodes within tol of it)."""
    group: str | None = None
    """A named node or cell set of the mesh."""
    tol: float | None = None
    """Geometric tolerance (default: 1e-6 of the bounding-box diagonal)."""

    @model_validator(mode="after")
    def _something(self) -> Region:
        if self.face is None and self.box is None and self.point is None and self.group is None:
            raise ValueError("a region needs at least one of: face, box, point, group")
        if self.tol is not None and self.tol < 0:
            raise ValueError("tol must be >= 0")
        return self


class RegionError(ValueError):
    """A region that cannot be applied to this mesh (message says why)."""


def _tol(region: Region, mesh: Mesh) -> float:
    return region.tol if region.tol is not None else 1e-6 * mesh.characteristic_length()


def _check_dim(name: str, values: list[float], dim: int) -> np.ndarray:
    if len(values) != dim:
        raise RegionError(f"{name} has {len(values)} coordinates; the mesh is {dim}D")
    return np.asarray(values, dtype=float)


def _mask(region: Region, mesh: Mesh, x: np.ndarray, named: dict[str, np.ndarray]) -> np.ndarray:
    tol = _tol(region, mesh)
    lo, hi = mesh.bounds()
    mask = np.ones(x.shape[0], dtype=bool)
    if region.face is not None:
        axis = "xyz".index(region.face[0])
        if axis >= mesh.dim:
            raise RegionError(f"face {region.face!r} does not exist in a {mesh.dim}D mesh")
        target = lo[axis] if region.face.endswith("min") else hi[axis]
        mask &= np.abs(x[:, axis] - target) <= tol
    if region.box is not None:
        bmin = _check_dim("box.min", region.box.min, mesh.dim)
        bmax = _check_dim("box.max", region.box.max, mesh.dim)
        mask &= np.all((x >= bmin - tol) & (x <= bmax + tol), axis=1)
    if region.point is not None:
        p = _check_dim("point", region.point, mesh.dim)
        mask &= np.linalg.norm(x - p, axis=1) <= tol
    if region.group is not None:
        if region.group not in named:
            known = ", ".join(sorted(named)) or "none"
            raise RegionError(f"the mesh has no group {region.group!r} (groups: {known})")
        sel = np.zeros(x.shape[0], dtype=bool)
        sel[named[region.group]] = True
        mask &= sel
    return mask


def node_mask(region: Region, mesh: Mesh) -> np.ndarray:
    """(n_nodes,) True at the nodes in ``region`` (possibly none); by rows of nodes, so a
    structured grid's coordinates are never held whole."""
    n = mesh.n_nodes
    return np.concatenate([_mask(region, mesh, mesh.point_rows(i, j),
                                 _window(mesh.node_sets, i, j, n))
                           for i, j in row_chunks(n)] or [np.zeros(0, dtype=bool)])


def _window(named: dict[str, np.ndarray], start: int, stop: int, n: int
            ) -> dict[str, np.ndarray]:
    """Named index sets (of 0..n-1) restricted to start..stop-1, renumbered from 0."""
    if stop - start == n:
        return named
    return {k: v[(v >= start) & (v < stop)] - start for k, v in named.items()}


GRID_POINT_CANDIDATES = 4096  # beyond this many nodes in a point's tolerance box, test all


@functools.lru_cache(maxsize=8)
def _grid_constants(g) -> tuple[float, tuple[int, ...]]:
    """Default tolerance and node-index strides of a structured grid."""
    diagonal = math.sqrt(sum((h * n) ** 2 for h, n in zip(g.spacing, g.shape)))
    strides = [1]
    for n in g.node_shape[:-1]:
        strides.append(strides[-1] * n)
    return 1e-6 * diagonal, tuple(strides)


def _grid_point_nodes(region: Region, mesh: Mesh) -> np.ndarray | None:
    """The nodes of a point region on a structured grid, found from the grid's spacing
    among the few nodes of the point's tolerance box (200,000 point loads on a grid of
    200,000 nodes took minutes node by node); None when the box holds too many. Plain
    Python arithmetic: a call costs microseconds, not a pass over the nodes."""
    g = mesh.grid
    p = region.point
    if len(p) != mesh.dim:
        _check_dim("point", p, mesh.dim)
    default_tol, strides = _grid_constants(g)
    tol = region.tol if region.tol is not None else default_tol
    ranges = []
    count = 1
    for x, o, h, n in zip(p, g.origin, g.spacing, g.shape):
        a = max(0, math.ceil((x - tol - o) / h - 1e-9))
        b = min(n, math.floor((x + tol - o) / h + 1e-9))
        if b < a:
            return np.zeros(0, np.int64)
        ranges.append(range(a, b + 1))
        count *= b + 1 - a
    if count > GRID_POINT_CANDIDATES:
        return None
    found = []
    for rev in itertools.product(*ranges[::-1]):  # z, y, x: increasing node index
        ijk = rev[::-1]
        c = [o + h * i for o, h, i in zip(g.origin, g.spacing, ijk)]  # as the grid's nodes
        if math.sqrt(sum((ci - pi) ** 2 for ci, pi in zip(c, p))) <= tol:
            found.append(sum(i * s for i, s in zip(ijk, strides)))
    return np.array(found, dtype=np.int64)


def _grid_box_nodes(region: Region, mesh: Mesh) -> np.ndarray:
    """The nodes of a face or box region (or both) on a structured grid: each condition
    holds axis by axis, so the nodes are a product of index ranges found from each
    axis's node coordinates (computed as the grid's nodes are), without a mask of the
    grid's size; ascending, as ``np.flatnonzero`` of the mask gives them."""
    g = mesh.grid
    tol = _tol(region, mesh)
    lo, hi = mesh.bounds()
    keep = []
    for axis, (o, h, n) in enumerate(zip(g.origin, g.spacing, g.shape)):
        x = o + h * np.arange(n + 1, dtype=np.int64)
        ok = np.ones(n + 1, dtype=bool)
        if region.face is not None and "xyz".index(region.face[0]) == axis:
            target = lo[axis] if region.face.endswith("min") else hi[axis]
            ok &= np.abs(x - target) <= tol
        if region.box is not None:
            bmin = _check_dim("box.min", region.box.min, mesh.dim)
            bmax = _check_dim("box.max", region.box.max, mesh.dim)
            ok &= (x >= bmin[axis] - tol) & (x <= bmax[axis] + tol)
        keep.append(np.flatnonzero(ok))
    _, strides = _grid_constants(g)
    idx = np.zeros((1,) * mesh.dim, dtype=np.int64)
    for axis, (ix, st) in enumerate(zip(keep, strides)):
        shape = [1] * mesh.dim
        shape[mesh.dim - 1 - axis] = ix.size  # z, y, x: x fastest
        idx = idx + (ix * st).reshape(shape)
    return idx.ravel()


def select_nodes(region: Region, mesh: Mesh) -> np.ndarray:
    """Indices of the nodes in ``region``; raises RegionError when there are none."""
    idx = None
    if (mesh.grid is not None and region.point is not None and region.face is None
            and region.box is None and region.group is None):
        idx = _grid_point_nodes(region, mesh)
    elif (mesh.grid is not None and region.point is None and region.group is None
          and (region.face is not None or region.box is not None)):
        if region.face is not None and "xyz".index(region.face[0]) >= mesh.dim:
            raise RegionError(f"face {region.face!r} does not exist in a {mesh.dim}D mesh")
        idx = _grid_box_nodes(region, mesh)
    if idx is None:
        idx = np.flatnonzero(node_mask(region, mesh))
    if idx.size == 0:
        raise RegionError("the region selects no node")
    return idx


def select_cells(region: Region, mesh: Mesh) -> np.ndarray:
    """Indices of the cells in ``region``.

    Box, point and group conditions test the cell centroid (a point region takes the cell
    that contains the point); a face condition takes the cells touching that face.
    """
    if (region.group is not None and region.group not in mesh.cell_sets
            and region.group in mesh.node_sets):
        known = ", ".join(sorted(mesh.cell_sets)) or "none"
        raise RegionError(f"group {region.group!r} holds no elements (it marks nodes or "
                          f"facets); groups of elements: {known}")
    on_face = None
    if region.point is None and region.face is not None:
        on_face = node_mask(region.model_copy(update={"box": None, "group": None}), mesh)
    n = mesh.n_cells
    mask = np.concatenate([_cell_mask(region, mesh, i, j, on_face) for i, j in row_chunks(n)]
                          or [np.zeros(0, dtype=bool)])
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        raise RegionError("the region selects no cell")
    return idx


def _cell_mask(region: Region, mesh: Mesh, start: int, stop: int,
               on_face: np.ndarray | None) -> np.ndarray:
    """:func:`select_cells`' test of the cells start..stop-1."""
    cells = mesh.cell_rows(start, stop)
    coords = mesh.node_coords(cells)
    centroids = coords.mean(axis=1)
    named = _window(mesh.cell_sets, start, stop, mesh.n_cells)
    if region.point is not None:
        p = _check_dim("point", region.point, mesh.dim)
        tol = _tol(region, mesh)
        mask = np.all((p >= coords.min(axis=1) - tol) & (p <= coords.max(axis=1) + tol),
                      axis=1)
        rest = region.model_copy(update={"point": None})
        if rest.face or rest.box or rest.group:
            mask &= _mask(rest, mesh, centroids, named)
    elif on_face is not None:
        mask = on_face[cells].any(axis=1)
        rest = region.model_copy(update={"face": None})
        if rest.box or rest.group:
            mask &= _mask(rest, mesh, centroids, named)
    else:
        mask = _mask(region, mesh, centroids, named)
    return mask
