"""Make problems/meshes/plate_with_hole.msh: a quarter of a square plate with a circular
hole at its centre (tri3, gmsh's Python API), fine at the hole and coarse far from it.

The full plate is 2 L wide with a hole of radius R = 1 (L = 10: ten hole diameters); by
symmetry only the quarter x >= 0, y >= 0 is meshed. Physical groups: ``hole`` (the
quarter circle), ``bottom`` (y = 0) and ``left`` (x = 0) (the symmetry lines), ``right``
(x = L) and ``top`` (y = L) (the loaded edges, meshed uniformly so that a total load
shared evenly by their nodes is a uniform traction), ``plate`` (every triangle).

    python3 problems/make_plate_with_hole.py [--hole-size 0.08] [--far-size 1.0]
    python3 problems/make_plate_with_hole.py --hole-size 0.15 --far-size 2.0 \\
        --out problems/meshes/plate_with_hole_coarse.msh

Needs ``pip install gmsh``; the .msh files it writes (Gmsh format 4.1) are committed, so
running the problems does not.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import gmsh

R = 1.0
L = 10.0


def build(hole_size: float, far_size: float, out: Path) -> None:
    gmsh.initialize()
    gmsh.option.setNumber("General.Terminal", 0)
    gmsh.model.add("plate_with_hole")
    geo = gmsh.model.geo
    centre = geo.addPoint(0, 0, 0)
    p_hole_x = geo.addPoint(R, 0, 0)
    p_hole_y = geo.addPoint(0, R, 0)
    p_right = geo.addPoint(L, 0, 0)
    p_corner = geo.addPoint(L, L, 0)
    p_top = geo.addPoint(0, L, 0)
    bottom = geo.addLine(p_hole_x, p_right)
    right = geo.addLine(p_right, p_corner)
    top = geo.addLine(p_corner, p_top)
    left = geo.addLine(p_top, p_hole_y)
    hole = geo.addCircleArc(p_hole_y, centre, p_hole_x)
    loop = geo.addCurveLoop([bottom, right, top, left, hole])
    plate = geo.addPlaneSurface([loop])
    n_edge = math.ceil(L / far_size) + 1
    geo.mesh.setTransfiniteCurve(right, n_edge)
    geo.mesh.setTransfiniteCurve(top, n_edge)
    geo.synchronize()
    for name, dim, tags in (("hole", 1, [hole]), ("bottom", 1, [bottom]), ("left", 1, [left]),
                            ("right", 1, [right]), ("top", 1, [top]), ("plate", 2, [plate])):
        gmsh.model.addPhysicalGroup(dim, tags, name=name)
    # element size grows linearly from hole_size at the hole to far_size 6 R away
    mesh = gmsh.model.mesh
    dist = mesh.field.add("Distance")
    mesh.field.setNumbers(dist, "CurvesList", [hole])
    mesh.field.setNumber(dist, "Sampling", 200)
    thr = mesh.field.add("Threshold")
    mesh.field.setNumber(thr, "InField", dist)
    mesh.field.setNumber(thr, "SizeMin", hole_size)
    mesh.field.setNumber(thr, "SizeMax", far_size)
    mesh.field.setNumber(thr, "DistMin", 0.5 * R)
    mesh.field.setNumber(thr, "DistMax", 6.0 * R)
    mesh.field.setAsBackgroundMesh(thr)
    gmsh.option.setNumber("Mesh.MeshSizeExtendFromBoundary", 0)
    gmsh.option.setNumber("Mesh.MeshSizeFromPoints", 0)
    gmsh.option.setNumber("Mesh.MeshSizeFromCurvature", 0)
    gmsh.option.setNumber("Mesh.Algorithm", 6)  # Frontal-Delaunay: well-shaped triangles
    gmsh.option.setNumber("Mesh.MshFileVersion", 4.1)
    mesh.generate(2)
    out.parent.mkdir(parents=True, exist_ok=True)
    gmsh.write(str(out))
    gmsh.finalize()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hole-size", type=float, default=0.08, help="element size at the hole")
    ap.add_argument("--far-size", type=float, default=1.0,
                    help="element size far from the hole and on the loaded edges")
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).parent / "meshes" / "plate_with_hole.msh")
    args = ap.parse_args()
    build(args.hole_size, args.far_size, args.out)
