"""Make problems/meshes/bracket_3d.msh: the tet4 mesh of a 3D bracket, with gmsh's Python API.

A plate 80 x 40 x 12 mm with two bolt holes (diameter 10) near x = 0 and a lug hole
(diameter 12) near x = 80. Physical groups: ``bolts`` (the two bolt-hole surfaces, fixed),
``lug`` (the lug-hole surface, loaded), ``lug_ring`` (the volume around the lug hole,
held solid) and ``body`` (every tetrahedron).

    python3 problems/make_bracket_3d.py [--size 4.0]

Needs ``pip install gmsh``; the .msh it writes (Gmsh format 4.1) is committed, so running
the problem does not.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gmsh

L, W, T = 80.0, 40.0, 12.0
BOLTS = [(10.0, 10.0), (10.0, 30.0)]
BOLT_R = 5.0
LUG = (68.0, 20.0)
LUG_R = 6.0
RING_R = 11.0


def build(size: float, out: Path) -> None:
    gmsh.initialize()
    gmsh.option.setNumber("General.Terminal", 0)
    gmsh.model.add("bracket_3d")
    occ = gmsh.model.occ
    plate = occ.addBox(0, 0, 0, L, W, T)
    holes = [occ.addCylinder(x, y, 0, 0, 0, T, BOLT_R) for x, y in BOLTS]
    lug = occ.addCylinder(LUG[0], LUG[1], 0, 0, 0, T, LUG_R)
    ring_outer = occ.addCylinder(LUG[0], LUG[1], 0, 0, 0, T, RING_R)
    ring_inner = occ.addCylinder(LUG[0], LUG[1], 0, 0, 0, T, LUG_R)
    ring, _ = occ.cut([(3, ring_outer)], [(3, ring_inner)])
    body, _ = occ.cut([(3, plate)], [(3, h) for h in holes] + [(3, lug)])
    # split the body by the ring so that the ring is a volume of its own
    occ.fragment(body, ring)
    occ.synchronize()
    volumes = [tag for _, tag in gmsh.model.getEntities(3)]
    ring_vols = []
    for v in volumes:
        x0, y0, _, x1, y1, _ = gmsh.model.getBoundingBox(3, v)
        if x0 > LUG[0] - RING_R - 0.1 and x1 < LUG[0] + RING_R + 0.1 \
                and y0 > LUG[1] - RING_R - 0.1 and y1 < LUG[1] + RING_R + 0.1:
            ring_vols.append(v)
    bolts, lug_faces = [], []
    for dim, tag in gmsh.model.getEntities(2):
        xmin, ymin, _, xmax, ymax, _ = gmsh.model.getBoundingBox(dim, tag)
        r = (xmax - xmin) / 2
        cx, cy = (xmin + xmax) / 2, (ymin + ymax) / 2
        if gmsh.model.getType(dim, tag) != "Cylinder":
            continue
        if any(abs(cx - bx) < 0.1 and abs(cy - by) < 0.1 and abs(r - BOLT_R) < 0.1
               for bx, by in BOLTS):
            bolts.append(tag)
        elif abs(cx - LUG[0]) < 0.1 and abs(cy - LUG[1]) < 0.1 and abs(r - LUG_R) < 0.1:
            lug_faces.append(tag)
    gmsh.model.addPhysicalGroup(3, volumes, name="body")
    gmsh.model.addPhysicalGroup(3, ring_vols, name="lug_ring")
    gmsh.model.addPhysicalGroup(2, bolts, name="bolts")
    gmsh.model.addPhysicalGroup(2, lug_faces, name="lug")
    gmsh.option.setNumber("Mesh.MeshSizeMax", size)
    gmsh.option.setNumber("Mesh.MeshSizeMin", size / 2)
    gmsh.option.setNumber("Mesh.MshFileVersion", 4.1)
    gmsh.model.mesh.generate(3)
    out.parent.mkdir(parents=True, exist_ok=True)
    gmsh.write(str(out))
    gmsh.finalize()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=float, default=4.0, help="largest element size (mm)")
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).parent / "meshes" / "bracket_3d.msh")
    args = ap.parse_args()
    build(args.size, args.out)
