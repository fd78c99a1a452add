"""From a 2D density field on a structured grid to closed outlines: contours
(scikit-image), triangles of the enclosed region (mapbox-earcut), an extruded
solid, and DXF (ezdxf) and SVG drawings in the problem's unit.

Outlines are oriented with the material on their left: outer boundaries counter-clockwise,
holes clockwise, so the signed areas add up to the part's area.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from femopt.io.surface import boundary_conforming, padded_field

# the unit's name in DXF ($INSUNITS) and its length in millimetres (SVG knows mm and in)
DXF_UNITS = {"um": 13, "mm": 4, "cm": 5, "m": 6, "in": 1, "ft": 2}
MM_PER_UNIT = {"um": 1e-3, "mm": 1.0, "cm": 10.0, "m": 1000.0, "in": 25.4, "ft": 304.8}


def signed_area(loop: np.ndarray) -> float:
    x, y = loop[:, 0], loop[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def density_contours(density: np.ndarray, spacing, origin, threshold: float = 0.5,
                     smooth: int = 0, min_fraction: float = 0.01) -> list[np.ndarray]:
    """Closed outlines of ``density > threshold``.

    Args:
        density: (nx, ny) cell densities; spacing, origin: the grid's cell size and corner.
        smooth: Taubin smoothing iterations of each outline (0: none).
        min_fraction: islands of material with less than this fraction of the largest
            one's area are dropped, and so are holes smaller than a cell.

    Returns:
        A list of (n, 2) point arrays without the repeated closing point, oriented with
        the material on the left.
    """
    from skimage.measure import find_contours

    spacing = np.asarray(spacing, dtype=float)
    origin = np.asarray(origin, dtype=float)
    density = np.asarray(density, dtype=float)
    if not np.any(density > threshold):
        raise ValueError(f"no density is above the threshold {threshold:g}: the part is empty")
    loops = []
    # rows are x, columns y: 'high' winds counter-clockwise around material in (x, y)
    for c in find_contours(padded_field(np.pad(density, 1, mode="edge")), threshold,
                           positive_orientation="high"):
        # (x, y) index order in, so rows are x; padded as for surfaces (boundary_conforming)
        pts = boundary_conforming(c[:-1], density.shape, spacing, origin)
        if len(pts) < 3:
            continue
        if smooth:  # then back into the domain, which smoothing bulges out of at corners
            pts = np.clip(taubin_loop(pts, smooth), origin,
                          origin + np.multiply(density.shape, spacing))
        loops.append(pts)
    areas = np.array([signed_area(p) for p in loops])
    cell = float(np.prod(spacing))
    # specks of material go; holes stay unless smaller than a cell
    keep = np.where(areas > 0, areas >= min_fraction * areas.max(), -areas >= cell)
    return [p for p, k in zip(loops, keep) if k]


def taubin_loop(pts: np.ndarray, iterations: int, lamb: float = 0.5,
                mu: float = -0.53) -> np.ndarray:
    """Taubin smoothing of a closed polyline: a shrinking and an inflating Laplacian step
    per iteration, which smooths without the shrinkage of plain Laplacian smoothing."""
    p = pts.copy()
    for _ in range(iterations):
        for f in (lamb, mu):
            lap = 0.5 * (np.roll(p, 1, axis=0) + np.roll(p, -1, axis=0)) - p
            p = p + f * lap
    return p


def point_in_loops(points: np.ndarray, loops: list[np.ndarray]) -> np.ndarray:
    """Whether each (x, y) point lies inside the region the loops enclose (even-odd rule:
    holes are loops inside outer loops)."""
    points = np.asarray(points, dtype=float)
    inside = np.zeros(len(points), dtype=bool)
    px, py = points[:, 0:1], points[:, 1:2]
    for loop in loops:
        a, b = loop, np.roll(loop, -1, axis=0)
        for lo in range(0, len(a), 2048):  # (points x edges) blocks of bounded memory
            ax, ay = a[lo:lo + 2048, 0], a[lo:lo + 2048, 1]
            bx, by = b[lo:lo + 2048, 0], b[lo:lo + 2048, 1]
            straddles = (ay > py) != (by > py)
            with np.errstate(divide="ignore", invalid="ignore"):
                x_cross = ax + (py - ay) * (bx - ax) / (by - ay)
            inside ^= (np.count_nonzero(straddles & (px < x_cross), axis=1) % 2).astype(bool)
    return inside


def triangulate(loops: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Triangles of the region the loops enclose, on the loops' own points (ear clipping,
    mapbox-earcut): each outer loop with the holes it holds is one polygon.

    Returns (points (n, 2), triangles (m, 3)) with counter-clockwise triangles; the
    boundary edges of the triangles are exactly the loops' segments.
    """
    import mapbox_earcut

    areas = np.array([signed_area(p) for p in loops])
    outers = [i for i in np.argsort(areas) if areas[i] > 0]  # smallest outer loop first
    holes: dict[int, list[int]] = {i: [] for i in outers}
    for h in np.flatnonzero(areas < 0):
        for i in outers:  # the smallest outer loop around the hole holds it
            if point_in_loops(loops[h][:1], [loops[i]])[0]:
                holes[i].append(int(h))
                break
    points, tris, start = [], [], 0
    for i in outers:
        rings = [loops[i]] + [loops[h] for h in holes[i]]
        pts = np.concatenate(rings)
        ends = np.cumsum([len(r) for r in rings]).astype(np.uint32)
        t = np.asarray(mapbox_earcut.triangulate_float64(pts, ends),
                       dtype=np.int64).reshape(-1, 3)
        # earcut winds all triangles of a polygon one way; turn them counter-clockwise
        # together (a zero-area triangle on collinear points has no winding of its own
        # and must stay: its edges close the surface)
        p = pts[t]
        d1, d2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
        if np.sum(d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]) < 0:
            t = t[:, ::-1]
        points.append(pts)
        tris.append(t + start)
        start += len(pts)
    return np.concatenate(points), np.concatenate(tris)


