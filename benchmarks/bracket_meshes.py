"""Finer tet4 meshes of the 3D bracket (problems/make_bracket_3d.py, gmsh) for the benchmarks.

    python3 benchmarks/bracket_meshes.py 100k,1M   # pack them for the GPU machine

``bracket_mesh(tets)`` writes (once) a mesh of about ``tets`` tetrahedra into a folder
outside the repository (default: ``$TMPDIR/femopt-bracket-meshes``; such meshes are never
committed) and returns its path. The element size comes from a measured mesh (74,724
tets at size 1.327 mm) with the count scaling as size^-3; the hole surfaces make the
count a few percent off at other sizes.

``bracket_problem(path, size)`` is problems/bracket_3d.yaml on that mesh, with the filter
radius kept at 1.5 element sizes as in the problem file (6 mm at size 4 mm); a fixed 6 mm
radius would give every cell of a 1M-tet mesh some 26,000 neighbours.
"""

from __future__ import annotations

import argparse
import lzma
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
REFERENCE_TETS, REFERENCE_SIZE = 74724, 1.327  # measured: gmsh 4.15, this script
RADIUS_PER_SIZE = 1.5
PACKED = ROOT / ".bench-meshes"  # git-ignored; xz-compressed meshes to carry to a machine
                                 # without gmsh (the GPU machine's image has none)


def mesh_dir() -> Path:
    return Path(os.environ.get("FEMOPT_MESH_DIR",
                               Path(tempfile.gettempdir()) / "femopt-bracket-meshes"))


def size_for(tets: float) -> float:
    return round(REFERENCE_SIZE * (REFERENCE_TETS / tets) ** (1 / 3), 3)


