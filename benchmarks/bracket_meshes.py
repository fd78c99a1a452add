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