def extrude(points: np.ndarray, tris: np.ndarray, thickness: float):
    """The triangulated region extruded to ``thickness`` along z, as a closed trimesh."""
    import trimesh

    n = len(points)
    verts = np.vstack([np.column_stack([points, np.zeros(n)]),
                       np.column_stack([points, np.full(n, thickness)])])
    edges = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]])
    key = np.sort(edges, axis=1)
    _, inv, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    boundary = edges[counts[inv.ravel()] == 1]  # directed with the region on the left
    a, b = boundary[:, 0], boundary[:, 1]
    sides = np.concatenate([np.column_stack([a, b, b + n]), np.column_stack([a, b + n, a + n])])
    faces = np.concatenate([tris[:, ::-1], tris + n, sides])
    return trimesh.Trimesh(verts, faces, process=False)


def write_dxf(path: Path, loops: list[np.ndarray], unit: str) -> None:
    """Closed LWPOLYLINEs on layer PART, with the drawing unit set."""
    import ezdxf

    doc = ezdxf.new("R2010")
    doc.header["$INSUNITS"] = DXF_UNITS[unit]
    doc.header["$MEASUREMENT"] = 0 if unit in ("in", "ft") else 1
    doc.layers.add("PART")
    msp = doc.modelspace()
    for p in loops:
        msp.add_lwpolyline(p.tolist(), close=True, dxfattribs={"layer": "PART"})
    doc.saveas(path)


def write_svg(path: Path, loops: list[np.ndarray], unit: str) -> None:
    """One filled path (even-odd rule) in model coordinates, y up; the drawing's width and
    height carry the unit (in millimetres, or inches for in/ft) so that 1 model unit prints
    at its true size."""
    pts = np.concatenate(loops)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    w, h = hi - lo
    if unit in ("in", "ft"):
        scale, suffix = (12.0 if unit == "ft" else 1.0), "in"
    else:
        scale, suffix = MM_PER_UNIT[unit], "mm"
    d = " ".join("M " + " L ".join(f"{x - lo[0]:.6g},{hi[1] - y:.6g}" for x, y in p) + " Z"
                 for p in loops)
    text = ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{w * scale:.6g}{suffix}" '
            f'height="{h * scale:.6g}{suffix}" viewBox="0 0 {w:.6g} {h:.6g}">\n'
            f'<!-- femopt part outline; 1 user unit = 1 {unit}; origin at ({lo[0]:.6g}, '
            f'{lo[1]:.6g}), y up in the model -->\n'
            f'<path fill="black" fill-rule="evenodd" stroke="none" d="{d}"/>\n</svg>\n')
    Path(path).write_text(text, encoding="utf-8")