def bracket_mesh(tets: float) -> tuple[Path, float]:
    """(path, element size) of a bracket mesh of about ``tets`` tets: from the mesh
    folder, else unpacked from ``.bench-meshes/`` (see :func:`pack`), else made by gmsh."""
    size = size_for(tets)
    path = mesh_dir() / f"bracket_3d_size{size:g}.msh"
    packed = PACKED / (path.name + ".xz")
    if not path.is_file() and packed.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        with lzma.open(packed) as src, open(path.with_suffix(".partial.msh"), "wb") as dst:
            shutil.copyfileobj(src, dst)
        path.with_suffix(".partial.msh").rename(path)
    if not path.is_file():
        sys.path.insert(0, str(ROOT / "problems"))
        try:
            from make_bracket_3d import build
        except ImportError as exc:  # no gmsh (the GPU machine's image)
            raise SystemExit(f"{path.name}: not in {mesh_dir()} nor packed in {PACKED}, and "
                             f"gmsh is not importable ({exc}); pack the meshes where gmsh "
                             "is: python3 benchmarks/bracket_meshes.py 100k,1M") from None

        t0 = time.perf_counter()
        tmp = path.with_suffix(".partial.msh")
        build(size, tmp)
        tmp.rename(path)
        print(f"# gmsh: {path.name} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return path, size


def refined_mesh(path: Path) -> Path:
    """The mesh at ``path`` with every tet split into 8 (edge midpoints; the inner
    octahedron cut along its shortest diagonal) and every boundary triangle into 4,
    written once beside it as Gmsh 2.2 (``*_refined.msh``): a mesh eight times finer where
    gmsh is not installed (the hole surfaces stay as faceted as the coarser mesh's). The
    physical groups follow their cells; a tet block takes the first volume group that
    holds it (``lug_ring`` before ``body``: Gmsh 2.2 tags a cell once)."""
    import meshio
    import numpy as np

    out = path.with_name(path.stem + "_refined.msh")
    if out.is_file():
        return out
    m = meshio.read(path)
    pts = np.asarray(m.points, dtype=float)
    tets = [b.data for b in m.cells if b.type == "tetra"]
    pairs = np.concatenate([t[:, [i, j]] for t in tets
                            for i, j in ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))])
    pairs.sort(axis=1)
    edges = np.unique(pairs, axis=0)
    mid = len(pts) + np.arange(len(edges))
    points = np.vstack([pts, 0.5 * (pts[edges[:, 0]] + pts[edges[:, 1]])])

    def midpoint(a, b):
        key = np.sort(np.stack([a, b], axis=1), axis=1)
        at = np.searchsorted(edges[:, 0] * len(points) + edges[:, 1],
                             key[:, 0] * len(points) + key[:, 1])
        return mid[at]

    volume_groups = [(name, tag) for name, (tag, dim) in
                     ((n, v[:2]) for n, v in m.field_data.items()) if dim == 3]
    blocks, physical, geometrical, field_data = [], [], [], dict(m.field_data)
    for k, b in enumerate(m.cells):
        c = b.data
        if b.type == "tetra":
            v0, v1, v2, v3 = c.T
            m01, m02, m03 = midpoint(v0, v1), midpoint(v0, v2), midpoint(v0, v3)
            m12, m13, m23 = midpoint(v1, v2), midpoint(v1, v3), midpoint(v2, v3)
            kids = [(v0, m01, m02, m03), (m01, v1, m12, m13), (m02, m12, v2, m23),
                    (m03, m13, m23, v3)]
            diag = np.argmin(np.stack([
                np.linalg.norm(points[a] - points[b], axis=1)
                for a, b in ((m01, m23), (m02, m13), (m03, m12))]), axis=0)
            # the octahedron's other 4 vertices around each diagonal, in a cycle
            ring = {0: (m02, m12, m13, m03), 1: (m01, m12, m23, m03),
                    2: (m01, m13, m23, m02)}
            ends = {0: (m01, m23), 1: (m02, m13), 2: (m03, m12)}
            child = np.empty((len(c), 8, 4), dtype=np.int64)
            for q, kid in enumerate(kids):
                child[:, q] = np.stack(kid, axis=1)
            for d in range(3):
                sel = diag == d
                (a, b_), r = ends[d], ring[d]
                for q in range(4):
                    child[sel, 4 + q] = np.stack([a[sel], b_[sel], r[q][sel],
                                                  r[(q + 1) % 4][sel]], axis=1)
            child = child.reshape(-1, 4)
            e = points[child]  # positive orientation, as the coarse cells have
            vol = np.einsum("ij,ij->i", np.cross(e[:, 1] - e[:, 0], e[:, 2] - e[:, 0]),
                            e[:, 3] - e[:, 0])
            flip = vol < 0
            child[flip, 0], child[flip, 1] = child[flip, 1], child[flip, 0].copy()
            blocks.append(("tetra", child))
            held = [tag for name, tag in volume_groups if name != "body"
                    and m.cell_sets.get(name) is not None
                    and len(m.cell_sets[name][k] if m.cell_sets[name][k] is not None else [])]
            tag = held[0] if held else dict(volume_groups)["body"]
            physical.append(np.full(len(child), tag))
        elif b.type == "triangle":
            v0, v1, v2 = c.T
            m01, m02, m12 = midpoint(v0, v1), midpoint(v0, v2), midpoint(v1, v2)
            child = np.stack([np.stack(t, axis=1) for t in
                              ((v0, m01, m02), (m01, v1, m12), (m02, m12, v2),
                               (m01, m12, m02))], axis=1).reshape(-1, 3)
            blocks.append(("triangle", child))
            physical.append(np.repeat(m.cell_data["gmsh:physical"][k], 4))
        else:
            continue
        geometrical.append(np.repeat(m.cell_data["gmsh:geometrical"][k],
                                     len(blocks[-1][1]) // len(c)))
    meshio.write(out.with_suffix(".partial.msh"),
                 meshio.Mesh(points, blocks, cell_data={"gmsh:physical": physical,
                                                         "gmsh:geometrical": geometrical},
                             field_data=field_data), file_format="gmsh22", binary=True)
    out.with_suffix(".partial.msh").rename(out)
    return out


def bracket_problem(path: Path, size: float, **changes) -> dict:
    """problems/bracket_3d.yaml on the mesh ``path`` with a radius of 1.5 sizes."""
    data = yaml.safe_load((ROOT / "problems" / "bracket_3d.yaml").read_text())
    data["mesh"]["path"] = str(path)
    data["filters"][0]["radius"] = RADIUS_PER_SIZE * size
    data["output"] = {"picture": False}
    data.update(changes)
    return data


def parse_counts(text: str) -> list[int]:
    """'100k,1M' -> [100000, 1000000]."""
    out = []
    for item in text.split(","):
        item = item.strip().lower()
        mult = 1_000_000 if item.endswith("m") else 1000 if item.endswith("k") else 1
        out.append(int(float(item.rstrip("mk")) * mult))
    return out


def pack(counts: list[int]) -> None:
    """Write the meshes of ``counts`` xz-compressed to ``.bench-meshes/``."""
    PACKED.mkdir(exist_ok=True)
    for tets in counts:
        path, _ = bracket_mesh(tets)
        out = PACKED / (path.name + ".xz")
        with open(path, "rb") as src, lzma.open(out, "wb", preset=9) as dst:
            shutil.copyfileobj(src, dst)
        print(f"{out} ({out.stat().st_size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="Pack bracket meshes for a machine without "
                                 "gmsh: python3 benchmarks/bracket_meshes.py 100k,1M")
    ap.add_argument("sizes", help="target tet counts, e.g. 100k,1M")
    pack(parse_counts(ap.parse_args().sizes))
